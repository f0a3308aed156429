//! An image's final file tree as the SBOM scanners need it, read from the layers as streams:
//! nothing is unpacked to disk. Each layer is read once (layers in parallel), every regular
//! file hashed with SHA-1 (SPDX requires it for the files it lists), and only the package
//! databases and metadata files ([`wanted`]) kept in memory; ELF executables are searched for
//! Go build info on the way. Whiteouts are applied logically, as an overlay would: `.wh.NAME`
//! hides NAME and what is below it in lower layers, `.wh..wh..opq` hides what lower layers put
//! in its directory; entries of a layer replace the same paths of the layers below.

use std::collections::BTreeMap;
use std::io::{BufReader, Read};

use sha1::Digest as _;

use crate::error::{Error, Result};
use crate::export::{MAX_ENTRIES, MAX_PATH_BYTES};
use crate::layer::tar::{Stream, TarReader};
use crate::model::descriptor::Descriptor;
use crate::sbom::gobuild::{self, GoBinary};

/// Bytes of one metadata file kept at most (a Debian `status` of ~3000 packages is ~5 MiB).
pub const MAX_KEPT_FILE: u64 = 64 << 20;
/// Bytes of metadata files kept over a whole image at most.
pub const MAX_KEPT_TOTAL: u64 = 512 << 20;

/// One non-directory entry of the final tree.
#[derive(Clone, Debug, Default)]
pub struct FileEntry {
    /// SHA-1 of a regular file's bytes (none for symlinks and special files).
    pub sha1: Option<[u8; 20]>,
    /// The bytes, for the metadata files the scanners read.
    pub content: Option<Vec<u8>>,
    /// Go build info found in the file.
    pub go: Option<GoBinary>,
    /// Size in bytes.
    pub size: u64,
    /// A symlink's target.
    pub link: Option<String>,
}

/// Path (relative, no leading `/` or `./`) to entry; directories are not kept.
pub type Tree = BTreeMap<String, FileEntry>;

/// What one layer says, in tar order.
pub(crate) enum Event {
    /// A file, symlink or special file at this path.
    Put(String, FileEntry),
    /// A hard link to an earlier path.
    Link(String, String),
    /// A directory (a file below a lower layer's directory of the same name stays).
    Dir(String),
    /// `.wh.NAME`: the path is removed from lower layers.
    Whiteout(String),
    /// `.wh..wh..opq` in this directory ("" for the root).
    Opaque(String),
}

/// Where rpm keeps its sqlite database, relative to the root (newer path first); its `-wal`
/// file is kept too.
pub const RPM_DB_PATHS: [&str; 2] = ["usr/lib/sysimage/rpm/rpmdb.sqlite", "var/lib/rpm/rpmdb.sqlite"];

/// The kept bytes of the file at `path`, as they are.
pub(crate) fn content_bytes<'a>(tree: &'a Tree, path: &str) -> Option<&'a [u8]> {
    tree.get(path).and_then(|e| e.content.as_deref())
}

/// Absolute paths of regular files present in the tree, from `paths` as a database lists
/// them (symlinked directories followed).
pub(crate) fn present_files<'p>(tree: &Tree, paths: impl Iterator<Item = &'p str>) -> Vec<String> {
    let mut out: Vec<String> = paths
        .filter_map(|p| resolve(tree, p))
        .filter(|(_, e)| e.sha1.is_some())
        .map(|(p, _)| format!("/{p}"))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Whether the scanners read the file at `path` (relative).
pub fn wanted(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    if matches!(path, "var/lib/dpkg/status" | "lib/apk/db/installed" | "etc/os-release" | "usr/lib/os-release") {
        return true;
    }
    if RPM_DB_PATHS.iter().any(|db| path == *db || path.strip_prefix(db) == Some("-wal")) {
        return true;
    }
    if let Some(rest) = path.strip_prefix("var/lib/dpkg/status.d/") {
        return !rest.contains('/');
    }
    if let Some(rest) = path.strip_prefix("var/lib/dpkg/info/") {
        return !rest.contains('/') && rest.ends_with(".list");
    }
    if let Some(rest) = path.strip_prefix("usr/share/doc/") {
        return rest.split('/').count() == 2 && name == "copyright";
    }
    if path.ends_with(".dist-info/METADATA")
        || path.ends_with(".dist-info/RECORD")
        || path.ends_with(".egg-info/PKG-INFO")
        || path.ends_with(".egg-info/installed-files.txt")
        || (path.ends_with(".egg-info") && path.contains("-packages/"))
    {
        return true;
    }
    if name == "package.json" {
        return is_node_module_manifest(path);
    }
    false
}

/// `…/node_modules/NAME/package.json` or `…/node_modules/@SCOPE/NAME/package.json`.
pub fn is_node_module_manifest(path: &str) -> bool {
    let parts: Vec<&str> = path.split('/').collect();
    let n = parts.len();
    (n >= 3 && parts[n - 3] == "node_modules" && !parts[n - 2].starts_with('@'))
        || (n >= 4 && parts[n - 4] == "node_modules" && parts[n - 3].starts_with('@'))
}

/// An entry's path relative to the root: `./` and `/` dropped, `..` refused, `None` for the root.
fn clean(raw: &[u8], layer: &Descriptor) -> Result<Option<String>> {
    let s = String::from_utf8_lossy(raw);
    let mut out: Vec<&str> = Vec::new();
    for part in s.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err(Error::UnsafePath {
                    path: s.to_string(),
                    location: layer.digest.to_string(),
                    reason: "a layer entry may not climb out of the image with ..".into(),
                })
            }
            p => out.push(p),
        }
    }
    Ok(if out.is_empty() { None } else { Some(out.join("/")) })
}

