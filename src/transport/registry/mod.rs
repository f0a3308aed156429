//! Registry transport: an OCI Distribution client written for hoist on reqwest/rustls.
//!
//! Split by job, as oras-go and containerd split theirs:
//! - [`http`]: the HTTP client, the ping and scheme choice, sending a request with auth and
//!   retries, reading bodies within their limits;
//! - [`auth`]: `WWW-Authenticate` challenges, which credential goes where, tokens (fetch,
//!   cache, single-flight refresh);
//! - [`retry`]: the one retry decision every loop asks;
//! - [`errors`]: registry error bodies as structured codes;
//! - [`manifests`], [`upload`], [`download`], [`referrers`]: the protocol calls;
//! - [`ops`]: HEAD for a descriptor, tag, untag, delete, `_catalog`;
//! - [`profiles`]: known limits of hosted registries (GHCR, ECR, GAR, Quay, Docker Hub);
//! - [`credentials`]: auth files and credential helpers;
//! - [`tls`]: trust (CA files, certs.d), client certificates, a reqwest client per host,
//!   TLS failures classified; [`proxy`]: `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY`;
//! - [`regconf`]: containers-registries.conf (remaps, mirrors for pulls, blocked, insecure).
//!
//! This file keeps [`Client`], [`Repository`], the options and the `Source`/`Destination`
//! impls, which call into the job files.

pub mod auth;
mod challenge;
pub mod credentials;
mod download;
pub(crate) mod errors;
pub mod http;
mod links;
mod manifests;
pub mod ops;
pub(crate) mod profiles;
pub(crate) mod proxy;
pub(crate) mod referrers;
pub mod regconf;
pub mod retry;
pub(crate) mod tls;
mod upload;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use reqwest::{Method, StatusCode};

use crate::error::{Error, Result};
use crate::model::descriptor::Descriptor;
use crate::model::digest::Digest;
use crate::model::reference::{Reference, TagOrDigest};
use crate::transport::{BlobOutcome, BlobStream, Destination, Progress, RangeRead, Source};

use challenge::Challenge;
use credentials::Credential;
pub use download::MAX_LANES;
use errors::ErrorBody;
pub use retry::RetryPolicy;

/// How blobs are uploaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum UploadMode {
    /// One streaming PUT; switch to chunks after a 413 or a broken upload.
    #[default]
    Auto,
    /// One streaming PUT, retried from zero.
    Monolithic,
    /// PATCH chunks of `chunk_size`, resumed from the registry's `Range`.
    Chunked,
}

/// How a [`Client`] talks to registries.
#[derive(Clone, Debug)]
pub struct RegistryOptions {
    /// Registries reached over plain HTTP: `host` (any port) or `host:port` (that port).
    /// Loopback hosts fall back to plain HTTP by themselves when the server does not speak
    /// TLS.
    pub insecure: Vec<String>,
    /// Use plain HTTP for every registry.
    pub plain_http: bool,
    /// Verify TLS certificates (default true).
    pub tls_verify: bool,
    /// Extra CA certificates (PEM), trusted for every registry.
    pub ca_files: Vec<PathBuf>,
    /// Certs directories (`*.crt` CAs, `client.cert`/`client.key`) used for every registry,
    /// as skopeo's `--cert-dir`.
    pub cert_dirs: Vec<PathBuf>,
    /// Roots holding one certs directory per registry (`ROOT/host[:port]/`), as docker's
    /// `/etc/docker/certs.d` and containers' `/etc/containers/certs.d`; by default
    /// [`tls::default_certs_d`] (`$HOIST_CERTS_D` overrides).
    pub certs_d: Vec<PathBuf>,
    /// containers-registries.conf: remapped names, mirrors tried before the primary for
    /// reads, blocked names, insecure endpoints (default: none; the CLI reads the files
    /// with [`regconf::RegistriesConf::load_default`]).
    pub registries: regconf::RegistriesConf,
    /// Explicit credentials (instead of auth files), per registry: keyed by the registry's
    /// `host[:port]` as written in references, Docker Hub's names as `docker.io` (see
    /// [`credentials::registry_key`], and [`RegistryOptions::set_credential`] to insert).
    /// A credential is only sent to its registry and that registry's token realm; a
    /// registry without an entry here gets the auth files' credentials.
    pub credentials: BTreeMap<String, Credential>,
    /// Don't read auth files at all.
    pub anonymous: bool,
    /// Retries of every request and transfer.
    pub retry: RetryPolicy,
    /// How blobs are uploaded.
    pub upload: UploadMode,
    /// Bytes per PATCH of a chunked upload.
    pub chunk_size: u64,
    /// `upload` was chosen by the user (`--upload`): registry profiles leave it alone.
    pub upload_set: bool,
    /// `chunk_size` was chosen by the user (`--chunk-size-mib`): profiles leave it alone.
    pub chunk_size_set: bool,
    /// No bytes for this long on a transfer counts as a stall.
    pub read_timeout: Duration,
    /// Offer HTTP/2 (ALPN) to TLS registries; HTTP/1.1 only when false (the default).
    pub http2: bool,
    /// Parallel ranged reads of one large blob (`--lanes`); `None`: chosen from the blob's
    /// size (see `download`), `Some(1)`: one stream per blob.
    pub lanes: Option<usize>,
    /// TLS settings of one registry (`host[:port]` as written in references) on top of the
    /// global ones: skopeo's `--src-tls-verify`/`--dest-tls-verify` and
    /// `--src-cert-dir`/`--dest-cert-dir` for the two ends of a copy.
    pub registry_tls: BTreeMap<String, RegistryTls>,
}

