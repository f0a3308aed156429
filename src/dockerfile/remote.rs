//! What a Dockerfile build reads from the network: `ADD <http(s) url>` (streamed into the
//! store, hashed on the way, revalidated with `ETag`/`Last-Modified` on the next build, as
//! BuildKit's http source), `ADD <git url>#ref[:subdir]` (a shallow fetch with the system
//! `git`), and remote build contexts (a git URL, an http(s) tarball or Dockerfile, a tar on
//! stdin). Which sources are remote follows BuildKit's rules ([`classify`]).
//!
//! Downloads go through the registry client's network layer ([`Client::get_url`]): the same
//! TLS trust, certs.d, proxy rules, read timeout and retries as registry requests.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use super::fs::{cache_root, resolve_in_dir};
use super::secret::Secrets;
use super::BuildLog;
use crate::error::{Error, IoContext, Result};
use crate::model::digest::{Algorithm, Digest};
use crate::model::time::parse_http_date;
use crate::transport::layout::Layout;
use crate::transport::registry::Client;

/// The most bytes `ADD <url>` downloads. BuildKit sets no bound; hoist refuses a body
/// beyond this (as said by `Content-Length`, or found while streaming) rather than fill
/// the store's disk.
pub const MAX_DOWNLOAD_SIZE: u64 = 16 << 30;

/// The most bytes of a remote or stdin build context: the download (or stdin) and the tar
/// stream unpacked from it, each; and the bytes on disk of a git fetch with its checkout
/// (`ADD <git url>`, a git build context), measured while git runs. The docker CLI sends a
/// context of any size to the daemon and BuildKit bounds no git fetch; hoist unpacks and
/// checks out on the build host, so a gzip bomb or a repository that expands without end is
/// cut off here.
pub const MAX_CONTEXT_SIZE: u64 = 8 << 30;

/// How often the bytes of a running git fetch or checkout are measured against its bound.
const GIT_WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(200);

/// A source that is not in the build context.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Remote {
    /// An http(s) URL: a file.
    Http(String),
    /// A git repository.
    Git(GitRef),
}

/// `URL[#REF[:SUBDIR]]` of a git repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GitRef {
    /// What `git fetch` is given.
    pub remote: String,
    /// Branch, tag or commit (`None`: the remote's HEAD).
    pub reference: Option<String>,
    /// The directory of the checkout that is used (`None`: its root).
    pub subdir: Option<String>,
}

/// BuildKit's rules (`gitutil.ParseGitRef`, then `urlutil.IsURL`): `git@host:path`,
/// `git://`, `ssh://` and `http(s)://…/x.git` are git repositories; another `http(s)://`
/// URL is a file. Anything else is a path.
pub fn classify(src: &str) -> Option<Remote> {
    let lower = src.to_ascii_lowercase();
    if lower.starts_with("git@") || lower.starts_with("git://") || lower.starts_with("ssh://") {
        return GitRef::parse(src).map(Remote::Git);
    }
    if lower.starts_with("http://") || lower.starts_with("https://") {
        let base = src.split_once('#').map_or(src, |(b, _)| b);
        let path = url::Url::parse(base).ok()?.path().to_string();
        return if path.ends_with(".git") {
            GitRef::parse(src).map(Remote::Git)
        } else {
            Some(Remote::Http(src.to_string()))
        };
    }
    None
}

impl GitRef {
    /// `URL#REF:SUBDIR` split; `None` when the reference could be read as an option.
    pub fn parse(s: &str) -> Option<GitRef> {
        let (remote, fragment) = s.split_once('#').unwrap_or((s, ""));
        let (reference, subdir) = fragment.split_once(':').unwrap_or((fragment, ""));
        let some = |v: &str| (!v.is_empty()).then(|| v.to_string());
        if reference.starts_with('-') || remote.starts_with('-') {
            return None;
        }
        let subdir = some(subdir.trim_matches('/')).filter(|d| d != ".");
        Some(GitRef { remote: remote.to_string(), reference: some(reference), subdir })
    }
}

/// `url` without a password or user name, for messages.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        _ => url.to_string(),
    }
}

// ------------------------------------------------------------------ http

/// What the store remembers of a URL: the digest of its last body, and the validators to
/// ask the server whether it changed.
#[derive(Serialize, Deserialize)]
struct Record {
    url: String,
    digest: String,
    size: u64,
    etag: Option<String>,
    last_modified: Option<String>,
}

/// A file `ADD <url>` reads: a blob of the store.
#[derive(Clone, Debug)]
pub(crate) struct Downloaded {
    /// The blob.
    pub path: PathBuf,
    pub digest: Digest,
    pub size: u64,
    /// `Last-Modified`, seconds since the epoch: the file's mtime (BuildKit's).
    pub mtime: Option<u64>,
}

fn record_path(layout: &Layout, url: &str) -> PathBuf {
    cache_root(layout).join("downloads").join(format!("{}.json", Digest::sha256_of(url.as_bytes()).hex()))
}

