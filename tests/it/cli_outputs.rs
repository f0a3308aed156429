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
        (format!("type=oci,dest={},annotation-index.k=v", dest.display()), "annotation-index.k"),
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
