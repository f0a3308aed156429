//! Content digests of build-context files remembered by their stat, so a second build of an
//! unchanged context reads no file contents (the cache key of a COPY needs the digest of
//! every file it copies). The digests are BLAKE3: they only ever go into step keys (never
//! into an OCI descriptor), and a fresh store, a second machine taking its steps from a
//! registry cache, spends its time hashing the context.
//!
//! The rule, git's index and BuildKit's fsutil stat checks in one: an entry is keyed by the
//! file's absolute path and holds its size, mtime and ctime (nanoseconds), inode and mode;
//! any difference in any of them means the file is hashed again. ctime cannot be set from
//! user space, so a rewrite that restores size and mtime (`touch -d`) still changes it. An
//! entry is trusted only if the file's ctime was at least [`RACY_MARGIN_NS`] (more than a
//! kernel clock tick) older than the moment its stat was taken: a file written in the same
//! clock tick as its hashing ("racily clean" in git's words) is hashed again next time.
//!
//! One file per context directory, `build-cache/stat-cache/HASH` in the store (HASH: of the
//! directory's absolute path and the digest algorithm, so a cache of SHA-256 digests written
//! by an earlier hoist is never read as BLAKE3), written
//! atomically (temp, fsync, rename) and only when something was hashed; at most
//! [`MAX_STAT_CACHE_BYTES`] are read, a larger or malformed file is ignored.

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use sha2::{Digest as _, Sha256};

use crate::error::{IoContext, Result};

/// Largest stat-cache file read.
pub const MAX_STAT_CACHE_BYTES: u64 = 256 << 20;
/// Most entries written (beyond it, only the entries this build used are kept).
pub const MAX_STAT_CACHE_ENTRIES: usize = 2_000_000;
/// A file changed less than this before its stat was taken is hashed again next time.
pub const RACY_MARGIN_NS: i128 = 100_000_000;

#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Stat {
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    ino: u64,
    mode: u32,
}

impl Stat {
    fn of_raw(st: &libc::stat) -> Stat {
        Stat {
            size: st.st_size as u64,
            mtime_ns: i128::from(st.st_mtime) * 1_000_000_000 + i128::from(st.st_mtime_nsec),
            ctime_ns: i128::from(st.st_ctime) * 1_000_000_000 + i128::from(st.st_ctime_nsec),
            ino: st.st_ino,
            mode: st.st_mode,
        }
    }

    fn of(m: &fs::Metadata) -> Stat {
        Stat {
            size: m.size(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
            ino: m.ino(),
            mode: m.mode(),
        }
    }
}

#[derive(Clone)]
struct Entry {
    stat: Stat,
    /// When its stat was taken (ns since the epoch).
    hashed_at: i128,
    digest: [u8; 32],
}

/// A context file as a walk listed it: its path and its lstat, taken by the walk (the
/// hashing then needs no stat of its own: a change after the walk's stat shows in the next
/// build's stat, as a change after a stat of its own would).
pub(crate) struct Listed {
    pub path: PathBuf,
    stat: Stat,
}

impl Listed {
    /// `path` with the lstat `m` the walk took of it.
    pub(crate) fn new(path: PathBuf, m: &fs::Metadata) -> Listed {
        Listed { path, stat: Stat::of(m) }
    }
}

/// The stat cache of one build context.
pub struct StatCache {
    path: PathBuf,
    /// Added to the clock (tests).
    skew: i128,
    old: HashMap<String, Entry>,
    new: Mutex<HashMap<String, Entry>>,
    /// Entries of `old` this build took (their digests).
    taken: Mutex<HashMap<String, [u8; 32]>>,
    hits: AtomicUsize,
    hashed: AtomicUsize,
}

/// The clock the cache compares ctimes with (ns since the epoch): taken before a walk's
/// stats, it is the `at` of [`Hasher::digest_listed`].
pub(crate) fn now_ns() -> i128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i128)
}

impl StatCache {
    /// The cache of `context` kept under `dir` (a missing, oversized or malformed file is an
    /// empty cache; `disabled` gives an empty one too, for `--no-cache`).
    pub fn load(dir: &Path, context: &Path, disabled: bool) -> StatCache {
        let abs = fs::canonicalize(context).unwrap_or_else(|_| context.to_path_buf());
        let mut name = Sha256::new();
        name.update(b"blake3\0");
        name.update(abs.as_os_str().as_encoded_bytes());
        let name = hex::encode(name.finalize());
        let path = dir.join(name);
        let old = if disabled { HashMap::new() } else { read_entries(&path).unwrap_or_default() };
        StatCache {
            path,
            skew: 0,
            old,
            new: Mutex::new(HashMap::new()),
            taken: Mutex::new(HashMap::new()),
            hits: AtomicUsize::new(0),
            hashed: AtomicUsize::new(0),
        }
    }

