//! Byte-exact push/pull/copy of layouts made by other tools, against the real registry,
//! judged by skopeo; auth and TLS; refusal of corrupt blobs; constant memory for big blobs.

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use sha2::Digest as _;

fn sample_layout() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/sample-layout")
}

fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").unwrap();
    fs::read(layout.join("blobs/sha256").join(hex)).unwrap()
}

fn index_entries(layout: &Path) -> Vec<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    v["manifests"].as_array().cloned().unwrap_or_default()
}

/// The raw manifest `reference` (`REPO:TAG`, `REPO@DIGEST`) on `reg`, read by skopeo.
fn skopeo_raw(reg: &TestRegistry, reference: &str) -> Vec<u8> {
    common::skopeo_raw(reg, &format!("{}/{reference}", reg.host()))
}

/// Every manifest/index digest reachable from a layout root, with its raw bytes.
fn documents(layout: &Path, digest: &str, out: &mut Vec<(String, Vec<u8>)>) {
    let bytes = blob(layout, digest);
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    out.push((digest.to_string(), bytes));
    if let Some(ms) = v["manifests"].as_array() {
        for m in ms {
            documents(layout, m["digest"].as_str().unwrap(), out);
        }
    }
}

fn blob_uploads(reg: &TestRegistry) -> usize {
    reg.requests()
        .iter()
        .filter(|r| (r.method == "PUT" || r.method == "PATCH") && r.path.contains("/blobs/uploads/"))
        .count()
}

#[test]
fn pushes_oci11_artifact_and_index_byte_for_byte() {
    hoist_testkit::require!("skopeo");
    let reg = TestRegistry::plain();
    let layout = sample_layout();
    let out = hoist(["push", layout.to_str().unwrap(), &format!("{}/sample/app", reg.host())]);
    assert_success("hoist push", &out);

    for entry in index_entries(&layout) {
        let tag = entry["annotations"]["org.opencontainers.image.ref.name"].as_str().unwrap();
        let digest = entry["digest"].as_str().unwrap();
        let mut docs = Vec::new();
        documents(&layout, digest, &mut docs);
        // The tag and every child manifest are the exact bytes of the layout.
        assert_eq!(skopeo_raw(&reg, &format!("sample/app:{tag}")), blob(&layout, digest), "tag {tag}");
        for (d, bytes) in docs {
            assert_eq!(skopeo_raw(&reg, &format!("sample/app@{d}")), bytes, "{d}");
        }
    }
    // artifactType, subject, empty config data and custom media types survived.
    let art: serde_json::Value = serde_json::from_slice(&skopeo_raw(&reg, "sample/app:artifact")).unwrap();
    assert_eq!(art["artifactType"], "application/vnd.hoist.sample.v1");
    assert_eq!(art["config"]["data"], "e30=");
    assert_eq!(art["layers"][0]["mediaType"], "application/vnd.cncf.model.weight.v1.raw");
    assert!(art["subject"]["digest"].as_str().unwrap().starts_with("sha256:"));

    // A second push uploads no blob.
    let before = blob_uploads(&reg);
    let out = hoist(["push", layout.to_str().unwrap(), &format!("{}/sample/app", reg.host())]);
    assert_success("second hoist push", &out);
    assert_eq!(blob_uploads(&reg), before, "second push uploaded blobs");

    // Pull back: the same bytes for every blob reachable from each tag.
    let tmp = tempfile::tempdir().unwrap();
    for tag in ["multi", "artifact"] {
        let dst = tmp.path().join(tag);
        let out = hoist(["pull", &format!("{}/sample/app:{tag}", reg.host()), dst.to_str().unwrap()]);
        assert_success("hoist pull", &out);
        for f in fs::read_dir(dst.join("blobs/sha256")).unwrap() {
            let f = f.unwrap();
            let name = f.file_name().to_string_lossy().to_string();
            let bytes = fs::read(f.path()).unwrap();
            assert_eq!(sha256_hex(&bytes), name);
            assert_eq!(bytes, fs::read(layout.join("blobs/sha256").join(&name)).unwrap());
        }
        let fsck = hoist(["layout", "fsck", dst.to_str().unwrap()]);
        assert_success("fsck", &fsck);
    }
}

