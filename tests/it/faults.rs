//! Reliability under faults: hoist against the real registry (distribution 2.8.2) behind the
//! fault-injecting proxy, which cuts bodies, answers 503/429/413/401 and stalls.
//!
//! What distribution 2.8.2 does with a cut upload body (see `Repository::put_chunked`): it
//! keeps the partial bytes, but the session's offset lives in the signed `_state` of the last
//! Location, so the session answers `404 BLOB_UPLOAD_INVALID` from then on and the blob must
//! start again in a new session. Error *answers* (503, 429, 401, 413) leave the session intact
//! and hoist resumes at the registry's `Range`.

#[allow(unused_imports)] // not every test file uses every re-export
use crate::common;
use crate::support;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use hoist_testkit::proxy::{Fault, FaultProxy, Rule};
use support::*;

const MIB: usize = 1 << 20;

fn push_args(proxy: &FaultProxy, layout: &std::path::Path, repo_tag: &str, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = vec!["--insecure-registry".into(), proxy.host(), "-q".into()];
    v.extend(extra.iter().map(|s| s.to_string()));
    v.extend(["push".into(), format!("{}:v1", layout.display()), format!("{}/{repo_tag}", proxy.host())]);
    v
}

fn faults_of(proxy: &FaultProxy, pred: impl Fn(&Fault) -> bool) -> usize {
    proxy.exchanges().iter().flat_map(|e| e.faults.iter()).filter(|f| pred(f)).count()
}

/// 256 MiB through a link that cuts request bodies and answers 503/429: completes, the
/// registry holds the same manifest, and the bytes sent stay under twice the blob.
#[test]
fn big_blob_push_survives_drops_and_resumes() {
    let reg = TestRegistry::plain();
    let src = tempfile::tempdir().unwrap();
    let size = 256 * MIB;
    let digest = image_layout(src.path(), "v1", &[size], 7);
    // The layer's digest, to aim the first rule at its PUT: the config blob is uploaded
    // concurrently, and whichever PUT came first would otherwise take the rule's one shot.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(src.path().join("blobs/sha256").join(&digest[7..])).unwrap()).unwrap();
    let layer_hex = manifest["layers"][0]["digest"].as_str().unwrap()[7..].to_string();
    let proxy = FaultProxy::start(
        &reg.url(),
        vec![
            // the layer's first monolithic PUT is cut after 6 MiB
            Rule::new().method("PUT").path(&layer_hex).nth(1).drop_request_after(6 << 20),
            // every 4th PATCH larger than 3 MiB is cut after 3 MiB
            Rule::new().method("PATCH").path("/blobs/uploads/").every(4).drop_request_after(3 << 20),
            // and every 9th larger than 1 MiB after 1 MiB: a second, tighter limit to adapt to
            Rule::new().method("PATCH").path("/blobs/uploads/").every(9).drop_request_after(1 << 20),
            Rule::new().method("PATCH").path("/blobs/uploads/").nth(2).status(503),
            Rule::new().method("PATCH").path("/blobs/uploads/").nth(7).status(429).retry_after(1),
            Rule::new().method("GET").path("/blobs/uploads/").nth(1).status(503),
            Rule::new().method("HEAD").path("/blobs/").nth(1).status(503),
        ],
    )
    .unwrap();
    let out = hoist(push_args(&proxy, src.path(), "big/img:v1", &[]));
    let (so, se) = output_text(&out);
    assert!(out.status.success(), "push failed\n{so}\n{se}\n{:#?}", proxy.exchanges());
    assert_eq!(registry_manifest_digest(&reg, "big/img:v1"), digest);
    let sent = proxy.request_body_bytes();
    let stats = proxy.state().all_rule_stats();
    eprintln!(
        "256 MiB push: {} request body bytes ({:.2}x), methods {:?}, rules {:?}",
        sent,
        sent as f64 / size as f64,
        proxy.state().method_counts(),
        stats
    );
    assert!(faults_of(&proxy, |f| matches!(f, Fault::RequestCut(_))) >= 2, "bodies were not cut");
    assert!(faults_of(&proxy, |f| matches!(f, Fault::Status(503))) >= 2);
    assert!(faults_of(&proxy, |f| matches!(f, Fault::Status(429))) >= 1);
    assert!(sent < 2 * size as u64, "upload restarted instead of resuming: {sent} bytes for a {size}-byte blob");
    // Resume, not restart, read from the upload requests themselves: within a session no
    // chunk is sent again from below what the registry acknowledged (a 202 to a PATCH of
    // `start-end` holds `end + 1` bytes), and the layer moves to a new session only when the
    // registry has lost the old one (answered 404: distribution drops a session whose PATCH
    // body was cut, so there a restart is the only way on). After a refused chunk (503, 429)
    // the same session goes on at the acknowledged offset, which must happen at least once
    // above 0 bytes, or this would not tell a resume from a restart.
    let mut uploads: Vec<_> = proxy.exchanges().into_iter().filter(|e| e.path.contains("/blobs/uploads/")).collect();
    uploads.sort_by_key(|e| e.started);
    let session_of = |e: &hoist_testkit::proxy::Exchange| -> String {
        let rest = e.path.split("/blobs/uploads/").nth(1).unwrap_or("");
        rest.split('?').next().unwrap_or("").to_string()
    };
    let trace: Vec<String> = uploads
        .iter()
        .map(|e| format!("{} {:.8} {:?} {:?} {:?}", e.method, session_of(e), e.content_range, e.status, e.faults))
        .collect();
    let trace = trace.join("\n");
    let layer_sessions: Vec<String> = {
        let mut v: Vec<String> = Vec::new();
        for e in &uploads {
            let s = session_of(e);
            if (e.method == "PATCH" || e.path.contains(&layer_hex)) && !s.is_empty() && !v.contains(&s) {
                v.push(s);
            }
        }
        v
    };
    let mut resumed_above_zero = 0;
    for (i, session) in layer_sessions.iter().enumerate() {
        let mine: Vec<_> = uploads.iter().filter(|e| &session_of(e) == session).collect();
        let (mut held, mut refused) = (0u64, false);
        for e in mine.iter().filter(|e| e.method == "PATCH") {
            let (start, end) = e.upload_range().unwrap_or_else(|| panic!("a PATCH without Content-Range:\n{trace}"));
            assert!(start >= held, "{start}-{end} sent again below the acknowledged {held} bytes:\n{trace}");
            if refused && start == held && held > 0 {
                resumed_above_zero += 1;
            }
            refused = e.status.is_some_and(|s| s == 503 || s == 429);
            if e.status == Some(202) {
                held = held.max(end + 1);
            }
        }
        if i + 1 < layer_sessions.len() {
            assert!(
                mine.iter().any(|e| e.status == Some(404)),
                "session {session} left while the registry kept it:\n{trace}"
            );
        }
    }
    assert!(resumed_above_zero >= 1, "no refused chunk was resumed above offset 0:\n{trace}");
}

