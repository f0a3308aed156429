//! Credentials go only to the registry they belong to (README, SECURITY.md). Two registries,
//! each behind a fault proxy that records the `Authorization` header of every request it
//! forwards: a copy from one to the other with `--src-creds`/`--dest-creds`, and again with
//! stored logins for both hosts, in Basic and in Bearer (each registry with its own token
//! server); each registry sees only its own credentials, and a token one realm issued never
//! reaches the other host. A registry that redirects blob downloads to a third host: that host
//! gets no credentials.

use std::collections::BTreeSet;
use std::path::Path;

use base64::Engine as _;
use hoist_testkit::proxy::{FaultProxy, Rule};

use crate::common::*;

/// A registry behind a recording proxy, with the user and password it accepts.
struct Side {
    reg: TestRegistry,
    proxy: FaultProxy,
    user: &'static str,
    pass: &'static str,
}

impl Side {
    fn start(opts: RegistryOpts, user: &'static str, pass: &'static str) -> Side {
        let reg = TestRegistry::start(opts);
        let proxy = FaultProxy::start(&reg.url(), vec![]).unwrap();
        Side { reg, proxy, user, pass }
    }

    fn creds(&self) -> String {
        format!("{}:{}", self.user, self.pass)
    }

    fn basic(&self) -> String {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(self.creds()))
    }

    /// Every `Authorization` value the proxy forwarded so far.
    fn seen(&self) -> BTreeSet<String> {
        self.proxy.exchanges().into_iter().filter_map(|e| e.authorization).collect()
    }
}

/// `hoist ARGS` with the logins in `config` only (no `HOIST_CREDS`, no auth file).
fn run(config: &Path, args: &[&str]) -> std::process::Output {
    hoist_cmd()
        .env("DOCKER_CONFIG", config)
        .env_remove("HOIST_CREDS")
        .env_remove("REGISTRY_AUTH_FILE")
        .args(args)
        .output()
        .unwrap()
}

/// An image pushed straight to `side`'s registry (not through its proxy), as `app:v1`.
fn seed(side: &Side, layout: &Path) {
    let empty = tempfile::tempdir().unwrap();
    let src = format!("{}:v1", layout.display());
    let dst = format!("{}/app:v1", side.reg.host());
    assert_success("seed push", &run(empty.path(), &["-q", "push", "--dest-creds", &side.creds(), &src, &dst]));
}

/// A `config.json` in `dir` with logins for both proxies' hosts.
fn store_logins(dir: &Path, sides: &[&Side]) {
    let auths: serde_json::Map<String, serde_json::Value> = sides
        .iter()
        .map(|s| {
            let auth = base64::engine::general_purpose::STANDARD.encode(s.creds());
            (s.proxy.host(), serde_json::json!({ "auth": auth }))
        })
        .collect();
    std::fs::write(dir.join("config.json"), serde_json::json!({ "auths": auths }).to_string()).unwrap();
}

/// Copies `a`'s `app:v1` to `b` as `tag` through both proxies, with `--src-creds` and
/// `--dest-creds` (`flags`) or with the logins stored in `config`.
fn copy(a: &Side, b: &Side, config: &Path, tag: &str, flags: bool) {
    let (src, dst) = (format!("{}/app:v1", a.proxy.host()), format!("{}/app:{tag}", b.proxy.host()));
    let (sc, dc) = (a.creds(), b.creds());
    let mut args = vec!["-q", "copy"];
    if flags {
        args.extend(["--src-creds", &sc, "--dest-creds", &dc]);
    }
    args.extend([src.as_str(), dst.as_str()]);
    assert_success(&format!("copy (flags: {flags})"), &run(config, &args));
}

#[test]
fn basic_credentials_reach_only_their_registry() {
    hoist_testkit::require!("skopeo");
    let a = Side::start(RegistryOpts::auth("alice", "pw-a"), "alice", "pw-a");
    let b = Side::start(RegistryOpts::auth("bob", "pw-b"), "bob", "pw-b");
    let t = tempfile::tempdir().unwrap();
    hoist_testkit::fixtures::image_layout(&t.path().join("src"), "v1", &[64 << 10, 32 << 10], 41);
    seed(&a, &t.path().join("src"));
    let (empty, stored) = (t.path().join("empty"), t.path().join("stored"));
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::create_dir_all(&stored).unwrap();
    store_logins(&stored, &[&a, &b]);
    for (config, flags, tag) in [(&empty, true, "flags"), (&stored, false, "stored")] {
        a.proxy.state().reset();
        b.proxy.state().reset();
        copy(&a, &b, config, tag, flags);
        let (sa, sb) = (a.seen(), b.seen());
        assert_eq!(sa, BTreeSet::from([a.basic()]), "{tag}: the source registry saw {sa:?}");
        assert_eq!(sb, BTreeSet::from([b.basic()]), "{tag}: the destination registry saw {sb:?}");
        let copied = registry_manifest_digest(&b.reg, &format!("app:{tag}"));
        assert_eq!(copied, registry_manifest_digest(&a.reg, "app:v1"), "{tag}: skopeo reads another manifest");
    }
}