/// The last download of `url` whose blob is still in the store.
fn load_record(layout: &Layout, url: &str) -> Option<(Record, Downloaded)> {
    let r: Record = serde_json::from_slice(&std::fs::read(record_path(layout, url)).ok()?).ok()?;
    let digest: Digest = r.digest.parse().ok()?;
    let path = layout.blob_path_of(&digest);
    if r.url != url || path.metadata().ok()?.len() != r.size {
        return None;
    }
    let mtime = r.last_modified.as_deref().and_then(parse_http_date).and_then(|t| u64::try_from(t).ok());
    let d = Downloaded { path, digest, size: r.size, mtime };
    Some((r, d))
}

fn save_record(layout: &Layout, r: &Record) -> Result<()> {
    let p = record_path(layout, &r.url);
    let dir = p.parent().expect("downloads dir");
    std::fs::create_dir_all(dir).at(dir)?;
    let tmp = tempfile::NamedTempFile::new_in(dir).at(dir)?;
    std::fs::write(tmp.path(), serde_json::to_vec(r).map_err(|e| Error::serialize("URL record", e))?).at(tmp.path())?;
    tmp.persist(&p).map_err(|e| Error::io(&p, e.error))?;
    Ok(())
}

/// What `ADD <url>` asks of a download.
#[derive(Clone, Copy, Default)]
pub(crate) struct UrlRequest<'a> {
    /// `--checksum`: the digest the body must have.
    pub checksum: Option<&'a Digest>,
    /// `--no-cache`: no validators are sent.
    pub fresh: bool,
    /// The `Authorization` header for the URL's host ([`http_authorization`]).
    pub authorization: Option<&'a str>,
}

/// The file at `url` for `ADD` (what `what` names in errors: `ADD URL in Dockerfile:N`):
/// with `req.checksum` already in the store, no request at all; else a GET that sends the
/// last download's `ETag` (`If-None-Match`) and `Last-Modified` (`If-Modified-Since`),
/// reusing that download on `304`; else the body streamed into the store (bounded by
/// [`MAX_DOWNLOAD_SIZE`], hashed on the way, checked against the checksum before it is
/// kept). `req.fresh` (`--no-cache`) sends no validators; `req.authorization` goes to the
/// URL's host only (a redirect to another host drops it).
pub(crate) async fn download(
    layout: &Layout,
    client: &Client,
    url: &str,
    req: UrlRequest<'_>,
    what: &str,
    log: &dyn BuildLog,
) -> Result<Downloaded> {
    let (checksum, fresh) = (req.checksum, req.fresh);
    let shown = redact(url);
    let mismatch = |actual: &Digest, expected: &Digest| Error::DigestMismatch {
        what: format!("ADD {shown}"),
        location: what.to_string(),
        expected: expected.to_string(),
        actual: actual.to_string(),
    };
    let known = if fresh { None } else { load_record(layout, url) };
    if let (Some(want), Some((_, d))) = (checksum, &known) {
        if d.digest == *want {
            log.line(&format!("  {shown}: {} in the store (--checksum), not fetched", d.digest));
            return Ok(d.clone());
        }
    }
    let mut headers = Vec::new();
    if let Some(a) = req.authorization {
        headers.push(("Authorization", a.to_string()));
    }
    if let Some((r, _)) = &known {
        if let Some(e) = &r.etag {
            headers.push(("If-None-Match", e.clone()));
        }
        if let Some(m) = &r.last_modified {
            headers.push(("If-Modified-Since", m.clone()));
        }
    }
    let resp = client.get_url(url, &headers).await.map_err(|e| match e {
        Error::Network { reason, .. } => Error::Network { registry: shown.clone(), reason },
        e => e,
    })?;
    if resp.status == reqwest::StatusCode::NOT_MODIFIED {
        if let Some((_, d)) = known {
            log.line(&format!("  {shown}: not modified (304), {} reused", d.digest));
            if let Some(want) = checksum.filter(|w| **w != d.digest) {
                return Err(mismatch(&d.digest, want));
            }
            return Ok(d);
        }
    }
    if !resp.status.is_success() {
        return Err(Error::HttpStatus { url: shown, status: resp.status, detail: format!(" ({what})") });
    }
    let header = |n: &str| resp.headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
    if let Some(n) = header("content-length").and_then(|n| n.parse::<u64>().ok()).filter(|n| *n > MAX_DOWNLOAD_SIZE) {
        return Err(too_large(&shown, n));
    }
    let (etag, last_modified) = (header("etag"), header("last-modified"));
    let mut w = layout.begin_blob()?;
    let mut file = tokio::fs::File::from_std(w.file().try_clone().at(w.path())?);
    let mut h = Algorithm::Sha256.hasher();
    let mut size = 0u64;
    let mut body = resp.body;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| match e {
            Error::Network { reason, .. } => Error::Network { registry: shown.clone(), reason },
            e => e,
        })?;
        size += chunk.len() as u64;
        if size > MAX_DOWNLOAD_SIZE {
            return Err(too_large(&shown, size));
        }
        h.update(&chunk);
        file.write_all(&chunk).await.at(w.path())?;
    }
    file.flush().await.at(w.path())?;
    drop(file);
    let digest = h.finish();
    if let Some(want) = checksum.filter(|w| **w != digest) {
        return Err(mismatch(&digest, want));
    }
    w.set_hashed(digest.clone(), size);
    let path = w.commit(&digest, size)?;
    save_record(
        layout,
        &Record { url: url.to_string(), digest: digest.to_string(), size, etag, last_modified: last_modified.clone() },
    )?;
    log.line(&format!("  {shown}: {size} bytes, {digest}"));
    let mtime = last_modified.as_deref().and_then(parse_http_date).and_then(|t| u64::try_from(t).ok());
    Ok(Downloaded { path, digest, size, mtime })
}

