//! The bearer token flow against a real token-auth registry: distribution 2.8.2 with
//! `auth: token:` and a test token server ([`common::token`]) that grants exactly the scopes
//! asked for, so a client asking for the wrong scopes gets a 401 from the registry.

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use hoist_testkit::proxy::{FaultProxy, Rule};

const USER: &str = "tok-user";
const PASS: &str = "tok-s3cret-pw";

fn sample_layout() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/sample-layout")
}

fn creds() -> String {
    format!("{USER}:{PASS}")
}

/// `hoist --creds USER:PASS ARGS`, panicking with the output unless it succeeds.
#[track_caller]
fn hoist_ok(what: &str, args: &[&str]) -> String {
    let mut all = vec!["--creds".to_owned(), creds()];
    all.extend(args.iter().map(|s| s.to_string()));
    assert_success(what, &hoist(&all))
}

/// The digest (`sha256:…`) of tag `tag` in an OCI layout's index.json.
fn layout_tag_digest(layout: &Path, tag: &str) -> String {
    let v: serde_json::Value = serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let m = v["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag);
    m.unwrap_or_else(|| panic!("no {tag} in {}", layout.display()))["digest"].as_str().unwrap().to_owned()
}

fn layout_blob(layout: &Path, digest: &str) -> Vec<u8> {
    fs::read(layout.join("blobs/sha256").join(digest.strip_prefix("sha256:").unwrap())).unwrap()
}

fn token_server(reg: &TestRegistry) -> &TokenServer {
    reg.token_server().expect("registry started with token auth")
}

/// Every token request asked for our service and came with the user's credentials.
#[track_caller]
fn assert_all_for_service(reqs: &[TokenRequest]) {
    assert!(!reqs.is_empty(), "no token requests");
    for r in reqs {
        assert_eq!(r.service.as_deref(), Some(TOKEN_SERVICE), "{r:?}");
        assert_eq!(r.user.as_deref(), Some(USER), "{r:?}");
    }
}

/// Whether the scopes asked for grant `actions` on `repo` (one scope or several together).
fn grants(scopes: &[String], repo: &str, actions: &[&str]) -> bool {
    actions.iter().all(|want| {
        scopes
            .iter()
            .any(|s| s.strip_prefix(&format!("repository:{repo}:")).is_some_and(|a| a.split(',').any(|a| a == *want)))
    })
}

#[test]
fn push_pull_copy_with_bearer_tokens() {
    let reg = TestRegistry::start(RegistryOpts::token(USER, PASS));
    let ts = token_server(&reg);
    let layout = sample_layout();
    let host = reg.host();

    // The registry really wants tokens: no Authorization, no access.
    let anon = hoist(["inspect", &format!("{host}/app:multi")]);
    assert_eq!(anon.status.code(), Some(4), "{}", String::from_utf8_lossy(&anon.stderr));
    ts.clear();

    // Push the whole layout (tags multi and artifact).
    hoist_ok("push with tokens", &["push", layout.to_str().unwrap(), &format!("{host}/app")]);
    let push_tokens = ts.requests();
    assert_all_for_service(&push_tokens);
    assert!(push_tokens.iter().all(|r| r.status == 200), "{push_tokens:#?}");
    assert!(
        push_tokens.iter().any(|r| grants(&r.scopes, "app", &["pull", "push"])),
        "no token request for repository:app:pull,push: {push_tokens:#?}"
    );
    // Tokens are cached per scope set: a push of dozens of requests fetches one token per
    // scope set (pull for the existence checks, pull,push for uploads), even with blobs
    // going up 4 at a time, and not one per request.
    let requests = reg.requests().len();
    assert!(requests > 20, "expected many registry requests, got {requests}");
    let mut scope_sets: Vec<_> = push_tokens.iter().map(|r| r.scopes.clone()).collect();
    scope_sets.sort();
    scope_sets.dedup();
    assert_eq!(
        push_tokens.len(),
        scope_sets.len(),
        "{} token requests for {} scope sets in one push of {requests} requests: {push_tokens:#?}",
        push_tokens.len(),
        scope_sets.len()
    );
    assert!(push_tokens.len() <= 3, "{push_tokens:#?}");

    // Pull both tags back: the same manifests, byte for byte, and every blob.
    let tmp = tempfile::tempdir().unwrap();
    for tag in ["multi", "artifact"] {
        ts.clear();
        let dst = tmp.path().join(tag);
        hoist_ok("pull with tokens", &["pull", &format!("{host}/app:{tag}"), dst.to_str().unwrap()]);
        let pull_tokens = ts.requests();
        assert_all_for_service(&pull_tokens);
        assert!(pull_tokens.iter().any(|r| grants(&r.scopes, "app", &["pull"])), "{pull_tokens:#?}");
        let digest = layout_tag_digest(&layout, tag);
        assert_eq!(layout_tag_digest(&dst, tag), digest);
        for f in fs::read_dir(dst.join("blobs/sha256")).unwrap() {
            let f = f.unwrap();
            let name = f.file_name().to_string_lossy().into_owned();
            assert_eq!(fs::read(f.path()).unwrap(), layout_blob(&layout, &format!("sha256:{name}")), "blob {name}");
        }
        let raw = hoist_ok("inspect --raw", &["inspect", "--raw", &format!("{host}/app:{tag}")]);
        assert_eq!(raw.as_bytes(), layout_blob(&layout, &digest), "manifest of {tag}");
    }

    // Copy to another repository on the same registry: blobs are mounted, which needs one
    // token for both repositories (push on the target, pull on the source).
    ts.clear();
    let before = reg.requests().len();
    hoist_ok("copy with mounts", &["copy", &format!("{host}/app:multi"), &format!("{host}/other:v1")]);
    let copy_tokens = ts.requests();
    assert_all_for_service(&copy_tokens);
    assert!(
        copy_tokens
            .iter()
            .any(|r| grants(&r.scopes, "other", &["pull", "push"]) && grants(&r.scopes, "app", &["pull"])),
        "no token request with repository:other:pull,push and repository:app:pull: {copy_tokens:#?}"
    );
    let after = reg.requests();
    let copy_reqs = &after[before..];
    let mounts: Vec<_> = copy_reqs
        .iter()
        .filter(|r| r.method == "POST" && r.path.contains("/v2/other/") && r.path.contains("mount="))
        .collect();
    assert!(!mounts.is_empty(), "no mount requests: {copy_reqs:#?}");
    assert!(mounts.iter().all(|r| r.status == 201), "mounts not all 201: {mounts:#?}");
    assert!(
        !copy_reqs.iter().any(|r| r.method == "PATCH" || (r.method == "PUT" && r.path.contains("/blobs/uploads/"))),
        "blobs uploaded instead of mounted: {copy_reqs:#?}"
    );
    let raw = hoist_ok("inspect copy", &["inspect", "--raw", &format!("{host}/other:v1")]);
    assert_eq!(raw.as_bytes(), layout_blob(&layout, &layout_tag_digest(&layout, "multi")));
}

#[test]
fn wrong_password_is_exit_4_names_the_registry_and_hides_the_password() {
    let reg = TestRegistry::start(RegistryOpts::token(USER, PASS));
    let layout = sample_layout();
    let host = reg.host();
    let bad = "wrong-tok-pw-987";
    for args in [
        vec!["push".to_owned(), format!("{}:multi", layout.display()), format!("{host}/app:multi")],
        vec!["inspect".to_owned(), format!("{host}/app:multi")],
    ] {
        let out = hoist_cmd().args(["-vv", "--creds", &format!("{USER}:{bad}")]).args(&args).output().unwrap();
        let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.status.code(), Some(4), "{args:?}: {all}");
        assert!(all.contains(&host), "error does not name {host}: {all}");
        assert!(!all.contains(bad), "password leaked: {all}");
    }
    let reqs = token_server(&reg).requests();
    assert!(!reqs.is_empty() && reqs.iter().all(|r| r.status == 401), "{reqs:#?}");
    // Nothing was pushed.
    assert_eq!(reg.count("PUT", "/manifests/"), 0);
}