/// A proxy refusing bodies over 6 MiB with 413: `--upload auto` falls back to smaller chunks;
/// `--upload chunked --chunk-size-mib 4` never hits the limit.
#[test]
fn payload_too_large_switches_to_chunks() {
    let reg = TestRegistry::plain();
    let src = tempfile::tempdir().unwrap();
    let digest = image_layout(src.path(), "v1", &[20 * MIB, 100_000], 3);
    let proxy = FaultProxy::start(&reg.url(), vec![Rule::new().path("/blobs/uploads/").max_body(6 << 20)]).unwrap();
    let out = hoist(push_args(&proxy, src.path(), "big/auto:v1", &["--upload", "auto"]));
    let (so, se) = output_text(&out);
    assert!(out.status.success(), "auto push failed\n{so}\n{se}");
    assert_eq!(registry_manifest_digest(&reg, "big/auto:v1"), digest);
    assert!(faults_of(&proxy, |f| *f == Fault::TooLarge) >= 1, "the limit never fired");
    assert!(proxy.method_count("PATCH") >= 4, "{:?}", proxy.state().method_counts());

    proxy.state().reset();
    let out = hoist(push_args(&proxy, src.path(), "big/chunked:v1", &["--upload", "chunked", "--chunk-size-mib", "4"]));
    let (so, se) = output_text(&out);
    assert!(out.status.success(), "chunked push failed\n{so}\n{se}");
    assert_eq!(registry_manifest_digest(&reg, "big/chunked:v1"), digest);
    assert_eq!(faults_of(&proxy, |f| *f == Fault::TooLarge), 0);
    assert!(proxy.method_count("PATCH") >= 5, "{:?}", proxy.state().method_counts());
}

