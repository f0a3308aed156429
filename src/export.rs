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

use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Seek, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use tokio::io::AsyncWriteExt;

use crate::error::{Error, IoContext, Result};
use crate::layer::extract::{clean_path, Extractor, Profile};
use crate::layer::tar::{Stream, TarReader};
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
    let manifest = pick_manifest(src, root, platform, None).await?;
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
    .map_err(|e| Error::task("export", e))?
}

/// The image manifest of `root`: itself, or an index's entry for `platform` (without one: its
/// only image, else its entry for `fallback` when it has one).
pub(crate) async fn pick_manifest(
    src: &dyn Source,
    root: &Descriptor,
    platform: Option<&Platform>,
    fallback: Option<&Platform>,
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
        None => match (images.as_slice(), fallback.and_then(|f| images.iter().find(|d| f.matches_entry(d)))) {
            ([one], _) => *one,
            (_, Some(entry)) => *entry,
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
    Box::pin(pick_manifest(src, chosen, platform, fallback)).await
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
    let mut ext = Extractor::new(dest, Profile::Image);
    ext.max_bytes = MAX_TOTAL_BYTES;
    for (layer, mut file) in files {
        file.rewind().at("<temp file>")?;
        let reader = decompressor(file, &layer)?;
        // The one bounded tar reader (extension headers capped before they are read).
        let location = format!("layer {}", layer.digest);
        let mut archive = TarReader::new(Stream(reader), &location, location.as_str());
        ext.begin_layer(layer.digest.to_string());
        while let Some(member) = archive.next_member()? {
            report.entries += 1;
            if report.entries > MAX_ENTRIES {
                return Err(Error::malformed(
                    "layer",
                    layer.digest.to_string(),
                    format!("more than {MAX_ENTRIES} entries"),
                ));
            }
            if member.name.len() > MAX_PATH_BYTES {
                return Err(Error::malformed("layer", layer.digest.to_string(), "entry path too long"));
            }
            let path = Path::new(OsStr::from_bytes(&member.name));
            let Some(rel) = clean_path(path, &layer.digest.to_string())? else { continue };
            ext.apply(&rel, &member, &mut archive)?;
        }
        report.layers += 1;
    }
    ext.finish()?;
    report.bytes = ext.bytes;
    report.skipped = std::mem::take(&mut ext.skipped);
    Ok(())
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
            .map(|e| e.map(|e| e.path().to_path_buf()).map_err(|e| Error::walk(tree, e)))
            .collect::<Result<_>>()?;
        paths.sort();
        let mut seen_inodes: std::collections::HashMap<(u64, u64), PathBuf> = Default::default();
        for p in paths {
            let rel = p.strip_prefix(tree).expect("a walk yields paths below its root").to_path_buf();
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
