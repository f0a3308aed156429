//! `hoist rebase` and `hoist flatten`, judged by skopeo (copying each platform of the result out
//! of the real registry) and umoci (unpacking it): a rebased app shows the new base's files and
//! its own, not the old base's; a flattened image has one layer, one history entry and the
//! same tree as the original, whiteouts applied.

use std::path::Path;

use serde_json::Value;

use crate::common::*;

fn json_file(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

fn blob(layout: &Path, digest: &Value) -> Value {
    json_file(&layout.join("blobs").join(digest.as_str().unwrap().replace(':', "/")))
}

/// A layer tarball holding `files` (path, content), made by GNU tar.
fn tarball(dir: &Path, name: &str, files: &[(&str, &str)]) -> std::path::PathBuf {
    let root = dir.join(format!("{name}.d"));
    for (p, c) in files {
        let f = root.join(p);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, c).unwrap();
    }
    let out = dir.join(format!("{name}.tar"));
    let tops: Vec<String> =
        std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    let tar = std::process::Command::new("tar").arg("-cf").arg(&out).arg("-C").arg(&root).args(&tops).output().unwrap();
    assert_success("tar -cf", &tar);
    out
}

/// The tree of one platform of `reference` in the registry: skopeo copies it into a layout,
/// umoci unpacks it.
fn registry_tree(reg: &TestRegistry, reference: &str, arch: &str, dir: &Path) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let layout = dir.join(format!("layout-{arch}"));
    let mut args = vec!["--override-arch".to_string(), arch.to_string(), "copy".to_string()];
    args.extend(reg.skopeo_args("src"));
    args.push(format!("docker://{}/{reference}", reg.host()));
    args.push(format!("oci:{}:x", layout.display()));
    assert_success("skopeo copy", &skopeo(&args));
    let bundle = dir.join(format!("bundle-{arch}"));
    let unpack = std::process::Command::new("umoci")
        .args(["unpack", "--rootless", "--image", &format!("{}:x", layout.display())])
        .arg(&bundle)
        .output()
        .unwrap();
    assert_success("umoci unpack", &unpack);
    bundle.join("rootfs")
}

