//! `hoist mutate`: config and annotation edits without a rebuild. A registry-to-registry
//! mutate uploads the new config and manifest and no layer (counted in the real registry's
//! access log); skopeo reads the edited config; every image of an index is edited. `hoist
//! append` adds layers that umoci unpacks, with their diff_ids and history entries.

use std::path::Path;

use serde_json::Value;

use crate::common::*;

fn json_file(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

fn blob(layout: &Path, digest: &Value) -> Value {
    json_file(&layout.join("blobs").join(digest.as_str().unwrap().replace(':', "/")))
}

#[test]
fn registry_mutate_uploads_only_config_and_manifest() {
    hoist_testkit::require!("skopeo");
    let t = tempfile::tempdir().unwrap();
    let built = t.path().join("built");
    build_example(&t.path().join("store"), &["--platform", "linux/amd64"], &format!("oci:{}:v1", built.display()));
    let reg = TestRegistry::start(RegistryOpts::plain());
    let v1 = format!("{}/app:v1", reg.host());
    let v2 = format!("{}/app:v2", reg.host());
    ok("push", hoist(["copy", &format!("oci:{}:v1", built.display()), &v1]));
    let before = reg.requests().len();
    let out = hoist([
        "mutate",
        &v1,
        &v2,
        "--env",
        "GREETING=hi",
        "--env",
        "DEBUG=1",
        "--label",
        "team=web",
        "--annotation",
        "note=patched",
        "--entrypoint",
        r#"["/bin/sh","-c"]"#,
        "--cmd",
        "echo,hi",
        "--user",
        "0",
        "--workdir",
        "/srv",
        "--exposed-port",
        "9090/udp",
        "--stop-signal",
        "SIGINT",
        "--created",
        "2024-01-02T03:04:05Z",
    ]);
    let digest = ok("mutate", out.clone());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let requests = reg.requests();
    let new = &requests[before..];
    let uploads: Vec<_> = new.iter().filter(|r| r.path.contains("/blobs/uploads/")).collect();
    let starts = uploads.iter().filter(|r| r.method == "POST").count();
    let puts = uploads.iter().filter(|r| r.method == "PUT").count();
    let patches = uploads.iter().filter(|r| r.method == "PATCH").count();
    let manifest_puts = new.iter().filter(|r| r.method == "PUT" && r.path.contains("/manifests/")).count();
    assert_eq!((starts, puts, patches, manifest_puts), (1, 1, 0, 1), "one config upload and one manifest: {new:#?}");

    // The edited config, as skopeo reads it; the layers are v1's.
    let mut args = vec!["inspect".to_string(), "--config".to_string()];
    args.extend(reg.skopeo_args(""));
    args.push(format!("docker://{v2}"));
    let config: Value = serde_json::from_str(&assert_success("skopeo inspect --config", &skopeo(&args))).unwrap();
    let c = &config["config"];
    let env: Vec<&str> = c["Env"].as_array().unwrap().iter().map(|e| e.as_str().unwrap()).collect();
    assert!(env.contains(&"GREETING=hi") && env.contains(&"DEBUG=1") && !env.contains(&"GREETING=hello"), "{env:?}");
    assert_eq!(c["Labels"]["team"], "web");
    assert_eq!(c["Labels"]["org.opencontainers.image.source"], "https://example.invalid/hoist");
    assert_eq!(c["Entrypoint"], serde_json::json!(["/bin/sh", "-c"]));
    assert_eq!(c["Cmd"], serde_json::json!(["echo", "hi"]));
    assert_eq!(
        (c["User"].as_str(), c["WorkingDir"].as_str(), c["StopSignal"].as_str()),
        (Some("0"), Some("/srv"), Some("SIGINT"))
    );
    assert!(c["ExposedPorts"].get("9090/udp").is_some() && c["ExposedPorts"].get("8080/tcp").is_some());
    assert_eq!(config["created"], "2024-01-02T03:04:05Z");
    let raw = |r: &str| -> Value { serde_json::from_slice(&skopeo_raw(&reg, r)).unwrap() };
    let (m1, m2) = (raw(&v1), raw(&v2));
    assert_eq!(m1["layers"], m2["layers"], "layers untouched");
    assert_eq!(m2["annotations"]["note"], "patched");
    assert_eq!(digest, registry_manifest_digest(&reg, "app:v2"));
    assert!(stderr.contains(&format!("-> {digest}")), "the summary names the new digest: {stderr}");
}

#[test]
fn mutate_edits_every_image_of_an_index() {
    hoist_testkit::require!("umoci");
    let t = tempfile::tempdir().unwrap();
    let built = t.path().join("built");
    build_example(&t.path().join("store"), &[], &format!("oci:{}:v1", built.display()));
    let out = t.path().join("out");
    ok(
        "mutate",
        hoist([
            "mutate",
            &format!("oci:{}:v1", built.display()),
            &format!("oci:{}:v1", out.display()),
            "--label",
            "patched=yes",
        ]),
    );
    let index_of = |l: &Path| {
        let top = json_file(&l.join("index.json"));
        blob(l, &top["manifests"][0]["digest"])
    };
    let (before, after) = (index_of(&built), index_of(&out));
    let entries = after["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    for (old, new) in before["manifests"].as_array().unwrap().iter().zip(entries) {
        assert_eq!(old["platform"], new["platform"]);
        assert_ne!(old["digest"], new["digest"]);
        let (mo, mn) = (blob(&built, &old["digest"]), blob(&out, &new["digest"]));
        assert_eq!(mo["layers"], mn["layers"]);
        assert_eq!(blob(&out, &mn["config"]["digest"])["config"]["Labels"]["patched"], "yes");
    }

    // --platform: that image alone, edited; umoci unpacks it to the original's tree.
    let one = t.path().join("one");
    let src = format!("oci:{}:v1", built.display());
    ok(
        "mutate --platform",
        hoist(["--platform", "linux/arm64", "mutate", &src, &format!("oci:{}:v1", one.display()), "--user", "7"]),
    );
    let m = index_of(&one);
    assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    let c = blob(&one, &m["config"]["digest"]);
    assert_eq!((c["architecture"].as_str(), c["config"]["User"].as_str()), (Some("arm64"), Some("7")));
    let unpack = |layout: &Path, dir: &Path, extra: &[&str]| {
        let mut cmd = std::process::Command::new("umoci");
        cmd.args(["unpack", "--rootless"]).args(extra).args(["--image", &format!("{}:v1", layout.display())]).arg(dir);
        assert_success("umoci unpack", &cmd.output().unwrap());
        file_digests(&dir.join("rootfs"))
    };
    let plain = t.path().join("plain");
    ok("copy --platform", hoist(["--platform", "linux/arm64", "copy", &src, &format!("oci:{}:v1", plain.display())]));
    assert_eq!(unpack(&one, &t.path().join("u1"), &[]), unpack(&plain, &t.path().join("u2"), &[]));

    // Nothing to change is a usage error.
    let none = hoist(["mutate", &src, &format!("oci:{}:v9", out.display())]);
    assert_eq!(none.status.code(), Some(2), "{}", String::from_utf8_lossy(&none.stderr));
}

#[test]
fn append_adds_layers_with_diff_ids_and_history() {
    hoist_testkit::require!("umoci");
    let t = tempfile::tempdir().unwrap();
    let built = t.path().join("built");
    build_example(&t.path().join("store"), &["--platform", "linux/amd64"], &format!("oci:{}:v1", built.display()));
    // Three layer tarballs: gzip (written by GNU tar), zstd and plain; stored as gzip:9 (umoci reads no zstd).
    let files = t.path().join("files");
    std::fs::create_dir_all(files.join("etc/ssl")).unwrap();
    std::fs::write(files.join("etc/ssl/ca.pem"), "-----BEGIN CERTIFICATE-----\n").unwrap();
    let gz = t.path().join("ca.tar.gz");
    let tar = std::process::Command::new("tar").arg("-czf").arg(&gz).arg("-C").arg(&files).arg("etc").output().unwrap();
    assert_success("tar -czf", &tar);
    std::fs::write(files.join("note"), "second\n").unwrap();
    let plain = t.path().join("note.tar");
    assert_success(
        "tar -cf",
        &std::process::Command::new("tar").arg("-cf").arg(&plain).arg("-C").arg(&files).arg("note").output().unwrap(),
    );
    let plain_digest = sha256(&std::fs::read(&plain).unwrap());
    // A zstd layer tarball: its diff_id is the digest of the tar inside.
    std::fs::write(files.join("zfile"), "third\n").unwrap();
    let ztar = t.path().join("z.tar");
    assert_success(
        "tar -cf",
        &std::process::Command::new("tar").arg("-cf").arg(&ztar).arg("-C").arg(&files).arg("zfile").output().unwrap(),
    );
    let z_tar_bytes = std::fs::read(&ztar).unwrap();
    let z_digest = sha256(&z_tar_bytes);
    let zst = t.path().join("z.tar.zst");
    std::fs::write(&zst, zstd::encode_all(&z_tar_bytes[..], 3).unwrap()).unwrap();

    let out = t.path().join("out");
    ok(
        "append",
        hoist([
            "append",
            &format!("oci:{}:v1", built.display()),
            &format!("oci:{}:v1", out.display()),
            gz.to_str().unwrap(),
            zst.to_str().unwrap(),
            plain.to_str().unwrap(),
            "--compression",
            "gzip:9",
        ]),
    );
    let top = |l: &Path| blob(l, &json_file(&l.join("index.json"))["manifests"][0]["digest"]);
    let (m0, m) = (top(&built), top(&out));
    let (c0, c) = (blob(&built, &m0["config"]["digest"]), blob(&out, &m["config"]["digest"]));
    let (n0, n) = (m0["layers"].as_array().unwrap().len(), m["layers"].as_array().unwrap().len());
    assert_eq!(n, n0 + 3);
    assert_eq!(m["layers"][n0 + 1]["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip");
    let ids = c["rootfs"]["diff_ids"].as_array().unwrap();
    assert_eq!(ids.len(), n);
    assert_eq!(ids[n - 2], z_digest.as_str(), "the zstd tarball's diff_id is its tar's digest");
    assert_eq!(ids[n - 1], plain_digest.as_str(), "the plain tar's digest is its diff_id");
    assert_eq!(
        c["history"].as_array().unwrap().len(),
        c0["history"].as_array().map_or(0, |h| h.len()) + 3,
        "one history entry per added layer"
    );
    let bundle = t.path().join("bundle");
    let unpack = std::process::Command::new("umoci")
        .args(["unpack", "--rootless", "--image", &format!("{}:v1", out.display())])
        .arg(&bundle)
        .output()
        .unwrap();
    assert_success("umoci unpack", &unpack);
    assert_eq!(std::fs::read_to_string(bundle.join("rootfs/etc/ssl/ca.pem")).unwrap(), "-----BEGIN CERTIFICATE-----\n");
    assert_eq!(std::fs::read_to_string(bundle.join("rootfs/note")).unwrap(), "second\n");
    assert_eq!(std::fs::read_to_string(bundle.join("rootfs/zfile")).unwrap(), "third\n");
    assert!(bundle.join("rootfs/app").exists(), "the image's own files are still there");
}

#[test]
fn mutate_summary_lists_every_changed_digest_of_an_index() {
    hoist_testkit::require!("skopeo");
    let reg = TestRegistry::plain();
    let h = reg.host();
    let t = tempfile::tempdir().unwrap();
    let built = t.path().join("built");
    build_example(&t.path().join("store"), &[], &format!("oci:{}:v1", built.display()));
    ok(
        "copy to the registry",
        hoist(["-q", "copy", &format!("oci:{}:v1", built.display()), &format!("{h}/ed/app:v1")]),
    );
    let out = hoist([
        "-q",
        "--format",
        "json",
        "mutate",
        &format!("{h}/ed/app:v1"),
        &format!("{h}/ed/app:v2"),
        "--label",
        "patched=yes",
    ]);
    let summary: Value = serde_json::from_str(&ok("mutate --format json", out)).unwrap();
    // (from, to) of every digest the summary says changed
    let converted: std::collections::BTreeMap<String, String> = summary["report"]["converted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["from"].as_str().unwrap().to_string(), c["to"].as_str().unwrap().to_string()))
        .collect();
    // what the registry holds, read by skopeo
    let (old_raw, new_raw) = (skopeo_raw(&reg, &format!("{h}/ed/app:v1")), skopeo_raw(&reg, &format!("{h}/ed/app:v2")));
    let (old, new): (Value, Value) =
        (serde_json::from_slice(&old_raw).unwrap(), serde_json::from_slice(&new_raw).unwrap());
    assert_eq!(converted.get(&sha256(&old_raw)), Some(&sha256(&new_raw)), "the index: {summary}");
    assert_eq!(summary["roots"][0]["digest"].as_str(), Some(sha256(&new_raw).as_str()));
    let (olds, news) = (old["manifests"].as_array().unwrap(), new["manifests"].as_array().unwrap());
    assert_eq!(olds.len(), 2);
    assert_eq!(news.len(), 2);
    let mut listed = 1;
    for (o, n) in olds.iter().zip(news) {
        let (od, nd) = (o["digest"].as_str().unwrap(), n["digest"].as_str().unwrap());
        assert_eq!(converted.get(od).map(String::as_str), Some(nd), "child manifest {od}: {summary}");
        let (om, nm): (Value, Value) = (
            serde_json::from_slice(&skopeo_raw(&reg, &format!("{h}/ed/app@{od}"))).unwrap(),
            serde_json::from_slice(&skopeo_raw(&reg, &format!("{h}/ed/app@{nd}"))).unwrap(),
        );
        let (oc, nc) = (om["config"]["digest"].as_str().unwrap(), nm["config"]["digest"].as_str().unwrap());
        assert_eq!(converted.get(oc).map(String::as_str), Some(nc), "config of {od}: {summary}");
        assert_eq!(om["layers"], nm["layers"], "layers untouched");
        listed += 2;
    }
    assert_eq!(converted.len(), listed, "nothing else listed as changed: {summary}");
}
