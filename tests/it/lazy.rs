//! Lazy-pull layer formats, judged by their own implementations: eStargz layers hoist writes
//! are opened and verified (TOC digest against the layer annotation, every chunk against its
//! `chunkDigest`, every file against its digest) by containerd's stargz-snapshotter `estargz`
//! package (Debian's Go sources, built offline in GOPATH mode from the test kit's
//! `go/src/hoist-estargz-check`); reference eStargz layers that package writes are read back by
//! hoist to the tar they came from; umoci unpacks every converted image to the same tree.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::{json, Value};

use crate::common::*;

/// A checker of the test kit's Go tree (`go/src/NAME`), built once per test run under target/
/// (GOPATH mode with Debian's Go sources, no network).
fn go_checker(name: &str) -> PathBuf {
    static BINS: OnceLock<std::sync::Mutex<std::collections::HashMap<String, PathBuf>>> = OnceLock::new();
    let mut bins = BINS.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(b) = bins.get(name) {
        return b.clone();
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let gopath = root.join("crates/hoist-testkit/go");
    let out = root.join("target/go-judges");
    std::fs::create_dir_all(&out).unwrap();
    let bin = out.join(name);
    let tmp = out.join(format!(".{name}-{}", std::process::id()));
    let built = Command::new("go")
        .args(["build", "-o"])
        .arg(&tmp)
        .arg(name)
        .env("GO111MODULE", "off")
        .env("GOPATH", format!("{}:/usr/share/gocode", gopath.display()))
        .env("GOCACHE", out.join("cache"))
        .env("GOFLAGS", "")
        .output()
        .expect("run go build");
    assert_success(&format!("go build {name} (needs the Go sources .ci/run installs)"), &built);
    std::fs::rename(&tmp, &bin).unwrap();
    bins.insert(name.to_string(), bin.clone());
    bin
}

/// The eStargz checker (containerd's stargz-snapshotter `estargz` package).
fn estargz_checker() -> PathBuf {
    go_checker("hoist-estargz-check")
}

fn checker(args: &[&str]) -> Value {
    let out = Command::new(estargz_checker()).args(args).output().expect("run hoist-estargz-check");
    let text = assert_success(&format!("hoist-estargz-check {}", args.join(" ")), &out);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("checker output {text:?}: {e}"))
}

fn json_file(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

fn blob_path(layout: &Path, digest: &str) -> PathBuf {
    layout.join("blobs").join(digest.replace(':', "/"))
}

/// The root manifest of a layout and its config.
fn manifest_and_config(layout: &Path) -> (String, Value, Value) {
    let index = json_file(&layout.join("index.json"));
    let digest = index["manifests"][0]["digest"].as_str().unwrap().to_string();
    let m = json_file(&blob_path(layout, &digest));
    let c = json_file(&blob_path(layout, m["config"]["digest"].as_str().unwrap()));
    (digest, m, c)
}

fn umoci_tree(layout: &Path, dir: &Path) -> std::collections::BTreeMap<String, String> {
    let out = Command::new("umoci")
        .args(["unpack", "--rootless", "--image", &format!("{}:v1", layout.display())])
        .arg(dir)
        .output()
        .unwrap();
    assert_success(&format!("umoci unpack {}", layout.display()), &out);
    file_digests(&dir.join("rootfs"))
}

/// Pseudo-random bytes (incompressible, reproducible).
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) as u8
        })
        .collect()
}

