//! oci-archive and docker-archive transports, judged by skopeo, umoci and podman as well
//! as by hoist reading its own output. Tests needing a tool print a message and skip when
//! it is missing.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use hoist::copy::{self, CopyOptions};
use hoist::model::media;
use hoist::transport::archive::docker::{DockerArchive, DockerArchiveWriter};
use hoist::transport::archive::oci::{OciArchive, OciArchiveWriter};
use hoist::transport::layout::Layout;
use hoist::transport::{Destination, NoProgress, Source};
use hoist::{Descriptor, Error};

const HELLO: &[u8] = b"hello from hoist\n";
const DATA: &[u8] = b"some data in a subdirectory\n";

fn layer_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8], kind: tar::EntryType| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(if kind == tar::EntryType::Directory { 0o755 } else { 0o644 });
        h.set_mtime(0);
        b.append_data(&mut h, path, data).unwrap();
    };
    add("hello.txt", HELLO, tar::EntryType::Regular);
    add("sub/", b"", tar::EntryType::Directory);
    add("sub/data.txt", DATA, tar::EntryType::Regular);
    b.into_inner().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

/// A layout at `dir` with an image tagged `v1` (one gzip layer) and an artifact tagged `art`.
fn make_layout(dir: &Path) -> (Descriptor, Descriptor) {
    let layout = Layout::create(dir).unwrap();
    let tar = layer_tar();
    let gz = gzip(&tar);
    let layer = Descriptor::of_bytes(media::OCI_LAYER_GZIP, &gz);
    let diff_id = hoist::Digest::sha256_of(&tar);
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{"Cmd":["/bin/sh"]}},"rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}}}}"#
    );
    let config_desc = Descriptor::of_bytes(media::OCI_CONFIG, config.as_bytes());
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": config_desc,
        "layers": [layer],
    }))
    .unwrap();
    let mdesc = Descriptor::of_bytes(media::OCI_MANIFEST, &manifest);
    layout.write_blob_bytes(&layer, &gz).unwrap();
    layout.write_blob_bytes(&config_desc, config.as_bytes()).unwrap();
    layout.write_blob_bytes(&mdesc, &manifest).unwrap();
    layout.set_tag(&mdesc, "v1").unwrap();

    let empty = Descriptor::of_bytes(media::OCI_EMPTY, media::EMPTY_JSON);
    let blob = Descriptor::of_bytes("application/vnd.example.data", b"artifact payload");
    let art = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "artifactType": "application/vnd.example.thing",
        "config": empty,
        "layers": [blob],
    }))
    .unwrap();
    let adesc = Descriptor::of_bytes(media::OCI_MANIFEST, &art);
    layout.write_blob_bytes(&empty, media::EMPTY_JSON).unwrap();
    layout.write_blob_bytes(&blob, b"artifact payload").unwrap();
    layout.write_blob_bytes(&adesc, &art).unwrap();
    layout.set_tag(&adesc, "art").unwrap();
    (mdesc, adesc)
}

async fn copy_tagged(
    src: &dyn Source,
    dst: &dyn Destination,
    reference: &str,
    tags: &[&str],
) -> hoist::Result<Descriptor> {
    let root = src.resolve(Some(&reference.into())).await?;
    let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
    copy::graph(src, dst, &root, &tags, &CopyOptions::default(), &NoProgress).await?;
    dst.finish().await?;
    Ok(root)
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Files other than the given ones left in `dir` (temp files must not survive).
fn leftovers(dir: &Path, keep: &[&str]) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| !keep.iter().any(|k| p.file_name().unwrap() == *k))
        .collect()
}

