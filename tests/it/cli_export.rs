//! `--output type=local,dest=DIR` and `type=tar,dest=FILE` (and a bare `--output DIR`): the
//! image's filesystem, layers applied in order with whiteouts, owners, modes and times kept,
//! compared with what `umoci unpack` makes of the same image.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use hoist_testkit::fixtures::{write_image, write_index};

use crate::cli_trust::text;
use crate::common::*;

/// Append one member (a GNU header) to `b`.
pub(crate) fn entry(
    b: &mut tar::Builder<Vec<u8>>,
    path: &str,
    kind: tar::EntryType,
    mode: u32,
    owner: (u64, u64),
    data: &[u8],
    link: Option<&str>,
) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(owner.0);
    h.set_gid(owner.1);
    h.set_mtime(1_700_000_000 + path.len() as u64);
    h.set_size(data.len() as u64);
    if let Some(l) = link {
        h.set_link_name(l).unwrap();
    }
    h.set_path(path).unwrap();
    h.set_cksum();
    b.append(&h, data).unwrap();
}

/// Two layers: the second removes a file (`.wh.`), empties a directory (opaque whiteout),
/// replaces a file and a file by a directory; owners, modes, a symlink and a hard link.
fn layers() -> (Vec<u8>, Vec<u8>) {
    use tar::EntryType::*;
    let mut a = tar::Builder::new(Vec::new());
    entry(&mut a, "etc/", Directory, 0o755, (0, 0), b"", None);
    entry(&mut a, "etc/keep", Regular, 0o644, (0, 0), b"old\n", None);
    entry(&mut a, "etc/gone", Regular, 0o600, (0, 0), b"bye\n", None);
    entry(&mut a, "opq/", Directory, 0o755, (0, 0), b"", None);
    entry(&mut a, "opq/old", Regular, 0o644, (0, 0), b"lower\n", None);
    entry(&mut a, "bin/", Directory, 0o755, (0, 0), b"", None);
    entry(&mut a, "bin/tool", Regular, 0o4755, (1000, 1000), b"#!/bin/sh\necho tool\n", None);
    entry(&mut a, "bin/tool2", Link, 0o4755, (1000, 1000), b"", Some("bin/tool"));
    entry(&mut a, "link", Symlink, 0o777, (1000, 1000), b"", Some("bin/tool"));
    entry(&mut a, "abs", Symlink, 0o777, (0, 0), b"", Some("/etc/passwd"));
    entry(&mut a, "becomes-dir", Regular, 0o644, (0, 0), b"file\n", None);
    let mut b = tar::Builder::new(Vec::new());
    entry(&mut b, "etc/.wh.gone", Regular, 0o644, (0, 0), b"", None);
    entry(&mut b, "etc/keep", Regular, 0o640, (0, 42), b"new\n", None);
    entry(&mut b, "opq/", Directory, 0o750, (0, 0), b"", None);
    entry(&mut b, "opq/.wh..wh..opq", Regular, 0o644, (0, 0), b"", None);
    entry(&mut b, "opq/new", Regular, 0o644, (0, 0), b"upper\n", None);
    entry(&mut b, "secret/", Directory, 0o700, (1000, 1000), b"", None);
    entry(&mut b, "secret/key", Regular, 0o400, (1000, 1000), b"k\n", None);
    entry(&mut b, "becomes-dir/", Directory, 0o755, (0, 0), b"", None);
    entry(&mut b, "becomes-dir/x", Regular, 0o644, (0, 0), b"x\n", None);
    (a.into_inner().unwrap(), b.into_inner().unwrap())
}

