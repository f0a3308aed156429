//! Hostile input: every case checks the error (non-zero exit, a message naming the
//! file/reference/digest) and that the destination was not touched (no new blobs or tags).

#[allow(unused_imports)] // not every test file uses every re-export
use crate::common;
use crate::support;

use std::collections::HashMap;
use std::io::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};

use common::*;
use support::*;

const MIB: usize = 1 << 20;

/// A destination layout holding one good image, and a snapshot to compare against.
fn seeded_dst(work: &Path) -> (std::path::PathBuf, Vec<String>, Vec<u8>) {
    let good = work.join("good");
    image_layout(&good, "v1", &[1000], 99);
    let dst = work.join("dst");
    assert_success(
        "seed",
        &hoist(["-q", "copy", &format!("oci:{}:v1", good.display()), &format!("oci:{}:keep", dst.display())]),
    );
    let snap = tree(&dst);
    let idx = std::fs::read(dst.join("index.json")).unwrap();
    (dst, snap, idx)
}

#[track_caller]
fn assert_failed_naming(out: &std::process::Output, names: &[&str]) -> String {
    let (so, se) = output_text(out);
    assert!(!out.status.success(), "expected failure\n{so}\n{se}");
    for n in names {
        assert!(se.contains(n), "error does not name {n:?}: {se}");
    }
    se
}

#[track_caller]
fn assert_untouched(dst: &Path, snap: &[String], idx: &[u8]) {
    assert_eq!(tree(dst), snap, "destination changed");
    assert_eq!(std::fs::read(dst.join("index.json")).unwrap(), idx, "index.json changed");
}

fn copy_into(src: &str, dst: &Path, tag: &str) -> std::process::Output {
    hoist(["-q", "copy", src, &format!("oci:{}:{tag}", dst.display())])
}

#[test]
fn malformed_manifest_in_layout() {
    let work = tempfile::tempdir().unwrap();
    let (dst, snap, idx) = seeded_dst(work.path());
    let src = work.path().join("src");
    let m = br#"{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": "#;
    let d = put_blob(&src, m);
    write_index(&src, &[("v1", m, &d)]);
    let out = copy_into(&format!("oci:{}:v1", src.display()), &dst, "bad");
    assert_failed_naming(&out, &[&d]);
    assert_eq!(out.status.code(), Some(2));
    assert_untouched(&dst, &snap, &idx);
}

#[test]
fn huge_manifest_refused() {
    let work = tempfile::tempdir().unwrap();
    let (dst, snap, idx) = seeded_dst(work.path());
    let src = work.path().join("src");
    let cfg = put_blob(&src, b"{}");
    let m = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg, "size": 2},
        "layers": [], "annotations": {"pad": "x".repeat(5 * MIB)},
    })
    .to_string();
    let d = put_blob(&src, m.as_bytes());
    write_index(&src, &[("v1", m.as_bytes(), &d)]);
    let out = copy_into(&format!("oci:{}:v1", src.display()), &dst, "bad");
    let se = assert_failed_naming(&out, &[&d]);
    assert!(se.contains("limit"), "{se}");
    assert_untouched(&dst, &snap, &idx);
}

#[test]
fn wrong_descriptor_size_refused_by_layout_and_registry() {
    let reg = TestRegistry::plain();
    let work = tempfile::tempdir().unwrap();
    let (dst, snap, idx) = seeded_dst(work.path());
    let src = work.path().join("src");
    let layer = random_bytes(300_000, 5);
    let ld = put_blob(&src, &layer);
    let cfg = put_blob(&src, b"{}");
    let m = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg, "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": layer.len() - 1}],
    })
    .to_string();
    let d = put_blob(&src, m.as_bytes());
    write_index(&src, &[("v1", m.as_bytes(), &d)]);
    let out = copy_into(&format!("oci:{}:v1", src.display()), &dst, "bad");
    assert_failed_naming(&out, &[&ld]);
    assert_eq!(out.status.code(), Some(5));
    assert!(!blob_path(&dst, &ld).exists());
    let idx_now = std::fs::read(dst.join("index.json")).unwrap();
    assert_eq!(idx_now, idx, "a tag was written");
    // the config (a good blob) may have been stored; nothing else
    let extra: Vec<_> = tree(&dst).into_iter().filter(|f| !snap.contains(f)).collect();
    assert!(extra.iter().all(|f| f.ends_with(cfg.trim_start_matches("sha256:"))), "{extra:?}");

    let out = hoist([
        "--insecure-registry",
        &reg.host(),
        "-q",
        "push",
        &format!("{}:v1", src.display()),
        &format!("{}/hostile/size:v1", reg.host()),
    ]);
    assert_failed_naming(&out, &[&ld]);
    assert_eq!(reg.count("PUT", "/manifests/"), 0, "a manifest was pushed");
    assert!(!registry_has_blob(&reg, "hostile/size", &ld));
}