#[test]
fn pushes_layouts_made_by_umoci_and_skopeo() {
    hoist_testkit::require!("skopeo", "umoci");
    let reg = TestRegistry::plain();
    let tmp = tempfile::tempdir().unwrap();
    let um = tmp.path().join("umoci");
    let run = |c: &mut Command| {
        let out = c.output().unwrap();
        assert_success(&format!("{c:?}"), &out);
    };
    run(Command::new("umoci").args(["init", "--layout", um.to_str().unwrap()]));
    run(Command::new("umoci").args(["new", "--image", &format!("{}:v1", um.display())]));
    let root = tmp.path().join("rootfs");
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(root.join("etc/greeting"), b"hi from umoci\n").unwrap();
    run(Command::new("umoci").args([
        "insert",
        "--rootless",
        "--image",
        &format!("{}:v1", um.display()),
        root.join("etc/greeting").to_str().unwrap(),
        "/etc/greeting",
    ]));
    // A second layout written by skopeo from the umoci one.
    let sk = tmp.path().join("skopeo");
    let out = skopeo(["copy", &format!("oci:{}:v1", um.display()), &format!("oci:{}:v2", sk.display())]);
    assert_success("skopeo copy", &out);

    for (layout, tag) in [(&um, "v1"), (&sk, "v2")] {
        let out = hoist(["push", &format!("{}:{tag}", layout.display()), &format!("{}/tools/img:{tag}", reg.host())]);
        assert_success("hoist push", &out);
        let pushed = String::from_utf8(out.stdout).unwrap();
        let entry = index_entries(layout)
            .into_iter()
            .find(|e| e["annotations"]["org.opencontainers.image.ref.name"] == tag)
            .unwrap();
        let digest = entry["digest"].as_str().unwrap();
        assert_eq!(pushed.trim(), digest, "hoist prints the pushed digest");
        assert_eq!(skopeo_raw(&reg, &format!("tools/img:{tag}")), blob(layout, digest));
        // skopeo can pull it back and read the config.
        let out = skopeo([
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{}/tools/img:{tag}", reg.host()),
            &format!("oci:{}:x", tmp.path().join(format!("back-{tag}")).display()),
        ]);
        assert_success("skopeo copy back", &out);
    }
}