fn layer_error(layer: &Descriptor, e: impl std::fmt::Display) -> Error {
    Error::malformed("layer", layer.digest.to_string(), e)
}

/// Read one layer (`raw`: its compressed bytes) into events. `kept` counts metadata bytes kept
/// so far over the image (bounded by [`MAX_KEPT_TOTAL`]).
pub(crate) fn scan_layer_blocking(
    raw: impl Read + Send,
    layer: &Descriptor,
    kept: &std::sync::atomic::AtomicU64,
) -> Result<Vec<Event>> {
    // The layer codec's dispatch by magic bytes (gzip, zstd, else a plain tar), then the one
    // bounded tar reader.
    let reader = crate::layer::codec::decompress(None, BufReader::with_capacity(256 << 10, raw))
        .map_err(|e| layer_error(layer, e))?;
    let location = format!("layer {}", layer.digest);
    let mut archive = TarReader::new(Stream(reader), &location, location.as_str());
    let mut events = Vec::new();
    let mut count = 0u64;
    let mut buf = vec![0u8; 128 << 10];
    while let Some(member) = archive.next_member()? {
        count += 1;
        if count > MAX_ENTRIES {
            return Err(layer_error(layer, format!("more than {MAX_ENTRIES} entries")));
        }
        let raw_path = &member.name;
        if raw_path.len() > MAX_PATH_BYTES {
            return Err(layer_error(layer, "entry path too long"));
        }
        let Some(path) = clean(raw_path, layer)? else { continue };
        let (dir, name) = match path.rsplit_once('/') {
            Some((d, n)) => (d.to_string(), n.to_string()),
            None => (String::new(), path.clone()),
        };
        if name == ".wh..wh..opq" {
            events.push(Event::Opaque(dir));
            continue;
        }
        if let Some(hidden) = name.strip_prefix(".wh.") {
            events.push(Event::Whiteout(if dir.is_empty() { hidden.to_string() } else { format!("{dir}/{hidden}") }));
            continue;
        }
        let header = &member.header;
        let kind = tar::EntryType::new(member.kind());
        if kind.is_dir() {
            events.push(Event::Dir(path));
            continue;
        }
        if kind.is_hard_link() {
            let target = member.link.clone().unwrap_or_default();
            if let Some(target) = clean(&target, layer)? {
                events.push(Event::Link(path, target));
            }
            continue;
        }
        let size = member.size;
        let mut file = FileEntry { size, ..Default::default() };
        if kind.is_symlink() {
            file.link = member.link.as_deref().map(|b| String::from_utf8_lossy(b).into_owned());
        }
        if kind == tar::EntryType::Regular {
            let executable = header.mode().unwrap_or(0) & 0o111 != 0;
            let entry = archive.data(&member);
            read_regular(entry, &path, executable, (kept, &mut buf), &mut file).map_err(|e| match e {
                ReadError::Io(e) => layer_error(layer, e),
                ReadError::TooMuch => {
                    layer_error(layer, format!("more than {MAX_KEPT_TOTAL} bytes of package metadata"))
                }
            })?;
        }
        events.push(Event::Put(path, file));
    }
    // The tar's end may come before the blob's: read the rest (padding, a gzip trailer) so
    // the caller's digest check sees every byte.
    std::io::copy(archive.rest(), &mut std::io::sink()).map_err(|e| layer_error(layer, e))?;
    Ok(events)
}