/// A two-layer image built by hoist: small, empty and 9 MiB (three chunks) files, a symlink,
/// nested directories.
fn built_image(t: &Path) -> PathBuf {
    let ctx = t.join("ctx");
    std::fs::create_dir_all(ctx.join("a/b/c")).unwrap();
    std::fs::write(ctx.join("a/hello.txt"), "hello\n".repeat(100)).unwrap();
    std::fs::write(ctx.join("a/empty"), "").unwrap();
    std::fs::write(ctx.join("a/b/c/big.bin"), noise(9 << 20, 7)).unwrap();
    std::os::unix::fs::symlink("hello.txt", ctx.join("a/link")).unwrap();
    std::fs::create_dir_all(t.join("ctx2")).unwrap();
    std::fs::write(t.join("ctx2/conf"), "x=1\n").unwrap();
    std::fs::write(
        t.join("hoist.toml"),
        "source_date_epoch = 1700000000\n[[layers]]\nfiles = [ { source = \"ctx\", target = \"/app\" } ]\n\
         [[layers]]\nfiles = [ { source = \"ctx2\", target = \"/etc/app\" } ]\n",
    )
    .unwrap();
    let layout = t.join("built");
    ok(
        "hoist build",
        hoist([
            "build",
            "--store",
            t.join("store").to_str().unwrap(),
            "-f",
            t.join("hoist.toml").to_str().unwrap(),
            "--output",
            &format!("oci:{}:v1", layout.display()),
        ]),
    );
    layout
}

