//! A Docker/OCI bearer token server for one test: checks HTTP basic credentials (`GET /token`)
//! or an OAuth2 refresh token (`POST /token`, `grant_type=refresh_token`, what docker's
//! `identitytoken` is used for), records every token request, and answers with an RS256 JWT
//! that CNCF distribution 2.8.2 (`auth: token:`) accepts, granting exactly the scopes asked for.
//!
//! Not for: the OAuth2 `password` grant (issuing refresh tokens), or registries other than
//! [`crate::registry`].
//!
//! The signing key and its self-signed certificate are made with `openssl` in a temp dir; the
//! certificate is the registry's `rootcertbundle` and travels in each token's `x5c` header.
//! Each token is signed by `openssl dgst -sha256 -sign` (a few ms; tests fetch few tokens).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use tempfile::TempDir;

/// `service` the registry is configured with (the token's `aud`).
pub const TOKEN_SERVICE: &str = "test-registry";
/// `issuer` the registry trusts (the token's `iss`).
pub const TOKEN_ISSUER: &str = "hoist-test-issuer";

/// distribution accepts a token up to this long after its `exp` (`token.Leeway`).
const REGISTRY_LEEWAY_SECS: i64 = 60;

/// How to start a [`TokenServer`].
#[derive(Clone, Debug)]
pub struct TokenOpts {
    /// The one user that gets tokens.
    pub user: String,
    /// That user's password.
    pub pass: String,
    /// Requests without credentials get tokens too, with only the `pull` actions they asked for.
    pub anonymous_pull: bool,
    /// How long the registry will accept a token, counted from when it was issued. The `exp`
    /// claim is set so that distribution's 60 s leeway is included: `Some(2s)` makes tokens
    /// the registry rejects 2 s after issue. `None`: `exp` is 300 s after issue.
    pub effective_ttl: Option<Duration>,
    /// The one OAuth2 refresh token (docker `identitytoken`) that `POST /token` with
    /// `grant_type=refresh_token` accepts, on behalf of `user`. `None`: every POST is refused.
    pub refresh_token: Option<String>,
}

impl TokenOpts {
    /// Tokens for `user`/`pass` only, valid 300 s.
    pub fn new(user: &str, pass: &str) -> Self {
        TokenOpts {
            user: user.to_owned(),
            pass: pass.to_owned(),
            anonymous_pull: false,
            effective_ttl: None,
            refresh_token: None,
        }
    }

    /// Also accept the OAuth2 refresh token `token` (for `user`) in a `POST /token`.
    pub fn with_refresh_token(mut self, token: &str) -> Self {
        self.refresh_token = Some(token.to_owned());
        self
    }
}

/// One request the token server answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRequest {
    /// `GET` (basic auth or anonymous) or `POST` (OAuth2 form).
    pub method: String,
    /// The form's `grant_type` of a POST (`refresh_token`, ...); `None` for a GET.
    pub grant_type: Option<String>,
    /// The form's `client_id` of a POST.
    pub client_id: Option<String>,
    /// The `service` query parameter (GET) or form field (POST).
    pub service: Option<String>,
    /// Every `scope` (parameters repeated, and space-separated within one), in order.
    pub scopes: Vec<String>,
    /// The basic-auth user, when credentials came; for an accepted refresh token, the user it
    /// stands for.
    pub user: Option<String>,
    /// HTTP status answered: 200 with a token, 401 for bad credentials, 400 for a bad request.
    pub status: u16,
}

/// A running token server on `127.0.0.1:<free port>`; stops on drop.
pub struct TokenServer {
    dir: TempDir,
    port: u16,
    requests: Arc<Mutex<Vec<TokenRequest>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for TokenServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenServer").field("realm", &self.realm()).finish()
    }
}

/// What a connection thread needs.
struct Issuer {
    opts: TokenOpts,
    key: PathBuf,
    /// base64 (standard, padded) DER of the certificate, for `x5c`.
    cert_b64: String,
    requests: Arc<Mutex<Vec<TokenRequest>>>,
}