/// Every entry under `root`: type, mode, owner, content or link target, mtime of non-directories,
/// and which names share an inode (hard links).
fn describe(root: &Path, owners: bool) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, String> = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).min_depth(1).follow_links(false).sort_by_file_name() {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(root).unwrap().display().to_string();
        let m = std::fs::symlink_metadata(e.path()).unwrap();
        let owner = if owners { format!("{}:{}", m.uid(), m.gid()) } else { "-".into() };
        let what = if m.file_type().is_symlink() {
            format!("symlink -> {} {owner} t={}", std::fs::read_link(e.path()).unwrap().display(), m.mtime())
        } else if m.is_dir() {
            format!("dir {:o} {owner}", m.mode() & 0o7777)
        } else {
            let first = inodes.entry(m.ino()).or_insert_with(|| rel.clone()).clone();
            let content = String::from_utf8_lossy(&std::fs::read(e.path()).unwrap()).into_owned();
            format!("file {:o} {owner} t={} {content:?} inode-of={first}", m.mode() & 0o7777, m.mtime())
        };
        out.insert(rel, what);
    }
    out
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn type_local_and_type_tar_match_umoci_unpack() {
    hoist_testkit::require!("umoci", "tar");
    let t = tempfile::tempdir().unwrap();
    let layout = t.path().join("layout");
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    let (a, b) = layers();
    let (m, d) = write_image(&layout, &[&a, &b], "export");
    write_index(&layout, &[("v1", &m, &d)]);
    let root = is_root();
    if !root {
        hoist_testkit::skip_part!("owners are compared only as root");
    }

    // What umoci makes of it (as root: owners kept; else --rootless, owners not compared).
    let bundle = t.path().join("bundle");
    let mut umoci = Command::new("umoci");
    umoci.arg("unpack");
    if !root {
        umoci.arg("--rootless");
    }
    let out = umoci.arg("--image").arg(format!("{}:v1", layout.display())).arg(&bundle).output().unwrap();
    assert!(out.status.success(), "umoci unpack: {}", String::from_utf8_lossy(&out.stderr));
    let want = describe(&bundle.join("rootfs"), root);
    assert!(
        want.contains_key("opq/new") && !want.contains_key("opq/old") && !want.contains_key("etc/gone"),
        "{want:#?}"
    );

    // hoist build on that base with no layers of its own: the same filesystem.
    let file = t.path().join("hoist.toml");
    std::fs::write(&file, format!("base = \"oci:{}:v1\"\nplatforms = [\"linux/amd64\"]\n", layout.display())).unwrap();
    let store = t.path().join("store");
    let local = t.path().join("rootfs");
    let bare = t.path().join("bare-rootfs");
    let fs_tar = t.path().join("fs.tar");
    let out = hoist([
        "build".as_ref(),
        "-f".as_ref(),
        file.as_os_str(),
        "--store".as_ref(),
        store.as_os_str(),
        "--output".as_ref(),
        format!("type=local,dest={}", local.display()).as_ref(),
        "--output".as_ref(),
        format!("type=tar,dest={}", fs_tar.display()).as_ref(),
        "--output".as_ref(),
        bare.as_os_str(),
    ] as [&std::ffi::OsStr; 11]);
    let (so, se) = text(&out);
    assert!(out.status.success(), "{so}\n{se}");
    assert_eq!(describe(&local, root), want, "type=local differs from umoci unpack");
    assert_eq!(describe(&bare, root), want, "a bare --output DIR is type=local");

    // The tar, unpacked by GNU tar keeping owners and modes, is the same tree.
    let untar = t.path().join("untar");
    std::fs::create_dir(&untar).unwrap();
    let out = Command::new("tar")
        .args(["--same-owner", "--numeric-owner", "-xpf"])
        .arg(&fs_tar)
        .arg("-C")
        .arg(&untar)
        .output()
        .unwrap();
    assert!(out.status.success(), "tar -x: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(describe(&untar, root), want, "type=tar differs from umoci unpack");

    // A second export into the now non-empty directory is refused, not merged.
    let out = hoist([
        "build".as_ref(),
        "-f".as_ref(),
        file.as_os_str(),
        "--store".as_ref(),
        store.as_os_str(),
        "--output".as_ref(),
        format!("type=local,dest={}", local.display()).as_ref(),
    ] as [&std::ffi::OsStr; 7]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out).1);
}

#[test]
fn an_export_never_writes_through_a_symlink() {
    // A layer that makes `esc -> /tmp/..` and then writes `esc/owned`: refused, nothing outside.
    use tar::EntryType::*;
    let t = tempfile::tempdir().unwrap();
    let outside = t.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let mut a = tar::Builder::new(Vec::new());
    entry(&mut a, "esc", Symlink, 0o777, (0, 0), b"", Some(outside.to_str().unwrap()));
    entry(&mut a, "esc/owned", Regular, 0o644, (0, 0), b"pwned\n", None);
    let a = a.into_inner().unwrap();
    let layout = t.path().join("layout");
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    let (m, d) = write_image(&layout, &[&a], "evil");
    write_index(&layout, &[("v1", &m, &d)]);
    let file = t.path().join("hoist.toml");
    std::fs::write(&file, format!("base = \"oci:{}:v1\"\n", layout.display())).unwrap();
    let dest = t.path().join("rootfs");
    let store = t.path().join("store");
    let out = hoist([
        "build".as_ref(),
        "-f".as_ref(),
        file.as_os_str(),
        "--store".as_ref(),
        store.as_os_str(),
        "--output".as_ref(),
        format!("type=local,dest={}", dest.display()).as_ref(),
    ] as [&std::ffi::OsStr; 7]);
    let (_, se) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{se}");
    assert!(se.contains("symlink"), "{se}");
    assert!(!outside.join("owned").exists());
}

/// `build --output type=local` of an image whose layers are `layers` (each a tar), into
/// `t/rootfs`; the output.
fn export_local(t: &Path, layers: &[&[u8]]) -> std::process::Output {
    let layout = t.join("layout");
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    let (m, d) = write_image(&layout, layers, "evil");
    write_index(&layout, &[("v1", &m, &d)]);
    let file = t.join("hoist.toml");
    std::fs::write(&file, format!("base = \"oci:{}:v1\"\n", layout.display())).unwrap();
    let (dest, store) = (t.join("rootfs"), t.join("store"));
    hoist([
        "build".as_ref(),
        "-f".as_ref(),
        file.as_os_str(),
        "--store".as_ref(),
        store.as_os_str(),
        "--output".as_ref(),
        format!("type=local,dest={}", dest.display()).as_ref(),
    ] as [&std::ffi::OsStr; 7])
}

