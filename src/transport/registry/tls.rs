//! TLS for the registry client, as users have it set up for docker, podman and skopeo:
//!
//! - trust: the public roots (webpki-roots), every `--ca-file`, every `*.crt` of a
//!   `--cert-dir`, and the `*.crt` of `certs.d/HOST[:PORT]/` in the certs.d roots
//!   (`/etc/containers/certs.d`, `/etc/docker/certs.d`, `~/.config/containers/certs.d`, or
//!   `$HOIST_CERTS_D`); a certificate the user trusts that is the server's own (the one-line
//!   `openssl req -x509` kind, a CA certificate used as its own leaf, which webpki refuses
//!   and Go accepts) is accepted when its name and dates are right;
//! - mutual TLS: `client.cert` + `client.key` (any `NAME.cert` with its `NAME.key`) from
//!   the same directories;
//! - one reqwest client per registry host (`host[:port]`), built on first use;
//! - failures classified ([`TlsFailure`]): unknown issuer, name mismatch, expired, a client
//!   certificate required or refused, and "the server does not speak TLS" (the only case in
//!   which a registry may fall back to plain HTTP).
//!
//! Not for: revocation (neither docker nor containers/image checks it), native OS roots.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::{IntoUrl, Method, RequestBuilder};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::proxy::ProxyEnv;
use super::RegistryOptions;
use crate::error::{Error, Result};

/// Bytes of one certificate or key file hoist reads: a PEM bundle of every public root is
/// ~250 KiB; Go's `crypto/x509` has no bound, containers/image reads whole files.
pub const MAX_PEM_FILE: u64 = 4 << 20;

/// Entries of one certs directory hoist looks at (docker and containers/image read all).
pub const MAX_CERT_DIR_ENTRIES: usize = 1000;

/// The certs.d roots: `$HOIST_CERTS_D` (`:`-separated) when set, else containers' and
/// docker's system directories and the user's `~/.config/containers/certs.d`.
pub fn default_certs_d() -> Vec<PathBuf> {
    if let Some(v) = std::env::var_os("HOIST_CERTS_D") {
        return std::env::split_paths(&v).filter(|p| !p.as_os_str().is_empty()).collect();
    }
    let mut v = vec![PathBuf::from("/etc/containers/certs.d"), PathBuf::from("/etc/docker/certs.d")];
    if let Some(home) = std::env::var_os("HOME") {
        v.push(PathBuf::from(home).join(".config/containers/certs.d"));
    }
    v
}

/// What a certs directory holds: CA certificates and at most one client identity.
#[derive(Default)]
struct DirCerts {
    cas: Vec<(PathBuf, Vec<CertificateDer<'static>>)>,
    identity: Option<(PathBuf, Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
}

fn read_pem(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut buf = Vec::new();
    f.take(MAX_PEM_FILE + 1).read_to_end(&mut buf).map_err(|e| Error::io(path, e))?;
    if buf.len() as u64 > MAX_PEM_FILE {
        return Err(Error::malformed(
            "PEM file",
            path.display().to_string(),
            format!("larger than {MAX_PEM_FILE} bytes"),
        ));
    }
    Ok(buf)
}

/// The certificates of a PEM file (at least one).
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let pem = read_pem(path)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::malformed("certificate", path.display().to_string(), format!("{e:?}")))?;
    if certs.is_empty() {
        return Err(Error::malformed("certificate", path.display().to_string(), "no PEM certificate found"));
    }
    Ok(certs)
}