#[test]
fn rebase_moves_each_platform_onto_the_new_base() {
    hoist_testkit::require!("skopeo");
    hoist_testkit::require!("umoci");
    let t = tempfile::tempdir().unwrap();
    let reg = TestRegistry::start(RegistryOpts::plain());
    let r = |s: &str| format!("{}/{s}", reg.host());
    // base:1 = the sample (two platforms) + a file only the old base has; base:2 = the sample
    // + another release file, flattened (so no layer is shared with base:1).
    build_example(&t.path().join("store"), &[], &format!("docker://{}", r("sample:v1")));
    let old = tarball(t.path(), "old", &[("etc/base-release", "1\n"), ("etc/old-only", "x\n")]);
    let new = tarball(t.path(), "new", &[("etc/base-release", "2\n")]);
    ok("append base:1", hoist(["append", &r("sample:v1"), &r("base:1"), old.to_str().unwrap()]));
    ok("append base:2", hoist(["append", &r("sample:v1"), &r("base:2pre"), new.to_str().unwrap()]));
    ok("flatten base:2", hoist(["flatten", &r("base:2pre"), &r("base:2")]));
    // The app, built on base:1 (its manifests carry the base.name/base.digest annotations).
    let app = tarball(t.path(), "app", &[("srv/app.txt", "app\n")]);
    build_example(
        &t.path().join("store"),
        &["--base", &format!("docker://{}", r("base:1"))],
        &format!("docker://{}", r("app:built")),
    );
    ok("append app", hoist(["append", &r("app:built"), &r("app:v1"), app.to_str().unwrap()]));

    // Not based on base:2: refused, nothing written.
    let refused =
        hoist(["rebase", &r("app:v1"), &r("app:bad"), "--old-base", &r("base:2"), "--new-base", &r("base:1")]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("not based on"), "{err}");
    let mut args = vec!["inspect".to_string(), "--raw".to_string()];
    args.extend(reg.skopeo_args(""));
    args.push(format!("docker://{}", r("app:bad")));
    assert!(!skopeo(&args).status.success(), "a refused rebase writes no tag");

    // The old base from the annotations, the new one named.
    let out = hoist(["rebase", &r("app:v1"), &r("app:v2"), "--new-base", &r("base:2")]);
    let digest = ok("rebase", out.clone());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("-> {digest}")), "the summary names the new root: {stderr}");
    let index: Value = serde_json::from_slice(&skopeo_raw(&reg, &r("app:v2"))).unwrap();
    let base2: Value = serde_json::from_slice(&skopeo_raw(&reg, &r("base:2"))).unwrap();
    let base2_digest = registry_manifest_digest(&reg, "base:2");
    assert_eq!(index["manifests"].as_array().unwrap().len(), 2);
    for (arch, entry) in [("amd64", &index["manifests"][0]), ("arm64", &index["manifests"][1])] {
        assert_eq!(entry["platform"]["architecture"], arch);
        let m: Value =
            serde_json::from_slice(&skopeo_raw(&reg, &r(&format!("app@{}", entry["digest"].as_str().unwrap()))))
                .unwrap();
        let b2 = base2["manifests"].as_array().unwrap().iter().find(|e| e["platform"]["architecture"] == arch).unwrap();
        let b2m: Value =
            serde_json::from_slice(&skopeo_raw(&reg, &r(&format!("base@{}", b2["digest"].as_str().unwrap())))).unwrap();
        let layers = m["layers"].as_array().unwrap();
        assert_eq!(layers[0]["digest"], b2m["layers"][0]["digest"], "{arch}: the new base's layer comes first");
        assert_eq!(m["annotations"]["org.opencontainers.image.base.digest"], base2_digest.as_str());
        assert_eq!(m["annotations"]["org.opencontainers.image.base.name"], r("base:2"));
        let rootfs = registry_tree(&reg, "app:v2", arch, &t.path().join(format!("v2-{arch}")));
        assert_eq!(std::fs::read_to_string(rootfs.join("etc/base-release")).unwrap(), "2\n", "{arch}");
        assert!(!rootfs.join("etc/old-only").exists(), "{arch}: the old base's files are gone");
        assert_eq!(
            std::fs::read_to_string(rootfs.join("srv/app.txt")).unwrap(),
            "app\n",
            "{arch}: the app's files stay"
        );
        assert!(rootfs.join("app/bin/hello.sh").exists(), "{arch}");
    }

    // Rebased back onto base:1 (both bases named): the original tree again.
    ok(
        "rebase back",
        hoist(["rebase", &r("app:v2"), &r("app:v3"), "--old-base", &r("base:2"), "--new-base", &r("base:1")]),
    );
    let back = registry_tree(&reg, "app:v3", "arm64", &t.path().join("v3"));
    let orig = registry_tree(&reg, "app:v1", "arm64", &t.path().join("v1"));
    assert_eq!(file_digests(&back), file_digests(&orig));
}