#[test]
fn basic_auth_works_and_bad_password_is_clear_and_secret() {
    let reg = TestRegistry::start(RegistryOpts::auth("alice", "s3cret-pw"));
    let tmp = tempfile::tempdir().unwrap();
    let layout = sample_layout();
    let target = format!("{}/private/app:multi", reg.host());

    // No credentials: exit 4, names the registry.
    let out = hoist_cmd()
        .env("DOCKER_CONFIG", tmp.path())
        .args(["push", &format!("{}:multi", layout.display()), &target])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&reg.host()));

    // Wrong password: exit 4, names the registry, never shows the password.
    let out = hoist_cmd()
        .env("DOCKER_CONFIG", tmp.path())
        .args(["-vv", "--creds", "alice:wrong-pw-123", "push", &format!("{}:multi", layout.display()), &target])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(all.contains(&reg.host()), "{all}");
    assert!(!all.contains("wrong-pw-123"), "password leaked: {all}");

    // hoist login stores credentials in DOCKER_CONFIG; push then works without --creds.
    let out = hoist_cmd()
        .env("DOCKER_CONFIG", tmp.path())
        .args(["login", &reg.host(), "-u", "alice", "-p", "bad"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(
        !tmp.path().join("config.json").exists()
            || !fs::read_to_string(tmp.path().join("config.json")).unwrap().contains(&reg.host())
    );
    let out = hoist_cmd()
        .env("DOCKER_CONFIG", tmp.path())
        .args(["login", &reg.host(), "-u", "alice", "--password-stdin"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(b"s3cret-pw\n")?;
            c.wait_with_output()
        })
        .unwrap();
    assert_success("hoist login", &out);
    let out = hoist_cmd()
        .env("DOCKER_CONFIG", tmp.path())
        .args(["-vv", "push", &format!("{}:multi", layout.display()), &target])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_success("push with stored credentials", &out);
    assert!(!stderr.contains("s3cret-pw"));
    let mut args = vec!["inspect".to_string(), "--raw".to_string()];
    args.extend(reg.skopeo_args(""));
    args.push(format!("docker://{target}"));
    if hoist_testkit::optional!("skopeo") {
        assert_success("skopeo inspect with creds", &skopeo(&args));
    }
    let out = hoist_cmd().env("DOCKER_CONFIG", tmp.path()).args(["logout", &reg.host()]).output().unwrap();
    assert_success("logout", &out);
    let out = hoist_cmd().env("DOCKER_CONFIG", tmp.path()).args(["inspect", &target]).output().unwrap();
    assert_eq!(out.status.code(), Some(4));
}

#[test]
fn tls_with_ca_file_and_refusal_without() {
    let reg = TestRegistry::start(RegistryOpts::tls());
    let layout = sample_layout();
    let target = format!("{}/secure/app:artifact", reg.host());
    let src = format!("{}:artifact", layout.display());
    let out = hoist(["push", &src, &target]);
    assert!(!out.status.success(), "push to an untrusted TLS registry must fail");
    let out = hoist(["--ca-file", reg.ca_pem_path().to_str().unwrap(), "push", &src, &target]);
    assert_success("push with --ca-file", &out);
    if hoist_testkit::optional!("skopeo") {
        assert_eq!(
            skopeo_raw(&reg, "secure/app:artifact"),
            fs::read(
                layout.join("blobs/sha256").join(
                    index_entries(&layout)
                        .iter()
                        .find(|e| e["annotations"]["org.opencontainers.image.ref.name"] == "artifact")
                        .unwrap()["digest"]
                        .as_str()
                        .unwrap()
                        .trim_start_matches("sha256:")
                )
            )
            .unwrap()
        );
    }
}

/// Blobs go over HTTP/1.1 to a TLS registry that offers h2 (distribution does), a connection
/// per blob in flight; `--http2` negotiates h2 for checks and manifests, while blob bodies
/// (streamed GETs, PUTs) keep HTTP/1.1 connections of their own. Judged from the registry's access log.
#[test]
fn tls_registry_gets_http1_unless_http2_is_asked_for() {
    let reg = TestRegistry::start(RegistryOpts::tls());
    let ca = reg.ca_pem_path();
    let src = format!("{}:artifact", sample_layout().display());
    let protos = |extra: &[&str], repo: &str| {
        let target = format!("{}/{repo}:artifact", reg.host());
        let mut args = vec!["--ca-file", ca.to_str().unwrap()];
        args.extend_from_slice(extra);
        assert_success("push", &hoist(args.iter().copied().chain(["push", src.as_str(), target.as_str()])));
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("pulled");
        assert_success("pull", &hoist(args.iter().copied().chain(["pull", target.as_str(), dest.to_str().unwrap()])));
        let mut seen: Vec<(String, String)> = reg
            .requests()
            .into_iter()
            .filter(|r| r.path.starts_with(&format!("/v2/{repo}/")))
            .map(|r| {
                (format!("{} {}", r.method, if r.path.contains("/manifests/") { "manifest" } else { "blob" }), r.proto)
            })
            .collect();
        seen.sort();
        seen.dedup();
        seen
    };
    let h1 = protos(&[], "proto/one");
    assert!(h1.iter().any(|(m, _)| m == "GET blob") && h1.iter().any(|(m, _)| m == "PUT blob"), "{h1:?}");
    assert!(h1.iter().all(|(_, p)| p == "HTTP/1.1"), "{h1:?}");
    let h2 = protos(&["--http2"], "proto/two");
    assert!(h2.iter().any(|(m, p)| m.ends_with("manifest") && p == "HTTP/2.0"), "{h2:?}");
    // streamed blob bodies over HTTP/1.1; small blobs read whole (a config) may take h2
    assert!(h2.iter().any(|(m, p)| m == "GET blob" && p == "HTTP/1.1"), "{h2:?}");
    for (m, p) in &h2 {
        let want = match m.as_str() {
            "PUT blob" | "PATCH blob" => "HTTP/1.1",
            "GET blob" => continue,
            _ => "HTTP/2.0",
        };
        assert_eq!(p, want, "{m} over {p}: {h2:?}");
    }
}

#[test]
fn corrupt_blob_is_refused_on_push_and_pull() {
    let reg = TestRegistry::plain();
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    common::copy_tree(&sample_layout(), &layout);
    // Corrupt the weights layer of the artifact (same size, other bytes).
    let art_digest = index_entries(&layout)
        .into_iter()
        .find(|e| e["annotations"]["org.opencontainers.image.ref.name"] == "artifact")
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let art: serde_json::Value = serde_json::from_slice(&blob(&layout, &art_digest)).unwrap();
    let weights = art["layers"][0]["digest"].as_str().unwrap().to_string();
    let wpath = layout.join("blobs/sha256").join(weights.trim_start_matches("sha256:"));
    let mut bytes = fs::read(&wpath).unwrap();
    bytes[100] ^= 0xff;
    fs::write(&wpath, &bytes).unwrap();

    let out = hoist(["push", &format!("{}:artifact", layout.display()), &format!("{}/bad/app:artifact", reg.host())]);
    assert_eq!(out.status.code(), Some(5), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&weights), "error names the digest: {stderr}");
    let client = reqwest::blocking::Client::new();
    let head = |path: &str| {
        client
            .head(format!("{}/v2/bad/app/{path}", reg.url()))
            .header("Accept", "application/vnd.oci.image.manifest.v1+json")
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(head(&format!("blobs/{weights}")), 404, "corrupt blob must not exist in the registry");
    assert_eq!(head("manifests/artifact"), 404, "no tag for a failed push");

    // Pull: push the good artifact, then corrupt the registry's copy of the blob.
    let good = sample_layout();
    assert_success(
        "push good",
        &hoist(["push", &format!("{}:artifact", good.display()), &format!("{}/pull/app:artifact", reg.host())]),
    );
    let hex = weights.trim_start_matches("sha256:");
    let data = reg.data_dir().join("docker/registry/v2/blobs/sha256").join(&hex[..2]).join(hex).join("data");
    let mut stored = fs::read(&data).unwrap();
    stored[7] ^= 0x01;
    fs::write(&data, &stored).unwrap();
    let dst = tmp.path().join("pulled");
    let out = hoist(["pull", &format!("{}/pull/app:artifact", reg.host()), dst.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(5), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!dst.join("blobs/sha256").join(hex).exists(), "corrupt blob must not become visible");
    assert!(index_entries(&dst).is_empty(), "no tag for a failed pull");
    let tmpdir = dst.join(".hoist/tmp");
    let leftovers = fs::read_dir(&tmpdir).map(|d| d.count()).unwrap_or(0);
    assert_eq!(leftovers, 0, "temp files left behind");
}

/// Peak RSS (KiB) of a child, from wait4's rusage (wait4 reaps the child).
#[allow(clippy::zombie_processes)]
fn run_measuring_rss(cmd: &mut Command) -> (i32, i64) {
    let child = cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::inherit()).spawn().unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid);
    (libc::WEXITSTATUS(status), usage.ru_maxrss)
}

