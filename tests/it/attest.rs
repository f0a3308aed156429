//! Build-time attestations (`hoist build --sbom --provenance --attest`): buildx's layout (an
//! attestation manifest per image in the index, `unknown/unknown`, `vnd.docker.reference.*`
//! annotations, in-toto statement layers), the image digest unchanged, OCI 1.1 referrers with
//! `--attest-as referrers`. The SPDX predicate is judged by spdx-tools, the provenance by
//! in-toto-attestation (strict protobuf parse of the Statement v1 and the SLSA v1 predicate,
//! and the Statement's own `validate`).

use std::path::Path;
use std::process::Command;

use crate::common::*;
use crate::model::python_with;

/// A hoist.toml over the SBOM test image (as base) that adds one file.
fn build_file(dir: &Path, base: &Path) -> std::path::PathBuf {
    std::fs::create_dir_all(dir.join("app")).unwrap();
    std::fs::write(dir.join("app/hello.txt"), "hello\n").unwrap();
    let toml = format!(
        "base = \"oci:{}:v1\"\nplatforms = [\"linux/amd64\"]\n[labels]\n\"org.example.team\" = \"attest\"\n[[layers]]\nfiles = [{{ source = \"app\", target = \"/app\" }}]\n",
        base.display()
    );
    let f = dir.join("hoist.toml");
    std::fs::write(&f, toml).unwrap();
    f
}

fn json_of(out: std::process::Output, what: &str) -> serde_json::Value {
    serde_json::from_str(&assert_success(what, &out)).unwrap_or_else(|e| panic!("{what}: {e}"))
}

fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    std::fs::read(hoist_testkit::fixtures::blob_path(layout, digest)).unwrap()
}

