//! A throwaway CNCF distribution registry (Debian's `docker-registry`, 2.8.2) for one test:
//! own temp dir, config, free port on 127.0.0.1, optional htpasswd auth, bearer token auth
//! (with a [`TokenServer`]) and TLS (a CA-signed leaf, the self-signed one-liner, an expired
//! or misnamed certificate: [`CertKind`]; mutual TLS with [`RegistryOpts::mtls`]); stopped
//! on drop, and also when the test process dies (a watchdog reads our end of a pipe).
//!
//! Not for: registries elsewhere; only what `docker-registry serve` can do.

use std::fmt::Write as _;
use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::token::{TokenOpts, TokenServer};

/// Which server certificate a TLS [`TestRegistry`] serves (all made with openssl).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CertKind {
    /// A leaf (CA:FALSE) for 127.0.0.1 / localhost (and `hoist-proxied.test`, a name only
    /// a proxy resolves), signed by a throwaway CA.
    #[default]
    CaSigned,
    /// The one-line `openssl req -x509` kind: self-signed, CA:TRUE, its own CA, with a SAN
    /// for 127.0.0.1 / localhost.
    SelfSigned,
    /// A CA-signed leaf that expired in 2020.
    Expired,
    /// A CA-signed leaf for `wrong.example` only.
    WrongName,
}

/// How to start a [`TestRegistry`].
#[derive(Clone, Debug, Default)]
pub struct RegistryOpts {
    /// htpasswd (bcrypt) basic auth with this user and password.
    pub auth: Option<(String, String)>,
    /// Serve HTTPS with a throwaway CA and a leaf certificate for 127.0.0.1 / localhost.
    pub tls: bool,
    /// The server certificate when `tls` (default: CA-signed leaf).
    pub cert: CertKind,
    /// Mutual TLS: require a client certificate signed by a throwaway client CA
    /// (distribution's `http.tls.clientcas`); see [`TestRegistry::client_cert_dir`].
    pub client_ca: bool,
    /// Bearer token auth: a [`TokenServer`] started with these options issues the tokens.
    pub token: Option<TokenOpts>,
    /// Deletion disabled (`storage.delete.enabled: false`: DELETE answers 405 UNSUPPORTED);
    /// by default deletion is enabled.
    pub no_delete: bool,
    /// distribution's `catalog.maxentries`: `_catalog` pages of at most this many
    /// repositories (a request for more is refused with 400 PAGINATION_NUMBER_INVALID).
    pub catalog_max_entries: Option<usize>,
}

impl RegistryOpts {
    /// Plain HTTP, no auth.
    pub fn plain() -> Self {
        Self::default()
    }

    /// Basic auth with `user`/`pass`.
    pub fn auth(user: &str, pass: &str) -> Self {
        Self { auth: Some((user.to_owned(), pass.to_owned())), ..Self::default() }
    }

    /// HTTPS, no auth.
    pub fn tls() -> Self {
        Self { tls: true, ..Self::default() }
    }

    /// Bearer token auth: tokens for `user`/`pass` from a [`TokenServer`].
    pub fn token(user: &str, pass: &str) -> Self {
        Self::token_with(TokenOpts::new(user, pass))
    }

    /// Bearer token auth from a [`TokenServer`] started with `opts`.
    pub fn token_with(opts: TokenOpts) -> Self {
        Self { token: Some(opts), ..Self::default() }
    }

    /// Also serve HTTPS.
    pub fn with_tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// HTTPS with this kind of server certificate.
    pub fn tls_cert(cert: CertKind) -> Self {
        Self { tls: true, cert, ..Self::default() }
    }

    /// Plain HTTP, no auth, deletion disabled.
    pub fn no_delete() -> Self {
        Self { no_delete: true, ..Self::default() }
    }

    /// HTTPS that requires a client certificate (mutual TLS).
    pub fn mtls() -> Self {
        Self { tls: true, client_ca: true, ..Self::default() }
    }
}

/// One request from the registry's access log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedRequest {
    /// `GET`, `PUT`, ...
    pub method: String,
    /// Path and query, as requested.
    pub path: String,
    /// `HTTP/1.1`, `HTTP/2.0`
    pub proto: String,
    /// Response status.
    pub status: u16,
}

/// A running registry; stopped (with its process group) on drop.
pub struct TestRegistry {
    dir: TempDir,
    port: u16,
    opts: RegistryOpts,
    token: Option<TokenServer>,
    child: Option<Child>,
}

impl std::fmt::Debug for TestRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestRegistry").field("url", &self.url()).field("dir", &self.dir.path()).finish()
    }
}

const READY_TIMEOUT: Duration = Duration::from_secs(30);