/// One registry's own TLS settings (see [`RegistryOptions::registry_tls`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegistryTls {
    /// Verify its certificates (`None`: as [`RegistryOptions::tls_verify`] says).
    pub verify: Option<bool>,
    /// Certs directories (`*.crt` CAs, `client.cert`/`client.key`) for it alone, read after
    /// the global `cert_dirs` and before its certs.d directories.
    pub cert_dirs: Vec<PathBuf>,
}

/// Chunk size of chunked uploads when neither the user nor a registry profile says (MiB).
pub const DEFAULT_CHUNK_SIZE_MIB: u64 = 16;
/// Seconds without data before a transfer counts as stalled (`--read-timeout`).
pub const DEFAULT_READ_TIMEOUT_SECS: u64 = 60;

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            insecure: vec![],
            plain_http: false,
            tls_verify: true,
            ca_files: vec![],
            cert_dirs: vec![],
            certs_d: tls::default_certs_d(),
            registries: Default::default(),
            credentials: BTreeMap::new(),
            anonymous: false,
            retry: RetryPolicy::default(),
            upload: UploadMode::Auto,
            chunk_size: DEFAULT_CHUNK_SIZE_MIB << 20,
            upload_set: false,
            chunk_size_set: false,
            read_timeout: Duration::from_secs(DEFAULT_READ_TIMEOUT_SECS),
            http2: false,
            lanes: None,
            registry_tls: BTreeMap::new(),
        }
    }
}

impl RegistryOptions {
    /// Use `credential` for `registry` (`host[:port]`, any of Docker Hub's names).
    pub fn set_credential(&mut self, registry: &str, credential: Credential) {
        self.credentials.insert(credentials::registry_key(registry), credential);
    }

    /// The explicit credential for `registry`, if one was given.
    pub fn credential(&self, registry: &str) -> Option<&Credential> {
        self.credentials.get(&credentials::registry_key(registry))
    }
}

/// What the client learnt about one registry: its base URL, challenge, credential, tokens.
struct Host {
    name: String,
    base: String,
    challenge: Challenge,
    credential: Option<Credential>,
    tokens: Mutex<HashMap<String, String>>,
    /// Held while fetching a token, so that concurrent first uses of a scope set (one per
    /// blob with `--jobs`) fetch one token and share it instead of each fetching their own;
    /// likewise when several requests are refused the same expired token at once (see
    /// [`Client::authorization`]).
    token_fetch: tokio::sync::Mutex<()>,
    /// The rate limit the registry's last answer stated.
    rate_limit: Mutex<Option<profiles::RateLimit>>,
}

/// A registry client shared by every repository it talks to.
pub struct Client {
    http: tls::Clients,
    opts: RegistryOptions,
    hosts: tokio::sync::Mutex<HashMap<String, Arc<Host>>>,
    /// Upload sessions started and not finished, that no session file keeps for a re-run
    /// (see [`Client::cancel_open_uploads`]).
    open_uploads: Mutex<Vec<upload::OpenUpload>>,
    /// Writes of a digest into a repository kept apart from PUTs of manifests naming it
    /// (see `links`: distribution rewrites its link files non-atomically).
    links: links::LinkLocks,
}

