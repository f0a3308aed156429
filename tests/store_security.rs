//! The local store and inputs on disk, tried as an attacker would: layouts whose directories,
//! locks or blobs are symlinks, FIFOs or devices; gc and fsck on things that are not layouts;
//! model directories with links out of them; tar layers that are cut short or expand without
//! bound; and work that must stay linear (a layout with 8,000 tags). Every refusal names the
//! path, exits with the documented code, and leaves everything outside the target unchanged.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use hoist::model::media;
use hoist::transport::layout::Layout;
use hoist::Descriptor;

fn hoist(args: &[&str]) -> Output {
    run_bounded(Command::new(env!("CARGO_BIN_EXE_hoist")).args(args).env_remove("SOURCE_DATE_EPOCH"))
}

/// Run `cmd`, killing it if it has not ended after a minute (a hang is a failure, not a
/// stuck test run).
fn run_bounded(cmd: &mut Command) -> Output {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("run hoist");
    let start = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!("hoist hung (killed after 60 s); stderr: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Assert `o` failed with `code` and its message names `path`.
#[track_caller]
fn fails_naming(o: &Output, code: i32, path: &Path) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "exit code; stderr: {err}");
    assert!(err.contains(&path.display().to_string()), "error should name {}: {err}", path.display());
}

/// Every path under `root` (not following links) with its kind and content.
fn tree(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).follow_links(false) {
        let e = e.unwrap();
        let m = e.path().symlink_metadata().unwrap();
        let v = if m.file_type().is_symlink() {
            format!("link {}", fs::read_link(e.path()).unwrap().display())
        } else if m.is_file() {
            format!("file {}", hoist::Digest::sha256_of(&fs::read(e.path()).unwrap()))
        } else if m.is_dir() {
            "dir".into()
        } else {
            "other".into()
        };
        out.insert(e.path().to_path_buf(), v);
    }
    out
}

/// A layout with one small image tagged `v1` and one unreferenced blob; returns the
/// manifest descriptor and the unreferenced blob's path.
fn small_layout(dir: &Path) -> (Descriptor, PathBuf) {
    let layout = Layout::create(dir).unwrap();
    let layer = b"layer bytes";
    let ldesc = Descriptor::of_bytes(media::OCI_LAYER_TAR, layer);
    layout.write_blob_bytes(&ldesc, layer).unwrap();
    let cdesc = Descriptor::of_bytes(media::OCI_EMPTY, media::EMPTY_JSON);
    layout.write_blob_bytes(&cdesc, media::EMPTY_JSON).unwrap();
    let bytes = hoist::model::write::ImageManifest::new(cdesc, vec![ldesc]).to_bytes().unwrap();
    let mdesc = Descriptor::of_bytes(media::OCI_MANIFEST, &bytes);
    layout.write_blob_bytes(&mdesc, &bytes).unwrap();
    layout.set_tag(&mdesc, "v1").unwrap();
    let junk = Descriptor::of_bytes(media::OCTET_STREAM, b"unreferenced");
    layout.write_blob_bytes(&junk, b"unreferenced").unwrap();
    (mdesc, layout.blob_path_of(&junk.digest))
}

fn write_index_entries(dir: &Path, entries: &[serde_json::Value]) {
    let index = serde_json::json!({"schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": entries});
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

// ---- work stays linear: 8,000 tags ------------------------------------------------------

/// One manifest with 8,000 tags, written directly into index.json. Copying it to another
/// layout rewrites the destination's index.json once (it was once per tag: quadratic, 138 s),
/// and every tag arrives.
#[tokio::test]
async fn copying_8000_tags_writes_index_json_once() {
    const TAGS: usize = 8000;
    let t = tempfile::tempdir().unwrap();
    let a = t.path().join("a");
    let (mdesc, _) = small_layout(&a);
    let entries: Vec<serde_json::Value> = (0..TAGS)
        .map(|i| {
            let d = mdesc.clone().with_annotation(media::ANNOTATION_REF_NAME, format!("t{i}"));
            serde_json::to_value(d).unwrap()
        })
        .collect();
    write_index_entries(&a, &entries);

    // Library: the plan the CLI makes (one root, all its tags), one index.json write.
    let src = Layout::open(&a).unwrap();
    let b = t.path().join("b");
    let dst = Layout::create(&b).unwrap();
    let tags: Vec<String> = (0..TAGS).map(|i| format!("t{i}")).collect();
    let plan = vec![(mdesc.clone(), tags)];
    hoist::copy::graph_many(&src, &dst, &plan, &Default::default(), &hoist::transport::NoProgress).await.unwrap();
    assert_eq!(dst.index_writes(), 1, "index.json rewritten once for {TAGS} tags");
    assert_eq!(dst.index_entries().unwrap().len(), TAGS);

    // CLI: every tag arrives.
    let c = t.path().join("c");
    let out = hoist(&["copy", &format!("oci:{}", a.display()), &format!("oci:{}", c.display())]);
    assert!(out.status.success(), "{}", stderr(&out));
    let got = Layout::open(&c).unwrap().index_entries().unwrap();
    assert_eq!(got.len(), TAGS);
    assert!(got.iter().all(|d| d.digest == mdesc.digest));
}
