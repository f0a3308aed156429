//! The one safe extraction of tar members into a directory, used by filesystem export (and
//! so flatten), Dockerfile snapshots (each layer unpacked in overlayfs format) and ADD
//! archives, and model unpack. Every member is written below the destination only: its
//! parents are checked to be real directories (created when missing; a symlink on the way is
//! refused, so nothing is ever written through one), a regular file is written to a temp file
//! in its directory and renamed over its path once complete (never half visible under its
//! name; a symlink already at the path is replaced, not followed), and removals (whiteouts,
//! what a lower layer left at a path) never follow a symlink either.
//!
//! What is extracted is a [`Profile`]: an image's filesystem, one layer of a Dockerfile
//! build's snapshot (overlayfs format), an archive ADD unpacks, or a model's files. The caller
//! reads the tar with the one tar reader ([`TarReader`]), decides which members to apply and
//! by which path rule ([`clean_path`], or a stricter one), and calls [`Extractor::apply`].

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::layer::codec;
use crate::layer::tar::{Member, Skip, Stream, TarReader};

/// What a tree being extracted is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Profile {
    /// An image's filesystem (export, flatten): whiteouts applied (`.wh.NAME` removes NAME,
    /// `.wh..wh..opq` empties a directory of what lower layers put there), symlinks, hard
    /// links, devices and FIFOs made, owners set (as root; otherwise noted in `skipped`), all
    /// mode bits kept, whatever a lower layer left at a path replaced (a directory by a
    /// directory is merged), directory modes and times set last ([`Extractor::finish`]).
    Image,
    /// A model's files (model unpack): regular files and directories only (any other type is
    /// refused by name), `.wh.` names are files like any other, the rwx bits and the time of
    /// files kept (no owners, no setuid), directories created without their metadata, and
    /// a directory already at a file's path is never removed.
    Model,
    /// One layer of a Dockerfile build's snapshot, in its own directory, in overlayfs format
    /// (the layers are stacked by an overlay mount, or copied): as `Image`, but whiteouts are
    /// recorded as overlayfs records them instead of applied: `.wh.NAME` becomes a 0/0
    /// character device at NAME ([`overlay_whiteout`]), `.wh..wh..opq` the
    /// [`OVERLAY_OPAQUE_XATTR`] of its directory. Needs root (mknod).
    Snapshot,
    /// An archive `ADD` unpacks (Dockerfile): as `Image`, but `.wh.` names are files like
    /// any other (Docker's ADD applies no whiteouts).
    Archive,
}

/// The xattr overlayfs reads as "this directory hides the lower layers' one".
pub(crate) const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Record the overlayfs whiteout of `path` (a 0/0 character device), replacing what is there
/// (never following a symlink).
pub(crate) fn overlay_whiteout(path: &Path) -> Result<()> {
    remove_any(path)?;
    mknod(path, libc::S_IFCHR, 0)
}