#[test]
fn bearer_tokens_and_credentials_reach_only_their_registry_and_realm() {
    let a = Side::start(RegistryOpts::token("alice", "pw-a"), "alice", "pw-a");
    let b = Side::start(RegistryOpts::token("bob", "pw-b"), "bob", "pw-b");
    let t = tempfile::tempdir().unwrap();
    hoist_testkit::fixtures::image_layout(&t.path().join("src"), "v1", &[64 << 10, 32 << 10], 42);
    seed(&a, &t.path().join("src"));
    let (empty, stored) = (t.path().join("empty"), t.path().join("stored"));
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::create_dir_all(&stored).unwrap();
    store_logins(&stored, &[&a, &b]);
    let (ta, tb) = (a.reg.token_server().unwrap(), b.reg.token_server().unwrap());
    for (config, flags, tag) in [(&empty, true, "flags"), (&stored, false, "stored")] {
        a.proxy.state().reset();
        b.proxy.state().reset();
        ta.clear();
        tb.clear();
        copy(&a, &b, config, tag, flags);
        let (sa, sb) = (a.seen(), b.seen());
        assert!(sa.iter().any(|v| v.starts_with("Bearer ")), "{tag}: no token reached the source: {sa:?}");
        assert!(sb.iter().any(|v| v.starts_with("Bearer ")), "{tag}: no token reached the destination: {sb:?}");
        assert!(sa.is_disjoint(&sb), "{tag}: one value reached both registries: {:?}", sa.intersection(&sb));
        assert!(!sa.contains(&b.basic()) && !sb.contains(&a.basic()), "{tag}: a password reached the other registry");
        // each realm was asked by its own user only (and was asked)
        let users = |ts: &TokenServer| ts.requests().into_iter().map(|r| r.user).collect::<BTreeSet<_>>();
        assert_eq!(users(ta), BTreeSet::from([Some("alice".to_string())]), "{tag}: the source's realm");
        assert_eq!(users(tb), BTreeSet::from([Some("bob".to_string())]), "{tag}: the destination's realm");
    }
}

/// A registry that sends blob downloads to another host (a CDN, say) with `307`: the blobs
/// come from there, and that host never sees the registry's credentials.
#[test]
fn a_redirect_to_another_host_carries_no_credentials() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    let root = hoist_testkit::fixtures::image_layout(&src, "v1", &[64 << 10, 32 << 10], 43);
    // The third host: a plain registry holding the same blobs, behind its own recording proxy.
    let cdn_reg = TestRegistry::plain();
    let empty = tempfile::tempdir().unwrap();
    let cdn_dst = format!("{}/app:v1", cdn_reg.host());
    assert_success("seed the cdn", &run(empty.path(), &["-q", "push", &format!("{}:v1", src.display()), &cdn_dst]));
    let cdn = FaultProxy::start(&cdn_reg.url(), vec![]).unwrap();
    let a = Side::start(RegistryOpts::auth("alice", "pw-a"), "alice", "pw-a");
    seed(&a, &src);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(src.join("blobs/sha256").join(&root[7..])).unwrap()).unwrap();
    let rules: Vec<Rule> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let digest = l["digest"].as_str().unwrap();
            let location = format!("http://{}/v2/app/blobs/{digest}", cdn.host());
            Rule::new().method("GET").path(&format!("/blobs/{digest}")).status(307).header("Location", &location)
        })
        .collect();
    a.proxy.set_rules(rules);
    let dst = t.path().join("pulled");
    let from = format!("{}/app:v1", a.proxy.host());
    let to = format!("oci:{}:v1", dst.display());
    let out = run(empty.path(), &["-q", "pull", "--src-creds", &a.creds(), &from, &to]);
    assert_success("pull through the redirect", &out);
    let cdn_gets = cdn.exchanges().into_iter().filter(|e| e.method == "GET").count();
    assert!(cdn_gets >= 2, "the redirect was not followed: {:?}", cdn.exchanges());
    let leaked: Vec<_> = cdn.exchanges().into_iter().filter_map(|e| e.authorization).collect();
    assert!(leaked.is_empty(), "the third host got credentials: {leaked:?}");
    assert!(a.seen().contains(&a.basic()), "the registry itself got its credentials");
    assert_success("fsck", &hoist(["layout", "fsck", dst.to_str().unwrap()]));
}
