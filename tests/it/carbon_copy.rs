//! `index create` with a single index source makes a carbon copy (same bytes, same digest),
//! as `buildx imagetools create` documents; only real changes re-serialize. Judged by the
//! digest skopeo reads from the registry.

use crate::common::*;

#[test]
fn single_index_source_is_copied_as_it_is() {
    hoist_testkit::require!("skopeo");
    let reg = TestRegistry::start(RegistryOpts::plain());
    let t = tempfile::tempdir().unwrap();
    let built = t.path().join("built");
    build_example(&t.path().join("store"), &[], &format!("oci:{}:v1", built.display()));
    // An index as another tool writes it (pretty-printed, with a field hoist does not know),
    // so that a re-serialized copy could not come out byte-identical by chance.
    let index_json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(built.join("index.json")).unwrap()).unwrap();
    let root = index_json["manifests"][0]["digest"].as_str().unwrap().replacen(':', "/", 1);
    let mut doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(built.join("blobs").join(root)).unwrap()).unwrap();
    doc["org.example.unknown"] = serde_json::json!(true);
    let bytes = serde_json::to_vec_pretty(&doc).unwrap();
    let digest = sha256(&bytes);
    std::fs::write(built.join("blobs").join(digest.replacen(':', "/", 1)), &bytes).unwrap();
    let mut new_index = index_json.clone();
    new_index["manifests"][0]["digest"] = serde_json::Value::from(digest.clone());
    new_index["manifests"][0]["size"] = serde_json::Value::from(bytes.len());
    std::fs::write(built.join("index.json"), serde_json::to_vec(&new_index).unwrap()).unwrap();
    let src = format!("{}/src/img:v1", reg.host());
    assert_success("hoist push", &hoist(["push", &format!("oci:{}:v1", built.display()), &src]));
    let src_digest = sha256(&skopeo_raw(&reg, &src));
    assert_eq!(src_digest, digest);

    for (src_arg, dst) in [(src.clone(), "copy/img:v1"), (format!("oci:{}:v1", built.display()), "copy2/img:v1")] {
        let dst = format!("{}/{dst}", reg.host());
        assert_success("hoist index create", &hoist(["index", "create", &src_arg, "--tag", &dst]));
        assert_eq!(sha256(&skopeo_raw(&reg, &dst)), src_digest, "{src_arg}: a carbon copy");
    }
    // A real change re-serializes.
    let changed = format!("{}/changed/img:v1", reg.host());
    let out = hoist(["index", "create", &src, "--annotation", "index:org.example.k=v", "--tag", &changed]);
    assert_success("hoist index create --annotation", &out);
    assert_ne!(sha256(&skopeo_raw(&reg, &changed)), src_digest);
}
