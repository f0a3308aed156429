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

/// in-toto-attestation's judge of a SLSA v1 provenance statement: a strict protobuf parse of
/// the Statement v1 (unknown fields refused) and of the SLSA v1 predicate, the Statement's and
/// each resolved dependency's own `validate()`.
const PROVENANCE_V1_JUDGE: &str = r#"
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

/// in-toto-attestation's judge of any statement: a strict parse as Statement v1, its
/// `validate()`, and the predicate type given as argv[2].
const STATEMENT_JUDGE: &str = r#"
import json, sys
from google.protobuf import json_format
from in_toto_attestation.v1 import statement_pb2
from in_toto_attestation.v1.statement import Statement
doc = json.load(open(sys.argv[1]))
st = json_format.Parse(json.dumps(doc), statement_pb2.Statement())
Statement.copy_from_pb(st).validate()
assert st.predicate_type == sys.argv[2], st.predicate_type
print("ok")
"#;

#[test]
fn buildx_layout_keeps_the_image_digest_and_statements_validate() {
    let test = "attest::buildx_layout_keeps_the_image_digest_and_statements_validate";
    let Some(py) = python_with(test, "in_toto_attestation") else { return };
    if python_with(test, "spdx_tools").is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let fx = crate::sbom::fixture(&tmp.path().join("base"));
    let file = build_file(tmp.path(), &fx.layout);
    let store = tmp.path().join("store");
    let s = store.to_str().unwrap();
    let f = file.to_str().unwrap();
    let env = [("SOURCE_DATE_EPOCH", "1700000000")];
    let run = |args: &[&str]| hoist_cmd().envs(env).args(args).output().unwrap();
    assert_success(
        "plain build",
        &run(&["build", "--store", s, "-f", f, "-t", "app:plain", "--output", "type=image,name=app:plain"]),
    );
    assert_success(
        "attested build",
        &run(&[
            "build",
            "--store",
            s,
            "-f",
            f,
            "-t",
            "app:att",
            "--sbom",
            "--provenance=mode=max",
            "--output",
            "type=image,name=app:att",
        ]),
    );
    let plain = json_of(run(&["--format", "json", "inspect", &format!("oci:{s}:app:plain")]), "inspect plain");
    let att = json_of(run(&["--format", "json", "inspect", &format!("oci:{s}:app:att")]), "inspect attested");
    let image_digest = plain["digest"].as_str().unwrap().to_string();
    assert_eq!(plain["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    // one platform with attestations becomes an index: [image, attestation manifest]
    let entries = att["manifest"]["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{att}");
    assert_eq!(
        entries[0]["digest"],
        image_digest.as_str(),
        "the image digest is the same with and without attestations"
    );
    assert_eq!(entries[0]["platform"]["architecture"], "amd64");
    let a = &entries[1];
    assert_eq!(a["platform"]["os"], "unknown");
    assert_eq!(a["platform"]["architecture"], "unknown");
    assert_eq!(a["annotations"]["vnd.docker.reference.type"], "attestation-manifest");
    assert_eq!(a["annotations"]["vnd.docker.reference.digest"], image_digest.as_str());
    let am: serde_json::Value = serde_json::from_slice(&blob(&store, a["digest"].as_str().unwrap())).unwrap();
    let layers = am["layers"].as_array().unwrap();
    let types: Vec<&str> =
        layers.iter().map(|l| l["annotations"]["in-toto.io/predicate-type"].as_str().unwrap()).collect();
    assert_eq!(types, ["https://spdx.dev/Document", "https://slsa.dev/provenance/v1"]);
    assert!(layers.iter().all(|l| l["mediaType"] == "application/vnd.in-toto+json"));
    let config: serde_json::Value =
        serde_json::from_slice(&blob(&store, am["config"]["digest"].as_str().unwrap())).unwrap();
    assert_eq!(config["architecture"], "unknown");
    assert_eq!(config["rootfs"]["diff_ids"][0], layers[0]["digest"]);

    // the SBOM statement: subject the image, predicate an SPDX document spdx-tools accepts,
    // listing the base image's packages
    let sbom: serde_json::Value = serde_json::from_slice(&blob(&store, layers[0]["digest"].as_str().unwrap())).unwrap();
    assert_eq!(sbom["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(sbom["subject"][0]["digest"]["sha256"], &image_digest["sha256:".len()..]);
    let spdx = tmp.path().join("pred.spdx.json");
    std::fs::write(&spdx, serde_json::to_vec(&sbom["predicate"]).unwrap()).unwrap();
    assert_success(
        "pyspdxtools -i",
        &Command::new(py.parent().unwrap().join("pyspdxtools")).arg("-i").arg(&spdx).output().unwrap(),
    );
    let sbom_file = tmp.path().join("sbom.json");
    std::fs::write(&sbom_file, blob(&store, layers[0]["digest"].as_str().unwrap())).unwrap();
    assert_success(
        "in-toto-attestation judge (SPDX statement)",
        &Command::new(&py)
            .arg("-c")
            .arg(STATEMENT_JUDGE)
            .arg(&sbom_file)
            .arg("https://spdx.dev/Document")
            .output()
            .unwrap(),
    );
    let names: Vec<&str> =
        sbom["predicate"]["packages"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"musl") && names.contains(&"six"), "base image packages in the SBOM: {names:?}");

    // the provenance: in-toto Statement v1 with a SLSA v1 predicate (strict parse), subject the
    // image manifest, the base image by digest among the resolved dependencies
    let prov_bytes = blob(&store, layers[1]["digest"].as_str().unwrap());
    let prov_file = tmp.path().join("prov.json");
    std::fs::write(&prov_file, &prov_bytes).unwrap();
    let judge = Command::new(&py).arg("-c").arg(PROVENANCE_V1_JUDGE).arg(&prov_file).output().unwrap();
    assert_success("in-toto-attestation judge", &judge);
    let prov: serde_json::Value = serde_json::from_slice(&prov_bytes).unwrap();
    assert_eq!(prov["subject"][0]["digest"]["sha256"], &image_digest["sha256:".len()..]);
    let base_digest =
        ok("base digest", hoist(["--format", "json", "inspect", &format!("oci:{}:v1", fx.layout.display())]));
    let base_digest: serde_json::Value = serde_json::from_str(&base_digest).unwrap();
    let base_hex = &base_digest["digest"].as_str().unwrap()["sha256:".len()..];
    let deps = prov["predicate"]["buildDefinition"]["resolvedDependencies"].as_array().unwrap();
    assert!(deps.iter().any(|d| d["digest"]["sha256"] == base_hex), "base image digest in {deps:?}");
    let bd = &prov["predicate"]["buildDefinition"];
    assert_eq!(
        bd["externalParameters"]["request"]["args"]["label:org.example.team"], "attest",
        "mode=max keeps labels"
    );
    assert_eq!(prov["predicate"]["runDetails"]["metadata"]["startedOn"], "2023-11-14T22:13:20Z", "SOURCE_DATE_EPOCH");

    // mode=min leaves the labels out; version=v0.2 writes the old predicate
    assert_success(
        "min build",
        &run(&[
            "build",
            "--store",
            s,
            "-f",
            f,
            "-t",
            "app:min",
            "--attest",
            "type=provenance,mode=min,version=v0.2",
            "--output",
            "type=image,name=app:min",
        ]),
    );
    let min = json_of(run(&["--format", "json", "inspect", &format!("oci:{s}:app:min")]), "inspect min");
    let am: serde_json::Value =
        serde_json::from_slice(&blob(&store, min["manifest"]["manifests"][1]["digest"].as_str().unwrap())).unwrap();
    assert_eq!(am["layers"][0]["annotations"]["in-toto.io/predicate-type"], "https://slsa.dev/provenance/v0.2");
    let p_bytes = blob(&store, am["layers"][0]["digest"].as_str().unwrap());
    let p: serde_json::Value = serde_json::from_slice(&p_bytes).unwrap();
    assert!(
        p["predicate"]["invocation"]["parameters"]["args"].get("label:org.example.team").is_none(),
        "min: no labels"
    );
    assert_eq!(
        p["predicate"]["invocation"]["parameters"]["args"]["platform"], "linux/amd64",
        "min keeps the platforms"
    );
    assert!(
        p["predicate"]["materials"].as_array().unwrap().iter().any(|m| m["digest"]["sha256"] == base_hex),
        "v0.2 materials: {p}"
    );
    std::fs::write(&prov_file, &p_bytes).unwrap();
    assert_success(
        "in-toto-attestation judge (v0.2 predicate in a Statement v1)",
        &Command::new(&py)
            .arg("-c")
            .arg(STATEMENT_JUDGE)
            .arg(&prov_file)
            .arg("https://slsa.dev/provenance/v0.2")
            .output()
            .unwrap(),
    );
    assert_eq!(min["manifest"]["manifests"][0]["digest"], image_digest.as_str());
}

#[test]
fn referrers_placement_leaves_the_root_alone() {
    let test = "attest::referrers_placement_leaves_the_root_alone";
    let Some(py) = python_with(test, "cyclonedx.validation.json") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let fx = crate::sbom::fixture(&tmp.path().join("base"));
    let file = build_file(tmp.path(), &fx.layout);
    let store = tmp.path().join("store");
    let s = store.to_str().unwrap();
    let f = file.to_str().unwrap();
    let out = tmp.path().join("out");
    let dest = format!("type=oci,dest={},tar=false,name=app:ref", out.display());
    assert_success("plain build", &hoist(["build", "--store", s, "-f", f, "-t", "app:plain"]));
    assert_success(
        "build --attest-as referrers",
        &hoist([
            "build",
            "--store",
            s,
            "-f",
            f,
            "-t",
            "app:ref",
            "--attest",
            "type=sbom,format=cyclonedx",
            "--provenance",
            "--attest-as",
            "referrers",
            "--output",
            &dest,
        ]),
    );
    let plain = json_of(hoist(["--format", "json", "inspect", &format!("oci:{s}:app:plain")]), "inspect plain");
    let root = json_of(hoist(["--format", "json", "inspect", &format!("oci:{s}:app:ref")]), "inspect");
    assert_eq!(root["mediaType"], "application/vnd.oci.image.manifest.v1+json", "the root is the image itself");
    assert_eq!(root["digest"], plain["digest"], "the image digest is the same with and without attestations");
    let digest = root["digest"].as_str().unwrap();
    // in the store and in the output the build delivered to, the referrers of the image
    for layout in [&store, &out] {
        let refs = json_of(
            hoist(["--format", "json", "referrers", &format!("oci:{}@{digest}", layout.display())]),
            "referrers",
        );
        let list = refs["manifests"].as_array().unwrap();
        let types: std::collections::BTreeSet<&str> =
            list.iter().map(|m| m["artifactType"].as_str().unwrap()).collect();
        assert_eq!(
            types,
            ["https://cyclonedx.org/bom", "https://slsa.dev/provenance/v1"].into_iter().collect(),
            "{}",
            layout.display()
        );
        for m in list {
            let man: serde_json::Value = serde_json::from_slice(&blob(layout, m["digest"].as_str().unwrap())).unwrap();
            assert_eq!(man["subject"]["digest"], digest);
            assert_eq!(man["config"]["mediaType"], "application/vnd.oci.empty.v1+json");
            let layer = &man["layers"][0];
            assert_eq!(layer["mediaType"], "application/vnd.in-toto+json");
            assert_eq!(layer["annotations"]["in-toto.io/predicate-type"], man["artifactType"]);
            if man["artifactType"] == "https://cyclonedx.org/bom" {
                let st: serde_json::Value =
                    serde_json::from_slice(&blob(layout, layer["digest"].as_str().unwrap())).unwrap();
                assert_eq!(st["subject"][0]["digest"]["sha256"], &digest["sha256:".len()..]);
                let bom = tmp.path().join("bom.json");
                std::fs::write(&bom, serde_json::to_vec(&st["predicate"]).unwrap()).unwrap();
                let script = "import sys\nfrom cyclonedx.validation.json import JsonStrictValidator\nfrom cyclonedx.schema import SchemaVersion\nerr = JsonStrictValidator(SchemaVersion.V1_6).validate_str(open(sys.argv[1]).read())\nif err: print(err); sys.exit(1)\n";
                assert_success(
                    "cyclonedx JsonStrictValidator 1.6",
                    &Command::new(&py).args(["-c", script]).arg(&bom).output().unwrap(),
                );
                let names: Vec<&str> = st["predicate"]["components"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c["name"].as_str().unwrap())
                    .collect();
                assert!(names.contains(&"musl"), "{names:?}");
            }
        }
    }
}

/// A Dockerfile build (FROM the SBOM test image, COPY from the context, a build arg): the
/// provenance names the Dockerfile frontend, the base image by digest and the context, build
/// args only in mode=max; the image digest is the same as without attestations.
#[test]
fn dockerfile_build_attests_base_context_and_args() {
    let test = "attest::dockerfile_build_attests_base_context_and_args";
    let Some(py) = python_with(test, "in_toto_attestation") else { return };
    let tmp = tempfile::tempdir().unwrap();
    // the base: a small image hoist builds from a build file
    let base_store = tmp.path().join("base");
    std::fs::create_dir_all(tmp.path().join("etc")).unwrap();
    std::fs::write(tmp.path().join("etc/motd"), "base\n").unwrap();
    let base_file = tmp.path().join("base.toml");
    std::fs::write(
        &base_file,
        "platforms = [\"linux/amd64\"]\n[[layers]]\nfiles = [{ source = \"etc\", target = \"/etc\" }]\n",
    )
    .unwrap();
    assert_success(
        "base build",
        &hoist(["build", "--store", base_store.to_str().unwrap(), "-f", base_file.to_str().unwrap(), "-t", "base:v1"]),
    );
    let base_ref = format!("oci:{}:base:v1", base_store.display());
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("hello.txt"), "hello\n").unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("ARG BASE={base_ref}\nFROM $BASE\nARG GREETING=hi\nCOPY hello.txt /hello.txt\n"),
    )
    .unwrap();
    let store = tmp.path().join("store");
    let s = store.to_str().unwrap();
    let c = ctx.to_str().unwrap();
    let build = |tag: &str, extra: &[&str]| {
        let mut a = vec!["build", "--store", s, "-t", tag, "--build-arg", "GREETING=howdy"];
        a.extend(extra);
        a.push(c);
        assert_success(&format!("build {tag}"), &hoist(&a));
        json_of(hoist(["--format", "json", "inspect", &format!("oci:{s}:{tag}")]), "inspect")
    };
    let plain = build("df:plain", &[]);
    let max = build("df:max", &["--sbom=true", "--provenance=mode=max"]);
    let min = build("df:min", &["--provenance=true"]);
    let off = build("df:off", &["--sbom=false", "--provenance=false"]);
    assert_eq!(off["digest"], plain["digest"], "--sbom=false --provenance=false: no attestations");
    let base = json_of(hoist(["--format", "json", "inspect", &base_ref]), "inspect base");
    let base_hex = &base["digest"].as_str().unwrap()["sha256:".len()..];
    for (mode, root) in [("max", &max), ("min", &min)] {
        let entries = root["manifest"]["manifests"].as_array().unwrap();
        assert_eq!(
            entries[0]["digest"], plain["digest"],
            "{mode}: the image digest is the same with and without attestations"
        );
        assert_eq!(entries[1]["annotations"]["vnd.docker.reference.digest"], plain["digest"]);
        let am: serde_json::Value =
            serde_json::from_slice(&blob(&store, entries[1]["digest"].as_str().unwrap())).unwrap();
        let prov_layer = am["layers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["annotations"]["in-toto.io/predicate-type"] == "https://slsa.dev/provenance/v1")
            .unwrap();
        let bytes = blob(&store, prov_layer["digest"].as_str().unwrap());
        let file = tmp.path().join(format!("prov-{mode}.json"));
        std::fs::write(&file, &bytes).unwrap();
        assert_success(
            "in-toto-attestation judge",
            &Command::new(&py).arg("-c").arg(PROVENANCE_V1_JUDGE).arg(&file).output().unwrap(),
        );
        let prov: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let bd = &prov["predicate"]["buildDefinition"];
        assert_eq!(bd["externalParameters"]["request"]["frontend"], "dockerfile.v0");
        let dockerfile_hex =
            ok("sha256sum", std::process::Command::new("sha256sum").arg(ctx.join("Dockerfile")).output().unwrap());
        assert_eq!(
            bd["externalParameters"]["configSource"]["digest"]["sha256"],
            dockerfile_hex.split_whitespace().next().unwrap()
        );
        let deps = bd["resolvedDependencies"].as_array().unwrap();
        assert!(
            deps.iter().any(|d| d["digest"]["sha256"] == base_hex && d["name"] == base_ref.as_str()),
            "{mode}: base image in {deps:?}"
        );
        assert!(deps.iter().any(|d| d["name"] == "context"), "{mode}: the build context in {deps:?}");
        assert_eq!(
            bd["externalParameters"]["request"]["args"]["platform"], "linux/amd64",
            "{mode}: the platform built"
        );
        let arg = bd["externalParameters"]["request"]["args"].get("build-arg:GREETING");
        match mode {
            "max" => assert_eq!(arg, Some(&serde_json::json!("howdy"))),
            _ => assert!(arg.is_none(), "min leaves build args out: {bd}"),
        }
    }
    // the context digest follows the context's content
    std::fs::write(ctx.join("hello.txt"), "changed\n").unwrap();
    let again = build("df:again", &["--provenance"]);
    let ctx_of = |root: &serde_json::Value| {
        let am: serde_json::Value =
            serde_json::from_slice(&blob(&store, root["manifest"]["manifests"][1]["digest"].as_str().unwrap()))
                .unwrap();
        let p: serde_json::Value =
            serde_json::from_slice(&blob(&store, am["layers"][0]["digest"].as_str().unwrap())).unwrap();
        p["predicate"]["buildDefinition"]["resolvedDependencies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == "context")
            .unwrap()["digest"]
            .clone()
    };
    assert_ne!(ctx_of(&again), ctx_of(&min), "a changed context file changes the context digest");
}

/// buildx's layout round-trips: `index create` from two one-platform builds keeps both
/// attestation manifests; `--platform linux/amd64` (index create, copy) keeps amd64's image
/// and its attestation manifest only; a docker-archive takes the image without it.
#[test]
fn index_create_and_platform_filters_keep_attestations_with_their_images() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    std::fs::create_dir_all(t.join("app")).unwrap();
    std::fs::write(t.join("app/hello.txt"), "hello\n").unwrap();
    let store = t.join("store");
    let s = store.to_str().unwrap();
    let mut images = std::collections::BTreeMap::new();
    for arch in ["amd64", "arm64"] {
        let f = t.join(format!("{arch}.toml"));
        std::fs::write(
            &f,
            format!(
                "platforms = [\"linux/{arch}\"]\n[[layers]]\nfiles = [{{ source = \"app\", target = \"/app\" }}]\n"
            ),
        )
        .unwrap();
        assert_success(
            "build",
            &hoist([
                "build",
                "--store",
                s,
                "-f",
                f.to_str().unwrap(),
                "-t",
                &format!("app:{arch}"),
                "--sbom",
                "--provenance",
            ]),
        );
        let root = json_of(hoist(["--format", "json", "inspect", &format!("oci:{s}:app:{arch}")]), "inspect");
        images.insert(arch, root["manifest"]["manifests"][0]["digest"].as_str().unwrap().to_string());
    }
    let merged = t.join("merged");
    let m = merged.to_str().unwrap();
    assert_success(
        "index create",
        &hoist([
            "index",
            "create",
            "--tag",
            &format!("oci:{m}:all"),
            &format!("oci:{s}:app:amd64"),
            &format!("oci:{s}:app:arm64"),
        ]),
    );
    // (image digest, attested image digest or "") of each entry, read from the layout's files
    let entries = |layout: &Path, tag: &str| -> Vec<(String, String)> {
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
        let root = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["annotations"]["org.opencontainers.image.ref.name"] == tag)
            .unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&blob(layout, root["digest"].as_str().unwrap())).unwrap();
        match doc["manifests"].as_array() {
            None => vec![(root["digest"].as_str().unwrap().to_string(), String::new())],
            Some(list) => list
                .iter()
                .map(|d| {
                    let att = d["annotations"]["vnd.docker.reference.digest"].as_str().unwrap_or("").to_string();
                    if !att.is_empty() {
                        assert_eq!(d["annotations"]["vnd.docker.reference.type"], "attestation-manifest");
                        assert_eq!(d["platform"]["os"], "unknown");
                        // the attestation manifest and its statements travelled with it
                        let am: serde_json::Value =
                            serde_json::from_slice(&blob(layout, d["digest"].as_str().unwrap())).unwrap();
                        for l in am["layers"].as_array().unwrap() {
                            assert!(!blob(layout, l["digest"].as_str().unwrap()).is_empty());
                        }
                    }
                    (d["digest"].as_str().unwrap().to_string(), att)
                })
                .collect(),
        }
    };
    let all = entries(&merged, "all");
    assert_eq!(all.len(), 4, "two images and two attestation manifests: {all:?}");
    for img in images.values() {
        assert!(all.iter().any(|(d, a)| d == img && a.is_empty()), "image {img} in {all:?}");
        assert!(all.iter().any(|(_, a)| a == img), "attestation of {img} in {all:?}");
    }
    let amd_only = |got: &[(String, String)]| {
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got.iter().any(|(d, a)| *d == images["amd64"] && a.is_empty()), "{got:?}");
        assert!(got.iter().any(|(_, a)| *a == images["amd64"]), "{got:?}");
    };
    assert_success(
        "index create --platform",
        &hoist([
            "--platform",
            "linux/amd64",
            "index",
            "create",
            "--tag",
            &format!("oci:{m}:amd"),
            &format!("oci:{m}:all"),
        ]),
    );
    amd_only(&entries(&merged, "amd"));
    let copied = t.join("copied");
    assert_success(
        "copy --platform",
        &hoist([
            "--platform",
            "linux/amd64",
            "copy",
            &format!("oci:{m}:all"),
            &format!("oci:{}:amd", copied.display()),
        ]),
    );
    amd_only(&entries(&copied, "amd"));
    // several platforms: all kept, the same index
    assert_success(
        "copy --platform both",
        &hoist([
            "--platform",
            "linux/amd64,linux/arm64",
            "copy",
            &format!("oci:{m}:all"),
            &format!("oci:{}:both", copied.display()),
        ]),
    );
    assert_eq!(entries(&copied, "both"), all);
    // a docker-archive holds images only: the amd64 image, no attestation manifest
    let tar = t.join("amd.tar");
    assert_success(
        "copy to docker-archive",
        &hoist([
            "--platform",
            "linux/amd64",
            "copy",
            &format!("oci:{m}:all"),
            &format!("docker-archive:{}:app:amd", tar.display()),
        ]),
    );
    let mut a = tar::Archive::new(std::fs::File::open(&tar).unwrap());
    let manifest =
        a.entries().unwrap().map(|e| e.unwrap()).find(|e| e.path().unwrap().to_str() == Some("manifest.json")).map(
            |mut e| {
                let mut v = Vec::new();
                std::io::Read::read_to_end(&mut e, &mut v).unwrap();
                v
            },
        );
    let manifest: serde_json::Value = serde_json::from_slice(&manifest.expect("manifest.json")).unwrap();
    assert_eq!(manifest.as_array().unwrap().len(), 1, "{manifest}");
}

