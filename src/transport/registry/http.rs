//! HTTP for the registry client: the ping that picks the scheme and
//! learns the challenge, sending one request with auth and retries, and reading response
//! bodies within the limit of their kind.

use std::collections::HashSet;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use reqwest::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::{Method, RequestBuilder, Response, StatusCode};

use super::challenge::{parse_challenge, Challenge};
use super::retry::{retriable_status, retry_after, RetryState};
use super::tls::{classify, TlsFailure};
use super::{Client, Host};
use crate::error::{Error, Result};

/// Whether `host` (`name[:port]`, `[v6]:port`) is a loopback registry, which may fall back
/// to plain HTTP: exactly `localhost`, or an IP address in 127.0.0.0/8 or `::1`, judged on
/// the parsed address, so that a name such as `127.0.0.1.example.com` is not loopback.
pub fn is_loopback(host: &str) -> bool {
    let Some((h, _)) = split_host_port(host) else { return false };
    if h.eq_ignore_ascii_case("localhost") {
        return true;
    }
    h.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `host[:port]` (`[v6]:port`, a bare v6 address) as host and port; `None` when malformed.
fn split_host_port(host: &str) -> Option<(&str, Option<&str>)> {
    Some(match host.strip_prefix('[') {
        // `[v6]` or `[v6]:port`
        Some(rest) => match rest.split_once(']') {
            Some((ip, "")) => (ip, None),
            Some((ip, port)) => match port.strip_prefix(':') {
                Some(p) if is_port(p) => (ip, Some(p)),
                _ => return None,
            },
            None => return None,
        },
        None => match host.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') && is_port(p) => (h, Some(p)),
            Some(_) if host.contains("::") || host.matches(':').count() > 1 => (host, None),
            Some(_) => return None,
            None => (host, None),
        },
    })
}

/// Whether the `--insecure-registry` value `pattern` covers `registry`: `host` matches that
/// host on any port, `host:port` that port only (host names compared case-insensitively).
pub fn insecure_matches(pattern: &str, registry: &str) -> bool {
    let (Some((ph, pp)), Some((rh, rp))) = (split_host_port(pattern.trim()), split_host_port(registry)) else {
        return false;
    };
    ph.eq_ignore_ascii_case(rh) && (pp.is_none() || pp == rp)
}

fn is_port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.chars().all(|c| c.is_ascii_digit())
}

/// Whether a connection reset is among `e`'s causes.
fn is_reset(e: &reqwest::Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionReset {
                return true;
            }
            cur = io.get_ref().map(|inner| inner as &(dyn std::error::Error + 'static));
        } else {
            cur = err.source();
        }
    }
    false
}

/// The host name the API of `registry` is served at (Docker Hub's differs from its name).
pub(super) fn api_host(registry: &str) -> &str {
    if registry == crate::model::reference::DEFAULT_REGISTRY {
        "registry-1.docker.io"
    } else {
        registry
    }
}

/// A reqwest error as a network error naming `registry` (never the URL); a TLS failure
/// says which, and what to do about it.
pub(super) fn net_err(registry: &str, e: &reqwest::Error) -> Error {
    net_err_tls(registry, e, false)
}

/// [`net_err`], knowing whether a client certificate was offered (`has_identity`).
pub(super) fn net_err_tls(registry: &str, e: &reqwest::Error, has_identity: bool) -> Error {
    if let Some(f) = classify(e, has_identity) {
        return Error::Network { registry: registry.to_string(), reason: f.message(registry) };
    }
    // reqwest errors carry the URL; ours never holds credentials, but strip it anyway.
    let mut msg = e.without_url_ref().to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    Error::Network { registry: registry.to_string(), reason: msg }
}

/// What kind of failure a reqwest error is, without its URL.
pub(super) trait WithoutUrl {
    /// "connection failed", "timed out", ...
    fn without_url_ref(&self) -> String;
}
impl WithoutUrl for reqwest::Error {
    fn without_url_ref(&self) -> String {
        let kind = if self.is_connect() {
            "connection failed"
        } else if self.is_timeout() {
            "timed out"
        } else if self.is_body() {
            "body transfer failed"
        } else if self.is_request() {
            "request failed"
        } else if self.is_decode() {
            "bad response body"
        } else {
            "HTTP error"
        };
        kind.to_string()
    }
}

