//! `hoist index create` and `hoist bundle` against a real registry, judged by skopeo and by
//! the registry's own access log (mounts vs uploads), not only by hoist reading back.

use crate::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::*;
use hoist::image::{build_image, BuildFile, ImageSpec};
use hoist::output::{parse_output, write_metadata};
use hoist::transport::layout::Layout;
use hoist::Descriptor;
use serde_json::Value;

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

/// Build the sample image for one platform into a fresh layout at `dir`; `note` changes the
/// manifest (an annotation) so that two builds of one platform differ.
fn build_layout(dir: &Path, platform: &str, note: &str) -> Descriptor {
    let mut spec: ImageSpec = BuildFile::load(&examples().join("hoist.toml")).unwrap();
    spec.platforms = vec![platform.to_string()];
    spec.tag = Some("v1".into());
    spec.annotations.insert("test.note".into(), note.into());
    let layout = Layout::create(dir).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(build_image(&layout, &spec, None)).unwrap()
}

fn run_ok(args: &[&str]) -> String {
    let out = hoist(args);
    assert_success(&format!("hoist {}", args.join(" ")), &out)
}

/// `hoist push DIR@DIGEST HOST/REPO@DIGEST` (untagged) or to a tag.
fn push(dir: &Path, desc: &Descriptor, dst: &str) {
    run_ok(&["-q", "push", &format!("{}@{}", dir.display(), desc.digest), dst]);
}

fn manifests(index: &[u8]) -> Vec<Value> {
    let v: Value = serde_json::from_slice(index).unwrap();
    v["manifests"].as_array().unwrap().clone()
}

struct Two {
    _tmp: tempfile::TempDir,
    amd: (PathBuf, Descriptor),
    arm: (PathBuf, Descriptor),
}

fn two_platforms() -> Two {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("amd64"), tmp.path().join("arm64"));
    let da = build_layout(&a, "linux/amd64", "x");
    let db = build_layout(&b, "linux/arm64/v8", "x");
    assert_ne!(da.digest, db.digest);
    Two { _tmp: tmp, amd: (a, da), arm: (b, db) }
}

#[test]
fn merges_pushed_platform_manifests_into_one_index() {
    hoist_testkit::require!("skopeo");
    let reg = TestRegistry::start(RegistryOpts::plain());
    let host = reg.host();
    let t = two_platforms();
    let (a, b) = (&t.amd.1.digest, &t.arm.1.digest);
    push(&t.amd.0, &t.amd.1, &format!("{host}/app@{a}"));
    push(&t.arm.0, &t.arm.1, &format!("{host}/app@{b}"));

    let out = run_ok(&[
        "-q",
        "index",
        "create",
        "--tag",
        &format!("{host}/app:v1"),
        &format!("{host}/app@{a}"),
        &format!("{host}/app@{b}"),
        "--annotation",
        "index:org.opencontainers.image.description=multi-node",
        "--annotation",
        "manifest[linux/arm64]:test.arch=arm",
    ]);
    let raw = skopeo_raw(&reg, &format!("{host}/app:v1"));
    assert_eq!(out.trim(), format!("{}", hoist::Digest::sha256_of(&raw)), "printed digest is the pushed index's");
    let ms = manifests(&raw);
    let digests: Vec<&str> = ms.iter().map(|m| m["digest"].as_str().unwrap()).collect();
    assert_eq!(digests, vec![a.to_string(), b.to_string()]);
    assert_eq!(ms[0]["platform"]["architecture"], "amd64");
    assert_eq!(ms[0]["platform"]["os"], "linux");
    assert_eq!(ms[1]["platform"]["architecture"], "arm64");
    assert_eq!(ms[1]["platform"]["variant"], "v8");
    assert_eq!(ms[1]["annotations"]["test.arch"], "arm");
    assert!(ms[0].get("annotations").is_none());
    let v: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(v["annotations"]["org.opencontainers.image.description"], "multi-node");
    assert_eq!(v["mediaType"], hoist::model::media::OCI_INDEX);

    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["copy".to_string(), "--all".to_string()];
    args.extend(reg.skopeo_args("src"));
    args.push(format!("docker://{host}/app:v1"));
    args.push(format!("oci:{}:v1", dir.path().join("out").display()));
    assert_success("skopeo copy --all", &skopeo(&args));

    // The same inputs from the two nodes' metadata files give the very same index.
    let meta = |d: &Descriptor, name: &str| {
        let p = dir.path().join(format!("{name}.json"));
        let out = parse_output(&format!("type=image,name={host}/app:{name},push=true")).unwrap();
        write_metadata(&p, d, &[out], &BTreeMap::new()).unwrap();
        p
    };
    let (ma, mb) = (meta(&t.amd.1, "amd64"), meta(&t.arm.1, "arm64"));
    let out2 = run_ok(&[
        "-q",
        "index",
        "create",
        "--tag",
        &format!("{host}/app:v2"),
        "--from-metadata",
        ma.to_str().unwrap(),
        "--from-metadata",
        mb.to_str().unwrap(),
        "--annotation",
        "index:org.opencontainers.image.description=multi-node",
        "--annotation",
        "manifest[linux/arm64]:test.arch=arm",
    ]);
    assert_eq!(out2.trim(), out.trim(), "metadata files give the same index");
    assert_eq!(skopeo_raw(&reg, &format!("{host}/app:v2")), raw);
}

