//! Deterministic layer tars: walk the given sources ourselves, sort every entry by its
//! path in the image, normalize headers (uid/gid 0 unless overridden, no user/group
//! names, one mtime), and stream tar → compressor → temp file while hashing both the
//! uncompressed (diff_id) and compressed (blob digest) bytes in the same pass.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

pub(crate) mod codec;
pub mod estargz;
pub(crate) mod extract;
mod pgzip;
pub(crate) mod tar;
pub mod zstdchunked;

pub use codec::Compression;

use crate::error::{Error, IoContext, Result};
use crate::ingest::{PipeWriter, BUF};
use crate::model::descriptor::Descriptor;
use crate::model::digest::Digest;
use crate::model::verify::HashWriter;
use crate::transport::layout::Layout;

/// Files larger than this need a PAX `size` record (ustar's octal field holds 8 GiB - 1).
const USTAR_MAX_SIZE: u64 = 0o77_777_777_777;

/// One source path (file or directory) and where it goes in the image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerEntry {
    /// File or directory on disk. A directory is copied with its contents; a symlink
    /// named here is followed (symlinks inside a directory are kept as symlinks).
    pub source: PathBuf,
    /// Path in the image (`/app`, `usr/local/bin/tool`). For a directory source, the
    /// directory itself becomes this path; `/` copies its contents to the root.
    /// A file source with a target ending in `/` keeps its file name.
    pub target: String,
    /// Permission bits for files and directories (default: as on disk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Owner uid of every entry (default 0).
    pub uid: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Owner gid of every entry (default 0).
    pub gid: Option<u64>,
}

impl LayerEntry {
    /// `source` placed at `target` with the defaults.
    pub fn new(source: impl Into<PathBuf>, target: impl Into<String>) -> Self {
        LayerEntry { source: source.into(), target: target.into(), mode: None, uid: None, gid: None }
    }
}

/// A layer stored in the layout: its descriptor and the digest of the uncompressed tar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerBlob {
    /// The compressed blob as stored.
    pub descriptor: Descriptor,
    /// Digest of the uncompressed tar (`rootfs.diff_ids`).
    pub diff_id: Digest,
}

/// What a prepared layer entry is ([`build_items_layer_blocking`]).
#[derive(Clone, Debug)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file read from `src` (`size` bytes); files with the same `link_key`
    /// (device, inode) become hardlinks to the first in path order.
    File {
        /// Where the content is read.
        src: PathBuf,
        /// Its size.
        size: u64,
        /// (device, inode) when it has several links.
        link_key: Option<(u64, u64)>,
    },
    /// A symlink.
    Symlink {
        /// Link target as stored.
        target: String,
    },
    /// A hardlink to another path of the layer.
    Hardlink {
        /// Path (in the layer) of the file holding the data.
        target: String,
    },
    /// An empty regular file: overlay whiteouts (`.wh.NAME`, `.wh..wh..opq`).
    Empty,
}

/// One prepared layer entry.
#[derive(Clone, Debug)]
pub struct Item {
    /// What it is.
    pub kind: Kind,
    /// Permission bits (and setuid/setgid/sticky).
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// Its own mtime (seconds) instead of the layer's.
    pub mtime: Option<u64>,
}

impl Item {
    /// The regular file `src` as `meta` describes it; with `hardlinks`, one of several links
    /// to it is stored once (see [`Kind::File`]).
    fn file(src: PathBuf, meta: &fs::Metadata, hardlinks: bool, mode: u32, uid: u64, gid: u64) -> Item {
        let link_key = (hardlinks && meta.nlink() > 1).then(|| (meta.dev(), meta.ino()));
        Item { kind: Kind::File { src, size: meta.len(), link_key }, mode, uid, gid, mtime: None }
    }
}

/// Build one layer from `entries` and store it in `layout`. Blocking: run it on a
/// blocking thread from async code. `mtime` (seconds) is written on every entry.
pub fn build_layer_blocking(
    layout: &Layout,
    entries: &[LayerEntry],
    compression: Compression,
    mtime: i64,
) -> Result<LayerBlob> {
    build_layer_following_blocking(layout, entries, compression, mtime, false)
}

/// [`build_layer_blocking`]; with `follow_symlinks`, a symlink inside a source directory that
/// leads out of it (refused otherwise) is stored as the regular file it points to.
pub fn build_layer_following_blocking(
    layout: &Layout,
    entries: &[LayerEntry],
    compression: Compression,
    mtime: i64,
    follow_symlinks: bool,
) -> Result<LayerBlob> {
    let items = collect(entries, follow_symlinks)?;
    build_items_layer_blocking(layout, items, compression, mtime)
}