#[test]
fn buildx_layout_keeps_the_image_digest_and_statements_validate() {
    let test = "attest::buildx_layout_keeps_the_image_digest_and_statements_validate";
    let Some(py) = python_with(test, "in_toto_attestation") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let fx = crate::sbom::fixture(&tmp.path().join("base"));
    let file = build_file(tmp.path(), &fx.layout);
    let store = tmp.path().join("store");
    let s = store.to_str().unwrap();
    let f = file.to_str().unwrap();
    let env = [("SOURCE_DATE_EPOCH", "1700000000")];
    let run = |args: &[&str]| hoist_cmd().envs(env).args(args).output().unwrap();
    assert_success("plain build", &run(&["build", "--store", s, "-f", f, "-t", "app:plain", "--output", "type=image,name=app:plain"]));
    assert_success(
        "attested build",
        &run(&["build", "--store", s, "-f", f, "-t", "app:att", "--sbom", "--provenance=mode=max", "--output", "type=image,name=app:att"]),
    );
    let plain = json_of(run(&["--format", "json", "inspect", &format!("oci:{s}:app:plain")]), "inspect plain");
    let att = json_of(run(&["--format", "json", "inspect", &format!("oci:{s}:app:att")]), "inspect attested");
    let image_digest = plain["digest"].as_str().unwrap().to_string();
    assert_eq!(plain["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    // one platform with attestations becomes an index: [image, attestation manifest]
    let entries = att["manifest"]["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{att}");
    assert_eq!(entries[0]["digest"], image_digest.as_str(), "the image digest is the same with and without attestations");
    assert_eq!(entries[0]["platform"]["architecture"], "amd64");
    let a = &entries[1];
    assert_eq!(a["platform"]["os"], "unknown");
    assert_eq!(a["platform"]["architecture"], "unknown");
    assert_eq!(a["annotations"]["vnd.docker.reference.type"], "attestation-manifest");
    assert_eq!(a["annotations"]["vnd.docker.reference.digest"], image_digest.as_str());
    let am: serde_json::Value = serde_json::from_slice(&blob(&store, a["digest"].as_str().unwrap())).unwrap();
    let layers = am["layers"].as_array().unwrap();
    let types: Vec<&str> = layers.iter().map(|l| l["annotations"]["in-toto.io/predicate-type"].as_str().unwrap()).collect();
    assert_eq!(types, ["https://spdx.dev/Document", "https://slsa.dev/provenance/v1"]);
    assert!(layers.iter().all(|l| l["mediaType"] == "application/vnd.in-toto+json"));
    let config: serde_json::Value = serde_json::from_slice(&blob(&store, am["config"]["digest"].as_str().unwrap())).unwrap();
    assert_eq!(config["architecture"], "unknown");
    assert_eq!(config["rootfs"]["diff_ids"][0], layers[0]["digest"]);

    // the SBOM statement: subject the image, predicate an SPDX document spdx-tools accepts,
    // listing the base image's packages
    let sbom: serde_json::Value = serde_json::from_slice(&blob(&store, layers[0]["digest"].as_str().unwrap())).unwrap();
    assert_eq!(sbom["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(sbom["subject"][0]["digest"]["sha256"], &image_digest["sha256:".len()..]);
    let spdx = tmp.path().join("pred.spdx.json");
    std::fs::write(&spdx, serde_json::to_vec(&sbom["predicate"]).unwrap()).unwrap();
    if python_with(test, "spdx_tools").is_some() {
        assert_success("pyspdxtools -i", &Command::new(py.parent().unwrap().join("pyspdxtools")).arg("-i").arg(&spdx).output().unwrap());
    }
    let names: Vec<&str> = sbom["predicate"]["packages"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"musl") && names.contains(&"six"), "base image packages in the SBOM: {names:?}");

    // the provenance: in-toto Statement v1 with a SLSA v1 predicate (strict parse), subject the
    // image manifest, the base image by digest among the resolved dependencies
    let prov_bytes = blob(&store, layers[1]["digest"].as_str().unwrap());
    let prov_file = tmp.path().join("prov.json");
    std::fs::write(&prov_file, &prov_bytes).unwrap();
    let script = r#"
import json, sys
from google.protobuf import json_format
from in_toto_attestation.v1 import statement_pb2
from in_toto_attestation.v1.statement import Statement
from in_toto_attestation.v1.resource_descriptor import ResourceDescriptor
from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
doc = json.load(open(sys.argv[1]))
st = json_format.Parse(json.dumps(doc), statement_pb2.Statement())
Statement.copy_from_pb(st).validate()
assert st.predicate_type == "https://slsa.dev/provenance/v1", st.predicate_type
prov = json_format.Parse(json.dumps(doc["predicate"]), provenance_pb2.Provenance())
assert prov.build_definition.build_type
assert prov.run_details.builder.id
for d in prov.build_definition.resolved_dependencies:
    ResourceDescriptor.copy_from_pb(d).validate()
print("ok")
"#;
    assert_success("in-toto-attestation judge", &Command::new(&py).arg("-c").arg(script).arg(&prov_file).output().unwrap());
    let prov: serde_json::Value = serde_json::from_slice(&prov_bytes).unwrap();
    assert_eq!(prov["subject"][0]["digest"]["sha256"], &image_digest["sha256:".len()..]);
    let base_digest = ok("base digest", hoist(["--format", "json", "inspect", &format!("oci:{}:v1", fx.layout.display())]));
    let base_digest: serde_json::Value = serde_json::from_str(&base_digest).unwrap();
    let base_hex = &base_digest["digest"].as_str().unwrap()["sha256:".len()..];
    let deps = prov["predicate"]["buildDefinition"]["resolvedDependencies"].as_array().unwrap();
    assert!(deps.iter().any(|d| d["digest"]["sha256"] == base_hex), "base image digest in {deps:?}");
    let bd = &prov["predicate"]["buildDefinition"];
    assert_eq!(bd["externalParameters"]["request"]["args"]["label:org.example.team"], "attest", "mode=max keeps labels");
    assert_eq!(prov["predicate"]["runDetails"]["metadata"]["startedOn"], "2023-11-14T22:13:20Z", "SOURCE_DATE_EPOCH");

    // mode=min leaves the labels out; version=v0.2 writes the old predicate
    assert_success(
        "min build",
        &run(&["build", "--store", s, "-f", f, "-t", "app:min", "--attest", "type=provenance,mode=min,version=v0.2", "--output", "type=image,name=app:min"]),
    );
    let min = json_of(run(&["--format", "json", "inspect", &format!("oci:{s}:app:min")]), "inspect min");
    let am: serde_json::Value =
        serde_json::from_slice(&blob(&store, min["manifest"]["manifests"][1]["digest"].as_str().unwrap())).unwrap();
    assert_eq!(am["layers"][0]["annotations"]["in-toto.io/predicate-type"], "https://slsa.dev/provenance/v0.2");
    let p: serde_json::Value = serde_json::from_slice(&blob(&store, am["layers"][0]["digest"].as_str().unwrap())).unwrap();
    assert!(p["predicate"]["invocation"]["parameters"]["args"].get("label:org.example.team").is_none(), "min: no labels");
    assert_eq!(min["manifest"]["manifests"][0]["digest"], image_digest.as_str());
}

#[test]
fn referrers_placement_leaves_the_root_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let fx = crate::sbom::fixture(&tmp.path().join("base"));
    let file = build_file(tmp.path(), &fx.layout);
    let store = tmp.path().join("store");
    let s = store.to_str().unwrap();
    let out = tmp.path().join("out");
    let dest = format!("type=oci,dest={},tar=false", out.display());
    assert_success(
        "build --attest-as referrers",
        &hoist([
            "build", "--store", s, "-f", file.to_str().unwrap(), "-t", "app:ref", "--attest", "type=sbom,format=cyclonedx",
            "--provenance", "--attest-as", "referrers", "--output", &dest,
        ]),
    );
    let root = json_of(hoist(["--format", "json", "inspect", &format!("oci:{s}:app:ref")]), "inspect");
    assert_eq!(root["mediaType"], "application/vnd.oci.image.manifest.v1+json", "the root is the image itself");
    let refs = json_of(hoist(["--format", "json", "referrers", &format!("oci:{s}@{}", root["digest"].as_str().unwrap())]), "referrers");
    let types: std::collections::BTreeSet<&str> =
        refs["manifests"].as_array().unwrap().iter().map(|m| m["artifactType"].as_str().unwrap()).collect();
    assert_eq!(types, ["https://cyclonedx.org/bom", "https://slsa.dev/provenance/v1"].into_iter().collect());
}