#[test]
fn estargz_layers_pass_the_stargz_reader_and_unpack_to_the_same_tree() {
    hoist_testkit::require!("go", "umoci");
    let t = tempfile::tempdir().unwrap();
    let built = built_image(t.path());
    let src = format!("oci:{}:v1", built.display());
    let esgz = t.path().join("esgz");
    ok(
        "copy --dest-compress estargz",
        hoist(["copy", "--dest-compress", "estargz", &src, &format!("oci:{}:v1", esgz.display())]),
    );
    let (root, m, c) = manifest_and_config(&esgz);
    let (_, m0, c0) = manifest_and_config(&built);
    let layers = m["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2);
    let mut total_chunks = 0;
    for (i, l) in layers.iter().enumerate() {
        assert_eq!(l["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip");
        assert_ne!(l["digest"], m0["layers"][i]["digest"], "layer {i} converted");
        let toc = l["annotations"]["containerd.io/snapshot/stargz/toc.digest"].as_str().expect("toc.digest annotation");
        let blob = blob_path(&esgz, l["digest"].as_str().unwrap());
        assert_eq!(std::fs::metadata(&blob).unwrap().len(), l["size"].as_u64().unwrap());
        let report = checker(&["check", blob.to_str().unwrap(), toc]);
        assert_eq!(report["diffID"], c["rootfs"]["diff_ids"][i], "config diff_id of layer {i} is its content's");
        assert_eq!(
            report["uncompressedSize"].to_string(),
            l["annotations"]["io.containers.estargz.uncompressed-size"].as_str().unwrap()
        );
        total_chunks += report["chunks"].as_u64().unwrap();
    }
    // hello.txt (1) + big.bin (3 chunks of 4 MiB) + conf (1).
    assert_eq!(total_chunks, 5);
    // Every eStargz layer carries its TOC as /stargz.index.json (a plain unpacker shows it).
    let mut tree = umoci_tree(&esgz, &t.path().join("u-esgz"));
    assert!(tree.remove("stargz.index.json").is_some(), "the TOC entry is in the layer");
    assert_eq!(
        tree,
        umoci_tree(&built, &t.path().join("u-built")),
        "eStargz image unpacks to the tree of the original"
    );

    // Reproducible; a layer already eStargz is kept byte for byte.
    let again = t.path().join("again");
    ok("copy again", hoist(["copy", "--dest-compress", "estargz", &src, &format!("oci:{}:v1", again.display())]));
    assert_eq!(manifest_and_config(&again).0, root);
    let kept = t.path().join("kept");
    ok(
        "copy eStargz as estargz",
        hoist([
            "copy",
            "--dest-compress",
            "estargz",
            &format!("oci:{}:v1", esgz.display()),
            &format!("oci:{}:v1", kept.display()),
        ]),
    );
    assert_eq!(manifest_and_config(&kept).0, root, "eStargz to eStargz changes nothing");

    // inspect names the format.
    let shown = ok("inspect", hoist(["inspect", &format!("oci:{}:v1", esgz.display())]));
    assert_eq!(shown.matches("(eStargz)").count(), 2, "{shown}");

    // Back to plain gzip: the original diff_ids, no eStargz annotations, the same tree.
    let back = t.path().join("back");
    ok(
        "copy eStargz as gzip",
        hoist([
            "copy",
            "--dest-compress",
            "gzip",
            &format!("oci:{}:v1", esgz.display()),
            &format!("oci:{}:v1", back.display()),
        ]),
    );
    let (_, mb, cb) = manifest_and_config(&back);
    assert_eq!(cb["rootfs"]["diff_ids"], c0["rootfs"]["diff_ids"]);
    assert!(mb["layers"].as_array().unwrap().iter().all(|l| l.get("annotations").is_none()), "{mb}");
    assert_eq!(umoci_tree(&back, &t.path().join("u-back")), umoci_tree(&built, &t.path().join("u-built2")));
}

#[test]
fn reference_estargz_from_the_go_writer_reads_back_to_its_tar() {
    hoist_testkit::require!("go");
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("tree");
    std::fs::create_dir_all(dir.join("d/e")).unwrap();
    std::fs::write(dir.join("d/small"), "small\n").unwrap();
    std::fs::write(dir.join("d/e/big"), noise(3_000_000, 3)).unwrap();
    std::os::unix::fs::symlink("small", dir.join("d/ln")).unwrap();
    let tar = t.path().join("t.tar");
    let esgz = t.path().join("t.esgz");
    let status = Command::new(estargz_checker()).arg("mktar").arg(&dir).arg(&tar).output().unwrap();
    assert_success("mktar", &status);
    let r = checker(&["build", tar.to_str().unwrap(), esgz.to_str().unwrap(), "1000000"]);

    // An OCI layout with the reference layer, as nerdctl's converter annotates it.
    let layout = t.path().join("ref");
    let put = |bytes: &[u8]| -> String {
        let d = sha256(bytes);
        let p = blob_path(&layout, &d);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
        d
    };
    let layer = std::fs::read(&esgz).unwrap();
    let layer_digest = put(&layer);
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [r["diffID"]]}
    }))
    .unwrap();
    let config_digest = put(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": layer.len(),
            "annotations": {"containerd.io/snapshot/stargz/toc.digest": r["tocDigest"]}
        }]
    }))
    .unwrap();
    let manifest_digest = put(&manifest);
    std::fs::write(layout.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let index = json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest, "size": manifest.len(),
        "annotations": {"org.opencontainers.image.ref.name": "v1"}
    }]});
    std::fs::write(layout.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();

    // Kept as it is when eStargz is asked for.
    let kept = t.path().join("kept");
    let src = format!("oci:{}:v1", layout.display());
    ok("copy as estargz", hoist(["copy", "--dest-compress", "estargz", &src, &format!("oci:{}:v1", kept.display())]));
    assert_eq!(manifest_and_config(&kept).0, manifest_digest);

    // To gzip and to none: the tar the Go writer started from (no TOC, no landmark).
    for alg in ["gzip", "none"] {
        let out = t.path().join(alg);
        ok(alg, hoist(["copy", "--dest-compress", alg, &src, &format!("oci:{}:v1", out.display())]));
        let (_, m, c) = manifest_and_config(&out);
        assert_eq!(c["rootfs"]["diff_ids"][0], r["tarDigest"], "{alg}: diff_id of the original tar");
        if alg == "none" {
            assert_eq!(m["layers"][0]["digest"], r["tarDigest"]);
        }
    }

    // hoist's own eStargz of that tar passes the checker too.
    let mine = t.path().join("mine");
    ok(
        "copy to estargz",
        hoist([
            "copy",
            "--dest-compress",
            "estargz",
            &format!("oci:{}:v1", t.path().join("none").display()),
            &format!("oci:{}:v1", mine.display()),
        ]),
    );
    let (_, m, c) = manifest_and_config(&mine);
    let l = &m["layers"][0];
    let report = checker(&[
        "check",
        blob_path(&mine, l["digest"].as_str().unwrap()).to_str().unwrap(),
        l["annotations"]["containerd.io/snapshot/stargz/toc.digest"].as_str().unwrap(),
    ]);
    assert_eq!(report["diffID"], c["rootfs"]["diff_ids"][0]);
    assert_eq!(report["files"], 2);
}