impl TestRegistry {
    /// Starts a registry and waits until `GET /v2/` answers 200 or 401. Panics (with the
    /// registry's log) if it cannot.
    pub fn start(opts: RegistryOpts) -> TestRegistry {
        let dir = tempfile::Builder::new().prefix("hoist-registry.").tempdir().expect("temp dir for registry");
        let root = dir.path().to_owned();
        fs::create_dir_all(root.join("data")).expect("registry data dir");
        if let Some((user, pass)) = &opts.auth {
            run(Command::new("htpasswd").arg("-Bbc").arg(root.join("htpasswd")).arg(user).arg(pass));
        }
        if opts.tls {
            make_certs(&root, opts.cert, opts.client_ca);
        }
        let token = opts.token.clone().map(TokenServer::start);
        let mut reg = TestRegistry { dir, port: 0, opts, token, child: None };
        // the free port may be taken between probe and bind: try a few
        let mut last_err = String::new();
        for _ in 0..5 {
            reg.port = free_port();
            fs::write(root.join("config.yml"), reg.config_yaml()).expect("write config.yml");
            reg.spawn();
            match reg.wait_ready() {
                Ok(()) => return reg,
                Err(e) => {
                    reg.stop();
                    let log = reg.log();
                    last_err = format!("{e}\n--- registry log\n{log}");
                    if !log.contains("address already in use") {
                        break;
                    }
                }
            }
        }
        panic!("registry did not start: {last_err}");
    }

    /// A plain-HTTP registry without auth.
    pub fn plain() -> TestRegistry {
        Self::start(RegistryOpts::plain())
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT` or `https://...`.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme(), self.host())
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &'static str {
        if self.opts.tls {
            "https"
        } else {
            "http"
        }
    }

    /// Whether it serves HTTPS.
    pub fn is_tls(&self) -> bool {
        self.opts.tls
    }