#[test]
fn pushing_a_1gib_blob_stays_under_64mib_rss() {
    // hoist's peak RSS, not this test binary's: see in_own_process!
    hoist_testkit::in_own_process!();
    let reg = TestRegistry::plain();
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("big");
    fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    fs::write(layout.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    // 1 GiB of pseudo-random bytes, hashed while written.
    let size: u64 = 1 << 30;
    let tmpblob = layout.join("blobs/sha256/tmp");
    let mut hasher = sha2::Sha256::new();
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::with_capacity(1 << 20, fs::File::create(&tmpblob).unwrap());
        let mut x: u64 = 0x9E3779B97F4A7C15;
        let mut buf = vec![0u8; 1 << 20];
        for _ in 0..(size >> 20) {
            for chunk in buf.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                chunk.copy_from_slice(&x.to_le_bytes());
            }
            hasher.update(&buf);
            f.write_all(&buf).unwrap();
        }
    }
    let hex = hex::encode(hasher.finalize());
    fs::rename(&tmpblob, layout.join("blobs/sha256").join(&hex)).unwrap();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.example.big","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2}},"layers":[{{"mediaType":"application/vnd.cncf.model.weight.v1.raw","digest":"sha256:{hex}","size":{size}}}]}}"#
    );
    fs::write(layout.join("blobs/sha256/44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"), b"{}")
        .unwrap();
    let mhex = sha256_hex(manifest.as_bytes());
    fs::write(layout.join("blobs/sha256").join(&mhex), &manifest).unwrap();
    fs::write(
        layout.join("index.json"),
        format!(r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{mhex}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"big"}}}}]}}"#, manifest.len()),
    )
    .unwrap();

    let (code, rss_kib) = run_measuring_rss(hoist_cmd().args([
        "-q",
        "push",
        layout.to_str().unwrap(),
        &format!("{}/big/blob:v1", reg.host()),
    ]));
    assert_eq!(code, 0);
    eprintln!("peak RSS of a 1 GiB push: {} MiB", rss_kib / 1024);
    assert!(rss_kib < 64 * 1024, "peak RSS {} KiB >= 64 MiB", rss_kib);
    // And the registry has it, byte-exact manifest.
    let got = reqwest::blocking::Client::new()
        .get(format!("{}/v2/big/blob/manifests/v1", reg.url()))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    assert_eq!(&got[..], manifest.as_bytes());

    // Pull it back with bounded memory too, digest verified on the way.
    let dst = tmp.path().join("back");
    let (code, rss_kib) = run_measuring_rss(hoist_cmd().args([
        "-q",
        "pull",
        &format!("{}/big/blob:v1", reg.host()),
        dst.to_str().unwrap(),
    ]));
    assert_eq!(code, 0);
    eprintln!("peak RSS of a 1 GiB pull: {} MiB", rss_kib / 1024);
    assert!(rss_kib < 64 * 1024, "pull peak RSS {} KiB >= 64 MiB", rss_kib);
    assert_eq!(fs::metadata(dst.join("blobs/sha256").join(&hex)).unwrap().len(), size);
}

