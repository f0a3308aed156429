//! oci-archive and docker-archive transports, judged by skopeo, umoci and podman as well
//! as by hoist reading its own output. Tests needing a tool print a message and skip when
//! it is missing.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use hoist::archive::{OciArchive, OciArchiveWriter};
use hoist::copy::{self, CopyOptions};
use hoist::docker_archive::{DockerArchive, DockerArchiveWriter};
use hoist::layout::Layout;
use hoist::media;
use hoist::target::{Destination, NoProgress, Source};
use hoist::{Descriptor, Error};

const HELLO: &[u8] = b"hello from hoist\n";
const DATA: &[u8] = b"some data in a subdirectory\n";

fn layer_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8], kind: tar::EntryType| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
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
    layout
        .write_blob_bytes(&config_desc, config.as_bytes())
        .unwrap();
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
    let root = src.resolve(Some(reference)).await?;
    let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
    copy::graph(src, dst, &root, &tags, &CopyOptions::default(), &NoProgress).await?;
    dst.finish().await?;
    Ok(root)
}

fn have(tool: &str) -> bool {
    let ok = Command::new(tool)
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("SKIP: {tool} is not installed");
    }
    ok
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
    let root = ar.resolve(Some("v1")).await.unwrap();
    assert_eq!(root.digest, mdesc.digest);
    assert_eq!(ar.roots().await.unwrap().len(), 1);
    assert_eq!(ar.resolve(None).await.unwrap().digest, mdesc.digest);
    assert_eq!(
        ar.resolve(Some(&mdesc.digest.to_string()))
            .await
            .unwrap()
            .digest,
        mdesc.digest
    );

    let back = Layout::create(t.path().join("back")).unwrap();
    copy_tagged(&ar, &back, "v1", &["v1"]).await.unwrap();
    assert_eq!(back.resolve_sync(Some("v1")).unwrap().digest, mdesc.digest);
    assert!(back.fsck().await.unwrap().is_empty());
}

#[tokio::test]
async fn oci_archive_is_read_by_skopeo_and_umoci() {
    if !have("skopeo") || !have("umoci") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (mdesc, _) = make_layout(&t.path().join("src"));
    let src = Layout::open(t.path().join("src")).unwrap();
    let file = t.path().join("image.tar");
    let w = OciArchiveWriter::create(&file).await.unwrap();
    copy_tagged(&src, &w, "v1", &["v1"]).await.unwrap();

    let inspect = run(Command::new("skopeo")
        .arg("inspect")
        .arg("--raw")
        .arg(format!("oci-archive:{}", file.display())));
    assert_eq!(hoist::Digest::sha256_of(inspect.as_bytes()), mdesc.digest);
    run(Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci-archive:{}", file.display())));
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
    assert_eq!(
        std::fs::read(bundle.join("rootfs/hello.txt")).unwrap(),
        HELLO
    );
    assert_eq!(
        std::fs::read(bundle.join("rootfs/sub/data.txt")).unwrap(),
        DATA
    );
}

#[tokio::test]
async fn docker_archive_is_read_by_skopeo_and_hoist() {
    if !have("skopeo") || !have("umoci") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (mdesc, _) = make_layout(&t.path().join("src"));
    let src = Layout::open(t.path().join("src")).unwrap();
    let file = t.path().join("docker.tar");
    let w = DockerArchiveWriter::create(&file, vec!["example.com/hoist/test:v1".into()], None)
        .await
        .unwrap();
    copy_tagged(&src, &w, "v1", &[]).await.unwrap();

    let names: Vec<String> = tar::Archive::new(std::fs::File::open(&file).unwrap())
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().any(|n| n == "manifest.json") && names.iter().any(|n| n == "index.json"),
        "{names:?}"
    );

    let arg = format!("docker-archive:{}", file.display());
    run(Command::new("skopeo").arg("inspect").arg(&arg));
    let dir = t.path().join("fromskopeo");
    run(Command::new("skopeo")
        .arg("copy")
        .arg(&arg)
        .arg(format!("oci:{}:v1", dir.display())));
    let bundle = t.path().join("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:v1", dir.display()))
        .arg(&bundle));
    assert_eq!(
        std::fs::read(bundle.join("rootfs/hello.txt")).unwrap(),
        HELLO
    );

    // hoist reads its own docker-archive through index.json: digests round-trip.
    let ar = DockerArchive::open(&file).unwrap();
    assert!(ar.is_oci());
    assert_eq!(ar.resolve(Some("v1")).await.unwrap().digest, mdesc.digest);
}