#[test]
fn flatten_squashes_layers_with_whiteouts_applied() {
    hoist_testkit::require!("umoci");
    let t = tempfile::tempdir().unwrap();
    let built = t.path().join("built");
    build_example(&t.path().join("store"), &["--platform", "linux/amd64"], &format!("oci:{}:v1", built.display()));
    // Two more layers: files, then a whiteout of one of them and of a directory of the sample.
    let files = tarball(t.path(), "files", &[("etc/keep", "k\n"), ("etc/gone", "g\n")]);
    let wh = tarball(t.path(), "wh", &[("etc/.wh.gone", ""), ("etc/added", "a\n")]);
    let src = format!("oci:{}:v1", built.display());
    let stacked = t.path().join("stacked");
    ok(
        "append",
        hoist([
            "append",
            &src,
            &format!("oci:{}:v1", stacked.display()),
            files.to_str().unwrap(),
            wh.to_str().unwrap(),
        ]),
    );
    let flat = t.path().join("flat");
    let out = hoist(["flatten", &format!("oci:{}:v1", stacked.display()), &format!("oci:{}:v1", flat.display())]);
    ok("flatten", out);
    let top = |l: &Path| blob(l, &json_file(&l.join("index.json"))["manifests"][0]["digest"]);
    let m = top(&flat);
    assert_eq!(m["layers"].as_array().unwrap().len(), 1, "{m}");
    let c = blob(&flat, &m["config"]["digest"]);
    assert_eq!(c["rootfs"]["diff_ids"].as_array().unwrap().len(), 1);
    assert_eq!(c["history"].as_array().unwrap().len(), 1);
    assert!(c["history"][0]["created_by"].as_str().unwrap().starts_with("hoist flatten sha256:"));
    assert_eq!(c["config"]["Env"], blob(&stacked, &top(&stacked)["config"]["digest"])["config"]["Env"]);
    // The diff_id is the digest of the uncompressed layer.
    let layer =
        std::fs::read(flat.join("blobs").join(m["layers"][0]["digest"].as_str().unwrap().replace(':', "/"))).unwrap();
    let mut plain = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(&layer[..]), &mut plain).unwrap();
    assert_eq!(c["rootfs"]["diff_ids"][0], sha256(&plain).as_str());
    let unpack = |layout: &Path, dir: &Path| {
        let out = std::process::Command::new("umoci")
            .args(["unpack", "--rootless", "--image", &format!("{}:v1", layout.display())])
            .arg(dir)
            .output()
            .unwrap();
        assert_success("umoci unpack", &out);
        dir.join("rootfs")
    };
    let (a, b) = (unpack(&stacked, &t.path().join("u1")), unpack(&flat, &t.path().join("u2")));
    assert!(!b.join("etc/gone").exists() && !b.join("etc/.wh.gone").exists(), "the whiteout is applied");
    assert_eq!(std::fs::read_to_string(b.join("etc/added")).unwrap(), "a\n");
    assert_eq!(file_digests(&a), file_digests(&b), "the same tree as the layered image");
}