impl TokenServer {
    /// Makes a key and certificate and starts serving. Panics if it cannot.
    pub fn start(opts: TokenOpts) -> TokenServer {
        let dir = tempfile::Builder::new().prefix("hoist-token.").tempdir().expect("temp dir for token server");
        let root = dir.path();
        run(Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "30"])
            .args(["-subj", "/CN=hoist-test-token-issuer", "-keyout", "key.pem", "-out", "cert.pem"])
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,digitalSignature,keyCertSign"])
            .current_dir(root));
        let der = run(Command::new("openssl").args(["x509", "-in", "cert.pem", "-outform", "DER"]).current_dir(root));
        let cert_b64 = base64::engine::general_purpose::STANDARD.encode(der);

        let listener = TcpListener::bind("127.0.0.1:0").expect("bind token server");
        let port = listener.local_addr().expect("token server addr").port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let issuer = Arc::new(Issuer { opts, key: root.join("key.pem"), cert_b64, requests: requests.clone() });
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("token-server-{port}"))
            .spawn(move || {
                for conn in listener.incoming() {
                    if stop2.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let issuer = issuer.clone();
                    std::thread::spawn(move || {
                        let _ = serve_connection(conn, &issuer);
                    });
                }
            })
            .expect("spawn token server thread");
        TokenServer { dir, port, requests, stop, thread: Some(thread) }
    }

    /// `http://127.0.0.1:PORT/token`, the registry's `realm`.
    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    /// The PEM certificate the registry must trust (`rootcertbundle`).
    pub fn cert_path(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    /// The `auth:` section of a distribution config for this server.
    pub fn registry_auth_yaml(&self) -> String {
        format!(
            "auth:\n  token:\n    realm: {}\n    service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n    \
             rootcertbundle: {}\n",
            self.realm(),
            self.cert_path().display()
        )
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.requests.lock().expect("token requests lock").clone()
    }

    /// Forget the requests so far.
    pub fn clear(&self) {
        self.requests.lock().expect("token requests lock").clear();
    }

    /// The tokens issued so far (requests answered 200).
    pub fn issued(&self) -> Vec<TokenRequest> {
        self.requests().into_iter().filter(|r| r.status == 200).collect()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // wake the accept loop so it sees the flag
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One request per connection (`Connection: close`): enough for a token endpoint.
fn serve_connection(conn: TcpStream, issuer: &Issuer) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let target = line.split(' ').nth(1).unwrap_or("").to_owned();
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    // A POST's form (small: a token request); a GET has no body.
    let len: usize = headers.get("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
    let mut form = vec![0u8; len.min(64 * 1024)];
    reader.read_exact(&mut form)?;
    let (status, body) = if line.starts_with("POST ") {
        answer_post(issuer, &target, &headers, &form)
    } else {
        answer(issuer, &line, &target, &headers)
    };
    let reason = match status {
        200 => "OK",
        401 => "Unauthorized",
        _ => "Bad Request",
    };
    let mut w = conn;
    write!(
        w,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{}\r\n{body}",
        body.len(),
        if status == 401 { "WWW-Authenticate: Basic realm=\"hoist-test-token\"\r\n" } else { "" },
    )?;
    w.flush()
}

fn answer(issuer: &Issuer, line: &str, target: &str, headers: &BTreeMap<String, String>) -> (u16, String) {
    let url = match url::Url::parse(&format!("http://token{target}")) {
        Ok(u) if line.starts_with("GET ") && u.path() == "/token" => u,
        _ => return (400, r#"{"errors":[{"code":"UNSUPPORTED","message":"GET or POST /token only"}]}"#.to_owned()),
    };
    let mut service = None;
    let mut scopes = Vec::new();
    for (k, v) in url.query_pairs() {
        match k.as_ref() {
            "service" => service = Some(v.into_owned()),
            "scope" => scopes.extend(v.split(' ').filter(|s| !s.is_empty()).map(str::to_owned)),
            _ => {}
        }
    }
    let creds = headers
        .get("authorization")
        .and_then(|a| a.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.split_once(':').map(|(u, p)| (u.to_owned(), p.to_owned())));
    let user = creds.as_ref().map(|(u, _)| u.clone());
    let authed = creds.as_ref().is_some_and(|(u, p)| *u == issuer.opts.user && *p == issuer.opts.pass);
    let anonymous = creds.is_none() && issuer.opts.anonymous_pull;
    let (status, body) = if !authed && !anonymous {
        (401, r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#.to_owned())
    } else {
        let access = access_claims(&scopes, anonymous);
        match sign_token(issuer, user.as_deref().unwrap_or(""), service.as_deref().unwrap_or(""), access) {
            Ok(jwt) => (200, serde_json::json!({"token": jwt, "access_token": jwt, "expires_in": 300}).to_string()),
            Err(e) => (400, serde_json::json!({"errors": [{"code": "SIGN", "message": e}]}).to_string()),
        }
    };
    issuer.requests.lock().expect("token requests lock").push(TokenRequest {
        method: "GET".to_owned(),
        grant_type: None,
        client_id: None,
        service,
        scopes,
        user,
        status,
    });
    (status, body)
}

/// `POST /token` as in distribution's OAuth2 spec (docs/spec/auth/oauth.md): a form with
/// `grant_type=refresh_token`, `refresh_token`, `service`, `client_id` (all required) and
/// optional space-separated `scope`. Only the configured refresh token gets a token (401
/// otherwise, as does any other grant); the answer carries `access_token` only, no `token`,
/// as an OAuth2 server's does, so a client reading just `token` fails.
fn answer_post(issuer: &Issuer, target: &str, headers: &BTreeMap<String, String>, form: &[u8]) -> (u16, String) {
    let mut field = BTreeMap::new();
    for (k, v) in url::form_urlencoded::parse(form) {
        field.insert(k.into_owned(), v.into_owned());
    }
    let scopes: Vec<String> = field
        .get("scope")
        .map(|s| s.split(' ').filter(|s| !s.is_empty()).map(str::to_owned).collect())
        .unwrap_or_default();
    let mut rec = TokenRequest {
        method: "POST".to_owned(),
        grant_type: field.get("grant_type").cloned(),
        client_id: field.get("client_id").cloned(),
        service: field.get("service").cloned(),
        scopes,
        user: None,
        status: 400,
    };
    let is_form = headers.get("content-type").is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    let oauth_err = |code: &str| serde_json::json!({"error": code}).to_string();
    let complete = rec.service.is_some() && rec.client_id.as_deref().is_some_and(|c| !c.is_empty());
    let (status, body) = if target.split('?').next() != Some("/token") || !is_form || !complete {
        (400, oauth_err("invalid_request"))
    } else if rec.grant_type.as_deref() != Some("refresh_token") {
        (401, oauth_err("unsupported_grant_type"))
    } else if issuer.opts.refresh_token.is_none() || field.get("refresh_token") != issuer.opts.refresh_token.as_ref() {
        (401, oauth_err("invalid_grant"))
    } else {
        rec.user = Some(issuer.opts.user.clone());
        let access = access_claims(&rec.scopes, false);
        match sign_token(issuer, &issuer.opts.user, rec.service.as_deref().unwrap_or(""), access) {
            Ok(jwt) => (
                200,
                serde_json::json!({"access_token": jwt, "scope": rec.scopes.join(" "), "expires_in": 300}).to_string(),
            ),
            Err(e) => (400, serde_json::json!({"error": "server_error", "error_description": e}).to_string()),
        }
    };
    rec.status = status;
    issuer.requests.lock().expect("token requests lock").push(rec);
    (status, body)
}

/// `repository:NAME:a,b` → `{"type":"repository","name":NAME,"actions":[a,b]}` (pull only when
/// anonymous). NAME may not hold `:`, but a type may carry a class (`repository(plugin)`).
fn access_claims(scopes: &[String], pull_only: bool) -> Vec<serde_json::Value> {
    scopes
        .iter()
        .filter_map(|s| {
            let (ty, rest) = s.split_once(':')?;
            let (name, actions) = rest.rsplit_once(':')?;
            let actions: Vec<&str> =
                actions.split(',').filter(|a| !a.is_empty() && (!pull_only || *a == "pull")).collect();
            Some(serde_json::json!({"type": ty, "name": name, "actions": actions}))
        })
        .collect()
}

fn sign_token(issuer: &Issuer, sub: &str, aud: &str, access: Vec<serde_json::Value>) -> Result<String, String> {
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs() as i64;
    let exp = match issuer.opts.effective_ttl {
        Some(ttl) => now + ttl.as_secs() as i64 - REGISTRY_LEEWAY_SECS,
        None => now + 300,
    };
    let jti: [u8; 12] = rand::random();
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [issuer.cert_b64]});
    let claims = serde_json::json!({
        "iss": TOKEN_ISSUER,
        "sub": sub,
        "aud": aud,
        "exp": exp,
        "nbf": now - 1,
        "iat": now,
        "jti": hex::encode(jti),
        "access": access,
    });
    let input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
    let sig = sign_rs256(&issuer.key, input.as_bytes())?;
    Ok(format!("{input}.{}", b64(&sig)))
}

/// RSASSA-PKCS1-v1_5 with SHA-256: what `openssl dgst -sha256 -sign` makes with an RSA key.
fn sign_rs256(key: &Path, data: &[u8]) -> Result<Vec<u8>, String> {
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("openssl: {e}"))?;
    child.stdin.take().expect("stdin").write_all(data).map_err(|e| format!("openssl stdin: {e}"))?;
    let out = child.wait_with_output().map_err(|e| format!("openssl: {e}"))?;
    if !out.status.success() {
        return Err(format!("openssl dgst: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(out.stdout)
}

#[track_caller]
fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    out.stdout
}
