//! Big transfers (issue 18): parallel ranged downloads of one blob against the real registry
//! (distribution 2.8.2 answers ranges with `206` and `Content-Range`), behind the fault proxy
//! playing servers that ignore ranges, drop or falsify `Content-Range`, or cut a lane; resume
//! of pulls and pushes killed with SIGKILL, bytes counted by the WAN relay in between.

#[allow(unused_imports)]
use crate::common;
use crate::support;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use hoist_testkit::proxy::{FaultProxy, Rule};
use hoist_testkit::relay::{Relay, RelayConfig};
use support::*;

const MIB: usize = 1 << 20;
/// The chunk size the chunked-push tests ask for (`--chunk-size-mib 8`).
const CHUNK: u64 = 8 << 20;

fn assert_ok(what: &str, out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{what}: exit {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A one-layer image of `size` bytes pushed to `reg` as `big/img:v1`; returns the layer's hex.
fn push_big(reg: &TestRegistry, size: usize, seed: u64) -> String {
    let src = tempfile::tempdir().unwrap();
    let digest = image_layout(src.path(), "v1", &[size], seed);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(src.path().join("blobs/sha256").join(&digest[7..])).unwrap()).unwrap();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap()[7..].to_string();
    let out = hoist([
        "--insecure-registry",
        &reg.host(),
        "-q",
        "push",
        &format!("{}:v1", src.path().display()),
        &format!("{}/big/img:v1", reg.host()),
    ]);
    assert_ok("push", &out);
    layer
}

fn pull_args(host: &str, dst: &Path, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = vec!["--insecure-registry".into(), host.into(), "-q".into()];
    v.extend(extra.iter().map(|s| s.to_string()));
    v.extend(["pull".into(), format!("{host}/big/img:v1"), format!("{}:v1", dst.display())]);
    v
}

/// The pulled layer is there, hashes to its digest, and the layout is clean.
fn assert_pulled(dst: &Path, layer: &str) {
    let blob = dst.join("blobs/sha256").join(layer);
    assert_eq!(digest_of(&std::fs::read(&blob).unwrap()), format!("sha256:{layer}"), "pulled layer differs");
    let out = hoist(["layout", "fsck", dst.to_str().unwrap()]);
    assert_ok("fsck", &out);
    let partial = dst.join(".hoist/partial");
    let left: Vec<_> = std::fs::read_dir(&partial).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "partial files left after a finished pull: {left:?}");
}

fn layer_gets(proxy: &FaultProxy, layer: &str) -> usize {
    proxy.exchanges().iter().filter(|e| e.method == "GET" && e.path.contains(layer)).count()
}

/// Lanes against the real registry: many ranged GETs of the one layer, identical digest.
#[test]
fn ranged_lanes_pull_from_the_real_registry() {
    let reg = TestRegistry::plain();
    let size = 72 * MIB + 12345;
    let layer = push_big(&reg, size, 1);
    let proxy = FaultProxy::start(&reg.url(), vec![]).unwrap();
    let dst = tempfile::tempdir().unwrap();
    let dst = dst.path().join("out");
    assert_ok("pull", &hoist(pull_args(&proxy.host(), &dst, &["--lanes", "4"])));
    assert_pulled(&dst, &layer);
    // 8 MiB chunks: 10 ranged GETs (the default lanes for 72 MiB would be 2; 4 asked)
    assert_eq!(layer_gets(&proxy, &layer), size.div_ceil(8 * MIB), "{:?}", proxy.exchanges());
    // one stream when asked for one lane
    let proxy1 = FaultProxy::start(&reg.url(), vec![]).unwrap();
    let dst1 = dst.with_file_name("one");
    assert_ok("pull --lanes 1", &hoist(pull_args(&proxy1.host(), &dst1, &["--lanes", "1"])));
    assert_pulled(&dst1, &layer);
    assert_eq!(layer_gets(&proxy1, &layer), 1);
}

/// A registry that ignores `Range` (answers 200): one stream, the probe's own body used.
#[test]
fn ignored_range_falls_back_to_one_stream() {
    let reg = TestRegistry::plain();
    let layer = push_big(&reg, 40 * MIB, 2);
    let proxy = FaultProxy::start(&reg.url(), vec![Rule::new().method("GET").path("/blobs/").ignore_range()]).unwrap();
    let dst = tempfile::tempdir().unwrap();
    let dst = dst.path().join("out");
    assert_ok("pull", &hoist(pull_args(&proxy.host(), &dst, &["--lanes", "4"])));
    assert_pulled(&dst, &layer);
    assert_eq!(layer_gets(&proxy, &layer), 1, "the 200 answer to the first range is the whole blob");
}

