//! A stage's filesystem as a stack of unpacked layer directories in overlayfs format
//! (whiteouts as 0/0 character devices, opaque directories marked with the
//! `trusted.overlay.opaque` xattr): unpacking layer blobs into that format, looking a path
//! up through the stack, mounting the stack, and turning an overlay upper directory back
//! into layer entries with `.wh.` files, as buildah and containerd do.

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr};
use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, IoContext, Result};
use crate::layer::extract::{clean_path, Extractor, Profile, OVERLAY_OPAQUE_XATTR};
use crate::layer::tar::{Stream, TarReader};
use crate::layer::{codec, Item, Kind};
use crate::model::descriptor::Descriptor;
use crate::model::digest::Digest;
use crate::transport::layout::Layout;

const WH_PREFIX: &str = ".wh.";
const WH_OPAQUE: &str = ".wh..wh..opq";

/// Where the build keeps unpacked layers, cache entries and cache mounts: `build-cache/`
/// inside the store.
pub fn cache_root(layout: &Layout) -> PathBuf {
    layout.root().join("build-cache")
}

/// Directory of the unpacked layer whose chain (this layer on its parents) is `chain`, the
/// hex of [`chain_id`]. Keyed by chain, not by diff_id: a layer's implicit parent
/// directories take their metadata from the layers below it (see [`unpack_overlay`]).
pub fn layer_dir(layout: &Layout, chain: &str) -> PathBuf {
    cache_root(layout).join("layers").join(chain)
}

/// The OCI ChainID (hex) of a layer `diff_id` on a stack whose ChainID is `parent`.
pub fn chain_id(parent: Option<&str>, diff_id: &Digest) -> String {
    match parent {
        None => diff_id.hex().to_string(),
        Some(p) => Digest::sha256_of(format!("sha256:{p} {diff_id}").as_bytes()).hex().to_string(),
    }
}

/// Unpack the layer `desc` (blob in `layout`) into overlay format at the `layer_dir` of
/// `chain`, on top of the unpacked stack `lower`, unless it is there already. Blocking.
pub fn ensure_unpacked_blocking(layout: &Layout, desc: &Descriptor, chain: &str, lower: &[PathBuf]) -> Result<PathBuf> {
    let dir = layer_dir(layout, chain);
    if dir.is_dir() {
        return Ok(dir);
    }
    let parent = dir.parent().expect("layer dir has a parent");
    fs::create_dir_all(parent).at(parent)?;
    let tmp = tempfile::Builder::new().prefix(".unpack-").tempdir_in(parent).at(parent)?;
    let blob = layout.blob_path_of(&desc.digest);
    let file = BufReader::with_capacity(1 << 20, File::open(&blob).at(&blob)?);
    if codec::Algorithm::of_layer_media_type(&desc.media_type).is_none() {
        return Err(Error::Unsupported(format!("layer media type {} cannot be unpacked", desc.media_type)));
    }
    // By the magic bytes, as containerd's applier (and `export`) decompress a layer: a gzip
    // layer labelled as a plain tar unpacks as BuildKit unpacks it.
    let reader = codec::decompress(None, file).at(&blob)?;
    unpack_overlay(reader, tmp.path(), lower, &format!("layer {}", desc.digest))?;
    let tmp = tmp.keep();
    if let Err(e) = fs::rename(&tmp, &dir) {
        let _ = fs::remove_dir_all(&tmp);
        if !dir.is_dir() {
            return Err(Error::io(&dir, e));
        }
    }
    Ok(dir)
}

/// Unpack a layer tar into `dst` in overlay format, on top of the stack `lower`, with the one
/// safe extraction ([`Profile::Snapshot`]: nothing is ever written through a symlink, a
/// whiteout becomes overlayfs's). A parent directory the tar does not hold gets the metadata
/// it has in `lower` (as extracting the tar onto the parent filesystem would keep it), not a
/// fresh `0755 root` that would hide it. `location` names the layer in errors.
pub fn unpack_overlay(reader: impl Read, dst: &Path, lower: &[PathBuf], location: &str) -> Result<()> {
    let mut tar = TarReader::new(Stream(reader), location, location);
    let mut ext = Extractor::new(dst, Profile::Snapshot);
    ext.begin_layer(location);
    while let Some(member) = tar.next_member()? {
        let Some(rel) = clean_path(Path::new(OsStr::from_bytes(&member.name)), location)? else { continue };
        if let Some(parent) = rel.parent() {
            make_parents(dst, parent, lower)?;
        }
        ext.apply(&rel, &member, &mut tar)?;
    }
    ext.finish()
}

