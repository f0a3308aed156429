//! The proxy's shared state: upstream, rules with their counters, and the record of every
//! exchange; and the plan the rules make for one request.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hyper::{Method, StatusCode};

use super::rules::Rule;

/// A fault the proxy injected into one exchange.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answered with this status instead of forwarding.
    Status(u16),
    /// Answered 413 because the request body was too large.
    TooLarge,
    /// Dropped the connection after forwarding this many request body bytes.
    RequestCut(u64),
    /// Dropped the connection after this many response body bytes.
    ResponseCut(u64),
    /// Waited this long first.
    Stall(Duration),
}

/// One request as the proxy saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exchange {
    /// Request method.
    pub method: String,
    /// Path and query as sent by the client.
    pub path: String,
    /// Status sent to the client; `None` while in flight or if the connection was dropped
    /// before a response head (502 is sent when the upstream could not be reached).
    pub status: Option<u16>,
    /// Faults injected into this exchange.
    pub faults: Vec<Fault>,
    /// The request's `Authorization` header, as the client sent it (to check which
    /// credentials reached which server).
    pub authorization: Option<String>,
    /// The request's `Content-Range` header (a chunked upload's `start-end`).
    pub content_range: Option<String>,
    /// When the proxy got the request head.
    pub started: std::time::Instant,
    /// When the proxy was done with the request (answered it, or the client or upstream went
    /// away); `None` while in flight. For uploads the request body is read by then.
    pub ended: Option<std::time::Instant>,
}

fn header(headers: &hyper::HeaderMap, name: hyper::header::HeaderName) -> Option<String> {
    headers.get(name).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

impl Exchange {
    /// The `start-end` of a chunked upload's `Content-Range`, if it has one.
    pub fn upload_range(&self) -> Option<(u64, u64)> {
        let (a, b) = self.content_range.as_deref()?.trim_start_matches("bytes ").split_once('-')?;
        Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
    }
}

/// The most exchanges among `exchanges` that were in flight at one moment (an exchange still
/// in flight counts as open until now), as a server counts concurrent requests.
pub fn max_concurrent<'a>(exchanges: impl IntoIterator<Item = &'a Exchange>) -> usize {
    let now = std::time::Instant::now();
    // (time, +1 start / -1 end); at equal times ends first, so touching intervals do not overlap
    let mut events: Vec<(std::time::Instant, i32)> = Vec::new();
    for e in exchanges {
        events.push((e.started, 1));
        events.push((e.ended.unwrap_or(now), -1));
    }
    events.sort();
    let (mut open, mut max) = (0i32, 0i32);
    for (_, d) in events {
        open += d;
        max = max.max(open);
    }
    max as usize
}

/// Counters of one rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleStats {
    /// Requests that matched the rule's method and path.
    pub matched: u64,
    /// Times the rule injected a fault (a stall counts only in a rule that does nothing
    /// else).
    pub fired: u64,
}

struct RuleSlot {
    rule: Rule,
    stats: RuleStats,
}

/// Shared state of one proxy: upstream, rules and counters. Cheap to read from any thread.
pub struct ProxyState {
    pub(super) upstream: String,
    rules: Mutex<Vec<RuleSlot>>,
    pub(super) request_body_bytes: AtomicU64,
    /// Requests sent upstream whose answer has not arrived yet (a buffered upload goes on
    /// after its client left).
    pub(super) upstream_in_flight: AtomicU64,
    exchanges: Mutex<Vec<Exchange>>,
    pub(super) referrers_api: AtomicBool,
    /// Referrers API answers hold at most this many descriptors per page (0: one page).
    pub(super) referrers_page: AtomicU64,
    /// Upload session id → sizes of its accepted PATCH bodies, and its newest Location
    /// (path and query).
    pub(super) uploads: Mutex<BTreeMap<String, UploadSeen>>,
    /// (repository, subject digest) → referrer descriptors, in push order.
    pub(super) referrers: Mutex<BTreeMap<(String, String), Vec<serde_json::Value>>>,
}

/// What the proxy saw of one upload session: sizes of its accepted PATCH bodies, and its
/// newest Location (path and query).
pub(super) type UploadSeen = (Vec<u64>, Option<String>);

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl fmt::Debug for ProxyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyState")
            .field("upstream", &self.upstream)
            .field("request_body_bytes", &self.request_body_bytes())
            .finish_non_exhaustive()
    }
}