#[test]
fn children_from_another_repository_are_mounted_and_layouts_copied() {
    let reg = TestRegistry::start(RegistryOpts::plain());
    let host = reg.host();
    let t = two_platforms();
    let (a, b) = (&t.amd.1.digest, &t.arm.1.digest);
    push(&t.amd.0, &t.amd.1, &format!("{host}/builds/node@{a}"));
    push(&t.arm.0, &t.arm.1, &format!("{host}/builds/node@{b}"));
    let before = reg.requests().len();

    let out = run_ok(&[
        "-q",
        "--format",
        "json",
        "index",
        "create",
        "--tag",
        &format!("{host}/app:v1"),
        &format!("{host}/builds/node@{a}"),
        &format!("{host}/builds/node@{b}"),
    ]);
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    let report = &v["outputs"][0]["report"];
    // one shared layer and two configs
    assert_eq!(report["blobsMounted"], 3, "{v}");
    assert_eq!(report["blobsUploaded"], 0, "{v}");
    let reqs: Vec<LoggedRequest> = reg.requests().into_iter().skip(before).collect();
    let mounts: Vec<_> = reqs.iter().filter(|r| r.method == "POST" && r.path.contains("mount=")).collect();
    assert_eq!(mounts.len(), 3, "{reqs:#?}");
    assert!(mounts
        .iter()
        .all(|r| r.status == 201 && r.path.starts_with("/v2/app/") && r.path.contains("from=builds/node")));
    let blob_puts = reqs.iter().filter(|r| r.method == "PUT" && r.path.contains("/blobs/")).count();
    assert_eq!(blob_puts, 0, "no blob uploaded: {reqs:#?}");
    // children before the index
    let manifest_puts: Vec<_> =
        reqs.iter().filter(|r| r.method == "PUT" && r.path.contains("/manifests/")).map(|r| r.path.clone()).collect();
    assert_eq!(manifest_puts.len(), 3, "{manifest_puts:?}");
    assert!(manifest_puts[2].ends_with("/manifests/v1"), "{manifest_puts:?}");

    // From layouts (no registry to mount from): copied.
    let out = run_ok(&[
        "-q",
        "--format",
        "json",
        "index",
        "create",
        "--tag",
        &format!("{host}/other:v1"),
        &format!("oci:{}:v1", t.amd.0.display()),
        &format!("oci:{}@{}", t.arm.0.display(), b),
    ]);
    let v2: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v2["outputs"][0]["report"]["blobsUploaded"], 3, "{v2}");
    assert_eq!(v2["digest"], v["digest"], "same children, same index");

    // Mixed sources: an archive and a registry; an index as a source is flattened (same
    // entries, so the very same index) unless --keep-nested.
    let tar = t._tmp.path().join("amd64.tar");
    run_ok(&["-q", "copy", &format!("oci:{}:v1", t.amd.0.display()), &format!("oci-archive:{}:v1", tar.display())]);
    let mixed = run_ok(&[
        "-q",
        "index",
        "create",
        "--dry-run",
        &format!("oci-archive:{}:v1", tar.display()),
        &format!("{host}/builds/node@{b}"),
    ]);
    let index_digest = v["digest"].as_str().unwrap();
    assert_eq!(hoist::Digest::sha256_of(mixed.trim_end().as_bytes()).to_string(), index_digest);
    let flat = run_ok(&["-q", "index", "create", "--dry-run", &format!("{host}/app:v1")]);
    assert_eq!(flat, mixed);
    let nested = run_ok(&["-q", "index", "create", "--dry-run", "--keep-nested", &format!("{host}/app:v1")]);
    let ms = manifests(nested.as_bytes());
    assert_eq!(ms.len(), 1);
    assert_eq!(ms[0]["digest"], index_digest);
    assert_eq!(ms[0]["mediaType"], hoist::model::media::OCI_INDEX);
}

