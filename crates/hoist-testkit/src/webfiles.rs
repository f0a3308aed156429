//! A small HTTP/1.1 server on 127.0.0.1 for what hoist fetches from plain web servers (a
//! Dockerfile's `ADD <url>`, remote build contexts):
//!
//! - files from memory ([`WebFiles::put`]) with `ETag` and `Last-Modified` when given, and
//!   conditional GETs answered `304 Not Modified`: `If-None-Match` naming the file's ETag
//!   (weak or strong, in a list or alone), else `If-Modified-Since` equal to its
//!   `Last-Modified` (what a client sends back: it repeats the server's value);
//! - git repositories under `/git/` served by `git http-backend` (CGI, smart HTTP: shallow
//!   fetches work) from the directory [`WebFiles::serve_git`] names.
//!
//! - redirects ([`WebFiles::put_redirect`]): `302 Found` to another URL.
//!
//! Every request is logged with its status, conditional headers and `Authorization`
//! ([`WebFiles::requests`]).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

/// A file the server holds.
#[derive(Clone, Debug)]
struct WebFile {
    body: Bytes,
    etag: Option<String>,
    last_modified: Option<String>,
    /// `302 Found` to this URL instead of the body.
    redirect: Option<String>,
}

/// One request the server answered.
#[derive(Clone, Debug)]
pub struct WebRequest {
    /// `GET`, `HEAD`, `POST`.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// The status answered.
    pub status: u16,
    /// The request's `If-None-Match`.
    pub if_none_match: Option<String>,
    /// The request's `If-Modified-Since`.
    pub if_modified_since: Option<String>,
    /// The request's `Authorization`.
    pub authorization: Option<String>,
    /// For a POST to `git-upload-pack`: what it asks, `ls-refs` or `fetch` (protocol v2's
    /// `command=`), or `want` (protocol v0's object request).
    pub git_command: Option<String>,
}

#[derive(Default)]
struct State {
    files: Mutex<BTreeMap<String, WebFile>>,
    git_root: Mutex<Option<PathBuf>>,
    log: Mutex<Vec<WebRequest>>,
}

/// A running server (its own thread and runtime); stops with the process.
pub struct WebFiles {
    port: u16,
    state: Arc<State>,
}

