//! Certificates, registries.conf and proxies as users have them (issue 14): a registry with
//! a self-signed certificate trusted by `--ca-file`, a certs.d directory or `--cert-dir`;
//! mutual TLS with a client certificate from certs.d; a message of its own for each TLS
//! failure (never the plain-HTTP fallback's `400`); registries.conf mirrors, `blocked` and
//! `prefix` remaps; `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY`; `--insecure-registry HOST` on any
//! port. Registries are distribution (`docker-registry`); skopeo judges where it can.

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use hoist_testkit::forward_proxy::ForwardProxy;
use hoist_testkit::registry::CertKind;

fn sample_layout() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/sample-layout")
}

fn sample_src() -> String {
    format!("{}:artifact", sample_layout().display())
}

/// The digest the sample layout tags `artifact`.
fn sample_digest() -> String {
    let v: serde_json::Value = serde_json::from_slice(&fs::read(sample_layout().join("index.json")).unwrap()).unwrap();
    v["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["annotations"]["org.opencontainers.image.ref.name"] == "artifact")
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The environment every test here controls: no proxy, certs.d roots `certs_d` (an empty
/// dir by default), registries.conf `conf` (an empty file by default).
struct Env {
    dir: tempfile::TempDir,
    certs_d: PathBuf,
    conf: PathBuf,
    proxy: Vec<(&'static str, String)>,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let certs_d = dir.path().join("certs.d");
        fs::create_dir_all(&certs_d).unwrap();
        let conf = dir.path().join("registries.conf");
        fs::write(&conf, "").unwrap();
        Env { dir, certs_d, conf, proxy: vec![] }
    }

    /// Trust/identify `host` with the files of `src` (a certs dir), as certs.d/HOST/.
    fn certs_for(&self, host: &str, src: &Path) {
        let d = self.certs_d.join(host);
        fs::create_dir_all(&d).unwrap();
        for e in fs::read_dir(src).unwrap() {
            let e = e.unwrap();
            fs::copy(e.path(), d.join(e.file_name())).unwrap();
        }
    }

    fn conf(&self, text: &str) {
        fs::write(&self.conf, text).unwrap();
    }

    fn cmd(&self) -> Command {
        let mut c = hoist_cmd();
        for v in
            ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"]
        {
            c.env_remove(v);
        }
        c.env("HOIST_CERTS_D", &self.certs_d).env("CONTAINERS_REGISTRIES_CONF", &self.conf);
        c.env("DOCKER_CONFIG", self.dir.path().join("docker"))
            .env("REGISTRY_AUTH_FILE", self.dir.path().join("auth.json"));
        for (k, v) in &self.proxy {
            c.env(k, v);
        }
        c
    }

    fn hoist<I: IntoIterator<Item = S>, S: AsRef<std::ffi::OsStr>>(&self, args: I) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    fn out_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The pulled layout's root is the sample's artifact, byte for byte (its digest).
fn assert_pulled_sample(layout: &Path) {
    let v: serde_json::Value = serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let digests: Vec<&str> = v["manifests"].as_array().unwrap().iter().filter_map(|e| e["digest"].as_str()).collect();
    assert!(digests.contains(&sample_digest().as_str()), "{digests:?}");
}

#[test]
fn self_signed_certificate_via_ca_file_cert_dir_and_certs_d() {
    let reg = TestRegistry::start(RegistryOpts::tls_cert(CertKind::SelfSigned));
    let env = Env::new();
    let target = format!("{}/selfsigned/app:v1", reg.host());
    // untrusted: refused, as an unknown authority, not as HTTP's 400
    let out = env.hoist(["push", &sample_src(), &target]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("unknown authority") && err.contains(&reg.host()) && !err.contains("/v2/: 400"), "{err}");
    // --ca-file with the certificate itself
    let ca = reg.ca_pem_path();
    assert_success("push --ca-file", &env.hoist(["--ca-file", ca.to_str().unwrap(), "push", &sample_src(), &target]));
    // --cert-dir (skopeo's name)
    let dest = env.out_dir("via-cert-dir");
    let cert_dir = reg.cert_dir();
    assert_success(
        "pull --cert-dir",
        &env.hoist(["--cert-dir", cert_dir.to_str().unwrap(), "pull", &target, dest.to_str().unwrap()]),
    );
    assert_pulled_sample(&dest);
    // certs.d/HOST:PORT/ca.crt, read by itself
    env.certs_for(&reg.host(), &reg.cert_dir());
    let dest = env.out_dir("via-certs-d");
    assert_success("pull via certs.d", &env.hoist(["pull", &target, dest.to_str().unwrap()]));
    assert_pulled_sample(&dest);
    // skopeo agrees the registry holds what hoist pushed, through the same cert dir
    if hoist_testkit::optional!("skopeo") {
        let mut args = vec!["inspect".to_string(), "--raw".into()];
        args.extend(reg.skopeo_args(""));
        args.push(format!("docker://{target}"));
        let out = skopeo(&args);
        assert_success("skopeo inspect", &out);
        assert_eq!(sha256(&out.stdout), sample_digest());
    }
}

/// Removes a directory hoist's test made under /etc when dropped (also on a failed assert).
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Removes a directory when dropped if it is empty (a certs.d root another test may use too).
struct RemoveIfEmptyOnDrop(PathBuf);

impl Drop for RemoveIfEmptyOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.0);
    }
}

/// Without `$HOIST_CERTS_D`, the system's certs.d roots are read by themselves: docker's
/// `/etc/docker/certs.d/HOST:PORT/ca.crt` and containers' `/etc/containers/certs.d/...`
/// (each test registry has its own port, so the directory is this test's alone; removed
/// afterwards).
#[test]
fn system_certs_d_of_docker_and_containers_are_read_by_default() {
    hoist_testkit::require_root!("writing /etc/docker/certs.d and /etc/containers/certs.d");
    let env = Env::new();
    for root in ["/etc/docker/certs.d", "/etc/containers/certs.d"] {
        let reg = TestRegistry::start(RegistryOpts::tls_cert(CertKind::SelfSigned));
        let target = format!("{}/system/app:v1", reg.host());
        let dir = Path::new(root).join(reg.host());
        // A root this test made is removed again, like its entry.
        let _made_root = (!Path::new(root).exists()).then(|| RemoveIfEmptyOnDrop(PathBuf::from(root)));
        fs::create_dir_all(&dir).unwrap();
        let _cleanup = RemoveOnDrop(dir.clone());
        fs::copy(reg.ca_pem_path(), dir.join("ca.crt")).unwrap();
        let out = env.cmd().env_remove("HOIST_CERTS_D").args(["push", &sample_src(), &target]).output().unwrap();
        assert_success(&format!("push trusting {}", dir.display()), &out);
        drop(_cleanup);
        // and without it, the same registry is refused as untrusted
        let out = env.cmd().env_remove("HOIST_CERTS_D").args(["push", &sample_src(), &target]).output().unwrap();
        assert!(!out.status.success(), "{root}: trusted without its certs.d entry");
    }
}

#[test]
fn mutual_tls_with_a_client_certificate_from_certs_d() {
    let reg = TestRegistry::start(RegistryOpts::mtls());
    let target = format!("{}/mtls/app:v1", reg.host());
    let ca = reg.ca_pem_path();
    // no client certificate: the registry's refusal says a client certificate is needed
    let env = Env::new();
    let out = env.hoist(["--ca-file", ca.to_str().unwrap(), "push", &sample_src(), &target]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("requires a client certificate") && err.contains("client.cert"), "{err}");
    // a client certificate from another CA: refused as such
    let env = Env::new();
    env.certs_for(&reg.host(), &reg.rogue_client_cert_dir());
    let out = env.hoist(["push", &sample_src(), &target]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("refused the client certificate"), "{err}");
    // certs.d/HOST:PORT/{ca.crt,client.cert,client.key}
    let env = Env::new();
    env.certs_for(&reg.host(), &reg.client_cert_dir());
    assert_success("push with client cert", &env.hoist(["push", &sample_src(), &target]));
    // skopeo, with the same client certificate, finds what hoist pushed
    if hoist_testkit::optional!("skopeo") {
        let mut args = vec!["inspect".to_string(), "--raw".into()];
        args.extend(reg.skopeo_args(""));
        args.push(format!("docker://{target}"));
        let out = skopeo(&args);
        assert_success("skopeo inspect over mutual TLS", &out);
        assert_eq!(sha256(&out.stdout), sample_digest());
    }
    // and --cert-dir
    let env2 = Env::new();
    let dest = env2.out_dir("pulled");
    let dir = reg.client_cert_dir();
    assert_success(
        "pull --cert-dir",
        &env2.hoist(["--cert-dir", dir.to_str().unwrap(), "pull", &target, dest.to_str().unwrap()]),
    );
    assert_pulled_sample(&dest);
}

#[test]
fn each_tls_failure_has_its_own_message() {
    let env = Env::new();
    let cases = [
        (CertKind::CaSigned, false, "unknown issuer"),
        (CertKind::WrongName, true, "name mismatch"),
        (CertKind::Expired, true, "expired"),
    ];
    for (kind, trust, want) in cases {
        let reg = TestRegistry::start(RegistryOpts::tls_cert(kind));
        let target = format!("{}/fail/app:v1", reg.host());
        let ca = reg.ca_pem_path();
        let mut args: Vec<&str> = vec![];
        if trust {
            args.extend(["--ca-file", ca.to_str().unwrap()]);
        }
        let out = env.hoist(args.iter().copied().chain(["push", sample_src().as_str(), target.as_str()]));
        assert!(!out.status.success(), "{kind:?}");
        let err = stderr(&out);
        assert!(err.contains(want), "{kind:?}: {err}");
        assert!(err.contains(&reg.host()) && err.contains("--tls-verify=false"), "{kind:?}: {err}");
        assert!(err.contains("--ca-file") && err.contains("certs.d"), "{kind:?}: {err}");
        assert!(!err.contains("/v2/: 400"), "{kind:?}: the plain-HTTP fallback must not mask it: {err}");
        // nothing reached the registry over plain HTTP
        assert!(!reg.log().contains("client sent an HTTP request to an HTTPS server"), "{kind:?}");
        // --tls-verify=false goes through
        assert_success("push --tls-verify=false", &env.hoist(["--tls-verify=false", "push", &sample_src(), &target]));
    }
}

#[test]
fn loopback_plain_http_registry_still_falls_back_by_itself() {
    let reg = TestRegistry::plain();
    let env = Env::new();
    let target = format!("{}/plain/app:v1", reg.host());
    assert_success("push to plain loopback", &env.hoist(["push", &sample_src(), &target]));
}

#[test]
fn insecure_registry_host_matches_any_port_host_port_only_that_port() {
    // hoist-proxied.test only resolves through the proxy; --insecure-registry makes it plain HTTP
    let reg = TestRegistry::plain();
    let proxy = ForwardProxy::start();
    let mut env = Env::new();
    env.proxy = vec![("HTTP_PROXY", proxy.url()), ("HTTPS_PROXY", proxy.url())];
    let name = format!("hoist-proxied.test:{}", reg.port());
    let target = format!("{name}/insecure/app:v1");
    for (flag, ok) in [
        ("hoist-proxied.test".to_string(), true),
        (name.clone(), true),
        (format!("hoist-proxied.test:{}", reg.port() as u32 + 1), false),
    ] {
        let out = env.hoist(["--insecure-registry", &flag, "push", &sample_src(), &target]);
        assert_eq!(out.status.success(), ok, "--insecure-registry {flag}: {}", stderr(&out));
    }
}

#[test]
fn proxy_environment_is_honoured_and_loopback_is_never_proxied() {
    let tls = TestRegistry::start(RegistryOpts::tls());
    let proxy = ForwardProxy::start();
    let ca = tls.ca_pem_path();
    let ca = ca.to_str().unwrap();
    // HTTPS through CONNECT, to a name only the proxy resolves
    let mut env = Env::new();
    env.proxy = vec![("HTTPS_PROXY", proxy.url())];
    let target = format!("hoist-proxied.test:{}/proxied/app:v1", tls.port());
    assert_success("push through HTTPS_PROXY", &env.hoist(["--ca-file", ca, "push", &sample_src(), &target]));
    let seen = proxy.requests();
    assert!(seen.iter().any(|l| l.starts_with(&format!("CONNECT hoist-proxied.test:{}", tls.port()))), "{seen:?}");
    // NO_PROXY takes the name off the proxy: it does not resolve
    env.proxy.push(("NO_PROXY", "example.org,.test".into()));
    let out = env.hoist(["--ca-file", ca, "--retries", "1", "inspect", &target]);
    assert!(!out.status.success(), "NO_PROXY must bypass the proxy");
    // plain HTTP through HTTP_PROXY (absolute-form requests)
    let plain = TestRegistry::plain();
    let mut env = Env::new();
    env.proxy = vec![("HTTP_PROXY", proxy.url())];
    let target = format!("hoist-proxied.test:{}/proxied/app:v1", plain.port());
    assert_success(
        "push through HTTP_PROXY",
        &env.hoist(["--insecure-registry", "hoist-proxied.test", "push", &sample_src(), &target]),
    );
    let seen = proxy.requests();
    assert!(
        seen.iter().any(|l| l.starts_with(&format!("GET http://hoist-proxied.test:{}/v2/", plain.port()))),
        "{seen:?}"
    );
    // a loopback registry is reached directly even with a dead proxy set
    let mut env = Env::new();
    env.proxy = vec![("HTTPS_PROXY", "http://127.0.0.1:9".into()), ("HTTP_PROXY", "http://127.0.0.1:9".into())];
    assert_success(
        "loopback with a dead proxy",
        &env.hoist(["--ca-file", ca, "push", &sample_src(), &format!("{}/direct/app:v1", tls.host())]),
    );
}

/// A port on 127.0.0.1 where nothing listens.
fn dead_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn registries_conf_mirror_serves_a_pull_when_the_primary_is_down() {
    let mirror = TestRegistry::plain();
    let env = Env::new();
    // the mirror holds the image under its own namespace
    assert_success(
        "seed mirror",
        &env.hoist(["push", &sample_src(), &format!("{}/mirror-ns/team/app:v1", mirror.host())]),
    );
    let uploads = mirror.count("POST", "/v2/mirror-ns/team/app/blobs/uploads");
    let primary = format!("127.0.0.1:{}", dead_port());
    let other = TestRegistry::plain(); // a second mirror, empty: tried first, has nothing
    env.conf(&format!(
        r#"
[[registry]]
location = "{primary}"

[[registry.mirror]]
location = "{empty}/nothing-here"

[[registry.mirror]]
location = "{mirror}/mirror-ns"
"#,
        empty = other.host(),
        mirror = mirror.host()
    ));
    let dest = env.out_dir("pulled");
    let out = env.hoist(["-v", "pull", &format!("{primary}/team/app:v1"), dest.to_str().unwrap()]);
    assert_success("pull through mirror", &out);
    assert_pulled_sample(&dest);
    let err = stderr(&out);
    assert!(
        err.contains("served by mirror") && err.contains(&format!("{}/mirror-ns/team/app", mirror.host())),
        "{err}"
    );
    // The summary and the JSON output name the mirror that served the pull (no -v needed).
    let out = env.hoist(["pull", &format!("{primary}/team/app:v1"), env.out_dir("summary").to_str().unwrap()]);
    let err = stderr(&out);
    let mirror_loc = format!("docker://{}/mirror-ns/team/app", mirror.host());
    assert!(
        out.status.success() && err.lines().any(|l| l.contains(&format!("(served by mirror {mirror_loc}) ->"))),
        "{err}"
    );
    let out = env.hoist([
        "--format",
        "json",
        "pull",
        &format!("{primary}/team/app:v1"),
        env.out_dir("json").to_str().unwrap(),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stderr(&out)));
    assert_eq!(v["servedBy"], mirror_loc.as_str(), "{v}");
    // mirrors in order: the empty one was asked first
    assert!(
        other.count("GET", "/v2/nothing-here/team/app/manifests/v1")
            + other.count("HEAD", "/v2/nothing-here/team/app/manifests/v1")
            > 0
    );
    // pushes go to the primary only (down): refused, and the mirror got no upload
    let out = env.hoist(["--retries", "1", "push", &sample_src(), &format!("{primary}/team/app:v2")]);
    assert!(!out.status.success());
    assert_eq!(mirror.count("POST", "/v2/mirror-ns/team/app/blobs/uploads"), uploads, "a push never goes to a mirror");

    // pull-from-mirror = "digest-only": a tag pull does not use the mirror
    env.conf(&format!(
        "[[registry]]\nlocation = \"{primary}\"\n[[registry.mirror]]\nlocation = \"{}/mirror-ns\"\npull-from-mirror = \"digest-only\"\n",
        mirror.host()
    ));
    let out =
        env.hoist(["--retries", "1", "pull", &format!("{primary}/team/app:v1"), env.out_dir("tag").to_str().unwrap()]);
    assert!(!out.status.success(), "a tag pull must not use a digest-only mirror");
    let by_digest = format!("{primary}/team/app@{}", sample_digest());
    let dest = env.out_dir("digest");
    assert_success("pull by digest via mirror", &env.hoist(["pull", &by_digest, dest.to_str().unwrap()]));
    assert_pulled_sample(&dest);
    // A pull the primary serves names no mirror.
    let out = env.hoist([
        "--format",
        "json",
        "pull",
        &format!("{}/mirror-ns/team/app:v1", mirror.host()),
        env.out_dir("direct").to_str().unwrap(),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stderr(&out)));
    assert!(v.get("servedBy").is_none(), "{v}");
}

#[test]
fn registries_conf_blocked_refuses_and_prefix_remaps() {
    let reg = TestRegistry::plain();
    let env = Env::new();
    assert_success("seed", &env.hoist(["push", &sample_src(), &format!("{}/real/ns/app:v1", reg.host())]));
    env.conf(&format!(
        r#"
[[registry]]
prefix = "hoist-alias.test/team"
location = "{host}/real/ns"

[[registry]]
location = "{host}/forbidden"
blocked = true
"#,
        host = reg.host()
    ));
    // prefix: hoist-alias.test/team/app (never resolves) is read from HOST/real/ns/app
    let dest = env.out_dir("remapped");
    assert_success(
        "pull through prefix remap",
        &env.hoist(["pull", "hoist-alias.test/team/app:v1", dest.to_str().unwrap()]),
    );
    assert_pulled_sample(&dest);
    assert!(reg.count("GET", "/v2/real/ns/app/manifests/v1") + reg.count("HEAD", "/v2/real/ns/app/manifests/v1") > 0);
    // blocked: refused with the file's name, and nothing asked of the registry
    let before = reg.requests().len();
    for args in [
        vec!["pull".to_string(), format!("{}/forbidden/app:v1", reg.host()), env.out_dir("b").display().to_string()],
        vec!["push".to_string(), sample_src(), format!("{}/forbidden/app:v1", reg.host())],
    ] {
        let out = env.hoist(&args);
        assert!(!out.status.success(), "{args:?}");
        let err = stderr(&out);
        assert!(err.contains("blocked") && err.contains(env.conf.to_str().unwrap()), "{err}");
    }
    assert_eq!(reg.requests().len(), before, "a blocked name must not reach the registry");
}

#[test]
fn registries_conf_insecure_allows_an_untrusted_certificate() {
    let reg = TestRegistry::start(RegistryOpts::tls());
    let env = Env::new();
    let target = format!("{}/insecure-conf/app:v1", reg.host());
    let out = env.hoist(["push", &sample_src(), &target]);
    assert!(!out.status.success(), "untrusted without insecure = true");
    env.conf(&format!("[[registry]]\nlocation = \"{}\"\ninsecure = true\n", reg.host()));
    assert_success("push to an insecure = true registry", &env.hoist(["push", &sample_src(), &target]));
}

/// A loopback server that is no TLS server: a TLS hello (first byte 0x16) is hung up on
/// (with a reset when `reset`); plain HTTP gets `200 {}` for `/v2/` and 404 otherwise. It
/// records the request lines it answered.
fn not_tls_server(reset: bool) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let s = s.clone();
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let Ok(n) = conn.read(&mut buf) else { return };
                    if n == 0 {
                        return;
                    }
                    head.extend_from_slice(&buf[..n]);
                    if head[0] == 0x16 {
                        if reset {
                            use std::os::fd::AsRawFd;
                            let linger = libc::linger { l_onoff: 1, l_linger: 0 };
                            // SAFETY: setsockopt on a socket this thread owns, with a valid linger struct.
                            unsafe {
                                libc::setsockopt(
                                    conn.as_raw_fd(),
                                    libc::SOL_SOCKET,
                                    libc::SO_LINGER,
                                    &linger as *const libc::linger as *const libc::c_void,
                                    std::mem::size_of::<libc::linger>() as libc::socklen_t,
                                );
                            }
                        }
                        return;
                    }
                    if head.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                let line = String::from_utf8_lossy(&head).lines().next().unwrap_or("").to_string();
                s.lock().unwrap().push(line.clone());
                let reply: &[u8] = if line.starts_with("GET /v2/ ") {
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}"
                } else {
                    b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                };
                let _ = conn.write_all(reply);
            });
        }
    });
    (port, seen)
}

#[test]
fn loopback_falls_back_to_http_when_the_tls_hello_is_hung_up_on_or_reset() {
    let env = Env::new();
    for reset in [false, true] {
        let (port, seen) = not_tls_server(reset);
        let out = env.hoist(["--retries", "1", "tags", &format!("127.0.0.1:{port}/x/y")]);
        assert!(!out.status.success(), "the tag list is not found");
        let seen = seen.lock().unwrap().clone();
        assert!(
            seen.iter().any(|l| l.starts_with("GET /v2/x/y/tags/list")),
            "reset={reset}: {seen:?}: {}",
            stderr(&out)
        );
    }
}
