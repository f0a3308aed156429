//! Builders judged by independent tools (umoci, skopeo, GNU tar) and by re-hashing
//! their output, not only by hoist reading back what it wrote.

use crate::common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use hoist::artifact::{build_artifact, load_annotation_file, ArtifactFile, ArtifactSpec};
use hoist::image::{build_image, BuildFile, ImageSpec, LayerSpec};
use hoist::layer::{build_layer_blocking, write_tar_blocking};
use hoist::layer::{Compression, LayerEntry};
use hoist::model::media;
use hoist::modelpack::{build_model, unpack_model, ModelLayerFormat, ModelSpec};
use hoist::modelpack::{layer_media_type, ModelFileKind};
use hoist::transport::layout::Layout;
use hoist::{Descriptor, Digest, Error};
use serde_json::Value;

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

fn blob(layout: &Layout, d: &Descriptor) -> Vec<u8> {
    fs::read(layout.blob_path_of(&d.digest)).unwrap()
}

fn json(layout: &Layout, d: &Descriptor) -> Value {
    serde_json::from_slice(&blob(layout, d)).unwrap()
}

fn desc(v: &Value) -> Descriptor {
    serde_json::from_value(v.clone()).unwrap()
}

/// Relative path → (kind, mode, content or link target) for every entry under `root`.
fn snapshot(root: &Path) -> BTreeMap<String, (char, u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).min_depth(1) {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(root).unwrap().to_str().unwrap().to_string();
        let m = fs::symlink_metadata(e.path()).unwrap();
        let v = if m.file_type().is_symlink() {
            ('l', 0, fs::read_link(e.path()).unwrap().into_os_string().into_encoded_bytes())
        } else if m.is_dir() {
            ('d', m.permissions().mode() & 0o7777, vec![])
        } else {
            ('f', m.permissions().mode() & 0o7777, fs::read(e.path()).unwrap())
        };
        out.insert(rel, v);
    }
    out
}

fn sample_spec(platforms: &[&str]) -> ImageSpec {
    let mut spec = BuildFile::load(&examples().join("hoist.toml")).unwrap();
    spec.platforms = platforms.iter().map(|s| s.to_string()).collect();
    spec
}

#[tokio::test]
async fn same_inputs_give_same_digests() {
    let epoch = hoist::ingest::source_date_epoch();
    let a = tempfile::tempdir().unwrap();
    let la = Layout::create(a.path().join("oci")).unwrap();
    let ra = build_image(&la, &BuildFile::load(&examples().join("hoist.toml")).unwrap(), None).await.unwrap();
    assert_eq!(ra.media_type, media::OCI_INDEX);

    // Same files copied elsewhere with other mtimes, epoch given explicitly.
    let b = tempfile::tempdir().unwrap();
    common::copy_tree(&examples().join("sample-image"), &b.path().join("src/sample-image"));
    fs::copy(examples().join("hoist.toml"), b.path().join("src/hoist.toml")).unwrap();
    let mut spec = BuildFile::load(&b.path().join("src/hoist.toml")).unwrap();
    spec.source_date_epoch = Some(epoch);
    let lb = Layout::create(b.path().join("oci")).unwrap();
    let rb = build_image(&lb, &spec, None).await.unwrap();
    assert_eq!(ra.digest, rb.digest);
    assert_eq!(blob(&la, &ra), blob(&lb, &rb));

    // A different epoch changes the digest.
    spec.source_date_epoch = Some(epoch + 1);
    let rc = build_image(&lb, &spec, None).await.unwrap();
    assert_ne!(ra.digest, rc.digest);
}

#[tokio::test]
async fn umoci_unpacks_exactly_the_input_files() {
    hoist_testkit::require!("umoci", "skopeo");
    let t = tempfile::tempdir().unwrap();
    let layout_dir = t.path().join("oci");
    let layout = Layout::create(&layout_dir).unwrap();
    let root = build_image(&layout, &sample_spec(&["linux/amd64"]), None).await.unwrap();
    assert_eq!(root.media_type, media::OCI_MANIFEST);
    let bundle = t.path().join("bundle");
    let out = Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:sample:latest", layout_dir.display()))
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(out.status.success(), "umoci: {}", String::from_utf8_lossy(&out.stderr));
    let got = snapshot(&bundle.join("rootfs/app"));
    let want = snapshot(&examples().join("sample-image"));
    assert_eq!(got, want);
    assert_eq!(got["bin/hello.sh"].1, 0o755);
    assert_eq!(got["greeting.txt"], ('l', 0, b"hello.txt".to_vec()));

    let out = Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci:{}:sample:latest", layout_dir.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "skopeo: {}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["Architecture"], "amd64");
    assert_eq!(v["Digest"], root.digest.to_string());

    // The config carries the run settings from hoist.toml.
    let m = json(&layout, &root);
    let cfg = json(&layout, &desc(&m["config"]));
    assert_eq!(cfg["config"]["Entrypoint"], serde_json::json!(["/bin/sh", "/app/bin/hello.sh"]));
    assert_eq!(cfg["config"]["Env"], serde_json::json!(["GREETING=hello"]));
    assert_eq!(cfg["config"]["ExposedPorts"], serde_json::json!({"8080/tcp": {}}));
    assert_eq!(cfg["created"], hoist::ingest::rfc3339(hoist::ingest::source_date_epoch()));
}