fn too_large(url: &str, n: u64) -> Error {
    Error::Unsupported(format!("{url}: {n} bytes is more than hoist downloads ({MAX_DOWNLOAD_SIZE} bytes)"))
}

/// The name `ADD <url>` gives the file (BuildKit's): Go's `path.Base` of the URL's decoded
/// path, else `__unnamed__`.
pub(crate) fn url_file_name(url: &str) -> String {
    let path = url::Url::parse(url).map(|u| percent_decode(u.path())).unwrap_or_default();
    let base = path.trim_end_matches('/').rsplit('/').next().unwrap_or("").to_string();
    if base.is_empty() || base == "." || base == ".." {
        "__unnamed__".into()
    } else {
        base
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        if let Some(v) = hex.filter(|_| b[i] == b'%').and_then(|h| u8::from_str_radix(h, 16).ok()) {
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ------------------------------------------------------------------ credentials

/// BuildKit's secret id of the `Authorization` header value `ADD <url>` sends to one host:
/// `HTTP_AUTH_HEADER_<hostname>` (the host without its port).
pub const HTTP_AUTH_HEADER_PREFIX: &str = "HTTP_AUTH_HEADER_";
/// BuildKit's secret id of a bearer token for one host: `HTTP_AUTH_TOKEN_<hostname>` is
/// sent as `Authorization: Bearer TOKEN`, and wins over the header secret.
pub const HTTP_AUTH_TOKEN_PREFIX: &str = "HTTP_AUTH_TOKEN_";
/// BuildKit's git secrets: `GIT_AUTH_HEADER.<host>` (host and port as in the URL), then
/// `GIT_AUTH_TOKEN.<host>`, then the same without a host; the first one given is used. A
/// header is the `Authorization` value as it is; a token is sent as `basic
/// base64(x-access-token:TOKEN)`.
pub const GIT_AUTH_HEADER: &str = "GIT_AUTH_HEADER";
/// See [`GIT_AUTH_HEADER`].
pub const GIT_AUTH_TOKEN: &str = "GIT_AUTH_TOKEN";

/// The secret `id`, without its final line break; `None` when not given. Errors name the
/// id and where it comes from, never its value.
fn read_secret(secrets: &Secrets, id: &str) -> Result<Option<String>> {
    let Some(s) = secrets.get(id) else { return Ok(None) };
    let v = String::from_utf8(s.read(id)?).map_err(|_| Error::Usage(format!("secret {id} ({s}): not UTF-8")))?;
    let v = v.strip_suffix('\n').map(|v| v.strip_suffix('\r').unwrap_or(v)).unwrap_or(&v);
    if v.contains(['\r', '\n']) {
        return Err(Error::Usage(format!("secret {id} ({s}): an HTTP header value is one line")));
    }
    Ok(Some(v.to_string()))
}

/// The `Authorization` value `ADD <url>` sends to `url`'s host, from the secrets named for
/// that host ([`HTTP_AUTH_HEADER_PREFIX`], [`HTTP_AUTH_TOKEN_PREFIX`]); none for any other.
pub fn http_authorization(secrets: &Secrets, url: &str) -> Result<Option<String>> {
    let Some(host) = url::Url::parse(url).ok().and_then(|u| u.host_str().map(str::to_string)) else {
        return Ok(None);
    };
    // Go's `URL.Hostname()`: an IPv6 address without its brackets
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let mut auth = read_secret(secrets, &format!("{HTTP_AUTH_HEADER_PREFIX}{host}"))?;
    if let Some(t) = read_secret(secrets, &format!("{HTTP_AUTH_TOKEN_PREFIX}{host}"))? {
        auth = Some(format!("Bearer {t}"));
    }
    Ok(auth)
}

/// The `Authorization` value git sends to the http(s) repository `remote` (and only to it:
/// git's `http.<remote>.extraHeader`), from BuildKit's git secrets ([`GIT_AUTH_HEADER`]).
pub fn git_authorization(secrets: &Secrets, remote: &str) -> Result<Option<String>> {
    use base64::Engine;
    let Ok(u) = url::Url::parse(remote) else { return Ok(None) };
    let (Some(host), true) = (u.host_str(), matches!(u.scheme(), "http" | "https")) else { return Ok(None) };
    // Go's `URL.Host`: with the port the URL names
    let host = match u.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    let ids = [
        (format!("{GIT_AUTH_HEADER}.{host}"), false),
        (format!("{GIT_AUTH_TOKEN}.{host}"), true),
        (GIT_AUTH_HEADER.to_string(), false),
        (GIT_AUTH_TOKEN.to_string(), true),
    ];
    for (id, token) in ids {
        if let Some(v) = read_secret(secrets, &id)? {
            let b64 = |t: &str| base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{t}"));
            return Ok(Some(if token { format!("basic {}", b64(&v)) } else { v }));
        }
    }
    Ok(None)
}

// ------------------------------------------------------------------ git

/// A checkout of a [`GitRef`].
pub struct GitCheckout {
    /// Keeps the checkout.
    pub _tmp: tempfile::TempDir,
    /// The directory used: the checkout, or its subdirectory.
    pub dir: PathBuf,
    /// The commit checked out.
    pub commit: String,
    /// Its committer time: every entry's mtime (BuildKit's `git.mtime=commit`).
    pub time: u64,
}

fn git(dir: &Path, args: &[&str], what: &str) -> Result<String> {
    run_git(dir, args, what, None, &[])
}

/// The directory a git fetch and checkout write in, and the most bytes it may hold.
struct GitBound<'a> {
    root: &'a Path,
    max: u64,
}

impl GitBound<'_> {
    /// An error when the directory holds more than the bound.
    fn check(&self, what: &str) -> Result<()> {
        let n = disk_bytes(self.root);
        if n > self.max {
            return Err(Error::Unsupported(format!(
                "git repository {what}: the fetch and checkout take more than {} bytes on disk (hoist's bound for a git source, as for a build context)",
                self.max
            )));
        }
        Ok(())
    }
}

/// The bytes of the regular files below `root` (links not followed); what cannot be read
/// counts nothing (git may be renaming it).
fn disk_bytes(root: &Path) -> u64 {
    walkdir::WalkDir::new(root)
        .follow_links(false)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

/// `git ARGS` in `dir`; its stdout. With `bound`, the bound's directory is measured while
/// git runs and after: over the bound, git is killed and the error names the repository and
/// the bound. `config` is given to git in its environment (`GIT_CONFIG_KEY_n`), never on
/// its command line, where other users could read it.
fn run_git(
    dir: &Path,
    args: &[&str],
    what: &str,
    bound: Option<&GitBound<'_>>,
    config: &[(String, String)],
) -> Result<String> {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir)
        .args(["-c", "advice.detachedHead=false", "-c", "init.defaultBranch=main"])
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if !config.is_empty() {
        let first = std::env::var("GIT_CONFIG_COUNT").ok().and_then(|n| n.parse::<usize>().ok()).unwrap_or(0);
        for (i, (k, v)) in config.iter().enumerate() {
            cmd.env(format!("GIT_CONFIG_KEY_{}", first + i), k).env(format!("GIT_CONFIG_VALUE_{}", first + i), v);
        }
        cmd.env("GIT_CONFIG_COUNT", (first + config.len()).to_string());
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::Daemon { location: what.to_string(), reason: format!("git: {e} (is git installed?)") })?;
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut v);
            }
            v
        })
    };
    let out = drain(child.stdout.take().map(|r| Box::new(r) as Box<dyn Read + Send>));
    let err = drain(child.stderr.take().map(|r| Box::new(r) as Box<dyn Read + Send>));
    let io = |e: std::io::Error| Error::Daemon { location: what.to_string(), reason: format!("git: {e}") };
    let status = loop {
        let Some(b) = bound else { break child.wait().map_err(io)? };
        if let Some(s) = child.try_wait().map_err(io)? {
            break s;
        }
        if let Err(e) = b.check(what) {
            // its helpers (remote-https, index-pack) end on the closed pipes
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        std::thread::sleep(GIT_WATCH_INTERVAL);
    };
    let (out, err) = (out.join().unwrap_or_default(), err.join().unwrap_or_default());
    if let Some(b) = bound {
        b.check(what)?;
    }
    if !status.success() {
        let err = String::from_utf8_lossy(&err);
        return Err(Error::Daemon {
            location: what.to_string(),
            reason: format!("git {}: {}", args.first().copied().unwrap_or(""), err.trim()),
        });
    }
    Ok(String::from_utf8_lossy(&out).trim().to_string())
}