impl Client {
    /// Ping `registry`: the base URL of the scheme that answered, and its challenge.
    ///
    /// HTTPS first, except for `--plain-http` and `--insecure-registry` hosts. A loopback
    /// registry (or one registries.conf calls `insecure`) falls back to plain HTTP only when
    /// the TLS handshake shows that the server does not speak TLS at all (or, for a name
    /// without a port, when nothing listens on 443): a certificate problem is reported as
    /// such, never as the `400` a TLS server answers plain HTTP with.
    pub(super) async fn ping(&self, registry: &str) -> Result<(String, Challenge)> {
        let api = api_host(registry);
        let plain = self.opts.plain_http || self.opts.insecure.iter().any(|i| insecure_matches(i, registry));
        let conf_insecure = self.opts.registries.is_insecure(registry);
        let verify = self.opts.registry_tls.get(registry).and_then(|t| t.verify).unwrap_or(self.opts.tls_verify);
        self.http.prepare(registry, api, verify && !conf_insecure)?;
        let has_identity = self.http.has_identity(api);
        let schemes: &[&str] = if plain {
            &["http"]
        } else if is_loopback(registry) || conf_insecure {
            &["https", "http"]
        } else {
            &["https"]
        };
        for (i, scheme) in schemes.iter().enumerate() {
            let base = format!("{scheme}://{api}");
            // The ping is retried like any request (a 503 or a dropped connection on the first
            // request must not end the run), but only when the scheme answered at all, and
            // never after a TLS failure (it will not change).
            let mut retry = RetryState::new(&self.opts.retry);
            let ping = loop {
                let res = self.http.get(format!("{base}/v2/")).send().await;
                let hint = match &res {
                    Ok(r) if retriable_status(r.status()) => retry_after(r.headers()),
                    Err(e) if classify(e, has_identity).is_some() => break res,
                    Err(e) if e.is_timeout() || (e.is_request() && !e.is_connect()) => None,
                    _ => break res,
                };
                let Some(wait) = retry.failed(hint) else { break res };
                tracing::info!(registry, ?wait, "ping failed; retrying");
                tokio::time::sleep(wait).await;
            };
            match ping {
                Ok(resp) => {
                    let status = resp.status();
                    let challenge = if status == StatusCode::UNAUTHORIZED {
                        resp.headers()
                            .get(WWW_AUTHENTICATE)
                            .and_then(|v| v.to_str().ok())
                            .map(parse_challenge)
                            .unwrap_or(Challenge::None)
                    } else {
                        Challenge::None
                    };
                    if !(status.is_success() || status == StatusCode::UNAUTHORIZED || status == StatusCode::NOT_FOUND) {
                        return Err(Error::Registry {
                            registry: registry.to_string(),
                            method: "GET".into(),
                            path: "/v2/".into(),
                            status: status.as_u16(),
                            detail: String::new(),
                        });
                    }
                    return Ok((base, challenge));
                }
                Err(e) => {
                    let tls = classify(&e, has_identity);
                    // Without a port, HTTPS (443) and HTTP (80) are different ports: nothing
                    // listening on 443 says nothing about 80.
                    let other_port =
                        tls.is_none() && e.is_connect() && split_host_port(api).is_some_and(|(_, p)| p.is_none());
                    // A server that resets the connection on a TLS hello is no TLS server either.
                    let reset = tls.is_none() && e.is_connect() && is_reset(&e);
                    let fallback = i + 1 < schemes.len() && (tls == Some(TlsFailure::NotTls) || other_port || reset);
                    if !fallback {
                        return Err(net_err_tls(registry, &e, has_identity));
                    }
                    tracing::debug!(registry, "the server does not speak TLS; trying plain HTTP");
                }
            }
        }
        Err(Error::Network { registry: registry.to_string(), reason: "unreachable".into() })
    }