impl Client {
    /// A client with `opts` (reads the CA files; certs.d directories are read per registry
    /// on first use).
    pub fn new(opts: RegistryOptions) -> Result<Arc<Client>> {
        let http = tls::Clients::new(&opts)?;
        Ok(Arc::new(Client {
            http,
            opts,
            hosts: tokio::sync::Mutex::new(HashMap::new()),
            open_uploads: Mutex::new(Vec::new()),
            links: links::LinkLocks::default(),
        }))
    }

    /// The options the client was made with.
    pub fn options(&self) -> &RegistryOptions {
        &self.opts
    }

    /// `registry` as pinged once (cached): its scheme, challenge and credential.
    async fn host(&self, registry: &str) -> Result<Arc<Host>> {
        let mut hosts = self.hosts.lock().await;
        if let Some(h) = hosts.get(registry) {
            return Ok(h.clone());
        }
        let (base, challenge) = self.ping(registry).await?;
        let credential = self.credential_for(registry, &challenge).await?;
        tracing::debug!(registry, %base, ?challenge, "registry pinged");
        let host = Arc::new(Host {
            name: registry.to_string(),
            base,
            challenge,
            credential,
            tokens: Mutex::new(HashMap::new()),
            token_fetch: tokio::sync::Mutex::new(()),
            rate_limit: Mutex::new(None),
        });
        hosts.insert(registry.to_string(), host.clone());
        Ok(host)
    }

    /// Open a repository on a registry (pings the registry on first use), routed by
    /// registries.conf: a remapped location, mirrors for reads, or refused when blocked.
    pub fn repository(self: &Arc<Self>, reference: &Reference) -> Repository {
        let route = self.opts.registries.route(reference);
        let (registry, repo) = route.primary;
        if (registry.as_str(), repo.as_str()) != (reference.registry.as_str(), reference.repository.as_str()) {
            tracing::info!(name = %reference.repo_ref(), to = %format!("{registry}/{repo}"), "remapped by registries.conf");
        }
        let mirrors = route
            .mirrors
            .into_iter()
            .map(|(registry, repo, pull_from)| (self.plain_repository(registry, repo), pull_from))
            .collect();
        Repository {
            blocked: route.blocked.map(Arc::from),
            mirrors: Arc::new(mirrors),
            ..self.plain_repository(registry, repo)
        }
    }

    /// `registry`/`repo` as is: no mirrors, not blocked.
    fn plain_repository(self: &Arc<Self>, registry: String, repo: String) -> Repository {
        Repository {
            client: self.clone(),
            registry,
            repo,
            manifest_cache: Arc::new(Mutex::new(HashMap::new())),
            referrers_api: Default::default(),
            blocked: None,
            mirrors: Arc::new(vec![]),
            served_by: Arc::new(Mutex::new(None)),
        }
    }

    /// The rate limit `registry`'s last answer stated (Docker Hub's `ratelimit-*` headers),
    /// if it has stated one.
    pub async fn rate_limit(&self, registry: &str) -> Option<profiles::RateLimit> {
        let host = self.hosts.lock().await.get(registry).cloned()?;
        let r = *host.rate_limit.lock().ok()?;
        r
    }

    /// Check that the registry accepts our credentials (used by `hoist login`).
    pub async fn check_login(&self, registry: &str, repository_hint: Option<&str>) -> Result<()> {
        let host = self.host(registry).await?;
        let scopes: Vec<String> = repository_hint.map(|r| vec![format!("repository:{r}:pull")]).unwrap_or_default();
        let url = format!("{}/v2/", host.base);
        let resp = self.send(&host, &scopes, &Method::GET, "/v2/", &|| self.http.get(&url)).await?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(Error::Auth {
                registry: registry.to_string(),
                reason: format!("login check answered {}", resp.status()),
            })
        }
    }
}

