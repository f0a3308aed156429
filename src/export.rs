//! An image's filesystem, as buildx's `type=local`/`type=tar` outputs and `crane export` give
//! it: the layers applied in order into a directory (or a tar of it), whiteouts honoured
//! (`.wh.NAME` removes NAME, `.wh..wh..opq` empties a directory of what lower layers put
//! there), owners, modes and modification times kept.
//!
//! What it is not: a container runtime's rootfs preparation (no id mapping, no xattrs, no
//! overlay). Safety: every entry is written below the destination only: a path with `..`,
//! an absolute link target of a hard link outside the tree, or a parent that is a symlink is
//! refused (symlinks are created, never followed); sizes and counts are bounded by the named
//! constants below. Layers are verified (digest and size) before any byte of them is applied.

use std::collections::HashSet;
use std::fs;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use serde::Serialize;
use tokio::io::AsyncWriteExt;

use crate::error::{Error, IoContext, Result};
use crate::model::descriptor::{Descriptor, Platform};
use crate::model::document::View;
use crate::model::verify::VerifyReader;
use crate::transport::Source;

/// Entries one export applies at most, over all layers (the biggest distribution images
/// have a few hundred thousand files).
pub const MAX_ENTRIES: u64 = 10_000_000;
/// Bytes of one entry's path at most (Linux's PATH_MAX).
pub const MAX_PATH_BYTES: usize = 4096;
/// Uncompressed bytes one export writes at most (a decompression bomb stops here).
pub const MAX_TOTAL_BYTES: u64 = 1 << 40;

/// What an export did.
#[derive(Debug, Default, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FsReport {
    /// The image manifest whose layers were applied.
    pub manifest: String,
    /// Layers applied.
    pub layers: usize,
    /// Tar entries applied (whiteouts included).
    pub entries: u64,
    /// Bytes of regular files written.
    pub bytes: u64,
    /// Entries kept without their owner or device node because this process may not set them
    /// (not root): each as `path: why`.
    pub skipped: Vec<String>,
}

/// Apply the layers of the image `root` names (an index: the manifest for `platform`, or its
/// only image) from `src` into the directory `dest` (created; it must be empty if it exists),
/// or with `tar` into a tar file `dest` (`-`: standard output).
pub async fn export_filesystem(
    src: &dyn Source,
    root: &Descriptor,
    platform: Option<&Platform>,
    dest: &Path,
    tar: bool,
) -> Result<FsReport> {
    let manifest = pick_manifest(src, root, platform).await?;
    let doc = src.fetch_document(&manifest).await?;
    let View::Manifest(m) = &doc.view else {
        return Err(Error::Unsupported(format!("{} is not an image manifest", manifest.digest)));
    };
    let layers = m.layers.clone();
    // Each layer verified into an anonymous temp file before it is applied.
    let mut files = Vec::new();
    for layer in &layers {
        let mut f = tokio::fs::File::from_std(tempfile::tempfile().at(std::env::temp_dir())?);
        let stream = src.open_blob(layer, 0).await?;
        let mut reader = VerifyReader::new(stream, layer, src.location());
        tokio::io::copy(&mut reader, &mut f)
            .await
            .map_err(|e| crate::model::verify::unwrap_io_error(e, format!("blob {}", layer.digest)))?;
        f.flush().await.at("<temp file>")?;
        files.push((layer.clone(), f.into_std().await));
    }
    let dest = dest.to_path_buf();
    let digest = manifest.digest.to_string();
    tokio::task::spawn_blocking(move || -> Result<FsReport> {
        let mut report = FsReport { manifest: digest, ..Default::default() };
        if tar {
            let parent = match dest.parent().filter(|p| !p.as_os_str().is_empty() && dest != Path::new("-")) {
                Some(p) => p.to_path_buf(),
                None => PathBuf::from("."),
            };
            let work = tempfile::Builder::new().prefix(".hoist-export-").tempdir_in(&parent).at(&parent)?;
            let tree = work.path().join("rootfs");
            apply_layers_blocking(&tree, files, &mut report)?;
            write_tar_blocking(&tree, &dest, &parent)?;
        } else {
            apply_layers_blocking(&dest, files, &mut report)?;
        }
        Ok(report)
    })
    .await
    .map_err(|e| Error::Other(format!("export: {e}")))?
}