/// `206` without `Content-Range`, or with a false one: ranges are not used, one stream.
#[test]
fn missing_or_false_content_range_falls_back() {
    let reg = TestRegistry::plain();
    let layer = push_big(&reg, 40 * MIB, 3);
    for rule in [
        Rule::new().method("GET").path(&layer).strip_response_header("content-range"),
        Rule::new().method("GET").path(&layer).response_header("content-range", "bytes 8388608-16777215/41943040"),
    ] {
        let proxy = FaultProxy::start(&reg.url(), vec![rule.times(1)]).unwrap();
        let dst = tempfile::tempdir().unwrap();
        let dst = dst.path().join("out");
        assert_ok("pull", &hoist(pull_args(&proxy.host(), &dst, &["--lanes", "4"])));
        assert_pulled(&dst, &layer);
        // the probe (unusable) and one whole GET
        assert_eq!(layer_gets(&proxy, &layer), 2, "{:?}", proxy.exchanges());
    }
    // A false Content-Range on a later chunk (not the probe): that chunk fails and is retried
    // alone; the result is still right.
    let proxy = FaultProxy::start(
        &reg.url(),
        vec![Rule::new().method("GET").path(&layer).nth(3).response_header("content-range", "bytes 0-1/41943040")],
    )
    .unwrap();
    let dst = tempfile::tempdir().unwrap();
    let dst = dst.path().join("out");
    let out = hoist(pull_args(&proxy.host(), &dst, &["--lanes", "4"]));
    assert_ok("pull", &out);
    assert_pulled(&dst, &layer);
}

/// A lane cut mid-chunk: only that chunk's rest is fetched again.
#[test]
fn lane_cut_mid_chunk_is_retried_alone() {
    let reg = TestRegistry::plain();
    let size = 64 * MIB;
    let layer = push_big(&reg, size, 4);
    let proxy = FaultProxy::start(
        &reg.url(),
        vec![
            Rule::new().method("GET").path(&layer).nth(2).drop_response_after(3 << 20),
            Rule::new().method("GET").path(&layer).nth(5).drop_response_after(100 << 10),
        ],
    )
    .unwrap();
    let relay = Relay::start(proxy.addr(), RelayConfig { delay: Duration::ZERO, window: 0, rate: 0 }).unwrap();
    let dst = tempfile::tempdir().unwrap();
    let dst = dst.path().join("out");
    assert_ok("pull", &hoist(pull_args(&relay.host(), &dst, &["--lanes", "4"])));
    assert_pulled(&dst, &layer);
    // 8 chunks + 2 resumed ones
    assert_eq!(layer_gets(&proxy, &layer), 10, "{:?}", proxy.exchanges());
    let down = relay.stats().snapshot().1;
    assert!(down < size as u64 + (4 << 20), "{down} bytes moved for a {size}-byte blob");
}

/// A chunk that keeps failing: the pull fails, and nothing is visible in `blobs/`; the next
/// run continues from the partial file and fetches only what is missing.
#[test]
fn failed_lane_leaves_nothing_visible_and_the_next_run_continues() {
    let reg = TestRegistry::plain();
    let size = 64 * MIB;
    let layer = push_big(&reg, size, 5);
    let proxy = FaultProxy::start(
        &reg.url(),
        vec![Rule::new().method("GET").path_regex(&format!("{layer}$")).after(6).status(404)],
    )
    .unwrap();
    let relay = Relay::start(proxy.addr(), RelayConfig { delay: Duration::ZERO, window: 0, rate: 0 }).unwrap();
    let dst = tempfile::tempdir().unwrap();
    let dst = dst.path().join("out");
    let out = hoist(pull_args(&relay.host(), &dst, &["--lanes", "2", "--retries", "1"]));
    assert!(!out.status.success(), "pull should fail");
    assert!(!dst.join("blobs/sha256").join(&layer).exists(), "an unverified blob is visible");
    assert!(dst.join(".hoist/partial").join(format!("sha256-{layer}.state")).exists(), "no partial state kept");
    let first = relay.stats().snapshot().1;
    proxy.set_rules(vec![]);
    assert_ok("second pull", &hoist(pull_args(&relay.host(), &dst, &["--lanes", "2"])));
    assert_pulled(&dst, &layer);
    let total = relay.stats().snapshot().1;
    assert!(total <= (size as f64 * 1.15) as u64, "{first} + {} bytes for a {size}-byte blob", total - first);
}

fn spawn_hoist(args: &[String]) -> std::process::Child {
    hoist_cmd().args(args).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap()
}

/// Bytes the partial state of `layer` says are written.
fn partial_done(dst: &Path, layer: &str) -> u64 {
    let p = dst.join(".hoist/partial").join(format!("sha256-{layer}.state"));
    let Ok(b) = std::fs::read(p) else { return 0 };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&b) else { return 0 };
    v["written"].as_object().map(|m| m.values().filter_map(|x| x.as_u64()).sum()).unwrap_or(0)
}

