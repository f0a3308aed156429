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