#[tokio::test]
async fn oci_archive_round_trip_is_byte_stable() {
    let t = tempfile::tempdir().unwrap();
    let (mdesc, _) = make_layout(&t.path().join("src"));
    let src = Layout::open(t.path().join("src")).unwrap();

    let out = t.path().join("out");
    std::fs::create_dir(&out).unwrap();
    for name in ["a.tar", "b.tar"] {
        let w = OciArchiveWriter::create(out.join(name)).await.unwrap();
        copy_tagged(&src, &w, "v1", &["v1"]).await.unwrap();
    }
    let a = std::fs::read(out.join("a.tar")).unwrap();
    let b = std::fs::read(out.join("b.tar")).unwrap();
    assert!(a == b, "two writes of the same content differ");
    assert_eq!(leftovers(&out, &["a.tar", "b.tar"]), Vec::<PathBuf>::new());

    // Deterministic headers, directories first.
    let mut ar = tar::Archive::new(&a[..]);
    let names: Vec<String> = ar
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let h = e.header();
            assert_eq!(h.uid().unwrap(), 0);
            assert_eq!(h.gid().unwrap(), 0);
            assert_eq!(h.mtime().unwrap(), 0);
            e.path().unwrap().to_string_lossy().into_owned()
        })
        .collect();
    assert_eq!(&names[..2], ["blobs/", "blobs/sha256/"]);
    assert_eq!(&names[names.len() - 2..], ["oci-layout", "index.json"]);
    assert_eq!(names.len(), 2 + 3 + 2);

    let ar = OciArchive::open(out.join("a.tar")).unwrap();
    let root = ar.resolve(Some(&"v1".into())).await.unwrap();
    assert_eq!(root.digest, mdesc.digest);
    assert_eq!(ar.roots().await.unwrap().len(), 1);
    assert_eq!(ar.resolve(None).await.unwrap().digest, mdesc.digest);
    assert_eq!(ar.resolve(Some(&mdesc.digest.clone().into())).await.unwrap().digest, mdesc.digest);

    let back = Layout::create(t.path().join("back")).unwrap();
    copy_tagged(&ar, &back, "v1", &["v1"]).await.unwrap();
    assert_eq!(back.resolve_sync(Some(&"v1".into())).unwrap().digest, mdesc.digest);
    assert!(back.fsck().await.unwrap().is_empty());
}

#[tokio::test]
async fn oci_archive_is_read_by_skopeo_and_umoci() {
    hoist_testkit::require!("skopeo", "umoci");
    let t = tempfile::tempdir().unwrap();
    let (mdesc, _) = make_layout(&t.path().join("src"));
    let src = Layout::open(t.path().join("src")).unwrap();
    let file = t.path().join("image.tar");
    let w = OciArchiveWriter::create(&file).await.unwrap();
    copy_tagged(&src, &w, "v1", &["v1"]).await.unwrap();

    let inspect =
        run(Command::new("skopeo").arg("inspect").arg("--raw").arg(format!("oci-archive:{}", file.display())));
    assert_eq!(hoist::Digest::sha256_of(inspect.as_bytes()), mdesc.digest);
    run(Command::new("skopeo").arg("inspect").arg(format!("oci-archive:{}", file.display())));
    let dir = t.path().join("fromskopeo");
    run(Command::new("skopeo")
        .arg("copy")
        .arg(format!("oci-archive:{}", file.display()))
        .arg(format!("oci:{}:v1", dir.display())));

    let bundle = t.path().join("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:v1", dir.display()))
        .arg(&bundle));
    assert_eq!(std::fs::read(bundle.join("rootfs/hello.txt")).unwrap(), HELLO);
    assert_eq!(std::fs::read(bundle.join("rootfs/sub/data.txt")).unwrap(), DATA);
}

#[tokio::test]
async fn docker_archive_is_read_by_skopeo_and_hoist() {
    hoist_testkit::require!("skopeo", "umoci");
    let t = tempfile::tempdir().unwrap();
    let (mdesc, _) = make_layout(&t.path().join("src"));
    let src = Layout::open(t.path().join("src")).unwrap();
    let file = t.path().join("docker.tar");
    let w = DockerArchiveWriter::create(&file, vec!["example.com/hoist/test:v1".into()], None).await.unwrap();
    copy_tagged(&src, &w, "v1", &[]).await.unwrap();

    let names: Vec<String> = tar::Archive::new(std::fs::File::open(&file).unwrap())
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().any(|n| n == "manifest.json") && names.iter().any(|n| n == "index.json"), "{names:?}");

    let arg = format!("docker-archive:{}", file.display());
    run(Command::new("skopeo").arg("inspect").arg(&arg));
    let dir = t.path().join("fromskopeo");
    run(Command::new("skopeo").arg("copy").arg(&arg).arg(format!("oci:{}:v1", dir.display())));
    let bundle = t.path().join("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:v1", dir.display()))
        .arg(&bundle));
    assert_eq!(std::fs::read(bundle.join("rootfs/hello.txt")).unwrap(), HELLO);

    // hoist reads its own docker-archive through index.json: digests round-trip.
    let ar = DockerArchive::open(&file).unwrap();
    assert!(ar.is_oci());
    assert_eq!(ar.resolve(Some(&"v1".into())).await.unwrap().digest, mdesc.digest);
}