    /// Send a request built by `mk` (called again for each attempt), with auth, one
    /// token refresh on 401, and retries on connection errors, 408, 429 and 5xx.
    pub(super) async fn send(
        &self,
        host: &Host,
        scopes: &[String],
        method: &Method,
        path: &str,
        mk: &(dyn Fn() -> RequestBuilder + Send + Sync),
    ) -> Result<Response> {
        let mut retry = RetryState::new(&self.opts.retry);
        let mut refreshed = false;
        loop {
            let mut req = mk();
            let auth = self.authorization(host, scopes, None).await?;
            if let Some(a) = &auth {
                req = req.header(AUTHORIZATION, a);
            }
            match req.send().await {
                Ok(resp) => {
                    super::profiles::log_rate_limit(&host.name, resp.headers());
                    if let Some(r) = super::profiles::RateLimit::from_headers(resp.headers()) {
                        if let Ok(mut slot) = host.rate_limit.lock() {
                            *slot = Some(r);
                        }
                    }
                    let status = resp.status();
                    if status == StatusCode::UNAUTHORIZED {
                        // One more try: a bearer token may have expired (fetch a new one, or
                        // take the one a concurrent request fetched), and a proxy or a registry
                        // restarting may answer one spurious 401 even to good basic
                        // credentials. A second 401 in a row is final.
                        if !refreshed {
                            refreshed = true;
                            if matches!(host.challenge, Challenge::Bearer { .. }) {
                                self.authorization(host, scopes, auth.as_deref()).await?;
                            }
                            tracing::info!(registry = %host.name, %method, path, "401; trying once more");
                            continue;
                        }
                        let reason = match &host.credential {
                            Some(_) => "401 Unauthorized: the registry rejected the credentials".to_string(),
                            None => {
                                "401 Unauthorized: credentials required; run `hoist login` or pass --creds".to_string()
                            }
                        };
                        return Err(Error::Auth { registry: host.name.clone(), reason });
                    }
                    if retriable_status(status) {
                        if let Some(wait) = retry.failed(retry_after(resp.headers())) {
                            tracing::info!(registry = %host.name, %method, path, %status, ?wait, "retrying");
                            tokio::time::sleep(wait).await;
                            continue;
                        }
                    }
                    return Ok(resp);
                }
                Err(e) if is_certificate_failure(&e) => {
                    let id = self.http.has_identity(api_host(&host.name));
                    return Err(net_err_tls(&host.name, &e, id));
                }
                Err(e) if is_transient(&e) => {
                    let Some(wait) = retry.failed(None) else {
                        return Err(net_err(&host.name, &e));
                    };
                    tracing::info!(registry = %host.name, %method, path, error = %e.without_url_ref(), ?wait, "retrying");
                    tokio::time::sleep(wait).await;
                }
                Err(e) => return Err(net_err(&host.name, &e)),
            }
        }
    }
}

/// A certificate problem, which will not change on another attempt (a handshake cut short,
/// as by a server restarting, is no certificate problem: it is retried).
fn is_certificate_failure(e: &reqwest::Error) -> bool {
    classify(e, false).is_some_and(|f| f != TlsFailure::NotTls)
}

/// A failure another attempt may not meet: the connection, a timeout, the request or its body.
fn is_transient(e: &reqwest::Error) -> bool {
    e.is_connect() || e.is_timeout() || e.is_request() || e.is_body()
}

/// The answer to [`Client::get_url`].
pub struct UrlResponse {
    /// The status (redirects followed).
    pub status: StatusCode,
    /// The headers.
    pub headers: reqwest::header::HeaderMap,
    /// The body; a stall (less than [`MIN_RATE`] over the read timeout) ends it with an error.
    pub body: BodyStream,
}

impl UrlResponse {
    /// The whole body, at most `limit` bytes (`what` from `site` in errors): refused by its
    /// `Content-Length` before a byte is read, or as soon as it runs over (the Hugging Face
    /// hub's API answers and small files).
    pub async fn read_limited(self, limit: u64, what: &str, site: &str) -> Result<Bytes> {
        let too_large = || Error::malformed(what, site, format!("larger than {limit} bytes"));
        let length = self.headers.get(reqwest::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok());
        if length.and_then(|n| n.parse::<u64>().ok()).is_some_and(|n| n > limit) {
            return Err(too_large());
        }
        match collect_limited(self.body, limit).await {
            Ok(b) => Ok(b),
            Err(ReadError::TooLarge) => Err(too_large()),
            Err(ReadError::Failed(e)) => Err(e),
        }
    }
}