fn registry_has_blob(reg: &TestRegistry, repo: &str, digest: &str) -> bool {
    let out = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-I", &format!("{}/v2/{repo}/blobs/{digest}", reg.url())])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "200"
}

fn registry_blob_data(reg: &TestRegistry, digest: &str) -> std::path::PathBuf {
    let hex = digest.trim_start_matches("sha256:");
    reg.data_dir().join(format!("docker/registry/v2/blobs/sha256/{}/{hex}/data", &hex[..2]))
}

#[test]
fn corrupt_blob_from_registry_refused_on_pull() {
    let reg = TestRegistry::plain();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    image_layout(&src, "v1", &[2 * MIB], 41);
    assert_success(
        "push",
        &hoist([
            "--insecure-registry",
            &reg.host(),
            "-q",
            "push",
            &format!("{}:v1", src.display()),
            &format!("{}/hostile/corrupt:v1", reg.host()),
        ]),
    );
    let (_, layers) = layers_of(&src);
    let ld = &layers[0];
    let data = registry_blob_data(&reg, ld);
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[MIB] ^= 0xff;
    std::fs::write(&data, &bytes).unwrap();

    let (dst, snap, idx) = seeded_dst(work.path());
    let out = hoist([
        "--insecure-registry",
        &reg.host(),
        "-q",
        "pull",
        &format!("{}/hostile/corrupt:v1", reg.host()),
        &format!("{}:bad", dst.display()),
    ]);
    assert_failed_naming(&out, &[ld]);
    assert_eq!(out.status.code(), Some(5));
    assert!(!blob_path(&dst, ld).exists(), "corrupt blob stored");
    assert_eq!(std::fs::read(dst.join("index.json")).unwrap(), idx, "a tag was written");
    let extra: Vec<_> = tree(&dst).into_iter().filter(|f| !snap.contains(f)).collect();
    assert!(extra.len() <= 1, "more than the config was stored: {extra:?}");
    assert_success("fsck", &hoist(["layout", "fsck", dst.to_str().unwrap()]));
}

/// (config digest, layer digests) of the only image of a layout.
fn layers_of(dir: &Path) -> (String, Vec<String>) {
    let idx: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let md = idx["manifests"][0]["digest"].as_str().unwrap();
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(blob_path(dir, md)).unwrap()).unwrap();
    let layers = m["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_string()).collect();
    (m["config"]["digest"].as_str().unwrap().to_string(), layers)
}

#[test]
fn corrupt_layout_blob_refused_on_push() {
    let reg = TestRegistry::plain();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    image_layout(&src, "v1", &[3 * MIB], 42);
    let (_, layers) = layers_of(&src);
    let p = blob_path(&src, &layers[0]);
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[10] ^= 0x01;
    std::fs::write(&p, &bytes).unwrap();
    for mode in ["auto", "chunked", "monolithic"] {
        let out = hoist([
            "--insecure-registry",
            &reg.host(),
            "-q",
            "--upload",
            mode,
            "--chunk-size-mib",
            "1",
            "push",
            &format!("{}:v1", src.display()),
            &format!("{}/hostile/push-{mode}:v1", reg.host()),
        ]);
        assert_failed_naming(&out, &[&layers[0]]);
        assert_eq!(out.status.code(), Some(5), "{mode}");
        assert!(!registry_has_blob(&reg, &format!("hostile/push-{mode}"), &layers[0]), "{mode}: registry has the blob");
    }
    assert_eq!(reg.count("PUT", "/manifests/"), 0, "a manifest was pushed");
}

// ---- archives -------------------------------------------------------------------------------

/// Append an entry with a raw (unchecked) name to `b`.
fn raw_entry(b: &mut tar::Builder<Vec<u8>>, name: &str, kind: tar::EntryType, link: Option<&str>, data: &[u8]) {
    let mut h = tar::Header::new_ustar();
    {
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(l) = link {
            old.linkname[..l.len()].copy_from_slice(l.as_bytes());
        }
    }
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    if kind.is_character_special() || kind.is_block_special() {
        h.set_device_major(1).unwrap();
        h.set_device_minor(3).unwrap();
    }
    h.set_cksum();
    b.append(&h, data).unwrap();
}