/// podman in a private vfs store; containerd is not tried (it needs root and a daemon).
#[tokio::test]
async fn docker_archive_is_loaded_by_podman() {
    hoist_testkit::require!("podman");
    let t = tempfile::tempdir().unwrap();
    make_layout(&t.path().join("src"));
    let src = Layout::open(t.path().join("src")).unwrap();
    let file = t.path().join("docker.tar");
    let w = DockerArchiveWriter::create(&file, vec!["example.com/hoist/test:v1".into()], None).await.unwrap();
    copy_tagged(&src, &w, "v1", &[]).await.unwrap();

    let podman = |args: &[&str]| {
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(t.path().join("root"))
            .arg("--runroot")
            .arg(t.path().join("run"))
            .args(["--storage-driver", "vfs"]);
        c.args(args);
        c.output().unwrap()
    };
    // podman installed but not working here is a failure, not a skip.
    hoist_testkit::tools::assert_success("podman images (probe)", &podman(&["images"]));
    let out = podman(&["load", "-i", file.to_str().unwrap()]);
    assert!(out.status.success(), "podman load: {}", String::from_utf8_lossy(&out.stderr));
    let images = podman(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    let listed = String::from_utf8_lossy(&images.stdout);
    assert!(listed.contains("example.com/hoist/test:v1"), "{listed}");
}

#[tokio::test]
async fn docker_archive_from_skopeo_reads_into_a_layout() {
    hoist_testkit::require!("skopeo");
    let t = tempfile::tempdir().unwrap();
    make_layout(&t.path().join("src"));
    let file = t.path().join("skopeo.tar");
    run(Command::new("skopeo")
        .arg("copy")
        .arg(format!("oci:{}:v1", t.path().join("src").display()))
        .arg(format!("docker-archive:{}:example.com/hoist/test:v1", file.display())));

    let ar = DockerArchive::open(&file).unwrap();
    assert!(!ar.is_oci());
    let roots = ar.roots().await.unwrap();
    assert_eq!(roots.len(), 1);
    assert_eq!(roots[0].1.as_deref(), Some("example.com/hoist/test:v1"));
    let root = ar.resolve(Some(&"v1".into())).await.unwrap();
    assert_eq!(root.media_type, media::DOCKER_MANIFEST);

    let dst = Layout::create(t.path().join("dst")).unwrap();
    copy_tagged(&ar, &dst, "example.com/hoist/test:v1", &["v1"]).await.unwrap();
    assert!(dst.fsck().await.unwrap().is_empty());
    let got = dst.resolve_sync(Some(&"v1".into())).unwrap();
    assert_eq!(got.digest, root.digest);

    // The layer in the layout holds our files.
    let doc = dst.fetch_document(&got).await.unwrap();
    let layer = &doc.children()[1];
    let raw = std::fs::read(dst.blob_path_of(&layer.digest)).unwrap();
    let plain = if layer.media_type == media::DOCKER_LAYER_GZIP {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..]).read_to_end(&mut out).unwrap();
        out
    } else {
        raw
    };
    let mut found = false;
    for e in tar::Archive::new(&plain[..]).entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_str() == Some("hello.txt") {
            let mut s = Vec::new();
            e.read_to_end(&mut s).unwrap();
            assert_eq!(s, HELLO);
            found = true;
        }
    }
    assert!(found);
    // (skopeo 1.9 cannot inspect this layout: its oci transport only finds OCI media types
    // in index.json, and the synthesized manifest is Docker v2 schema 2.)
}

/// What the CLI maps to exit code 5 (src/cli/exit.rs): a digest or size mismatch.
fn is_integrity_error(e: &hoist::Error) -> bool {
    matches!(e, hoist::Error::DigestMismatch { .. } | hoist::Error::SizeMismatch { .. })
}