impl Client {
    /// GET `url` outside any registry API (a Dockerfile's `ADD <url>`, a remote build
    /// context) with `headers`: the same reqwest client a registry on that host gets (CA
    /// files, certs.d of the host, proxy rules, read timeout), redirects followed, retried as
    /// registry requests are (connection errors, 408, 429, 5xx). No credentials are sent.
    /// Errors name the URL's host.
    pub async fn get_url(&self, url: &str, headers: &[(&str, String)]) -> Result<UrlResponse> {
        let host = url::Url::parse(url).ok().and_then(|u| u.host_str().map(str::to_string)).unwrap_or_default();
        let mut retry = RetryState::new(&self.opts.retry);
        loop {
            let mut req = self.http.blob_request(Method::GET, url);
            for (k, v) in headers {
                req = req.header(*k, v);
            }
            match req.send().await {
                Ok(resp) => {
                    if retriable_status(resp.status()) {
                        if let Some(wait) = retry.failed(retry_after(resp.headers())) {
                            tracing::info!(%host, status = %resp.status(), ?wait, "retrying");
                            tokio::time::sleep(wait).await;
                            continue;
                        }
                    }
                    let (status, headers) = (resp.status(), resp.headers().clone());
                    let body = body_stream(resp, &host, self.opts.read_timeout);
                    return Ok(UrlResponse { status, headers, body });
                }
                Err(e) if is_certificate_failure(&e) => return Err(net_err(&host, &e)),
                Err(e) if is_transient(&e) => {
                    let Some(wait) = retry.failed(None) else { return Err(net_err(&host, &e)) };
                    tracing::info!(%host, error = %e.without_url_ref(), ?wait, "retrying");
                    tokio::time::sleep(wait).await;
                }
                Err(e) => return Err(net_err(&host, &e)),
            }
        }
    }
}

/// The path (below `/v2/<repo>/`) of the next page a paginated answer links to with
/// `Link: <…>; rel="next"` (tags list, referrers API).
pub(super) fn next_page(resp: &Response, repo: &str) -> Option<String> {
    next_page_of_link(resp.headers().get("link").and_then(|v| v.to_str().ok())?, repo)
}

/// The path below `/v2/<repo>/` that a `Link` header value names with `rel="next"`, if any
/// (pure: what `next_page` reads, and what the fuzz target `link` feeds).
pub fn next_page_of_link(link: &str, repo: &str) -> Option<String> {
    let target = link_next_target(link)?;
    target.split_once(&format!("/v2/{repo}/")).map(|(_, p)| p.to_string())
}

/// The target (`<…>`) of the `rel="next"` entry of a `Link` header value, as written.
pub fn link_next_target(link: &str) -> Option<&str> {
    let next = link.split(',').find(|part| part.contains("rel=\"next\"") || part.contains("rel=next"))?;
    let (open, close) = (next.find('<')?, next.find('>')?);
    next.get(open + 1..close)
}

/// Bytes of a token server's answer hoist reads before calling it malformed: a token is a
/// few KiB. containers/image uses the same bound (`iolimits.MaxAuthTokenBodySize`, 1 MiB).
pub const MAX_TOKEN_BODY: u64 = 1 << 20;

/// Bytes of one page of a tag list. With `n=1000` a page is far below this; regclient and
/// containers/image bound such documents at a few MiB too (containers/image: 4 MiB for
/// manifests, hoist's [`crate::model::media::MAX_MANIFEST_SIZE`]).
pub const MAX_TAG_PAGE: u64 = 8 << 20;

/// Pages of a tag list hoist follows (at `n=1000` a page, a million tags).
pub const MAX_TAG_PAGES: usize = 1000;