impl ProxyState {
    /// State for a proxy in front of `upstream` (`http://HOST:PORT`, or just `HOST:PORT`).
    pub fn new(upstream: &str, rules: Vec<Rule>) -> Result<Arc<Self>, String> {
        Ok(Arc::new(ProxyState {
            upstream: parse_upstream(upstream)?,
            rules: Mutex::new(Self::slots(rules)),
            request_body_bytes: AtomicU64::new(0),
            upstream_in_flight: AtomicU64::new(0),
            exchanges: Mutex::new(Vec::new()),
            referrers_api: AtomicBool::new(false),
            referrers_page: AtomicU64::new(0),
            referrers: Mutex::new(BTreeMap::new()),
            uploads: Mutex::new(BTreeMap::new()),
        }))
    }

    fn slots(rules: Vec<Rule>) -> Vec<RuleSlot> {
        rules.into_iter().map(|rule| RuleSlot { rule, stats: RuleStats::default() }).collect()
    }

    /// The upstream origin, `http://HOST:PORT`.
    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    /// Replaces the rules; their counters start from zero.
    pub fn set_rules(&self, rules: Vec<Rule>) {
        *lock(&self.rules) = Self::slots(rules);
    }
    /// Forgets all exchanges and zeroes all counters (rules stay).
    pub fn reset(&self) {
        for slot in lock(&self.rules).iter_mut() {
            slot.stats = RuleStats::default();
        }
        lock(&self.exchanges).clear();
        self.request_body_bytes.store(0, Ordering::SeqCst);
    }

    /// Total request body bytes received from clients (including bodies of requests that
    /// were answered with an injected error or cut).
    pub fn request_body_bytes(&self) -> u64 {
        self.request_body_bytes.load(Ordering::SeqCst)
    }

    /// Requests forwarded upstream and not answered yet.
    pub fn upstream_in_flight(&self) -> u64 {
        self.upstream_in_flight.load(Ordering::SeqCst)
    }

    /// All requests so far, in arrival order.
    pub fn exchanges(&self) -> Vec<Exchange> {
        lock(&self.exchanges).clone()
    }

    /// How many requests had this method.
    pub fn method_count(&self, method: &str) -> usize {
        lock(&self.exchanges).iter().filter(|e| e.method.eq_ignore_ascii_case(method)).count()
    }

    /// Requests per method.
    pub fn method_counts(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for e in lock(&self.exchanges).iter() {
            *out.entry(e.method.clone()).or_insert(0) += 1;
        }
        out
    }

    /// Counters of rule `index` (in the order given); zero for an unknown index.
    pub fn rule_stats(&self, index: usize) -> RuleStats {
        lock(&self.rules).get(index).map(|s| s.stats).unwrap_or_default()
    }

    /// Counters of every rule, in order.
    pub fn all_rule_stats(&self) -> Vec<RuleStats> {
        lock(&self.rules).iter().map(|s| s.stats).collect()
    }

    /// Counters as JSON (for the `hoist-faultproxy` binary and for logs).
    pub fn summary_json(&self) -> serde_json::Value {
        let rules: Vec<_> =
            self.all_rule_stats().iter().map(|s| serde_json::json!({"matched": s.matched, "fired": s.fired})).collect();
        serde_json::json!({
            "request_body_bytes": self.request_body_bytes(),
            "requests": lock(&self.exchanges).len(),
            "methods": self.method_counts(),
            "rules": rules,
        })
    }

    /// Counts the request against the rules and records it; returns what to do.
    pub(super) fn begin(&self, method: &Method, path: &str, headers: &hyper::HeaderMap) -> (Plan, usize) {
        let mut plan = Plan::default();
        for (i, slot) in lock(&self.rules).iter_mut().enumerate() {
            if !slot.rule.matches(method, path) {
                continue;
            }
            slot.stats.matched += 1;
            if !slot.rule.when.holds(slot.stats.matched) {
                continue;
            }
            let r = &slot.rule;
            if let Some(d) = r.stall {
                plan.stall += d;
                if r.stall_only() {
                    slot.stats.fired += 1;
                }
            }
            if plan.status.is_none() {
                if let Some(status) = r.status {
                    plan.status =
                        Some(StatusPlan { rule: i, status, retry_after: r.retry_after, headers: r.headers.clone() });
                }
            }
            if r.rewrites() {
                plan.strip_request.extend(r.strip_request_headers.iter().cloned());
                plan.strip_response.extend(r.strip_response_headers.iter().cloned());
                plan.set_response.extend(r.response_headers.iter().cloned());
                plan.buffer_request |= r.buffer_request;
                plan.stable_uploads |= r.stable_uploads;
                slot.stats.fired += 1;
            }
            if let (None, Some(n)) = (plan.min_body, r.min_body) {
                plan.min_body = Some((i, n));
            }
            min_limit(&mut plan.max_body, i, r.max_body);
            min_limit(&mut plan.drop_request, i, r.drop_request_after);
            min_limit(&mut plan.drop_response, i, r.drop_response_after);
        }
        let mut exchanges = lock(&self.exchanges);
        exchanges.push(Exchange {
            method: method.as_str().to_owned(),
            path: path.to_owned(),
            status: None,
            faults: if plan.stall.is_zero() { Vec::new() } else { vec![Fault::Stall(plan.stall)] },
            authorization: header(headers, hyper::header::AUTHORIZATION),
            content_range: header(headers, hyper::header::CONTENT_RANGE),
            started: std::time::Instant::now(),
            ended: None,
        });
        (plan, exchanges.len() - 1)
    }

