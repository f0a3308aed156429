//! The producing commands (`build`, `artifact`, `model`, `referrers`) end to end against a
//! real registry, judged by skopeo, umoci and tar rather than by hoist reading back.

use crate::common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

fn skopeo_ok(reg: &TestRegistry, args: &[&str]) -> String {
    let mut a: Vec<String> = vec![args[0].to_string()];
    a.extend(reg.skopeo_args(""));
    a.extend(args[1..].iter().map(|s| s.to_string()));
    let out = skopeo(&a);
    assert_success(&format!("skopeo {}", a.join(" ")), &out)
}

/// Relative path → content of every file under `root`.
fn files(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).min_depth(1) {
        let e = e.unwrap();
        if e.file_type().is_file() {
            let rel = e.path().strip_prefix(root).unwrap().to_str().unwrap().to_string();
            out.insert(rel, fs::read(e.path()).unwrap());
        }
    }
    out
}

#[test]
fn build_writes_every_output_and_metadata() {
    hoist_testkit::require!("skopeo");
    let reg = TestRegistry::start(RegistryOpts::plain());
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let file = examples().join("hoist.toml");
    let (oci, docker, meta) = (t.join("x.tar"), t.join("y.tar"), t.join("m.json"));
    let out = hoist_in(
        &t.join("store"),
        &[
            "build",
            "-f",
            file.to_str().unwrap(),
            "--output",
            &format!("type=oci,dest={}", oci.display()),
            "--output",
            &format!("type=docker,dest={},name=foo:v1", docker.display()),
            "--output",
            &format!("type=registry,name={}/img:v1", reg.host()),
            "--metadata-file",
            meta.to_str().unwrap(),
        ],
    );
    let digest = ok("hoist build", out);
    assert!(digest.starts_with("sha256:"), "{digest}");

    // Each output read by skopeo.
    for src in [format!("oci-archive:{}", oci.display()), format!("docker-archive:{}", docker.display())] {
        let v = json(&assert_success(&format!("skopeo inspect {src}"), &skopeo(["inspect", src.as_str()])));
        assert_eq!(v["Labels"]["org.opencontainers.image.source"], "https://example.invalid/hoist", "{src}");
    }
    let v = json(&assert_success(
        "skopeo inspect docker-archive --config",
        &skopeo(["inspect", "--config", &format!("docker-archive:{}", docker.display())]),
    ));
    assert_eq!(v["config"]["WorkingDir"], "/app");
    let raw = skopeo_ok(&reg, &["inspect", "--raw", &format!("docker://{}/img:v1", reg.host())]);
    let registry_digest = sha256(raw.as_bytes());
    assert_eq!(registry_digest, digest);
    assert!(json(&raw)["manifests"].as_array().unwrap().len() == 2, "two platforms: {raw}");

    // The metadata file names the registry's digest.
    let m = json(&fs::read_to_string(&meta).unwrap());
    assert_eq!(m["containerimage.digest"], Value::from(registry_digest.clone()));
    assert_eq!(m["containerimage.descriptor"]["digest"], Value::from(registry_digest));
    assert!(m["image.name"].as_str().unwrap().contains("foo:v1"), "{m}");
}

#[test]
fn build_oci_dir_unpacks_with_umoci() {
    hoist_testkit::require!("umoci");
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let dir = t.join("oci");
    let file = examples().join("hoist.toml");
    ok(
        "hoist build",
        hoist_in(
            &t.join("store"),
            &[
                "build",
                "-f",
                file.to_str().unwrap(),
                "--platform",
                "linux/amd64",
                "--output",
                &format!("type=oci,dest={},tar=false", dir.display()),
            ],
        ),
    );
    let bundle = t.join("bundle");
    let out = Command::new("umoci")
        .args(["unpack", "--rootless", "--image", &format!("{}:latest", dir.display())])
        .arg(&bundle)
        .output()
        .unwrap();
    assert_success("umoci unpack", &out);
    let want = files(&examples().join("sample-image"));
    let got = files(&bundle.join("rootfs/app"));
    assert_eq!(got, want);
}