/// Mark the directory `dir` opaque for overlayfs (the symlink itself if it is one: never
/// its target).
pub(crate) fn set_overlay_opaque(dir: &Path) -> Result<()> {
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| Error::Usage(format!("{}: path with a NUL byte", dir.display())))?;
    let name = std::ffi::CString::new(OVERLAY_OPAQUE_XATTR).expect("no NUL");
    // SAFETY: valid NUL-terminated strings and a 1-byte value buffer.
    let rc = unsafe { libc::lsetxattr(c.as_ptr(), name.as_ptr(), b"y".as_ptr().cast(), 1, 0) };
    if rc != 0 {
        return Err(Error::io(dir, std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Applies tar members to a directory (see the module docs).
pub(crate) struct Extractor {
    dest: PathBuf,
    profile: Profile,
    root: bool,
    /// Names the layer being applied in errors.
    location: String,
    /// Paths the current layer wrote: an opaque whiteout removes only what lower layers made.
    this_layer: HashSet<PathBuf>,
    /// Directories' modes and times, set by `finish`.
    dir_meta: Vec<(PathBuf, u32, i64)>,
    buf: Vec<u8>,
    /// Bytes of regular files written at most (a decompression bomb stops here).
    pub max_bytes: u64,
    /// Regular files written, as paths relative to the destination, in order.
    pub written: Vec<PathBuf>,
    /// Bytes of regular files written.
    pub bytes: u64,
    /// Entries kept without their owner or device node because this process may not set
    /// them (not root): each as `path: why`.
    pub skipped: Vec<String>,
}

impl Extractor {
    /// An extractor into the existing directory `dest`.
    pub fn new(dest: impl Into<PathBuf>, profile: Profile) -> Self {
        Extractor {
            dest: dest.into(),
            profile,
            // SAFETY: geteuid has no preconditions and cannot fail.
            root: unsafe { libc::geteuid() == 0 },
            location: String::new(),
            this_layer: HashSet::new(),
            dir_meta: Vec::new(),
            buf: Vec::new(),
            max_bytes: u64::MAX,
            written: Vec::new(),
            bytes: 0,
            skipped: Vec::new(),
        }
    }

    /// Start a layer; `location` names it in errors.
    pub fn begin_layer(&mut self, location: impl Into<String>) {
        self.location = location.into();
        self.this_layer.clear();
    }

    fn malformed(&self, reason: impl ToString) -> Error {
        Error::malformed("layer", &self.location, reason)
    }

    /// Apply `member` (just read from `tar`, whose data it reads) at `rel`, its path inside the
    /// tree by the caller's path rule.
    pub fn apply<R: Skip>(&mut self, rel: &Path, member: &Member, tar: &mut TarReader<R>) -> Result<()> {
        // An image's tree in every profile but a model's; whiteouts applied (Image) or
        // recorded (Snapshot).
        let image = self.profile != Profile::Model;
        let whiteouts = matches!(self.profile, Profile::Image | Profile::Snapshot);
        let Some(file_name) = rel.file_name() else { return Ok(()) };
        let name = file_name.to_str().unwrap_or("");
        let parent_rel = rel.parent().unwrap_or(Path::new(""));
        let parent = checked_dir(&self.dest, parent_rel, &self.location)?;
        if self.profile == Profile::Snapshot {
            if name == ".wh..wh..opq" {
                return set_overlay_opaque(&parent);
            }
            if let Some(hidden) = name.strip_prefix(".wh.") {
                return overlay_whiteout(&parent.join(hidden));
            }
        }
        if whiteouts && name == ".wh..wh..opq" {
            for child in fs::read_dir(&parent).at(&parent)? {
                let child = child.at(&parent)?;
                if !self.this_layer.contains(&parent_rel.join(child.file_name())) {
                    remove_any(&child.path())?;
                }
            }
            return Ok(());
        }
        if let Some(hidden) = name.strip_prefix(".wh.").filter(|_| whiteouts) {
            return remove_any(&parent.join(hidden));
        }
        self.this_layer.insert(rel.to_path_buf());
        let target = parent.join(file_name);
        let header = &member.header;
        let mode = member.mode().map_err(|e| self.malformed(e))? & if image { 0o7777 } else { 0o777 };
        let (uid, gid) = member.owner().map_err(|e| self.malformed(e))?;
        let mtime = member.number("mtime", |h| h.mtime()) as i64;
        let kind = tar::EntryType::new(member.kind());
        // What a lower layer left at this path is replaced, except a directory by a directory.
        if image {
            if let Ok(old) = fs::symlink_metadata(&target) {
                if !(kind.is_dir() && old.is_dir()) {
                    remove_any(&target)?;
                }
            }
        }
        match kind {
            tar::EntryType::Directory => {
                if !fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir()) {
                    fs::create_dir(&target).at(&target)?;
                }
                if image {
                    self.chown(&target, uid, gid)?;
                    // Modes and times of directories last: writing into one changes its
                    // mtime, and a read-only directory must stay writable until it is filled.
                    self.dir_meta.push((rel.to_path_buf(), mode, mtime));
                }
            }
            tar::EntryType::Regular => {
                let mut tmp = tempfile::Builder::new().prefix(".hoist-extract-").tempfile_in(&parent).at(&parent)?;
                if self.buf.is_empty() {
                    self.buf = vec![0u8; 256 << 10];
                }
                let mut data = tar.data(member);
                let mut n = 0u64;
                loop {
                    let got = data.read(&mut self.buf).map_err(|e| tar_read_error(&self.location, e))?;
                    if got == 0 {
                        break;
                    }
                    tmp.as_file_mut().write_all(&self.buf[..got]).at(tmp.path())?;
                    n += got as u64;
                }
                if n != member.size {
                    return Err(Error::malformed(
                        format!("tar entry {}", rel.display()),
                        &self.location,
                        format!("cut short: {n} of {} bytes", member.size),
                    ));
                }
                self.bytes += n;
                if self.bytes > self.max_bytes {
                    return Err(self.malformed(format!("more than {} bytes of files", self.max_bytes)));
                }
                if image {
                    self.chown(tmp.path(), uid, gid)?;
                }
                fs::set_permissions(tmp.path(), fs::Permissions::from_mode(mode)).at(tmp.path())?;
                set_mtime(tmp.path(), mtime)?;
                tmp.persist(&target).map_err(|e| Error::io(&target, e.error))?;
                self.written.push(rel.to_path_buf());
            }
            tar::EntryType::Symlink if image => {
                let link = link_of(member).ok_or_else(|| self.malformed("symlink without target"))?;
                std::os::unix::fs::symlink(&link, &target).at(&target)?;
                self.chown(&target, uid, gid)?;
                set_mtime(&target, mtime)?;
            }
            tar::EntryType::Link if image => {
                let link = link_of(member).ok_or_else(|| self.malformed("hard link without target"))?;
                let Some(link_rel) = clean_path(&link, &self.location)? else {
                    return Err(self.malformed("hard link to the root"));
                };
                let link_parent = checked_dir(&self.dest, link_rel.parent().unwrap_or(Path::new("")), &self.location)?;
                let source = link_parent.join(link_rel.file_name().unwrap_or_default());
                let meta = fs::symlink_metadata(&source).at(&source)?;
                if !meta.is_file() {
                    return Err(Error::UnsafePath {
                        path: link.display().to_string(),
                        location: self.location.clone(),
                        reason: "a hard link must name a regular file of the image".into(),
                    });
                }
                fs::hard_link(&source, &target).at(&target)?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo if image => {
                if !self.root && !kind.is_fifo() {
                    self.skipped.push(format!("{}: device node (not root)", rel.display()));
                    return Ok(());
                }
                let ty = match kind {
                    tar::EntryType::Char => libc::S_IFCHR,
                    tar::EntryType::Block => libc::S_IFBLK,
                    _ => libc::S_IFIFO,
                };
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                mknod(&target, ty | mode, libc::makedev(major, minor))?;
                self.chown(&target, uid, gid)?;
                set_mtime(&target, mtime)?;
            }
            // Extension headers are applied by the reader; anything else is metadata.
            _ if image => {}
            other => {
                return Err(Error::Unsupported(format!(
                    "{} in {}: tar entry type {other:?} is not allowed in a model layer",
                    rel.display(),
                    self.location
                )));
            }
        }
        Ok(())
    }

    /// Set the directories' modes and times, deepest first (a parent's time after its
    /// children's changes).
    pub fn finish(&mut self) -> Result<()> {
        let mut dirs = std::mem::take(&mut self.dir_meta);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.0.components().count()));
        for (rel, mode, mtime) in dirs {
            let path = self.dest.join(&rel);
            if fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
                fs::set_permissions(&path, fs::Permissions::from_mode(mode)).at(&path)?;
                set_mtime(&path, mtime)?;
            }
        }
        Ok(())
    }

    /// `lchown` as root; as anyone else, owners other than one's own are noted as skipped.
    fn chown(&mut self, path: &Path, uid: u32, gid: u32) -> Result<()> {
        match std::os::unix::fs::lchown(path, Some(uid), Some(gid)) {
            Ok(()) => Ok(()),
            Err(e) if !self.root && e.raw_os_error() == Some(libc::EPERM) => {
                self.skipped.push(format!("{}: owner {uid}:{gid} (not root)", path.display()));
                Ok(())
            }
            Err(e) => Err(Error::io(path, e)),
        }
    }
}