#[test]
fn conflicts_duplicates_and_dry_run() {
    let reg = TestRegistry::start(RegistryOpts::plain());
    let host = reg.host();
    let t = two_platforms();
    let tmp = tempfile::tempdir().unwrap();
    let other_amd = tmp.path().join("amd64-b");
    let d2 = build_layout(&other_amd, "linux/amd64", "y");
    let a = format!("oci:{}:v1", t.amd.0.display());
    let a2 = format!("oci:{}:v1", other_amd.display());
    let b = format!("oci:{}:v1", t.arm.0.display());

    let out = hoist(["index", "create", "--tag", &format!("{host}/app:v1"), &a, &a2]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("conflicting platform linux/amd64"), "{err}");
    assert!(err.contains(&t.amd.1.digest.to_string()) && err.contains(&d2.digest.to_string()), "{err}");
    assert_eq!(out.status.code(), Some(2));

    // Allowed on request.
    let out = run_ok(&["-q", "index", "create", "--dry-run", "--allow-conflicts", &a, &a2]);
    assert_eq!(manifests(out.as_bytes()).len(), 2);

    // A duplicate is dropped with a note; the dry run prints the index and writes nothing.
    let out = hoist(["index", "create", "--dry-run", "--tag", &format!("{host}/app:v1"), &a, &b, &a]);
    let stdout = assert_success("dry run", &out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("dropped the duplicate"));
    let ms = manifests(stdout.trim().as_bytes());
    assert_eq!(ms.len(), 2);
    assert_eq!(ms[0]["digest"], t.amd.1.digest.to_string());
    let writes = reg.requests().iter().filter(|r| r.method == "PUT" || r.method == "POST").count();
    assert_eq!(writes, 0, "dry run and refused conflict wrote nothing");

    // --append adds to the index at the tag.
    run_ok(&["-q", "index", "create", "--tag", &format!("{host}/app:v1"), &a]);
    let out = run_ok(&["-q", "index", "create", "--append", "--tag", &format!("{host}/app:v1"), &b]);
    let listed = run_ok(&["--format", "json", "inspect", &format!("{host}/app:v1")]);
    let v: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(v["digest"].as_str().unwrap(), out.trim());
    let ds: Vec<&str> =
        v["manifest"]["manifests"].as_array().unwrap().iter().map(|m| m["digest"].as_str().unwrap()).collect();
    assert_eq!(ds, vec![t.amd.1.digest.to_string(), t.arm.1.digest.to_string()]);

    // Appending to a tag that holds one manifest turns it into an index of two.
    push(&t.amd.0, &t.amd.1, &format!("{host}/single:v1"));
    let out = run_ok(&["-q", "index", "create", "--append", "--tag", &format!("{host}/single:v1"), &b]);
    let dry = run_ok(&["-q", "index", "create", "--dry-run", &a, &b]);
    assert_eq!(out.trim(), hoist::Digest::sha256_of(dry.trim_end().as_bytes()).to_string());
}

