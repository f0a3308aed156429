//! CNAB bundles as cnab-to-oci stores them: the config manifest passes the OCI
//! image-manifest schema shape (one layer: bundle.json), and keywords and maintainers are
//! in bundle.json and in the index annotations cnab-to-oci writes (`io.cnab.keywords`,
//! `org.opencontainers.image.authors`, each a JSON array).

use std::path::Path;

use serde_json::Value;

use crate::common::*;
use crate::support::*;

fn json_file(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn blob(layout: &Path, digest: &Value) -> Value {
    json_file(&layout.join("blobs").join(digest.as_str().unwrap().replacen(':', "/", 1)))
}

#[test]
fn bundle_keywords_maintainers_and_config_layer() {
    let t = tempfile::tempdir().unwrap();
    let inv = t.path().join("inv");
    image_layout(&inv, "v1", &[100], 3);
    let out_dir = t.path().join("bundle");
    let out = hoist([
        "bundle",
        "create",
        "--name",
        "hello",
        "--version",
        "0.1.0",
        "--invocation",
        &format!("oci:{}:v1", inv.display()),
        "--keyword",
        "demo",
        "--keyword",
        "cnab",
        "--maintainer",
        "Jane Doe <jane@example.com>",
        "--tag",
        &format!("oci:{}:v1", out_dir.display()),
    ]);
    assert_success("hoist bundle create", &out);
    let root = json_file(&out_dir.join("index.json"))["manifests"][0]["digest"].clone();
    let index = blob(&out_dir, &root);
    let ann = &index["annotations"];
    assert_eq!(
        serde_json::from_str::<Value>(ann["io.cnab.keywords"].as_str().unwrap()).unwrap(),
        serde_json::json!(["demo", "cnab"])
    );
    assert_eq!(
        serde_json::from_str::<Value>(ann["org.opencontainers.image.authors"].as_str().unwrap()).unwrap(),
        serde_json::json!([{"email": "jane@example.com", "name": "Jane Doe"}])
    );
    let config_entry = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["io.cnab.manifest.type"] == "config")
        .unwrap();
    let manifest = blob(&out_dir, &config_entry["digest"]);
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "{manifest}");
    assert_eq!(layers[0]["digest"], manifest["config"]["digest"]);
    let bundle = blob(&out_dir, &manifest["config"]["digest"]);
    assert_eq!(bundle["keywords"], serde_json::json!(["demo", "cnab"]));
    assert_eq!(bundle["maintainers"][0]["name"], "Jane Doe");
    // hoist reads its bundle back.
    let out = hoist(["bundle", "inspect", &format!("oci:{}:v1", out_dir.display())]);
    assert!(assert_success("hoist bundle inspect", &out).contains("hello"));
}

/// The OCI image of `examples/hoist.toml` (one platform) in layout `dir` tagged `v1`.
fn example_image(t: &Path, dir: &Path) {
    let store = t.join("store");
    build_example(&store, &["--platform", "linux/amd64"], &format!("oci:{}:v1", dir.display()));
}