    /// Files whose digest came from the cache.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::Relaxed)
    }

    /// Files whose contents were read and hashed.
    pub fn hashed(&self) -> usize {
        self.hashed.load(Ordering::Relaxed)
    }

    /// BLAKE3 of the contents of the regular file `src`, from the cache when its stat is
    /// unchanged (or from this build's own earlier look at it, counted once). The stat is
    /// taken before the read, so a change during the read is seen by the next build.
    pub fn digest(&self, src: &Path, buf: &mut [u8]) -> Result<[u8; 32]> {
        self.digest_in(None, src, None, buf)
    }

    /// A [`Hasher`] of this cache: files hashed one after another, each opened by its name in
    /// its directory.
    pub fn hasher(&self) -> Hasher<'_> {
        Hasher { cache: self, dir: None, buf: vec![0u8; 1 << 16] }
    }

    /// [`StatCache::digest`], `src` looked up by its name in `dir` (its parent, open) when
    /// given: one path component, not every one of `src`'s. With `listed` (the stat a walk
    /// took of `src`, and a clock reading from before it), no stat is taken here.
    fn digest_in(
        &self,
        dir: Option<&fs::File>,
        src: &Path,
        listed: Option<(&Stat, i128)>,
        buf: &mut [u8],
    ) -> Result<[u8; 32]> {
        let by_name = dir.zip(src.file_name());
        let key = src.to_string_lossy().into_owned();
        // hashed or taken from the cache earlier in this build (its files hashed ahead of a
        // COPY step): as it was then, counted once
        if let Some(e) = self.new.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(e.digest);
        }
        if let Some(d) = self.taken.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(*d);
        }
        let at = listed.map_or_else(now_ns, |(_, at)| at) + self.skew;
        let (stat, opened) = match (self.old.get(&key), listed) {
            (Some(e), _) => {
                let stat = match (listed, by_name) {
                    (Some((s, _)), _) => s.clone(),
                    (None, Some((d, name))) => Stat::of_raw(&lstat_at(d, name).at(src)?),
                    (None, None) => Stat::of(&src.symlink_metadata().at(src)?),
                };
                if e.stat == stat && e.stat.ctime_ns + RACY_MARGIN_NS <= e.hashed_at {
                    if self.taken.lock().unwrap_or_else(|p| p.into_inner()).insert(key, e.digest).is_none() {
                        self.hits.fetch_add(1, Ordering::Relaxed);
                    }
                    return Ok(e.digest);
                }
                (stat, None)
            }
            (None, Some((s, _))) => (s.clone(), None),
            // not in the cache: the stat of the open file (one path lookup, not two)
            (None, None) => {
                let f = open_nofollow(by_name, src)?;
                (Stat::of(&f.metadata().at(src)?), Some(f))
            }
        };
        let mut h = blake3::Hasher::new();
        let mut f = match opened {
            Some(f) => f,
            None => open_nofollow(by_name, src)?,
        };
        let mut total = 0u64;
        loop {
            let n = f.read(buf).at(src)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            total += n as u64;
            // a short read ending at the size the stat gave is the end of the file (no
            // second read to see 0); a file that grew goes on to its end
            if n < buf.len() && total == stat.size {
                break;
            }
        }
        let digest: [u8; 32] = h.finalize().into();
        self.hashed.fetch_add(1, Ordering::Relaxed);
        let e = Entry { stat, hashed_at: at, digest };
        self.new.lock().unwrap_or_else(|p| p.into_inner()).insert(key, e);
        Ok(digest)
    }

    /// Write the cache back when this build hashed anything (atomically).
    pub fn save(&self) -> Result<()> {
        let new = self.new.lock().unwrap_or_else(|p| p.into_inner());
        if new.is_empty() {
            return Ok(());
        }
        let keep_old = self.old.len() + new.len() <= MAX_STAT_CACHE_ENTRIES;
        let mut out = Vec::with_capacity((self.old.len() + new.len()) * 120);
        let mut line = |k: &str, e: &Entry| {
            if k.contains('\n') {
                return;
            }
            let s = &e.stat;
            let _ = writeln!(
                out,
                "{} {} {} {} {} {} {} {k}",
                hex::encode(e.digest),
                s.size,
                s.mtime_ns,
                s.ctime_ns,
                s.ino,
                s.mode,
                e.hashed_at
            );
        };
        if keep_old {
            for (k, e) in &self.old {
                if !new.contains_key(k) {
                    line(k, e);
                }
            }
        }
        for (k, e) in new.iter() {
            line(k, e);
        }
        let dir = self.path.parent().expect("stat cache dir");
        fs::create_dir_all(dir).at(dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir).at(dir)?;
        tmp.write_all(&out).at(tmp.path())?;
        tmp.as_file().sync_all().at(tmp.path())?;
        tmp.persist(&self.path).map_err(|e| crate::error::Error::io(&self.path, e.error))?;
        Ok(())
    }
}