#[tokio::test]
async fn multi_platform_index_is_read_by_skopeo() {
    hoist_testkit::require!("skopeo");
    let t = tempfile::tempdir().unwrap();
    let layout_dir = t.path().join("oci");
    let layout = Layout::create(&layout_dir).unwrap();
    let root = build_image(&layout, &sample_spec(&["linux/amd64", "linux/arm64/v8"]), None).await.unwrap();
    let idx = json(&layout, &root);
    let ms = idx["manifests"].as_array().unwrap();
    assert_eq!(ms.len(), 2);
    assert_eq!(ms[1]["platform"]["variant"], "v8");
    let out = Command::new("skopeo")
        .args(["--override-arch", "arm64", "--override-variant", "v8", "inspect"])
        .arg(format!("oci:{}:sample:latest", layout_dir.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "skopeo: {}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["Architecture"], "arm64");
}

#[tokio::test]
async fn base_image_layers_and_config_are_kept() {
    hoist_testkit::require!("skopeo");
    let t = tempfile::tempdir().unwrap();
    let base_layout = Layout::create(t.path().join("base")).unwrap();
    let mut base_spec = sample_spec(&["linux/amd64"]);
    base_spec.tag = Some("base".into());
    base_spec.cmd = Some(vec!["base-cmd".into()]);
    base_spec.env = BTreeMap::from([("PATH".into(), "/usr/bin".into()), ("GREETING".into(), "hi".into())]);
    let base_root = build_image(&base_layout, &base_spec, None).await.unwrap();

    let layout = Layout::create(t.path().join("oci")).unwrap();
    let mut spec = ImageSpec { tag: Some("child".into()), ..Default::default() };
    spec.layers.push(LayerSpec {
        files: vec![LayerEntry::new(examples().join("sample-model/README.md"), "/doc/")],
        comment: None,
        platforms: vec![],
    });
    spec.env.insert("GREETING".into(), "bye".into());
    let base = hoist::image::BaseImage::new(&base_layout, base_root.clone(), Some("example/base:1".into()));
    let root = build_image(&layout, &spec, Some(base)).await.unwrap();
    let m = json(&layout, &root);
    assert_eq!(m["layers"].as_array().unwrap().len(), 2);
    assert_eq!(m["annotations"][media::ANNOTATION_BASE_DIGEST], base_root.digest.to_string());
    let cfg = json(&layout, &desc(&m["config"]));
    assert_eq!(cfg["config"]["Env"], serde_json::json!(["GREETING=bye", "PATH=/usr/bin"]));
    assert_eq!(cfg["config"]["Cmd"], serde_json::json!(["base-cmd"]));
    assert_eq!(cfg["rootfs"]["diff_ids"].as_array().unwrap().len(), 2);
    assert_eq!(cfg["history"].as_array().unwrap().len(), 2);
    // Every blob is in the new layout.
    assert!(layout.fsck().await.unwrap().is_empty());
    let out =
        Command::new("skopeo").arg("inspect").arg(format!("oci:{}:child", layout.root().display())).output().unwrap();
    assert!(out.status.success(), "skopeo: {}", String::from_utf8_lossy(&out.stderr));
}

/// A base image's layers reach the store through the graph copy: each is reported to the
/// build's progress, no more than `jobs` at once, and a second build finds them there.
#[tokio::test]
async fn base_image_layers_come_through_the_graph_copy_with_progress_and_jobs() {
    use hoist::transport::{BlobOutcome, Progress};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    #[derive(Default)]
    struct Rec {
        active: AtomicUsize,
        max_active: AtomicUsize,
        done: Mutex<Vec<(Digest, BlobOutcome)>>,
    }
    impl Progress for Rec {
        fn start(&self, _d: &Descriptor) {
            let n = self.active.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_active.fetch_max(n, Ordering::SeqCst);
        }
        fn advance(&self, _d: &Descriptor, _n: u64) {}
        fn done(&self, d: &Descriptor, o: BlobOutcome) {
            self.active.fetch_sub(1, Ordering::SeqCst);
            self.done.lock().unwrap().push((d.digest.clone(), o));
        }
    }
    let t = tempfile::tempdir().unwrap();
    let base_layout = Layout::create(t.path().join("base")).unwrap();
    let mut base_spec = ImageSpec { tag: Some("base".into()), ..Default::default() };
    for i in 0..5 {
        let f = t.path().join(format!("f{i}"));
        fs::write(&f, format!("layer {i}\n").repeat(1000 * (i + 1))).unwrap();
        base_spec.layers.push(LayerSpec {
            files: vec![LayerEntry::new(&f, format!("/f{i}"))],
            comment: None,
            platforms: vec![],
        });
    }
    let base_root = build_image(&base_layout, &base_spec, None).await.unwrap();
    let base_layers: Vec<Digest> = json(&base_layout, &base_root)["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(base_layers.len(), 5);

    let layout = Layout::create(t.path().join("oci")).unwrap();
    let spec = ImageSpec { tag: Some("child".into()), ..Default::default() };
    let rec = Rec::default();
    let base = hoist::image::BaseImage {
        jobs: 2,
        progress: &rec,
        ..hoist::image::BaseImage::new(&base_layout, base_root.clone(), Some("example/base:1".into()))
    };
    build_image(&layout, &spec, Some(base)).await.unwrap();
    let mut done = rec.done.lock().unwrap().clone();
    done.sort_by(|a, b| a.0.cmp(&b.0));
    let mut want: Vec<(Digest, BlobOutcome)> = base_layers.iter().map(|d| (d.clone(), BlobOutcome::Uploaded)).collect();
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(done, want, "each base layer copied once, and reported");
    let max = rec.max_active.load(Ordering::SeqCst);
    assert!((1..=2).contains(&max), "at most jobs=2 layers in flight, saw {max}");
    assert!(layout.fsck().await.unwrap().is_empty());

    // A second build into the same store copies nothing: the graph copy skips what is there.
    let rec = Rec::default();
    let base =
        hoist::image::BaseImage { progress: &rec, ..hoist::image::BaseImage::new(&base_layout, base_root, None) };
    build_image(&layout, &spec, Some(base)).await.unwrap();
    let done = rec.done.lock().unwrap().clone();
    assert_eq!(done.len(), 5);
    assert!(done.iter().all(|(_, o)| *o == BlobOutcome::Existed), "{done:?}");
}

fn sha256_of_reader(mut r: impl Read) -> Digest {
    let mut buf = Vec::new();
    r.read_to_end(&mut buf).unwrap();
    Digest::sha256_of(&buf)
}

#[test]
fn compressed_layers_have_correct_diff_ids() {
    let t = tempfile::tempdir().unwrap();
    let layout = Layout::create(t.path().join("oci")).unwrap();
    let entries = [
        LayerEntry::new(examples().join("sample-image"), "/app"),
        LayerEntry::new(examples().join("sample-model"), "/model"),
    ];
    let plain = build_layer_blocking(&layout, &entries, Compression::None, 0).unwrap();
    assert_eq!(plain.diff_id, plain.descriptor.digest);
    let gz = build_layer_blocking(&layout, &entries, Compression::Gzip { level: 9 }, 0).unwrap();
    let zst = build_layer_blocking(&layout, &entries, Compression::Zstd { level: 3 }, 0).unwrap();
    let zst2 = build_layer_blocking(&layout, &entries, Compression::Zstd { level: 3 }, 0).unwrap();
    assert_eq!(gz.descriptor.media_type, media::OCI_LAYER_GZIP);
    assert_eq!(zst.descriptor.media_type, media::OCI_LAYER_ZSTD);
    assert_eq!(zst, zst2, "multithreaded zstd is deterministic");
    for l in [&gz, &zst] {
        let raw = blob(&layout, &l.descriptor);
        assert_eq!(Digest::sha256_of(&raw), l.descriptor.digest);
        assert_eq!(raw.len() as u64, l.descriptor.size);
        assert_eq!(l.diff_id, plain.diff_id);
    }
    assert_eq!(sha256_of_reader(flate2::read::GzDecoder::new(&blob(&layout, &gz.descriptor)[..])), plain.diff_id);
    assert_eq!(
        sha256_of_reader(zstd::stream::read::Decoder::new(&blob(&layout, &zst.descriptor)[..]).unwrap()),
        plain.diff_id
    );
    // No temp files left behind.
    assert_eq!(fs::read_dir(t.path().join("oci/.hoist/tmp")).unwrap().count(), 0);
}

/// A gzip layer spanning many of the parallel encoder's 128 KiB blocks: one gzip member that GNU
/// gzip accepts, the same bytes on every build, and the diff_id of the tar inside.
#[test]
fn multi_block_gzip_layers_are_valid_and_reproducible() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    // Compressible text and incompressible bytes, files of odd sizes: ~3 MiB of tar.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..12u64 {
        let len = 150_000 + i as usize * 17_011;
        let data: Vec<u8> = if i % 2 == 0 {
            format!("file {i}: the quick brown fox jumps over the lazy dog\n")
                .into_bytes()
                .into_iter()
                .cycle()
                .take(len)
                .collect()
        } else {
            (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect()
        };
        fs::write(src.join(format!("f{i}")), data).unwrap();
    }
    let layout = Layout::create(t.path().join("oci")).unwrap();
    let entries = [LayerEntry::new(&src, "/data")];
    let plain = build_layer_blocking(&layout, &entries, Compression::None, 0).unwrap();
    for level in [1, 6, 9] {
        let gz = build_layer_blocking(&layout, &entries, Compression::Gzip { level }, 0).unwrap();
        let again = build_layer_blocking(&layout, &entries, Compression::Gzip { level }, 0).unwrap();
        assert_eq!(gz, again, "gzip:{level} is deterministic");
        assert!(gz.descriptor.size > 128 << 10, "spans several blocks");
        let raw = blob(&layout, &gz.descriptor);
        // GzDecoder stops after one member: reading the whole tar proves there is only one.
        assert_eq!(sha256_of_reader(flate2::read::GzDecoder::new(&raw[..])), plain.diff_id, "gzip:{level}");
        if hoist_testkit::optional!("gzip") {
            let path = layout.blob_path_of(&gz.descriptor.digest);
            let out = Command::new("gzip").arg("-t").arg(&path).output().unwrap();
            common::assert_success(&format!("gzip -t {}", path.display()), &out);
        }
    }
}

#[test]
fn tar_headers_are_normalized_and_long_names_use_pax() {
    hoist_testkit::require!("tar");
    let t = tempfile::tempdir().unwrap();
    let long = "d".repeat(120);
    fs::create_dir_all(t.path().join("src").join(&long)).unwrap();
    fs::write(t.path().join("src").join(&long).join("file.txt"), b"x").unwrap();
    fs::write(t.path().join("src/a"), b"hard").unwrap();
    fs::hard_link(t.path().join("src/a"), t.path().join("src/b")).unwrap();
    let mut e = LayerEntry::new(t.path().join("src"), "/");
    e.uid = Some(1000);
    let mut tar_bytes = Vec::new();
    write_tar_blocking(&[e], 1_700_000_000, &mut tar_bytes).unwrap();
    let tar_path = t.path().join("l.tar");
    fs::write(&tar_path, &tar_bytes).unwrap();
    let out = Command::new("tar")
        .args(["--numeric-owner", "--full-time", "-tvf"])
        .arg(&tar_path)
        .env("TZ", "UTC")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listing = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines.len(), 4, "{listing}");
    assert!(lines[0].contains(" 1000/0 ") && lines[0].ends_with(" a"), "{listing}");
    assert!(lines[1].starts_with("hrw") && lines[1].ends_with("b link to a"), "{listing}");
    assert!(lines[3].ends_with(&format!("{long}/file.txt")), "{listing}");
    assert!(lines.iter().all(|l| l.contains("2023-11-14 22:13:20")), "{listing}");
}

#[test]
fn unsafe_paths_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let layout = Layout::create(t.path().join("oci")).unwrap();
    let src = t.path().join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("ok.txt"), b"ok").unwrap();
    symlink("../../etc/passwd", src.join("sub/evil")).unwrap();
    let e = build_layer_blocking(&layout, &[LayerEntry::new(&src, "/app")], Compression::None, 0).unwrap_err();
    assert!(matches!(e, Error::UnsafePath { .. }), "{e}");
    assert!(e.to_string().contains("evil"), "{e}");
    fs::remove_file(src.join("sub/evil")).unwrap();
    symlink("/etc/passwd", src.join("sub/abs")).unwrap();
    let e = build_layer_blocking(&layout, &[LayerEntry::new(&src, "/app")], Compression::None, 0).unwrap_err();
    assert!(matches!(e, Error::UnsafePath { .. }), "{e}");
    fs::remove_file(src.join("sub/abs")).unwrap();
    symlink("../ok.txt", src.join("sub/fine")).unwrap();
    build_layer_blocking(&layout, &[LayerEntry::new(&src, "/app")], Compression::None, 0).unwrap();
    for target in ["../etc", "/app/../../x", "a/.."] {
        let e = build_layer_blocking(&layout, &[LayerEntry::new(src.join("ok.txt"), target)], Compression::None, 0)
            .unwrap_err();
        assert!(matches!(e, Error::UnsafePath { .. }), "{target}: {e}");
    }
}