/// podman in a private vfs store; containerd is not tried (it needs root and a daemon).
#[tokio::test]
async fn docker_archive_is_loaded_by_podman() {
    if !have("podman") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    make_layout(&t.path().join("src"));
    let src = Layout::open(t.path().join("src")).unwrap();
    let file = t.path().join("docker.tar");
    let w = DockerArchiveWriter::create(&file, vec!["example.com/hoist/test:v1".into()], None)
        .await
        .unwrap();
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
    let probe = podman(&["images"]);
    if !probe.status.success() {
        eprintln!(
            "SKIP: podman cannot run here: {}",
            String::from_utf8_lossy(&probe.stderr)
        );
        return;
    }
    let out = podman(&["load", "-i", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "podman load: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let images = podman(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    let listed = String::from_utf8_lossy(&images.stdout);
    assert!(listed.contains("example.com/hoist/test:v1"), "{listed}");
}

#[tokio::test]
async fn docker_archive_from_skopeo_reads_into_a_layout() {
    if !have("skopeo") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    make_layout(&t.path().join("src"));
    let file = t.path().join("skopeo.tar");
    run(Command::new("skopeo")
        .arg("copy")
        .arg(format!("oci:{}:v1", t.path().join("src").display()))
        .arg(format!(
            "docker-archive:{}:example.com/hoist/test:v1",
            file.display()
        )));

    let ar = DockerArchive::open(&file).unwrap();
    assert!(!ar.is_oci());
    let roots = ar.roots().await.unwrap();
    assert_eq!(roots.len(), 1);
    assert_eq!(roots[0].1.as_deref(), Some("example.com/hoist/test:v1"));
    let root = ar.resolve(Some("v1")).await.unwrap();
    assert_eq!(root.media_type, media::DOCKER_MANIFEST);

    let dst = Layout::create(t.path().join("dst")).unwrap();
    copy_tagged(&ar, &dst, "example.com/hoist/test:v1", &["v1"])
        .await
        .unwrap();
    assert!(dst.fsck().await.unwrap().is_empty());
    let got = dst.resolve_sync(Some("v1")).unwrap();
    assert_eq!(got.digest, root.digest);

    // The layer in the layout holds our files.
    let doc = dst.fetch_document(&got).await.unwrap();
    let layer = &doc.children()[1];
    let raw = std::fs::read(dst.blob_path_of(&layer.digest)).unwrap();
    let plain = if layer.media_type == media::DOCKER_LAYER_GZIP {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .unwrap();
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
        assert_eq!(e.exit_code(), 5, "{e}");
        assert!(e.to_string().contains(&layer.digest.to_string()), "{e}");
        assert!(
            w.finish().await.is_err(),
            "finish after a failed blob must fail"
        );
    }
    {
        let w = DockerArchiveWriter::create(out.join("docker.tar"), vec![], None)
            .await
            .unwrap();
        let e = copy_tagged(&src, &w, "v1", &[]).await.unwrap_err();
        assert_eq!(e.exit_code(), 5, "{e}");
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
        let w = DockerArchiveWriter::create(out.join("docker.tar"), vec![], None)
            .await
            .unwrap();
        let e = copy_tagged(&src, &w, "art", &[]).await.unwrap_err();
        assert!(matches!(e, Error::Unsupported(_)), "{e:?}");
        assert!(
            e.to_string().contains("application/vnd.example.thing"),
            "{e}"
        );
    }
    assert_eq!(leftovers(&out, &[]), Vec::<PathBuf>::new());

    // The same artifact goes into an oci-archive fine.
    let w = OciArchiveWriter::create(out.join("oci.tar")).await.unwrap();
    copy_tagged(&src, &w, "art", &["art"]).await.unwrap();
    let ar = OciArchive::open(out.join("oci.tar")).unwrap();
    assert!(ar.resolve(Some("art")).await.is_ok());
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