/// Context files hashed one after another by one thread ([`StatCache::hasher`]): each is
/// opened by its name in its directory, the directory opened once for the run of its files
/// that come in a row (a walk's order), so a file costs one path component, not a path.
pub struct Hasher<'c> {
    cache: &'c StatCache,
    dir: Option<(PathBuf, fs::File)>,
    buf: Vec<u8>,
}

impl Hasher<'_> {
    /// [`StatCache::digest`] of `src`.
    pub fn digest(&mut self, src: &Path) -> Result<[u8; 32]> {
        self.digest_at(src, None)
    }

    /// [`StatCache::digest`] of a file a walk listed, with the walk's stat of it; `at` is
    /// the clock ([`now_ns`]) read before the walk began.
    pub(crate) fn digest_listed(&mut self, listed: &Listed, at: i128) -> Result<[u8; 32]> {
        self.digest_at(&listed.path, Some((&listed.stat, at)))
    }

    fn digest_at(&mut self, src: &Path, listed: Option<(&Stat, i128)>) -> Result<[u8; 32]> {
        let Some(parent) = src.parent().filter(|_| src.file_name().is_some()) else {
            return self.cache.digest_in(None, src, listed, &mut self.buf);
        };
        if self.dir.as_ref().is_none_or(|(p, _)| p != parent) {
            // a directory that cannot be opened: each file looked up by its path, which
            // reports the error
            self.dir = open_dir(parent).ok().map(|d| (parent.to_path_buf(), d));
        }
        self.cache.digest_in(self.dir.as_ref().map(|(_, d)| d), src, listed, &mut self.buf)
    }
}

/// The directory `dir`, opened for looking up names in it (O_PATH).
fn open_dir(dir: &Path) -> std::io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new().read(true).custom_flags(libc::O_PATH | libc::O_DIRECTORY).open(dir)
}