/// One repository on a registry: a `Source` and a `Destination`.
#[derive(Clone)]
pub struct Repository {
    client: Arc<Client>,
    registry: String,
    repo: String,
    manifest_cache: Arc<Mutex<HashMap<Digest, (String, Bytes)>>>,
    referrers_api: referrers::ApiCache,
    /// Why registries.conf refuses this name.
    blocked: Option<Arc<str>>,
    /// Mirrors tried in order before this repository when reading (registries.conf).
    mirrors: Arc<Vec<(Repository, regconf::PullFrom)>>,
    /// The mirror the last `resolve` was served by; later reads go there too.
    served_by: Arc<Mutex<Option<Repository>>>,
}

impl Repository {
    /// What the link locks of this repository are keyed by (see `links`).
    fn link_scope(&self) -> String {
        format!("{}/{}", self.registry, self.repo)
    }

    /// A HEAD of the blob, without the link locks (for callers that hold them).
    async fn blob_exists(&self, desc: &Descriptor) -> Result<bool> {
        self.head_status(&format!("blobs/{}", desc.digest), None).await
    }

    fn loc(&self) -> String {
        format!("docker://{}/{}", self.registry, self.repo)
    }

    /// The mirror (`docker://host/repo`) that served the last resolve, if one did.
    pub fn served_by(&self) -> Option<String> {
        self.served_by.lock().ok()?.as_ref().map(|m| m.loc())
    }

    /// Where reads go: the mirror that resolved the root, else this repository.
    fn reader(&self) -> Repository {
        self.served_by.lock().ok().and_then(|m| m.clone()).unwrap_or_else(|| self.clone())
    }

    fn check_blocked(&self) -> Result<()> {
        match &self.blocked {
            Some(why) => Err(Error::Protocol { registry: self.registry.clone(), reason: why.to_string() }),
            None => Ok(()),
        }
    }

    /// Resolve `reference` at the first mirror that has it (in order, when the mirror
    /// serves pulls of that kind), else at the primary; the one that answered serves the
    /// reads that follow.
    async fn resolve_routed(&self, reference: &TagOrDigest) -> Result<Descriptor> {
        self.check_blocked()?;
        let by_digest = reference.digest().is_some();
        for (m, pull_from) in self.mirrors.iter() {
            if !pull_from.allows(by_digest) {
                continue;
            }
            match m.resolve_manifest(reference).await {
                Ok(d) => {
                    tracing::info!(name = %self.loc(), mirror = %m.loc(), %reference, "served by mirror");
                    if let Ok(mut s) = self.served_by.lock() {
                        *s = Some(m.clone());
                    }
                    return Ok(d);
                }
                Err(e) => tracing::info!(mirror = %m.loc(), error = %e, "mirror did not serve; trying the next"),
            }
        }
        if let Ok(mut s) = self.served_by.lock() {
            *s = None;
        }
        self.resolve_manifest(reference).await
    }
    fn scopes_pull(&self) -> Vec<String> {
        vec![format!("repository:{}:pull", self.repo)]
    }
    fn scopes_push(&self) -> Vec<String> {
        vec![format!("repository:{}:pull,push", self.repo)]
    }
    async fn host(&self) -> Result<Arc<Host>> {
        self.check_blocked()?;
        self.client.host(&self.registry).await
    }

    /// The error for an answer `status` with `body` to `method path`: a 404 to a read is
    /// "not found", anything else names the registry, the request and the registry's codes.
    fn registry_error(&self, method: &Method, path: &str, status: StatusCode, body: &ErrorBody) -> Error {
        if status == StatusCode::NOT_FOUND && method != Method::POST && method != Method::PUT {
            return Error::not_found(path.rsplit('/').next().unwrap_or(path).to_string(), self.loc());
        }
        Error::Registry {
            registry: self.registry.clone(),
            method: method.to_string(),
            path: path.to_string(),
            status: status.as_u16(),
            detail: body.detail(),
        }
    }

    /// Send `method path` (below `/v2/<repo>/`) with pull or push scopes; `configure` adds
    /// headers and body (called again for each attempt).
    async fn request(
        &self,
        method: Method,
        path: &str,
        push: bool,
        configure: &(dyn Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder + Send + Sync),
    ) -> Result<reqwest::Response> {
        let scopes = if push { self.scopes_push() } else { self.scopes_pull() };
        self.request_scoped(method, path, &scopes, configure).await
    }

    /// [`Repository::request`] with the token scopes `scopes` (deletes ask for `delete`).
    async fn request_scoped(
        &self,
        method: Method,
        path: &str,
        scopes: &[String],
        configure: &(dyn Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder + Send + Sync),
    ) -> Result<reqwest::Response> {
        self.send_on(false, method, path, scopes, configure).await
    }

