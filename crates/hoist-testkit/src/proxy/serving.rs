//! The server loop: accepts connections, and for each request asks the rules for a plan,
//! then answers itself (an injected status, the referrers API) or forwards it upstream with
//! the bodies of [`super::bodies`], fixing `Location` headers on the way back.

use std::io;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::{Body, Incoming};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Version};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::{mpsc, oneshot};

use super::bodies::{drain, pump, BodyKind, ProxyBody, PumpLimits, CUT, GO_ON, LINGER, TOO_LARGE};
use super::referrers::{referrer_entry, split_v2_path};
use super::state::{lock, Fault, ProxyState, StatusPlan};
use super::BoxError;

type UpstreamClient = Client<HttpConnector, ProxyBody>;

/// Accepts connections on `listener` and proxies them until the future is dropped.
pub async fn serve(listener: tokio::net::TcpListener, state: Arc<ProxyState>) -> io::Result<()> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: UpstreamClient =
        Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(connector);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // e.g. EMFILE: back off instead of spinning
                tracing::warn!("faultproxy accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let client = client.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(state.clone(), client.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

const HOP_BY_HOP: [&str; 7] = ["connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade", "expect"];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // headers named in Connection: are hop-by-hop too
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    for n in HOP_BY_HOP {
        headers.remove(n);
    }
}

/// `Location: http://UPSTREAM/...` → `http://PROXY/...`, PROXY being the `Host` the client used.
fn rewrite_location(headers: &mut HeaderMap, upstream: &str, proxy_host: Option<&str>) {
    let Some(host) = proxy_host else { return };
    let Some(loc) = headers.get(header::LOCATION).and_then(|v| v.to_str().ok()) else {
        return;
    };
    let Some(rest) = loc.strip_prefix(upstream) else {
        return;
    };
    if !(rest.is_empty() || rest.starts_with('/') || rest.starts_with('?')) {
        return;
    }
    if let Ok(v) = HeaderValue::from_str(&format!("http://{host}{rest}")) {
        headers.insert(header::LOCATION, v);
    }
}

fn injected(plan: &StatusPlan) -> Response<ProxyBody> {
    let code = match plan.status.as_u16() {
        401 => "UNAUTHORIZED",
        403 => "DENIED",
        404 => "NAME_UNKNOWN",
        413 => "SIZE_INVALID",
        429 => "TOOMANYREQUESTS",
        503 => "UNAVAILABLE",
        _ => "UNKNOWN",
    };
    let mut resp = error_response(plan.status, code);
    let h = resp.headers_mut();
    let retry = plan.retry_after.or(matches!(plan.status.as_u16(), 429 | 503).then_some(1));
    if let Some(secs) = retry {
        h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if plan.status == StatusCode::UNAUTHORIZED
        && !plan.headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("www-authenticate"))
    {
        h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"hoist-faultproxy\""));
    }
    for (n, v) in &plan.headers {
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(n.as_bytes()), HeaderValue::from_str(v)) {
            h.append(n, v);
        }
    }
    resp
}