/// Create the directories of `rel` missing under `dst`, each with the owner, mode and mtime it
/// has in `lower` (0755 root when `lower` lacks it). Stops at the first component that is
/// not a directory (a symlink is never followed): the extraction refuses that path.
fn make_parents(dst: &Path, rel: &Path, lower: &[PathBuf]) -> Result<()> {
    let mut cur = PathBuf::new();
    for c in rel.components() {
        cur.push(c);
        let p = dst.join(&cur);
        match p.symlink_metadata() {
            Ok(m) if m.is_dir() => continue,
            Ok(_) => return Ok(()),
            Err(_) => {}
        }
        fs::create_dir(&p).at(&p)?;
        match lookup(lower, &cur.to_string_lossy()).filter(|m| m.is_dir()) {
            Some(m) => {
                std::os::unix::fs::lchown(&p, Some(m.uid()), Some(m.gid())).at(&p)?;
                fs::set_permissions(&p, fs::Permissions::from_mode(m.mode() & 0o7777)).at(&p)?;
                let t = filetime::FileTime::from_unix_time(m.mtime(), m.mtime_nsec() as u32);
                filetime::set_file_times(&p, t, t).at(&p)?;
            }
            None => fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).at(&p)?,
        }
    }
    Ok(())
}

fn remove_any(p: &Path) {
    match p.symlink_metadata() {
        Ok(m) if m.is_dir() => {
            let _ = fs::remove_dir_all(p);
        }
        Ok(_) => {
            let _ = fs::remove_file(p);
        }
        Err(_) => {}
    }
}

/// `p` as a C string for a system call (an error when it holds a NUL).
pub(crate) fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::other("NUL in path"))
}

fn is_opaque(p: &Path) -> bool {
    let (Ok(c), Ok(n)) = (cpath(p), CString::new(OVERLAY_OPAQUE_XATTR)) else { return false };
    let mut buf = [0u8; 4];
    // SAFETY: valid C strings and a 4-byte buffer.
    let r = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    r == 1 && buf[0] == b'y'
}

fn is_whiteout(m: &fs::Metadata) -> bool {
    m.file_type().is_char_device() && m.rdev() == 0
}

/// Metadata of `rel` (image path without leading `/`) in the stack `dirs` (bottom first),
/// or None when absent or deleted by a whiteout.
pub fn lookup(dirs: &[PathBuf], rel: &str) -> Option<fs::Metadata> {
    let parts: Vec<&str> = rel.split('/').filter(|s| !s.is_empty()).collect();
    'layers: for d in dirs.iter().rev() {
        // an opaque or whiteout ancestor in this layer hides everything below it
        let mut cur = d.clone();
        for (i, part) in parts.iter().enumerate() {
            cur.push(part);
            match cur.symlink_metadata() {
                Ok(m) if is_whiteout(&m) => return None,
                Ok(m) if i + 1 == parts.len() => return Some(m),
                Ok(m) if m.is_dir() => {
                    if is_opaque(&cur) && i + 1 < parts.len() {
                        // below an opaque dir: only this layer counts
                        let rest: PathBuf = parts[i + 1..].iter().collect();
                        return cur.join(rest).symlink_metadata().ok().filter(|m| !is_whiteout(m));
                    }
                }
                Ok(_) => return None, // a non-directory ancestor (symlinks not followed)
                Err(_) => continue 'layers,
            }
        }
        if parts.is_empty() {
            return d.symlink_metadata().ok();
        }
    }
    None
}

/// Text of a file in the stack (for /etc/passwd), bounded; symlinks are followed inside
/// the stack, never on the host.
pub fn read_small(dirs: &[PathBuf], rel: &str, max: u64) -> Option<String> {
    let rel = resolve_in_stack(dirs, rel, true).ok()?;
    let p = stack_path(dirs, &rel)?;
    if !p.symlink_metadata().ok()?.is_file() {
        return None;
    }
    let mut s = String::new();
    File::open(&p).ok()?.take(max).read_to_string(&mut s).ok()?;
    Some(s)
}

