//! Security and bounds of the registry client (issue 13), against hostile servers on
//! 127.0.0.1: credentials go only to their registry, plain HTTP only for loopback, every body
//! is bounded, pagination and uploads end, a trickle is a stall, a tag's digest is checked,
//! credential helpers neither stall nor leak processes, `hoist login` never loses entries,
//! and registry text reaches the terminal escaped.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::support::*;
use base64::Engine;

// ---- a hostile registry ------------------------------------------------------------------------

/// One request the server saw.
#[derive(Clone, Debug)]
struct Req {
    method: String,
    path: String,
    headers: HashMap<String, String>,
}

impl Req {
    fn auth(&self) -> Option<&str> {
        self.headers.get("authorization").map(String::as_str)
    }
}

/// How a reply's body is sent.
enum Body {
    /// With `Content-Length`.
    Bytes(Vec<u8>),
    /// `prefix`, then `n` bytes of `a`, without a length (the body ends when the connection does).
    Huge(Vec<u8>, u64),
    /// With `Content-Length`, one byte a second.
    Trickle(Vec<u8>),
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Body,
}

fn reply(status: u16, headers: &[(&str, &str)], body: impl Into<Vec<u8>>) -> Reply {
    Reply {
        status,
        headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        body: Body::Bytes(body.into()),
    }
}

type Handler = Arc<dyn Fn(&Req) -> Reply + Send + Sync>;

/// A small HTTP/1.1 server on 127.0.0.1 (its own thread and runtime), one request per
/// connection, that answers what its handler says and records every request.
struct Hostile {
    port: u16,
    seen: Arc<Mutex<Vec<Req>>>,
}

impl Hostile {
    fn start(handler: impl Fn(&Req) -> Reply + Send + Sync + 'static) -> Hostile {
        let handler: Handler = Arc::new(handler);
        let seen: Arc<Mutex<Vec<Req>>> = Arc::default();
        let seen2 = seen.clone();
        let port =
            hoist_testkit::hostile::serve_connections(move |sock| serve_one(sock, handler.clone(), seen2.clone()));
        Hostile { port, seen }
    }
    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
    fn seen(&self) -> Vec<Req> {
        self.seen.lock().unwrap().clone()
    }
    fn count(&self, method: &str, part: &str) -> usize {
        self.seen().iter().filter(|r| r.method == method && r.path.contains(part)).count()
    }
}

