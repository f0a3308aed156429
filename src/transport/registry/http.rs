//! HTTP for the registry client: the reqwest client, the ping that picks the scheme and
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

use super::auth::{parse_challenge, Challenge};
use super::retry::{retriable_status, retry_after, RetryState};
use super::{Client, Host, RegistryOptions};
use crate::error::{Error, Result};

/// The reqwest client for `opts`: rustls, the extra CAs, HTTP/1.1 unless asked for h2.
pub(super) fn build(opts: &RegistryOptions) -> Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .user_agent(concat!("hoist/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(30))
        .read_timeout(opts.read_timeout)
        .pool_idle_timeout(Duration::from_secs(30))
        .tcp_nodelay(true);
    for f in &opts.ca_files {
        let pem = std::fs::read(f).map_err(|e| Error::io(f, e))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| Error::malformed("CA certificate", f.display().to_string(), e))?;
        if certs.is_empty() {
            return Err(Error::malformed("CA certificate", f.display().to_string(), "no PEM certificate found"));
        }
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    if !opts.tls_verify {
        b = b.danger_accept_invalid_certs(true);
    }
    // HTTP/1.1 unless asked: every blob in flight then has its own TCP connection and
    // window. Over one h2 connection, parallel blobs share one congestion window and
    // hyper's flow-control windows (2 MiB a stream, 5 MiB in all: at 50 ms RTT, 100 MB/s
    // for everything), and against distribution over TLS a 1 GiB pull took 3.4 s on h2
    // and 2.4 s on HTTP/1.1 (bench/NOTES.md).
    b = if opts.http2 { b.http2_adaptive_window(true) } else { b.http1_only() };
    b.build().map_err(|e| Error::Other(format!("HTTP client: {e}")))
}

/// Whether `host` (`name[:port]`, `[v6]:port`) is a loopback registry, which may fall back
/// to plain HTTP: exactly `localhost`, or an IP address in 127.0.0.0/8 or `::1`, judged on
/// the parsed address, so that a name such as `127.0.0.1.example.com` is not loopback.
pub fn is_loopback(host: &str) -> bool {
    let h = match host.strip_prefix('[') {
        // `[v6]` or `[v6]:port`
        Some(rest) => match rest.split_once(']') {
            Some((ip, port)) if port.is_empty() || is_port(port.strip_prefix(':').unwrap_or("x")) => ip,
            _ => return false,
        },
        None => match host.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') && is_port(p) => h,
            Some(_) if host.contains("::") || host.matches(':').count() > 1 => host,
            Some(_) => return false,
            None => host,
        },
    };
    if h.eq_ignore_ascii_case("localhost") {
        return true;
    }
    h.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn is_port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.chars().all(|c| c.is_ascii_digit())
}

/// The host name the API of `registry` is served at (Docker Hub's differs from its name).
pub(super) fn api_host(registry: &str) -> &str {
    if registry == crate::model::reference::DEFAULT_REGISTRY {
        "registry-1.docker.io"
    } else {
        registry
    }
}

/// A reqwest error as a network error naming `registry` (never the URL).
pub(super) fn net_err(registry: &str, e: &reqwest::Error) -> Error {
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
    pub(super) async fn ping(&self, registry: &str) -> Result<(String, Challenge)> {
        let api = api_host(registry);
        let plain = self.opts.plain_http || self.opts.insecure.iter().any(|i| i == registry);
        let schemes: &[&str] = if plain {
            &["http"]
        } else if is_loopback(registry) {
            &["https", "http"]
        } else {
            &["https"]
        };
        let mut last_err = None;
        for scheme in schemes {
            let base = format!("{scheme}://{api}");
            // The ping is retried like any request (a 503 or a dropped connection on the first
            // request must not end the run), but only when the scheme answered at all.
            let mut retry = RetryState::new(&self.opts.retry);
            let ping = loop {
                let res = self.http.get(format!("{base}/v2/")).send().await;
                let hint = match &res {
                    Ok(r) if retriable_status(r.status()) => retry_after(r.headers()),
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
                        last_err = Some(Error::Registry {
                            registry: registry.to_string(),
                            method: "GET".into(),
                            path: "/v2/".into(),
                            status: status.as_u16(),
                            detail: String::new(),
                        });
                        continue;
                    }
                    return Ok((base, challenge));
                }
                Err(e) => last_err = Some(net_err(registry, &e)),
            }
        }
        Err(last_err.unwrap_or_else(|| Error::Other(format!("registry {registry}: unreachable"))))
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
                Err(e) if e.is_connect() || e.is_timeout() || e.is_request() || e.is_body() => {
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

/// The path (below `/v2/<repo>/`) of the next page a paginated answer links to with
/// `Link: <…>; rel="next"` (tags list, referrers API).
pub(super) fn next_page(resp: &Response, repo: &str) -> Option<String> {
    next_page_of_link(resp.headers().get("link").and_then(|v| v.to_str().ok())?, repo)
}

/// The path below `/v2/<repo>/` that a `Link` header value names with `rel="next"`, if any
/// (pure: what `next_page` reads, and what the fuzz target `link` feeds).
pub fn next_page_of_link(link: &str, repo: &str) -> Option<String> {
    let next = link.split(',').find(|part| part.contains("rel=\"next\"") || part.contains("rel=next"))?;
    let (open, close) = (next.find('<')?, next.find('>')?);
    let target = next.get(open + 1..close)?;
    target.split_once(&format!("/v2/{repo}/")).map(|(_, p)| p.to_string())
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
pub(super) type BodyStream = futures::stream::BoxStream<'static, Result<Bytes>>;

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
    let mut body = Vec::new();
    let mut stream = body_stream(resp, registry, window);
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