#[test]
fn bundle_round_trips_registry_archive_registry() {
    hoist_testkit::require!("skopeo");
    let reg = TestRegistry::start(RegistryOpts::plain());
    let host = reg.host();
    let t = two_platforms();
    push(&t.amd.0, &t.amd.1, &format!("{host}/tools/invoker:v1"));
    let tmp = tempfile::tempdir().unwrap();

    let out = run_ok(&[
        "-q",
        "--format",
        "json",
        "bundle",
        "create",
        "--tag",
        &format!("{host}/b:v1"),
        "--name",
        "demo",
        "--version",
        "0.1.0",
        "--description",
        "a demo bundle",
        "--invocation",
        &format!("{host}/tools/invoker:v1"),
        "--component",
        &format!("web=oci:{}:v1", t.arm.0.display()),
        "--component",
        &format!("api={host}/tools/invoker:v1"),
    ]);
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert!(v["outputs"][0]["report"]["blobsMounted"].as_u64().unwrap() >= 2, "{v}");

    let raw = skopeo_raw(&reg, &format!("{host}/b:v1"));
    let idx: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(idx["annotations"]["io.cnab.runtime_version"], "v1.0.0");
    assert_eq!(idx["annotations"]["org.opencontainers.artifactType"], "application/vnd.cnab.manifest.v1");
    assert_eq!(idx["annotations"]["org.opencontainers.image.title"], "demo");
    assert_eq!(idx["annotations"]["org.opencontainers.image.version"], "0.1.0");
    let ms = idx["manifests"].as_array().unwrap();
    let kinds: Vec<&str> = ms.iter().map(|m| m["annotations"]["io.cnab.manifest.type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["config", "invocation", "component", "component"]);
    assert_eq!(ms[2]["annotations"]["io.cnab.component.name"], "api");
    assert_eq!(ms[3]["annotations"]["io.cnab.component.name"], "web");
    assert_eq!(ms[3]["digest"], t.arm.1.digest.to_string());

    // bundle.json is the config blob of the config manifest: canonical, naming the bundle repo.
    let cfg_manifest = run_ok(&["inspect", "--raw", &format!("{host}/b@{}", ms[0]["digest"].as_str().unwrap())]);
    let cm: Value = serde_json::from_str(&cfg_manifest).unwrap();
    assert_eq!(cm["config"]["mediaType"], "application/vnd.cnab.config.v1+json");
    // The blob as the registry serves it (not as hoist reads it back): canonical JSON (keys
    // sorted, no whitespace outside strings), as CNAB asks.
    let config_url = format!("{}/v2/b/blobs/{}", reg.url(), cm["config"]["digest"].as_str().unwrap());
    let bundle_json = reqwest::blocking::get(&config_url).and_then(|r| r.error_for_status()).unwrap().text().unwrap();
    let bj: Value = serde_json::from_str(&bundle_json).unwrap();
    assert_eq!(bundle_json, canonical_json(&bj), "bundle.json is not canonical JSON");
    assert_eq!(bj["images"]["web"]["image"], format!("{host}/b@{}", t.arm.1.digest));
    assert_eq!(bj["invocationImages"][0]["contentDigest"], t.amd.1.digest.to_string());
    assert_eq!(bj["schemaVersion"], "v1.0.0");

    // registry → oci-archive → another repository: same bytes everywhere.
    let tar = tmp.path().join("b.tar");
    run_ok(&["-q", "copy", &format!("{host}/b:v1"), &format!("oci-archive:{}", tar.display())]);
    run_ok(&["-q", "copy", &format!("oci-archive:{}", tar.display()), &format!("{host}/b2:v1")]);
    let raw2 = skopeo_raw(&reg, &format!("{host}/b2:v1"));
    assert_eq!(raw, raw2);
    for m in ms {
        let d = m["digest"].as_str().unwrap();
        let one = run_ok(&["inspect", "--raw", &format!("{host}/b@{d}")]);
        let two = run_ok(&["inspect", "--raw", &format!("{host}/b2@{d}")]);
        assert_eq!(one, two);
    }

    let text = run_ok(&["bundle", "inspect", &format!("{host}/b2:v1")]);
    assert!(text.contains("demo 0.1.0"), "{text}");
    assert!(text.contains("web") && text.contains("api"), "{text}");
    let info: Value = serde_json::from_str(&run_ok(&[
        "--format",
        "json",
        "bundle",
        "inspect",
        &format!("oci-archive:{}", tar.display()),
    ]))
    .unwrap();
    assert_eq!(info["name"], "demo");
    let names: Vec<&str> = info["components"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["invocation", "api", "web"]);
    // As cnab-to-oci writes them: no platform on a bundle's entries.
    assert!(info["components"][2].get("platform").is_none(), "{info}");

    // Straight to an archive with --output (no registry): same index as long as the names match.
    let y = tmp.path().join("y.tar");
    run_ok(&[
        "-q",
        "bundle",
        "create",
        "--output",
        &format!("type=oci,dest={},name={host}/b:v1", y.display()),
        "--name",
        "demo",
        "--version",
        "0.1.0",
        "--invocation",
        &format!("oci:{}:v1", t.amd.0.display()),
    ]);
    let info: Value = serde_json::from_str(&run_ok(&[
        "--format",
        "json",
        "bundle",
        "inspect",
        &format!("oci-archive:{}:v1", y.display()),
    ]))
    .unwrap();
    assert_eq!(info["components"][0]["digest"], t.amd.1.digest.to_string());
}

/// `v` as canonical JSON (object keys sorted by their bytes, no insignificant whitespace),
/// written here rather than by hoist's serializer.
fn canonical_json(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .iter()
                .map(|k| format!("{}:{}", Value::from(k.as_str()), canonical_json(&m[k.as_str()])))
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(a) => format!("[{}]", a.iter().map(canonical_json).collect::<Vec<_>>().join(",")),
        scalar => scalar.to_string(),
    }
}
