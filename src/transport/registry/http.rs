//! HTTP for the registry client: the reqwest client, the ping that picks the scheme and
//! learns the challenge, sending one request with auth and retries, and reading response
//! bodies within the limit of their kind.

use std::time::Duration;

use futures::StreamExt;
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

/// Whether `host` (`name[:port]`) is a loopback registry, which may fall back to plain HTTP.
pub fn is_loopback(host: &str) -> bool {
    let h = host.rsplit_once(':').filter(|(_, p)| p.chars().all(|c| c.is_ascii_digit())).map_or(host, |(h, _)| h);
    h == "localhost" || h.starts_with("127.") || h == "[::1]" || h == "::1"
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
    let link = resp.headers().get("link").and_then(|v| v.to_str().ok())?;
    let next = link.split(',').find(|part| part.contains("rel=\"next\"") || part.contains("rel=next"))?;
    let target = &next[next.find('<')? + 1..next.find('>')?];
    target.split_once(&format!("/v2/{repo}/")).map(|(_, p)| p.to_string())
}

/// A response body as a stream of chunks, each error a network error naming `registry`.
pub(super) fn body_stream(resp: Response, registry: &str) -> BodyStream {
    let registry = registry.to_string();
    resp.bytes_stream().map(move |r| r.map_err(|e| net_err(&registry, &e))).boxed()
}

/// The chunks of a response body.
pub(super) type BodyStream = futures::stream::BoxStream<'static, Result<bytes::Bytes>>;
