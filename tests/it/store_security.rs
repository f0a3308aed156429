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

/// 8,000 different manifests, one tag each, copied into a layout in one `graph_many`: the
/// content of every root first, then one index.json write for all their tags.
#[tokio::test]
async fn copying_8000_roots_writes_index_json_once() {
    use hoist::model::write::ImageManifest;
    use hoist::transport::memory::Memory;
    const ROOTS: usize = 8000;
    let src = Memory::new();
    let config = hoist::Descriptor::of_bytes(media::OCI_EMPTY, b"{}");
    src.insert_blob(&config, bytes::Bytes::from_static(b"{}")).unwrap();
    let mut plan = Vec::new();
    for i in 0..ROOTS {
        let mut m = ImageManifest::new(config.clone(), vec![]);
        m.annotations.insert("i".into(), i.to_string());
        let bytes = m.to_bytes().unwrap();
        let d = hoist::Descriptor::of_bytes(media::OCI_MANIFEST, &bytes);
        hoist::transport::Destination::push_manifest(&src, &d, bytes.into(), None).await.unwrap();
        plan.push((d, vec![format!("t{i}")]));
    }
    let t = tempfile::tempdir().unwrap();
    let dst = Layout::create(t.path().join("b")).unwrap();
    hoist::copy::graph_many(&src, &dst, &plan, &Default::default(), &hoist::transport::NoProgress).await.unwrap();
    assert_eq!(dst.index_writes(), 1, "index.json rewritten once for {ROOTS} roots");
    let entries = dst.index_entries().unwrap();
    assert_eq!(entries.len(), ROOTS);
    assert_eq!(entries[ROOTS - 1].ref_name(), Some("t7999"));
}

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

// ---- gc and fsck only on real layouts ---------------------------------------------------

/// gc and fsck refuse a directory without index.json, with a damaged one, or with one that is
/// not an index (`{}` once meant "no roots": gc deleted every blob); nothing is created or
/// deleted, and gc of a directory that is no layout at all does not make it one.
#[test]
fn gc_and_fsck_refuse_what_is_not_a_layout() {
    let t = tempfile::tempdir().unwrap();
    let l = t.path().join("l");
    let (_, junk) = small_layout(&l);
    fs::remove_dir_all(l.join(".hoist")).unwrap();
    let index = l.join("index.json");
    let good = fs::read(&index).unwrap();
    for (what, content) in
        [("missing", None), ("damaged", Some(&b"{\"manifests\": [ {"[..])), ("not an index", Some(&b"{}"[..]))]
    {
        match content {
            None => fs::remove_file(&index).unwrap(),
            Some(c) => fs::write(&index, c).unwrap(),
        }
        let before = tree(t.path());
        for args in [&["layout", "gc"][..], &["layout", "gc", "--dry-run"], &["layout", "fsck"]] {
            let mut a = args.to_vec();
            let dir = l.display().to_string();
            a.push(&dir);
            let out = hoist(&a);
            assert_ne!(out.status.code(), Some(0), "{what}: {a:?} must fail");
            fails_naming(&out, 2, &index);
            assert_eq!(tree(t.path()), before, "{what}: {a:?} changed something");
        }
        assert!(junk.exists());
    }
    fs::write(&index, &good).unwrap();

    // Not a layout at all: gc does not create one.
    let plain = t.path().join("plain");
    fs::create_dir(&plain).unwrap();
    fs::write(plain.join("keep.txt"), b"mine").unwrap();
    let before = tree(t.path());
    let out = hoist(&["layout", "gc", &plain.display().to_string()]);
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains(&plain.display().to_string()), "{}", stderr(&out));
    assert_eq!(tree(t.path()), before, "gc created something in a directory that is no layout");
    let missing = t.path().join("missing");
    let out = hoist(&["layout", "gc", &missing.display().to_string()]);
    assert_ne!(out.status.code(), Some(0));
    assert!(!missing.exists(), "gc created a layout");
}