/// Wait until `cond` holds (or `limit` passes); true when it held.
fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// kill -9 during a 256 MiB pull, then a re-run: at most 1.15x the blob moved in all (counted
/// by the relay), fsck clean.
#[test]
fn pull_killed_mid_way_resumes() {
    let reg = TestRegistry::plain();
    let size = 256 * MIB;
    let layer = push_big(&reg, size, 6);
    // 128 MiB/s: the pull takes ~2 s, long enough to kill it in the middle
    let relay = Relay::start(
        format!("127.0.0.1:{}", reg.port()).parse().unwrap(),
        RelayConfig { delay: Duration::from_millis(1), window: 0, rate: 128 << 20 },
    )
    .unwrap();
    let dst = tempfile::tempdir().unwrap();
    let dst = dst.path().join("out");
    let args = pull_args(&relay.host(), &dst, &[]);
    let mut child = spawn_hoist(&args);
    let reached = wait_for(Duration::from_secs(60), || partial_done(&dst, &layer) >= size as u64 / 2);
    child.kill().unwrap(); // SIGKILL
    let _ = child.wait();
    assert!(reached, "the pull never got half way");
    assert!(relay.wait_drained(Duration::from_secs(60)), "the killed pull's connections never closed");
    let first = relay.stats().snapshot().1;
    assert!(first < size as u64, "the first run finished ({first} bytes) before the kill");
    assert!(!dst.join("blobs/sha256").join(&layer).exists(), "a partial blob is visible");
    // What the state file the killed run left says is written: the re-run fetches the rest.
    let kept = partial_done(&dst, &layer);
    assert!(kept >= size as u64 / 2, "the state file lost bytes after the kill: {kept}");
    assert_ok("re-run", &hoist(&args));
    assert_pulled(&dst, &layer);
    let total = relay.stats().snapshot().1;
    let second = total - first;
    eprintln!("pull: {first} bytes before the kill ({kept} kept), {second} in the re-run, for {size}");
    // The re-run moves the bytes the state did not cover, plus the manifest, config and
    // response heads (1 MiB); a restart would move the whole blob again.
    let bound = size as u64 - kept + MIB as u64;
    assert!(second <= bound, "the re-run moved {second} bytes (> {bound}): it did not continue the kept chunks");
}