/// The image manifest of `root`: itself, or an index's entry for `platform` (or its only image).
pub(crate) async fn pick_manifest(
    src: &dyn Source,
    root: &Descriptor,
    platform: Option<&Platform>,
) -> Result<Descriptor> {
    let doc = src.fetch_document(root).await?;
    let View::Index(index) = &doc.view else {
        return Ok(root.clone());
    };
    let images: Vec<&Descriptor> =
        index.manifests.iter().filter(|d| !crate::model::platform::is_attestation(d)).collect();
    let listed = || {
        images
            .iter()
            .map(|d| d.platform.as_ref().map_or("-".to_string(), |p| p.to_string()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let chosen = match platform {
        Some(p) => images
            .iter()
            .find(|d| p.matches_entry(d))
            .copied()
            .ok_or_else(|| Error::not_found(format!("platform {p} (index has: {})", listed()), src.location()))?,
        None => match images.as_slice() {
            [one] => *one,
            _ => {
                return Err(Error::Usage(format!(
                    "{} is an index of {} images ({}): pick one with --platform to export its filesystem",
                    root.digest,
                    images.len(),
                    listed()
                )))
            }
        },
    };
    // An index of indexes: go down one more level.
    Box::pin(pick_manifest(src, chosen, platform)).await
}

/// Apply each verified layer file, bottom first, into `dest`.
fn apply_layers_blocking(dest: &Path, files: Vec<(Descriptor, fs::File)>, report: &mut FsReport) -> Result<()> {
    match fs::create_dir(dest) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let meta = fs::symlink_metadata(dest).at(dest)?;
            if !meta.is_dir() {
                return Err(Error::Usage(format!("{}: exists and is not a directory", dest.display())));
            }
            if fs::read_dir(dest).at(dest)?.next().is_some() {
                return Err(Error::Usage(format!(
                    "{}: not empty (an export writes into an empty directory)",
                    dest.display()
                )));
            }
        }
        Err(e) => return Err(Error::io(dest, e)),
    }
    let root_uid = is_root();
    let mut dir_meta: Vec<(PathBuf, u32, i64)> = Vec::new();
    for (layer, mut file) in files {
        file.rewind().at("<temp file>")?;
        let reader = decompressor(file, &layer)?;
        let mut archive = tar::Archive::new(reader);
        // Entries of this layer: an opaque whiteout removes only what lower layers made.
        let mut this_layer: HashSet<PathBuf> = HashSet::new();
        let entries = archive.entries().map_err(|e| layer_error(&layer, e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| layer_error(&layer, e))?;
            report.entries += 1;
            if report.entries > MAX_ENTRIES {
                return Err(Error::malformed(
                    "layer",
                    layer.digest.to_string(),
                    format!("more than {MAX_ENTRIES} entries"),
                ));
            }
            let raw = entry.path_bytes().into_owned();
            if raw.len() > MAX_PATH_BYTES {
                return Err(Error::malformed("layer", layer.digest.to_string(), "entry path too long"));
            }
            let rel = clean_path(&entry.path().map_err(|e| layer_error(&layer, e))?, &layer)?;
            let Some(rel) = rel else { continue };
            let name = rel.file_name().and_then(|n| n.to_str()).unwrap_or("").to_string();
            let parent_rel = rel.parent().map(Path::to_path_buf).unwrap_or_default();
            let parent = checked_dir(dest, &parent_rel, &layer)?;
            if name == ".wh..wh..opq" {
                for child in fs::read_dir(&parent).at(&parent)? {
                    let child = child.at(&parent)?;
                    let child_rel = parent_rel.join(child.file_name());
                    if !this_layer.contains(&child_rel) {
                        remove_any(&child.path())?;
                    }
                }
                continue;
            }
            if let Some(hidden) = name.strip_prefix(".wh.") {
                remove_any(&parent.join(hidden))?;
                continue;
            }
            this_layer.insert(rel.clone());
            let target = dest.join(&rel);
            let header = entry.header().clone();
            let mode = crate::layer::tar::numeric_field(&header.as_old().mode)
                .map(|m| (m & 0o7777) as u32)
                .ok_or_else(|| {
                    layer_error(&layer, std::io::Error::new(std::io::ErrorKind::InvalidData, "mode is not a number"))
                })?;
            let pax = entry.pax_extensions().map_err(|e| layer_error(&layer, e))?;
            let (uid, gid) = crate::layer::tar::owner(&header, pax).map_err(|e| layer_error(&layer, e))?;
            let mtime = header.mtime().unwrap_or(0) as i64;
            let kind = header.entry_type();
            // What a lower layer left at this path is replaced, except a directory by a directory.
            if let Ok(old) = fs::symlink_metadata(&target) {
                if !(kind.is_dir() && old.is_dir()) {
                    remove_any(&target)?;
                }
            }
            match kind {
                tar::EntryType::Directory => {
                    if fs::symlink_metadata(&target).is_err() {
                        fs::create_dir(&target).at(&target)?;
                    }
                    chown(&target, uid, gid, root_uid, report)?;
                    // Modes and times of directories last: writing into one changes its mtime,
                    // and a read-only directory must stay writable until its entries are in.
                    dir_meta.push((rel.clone(), mode, mtime));
                }
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let mut out = fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode_nofollow()
                        .open(&target)
                        .at(&target)?;
                    let n = std::io::copy(&mut (&mut entry).take(header.size().unwrap_or(0)), &mut out)
                        .map_err(|e| layer_error(&layer, e))?;
                    report.bytes += n;
                    if report.bytes > MAX_TOTAL_BYTES {
                        return Err(Error::malformed("image", layer.digest.to_string(), "more than 1 TiB of files"));
                    }
                    drop(out);
                    chown(&target, uid, gid, root_uid, report)?;
                    fs::set_permissions(&target, fs::Permissions::from_mode(mode)).at(&target)?;
                    set_mtime(&target, mtime)?;
                }
                tar::EntryType::Symlink => {
                    let link = entry
                        .link_name()
                        .map_err(|e| layer_error(&layer, e))?
                        .ok_or_else(|| Error::malformed("layer", layer.digest.to_string(), "symlink without target"))?;
                    std::os::unix::fs::symlink(&link, &target).at(&target)?;
                    chown(&target, uid, gid, root_uid, report)?;
                    set_mtime(&target, mtime)?;
                }
                tar::EntryType::Link => {
                    let link = entry.link_name().map_err(|e| layer_error(&layer, e))?.ok_or_else(|| {
                        Error::malformed("layer", layer.digest.to_string(), "hard link without target")
                    })?;
                    let Some(link_rel) = clean_path(&link, &layer)? else {
                        return Err(Error::malformed("layer", layer.digest.to_string(), "hard link to the root"));
                    };
                    let link_parent = checked_dir(dest, link_rel.parent().unwrap_or(Path::new("")), &layer)?;
                    let source = link_parent.join(link_rel.file_name().unwrap_or_default());
                    let meta = fs::symlink_metadata(&source).at(&source)?;
                    if !meta.is_file() {
                        return Err(Error::UnsafePath {
                            path: link.display().to_string(),
                            location: layer.digest.to_string(),
                            reason: "a hard link must name a regular file of the image".into(),
                        });
                    }
                    fs::hard_link(&source, &target).at(&target)?;
                }
                tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                    if !root_uid && !kind.is_fifo() {
                        report.skipped.push(format!("{}: device node (not root)", rel.display()));
                        continue;
                    }
                    let ty = match kind {
                        tar::EntryType::Char => libc::S_IFCHR,
                        tar::EntryType::Block => libc::S_IFBLK,
                        _ => libc::S_IFIFO,
                    };
                    let major = header.device_major().ok().flatten().unwrap_or(0);
                    let minor = header.device_minor().ok().flatten().unwrap_or(0);
                    mknod(&target, ty | mode, libc::makedev(major, minor))?;
                    chown(&target, uid, gid, root_uid, report)?;
                    set_mtime(&target, mtime)?;
                }
                // Extended headers are consumed by the tar crate; anything else is metadata.
                _ => {}
            }
        }
        report.layers += 1;
    }
    // Deepest first, so a parent's time is set after its children's changes.
    dir_meta.sort_by_key(|d| std::cmp::Reverse(d.0.components().count()));
    for (rel, mode, mtime) in dir_meta {
        let path = dest.join(&rel);
        if fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).at(&path)?;
            set_mtime(&path, mtime)?;
        }
    }
    Ok(())
}