/// Response bodies cut mid-way: the pull resumes with Range (the registry answers 206) and
/// the layout is fsck-clean with the right digests.
#[test]
fn pull_resumes_dropped_downloads() {
    let reg = TestRegistry::plain();
    let src = tempfile::tempdir().unwrap();
    let digest = image_layout(src.path(), "v1", &[12 * MIB, 5 * MIB], 11);
    let out = hoist([
        "--insecure-registry",
        &reg.host(),
        "-q",
        "push",
        &format!("{}:v1", src.path().display()),
        &format!("{}/pull/img:v1", reg.host()),
    ]);
    assert_success("push", &out);
    let proxy = FaultProxy::start(
        &reg.url(),
        vec![Rule::new().method("GET").path("/blobs/sha256:").times(4).drop_response_after(1 << 20)],
    )
    .unwrap();
    let dst = tempfile::tempdir().unwrap();
    let layout = dst.path().join("out");
    let out = hoist([
        "--insecure-registry",
        &proxy.host(),
        "-q",
        "pull",
        &format!("{}/pull/img:v1", proxy.host()),
        &format!("{}:v1", layout.display()),
    ]);
    assert_success("pull through cutting proxy", &out);
    assert!(faults_of(&proxy, |f| matches!(f, Fault::ResponseCut(_))) >= 2);
    let ranged = reg.requests().iter().filter(|r| r.method == "GET" && r.status == 206).count();
    assert!(ranged >= 2, "no Range resume seen in the registry log");
    assert_success("fsck", &hoist(["layout", "fsck", layout.to_str().unwrap()]));
    let idx: serde_json::Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(idx["manifests"][0]["digest"], digest);
    for (d, _) in hoist::transport::layout::Layout::open(&layout).unwrap().all_blobs().unwrap() {
        assert_eq!(
            std::fs::read(blob_path(&layout, &d.to_string())).unwrap(),
            std::fs::read(blob_path(src.path(), &d.to_string())).unwrap()
        );
    }
}

/// A 401 in the middle of a transfer (a proxy or a registry restarting) is retried with the
/// same basic credentials; a wrong password fails with exit code 4 without printing it.
#[test]
fn unauthorized_mid_transfer_is_retried_and_bad_password_fails_cleanly() {
    let reg = TestRegistry::start(RegistryOpts::auth("hoist", "s3cret-pw"));
    let src = tempfile::tempdir().unwrap();
    let digest = image_layout(src.path(), "v1", &[6 * MIB, 2000], 5);
    let proxy = FaultProxy::start(
        &reg.url(),
        vec![
            Rule::new().method("PATCH").path("/blobs/uploads/").nth(2).status(401),
            Rule::new().method("GET").path("/blobs/sha256:").nth(2).status(401),
            Rule::new().method("PUT").path("/manifests/").nth(1).status(401),
        ],
    )
    .unwrap();
    let creds = ["--creds", "hoist:s3cret-pw"];
    let mut args = push_args(&proxy, src.path(), "auth/img:v1", &["--upload", "chunked", "--chunk-size-mib", "1"]);
    args.splice(0..0, creds.iter().map(|s| s.to_string()));
    let out = hoist(&args);
    let (so, se) = output_text(&out);
    assert!(out.status.success(), "push with one 401 failed\n{so}\n{se}");
    assert_eq!(registry_manifest_digest(&reg, "auth/img:v1"), digest);
    let dst = tempfile::tempdir().unwrap();
    let out = hoist([
        "--creds",
        "hoist:s3cret-pw",
        "--insecure-registry",
        &proxy.host(),
        "-q",
        "pull",
        &format!("{}/auth/img:v1", proxy.host()),
        &format!("{}:v1", dst.path().join("o").display()),
    ]);
    assert_success("pull with one 401", &out);
    assert!(faults_of(&proxy, |f| *f == Fault::Status(401)) >= 3);

    let out = hoist([
        "--creds",
        "hoist:WRONG-pw-xyz",
        "--insecure-registry",
        &proxy.host(),
        "-q",
        "pull",
        &format!("{}/auth/img:v1", proxy.host()),
        &format!("{}:v1", dst.path().join("o2").display()),
    ]);
    let (so, se) = output_text(&out);
    assert_eq!(out.status.code(), Some(4), "wrong password: want exit 4\n{so}\n{se}");
    assert!(se.contains(&proxy.host()), "error does not name the registry: {se}");
    assert!(!se.contains("WRONG-pw-xyz") && !so.contains("WRONG-pw-xyz"), "password printed:\n{so}\n{se}");
}

