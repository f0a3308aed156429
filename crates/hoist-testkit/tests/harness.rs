//! Tests of the test kit itself: the real registry harness (plain, auth, TLS) and the
//! fault-injecting proxy in front of it. They live in the kit's crate, so that hoist's own
//! integration test binary (`tests/it`) counts hoist's tests only.

use std::time::{Duration, Instant};

use hoist_testkit::proxy::{Fault, FaultProxy, Rule, RuleStats};
use hoist_testkit::registry::{parse_access_line, LoggedRequest, RegistryOpts, TestRegistry};
use hoist_testkit::tools::sha256 as digest_of;
use hoist_testkit::tools::*;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::StatusCode;

const REPO: &str = "harness/blobs";

fn blob(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

/// `base` + a Location that may be absolute or relative.
fn resolve(base: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        location.to_owned()
    } else {
        format!("{base}{location}")
    }
}

/// POST an upload session at `base`; returns the absolute upload URL.
async fn start_upload(client: &reqwest::Client, base: &str) -> String {
    let resp = client.post(format!("{base}/v2/{REPO}/blobs/uploads/")).send().await.expect("POST upload");
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let loc = resp.headers()[LOCATION].to_str().unwrap().to_owned();
    resolve(base, &loc)
}

fn with_digest(upload: &str, digest: &str) -> String {
    let sep = if upload.contains('?') { '&' } else { '?' };
    format!("{upload}{sep}digest={digest}")
}

/// Monolithic upload: POST, then PUT ?digest= with the whole body.
async fn upload_blob(client: &reqwest::Client, base: &str, data: &[u8]) -> reqwest::Response {
    let upload = start_upload(client, base).await;
    client
        .put(with_digest(&upload, &digest_of(data)))
        .header(CONTENT_TYPE, "application/octet-stream")
        .body(data.to_vec())
        .send()
        .await
        .expect("PUT blob")
}

async fn head_blob(client: &reqwest::Client, base: &str, digest: &str) -> StatusCode {
    client.head(format!("{base}/v2/{REPO}/blobs/{digest}")).send().await.expect("HEAD blob").status()
}

/// A body reqwest sends chunked (no Content-Length).
fn chunked_body(data: Vec<u8>) -> reqwest::Body {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = data.chunks(8192).map(|c| Ok(c.to_vec())).collect();
    reqwest::Body::wrap_stream(futures::stream::iter(chunks))
}

// ---------------------------------------------------------------------------------------------
// registry

#[tokio::test]
async fn registry_plain_answers_v2() {
    let reg = TestRegistry::plain();
    assert!(reg.url().starts_with("http://127.0.0.1:"));
    assert_eq!(reg.host(), format!("127.0.0.1:{}", reg.port()));
    let resp = reqwest::get(format!("{}/v2/", reg.url())).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(reg.data_dir().is_dir());
    let reqs = reg.requests();
    assert!(reqs.iter().any(|r| r.method == "GET" && r.path == "/v2/" && r.status == 200), "{reqs:?}");
}