/// If `src` is a tar (plain, gzip, zstd, xz or bzip2, as BuildKit), extract it into `dir`
/// (true), else leave `dir` alone (false: copied as the file it is). With `max`, a tar
/// stream longer than `max` bytes is refused. Blocking.
pub(crate) fn extract_archive_file(src: &Path, dir: &Path, max: Option<u64>) -> Result<bool> {
    let mut head = [0u8; 512];
    let n = codec::read_head(src, &mut head).at(src)?;
    let algorithm = codec::Algorithm::sniff(&head[..n]);
    let is_tar = n >= 262 && &head[257..262] == b"ustar";
    if algorithm == codec::Algorithm::None && !codec::is_archive_only_compression(&head[..n]) && !is_tar {
        return Ok(false);
    }
    let f = std::io::BufReader::new(fs::File::open(src).at(src)?);
    let reader = codec::archive_decoder(&head[..n], f).at(src)?;
    // no bound: one so large it is never reached (as model unpack does)
    let reader = codec::Bounded::new(reader, max.unwrap_or(u64::MAX), Default::default());
    // The one safe extraction: nothing written through a symlink of the archive, no hard
    // link out of it.
    let location = src.display().to_string();
    let mut tar = TarReader::new(Stream(reader), src, location.as_str());
    let mut ext = Extractor::new(dir, Profile::Archive);
    ext.begin_layer(location.as_str());
    let mut members = 0usize;
    let unpacked = (|| -> Result<()> {
        while let Some(member) = tar.next_member()? {
            members += 1;
            let path = Path::new(std::ffi::OsStr::from_bytes(&member.name));
            let Some(rel) = clean_path(path, &location)? else { continue };
            ext.apply(&rel, &member, &mut tar)?;
        }
        ext.finish()
    })();
    match unpacked {
        Ok(()) => Ok(true),
        // an archive that would write outside its root is refused, whatever its header
        Err(e @ Error::UnsafePath { .. }) => Err(e),
        // compressed but no tar: copied as the file it is, like docker does
        Err(_) if !is_tar && members == 0 => Ok(false),
        Err(e) => Err(e),
    }
}