/// A response stalled beyond `--read-timeout 2` is given up and retried.
#[test]
fn stalled_response_is_retried() {
    let reg = TestRegistry::plain();
    let src = tempfile::tempdir().unwrap();
    image_layout(src.path(), "v1", &[2 * MIB], 9);
    let out = hoist([
        "--insecure-registry",
        &reg.host(),
        "-q",
        "push",
        &format!("{}:v1", src.path().display()),
        &format!("{}/stall/img:v1", reg.host()),
    ]);
    assert_success("push", &out);
    let proxy = FaultProxy::start(
        &reg.url(),
        vec![
            Rule::new().method("GET").path("/manifests/").nth(1).stall(Duration::from_secs(8)),
            Rule::new().method("GET").path("/blobs/sha256:").nth(1).stall(Duration::from_secs(8)),
        ],
    )
    .unwrap();
    let dst = tempfile::tempdir().unwrap();
    let layout = dst.path().join("o");
    let start = Instant::now();
    let out = hoist([
        "--read-timeout",
        "2",
        "--insecure-registry",
        &proxy.host(),
        "-q",
        "pull",
        &format!("{}/stall/img:v1", proxy.host()),
        &format!("{}:v1", layout.display()),
    ]);
    assert_success("pull with stalls", &out);
    assert!(proxy.state().all_rule_stats().iter().all(|s| s.matched >= 2), "{:?}", proxy.state().all_rule_stats());
    assert!(start.elapsed() < Duration::from_secs(120));
    assert_success("fsck", &hoist(["layout", "fsck", layout.to_str().unwrap()]));
}

/// A registry that answers 503 forever: hoist gives up in bounded time, naming registry and status.
#[test]
fn retries_are_bounded() {
    let reg = TestRegistry::plain();
    let proxy = FaultProxy::start(&reg.url(), vec![Rule::new().status(503)]).unwrap();
    let dst = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let out = hoist([
        "--insecure-registry",
        &proxy.host(),
        "-q",
        "pull",
        &format!("{}/x/y:v1", proxy.host()),
        &format!("{}:v1", dst.path().join("o").display()),
    ]);
    let (so, se) = output_text(&out);
    assert!(!out.status.success(), "{so}{se}");
    assert!(start.elapsed() < Duration::from_secs(90), "took {:?}", start.elapsed());
    assert!(se.contains(&proxy.host()) && se.contains("503"), "{se}");
    let n = proxy.exchanges().len();
    assert!((2..=20).contains(&n), "{n} requests");
}

/// Progress seen through resets stays consistent: per blob it never goes past the size and
/// ends at the size; no more than `jobs` blobs move at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_stays_correct_across_retries_and_jobs_bound_concurrency() {
    use hoist::transport::{BlobOutcome, Progress};
    #[derive(Default)]
    struct Rec {
        pos: Mutex<std::collections::HashMap<String, u64>>,
        over: AtomicU64,
        resets: AtomicU64,
        active: AtomicUsize,
        max_active: AtomicUsize,
        bad_done: Mutex<Vec<String>>,
    }
    impl Progress for Rec {
        fn start(&self, _d: &hoist::Descriptor) {
            let n = self.active.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_active.fetch_max(n, Ordering::SeqCst);
        }
        fn advance(&self, d: &hoist::Descriptor, n: u64) {
            let mut m = self.pos.lock().unwrap();
            let p = m.entry(d.digest.to_string()).or_default();
            *p += n;
            if *p > d.size {
                self.over.fetch_add(1, Ordering::SeqCst);
            }
        }
        fn reset(&self, d: &hoist::Descriptor, offset: u64) {
            self.resets.fetch_add(1, Ordering::SeqCst);
            self.pos.lock().unwrap().insert(d.digest.to_string(), offset);
        }
        fn done(&self, d: &hoist::Descriptor, o: BlobOutcome) {
            self.active.fetch_sub(1, Ordering::SeqCst);
            let p = self.pos.lock().unwrap().get(&d.digest.to_string()).copied().unwrap_or(0);
            if o == BlobOutcome::Uploaded && p != d.size {
                self.bad_done.lock().unwrap().push(format!("{} at {p} of {}", d.digest, d.size));
            }
        }
    }
    let reg = TestRegistry::plain();
    let src = tempfile::tempdir().unwrap();
    image_layout(src.path(), "v1", &[5 * MIB, 4 * MIB, 3 * MIB, 2 * MIB, MIB], 13);
    let proxy = FaultProxy::start(
        &reg.url(),
        vec![
            Rule::new().method("PUT").path("/blobs/uploads/").every(2).drop_request_after(1 << 20),
            Rule::new().method("PATCH").path("/blobs/uploads/").every(3).status(503).retry_after(0),
        ],
    )
    .unwrap();
    let client = hoist::transport::registry::Client::new(hoist::transport::registry::RegistryOptions {
        insecure: vec![proxy.host()],
        chunk_size: 1 << 20,
        ..Default::default()
    })
    .unwrap();
    let reference: hoist::model::reference::Reference = format!("{}/prog/img:v1", proxy.host()).parse().unwrap();
    let dst = client.repository(&reference);
    let layout = hoist::transport::layout::Layout::open(src.path()).unwrap();
    let root = layout.resolve_sync(Some(&"v1".into())).unwrap();
    let rec = Arc::new(Rec::default());
    let opts = hoist::copy::CopyOptions { jobs: 2, ..Default::default() };
    hoist::copy::graph(&layout, &dst, &root, &["v1".to_string()], &opts, rec.as_ref()).await.unwrap();
    assert!(rec.resets.load(Ordering::SeqCst) > 0);
    assert_eq!(rec.over.load(Ordering::SeqCst), 0, "progress went past a blob's size");
    assert!(rec.bad_done.lock().unwrap().is_empty(), "{:?}", rec.bad_done.lock().unwrap());
    assert!(rec.max_active.load(Ordering::SeqCst) <= 2, "more than --jobs blobs at once");
    // and as the server side counts it: upload requests (PATCH, PUT) in flight at once
    let exchanges = proxy.exchanges();
    let uploads =
        exchanges.iter().filter(|e| e.path.contains("/blobs/uploads/") && (e.method == "PATCH" || e.method == "PUT"));
    let concurrent = hoist_testkit::proxy::max_concurrent(uploads);
    assert!((1..=2).contains(&concurrent), "{concurrent} upload requests at once with jobs 2");
    assert!(faults_of(&proxy, |f| matches!(f, Fault::RequestCut(_))) >= 1);
}