/// Build one layer from prepared entries (path in the image without leading `/` → entry),
/// written in path order like [`build_layer_blocking`]. Blocking.
pub fn build_items_layer_blocking(
    layout: &Layout,
    mut items: BTreeMap<String, Item>,
    compression: Compression,
    mtime: i64,
) -> Result<LayerBlob> {
    link_hardlinks(&mut items);
    if compression.is_lazy() {
        return build_lazy_layer(layout, &items, compression, mtime);
    }
    let mut tmp = layout.begin_blob()?;
    // Layers are written direct: their size is unknown until the end, and small ones only
    // pay one short extra write for the tail.
    let out = tmp.blob_file(true)?;
    let sink = HashWriter::new(BufWriter::with_capacity(BUF, out));
    // tar + diff_id hash on this thread; compression, digest and file writes on the pipe's.
    let mut pipe = HashWriter::new(PipeWriter::new(compression.encoder(sink).at(tmp.path())?));
    write_tar(&items, mtime.max(0) as u64, &mut pipe)?;
    let (pipe, diff_id, _) = pipe.finish();
    let sink = pipe.finish().at(tmp.path())?.finish().at(tmp.path())?;
    let (file, digest, size) = sink.finish();
    file.into_inner().map_err(|e| e.into_error()).at(tmp.path())?.finish().at(tmp.path())?;
    tmp.set_hashed(digest.clone(), size);
    tmp.commit(&digest, size)?;
    Ok(LayerBlob { descriptor: Descriptor::new(compression.layer_media_type(), digest, size), diff_id })
}

/// [`build_items_layer_blocking`] for the lazy-pull formats, which cut the whole tar: the tar
/// goes to an anonymous temp file first, then through the codec's one dispatch
/// ([`codec::compress_layer`]), so a build writes the bytes `copy --dest-compress` writes.
fn build_lazy_layer(
    layout: &Layout,
    items: &BTreeMap<String, Item>,
    compression: Compression,
    mtime: i64,
) -> Result<LayerBlob> {
    use std::io::Seek;
    let mut tmp = layout.begin_blob()?;
    let mut plain = tempfile::tempfile().at(tmp.path())?;
    let tar_digest = {
        let mut w = HashWriter::new(BufWriter::with_capacity(BUF, &mut plain));
        write_tar(items, mtime.max(0) as u64, &mut w)?;
        let (mut w, digest, _) = w.finish();
        w.flush().at(tmp.path())?;
        digest
    };
    plain.seek(io::SeekFrom::Start(0)).at(tmp.path())?;
    let out = tmp.blob_file(true)?;
    let sink = HashWriter::new(BufWriter::with_capacity(BUF, out));
    let what = format!("layer {}", tmp.path().display());
    let (sink, layer) =
        codec::compress_layer(compression, &codec::LazyOptions::default(), io::BufReader::new(plain), sink, &what)
            .at(tmp.path())?;
    let (file, digest, size) = sink.finish();
    file.into_inner().map_err(|e| e.into_error()).at(tmp.path())?.finish().at(tmp.path())?;
    tmp.set_hashed(digest.clone(), size);
    tmp.commit(&digest, size)?;
    let mut descriptor = Descriptor::new(compression.layer_media_type(), digest, size);
    for (k, v) in layer.annotations {
        descriptor.annotations.insert(k.to_string(), v);
    }
    Ok(LayerBlob { descriptor, diff_id: layer.diff_id.unwrap_or(tar_digest) })
}

/// Write the deterministic tar of `entries` to `w` (no compression). Returns nothing but
/// the bytes; used by tests and by callers that hash themselves.
pub fn write_tar_blocking(entries: &[LayerEntry], mtime: i64, w: &mut impl Write) -> Result<()> {
    let items = collect(entries, false)?;
    write_tar(&items, mtime.max(0) as u64, w)
}

fn unsafe_path(path: impl AsRef<Path>, reason: impl Into<String>) -> Error {
    Error::UnsafePath { path: path.as_ref().display().to_string(), location: "layer".into(), reason: reason.into() }
}