async fn serve_one(sock: tokio::net::TcpStream, handler: Handler, seen: Arc<Mutex<Vec<Req>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
    let mut r = BufReader::new(sock);
    let Some(hoist_testkit::hostile::RequestHead { method, path, headers }) =
        hoist_testkit::hostile::read_request_head(&mut r).await
    else {
        return;
    };
    // the request body is read and dropped
    let mut left: u64 = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut buf = vec![0u8; 64 << 10];
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        match r.read(&mut buf[..n]).await {
            Ok(0) | Err(_) => break,
            Ok(n) => left -= n as u64,
        }
    }
    let req = Req { method, path, headers };
    seen.lock().unwrap().push(req.clone());
    let rep = handler(&req);
    let mut head = format!("HTTP/1.1 {} X\r\nConnection: close\r\n", rep.status);
    match &rep.body {
        Body::Bytes(b) | Body::Trickle(b) => head.push_str(&format!("Content-Length: {}\r\n", b.len())),
        Body::Huge(..) => {}
    }
    for (k, v) in &rep.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut sock = r.into_inner();
    if sock.write_all(head.as_bytes()).await.is_err() || req.method == "HEAD" {
        let _ = sock.shutdown().await;
        return;
    }
    match rep.body {
        Body::Bytes(b) => {
            let _ = sock.write_all(&b).await;
        }
        Body::Huge(prefix, n) => {
            let _ = sock.write_all(&prefix).await;
            let chunk = vec![b'a'; 64 << 10];
            let mut sent = 0u64;
            while sent < n {
                if sock.write_all(&chunk).await.is_err() {
                    return;
                }
                sent += chunk.len() as u64;
            }
        }
        Body::Trickle(b) => {
            for byte in b {
                if sock.write_all(&[byte]).await.is_err() || sock.flush().await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    let _ = sock.shutdown().await;
}

// ---- running hoist -----------------------------------------------------------------------------

/// `hoist` with an empty docker config and none of the user's credentials.
fn hoist_clean(config_dir: &Path) -> Command {
    let mut c = hoist_cmd();
    c.env("DOCKER_CONFIG", config_dir)
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("HOIST_CREDS")
        .stdin(Stdio::null());
    c
}

/// Run `cmd`, killing it after `limit`: (output, peak RSS in KiB, elapsed).
fn run_bounded(cmd: &mut Command, limit: Duration) -> (Output, i64, Duration) {
    let start = Instant::now();
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let pid = child.id() as libc::pid_t;
    let (mut so, mut se) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut so, &mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut se, &mut v);
        v
    });
    let killer = {
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let d2 = done.clone();
        std::thread::spawn(move || {
            while start.elapsed() < limit {
                if d2.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            unsafe { libc::kill(pid, libc::SIGKILL) };
        });
        done
    };
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid);
    killer.store(true, std::sync::atomic::Ordering::Relaxed);
    let elapsed = start.elapsed();
    use std::os::unix::process::ExitStatusExt;
    let out = Output {
        status: std::process::ExitStatus::from_raw(status),
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
    };
    std::mem::forget(child); // reaped by wait4 above
    assert!(elapsed < limit, "hoist did not end within {limit:?} (killed)\n{}", String::from_utf8_lossy(&out.stderr));
    (out, usage.ru_maxrss, elapsed)
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// What one bounded run of hoist against a hostile server gave.
struct Ran {
    /// exit code (`None`: killed by a signal)
    code: Option<i32>,
    /// stderr as text
    se: String,
    /// hoist's peak RSS in KiB
    rss: i64,
    elapsed: Duration,
}

impl Hostile {
    /// Runs `hoist --insecure-registry HOST ARGS...` with an empty docker config, killed after
    /// `limit` seconds; `{host}` in an argument stands for this server's `host:port`.
    fn hoist(&self, args: &[&str], limit: u64) -> Ran {
        let cfg = tempfile::tempdir().unwrap();
        self.hoist_in(cfg.path(), &[], args, limit)
    }

    /// [`Hostile::hoist`] with the docker config dir `cfg` and extra environment.
    fn hoist_in(&self, cfg: &Path, env: &[(&str, String)], args: &[&str], limit: u64) -> Ran {
        let host = self.host();
        let mut cmd = hoist_clean(cfg);
        cmd.envs(env.iter().map(|(k, v)| (k, v))).args(["--insecure-registry", host.as_str()]);
        cmd.args(args.iter().map(|a| a.replace("{host}", &host)));
        let (out, rss, elapsed) = run_bounded(&mut cmd, Duration::from_secs(limit));
        Ran { code: out.status.code(), se: stderr_of(&out), rss, elapsed }
    }
}

const MANIFEST_JSON: &str = "application/vnd.oci.image.manifest.v1+json";