/// The slowest a body may arrive: less than this many bytes a second over a whole
/// `read_timeout` window counts as a stall, like no bytes at all (a trickle of one byte a
/// second would otherwise keep a transfer alive for days).
pub const MIN_RATE: u64 = 1024;

/// A response body as a stream of chunks, each error a network error naming `registry`,
/// and a stall when less than [`MIN_RATE`] bytes a second arrive over `window`.
pub(super) fn body_stream(resp: Response, registry: &str, window: Duration) -> BodyStream {
    let reg = registry.to_string();
    let inner = resp.bytes_stream().map(move |r| r.map_err(|e| net_err(&reg, &e))).boxed();
    MinRate::new(inner, registry, window).boxed()
}

/// The chunks of a response body.
pub type BodyStream = futures::stream::BoxStream<'static, Result<Bytes>>;

/// A body that must bring at least [`MIN_RATE`] bytes a second: a body that has spent
/// `window` waiting for data without bringing `MIN_RATE * window` bytes ends with an error
/// (the caller retries, as after a silent stall). Only time spent waiting on the network
/// counts, never time the reader spent elsewhere (a destination that pauses between
/// chunks does not turn its source's body into a stall).
struct MinRate {
    inner: BodyStream,
    registry: String,
    window: Duration,
    /// Bytes a window must bring.
    need: u64,
    /// Bytes this window brought so far.
    got: u64,
    /// Time this window spent waiting for data, up to the last chunk.
    waited: Duration,
    /// Since when the reader has been waiting (the body answered `Pending`).
    waiting_since: Option<tokio::time::Instant>,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl MinRate {
    fn new(inner: BodyStream, registry: &str, window: Duration) -> MinRate {
        let window = window.max(Duration::from_millis(100));
        let need = ((MIN_RATE as f64) * window.as_secs_f64()).ceil() as u64;
        MinRate {
            inner,
            registry: registry.to_string(),
            window,
            need,
            got: 0,
            waited: Duration::ZERO,
            waiting_since: None,
            deadline: Box::pin(tokio::time::sleep(window)),
        }
    }

    fn stalled(&self) -> Error {
        Error::Network {
            registry: self.registry.clone(),
            reason: format!(
                "transfer stalled: {} bytes in {:?} of waiting, less than the minimum of {MIN_RATE} bytes/s",
                self.got, self.window
            ),
        }
    }
}

impl Stream for MinRate {
    type Item = Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        match this.inner.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                if let Some(since) = this.waiting_since.take() {
                    this.waited += since.elapsed();
                }
                this.got += chunk.len() as u64;
                if this.got >= this.need {
                    // this window is satisfied: the next starts now
                    this.got = 0;
                    this.waited = Duration::ZERO;
                } else if this.waited >= this.window {
                    return Poll::Ready(Some(Err(this.stalled())));
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(other) => Poll::Ready(other),
            Poll::Pending => {
                let now = tokio::time::Instant::now();
                let since = *this.waiting_since.get_or_insert(now);
                let at = since + this.window.saturating_sub(this.waited);
                if now >= at {
                    return Poll::Ready(Some(Err(this.stalled())));
                }
                if this.deadline.deadline() != at {
                    this.deadline.as_mut().reset(at);
                }
                match std::future::Future::poll(this.deadline.as_mut(), cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(this.stalled()))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

/// Why [`read_limited`] failed.
pub(super) enum ReadError {
    /// The body is longer than the limit (said by `Content-Length`, or found reading).
    TooLarge,
    /// The body broke or stalled.
    Failed(Error),
}

/// Read a whole body of at most `limit` bytes (within [`MIN_RATE`] over `window`).
pub(super) async fn read_limited(
    resp: Response,
    limit: u64,
    registry: &str,
    window: Duration,
) -> std::result::Result<Bytes, ReadError> {
    if resp.content_length().is_some_and(|n| n > limit) {
        return Err(ReadError::TooLarge);
    }
    collect_limited(body_stream(resp, registry, window), limit).await
}

/// The chunks of `stream` in one buffer, at most `limit` bytes.
async fn collect_limited(mut stream: BodyStream, limit: u64) -> std::result::Result<Bytes, ReadError> {
    let mut body = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(ReadError::Failed)?;
        if body.len() as u64 + chunk.len() as u64 > limit {
            return Err(ReadError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(body))
}

/// The pages of a paginated answer followed so far (tags list, referrers API): refuses a
/// page seen before (a cyclic `Link`) and more than a bound of pages.
pub(super) struct Pages {
    seen: HashSet<String>,
    max: usize,
}

impl Pages {
    /// Pagination starting at `first`, of at most `max` pages.
    pub(super) fn new(first: &str, max: usize) -> Pages {
        Pages { seen: HashSet::from([first.to_string()]), max }
    }

    /// Whether `next` may be fetched: `Err(reason)` when it was seen already or the pages
    /// are spent.
    pub(super) fn follow(&mut self, next: &str) -> std::result::Result<(), String> {
        if self.seen.len() >= self.max {
            return Err(format!("more than {} pages", self.max));
        }
        if !self.seen.insert(next.to_string()) {
            return Err(format!("pagination links back to a page already read ({})", crate::error::printable(next)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_judged_on_the_address() {
        for h in
            ["localhost", "LOCALHOST:5000", "127.0.0.1", "127.0.0.1:5000", "127.8.9.10:1", "[::1]", "[::1]:5000", "::1"]
        {
            assert!(is_loopback(h), "{h}");
        }
        for h in [
            "127.evil.com",
            "127.0.0.1.nip.io:5000",
            "localhost.evil.com",
            "10.0.0.1:5000",
            "[::2]:5000",
            "[::1]x",
            "registry.example.com",
            "127.0.0.1:99999999",
        ] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    #[test]
    fn insecure_registry_host_is_any_port_host_port_one_port() {
        assert!(insecure_matches("reg.example", "reg.example"));
        assert!(insecure_matches("reg.example", "reg.example:5000"));
        assert!(insecure_matches("REG.example", "reg.example:5001"));
        assert!(insecure_matches("reg.example:5000", "reg.example:5000"));
        assert!(!insecure_matches("reg.example:5000", "reg.example:5001"));
        assert!(!insecure_matches("reg.example:5000", "reg.example"));
        assert!(!insecure_matches("reg.example", "other.example:5000"));
        assert!(!insecure_matches("reg.example", "reg.example.evil:5000"));
        assert!(insecure_matches("[::1]", "[::1]:5000"));
        assert!(!insecure_matches("[::1]:5000", "[::1]:5001"));
    }

    #[tokio::test]
    async fn min_rate_counts_only_time_spent_waiting() {
        // a body that is read late (the reader was busy) but arrives at once: no stall
        let fast: BodyStream = futures::stream::iter(vec![Ok(Bytes::from_static(b"abc"))]).boxed();
        let mut s = MinRate::new(fast, "r", Duration::from_millis(200));
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(s.next().await.unwrap().unwrap(), Bytes::from_static(b"abc"));
        assert!(s.next().await.is_none());
        // one byte every 100 ms (5 bytes/s in a 200 ms window): a stall once 200 ms were spent waiting
        let trickle: BodyStream = futures::stream::unfold(0u32, |n| async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Some((Ok(Bytes::from_static(b"x")), n + 1))
        })
        .boxed();
        let mut s = MinRate::new(trickle, "reg.example", Duration::from_millis(200));
        let mut bytes = 0;
        let err = loop {
            match s.next().await.unwrap() {
                Ok(b) => bytes += b.len(),
                Err(e) => break e,
            }
        };
        assert!(bytes <= 3, "{bytes}");
        assert!(err.to_string().contains("reg.example") && err.to_string().contains("stalled"), "{err}");
    }

    #[test]
    fn pages_refuse_cycles_and_bound_count() {
        let mut p = Pages::new("tags/list?n=1", 3);
        assert!(p.follow("tags/list?last=a").is_ok());
        assert!(p.follow("tags/list?n=1").is_err());
        assert!(p.follow("tags/list?last=b").is_ok());
        assert!(p.follow("tags/list?last=c").unwrap_err().contains("more than 3 pages"));
    }
}