#[test]
fn build_is_reproducible_over_time() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let file = examples().join("hoist.toml");
    let args = ["build", "-f", file.to_str().unwrap(), "--compression", "zstd:3"];
    let a = ok("first build", hoist_in(&t.join("s1"), &args));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    // Another directory, other mtimes: neither may matter.
    let copy = t.join("ctx");
    common::copy_tree(&examples().join("sample-image"), &copy.join("sample-image"));
    fs::copy(&file, copy.join("hoist.toml")).unwrap();
    let file2 = copy.join("hoist.toml");
    let b = ok(
        "second build",
        hoist_in(&t.join("s2"), &["build", "-f", file2.to_str().unwrap(), "--compression", "zstd:3"]),
    );
    assert_eq!(a, b);
    let c = ok("third build", hoist_in(&t.join("s1"), &args));
    assert_eq!(a, c);
}

#[test]
fn model_pack_push_unpack_round_trip() {
    let reg = TestRegistry::start(RegistryOpts::plain());
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let model = examples().join("sample-model");
    let r = format!("{}/model:v1", reg.host());
    ok(
        "model pack",
        hoist_in(
            &t.join("store"),
            &[
                "model",
                "pack",
                model.to_str().unwrap(),
                "--name",
                "sample",
                "--output",
                &format!("type=registry,name={r}"),
            ],
        ),
    );
    let dir = t.join("unpacked");
    ok("model unpack", hoist_in(&t.join("store2"), &["model", "unpack", &r, dir.to_str().unwrap()]));
    assert_eq!(files(&dir), files(&model));

    let v = json(&ok("inspect", hoist_in(&t.join("store"), &["inspect", "--format", "json", &r])));
    assert_eq!(v["artifactType"], "application/vnd.cncf.model.manifest.v1+json");
    let layers = v["manifest"]["layers"].as_array().unwrap();
    assert_eq!(layers.len(), files(&model).len());
    for l in layers {
        assert!(l["annotations"]["org.cncf.model.filepath"].is_string(), "{l}");
        assert!(l["annotations"]["org.opencontainers.image.title"].is_string() || l["annotations"].is_object());
    }
}

#[test]
fn artifact_push_and_referrers_on_registry() {
    hoist_testkit::require!("skopeo");
    let reg = TestRegistry::start(RegistryOpts::plain());
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let store = t.join("store");
    let file = examples().join("hoist.toml");
    let subject_ref = format!("{}/repo:v1", reg.host());
    let subject = ok(
        "build",
        hoist_in(
            &store,
            &[
                "build",
                "-f",
                file.to_str().unwrap(),
                "--platform",
                "linux/amd64",
                "--output",
                &format!("type=registry,name={subject_ref}"),
            ],
        ),
    );
    let sig = t.join("sig.txt");
    fs::write(&sig, "signature").unwrap();
    let sbom = t.join("sbom.json");
    fs::write(&sbom, "{\"sbom\":true}").unwrap();
    let a1 = ok(
        "artifact push sig",
        hoist_in(
            &store,
            &[
                "artifact",
                "push",
                &format!("{}/repo:sig", reg.host()),
                &format!("{}:application/vnd.example.sig", sig.display()),
                "--artifact-type",
                "application/vnd.example.sig",
                "--annotation",
                "org.example.signer=test",
                "--subject",
                &subject_ref,
            ],
        ),
    );
    let a2 = ok(
        "artifact push sbom",
        hoist_in(
            &store,
            &[
                "artifact",
                "push",
                &format!("{}/repo:sbom", reg.host()),
                sbom.to_str().unwrap(),
                "--artifact-type",
                "application/vnd.example.sbom",
                "--subject",
                &subject_ref,
            ],
        ),
    );
    // Pushing the same artifact again does not duplicate its entry.
    ok(
        "artifact push sig again",
        hoist_in(
            &store,
            &[
                "artifact",
                "push",
                &format!("{}/repo:sig2", reg.host()),
                &format!("{}:application/vnd.example.sig", sig.display()),
                "--artifact-type",
                "application/vnd.example.sig",
                "--annotation",
                "org.example.signer=test",
                "--subject",
                &subject_ref,
            ],
        ),
    );

    let v = json(&ok("referrers", hoist_in(&store, &["referrers", "--format", "json", &subject_ref])));
    let listed: Vec<&str> = v["manifests"].as_array().unwrap().iter().map(|d| d["digest"].as_str().unwrap()).collect();
    assert_eq!(listed, vec![a1.as_str(), a2.as_str()], "{v}");
    assert_eq!(v["manifests"][0]["artifactType"], "application/vnd.example.sig");
    assert_eq!(v["manifests"][0]["annotations"]["org.example.signer"], "test");

    let text = ok(
        "referrers filtered",
        hoist_in(&store, &["referrers", "--artifact-type", "application/vnd.example.sbom", &subject_ref]),
    );
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.starts_with(&a2), "{text}");

    // The fallback tag, judged by skopeo.
    let tag = format!("sha256-{}", subject.strip_prefix("sha256:").unwrap());
    let raw = skopeo_ok(&reg, &["inspect", "--raw", &format!("docker://{}/repo:{tag}", reg.host())]);
    let idx = json(&raw);
    assert_eq!(idx["mediaType"], "application/vnd.oci.image.index.v1+json");
    let in_index: Vec<&str> =
        idx["manifests"].as_array().unwrap().iter().map(|d| d["digest"].as_str().unwrap()).collect();
    assert_eq!(in_index, vec![a1.as_str(), a2.as_str()]);
    // The artifact's subject as pushed.
    let m = json(&skopeo_ok(&reg, &["inspect", "--raw", &format!("docker://{}/repo:sig", reg.host())]));
    assert_eq!(m["subject"]["digest"], Value::from(subject.clone()));
    // The referrers API was asked (404 on this registry) before falling back.
    let requests: Vec<LoggedRequest> = reg.requests();
    let api_probes = requests.iter().filter(|r| r.method == "GET" && r.path.contains("/referrers/")).count();
    assert!(api_probes >= 1, "referrers API probed");
    assert!(requests.iter().any(|r| r.method == "PUT" && r.path.ends_with(&format!("/manifests/{tag}"))));
}