#[tokio::test]
async fn golden_image_bytes() {
    hoist_testkit::require!("python3");
    let t = tempfile::tempdir().unwrap();
    fs::write(t.path().join("hello.txt"), b"hello\n").unwrap();
    let layout = Layout::create(t.path().join("oci")).unwrap();
    let mut entry = LayerEntry::new(t.path().join("hello.txt"), "/hello.txt");
    entry.mode = Some(0o644);
    let spec = ImageSpec {
        tag: Some("golden".into()),
        compression: Compression::None,
        layers: vec![LayerSpec { files: vec![entry], comment: None, platforms: vec![] }],
        cmd: Some(vec!["/bin/cat".into(), "/hello.txt".into()]),
        source_date_epoch: Some(0),
        ..Default::default()
    };
    let root = build_image(&layout, &spec, None).await.unwrap();
    let m = String::from_utf8(blob(&layout, &root)).unwrap();
    let cfg_desc = desc(&serde_json::from_str::<Value>(&m).unwrap()["config"]);
    let cfg = String::from_utf8(blob(&layout, &cfg_desc)).unwrap();
    assert_eq!(cfg, GOLDEN_CONFIG);
    assert_eq!(m, GOLDEN_MANIFEST);
    assert_eq!(root.digest.to_string(), GOLDEN_DIGEST);
    // The golden values are not only hoist's own output: python writes the same layer from
    // POSIX's ustar layout by hand, and the config and manifest as compact JSON, and gets the
    // same three digests.
    let out = Command::new("python3").arg("-c").arg(GOLDEN_PY).output().unwrap();
    let derived = common::assert_success("python3 (golden image)", &out);
    let derived: Vec<&str> = derived.lines().collect();
    let diff_id = serde_json::from_str::<Value>(GOLDEN_CONFIG).unwrap()["rootfs"]["diff_ids"][0].clone();
    assert_eq!(derived, [diff_id.as_str().unwrap(), cfg_desc.digest.to_string().as_str(), GOLDEN_DIGEST]);
}

