//! Round trips through archives: registry → oci-archive → registry and registry →
//! docker-archive → registry keep manifest digests; a docker-archive written by another
//! tool (no index.json, uncompressed layers) cannot: the manifest is re-made and the layers
//! are the uncompressed tars, while the config is kept byte for byte.

use crate::common;

use std::path::PathBuf;

use common::*;

fn sample() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/sample-layout").display().to_string()
}

fn digest_of(reg: &TestRegistry, reference: &str) -> String {
    let out = hoist(["inspect", "--format", "json", &format!("{}/{reference}", reg.host())]);
    let v: serde_json::Value = serde_json::from_str(&assert_success("inspect", &out)).unwrap();
    v["digest"].as_str().unwrap().to_string()
}

#[test]
fn registry_archive_registry_keeps_digests() {
    let reg = TestRegistry::plain();
    let t = tempfile::tempdir().unwrap();
    assert_success("push", &hoist(["push", &sample(), &format!("{}/rt/src", reg.host())]));
    let index_digest = digest_of(&reg, "rt/src:multi");
    let artifact_digest = digest_of(&reg, "rt/src:artifact");

    // oci-archive: index and artifact both survive unchanged.
    for tag in ["multi", "artifact"] {
        let tar = t.path().join(format!("{tag}.tar"));
        assert_success(
            "to oci-archive",
            &hoist(["copy", &format!("{}/rt/src:{tag}", reg.host()), &format!("oci-archive:{}", tar.display())]),
        );
        assert_success(
            "from oci-archive",
            &hoist(["copy", &format!("oci-archive:{}", tar.display()), &format!("{}/rt/oci:{tag}", reg.host())]),
        );
    }
    assert_eq!(digest_of(&reg, "rt/oci:multi"), index_digest);
    assert_eq!(digest_of(&reg, "rt/oci:artifact"), artifact_digest);

    // docker-archive holds one image: the amd64 manifest keeps its digest (hoist writes
    // index.json beside manifest.json and reads it back first).
    let docker_tar = t.path().join("img.tar");
    assert_success(
        "to docker-archive",
        &hoist([
            "--platform",
            "linux/amd64",
            "copy",
            &format!("{}/rt/src:multi", reg.host()),
            &format!("docker-archive:{}:rt/img:v1", docker_tar.display()),
        ]),
    );
    assert_success(
        "from docker-archive",
        &hoist(["copy", &format!("docker-archive:{}", docker_tar.display()), &format!("{}/rt/docker:v1", reg.host())]),
    );
    let idx: serde_json::Value =
        serde_json::from_slice(&hoist(["inspect", "--raw", &format!("{}/rt/src:multi", reg.host())]).stdout).unwrap();
    let amd64 = idx["manifests"].as_array().unwrap().iter().find(|m| m["platform"]["architecture"] == "amd64").unwrap();
    assert_eq!(digest_of(&reg, "rt/docker:v1"), amd64["digest"].as_str().unwrap());

    // An artifact has no docker-archive form: clear error, no file.
    let bad = t.path().join("artifact-docker.tar");
    let out = hoist(["copy", &format!("{}/rt/src:artifact", reg.host()), &format!("docker-archive:{}", bad.display())]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("application/vnd.hoist.sample.v1"));
    assert!(!bad.exists());

    // A docker-archive made by skopeo has only manifest.json: hoist synthesizes a Docker
    // schema 2 manifest, so the manifest digest changes, while config and layer digests
    // (the content) stay the same.
    hoist_testkit::require!("skopeo");
    let sk = t.path().join("skopeo.tar");
    let out = skopeo([
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{}@{}", format_args!("{}/rt/src", reg.host()), amd64["digest"].as_str().unwrap()),
        &format!("docker-archive:{}:rt/sk:v1", sk.display()),
    ]);
    assert_success("skopeo copy to docker-archive", &out);
    assert_success(
        "from skopeo docker-archive",
        &hoist(["copy", &format!("docker-archive:{}", sk.display()), &format!("{}/rt/sk:v1", reg.host())]),
    );
    let converted: serde_json::Value =
        serde_json::from_slice(&hoist(["inspect", "--raw", &format!("{}/rt/sk:v1", reg.host())]).stdout).unwrap();
    let original: serde_json::Value =
        serde_json::from_slice(&hoist(["inspect", "--raw", &format!("{}/rt/docker:v1", reg.host())]).stdout).unwrap();
    assert_ne!(digest_of(&reg, "rt/sk:v1"), amd64["digest"].as_str().unwrap(), "manifest is re-made");
    assert_eq!(converted["mediaType"], "application/vnd.docker.distribution.manifest.v2+json");
    assert_eq!(converted["config"]["digest"], original["config"]["digest"], "config bytes kept");
    let layer_digests =
        |v: &serde_json::Value| v["layers"].as_array().unwrap().iter().map(|l| l["digest"].clone()).collect::<Vec<_>>();
    // skopeo stores layers uncompressed (docker save style): the layer digests become the
    // config's diff_ids, so the content is the same, re-encoded.
    assert_ne!(layer_digests(&converted), layer_digests(&original));
    let config: serde_json::Value =
        serde_json::from_slice(&hoist(["inspect", "--config", &format!("{}/rt/sk:v1", reg.host())]).stdout).unwrap();
    let diff_ids: Vec<serde_json::Value> = config["rootfs"]["diff_ids"].as_array().unwrap().clone();
    assert_eq!(layer_digests(&converted), diff_ids, "layers are the uncompressed tars");
}