/// A layout at `dir` tagged v1 and its documents: (manifest bytes, manifest digest, blobs).
fn small_image(dir: &Path, layer: usize) -> (Vec<u8>, String, HashMap<String, Vec<u8>>) {
    let md = image_layout(dir, "v1", &[layer], 5);
    let manifest = std::fs::read(blob_path(dir, &md)).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let mut blobs = HashMap::new();
    let mut ds = vec![v["config"]["digest"].as_str().unwrap().to_string()];
    ds.extend(v["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_string()));
    for d in ds {
        blobs.insert(d.clone(), std::fs::read(blob_path(dir, &d)).unwrap());
    }
    (manifest, md, blobs)
}

// ---- 1. credentials per registry ---------------------------------------------------------------

/// A registry that wants basic auth and records what it was sent.
fn basic_auth_registry() -> Hostile {
    Hostile::start(|r| match r.auth() {
        Some(_) => reply(404, &[], ""),
        None => reply(401, &[("WWW-Authenticate", "Basic realm=\"hostile\"")], ""),
    })
}

#[test]
fn a_credential_goes_only_to_its_registry() {
    let (a, b) = (basic_auth_registry(), basic_auth_registry());
    let secret = base64::engine::general_purpose::STANDARD.encode("bob:b-only-s3cret");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut opts = hoist::transport::registry::RegistryOptions {
            insecure: vec![a.host(), b.host()],
            anonymous: true,
            ..Default::default()
        };
        opts.set_credential(
            &b.host(),
            hoist::transport::registry::credentials::Credential::Basic {
                username: "bob".into(),
                password: "b-only-s3cret".into(),
            },
        );
        let client = hoist::transport::registry::Client::new(opts).unwrap();
        for h in [a.host(), b.host()] {
            let r: hoist::model::reference::Reference = format!("{h}/x/y:v1").parse().unwrap();
            let _ = client.repository(&r).get_manifest("v1").await;
        }
    });
    assert!(a.seen().iter().all(|r| r.auth().is_none()), "registry A got B's credential: {:?}", a.seen());
    assert!(b.seen().iter().any(|r| r.auth() == Some(&format!("Basic {secret}"))), "B never got its credential");

    // Docker Hub's three names are one key.
    let k = hoist::transport::registry::credentials::registry_key;
    assert_eq!(k("index.docker.io"), "docker.io");
    assert_eq!(k("registry-1.docker.io"), "docker.io");
    assert_eq!(k("https://index.docker.io/v1/"), "docker.io");
    assert_eq!(k("Docker.IO"), "docker.io");
}

#[test]
fn creds_for_a_copy_between_two_registries_are_refused_not_sent_to_both() {
    let (a, b) = (basic_auth_registry(), basic_auth_registry());
    let (bh, to) = (b.host(), format!("{}/x/y:v1", b.host()));
    let args =
        ["--creds", "bob:b-only-s3cret", "--insecure-registry", bh.as_str(), "copy", "{host}/x/y:v1", to.as_str()];
    let Ran { code, se, .. } = a.hoist(&args, 60);
    assert_eq!(code, Some(2), "{se}");
    assert!(se.contains("ambiguous") && se.contains(&a.host()) && se.contains(&b.host()), "{se}");
    assert!(a.seen().iter().chain(b.seen().iter()).all(|r| r.auth().is_none()), "credentials were sent");
}

#[test]
fn creds_reach_the_one_registry_a_command_names() {
    let srv = basic_auth_registry();
    // a password that looks like a reference must not count as a second registry
    let Ran { code, se, .. } = srv.hoist(&["--creds", "bob:pa.ss:1/w0rd", "inspect", "{host}/x/y:v1"], 60);
    assert_eq!(code, Some(3), "{se}");
    let want = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("bob:pa.ss:1/w0rd"));
    assert!(srv.seen().iter().any(|r| r.auth() == Some(want.as_str())), "the registry never got --creds");
}

// ---- 2. plain HTTP only for loopback -----------------------------------------------------------

#[test]
fn plain_http_fallback_is_judged_on_the_parsed_address() {
    use hoist::transport::registry::http::is_loopback;
    for h in ["localhost:5000", "127.0.0.1:5000", "127.1.2.3", "[::1]:5000"] {
        assert!(is_loopback(h), "{h}");
    }
    for h in ["127.evil.com", "127.0.0.1.nip.io:5000", "localhost.evil.com:5000", "[::1].evil.com"] {
        assert!(!is_loopback(h), "{h} must not be loopback");
    }
}