/// Why a regular file could not be read.
enum ReadError {
    Io(std::io::Error),
    /// The image's (or directory's) package metadata is over [`MAX_KEPT_TOTAL`].
    TooMuch,
}

/// Read one regular file of `file.size` bytes at `path` from `r`: hash it (SHA-1), keep it
/// when a scanner reads it ([`wanted`]; `kept` counts the bytes kept), and search an ELF
/// executable for Go build info.
fn read_regular(
    mut r: impl Read,
    path: &str,
    executable: bool,
    (kept, buf): (&std::sync::atomic::AtomicU64, &mut [u8]),
    file: &mut FileEntry,
) -> std::result::Result<(), ReadError> {
    use std::sync::atomic::Ordering;
    let size = file.size;
    let keep = wanted(path) && size <= MAX_KEPT_FILE;
    if keep && kept.fetch_add(size, Ordering::Relaxed) + size > MAX_KEPT_TOTAL {
        return Err(ReadError::TooMuch);
    }
    let mut content = keep.then(|| Vec::with_capacity(size as usize));
    let mut go = executable.then(gobuild::Finder::default);
    let mut sha1 = sha1::Sha1::new();
    let mut first = true;
    loop {
        let n = r.read(buf).map_err(ReadError::Io)?;
        if n == 0 {
            break;
        }
        let chunk = &buf[..n];
        sha1.update(chunk);
        if let Some(c) = content.as_mut() {
            c.extend_from_slice(chunk);
        }
        if first {
            // Only ELF files are searched for Go build info.
            if !chunk.starts_with(b"\x7fELF") {
                go = None;
            }
            first = false;
        }
        if let Some(g) = go.as_mut() {
            if g.feed(chunk) {
                // found: no need to look further
                file.go = g.take();
                go = None;
            }
        }
    }
    if let Some(mut g) = go {
        file.go = g.finish();
    }
    file.sha1 = Some(sha1.finalize().into());
    file.content = content;
    Ok(())
}

/// Read a directory (a build context) as one layer: every regular file hashed, package
/// metadata kept, symlinks recorded and not followed. Blocking. `kept` counts the metadata
/// bytes kept (bounded by [`MAX_KEPT_TOTAL`]); more than [`MAX_ENTRIES`] entries is an error.
pub(crate) fn scan_dir_blocking(dir: &std::path::Path, kept: &std::sync::atomic::AtomicU64) -> Result<Vec<Event>> {
    use std::os::unix::fs::PermissionsExt;
    let bad = |path: &std::path::Path, e: std::io::Error| Error::io(path, e);
    let mut events = Vec::new();
    let mut buf = vec![0u8; 128 << 10];
    let walk = walkdir::WalkDir::new(dir).min_depth(1).follow_links(false).sort_by_file_name();
    for (count, entry) in walk.into_iter().enumerate() {
        let entry = entry.map_err(|e| Error::walk(dir, e))?;
        if count as u64 >= MAX_ENTRIES {
            return Err(Error::Unsupported(format!("{}: more than {MAX_ENTRIES} entries", dir.display())));
        }
        let Some(path) = entry.path().strip_prefix(dir).ok().and_then(|p| p.to_str()).map(str::to_string) else {
            continue;
        };
        let ft = entry.file_type();
        if ft.is_dir() {
            continue;
        }
        let meta = entry.metadata().map_err(|e| bad(entry.path(), e.into()))?;
        let mut file = FileEntry { size: meta.len(), ..Default::default() };
        if ft.is_symlink() {
            file.link = std::fs::read_link(entry.path()).ok().map(|t| t.to_string_lossy().into_owned());
            file.size = 0;
        } else if ft.is_file() {
            let f = std::fs::File::open(entry.path()).map_err(|e| bad(entry.path(), e))?;
            let executable = meta.permissions().mode() & 0o111 != 0;
            // a file that changes size while read is read as far as it was listed
            let r = f.take(file.size);
            read_regular(r, &path, executable, (kept, &mut buf), &mut file).map_err(|e| match e {
                ReadError::Io(e) => bad(entry.path(), e),
                ReadError::TooMuch => Error::Unsupported(format!(
                    "{}: more than {MAX_KEPT_TOTAL} bytes of package metadata",
                    dir.display()
                )),
            })?;
        }
        events.push(Event::Put(path, file));
    }
    Ok(events)
}