/// The cases of SECURITY.md's "never writes through a symlink" that need more than one layer
/// or a link: a symlink from an earlier layer used as a parent in a later one (refused,
/// nothing outside); a later layer's file replacing a symlink that points outside (the link is
/// replaced, the outside file untouched); a hard link whose target is outside the root
/// (refused, or at least never linked to the outside file).
#[test]
fn an_export_never_writes_through_links_across_layers() {
    use tar::EntryType::*;
    let tar = |entries: &[(&str, tar::EntryType, &[u8], Option<&str>)]| {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, data, link) in entries {
            let mode = if *kind == Symlink { 0o777 } else { 0o644 };
            entry(&mut b, path, *kind, mode, (0, 0), data, *link);
        }
        b.into_inner().unwrap()
    };

    // 1. `esc -> OUTSIDE` in layer 1, `esc/owned` in layer 2.
    let t = tempfile::tempdir().unwrap();
    let outside = t.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let l1 = tar(&[("esc", Symlink, b"", Some(outside.to_str().unwrap()))]);
    let l2 = tar(&[("esc/owned", Regular, b"pwned\n", None)]);
    let out = export_local(t.path(), &[&l1, &l2]);
    let (_, se) = text(&out);
    assert_eq!(out.status.code(), Some(2), "a later layer wrote through an earlier layer's symlink: {se}");
    assert!(se.contains("symlink"), "{se}");
    assert!(!outside.join("owned").exists(), "a file was written outside the root");

    // 2. `f -> OUTSIDE/target` in layer 1, a regular `f` in layer 2: the link is replaced.
    let t = tempfile::tempdir().unwrap();
    let outside = t.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("target"), "keep\n").unwrap();
    let target = outside.join("target");
    let l1 = tar(&[("f", Symlink, b"", Some(target.to_str().unwrap()))]);
    let l2 = tar(&[("f", Regular, b"new\n", None)]);
    let out = export_local(t.path(), &[&l1, &l2]);
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep\n", "written through the final component");
    if out.status.success() {
        let f = t.path().join("rootfs/f");
        assert!(std::fs::symlink_metadata(&f).unwrap().file_type().is_file(), "f is still a link");
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "new\n");
    }

    // 3. A hard link to `../outside/secret` (out of the root).
    let t = tempfile::tempdir().unwrap();
    let outside = t.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret"), "secret\n").unwrap();
    let l1 = tar(&[("h", Link, b"", Some("../outside/secret"))]);
    let out = export_local(t.path(), &[&l1]);
    let secret = std::fs::metadata(outside.join("secret")).unwrap();
    assert_eq!(secret.nlink(), 1, "the outside file got a hard link: {}", text(&out).1);
    assert_eq!(std::fs::read_to_string(outside.join("secret")).unwrap(), "secret\n");
    assert!(!out.status.success(), "a hard link out of the root was accepted: {}", text(&out).1);
}

/// Export reads layers with the one bounded tar reader: a layer whose first header is a PAX
/// record of 64 MiB (the record's bytes all there) is refused on the header's size before a
/// byte of it is read, with an error naming the layer and the record, and nothing exported.
/// (The tar crate's reader, which export used before, read such a record into memory whole.)
#[test]
fn an_export_refuses_a_64_mib_pax_header_naming_the_layer() {
    const PAX: u64 = 64 << 20;
    let t = tempfile::tempdir().unwrap();
    let mut layer = Vec::with_capacity(PAX as usize + 4096);
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::XHeader);
    h.set_path("PaxHeaders.0/f").unwrap();
    h.set_mode(0o644);
    h.set_size(PAX);
    h.set_cksum();
    layer.extend_from_slice(h.as_bytes());
    layer.resize(512 + PAX as usize, b'1');
    let mut b = tar::Builder::new(Vec::new());
    entry(&mut b, "f", tar::EntryType::Regular, 0o644, (0, 0), b"data", None);
    layer.extend(b.into_inner().unwrap());
    let out = export_local(t.path(), &[&layer]);
    let (_, se) = text(&out);
    assert!(!out.status.success(), "a 64 MiB PAX header must be refused: {se}");
    let digest = hoist_testkit::tools::sha256(&layer);
    assert!(se.contains(&digest), "the error names the layer {digest}: {se}");
    assert!(se.contains("PAX") && se.contains(&PAX.to_string()), "the error names the record: {se}");
    let rootfs = t.path().join("rootfs");
    assert!(!rootfs.join("f").exists(), "nothing after the refused header is exported");
}