/// Normalize a path in the image: relative, `/`-separated, no `.` or empty components.
/// `..` anywhere is refused. The image root is the empty string.
pub fn normalize_target(target: &str) -> Result<String> {
    let mut parts = Vec::new();
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(unsafe_path(target, "`..` in a path inside the image")),
            c if c.contains('\0') => return Err(unsafe_path(target, "NUL byte in path")),
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

fn join(base: &str, rel: &str) -> String {
    match (base.is_empty(), rel.is_empty()) {
        (true, _) => rel.to_string(),
        (_, true) => base.to_string(),
        _ => format!("{base}/{rel}"),
    }
}

fn utf8(path: &Path) -> Result<&str> {
    path.to_str().ok_or_else(|| Error::Unsupported(format!("{}: file names must be UTF-8", path.display())))
}

fn collect(entries: &[LayerEntry], follow_symlinks: bool) -> Result<BTreeMap<String, Item>> {
    let mut out = BTreeMap::new();
    for e in entries {
        let target = normalize_target(&e.target)?;
        let meta = fs::metadata(&e.source).at(&e.source)?;
        let uid = e.uid.unwrap_or(0);
        let gid = e.gid.unwrap_or(0);
        let mode_of = |m: &fs::Metadata| e.mode.unwrap_or(m.permissions().mode() & 0o7777);
        if meta.is_dir() {
            if !target.is_empty() {
                out.insert(target.clone(), Item { kind: Kind::Dir, mode: mode_of(&meta), uid, gid, mtime: None });
            }
            for w in walkdir::WalkDir::new(&e.source).follow_links(false).min_depth(1).sort_by_file_name() {
                let w = w.map_err(|err| {
                    let p = err.path().unwrap_or(&e.source).to_path_buf();
                    Error::io(p, err.into())
                })?;
                let rel = w.path().strip_prefix(&e.source).expect("walkdir yields children");
                let rel_s = utf8(rel)?;
                let path_in_image = join(&target, &normalize_target(rel_s)?);
                let m = w.path().symlink_metadata().at(w.path())?;
                let ft = m.file_type();
                let item = if ft.is_dir() {
                    Item { kind: Kind::Dir, mode: mode_of(&m), uid, gid, mtime: None }
                } else if ft.is_file() {
                    Item::file(w.path().to_path_buf(), &m, true, mode_of(&m), uid, gid)
                } else if ft.is_symlink() {
                    let link = fs::read_link(w.path()).at(w.path())?;
                    match check_symlink(w.path(), rel, &link) {
                        Ok(()) => Item {
                            kind: Kind::Symlink { target: utf8(&link)?.to_string() },
                            mode: 0o777,
                            uid,
                            gid,
                            mtime: None,
                        },
                        Err(e) if !follow_symlinks => return Err(e),
                        Err(_) => {
                            // --follow-symlinks: what the link points to, as a regular file.
                            let t = fs::metadata(w.path()).at(w.path())?;
                            if !t.is_file() {
                                return Err(unsafe_path(
                                    w.path(),
                                    "--follow-symlinks follows links to regular files only",
                                ));
                            }
                            Item::file(w.path().to_path_buf(), &t, false, mode_of(&t), uid, gid)
                        }
                    }
                } else {
                    return Err(Error::Unsupported(format!(
                        "{}: sockets, devices and fifos cannot go into a layer",
                        w.path().display()
                    )));
                };
                out.insert(path_in_image, item);
            }
        } else if meta.is_file() {
            let target = if e.target.ends_with('/') || target.is_empty() {
                let name = e.source.file_name().ok_or_else(|| unsafe_path(&e.source, "source has no file name"))?;
                join(&target, utf8(Path::new(name))?)
            } else {
                target
            };
            out.insert(target, Item::file(e.source.clone(), &meta, true, mode_of(&meta), uid, gid));
        } else {
            return Err(Error::Unsupported(format!(
                "{}: sockets, devices and fifos cannot go into a layer",
                e.source.display()
            )));
        }
    }
    link_hardlinks(&mut out);
    Ok(out)
}

/// Hardlinks inside the layer: the first path (in sorted order) holds the data.
fn link_hardlinks(out: &mut BTreeMap<String, Item>) {
    let mut first: HashMap<(u64, u64), String> = HashMap::new();
    for (path, item) in out.iter_mut() {
        if let Kind::File { link_key: Some(key), .. } = &item.kind {
            match first.get(key) {
                Some(target) => item.kind = Kind::Hardlink { target: target.clone() },
                None => {
                    first.insert(*key, path.clone());
                }
            }
        }
    }
}

/// Refuse a symlink whose target leaves the directory tree it was found in.
fn check_symlink(path: &Path, rel: &Path, link: &Path) -> Result<()> {
    if link.is_absolute() {
        return Err(unsafe_path(path, format!("symlink to absolute path {} escapes the source tree", link.display())));
    }
    let mut depth: i64 = rel.components().count() as i64 - 1;
    for c in link.components() {
        match c {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            _ => return Err(unsafe_path(path, format!("symlink target {} is not relative", link.display()))),
        }
        if depth < 0 {
            return Err(unsafe_path(path, format!("symlink target {} escapes the source tree", link.display())));
        }
    }
    Ok(())
}

fn pax_record(key: &str, value: &str) -> Vec<u8> {
    let body = format!(" {key}={value}\n");
    let mut len = body.len() + 1;
    loop {
        let candidate = len.to_string().len() + body.len();
        if candidate == len {
            break;
        }
        len = candidate;
    }
    format!("{len}{body}").into_bytes()
}

fn put_name(field: &mut [u8], value: &str) {
    let bytes = value.as_bytes();
    let mut n = bytes.len().min(field.len());
    while !value.is_char_boundary(n) {
        n -= 1;
    }
    field[..n].copy_from_slice(&bytes[..n]);
}

const ZEROS: [u8; 1024] = [0u8; 1024];

fn pad(w: &mut impl Write, len: u64) -> io::Result<()> {
    let rem = (len % 512) as usize;
    if rem != 0 {
        w.write_all(&ZEROS[..512 - rem])?;
    }
    Ok(())
}

fn write_tar(items: &BTreeMap<String, Item>, mtime: u64, w: &mut impl Write) -> Result<()> {
    let out = PathBuf::from("<layer stream>");
    let mut buf = vec![0u8; BUF];
    for (path, item) in items {
        let name = if matches!(item.kind, Kind::Dir) { format!("{path}/") } else { path.clone() };
        let (entry_type, size, link) = match &item.kind {
            Kind::Dir => (::tar::EntryType::Directory, 0, None),
            Kind::File { size, .. } => (::tar::EntryType::Regular, *size, None),
            Kind::Symlink { target } => (::tar::EntryType::Symlink, 0, Some(target.as_str())),
            Kind::Hardlink { target } => (::tar::EntryType::Link, 0, Some(target.as_str())),
            Kind::Empty => (::tar::EntryType::Regular, 0, None),
        };
        let mtime = item.mtime.unwrap_or(mtime);
        let mut pax = Vec::new();
        if let Some(l) = link.filter(|l| l.len() > 100) {
            pax.extend(pax_record("linkpath", l));
        }
        if name.len() > 100 {
            pax.extend(pax_record("path", &name));
        }
        if size > USTAR_MAX_SIZE {
            pax.extend(pax_record("size", &size.to_string()));
        }
        if !pax.is_empty() {
            let mut h = ::tar::Header::new_ustar();
            h.set_entry_type(::tar::EntryType::XHeader);
            put_name(&mut h.as_old_mut().name, "PaxHeaders.0/entry");
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(mtime);
            h.set_size(pax.len() as u64);
            h.set_cksum();
            w.write_all(h.as_bytes()).at(&out)?;
            w.write_all(&pax).at(&out)?;
            pad(w, pax.len() as u64).at(&out)?;
        }
        let mut h = ::tar::Header::new_ustar();
        h.set_entry_type(entry_type);
        put_name(&mut h.as_old_mut().name, &name);
        if let Some(l) = link {
            put_name(&mut h.as_old_mut().linkname, l);
        }
        h.set_mode(item.mode);
        h.set_uid(item.uid);
        h.set_gid(item.gid);
        h.set_mtime(mtime);
        h.set_size(size);
        h.set_cksum();
        w.write_all(h.as_bytes()).at(&out)?;
        if let Kind::File { src, size, .. } = &item.kind {
            let f = File::open(src).at(src)?;
            let mut r = f.take(*size);
            let copied = crate::ingest::copy_stream_buf(&mut r, w, src, &out, &mut buf)?;
            if copied != *size {
                return Err(Error::changed(
                    src,
                    format!("file shrank from {size} to {copied} bytes while building the layer"),
                ));
            }
            pad(w, *size).at(&out)?;
        }
    }
    w.write_all(&ZEROS).at(&out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_length_counts_itself() {
        assert_eq!(pax_record("path", "a"), b"9 path=a\n");
        let long = "x".repeat(95);
        let r = pax_record("path", &long);
        assert_eq!(r.len().to_string(), String::from_utf8(r.clone()).unwrap().split(' ').next().unwrap());
    }

    #[test]
    fn targets_are_normalized_and_dotdot_refused() {
        assert_eq!(normalize_target("/usr//local/./bin/").unwrap(), "usr/local/bin");
        assert_eq!(normalize_target("/").unwrap(), "");
        assert!(matches!(normalize_target("a/../../etc"), Err(Error::UnsafePath { .. })));
    }
}