/// `O_NOFOLLOW` for creating files: the final component is never a symlink's target.
trait NoFollow {
    fn mode_nofollow(&mut self) -> &mut Self;
}

impl NoFollow for fs::OpenOptions {
    fn mode_nofollow(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_NOFOLLOW).mode(0o600)
    }
}

fn layer_error(layer: &Descriptor, e: std::io::Error) -> Error {
    Error::malformed("layer", layer.digest.to_string(), e)
}

/// A layer file as a tar stream through the layer codec: gzip and zstd recognized by their
/// magic bytes (as docker's loader does, whatever the media type says), anything else read as
/// a plain tar.
fn decompressor(file: fs::File, layer: &Descriptor) -> Result<Box<dyn Read + Send>> {
    crate::layer::codec::decompress(None, std::io::BufReader::new(file)).map_err(|e| layer_error(layer, e))
}

/// An entry's path relative to the tree: `./` and leading `/` dropped; `..` refused; `None`
/// for the root itself.
fn clean_path(p: &Path, layer: &Descriptor) -> Result<Option<PathBuf>> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(Error::UnsafePath {
                    path: p.display().to_string(),
                    location: layer.digest.to_string(),
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
fn checked_dir(dest: &Path, rel: &Path, layer: &Descriptor) -> Result<PathBuf> {
    let mut cur = dest.to_path_buf();
    for c in rel.components() {
        cur.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(Error::UnsafePath {
                    path: rel.display().to_string(),
                    location: layer.digest.to_string(),
                    reason: format!("{} is a symlink: an export never writes through one", cur.display()),
                })
            }
            Ok(_) => {
                return Err(Error::UnsafePath {
                    path: rel.display().to_string(),
                    location: layer.digest.to_string(),
                    reason: format!("{} is not a directory", cur.display()),
                })
            }
            Err(_) => fs::create_dir(&cur).at(&cur)?,
        }
    }
    Ok(cur)
}