/// How a git source is fetched (BuildKit's git source options).
#[derive(Clone)]
pub struct GitFetch {
    /// Keep `.git` in the checkout (`ADD --keep-git-dir`, the build arg
    /// `BUILDKIT_CONTEXT_KEEP_GIT_DIR` of a git context).
    pub keep_git_dir: bool,
    /// `ADD --checksum=HEX` of a git source: the commit the reference resolves to (or the
    /// annotated tag it names) must start with these hex digits, as in BuildKit.
    pub checksum: Option<String>,
    /// The most bytes the fetch and checkout may put on disk ([`MAX_CONTEXT_SIZE`]).
    pub max_bytes: u64,
    /// Where the source is named, for errors (`Dockerfile:3`).
    pub location: String,
    /// The `Authorization` value for the repository ([`git_authorization`]), sent to its
    /// URL only.
    pub authorization: Option<String>,
    /// Where checkouts are kept between builds, by URL and commit ([`GIT_CACHE_DIR`] in the
    /// store's build cache); `None`: none kept.
    pub cache: Option<PathBuf>,
}

/// The directory under the store's build cache that keeps git checkouts between builds:
/// `KEY/tree` (the checkout with its `.git`) and `KEY/commit.json`, KEY the SHA-256 of the
/// URL and the commit. An entry is written in a temp dir and renamed into place, so a reader
/// sees all of it or nothing.
pub const GIT_CACHE_DIR: &str = "git-checkouts";