#[test]
fn expired_tokens_are_refreshed_on_401() {
    // Tokens the registry accepts for 2 s, and a proxy that holds a few requests for 2.5 s
    // before passing them on: each of those arrives with a token that was good when fetched
    // and has expired since, as on a long push. The retry after the 401 is not held.
    let mut opts = TokenOpts::new(USER, PASS);
    opts.effective_ttl = Some(Duration::from_secs(2));
    let reg = TestRegistry::start(RegistryOpts::token_with(opts));
    let ts = token_server(&reg);
    let stall = Duration::from_millis(2500);
    let proxy = FaultProxy::start(
        &reg.url(),
        vec![
            // a pull-scope request (through `send`)
            Rule::new().method("HEAD").path("/blobs/").nth(1).stall(stall),
            // a blob upload's monolithic PUT (its own 401 handling: continues in chunks)
            Rule::new().method("PUT").path("/blobs/uploads/").nth(2).stall(stall),
            // a manifest PUT
            Rule::new().method("PUT").path("/manifests/").nth(1).stall(stall),
        ],
    )
    .unwrap();
    let layout = sample_layout();
    let src = format!("{}:multi", layout.display());
    hoist_ok("push with expiring tokens", &["-j", "2", "push", &src, &format!("{}/app:multi", proxy.host())]);
    let fired: Vec<_> = (0..3).map(|i| proxy.state().rule_stats(i).fired).collect();
    assert_eq!(fired, [1, 1, 1], "not every stall fired");
    let reqs = ts.requests();
    assert_all_for_service(&reqs);
    let log = reg.requests();
    let rejected: Vec<_> = log.iter().filter(|r| r.status == 401 && r.path != "/v2/").collect();
    for (method, part) in [("HEAD", "/blobs/"), ("PUT", "/blobs/uploads/"), ("PUT", "/manifests/")] {
        assert!(
            rejected.iter().any(|r| r.method == method && r.path.contains(part)),
            "no {method} {part} was rejected with an expired token: {rejected:#?}"
        );
    }
    assert!(reqs.len() >= 4, "tokens were not refreshed: {reqs:#?}");
    let raw = hoist_ok("inspect", &["inspect", "--raw", &format!("{}/app:multi", reg.host())]);
    assert_eq!(raw.as_bytes(), layout_blob(&layout, &layout_tag_digest(&layout, "multi")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_401s_share_one_token_refresh() {
    use hoist::transport::Destination as _;
    // Tokens the registry accepts for 2 s. One request caches a token; once it has expired,
    // 16 requests go out together with it and are all refused. The first to take the fetch
    // lock gets a new token; the other 15 must take that one, not fetch 15 more.
    const N: usize = 16;
    let mut opts = TokenOpts::new(USER, PASS);
    opts.effective_ttl = Some(Duration::from_secs(2));
    let reg = tokio::task::spawn_blocking(move || TestRegistry::start(RegistryOpts::token_with(opts))).await.unwrap();
    let ts = token_server(&reg);
    let mut opts = hoist::transport::registry::RegistryOptions { insecure: vec![reg.host()], ..Default::default() };
    opts.set_credential(
        &reg.host(),
        hoist::transport::registry::credentials::Credential::Basic {
            username: USER.to_owned(),
            password: PASS.to_owned(),
        },
    );
    let client = hoist::transport::registry::Client::new(opts).unwrap();
    let reference: hoist::model::reference::Reference = format!("{}/app/single-flight:v1", reg.host()).parse().unwrap();
    let repo = client.repository(&reference);
    // Blobs the registry does not have: each HEAD answers 404 (false) once authorized.
    let blob = |i: usize| hoist::Descriptor::of_bytes("application/octet-stream", format!("blob {i}").as_bytes());

    assert!(!repo.has_blob(&blob(N)).await.unwrap());
    assert_eq!(ts.issued().len(), 1, "first use: one token");
    let head_401s = || {
        reg.requests().iter().filter(|r| r.method == "HEAD" && r.path.contains("/blobs/") && r.status == 401).count()
    };
    assert_eq!(head_401s(), 0, "the first token was refused at once");

    tokio::time::sleep(Duration::from_millis(3500)).await;
    ts.clear();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..N {
        let repo = repo.clone();
        set.spawn(async move { repo.has_blob(&blob(i)).await });
    }
    while let Some(r) = set.join_next().await {
        assert!(!r.unwrap().unwrap(), "HEAD of a blob never pushed answered true");
    }

    let refused = head_401s();
    assert!(refused >= 2, "only {refused} requests met the expired token: the test did not set up concurrent 401s");
    let issued = ts.issued();
    assert_eq!(issued.len(), 1, "{refused} concurrent 401s fetched {} tokens: {issued:#?}", issued.len());
    assert_all_for_service(&ts.requests());
    // Every request was answered after its one retry with the new token.
    let answered = reg.requests().iter().filter(|r| r.method == "HEAD" && r.status == 404).count();
    assert_eq!(answered, N + 1);
}

/// The refresh token the token server accepts in the identity-token tests.
const IDENTITY: &str = "idtok-7f3a9c-refresh";

/// A registry whose token server takes `USER`/`PASS` (GET) and [`IDENTITY`] (OAuth2 POST).
fn identity_registry() -> TestRegistry {
    TestRegistry::start(RegistryOpts::token_with(TokenOpts::new(USER, PASS).with_refresh_token(IDENTITY)))
}

/// A `DOCKER_CONFIG` dir whose config.json is `config`.
fn docker_config_dir(config: serde_json::Value) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("config.json"), serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    dir
}

/// `hoist -vv ARGS` with credentials from `DOCKER_CONFIG=config` only: no `--creds`, and no
/// podman auth file (`REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`) of the
/// machine running the tests in the way.
fn hoist_with_docker_config(config: &Path, path_prefix: Option<&Path>, args: &[&str]) -> std::process::Output {
    let mut cmd = hoist_cmd();
    cmd.arg("-vv").args(args);
    cmd.env("DOCKER_CONFIG", config).env("HOME", config).env_remove("REGISTRY_AUTH_FILE").env_remove("XDG_RUNTIME_DIR");
    if let Some(dir) = path_prefix {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let joined = std::env::join_paths(std::iter::once(dir.to_path_buf()).chain(std::env::split_paths(&path)));
        cmd.env("PATH", joined.unwrap());
    }
    cmd.output().unwrap()
}

/// Every token request was an OAuth2 refresh-token POST for our service, answered 200: no GET
/// with basic auth (or none) ever went to the token server.
#[track_caller]
fn assert_all_refresh_token_grants(reqs: &[TokenRequest]) {
    assert!(!reqs.is_empty(), "no token requests");
    for r in reqs {
        assert_eq!(r.method, "POST", "{r:?}");
        assert_eq!(r.grant_type.as_deref(), Some("refresh_token"), "{r:?}");
        assert!(r.client_id.as_deref().is_some_and(|c| !c.is_empty()), "no client_id: {r:?}");
        assert_eq!(r.service.as_deref(), Some(TOKEN_SERVICE), "{r:?}");
        assert_eq!(r.status, 200, "{r:?}");
    }
}

#[test]
fn identity_token_from_docker_config_gets_tokens_by_refresh_token_grant() {
    let reg = identity_registry();
    let ts = token_server(&reg);
    let host = reg.host();
    let layout = sample_layout();
    // As docker stores it: the identity token, and beside it an `auth` that is no use on its
    // own (here a wrong password): the identity token must win, or the GET with this basic
    // auth is refused and the push fails.
    let config = docker_config_dir(serde_json::json!({
        "auths": {
            host.clone(): {
                "auth": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, format!("{USER}:not-the-pw")),
                "identitytoken": IDENTITY,
            }
        }
    }));

    let push =
        hoist_with_docker_config(config.path(), None, &["push", layout.to_str().unwrap(), &format!("{host}/app")]);
    let push_out = assert_success("push with identity token", &push);
    let push_err = String::from_utf8_lossy(&push.stderr);
    assert!(!push_out.contains(IDENTITY) && !push_err.contains(IDENTITY), "identity token printed: {push_err}");
    let push_tokens = ts.requests();
    assert_all_refresh_token_grants(&push_tokens);
    assert!(
        push_tokens.iter().any(|r| grants(&r.scopes, "app", &["pull", "push"])),
        "no refresh-token grant for repository:app:pull,push: {push_tokens:#?}"
    );
    assert!(reg.count("PUT", "/manifests/") >= 2, "manifests not pushed");

    ts.clear();
    let tmp = tempfile::tempdir().unwrap();
    let dst = tmp.path().join("pulled");
    let pull =
        hoist_with_docker_config(config.path(), None, &["pull", &format!("{host}/app:multi"), dst.to_str().unwrap()]);
    assert_success("pull with identity token", &pull);
    let pull_tokens = ts.requests();
    assert_all_refresh_token_grants(&pull_tokens);
    assert!(pull_tokens.iter().any(|r| grants(&r.scopes, "app", &["pull"])), "{pull_tokens:#?}");
    let digest = layout_tag_digest(&layout, "multi");
    assert_eq!(layout_tag_digest(&dst, "multi"), digest);
    for f in fs::read_dir(dst.join("blobs/sha256")).unwrap() {
        let f = f.unwrap();
        let name = f.file_name().to_string_lossy().into_owned();
        assert_eq!(fs::read(f.path()).unwrap(), layout_blob(&layout, &format!("sha256:{name}")), "blob {name}");
    }

    // The same token from a credential helper (`credHelpers`): docker's helpers hand an
    // identity token back as Username `<token>`.
    ts.clear();
    let bin = tempfile::tempdir().unwrap();
    let helper = bin.path().join("docker-credential-hoisttest");
    fs::write(
        &helper,
        format!("#!/bin/sh\ncat >/dev/null\necho '{{\"Username\":\"<token>\",\"Secret\":\"{IDENTITY}\"}}'\n"),
    )
    .unwrap();
    fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let helper_config = docker_config_dir(serde_json::json!({"credHelpers": {host.clone(): "hoisttest"}}));
    let inspect = hoist_with_docker_config(
        helper_config.path(),
        Some(bin.path()),
        &["inspect", "--raw", &format!("{host}/app:multi")],
    );
    let raw = assert_success("inspect with identity token from a credential helper", &inspect);
    assert_eq!(raw.as_bytes(), layout_blob(&layout, &digest));
    let helper_tokens = ts.requests();
    assert_all_refresh_token_grants(&helper_tokens);
}

#[test]
fn wrong_identity_token_is_exit_4_names_the_registry_and_hides_the_token() {
    let reg = identity_registry();
    let ts = token_server(&reg);
    let layout = sample_layout();
    let host = reg.host();
    let bad = "idtok-wrong-0b1d";
    let config = docker_config_dir(serde_json::json!({"auths": {host.clone(): {"identitytoken": bad}}}));
    for args in [
        vec!["push".to_owned(), format!("{}:multi", layout.display()), format!("{host}/app:multi")],
        vec!["inspect".to_owned(), format!("{host}/app:multi")],
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = hoist_with_docker_config(config.path(), None, &args);
        let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.status.code(), Some(4), "{args:?}: {all}");
        assert!(all.contains(&host), "error does not name {host}: {all}");
        assert!(all.contains("identity token"), "error does not say the identity token was refused: {all}");
        assert!(!all.contains(bad), "identity token leaked: {all}");
    }
    let reqs = ts.requests();
    assert!(!reqs.is_empty(), "no token requests");
    for r in &reqs {
        assert_eq!(
            (r.method.as_str(), r.grant_type.as_deref(), r.status),
            ("POST", Some("refresh_token"), 401),
            "{r:?}"
        );
    }
    assert_eq!(reg.count("PUT", "/manifests/"), 0);
}