    /// User and password, when started with basic or token auth.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        let token = self.opts.token.as_ref().map(|t| (t.user.as_str(), t.pass.as_str()));
        self.opts.auth.as_ref().map(|(u, p)| (u.as_str(), p.as_str())).or(token)
    }

    /// The token server, when started with token auth.
    pub fn token_server(&self) -> Option<&TokenServer> {
        self.token.as_ref()
    }

    /// The registry's process group id (its shell wrapper leads the group).
    pub fn process_group(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    /// The state dir (config.yml, data/, log, tls/, certs.d/, htpasswd).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Storage root (`rootdirectory`).
    pub fn data_dir(&self) -> PathBuf {
        self.dir().join("data")
    }

    /// The registry's combined stdout/stderr (app log and access log).
    pub fn log_path(&self) -> PathBuf {
        self.dir().join("registry.log")
    }

    /// PEM of the CA that signed the server certificate. Panics without TLS.
    pub fn ca_pem_path(&self) -> PathBuf {
        assert!(self.opts.tls, "ca_pem_path: registry was started without TLS");
        self.dir().join("tls/ca.pem")
    }

    /// A dir holding only `ca.crt`, for skopeo `--src-cert-dir`/`--dest-cert-dir`. Panics
    /// without TLS.
    pub fn cert_dir(&self) -> PathBuf {
        assert!(self.opts.tls, "cert_dir: registry was started without TLS");
        self.dir().join("certs.d")
    }

    /// A certs directory for mutual TLS: `ca.crt`, `client.cert` and `client.key` (a client
    /// certificate the registry accepts). Panics without mutual TLS.
    pub fn client_cert_dir(&self) -> PathBuf {
        assert!(self.opts.client_ca, "client_cert_dir: registry was started without mutual TLS");
        self.dir().join("client-certs.d")
    }

    /// A certs directory with `ca.crt` and a client certificate from another CA, which the
    /// registry refuses. Panics without mutual TLS.
    pub fn rogue_client_cert_dir(&self) -> PathBuf {
        assert!(self.opts.client_ca, "rogue_client_cert_dir: registry was started without mutual TLS");
        self.dir().join("rogue-certs.d")
    }

    /// skopeo flags to reach this registry as `side`: "src" or "dest" for `copy`/`sync`, ""
    /// for `inspect`/`delete`/`list-tags`. TLS verification off for plain HTTP, the cert dir
    /// for TLS (with the client certificate for mutual TLS), and the credentials with auth.
    pub fn skopeo_args(&self, side: &str) -> Vec<String> {
        let p = if side.is_empty() { "--".to_owned() } else { format!("--{side}-") };
        let mut v = Vec::new();
        if self.opts.client_ca {
            v.push(format!("{p}cert-dir={}", self.client_cert_dir().display()));
        } else if self.opts.tls {
            v.push(format!("{p}cert-dir={}", self.cert_dir().display()));
        } else {
            v.push(format!("{p}tls-verify=false"));
        }
        if let Some((u, pass)) = self.credentials() {
            v.push(format!("{p}creds={u}:{pass}"));
        }
        v
    }

    /// A reqwest client that trusts this registry's CA (for async tests).
    pub fn http_client(&self) -> reqwest::Client {
        let mut b = reqwest::Client::builder();
        if self.opts.tls {
            let pem = fs::read(self.ca_pem_path()).expect("read ca.pem");
            b = b.add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("CA PEM"));
        }
        b.build().expect("reqwest client")
    }

    /// Runs distribution's `garbage-collect` on this registry's storage (`-m`: also delete
    /// manifests no tag names) and returns its output; panics when it fails. Run it while no
    /// request is in flight.
    pub fn garbage_collect(&self, delete_untagged: bool) -> String {
        let mut cmd = Command::new("docker-registry");
        cmd.arg("garbage-collect");
        if delete_untagged {
            cmd.arg("--delete-untagged");
        }
        let out = cmd.arg(self.dir().join("config.yml")).output().expect("run docker-registry garbage-collect");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "garbage-collect failed: {}\n{text}", out.status);
        text
    }

    /// The log so far.
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = fs::File::open(self.log_path()) {
            let mut buf = Vec::new();
            let _ = f.read_to_end(&mut buf);
            s = String::from_utf8_lossy(&buf).into_owned();
        }
        s
    }

    /// Requests from the access log, oldest first, after the log has been quiet for 50 ms
    /// (the registry writes a line just after it answered).
    pub fn requests(&self) -> Vec<LoggedRequest> {
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut last = self.requests_now();
        loop {
            std::thread::sleep(Duration::from_millis(50));
            let now = self.requests_now();
            if now.len() == last.len() || Instant::now() > deadline {
                return now;
            }
            last = now;
        }
    }

    /// Requests from the access log as it is right now.
    pub fn requests_now(&self) -> Vec<LoggedRequest> {
        self.log().lines().filter_map(parse_access_line).collect()
    }

    /// How many logged requests had `method` and a path containing `path_part`.
    pub fn count(&self, method: &str, path_part: &str) -> usize {
        self.requests().iter().filter(|r| r.method == method && r.path.contains(path_part)).count()
    }

    fn config_yaml(&self) -> String {
        let root = self.dir();
        let secret: String = {
            let bytes: [u8; 16] = rand::random();
            bytes.iter().fold(String::new(), |mut s, b| {
                let _ = write!(s, "{b:02x}");
                s
            })
        };
        let mut y = include_str!("registry-config.yml")
            .replace("@LEVEL@", "info")
            .replace("@ACCESSLOG_OFF@", "false")
            .replace("@DATA@", &root.join("data").display().to_string())
            .replace("@PORT@", &self.port.to_string())
            .replace("@SECRET@", &secret);
        if let Some(n) = self.opts.catalog_max_entries {
            let _ = write!(y, "catalog:\n  maxentries: {n}\n");
        }
        if self.opts.no_delete {
            y = y.replace("  delete:\n    enabled: true", "  delete:\n    enabled: false");
        }
        if self.opts.tls {
            let _ = write!(
                y,
                "  tls:\n    certificate: {}\n    key: {}\n",
                root.join("tls/cert.pem").display(),
                root.join("tls/key.pem").display()
            );
            if self.opts.client_ca {
                let _ = write!(y, "    clientcas:\n      - {}\n", root.join("tls/client-ca.pem").display());
            }
        }
        if self.opts.auth.is_some() {
            let _ =
                write!(y, "auth:\n  htpasswd:\n    realm: hoist-test\n    path: {}\n", root.join("htpasswd").display());
        } else if let Some(t) = &self.token {
            y.push_str(&t.registry_auth_yaml());
        }
        y
    }

    fn spawn(&mut self) {
        let log = fs::OpenOptions::new().create(true).append(true).open(self.log_path()).expect("open registry log");
        let log2 = log.try_clone().expect("dup registry log");
        // sh keeps the registry's exit status visible to try_wait(); the subshell holds our
        // stdin pipe and kills the registry when it reads EOF, i.e. when this process dies
        // without running Drop (SIGKILL, abort, a static never dropped).
        let script = r#"exec 3<&0
"$0" serve "$1" 3<&- </dev/null &
p=$!
(read _ <&3; kill $p 2>/dev/null) &
wait $p"#;
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("docker-registry")
            .arg(self.dir().join("config.yml"))
            .stdin(Stdio::piped())
            .stdout(log)
            .stderr(log2)
            .process_group(0)
            .spawn()
            .expect("spawn docker-registry (apt-get install docker-registry)");
        self.child = Some(child);
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let url = format!("{}/v2/", self.url());
        let ca = self.opts.tls.then(|| self.ca_pem_path());
        let probe_opts = ProbeOpts {
            // a certificate made to fail verification (webpki refuses the self-signed CA:TRUE kind) is
            // probed without verifying
            verify: self.opts.cert == CertKind::CaSigned,
            identity: self.opts.client_ca.then(|| self.client_cert_dir()),
        };
        let start = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!("registry exited early ({status})"));
                }
            }
            match probe(&url, ca.as_deref(), &probe_opts) {
                Ok(200 | 401) => return Ok(()),
                Ok(code) => return Err(format!("GET {url} answered {code}")),
                Err(_) if start.elapsed() < READY_TIMEOUT => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => return Err(format!("GET {url}: {e} (after {READY_TIMEOUT:?})")),
            }
        }
    }

    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pgid = child.id() as libc::pid_t;
        // SAFETY: kill(2) on the process group we created for this child.
        unsafe {
            libc::kill(-pgid, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: as above; the group's leader is our unreaped child, so the id is still ours.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        let _ = child.wait();
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How [`probe`] talks TLS.
struct ProbeOpts {
    verify: bool,
    /// A certs dir with `client.cert` and `client.key`.
    identity: Option<PathBuf>,
}

/// `GET url` with reqwest (trusting `ca` if given) on a helper thread with its own runtime,
/// so it works from sync tests and from inside a tokio test alike.
fn probe(url: &str, ca: Option<&Path>, opts: &ProbeOpts) -> Result<u16, String> {
    let url = url.to_owned();
    let ca = ca.map(Path::to_owned);
    let verify = opts.verify;
    let identity = opts.identity.clone();
    std::thread::spawn(move || -> Result<u16, String> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
        rt.block_on(async move {
            let mut b = reqwest::Client::builder().timeout(Duration::from_secs(5));
            if !verify {
                b = b.danger_accept_invalid_certs(true);
            } else if let Some(ca) = ca {
                let pem = fs::read(&ca).map_err(|e| format!("{}: {e}", ca.display()))?;
                let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| e.to_string())?;
                b = b.add_root_certificate(cert);
            }
            if let Some(dir) = identity {
                let mut pem = fs::read(dir.join("client.cert")).map_err(|e| e.to_string())?;
                pem.extend(fs::read(dir.join("client.key")).map_err(|e| e.to_string())?);
                b = b.identity(reqwest::Identity::from_pem(&pem).map_err(|e| e.to_string())?);
            }
            let client = b.build().map_err(|e| e.to_string())?;
            let resp = client.get(&url).send().await.map_err(|e| format!("{e:?}"))?;
            Ok(resp.status().as_u16())
        })
    })
    .join()
    .map_err(|_| "probe thread panicked".to_owned())?
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("bind 127.0.0.1:0")
}

