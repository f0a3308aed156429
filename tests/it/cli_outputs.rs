//! buildx `--output` keys, each honoured (judged by skopeo or the registry) or refused by name.

use std::path::PathBuf;

use crate::cli_trust::text;
use crate::common::*;

fn build(store: &std::path::Path, extra: &[&str]) -> std::process::Output {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/hoist.toml");
    let mut args: Vec<String> = vec![
        "-q".into(),
        "build".into(),
        "-f".into(),
        file.display().to_string(),
        "--store".into(),
        store.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    hoist(&args)
}

fn skopeo_raw_text(args: &[&str]) -> (bool, String) {
    let out = skopeo(args);
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

#[test]
fn several_names_push_by_digest_annotations_and_compression_are_honoured() {
    hoist_testkit::require!("skopeo");
    let reg = TestRegistry::plain();
    let host = reg.host();
    let t = tempfile::tempdir().unwrap();
    let store = t.path().join("store");
    let meta = t.path().join("meta.json");
    // name=a,b: both pushed.
    let out = build(&store, &["--output", &format!("type=registry,name={host}/a:v1,{host}/b:v2")]);
    let (so, se) = text(&out);
    assert!(out.status.success(), "{so}{se}");
    let digest = so.trim().to_string();
    for r in [format!("{host}/a:v1"), format!("{host}/b:v2")] {
        let (ok, o) = skopeo_raw_text(&["inspect", "--tls-verify=false", "--raw", &format!("docker://{r}")]);
        assert!(ok, "{r}: {o}");
        assert_eq!(hoist::Digest::sha256_of(o.as_bytes()).to_string(), digest, "{r}");
    }
    // push-by-digest: no tag, the digest in the metadata file.
    let out = build(
        &store,
        &[
            "--output",
            &format!("type=image,name={host}/c:v9,push=true,push-by-digest=true"),
            "--metadata-file",
            meta.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out).1);
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    let d = m["containerimage.digest"].as_str().unwrap().to_string();
    let (ok, o) = skopeo_raw_text(&["inspect", "--tls-verify=false", "--raw", &format!("docker://{host}/c:v9")]);
    assert!(!ok, "push-by-digest pushed a tag: {o}");
    let (ok, o) = skopeo_raw_text(&["inspect", "--tls-verify=false", "--raw", &format!("docker://{host}/c@{d}")]);
    assert!(ok, "{o}");
    // annotation.KEY and compression=zstd: in what is built (one platform: a manifest).
    let tar = t.path().join("img.tar");
    let out = build(
        &store,
        &[
            "--platform",
            "linux/amd64",
            "--output",
            &format!(
                "type=oci,dest={},annotation.org.example.k=v1,compression=zstd,compression-level=5",
                tar.display()
            ),
        ],
    );
    assert!(out.status.success(), "{}", text(&out).1);
    let (ok, raw) = skopeo_raw_text(&["inspect", "--raw", &format!("oci-archive:{}", tar.display())]);
    assert!(ok, "{raw}");
    let v: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(v["annotations"]["org.example.k"], "v1", "{v}");
    assert!(v["layers"].as_array().unwrap().iter().all(|l| l["mediaType"].as_str().unwrap().ends_with("+zstd")), "{v}");
}

#[test]
fn unknown_and_unsupported_keys_are_errors_naming_the_key() {
    let t = tempfile::tempdir().unwrap();
    let store = t.path().join("store");
    let dest = t.path().join("x.tar");
    for (spec, names) in [
        (format!("type=oci,dest={},colour=blue", dest.display()), "colour"),
        (
            format!("type=oci,dest={},annotation-manifest-descriptor.k=v", dest.display()),
            "annotation-manifest-descriptor.k",
        ),
        (
            "type=image,name=localhost:5000/x:v1,annotation-index-descriptor.k=v".to_string(),
            "annotation-index-descriptor.k",
        ),
        (format!("type=oci,dest={},oci-mediatypes=false", dest.display()), "oci-mediatypes"),
        (format!("type=local,dest={},compression=gzip", dest.display()), "compression"),
        ("type=image,name=localhost:5000/x:v1,unpack=true".to_string(), "unpack"),
    ] {
        let out = build(&store, &["--output", &spec]);
        let (_, se) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{spec}: {se}");
        assert!(se.contains(names), "{spec}: {se}");
        assert!(!dest.exists(), "{spec}: wrote before refusing");
    }
    // Keys that change what is built are refused by commands that build no layers.
    let f = t.path().join("f.txt");
    std::fs::write(&f, "x").unwrap();
    let out = hoist([
        "artifact",
        "pack",
        "--store",
        store.to_str().unwrap(),
        "--artifact-type",
        "application/x-test",
        "--output",
        &format!("type=oci,dest={},compression=zstd", dest.display()),
        f.to_str().unwrap(),
    ]);
    let (_, se) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{se}");
    assert!(se.contains("compression"), "{se}");
}

#[test]
fn index_annotations_go_on_the_index_and_its_descriptor() {
    hoist_testkit::require!("skopeo");
    let reg = TestRegistry::plain();
    let host = reg.host();
    let t = tempfile::tempdir().unwrap();
    let store = t.path().join("store");
    let title = "org.opencontainers.image.title";
    // Two platforms pushed: the index has the annotation, its manifests do not.
    let out = build(
        &store,
        &[
            "--platform",
            "linux/amd64,linux/arm64",
            "--output",
            &format!(
                "type=registry,name={host}/idx:v1,annotation-index.{title}=x,annotation.org.example.m=1,annotation-manifest.org.example.mm=2"
            ),
        ],
    );
    assert!(out.status.success(), "{}", text(&out).1);
    let (ok, raw) = skopeo_raw_text(&["inspect", "--tls-verify=false", "--raw", &format!("docker://{host}/idx:v1")]);
    assert!(ok, "{raw}");
    let index: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(index["mediaType"], "application/vnd.oci.image.index.v1+json", "{index}");
    assert_eq!(index["annotations"][title], "x", "{index}");
    assert_eq!(index["annotations"]["org.example.m"], "1", "manifest annotations reach the index too: {index}");
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{index}");
    for e in entries {
        let d = e["digest"].as_str().unwrap();
        let (ok, raw) =
            skopeo_raw_text(&["inspect", "--tls-verify=false", "--raw", &format!("docker://{host}/idx@{d}")]);
        assert!(ok, "{raw}");
        let m: serde_json::Value = serde_json::from_str(&raw).unwrap();
        assert!(m["annotations"].get(title).is_none(), "an index annotation reached a manifest: {m}");
        assert_eq!(m["annotations"]["org.example.m"], "1", "{m}");
        assert_eq!(m["annotations"]["org.example.mm"], "2", "annotation-manifest.K: {m}");
    }

    // An OCI layout: annotation-index-descriptor on the index's entry in index.json (BuildKit's place).
    let dir = t.path().join("layout");
    let out = build(
        &store,
        &[
            "--platform",
            "linux/amd64,linux/arm64",
            "--output",
            &format!(
                "type=oci,tar=false,dest={},annotation-index.{title}=y,annotation-index-descriptor.org.example.d=z",
                dir.display()
            ),
        ],
    );
    assert!(out.status.success(), "{}", text(&out).1);
    let top: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let entry = &top["manifests"][0];
    assert_eq!(entry["annotations"]["org.example.d"], "z", "{top}");
    let hex = entry["digest"].as_str().unwrap().strip_prefix("sha256:").unwrap();
    let blob: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("blobs/sha256").join(hex)).unwrap()).unwrap();
    assert_eq!(blob["annotations"][title], "y", "{blob}");
    assert!(blob["annotations"].get("org.example.d").is_none(), "{blob}");
    let (ok, o) = skopeo_raw_text(&["inspect", "--raw", &format!("oci:{}", dir.display())]);
    assert!(ok && o.contains(title), "skopeo reads the layout: {o}");

    // One platform makes no index: refused by name (as BuildKit), nothing written.
    for key in [format!("annotation-index.{title}=x"), "annotation-index-descriptor.org.example.d=z".to_string()] {
        let tar = t.path().join("one.tar");
        let out = build(
            &store,
            &["--platform", "linux/amd64", "--output", &format!("type=oci,dest={},{key}", tar.display())],
        );
        let (_, se) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{key}: {se}");
        assert!(se.contains(key.split('=').next().unwrap()), "the error names the key {key}: {se}");
        assert!(!tar.exists(), "{key}: wrote before refusing");
    }
}