/// `gc --dry-run` on a valid layout reports and writes nothing, not even a lock file.
#[test]
fn gc_dry_run_writes_nothing() {
    let t = tempfile::tempdir().unwrap();
    let l = t.path().join("l");
    let (_, junk) = small_layout(&l);
    fs::remove_dir_all(l.join(".hoist")).unwrap();
    let before = tree(t.path());
    let out = hoist(&["layout", "gc", "--dry-run", &l.display().to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains(junk.file_name().unwrap().to_str().unwrap()));
    assert_eq!(tree(t.path()), before, "a dry run wrote something");
    let out = hoist(&["layout", "gc", &l.display().to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!junk.exists());
}

// ---- nothing followed through a symlink out of a layout ---------------------------------

/// A layout whose `blobs/sha256` links to another layout's: gc once deleted the other
/// layout's blobs through it. gc, fsck and a copy into it refuse, naming the link, and the
/// other layout is untouched.
#[test]
fn symlinked_blob_dirs_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let victim = t.path().join("victim");
    small_layout(&victim);
    for link in ["blobs/sha256", "blobs"] {
        let l = t.path().join(format!("l-{}", link.replace('/', "-")));
        Layout::create(&l).unwrap();
        fs::remove_dir_all(l.join("blobs")).unwrap();
        if link == "blobs/sha256" {
            fs::create_dir(l.join("blobs")).unwrap();
        }
        symlink(victim.join(link), l.join(link)).unwrap();
        let before = tree(t.path());
        let dir = l.display().to_string();
        for args in [vec!["layout", "gc", &dir], vec!["layout", "gc", "--dry-run", &dir], vec!["layout", "fsck", &dir]]
        {
            let out = hoist(&args);
            fails_naming(&out, 2, &l.join(link));
            assert_eq!(
                tree(&victim),
                before.iter().filter(|(p, _)| p.starts_with(&victim)).map(|(p, v)| (p.clone(), v.clone())).collect(),
                "{args:?}"
            );
        }
        let out = hoist(&["copy", &format!("oci:{}:v1", victim.display()), &format!("oci:{dir}:v1")]);
        fails_naming(&out, 2, &l.join(link));
        assert_eq!(tree(t.path()), before, "copy wrote through {link}");
    }
}

/// A symlinked `.hoist` or `.hoist/tmp` (gc once emptied a home directory through one) and a
/// symlinked lock file (opening it created the file it pointed to) are refused.
#[test]
fn symlinked_state_dirs_and_locks_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    small_layout(&src);
    let home = t.path().join("home");
    fs::create_dir(&home).unwrap();
    fs::write(home.join("precious.txt"), b"do not delete").unwrap();
    for (link, target) in
        [(".hoist/tmp", home.clone()), (".hoist", home.clone()), (".hoist/session.lock", t.path().join("created"))]
    {
        let l = t.path().join("l");
        let _ = fs::remove_dir_all(&l);
        drop(Layout::create(&l).unwrap());
        let p = l.join(link);
        if p.is_dir() {
            fs::remove_dir_all(&p).unwrap();
        } else {
            fs::remove_file(&p).unwrap();
        }
        symlink(&target, &p).unwrap();
        let before = tree(t.path());
        let dir = l.display().to_string();
        for args in
            [vec!["layout", "gc", &dir], vec!["copy", &format!("oci:{}:v1", src.display()), &format!("oci:{dir}:v2")]]
        {
            let out = hoist(&args);
            fails_naming(&out, 2, &p);
            assert_eq!(tree(t.path()), before, "{link}: {args:?} changed something");
        }
        assert!(!t.path().join("created").exists(), "a symlinked lock created its target");
    }
    assert!(home.join("precious.txt").exists());
}

// ---- blobs are regular files ------------------------------------------------------------

/// A layer blob replaced by a FIFO, by a symlink to /dev/zero, or by a symlink to a file
/// outside the layout: copy and fsck end with an error naming the blob, not a hang.
#[test]
fn blobs_that_are_not_regular_files_are_errors() {
    let t = tempfile::tempdir().unwrap();
    let outside = t.path().join("outside");
    fs::write(&outside, b"layer bytes").unwrap();
    for kind in ["fifo", "dev-zero", "outside"] {
        let l = t.path().join(format!("l-{kind}"));
        small_layout(&l);
        let layer = Descriptor::of_bytes(media::OCI_LAYER_TAR, b"layer bytes");
        let blob = Layout::open(&l).unwrap().blob_path_of(&layer.digest);
        fs::remove_file(&blob).unwrap();
        match kind {
            "fifo" => {
                let c = std::ffi::CString::new(blob.to_str().unwrap()).unwrap();
                // SAFETY: mkfifo on a path this test owns.
                assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
            }
            "dev-zero" => symlink("/dev/zero", &blob).unwrap(),
            _ => symlink(&outside, &blob).unwrap(),
        }
        let dst = t.path().join(format!("dst-{kind}"));
        let out = hoist(&["copy", &format!("oci:{}:v1", l.display()), &format!("oci:{}", dst.display())]);
        fails_naming(&out, 2, &blob);
        let out = hoist(&["layout", "fsck", &l.display().to_string()]);
        assert_ne!(out.status.code(), Some(0), "fsck of a layout with a {kind} blob");
        let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
        assert!(all.contains(&blob.display().to_string()), "{kind}: {all}");
    }
}