#[test]
fn credentials_from_helper_and_podman_auth_file() {
    let reg = TestRegistry::start(RegistryOpts::auth("bob", "helper-pw"));
    let tmp = tempfile::tempdir().unwrap();
    let layout = sample_layout();
    let src = format!("{}:artifact", layout.display());

    // docker config.json naming a credential helper for this registry.
    let bin = tmp.path().join("bin");
    fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-hoisttest");
    fs::write(&helper, "#!/bin/sh\nread server\necho \"{\\\"ServerURL\\\":\\\"$server\\\",\\\"Username\\\":\\\"bob\\\",\\\"Secret\\\":\\\"helper-pw\\\"}\"\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&helper, fs::Permissions::from_mode(0o755)).unwrap();
    let docker_cfg = tmp.path().join("docker");
    fs::create_dir_all(&docker_cfg).unwrap();
    fs::write(docker_cfg.join("config.json"), format!(r#"{{"credHelpers":{{"{}":"hoisttest"}}}}"#, reg.host()))
        .unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let out = hoist_cmd()
        .env("PATH", &path)
        .env("DOCKER_CONFIG", &docker_cfg)
        .env_remove("REGISTRY_AUTH_FILE")
        .args(["push", &src, &format!("{}/helper/app:v1", reg.host())])
        .output()
        .unwrap();
    assert_success("push with credential helper", &out);

    // podman's auth.json via REGISTRY_AUTH_FILE wins over an empty docker config.
    let auth = tmp.path().join("auth.json");
    use base64::Engine;
    let enc = base64::engine::general_purpose::STANDARD.encode("bob:helper-pw");
    fs::write(&auth, format!(r#"{{"auths":{{"{}":{{"auth":"{enc}"}}}}}}"#, reg.host())).unwrap();
    let empty = tmp.path().join("empty");
    fs::create_dir_all(&empty).unwrap();
    let out = hoist_cmd()
        .env("DOCKER_CONFIG", &empty)
        .env("REGISTRY_AUTH_FILE", &auth)
        .args(["push", &src, &format!("{}/podman/app:v1", reg.host())])
        .output()
        .unwrap();
    assert_success("push with REGISTRY_AUTH_FILE", &out);
}