/// `hoist sbom --attach`: the SBOM goes to the registry as an OCI 1.1 referrer of the image
/// manifest; the test registry (distribution 2.8) has no referrers API, so it is listed in the
/// `sha256-<hex>` fallback index, read here over plain HTTP; the document is judged by
/// spdx-tools. Attaching again writes nothing new; with `--key` the same SBOM is also a signed
/// in-toto attestation that `verify-attestation --type spdxjson` accepts.
#[test]
fn sbom_attach_pushes_a_referrer_the_tag_fallback_lists() {
    let test = "attest::sbom_attach_pushes_a_referrer_the_tag_fallback_lists";
    let Some(py) = python_with(test, "spdx_tools") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let fx = crate::sbom::fixture(&tmp.path().join("base"));
    let reg = TestRegistry::start(RegistryOpts::plain());
    let reference = format!("{}/app:v1", reg.host());
    ok("push image", hoist(["copy", &format!("oci:{}:v1", fx.layout.display()), &reference]));
    let image = json_of(hoist(["--format", "json", "inspect", &reference]), "inspect");
    let digest = image["digest"].as_str().unwrap().to_string();
    let attach = || {
        let out = hoist_cmd()
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .args(["--format", "json", "sbom", "--attach", &reference])
            .output()
            .unwrap();
        json_of(out, "sbom --attach")
    };
    let first = attach();
    assert_eq!(first["referrer"]["subject"], digest.as_str());
    assert_eq!(first["referrer"]["added"], true);
    let get = |path: &str, accept: &str| -> Vec<u8> {
        let r = reqwest::blocking::Client::new()
            .get(format!("{}/v2/app/{path}", reg.url()))
            .header("Accept", accept)
            .send()
            .unwrap();
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.bytes().unwrap().to_vec()
    };
    let fallback = format!("manifests/{}", digest.replace(':', "-"));
    let index: serde_json::Value =
        serde_json::from_slice(&get(&fallback, "application/vnd.oci.image.index.v1+json")).unwrap();
    let list = index["manifests"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{index}");
    assert_eq!(list[0]["artifactType"], "application/spdx+json");
    assert_eq!(list[0]["digest"], first["referrer"]["manifest"]);
    let m: serde_json::Value = serde_json::from_slice(&get(
        &format!("manifests/{}", list[0]["digest"].as_str().unwrap()),
        "application/vnd.oci.image.manifest.v1+json",
    ))
    .unwrap();
    assert_eq!(m["subject"]["digest"], digest.as_str());
    assert_eq!(m["artifactType"], "application/spdx+json");
    assert_eq!(m["config"]["mediaType"], "application/vnd.oci.empty.v1+json");
    assert_eq!(m["layers"][0]["mediaType"], "application/spdx+json");
    let doc = get(&format!("blobs/{}", m["layers"][0]["digest"].as_str().unwrap()), "*/*");
    let file = tmp.path().join("attached.spdx.json");
    std::fs::write(&file, &doc).unwrap();
    assert_success(
        "pyspdxtools -i",
        &Command::new(py.parent().unwrap().join("pyspdxtools")).arg("-i").arg(&file).output().unwrap(),
    );
    let spdx: serde_json::Value = serde_json::from_slice(&doc).unwrap();
    assert!(spdx["packages"].as_array().unwrap().iter().any(|p| p["name"] == "musl"));
    // hoist's own referrers command finds it too; attaching again adds nothing
    let refs = json_of(hoist(["--format", "json", "referrers", &reference]), "referrers");
    assert_eq!(refs["manifests"].as_array().unwrap().len(), 1, "{refs}");
    let again = attach();
    assert_eq!(again["referrer"]["added"], false);
    assert_eq!(again["referrer"]["manifest"], first["referrer"]["manifest"]);
    // the signing hook: --key signs the same SBOM as an in-toto attestation (a bundle referrer)
    let prefix = tmp.path().join("k");
    let pw = |args: &[&str]| hoist_cmd().env("COSIGN_PASSWORD", "pw").args(args).output().unwrap();
    ok("key generate", pw(&["key", "generate", "--out", prefix.to_str().unwrap()]));
    let key = tmp.path().join("k.key");
    let signed = json_of(
        pw(&["--format", "json", "sbom", "--attach", "--key", key.to_str().unwrap(), &reference]),
        "sbom --attach --key",
    );
    assert_eq!(signed["attestations"][0]["format"], "bundle", "{signed}");
    let verified = json_of(
        hoist([
            "--format",
            "json",
            "verify-attestation",
            "--key",
            tmp.path().join("k.pub").to_str().unwrap(),
            "--type",
            "spdxjson",
            &reference,
        ]),
        "verify-attestation",
    );
    let ok_sigs: Vec<&serde_json::Value> =
        verified["signatures"].as_array().unwrap().iter().filter(|s| s["verified"] == true).collect();
    assert_eq!(ok_sigs.len(), 1, "{verified}");
    assert_eq!(ok_sigs[0]["statement"]["predicateType"], "https://spdx.dev/Document");
    assert_eq!(ok_sigs[0]["statement"]["subject"][0]["digest"]["sha256"], &digest["sha256:".len()..]);
}

/// The DSSE spec's check, written from it with python `cryptography`: the signature of every
/// signer over PAE(payloadType, payload) verifies with the public key (ECDSA P-256, SHA-256);
/// the payload is written to argv[3].
const DSSE_JUDGE: &str = r#"
import json, sys, base64
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives import hashes
env = json.load(open(sys.argv[1]))
pub = load_pem_public_key(open(sys.argv[2], "rb").read())
t = env["payloadType"].encode()
p = base64.b64decode(env["payload"])
pae = b"DSSEv1 %d %s %d %s" % (len(t), t, len(p), p)
assert env["payloadType"] == "application/vnd.in-toto+json", env["payloadType"]
assert env["signatures"]
for s in env["signatures"]:
    pub.verify(base64.b64decode(s["sig"]), pae, ec.ECDSA(hashes.SHA256()))
open(sys.argv[3], "wb").write(p)
print("ok")
"#;

/// `--attest-key`: each statement is a DSSE envelope signed with the key (layer media type
/// `application/vnd.dsse.envelope.v1+json`, the predicate type annotation kept), verified by
/// python `cryptography` over the DSSE PAE; the payload is the in-toto statement about the
/// image. The image digest is still the one of the plain build.
#[test]
fn attest_key_signs_statements_as_dsse_envelopes() {
    let test = "attest::attest_key_signs_statements_as_dsse_envelopes";
    let Some(py) = python_with(test, "in_toto_attestation") else { return };
    if python_with(test, "cryptography").is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    std::fs::create_dir_all(t.join("app")).unwrap();
    std::fs::write(t.join("app/hello.txt"), "hello\n").unwrap();
    let f = t.join("hoist.toml");
    std::fs::write(
        &f,
        "platforms = [\"linux/amd64\"]\n[[layers]]\nfiles = [{ source = \"app\", target = \"/app\" }]\n",
    )
    .unwrap();
    let store = t.join("store");
    let s = store.to_str().unwrap();
    let pw = |args: &[&str]| hoist_cmd().env("COSIGN_PASSWORD", "pw").args(args).output().unwrap();
    ok("key generate", pw(&["key", "generate", "--out", t.join("k").to_str().unwrap()]));
    let key = t.join("k.key");
    assert_success("plain build", &hoist(["build", "--store", s, "-f", f.to_str().unwrap(), "-t", "app:plain"]));
    assert_success(
        "signed build",
        &pw(&[
            "build",
            "--store",
            s,
            "-f",
            f.to_str().unwrap(),
            "-t",
            "app:signed",
            "--sbom",
            "--provenance",
            "--attest-key",
            key.to_str().unwrap(),
        ]),
    );
    let plain = json_of(hoist(["--format", "json", "inspect", &format!("oci:{s}:app:plain")]), "inspect plain");
    let signed = json_of(hoist(["--format", "json", "inspect", &format!("oci:{s}:app:signed")]), "inspect signed");
    let entries = signed["manifest"]["manifests"].as_array().unwrap();
    assert_eq!(entries[0]["digest"], plain["digest"]);
    let am: serde_json::Value = serde_json::from_slice(&blob(&store, entries[1]["digest"].as_str().unwrap())).unwrap();
    let layers = am["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2);
    for l in layers {
        assert_eq!(l["mediaType"], "application/vnd.dsse.envelope.v1+json");
        let ptype = l["annotations"]["in-toto.io/predicate-type"].as_str().unwrap();
        let env = t.join("env.json");
        std::fs::write(&env, blob(&store, l["digest"].as_str().unwrap())).unwrap();
        let payload = t.join("payload.json");
        assert_success(
            "DSSE signature (python cryptography)",
            &Command::new(&py).arg("-c").arg(DSSE_JUDGE).arg(&env).arg(t.join("k.pub")).arg(&payload).output().unwrap(),
        );
        assert_success(
            "in-toto-attestation judge",
            &Command::new(&py).arg("-c").arg(STATEMENT_JUDGE).arg(&payload).arg(ptype).output().unwrap(),
        );
        let st: serde_json::Value = serde_json::from_slice(&std::fs::read(&payload).unwrap()).unwrap();
        assert_eq!(st["subject"][0]["digest"]["sha256"], &plain["digest"].as_str().unwrap()["sha256:".len()..]);
    }
    // a wrong password fails before anything is built
    let bad = hoist_cmd()
        .env("COSIGN_PASSWORD", "wrong")
        .args([
            "build",
            "--store",
            s,
            "-f",
            f.to_str().unwrap(),
            "-t",
            "app:bad",
            "--sbom",
            "--attest-key",
            key.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        hoist(["inspect", &format!("oci:{s}:app:bad")]).status.code() != Some(0),
        "nothing tagged after a refused key"
    );
}

/// `mode=max` (BuildKit's `scan-context` and `scan-stage`) also scans the build context and
/// the other stages: the attestation manifest holds the image's SPDX statement first, then
/// one of the context (packages of the context's own files, purpose SOURCE) and one per other
/// stage (the stage's filesystem); spdx-tools and in-toto-attestation accept each. Each scan
/// can be asked for alone (`--attest type=sbom,scan-stage=true`, BuildKit's build arg
/// `BUILDKIT_SBOM_SCAN_CONTEXT=true`), and min mode scans the image only. The image digest
/// stays the same.
#[test]
fn mode_max_sboms_cover_the_build_context_and_the_other_stages() {
    let test = "attest::mode_max_sboms_cover_the_build_context_and_the_other_stages";
    let Some(py) = python_with(test, "in_toto_attestation") else { return };
    if python_with(test, "spdx_tools").is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let fx = crate::sbom::fixture(&tmp.path().join("base"));
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir_all(ctx.join("node_modules/ctx-pkg")).unwrap();
    std::fs::create_dir_all(ctx.join("vendor/site-packages/ctxlib-1.4.dist-info")).unwrap();
    std::fs::write(ctx.join("hello.txt"), "hello\n").unwrap();
    std::fs::write(
        ctx.join("node_modules/ctx-pkg/package.json"),
        r#"{"name": "ctx-pkg", "version": "2.0.1", "license": "MIT"}"#,
    )
    .unwrap();
    std::fs::write(
        ctx.join("vendor/site-packages/ctxlib-1.4.dist-info/METADATA"),
        "Metadata-Version: 2.1\nName: ctxlib\nVersion: 1.4\nLicense: BSD-3-Clause\n",
    )
    .unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM oci:{}:v1 AS build\nCOPY hello.txt /hello.txt\nFROM scratch\nCOPY --from=build /hello.txt /hello.txt\n",
            fx.layout.display()
        ),
    )
    .unwrap();
    let store = tmp.path().join("store");
    let (s, c) = (store.to_str().unwrap(), ctx.to_str().unwrap());
    let build = |tag: &str, extra: &[&str]| {
        let mut a = vec!["build", "--store", s, "-t", tag];
        a.extend(extra);
        a.push(c);
        assert_success(&format!("build {tag}"), &hoist(&a));
        json_of(hoist(["--format", "json", "inspect", &format!("oci:{s}:{tag}")]), "inspect")
    };
    // (scope annotation, statement) of each SPDX layer of the attestation manifest
    let sboms = |root: &serde_json::Value| -> Vec<(String, serde_json::Value)> {
        let entries = root["manifest"]["manifests"].as_array().unwrap();
        let am: serde_json::Value =
            serde_json::from_slice(&blob(&store, entries[1]["digest"].as_str().unwrap())).unwrap();
        am["layers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["annotations"]["in-toto.io/predicate-type"] == "https://spdx.dev/Document")
            .map(|l| {
                let scope = l["annotations"]["dev.hoist.sbom.scope"].as_str().unwrap_or("image").to_string();
                (scope, serde_json::from_slice(&blob(&store, l["digest"].as_str().unwrap())).unwrap())
            })
            .collect()
    };
    let names = |st: &serde_json::Value| -> Vec<String> {
        st["predicate"]["packages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_string())
            .collect()
    };
    let plain = build("df:plain", &[]);
    let max = build("df:max", &["--sbom", "--provenance=mode=max"]);
    assert_eq!(max["manifest"]["manifests"][0]["digest"], plain["digest"], "the image digest changed");
    let got = sboms(&max);
    let scopes: Vec<&str> = got.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(
        scopes,
        ["image", "context", "stage:build"],
        "the image's SBOM first, then the context's and the stage's"
    );
    for (i, (scope, st)) in got.iter().enumerate() {
        assert_eq!(st["subject"][0]["digest"]["sha256"], &plain["digest"].as_str().unwrap()["sha256:".len()..]);
        let f = tmp.path().join(format!("sbom-{i}.json"));
        std::fs::write(&f, serde_json::to_vec(st).unwrap()).unwrap();
        assert_success(
            &format!("in-toto-attestation judge ({scope})"),
            &Command::new(&py)
                .arg("-c")
                .arg(STATEMENT_JUDGE)
                .arg(&f)
                .arg("https://spdx.dev/Document")
                .output()
                .unwrap(),
        );
        let spdx = tmp.path().join(format!("sbom-{i}.spdx.json"));
        std::fs::write(&spdx, serde_json::to_vec(&st["predicate"]).unwrap()).unwrap();
        assert_success(
            &format!("pyspdxtools -i ({scope})"),
            &Command::new(py.parent().unwrap().join("pyspdxtools")).arg("-i").arg(&spdx).output().unwrap(),
        );
    }
    // the image (scratch and one file) has no packages; the stage has the base image's
    let image = names(&got[0].1);
    assert!(!image.iter().any(|n| n == "musl" || n == "ctx-pkg"), "{image:?}");
    let stage = names(&got[2].1);
    for (name, _, _) in &fx.others {
        assert!(stage.iter().any(|n| n == name), "{name} missing from the stage's SBOM: {stage:?}");
    }
    assert!(!stage.iter().any(|n| n == "ctx-pkg"), "{stage:?}");
    // the context: its own package files, as sources
    let context = &got[1].1["predicate"];
    let pkgs = context["packages"].as_array().unwrap();
    let purl = |name: &str| {
        pkgs.iter().find(|p| p["name"] == name).and_then(|p| {
            p["externalRefs"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["referenceType"] == "purl")
                .map(|r| r["referenceLocator"].clone())
        })
    };
    assert_eq!(purl("ctx-pkg"), Some("pkg:npm/ctx-pkg@2.0.1".into()), "{context}");
    assert_eq!(purl("ctxlib"), Some("pkg:pypi/ctxlib@1.4".into()), "{context}");
    assert!(!pkgs.iter().any(|p| p["name"] == "musl"), "{context}");
    assert_eq!(pkgs[0]["primaryPackagePurpose"], "SOURCE", "{context}");
    // min mode: the image only; each scan alone on request
    let only = |root: &serde_json::Value| sboms(root).into_iter().map(|(s, _)| s).collect::<Vec<_>>();
    assert_eq!(only(&build("df:min", &["--sbom", "--provenance"])), ["image"]);
    assert_eq!(only(&build("df:stage", &["--attest", "type=sbom,scan-stage=true"])), ["image", "stage:build"]);
    assert_eq!(
        only(&build("df:ctx", &["--sbom", "--build-arg", "BUILDKIT_SBOM_SCAN_CONTEXT=true"])),
        ["image", "context"]
    );
    assert_eq!(
        only(&build("df:noctx", &["--sbom", "--provenance=mode=max", "--attest", "type=sbom,scan-context=false"])),
        ["image", "stage:build"]
    );
}