/// Where the visible `rel` of the stack lives: its path in the topmost layer holding it.
pub fn stack_path(dirs: &[PathBuf], rel: &str) -> Option<PathBuf> {
    lookup(dirs, rel)?;
    dirs.iter().rev().map(|d| d.join(rel)).find(|p| p.symlink_metadata().is_ok())
}

/// Most symlinks followed resolving one path (Linux's limit is 40; BuildKit's 255).
const MAX_LINKS: usize = 255;

/// Resolve image path `rel` the way the kernel would with the image root as `/`: symlinks
/// in its parents, and in its last component when `follow_last`, are followed, absolute
/// targets from the root, `..` never above it. `link(path)` gives the target of `path` when
/// it is a symlink. Returns the path without a leading `/`; what does not exist is kept as
/// written. A cycle is an error.
pub fn resolve_with(rel: &str, follow_last: bool, link: impl Fn(&str) -> Option<String>) -> io::Result<String> {
    let mut todo: std::collections::VecDeque<String> =
        rel.split('/').filter(|c| !c.is_empty()).map(String::from).collect();
    let mut done: Vec<String> = Vec::new();
    let mut links = 0;
    while let Some(c) = todo.pop_front() {
        match c.as_str() {
            "." => continue,
            ".." => {
                done.pop();
                continue;
            }
            _ => {}
        }
        if todo.is_empty() && !follow_last {
            done.push(c);
            break;
        }
        let cand = if done.is_empty() { c.clone() } else { format!("{}/{c}", done.join("/")) };
        match link(&cand) {
            Some(t) => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(io::Error::other(format!("/{rel}: too many levels of symbolic links")));
                }
                if t.starts_with('/') {
                    done.clear();
                }
                for part in t.split('/').filter(|p| !p.is_empty()).rev() {
                    todo.push_front(part.to_string());
                }
            }
            None => done.push(c),
        }
    }
    Ok(done.join("/"))
}

/// [`resolve_with`] in the directory `root` taken as `/` (a build context, a mounted stage).
pub fn resolve_in_dir(root: &Path, rel: &str, follow_last: bool) -> io::Result<String> {
    resolve_with(rel, follow_last, |p| {
        let full = root.join(p);
        let m = full.symlink_metadata().ok()?;
        m.file_type().is_symlink().then(|| fs::read_link(&full).ok().map(|t| t.to_string_lossy().into_owned()))?
    })
}

/// [`resolve_with`] in a stack of unpacked layers (bottom first).
pub fn resolve_in_stack(dirs: &[PathBuf], rel: &str, follow_last: bool) -> io::Result<String> {
    resolve_with(rel, follow_last, |p| {
        let m = lookup(dirs, p)?;
        if !m.file_type().is_symlink() {
            return None;
        }
        let full = stack_path(dirs, p)?;
        fs::read_link(full).ok().map(|t| t.to_string_lossy().into_owned())
    })
}

/// An overlay mount, unmounted on drop.
pub struct Mounted {
    /// Where it is mounted.
    pub path: PathBuf,
    done: bool,
}

impl Mounted {
    /// Unmount now, reporting failure.
    pub fn unmount(mut self) -> Result<()> {
        self.done = true;
        umount(&self.path)
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if !self.done {
            let _ = umount(&self.path);
        }
    }
}

fn umount(p: &Path) -> Result<()> {
    let c = cpath(p).at(p)?;
    // SAFETY: a valid path.
    let r = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    if r != 0 {
        return Err(Error::io(p, io::Error::last_os_error()));
    }
    Ok(())
}