#[tokio::test]
async fn corrupt_blob_leaves_no_archive() {
    let t = tempfile::tempdir().unwrap();
    let (mdesc, _) = make_layout(&t.path().join("src"));
    let src = Layout::open(t.path().join("src")).unwrap();
    // Same size, different bytes in the layer blob.
    let doc = src.fetch_document(&mdesc).await.unwrap();
    let layer = doc.children()[1].clone();
    let path = src.blob_path_of(&layer.digest);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();

    let out = t.path().join("out");
    std::fs::create_dir(&out).unwrap();
    {
        let w = OciArchiveWriter::create(out.join("oci.tar")).await.unwrap();
        let e = copy_tagged(&src, &w, "v1", &["v1"]).await.unwrap_err();
        assert!(is_integrity_error(&e), "{e}");
        assert!(e.to_string().contains(&layer.digest.to_string()), "{e}");
        assert!(w.finish().await.is_err(), "finish after a failed blob must fail");
    }
    {
        let w = DockerArchiveWriter::create(out.join("docker.tar"), vec![], None).await.unwrap();
        let e = copy_tagged(&src, &w, "v1", &[]).await.unwrap_err();
        assert!(is_integrity_error(&e), "{e}");
    }
    assert_eq!(leftovers(&out, &[]), Vec::<PathBuf>::new());
}

#[tokio::test]
async fn artifact_to_docker_archive_is_refused() {
    let t = tempfile::tempdir().unwrap();
    make_layout(&t.path().join("src"));
    let src = Layout::open(t.path().join("src")).unwrap();
    let out = t.path().join("out");
    std::fs::create_dir(&out).unwrap();
    {
        let w = DockerArchiveWriter::create(out.join("docker.tar"), vec![], None).await.unwrap();
        let e = copy_tagged(&src, &w, "art", &[]).await.unwrap_err();
        assert!(matches!(e, Error::Unsupported(_)), "{e:?}");
        assert!(e.to_string().contains("application/vnd.example.thing"), "{e}");
    }
    assert_eq!(leftovers(&out, &[]), Vec::<PathBuf>::new());

    // The same artifact goes into an oci-archive fine.
    let w = OciArchiveWriter::create(out.join("oci.tar")).await.unwrap();
    copy_tagged(&src, &w, "art", &["art"]).await.unwrap();
    let ar = OciArchive::open(out.join("oci.tar")).unwrap();
    assert!(ar.resolve(Some(&"art".into())).await.is_ok());
}

#[tokio::test]
async fn unsafe_and_compressed_archives_are_refused() {
    let t = tempfile::tempdir().unwrap();
    // A tar whose entry escapes with `..` (written raw: the tar crate refuses to build it).
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..9].copy_from_slice(b"../escape");
    h.set_size(1);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    let mut raw = h.as_bytes().to_vec();
    raw.push(b'x');
    raw.resize(512 * 4, 0);
    let bad = t.path().join("bad.tar");
    std::fs::write(&bad, &raw).unwrap();
    let e = OciArchive::open(&bad).err().expect("refused");
    assert!(matches!(e, Error::UnsafePath { .. }), "{e:?}");

    let gz = t.path().join("x.tar.gz");
    std::fs::write(&gz, gzip(&raw)).unwrap();
    let e = OciArchive::open(&gz).err().expect("refused");
    assert!(e.to_string().contains("gzip-compressed"), "{e}");
}