#[test]
fn artifact_pack_and_referrers_in_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let store = t.join("store");
    let dir = t.join("layout");
    let file = examples().join("hoist.toml");
    let subject = ok(
        "build",
        hoist_in(
            &store,
            &[
                "build",
                "-f",
                file.to_str().unwrap(),
                "--output",
                &format!("type=local-layout,dest={},name=x:v1", dir.display()),
            ],
        ),
    );
    let sig = t.join("sig.txt");
    fs::write(&sig, "signature").unwrap();
    let subject_ref = format!("oci:{}:v1", dir.display());
    let mut digests = Vec::new();
    for ty in ["application/vnd.example.sig", "application/vnd.example.other"] {
        digests.push(ok(
            "artifact pack",
            hoist_in(
                &store,
                &[
                    "artifact",
                    "pack",
                    &format!("{}:{ty}", sig.display()),
                    "--artifact-type",
                    ty,
                    "--subject",
                    &subject_ref,
                    "--output",
                    &format!("type=local-layout,dest={}", dir.display()),
                ],
            ),
        ));
    }
    let v = json(&ok("referrers", hoist_in(&store, &["referrers", "--format", "json", &subject_ref])));
    let mut listed: Vec<String> =
        v["manifests"].as_array().unwrap().iter().map(|d| d["digest"].as_str().unwrap().to_string()).collect();
    listed.sort();
    digests.sort();
    assert_eq!(listed, digests, "{v}");
    assert_eq!(v["subject"]["digest"], Value::from(subject));
    let text = ok(
        "referrers filtered",
        hoist_in(&store, &["referrers", "--artifact-type", "application/vnd.example.other", &subject_ref]),
    );
    assert_eq!(text.lines().count(), 1, "{text}");
}

#[test]
fn build_to_stdout_is_a_tar_and_nothing_else() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let file = examples().join("hoist.toml");
    let out = hoist_in(
        &t.join("store"),
        &["build", "-f", file.to_str().unwrap(), "--platform", "linux/amd64", "--output", "type=oci,dest=-"],
    );
    assert_success("build to stdout", &out);
    assert!(!out.stdout.is_empty());
    assert_eq!(out.stdout.len() % 512, 0, "stdout holds only tar records");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("built sha256:"), "progress goes to stderr: {stderr}");
    let tar = t.join("out.tar");
    fs::write(&tar, &out.stdout).unwrap();
    let listing = assert_success("tar -t", &Command::new("tar").arg("-tf").arg(&tar).output().unwrap());
    for want in ["oci-layout", "index.json", "blobs/sha256/"] {
        assert!(listing.lines().any(|l| l == want), "{want} in {listing}");
    }
}