/// kill -9 during a 256 MiB chunked push, then a re-run: the kept session is continued where
/// the registry says it stands; at most 1.15x the blob sent in all (counted by the relay). The
/// proxy makes each PATCH atomic upstream and the session URL stable, as registries with
/// atomic chunks (ECR) are: distribution 2.8.2 alone loses a session cut mid-PATCH, or one
/// whose last answer the killed client never read (see `upload::SessionFile`).
#[test]
fn push_killed_mid_way_resumes() {
    let reg = TestRegistry::plain();
    let size = 256 * MIB;
    let src = tempfile::tempdir().unwrap();
    let digest = image_layout(src.path(), "v1", &[size], 8);
    let proxy = FaultProxy::start(
        &reg.url(),
        vec![Rule::new().method("PATCH").buffer_request(), Rule::new().path("/blobs/uploads/").stable_uploads()],
    )
    .unwrap();
    let relay = Relay::start(proxy.addr(), RelayConfig { delay: Duration::from_millis(1), window: 0, rate: 128 << 20 })
        .unwrap();
    let args: Vec<String> = [
        "--insecure-registry",
        &relay.host(),
        "-q",
        "--upload",
        "chunked",
        "--chunk-size-mib",
        "8",
        "push",
        &format!("{}:v1", src.path().display()),
        &format!("{}/big/push:v1", relay.host()),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut child = spawn_hoist(&args);
    let reached = wait_for(Duration::from_secs(60), || relay.stats().snapshot().0 >= size as u64 / 2);
    child.kill().unwrap(); // SIGKILL
    let _ = child.wait();
    assert!(reached, "the push never got half way");
    // The registry finishes what it was given before the kill (a PATCH whose body had left
    // when hoist died) before the next run asks where it stands: wait for the killed run's
    // connections to close (the relay then has counted everything it sent).
    assert!(relay.wait_drained(Duration::from_secs(60)), "the killed push's connections never closed");
    // and for the proxy to have the registry's answer to a PATCH whose body had fully arrived
    // (it forwards that one even though its client is gone, and notes the session's state).
    assert!(proxy.wait_upstream_idle(Duration::from_secs(60)), "the proxy's last PATCH was never answered");
    let first = relay.stats().snapshot().0;
    assert!(first < size as u64, "the first run finished ({first} bytes) before the kill");
    let sessions = src.path().join(".hoist/uploads");
    assert_eq!(std::fs::read_dir(&sessions).unwrap().count(), 1, "no upload session kept");
    let out = hoist(&args);
    assert_ok("re-run", &out);
    assert_eq!(registry_manifest_digest(&reg, "big/push:v1"), digest);
    let total = relay.stats().snapshot().0;
    eprintln!("push: {first} bytes before the kill, {total} in all for {size}");
    // Chunks are atomic upstream (buffer_request): the blob goes up once, plus the one 8 MiB
    // chunk the kill cut (sent again in full), plus config, manifest and heads (1 MiB). A
    // restart would send the blob twice.
    let bound = size as u64 + CHUNK + MIB as u64;
    assert!(total <= bound, "{total} bytes (> {bound}) sent for a {size}-byte blob");
    assert_eq!(std::fs::read_dir(&sessions).unwrap().count(), 0, "a finished session is kept");
    assert_ok("fsck", &hoist(["layout", "fsck", src.path().to_str().unwrap()]));
}

/// `hoist push` of `src` to `host/repo:v1` with the profile `profile` given to `host` (none:
/// the host's own, i.e. no profile for 127.0.0.1).
fn push_with_profile(
    host: &str,
    src: &Path,
    repo: &str,
    profile: Option<&str>,
    extra: &[&str],
) -> std::process::Output {
    let mut cmd = hoist_cmd();
    cmd.env_remove("HOIST_REGISTRY_PROFILE");
    if let Some(p) = profile {
        cmd.env("HOIST_REGISTRY_PROFILE", format!("{host}={p}"));
    }
    cmd.args(["--insecure-registry", host, "-q"]);
    cmd.args(extra);
    cmd.args(["push", &format!("{}:v1", src.display()), &format!("{host}/{repo}:v1")]);
    cmd.output().unwrap()
}

fn faults(proxy: &FaultProxy, f: hoist_testkit::proxy::Fault) -> usize {
    proxy.exchanges().iter().flat_map(|e| e.faults.clone()).filter(|x| *x == f).count()
}

/// GHCR refuses PATCH bodies over 4 MiB: with its profile, chunks are 4 MiB from the start
/// (no 413 at all); without, hoist learns it from 413s.
#[test]
fn profile_ghcr_patch_limit() {
    use hoist_testkit::proxy::Fault;
    let reg = TestRegistry::plain();
    let src = tempfile::tempdir().unwrap();
    let digest = image_layout(src.path(), "v1", &[20 * MIB], 21);
    let proxy = FaultProxy::start(&reg.url(), vec![Rule::new().method("PATCH").max_body(4 << 20)]).unwrap();
    let out = push_with_profile(&proxy.host(), src.path(), "p/ghcr", Some("ghcr"), &["--upload", "chunked"]);
    assert_ok("push with the ghcr profile", &out);
    assert_eq!(registry_manifest_digest(&reg, "p/ghcr:v1"), digest);
    assert_eq!(faults(&proxy, Fault::TooLarge), 0, "{:?}", proxy.exchanges());
    assert!(proxy.method_count("PATCH") >= 5);
    proxy.state().reset();
    let out = push_with_profile(&proxy.host(), src.path(), "p/none", None, &["--upload", "chunked"]);
    assert_ok("push without a profile", &out);
    assert!(faults(&proxy, Fault::TooLarge) >= 1, "without the profile the limit must bite");
    // the user's --chunk-size-mib wins over the profile
    proxy.state().reset();
    let out = push_with_profile(
        &proxy.host(),
        src.path(),
        "p/user",
        Some("ghcr"),
        &["--upload", "chunked", "--chunk-size-mib", "8"],
    );
    assert_ok("push with --chunk-size-mib", &out);
    assert!(faults(&proxy, Fault::TooLarge) >= 1, "--chunk-size-mib 8 must be used as given");
}

/// ECR refuses chunks under 5 MiB: chunks that shrink after 413s (here from a 6 MiB limit)
/// stop at 5 MiB with its profile, and go down to 4 MiB (refused) without.
#[test]
fn profile_ecr_min_chunk() {
    let reg = TestRegistry::plain();
    let src = tempfile::tempdir().unwrap();
    let digest = image_layout(src.path(), "v1", &[20 * MIB], 22);
    let rules =
        vec![Rule::new().method("PATCH").max_body(6 << 20), Rule::new().path("/blobs/uploads/").min_body(5 << 20)];
    let proxy = FaultProxy::start(&reg.url(), rules).unwrap();
    let out = push_with_profile(&proxy.host(), src.path(), "p/ecr", Some("ecr"), &["--upload", "chunked"]);
    assert_ok("push with the ecr profile", &out);
    assert_eq!(registry_manifest_digest(&reg, "p/ecr:v1"), digest);
    assert_eq!(proxy.rule_stats(1).fired, 0, "a chunk under 5 MiB was sent: {:?}", proxy.exchanges());
    proxy.state().reset();
    let out = push_with_profile(&proxy.host(), src.path(), "p/none", None, &["--upload", "chunked"]);
    assert!(!out.status.success(), "without the profile a 4 MiB chunk is sent and refused");
    assert!(proxy.rule_stats(1).fired >= 1);
}

/// Google Artifact Registry has no chunked upload: after a cut PUT, `auto` with its profile
/// retries one PUT instead of continuing in chunks (which this proxy refuses, as GAR does).
#[test]
fn profile_gar_no_chunks() {
    let reg = TestRegistry::plain();
    let src = tempfile::tempdir().unwrap();
    let digest = image_layout(src.path(), "v1", &[12 * MIB], 23);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(src.path().join("blobs/sha256").join(&digest[7..])).unwrap()).unwrap();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap()[7..].to_string();
    let rules = || {
        vec![
            Rule::new().method("PUT").path(&layer).nth(1).drop_request_after(2 << 20),
            Rule::new().method("PATCH").status(405),
        ]
    };
    let proxy = FaultProxy::start(&reg.url(), rules()).unwrap();
    let out = push_with_profile(&proxy.host(), src.path(), "p/gar", Some("gar"), &[]);
    assert_ok("push with the gar profile", &out);
    assert_eq!(registry_manifest_digest(&reg, "p/gar:v1"), digest);
    assert_eq!(proxy.method_count("PATCH"), 0);
    proxy.set_rules(rules());
    proxy.state().reset();
    let out = push_with_profile(&proxy.host(), src.path(), "p/none", None, &[]);
    assert!(!out.status.success(), "without the profile auto continues in chunks, which are refused");
    assert!(proxy.method_count("PATCH") >= 1);
}