/// Mount the stack `dirs` (bottom first; may be empty) at `target`: read-only when `upper`
/// is None, else with `upper`/`work` as the writable layer. The `mount` command runs in the
/// layers' parent directory so the option string (one page at most) holds short names.
pub fn mount_overlay(dirs: &[PathBuf], empty: &Path, upper: Option<(&Path, &Path)>, target: &Path) -> Result<Mounted> {
    let mut lowers: Vec<String> = Vec::new();
    let cwd = dirs.first().and_then(|d| d.parent()).map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/"));
    for d in dirs.iter().rev() {
        if d.parent() == Some(cwd.as_path()) {
            lowers.push(d.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
        } else {
            lowers.push(d.display().to_string());
        }
    }
    // Read-only overlays need two lower layers; an empty one at the bottom costs nothing.
    lowers.push(empty.display().to_string());
    let mut opts = format!("lowerdir={}", lowers.join(":"));
    if let Some((u, w)) = upper {
        opts.push_str(&format!(",upperdir={},workdir={}", u.display(), w.display()));
    }
    if opts.len() > 4000 {
        return Err(Error::Unsupported(format!("{} layers are too many for one overlay mount", dirs.len())));
    }
    let out = Command::new("mount")
        .current_dir(&cwd)
        .args(["-t", "overlay", "overlay", "-o", &opts])
        .arg(target)
        .output()
        .map_err(|e| Error::io("mount", e))?;
    if !out.status.success() {
        return Err(Error::Unsupported(format!(
            "cannot mount an overlay at {} (hoist needs root and overlayfs for RUN and COPY --from): {}",
            target.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(Mounted { path: target.to_path_buf(), done: false })
}

/// Turn an overlay upper directory into layer entries: whiteout devices become `.wh.NAME`
/// files, opaque directories get `.wh..wh..opq`; mtimes are clamped to `epoch`; owners and
/// modes are kept.
pub fn upper_to_items(upper: &Path, epoch: u64) -> Result<BTreeMap<String, Item>> {
    let mut out = BTreeMap::new();
    for w in walkdir::WalkDir::new(upper).follow_links(false).min_depth(1).sort_by_file_name() {
        let w = w.map_err(|e| Error::io(e.path().unwrap_or(upper).to_path_buf(), e.into()))?;
        let rel = w.path().strip_prefix(upper).expect("under upper");
        let rel = rel
            .to_str()
            .ok_or_else(|| Error::Unsupported(format!("{}: file names must be UTF-8", rel.display())))?
            .to_string();
        let m = w.path().symlink_metadata().at(w.path())?;
        let mtime = Some((m.mtime().max(0) as u64).min(epoch));
        let (uid, gid, mode) = (u64::from(m.uid()), u64::from(m.gid()), m.permissions().mode() & 0o7777);
        let ft = m.file_type();
        let item = |kind| Item { kind, mode, uid, gid, mtime };
        if is_whiteout(&m) {
            let (parent, name) = match rel.rsplit_once('/') {
                Some((p, n)) => (format!("{p}/"), n),
                None => (String::new(), rel.as_str()),
            };
            out.insert(
                format!("{parent}{WH_PREFIX}{name}"),
                Item { kind: Kind::Empty, mode: 0o644, uid: 0, gid: 0, mtime },
            );
        } else if ft.is_dir() {
            if is_opaque(w.path()) {
                out.insert(
                    format!("{rel}/{WH_OPAQUE}"),
                    Item { kind: Kind::Empty, mode: 0o644, uid: 0, gid: 0, mtime },
                );
            }
            out.insert(rel, item(Kind::Dir));
        } else if ft.is_file() {
            let link_key = (m.nlink() > 1).then(|| (m.dev(), m.ino()));
            out.insert(rel, item(Kind::File { src: w.path().to_path_buf(), size: m.len(), link_key }));
        } else if ft.is_symlink() {
            let t = fs::read_link(w.path()).at(w.path())?;
            let t = t.to_str().ok_or_else(|| Error::Unsupported("symlink targets must be UTF-8".into()))?;
            out.insert(rel, Item { kind: Kind::Symlink { target: t.to_string() }, mode: 0o777, uid, gid, mtime });
        } else {
            return Err(Error::Unsupported(format!(
                "RUN created {rel}, a device, socket or fifo: hoist layers hold files, dirs and links only"
            )));
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------- copied snapshots

/// How a RUN step gets a writable root filesystem.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Snapshotter {
    /// overlayfs when it can be mounted, a copied snapshot otherwise.
    #[default]
    Auto,
    /// overlayfs only (a failing mount is an error).
    Overlay,
    /// A copy of the layers, diffed after the step (no overlayfs needed).
    Copy,
}

impl Snapshotter {
    /// `auto`, `overlay` or `copy`.
    pub fn parse(s: &str) -> Option<Snapshotter> {
        match s {
            "auto" => Some(Snapshotter::Auto),
            "overlay" => Some(Snapshotter::Overlay),
            "copy" => Some(Snapshotter::Copy),
            _ => None,
        }
    }
}

fn nanos(secs: i64, nsec: i64) -> i128 {
    i128::from(secs) * 1_000_000_000 + i128::from(nsec)
}

/// Copy the stack `dirs` (bottom first, overlay format) into the empty directory `target`:
/// what an overlay mount of them would show, with modes, owners and mtimes.
pub fn materialize(dirs: &[PathBuf], target: &Path) -> Result<()> {
    // Directory metadata is applied last (children change mtimes), the top layer's winning.
    let mut dir_meta: BTreeMap<String, fs::Metadata> = BTreeMap::new();
    for layer in dirs {
        for w in walkdir::WalkDir::new(layer).follow_links(false).min_depth(1).sort_by_file_name() {
            let w = w.map_err(|e| Error::io(e.path().unwrap_or(layer).to_path_buf(), e.into()))?;
            let rel = w.path().strip_prefix(layer).expect("under layer").to_path_buf();
            let rel_s = rel.to_string_lossy().into_owned();
            let dst = target.join(&rel);
            let m = w.path().symlink_metadata().at(w.path())?;
            let ft = m.file_type();
            if is_whiteout(&m) {
                remove_any(&dst);
                let prefix = format!("{rel_s}/");
                dir_meta.retain(|k, _| k != &rel_s && !k.starts_with(&prefix));
                continue;
            }
            if ft.is_dir() {
                match dst.symlink_metadata() {
                    Ok(d) if d.is_dir() => {
                        if is_opaque(w.path()) {
                            for c in fs::read_dir(&dst).at(&dst)? {
                                remove_any(&c.at(&dst)?.path());
                            }
                            let prefix = format!("{rel_s}/");
                            dir_meta.retain(|k, _| !k.starts_with(&prefix));
                        }
                    }
                    Ok(_) => {
                        remove_any(&dst);
                        fs::create_dir(&dst).at(&dst)?;
                    }
                    Err(_) => fs::create_dir(&dst).at(&dst)?,
                }
                dir_meta.insert(rel_s, m);
                continue;
            }
            if dst.symlink_metadata().is_ok() {
                remove_any(&dst);
            }
            if ft.is_symlink() {
                let t = fs::read_link(w.path()).at(w.path())?;
                std::os::unix::fs::symlink(&t, &dst).at(&dst)?;
            } else if ft.is_file() {
                fs::copy(w.path(), &dst).at(&dst)?;
                fs::set_permissions(&dst, fs::Permissions::from_mode(m.mode() & 0o7777)).at(&dst)?;
            } else {
                return Err(Error::Unsupported(format!(
                    "{}: devices, sockets and fifos cannot be copied into a snapshot",
                    w.path().display()
                )));
            }
            std::os::unix::fs::lchown(&dst, Some(m.uid()), Some(m.gid())).at(&dst)?;
            if !ft.is_symlink() && m.mode() & 0o6000 != 0 {
                // chown clears set-id bits
                fs::set_permissions(&dst, fs::Permissions::from_mode(m.mode() & 0o7777)).at(&dst)?;
            }
            let t = filetime::FileTime::from_unix_time(m.mtime(), m.mtime_nsec() as u32);
            filetime::set_symlink_file_times(&dst, t, t).at(&dst)?;
        }
    }
    for (rel, m) in dir_meta.iter().rev() {
        let dst = target.join(rel);
        std::os::unix::fs::lchown(&dst, Some(m.uid()), Some(m.gid())).at(&dst)?;
        fs::set_permissions(&dst, fs::Permissions::from_mode(m.mode() & 0o7777)).at(&dst)?;
        let t = filetime::FileTime::from_unix_time(m.mtime(), m.mtime_nsec() as u32);
        filetime::set_file_times(&dst, t, t).at(&dst)?;
    }
    Ok(())
}

/// What a snapshot remembers of each path: inode and birth time (a directory deleted and
/// made again may reuse the inode number, never the birth time), ctime (any change to a file
/// moves it) and whether it is a directory.
pub struct Snapshot(BTreeMap<String, (u64, i128, bool, Option<std::time::SystemTime>)>);

/// Record the state of `root` before a step runs in it.
pub fn snapshot(root: &Path) -> Result<Snapshot> {
    let mut out = BTreeMap::new();
    for w in walkdir::WalkDir::new(root).follow_links(false).min_depth(1) {
        let w = w.map_err(|e| Error::io(e.path().unwrap_or(root).to_path_buf(), e.into()))?;
        let rel = w.path().strip_prefix(root).expect("under root").to_string_lossy().into_owned();
        let m = w.path().symlink_metadata().at(w.path())?;
        out.insert(rel, (m.ino(), nanos(m.ctime(), m.ctime_nsec()), m.is_dir(), m.created().ok()));
    }
    Ok(Snapshot(out))
}

/// The changes a step made to `root` since `before`, as the layer entries an overlay upper
/// directory would give ([`upper_to_items`]): new and changed entries with their parent
/// directories, `.wh.NAME` for deleted ones (the topmost only), and a replaced directory
/// marked opaque. mtimes are clamped to `epoch`.
pub fn diff_snapshot(root: &Path, before: &Snapshot, epoch: u64) -> Result<BTreeMap<String, Item>> {
    let mut out: BTreeMap<String, Item> = BTreeMap::new();
    let mut now: BTreeMap<String, (fs::Metadata, PathBuf)> = BTreeMap::new();
    for w in walkdir::WalkDir::new(root).follow_links(false).min_depth(1) {
        let w = w.map_err(|e| Error::io(e.path().unwrap_or(root).to_path_buf(), e.into()))?;
        let rel = w.path().strip_prefix(root).expect("under root");
        let rel = rel
            .to_str()
            .ok_or_else(|| Error::Unsupported(format!("{}: file names must be UTF-8", rel.display())))?
            .to_string();
        let m = w.path().symlink_metadata().at(w.path())?;
        now.insert(rel, (m, w.path().to_path_buf()));
    }
    let clamp = |m: &fs::Metadata| Some((m.mtime().max(0) as u64).min(epoch));
    let item_of = |rel: &str, m: &fs::Metadata, p: &Path| -> Result<Item> {
        let (uid, gid, mode) = (u64::from(m.uid()), u64::from(m.gid()), m.permissions().mode() & 0o7777);
        let ft = m.file_type();
        let kind = if ft.is_dir() {
            Kind::Dir
        } else if ft.is_file() {
            Kind::File { src: p.to_path_buf(), size: m.len(), link_key: (m.nlink() > 1).then(|| (m.dev(), m.ino())) }
        } else if ft.is_symlink() {
            let t = fs::read_link(p).at(p)?;
            let t = t.to_str().ok_or_else(|| Error::Unsupported("symlink targets must be UTF-8".into()))?;
            return Ok(Item { kind: Kind::Symlink { target: t.to_string() }, mode: 0o777, uid, gid, mtime: clamp(m) });
        } else {
            return Err(Error::Unsupported(format!(
                "RUN created {rel}, a device, socket or fifo: hoist layers hold files, dirs and links only"
            )));
        };
        Ok(Item { kind, mode, uid, gid, mtime: clamp(m) })
    };
    // Directories that replaced what was there: everything below them is new.
    let mut replaced: Vec<String> = Vec::new();
    let under =
        |p: &str, dirs: &[String]| dirs.iter().any(|d| p.starts_with(d.as_str()) && p[d.len()..].starts_with('/'));
    for (rel, (m, p)) in &now {
        let was = before.0.get(rel);
        let same = was.is_some_and(|&(ino, ctime, _, _)| ino == m.ino() && ctime == nanos(m.ctime(), m.ctime_nsec()));
        if same && !under(rel, &replaced) {
            continue;
        }
        out.insert(rel.clone(), item_of(rel, m, p)?);
        let born = m.created().ok();
        let new_inode =
            was.is_some_and(|&(ino, _, _, b)| ino != m.ino() || (b.is_some() && born.is_some() && b != born));
        if m.is_dir() && new_inode && !under(rel, &replaced) {
            out.insert(
                format!("{rel}/{WH_OPAQUE}"),
                Item { kind: Kind::Empty, mode: 0o644, uid: 0, gid: 0, mtime: clamp(m) },
            );
            replaced.push(rel.clone());
        }
    }
    let now_secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    for rel in before.0.keys() {
        if now.contains_key(rel) {
            continue;
        }
        let (parent, name) = match rel.rsplit_once('/') {
            Some((p, n)) => (p, n),
            None => ("", rel.as_str()),
        };
        let parent_is_dir = parent.is_empty() || now.get(parent).is_some_and(|(m, _)| m.is_dir());
        if !parent_is_dir || under(rel, &replaced) || (!parent.is_empty() && replaced.iter().any(|r| r == parent)) {
            continue;
        }
        let wh = if parent.is_empty() { format!("{WH_PREFIX}{name}") } else { format!("{parent}/{WH_PREFIX}{name}") };
        out.insert(wh, Item { kind: Kind::Empty, mode: 0o644, uid: 0, gid: 0, mtime: Some(now_secs.min(epoch)) });
    }
    // Parents of every change, as an overlay copies them up.
    let keys: Vec<String> = out.keys().cloned().collect();
    for k in keys {
        let mut cur = k.as_str();
        while let Some((p, _)) = cur.rsplit_once('/') {
            if !out.contains_key(p) {
                if let Some((m, path)) = now.get(p) {
                    out.insert(p.to_string(), item_of(p, m, path)?);
                }
            }
            cur = p;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::extract::{overlay_whiteout, set_overlay_opaque};

    /// A directory removed and made again is opaque in the diff even when the new one gets
    /// the old inode number (ext4 reuses it at once): overlayfs marks it so too.
    #[test]
    fn copied_snapshot_diff_marks_a_recreated_dir_opaque() {
        let t = tempfile::tempdir().unwrap();
        let (layer, root) = (t.path().join("l"), t.path().join("r"));
        fs::create_dir_all(layer.join("d/sub")).unwrap();
        fs::write(layer.join("d/sub/old"), "old").unwrap();
        fs::write(layer.join("gone"), "x").unwrap();
        fs::write(layer.join("kept"), "k").unwrap();
        fs::create_dir_all(&root).unwrap();
        materialize(std::slice::from_ref(&layer), &root).unwrap();
        let before = snapshot(&root).unwrap();
        fs::remove_dir_all(root.join("d")).unwrap();
        fs::create_dir(root.join("d")).unwrap();
        fs::write(root.join("d/y"), "y").unwrap();
        fs::remove_file(root.join("gone")).unwrap();
        let items = diff_snapshot(&root, &before, 0).unwrap();
        let names: Vec<_> = items.keys().cloned().collect();
        assert_eq!(names, vec![".wh.gone", "d", "d/.wh..wh..opq", "d/y"]);
    }

    #[test]
    fn resolution_stays_inside_the_root() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        fs::create_dir_all(r.join("usr/local/hbase")).unwrap();
        fs::create_dir_all(r.join("etc")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", r.join("myexe")).unwrap();
        std::os::unix::fs::symlink("/usr/local/hbase", r.join("etc/hbase")).unwrap();
        std::os::unix::fs::symlink("../../..", r.join("usr/local/up")).unwrap();
        std::os::unix::fs::symlink("loop", r.join("loop")).unwrap();
        assert_eq!(resolve_in_dir(r, "myexe", true).unwrap(), "etc/hostname");
        assert_eq!(resolve_in_dir(r, "myexe", false).unwrap(), "myexe");
        assert_eq!(resolve_in_dir(r, "/etc/hbase/conf/x", true).unwrap(), "usr/local/hbase/conf/x");
        assert_eq!(resolve_in_dir(r, "usr/local/up/../../etc", true).unwrap(), "etc");
        assert!(resolve_in_dir(r, "loop", true).is_err());
        assert_eq!(chain_id(None, &Digest::sha256_of(b"a")), Digest::sha256_of(b"a").hex());
    }

    #[test]
    fn lookup_respects_whiteouts_and_opaque_dirs() {
        hoist_testkit::require_root!("whiteouts are made with mknod");
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        fs::create_dir_all(a.join("d/x")).unwrap();
        fs::write(a.join("d/f"), "1").unwrap();
        fs::write(a.join("g"), "1").unwrap();
        fs::create_dir_all(b.join("d")).unwrap();
        overlay_whiteout(&b.join("g")).unwrap();
        let dirs = vec![a.clone(), b.clone()];
        assert!(lookup(&dirs, "d/f").is_some());
        assert!(lookup(&dirs, "g").is_none());
        set_overlay_opaque(&b.join("d")).unwrap();
        assert!(lookup(&dirs, "d/f").is_none());
        assert!(lookup(&dirs, "d").is_some());
        let items = upper_to_items(&b, 0).unwrap();
        let names: Vec<_> = items.keys().cloned().collect();
        assert_eq!(names, vec![".wh.g", "d", "d/.wh..wh..opq"]);
    }
}