#[test]
fn unsafe_build_inputs_fail_with_exit_2_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let ctx = t.join("ctx");
    fs::create_dir_all(ctx.join("src")).unwrap();
    fs::write(ctx.join("src/a.txt"), "a").unwrap();
    // A target that climbs out of the image root.
    fs::write(ctx.join("climb.toml"), "[[layers]]\nfiles = [{ source = \"src\", target = \"../../etc\" }]\n").unwrap();
    // A symlink in the context that points outside of it.
    fs::create_dir_all(ctx.join("esc")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", ctx.join("esc/passwd")).unwrap();
    std::os::unix::fs::symlink("../../../../../etc", ctx.join("esc/up")).unwrap();
    fs::write(ctx.join("escape.toml"), "[[layers]]\nfiles = [{ source = \"esc\", target = \"/x\" }]\n").unwrap();
    for name in ["climb.toml", "escape.toml"] {
        let dest = t.join(format!("{name}.tar"));
        let out = hoist_in(
            &t.join("store"),
            &[
                "build",
                "-f",
                ctx.join(name).to_str().unwrap(),
                "--output",
                &format!("type=oci,dest={}", dest.display()),
            ],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        assert!(stderr.contains("unsafe path"), "{name}: {stderr}");
        assert!(!dest.exists(), "{name}: output must not be created");
        assert!(out.stdout.is_empty());
        let leftovers: Vec<_> = fs::read_dir(t)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".tar.tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }
}

#[test]
fn every_push_path_maintains_the_fallback() {
    // `hoist push` of a layout holding an image index and an artifact that refers to it.
    let reg = TestRegistry::start(RegistryOpts::plain());
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let layout = examples().join("sample-layout");
    let demo = format!("{}/demo", reg.host());
    ok("push", hoist_in(&store, &["push", layout.to_str().unwrap(), &demo]));
    let text = ok("referrers", hoist_in(&store, &["referrers", &format!("{demo}:multi")]));
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.starts_with(
            "sha256:a28dfe12ffee2c5eb12351310057987044132243b89f831ca0cf19778b6064ef  application/vnd.hoist.sample.v1"
        ),
        "{text}"
    );
    // The layout scan finds the same referrer.
    let local = ok("referrers in layout", hoist_in(&store, &["referrers", &format!("oci:{}:multi", layout.display())]));
    assert_eq!(local, text);
}

#[test]
fn build_on_a_base_image_from_a_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let file = examples().join("hoist.toml");
    let base = format!("oci:{}:multi", examples().join("sample-layout").display());
    let dir = t.join("out");
    let digest = ok(
        "build --base",
        hoist_in(
            &t.join("store"),
            &[
                "build",
                "-f",
                file.to_str().unwrap(),
                "--base",
                &base,
                "--platform",
                "linux/amd64",
                "--tag",
                "v2",
                "--output",
                &format!("type=local-layout,dest={}", dir.display()),
            ],
        ),
    );
    let v = json(&ok(
        "inspect",
        hoist_in(&t.join("store"), &["inspect", "--format", "json", &format!("oci:{}:v2", dir.display())]),
    ));
    assert_eq!(v["digest"], Value::from(digest));
    // A local base (a layout path) says nothing to whoever reads the image elsewhere: no
    // base.name, which must be a plain distribution reference (issue #14); the digest stays.
    assert_eq!(v["manifest"]["annotations"]["org.opencontainers.image.base.name"], Value::Null, "{v}");
    assert!(v["manifest"]["annotations"]["org.opencontainers.image.base.digest"].is_string(), "{v}");
    assert!(v["manifest"]["layers"].as_array().unwrap().len() >= 2, "base layers come first: {v}");
}