/// A failed read of a member's data: a malformed-layer error carried by the reader (a bound,
/// a truncation) is kept as it is; anything else is named by the layer.
fn tar_read_error(location: &str, e: std::io::Error) -> Error {
    crate::model::verify::unwrap_io_error(e, location.to_string())
}

/// A member's link target as a path (none when the header has none).
fn link_of(member: &Member) -> Option<PathBuf> {
    member.link.as_deref().filter(|l| !l.is_empty()).map(|l| PathBuf::from(OsStr::from_bytes(l)))
}

/// An entry's path relative to the tree: `./` and leading `/` dropped; `..` refused; `None`
/// for the root itself.
pub(crate) fn clean_path(p: &Path, location: &str) -> Result<Option<PathBuf>> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(Error::UnsafePath {
                    path: p.display().to_string(),
                    location: location.to_string(),
                    reason: "a layer entry may not climb out of the image with ..".into(),
                })
            }
        }
    }
    Ok(if out.as_os_str().is_empty() { None } else { Some(out) })
}

/// `dest/rel`, after checking that every component is a real directory (created when missing,
/// as tar does for a parent a layer does not list): a symlink on the way is refused, so no
/// entry is ever written through one.
pub(crate) fn checked_dir(dest: &Path, rel: &Path, location: &str) -> Result<PathBuf> {
    let mut cur = dest.to_path_buf();
    for c in rel.components() {
        cur.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(Error::UnsafePath {
                    path: rel.display().to_string(),
                    location: location.to_string(),
                    reason: format!("{} is a symlink: nothing is written through one", cur.display()),
                })
            }
            Ok(_) => {
                return Err(Error::UnsafePath {
                    path: rel.display().to_string(),
                    location: location.to_string(),
                    reason: format!("{} is not a directory", cur.display()),
                })
            }
            Err(_) => fs::create_dir(&cur).at(&cur)?,
        }
    }
    Ok(cur)
}

/// Remove a file, symlink (not its target) or directory tree; nothing there is fine.
pub(crate) fn remove_any(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).at(path),
        Ok(_) => fs::remove_file(path).at(path),
        Err(_) => Ok(()),
    }
}

fn set_mtime(path: &Path, mtime: i64) -> Result<()> {
    let t = filetime::FileTime::from_unix_time(mtime, 0);
    filetime::set_symlink_file_times(path, t, t).at(path)
}