#[tokio::test]
async fn registry_auth_wants_basic_credentials() {
    let reg = TestRegistry::start(RegistryOpts::auth("alice", "s3cret"));
    assert_eq!(reg.credentials(), Some(("alice", "s3cret")));
    let client = reqwest::Client::new();
    let url = format!("{}/v2/", reg.url());
    let resp = client.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let challenge = resp.headers()[WWW_AUTHENTICATE].to_str().unwrap();
    assert!(challenge.starts_with("Basic realm="), "{challenge}");
    let resp = client.get(&url).basic_auth("alice", Some("s3cret")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = client.get(&url).basic_auth("alice", Some("wrong")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn registry_tls_verifies_with_its_ca() {
    let reg = TestRegistry::start(RegistryOpts::tls());
    assert!(reg.url().starts_with("https://127.0.0.1:"));
    let names: Vec<_> =
        std::fs::read_dir(reg.cert_dir()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(names, ["ca.crt"]);

    let pem = std::fs::read(reg.ca_pem_path()).unwrap();
    let client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap();
    for host in [reg.host(), format!("localhost:{}", reg.port())] {
        let resp = client.get(format!("https://{host}/v2/")).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{host}");
    }
    assert_eq!(reg.http_client().get(format!("{}/v2/", reg.url())).send().await.unwrap().status(), StatusCode::OK);
    // without the CA: not trusted
    let untrusted = reqwest::Client::new();
    assert!(untrusted.get(format!("{}/v2/", reg.url())).send().await.is_err());
}

#[tokio::test]
async fn registry_tls_with_auth() {
    let reg = TestRegistry::start(RegistryOpts::auth("u", "p").with_tls());
    let client = reg.http_client();
    let url = format!("{}/v2/", reg.url());
    assert_eq!(client.get(&url).send().await.unwrap().status(), 401);
    let resp = client.get(&url).basic_auth("u", Some("p")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        reg.skopeo_args("dest"),
        [format!("--dest-cert-dir={}", reg.cert_dir().display()), "--dest-creds=u:p".to_owned()]
    );
}

#[test]
fn registry_stops_on_drop() {
    let reg = TestRegistry::plain();
    let host = reg.host();
    let dir = reg.dir().to_owned();
    let pgid = reg.process_group().expect("registry running");
    assert!(std::net::TcpStream::connect(&host).is_ok());
    drop(reg);
    assert!(!dir.exists(), "temp dir removed");
    // The whole process group is gone. (Not "the port is closed": in a parallel test run
    // another test's registry may take the freed port at once.)
    // Its members may take a moment to be reaped after the SIGKILL.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    // SAFETY: kill(2) with signal 0 only checks whether the group exists.
    while unsafe { libc::kill(-pgid, 0) } == 0 {
        assert!(std::time::Instant::now() < deadline, "registry process group {pgid} still exists after 10 s");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn access_log_lines_parse() {
    let l = r#"127.0.0.1 - - [24/Nov/2026:05:26:20 +0000] "GET /v2/foo/blobs/uploads/?x=1&y=2 HTTP/1.1" 404 88 "" "curl/7.88.1""#;
    assert_eq!(
        parse_access_line(l),
        Some(LoggedRequest {
            method: "GET".into(),
            path: "/v2/foo/blobs/uploads/?x=1&y=2".into(),
            proto: "HTTP/1.1".into(),
            status: 404
        })
    );
    assert_eq!(parse_access_line(r#"time="x" level=info msg="response completed""#), None);
}

#[test]
fn tools_and_binaries() {
    assert!(have("docker-registry"));
    assert!(have("sh"));
    assert!(!have("surely-no-such-tool-here"));
    if hoist_testkit::optional!("skopeo") {
        let out = skopeo(["--version"]);
        assert!(assert_success("skopeo --version", &out).contains("skopeo"));
    }
}

// ---------------------------------------------------------------------------------------------
// proxy

#[tokio::test]
async fn proxy_passes_blob_upload_through() {
    let reg = TestRegistry::plain();
    let proxy = FaultProxy::start(&reg.url(), vec![]).unwrap();
    let client = reqwest::Client::new();
    let data = blob(3 << 20, 7);
    let digest = digest_of(&data);

    let upload = start_upload(&client, &proxy.url()).await;
    assert!(upload.starts_with(&format!("{}/v2/{REPO}/blobs/uploads/", proxy.url())), "{upload}");
    let resp = client
        .put(with_digest(&upload, &digest))
        .header(CONTENT_TYPE, "application/octet-stream")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let resp = client.head(format!("{}/v2/{REPO}/blobs/{digest}", proxy.url())).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[CONTENT_LENGTH], data.len().to_string().as_str());

    // and the content is right: GET through the proxy
    let got =
        client.get(format!("{}/v2/{REPO}/blobs/{digest}", proxy.url())).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(digest_of(&got), digest);

    assert_eq!(proxy.request_body_bytes(), data.len() as u64);
    assert_eq!(proxy.method_count("POST"), 1);
    assert_eq!(proxy.method_count("PUT"), 1);
    assert_eq!(proxy.method_count("HEAD"), 1);
    assert_eq!(proxy.method_count("GET"), 1);
    let ex = proxy.exchanges();
    let statuses: Vec<_> = ex.iter().map(|e| (e.method.as_str(), e.status)).collect();
    assert_eq!(statuses, [("POST", Some(202)), ("PUT", Some(201)), ("HEAD", Some(200)), ("GET", Some(200)),]);
    assert!(ex.iter().all(|e| e.faults.is_empty()));
    // the registry saw the same
    let puts: Vec<_> = reg.requests().into_iter().filter(|r| r.method == "PUT").collect();
    assert_eq!(puts.len(), 1);
    assert!(
        puts[0].path.contains(&format!("digest={digest}").replace(':', "%3A"))
            || puts[0].path.contains(&format!("digest={digest}"))
    );
    assert_eq!(puts[0].status, 201);
}

#[tokio::test]
async fn proxy_streams_chunked_bodies() {
    let reg = TestRegistry::plain();
    let proxy = FaultProxy::start(&reg.url(), vec![]).unwrap();
    let client = reqwest::Client::new();
    let data = blob(2 << 20, 3);
    let digest = digest_of(&data);
    // chunked PATCH, then an empty PUT ?digest=
    let upload = start_upload(&client, &proxy.url()).await;
    let resp = client
        .patch(&upload)
        .header(CONTENT_TYPE, "application/octet-stream")
        .body(chunked_body(data.clone()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let next = resolve(&proxy.url(), resp.headers()[LOCATION].to_str().unwrap());
    let resp =
        client.put(with_digest(&next, &digest)).header(CONTENT_TYPE, "application/octet-stream").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(head_blob(&client, &proxy.url(), &digest).await, StatusCode::OK);
    assert_eq!(proxy.request_body_bytes(), data.len() as u64);
}

#[tokio::test]
async fn status_rule_fires_on_nth_request_only() {
    let reg = TestRegistry::plain();
    let proxy = FaultProxy::start(&reg.url(), vec![Rule::new().method("GET").path("/v2/").nth(3).status(503)]).unwrap();
    let client = reqwest::Client::new();
    let before = reg.count("GET", "/v2/"); // the start-up probes
    let mut seen = Vec::new();
    for _ in 0..5 {
        let resp = client.get(format!("{}/v2/", proxy.url())).send().await.unwrap();
        if resp.status() == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(resp.headers()[RETRY_AFTER], "1");
        }
        seen.push(resp.status().as_u16());
    }
    assert_eq!(seen, [200, 200, 503, 200, 200]);
    assert_eq!(proxy.rule_stats(0), RuleStats { matched: 5, fired: 1 });
    assert_eq!(proxy.exchanges()[2].faults, [Fault::Status(503)]);
    // the injected one never reached the registry
    assert_eq!(reg.count("GET", "/v2/") - before, 4);
}

#[tokio::test]
async fn status_rules_every_times_after_and_401() {
    let reg = TestRegistry::plain();
    let proxy = FaultProxy::start(
        &reg.url(),
        vec![
            Rule::new().path("/v2/a").every(2).status(500),
            Rule::new().path("/v2/b").times(2).status(429).retry_after(3),
            Rule::new().path("/v2/c").after(1).status(401),
        ],
    )
    .unwrap();
    let client = reqwest::Client::new();
    let codes = |p: &'static str| {
        let client = client.clone();
        let url = format!("{}/v2/{p}/manifests/latest", proxy.url());
        async move {
            let mut v = Vec::new();
            for _ in 0..4 {
                let r = client.get(&url).send().await.unwrap();
                if r.status() == 429 {
                    assert_eq!(r.headers()[RETRY_AFTER], "3");
                }
                if r.status() == 401 {
                    assert!(r.headers().contains_key(WWW_AUTHENTICATE));
                }
                v.push(r.status().as_u16());
            }
            v
        }
    };
    // 404 = the registry's own answer for an unknown repository
    assert_eq!(codes("a").await, [404, 500, 404, 500]);
    assert_eq!(codes("b").await, [429, 429, 404, 404]);
    assert_eq!(codes("c").await, [404, 401, 401, 401]);
    let stats = proxy.state().all_rule_stats();
    assert_eq!(
        stats,
        [RuleStats { matched: 4, fired: 2 }, RuleStats { matched: 4, fired: 2 }, RuleStats { matched: 4, fired: 3 },]
    );
}

#[tokio::test]
async fn drop_request_rule_cuts_the_body() {
    let reg = TestRegistry::plain();
    let proxy =
        FaultProxy::start(&reg.url(), vec![Rule::new().method("PUT").times(1).drop_request_after(100_000)]).unwrap();
    let client = reqwest::Client::new();
    let data = blob(1 << 20, 9);
    let digest = digest_of(&data);
    let upload = start_upload(&client, &proxy.url()).await;
    let result = client
        .put(with_digest(&upload, &digest))
        .header(CONTENT_TYPE, "application/octet-stream")
        .body(data.clone())
        .send()
        .await;
    assert!(result.is_err(), "connection should be dropped: {result:?}");
    assert_eq!(head_blob(&client, &proxy.url(), &digest).await, StatusCode::NOT_FOUND);
    let put = proxy.exchanges().into_iter().find(|e| e.method == "PUT").unwrap();
    assert_eq!(put.status, None);
    assert_eq!(put.faults, [Fault::RequestCut(100_000)]);
    assert_eq!(proxy.rule_stats(0).fired, 1);

    // the rule was for one time only: the retry goes through
    let resp = upload_blob(&client, &proxy.url(), &data).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(head_blob(&client, &proxy.url(), &digest).await, StatusCode::OK);
}

#[tokio::test]
async fn drop_response_rule_cuts_the_body() {
    let reg = TestRegistry::plain();
    let proxy = FaultProxy::start(&reg.url(), vec![]).unwrap();
    let client = reqwest::Client::new();
    let data = blob(256 << 10, 1);
    let digest = digest_of(&data);
    assert_eq!(upload_blob(&client, &proxy.url(), &data).await.status(), StatusCode::CREATED);
    proxy.set_rules(vec![Rule::new().method("GET").path("/blobs/sha256:").nth(1).drop_response_after(1000)]);
    let url = format!("{}/v2/{REPO}/blobs/{digest}", proxy.url());
    let resp = client.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "head passes, the body is cut");
    let mut resp = resp;
    let mut received = 0;
    let end = loop {
        match resp.chunk().await {
            Ok(Some(c)) => received += c.len(),
            other => break other,
        }
    };
    assert!(end.is_err(), "body should end in an error, got {end:?}");
    assert_eq!(received, 1000, "the bytes before the cut arrive");
    assert_eq!(proxy.rule_stats(0).fired, 1);
    let cut = proxy.exchanges().pop().unwrap();
    assert_eq!(cut.faults, [Fault::ResponseCut(1000)]);
    // second GET is whole
    let got = client.get(&url).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(got.len(), data.len());
}

#[tokio::test]
async fn max_body_rule_answers_413() {
    let reg = TestRegistry::plain();
    let proxy = FaultProxy::start(&reg.url(), vec![Rule::new().max_body(64 << 10)]).unwrap();
    let client = reqwest::Client::new();

    // Content-Length over the limit
    let big = blob(1 << 20, 5);
    let resp = upload_blob(&client, &proxy.url(), &big).await;
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(head_blob(&client, &proxy.url(), &digest_of(&big)).await, StatusCode::NOT_FOUND);

    // chunked over the limit: noticed while streaming
    let upload = start_upload(&client, &proxy.url()).await;
    let resp = client
        .patch(&upload)
        .header(CONTENT_TYPE, "application/octet-stream")
        .body(chunked_body(big.clone()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);

    // small bodies pass
    let small = blob(1000, 6);
    let resp = upload_blob(&client, &proxy.url(), &small).await;
    assert_eq!(resp.status(), StatusCode::CREATED);

    let too_large = proxy.exchanges().iter().filter(|e| e.faults == [Fault::TooLarge] && e.status == Some(413)).count();
    assert_eq!(too_large, 2);
    assert_eq!(proxy.rule_stats(0).fired, 2);
    // the big PUT never reached the registry; the chunked PATCH began to, and was aborted
    assert_eq!(reg.count("PUT", "digest="), 1);
    let patches: Vec<_> = reg.requests().into_iter().filter(|r| r.method == "PATCH").collect();
    assert!(patches.iter().all(|r| r.status != 202), "{patches:?}");
}

#[tokio::test]
async fn stall_rule_delays() {
    let reg = TestRegistry::plain();
    let proxy = FaultProxy::start(&reg.url(), vec![Rule::new().nth(1).stall(Duration::from_millis(400))]).unwrap();
    let client = reqwest::Client::new();
    let t = Instant::now();
    let resp = client.get(format!("{}/v2/", proxy.url())).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(t.elapsed() >= Duration::from_millis(400));
    assert_eq!(proxy.rule_stats(0).fired, 1);
    assert_eq!(proxy.exchanges()[0].faults, [Fault::Stall(Duration::from_millis(400))]);
}

/// A one-shot upstream that answers with an absolute Location naming itself, as a registry
/// with `http.host` set does.
#[tokio::test]
async fn location_pointing_at_upstream_is_rewritten() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0);
            buf.extend_from_slice(&chunk[..n]);
        }
        let resp = format!(
            "HTTP/1.1 202 Accepted\r\nLocation: http://{up}/v2/x/blobs/uploads/u1?_state=s\r\n\
             Content-Length: 0\r\n\r\n"
        );
        s.write_all(resp.as_bytes()).await.unwrap();
        String::from_utf8_lossy(&buf).into_owned()
    });
    let proxy = FaultProxy::start(&format!("http://{up}"), vec![]).unwrap();
    let resp = reqwest::Client::new().post(format!("{}/v2/x/blobs/uploads/", proxy.url())).send().await.unwrap();
    assert_eq!(resp.status(), 202);
    assert_eq!(resp.headers()[LOCATION], format!("{}/v2/x/blobs/uploads/u1?_state=s", proxy.url()).as_str());
    let head = server.await.unwrap();
    // the Host header is passed as the client sent it
    assert!(head.to_ascii_lowercase().contains(&format!("host: {}", proxy.host())), "{head}");
}

/// A one-layer OCI image layout written by hand, for skopeo to push.
fn tiny_oci_layout(dir: &std::path::Path) {
    use std::io::Write as _;
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |data: &[u8]| {
        let d = digest_of(data);
        std::fs::write(blobs.join(&d["sha256:".len()..]), data).unwrap();
        d
    };
    let tar = vec![0u8; 1024]; // an empty tar archive
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    let layer = gz.finish().unwrap();
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [digest_of(&tar)]},
    })
    .to_string();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": put(config.as_bytes()), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": put(&layer), "size": layer.len()}],
    })
    .to_string();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": put(manifest.as_bytes()), "size": manifest.len(),
                       "annotations": {"org.opencontainers.image.ref.name": "v1"}}],
    });
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

#[test]
fn skopeo_pushes_with_registry_args() {
    hoist_testkit::require!("skopeo");
    let src = tempfile::tempdir().unwrap();
    tiny_oci_layout(src.path());
    for opts in [RegistryOpts::plain(), RegistryOpts::auth("u", "p").with_tls()] {
        let reg = TestRegistry::start(opts);
        let dest = format!("docker://{}/harness/tiny:v1", reg.host());
        let mut args = vec!["copy".to_owned()];
        args.extend(reg.skopeo_args("dest"));
        args.push(format!("oci:{}:v1", src.path().display()));
        args.push(dest.clone());
        assert_success("skopeo copy", &skopeo(&args));

        let mut args = vec!["inspect".to_owned(), "--raw".to_owned()];
        args.extend(reg.skopeo_args(""));
        args.push(dest);
        let raw = assert_success("skopeo inspect", &skopeo(&args));
        assert!(raw.contains("application/vnd.oci.image.manifest.v1+json"), "{raw}");
        assert!(reg.count("PUT", "/manifests/v1") >= 1);
    }
}
