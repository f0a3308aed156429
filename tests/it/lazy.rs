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

/// The eStargz checker, built once per test run under target/ (GOPATH mode, no network).
fn estargz_checker() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let gopath = root.join("crates/hoist-testkit/go");
        let out = root.join("target/go-judges");
        std::fs::create_dir_all(&out).unwrap();
        let bin = out.join("hoist-estargz-check");
        let tmp = out.join(format!(".hoist-estargz-check-{}", std::process::id()));
        let built = Command::new("go")
            .args(["build", "-o"])
            .arg(&tmp)
            .arg("hoist-estargz-check")
            .env("GO111MODULE", "off")
            .env("GOPATH", format!("{}:/usr/share/gocode", gopath.display()))
            .env("GOCACHE", out.join("cache"))
            .env("GOFLAGS", "")
            .output()
            .expect("run go build");
        assert_success("go build hoist-estargz-check (needs golang-github-containerd-stargz-snapshotter-dev)", &built);
        std::fs::rename(&tmp, &bin).unwrap();
        bin
    })
    .clone()
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