/// The zstd:chunked checker: containers/storage's `pkg/chunked` (a partial pull into a
/// directory) and tar-split's reassembly, built like the eStargz checker.
fn zstdchunked_checker(args: &[&str]) -> Value {
    let out =
        Command::new(go_checker("hoist-zstdchunked-check")).args(args).output().expect("run hoist-zstdchunked-check");
    let text = assert_success(&format!("hoist-zstdchunked-check {}", args.join(" ")), &out);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("checker output {text:?}: {e}"))
}

/// `podman` with its own store under `root` (vfs).
fn podman(root: &Path, args: &[&str]) -> std::process::Output {
    Command::new("podman")
        .arg("--root")
        .arg(root.join("root"))
        .arg("--runroot")
        .arg(root.join("run"))
        .args(["--storage-driver", "vfs"])
        .args(args)
        .output()
        .expect("run podman")
}

#[test]
fn zstd_chunked_layers_pass_containers_storage_and_podman_pulls_them() {
    hoist_testkit::require!("go", "umoci", "podman");
    let t = tempfile::tempdir().unwrap();
    let built = built_image(t.path());
    let src = format!("oci:{}:v1", built.display());
    let zc = t.path().join("zc");
    let out = hoist(["copy", "--dest-compress", "zstd:chunked", &src, &format!("oci:{}:v1", zc.display())]);
    ok("copy --dest-compress zstd:chunked", out);
    let (root, m, c) = manifest_and_config(&zc);
    let (_, m0, c0) = manifest_and_config(&built);
    assert_eq!(m["config"], m0["config"], "the content is the tar's: diff_ids and config unchanged");
    let layers = m["layers"].as_array().unwrap();
    let expected = [
        file_digests(&t.path().join("ctx")).into_iter().map(|(k, v)| (format!("app/{k}"), v)).collect(),
        file_digests(&t.path().join("ctx2")).into_iter().map(|(k, v)| (format!("etc/app/{k}"), v)).collect(),
    ];
    for (i, l) in layers.iter().enumerate() {
        assert_eq!(l["mediaType"], "application/vnd.oci.image.layer.v1.tar+zstd");
        let a = &l["annotations"];
        for key in [
            "io.github.containers.zstd-chunked.manifest-checksum",
            "io.github.containers.zstd-chunked.manifest-position",
            "io.github.containers.zstd-chunked.tarsplit-position",
            "io.containers.zstd-chunked.manifest-checksum",
            "io.containers.zstd-chunked.manifest-position",
        ] {
            assert!(a[key].is_string(), "layer {i}: {key} missing: {l}");
        }
        let blob = blob_path(&zc, l["digest"].as_str().unwrap());
        let annotations = a.to_string();
        // containers/storage's partial pull: its TOC reader, then every file fetched by range.
        let dest = t.path().join(format!("partial-{i}"));
        zstdchunked_checker(&["apply", blob.to_str().unwrap(), &annotations, dest.to_str().unwrap()]);
        assert_eq!(file_digests(&dest), expected[i], "layer {i}: the partial pull's files");
        assert!(dest.join("app/a/link").is_symlink() || i == 1, "layer {i}: the symlink");
        // tar-split rebuilds the exact tar (its digest is the diff_id).
        let split = zstdchunked_checker(&["tarsplit", blob.to_str().unwrap(), &annotations]);
        assert_eq!(split["tarDigest"], c0["rootfs"]["diff_ids"][i], "layer {i}: tar-split reassembly");
        assert_eq!(c["rootfs"]["diff_ids"][i], c0["rootfs"]["diff_ids"][i]);
    }

    // Reproducible; a zstd:chunked layer is kept byte for byte; inspect names the format.
    let again = t.path().join("again");
    ok("copy again", hoist(["copy", "--dest-compress", "zstd:chunked", &src, &format!("oci:{}:v1", again.display())]));
    assert_eq!(manifest_and_config(&again).0, root);
    let kept = t.path().join("kept");
    let zc_ref = format!("oci:{}:v1", zc.display());
    ok(
        "copy zstd:chunked again",
        hoist(["copy", "--dest-compress", "zstd:chunked:3", &zc_ref, &format!("oci:{}:v1", kept.display())]),
    );
    assert_eq!(manifest_and_config(&kept).0, root, "zstd:chunked to zstd:chunked changes nothing");
    let shown = ok("inspect", hoist(["inspect", &zc_ref]));
    assert_eq!(shown.matches("(zstd:chunked)").count(), 2, "{shown}");

    // podman pulls it from the registry (vfs store): the same tree as the gzip original.
    let reg = TestRegistry::start(RegistryOpts::plain());
    let pushed = format!("{}/lazy/app:zc", reg.host());
    ok("push", hoist(["copy", &zc_ref, &pushed]));
    let store = t.path().join("podman");
    assert_success("podman pull", &podman(&store, &["pull", "--tls-verify=false", &pushed]));
    let mounted = assert_success("podman image mount", &podman(&store, &["image", "mount", &pushed]));
    let tree = file_digests(Path::new(mounted.trim()));
    assert_eq!(tree, umoci_tree(&built, &t.path().join("u-built")), "podman's tree of the zstd:chunked image");
    let _ = podman(&store, &["image", "unmount", &pushed]);

    // From eStargz to zstd:chunked goes through the plain tar: the original diff_ids.
    let esgz = t.path().join("esgz");
    ok("to estargz", hoist(["copy", "--dest-compress", "estargz", &src, &format!("oci:{}:v1", esgz.display())]));
    let zc2 = t.path().join("zc2");
    ok(
        "estargz to zstd:chunked",
        hoist([
            "copy",
            "--dest-compress",
            "zstd:chunked",
            &format!("oci:{}:v1", esgz.display()),
            &format!("oci:{}:v1", zc2.display()),
        ]),
    );
    let (root2, m2, c2) = manifest_and_config(&zc2);
    assert_eq!(c2["rootfs"]["diff_ids"], c0["rootfs"]["diff_ids"]);
    assert_eq!(root2, root, "eStargz -> zstd:chunked gives the same layers as gzip -> zstd:chunked");
    assert!(m2["layers"][0]["annotations"].get("containerd.io/snapshot/stargz/toc.digest").is_none());
}