/// Read a certs directory the way docker and containers/image do: `*.crt` are CAs,
/// `NAME.cert` with `NAME.key` a client certificate (a `.cert` without its `.key`, or the
/// reverse, is an error). A missing directory holds nothing.
fn read_cert_dir(dir: &Path) -> Result<DirCerts> {
    let mut out = DirCerts::default();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io(dir, e)),
    };
    let mut names: Vec<String> = Vec::new();
    for entry in rd.take(MAX_CERT_DIR_ENTRIES) {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        if let Some(n) = entry.file_name().to_str() {
            names.push(n.to_string());
        }
    }
    names.sort();
    for name in &names {
        let path = dir.join(name);
        if name.ends_with(".crt") {
            out.cas.push((path.clone(), read_certs(&path)?));
        } else if let Some(base) = name.strip_suffix(".cert") {
            let key = format!("{base}.key");
            if !names.contains(&key) {
                return Err(Error::malformed(
                    "client certificate",
                    path.display().to_string(),
                    format!("missing key {key} for client certificate {name}"),
                ));
            }
            if out.identity.is_some() {
                tracing::warn!(dir = %dir.display(), name, "more than one client certificate; using the first");
                continue;
            }
            let chain = read_certs(&path)?;
            let key_path = dir.join(&key);
            let key = PrivateKeyDer::from_pem_slice(&read_pem(&key_path)?)
                .map_err(|e| Error::malformed("client key", key_path.display().to_string(), format!("{e:?}")))?;
            out.identity = Some((path, chain, key));
        } else if let Some(base) = name.strip_suffix(".key") {
            if !names.contains(&format!("{base}.cert")) {
                return Err(Error::malformed(
                    "client key",
                    dir.join(name).display().to_string(),
                    format!("missing client certificate {base}.cert for key {name}"),
                ));
            }
        }
    }
    Ok(out)
}

/// Everything that decides one registry host's TLS.
struct HostTls {
    /// Extra trusted certificates (also the pinned ones: see [`PinningVerifier`]).
    extra: Vec<CertificateDer<'static>>,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    verify: bool,
    /// Where the trust came from, for messages.
    sources: Vec<String>,
}

/// The TLS settings of `registry`: the global CA files and cert dirs, then its certs.d
/// directory in each root (`certs_d/REGISTRY`, `host:port` as written in references).
fn host_tls(opts: &RegistryOptions, registry: Option<&str>, verify: bool) -> Result<HostTls> {
    let mut t = HostTls { extra: vec![], identity: None, verify, sources: vec![] };
    for f in &opts.ca_files {
        t.extra.extend(read_certs(f)?);
        t.sources.push(f.display().to_string());
    }
    let mut dirs: Vec<PathBuf> = opts.cert_dirs.clone();
    if let Some(own) = registry.and_then(|r| opts.registry_tls.get(r)) {
        dirs.extend(own.cert_dirs.iter().cloned());
    }
    if let Some(r) = registry.filter(|r| is_safe_dir_name(r)) {
        dirs.extend(opts.certs_d.iter().map(|root| root.join(r)));
    }
    for d in dirs {
        let c = read_cert_dir(&d)?;
        for (p, certs) in c.cas {
            t.extra.extend(certs);
            t.sources.push(p.display().to_string());
        }
        if t.identity.is_none() {
            if let Some((p, chain, key)) = c.identity {
                tracing::debug!(client_cert = %p.display(), "client certificate");
                t.identity = Some((chain, key));
            }
        }
    }
    Ok(t)
}

/// A registry name usable as a directory name below a certs.d root (no `/`, no `..`).
fn is_safe_dir_name(r: &str) -> bool {
    !r.is_empty() && r != "." && r != ".." && !r.contains('/') && !r.contains('\0')
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls config for `t`, offering `h2` too when `http2`.
fn client_config(t: &HostTls, http2: bool) -> Result<rustls::ClientConfig> {
    let provider = provider();
    let verifier: Arc<dyn ServerCertVerifier> = if t.verify {
        let mut roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        for c in &t.extra {
            roots
                .add(c.clone())
                .map_err(|e| Error::malformed("CA certificate", t.sources.join(", "), e.to_string()))?;
        }
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| Error::tls("TLS verifier", e))?;
        Arc::new(PinningVerifier { inner, pinned: t.extra.clone() })
    } else {
        Arc::new(NoVerifier { provider: provider.clone() })
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::tls("TLS config", e))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match &t.identity {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain.clone(), key.clone_key())
            .map_err(|e| Error::tls("client certificate", e))?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = if http2 { vec![b"h2".to_vec(), b"http/1.1".to_vec()] } else { vec![b"http/1.1".to_vec()] };
    Ok(config)
}