/// Where `store` keeps git checkouts between builds ([`GIT_CACHE_DIR`] in its build cache),
/// shared by every git source of a build: `ADD <git url>`, a git build context and a git
/// `--build-context`.
pub fn git_cache_dir(store: &Layout) -> PathBuf {
    cache_root(store).join(GIT_CACHE_DIR)
}

/// What a kept checkout records beside its tree.
#[derive(Serialize, Deserialize)]
struct CachedCommit {
    url: String,
    commit: String,
    time: u64,
}

fn git_cache_key(url: &str, commit: &str) -> String {
    Digest::sha256_of(format!("{url}\0{commit}").as_bytes()).hex().to_string()
}

/// The commit `want` names on the remote, asked with `git ls-remote` (refs only, no
/// objects): `want` itself when it is a full commit id; BuildKit's preference otherwise (the
/// ref as written, a branch, a tag, whose `^{}` is the commit of an annotated tag). `None`
/// when the remote has no such ref (the fetch then says so).
fn resolve_commit(repo: &Path, want: &str, what: &str, config: &[(String, String)]) -> Result<Option<String>> {
    if matches!(want.len(), 40 | 64) && is_hex(want) {
        return Ok(Some(want.to_ascii_lowercase()));
    }
    let peeled = format!("{want}^{{}}");
    let out = run_git(repo, &["ls-remote", "origin", want, &peeled], what, None, config)?;
    let refs: Vec<(&str, &str)> = out.lines().filter_map(|l| l.split_once('\t')).collect();
    let find = |name: &str| refs.iter().find(|(_, r)| *r == name).map(|(sha, _)| sha.to_string());
    let tail = want.trim_start_matches("refs/").trim_start_matches("heads/").trim_start_matches("tags/");
    let exact = if want == "HEAD" { find("HEAD") } else { find(&format!("refs/{}", want.trim_start_matches("refs/"))) };
    let found = exact
        .or_else(|| find(&format!("refs/heads/{tail}")))
        .or_else(|| find(&format!("refs/tags/{tail}^{{}}")))
        .or_else(|| find(&format!("refs/tags/{tail}")));
    Ok(found.filter(|c| is_hex(c)))
}

/// A kept checkout of `url` at `commit` under `cache`, copied into `to` (without `.git`
/// unless `keep_git_dir`); its commit time. `None` when none is kept.
fn from_git_cache(cache: &Path, url: &str, commit: &str, to: &Path, keep_git_dir: bool) -> Result<Option<u64>> {
    let entry = cache.join(git_cache_key(url, commit));
    let Ok(raw) = std::fs::read(entry.join("commit.json")) else { return Ok(None) };
    let Ok(meta) = serde_json::from_slice::<CachedCommit>(&raw) else { return Ok(None) };
    if meta.url != url || meta.commit != commit {
        return Ok(None);
    }
    copy_tree(&entry.join("tree"), to, keep_git_dir)?;
    Ok(Some(meta.time))
}

/// Keep the checkout `repo` (with its `.git`) of `url` at `commit` under `cache`: copied
/// into a temp dir there and renamed into place; an entry already there is kept. Failing
/// to keep it costs the next build a fetch, so errors are not the build's.
fn into_git_cache(cache: &Path, url: &str, commit: &str, time: u64, repo: &Path) {
    let entry = cache.join(git_cache_key(url, commit));
    if entry.exists() || std::fs::create_dir_all(cache).is_err() {
        return;
    }
    let Ok(tmp) = tempfile::Builder::new().prefix(".new").tempdir_in(cache) else { return };
    let meta = CachedCommit { url: url.to_string(), commit: commit.to_string(), time };
    let written = copy_tree(repo, &tmp.path().join("tree"), true).is_ok()
        && serde_json::to_vec(&meta).ok().is_some_and(|b| std::fs::write(tmp.path().join("commit.json"), b).is_ok());
    if written && std::fs::rename(tmp.path(), &entry).is_ok() {
        // renamed: nothing left for the temp dir to remove
        let _ = tmp.keep();
    }
}