#[test]
fn estargz_builds_with_prioritized_files_and_chunk_size() {
    hoist_testkit::require!("go", "umoci");
    let t = tempfile::tempdir().unwrap();
    let built = built_image(t.path());
    // A build straight to eStargz: every layer passes the stargz reader.
    let direct = t.path().join("direct");
    ok(
        "build --compression estargz",
        hoist([
            "build",
            "--store",
            t.path().join("store").to_str().unwrap(),
            "-f",
            t.path().join("hoist.toml").to_str().unwrap(),
            "--compression",
            "estargz",
            "--output",
            &format!("oci:{}:v1", direct.display()),
        ]),
    );
    let (_, m, c) = manifest_and_config(&direct);
    for (i, l) in m["layers"].as_array().unwrap().iter().enumerate() {
        let toc = l["annotations"]["containerd.io/snapshot/stargz/toc.digest"].as_str().expect("toc.digest");
        let report = checker(&["check", blob_path(&direct, l["digest"].as_str().unwrap()).to_str().unwrap(), toc]);
        assert_eq!(report["diffID"], c["rootfs"]["diff_ids"][i]);
    }
    // The same bytes as a copy to eStargz of the gzip build.
    let copied = t.path().join("copied");
    let src = format!("oci:{}:v1", built.display());
    ok("copy to estargz", hoist(["copy", "--dest-compress", "estargz", &src, &format!("oci:{}:v1", copied.display())]));
    assert_eq!(manifest_and_config(&copied).1["layers"], m["layers"], "build and copy write the same eStargz layers");

    // Prioritized files first, then the landmark; 1 MiB chunks.
    let prio = t.path().join("prio");
    ok(
        "copy --estargz-prioritized",
        hoist([
            "copy",
            "--dest-compress",
            "estargz",
            "--estargz-chunk-size",
            "1048576",
            "--estargz-prioritized",
            "app/a/b/c/big.bin",
            "--estargz-prioritized",
            "app/a/hello.txt",
            &src,
            &format!("oci:{}:v1", prio.display()),
        ]),
    );
    let (_, mp, cp) = manifest_and_config(&prio);
    let l = &mp["layers"][0];
    let toc = l["annotations"]["containerd.io/snapshot/stargz/toc.digest"].as_str().unwrap();
    let report = checker(&["check", blob_path(&prio, l["digest"].as_str().unwrap()).to_str().unwrap(), toc]);
    assert_eq!(report["diffID"], cp["rootfs"]["diff_ids"][0]);
    assert_eq!(report["chunks"], 9 + 1 + 1, "9 MiB in 1 MiB chunks, hello.txt and the landmark");
    let order: Vec<&str> = report["order"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    let at = |n: &str| order.iter().position(|o| *o == n).unwrap_or_else(|| panic!("{n} not in {order:?}"));
    assert!(at("app/a/b/c/big.bin") < at("app/a/hello.txt"));
    assert_eq!(at(".prefetch.landmark"), at("app/a/hello.txt") + 1, "{order:?}");
    assert!(at("app/a/b/c") < at("app/a/b/c/big.bin"), "parents first: {order:?}");
    assert!(report["landmark"].as_bool().unwrap());
    // Back to gzip: the landmark is gone; the tree is the original's.
    let back = t.path().join("back");
    ok(
        "to gzip",
        hoist([
            "copy",
            "--dest-compress",
            "gzip",
            &format!("oci:{}:v1", prio.display()),
            &format!("oci:{}:v1", back.display()),
        ]),
    );
    assert_eq!(umoci_tree(&back, &t.path().join("u-back")), umoci_tree(&built, &t.path().join("u-built")));
}

/// Every layer of `layout`'s root passes the stargz reader against its annotation, with the
/// config's diff_id; returns the number of layers.
fn assert_estargz_layers(layout: &Path) -> usize {
    let (_, m, c) = manifest_and_config(layout);
    let layers = m["layers"].as_array().unwrap();
    for (i, l) in layers.iter().enumerate() {
        assert_eq!(l["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip", "{m}");
        let toc = l["annotations"]["containerd.io/snapshot/stargz/toc.digest"].as_str().expect("toc.digest annotation");
        let report = checker(&["check", blob_path(layout, l["digest"].as_str().unwrap()).to_str().unwrap(), toc]);
        assert_eq!(report["diffID"], c["rootfs"]["diff_ids"][i], "layer {i}: config diff_id is its content's");
        assert_eq!(
            report["uncompressedSize"].to_string(),
            l["annotations"]["io.containers.estargz.uncompressed-size"].as_str().expect("uncompressed-size annotation")
        );
    }
    layers.len()
}

#[test]
fn sync_dest_compress_estargz_writes_layers_the_stargz_reader_accepts() {
    hoist_testkit::require!("go", "umoci");
    let reg = TestRegistry::plain();
    let h = reg.host();
    let t = tempfile::tempdir().unwrap();
    let built = built_image(t.path());
    let src = format!("oci:{}:v1", built.display());
    ok("copy to the registry", hoist(["-q", "copy", &src, &format!("{h}/up/app:v1")]));
    ok(
        "sync --dest-compress estargz",
        hoist([
            "-q",
            "sync",
            "--src",
            "docker",
            "--dest",
            "docker",
            "--dest-compress",
            "estargz",
            &format!("{h}/up/app:v1"),
            &format!("{h}/lazy"),
        ]),
    );
    // read back byte for byte (a copy without conversion)
    let back = t.path().join("back");
    ok("copy back", hoist(["-q", "copy", &format!("{h}/lazy/app:v1"), &format!("oci:{}:v1", back.display())]));
    assert_eq!(assert_estargz_layers(&back), 2);
    let mut tree = umoci_tree(&back, &t.path().join("u-back"));
    assert!(tree.remove("stargz.index.json").is_some(), "the TOC entry is in the layer");
    assert_eq!(tree, umoci_tree(&built, &t.path().join("u-built")), "the synced image unpacks to the original tree");
    // a bad format is refused by copy's parser
    let out = hoist([
        "sync",
        "--src",
        "docker",
        "--dest",
        "docker",
        "--dest-compress",
        "brotli",
        &format!("{h}/up/app:v1"),
        &format!("{h}/bad"),
    ]);
    assert!(!out.status.success(), "--dest-compress brotli accepted");
    // asking for referrers and a conversion together is a usage error, not a silent drop
    let out = hoist([
        "sync",
        "--src",
        "docker",
        "--dest",
        "docker",
        "--dest-compress",
        "estargz",
        "--referrers",
        "true",
        &format!("{h}/up/app:v1"),
        &format!("{h}/both"),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--referrers true with --dest-compress"));
}

#[test]
fn lazy_compression_in_build_outputs_and_build_files() {
    hoist_testkit::require!("go");
    let t = tempfile::tempdir().unwrap();
    let built = built_image(t.path());
    let (_, _, c0) = manifest_and_config(&built);
    let store = t.path().join("store");
    let file = t.path().join("hoist.toml");
    // compression=estargz in --output
    let out_dir = t.path().join("out-esgz");
    ok(
        "build --output ...,compression=estargz",
        hoist([
            "build",
            "--store",
            store.to_str().unwrap(),
            "-f",
            file.to_str().unwrap(),
            "--output",
            &format!("type=oci,dest={},tar=false,compression=estargz", out_dir.display()),
        ]),
    );
    assert_eq!(assert_estargz_layers(&out_dir), 2);
    // compression = "estargz" in the build file
    let toml = std::fs::read_to_string(&file).unwrap();
    let esgz_file = t.path().join("esgz.toml");
    std::fs::write(&esgz_file, format!("compression = \"estargz\"\n{toml}")).unwrap();
    let from_file = t.path().join("file-esgz");
    ok(
        "build with compression = estargz in the file",
        hoist([
            "build",
            "--store",
            store.to_str().unwrap(),
            "-f",
            esgz_file.to_str().unwrap(),
            "--output",
            &format!("oci:{}:v1", from_file.display()),
        ]),
    );
    assert_eq!(assert_estargz_layers(&from_file), 2);
    assert_eq!(manifest_and_config(&from_file).1["layers"], manifest_and_config(&out_dir).1["layers"]);
    // zstd:chunked in --output and in the file: containers/storage's reader takes each layer
    let zc_file = t.path().join("zc.toml");
    std::fs::write(&zc_file, format!("compression = \"zstd:chunked\"\n{toml}")).unwrap();
    let zc_out = t.path().join("out-zc");
    let zc_in_file = t.path().join("file-zc");
    for (f, output, dir) in [
        (&file, format!("type=oci,dest={},tar=false,compression=zstd:chunked", zc_out.display()), &zc_out),
        (&zc_file, format!("oci:{}:v1", zc_in_file.display()), &zc_in_file),
    ] {
        ok(
            "build zstd:chunked",
            hoist(["build", "--store", store.to_str().unwrap(), "-f", f.to_str().unwrap(), "--output", &output]),
        );
        let (_, m, c) = manifest_and_config(dir);
        assert_eq!(c["rootfs"]["diff_ids"], c0["rootfs"]["diff_ids"], "zstd:chunked keeps the diff_ids");
        for (i, l) in m["layers"].as_array().unwrap().iter().enumerate() {
            assert_eq!(l["mediaType"], "application/vnd.oci.image.layer.v1.tar+zstd", "{m}");
            let a = &l["annotations"];
            for key in [
                "io.github.containers.zstd-chunked.manifest-checksum",
                "io.github.containers.zstd-chunked.manifest-position",
            ] {
                assert!(a[key].is_string(), "{}: layer {i}: {key} missing: {l}", dir.display());
            }
            let blob = blob_path(dir, l["digest"].as_str().unwrap());
            let split = zstdchunked_checker(&["tarsplit", blob.to_str().unwrap(), &a.to_string()]);
            assert_eq!(split["tarDigest"], c0["rootfs"]["diff_ids"][i], "layer {i}: tar-split reassembly");
        }
    }
}