/// The entry at `path` with symlinks in its directories and in itself followed inside the
/// tree (merged-usr images list `/bin/sh` in package databases but keep `usr/bin/sh`).
pub fn resolve<'t>(tree: &'t Tree, path: &str) -> Option<(String, &'t FileEntry)> {
    let mut parts: Vec<String> = path.split('/').filter(|p| !p.is_empty() && *p != ".").map(str::to_string).collect();
    let mut hops = 0;
    let mut i = 0;
    while i < parts.len() {
        let prefix = parts[..=i].join("/");
        match tree.get(&prefix).and_then(|e| e.link.clone()) {
            Some(target) if hops < 32 => {
                hops += 1;
                let base: Vec<String> = if target.starts_with('/') { Vec::new() } else { parts[..i].to_vec() };
                let mut next = base;
                for t in target.split('/') {
                    match t {
                        "" | "." => {}
                        ".." => {
                            next.pop();
                        }
                        t => next.push(t.to_string()),
                    }
                }
                let rest = parts[i + 1..].to_vec();
                i = 0;
                next.extend(rest);
                parts = next;
                continue;
            }
            Some(_) => return None,
            None => i += 1,
        }
    }
    let p = parts.join("/");
    tree.get(&p).map(|e| (p, e))
}

/// Remove `path` and everything below it.
fn remove_tree(tree: &mut Tree, path: &str) {
    tree.remove(path);
    remove_below(tree, path);
}

/// Remove everything below the directory `dir` ("" for the root).
fn remove_below(tree: &mut Tree, dir: &str) {
    if dir.is_empty() {
        tree.clear();
        return;
    }
    let prefix = format!("{dir}/");
    let doomed: Vec<String> =
        tree.range(prefix.clone()..).take_while(|(k, _)| k.starts_with(&prefix)).map(|(k, _)| k.clone()).collect();
    for k in doomed {
        tree.remove(&k);
    }
}

/// Apply one layer's events on top of `tree`: its whiteouts first (they hide only what lower
/// layers have), then its entries in tar order.
pub(crate) fn apply(tree: &mut Tree, events: Vec<Event>) {
    for e in &events {
        match e {
            Event::Whiteout(p) => remove_tree(tree, p),
            Event::Opaque(d) => remove_below(tree, d),
            _ => {}
        }
    }
    for e in events {
        match e {
            Event::Put(p, f) => {
                // A file where a lower layer had a directory replaces the whole directory.
                remove_below(tree, &p);
                tree.insert(p, f);
            }
            Event::Link(p, target) => {
                if let Some(mut f) = tree.get(&target).cloned() {
                    f.go = None;
                    remove_below(tree, &p);
                    tree.insert(p, f);
                }
            }
            Event::Dir(p) => {
                // A directory where a lower layer had a file replaces the file.
                tree.remove(&p);
            }
            Event::Whiteout(_) | Event::Opaque(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(p: &str) -> Event {
        Event::Put(p.into(), FileEntry::default())
    }

    #[test]
    fn whiteouts_are_logical() {
        let mut t = Tree::new();
        apply(&mut t, vec![put("a/x"), put("a/y"), put("b/z"), put("c")]);
        apply(
            &mut t,
            vec![
                Event::Whiteout("a/x".into()),
                Event::Opaque("b".into()),
                put("b/new"),
                Event::Dir("c".into()),
                put("c/d"),
            ],
        );
        let keys: Vec<&str> = t.keys().map(String::as_str).collect();
        assert_eq!(keys, ["a/y", "b/new", "c/d"]);
        apply(&mut t, vec![put("b/later"), Event::Opaque("b".into())]);
        let keys: Vec<&str> = t.keys().map(String::as_str).collect();
        assert_eq!(keys, ["a/y", "b/later", "c/d"], "an opaque dir keeps its own layer's entries");
    }

    #[test]
    fn wanted_paths() {
        assert!(wanted("var/lib/dpkg/status"));
        assert!(wanted("var/lib/dpkg/status.d/base"));
        assert!(wanted("var/lib/dpkg/info/libc6:amd64.list"));
        assert!(wanted("usr/lib/python3/dist-packages/six-1.16.0.dist-info/METADATA"));
        assert!(wanted("app/node_modules/@scope/pkg/package.json"));
        assert!(wanted("app/node_modules/pkg/package.json"));
        assert!(!wanted("app/node_modules/pkg/lib/package.json"));
        assert!(!wanted("app/package.json"));
        assert!(wanted("usr/share/doc/zlib1g/copyright"));
        assert!(!wanted("usr/share/doc/zlib1g/changelog.gz"));
    }
}