/// `cnab-to-oci push` and `pull` as hoist does them, with the real registry and skopeo as
/// judge: the cnab-spec example bundle.json (actions, parameters, credentials, outputs,
/// custom, maintainers, per-image fields) pointing at a Docker schema 2 image (written by
/// skopeo) and an OCI image; `bundle create --bundle-file` keeps every member, fills in
/// each image's contentDigest/size/mediaType/imageType, keeps its `image`, and copies the
/// images into the bundle's repository by digest; `bundle pull` gives back that bundle.json
/// and the relocation map (original reference -> bundle repo@digest), and every relocated
/// reference resolves to the same manifest bytes.
#[test]
fn bundle_file_create_and_pull_with_relocation_map() {
    hoist_testkit::require!("skopeo");
    let schemas = hoist_testkit::schemas::schemas_dir();
    let reg = TestRegistry::start(RegistryOpts::plain());
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    example_image(t.path(), &src);
    let (docker_ref, oci_ref) = (format!("{}/src/docker:v1", reg.host()), format!("{}/src/oci:v1", reg.host()));
    assert_success("hoist push", &hoist(["push", &format!("oci:{}:v1", src.display()), &oci_ref]));
    let mut args = vec!["copy".to_string(), "--format".into(), "v2s2".into()];
    args.extend(reg.skopeo_args("dest"));
    args.extend([format!("oci:{}:v1", src.display()), format!("docker://{docker_ref}")]);
    assert_success("skopeo copy --format v2s2", &skopeo(&args));
    let docker_raw = skopeo_raw(&reg, &docker_ref);
    let oci_raw = skopeo_raw(&reg, &oci_ref);
    let docker_manifest: Value = serde_json::from_slice(&docker_raw).unwrap();
    assert_eq!(docker_manifest["mediaType"], "application/vnd.docker.distribution.manifest.v2+json");

    // The cnab-spec example, its images pointed at these two.
    let mut input = json_file(&schemas.join("fixtures/cnab-spec-101.01-bundle.json"));
    input["invocationImages"] = serde_json::json!([{"image": docker_ref, "labels": {"role": "installer"}}]);
    input["images"] = serde_json::json!({"my-microservice": {"image": oci_ref, "description": "my microservice"}});
    let bundle_file = t.path().join("bundle.json");
    std::fs::write(&bundle_file, serde_json::to_vec_pretty(&input).unwrap()).unwrap();
    let target = format!("{}/bundles/app:v1", reg.host());
    let out = hoist(["bundle", "create", "--bundle-file", bundle_file.to_str().unwrap(), "--tag", &target]);
    let index_digest = assert_success("hoist bundle create --bundle-file", &out).trim().to_string();
    assert_eq!(index_digest, registry_manifest_digest(&reg, "bundles/app:v1"));

    let (pulled, map) = (t.path().join("pulled.json"), t.path().join("map.json"));
    let out = hoist([
        "bundle",
        "pull",
        &target,
        "--bundle",
        pulled.to_str().unwrap(),
        "--relocation-map",
        map.to_str().unwrap(),
    ]);
    assert_success("hoist bundle pull", &out);
    let got = json_file(&pulled);
    // Every member the input had is kept.
    for (k, v) in input.as_object().unwrap() {
        if k != "images" && k != "invocationImages" {
            assert_eq!(&got[k], v, "member {k} not kept");
        }
    }
    let inv = &got["invocationImages"][0];
    assert_eq!(inv["image"], docker_ref.as_str());
    assert_eq!(inv["imageType"], "docker");
    assert_eq!(inv["labels"]["role"], "installer");
    assert_eq!(inv["contentDigest"], sha256(&docker_raw).as_str());
    assert_eq!(inv["size"], docker_raw.len() as u64);
    assert_eq!(inv["mediaType"], "application/vnd.docker.distribution.manifest.v2+json");
    let web = &got["images"]["my-microservice"];
    assert_eq!(web["image"], oci_ref.as_str());
    assert_eq!(web["imageType"], "oci");
    assert_eq!(web["description"], "my microservice");
    assert_eq!(web["contentDigest"], sha256(&oci_raw).as_str());
    assert_eq!(web["size"], oci_raw.len() as u64);
    assert_eq!(web["mediaType"], "application/vnd.oci.image.manifest.v1+json");

    // The relocation map: original reference -> the bundle's repository, by digest.
    let bundle_repo = format!("{}/bundles/app", reg.host());
    assert_eq!(
        json_file(&map),
        serde_json::json!({
            docker_ref.clone(): format!("{bundle_repo}@{}", sha256(&docker_raw)),
            oci_ref.clone(): format!("{bundle_repo}@{}", sha256(&oci_raw)),
        })
    );
    // ... and each relocated reference resolves (skopeo) to the very same manifest bytes.
    for (orig, raw) in [(&docker_ref, &docker_raw), (&oci_ref, &oci_raw)] {
        let relocated = json_file(&map)[orig.as_str()].as_str().unwrap().to_string();
        assert_eq!(&skopeo_raw(&reg, &relocated), raw, "{relocated}");
    }
    // The bundle.json written passes the CNAB bundle schema.
    match hoist_testkit::schemas::Validator::new() {
        Ok(v) => {
            let failures = v.validate(&[(v.schema("cnab-spec/bundle.schema.json"), pulled.clone())]);
            assert!(failures.is_empty(), "{failures:?}");
        }
        Err(why) => hoist_testkit::skip_part!("{why}"),
    }
    // A stated contentDigest that is not the image's is refused, naming the field.
    input["images"]["my-microservice"]["contentDigest"] = Value::from(sha256(b"other"));
    std::fs::write(&bundle_file, serde_json::to_vec(&input).unwrap()).unwrap();
    let out = hoist(["bundle", "create", "--bundle-file", bundle_file.to_str().unwrap(), "--tag", &target]);
    let (_, err) = output_text(&out);
    assert!(!out.status.success() && err.contains("contentDigest"), "{err}");
}