/// Docker Hub's `ratelimit-*` headers: in the error of a refused pull, and in `-v` logs.
#[test]
fn profile_dockerhub_rate_limits_are_reported() {
    let reg = TestRegistry::plain();
    push_big(&reg, MIB, 24);
    let proxy = FaultProxy::start(
        &reg.url(),
        vec![Rule::new()
            .method("GET")
            .path("/manifests/")
            .status(429)
            .header("ratelimit-limit", "100;w=21600")
            .header("ratelimit-remaining", "0;w=21600")],
    )
    .unwrap();
    let dst = tempfile::tempdir().unwrap();
    let out = hoist(pull_args(&proxy.host(), &dst.path().join("o"), &["--retries", "1"]));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ratelimit-remaining: 0;w=21600"), "error does not name the rate limit: {err}");
    proxy.set_rules(vec![Rule::new()
        .method("GET")
        .path("/manifests/")
        .response_header("ratelimit-remaining", "99;w=21600")]);
    let mut v = pull_args(&proxy.host(), &dst.path().join("o2"), &["-v"]);
    v.retain(|a| a != "-q");
    let out = hoist(&v);
    assert_ok("pull -v", &out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ratelimit-remaining: 99;w=21600"), "-v does not show the rate limit: {err}");
}

/// Make `path` look untouched for `days` days.
fn age_file(path: &Path, days: u64) {
    let t = std::time::SystemTime::now() - Duration::from_secs(days * 24 * 3600);
    std::fs::File::options().write(true).open(path).unwrap().set_modified(t).unwrap();
}

/// `layout gc` and `store prune` remove partial downloads and push sessions untouched for a
/// week, report their bytes, and keep fresh ones and one a running download holds locked.
#[test]
fn gc_removes_stale_partial_downloads_and_push_sessions() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("l");
    std::fs::create_dir_all(&dir).unwrap();
    image_layout(&dir, "v1", &[1000], 3);
    let partial = dir.join(".hoist/partial");
    let uploads = dir.join(".hoist/uploads");
    std::fs::create_dir_all(&partial).unwrap();
    std::fs::create_dir_all(&uploads).unwrap();
    let file = |p: &Path, n: usize, days: u64| {
        std::fs::write(p, vec![1u8; n]).unwrap();
        age_file(p, days);
    };
    let (old, fresh, busy) = (
        format!("sha256-{}", "a".repeat(64)),
        format!("sha256-{}", "b".repeat(64)),
        format!("sha256-{}", "c".repeat(64)),
    );
    file(&partial.join(format!("{old}.part")), 1000, 8);
    file(&partial.join(format!("{old}.state")), 24, 8);
    file(&partial.join(format!("{fresh}.part")), 500, 0);
    file(&partial.join(format!("{fresh}.state")), 24, 8); // the .part is fresh: kept
    file(&partial.join(format!("{busy}.part")), 700, 9);
    let lock = std::fs::File::open(partial.join(format!("{busy}.part"))).unwrap();
    lock.lock().unwrap(); // a running download holds its .part locked
    file(&uploads.join("old.json"), 100, 8);
    file(&uploads.join("new.json"), 100, 1);

    let gc = |extra: &[&str]| {
        let mut args = vec!["--format", "json", "layout", "gc"];
        args.extend_from_slice(extra);
        args.push(dir.to_str().unwrap());
        let out = hoist(args);
        assert_ok("layout gc", &out);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (v, String::from_utf8_lossy(&out.stderr).to_string())
    };
    let (v, _) = gc(&["--dry-run"]);
    assert_eq!(
        (v["partialFiles"].as_u64(), v["partialBytes"].as_u64(), v["uploadSessions"].as_u64()),
        (Some(2), Some(1024), Some(1)),
        "{v}"
    );
    assert!(partial.join(format!("{old}.part")).exists(), "a dry run removed a partial download");
    let (v, err) = gc(&[]);
    assert_eq!(
        (v["partialFiles"].as_u64(), v["partialBytes"].as_u64(), v["uploadSessions"].as_u64()),
        (Some(2), Some(1024), Some(1)),
        "{v}"
    );
    assert!(err.contains("2 stale partial download file(s), 1.0 KiB, and 1 stale push session(s)"), "{err}");
    assert!(!partial.join(format!("{old}.part")).exists() && !partial.join(format!("{old}.state")).exists());
    assert!(partial.join(format!("{fresh}.part")).exists() && partial.join(format!("{fresh}.state")).exists());
    assert!(partial.join(format!("{busy}.part")).exists(), "gc removed a partial download in use");
    assert!(!uploads.join("old.json").exists() && uploads.join("new.json").exists());
    assert_ok("fsck", &hoist(["layout", "fsck", dir.to_str().unwrap()]));

    // store prune runs the same gc: the locked one goes once its download is over
    drop(lock);
    let out = hoist(["--format", "json", "store", "prune", "--store", dir.to_str().unwrap()]);
    assert_ok("store prune", &out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((v["partialFiles"].as_u64(), v["partialBytes"].as_u64()), (Some(1), Some(700)), "{v}");
    assert!(!partial.join(format!("{busy}.part")).exists());
}

/// `hoist push` of the layout at `src` to `host/repo:v1` through a relay, chunked in 8 MiB.
fn push_args(host: &str, src: &Path, repo: &str, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = vec!["--insecure-registry".into(), host.into(), "-q".into()];
    v.extend(extra.iter().map(|s| s.to_string()));
    v.extend(["push".into(), format!("{}:v1", src.display()), format!("{host}/{repo}:v1")]);
    v
}

/// Start `args`, SIGKILL it once the relay carried `bytes` up; the bytes up at the kill.
fn kill_push_at(relay: &Relay, args: &[String], bytes: u64) -> u64 {
    let mut child = spawn_hoist(args);
    let reached = wait_for(Duration::from_secs(60), || relay.stats().snapshot().0 >= bytes);
    child.kill().unwrap(); // SIGKILL
    let _ = child.wait();
    assert!(reached, "the push never got to {bytes} bytes");
    // What the killed process had in its socket buffers still goes through the relay, and the
    // registry finishes the cut request once its connection closes: read the count after that.
    assert!(relay.wait_drained(Duration::from_secs(60)), "the killed push's connections never closed");
    relay.stats().snapshot().0
}

/// kill -9 in the middle of a 256 MiB one-blob chunked push to the real distribution 2.8.2
/// (only a counting relay in between, no buffering): distribution loses the session. Its
/// offset lives in the HMAC-signed `_state` of the last Location it handed out, and a PATCH
/// cut mid-body (or one whose answer the killed client never read) leaves more bytes in its
/// upload file than that state says; every later request on the session is refused with
/// `BLOB_UPLOAD_INVALID` and the upload is cancelled (its log: "upload resumed at wrong
/// offest"). hoist then starts that blob once more in a new session: at most the blob again
/// is sent, the push ends right, and no session is left behind.
#[test]
fn push_killed_mid_patch_on_distribution_starts_the_blob_again() {
    let reg = TestRegistry::plain();
    let size = 256 * MIB;
    let src = tempfile::tempdir().unwrap();
    let digest = image_layout(src.path(), "v1", &[size], 18);
    let relay = Relay::start(
        format!("127.0.0.1:{}", reg.port()).parse().unwrap(),
        RelayConfig { delay: Duration::from_millis(1), window: 0, rate: 128 << 20 },
    )
    .unwrap();
    let args = push_args(&relay.host(), src.path(), "big/dist", &["--upload", "chunked", "--chunk-size-mib", "8"]);
    let first = kill_push_at(&relay, &args, size as u64 / 2);
    assert!(first < size as u64, "the first run finished ({first} bytes) before the kill");
    // the session file (a kill while it was being rewritten may also leave its temp file)
    let sessions = std::fs::read_dir(src.path().join(".hoist/uploads"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".json"))
        .count();
    assert_eq!(sessions, 1, "no upload session kept");
    assert_ok("re-run", &hoist(&args));
    assert_eq!(registry_manifest_digest(&reg, "big/dist:v1"), digest);
    let total = relay.stats().snapshot().0;
    let log = reg.log();
    let lost = log.contains("upload resumed at wrong offest");
    eprintln!("distribution push: {first} bytes before the kill, {total} in all for {size}; session lost: {lost}");
    if lost {
        // the evidence: distribution refused the kept session and cancelled the upload
        let refused =
            reg.requests().iter().any(|r| r.method == "GET" && r.path.contains("/blobs/uploads/") && r.status == 404);
        assert!(refused, "the kept session was not asked for and refused");
        // `first` was read after the drain, so it holds all the killed run sent. The re-run
        // sends the blob once more in a new session, plus at most one 8 MiB chunk on the kept
        // session before distribution refuses it, plus the config, manifest and heads (1 MiB).
        let bound = first + size as u64 + CHUNK + MIB as u64;
        assert!(total <= bound, "{total} bytes (> {bound}): the blob went up more than once more");
    } else {
        // Killed between two chunks: the session survived and was continued where the registry
        // stood, so the blob went up once plus at most the one chunk cut by the kill, plus the
        // documents and heads (1 MiB).
        let bound = size as u64 + CHUNK + MIB as u64;
        assert!(total <= bound, "{total} bytes (> {bound}) sent for a {size}-byte blob");
    }
    assert_eq!(std::fs::read_dir(src.path().join(".hoist/uploads")).unwrap().count(), 0, "a finished session is kept");
    assert_ok("fsck", &hoist(["layout", "fsck", src.path().to_str().unwrap()]));
}

/// kill -9 in the middle of a push of 32 layers (256 MiB) to the real distribution 2.8.2
/// through a counting relay, then a re-run: the layers the registry has are not sent again
/// and only the ones in flight at the kill start over, so at most 1.15x the image is sent in
/// all; the pushed image is complete and right.
#[test]
fn push_of_many_layers_killed_mid_way_resends_only_the_layers_in_flight() {
    let reg = TestRegistry::plain();
    let src = tempfile::tempdir().unwrap();
    let layers = vec![8 * MIB; 32];
    let size: usize = layers.iter().sum();
    let digest = image_layout(src.path(), "v1", &layers, 19);
    let relay = Relay::start(
        format!("127.0.0.1:{}", reg.port()).parse().unwrap(),
        RelayConfig { delay: Duration::from_millis(1), window: 0, rate: 128 << 20 },
    )
    .unwrap();
    let args = push_args(&relay.host(), src.path(), "big/many", &["--jobs", "4"]);
    let first = kill_push_at(&relay, &args, size as u64 / 2);
    assert!(first < size as u64, "the first run finished ({first} bytes) before the kill");
    assert_ok("re-run", &hoist(&args));
    assert_eq!(registry_manifest_digest(&reg, "big/many:v1"), digest);
    let total = relay.stats().snapshot().0;
    eprintln!("many-layer push: {first} bytes before the kill, {total} in all for {size}");
    // At most the 4 layers in flight at the kill (--jobs 4, 8 MiB each) go up twice, plus the
    // config, manifest and request heads (1 MiB). A restart would send 32 layers again.
    let bound = size as u64 + 4 * 8 * MIB as u64 + MIB as u64;
    assert!(total <= bound, "{total} bytes (> {bound}) sent for a {size}-byte image");
    assert_ok("fsck", &hoist(["layout", "fsck", src.path().to_str().unwrap()]));
}

/// With `--http2` the lanes of a ranged pull still get a connection each (over HTTP/1.1):
/// over one h2 connection they would share one window. Manifests go over h2.
#[test]
fn http2_lanes_get_connections_of_their_own() {
    let reg = TestRegistry::start(hoist_testkit::registry::RegistryOpts::tls());
    let ca = reg.ca_pem_path();
    let ca = ca.to_str().unwrap();
    let size = 40 * MIB;
    let src = tempfile::tempdir().unwrap();
    let digest = image_layout(src.path(), "v1", &[size], 20);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(src.path().join("blobs/sha256").join(&digest[7..])).unwrap()).unwrap();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap()[7..].to_string();
    let target = format!("{}/big/h2:v1", reg.host());
    assert_ok("push", &hoist(["--ca-file", ca, "-q", "push", &format!("{}:v1", src.path().display()), &target]));
    let relay = Relay::start(
        format!("127.0.0.1:{}", reg.port()).parse().unwrap(),
        RelayConfig { delay: Duration::from_millis(5), window: 0, rate: 0 },
    )
    .unwrap();
    let dst = tempfile::tempdir().unwrap();
    let dst = dst.path().join("out");
    let out = hoist([
        "--ca-file",
        ca,
        "-q",
        "--http2",
        "--lanes",
        "4",
        "pull",
        &format!("{}/big/h2:v1", relay.host()),
        &format!("{}:v1", dst.display()),
    ]);
    assert_ok("pull --http2", &out);
    assert_pulled(&dst, &layer);
    let connections = relay.stats().snapshot().2;
    let reqs = reg.requests();
    let ranged: Vec<_> = reqs.iter().filter(|r| r.method == "GET" && r.path.contains(&layer)).collect();
    eprintln!(
        "http2 pull: {connections} connections; blob GETs {:?}",
        ranged.iter().map(|r| &r.proto).collect::<Vec<_>>()
    );
    assert!(ranged.len() >= 4, "not pulled in lanes: {ranged:?}");
    assert!(ranged.iter().all(|r| r.proto == "HTTP/1.1"), "a lane went over h2: {ranged:?}");
    assert!(
        reqs.iter().any(|r| r.path.contains("/manifests/") && r.proto == "HTTP/2.0"),
        "manifests did not go over h2: {reqs:?}"
    );
    assert!(connections >= 5, "{connections} connections for 4 lanes and the h2 one");
}