/// An oci-archive of a good one-image layout plus `extra` entries (added first).
fn archive_with(work: &Path, name: &str, extra: &dyn Fn(&mut tar::Builder<Vec<u8>>, &str)) -> std::path::PathBuf {
    let lay = work.join(format!("lay-{name}"));
    image_layout(&lay, "v1", &[4000], 77);
    let (_, layers) = layers_of(&lay);
    let mut b = tar::Builder::new(Vec::new());
    extra(&mut b, layers[0].trim_start_matches("sha256:"));
    for f in tree(&lay) {
        let data = std::fs::read(lay.join(&f)).unwrap();
        raw_entry(&mut b, &f, tar::EntryType::Regular, None, &data);
    }
    let bytes = b.into_inner().unwrap();
    let p = work.join(format!("{name}.tar"));
    std::fs::File::create(&p).unwrap().write_all(&bytes).unwrap();
    p
}

#[test]
fn hostile_tar_entries_refused() {
    let work = tempfile::tempdir().unwrap();
    type Extra = Box<dyn Fn(&mut tar::Builder<Vec<u8>>, &str)>;
    let cases: Vec<(&str, Extra, &str)> = vec![
        (
            "dotdot",
            Box::new(|b, _| raw_entry(b, "blobs/../../evil", tar::EntryType::Regular, None, b"x")),
            "../../evil",
        ),
        ("absolute", Box::new(|b, _| raw_entry(b, "/etc/evil", tar::EntryType::Regular, None, b"x")), "/etc/evil"),
        (
            "symlink-escape",
            Box::new(|b, _| {
                raw_entry(b, "blobs/sha256/link", tar::EntryType::Symlink, Some("../../../etc/passwd"), b"")
            }),
            "blobs/sha256/link",
        ),
        (
            "symlink-absolute",
            Box::new(|b, _| raw_entry(b, "blobs/sha256/abs", tar::EntryType::Symlink, Some("/etc/passwd"), b"")),
            "blobs/sha256/abs",
        ),
        (
            "hardlink-escape",
            Box::new(|b, _| raw_entry(b, "blobs/sha256/hard", tar::EntryType::Link, Some("../../outside"), b"")),
            "../../outside",
        ),
        (
            "chardev",
            Box::new(|b, _| raw_entry(b, "blobs/sha256/dev", tar::EntryType::Char, None, b"")),
            "blobs/sha256/dev",
        ),
        (
            "fifo",
            Box::new(|b, _| raw_entry(b, "blobs/sha256/fifo", tar::EntryType::Fifo, None, b"")),
            "blobs/sha256/fifo",
        ),
    ];
    for (name, extra, named) in cases {
        let tarp = archive_with(work.path(), name, extra.as_ref());
        for transport in ["oci-archive", "docker-archive"] {
            let out_dir = work.path().join(format!("out-{name}-{transport}"));
            let out = hoist([
                "-q",
                "copy",
                &format!("{transport}:{}", tarp.display()),
                &format!("oci:{}", out_dir.display()),
            ]);
            let se = assert_failed_naming(&out, &[named]);
            assert!(se.contains(&tarp.display().to_string()), "{name}/{transport}: archive not named: {se}");
            assert_eq!(out.status.code(), Some(2), "{name}/{transport}: {se}");
            assert!(
                tree(&out_dir).iter().all(|f| f == "oci-layout" || f == "index.json"),
                "{name}: {:?}",
                tree(&out_dir)
            );
        }
    }
}

// ---- hostile registries -----------------------------------------------------------------------

/// One request seen by [`MiniServer`].
#[derive(Clone, Debug)]
struct SeenRequest {
    method: String,
    path: String,
    headers: HashMap<String, String>,
}

type Handler = Arc<dyn Fn(&SeenRequest) -> (u16, Vec<(String, String)>, Vec<u8>) + Send + Sync>;

/// A tiny HTTP/1.1 server on loopback (its own thread and runtime), one request per connection.
struct MiniServer {
    port: u16,
    seen: Arc<Mutex<Vec<SeenRequest>>>,
}

impl MiniServer {
    fn start(handler: Handler) -> MiniServer {
        let seen: Arc<Mutex<Vec<SeenRequest>>> = Arc::default();
        let seen2 = seen.clone();
        let port = hoist_testkit::hostile::serve_connections(move |sock| {
            let (handler, seen) = (handler.clone(), seen2.clone());
            async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
                let mut r = BufReader::new(sock);
                let Some(hoist_testkit::hostile::RequestHead { method, path, headers }) =
                    hoist_testkit::hostile::read_request_head(&mut r).await
                else {
                    return;
                };
                let len: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
                let mut body = vec![0u8; len.min(64 << 20)];
                let _ = r.read_exact(&mut body).await;
                let req = SeenRequest { method, path, headers };
                seen.lock().unwrap().push(req.clone());
                let (status, hdrs, body) = handler(&req);
                let mut resp =
                    format!("HTTP/1.1 {status} X\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
                for (k, v) in hdrs {
                    resp.push_str(&format!("{k}: {v}\r\n"));
                }
                resp.push_str("\r\n");
                let mut sock = r.into_inner();
                let _ = sock.write_all(resp.as_bytes()).await;
                if req.method != "HEAD" {
                    let _ = sock.write_all(&body).await;
                }
                let _ = sock.shutdown().await;
            }
        });
        MiniServer { port, seen }
    }
    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
    fn seen(&self) -> Vec<SeenRequest> {
        self.seen.lock().unwrap().clone()
    }
}