/// webpki's verification, except that a certificate the user trusts byte for byte, served
/// as the server's own certificate, passes when it names the server (its dates were
/// checked before webpki got to the CA flag). That is the certificate
/// `openssl req -x509 -subj /CN=host` makes: CA:TRUE, its own issuer. Go (docker,
/// skopeo) accepts it; webpki refuses a CA as end entity.
#[derive(Debug)]
struct PinningVerifier {
    inner: Arc<WebPkiServerVerifier>,
    pinned: Vec<CertificateDer<'static>>,
}

impl ServerCertVerifier for PinningVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(o)))
                if format!("{o:?}").contains("CaUsedAsEndEntity")
                    && self.pinned.iter().any(|p| p.as_ref() == end_entity.as_ref()) =>
            {
                let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
                rustls::client::verify_server_name(&parsed, server_name)?;
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `--tls-verify=false` (and registries.conf `insecure`): any certificate, but the
/// handshake's signatures are still checked.
#[derive(Debug)]
struct NoVerifier {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for NoVerifier {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// One host's reqwest client and what its messages need to know.
#[derive(Clone)]
struct Entry {
    client: reqwest::Client,
    /// For blob bodies (ranged lanes, uploads): HTTP/1.1 always, so each transfer in flight
    /// has a TCP connection (and window) of its own; the same client as `client` unless
    /// `--http2`, whose streams would all share one connection.
    blob: reqwest::Client,
    has_identity: bool,
}

impl Entry {
    fn build(opts: &RegistryOptions, t: &HostTls, proxy: &ProxyEnv) -> Result<Entry> {
        let client = build_client(opts, t, proxy, opts.http2)?;
        let blob = if opts.http2 { build_client(opts, t, proxy, false)? } else { client.clone() };
        Ok(Entry { client, blob, has_identity: t.identity.is_some() })
    }
}

/// The reqwest clients of a registry [`super::Client`]: one per `host[:port]` it talks to,
/// each with that host's TLS; requests are made with the reqwest methods' names and pick
/// their client by the URL's host.
pub struct Clients {
    opts: RegistryOptions,
    proxy: ProxyEnv,
    /// The clients for URLs of hosts whose own client cannot be built (global CAs only).
    fallback: Entry,
    by_host: Mutex<HashMap<String, Entry>>,
}

/// The cache key of a URL's host (`host:port`, the scheme's port when none is given) and
/// its certs.d directory name (`host[:port]` as written in references: no default port).
fn url_key(url: &str) -> Option<(String, String)> {
    let u = url::Url::parse(url).ok()?;
    let host = u.host_str()?.to_ascii_lowercase();
    let port = u.port_or_known_default()?;
    let dir = match u.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.clone(),
    };
    Some((format!("{host}:{port}"), dir))
}

/// The cache keys a registry served at `api` (`host[:port]`) is reached under: its port, or
/// both default ports when it names none (HTTPS first, plain HTTP after a fallback).
fn api_keys(api: &str) -> Vec<String> {
    match url::Url::parse(&format!("https://{api}/")) {
        Ok(u) => {
            let host = u.host_str().unwrap_or(api).to_ascii_lowercase();
            match u.port() {
                Some(p) => vec![format!("{host}:{p}")],
                None => vec![format!("{host}:443"), format!("{host}:80")],
            }
        }
        Err(_) => vec![api.to_ascii_lowercase()],
    }
}

impl Clients {
    /// The clients for `opts` (reads the global CA files, so a bad one fails here).
    pub(super) fn new(opts: &RegistryOptions) -> Result<Clients> {
        let proxy = ProxyEnv::from_env();
        let t = host_tls(opts, None, opts.tls_verify)?;
        let fallback = Entry::build(opts, &t, &proxy)?;
        Ok(Clients { opts: opts.clone(), proxy, fallback, by_host: Mutex::new(HashMap::new()) })
    }

    /// Build (once) the client of `registry`, served at `api` (`host[:port]`), with TLS
    /// verification unless `verify` is false. Errors name bad certificate files.
    pub(super) fn prepare(&self, registry: &str, api: &str, verify: bool) -> Result<()> {
        let keys = api_keys(api);
        if self.by_host.lock().map(|m| keys.iter().all(|k| m.contains_key(k))).unwrap_or(false) {
            return Ok(());
        }
        let t = host_tls(&self.opts, Some(registry), verify)?;
        let entry = Entry::build(&self.opts, &t, &self.proxy)?;
        if let Ok(mut m) = self.by_host.lock() {
            for k in keys {
                m.entry(k).or_insert_with(|| entry.clone());
            }
        }
        Ok(())
    }

    /// Whether the client of the registry served at `api` offers a client certificate.
    pub(super) fn has_identity(&self, api: &str) -> bool {
        let keys = api_keys(api);
        self.by_host
            .lock()
            .ok()
            .and_then(|m| keys.iter().find_map(|k| m.get(k).map(|e| e.has_identity)))
            .unwrap_or(false)
    }

    fn for_url(&self, url: &str) -> reqwest::Client {
        self.entry_for(url).client
    }

    fn entry_for(&self, url: &str) -> Entry {
        let Some((key, dir)) = url_key(url) else { return self.fallback.clone() };
        if let Some(e) = self.by_host.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return e;
        }
        // A host the client did not ping (a token realm, a redirect): its certs.d too.
        match host_tls(&self.opts, Some(&dir), self.opts.tls_verify)
            .and_then(|t| Entry::build(&self.opts, &t, &self.proxy))
        {
            Ok(e) => {
                if let Ok(mut m) = self.by_host.lock() {
                    m.entry(key).or_insert(e.clone());
                }
                e
            }
            Err(err) => {
                tracing::warn!(host = %key, error = %err, "TLS settings unusable; using the global ones");
                self.fallback.clone()
            }
        }
    }

    /// A request carrying a blob body (a ranged lane, a blob GET, an upload's PUT or
    /// PATCH): over HTTP/1.1 even with `--http2`, so that every blob transfer in flight
    /// gets a connection of its own instead of sharing one h2 connection's window.
    pub fn blob_request<U: IntoUrl + AsRef<str>>(&self, method: Method, url: U) -> RequestBuilder {
        self.entry_for(url.as_ref()).blob.request(method, url)
    }

    /// `reqwest::Client::request` on the client of `url`'s host.
    pub fn request<U: IntoUrl + AsRef<str>>(&self, method: Method, url: U) -> RequestBuilder {
        self.for_url(url.as_ref()).request(method, url)
    }
    /// `GET url`.
    pub fn get<U: IntoUrl + AsRef<str>>(&self, url: U) -> RequestBuilder {
        self.for_url(url.as_ref()).get(url)
    }
    /// `POST url`.
    pub fn post<U: IntoUrl + AsRef<str>>(&self, url: U) -> RequestBuilder {
        self.for_url(url.as_ref()).post(url)
    }
    /// `PUT url`.
    pub fn put<U: IntoUrl + AsRef<str>>(&self, url: U) -> RequestBuilder {
        self.for_url(url.as_ref()).put(url)
    }
}

/// The reqwest client for one host: rustls with `t`, the proxy settings, HTTP/1.1 unless
/// asked for h2.
fn build_client(opts: &RegistryOptions, t: &HostTls, proxy: &ProxyEnv, http2: bool) -> Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .use_preconfigured_tls(client_config(t, http2)?)
        .user_agent(concat!("hoist/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(30))
        .read_timeout(opts.read_timeout)
        .pool_idle_timeout(Duration::from_secs(30))
        .tcp_nodelay(true)
        .no_proxy();
    if proxy.is_set() {
        let p = proxy.clone();
        b = b.proxy(reqwest::Proxy::custom(move |url| p.proxy_for(url)));
    }
    // HTTP/1.1 unless asked: every blob in flight then has its own TCP connection and
    // window. Over one h2 connection, parallel blobs share one congestion window and
    // hyper's flow-control windows (2 MiB a stream, 5 MiB in all: at 50 ms RTT, 100 MB/s
    // for everything), and against distribution over TLS a 1 GiB pull took 3.4 s on h2
    // and 2.4 s on HTTP/1.1 (bench/NOTES.md).
    // With `--http2`, blob bodies still go over HTTP/1.1 (`Entry::blob`).
    b = if http2 { b.http2_adaptive_window(true) } else { b.http1_only() };
    b.build().map_err(|e| Error::http("HTTP client", e))
}

/// What kind of TLS failure an error is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsFailure {
    /// The server answered the TLS hello with something that is not TLS (a plain-HTTP
    /// server), or hung up on it: the only case a registry may be retried over plain HTTP.
    NotTls,
    /// The certificate's issuer is not trusted (or it is a self-signed certificate that is
    /// not trusted as is).
    UnknownIssuer,
    /// The certificate does not name the host.
    NameMismatch,
    /// The certificate has expired.
    Expired,
    /// The certificate is not valid yet.
    NotYetValid,
    /// The server wants a client certificate and got none.
    ClientCertRequired,
    /// The server refused the client certificate offered.
    ClientCertRefused,
    /// Another TLS failure, described.
    Other(String),
}

/// The TLS failure in `e`'s chain of causes, if any.
pub fn classify(e: &(dyn std::error::Error + 'static), has_identity: bool) -> Option<TlsFailure> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut eof = false;
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<rustls::Error>() {
            return Some(from_rustls(t, has_identity));
        }
        cur = match err.downcast_ref::<std::io::Error>() {
            Some(io) => {
                if io.kind() == std::io::ErrorKind::UnexpectedEof && io.to_string().contains("tls handshake") {
                    eof = true;
                }
                // an io::Error's source() skips the error it wraps (hyper-rustls wraps
                // tokio-rustls's io::Error, which wraps the rustls::Error): go through get_ref
                match io.get_ref() {
                    Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
                    None => None,
                }
            }
            None => err.source(),
        };
    }
    eof.then_some(TlsFailure::NotTls)
}

fn from_rustls(e: &rustls::Error, has_identity: bool) -> TlsFailure {
    use rustls::AlertDescription as A;
    use rustls::Error as E;
    match e {
        E::InvalidMessage(_) | E::InappropriateMessage { .. } | E::InappropriateHandshakeMessage { .. } => {
            TlsFailure::NotTls
        }
        E::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => TlsFailure::UnknownIssuer,
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                TlsFailure::NameMismatch
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => TlsFailure::Expired,
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => TlsFailure::NotYetValid,
            // a self-signed CA certificate served as the server's own, not trusted as is
            CertificateError::Other(o) if format!("{o:?}").contains("CaUsedAsEndEntity") => TlsFailure::UnknownIssuer,
            other => TlsFailure::Other(format!("invalid certificate: {other:?}")),
        },
        E::AlertReceived(A::CertificateRequired) => TlsFailure::ClientCertRequired,
        E::AlertReceived(A::HandshakeFailure | A::BadCertificate | A::UnknownCA | A::CertificateUnknown)
            if !has_identity =>
        {
            TlsFailure::ClientCertRequired
        }
        E::AlertReceived(
            A::BadCertificate
            | A::UnknownCA
            | A::CertificateUnknown
            | A::CertificateExpired
            | A::CertificateRevoked
            | A::UnsupportedCertificate
            | A::AccessDenied
            | A::HandshakeFailure,
        ) => TlsFailure::ClientCertRefused,
        other => TlsFailure::Other(other.to_string()),
    }
}

