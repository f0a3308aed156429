//! Confinement of a layout's own files: nothing under a layout is reached through a symlink
//! that leads out of it. The directories hoist writes into (`blobs/`, `blobs/<alg>/`,
//! `.hoist/`, `.hoist/tmp`) must be real directories, lock files are opened with
//! `O_NOFOLLOW`, and blobs and index files are opened as regular files only, without
//! blocking (`O_NONBLOCK`: a FIFO put in place of a blob would otherwise hang the open).
//!
//! The layout root itself may be a symlink: it is the path the user named.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

fn location(root: &Path) -> String {
    format!("oci:{}", root.display())
}

/// The error for `path` found under the layout `root`.
pub(crate) fn unsafe_in(root: &Path, path: &Path, reason: impl Into<String>) -> Error {
    Error::UnsafePath { path: path.display().to_string(), location: location(root), reason: reason.into() }
}

fn kind_of(ft: &fs::FileType) -> &'static str {
    if ft.is_symlink() {
        "a symlink"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_block_device() || ft.is_char_device() {
        "a device"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    }
}

/// The directory `root/rel` (`rel` of `/`-separated names), each component created when
/// missing and refused when it is a symlink or not a directory.
pub(crate) fn ensure_dir(root: &Path, rel: &str) -> Result<PathBuf> {
    Ok(walk_dirs(root, rel, true)?.expect("every missing directory is created"))
}

/// The one walk of [`ensure_dir`] and [`dir_exists`]: `root/rel` component by component, a
/// symlink or a non-directory refused; a missing one created (`create`) or the end (`None`).
fn walk_dirs(root: &Path, rel: &str, create: bool) -> Result<Option<PathBuf>> {
    let mut path = root.to_path_buf();
    for name in rel.split('/').filter(|n| !n.is_empty()) {
        path.push(name);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_dir() => {}
            Ok(m) => return Err(not_a_dir(root, &path, &m.file_type())),
            Err(e) if e.kind() == io::ErrorKind::NotFound && !create => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => match fs::create_dir(&path) {
                Ok(()) => {}
                // Another writer made it in between: check what it made.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let m = fs::symlink_metadata(&path).map_err(|e| Error::io(&path, e))?;
                    if !m.file_type().is_dir() {
                        return Err(not_a_dir(root, &path, &m.file_type()));
                    }
                }
                Err(e) => return Err(Error::io(&path, e)),
            },
            Err(e) => return Err(Error::io(&path, e)),
        }
    }
    Ok(Some(path))
}

fn not_a_dir(root: &Path, path: &Path, ft: &fs::FileType) -> Error {
    if ft.is_symlink() {
        unsafe_in(root, path, "is a symlink; hoist does not follow links out of a layout")
    } else {
        unsafe_in(root, path, format!("is {}, not a directory", kind_of(ft)))
    }
}

/// Whether the directory `root/rel` exists; an error when a component is a symlink or not a
/// directory. Creates nothing.
pub(crate) fn dir_exists(root: &Path, rel: &str) -> Result<bool> {
    Ok(walk_dirs(root, rel, false)?.is_some())
}

/// Open (creating unless `create` is false) a lock file without following a symlink.
/// `None` when `create` is false and the file does not exist.
pub(crate) fn open_lock(root: &Path, path: &Path, create: bool) -> Result<Option<File>> {
    let mut o = OpenOptions::new();
    o.read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC);
    if create {
        o.write(true).create(true).truncate(false);
    }
    match o.open(path) {
        Ok(f) => {
            let m = f.metadata().map_err(|e| Error::io(path, e))?;
            if !m.is_file() {
                return Err(unsafe_in(root, path, format!("lock file is {}", kind_of(&m.file_type()))));
            }
            Ok(Some(f))
        }
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            Err(unsafe_in(root, path, "lock file is a symlink; hoist does not follow links out of a layout"))
        }
        Err(e) if !create && e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Open a file of the layout (a blob, `index.json`, `oci-layout`) for reading as a regular
/// file: never a FIFO or device, and through a symlink only when the link resolves to a
/// regular file inside the layout. `NotFound` io errors pass through unchanged (as
/// `Error::Io` with kind `NotFound`) so callers can tell a missing file.
pub(crate) fn open_regular(root: &Path, path: &Path) -> Result<File> {
    let open = |p: &Path| {
        OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC).open(p)
    };
    let file = match open(path) {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            let target = fs::canonicalize(path)
                .map_err(|_| unsafe_in(root, path, "is a symlink that does not resolve to a file"))?;
            let inside = fs::canonicalize(root).is_ok_and(|r| target.starts_with(r));
            if !inside {
                return Err(unsafe_in(root, path, format!("is a symlink to {}, outside the layout", target.display())));
            }
            open(&target).map_err(|e| Error::io(path, e))?
        }
        Err(e) => return Err(Error::io(path, e)),
    };
    let m = file.metadata().map_err(|e| Error::io(path, e))?;
    if !m.is_file() {
        return Err(unsafe_in(root, path, format!("is {}, not a regular file", kind_of(&m.file_type()))));
    }
    Ok(file)
}

/// Whether `e` is a missing file (from `open_regular`).
pub(crate) fn is_not_found(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_symlinked_dirs_fifos_and_outside_links() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("l");
        fs::create_dir(&root).unwrap();
        let elsewhere = t.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, root.join("blobs")).unwrap();
        let e = ensure_dir(&root, "blobs/sha256").unwrap_err();
        assert!(e.to_string().contains(&root.join("blobs").display().to_string()), "{e}");
        assert!(!elsewhere.join("sha256").exists());
        assert!(dir_exists(&root, "blobs").is_err());
        assert!(!dir_exists(&root, "nope/x").unwrap());

        let fifo = root.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a plain mkfifo on a path we own.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        assert!(open_regular(&root, &fifo).unwrap_err().to_string().contains("FIFO"));
        std::os::unix::fs::symlink("/dev/zero", root.join("zero")).unwrap();
        assert!(open_regular(&root, &root.join("zero")).unwrap_err().to_string().contains("outside the layout"));
        fs::write(root.join("real"), b"x").unwrap();
        std::os::unix::fs::symlink("real", root.join("inside")).unwrap();
        assert!(open_regular(&root, &root.join("inside")).is_ok());
        assert!(is_not_found(&open_regular(&root, &root.join("missing")).unwrap_err()));

        let target = t.path().join("victim");
        std::os::unix::fs::symlink(&target, root.join("lock")).unwrap();
        assert!(open_lock(&root, &root.join("lock"), true).is_err());
        assert!(!target.exists(), "a symlinked lock must not create its target");
    }
}