fn mknod(path: &Path, mode: u32, dev: libc::dev_t) -> Result<()> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::Usage(format!("{}: path with a NUL byte", path.display())))?;
    // SAFETY: `c` is a valid NUL-terminated path; mknod only creates a node there.
    let rc = unsafe { libc::mknod(c.as_ptr(), mode as libc::mode_t, dev) };
    if rc != 0 {
        return Err(Error::io(path, std::io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::tar::Stream;

    #[test]
    fn paths_stay_inside_the_tree() {
        assert_eq!(clean_path(Path::new("./a/b"), "l").unwrap(), Some(PathBuf::from("a/b")));
        assert_eq!(clean_path(Path::new("/etc/passwd"), "l").unwrap(), Some(PathBuf::from("etc/passwd")));
        assert_eq!(clean_path(Path::new("./"), "l").unwrap(), None);
        assert!(clean_path(Path::new("a/../../x"), "l").is_err());
        let tree = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/tmp", tree.path().join("link")).unwrap();
        assert!(checked_dir(tree.path(), Path::new("link/x"), "l").is_err());
        assert!(checked_dir(tree.path(), Path::new("a/b"), "l").unwrap().is_dir());
    }

    fn tar_of(entries: &[(&str, tar::EntryType, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, data) in entries {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(*kind);
            h.set_mode(0o644);
            h.set_mtime(1_000_000);
            match kind {
                tar::EntryType::Symlink => {
                    h.set_size(0);
                    b.append_link(&mut h, name, std::str::from_utf8(data).unwrap()).unwrap();
                }
                _ => {
                    h.set_size(data.len() as u64);
                    b.append_data(&mut h, name, *data).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    fn extract(ext: &mut Extractor, tar: &[u8]) -> Result<()> {
        ext.begin_layer("layer L");
        let mut r = TarReader::new(Stream(tar), "t", "layer L");
        while let Some(m) = r.next_member()? {
            let Some(rel) = clean_path(Path::new(OsStr::from_bytes(&m.name)), "layer L")? else { continue };
            ext.apply(&rel, &m, &mut r)?;
        }
        ext.finish()
    }

    #[test]
    fn image_layers_apply_whiteouts_and_never_write_through_a_symlink() {
        use tar::EntryType::{Regular, Symlink};
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut ext = Extractor::new(d, Profile::Image);
        let lower = tar_of(&[("a/x", Regular, b"x"), ("a/y", Regular, b"y"), ("gone", Regular, b"g")]);
        extract(&mut ext, &lower).unwrap();
        let upper = tar_of(&[("a/.wh..wh..opq", Regular, b""), ("a/z", Regular, b"z"), (".wh.gone", Regular, b"")]);
        extract(&mut ext, &upper).unwrap();
        let mut names: Vec<_> = fs::read_dir(d.join("a")).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        assert_eq!(names, ["z"]);
        assert!(!d.join("gone").exists());
        // A symlink to outside, then a file below it: refused, nothing written outside.
        let out = outside.path().to_str().unwrap().as_bytes();
        let evil = tar_of(&[("l", Symlink, out), ("l/f", Regular, b"pwned")]);
        let e = extract(&mut ext, &evil).unwrap_err();
        assert!(matches!(e, Error::UnsafePath { .. }), "{e}");
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
        // A file over a symlink at the same path replaces the link, never writes to its target.
        let victim = outside.path().join("victim");
        fs::write(&victim, b"safe").unwrap();
        let over = tar_of(&[("v", Symlink, victim.to_str().unwrap().as_bytes()), ("v", Regular, b"new")]);
        extract(&mut ext, &over).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"safe");
        assert_eq!(fs::read(d.join("v")).unwrap(), b"new");
    }

    #[test]
    fn model_layers_take_files_and_directories_only() {
        use tar::EntryType::{Regular, Symlink};
        let dir = tempfile::tempdir().unwrap();
        let mut ext = Extractor::new(dir.path(), Profile::Model);
        extract(&mut ext, &tar_of(&[("w/.wh.x", Regular, b"kept"), ("w/m.bin", Regular, b"weights")])).unwrap();
        assert_eq!(fs::read(dir.path().join("w/.wh.x")).unwrap(), b"kept", "no whiteouts in a model layer");
        assert_eq!(ext.written, [PathBuf::from("w/.wh.x"), PathBuf::from("w/m.bin")]);
        let e = extract(&mut ext, &tar_of(&[("s", Symlink, b"/etc/passwd")])).unwrap_err();
        assert!(e.to_string().contains("not allowed in a model layer"), "{e}");
        assert!(!dir.path().join("s").exists());
    }
}