// ---- 3. every body bounded ---------------------------------------------------------------------

#[test]
fn an_endless_tag_list_is_an_error_in_bounded_memory() {
    // hoist's peak RSS, not this test binary's: see in_own_process!
    hoist_testkit::in_own_process!();
    let srv = Hostile::start(|r| {
        if r.path.contains("/tags/list") {
            Reply { status: 200, headers: vec![], body: Body::Huge(b"{\"tags\":[\"".to_vec(), 400 << 20) }
        } else {
            reply(200, &[], "{}")
        }
    });
    let Ran { code, se, rss, .. } = srv.hoist(&["tags", "{host}/x/y"], 60);
    assert_eq!(code, Some(2), "{se}");
    assert!(se.contains(&srv.host()) && se.contains("tag list"), "{se}");
    assert!(rss < 64 * 1024, "peak RSS {rss} KiB >= 64 MiB");
}

#[test]
fn an_endless_token_answer_is_an_error_in_bounded_memory() {
    // hoist's peak RSS, not this test binary's: see in_own_process!
    hoist_testkit::in_own_process!();
    let srv = Arc::new(Mutex::new(String::new()));
    let realm = srv.clone();
    let srv_ = Hostile::start(move |r| {
        if r.path.starts_with("/token") {
            return Reply { status: 200, headers: vec![], body: Body::Huge(b"{\"token\":\"".to_vec(), 400 << 20) };
        }
        let challenge = format!("Bearer realm=\"http://{}/token\",service=\"hostile\"", realm.lock().unwrap());
        reply(401, &[("WWW-Authenticate", challenge.as_str())], "")
    });
    *srv.lock().unwrap() = srv_.host();
    let Ran { code, se, rss, .. } = srv_.hoist(&["inspect", "{host}/x/y:v1"], 60);
    assert_eq!(code, Some(4), "{se}");
    assert!(se.contains(&srv_.host()) && se.contains("token"), "{se}");
    assert!(rss < 64 * 1024, "peak RSS {rss} KiB >= 64 MiB");
}