#[track_caller]
fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
}

/// The server certificate of `kind` (see [`CertKind`]) in `root/tls/{cert,key}.pem`, the
/// CA to trust in `tls/ca.pem` and `certs.d/ca.crt`; with `client_ca`, a client CA
/// (`tls/client-ca.pem`) and two certs dirs: `client-certs.d/` with a client certificate
/// it signed, `rogue-certs.d/` with one signed by another CA. The CA-signed leaf is
/// CA:FALSE with EKU serverAuth and a SAN for 127.0.0.1 / localhost. P-256 keys, since
/// they are quick to make.
fn make_certs(root: &Path, kind: CertKind, client_ca: bool) {
    let tls = root.join("tls");
    fs::create_dir_all(&tls).expect("tls dir");
    let ossl = |args: &str| {
        run(Command::new("openssl").args(args.split_whitespace()).current_dir(&tls));
    };
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -sha256";
    let new_ca = |name: &str| {
        ossl(&format!(
            "req -x509 {ec} -days 30 -keyout {name}.key -out {name}.pem -subj /CN=hoist-test-{name} \
             -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign"
        ));
    };
    // a leaf `name` signed by CA `ca`, with extensions `ext`, valid `dates` (`-days N`, or
    // `openssl ca`'s `-startdate A -enddate B`)
    let leaf = |name: &str, ca: &str, cn: &str, ext: &str, dates: &str| {
        ossl(&format!("req {ec} -keyout {name}.key -out {name}.csr -subj /CN={cn}"));
        fs::write(tls.join(format!("{name}.ext")), ext).expect("ext file");
        if let Some(range) = dates.strip_prefix("ca ") {
            // `openssl x509 -req` (3.0) cannot date a certificate in the past; `openssl ca` can
            let db = tls.join(format!("{name}-db"));
            fs::create_dir_all(&db).expect("ca db");
            fs::write(db.join("index.txt"), "").expect("index.txt");
            fs::write(db.join("serial"), "01\n").expect("serial");
            fs::write(
                tls.join(format!("{name}-ca.cnf")),
                format!(
                    "[ca]\ndefault_ca = d\n[d]\ndatabase = {name}-db/index.txt\nnew_certs_dir = {name}-db\n\
                     serial = {name}-db/serial\ndefault_md = sha256\npolicy = p\nunique_subject = no\n\
                     [p]\ncommonName = supplied\n[ext]\n{ext}"
                ),
            )
            .expect("ca.cnf");
            ossl(&format!(
                "ca -batch -notext -config {name}-ca.cnf -cert {ca}.pem -keyfile {ca}.key -in {name}.csr \
                 -out {name}.pem -extensions ext {range}"
            ));
        } else {
            ossl(&format!(
                "x509 -req -in {name}.csr -CA {ca}.pem -CAkey {ca}.key -CAcreateserial -sha256 {dates} \
                 -extfile {name}.ext -out {name}.pem"
            ));
        }
    };
    let server_ext = |san: &str| {
        format!(
            "subjectAltName={san}\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth\n"
        )
    };
    // hoist-proxied.test never resolves: a client reaches it only through a proxy
    let local = "IP:127.0.0.1,DNS:localhost,DNS:hoist-proxied.test";
    match kind {
        CertKind::SelfSigned => {
            // what a user types: `openssl req -x509 -newkey ... -subj /CN=... -addext subjectAltName=...`
            ossl(&format!(
                "req -x509 {ec} -days 30 -keyout key.pem -out cert.pem -subj /CN=localhost \
                 -addext subjectAltName={local}"
            ));
            fs::copy(tls.join("cert.pem"), tls.join("ca.pem")).expect("ca.pem");
        }
        CertKind::CaSigned | CertKind::Expired | CertKind::WrongName => {
            new_ca("ca");
            let (san, dates) = match kind {
                CertKind::Expired => (local, "ca -startdate 20200101000000Z -enddate 20200102000000Z"),
                CertKind::WrongName => ("DNS:wrong.example", "-days 30"),
                _ => (local, "-days 30"),
            };
            leaf("server", "ca", "localhost", &server_ext(san), dates);
            fs::rename(tls.join("server.pem"), tls.join("cert.pem")).expect("cert.pem");
            fs::rename(tls.join("server.key"), tls.join("key.pem")).expect("key.pem");
        }
    }
    // skopeo's cert dir: *.crt is a CA; a *.key there would be read as a client key
    let certs = root.join("certs.d");
    fs::create_dir_all(&certs).expect("certs.d");
    fs::copy(tls.join("ca.pem"), certs.join("ca.crt")).expect("copy ca.crt");
    if client_ca {
        let client_ext = "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
                          extendedKeyUsage=clientAuth\n";
        new_ca("client-ca");
        leaf("client", "client-ca", "hoist-test-client", client_ext, "-days 30");
        new_ca("rogue-ca");
        leaf("rogue", "rogue-ca", "hoist-test-rogue", client_ext, "-days 30");
        for (dir, name) in [("client-certs.d", "client"), ("rogue-certs.d", "rogue")] {
            let d = root.join(dir);
            fs::create_dir_all(&d).expect("client certs dir");
            fs::copy(tls.join("ca.pem"), d.join("ca.crt")).expect("ca.crt");
            fs::copy(tls.join(format!("{name}.pem")), d.join("client.cert")).expect("client.cert");
            fs::copy(tls.join(format!("{name}.key")), d.join("client.key")).expect("client.key");
        }
    }
}

/// `127.0.0.1 - - [24/Nov/2026:05:26:20 +0000] "GET /v2/ HTTP/1.1" 200 2 "" "curl/7.88.1"`
pub fn parse_access_line(line: &str) -> Option<LoggedRequest> {
    if line.starts_with("time=") {
        return None;
    }
    let (_, rest) = line.split_once("] \"")?;
    let (request, rest) = rest.split_once('"')?;
    let mut parts = request.split(' ');
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let proto = parts.next().filter(|p| p.starts_with("HTTP/"))?.to_owned();
    let status = rest.trim_start().split(' ').next()?.parse().ok()?;
    Some(LoggedRequest { method, path, proto, status })
}