    /// [`Repository::request`] for a blob body (see [`tls::Clients::blob_request`]: a
    /// connection of its own, also with `--http2`).
    async fn request_blob(
        &self,
        method: Method,
        path: &str,
        configure: &(dyn Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder + Send + Sync),
    ) -> Result<reqwest::Response> {
        self.send_on(true, method, path, &self.scopes_pull(), configure).await
    }

    /// The one send of [`Repository::request_scoped`] and [`Repository::request_blob`]: on a
    /// blob connection (`blob`) or the shared ones.
    async fn send_on(
        &self,
        blob: bool,
        method: Method,
        path: &str,
        scopes: &[String],
        configure: &(dyn Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder + Send + Sync),
    ) -> Result<reqwest::Response> {
        let host = self.host().await?;
        let url = format!("{}/v2/{}/{}", host.base, self.repo, path);
        let http = &self.client.http;
        let m = method.clone();
        let build = || if blob { http.blob_request(m.clone(), &url) } else { http.request(m.clone(), &url) };
        self.client.send(&host, scopes, &method, path, &|| configure(build())).await
    }
}

#[async_trait]
impl Source for Repository {
    fn location(&self) -> String {
        self.loc()
    }

    async fn resolve(&self, reference: Option<&TagOrDigest>) -> Result<Descriptor> {
        match reference {
            Some(r) => self.resolve_routed(r).await,
            None => self.resolve_routed(&TagOrDigest::Tag(crate::model::reference::DEFAULT_TAG.into())).await,
        }
    }

    async fn fetch_manifest_bytes(&self, desc: &Descriptor) -> Result<Bytes> {
        let reader = self.reader();
        match reader.manifest_bytes(desc).await {
            // a partial mirror (a pull-through cache filling up) may lack a child manifest
            Err(e) if reader.loc() != self.loc() => {
                tracing::info!(mirror = %reader.loc(), digest = %desc.digest, error = %e, "mirror lacks a manifest; asking the primary");
                self.manifest_bytes(desc).await
            }
            other => other,
        }
    }

    async fn open_blob(&self, desc: &Descriptor, offset: u64) -> Result<BlobStream> {
        Ok(download::resuming_download(self.reader(), desc.clone(), offset))
    }

    fn range_lanes(&self, desc: &Descriptor) -> usize {
        download::lanes_for(desc.size, self.client.opts.lanes)
    }

    async fn open_blob_range(&self, desc: &Descriptor, offset: u64, len: u64) -> Result<RangeRead> {
        download::open_range(self.reader(), desc.clone(), offset, len).await
    }

    async fn list_tags(&self) -> Result<Vec<String>> {
        self.tags().await
    }

    fn registry_repo(&self) -> Option<(String, String)> {
        Some((self.registry.clone(), self.repo.clone()))
    }

    fn served_by(&self) -> Option<String> {
        Repository::served_by(self)
    }

    async fn referrers(&self, subject: &Digest, artifact_type: Option<&str>) -> Result<Vec<Descriptor>> {
        Repository::referrers(self, subject, artifact_type).await
    }
}

#[async_trait]
impl Destination for Repository {
    fn location(&self) -> String {
        self.loc()
    }

    async fn has_blob(&self, desc: &Descriptor) -> Result<bool> {
        // a blob being written here now is waited for (see `links`)
        let _held = self.client.links.lock(&self.link_scope(), None, [desc.digest.clone()]).await;
        self.blob_exists(desc).await
    }

    async fn has_manifest(&self, desc: &Descriptor) -> Result<bool> {
        let _held = self.client.links.lock(&self.link_scope(), None, [desc.digest.clone()]).await;
        self.head_status(&format!("manifests/{}", desc.digest), Some(crate::model::media::MANIFEST_ACCEPT)).await
    }

    async fn push_blob(&self, desc: &Descriptor, src: &dyn Source, progress: &dyn Progress) -> Result<BlobOutcome> {
        self.upload_blob(desc, src, progress).await
    }

    async fn push_manifest(&self, desc: &Descriptor, bytes: Bytes, tag: Option<&str>) -> Result<()> {
        self.put_manifest(desc, bytes, tag).await
    }
}
