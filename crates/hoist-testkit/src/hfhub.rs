//! A test server speaking the Hugging Face hub's HTTP API, as much of it as model downloads
//! use (and as `huggingface_hub.snapshot_download` calls it):
//!
//! - `GET /api/models/{repo}/revision/{rev}`: `{id, modelId, sha, private, siblings: [{rfilename}]}`;
//! - `GET /api/models/{repo}/tree/{rev}[/{path}]?recursive=true`: `[{type, oid, size, path,
//!   lfs: {oid, size, pointerSize}}]` (`lfs.oid` is the sha256 of an LFS file; `oid` a git
//!   blob sha1), one page;
//! - `HEAD|GET /{repo}/resolve/{rev}/{path}`: the file, with `X-Repo-Commit`, `ETag` (the git
//!   blob sha1, or for an LFS file the sha256, also as `X-Linked-Etag` with `X-Linked-Size`),
//!   `Accept-Ranges: bytes` and `Range: bytes=N-` answered with 206.
//!
//! A revision is a branch name (`main`) or the commit sha. With a token set, every request
//! needs `Authorization: Bearer TOKEN` (401 otherwise, as the hub answers for a private repo).
//! Files are served from memory or from disk ([`HubFile::disk`], for benchmarks). Every request
//! is logged ([`HfHub::requests`]).

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use sha2::{Digest as _, Sha256};

/// Where a file's bytes are.
#[derive(Clone, Debug)]
enum Data {
    Memory(Bytes),
    Disk(PathBuf),
}

/// One file of a test repo.
#[derive(Clone, Debug)]
pub struct HubFile {
    /// Path in the repo.
    pub path: String,
    data: Data,
    /// Size in bytes.
    pub size: u64,
    /// Lowercase hex sha256.
    pub sha256: String,
    /// Git blob sha1 (`blob <size>\0<bytes>`), lowercase hex.
    pub git_oid: String,
    /// Whether the hub says it is stored with LFS (gives `lfs.oid` and `X-Linked-Etag`).
    pub lfs: bool,
}

fn git_blob_sha1_of(size: u64, mut r: impl Read) -> String {
    // sha1 is not among the test kit's dependencies; a blob id only has to be stable and
    // distinct, so it is the first 40 hex digits of sha256("blob N\0" + bytes).
    let mut h = Sha256::new();
    h.update(format!("blob {size}\0").as_bytes());
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r.read(&mut buf).expect("read file");
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex::encode(h.finalize())[..40].to_string()
}

impl HubFile {
    /// A file held in memory; `lfs` as the hub would store it (weights are LFS files).
    pub fn new(path: &str, bytes: impl Into<Bytes>, lfs: bool) -> HubFile {
        let bytes: Bytes = bytes.into();
        HubFile {
            path: path.to_string(),
            size: bytes.len() as u64,
            sha256: hex::encode(Sha256::digest(&bytes)),
            git_oid: git_blob_sha1_of(bytes.len() as u64, &bytes[..]),
            data: Data::Memory(bytes),
            lfs,
        }
    }

    /// A file served from disk (read once here to hash it).
    pub fn disk(path: &str, file: impl Into<PathBuf>, lfs: bool) -> HubFile {
        let file = file.into();
        let size = std::fs::metadata(&file).expect("stat hub file").len();
        let mut h = Sha256::new();
        let mut f = std::fs::File::open(&file).expect("open hub file");
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).expect("read hub file");
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        let sha256 = hex::encode(h.finalize());
        let git_oid = git_blob_sha1_of(size, std::fs::File::open(&file).expect("open hub file"));
        HubFile { path: path.to_string(), size, sha256, git_oid, data: Data::Disk(file), lfs }
    }
}

/// A test repo: its id (`org/name`), the commit `main` points at, and its files.
#[derive(Clone, Debug)]
pub struct HubRepo {
    /// `org/name`.
    pub id: String,
    /// 40 hex digits.
    pub commit: String,
    /// Files by path.
    pub files: Vec<HubFile>,
}

impl HubRepo {
    /// A repo whose commit sha is derived from its files (so a change of files is a new commit).
    pub fn new(id: &str, files: Vec<HubFile>) -> HubRepo {
        let mut h = Sha256::new();
        for f in &files {
            h.update(f.path.as_bytes());
            h.update(f.sha256.as_bytes());
        }
        HubRepo { id: id.to_string(), commit: hex::encode(h.finalize())[..40].to_string(), files }
    }
}

/// One request the hub served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubRequest {
    /// `GET`, `HEAD`.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// The `Range` header, if any.
    pub range: Option<String>,
    /// Status answered.
    pub status: u16,
}

struct State {
    repos: Mutex<BTreeMap<String, HubRepo>>,
    token: Option<String>,
    log: Mutex<Vec<HubRequest>>,
}

/// A running test hub (its own thread and runtime); stops with the process.
pub struct HfHub {
    port: u16,
    state: Arc<State>,
}

