//! The reflink path of `model pack`: on a file system with reflinks (XFS here, made on a loop
//! device by the test), a raw weights file is stored by FICLONE, so the blob shares the
//! source's extents instead of copying them, and editing the source afterwards leaves the
//! blob (and its digest) untouched. Needs root, loop devices and mkfs.xfs (`.ci/run`
//! installs xfsprogs); without them the test says why and passes without checking.

use crate::common;

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use hoist::modelpack::{build_model, ModelSpec};
use hoist::transport::layout::Layout;
use hoist::{Descriptor, Digest};
use serde_json::Value;

/// An XFS file system on a loop device, mounted at `dir`; unmounted on drop.
struct XfsMount {
    dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl XfsMount {
    /// The mount; panics when it fails (root and mkfs.xfs are checked by the test first: a
    /// failing mount is a failure, never a skip).
    fn new() -> XfsMount {
        let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let img = tmp.path().join("xfs.img");
        fs::File::create(&img).and_then(|f| f.set_len(320 << 20)).unwrap();
        let dir = tmp.path().join("mnt");
        fs::create_dir(&dir).unwrap();
        run(Command::new("mkfs.xfs").arg("-q").arg(&img));
        run(Command::new("mount").arg("-o").arg("loop").arg(&img).arg(&dir));
        XfsMount { dir, _tmp: tmp }
    }
}

impl Drop for XfsMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

#[track_caller]
fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    common::assert_success(&format!("{cmd:?}"), &out);
}

/// Whether every extent of `path` is shared with another file (`filefrag -v` flags them).
fn extents_shared(path: &Path) -> bool {
    let out = Command::new("filefrag").arg("-v").arg(path).output().expect("run filefrag");
    let text = String::from_utf8_lossy(&out.stdout);
    let extents: Vec<&str> =
        text.lines().filter(|l| l.trim_start().chars().next().is_some_and(|c| c.is_ascii_digit())).collect();
    !extents.is_empty() && extents.iter().all(|l| l.contains("shared"))
}

#[tokio::test]
async fn raw_weights_are_reflinked_and_independent_of_later_edits() {
    hoist_testkit::require_root!("mounting a loop device");
    hoist_testkit::require!("mkfs.xfs", "filefrag");
    let mnt = XfsMount::new();
    let src = mnt.dir.join("model");
    fs::create_dir(&src).unwrap();
    let weights: Vec<u8> = (0..24u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let weights_path = src.join("model.safetensors");
    fs::write(&weights_path, &weights).unwrap();
    let layout = Layout::create(mnt.dir.join("oci")).unwrap();
    let mut spec = ModelSpec::new(&src);
    spec.source_date_epoch = Some(0);
    let root = build_model(&layout, &spec).await.unwrap();

    let manifest: Value = serde_json::from_slice(&fs::read(layout.blob_path_of(&root.digest)).unwrap()).unwrap();
    let layer: Descriptor = serde_json::from_value(manifest["layers"][0].clone()).unwrap();
    let blob_path = layout.blob_path_of(&layer.digest);
    assert_eq!(layer.digest, Digest::sha256_of(&weights));
    assert!(fs::read(&blob_path).unwrap() == weights, "blob holds the weights");
    assert!(extents_shared(&blob_path), "the blob shares the source's extents (reflink), not a copy");

    // Edit the source in place: copy-on-write keeps the blob as it was.
    let mut f = fs::OpenOptions::new().write(true).open(&weights_path).unwrap();
    f.seek(SeekFrom::Start(1 << 20)).unwrap();
    f.write_all(b"edited after packing").unwrap();
    f.sync_all().unwrap();
    drop(f);
    assert!(fs::read(&blob_path).unwrap() == weights, "an edit of the source changed the stored blob");
    assert!(layout.fsck().await.unwrap().is_empty());
}