/// An OCI archive at `path` holding one image whose only layer is `size` zero bytes: a hole in
/// a sparse file, so a blob over Quay's 20 GB limit costs no disk. The layer's digest is made
/// up (the push is stopped long before its end); an archive has no state dir, so the upload
/// mode is what the profile says (a layout's blobs over 1 GiB go up in chunks anyway).
fn sparse_archive(path: &Path, size: u64) -> String {
    use std::io::{Seek, SeekFrom, Write};
    let layer = format!("sha256:{}", "5".repeat(64));
    let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#.to_vec();
    let config_digest = digest_of(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": size}],
    }))
    .unwrap();
    let manifest_digest = digest_of(&manifest);
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest,
            "size": manifest.len(), "annotations": {"org.opencontainers.image.ref.name": "v1"}}],
    }))
    .unwrap();
    let mut f = std::fs::File::create(path).unwrap();
    let member = |f: &mut std::fs::File, name: &str, len: u64| {
        let mut h = tar::Header::new_gnu();
        h.set_path(name).unwrap();
        h.set_size(len);
        h.set_mode(0o644);
        h.set_cksum();
        f.write_all(h.as_bytes()).unwrap();
    };
    let pad = |f: &mut std::fs::File, len: u64| {
        f.write_all(&vec![0u8; (len.next_multiple_of(512) - len) as usize]).unwrap();
    };
    for (name, data) in [
        ("oci-layout".to_string(), br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
        ("index.json".to_string(), index),
        (format!("blobs/sha256/{}", &manifest_digest[7..]), manifest),
        (format!("blobs/sha256/{}", &config_digest[7..]), config),
    ] {
        member(&mut f, &name, data.len() as u64);
        f.write_all(&data).unwrap();
        pad(&mut f, data.len() as u64);
    }
    member(&mut f, &format!("blobs/sha256/{}", &layer[7..]), size);
    let end = f.stream_position().unwrap() + size.next_multiple_of(512) + 1024;
    f.set_len(end).unwrap();
    f.seek(SeekFrom::End(0)).unwrap();
    layer[7..].to_string()
}