/// The golden image of [`golden_image_bytes`] derived without hoist: prints the layer's
/// digest, the config's and the manifest's.
const GOLDEN_PY: &str = r##"
import hashlib, json, sys
def field(value, width):            # POSIX ustar numeric field: octal, zero-padded, NUL-terminated
    return b"%0*o\0" % (width - 1, value)
def ustar(name, size, mode, mtime):
    h = bytearray(512)
    h[0:len(name)] = name                       # name
    h[100:108] = field(mode, 8)                 # mode
    h[108:116] = field(0, 8)                    # uid
    h[116:124] = field(0, 8)                    # gid
    h[124:136] = field(size, 12)                # size
    h[136:148] = field(mtime, 12)               # mtime
    h[156:157] = b"0"                           # typeflag: regular file
    h[257:263] = b"ustar\0"; h[263:265] = b"00" # magic, version; uname, gname, devmajor, devminor, prefix: empty
    h[148:156] = b" " * 8                       # checksum: sum of the header with the field as spaces
    h[148:156] = field(sum(h), 8)
    return bytes(h)
data = b"hello\n"
layer = ustar(b"hello.txt", len(data), 0o644, 0) + data.ljust(512, b"\0") + b"\0" * 1024
diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
epoch = "1970-01-01T00:00:00Z"
config = {"created": epoch, "architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/cat", "/hello.txt"]},
          "rootfs": {"type": "layers", "diff_ids": [diff_id]}, "history": [{"created": epoch, "created_by": "hoist build"}]}
cbytes = json.dumps(config, separators=(",", ":")).encode()
manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + hashlib.sha256(cbytes).hexdigest(), "size": len(cbytes)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": diff_id, "size": len(layer)}]}
mbytes = json.dumps(manifest, separators=(",", ":")).encode()
print(diff_id); print("sha256:" + hashlib.sha256(cbytes).hexdigest()); print("sha256:" + hashlib.sha256(mbytes).hexdigest())
"##;

const GOLDEN_CONFIG: &str = r#"{"created":"1970-01-01T00:00:00Z","architecture":"amd64","os":"linux","config":{"Cmd":["/bin/cat","/hello.txt"]},"rootfs":{"type":"layers","diff_ids":["sha256:93769e9d52b5a8be01b6d5097c596438ef22c80aa6dca1aff93786a003e964e2"]},"history":[{"created":"1970-01-01T00:00:00Z","created_by":"hoist build"}]}"#;
const GOLDEN_MANIFEST: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:0f9b6fd3172dbdca0a129ca798f8a46e8b84acd3989e387f19f017c473303bd4","size":301},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:93769e9d52b5a8be01b6d5097c596438ef22c80aa6dca1aff93786a003e964e2","size":2048}]}"#;
const GOLDEN_DIGEST: &str = "sha256:de4fa802b9ca62a2d6301a486b835e11ce8b37ad8c08282d7104e2c1545e26c1";