impl TlsFailure {
    /// The message for this failure at `registry`: what went wrong and what to do.
    pub fn message(&self, registry: &str) -> String {
        let trust = format!(
            "trust its CA with --ca-file FILE or a certs.d directory (/etc/containers/certs.d/{registry}/ca.crt, \
             /etc/docker/certs.d/{registry}/ca.crt, --cert-dir DIR), or skip verification with --tls-verify=false"
        );
        match self {
            TlsFailure::NotTls => "TLS handshake failed: the server does not speak TLS (a plain-HTTP registry? \
                                   allow it with --insecure-registry)"
                .to_string(),
            TlsFailure::UnknownIssuer => {
                format!("TLS: certificate signed by an unknown authority (unknown issuer); {trust}")
            }
            TlsFailure::NameMismatch => {
                format!("TLS: certificate is not valid for the name {registry} (name mismatch); {trust}")
            }
            TlsFailure::Expired => format!("TLS: certificate has expired; renew it on the registry, or {trust}"),
            TlsFailure::NotYetValid => format!("TLS: certificate is not valid yet (check the clock); {trust}"),
            TlsFailure::ClientCertRequired => format!(
                "TLS: the registry requires a client certificate (mutual TLS): put client.cert and client.key in \
                 /etc/containers/certs.d/{registry}/ or /etc/docker/certs.d/{registry}/ (or --cert-dir DIR)"
            ),
            TlsFailure::ClientCertRefused => {
                "TLS: the registry refused the client certificate (client.cert/client.key of its certs.d directory)"
                    .to_string()
            }
            TlsFailure::Other(s) => format!("TLS: {s}; {trust}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cert_dir_pairs_cert_and_key() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("client.cert"), "x").unwrap();
        let err = read_cert_dir(d.path()).err().unwrap().to_string();
        assert!(err.contains("missing key client.key"), "{err}");
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("client.key"), "x").unwrap();
        let err = read_cert_dir(d.path()).err().unwrap().to_string();
        assert!(err.contains("missing client certificate client.cert"), "{err}");
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("ca.crt"), "not pem").unwrap();
        let err = read_cert_dir(d.path()).err().unwrap().to_string();
        assert!(err.contains("no PEM certificate"), "{err}");
        assert!(read_cert_dir(&d.path().join("missing")).unwrap().cas.is_empty());
    }