/// containerd on a private socket and state dir: `ctr images import` of our docker-archive.
/// Skips when containerd cannot start here (it needs root).
#[tokio::test]
async fn docker_archive_is_imported_by_containerd() {
    hoist_testkit::require!("containerd", "ctr");
    let t = tempfile::tempdir().unwrap();
    let (mdesc, _) = make_layout(&t.path().join("src"));
    let src = Layout::open(t.path().join("src")).unwrap();
    let file = t.path().join("docker.tar");
    let w = DockerArchiveWriter::create(&file, vec!["example.com/hoist/test:v1".into()], None).await.unwrap();
    copy_tagged(&src, &w, "v1", &[]).await.unwrap();

    let c = t.path().join("c");
    let sock = c.join("c.sock");
    let config = c.join("config.toml");
    std::fs::create_dir_all(&c).unwrap();
    std::fs::write(
        &config,
        format!(
            "version = 2\nroot = \"{0}/root\"\nstate = \"{0}/state\"\n[grpc]\n  address = \"{1}\"\n",
            c.display(),
            sock.display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(c.join("log")).unwrap();
    let mut daemon = Command::new("containerd")
        .arg("--config")
        .arg(&config)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let ctr = |args: &[&str]| Command::new("ctr").arg("--address").arg(&sock).args(args).output().unwrap();
    let mut up = false;
    for _ in 0..50 {
        if sock.exists() && ctr(&["version"]).status.success() {
            up = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    if !up {
        let _ = daemon.kill();
        let _ = daemon.wait();
        panic!("containerd did not start: {}", std::fs::read_to_string(c.join("log")).unwrap_or_default());
    }
    let import = ctr(&["images", "import", "--no-unpack", file.to_str().unwrap()]);
    let list = ctr(&["images", "ls"]);
    let _ = daemon.kill();
    let _ = daemon.wait();
    assert!(import.status.success(), "ctr import: {}", String::from_utf8_lossy(&import.stderr));
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(listed.contains("example.com/hoist/test:v1"), "{listed}");
    assert!(listed.contains(&mdesc.digest.to_string()), "{listed}");
}

/// Adds an index tagged `multi` holding the `v1` image as linux/amd64 and a linux/arm64
/// variant (same layer, its own config); returns (amd64 config, arm64 config) digests.
fn add_multi_platform(dir: &Path, v1: &Descriptor) -> (hoist::Digest, hoist::Digest) {
    let layout = Layout::create(dir).unwrap();
    let doc = futures::executor::block_on(layout.fetch_document(v1)).unwrap();
    let children = doc.children();
    let amd_config = children[0].clone();
    let config = std::fs::read(layout.blob_path_of(&amd_config.digest)).unwrap();
    let arm_config_bytes = String::from_utf8(config).unwrap().replace("\"amd64\"", "\"arm64\"");
    let arm_config = Descriptor::of_bytes(media::OCI_CONFIG, arm_config_bytes.as_bytes());
    layout.write_blob_bytes(&arm_config, arm_config_bytes.as_bytes()).unwrap();
    let arm = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": arm_config,
        "layers": [children[1]],
    }))
    .unwrap();
    let mut arm_desc = Descriptor::of_bytes(media::OCI_MANIFEST, &arm);
    layout.write_blob_bytes(&arm_desc, &arm).unwrap();
    arm_desc.platform = hoist::Platform::parse("linux/arm64");
    let mut amd_desc = v1.clone();
    amd_desc.annotations.clear();
    amd_desc.platform = hoist::Platform::parse("linux/amd64");
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": [arm_desc, amd_desc],
    }))
    .unwrap();
    let idesc = Descriptor::of_bytes(media::OCI_INDEX, &index);
    layout.write_blob_bytes(&idesc, &index).unwrap();
    layout.set_tag(&idesc, "multi").unwrap();
    (amd_config.digest, arm_config.digest)
}

fn manifest_json_of(file: &Path) -> (serde_json::Value, Vec<String>) {
    let mut names = Vec::new();
    let mut manifest = None;
    for e in tar::Archive::new(std::fs::File::open(file).unwrap()).entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        if name == "manifest.json" {
            let mut s = String::new();
            e.read_to_string(&mut s).unwrap();
            manifest = Some(serde_json::from_str(&s).unwrap());
        }
        names.push(name);
    }
    (manifest.expect("manifest.json"), names)
}

#[tokio::test]
async fn docker_archive_picks_one_platform_of_an_index() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("src");
    let (v1, _) = make_layout(&dir);
    let (amd, arm) = add_multi_platform(&dir, &v1);
    let src = Layout::open(&dir).unwrap();
    for (platform, want, other) in [(None, &amd, &arm), (hoist::Platform::parse("linux/arm64"), &arm, &amd)] {
        let file = t.path().join("docker.tar");
        let w = DockerArchiveWriter::create(&file, vec!["example.com/multi:1".into()], platform).await.unwrap();
        copy_tagged(&src, &w, "multi", &[]).await.unwrap();
        let (m, names) = manifest_json_of(&file);
        assert_eq!(m[0]["Config"], format!("blobs/sha256/{}", want.hex()));
        assert_eq!(m[0]["RepoTags"], serde_json::json!(["example.com/multi:1"]));
        assert!(!names.iter().any(|n| n.ends_with(other.hex())), "other platform's config copied: {names:?}");
        if hoist_testkit::optional!("skopeo") {
            run(Command::new("skopeo").arg("inspect").arg(format!("docker-archive:{}", file.display())));
        }
    }
}