fn error_response(status: StatusCode, code: &str) -> Response<ProxyBody> {
    let body = serde_json::json!({"errors": [{
        "code": code,
        "message": format!("injected by hoist-faultproxy ({status})"),
    }]})
    .to_string();
    let mut resp = Response::new(ProxyBody::full(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert("x-hoist-faultproxy", HeaderValue::from_static("injected"));
    resp
}

fn too_large() -> Response<ProxyBody> {
    let mut resp = error_response(StatusCode::PAYLOAD_TOO_LARGE, "SIZE_INVALID");
    resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

async fn handle(
    state: Arc<ProxyState>,
    client: UpstreamClient,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, BoxError> {
    let method = req.method().clone();
    let path = req.uri().path_and_query().map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
    let (plan, ex) = state.begin(&method, &path, req.headers());
    /// Marks the exchange ended however `handle` returns (or is dropped).
    struct Ended(Arc<ProxyState>, usize);
    impl Drop for Ended {
        fn drop(&mut self) {
            self.0.end(self.1);
        }
    }
    let _ended = Ended(state.clone(), ex);
    if !plan.stall.is_zero() {
        tokio::time::sleep(plan.stall).await;
    }
    let (parts, body) = req.into_parts();

    if let Some(sp) = &plan.status {
        drain(body, &state).await;
        state.fire(sp.rule, ex, Fault::Status(sp.status.as_u16()));
        state.finish(ex, Some(sp.status.as_u16()));
        return Ok(injected(sp));
    }

    let emulate = state.referrers_api.load(Ordering::SeqCst);
    if emulate && method == Method::GET {
        if let Some((repo, subject, query)) = split_v2_path(&path, "referrers") {
            drain(body, &state).await;
            state.finish(ex, Some(200));
            return Ok(state.referrers_response(repo, subject, query));
        }
    }

    let content_length = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let upload = upload_id(&path).map(str::to_owned);
    if let (Some((rule, min)), Some(id), true) = (plan.min_body, &upload, method == Method::PUT) {
        let mut parts = lock(&state.uploads).get(id).map(|u| u.0.clone()).unwrap_or_default();
        if let Some(n) = content_length.filter(|n| *n > 0) {
            parts.push(n);
        }
        if parts.len() > 1 && parts[..parts.len() - 1].iter().any(|&p| p < min) {
            state.fire(rule, ex, Fault::Status(400));
            drain(body, &state).await;
            state.finish(ex, Some(400));
            return Ok(error_response(StatusCode::BAD_REQUEST, "SIZE_INVALID"));
        }
    }
    let path = match (&upload, plan.stable_uploads) {
        (Some(id), true) => with_newest_state(&path, lock(&state.uploads).get(id).and_then(|u| u.1.as_deref())),
        _ => path,
    };
    if let (Some((rule, max)), Some(len)) = (plan.max_body, content_length) {
        if len > max {
            state.fire(rule, ex, Fault::TooLarge);
            drain(body, &state).await;
            state.finish(ex, Some(413));
            return Ok(too_large());
        }
    }

    let proxy_host = parts.headers.get(header::HOST).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers);
    for n in &plan.strip_request {
        headers.remove(n.as_str());
    }

    let mut pump_state = None;
    // (repo, subject digest, descriptor) of a manifest PUT the referrers API emulation indexes
    let mut referrer = None;
    let manifest_put = (emulate && method == Method::PUT).then(|| split_v2_path(&path, "manifests")).flatten();
    let up_body = if let Some((repo, _, _)) = manifest_put {
        // manifests are small (registries cap them at a few MiB): read it whole to see its subject
        let bytes = body.collect().await?.to_bytes();
        state.request_body_bytes.fetch_add(bytes.len() as u64, Ordering::SeqCst);
        let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
        let ct = ct.map(|c| c.split(';').next().unwrap_or(c).trim());
        referrer = referrer_entry(&bytes, ct).map(|(subject, desc)| (repo.to_owned(), subject, desc));
        ProxyBody::full(bytes)
    } else if plan.buffer_request && !body.is_end_stream() {
        let limited = http_body_util::Limited::new(body, super::rules::MAX_BUFFERED_BODY);
        let bytes = match limited.collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                // the client went away mid-body (or sent too much): nothing goes upstream
                state.finish(ex, None);
                return Err(e);
            }
        };
        state.request_body_bytes.fetch_add(bytes.len() as u64, Ordering::SeqCst);
        ProxyBody::full(bytes)
    } else if body.is_end_stream() {
        ProxyBody(BodyKind::Empty)
    } else {
        let (tx, rx) = mpsc::channel(4);
        let hint = body.size_hint();
        let verdict = Arc::new(AtomicU8::new(GO_ON));
        let (done_tx, done_rx) = oneshot::channel();
        let limits = PumpLimits { max_body: plan.max_body, drop_after: plan.drop_request, exchange: ex };
        tokio::spawn(pump(body, tx, state.clone(), limits, verdict.clone(), done_tx));
        pump_state = Some((verdict, done_rx));
        ProxyBody(BodyKind::Channel { rx, hint, done: false })
    };

    let uri = format!("{}{}", state.upstream, path);
    let mut up_req = Request::builder().method(method.clone()).uri(uri).version(Version::HTTP_11).body(up_body)?;
    *up_req.headers_mut() = headers;
    let result = if plan.buffer_request {
        // Atomic: once the whole body is here it goes upstream even if the client leaves
        // meanwhile (hyper drops this future then), and the session's answer is noted.
        let (st, id, m) = (state.clone(), upload.clone(), method.clone());
        state.upstream_in_flight.fetch_add(1, Ordering::SeqCst);
        let task = tokio::spawn(async move {
            let r = client.request(up_req).await;
            if let (Ok(resp), Some(id)) = (&r, &id) {
                note_upload(&st, id, &m, content_length, resp.status(), resp.headers());
            }
            st.upstream_in_flight.fetch_sub(1, Ordering::SeqCst);
            r
        });
        match task.await {
            Ok(r) => r,
            Err(e) => return Err(e.into()),
        }
    } else {
        let r = client.request(up_req).await;
        if let (Ok(resp), Some(id)) = (&r, &upload) {
            note_upload(&state, id, &method, content_length, resp.status(), resp.headers());
        }
        r
    };

    if let Some((verdict, done_rx)) = pump_state {
        match verdict.load(Ordering::SeqCst) {
            CUT => {
                state.finish(ex, None);
                return Err("request body cut by fault rule".into());
            }
            TOO_LARGE => {
                let _ = tokio::time::timeout(LINGER, done_rx).await;
                state.finish(ex, Some(413));
                return Ok(too_large());
            }
            _ => {}
        }
    }

    let resp = match result {
        Ok(r) => r,
        Err(e) => {
            state.finish(ex, Some(502));
            tracing::debug!("faultproxy upstream error: {e}");
            return Ok(error_response(StatusCode::BAD_GATEWAY, "UNKNOWN"));
        }
    };
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    rewrite_location(&mut parts.headers, &state.upstream, proxy_host.as_deref());
    for n in &plan.strip_response {
        parts.headers.remove(n.as_str());
    }
    for (n, v) in &plan.set_response {
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(n.as_bytes()), HeaderValue::from_str(v)) {
            parts.headers.insert(n, v);
        }
    }
    if let Some((repo, subject, desc)) = referrer.filter(|_| parts.status.is_success()) {
        if let Ok(v) = HeaderValue::from_str(&subject) {
            parts.headers.insert("oci-subject", v);
        }
        state.remember_referrer(repo, subject, desc);
    }
    state.finish(ex, Some(parts.status.as_u16()));
    let body = match plan.drop_response {
        Some((rule, n)) => ProxyBody(BodyKind::Cut {
            inner: body,
            remaining: n,
            limit: n,
            cut: None,
            note: Some((state.clone(), rule, ex)),
        }),
        None => ProxyBody(BodyKind::Upstream(body)),
    };
    Ok(Response::from_parts(parts, body))
}