// ---- model pack inputs --------------------------------------------------------------------

/// Digests of every regular file under `dir`.
fn contents(dir: &Path) -> Vec<hoist::Digest> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .map(|e| hoist::Digest::sha256_of(&fs::read(e.path()).unwrap()))
        .collect()
}

/// A symlink in a model directory leading out of it (`model pack` once packed /etc/shadow
/// through one) is refused, naming the link; `--follow-symlinks` packs it.
#[test]
fn model_pack_refuses_links_out_of_the_directory() {
    let t = tempfile::tempdir().unwrap();
    let model = t.path().join("model");
    fs::create_dir_all(model.join("sub")).unwrap();
    fs::write(model.join("weights.safetensors"), b"weights").unwrap();
    fs::write(model.join("sub/inside.txt"), b"inside").unwrap();
    symlink("inside.txt", model.join("sub/alias.txt")).unwrap();
    fs::create_dir(t.path().join("outside")).unwrap();
    let secret = t.path().join("outside/secret.txt");
    fs::write(&secret, b"the secret").unwrap();
    symlink("../../outside/secret.txt", model.join("sub/secret.txt")).unwrap();
    let store = t.path().join("store");
    let out = hoist(&["model", "pack", &model.display().to_string(), "--store", &store.display().to_string()]);
    fails_naming(&out, 2, &model.join("sub/secret.txt"));
    let secret_digest = hoist::Digest::sha256_of(b"the secret");
    assert!(!contents(t.path().join("store").as_path()).contains(&secret_digest), "secret stored");

    let out = hoist(&[
        "model",
        "pack",
        &model.display().to_string(),
        "--follow-symlinks",
        "--store",
        &store.display().to_string(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(contents(&store).contains(&secret_digest), "--follow-symlinks packs the target");
}

/// A Hugging Face cache snapshot, whose files link to `../../blobs/<hash>`, packs without
/// the flag; a link from it out of its cache entry is still refused.
#[test]
fn model_pack_takes_a_hugging_face_snapshot() {
    let t = tempfile::tempdir().unwrap();
    let entry = t.path().join("hub/models--org--tiny");
    let snap = entry.join("snapshots/0123abcd");
    fs::create_dir_all(snap.join("sub")).unwrap();
    fs::create_dir_all(entry.join("blobs")).unwrap();
    fs::write(entry.join("blobs/aaaa"), b"{\"model_type\":\"tiny\"}").unwrap();
    fs::write(entry.join("blobs/bbbb"), b"tensor bytes").unwrap();
    symlink("../../blobs/aaaa", snap.join("config.json")).unwrap();
    symlink("../../../blobs/bbbb", snap.join("sub/model.safetensors")).unwrap();
    let store = t.path().join("store");
    let out = hoist(&["model", "pack", &snap.display().to_string(), "--store", &store.display().to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let got = contents(&store);
    assert!(got.contains(&hoist::Digest::sha256_of(b"tensor bytes")));

    fs::write(t.path().join("hub/elsewhere"), b"not in the entry").unwrap();
    symlink("../../../elsewhere", snap.join("escape.txt")).unwrap();
    let store2 = t.path().join("store2");
    let out = hoist(&["model", "pack", &snap.display().to_string(), "--store", &store2.display().to_string()]);
    fails_naming(&out, 2, &snap.join("escape.txt"));
}

// ---- model unpack bounds ------------------------------------------------------------------

/// A layout holding a model artifact with one tar layer of `media_type` and `blob`, tagged v1.
fn model_layout(dir: &Path, media_type: &str, blob: &[u8], metadata: Option<&str>) {
    let layout = Layout::create(dir).unwrap();
    let mut layer = Descriptor::of_bytes(media_type, blob);
    layout.write_blob_bytes(&layer, blob).unwrap();
    if let Some(md) = metadata {
        layer = layer.with_annotation(media::ANNOTATION_MODEL_FILE_METADATA, md);
    }
    layer = layer.with_annotation(media::ANNOTATION_MODEL_FILEPATH, "w.bin");
    let config = Descriptor::of_bytes(media::OCI_EMPTY, media::EMPTY_JSON);
    layout.write_blob_bytes(&config, media::EMPTY_JSON).unwrap();
    let bytes = hoist::model::write::ImageManifest::new(config, vec![layer]).to_bytes().unwrap();
    let root = Descriptor::of_bytes(media::OCI_MANIFEST, &bytes);
    layout.write_blob_bytes(&root, &bytes).unwrap();
    layout.set_tag(&root, "v1").unwrap();
}

fn tar_header(name: &str, size: u64) -> Vec<u8> {
    let mut h = tar::Header::new_ustar();
    h.set_path(name).unwrap();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    h.as_bytes().to_vec()
}

/// A tar entry cut short (header says 1000 bytes, 300 follow) fails and leaves no file under
/// its name (it once left the truncated file) and no temp file.
#[test]
fn model_unpack_never_leaves_a_truncated_file() {
    let t = tempfile::tempdir().unwrap();
    let l = t.path().join("l");
    let mut tar = tar_header("w.bin", 1000);
    tar.extend(std::iter::repeat_n(7u8, 300));
    let mt = hoist::modelpack::layer_media_type(
        hoist::modelpack::ModelFileKind::Weight,
        hoist::modelpack::ModelLayerFormat::Tar,
    );
    model_layout(&l, &mt, &tar, None);
    let out_dir = t.path().join("out");
    let out = hoist(&["model", "unpack", &format!("oci:{}:v1", l.display()), &out_dir.display().to_string()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("w.bin") && stderr(&out).contains("cut short"), "{}", stderr(&out));
    let left: Vec<_> = fs::read_dir(&out_dir).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// A small gzip layer whose single file declares 100 bytes but expands to 64 MiB stops near
/// its declared size and leaves nothing; without metadata, `--max-size` bounds it the same way.
#[test]
fn model_unpack_bounds_expansion() {
    let t = tempfile::tempdir().unwrap();
    const BIG: u64 = 64 << 20;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar_header("w.bin", BIG)).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..(BIG >> 20) {
        gz.write_all(&zeros).unwrap();
    }
    gz.write_all(&[0u8; 1024]).unwrap();
    let blob = gz.finish().unwrap();
    assert!(blob.len() < 1 << 20, "a small compressed layer");
    let mt = hoist::modelpack::layer_media_type(
        hoist::modelpack::ModelFileKind::Weight,
        hoist::modelpack::ModelLayerFormat::TarGzip,
    );
    let md = r#"{"name":"w.bin","mode":420,"uid":0,"gid":0,"size":100,"mtime":"1970-01-01T00:00:00Z","typeflag":48}"#;
    for (name, metadata, extra) in [("declared", Some(md), vec![]), ("max-size", None, vec!["--max-size", "1048576"])] {
        let l = t.path().join(format!("l-{name}"));
        model_layout(&l, &mt, &blob, metadata);
        let out_dir = t.path().join(format!("out-{name}"));
        let src = format!("oci:{}:v1", l.display());
        let dst = out_dir.display().to_string();
        let mut args = vec!["model", "unpack", &src, &dst];
        args.extend(extra.iter().copied());
        let out = hoist(&args);
        assert_eq!(out.status.code(), Some(2), "{name}: {}", stderr(&out));
        assert!(stderr(&out).contains("expands beyond"), "{name}: {}", stderr(&out));
        let left: Vec<_> =
            fs::read_dir(&out_dir).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
        assert!(left.is_empty(), "{name}: left behind: {left:?}");
    }
}

// ---- build inputs ---------------------------------------------------------------------------

/// A symlink in a build context leading out of it is refused, naming the link, and the store
/// gets none of the target's bytes; `--follow-symlinks` stores the file it points to.
#[test]
fn build_follows_links_out_of_the_context_only_when_asked() {
    let t = tempfile::tempdir().unwrap();
    let ctx = t.path().join("ctx");
    fs::create_dir_all(ctx.join("app")).unwrap();
    fs::write(ctx.join("app/run.sh"), b"#!/bin/sh\n").unwrap();
    let secret = t.path().join("secret.txt");
    fs::write(&secret, b"build secret").unwrap();
    symlink(&secret, ctx.join("app/secret.txt")).unwrap();
    fs::write(
        ctx.join("hoist.toml"),
        "compression = \"none\"\n[[layers]]\nfiles = [{ source = \"app\", target = \"/app\" }]\n",
    )
    .unwrap();
    let file = ctx.join("hoist.toml").display().to_string();
    let store = t.path().join("store");
    let out = hoist(&["build", "-f", &file, "--store", &store.display().to_string()]);
    fails_naming(&out, 2, &ctx.join("app/secret.txt"));
    let needle = b"build secret";
    let has_secret = |dir: &Path| {
        walkdir::WalkDir::new(dir).into_iter().flatten().filter(|e| e.file_type().is_file()).any(|e| {
            let b = fs::read(e.path()).unwrap();
            b.windows(needle.len()).any(|w| w == needle)
        })
    };
    assert!(!store.exists() || !has_secret(&store), "secret stored without --follow-symlinks");
    let out = hoist(&["build", "-f", &file, "--follow-symlinks", "--store", &store.display().to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(has_secret(&store), "--follow-symlinks stores the file the link points to");
}