#[test]
fn a_trickled_error_body_does_not_hold_the_command() {
    let body = format!(r#"{{"errors":[{{"code":"DENIED","message":"{}"}}]}}"#, "slow ".repeat(40));
    let srv = Hostile::start(move |r| {
        if r.path.contains("/manifests/") {
            return Reply { status: 400, headers: vec![], body: Body::Trickle(body.clone().into_bytes()) };
        }
        reply(200, &[], "{}")
    });
    let Ran { code, se, elapsed, .. } = srv.hoist(&["inspect", "{host}/x/y:v1"], 90);
    assert!(code != Some(0), "{se}");
    assert!(se.contains(&srv.host()) && se.contains("400"), "{se}");
    assert!(elapsed < Duration::from_secs(30), "took {elapsed:?} for a trickled error body");
}

// ---- 4. pagination ends ------------------------------------------------------------------------

#[test]
fn a_cyclic_tag_list_link_is_an_error() {
    let srv = Hostile::start(|r| {
        if r.path.contains("/tags/list") {
            // every page links back to the first
            reply(200, &[("Link", "</v2/x/y/tags/list?n=1000>; rel=\"next\"")], r#"{"name":"x/y","tags":["a"]}"#)
        } else {
            reply(200, &[], "{}")
        }
    });
    let Ran { code, se, .. } = srv.hoist(&["tags", "{host}/x/y"], 60);
    assert_eq!(code, Some(2), "{se}");
    assert!(se.contains(&srv.host()) && se.contains("links back"), "{se}");
    assert!(srv.count("GET", "/tags/list") <= 3, "{} pages fetched", srv.count("GET", "/tags/list"));
}

#[test]
fn an_endless_tag_list_pagination_stops_after_a_bound() {
    let srv = Hostile::start(|r| {
        if r.path.contains("/tags/list") {
            let n = r.path.rsplit("last=t").next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0) + 1;
            let link = format!("</v2/x/y/tags/list?n=1000&last=t{n}>; rel=\"next\"");
            reply(200, &[("Link", link.as_str())], format!(r#"{{"name":"x/y","tags":["t{n}"]}}"#))
        } else {
            reply(200, &[], "{}")
        }
    });
    let Ran { code, se, .. } = srv.hoist(&["tags", "{host}/x/y"], 120);
    assert_eq!(code, Some(2), "{se}");
    assert!(se.contains(&srv.host()) && se.contains("more than 1000 pages"), "{se}");
    assert_eq!(srv.count("GET", "/tags/list"), 1000);
}

/// A registry serving one image by tag and a referrers API answered by `referrers`.
fn referrers_registry(work: &Path, referrers: impl Fn(&Req) -> Reply + Send + Sync + 'static) -> (Hostile, String) {
    let (manifest, md, _) = small_image(&work.join("src"), 1000);
    let md2 = md.clone();
    let srv = Hostile::start(move |r| {
        if r.path.contains("/manifests/") {
            return reply(
                200,
                &[("Content-Type", MANIFEST_JSON), ("Docker-Content-Digest", md2.as_str())],
                manifest.clone(),
            );
        }
        if r.path.contains("/referrers/") {
            return referrers(r);
        }
        reply(200, &[], "{}")
    });
    (srv, md)
}

const INDEX_JSON: &str = "application/vnd.oci.image.index.v1+json";

#[test]
fn a_cyclic_referrers_link_is_an_error() {
    let work = tempfile::tempdir().unwrap();
    let (srv, md) = referrers_registry(work.path(), |r| {
        let link = format!("<{}>; rel=\"next\"", r.path);
        reply(
            200,
            &[("Content-Type", INDEX_JSON), ("Link", link.as_str())],
            format!(r#"{{"schemaVersion":2,"mediaType":"{INDEX_JSON}","manifests":[]}}"#),
        )
    });
    let Ran { code, se, .. } = srv.hoist(&["referrers", "{host}/x/y:v1"], 60);
    assert_eq!(code, Some(2), "{se}");
    assert!(se.contains(&srv.host()) && se.contains(&md) && se.contains("links back"), "{se}");
}

#[test]
fn an_endless_referrers_page_is_an_error_in_bounded_memory() {
    // hoist's peak RSS, not this test binary's: see in_own_process!
    hoist_testkit::in_own_process!();
    let work = tempfile::tempdir().unwrap();
    let (srv, _) = referrers_registry(work.path(), |_| Reply {
        status: 200,
        headers: vec![("Content-Type".into(), INDEX_JSON.into())],
        body: Body::Huge(b"{\"manifests\":[\"".to_vec(), 400 << 20),
    });
    let Ran { code, se, rss, .. } = srv.hoist(&["referrers", "{host}/x/y:v1"], 60);
    assert_eq!(code, Some(2), "{se}");
    assert!(se.contains(&srv.host()) && se.contains("referrers"), "{se}");
    assert!(rss < 64 * 1024, "peak RSS {rss} KiB >= 64 MiB");
}

// ---- 5. an upload that does not advance ends ---------------------------------------------------

#[test]
fn an_upload_stuck_at_range_0_0_stops_with_an_error() {
    let srv = Hostile::start(|r| {
        let loc = ("Location", "/v2/x/y/blobs/uploads/s1");
        match r.method.as_str() {
            "HEAD" => reply(404, &[], ""),
            "POST" => reply(202, &[loc, ("Range", "0-0")], ""),
            "PATCH" => reply(202, &[loc, ("Range", "0-0")], ""),
            "GET" if r.path.contains("/blobs/uploads/") => reply(204, &[loc, ("Range", "0-0")], ""),
            "PUT" => reply(400, &[], r#"{"errors":[{"code":"BLOB_UPLOAD_INVALID","message":"no"}]}"#),
            _ => reply(200, &[], "{}"),
        }
    });
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    image_layout(&src, "v1", &[600_000], 3);
    let Ran { code, se, .. } = srv.hoist(
        &[
            "--upload",
            "chunked",
            "--chunk-size-mib",
            "1",
            "--retries",
            "3",
            "-q",
            "push",
            &format!("{}:v1", src.display()),
            "{host}/x/y:v1",
        ],
        90,
    );
    assert!(code != Some(0), "{se}");
    assert!(se.contains(&srv.host()) && se.contains("does not advance"), "{se}");
    let patches = srv.count("PATCH", "/blobs/uploads/");
    assert!(patches <= 2 * 3 * 3, "{patches} PATCHes for two blobs with --retries 3");
}

// ---- 6. a trickle is a stall -------------------------------------------------------------------

#[test]
fn a_body_trickled_at_one_byte_a_second_ends_like_a_stall() {
    let work = tempfile::tempdir().unwrap();
    let (manifest, md, blobs) = small_image(&work.path().join("src"), 50_000);
    let srv = Hostile::start(move |r| {
        if r.path.contains("/manifests/") {
            return reply(
                200,
                &[("Content-Type", MANIFEST_JSON), ("Docker-Content-Digest", md.as_str())],
                manifest.clone(),
            );
        }
        if let Some(d) = r.path.split("/blobs/").nth(1) {
            if let Some(b) = blobs.get(d) {
                return Reply { status: 200, headers: vec![], body: Body::Trickle(b.clone()) };
            }
            return reply(404, &[], "");
        }
        reply(200, &[], "{}")
    });
    let Ran { code, se, elapsed, .. } = srv.hoist(
        &[
            "--read-timeout",
            "2",
            "--retries",
            "2",
            "-q",
            "pull",
            "{host}/x/y:v1",
            &format!("{}:v1", work.path().join("out").display()),
        ],
        60,
    );
    assert!(code != Some(0), "{se}");
    assert!(se.contains(&srv.host()) && se.contains("stalled"), "{se}");
    assert!(elapsed < Duration::from_secs(30), "took {elapsed:?}");
}

// ---- 7. Docker-Content-Digest is checked -------------------------------------------------------

#[test]
fn a_tag_whose_bytes_differ_from_docker_content_digest_is_an_integrity_error() {
    let work = tempfile::tempdir().unwrap();
    let (manifest, md, _) = small_image(&work.path().join("src"), 1000);
    let claimed = format!("sha256:{}", "0".repeat(64));
    let c2 = claimed.clone();
    let srv = Hostile::start(move |r| {
        if r.path.contains("/manifests/") {
            return reply(
                200,
                &[("Content-Type", MANIFEST_JSON), ("Docker-Content-Digest", c2.as_str())],
                manifest.clone(),
            );
        }
        reply(200, &[], "{}")
    });
    let Ran { code, se, .. } = srv.hoist(&["inspect", "{host}/x/y:v1"], 60);
    assert_eq!(code, Some(5), "{se}");
    assert!(se.contains(&srv.host()) && se.contains(&claimed) && se.contains(&md), "{se}");
}

// ---- 8. credential helpers ---------------------------------------------------------------------

/// A directory holding an executable `docker-credential-<name>` with `script`.
fn helper_dir(name: &str, script: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join(format!("docker-credential-{name}"));
    std::fs::write(&p, format!("#!/bin/sh\n{script}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

fn path_with(dir: &Path) -> String {
    format!("{}:{}", dir.display(), std::env::var("PATH").unwrap_or_default())
}

#[test]
fn a_helper_printing_more_than_a_pipe_holds_does_not_stall() {
    let srv = Hostile::start(|r| {
        let good = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("hu:hp"));
        match r.auth() {
            Some(a) if a == good => reply(404, &[], r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"no"}]}"#),
            _ => reply(401, &[("WWW-Authenticate", "Basic realm=\"h\"")], ""),
        }
    });
    let pad = "x".repeat(300 << 10);
    let helpers = helper_dir(
        "big",
        &format!("cat >/dev/null; printf '{{\"Username\":\"hu\",\"Secret\":\"hp\",\"Pad\":\"{pad}\"}}'"),
    );
    let cfg = tempfile::tempdir().unwrap();
    std::fs::write(cfg.path().join("config.json"), format!(r#"{{"credHelpers":{{"{}":"big"}}}}"#, srv.host())).unwrap();
    let path = [("PATH", path_with(helpers.path()))];
    let Ran { code, se, elapsed, .. } = srv.hoist_in(cfg.path(), &path, &["inspect", "{host}/x/y:v1"], 60);
    // the helper's credential was used: the registry answered "not found" to it
    assert_eq!(code, Some(3), "{se}");
    assert!(elapsed < Duration::from_secs(20), "took {elapsed:?}: the helper stalled on a full pipe");
}

#[test]
fn a_helper_that_times_out_is_killed_with_its_children() {
    let srv = basic_auth_registry();
    let work = tempfile::tempdir().unwrap();
    let pidfile = work.path().join("child.pid");
    let helpers = helper_dir("hang", &format!("sleep 300 &\necho $! > {}\nsleep 300", pidfile.display()));
    let cfg = tempfile::tempdir().unwrap();
    std::fs::write(cfg.path().join("config.json"), format!(r#"{{"credHelpers":{{"{}":"hang"}}}}"#, srv.host()))
        .unwrap();
    let path = [("PATH", path_with(helpers.path()))];
    let Ran { code, se, .. } = srv.hoist_in(cfg.path(), &path, &["inspect", "{host}/x/y:v1"], 90);
    assert_eq!(code, Some(4), "{se}");
    assert!(se.contains("timed out") && se.contains(&srv.host()), "{se}");
    let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    // gone, or a zombie waiting for a reaper: not running
    std::thread::sleep(Duration::from_millis(500));
    let state = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let running = state.lines().any(|l| l.starts_with("State:") && !l.contains("Z") && !l.contains("X"));
    assert!(!running, "the helper's child {pid} still runs: {state}");
}

// ---- 9. hoist login storage --------------------------------------------------------------------

/// A registry that accepts anyone (for `hoist login`'s check).
fn open_registry() -> Hostile {
    Hostile::start(|_| reply(200, &[], "{}"))
}

fn login(cfg: &Path, registry: &Hostile, path: Option<&Path>) -> Ran {
    let env: Vec<_> = path.map(|p| ("PATH", path_with(p))).into_iter().collect();
    registry.hoist_in(cfg, &env, &["login", "{host}", "-u", "lu", "-p", "login-pw-123"], 60)
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[test]
fn login_refuses_an_invalid_config_instead_of_dropping_entries() {
    let srv = open_registry();
    let cfg = tempfile::tempdir().unwrap();
    let file = cfg.path().join("config.json");
    let broken = format!(r#"{{"auths":{{"other.example":{{"auth":"{}"}}}},"credHelpers":{{"#, b64("o:p"));
    std::fs::write(&file, &broken).unwrap();
    let Ran { code, se, .. } = login(cfg.path(), &srv, None);
    assert!(code != Some(0), "{se}");
    assert!(se.contains(&file.display().to_string()), "error does not name the file: {se}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), broken, "config.json was rewritten");
}

#[test]
fn login_writes_through_a_symlink_and_keeps_mode_and_other_entries() {
    let srv = open_registry();
    let work = tempfile::tempdir().unwrap();
    let real = work.path().join("real");
    std::fs::create_dir_all(&real).unwrap();
    let target = real.join("config.json");
    std::fs::write(&target, format!(r#"{{"auths":{{"other.example":{{"auth":"{}"}}}}}}"#, b64("o:p"))).unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o640)).unwrap();
    let cfg = work.path().join("cfg");
    std::fs::create_dir_all(&cfg).unwrap();
    std::os::unix::fs::symlink("../real/config.json", cfg.join("config.json")).unwrap();
    let Ran { code, se, .. } = login(&cfg, &srv, None);
    assert_eq!(code, Some(0), "{se}");
    assert!(std::fs::symlink_metadata(cfg.join("config.json")).unwrap().file_type().is_symlink(), "link replaced");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&target).unwrap()).unwrap();
    assert_eq!(v["auths"]["other.example"]["auth"], b64("o:p"), "{v}");
    assert_eq!(v["auths"][srv.host()]["auth"], b64("lu:login-pw-123"), "{v}");
    assert_eq!(std::fs::metadata(&target).unwrap().permissions().mode() & 0o777, 0o640);
}

#[test]
fn login_stores_through_the_configured_helper_not_in_the_file() {
    let srv = open_registry();
    let work = tempfile::tempdir().unwrap();
    let got = work.path().join("stored.json");
    let helpers = helper_dir("teststore", &format!("[ \"$1\" = store ] && cat > {} ; exit 0", got.display()));
    let cfg = tempfile::tempdir().unwrap();
    let file = cfg.path().join("config.json");
    std::fs::write(&file, r#"{"credsStore":"teststore"}"#).unwrap();
    let Ran { code, se, .. } = login(cfg.path(), &srv, Some(helpers.path()));
    assert_eq!(code, Some(0), "{se}");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(!text.contains(&b64("lu:login-pw-123")) && !text.contains("login-pw-123"), "secret in the file: {text}");
    let stored: serde_json::Value = serde_json::from_slice(&std::fs::read(&got).unwrap()).unwrap();
    assert_eq!(stored["Secret"], "login-pw-123");
    assert_eq!(stored["Username"], "lu");
    assert_eq!(stored["ServerURL"], srv.host());
}

#[test]
fn concurrent_logins_keep_every_entry() {
    const N: usize = 8;
    let servers: Vec<Hostile> = (0..N).map(|_| open_registry()).collect();
    let cfg = tempfile::tempdir().unwrap();
    std::fs::write(cfg.path().join("config.json"), r#"{"auths":{}}"#).unwrap();
    for _round in 0..3 {
        let children: Vec<_> = servers
            .iter()
            .map(|s| {
                hoist_clean(cfg.path())
                    .args(["--insecure-registry", &s.host(), "login", &s.host(), "-u", "lu", "-p", "pw"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for c in children {
            let out = c.wait_with_output().unwrap();
            assert!(out.status.success(), "{}", stderr_of(&out));
        }
    }
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(cfg.path().join("config.json")).unwrap()).unwrap();
    for s in &servers {
        assert_eq!(v["auths"][s.host()]["auth"], b64("lu:pw"), "lost {}: {v}", s.host());
    }
}

// ---- 10. registry text is escaped --------------------------------------------------------------

#[test]
fn control_characters_in_error_bodies_are_escaped() {
    let srv = Hostile::start(|r| {
        if r.path.contains("/manifests/") {
            return reply(
                400,
                &[("Content-Type", "application/json")],
                r#"{"errors":[{"code":"DENIED","message":"\u001b]0;pwned\u0007\u001b[2J go away"}]}"#,
            );
        }
        reply(200, &[], "{}")
    });
    let Ran { code, se, .. } = srv.hoist(&["inspect", "{host}/x/y:v1"], 60);
    assert!(code != Some(0), "{se}");
    assert!(se.contains("DENIED") && se.contains("go away") && se.contains(&srv.host()), "{se}");
    assert!(!se.contains('\u{1b}') && !se.contains('\u{7}'), "raw control characters reached stderr: {se:?}");
}