#[tokio::test]
async fn artifact_with_subject_and_annotation_file() {
    hoist_testkit::require!("skopeo");
    let t = tempfile::tempdir().unwrap();
    let layout = Layout::create(t.path().join("oci")).unwrap();
    let image = build_image(&layout, &sample_spec(&["linux/amd64"]), None).await.unwrap();
    let ann = t.path().join("annotations.json");
    fs::write(
        &ann,
        r#"{"$manifest":{"org.example.kind":"sbom"},"$config":{"org.example.cfg":"c"},"info.json":{"org.example.file":"yes"}}"#,
    )
    .unwrap();
    let mut spec = ArtifactSpec {
        artifact_type: Some("application/vnd.example.sbom".into()),
        files: vec![
            ArtifactFile::new(examples().join("sample-image/data/nested/info.json")),
            ArtifactFile {
                path: examples().join("sample-image/hello.txt"),
                media_type: Some("text/plain".into()),
                title: None,
            },
        ],
        subject: Some(image.clone()),
        tag: Some("sbom".into()),
        ..Default::default()
    };
    spec.apply_annotation_file(load_annotation_file(&ann).unwrap());
    let root = build_artifact(&layout, &spec).await.unwrap();
    assert_eq!(root.artifact_type.as_deref(), Some("application/vnd.example.sbom"));
    let m = json(&layout, &root);
    assert_eq!(m["artifactType"], "application/vnd.example.sbom");
    assert_eq!(m["subject"]["digest"], image.digest.to_string());
    assert_eq!(m["config"]["mediaType"], media::OCI_EMPTY);
    assert_eq!(m["config"]["data"], "e30=");
    assert_eq!(m["annotations"]["org.example.kind"], "sbom");
    let layers = m["layers"].as_array().unwrap();
    assert_eq!(layers[0]["mediaType"], media::OCTET_STREAM);
    assert_eq!(layers[0]["annotations"][media::ANNOTATION_TITLE], "info.json");
    assert_eq!(layers[0]["annotations"]["org.example.file"], "yes");
    assert_eq!(layers[1]["mediaType"], "text/plain");
    // Raw layers: the blob is the file.
    assert_eq!(blob(&layout, &desc(&layers[1])), fs::read(examples().join("sample-image/hello.txt")).unwrap());
    assert!(layout.fsck().await.unwrap().is_empty());
    let out = Command::new("skopeo")
        .arg("inspect")
        .arg("--raw")
        .arg(format!("oci:{}:sbom", layout.root().display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "skopeo: {}", String::from_utf8_lossy(&out.stderr));
    // The annotation file means what oras means by it: oras-py's reading of each section is
    // found on the matching descriptor of what hoist wrote.
    let Some(py) = crate::model::python_with(hoist_testkit::test_name!(), "oras") else { return };
    let script = "import json, sys\nfrom oras.oci import Annotations\na = Annotations(sys.argv[1])\n\
                  print(json.dumps({s: a.get_annotations(s) for s in sys.argv[2:]}))";
    let sections = ["$manifest", "$config", "info.json", "hello.txt"];
    let out = Command::new(py).arg("-c").arg(script).arg(&ann).args(sections).output().unwrap();
    let oras: Value = serde_json::from_str(&common::assert_success("oras-py Annotations", &out)).unwrap();
    let on = |section: &str| match section {
        "$manifest" => m["annotations"].clone(),
        "$config" => m["config"]["annotations"].clone(),
        title => {
            layers.iter().find(|l| l["annotations"][media::ANNOTATION_TITLE] == title).unwrap()["annotations"].clone()
        }
    };
    for section in sections {
        for (k, v) in oras[section].as_object().unwrap() {
            assert_eq!(&on(section)[k], v, "{section}: {k} as oras-py reads the file");
        }
    }
    assert_eq!(oras["$config"]["org.example.cfg"], "c", "oras-py read the file: {oras}");
}

async fn pack_and_unpack(format: ModelLayerFormat) {
    let t = tempfile::tempdir().unwrap();
    let layout = Layout::create(t.path().join("oci")).unwrap();
    let src = t.path().join("model");
    common::copy_tree(&examples().join("sample-model"), &src);
    fs::create_dir_all(src.join("scripts")).unwrap();
    fs::write(src.join("scripts/run.py"), b"print('hi')\n").unwrap();
    fs::set_permissions(src.join("scripts/run.py"), fs::Permissions::from_mode(0o750)).unwrap();
    let mut spec = ModelSpec::new(&src);
    spec.name = Some("tiny".into());
    spec.format = Some("safetensors".into());
    spec.layer_format = format;
    spec.source_date_epoch = Some(0);
    spec.tag = Some("tiny".into());
    let root = build_model(&layout, &spec).await.unwrap();
    let m = json(&layout, &root);
    assert_eq!(m["artifactType"], media::MODEL_ARTIFACT);
    assert_eq!(m["config"]["mediaType"], media::MODEL_CONFIG);
    let cfg = json(&layout, &desc(&m["config"]));
    assert_eq!(cfg["descriptor"]["name"], "tiny");
    assert_eq!(cfg["descriptor"]["createdAt"], "1970-01-01T00:00:00Z");
    assert_eq!(cfg["modelfs"]["type"], "layers");
    let by_path: BTreeMap<String, Value> = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["annotations"][media::ANNOTATION_MODEL_FILEPATH].as_str().unwrap().to_string(), l.clone()))
        .collect();
    let kinds = [
        ("model.safetensors", ModelFileKind::Weight),
        ("config.json", ModelFileKind::WeightConfig),
        ("tokenizer.json", ModelFileKind::WeightConfig),
        ("README.md", ModelFileKind::Doc),
        ("LICENSE", ModelFileKind::Doc),
        ("scripts/run.py", ModelFileKind::Code),
    ];
    assert_eq!(by_path.len(), kinds.len());
    for (path, kind) in kinds {
        let l = &by_path[path];
        assert_eq!(l["mediaType"], layer_media_type(kind, format), "{path}");
        assert_eq!(l["annotations"][media::ANNOTATION_TITLE], path.rsplit('/').next().unwrap());
        let md: Value =
            serde_json::from_str(l["annotations"][media::ANNOTATION_MODEL_FILE_METADATA].as_str().unwrap()).unwrap();
        assert_eq!(md["size"], fs::metadata(src.join(path)).unwrap().len());
        assert_eq!(md["typeflag"], 48);
    }
    let diff_ids: Vec<String> =
        cfg["modelfs"]["diffIds"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
    let layer_digests: Vec<String> =
        m["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_string()).collect();
    if format == ModelLayerFormat::Raw {
        assert_eq!(diff_ids, layer_digests);
        let w = &by_path["model.safetensors"];
        assert_eq!(blob(&layout, &desc(w)), fs::read(src.join("model.safetensors")).unwrap());
    } else {
        assert_eq!(diff_ids.len(), layer_digests.len());
    }
    let out = t.path().join("out");
    let mut written = unpack_model(&layout, &root, &out).await.unwrap();
    written.sort();
    assert_eq!(written.len(), 6);
    let mut want = snapshot(&src);
    want.remove("scripts");
    let mut got = snapshot(&out);
    got.remove("scripts");
    assert_eq!(got, want);
    assert_eq!(got["scripts/run.py"].1, 0o750);
}

#[tokio::test]
async fn model_raw_pack_unpack_round_trip() {
    pack_and_unpack(ModelLayerFormat::Raw).await;
}

#[tokio::test]
async fn model_tar_zstd_pack_unpack_round_trip() {
    pack_and_unpack(ModelLayerFormat::TarZstd).await;
}

#[tokio::test]
async fn model_unpack_refuses_traversal_and_reads_cnai_types() {
    let t = tempfile::tempdir().unwrap();
    let layout = Layout::create(t.path().join("oci")).unwrap();
    let data = b"payload";
    let layer = Descriptor::of_bytes("application/vnd.cnai.model.weight.v1.raw", data);
    layout.write_blob_bytes(&layer, data).unwrap();
    let config = Descriptor::of_bytes(media::OCI_EMPTY, media::EMPTY_JSON);
    layout.write_blob_bytes(&config, media::EMPTY_JSON).unwrap();
    for (path, ok) in [("weights/w.bin", true), ("../escape.bin", false), ("/abs.bin", false)] {
        let l = layer.clone().with_annotation(media::ANNOTATION_MODEL_FILEPATH_CNAI, path);
        let manifest = hoist::model::write::ImageManifest::new(config.clone(), vec![l]);
        let bytes = manifest.to_bytes().unwrap();
        let root = Descriptor::of_bytes(media::OCI_MANIFEST, &bytes);
        layout.write_blob_bytes(&root, &bytes).unwrap();
        let out = t.path().join("out");
        let r = unpack_model(&layout, &root, &out).await;
        if ok {
            assert_eq!(fs::read(out.join(path)).unwrap(), data);
        } else {
            assert!(matches!(r, Err(Error::UnsafePath { .. })), "{path}: {r:?}");
            assert!(!t.path().join("escape.bin").exists());
        }
        // No temp files left in the output directory.
        assert!(fs::read_dir(&out).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().starts_with(".hoist")));
    }
}