    #[test]
    fn certs_d_names_are_plain_directory_names() {
        assert!(is_safe_dir_name("localhost:5000"));
        assert!(is_safe_dir_name("[::1]:5000"));
        for bad in ["", ".", "..", "a/b", "../etc"] {
            assert!(!is_safe_dir_name(bad), "{bad}");
        }
    }

    #[test]
    fn classifies_rustls_errors() {
        // wrapped twice, as hyper-rustls hands it on
        let io = |e: rustls::Error| std::io::Error::other(std::io::Error::new(std::io::ErrorKind::InvalidData, e));
        let c = |e: rustls::Error, id| classify(&io(e), id);
        assert_eq!(
            c(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer), false),
            Some(TlsFailure::UnknownIssuer)
        );
        assert_eq!(c(rustls::Error::InvalidCertificate(CertificateError::Expired), false), Some(TlsFailure::Expired));
        assert_eq!(
            c(rustls::Error::InvalidCertificate(CertificateError::NotValidForName), false),
            Some(TlsFailure::NameMismatch)
        );
        assert_eq!(
            c(rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType), false),
            Some(TlsFailure::NotTls)
        );
        let alert = rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired);
        assert_eq!(c(alert, false), Some(TlsFailure::ClientCertRequired));
        let bad = || rustls::Error::AlertReceived(rustls::AlertDescription::BadCertificate);
        assert_eq!(c(bad(), false), Some(TlsFailure::ClientCertRequired));
        assert_eq!(c(bad(), true), Some(TlsFailure::ClientCertRefused));
        let plain = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(classify(&plain, false), None);
    }

    #[test]
    fn hosts_of_urls_and_registries() {
        let k = |u: &str| url_key(u).unwrap();
        assert_eq!(k("https://127.0.0.1:5000/v2/"), ("127.0.0.1:5000".into(), "127.0.0.1:5000".into()));
        assert_eq!(k("https://Reg.Example/v2/"), ("reg.example:443".into(), "reg.example".into()));
        assert_eq!(k("http://reg.example/v2/"), ("reg.example:80".into(), "reg.example".into()));
        assert_eq!(k("http://[::1]:5000/x"), ("[::1]:5000".into(), "[::1]:5000".into()));
        assert_eq!(api_keys("127.0.0.1:5000"), vec!["127.0.0.1:5000"]);
        assert_eq!(api_keys("Reg.example"), vec!["reg.example:443", "reg.example:80"]);
    }
}