impl HfHub {
    /// Serve `repos` on 127.0.0.1; `token`: the bearer token every request must carry.
    pub fn start(repos: Vec<HubRepo>, token: Option<&str>) -> HfHub {
        let state = Arc::new(State {
            repos: Mutex::new(repos.into_iter().map(|r| (r.id.clone(), r)).collect()),
            token: token.map(str::to_string),
            log: Mutex::new(Vec::new()),
        });
        let st = state.clone();
        let port = crate::hostile::serve_http(move |req| std::future::ready(handle(&st, req)));
        HfHub { port, state }
    }

    /// `http://127.0.0.1:PORT` (what `HF_ENDPOINT` is set to).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Replace (or add) a repo, e.g. a new commit of it.
    pub fn put_repo(&self, repo: HubRepo) {
        self.state.repos.lock().expect("lock").insert(repo.id.clone(), repo);
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<HubRequest> {
        self.state.log.lock().expect("lock").clone()
    }

    /// Number of file downloads (`GET …/resolve/…`) so far.
    pub fn downloads(&self) -> usize {
        self.requests().iter().filter(|r| r.method == "GET" && r.path.contains("/resolve/")).count()
    }
}

/// A response body: bytes in memory, or a file from an offset, read 256 KiB a frame.
pub struct HubBody {
    mem: Option<Bytes>,
    file: Option<(std::fs::File, u64)>,
}

impl Body for HubBody {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if let Some(b) = self.mem.take() {
            return Poll::Ready((!b.is_empty()).then(|| Ok(Frame::data(b))));
        }
        let Some((f, left)) = self.file.as_mut() else { return Poll::Ready(None) };
        if *left == 0 {
            return Poll::Ready(None);
        }
        let mut buf = vec![0u8; (*left).min(256 << 10) as usize];
        match f.read(&mut buf) {
            Ok(0) => Poll::Ready(Some(Err(std::io::Error::other("hub file shrank")))),
            Ok(n) => {
                *left -= n as u64;
                buf.truncate(n);
                Poll::Ready(Some(Ok(Frame::data(Bytes::from(buf)))))
            }
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }
}

fn body(b: impl Into<Bytes>) -> HubBody {
    HubBody { mem: Some(b.into()), file: None }
}

fn reply(status: StatusCode, ctype: &str, b: impl Into<Bytes>) -> Response<HubBody> {
    Response::builder().status(status).header("content-type", ctype).body(body(b)).expect("response")
}

fn error(status: StatusCode, msg: &str) -> Response<HubBody> {
    let mut r = reply(status, "application/json", serde_json::json!({ "error": msg }).to_string());
    r.headers_mut().insert("x-error-message", msg.parse().expect("header"));
    r
}

/// Percent-decoding of a path segment.
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Split `org/name/REST` against the known repos (ids have exactly one `/`).
fn split_repo(path: &str) -> Option<(String, &str)> {
    let mut it = path.splitn(3, '/');
    let (org, name) = (it.next()?, it.next()?);
    Some((format!("{org}/{name}"), it.next().unwrap_or("")))
}

fn handle(st: &State, req: Request<Incoming>) -> Response<HubBody> {
    let method = req.method().as_str().to_string();
    let full = req.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default();
    let range = req.headers().get("range").and_then(|v| v.to_str().ok()).map(str::to_string);
    let resp = route(st, &req, &method, range.as_deref());
    st.log.lock().expect("lock").push(HubRequest { method, path: full, range, status: resp.status().as_u16() });
    resp
}

fn route(st: &State, req: &Request<Incoming>, method: &str, range: Option<&str>) -> Response<HubBody> {
    if let Some(t) = &st.token {
        let auth = req.headers().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
        if auth != format!("Bearer {t}") {
            return error(StatusCode::UNAUTHORIZED, "Invalid credentials in Authorization header");
        }
    }
    let path = req.uri().path();
    let query = req.uri().query().unwrap_or("");
    let repos = st.repos.lock().expect("lock");
    if let Some(rest) = path.strip_prefix("/api/models/") {
        let Some((id, rest)) = split_repo(rest) else { return error(StatusCode::NOT_FOUND, "Repository not found") };
        let Some(repo) = repos.get(&id) else { return error(StatusCode::NOT_FOUND, "Repository not found") };
        let (what, rev_and_path) = rest.split_once('/').unwrap_or((rest, ""));
        let (rev, sub) = rev_and_path.split_once('/').unwrap_or((rev_and_path, ""));
        let rev = decode(rev);
        if rev != "main" && rev != repo.commit {
            return error(StatusCode::NOT_FOUND, "Invalid rev id");
        }
        match what {
            "revision" => {
                let siblings: Vec<_> = repo.files.iter().map(|f| serde_json::json!({"rfilename": f.path})).collect();
                let v = serde_json::json!({
                    "_id": repo.commit, "id": repo.id, "modelId": repo.id, "sha": repo.commit,
                    "private": false, "disabled": false, "gated": false, "tags": [], "siblings": siblings,
                });
                return reply(StatusCode::OK, "application/json", v.to_string());
            }
            "tree" => {
                let recursive = query.split('&').any(|kv| kv == "recursive=true" || kv == "recursive=True");
                let sub = decode(sub);
                let sub = sub.trim_end_matches('/');
                let mut entries = Vec::new();
                let mut dirs = std::collections::BTreeSet::new();
                for f in &repo.files {
                    let Some(rel) =
                        (if sub.is_empty() { Some(f.path.as_str()) } else { f.path.strip_prefix(&format!("{sub}/")) })
                    else {
                        continue;
                    };
                    // Directories on the way, as the hub lists them.
                    let parts: Vec<&str> = rel.split('/').collect();
                    for i in 1..parts.len() {
                        let d = parts[..i].join("/");
                        let full = if sub.is_empty() { d } else { format!("{sub}/{d}") };
                        if (recursive || i == 1) && dirs.insert(full.clone()) {
                            entries.push(serde_json::json!({"type": "directory", "oid": "0".repeat(40), "size": 0, "path": full}));
                        }
                    }
                    if !recursive && parts.len() > 1 {
                        continue;
                    }
                    let mut e = serde_json::json!({"type": "file", "oid": f.git_oid, "size": f.size, "path": f.path});
                    if f.lfs {
                        e["lfs"] = serde_json::json!({"oid": f.sha256, "size": f.size, "pointerSize": 134});
                    }
                    entries.push(e);
                }
                return reply(StatusCode::OK, "application/json", serde_json::Value::Array(entries).to_string());
            }
            _ => return error(StatusCode::NOT_FOUND, "not found"),
        }
    }
    // /{org}/{name}/resolve/{rev}/{path}
    let Some((id, rest)) = split_repo(path.trim_start_matches('/')) else {
        return error(StatusCode::NOT_FOUND, "not found");
    };
    let Some(repo) = repos.get(&id) else { return error(StatusCode::NOT_FOUND, "Repository not found") };
    let Some(rest) = rest.strip_prefix("resolve/") else { return error(StatusCode::NOT_FOUND, "not found") };
    let (rev, file) = rest.split_once('/').unwrap_or((rest, ""));
    let rev = decode(rev);
    if rev != "main" && rev != repo.commit {
        let mut r = error(StatusCode::NOT_FOUND, "Invalid rev id");
        r.headers_mut().insert("x-error-code", "RevisionNotFound".parse().expect("header"));
        return r;
    }
    let file = decode(file);
    let Some(f) = repo.files.iter().find(|f| f.path == file) else {
        let mut r = error(StatusCode::NOT_FOUND, "Entry not found");
        r.headers_mut().insert("x-error-code", "EntryNotFound".parse().expect("header"));
        r.headers_mut().insert("x-repo-commit", repo.commit.parse().expect("header"));
        return r;
    };
    let spec = range.and_then(|r| r.strip_prefix("bytes=")).and_then(|r| r.split_once('-'));
    let start = spec.and_then(|(a, _)| a.parse::<u64>().ok()).unwrap_or(0);
    // Inclusive end, clamped to the file.
    let end = spec.and_then(|(_, b)| b.parse::<u64>().ok()).map_or(f.size, |e| (e + 1).min(f.size));
    if start > f.size || end < start || (start == f.size && f.size > 0 && range.is_some()) {
        return error(StatusCode::RANGE_NOT_SATISFIABLE, "range");
    }
    let etag = if f.lfs { &f.sha256 } else { &f.git_oid };
    let mut b = Response::builder()
        .header("x-repo-commit", &repo.commit)
        .header("etag", format!("\"{etag}\""))
        .header("accept-ranges", "bytes")
        .header("content-type", "application/octet-stream")
        .header("content-length", (end - start).to_string());
    if f.lfs {
        b = b.header("x-linked-etag", format!("\"{}\"", f.sha256)).header("x-linked-size", f.size.to_string());
    }
    if range.is_some() {
        b = b
            .status(StatusCode::PARTIAL_CONTENT)
            .header("content-range", format!("bytes {start}-{}/{}", f.size.saturating_sub(1), f.size));
    }
    let data = if method == "HEAD" {
        HubBody { mem: None, file: None }
    } else {
        match &f.data {
            Data::Memory(m) => body(m.slice(start as usize..end as usize)),
            Data::Disk(p) => {
                let mut file = match std::fs::File::open(p) {
                    Ok(f) => f,
                    Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
                };
                if file.seek(SeekFrom::Start(start)).is_err() {
                    return error(StatusCode::INTERNAL_SERVER_ERROR, "seek");
                }
                HubBody { mem: None, file: Some((file, end - start)) }
            }
        }
    };
    b.body(data).expect("response")
}