#[test]
fn artifact_pack_with_config_and_annotation_file() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (cfg, data, ann) = (t.join("cfg.json"), t.join("data.bin"), t.join("ann.json"));
    fs::write(&cfg, "{\"k\":1}").unwrap();
    fs::write(&data, [0u8, 1, 2, 3]).unwrap();
    fs::write(&ann, r#"{"$manifest":{"m":"1"},"$config":{"c":"2"},"data.bin":{"f":"3"}}"#).unwrap();
    let out = t.join("out");
    let digest = ok(
        "artifact pack",
        hoist_in(
            &t.join("store"),
            &[
                "artifact",
                "pack",
                data.to_str().unwrap(),
                "--config",
                &format!("{}:application/vnd.example.config+json", cfg.display()),
                "--artifact-type",
                "application/vnd.example",
                "--annotation-file",
                ann.to_str().unwrap(),
                "--annotation",
                "extra=4",
                "--tag",
                "v1",
                "--output",
                &format!("type=local-layout,dest={}", out.display()),
                "--output",
                "type=image,name=example.com/local:v9",
            ],
        ),
    );
    let v = json(&ok(
        "inspect",
        hoist_in(&t.join("store"), &["inspect", "--format", "json", &format!("oci:{}:v1", out.display())]),
    ));
    assert_eq!(v["digest"], Value::from(digest.clone()));
    let m = &v["manifest"];
    assert_eq!(m["artifactType"], "application/vnd.example");
    assert_eq!(m["config"]["mediaType"], "application/vnd.example.config+json");
    assert_eq!(m["config"]["annotations"]["c"], "2");
    assert_eq!(m["annotations"]["m"], "1");
    assert_eq!(m["annotations"]["extra"], "4");
    assert_eq!(m["layers"][0]["mediaType"], "application/octet-stream");
    assert_eq!(m["layers"][0]["annotations"]["f"], "3");
    assert_eq!(m["layers"][0]["annotations"]["org.opencontainers.image.title"], "data.bin");
    // type=image without push: named in the store only.
    let tags = ok("tags", hoist_in(&t.join("store"), &["tags", t.join("store").to_str().unwrap()]));
    assert!(tags.lines().any(|l| l == "example.com/local:v9"), "{tags}");
}

/// The owners of every entry of every layer of the OCI layout `dir`'s image, as GNU tar lists
/// them (`tar --numeric-owner -tvf`: `uid/gid` in the second column), one per entry.
fn layer_owners(dir: &Path) -> Vec<String> {
    let index: Value = serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    let blob = |d: &Value| dir.join("blobs/sha256").join(&d["digest"].as_str().unwrap()[7..]);
    let manifest: Value = serde_json::from_slice(&fs::read(blob(&index["manifests"][0])).unwrap()).unwrap();
    let mut owners = Vec::new();
    for layer in manifest["layers"].as_array().unwrap() {
        let out = Command::new("tar").args(["--numeric-owner", "-tvf"]).arg(blob(layer)).output().unwrap();
        let listing = assert_success("tar -tvf", &out);
        owners.extend(listing.lines().map(|l| l.split_whitespace().nth(1).unwrap_or("").to_string()));
    }
    owners
}

/// README: context owners become 0:0. A context whose files belong to 1000:1000 (as a user's
/// checkout does) gives layers whose every entry is 0/0, in a TOML build and in a Dockerfile
/// COPY; judged by GNU tar's listing of the layer blobs.
#[test]
fn context_owned_by_a_user_gives_root_owned_layers() {
    hoist_testkit::require!("tar");
    hoist_testkit::require_root!("chown to another user");
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let ctx = t.join("ctx");
    fs::create_dir_all(ctx.join("sub")).unwrap();
    fs::write(ctx.join("a.txt"), "a\n").unwrap();
    fs::write(ctx.join("sub/b.txt"), "b\n").unwrap();
    fs::write(
        ctx.join("hoist.toml"),
        "compression = \"none\"\n[[layers]]\nfiles = [ { source = \"a.txt\", target = \"/a.txt\" }, \
         { source = \"sub\", target = \"/sub\" } ]\n",
    )
    .unwrap();
    fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY a.txt sub /ctx/\n").unwrap();
    for e in walkdir::WalkDir::new(&ctx) {
        std::os::unix::fs::lchown(e.unwrap().path(), Some(1000), Some(1000)).unwrap();
    }
    let toml = t.join("toml-out");
    let file = ctx.join("hoist.toml");
    let out = hoist_in(
        &t.join("store"),
        &["build", "-f", file.to_str().unwrap(), "--output", &format!("type=oci,dest={},tar=false", toml.display())],
    );
    assert_success("hoist build (TOML)", &out);
    let docker = t.join("df-out");
    let o = format!("type=oci,dest={},tar=false", docker.display());
    let out = hoist_in(&t.join("store"), &["build", "--compression", "none", "--output", &o, ctx.to_str().unwrap()]);
    assert_success("hoist build (Dockerfile)", &out);
    for dir in [&toml, &docker] {
        let owners = layer_owners(dir);
        assert!(owners.len() >= 3, "{}: {owners:?}", dir.display());
        assert!(owners.iter().all(|o| o == "0/0"), "{}: owners {owners:?}", dir.display());
    }
}