impl WebFiles {
    /// Start serving on 127.0.0.1 (nothing yet: [`WebFiles::put`], [`WebFiles::serve_git`]).
    pub fn start() -> WebFiles {
        let state = Arc::new(State::default());
        let st = state.clone();
        let port = crate::hostile::serve_http(move |req| {
            let st = st.clone();
            async move { handle(&st, req).await }
        });
        WebFiles { port, state }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Serve `body` at `path` (replacing what was there), with these validators.
    pub fn put(&self, path: &str, body: impl Into<Bytes>, etag: Option<&str>, last_modified: Option<&str>) {
        let f = WebFile {
            body: body.into(),
            etag: etag.map(str::to_string),
            last_modified: last_modified.map(str::to_string),
            redirect: None,
        };
        self.state.files.lock().expect("lock").insert(path.to_string(), f);
    }

    /// Answer `path` with `302 Found` to `location`.
    pub fn put_redirect(&self, path: &str, location: &str) {
        let f = WebFile { body: Bytes::new(), etag: None, last_modified: None, redirect: Some(location.to_string()) };
        self.state.files.lock().expect("lock").insert(path.to_string(), f);
    }

    /// Serve the git repositories under `root` (`root/NAME.git`, bare) at `/git/NAME.git`.
    pub fn serve_git(&self, root: &Path) {
        *self.state.git_root.lock().expect("lock") = Some(root.to_path_buf());
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<WebRequest> {
        self.state.log.lock().expect("lock").clone()
    }

    /// The requests for `path` so far.
    pub fn requests_for(&self, path: &str) -> Vec<WebRequest> {
        self.requests().into_iter().filter(|r| r.path == path).collect()
    }
}

async fn handle(st: &State, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let header = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
    let (inm, ims) = (header("if-none-match"), header("if-modified-since"));
    let authorization = header("authorization");
    let git_command = std::sync::Arc::new(Mutex::new(None::<String>));
    let method = req.method().as_str().to_string();
    let full = req.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default();
    let resp = match req.uri().path().strip_prefix("/git/") {
        Some(rest) => {
            let root = st.git_root.lock().expect("lock").clone();
            match root {
                Some(root) => git_cgi(root, rest.to_string(), req, git_command.clone()).await,
                None => reply(StatusCode::NOT_FOUND, Bytes::from_static(b"no git here\n")),
            }
        }
        None => serve_file(st, req.uri().path(), &method, inm.as_deref(), ims.as_deref()),
    };
    let log = WebRequest {
        method,
        path: full,
        status: resp.status().as_u16(),
        if_none_match: inm,
        if_modified_since: ims,
        authorization,
        git_command: git_command.lock().expect("lock").clone(),
    };
    st.log.lock().expect("lock").push(log);
    resp
}

fn reply(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    Response::builder().status(status).body(Full::new(body)).expect("response")
}

fn serve_file(st: &State, path: &str, method: &str, inm: Option<&str>, ims: Option<&str>) -> Response<Full<Bytes>> {
    let Some(f) = st.files.lock().expect("lock").get(path).cloned() else {
        return reply(StatusCode::NOT_FOUND, Bytes::from_static(b"not found\n"));
    };
    if let Some(to) = &f.redirect {
        return Response::builder()
            .status(StatusCode::FOUND)
            .header("location", to)
            .body(Full::new(Bytes::new()))
            .expect("response");
    }
    let strip = |t: &str| t.trim().trim_start_matches("W/").to_string();
    let etag_matches = match (inm, &f.etag) {
        (Some(list), Some(e)) => list.split(',').any(|t| t.trim() == "*" || strip(t) == strip(e)),
        _ => false,
    };
    // If-Modified-Since counts only without If-None-Match (RFC 9110 13.1.3)
    let not_modified = etag_matches || (inm.is_none() && ims.is_some() && ims == f.last_modified.as_deref());
    let mut b = Response::builder();
    if let Some(e) = &f.etag {
        b = b.header("etag", e);
    }
    if let Some(m) = &f.last_modified {
        b = b.header("last-modified", m);
    }
    if not_modified {
        return b.status(StatusCode::NOT_MODIFIED).body(Full::new(Bytes::new())).expect("response");
    }
    let body = if method == "HEAD" { Bytes::new() } else { f.body.clone() };
    b.status(StatusCode::OK)
        .header("content-length", f.body.len())
        .header("content-type", "application/octet-stream")
        .body(Full::new(body))
        .expect("response")
}

/// `git http-backend` for one request: the CGI environment from the request, its body on
/// stdin, the CGI headers (`Status:`, the others) and body of its answer.
async fn git_cgi(
    root: PathBuf,
    path_info: String,
    req: Request<Incoming>,
    command: Arc<Mutex<Option<String>>>,
) -> Response<Full<Bytes>> {
    let header = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let env: Vec<(&str, String)> = vec![
        ("GIT_PROJECT_ROOT", root.display().to_string()),
        ("GIT_HTTP_EXPORT_ALL", "1".into()),
        ("PATH_INFO", format!("/{path_info}")),
        ("REQUEST_METHOD", req.method().as_str().to_string()),
        ("QUERY_STRING", req.uri().query().unwrap_or("").to_string()),
        ("CONTENT_TYPE", header("content-type")),
        ("HTTP_CONTENT_ENCODING", header("content-encoding")),
        ("GIT_PROTOCOL", header("git-protocol")),
        ("REMOTE_ADDR", "127.0.0.1".into()),
    ];
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return reply(StatusCode::BAD_REQUEST, Bytes::from_static(b"body\n")),
    };
    *command.lock().expect("lock") = git_command_of(&body);
    let out = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
        let mut child = Command::new("git")
            .arg("http-backend")
            .envs(env)
            .env("CONTENT_LENGTH", body.len().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let mut stdin = child.stdin.take().expect("stdin");
        let writer = std::thread::spawn(move || stdin.write_all(&body));
        let out = child.wait_with_output()?;
        let _ = writer.join();
        Ok(out.stdout)
    })
    .await;
    let Ok(Ok(out)) = out else { return reply(StatusCode::INTERNAL_SERVER_ERROR, Bytes::from_static(b"cgi\n")) };
    let (head, body) = match find(&out, b"\r\n\r\n") {
        Some(i) => (&out[..i], &out[i + 4..]),
        None => match find(&out, b"\n\n") {
            Some(i) => (&out[..i], &out[i + 2..]),
            None => return reply(StatusCode::BAD_GATEWAY, Bytes::from_static(b"cgi answer\n")),
        },
    };
    let mut b = Response::builder().status(StatusCode::OK);
    for line in String::from_utf8_lossy(head).lines() {
        let Some((k, v)) = line.split_once(':') else { continue };
        let v = v.trim();
        if k.eq_ignore_ascii_case("status") {
            let code = v.split_whitespace().next().and_then(|c| c.parse::<u16>().ok()).unwrap_or(500);
            b = b.status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR));
        } else {
            b = b.header(k.trim(), v);
        }
    }
    b.body(Full::new(Bytes::copy_from_slice(body))).expect("response")
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// What an upload-pack request body asks (uncompressed bodies; git compresses only large
/// ones): v2's `command=NAME`, or v0's `want`.
fn git_command_of(body: &[u8]) -> Option<String> {
    if let Some(i) = find(body, b"command=") {
        let rest = &body[i + 8..];
        // a pkt-line's command: lowercase letters and dashes, the next pkt-line's length after
        let end = rest.iter().position(|b| !(b.is_ascii_lowercase() || *b == b'-')).unwrap_or(rest.len());
        return Some(String::from_utf8_lossy(&rest[..end]).into_owned());
    }
    find(body, b"want ").map(|_| "want".to_string())
}