#[test]
fn dockerfile_builds_honour_annotation_keys() {
    let t = tempfile::tempdir().unwrap();
    let ctx = t.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(ctx.join("f"), "x").unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY f /f\n").unwrap();
    let dir = t.path().join("out");
    let out = hoist_cmd()
        .args(["-q", "--platform", "linux/amd64,linux/arm64", "build", "--store"])
        .arg(t.path().join("store"))
        .arg("--output")
        .arg(format!(
            "type=oci,tar=false,dest={},annotation.org.example.m=1,annotation-index.org.example.i=2",
            dir.display()
        ))
        .arg(&ctx)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out).1);
    let top: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let read = |d: &serde_json::Value| -> serde_json::Value {
        let hex = d["digest"].as_str().unwrap().strip_prefix("sha256:").unwrap().to_string();
        serde_json::from_slice(&std::fs::read(dir.join("blobs/sha256").join(hex)).unwrap()).unwrap()
    };
    let index = read(&top["manifests"][0]);
    assert_eq!(index["annotations"]["org.example.i"], "2", "{index}");
    for e in index["manifests"].as_array().unwrap() {
        let m = read(e);
        assert_eq!(m["annotations"]["org.example.m"], "1", "{m}");
        assert!(m["annotations"].get("org.example.i").is_none(), "{m}");
    }
}