    pub(super) fn fire(&self, rule: usize, exchange: usize, fault: Fault) {
        if let Some(slot) = lock(&self.rules).get_mut(rule) {
            slot.stats.fired += 1;
        }
        if let Some(e) = lock(&self.exchanges).get_mut(exchange) {
            e.faults.push(fault);
        }
    }

    /// Notes that the proxy is done with the exchange (see [`Exchange::ended`]).
    pub(super) fn end(&self, exchange: usize) {
        if let Some(e) = lock(&self.exchanges).get_mut(exchange) {
            e.ended.get_or_insert_with(std::time::Instant::now);
        }
    }

    pub(super) fn finish(&self, exchange: usize, status: Option<u16>) {
        if let Some(e) = lock(&self.exchanges).get_mut(exchange) {
            e.status = status;
        }
    }
}

fn min_limit(slot: &mut Option<(usize, u64)>, rule: usize, limit: Option<u64>) {
    if let Some(n) = limit {
        if slot.is_none_or(|(_, m)| n < m) {
            *slot = Some((rule, n));
        }
    }
}

fn parse_upstream(s: &str) -> Result<String, String> {
    let with_scheme = if s.contains("://") { s.to_owned() } else { format!("http://{s}") };
    let url = url::Url::parse(&with_scheme).map_err(|e| format!("upstream {s:?}: {e}"))?;
    if url.scheme() != "http" {
        return Err(format!("upstream {s:?}: only http:// upstreams are supported"));
    }
    if url.path() != "/" || url.query().is_some() {
        return Err(format!("upstream {s:?}: must be an origin without path"));
    }
    let host = url.host_str().ok_or_else(|| format!("upstream {s:?}: no host"))?;
    let port = url.port_or_known_default().unwrap_or(80);
    Ok(format!("http://{host}:{port}"))
}

/// What the rules decided for one exchange.
#[derive(Default)]
pub(super) struct Plan {
    pub(super) stall: Duration,
    pub(super) status: Option<StatusPlan>,
    pub(super) max_body: Option<(usize, u64)>,
    pub(super) drop_request: Option<(usize, u64)>,
    pub(super) drop_response: Option<(usize, u64)>,
    /// Request headers removed before forwarding.
    pub(super) strip_request: Vec<String>,
    /// Response headers removed, and set, on the forwarded response.
    pub(super) strip_response: Vec<String>,
    pub(super) set_response: Vec<(String, String)>,
    /// Read the whole request body before forwarding it.
    pub(super) buffer_request: bool,
    /// Refuse uploads with chunks shorter than this (rule, bytes).
    pub(super) min_body: Option<(usize, u64)>,
    /// Send upload requests with the session's newest `_state`.
    pub(super) stable_uploads: bool,
}

/// The injected status answer of a [`Plan`], and the rule that asked for it.
pub(super) struct StatusPlan {
    pub(super) rule: usize,
    pub(super) status: StatusCode,
    pub(super) retry_after: Option<u64>,
    pub(super) headers: Vec<(String, String)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_forms() {
        assert_eq!(parse_upstream("127.0.0.1:5000").unwrap(), "http://127.0.0.1:5000");
        assert_eq!(parse_upstream("http://localhost:80/").unwrap(), "http://localhost:80");
        assert!(parse_upstream("https://127.0.0.1:5000").is_err());
        assert!(parse_upstream("http://127.0.0.1:5000/v2/").is_err());
    }
}