/// Remove a file, symlink (not its target) or directory tree; nothing there is fine.
fn remove_any(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).at(path),
        Ok(_) => fs::remove_file(path).at(path),
        Err(_) => Ok(()),
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// `lchown` as root; as anyone else, owners other than one's own are noted as skipped.
fn chown(path: &Path, uid: u32, gid: u32, root: bool, report: &mut FsReport) -> Result<()> {
    match std::os::unix::fs::lchown(path, Some(uid), Some(gid)) {
        Ok(()) => Ok(()),
        Err(e) if !root && e.raw_os_error() == Some(libc::EPERM) => {
            report.skipped.push(format!("{}: owner {uid}:{gid} (not root)", path.display()));
            Ok(())
        }
        Err(e) => Err(Error::io(path, e)),
    }
}

fn set_mtime(path: &Path, mtime: i64) -> Result<()> {
    let t = filetime::FileTime::from_unix_time(mtime, 0);
    filetime::set_symlink_file_times(path, t, t).at(path)
}

fn mknod(path: &Path, mode: u32, dev: libc::dev_t) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::Usage(format!("{}: path with a NUL byte", path.display())))?;
    // SAFETY: `c` is a valid NUL-terminated path; mknod only creates a node there.
    let rc = unsafe { libc::mknod(c.as_ptr(), mode as libc::mode_t, dev) };
    if rc != 0 {
        return Err(Error::io(path, std::io::Error::last_os_error()));
    }
    Ok(())
}