/// A 20 MiB (and a bit: a partial last block) weights file (large enough for direct writes) whose blob is flipped in the
/// store after packing: unpack refuses it with a digest mismatch naming the blob, and leaves
/// neither the file nor a temp file behind. Untouched, the same model unpacks byte for byte.
#[tokio::test]
async fn model_unpack_refuses_a_tampered_large_blob() {
    let t = tempfile::tempdir().unwrap();
    let layout = Layout::create(t.path().join("oci")).unwrap();
    let src = t.path().join("model");
    fs::create_dir_all(&src).unwrap();
    let weights: Vec<u8> = (0..(20u32 << 20) + 12_345).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    fs::write(src.join("model.safetensors"), &weights).unwrap();
    let mut spec = ModelSpec::new(&src);
    spec.source_date_epoch = Some(0);
    let root = build_model(&layout, &spec).await.unwrap();
    let m = json(&layout, &root);
    let layer = desc(&m["layers"][0]);
    let out = t.path().join("good");
    unpack_model(&layout, &root, &out).await.unwrap();
    assert!(fs::read(out.join("model.safetensors")).unwrap() == weights);

    let blob_path = layout.blob_path_of(&layer.digest);
    let mut bytes = fs::read(&blob_path).unwrap();
    bytes[12 << 20] ^= 1;
    fs::set_permissions(&blob_path, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&blob_path, &bytes).unwrap();
    let out = t.path().join("bad");
    let err = unpack_model(&layout, &root, &out).await.unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err:?}");
    assert!(err.to_string().contains(&layer.digest.to_string()), "{err}");
    assert_eq!(fs::read_dir(&out).unwrap().count(), 0, "nothing left in the output dir");
}