/// lstat of `name` in the open directory `dir`.
fn lstat_at(dir: &fs::File, name: &std::ffi::OsStr) -> std::io::Result<libc::stat> {
    use std::os::fd::AsRawFd;
    let name = super::fs::cpath(Path::new(name))?;
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `name` is a NUL-terminated string and `st` a writable stat buffer, both alive
    // for the call; `dir` is an open descriptor.
    let r = unsafe { libc::fstatat(dir.as_raw_fd(), name.as_ptr(), st.as_mut_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fstatat succeeded, so it filled `st`.
    Ok(unsafe { st.assume_init() })
}

/// `src` opened for reading, never through a symlink (it was listed as a regular file); by
/// its name in its open directory when `at` gives them. Non-blocking: a file replaced by a
/// FIFO since it was listed is not waited on (reads of a regular file are not affected).
fn open_nofollow(at: Option<(&fs::File, &std::ffi::OsStr)>, src: &Path) -> Result<fs::File> {
    use std::os::fd::{AsRawFd, FromRawFd};
    use std::os::unix::fs::OpenOptionsExt;
    let Some((dir, name)) = at else {
        return fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(src).at(src);
    };
    let name = super::fs::cpath(Path::new(name)).at(src)?;
    // SAFETY: `name` is a NUL-terminated string alive for the call; `dir` is an open
    // descriptor.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).at(src);
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    Ok(unsafe { fs::File::from_raw_fd(fd) })
}

fn read_entries(path: &Path) -> Option<HashMap<String, Entry>> {
    let f = fs::File::open(path).ok()?;
    if f.metadata().ok()?.len() > MAX_STAT_CACHE_BYTES {
        return None;
    }
    let mut s = String::new();
    f.take(MAX_STAT_CACHE_BYTES).read_to_string(&mut s).ok()?;
    let mut m = HashMap::new();
    for l in s.lines() {
        let mut p = l.splitn(8, ' ');
        let mut digest = [0u8; 32];
        hex::decode_to_slice(p.next()?, &mut digest).ok()?;
        let stat = Stat {
            size: p.next()?.parse().ok()?,
            mtime_ns: p.next()?.parse().ok()?,
            ctime_ns: p.next()?.parse().ok()?,
            ino: p.next()?.parse().ok()?,
            mode: p.next()?.parse().ok()?,
        };
        let hashed_at = p.next()?.parse().ok()?;
        m.insert(p.next()?.to_string(), Entry { stat, hashed_at, digest });
    }
    Some(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchanged_files_are_not_read_again_and_any_change_is_seen() {
        let t = tempfile::tempdir().unwrap();
        let (ctx, dir) = (t.path().join("ctx"), t.path().join("cache"));
        fs::create_dir_all(&ctx).unwrap();
        let f = ctx.join("f");
        fs::write(&f, "one").unwrap();
        let mut buf = vec![0u8; 4096];
        // as if the first build ran well after the file was written
        let mut c = StatCache::load(&dir, &ctx, false);
        c.skew = 2 * RACY_MARGIN_NS;
        let d1 = c.digest(&f, &mut buf).unwrap();
        assert_eq!((c.hits(), c.hashed()), (0, 1));
        c.save().unwrap();
        let c = StatCache::load(&dir, &ctx, false);
        assert_eq!(c.digest(&f, &mut buf).unwrap(), d1);
        assert_eq!((c.hits(), c.hashed()), (1, 0));
        // same size, mtime restored: ctime still differs
        let mtime = fs::metadata(&f).unwrap().modified().unwrap();
        fs::write(&f, "two").unwrap();
        fs::File::options().write(true).open(&f).unwrap().set_modified(mtime).unwrap();
        let c = StatCache::load(&dir, &ctx, false);
        assert_ne!(c.digest(&f, &mut buf).unwrap(), d1);
        assert_eq!((c.hits(), c.hashed()), (0, 1));
        // a racily clean entry (file changed just before the build) is hashed again
        c.save().unwrap();
        let c = StatCache::load(&dir, &ctx, false);
        c.digest(&f, &mut buf).unwrap();
        assert_eq!((c.hits(), c.hashed()), (0, 1));
        // --no-cache
        let c = StatCache::load(&dir, &ctx, true);
        c.digest(&f, &mut buf).unwrap();
        assert_eq!(c.hashed(), 1);
    }

    #[test]
    fn the_hasher_opens_by_name_in_the_directory_as_digest_does_by_path() {
        let t = tempfile::tempdir().unwrap();
        let (ctx, dir) = (t.path().join("ctx"), t.path().join("cache"));
        for d in ["a", "b"] {
            fs::create_dir_all(ctx.join(d)).unwrap();
            fs::write(ctx.join(d).join("f"), format!("in {d}")).unwrap();
        }
        std::os::unix::fs::symlink("f", ctx.join("a/link")).unwrap();
        let mut buf = vec![0u8; 4096];
        let by_path = StatCache::load(&dir, &ctx, true);
        let by_name = StatCache::load(&dir, &ctx, true);
        let mut h = by_name.hasher();
        for f in ["a/f", "b/f", "a/f"] {
            let p = ctx.join(f);
            assert_eq!(h.digest(&p).unwrap(), by_path.digest(&p, &mut buf).unwrap(), "{f}");
            assert_eq!(h.digest(&p).unwrap(), *blake3::hash(&fs::read(&p).unwrap()).as_bytes(), "{f}");
        }
        // never through a symlink, nor a missing file
        assert!(h.digest(&ctx.join("a/link")).is_err());
        assert!(h.digest(&ctx.join("b/missing")).is_err());
        // an entry of an earlier build is checked by its name too
        let mut c = StatCache::load(&dir, &ctx, false);
        c.skew = 2 * RACY_MARGIN_NS;
        c.digest(&ctx.join("a/f"), &mut buf).unwrap();
        c.save().unwrap();
        let c = StatCache::load(&dir, &ctx, false);
        c.hasher().digest(&ctx.join("a/f")).unwrap();
        assert_eq!((c.hits(), c.hashed()), (1, 0));
    }
}