/// Quay refuses single PUTs over 20 GB (the proxy plays it: 413 by Content-Length): with its
/// profile a 20 GB + 1 blob goes up in PATCH chunks from the first request, and no PUT of it
/// is tried; without, the first request is that PUT, refused. Both pushes are stopped (SIGKILL)
/// as soon as that is seen: nothing near 20 GB is sent.
#[test]
fn profile_quay_single_put_limit() {
    use hoist_testkit::proxy::Fault;
    let reg = TestRegistry::plain();
    let t = tempfile::tempdir().unwrap();
    let archive = t.path().join("big.tar");
    let layer = sparse_archive(&archive, 20_000_000_001);
    let proxy = FaultProxy::start(&reg.url(), vec![Rule::new().method("PUT").max_body(20_000_000_000)]).unwrap();
    let run = |profile: Option<&str>, repo: &str, seen: &dyn Fn(&FaultProxy) -> bool| {
        let mut cmd = hoist_cmd();
        cmd.env_remove("HOIST_REGISTRY_PROFILE");
        if let Some(p) = profile {
            cmd.env("HOIST_REGISTRY_PROFILE", format!("{}={p}", proxy.host()));
        }
        cmd.args(["--insecure-registry", &proxy.host(), "-q", "push"]);
        cmd.args([format!("oci-archive:{}:v1", archive.display()), format!("{}/{repo}:v1", proxy.host())]);
        let mut child = cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
        let ok = wait_for(Duration::from_secs(60), || seen(&proxy));
        child.kill().unwrap(); // SIGKILL
        let _ = child.wait();
        assert!(ok, "{repo}: never saw the upload start: {:?}", proxy.exchanges());
    };
    // with the profile: a PATCH carries the layer's first chunk; no 413, no PUT of the layer
    let patched = |p: &FaultProxy| p.exchanges().iter().any(|e| e.method == "PATCH" && e.path.contains("/p/quay/"));
    run(Some("quay"), "p/quay", &patched);
    let ex = proxy.exchanges();
    assert_eq!(faults(&proxy, Fault::TooLarge), 0, "{ex:?}");
    assert!(!ex.iter().any(|e| e.method == "PUT" && e.path.contains(&layer)), "a single PUT was tried: {ex:?}");
    // without: the first try is one PUT of it all, refused
    proxy.state().reset();
    run(None, "p/none", &|p: &FaultProxy| faults(p, Fault::TooLarge) >= 1);
    let ex = proxy.exchanges();
    assert!(
        ex.iter().any(|e| e.method == "PUT" && e.path.contains(&layer)),
        "no single PUT without the profile: {ex:?}"
    );
}