/// Copy the tree `from` into the new directory `to`: directories, files (with their
/// modes) and symlinks as they are; the top `.git` only with `with_git`.
fn copy_tree(from: &Path, to: &Path, with_git: bool) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let walk = walkdir::WalkDir::new(from)
        .follow_links(false)
        .into_iter()
        .filter_entry(|e| with_git || e.depth() != 1 || e.file_name() != ".git");
    for e in walk {
        let e = e.map_err(|e| Error::Other(format!("{}: {e}", from.display())))?;
        let rel = e.path().strip_prefix(from).unwrap_or(e.path());
        let dst = to.join(rel);
        let ft = e.file_type();
        if ft.is_dir() {
            std::fs::create_dir_all(&dst).at(&dst)?;
            let mode = e.metadata().map(|m| m.permissions().mode()).unwrap_or(0o755);
            std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(mode | 0o700)).at(&dst)?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(e.path()).at(e.path())?;
            std::os::unix::fs::symlink(&target, &dst).at(&dst)?;
        } else if ft.is_file() {
            std::fs::copy(e.path(), &dst).at(&dst)?;
        }
    }
    Ok(())
}

impl Default for GitFetch {
    fn default() -> Self {
        GitFetch {
            keep_git_dir: false,
            checksum: None,
            max_bytes: MAX_CONTEXT_SIZE,
            location: "git source".into(),
            authorization: None,
            cache: None,
        }
    }
}

/// Whether `s` is hex digits only (a commit id or a prefix of one).
fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_hexdigit())
}

/// Fetch `r` shallowly (one commit) with the system `git` into a temp dir under `tmp_in`,
/// check it out with its submodules, and drop `.git` unless `opts.keep_git_dir`. With
/// `opts.checksum` the fetched commit is checked before it is checked out. The temp dir holds
/// at most `opts.max_bytes` while git fetches and checks out, else the fetch is stopped with
/// an error naming the URL and the bound. Blocking.
pub fn git_checkout_blocking(r: &GitRef, tmp_in: &Path, opts: &GitFetch) -> Result<GitCheckout> {
    let what = redact(&r.remote);
    let want = r.reference.as_deref().unwrap_or("HEAD");
    let checksum = match &opts.checksum {
        Some(c) if !is_hex(c) => {
            return Err(Error::Usage(format!(
                "{}: --checksum={c}: expected a hex commit hash for the git source {what}",
                opts.location
            )))
        }
        c => c.as_ref().map(|c| c.to_ascii_lowercase()),
    };
    let mismatch = |actual: &str| Error::DigestMismatch {
        what: format!("git {what}#{want}"),
        location: opts.location.clone(),
        expected: checksum.clone().unwrap_or_default(),
        actual: actual.to_string(),
    };
    // a full commit id as the reference disagrees before anything is fetched
    if let Some(c) = &checksum {
        if matches!(want.len(), 40 | 64) && is_hex(want) && !want.to_ascii_lowercase().starts_with(c.as_str()) {
            return Err(mismatch(want));
        }
    }
    std::fs::create_dir_all(tmp_in).at(tmp_in)?;
    let tmp = tempfile::Builder::new().prefix("git").tempdir_in(tmp_in).at(tmp_in)?;
    let bound = GitBound { root: tmp.path(), max: opts.max_bytes };
    let repo = tmp.path().join("checkout");
    std::fs::create_dir_all(&repo).at(&repo)?;
    git(&repo, &["init", "-q"], &what)?;
    git(&repo, &["remote", "add", "origin", &r.remote], &what)?;
    // BuildKit's scope: the remote's URL (git matches it as a prefix of each request's)
    let config: Vec<(String, String)> = match &opts.authorization {
        Some(a) => vec![(format!("http.{}.extraHeader", r.remote), format!("Authorization: {a}"))],
        None => Vec::new(),
    };
    // a checkout kept by an earlier build: no objects fetched
    if let Some(cache) = &opts.cache {
        if let Some(commit) = resolve_commit(&repo, want, &what, &config)? {
            // (a checksum naming an annotated tag's object is checked by the fetch below)
            let agrees = checksum.as_ref().is_none_or(|c| commit.starts_with(c.as_str()));
            let out = tmp.path().join("cached");
            let kept = if agrees { from_git_cache(cache, &r.remote, &commit, &out, opts.keep_git_dir)? } else { None };
            if let Some(time) = kept {
                bound.check(&what)?;
                let dir = checkout_subdir(r, out, &what, want)?;
                return Ok(GitCheckout { _tmp: tmp, dir, commit, time });
            }
        }
    }
    let fetch = ["fetch", "-q", "--depth=1", "--no-tags", "origin", want];
    let shallow = run_git(&repo, &fetch, &what, Some(&bound), &config);
    if let Err(e) = shallow {
        // a commit id a server will not serve by itself: the whole history, then the commit
        let is_commit = want.len() >= 7 && is_hex(want);
        if !is_commit || disk_bytes(tmp.path()) > opts.max_bytes {
            return Err(e);
        }
        run_git(&repo, &["fetch", "-q", "--no-tags", "origin"], &what, Some(&bound), &config)?;
        git(&repo, &["update-ref", "FETCH_HEAD", want], &what)?;
    }
    if let Some(c) = &checksum {
        // BuildKit's rule: the commit, or the annotated tag object the reference names
        let fetched = git(&repo, &["rev-parse", "FETCH_HEAD"], &what)?;
        let commit = git(&repo, &["rev-parse", "FETCH_HEAD^{commit}"], &what)?;
        if !commit.starts_with(c.as_str()) && !fetched.starts_with(c.as_str()) {
            return Err(mismatch(&commit));
        }
    }
    run_git(&repo, &["checkout", "-q", "FETCH_HEAD"], &what, Some(&bound), &[])?;
    if repo.join(".gitmodules").exists() {
        let args = ["submodule", "update", "-q", "--init", "--recursive", "--depth=1"];
        run_git(&repo, &args, &what, Some(&bound), &config)?;
    }
    let commit = git(&repo, &["rev-parse", "HEAD"], &what)?;
    let time = git(&repo, &["log", "-1", "--format=%ct", "HEAD"], &what)?.parse::<u64>().unwrap_or(0);
    if let Some(cache) = &opts.cache {
        into_git_cache(cache, &r.remote, &commit, time, &repo);
    }
    if !opts.keep_git_dir {
        let g = repo.join(".git");
        std::fs::remove_dir_all(&g).at(&g)?;
    }
    let dir = checkout_subdir(r, repo, &what, want)?;
    Ok(GitCheckout { _tmp: tmp, dir, commit, time })
}