/// Waits between attempts as the server sees them (request arrival times at the proxy, not
/// hoist's own account): a `429` with `Retry-After: 2` on the manifest PUT is retried no
/// sooner than 2 s after it was answered; three `502`s without `Retry-After` are retried after
/// growing backoffs, each at least 0.75x of 400 ms, 800 ms, 1.6 s (200 ms doubled per
/// failure, jitter ±25%). Only lower bounds: a loaded machine may add, never remove, time.
#[test]
fn retry_after_and_backoff_are_kept_as_the_server_sees_them() {
    let reg = TestRegistry::plain();
    let src = tempfile::tempdir().unwrap();
    image_layout(src.path(), "v1", &[4096], 44);
    let manifest_puts = |proxy: &FaultProxy| -> Vec<hoist_testkit::proxy::Exchange> {
        proxy.exchanges().into_iter().filter(|e| e.method == "PUT" && e.path.contains("/manifests/")).collect()
    };
    let gaps = |puts: &[hoist_testkit::proxy::Exchange]| -> Vec<Duration> {
        puts.windows(2).map(|w| w[1].started.duration_since(w[0].ended.expect("answered"))).collect()
    };

    let rule = Rule::new().method("PUT").path("/manifests/").nth(1).status(429).retry_after(2);
    let proxy = FaultProxy::start(&reg.url(), vec![rule]).unwrap();
    let out = hoist(push_args(&proxy, src.path(), "ra/img:v1", &[]));
    assert!(out.status.success(), "{}", output_text(&out).1);
    let puts = manifest_puts(&proxy);
    assert_eq!(puts.iter().map(|e| e.status).collect::<Vec<_>>(), [Some(429), Some(201)], "{puts:?}");
    let waited = gaps(&puts)[0];
    eprintln!("Retry-After: 2 -> the retry came {waited:?} later");
    assert!(waited >= Duration::from_secs(2), "retried {waited:?} after a 429 with Retry-After: 2");

    proxy.set_rules(vec![Rule::new().method("PUT").path("/manifests/").times(3).status(502)]);
    let out = hoist(push_args(&proxy, src.path(), "bo/img:v1", &[]));
    assert!(out.status.success(), "{}", output_text(&out).1);
    let puts: Vec<_> = manifest_puts(&proxy).into_iter().filter(|e| e.path.contains("/bo/")).collect();
    assert_eq!(puts.iter().map(|e| e.status).collect::<Vec<_>>(), [Some(502), Some(502), Some(502), Some(201)]);
    let waited = gaps(&puts);
    eprintln!("backoff after three 502s: {waited:?}");
    for (w, nominal) in waited.iter().zip([400u64, 800, 1600]) {
        assert!(*w >= Duration::from_millis(nominal * 3 / 4), "backoff {w:?}, nominal {nominal} ms: {waited:?}");
    }
    assert!(waited[2] > waited[0], "the backoff did not grow: {waited:?}");
}