#[test]
fn registry_insecure_force_compression_and_oci_mediatypes_are_honoured() {
    let t = tempfile::tempdir().unwrap();
    let store = t.path().join("store");
    // registry.insecure=true (buildx: "push to an insecure HTTP registry"): plain HTTP from the
    // start. Loopback registries fall back to HTTP anyway, after a TLS hello they do not
    // answer: the debug log shows which way each push went.
    let reg = TestRegistry::plain();
    let target = format!("{}/insecure/app:v1", reg.host());
    let debug_build = |spec: String| {
        let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/hoist.toml");
        hoist_cmd()
            .env("HOIST_LOG", "hoist=debug")
            .args(["-q", "build", "-f"])
            .arg(file)
            .arg("--store")
            .arg(&store)
            .args(["--output", &spec])
            .output()
            .unwrap()
    };
    let fallback = "does not speak TLS";
    let out = debug_build(format!("type=registry,name={target}"));
    let (_, se) = text(&out);
    assert!(out.status.success() && se.contains(fallback), "without the key: TLS first, then HTTP: {se}");
    let out = debug_build(format!("type=registry,name={target},registry.insecure=true"));
    let (so, se) = text(&out);
    assert!(out.status.success(), "{se}");
    assert!(!se.contains(fallback), "registry.insecure=true: plain HTTP, no TLS attempt: {se}");
    let got = hoist(["inspect", "--raw", &target]);
    assert_eq!(hoist::Digest::sha256_of(&got.stdout).to_string(), so.trim(), "the registry has what was built");
    // force-compression=true with compression=uncompressed: every layer (all built here) plain tar;
    // oci-mediatypes=true: OCI media types (what hoist writes).
    let dir = t.path().join("plain");
    let out = build(
        &store,
        &[
            "--platform",
            "linux/amd64",
            "--output",
            &format!(
                "type=oci,tar=false,dest={},compression=uncompressed,force-compression=true,oci-mediatypes=true",
                dir.display()
            ),
        ],
    );
    assert!(out.status.success(), "{}", text(&out).1);
    let got = hoist(["inspect", "--raw", &format!("oci:{}", dir.display())]);
    let m: serde_json::Value = serde_json::from_slice(&got.stdout).unwrap();
    assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json", "{m}");
    let layers = m["layers"].as_array().unwrap();
    assert!(
        !layers.is_empty() && layers.iter().all(|l| l["mediaType"] == "application/vnd.oci.image.layer.v1.tar"),
        "{m}"
    );
    // force-compression with a base image (whose layers are kept as they are): refused by name.
    let base =
        format!("oci:{}:multi", PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/sample-layout").display());
    let out = build(
        &store,
        &[
            "--base",
            &base,
            "--output",
            &format!("type=oci,dest={},force-compression=true", t.path().join("b.tar").display()),
        ],
    );
    let (_, se) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{se}");
    assert!(se.contains("force-compression"), "{se}");
}