/// The directory of the checkout `repo` that `r` uses: its `:SUBDIR`, inside the checkout
/// whatever its symlinks say, or the checkout.
fn checkout_subdir(r: &GitRef, repo: PathBuf, what: &str, want: &str) -> Result<PathBuf> {
    let Some(s) = &r.subdir else { return Ok(repo) };
    let rel = resolve_in_dir(&repo, s, true).map_err(|e| Error::Usage(format!("{what}: subdirectory {s:?}: {e}")))?;
    let d = repo.join(rel);
    if !d.is_dir() {
        return Err(Error::Usage(format!("{what}#{want}: no directory {s:?} in the repository")));
    }
    Ok(d)
}

// ------------------------------------------------------------------ contexts

/// A build context that was not a local directory, unpacked into a temp dir.
pub struct FetchedContext {
    /// Keeps the directory.
    _tmp: tempfile::TempDir,
    /// The context directory.
    pub dir: PathBuf,
    /// The Dockerfile, when what was fetched was one (a plain-text URL or stdin, as in
    /// BuildKit and `docker build - < Dockerfile`): the context is then empty.
    pub dockerfile: Option<PathBuf>,
}

/// `hoist build` of a git URL (`URL#REF:SUBDIR`) or an http(s) URL (a tar, plain or
/// compressed, or a Dockerfile), fetched into a temp dir under `tmp_in`, with the
/// credentials `secrets` hold for its host ([`http_authorization`], [`git_authorization`]).
/// A git checkout keeps its `.git` with `keep_git_dir` (BuildKit's build arg
/// `BUILDKIT_CONTEXT_KEEP_GIT_DIR`), and goes through `store`'s checkouts kept between
/// builds ([`git_cache_dir`]), as `ADD <git url>` does.
pub async fn fetch_context(
    spec: &str,
    client: &Client,
    store: &Layout,
    tmp_in: &Path,
    keep_git_dir: bool,
    secrets: &Secrets,
) -> Result<FetchedContext> {
    match classify(spec) {
        Some(Remote::Git(r)) => {
            let t = tmp_in.to_path_buf();
            let authorization = git_authorization(secrets, &r.remote)?;
            let opts = GitFetch {
                keep_git_dir,
                location: "build context".into(),
                authorization,
                cache: Some(git_cache_dir(store)),
                ..GitFetch::default()
            };
            let co = tokio::task::spawn_blocking(move || git_checkout_blocking(&r, &t, &opts))
                .await
                .map_err(|e| Error::task("git checkout", e))??;
            Ok(FetchedContext { dir: co.dir, _tmp: co._tmp, dockerfile: None })
        }
        Some(Remote::Http(url)) => {
            let shown = redact(&url);
            let headers: Vec<_> =
                http_authorization(secrets, &url)?.map(|a| ("Authorization", a)).into_iter().collect();
            let resp = client.get_url(&url, &headers).await?;
            if !resp.status.is_success() {
                return Err(Error::HttpStatus { url: shown, status: resp.status, detail: " (build context)".into() });
            }
            std::fs::create_dir_all(tmp_in).at(tmp_in)?;
            let tmp = tempfile::Builder::new().prefix("ctx").tempdir_in(tmp_in).at(tmp_in)?;
            let file = tmp.path().join("download");
            let mut f = tokio::fs::File::create(&file).await.at(&file)?;
            let mut n = 0u64;
            let mut body = resp.body;
            while let Some(chunk) = body.next().await {
                let chunk = chunk?;
                n += chunk.len() as u64;
                if n > MAX_CONTEXT_SIZE {
                    return Err(Error::Unsupported(format!(
                        "build context {shown}: more than {MAX_CONTEXT_SIZE} bytes"
                    )));
                }
                f.write_all(&chunk).await.at(&file)?;
            }
            f.flush().await.at(&file)?;
            drop(f);
            tokio::task::spawn_blocking(move || context_from_file_blocking(tmp, &shown))
                .await
                .map_err(|e| Error::task("build context", e))?
        }
        None => Err(Error::Usage(format!("{spec}: not a git or http(s) URL"))),
    }
}