/// A registry-to-registry rebase onto a base in the same registry mounts the new base's layers
/// (`POST .../blobs/uploads/?mount=<digest>&from=base`, answered 201) instead of reading and
/// uploading them: the request bodies that reach the registry (counted by the test kit's
/// proxy in front of it) are the new config and manifest only. The result is the same image
/// a rebase into a layout (where nothing can be mounted) writes.
#[test]
fn registry_rebase_mounts_the_new_base_layers() {
    use hoist_testkit::fixtures::image_layout;
    use hoist_testkit::proxy::FaultProxy;
    hoist_testkit::require!("skopeo");
    let t = tempfile::tempdir().unwrap();
    let reg = TestRegistry::start(RegistryOpts::plain());
    let proxy = FaultProxy::start(&reg.url(), vec![]).unwrap();
    let r = |s: &str| format!("{}/{s}", proxy.host());
    let (b1, b2) = (t.path().join("b1"), t.path().join("b2"));
    image_layout(&b1, "v1", &[64 << 10], 1);
    let base2_manifest = image_layout(&b2, "v1", &[512 << 10, 256 << 10], 2);
    ok("push base:1", hoist(["copy", &format!("oci:{}:v1", b1.display()), &r("base:1")]));
    ok("push base:2", hoist(["copy", &format!("oci:{}:v1", b2.display()), &r("base:2")]));
    let app = tarball(t.path(), "app", &[("srv/app.txt", "app\n")]);
    ok("append app", hoist(["append", &r("base:1"), &r("app:v1"), app.to_str().unwrap()]));
    let bases = ["--old-base".to_string(), r("base:1"), "--new-base".to_string(), r("base:2")];

    // The reference result: the same rebase into a layout.
    let layout = t.path().join("rebased");
    let mut args = vec!["rebase".to_string(), r("app:v1"), format!("oci:{}:v2", layout.display())];
    args.extend(bases.iter().cloned());
    let want = ok("rebase into a layout", hoist(&args));

    proxy.state().reset();
    let mut args = vec!["rebase".to_string(), r("app:v1"), r("app:v2")];
    args.extend(bases.iter().cloned());
    let got = ok("rebase", hoist(&args));
    assert_eq!(got, want, "the same image as the rebase into a layout");
    assert_eq!(registry_manifest_digest(&reg, "app:v2"), want);

    let ex = proxy.exchanges();
    let base2: Value = json_file(&b2.join("blobs/sha256").join(&base2_manifest[7..]));
    let layers: Vec<&str> = base2["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap()).collect();
    let layer_bytes: u64 = base2["layers"].as_array().unwrap().iter().map(|l| l["size"].as_u64().unwrap()).sum();
    for l in &layers {
        let mounted = ex.iter().any(|e| {
            e.method == "POST"
                && e.path.starts_with("/v2/app/blobs/uploads/")
                && e.path.contains(&format!("mount={l}"))
                && e.path.contains("from=base")
                && e.status == Some(201)
        });
        assert!(mounted, "layer {l} of the new base is mounted from base: {ex:#?}");
        let sent = ex.iter().any(|e| (e.method == "PUT" || e.method == "PATCH") && e.path.contains(&l[7..]));
        assert!(!sent, "layer {l} of the new base was uploaded: {ex:#?}");
    }
    assert_eq!(proxy.method_count("PATCH"), 0, "{ex:#?}");
    let sent = proxy.request_body_bytes();
    eprintln!("registry rebase: {sent} request body bytes; the new base's layers are {layer_bytes} bytes");
    assert!(sent < 16 << 10, "{sent} request body bytes: more than a config and a manifest ({ex:#?})");
}

/// `hoist flatten` is reproducible: the same image flattened twice into two fresh layouts, run
/// with different `SOURCE_DATE_EPOCH`s (flatten takes no time from the clock or the
/// environment), gives the same root digest, with gzip and with zstd. The history entry is
/// dated by the image's own `created`; the file times are the layers'.
#[test]
fn flatten_is_reproducible() {
    let t = tempfile::tempdir().unwrap();
    let built = t.path().join("built");
    build_example(&t.path().join("store"), &[], &format!("oci:{}:v1", built.display()));
    let files = tarball(t.path(), "files", &[("etc/keep", "k\n"), ("etc/gone", "g\n")]);
    let wh = tarball(t.path(), "wh", &[("etc/.wh.gone", ""), ("etc/added", "a\n")]);
    let stacked = t.path().join("stacked");
    let src = format!("oci:{}:v1", stacked.display());
    ok(
        "append",
        hoist(["append", &format!("oci:{}:v1", built.display()), &src, files.to_str().unwrap(), wh.to_str().unwrap()]),
    );
    let root = |l: &Path| json_file(&l.join("index.json"))["manifests"][0]["digest"].as_str().unwrap().to_string();
    for compression in ["gzip", "zstd"] {
        let mut digests = Vec::new();
        for (n, epoch) in [(1, "0"), (2, "1700000000")] {
            let flat = t.path().join(format!("flat-{compression}-{n}"));
            let out = hoist_cmd()
                .env("SOURCE_DATE_EPOCH", epoch)
                .args(["flatten", "--compression", compression, &src, &format!("oci:{}:v1", flat.display())])
                .output()
                .unwrap();
            let digest = ok(&format!("flatten {compression} #{n}"), out);
            assert_eq!(digest, root(&flat), "the printed digest is the layout's root");
            digests.push((digest, flat));
        }
        assert_eq!(digests[0].0, digests[1].0, "{compression}: two flattens of one image differ");
        // Per platform: one layer, and the history entry dated by the image's own `created`.
        let (flat, index) = (&digests[0].1, blob(&digests[0].1, &Value::from(digests[0].0.clone())));
        let source = blob(&stacked, &Value::from(root(&stacked)));
        let entries = index["manifests"].as_array().unwrap();
        assert_eq!(entries.len(), 2, "{index}");
        for (entry, before) in entries.iter().zip(source["manifests"].as_array().unwrap()) {
            let m = blob(flat, &entry["digest"]);
            assert_eq!(m["layers"].as_array().unwrap().len(), 1, "{m}");
            let c = blob(flat, &m["config"]["digest"]);
            let c0 = blob(&stacked, &blob(&stacked, &before["digest"])["config"]["digest"]);
            assert_eq!(c["history"][0]["created"], c0["created"], "{c}");
        }
    }
}