/// Note an upstream answer to an upload request: the accepted PATCH's size, the newest
/// Location.
fn note_upload(
    state: &ProxyState,
    id: &str,
    method: &Method,
    content_length: Option<u64>,
    status: StatusCode,
    headers: &HeaderMap,
) {
    if !status.is_success() {
        return;
    }
    let mut uploads = lock(&state.uploads);
    let entry = uploads.entry(id.to_owned()).or_default();
    if *method == Method::PATCH {
        entry.0.push(content_length.unwrap_or(0));
    }
    if let Some(loc) = headers.get(header::LOCATION).and_then(|v| v.to_str().ok()) {
        let at = loc.find("/v2/").unwrap_or(0);
        entry.1 = Some(loc[at..].to_owned());
    }
}

/// The session id of an upload request (`.../blobs/uploads/<id>[?...]`).
fn upload_id(path: &str) -> Option<&str> {
    let rest = &path[path.find("/blobs/uploads/")? + "/blobs/uploads/".len()..];
    let id = rest.split(['?', '/']).next().unwrap_or("");
    (!id.is_empty()).then_some(id)
}

/// `path` with the `_state` of `newest` (a Location's path and query), other parameters kept.
fn with_newest_state(path: &str, newest: Option<&str>) -> String {
    let Some(newest) = newest else { return path.to_owned() };
    let (Ok(req), Ok(new)) =
        (url::Url::parse(&format!("http://x{path}")), url::Url::parse(&format!("http://x{newest}")))
    else {
        return path.to_owned();
    };
    let Some(state) = new.query_pairs().find(|(k, _)| k == "_state").map(|(_, v)| v.into_owned()) else {
        return path.to_owned();
    };
    let others: Vec<(String, String)> =
        req.query_pairs().filter(|(k, _)| k != "_state").map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    let mut out = req.clone();
    {
        let mut q = out.query_pairs_mut();
        q.clear();
        q.append_pair("_state", &state);
        for (k, v) in &others {
            q.append_pair(k, v);
        }
    }
    match out.query() {
        Some(q) => format!("{}?{q}", out.path()),
        None => out.path().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_sessions_get_their_newest_state() {
        assert_eq!(upload_id("/v2/a/b/blobs/uploads/u-1?_state=x"), Some("u-1"));
        assert_eq!(upload_id("/v2/a/b/blobs/uploads/"), None);
        let p = with_newest_state(
            "/v2/a/blobs/uploads/u?_state=old%3D&digest=sha256%3Aab",
            Some("/v2/a/blobs/uploads/u?_state=new%3D%3D"),
        );
        assert_eq!(p, "/v2/a/blobs/uploads/u?_state=new%3D%3D&digest=sha256%3Aab");
        assert_eq!(with_newest_state("/v2/a/blobs/uploads/u?_state=old", None), "/v2/a/blobs/uploads/u?_state=old");
    }

    #[test]
    fn location_rewrite() {
        let mut h = HeaderMap::new();
        h.insert(header::LOCATION, HeaderValue::from_static("http://127.0.0.1:5000/v2/x/blobs/uploads/u?_state=a"));
        rewrite_location(&mut h, "http://127.0.0.1:5000", Some("127.0.0.1:7000"));
        assert_eq!(h[header::LOCATION], "http://127.0.0.1:7000/v2/x/blobs/uploads/u?_state=a");
        // another port is another host: untouched
        let mut h = HeaderMap::new();
        h.insert(header::LOCATION, HeaderValue::from_static("http://127.0.0.1:50001/v2/"));
        rewrite_location(&mut h, "http://127.0.0.1:5000", Some("127.0.0.1:7000"));
        assert_eq!(h[header::LOCATION], "http://127.0.0.1:50001/v2/");
    }
}