/// Pack a 0640 file and a setuid+setgid 06755 script with a fixed source date epoch, unpack,
/// and check each file has its mode (without the setuid/setgid bits) and the epoch as mtime.
async fn unpack_restores_mode_and_mtime(format: ModelLayerFormat) {
    const EPOCH: i64 = 1_700_000_000;
    let t = tempfile::tempdir().unwrap();
    let layout = Layout::create(t.path().join("oci")).unwrap();
    let src = t.path().join("model");
    fs::create_dir_all(src.join("bin")).unwrap();
    fs::write(src.join("model.safetensors"), b"weights").unwrap();
    fs::set_permissions(src.join("model.safetensors"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::write(src.join("bin/run.sh"), b"#!/bin/sh\n").unwrap();
    fs::set_permissions(src.join("bin/run.sh"), fs::Permissions::from_mode(0o6755)).unwrap();
    let packed_mode = fs::metadata(src.join("bin/run.sh")).unwrap().permissions().mode() & 0o7777;
    let mut spec = ModelSpec::new(&src);
    spec.layer_format = format;
    spec.source_date_epoch = Some(EPOCH);
    let root = build_model(&layout, &spec).await.unwrap();
    let out = t.path().join("out");
    unpack_model(&layout, &root, &out).await.unwrap();
    for (path, mode) in [("model.safetensors", 0o640), ("bin/run.sh", 0o755)] {
        let m = fs::metadata(out.join(path)).unwrap();
        assert_eq!(m.permissions().mode() & 0o7777, mode, "{path} ({format:?}, packed as {packed_mode:o})");
        assert_eq!(filetime::FileTime::from_last_modification_time(&m).unix_seconds(), EPOCH, "{path} ({format:?})");
    }
}

#[tokio::test]
async fn model_unpack_restores_mode_and_mtime_of_raw_layers() {
    unpack_restores_mode_and_mtime(ModelLayerFormat::Raw).await;
}

#[tokio::test]
async fn model_unpack_restores_mode_and_mtime_of_tar_layers() {
    unpack_restores_mode_and_mtime(ModelLayerFormat::Tar).await;
    unpack_restores_mode_and_mtime(ModelLayerFormat::TarGzip).await;
}

#[tokio::test]
async fn model_unpack_takes_modctl_mtimes_and_ignores_bad_metadata() {
    // Hand-made manifests, as modctl or another tool writes them: Go's RFC3339Nano with an
    // offset is understood; an mtime or a whole annotation that does not parse is no error
    // (the file keeps the time it was written, and a bad annotation its default mode).
    let t = tempfile::tempdir().unwrap();
    let layout = Layout::create(t.path().join("oci")).unwrap();
    let data = b"payload";
    let config = Descriptor::of_bytes(media::OCI_EMPTY, media::EMPTY_JSON);
    layout.write_blob_bytes(&config, media::EMPTY_JSON).unwrap();
    let metadata = |mtime: &str| {
        format!(r#"{{"name":"w.bin","mode":33184,"uid":0,"gid":0,"size":7,"mtime":"{mtime}","typeflag":48}}"#)
    };
    let cases = [
        ("go.bin", metadata("2023-11-14T23:13:20.25+01:00"), Some(0o640), Some(1_700_000_000)),
        ("bad-time.bin", metadata("last tuesday"), Some(0o640), None),
        ("bad-json.bin", "{not json".to_owned(), None, None),
    ];
    let mut layers = Vec::new();
    for (path, md, _, _) in &cases {
        let l = Descriptor::of_bytes(layer_media_type(ModelFileKind::Weight, ModelLayerFormat::Raw), data)
            .with_annotation(media::ANNOTATION_MODEL_FILEPATH, *path)
            .with_annotation(media::ANNOTATION_MODEL_FILE_METADATA, md.as_str());
        layers.push(l);
    }
    layout.write_blob_bytes(&layers[0], data).unwrap();
    let bytes = hoist::model::write::ImageManifest::new(config, layers).to_bytes().unwrap();
    let root = Descriptor::of_bytes(media::OCI_MANIFEST, &bytes);
    layout.write_blob_bytes(&root, &bytes).unwrap();
    let out = t.path().join("out");
    let before = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
    unpack_model(&layout, &root, &out).await.unwrap();
    for (path, _, mode, mtime) in cases {
        let m = fs::metadata(out.join(path)).unwrap();
        assert_eq!(fs::read(out.join(path)).unwrap(), data);
        if let Some(mode) = mode {
            assert_eq!(m.permissions().mode() & 0o7777, mode, "{path}");
        }
        let got = filetime::FileTime::from_last_modification_time(&m);
        match mtime {
            Some(secs) => assert_eq!((got.unix_seconds(), got.nanoseconds()), (secs, 250_000_000), "{path}"),
            None => assert!(m.modified().unwrap() > before, "{path}: mtime {got:?} is not the time it was written"),
        }
    }
}

/// A writer that keeps only what is not zero: each non-zero 64 KiB piece of a write, with
/// its offset in the stream, and the stream's length. An 8 GiB tar of a sparse file is
/// then a few headers and data pieces, which written back at their offsets into a file of
/// `len` bytes (the rest left as holes) give the very same stream.
#[derive(Default)]
struct NonZeroPieces {
    pieces: Vec<(u64, Vec<u8>)>,
    len: u64,
}

impl std::io::Write for NonZeroPieces {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        const PIECE: usize = 64 * 1024;
        static ZERO: [u8; PIECE] = [0; PIECE];
        let mut off = self.len;
        for piece in buf.chunks(PIECE) {
            // slice equality is a memcmp: fast even in this crate's debug build
            if piece != &ZERO[..piece.len()] {
                self.pieces.push((off, piece.to_vec()));
                assert!(self.pieces.len() < 256, "far more non-zero data than written into the sparse file");
            }
            off += piece.len() as u64;
        }
        self.len = off;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn files_over_8_gib_get_a_pax_size_record() {
    hoist_testkit::require!("tar");
    use std::os::unix::fs::{FileExt, MetadataExt};
    // One byte more than ustar's 11 octal digits hold. Sparse: no 8 GiB on disk, and reading
    // it back is the kernel handing out zero pages (a few seconds).
    const SIZE: u64 = 8 << 30 | 1;
    const SMALL: &[u8] = b"after the big one\n";
    let t = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    let big = fs::File::create(src.join("big.bin")).unwrap();
    big.set_len(SIZE).unwrap();
    big.write_all_at(b"HEAD", 0).unwrap();
    big.write_all_at(b"TAIL", SIZE - 4).unwrap();
    drop(big);
    if fs::metadata(src.join("big.bin")).unwrap().blocks() * 512 > 64 << 20 {
        hoist_testkit::skip!("{} does not keep sparse files sparse", t.path().display());
    }
    // A file after the big one: its header is only where a reader looks if the big one's
    // data was padded right.
    fs::write(src.join("z.txt"), SMALL).unwrap();

    let started = std::time::Instant::now();
    let mut tar = NonZeroPieces::default();
    write_tar_blocking(&[LayerEntry::new(&src, "/")], 1_700_000_000, &mut tar).unwrap();
    eprintln!("8 GiB tar written in {:?}", started.elapsed());

    // PAX header + its record (one block) + ustar header + data padded to 512 + the small
    // file's header and data + the two zero blocks that end the archive.
    let data_at: u64 = 3 * 512;
    let small_at = data_at + SIZE.div_ceil(512) * 512;
    assert_eq!(tar.len, small_at + 512 + 512 + 1024, "tar length");
    let layer = t.path().join("layer.tar");
    let f = fs::OpenOptions::new().read(true).write(true).create_new(true).open(&layer).unwrap();
    for (off, piece) in &tar.pieces {
        f.write_all_at(piece, *off).unwrap();
    }
    f.set_len(tar.len).unwrap();
    let read_at = |off: u64, len: usize| {
        let mut b = vec![0; len];
        f.read_exact_at(&mut b, off).unwrap();
        b
    };

    // The PAX extended header and its one record.
    let record = b"19 size=8589934593\n";
    let x = read_at(0, 512);
    let x = tar::Header::from_byte_slice(&x);
    assert_eq!(x.entry_type(), tar::EntryType::XHeader);
    assert_eq!(x.entry_size().unwrap(), record.len() as u64);
    assert_eq!(read_at(512, 512), [&record[..], &[0; 512 - 19]].concat(), "PAX record block");
    // The ustar header: the size in GNU's base-256 form (0x80, then big-endian), which GNU
    // tar, Go and the tar crate read, and a reader that knows neither takes the PAX record.
    let h = read_at(1024, 512);
    assert_eq!(&h[124..136], &[[0x80, 0, 0, 0].as_slice(), &SIZE.to_be_bytes()].concat()[..], "ustar size field");
    let h = tar::Header::from_byte_slice(&h);
    assert_eq!(h.path().unwrap(), Path::new("big.bin"));
    assert_eq!((h.entry_type(), h.entry_size().unwrap()), (tar::EntryType::Regular, SIZE));
    assert_eq!(h.as_ustar().map(|u| &u.magic), Some(b"ustar\0"));
    assert_eq!(
        h.cksum().unwrap(),
        h.as_bytes().iter().enumerate().map(|(i, b)| if (148..156).contains(&i) { 32 } else { *b as u32 }).sum::<u32>()
    );
    // The data, the padding after it, and the small file.
    assert_eq!(read_at(data_at, 4), b"HEAD");
    assert_eq!(read_at(data_at + SIZE - 4, 4), b"TAIL");
    assert_eq!(read_at(data_at + SIZE, (small_at - data_at - SIZE) as usize), vec![0; 511], "padding");
    let s = read_at(small_at, 512);
    assert_eq!(tar::Header::from_byte_slice(&s).path().unwrap(), Path::new("z.txt"));
    assert_eq!(read_at(small_at + 512, SMALL.len()), SMALL);
    // And nothing else that is not zero: no stray bytes in the 8 GiB of holes.
    let allowed = [0..data_at + 4, data_at + SIZE - 4..data_at + SIZE, small_at..small_at + 512 + SMALL.len() as u64];
    for (off, piece) in &tar.pieces {
        for (i, b) in piece.iter().enumerate() {
            let at = off + i as u64;
            assert!(*b == 0 || allowed.iter().any(|r| r.contains(&at)), "non-zero byte {b:#x} at offset {at}");
        }
    }

    // Readers: the tar crate (seeking over the data) and GNU tar.
    let mut archive = tar::Archive::new(fs::File::open(&layer).unwrap());
    let mut entries = archive.entries_with_seek().unwrap();
    let mut e = entries.next().unwrap().unwrap();
    assert_eq!((e.path().unwrap().into_owned(), e.size()), (PathBuf::from("big.bin"), SIZE));
    assert_eq!(e.raw_file_position(), data_at);
    let mut head = [0; 4];
    e.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HEAD");
    drop(e);
    let mut e = entries.next().unwrap().unwrap();
    assert_eq!(e.path().unwrap(), Path::new("z.txt"));
    let mut small = Vec::new();
    e.read_to_end(&mut small).unwrap();
    assert_eq!(small, SMALL);
    drop(e);
    assert!(entries.next().is_none(), "more than two entries");
    let out = Command::new("tar").args(["--numeric-owner", "-tvf"]).arg(&layer).output().unwrap();
    assert!(out.status.success(), "GNU tar: {}", String::from_utf8_lossy(&out.stderr));
    let listing = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines.len(), 2, "{listing}");
    assert!(lines[0].contains(&format!(" {SIZE} ")) && lines[0].ends_with(" big.bin"), "{listing}");
    assert!(lines[1].contains(&format!(" {} ", SMALL.len())) && lines[1].ends_with(" z.txt"), "{listing}");
    eprintln!("whole test {:?}", started.elapsed());
}

/// zstd layers do not depend on the core count: the layer hoist writes at zstd:3 is byte for
/// byte what python-zstandard (libzstd) makes of the same uncompressed tar with 1 worker and
/// with 4 (2 MiB jobs, as hoist sets them; a block flush, then the frame end, as hoist's
/// encoder finishes). 13 MiB of input: several jobs.
#[test]
fn zstd_layers_are_the_same_with_1_and_4_workers() {
    let Some(py) = crate::model::python_with(hoist_testkit::test_name!(), "zstandard") else { return };
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("r.bin"), hoist_testkit::fixtures::random_bytes(6 << 20, 45)).unwrap();
    let text: String = (0..300_000).map(|i| format!("line {i} of some text\n")).collect();
    fs::write(src.join("t.txt"), text).unwrap();
    fs::write(
        src.join("hoist.toml"),
        "[[layers]]\nfiles = [ { source = \"r.bin\", target = \"/r.bin\" }, { source = \"t.txt\", target = \"/t.txt\" } ]\n",
    )
    .unwrap();
    let layer = |compression: &str| {
        let dest = t.path().join(compression.replace(':', "-"));
        let out = common::hoist_cmd()
            .env("HOIST_STORE", t.path().join("store"))
            .env("SOURCE_DATE_EPOCH", "0")
            .args(["build", "-q", "-f", src.join("hoist.toml").to_str().unwrap(), "--compression", compression])
            .args(["--output", &format!("type=oci,dest={},tar=false", dest.display())])
            .output()
            .unwrap();
        let root = common::assert_success("hoist build", &out).trim().to_string();
        let m: Value = serde_json::from_slice(&fs::read(dest.join("blobs/sha256").join(&root[7..])).unwrap()).unwrap();
        dest.join("blobs/sha256").join(&m["layers"][0]["digest"].as_str().unwrap()[7..])
    };
    let (plain, zstd) = (layer("none"), layer("zstd:3"));
    let script = r#"
import io, sys, zstandard as z
tar = open(sys.argv[1], "rb").read()
for threads in (1, 4):
    p = z.ZstdCompressionParameters.from_level(3, threads=threads, job_size=2 << 20)
    out = io.BytesIO()
    w = z.ZstdCompressor(compression_params=p).stream_writer(out, closefd=False)
    w.write(tar)
    w.flush(z.FLUSH_BLOCK)
    w.flush(z.FLUSH_FRAME)
    open(sys.argv[2] + "." + str(threads), "wb").write(out.getvalue())
"#;
    let out = Command::new(py).arg("-c").arg(script).arg(&plain).arg(t.path().join("py")).output().unwrap();
    common::assert_success("python-zstandard", &out);
    let hoist_bytes = fs::read(&zstd).unwrap();
    for threads in [1, 4] {
        let theirs = fs::read(t.path().join(format!("py.{threads}"))).unwrap();
        assert!(theirs == hoist_bytes, "zstd:3 layer differs from libzstd with {threads} worker(s)");
    }
}