/// `hoist build -`: stdin (at most [`MAX_CONTEXT_SIZE`] bytes) as a tar context, plain or
/// compressed, or as a Dockerfile (docker's rule: what is not an archive is the Dockerfile).
/// Blocking.
pub fn context_from_reader_blocking(r: impl Read, tmp_in: &Path) -> Result<FetchedContext> {
    std::fs::create_dir_all(tmp_in).at(tmp_in)?;
    let tmp = tempfile::Builder::new().prefix("ctx").tempdir_in(tmp_in).at(tmp_in)?;
    let file = tmp.path().join("download");
    let n = copy_bounded(r, &file, MAX_CONTEXT_SIZE)?;
    if n > MAX_CONTEXT_SIZE {
        return Err(Error::Unsupported(format!("build context on stdin: more than {MAX_CONTEXT_SIZE} bytes")));
    }
    context_from_file_blocking(tmp, "stdin")
}

/// `-f -`: the Dockerfile on stdin, at most [`super::parse::MAX_DOCKERFILE_SIZE`] bytes,
/// into a file under `tmp_in`. Blocking.
pub fn dockerfile_from_reader_blocking(r: impl Read, tmp_in: &Path) -> Result<(tempfile::TempDir, PathBuf)> {
    std::fs::create_dir_all(tmp_in).at(tmp_in)?;
    let tmp = tempfile::Builder::new().prefix("df").tempdir_in(tmp_in).at(tmp_in)?;
    let file = tmp.path().join("Dockerfile");
    let max = super::parse::MAX_DOCKERFILE_SIZE as u64;
    if copy_bounded(r, &file, max)? > max {
        return Err(Error::Usage(format!("-f -: the Dockerfile on stdin is more than {max} bytes")));
    }
    Ok((tmp, file))
}

/// Copy at most `max + 1` bytes of `r` into a new file `to`; returns how many.
fn copy_bounded(r: impl Read, to: &Path, max: u64) -> Result<u64> {
    let mut f = std::fs::File::create(to).at(to)?;
    let n = std::io::copy(&mut r.take(max + 1), &mut f).at(to)?;
    f.flush().at(to)?;
    Ok(n)
}

/// The file `tmp/download` as a context: unpacked into `tmp/context` when it is an archive,
/// else the Dockerfile of an empty context.
fn context_from_file_blocking(tmp: tempfile::TempDir, shown: &str) -> Result<FetchedContext> {
    let file = tmp.path().join("download");
    let dir = tmp.path().join("context");
    std::fs::create_dir_all(&dir).at(&dir)?;
    let unpacked = crate::layer::extract::extract_archive_file(&file, &dir, Some(MAX_CONTEXT_SIZE))
        .map_err(|e| Error::malformed("build context archive", shown, e))?;
    if unpacked {
        return Ok(FetchedContext { dir, _tmp: tmp, dockerfile: None });
    }
    let df = tmp.path().join("Dockerfile");
    std::fs::rename(&file, &df).at(&df)?;
    Ok(FetchedContext { dir, _tmp: tmp, dockerfile: Some(df) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_sources_as_buildkit_tells_them() {
        let git = |r: &str, re: Option<&str>, sub: Option<&str>| {
            Some(Remote::Git(GitRef {
                remote: r.into(),
                reference: re.map(String::from),
                subdir: sub.map(String::from),
            }))
        };
        assert_eq!(classify("https://h/x.git#v1:sub/dir"), git("https://h/x.git", Some("v1"), Some("sub/dir")));
        assert_eq!(classify("git@github.com:o/r.git"), git("git@github.com:o/r.git", None, None));
        assert_eq!(classify("git://h/r#main"), git("git://h/r", Some("main"), None));
        assert_eq!(classify("http://127.0.0.1:8/f.tar.gz"), Some(Remote::Http("http://127.0.0.1:8/f.tar.gz".into())));
        assert_eq!(classify("github.com/o/r"), None, "indistinguishable from a local path: local");
        assert_eq!(classify("dir/file"), None);
        assert_eq!(classify("https://h/x.git#--upload-pack=x"), None);
    }

    #[test]
    fn file_names_from_urls() {
        assert_eq!(url_file_name("https://h/a/b.tar.gz?x=1"), "b.tar.gz");
        assert_eq!(url_file_name("https://h/"), "__unnamed__");
        assert_eq!(url_file_name("https://h"), "__unnamed__");
        assert_eq!(url_file_name("https://h/a%20b"), "a b");
        assert_eq!(url_file_name("https://h/a%2Fb"), "b");
        assert_eq!(url_file_name("https://h/d/"), "d");
        assert_eq!(redact("https://u:p@h/x"), "https://h/x");
    }
}
