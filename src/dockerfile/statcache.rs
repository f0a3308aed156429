//! Content digests of build-context files remembered by their stat, so a second build of an
//! unchanged context reads no file contents (the cache key of a COPY needs the digest of
//! every file it copies).
//!
//! The rule, git's index and BuildKit's fsutil stat checks in one: an entry is keyed by the
//! file's absolute path and holds its size, mtime and ctime (nanoseconds), inode and mode;
//! any difference in any of them means the file is hashed again. ctime cannot be set from
//! user space, so a rewrite that restores size and mtime (`touch -d`) still changes it. An
//! entry is trusted only if the file's ctime was at least [`RACY_MARGIN_NS`] (more than a
//! kernel clock tick) older than the moment its stat was taken: a file written in the same
//! clock tick as its hashing ("racily clean" in git's words) is hashed again next time.
//!
//! One file per context directory, `build-cache/stat-cache/HASH` in the store, written
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
struct Stat {
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    ino: u64,
    mode: u32,
}

impl Stat {
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

fn now_ns() -> i128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i128)
}

impl StatCache {
    /// The cache of `context` kept under `dir` (a missing, oversized or malformed file is an
    /// empty cache; `disabled` gives an empty one too, for `--no-cache`).
    pub fn load(dir: &Path, context: &Path, disabled: bool) -> StatCache {
        let abs = fs::canonicalize(context).unwrap_or_else(|_| context.to_path_buf());
        let name = hex::encode(Sha256::digest(abs.as_os_str().as_encoded_bytes()));
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

    /// SHA-256 of the contents of the regular file `src`, from the cache when its stat is
    /// unchanged (or from this build's own earlier look at it, counted once). The stat is
    /// taken before the read, so a change during the read is seen by the next build.
    pub fn digest(&self, src: &Path, buf: &mut [u8]) -> Result<[u8; 32]> {
        let key = src.to_string_lossy().into_owned();
        // hashed or taken from the cache earlier in this build (its files hashed ahead of a
        // COPY step): as it was then, counted once
        if let Some(e) = self.new.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(e.digest);
        }
        if let Some(d) = self.taken.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(*d);
        }
        let at = now_ns() + self.skew;
        let (stat, opened) = match self.old.get(&key) {
            Some(e) => {
                let stat = Stat::of(&src.symlink_metadata().at(src)?);
                if e.stat == stat && e.stat.ctime_ns + RACY_MARGIN_NS <= e.hashed_at {
                    if self.taken.lock().unwrap_or_else(|p| p.into_inner()).insert(key, e.digest).is_none() {
                        self.hits.fetch_add(1, Ordering::Relaxed);
                    }
                    return Ok(e.digest);
                }
                (stat, None)
            }
            // not in the cache: the stat of the open file (one path lookup, not two)
            None => {
                let f = open_nofollow(src)?;
                (Stat::of(&f.metadata().at(src)?), Some(f))
            }
        };
        let mut h = Sha256::new();
        let mut f = match opened {
            Some(f) => f,
            None => open_nofollow(src)?,
        };
        loop {
            let n = f.read(buf).at(src)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
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

/// `src` opened for reading, never through a symlink (it was listed as a regular file).
fn open_nofollow(src: &Path) -> Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(src).at(src)
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
}