/// The pre-OCI `docker save` layout: `<id>/layer.tar`, a duplicate layer as a symlink.
#[tokio::test]
async fn legacy_docker_save_layout_is_read() {
    let t = tempfile::tempdir().unwrap();
    let tar_bytes = layer_tar();
    let diff = hoist::Digest::sha256_of(&tar_bytes);
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{diff}","{diff}"]}}}}"#
    );
    let mut b = tar::Builder::new(Vec::new());
    let mut file = |path: &str, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, path, data).unwrap();
    };
    file("abc.json", config.as_bytes());
    file("aaa/layer.tar", &tar_bytes);
    file(
        "manifest.json",
        br#"[{"Config":"abc.json","RepoTags":["legacy:1"],"Layers":["aaa/layer.tar","bbb/layer.tar"]}]"#,
    );
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    h.set_mode(0o777);
    b.append_link(&mut h, "bbb/layer.tar", "../aaa/layer.tar").unwrap();
    let path = t.path().join("legacy.tar");
    std::fs::write(&path, b.into_inner().unwrap()).unwrap();

    let ar = DockerArchive::open(&path).unwrap();
    let root = ar.resolve(Some(&"1".into())).await.unwrap();
    let doc = ar.fetch_document(&root).await.unwrap();
    let children = doc.children();
    assert_eq!(children.len(), 3);
    assert_eq!(children[1].digest, diff);
    assert_eq!(children[1].media_type, media::DOCKER_LAYER_TAR);
    let dst = Layout::create(t.path().join("dst")).unwrap();
    copy_tagged(&ar, &dst, "legacy:1", &["1"]).await.unwrap();
    assert!(dst.fsck().await.unwrap().is_empty());

    // hoist's docker-archive writer re-exports it (diff_ids verified on the way).
    let out = t.path().join("again.tar");
    let w = DockerArchiveWriter::create(&out, vec!["legacy:2".into()], None).await.unwrap();
    copy_tagged(&dst, &w, "1", &[]).await.unwrap();
    if hoist_testkit::optional!("skopeo") {
        run(Command::new("skopeo").arg("inspect").arg(format!("docker-archive:{}", path.display())));
        run(Command::new("skopeo").arg("inspect").arg(format!("docker-archive:{}", out.display())));
    }
}

/// A config whose diff_ids name the compressed layer (a common mistake) is refused.
#[tokio::test]
async fn wrong_diff_ids_are_refused_by_docker_archive() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("src");
    let (v1, _) = make_layout(&dir);
    let layout = Layout::create(&dir).unwrap();
    let doc = layout.fetch_document(&v1).await.unwrap();
    let layer = doc.children()[1].clone();
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#,
        layer.digest
    );
    let cdesc = Descriptor::of_bytes(media::OCI_CONFIG, config.as_bytes());
    layout.write_blob_bytes(&cdesc, config.as_bytes()).unwrap();
    let m = serde_json::to_vec(
        &serde_json::json!({"schemaVersion": 2, "mediaType": media::OCI_MANIFEST, "config": cdesc, "layers": [layer]}),
    )
    .unwrap();
    let mdesc = Descriptor::of_bytes(media::OCI_MANIFEST, &m);
    layout.write_blob_bytes(&mdesc, &m).unwrap();
    layout.set_tag(&mdesc, "bad").unwrap();
    drop(layout);

    let src = Layout::open(&dir).unwrap();
    let out = t.path().join("out");
    std::fs::create_dir(&out).unwrap();
    {
        let w = DockerArchiveWriter::create(out.join("d.tar"), vec![], None).await.unwrap();
        let e = copy_tagged(&src, &w, "bad", &[]).await.unwrap_err();
        assert!(e.to_string().contains("diff_id"), "{e}");
    }
    assert_eq!(leftovers(&out, &[]), Vec::<PathBuf>::new());
}