fn h(k: &str, v: &str) -> (String, String) {
    (k.to_string(), v.to_string())
}

/// A registry that redirects blob GETs to another host: credentials must not follow.
#[test]
fn redirect_to_another_host_drops_credentials() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    image_layout(&src, "v1", &[100_000], 55);
    let (cfg, layers) = layers_of(&src);
    let idx: serde_json::Value = serde_json::from_slice(&std::fs::read(src.join("index.json")).unwrap()).unwrap();
    let md = idx["manifests"][0]["digest"].as_str().unwrap().to_string();
    let manifest = std::fs::read(blob_path(&src, &md)).unwrap();
    let mut blobs: HashMap<String, Vec<u8>> = HashMap::new();
    for d in [cfg.clone(), layers[0].clone()] {
        blobs.insert(d.clone(), std::fs::read(blob_path(&src, &d)).unwrap());
    }
    let blobs = Arc::new(blobs);
    let b2 = blobs.clone();
    let storage = MiniServer::start(Arc::new(move |r: &SeenRequest| {
        let d = r.path.rsplit('/').next().unwrap_or("").split('?').next().unwrap_or("").to_string();
        match b2.get(&d) {
            Some(b) => (200, vec![h("Content-Type", "application/octet-stream")], b.clone()),
            None => (404, vec![], vec![]),
        }
    }));
    let storage_host = storage.host();
    let m2 = manifest.clone();
    let registry = MiniServer::start(Arc::new(move |r: &SeenRequest| {
        if !r.headers.contains_key("authorization") {
            return (401, vec![h("WWW-Authenticate", "Basic realm=\"mini\"")], vec![]);
        }
        if r.path.contains("/manifests/") {
            let ct = h("Content-Type", "application/vnd.oci.image.manifest.v1+json");
            return (200, vec![ct, h("Docker-Content-Digest", &md)], m2.clone());
        }
        if let Some(d) = r.path.split("/blobs/").nth(1) {
            return (307, vec![h("Location", &format!("http://{storage_host}/store/{d}"))], vec![]);
        }
        (200, vec![], b"{}".to_vec())
    }));
    let out_dir = work.path().join("out");
    let out = hoist([
        "--creds",
        "user:hunter2-secret",
        "--insecure-registry",
        &registry.host(),
        "-q",
        "pull",
        &format!("{}/r/img:v1", registry.host()),
        &format!("{}:v1", out_dir.display()),
    ]);
    let (so, se) = output_text(&out);
    assert!(out.status.success(), "pull via redirect failed\n{so}\n{se}");
    let at_storage = storage.seen();
    assert!(at_storage.len() >= 2, "blobs were not fetched from the redirect target: {at_storage:?}");
    for r in &at_storage {
        assert!(!r.headers.contains_key("authorization"), "credentials sent to another host: {r:?}");
    }
    assert!(registry.seen().iter().any(|r| r.headers.contains_key("authorization")));
    assert_success("fsck", &hoist(["layout", "fsck", out_dir.to_str().unwrap()]));
}

/// An upload Location on another host is refused before any byte goes there.
#[test]
fn upload_location_to_another_host_refused() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    image_layout(&src, "v1", &[100_000], 56);
    let elsewhere = MiniServer::start(Arc::new(|_r: &SeenRequest| (202, vec![], vec![])));
    let other = elsewhere.host();
    let registry = MiniServer::start(Arc::new(move |r: &SeenRequest| match r.method.as_str() {
        "HEAD" => (404, vec![], vec![]),
        "POST" => {
            (202, vec![h("Location", &format!("http://{other}/v2/r/blobs/uploads/abc")), h("Range", "0-0")], vec![])
        }
        _ => (200, vec![], b"{}".to_vec()),
    }));
    let out = hoist([
        "--insecure-registry",
        &registry.host(),
        "-q",
        "push",
        &format!("{}:v1", src.display()),
        &format!("{}/r/img:v1", registry.host()),
    ]);
    let se = assert_failed_naming(&out, &[&registry.host(), "another host"]);
    assert!(elsewhere.seen().is_empty(), "data sent to the other host: {:?} ({se})", elsewhere.seen());
    assert!(registry.seen().iter().all(|r| !r.path.contains("/manifests/") || r.method != "PUT"));
}