/// A tar of the tree `tree` (owners, modes, times kept; symlinks stored as symlinks) at
/// `dest` (`-`: standard output), written to a temp file in `parent` and renamed into place.
fn write_tar_blocking(tree: &Path, dest: &Path, parent: &Path) -> Result<()> {
    let to_stdout = dest == Path::new("-");
    let mut tmp =
        if to_stdout { None } else { Some(crate::transport::public_temp(".export-").tempfile_in(parent).at(parent)?) };
    {
        let sink: Box<dyn Write> = match &mut tmp {
            Some(t) => Box::new(std::io::BufWriter::new(t.as_file_mut())),
            None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
        };
        let mut builder = tar::Builder::new(sink);
        builder.follow_symlinks(false);
        builder.mode(tar::HeaderMode::Complete);
        let mut paths: Vec<PathBuf> = walkdir::WalkDir::new(tree)
            .follow_links(false)
            .min_depth(1)
            .sort_by_file_name()
            .into_iter()
            .map(|e| e.map(|e| e.path().to_path_buf()).map_err(|e| Error::Other(format!("export: {e}"))))
            .collect::<Result<_>>()?;
        paths.sort();
        let mut seen_inodes: std::collections::HashMap<(u64, u64), PathBuf> = Default::default();
        for p in paths {
            let rel = p.strip_prefix(tree).map_err(|e| Error::Other(e.to_string()))?.to_path_buf();
            let meta = fs::symlink_metadata(&p).at(&p)?;
            // A second name of a regular file is a hard link entry, as in the layers.
            if meta.is_file() && meta.nlink() > 1 {
                if let Some(first) = seen_inodes.get(&(meta.dev(), meta.ino())) {
                    let mut h = tar::Header::new_gnu();
                    h.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
                    h.set_entry_type(tar::EntryType::Link);
                    h.set_size(0);
                    builder.append_link(&mut h, &rel, first).at(dest)?;
                    continue;
                }
                seen_inodes.insert((meta.dev(), meta.ino()), rel.clone());
            }
            builder.append_path_with_name(&p, &rel).at(dest)?;
        }
        builder.into_inner().at(dest)?.flush().at(dest)?;
    }
    if let Some(t) = tmp {
        t.as_file().sync_all().at(dest)?;
        t.persist(dest).map_err(|e| Error::io(dest, e.error))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_tree() {
        let d = Descriptor::new("application/x", crate::Digest::sha256_of(b"x"), 1);
        assert_eq!(clean_path(Path::new("./a/b"), &d).unwrap(), Some(PathBuf::from("a/b")));
        assert_eq!(clean_path(Path::new("/etc/passwd"), &d).unwrap(), Some(PathBuf::from("etc/passwd")));
        assert_eq!(clean_path(Path::new("./"), &d).unwrap(), None);
        assert!(clean_path(Path::new("a/../../x"), &d).is_err());
        let tree = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/tmp", tree.path().join("link")).unwrap();
        assert!(checked_dir(tree.path(), Path::new("link/x"), &d).is_err());
        assert!(checked_dir(tree.path(), Path::new("a/b"), &d).unwrap().is_dir());
    }
}
