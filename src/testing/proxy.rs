//! Fault-injecting HTTP/1.1 reverse proxy for registry tests and benchmarks: forwards every
//! request to one plain-HTTP upstream and, as its [`Rule`]s say, fails, cuts or stalls some.
//!
//! It rewrites nothing except `Location` headers that point at the upstream (they are made to
//! point at the proxy, as the client addressed it). Request and response bodies stream through
//! frame by frame (Content-Length or chunked, keep-alive on both sides); nothing is buffered
//! whole. Every request is recorded as an [`Exchange`]; counters are read through the
//! `Arc<ProxyState>` handle.
//!
//! ```no_run
//! use hoist::testing::proxy::{FaultProxy, Rule};
//! let proxy = FaultProxy::start("http://127.0.0.1:5000", vec![
//!     Rule::new().method("PUT").path("/blobs/uploads/").nth(2).status(503),
//!     Rule::new().method("PATCH").every(3).drop_request_after(64 * 1024),
//! ]).unwrap();
//! // point the client at proxy.url() ...
//! assert_eq!(proxy.state().rule_stats(0).fired, 1);
//! ```
//!
//! Rules can also be written as text (see [`parse_rules`]), which is what the
//! `hoist-faultproxy` binary takes.
//!
//! One mode goes beyond faults: [`ProxyState::emulate_referrers_api`] makes a registry without
//! the OCI referrers API (distribution 2.8.2) look like one that has it, so that clients'
//! API branch can be tested against real storage.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Version};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::{mpsc, oneshot};

/// Error type of the proxy's bodies and service.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long a request body is still read (and thrown away) after an injected error response,
/// so that the client gets to read that response (like nginx's lingering close).
const LINGER: Duration = Duration::from_secs(30);

/// How long a cut response waits before breaking the connection, so that the head and the
/// first bytes reach the client first.
const CUT_FLUSH: Duration = Duration::from_millis(50);

// ---------------------------------------------------------------------------------------------
// Rules

/// Which path a rule applies to.
#[derive(Clone, Debug)]
pub enum PathMatch {
    /// The path and query contain this string.
    Contains(String),
    /// The path and query match this regular expression (unanchored).
    Regex(regex::Regex),
}

impl PathMatch {
    fn is_match(&self, path: &str) -> bool {
        match self {
            PathMatch::Contains(s) => path.contains(s.as_str()),
            PathMatch::Regex(re) => re.is_match(path),
        }
    }
}

/// Which of the requests a rule matches it acts on; `n` counts the rule's matching requests
/// from 1.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum When {
    /// Every matching request.
    #[default]
    Always,
    /// Only the Nth matching request.
    Nth(u64),
    /// Every Nth matching request (N, 2N, 3N, ...).
    EveryNth(u64),
    /// The first N matching requests.
    FirstN(u64),
    /// Every matching request after the first N.
    AfterN(u64),
}

impl When {
    fn holds(self, n: u64) -> bool {
        match self {
            When::Always => true,
            When::Nth(k) => n == k,
            When::EveryNth(k) => k != 0 && n.is_multiple_of(k),
            When::FirstN(k) => n <= k,
            When::AfterN(k) => n > k,
        }
    }
}

/// One fault rule: a filter (method, path), a [`When`], and one or more actions. Built with
/// the chained setters, e.g. `Rule::new().method("PUT").nth(2).status(503)`, or parsed from
/// text with [`Rule::from_str`].
///
/// Actions of one rule combine (a stall, then a status). Across rules, every matching rule
/// counts the request; the first armed rule with a status answers; the smallest size limits
/// win; stalls add up.
#[derive(Clone, Debug, Default)]
pub struct Rule {
    method: Option<Method>,
    path: Option<PathMatch>,
    when: When,
    status: Option<StatusCode>,
    retry_after: Option<u64>,
    headers: Vec<(String, String)>,
    max_body: Option<u64>,
    drop_request_after: Option<u64>,
    drop_response_after: Option<u64>,
    stall: Option<Duration>,
}

impl Rule {
    /// A rule that matches every request, always, and does nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only requests with this method (case-insensitive).
    pub fn method(mut self, method: &str) -> Self {
        let m = method.to_ascii_uppercase();
        self.method = Some(Method::from_bytes(m.as_bytes()).expect("valid HTTP method"));
        self
    }

    /// Only requests whose path and query contain `s`.
    pub fn path(mut self, s: &str) -> Self {
        self.path = Some(PathMatch::Contains(s.to_owned()));
        self
    }

    /// Only requests whose path and query match the regular expression `re`.
    ///
    /// Panics on an invalid expression (this is test code); [`Rule::from_str`] reports it.
    pub fn path_regex(mut self, re: &str) -> Self {
        self.path = Some(PathMatch::Regex(regex::Regex::new(re).expect("valid path regex")));
        self
    }

    /// Act on the given matching requests only (default [`When::Always`]).
    pub fn when(mut self, when: When) -> Self {
        self.when = when;
        self
    }

    /// Act on the Nth matching request only (1-based).
    pub fn nth(self, n: u64) -> Self {
        self.when(When::Nth(n))
    }

    /// Act on every Nth matching request.
    pub fn every(self, n: u64) -> Self {
        self.when(When::EveryNth(n))
    }

    /// Act on the first N matching requests.
    pub fn times(self, n: u64) -> Self {
        self.when(When::FirstN(n))
    }

    /// Act on every matching request after the first N (e.g. a token that expires).
    pub fn after(self, n: u64) -> Self {
        self.when(When::AfterN(n))
    }

    /// Answer with this status instead of forwarding (the request body is read and dropped).
    /// 429 and 503 carry `Retry-After: 1` unless [`Rule::retry_after`] says otherwise; 401
    /// carries `WWW-Authenticate: Basic realm="hoist-faultproxy"` unless [`Rule::header`]
    /// sets one.
    pub fn status(mut self, status: u16) -> Self {
        self.status = Some(StatusCode::from_u16(status).expect("valid status code"));
        self
    }

    /// `Retry-After` seconds on the injected status response.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// An extra header on the injected status response.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Answer `413 Payload Too Large` (and close the connection) when the request body is
    /// larger than `bytes`: at once by `Content-Length`, or, for a chunked body, as soon as
    /// more than `bytes` arrived (the upstream request is then aborted).
    pub fn max_body(mut self, bytes: u64) -> Self {
        self.max_body = Some(bytes);
        self
    }

    /// Forward `bytes` of the request body, then drop the client connection without an
    /// answer (and abort the upstream request). Bodies not longer than that pass.
    pub fn drop_request_after(mut self, bytes: u64) -> Self {
        self.drop_request_after = Some(bytes);
        self
    }

    /// Forward the response head and `bytes` of its body, then drop the client connection.
    /// Bodies not longer than that pass.
    pub fn drop_response_after(mut self, bytes: u64) -> Self {
        self.drop_response_after = Some(bytes);
        self
    }

    /// Wait this long before acting on (or forwarding) the request.
    pub fn stall(mut self, d: Duration) -> Self {
        self.stall = Some(d);
        self
    }

    fn matches(&self, method: &Method, path: &str) -> bool {
        self.method.as_ref().is_none_or(|m| m == method) && self.path.as_ref().is_none_or(|p| p.is_match(path))
    }

    fn stall_only(&self) -> bool {
        self.status.is_none()
            && self.max_body.is_none()
            && self.drop_request_after.is_none()
            && self.drop_response_after.is_none()
    }
}

/// Text form of one rule: whitespace-separated `key=value` tokens.
///
/// Filters: `method=PUT`, `path=SUBSTRING`, `path-re=REGEX`.
/// When (one): `nth=N`, `every=N`, `times=N`, `after=N` (default: always).
/// Actions (one or more): `status=503`, `retry-after=SECS`, `header=Name:Value`,
/// `max-body=BYTES`, `drop-request=BYTES`, `drop-response=BYTES`, `stall=DURATION`.
/// Sizes take `k`/`m`/`g` (KiB, MiB, GiB); durations `ms`, `s` or `m`.
///
/// Example: `method=PUT path=/blobs/uploads/ nth=2 status=503`.
impl FromStr for Rule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut rule = Rule::new();
        let mut when_set = false;
        let mut has_action = false;
        for token in s.split_whitespace() {
            let (key, value) =
                token.split_once('=').ok_or_else(|| format!("rule token {token:?}: expected key=value"))?;
            let num = || value.parse::<u64>().map_err(|_| format!("rule token {token:?}: {value:?} is not a number"));
            let mut set_when = |w: When| {
                if when_set {
                    return Err(format!("rule {s:?}: more than one of nth/every/times/after"));
                }
                when_set = true;
                rule.when = w;
                Ok(())
            };
            match key {
                "method" => {
                    let m = Method::from_bytes(value.to_ascii_uppercase().as_bytes())
                        .map_err(|_| format!("rule token {token:?}: bad method"))?;
                    rule.method = Some(m);
                }
                "path" => rule.path = Some(PathMatch::Contains(value.to_owned())),
                "path-re" => {
                    let re = regex::Regex::new(value).map_err(|e| format!("rule token {token:?}: {e}"))?;
                    rule.path = Some(PathMatch::Regex(re));
                }
                "nth" => set_when(When::Nth(num()?))?,
                "every" => set_when(When::EveryNth(num()?))?,
                "times" => set_when(When::FirstN(num()?))?,
                "after" => set_when(When::AfterN(num()?))?,
                "status" => {
                    let code = u16::try_from(num()?)
                        .ok()
                        .and_then(|c| StatusCode::from_u16(c).ok())
                        .ok_or_else(|| format!("rule token {token:?}: bad status"))?;
                    rule.status = Some(code);
                    has_action = true;
                }
                "retry-after" => rule.retry_after = Some(num()?),
                "header" => {
                    let (n, v) =
                        value.split_once(':').ok_or_else(|| format!("rule token {token:?}: expected Name:Value"))?;
                    rule.headers.push((n.to_owned(), v.to_owned()));
                }
                "max-body" => {
                    rule.max_body = Some(parse_size(value)?);
                    has_action = true;
                }
                "drop-request" => {
                    rule.drop_request_after = Some(parse_size(value)?);
                    has_action = true;
                }
                "drop-response" => {
                    rule.drop_response_after = Some(parse_size(value)?);
                    has_action = true;
                }
                "stall" => {
                    rule.stall = Some(parse_duration(value)?);
                    has_action = true;
                }
                _ => return Err(format!("rule token {token:?}: unknown key {key:?}")),
            }
        }
        if !has_action {
            return Err(format!("rule {s:?}: no action (status, max-body, drop-request, drop-response, stall)"));
        }
        Ok(rule)
    }
}

/// Parses `;`-separated rules (see [`Rule::from_str`]); empty parts are skipped.
pub fn parse_rules(s: &str) -> Result<Vec<Rule>, String> {
    s.split(';').filter(|part| !part.trim().is_empty()).map(Rule::from_str).collect()
}

/// `123`, `64k`, `1M`, `2g` (binary multiples; an optional trailing `b`/`ib` is accepted).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let lower = s.trim().to_ascii_lowercase();
    let t = lower.trim_end_matches("ib").trim_end_matches('b');
    let (digits, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    digits.parse::<u64>().ok().and_then(|n| n.checked_mul(mult)).ok_or_else(|| format!("bad size {s:?}"))
}

/// `250ms`, `2s`, `1.5s`, `1m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, unit) = if let Some(n) = t.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else {
        return Err(format!("bad duration {s:?}: needs a unit (ms, s, m)"));
    };
    let v: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("bad duration {s:?}"));
    }
    Ok(Duration::from_secs_f64(v * unit))
}

// ---------------------------------------------------------------------------------------------
// State and counters

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
    upstream: String,
    rules: Mutex<Vec<RuleSlot>>,
    request_body_bytes: AtomicU64,
    exchanges: Mutex<Vec<Exchange>>,
    referrers_api: AtomicBool,
    /// Referrers API answers hold at most this many descriptors per page (0: one page).
    referrers_page: AtomicU64,
    /// (repository, subject digest) → referrer descriptors, in push order.
    referrers: Mutex<BTreeMap<(String, String), Vec<serde_json::Value>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
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
            exchanges: Mutex::new(Vec::new()),
            referrers_api: AtomicBool::new(false),
            referrers_page: AtomicU64::new(0),
            referrers: Mutex::new(BTreeMap::new()),
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

    /// Emulate the OCI referrers API (distribution spec 1.1) in front of an upstream without it.
    ///
    /// On: a `PUT /v2/<repo>/manifests/<ref>` is read whole (fault rules' body limits do not
    /// apply to it) and forwarded; when its JSON has a `subject` and the upstream answers 2xx,
    /// the answer gets `OCI-Subject: <subject digest>` and the proxy remembers the manifest's
    /// descriptor (mediaType, digest and size of the body, `artifactType` or else the config's
    /// mediaType, annotations) under (repo, subject). `GET /v2/<repo>/referrers/<digest>` is then
    /// answered by the proxy itself: 200 with an OCI index of those descriptors, possibly empty,
    /// filtered by `?artifactType=` (with `OCI-Filters-Applied: artifactType`). The upstream
    /// never sees referrers requests. Deletes are not tracked; what was remembered stays when
    /// the mode is turned off.
    ///
    /// Off (the default): referrers requests go upstream like any other.
    pub fn emulate_referrers_api(&self, on: bool) {
        self.referrers_api.store(on, Ordering::SeqCst);
    }

    /// Split referrers API answers into pages of `n` descriptors chained by `Link: <…>;
    /// rel="next"` headers, as the spec allows registries to do (0: everything in one answer).
    pub fn paginate_referrers(&self, n: u64) {
        self.referrers_page.store(n, Ordering::SeqCst);
    }

    /// The descriptors the referrers API emulation holds for `subject` in `repo`.
    pub fn referrers_of(&self, repo: &str, subject: &str) -> Vec<serde_json::Value> {
        lock(&self.referrers).get(&(repo.to_owned(), subject.to_owned())).cloned().unwrap_or_default()
    }

    fn remember_referrer(&self, repo: String, subject: String, desc: serde_json::Value) {
        let mut map = lock(&self.referrers);
        let list = map.entry((repo, subject)).or_default();
        // one entry per manifest, however often it is pushed (by tag and by digest, again)
        if !list.iter().any(|d| d["digest"] == desc["digest"]) {
            list.push(desc);
        }
    }

    /// The referrers API answer for `GET /v2/<repo>/referrers/<subject>?<query>`.
    fn referrers_response(&self, repo: &str, subject: &str, query: &str) -> Response<ProxyBody> {
        let filter = url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "artifactType").map(|(_, v)| v);
        let mut manifests: Vec<serde_json::Value> = self
            .referrers_of(repo, subject)
            .into_iter()
            .filter(|d| filter.as_deref().is_none_or(|t| d["artifactType"].as_str() == Some(t)))
            .collect();
        let page_size = self.referrers_page.load(Ordering::SeqCst) as usize;
        let mut next = None;
        if page_size > 0 {
            let page: usize = url::form_urlencoded::parse(query.as_bytes())
                .find(|(k, _)| k == "page")
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            let start = (page * page_size).min(manifests.len());
            let end = (start + page_size).min(manifests.len());
            if end < manifests.len() {
                let mut q = url::form_urlencoded::Serializer::new(String::new());
                q.append_pair("page", &(page + 1).to_string());
                if let Some(t) = &filter {
                    q.append_pair("artifactType", t);
                }
                next = Some(format!("</v2/{repo}/referrers/{subject}?{}>; rel=\"next\"", q.finish()));
            }
            manifests = manifests[start..end].to_vec();
        }
        let body = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": REFERRERS_INDEX,
            "manifests": manifests,
        })
        .to_string();
        let mut resp = Response::new(ProxyBody::full(body));
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(REFERRERS_INDEX));
        if filter.is_some() {
            h.insert("oci-filters-applied", HeaderValue::from_static("artifactType"));
        }
        if let Some(link) = next.and_then(|l| HeaderValue::from_str(&l).ok()) {
            h.insert(header::LINK, link);
        }
        resp
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
    fn begin(&self, method: &Method, path: &str) -> (Plan, usize) {
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
        });
        (plan, exchanges.len() - 1)
    }

    fn fire(&self, rule: usize, exchange: usize, fault: Fault) {
        if let Some(slot) = lock(&self.rules).get_mut(rule) {
            slot.stats.fired += 1;
        }
        if let Some(e) = lock(&self.exchanges).get_mut(exchange) {
            e.faults.push(fault);
        }
    }

    fn finish(&self, exchange: usize, status: Option<u16>) {
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

/// Media type of a referrers API answer.
const REFERRERS_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// `/v2/<repo>/<kind>/<ref>[?query]` → (repo, ref, query); `<repo>` may contain slashes.
fn split_v2_path<'a>(path: &'a str, kind: &str) -> Option<(&'a str, &'a str, &'a str)> {
    let (p, query) = path.split_once('?').unwrap_or((path, ""));
    let (repo, reference) = p.strip_prefix("/v2/")?.rsplit_once(&format!("/{kind}/"))?;
    (!repo.is_empty() && !reference.is_empty() && !reference.contains('/')).then_some((repo, reference, query))
}

/// For a manifest body with a `subject`: (subject digest, the descriptor a referrers list holds
/// for it), as the distribution spec says: mediaType, digest, size, `artifactType` (the
/// manifest's, else its config's mediaType; none for an index without one) and annotations.
/// Written here from the spec rather than with hoist's own code, which it is meant to judge.
fn referrer_entry(body: &[u8], content_type: Option<&str>) -> Option<(String, serde_json::Value)> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let subject = v.get("subject")?.get("digest")?.as_str()?.to_owned();
    let media_type = v.get("mediaType").and_then(|m| m.as_str()).or(content_type)?;
    let mut desc = serde_json::json!({
        "mediaType": media_type,
        "digest": crate::model::digest::Digest::sha256_of(body).to_string(),
        "size": body.len(),
    });
    let non_empty = |x: Option<&serde_json::Value>| x.filter(|x| x.as_str().is_some_and(|s| !s.is_empty())).cloned();
    let artifact_type =
        non_empty(v.get("artifactType")).or_else(|| non_empty(v.get("config").and_then(|c| c.get("mediaType"))));
    if let Some(t) = artifact_type {
        desc["artifactType"] = t;
    }
    if let Some(a) = v.get("annotations").filter(|a| a.as_object().is_some_and(|o| !o.is_empty())) {
        desc["annotations"] = a.clone();
    }
    Some((subject, desc))
}

#[derive(Default)]
struct Plan {
    stall: Duration,
    status: Option<StatusPlan>,
    max_body: Option<(usize, u64)>,
    drop_request: Option<(usize, u64)>,
    drop_response: Option<(usize, u64)>,
}

struct StatusPlan {
    rule: usize,
    status: StatusCode,
    retry_after: Option<u64>,
    headers: Vec<(String, String)>,
}

// ---------------------------------------------------------------------------------------------
// Bodies

/// Body type on both sides of the proxy.
pub struct ProxyBody(BodyKind);

enum BodyKind {
    Empty,
    Full(Option<Bytes>),
    /// A request body fed by the pump task.
    Channel {
        rx: mpsc::Receiver<Result<Frame<Bytes>, BoxError>>,
        hint: SizeHint,
        done: bool,
    },
    Upstream(Incoming),
    /// An upstream response body cut after `remaining` more bytes.
    Cut {
        inner: Incoming,
        remaining: u64,
        limit: u64,
        /// Set once cut: the error comes when it fires.
        cut: Option<Pin<Box<tokio::time::Sleep>>>,
        note: Option<(Arc<ProxyState>, usize, usize)>,
    },
}

impl ProxyBody {
    fn full(b: impl Into<Bytes>) -> Self {
        ProxyBody(BodyKind::Full(Some(b.into())))
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().0 {
            BodyKind::Empty => Poll::Ready(None),
            BodyKind::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            BodyKind::Channel { rx, done, .. } => match rx.poll_recv(cx) {
                Poll::Ready(None) => {
                    *done = true;
                    Poll::Ready(None)
                }
                other => other,
            },
            BodyKind::Upstream(inner) => Pin::new(inner).poll_frame(cx).map(|o| o.map(|r| r.map_err(Into::into))),
            BodyKind::Cut { inner, remaining, limit, cut, note } => {
                if let Some(timer) = cut {
                    // let hyper flush what was sent so far, then break the connection
                    return match timer.as_mut().poll(cx) {
                        Poll::Ready(()) => Poll::Ready(Some(Err("response body cut by fault rule".into()))),
                        Poll::Pending => Poll::Pending,
                    };
                }
                match Pin::new(inner).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                        Ok(data) if (data.len() as u64) <= *remaining => {
                            *remaining -= data.len() as u64;
                            Poll::Ready(Some(Ok(Frame::data(data))))
                        }
                        Ok(data) => {
                            let head = data.slice(..*remaining as usize);
                            *remaining = 0;
                            let mut timer = Box::pin(tokio::time::sleep(CUT_FLUSH));
                            if let Some((state, rule, ex)) = note.take() {
                                state.fire(rule, ex, Fault::ResponseCut(*limit));
                            }
                            if head.is_empty() {
                                let _ = timer.as_mut().poll(cx); // registers the waker
                                *cut = Some(timer);
                                Poll::Pending
                            } else {
                                *cut = Some(timer);
                                Poll::Ready(Some(Ok(Frame::data(head))))
                            }
                        }
                        Err(frame) => Poll::Ready(Some(Ok(frame))),
                    },
                    other => other.map(|o| o.map(|r| r.map_err(Into::into))),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            BodyKind::Empty => true,
            BodyKind::Full(b) => b.is_none(),
            BodyKind::Channel { hint, done, .. } => *done || hint.exact() == Some(0),
            BodyKind::Upstream(inner) => inner.is_end_stream(),
            BodyKind::Cut { inner, cut, .. } => cut.is_none() && inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            BodyKind::Empty => SizeHint::with_exact(0),
            BodyKind::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            BodyKind::Channel { hint, .. } => *hint,
            BodyKind::Upstream(inner) | BodyKind::Cut { inner, .. } => inner.size_hint(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Serving

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

/// Reads and counts what is left of a request body, for at most [`LINGER`].
async fn drain(mut body: Incoming, state: &ProxyState) {
    let _ = tokio::time::timeout(LINGER, async {
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(d) = frame.data_ref() {
                state.request_body_bytes.fetch_add(d.len() as u64, Ordering::SeqCst);
            }
        }
    })
    .await;
}

const GO_ON: u8 = 0;
const CUT: u8 = 1;
const TOO_LARGE: u8 = 2;

struct PumpLimits {
    max_body: Option<(usize, u64)>,
    drop_after: Option<(usize, u64)>,
    exchange: usize,
}

/// Moves the client's request body into the upstream channel frame by frame, counting it and
/// applying the size rules. The verdict is stored before the upstream side learns of a cut,
/// so the service sees it once the upstream request fails.
async fn pump(
    mut body: Incoming,
    tx: mpsc::Sender<Result<Frame<Bytes>, BoxError>>,
    state: Arc<ProxyState>,
    limits: PumpLimits,
    verdict: Arc<AtomicU8>,
    done: oneshot::Sender<()>,
) {
    let mut tx = Some(tx);
    let mut seen: u64 = 0;
    loop {
        let frame = match body.frame().await {
            None => break,
            Some(Ok(f)) => f,
            Some(Err(e)) => {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(Err(Box::new(e))).await;
                }
                break;
            }
        };
        let data = match frame.into_data() {
            Ok(d) => d,
            Err(other) => {
                if let Some(t) = &tx {
                    if t.send(Ok(other)).await.is_err() {
                        tx = None;
                    }
                }
                continue;
            }
        };
        let len = data.len() as u64;
        state.request_body_bytes.fetch_add(len, Ordering::SeqCst);
        let before = seen;
        seen += len;
        if verdict.load(Ordering::SeqCst) == TOO_LARGE {
            continue; // draining
        }
        if let Some((rule, n)) = limits.drop_after {
            if seen > n {
                let head = data.slice(..(n - before) as usize);
                if let Some(t) = tx.take() {
                    if !head.is_empty() {
                        let _ = t.send(Ok(Frame::data(head))).await;
                    }
                    verdict.store(CUT, Ordering::SeqCst);
                    state.fire(rule, limits.exchange, Fault::RequestCut(n));
                    let _ = t.send(Err("request body cut by fault rule".into())).await;
                } else {
                    verdict.store(CUT, Ordering::SeqCst);
                    state.fire(rule, limits.exchange, Fault::RequestCut(n));
                }
                return; // drops the client body; the service closes the connection
            }
        }
        if let Some((rule, max)) = limits.max_body {
            if seen > max {
                verdict.store(TOO_LARGE, Ordering::SeqCst);
                state.fire(rule, limits.exchange, Fault::TooLarge);
                if let Some(t) = tx.take() {
                    let _ = t.send(Err("request body too large (fault rule)".into())).await;
                }
                continue;
            }
        }
        if let Some(t) = &tx {
            if t.send(Ok(Frame::data(data))).await.is_err() {
                tx = None; // upstream stopped reading; keep draining the client
            }
        }
    }
    drop(tx);
    let _ = done.send(());
}

async fn handle(
    state: Arc<ProxyState>,
    client: UpstreamClient,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, BoxError> {
    let method = req.method().clone();
    let path = req.uri().path_and_query().map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
    let (plan, ex) = state.begin(&method, &path);
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
    let mut up_req = Request::builder().method(method).uri(uri).version(Version::HTTP_11).body(up_body)?;
    *up_req.headers_mut() = headers;
    let result = client.request(up_req).await;

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

// ---------------------------------------------------------------------------------------------
// A proxy on its own thread

/// A running proxy with its own thread and runtime, so it keeps serving while the test thread
/// blocks (e.g. on `std::process::Command::output`). Stops on drop.
pub struct FaultProxy {
    addr: SocketAddr,
    state: Arc<ProxyState>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultProxy").field("addr", &self.addr).field("state", &self.state).finish()
    }
}

impl FaultProxy {
    /// Starts a proxy on `127.0.0.1:<free port>` in front of `upstream` (`http://HOST:PORT`).
    pub fn start(upstream: &str, rules: Vec<Rule>) -> io::Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), upstream, rules)
    }

    /// Starts a proxy listening on `listen`.
    pub fn start_on(listen: SocketAddr, upstream: &str, rules: Vec<Rule>) -> io::Result<Self> {
        let state = ProxyState::new(upstream, rules).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let listener = std::net::TcpListener::bind(listen)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let (shutdown, stop) = oneshot::channel::<()>();
        let st = state.clone();
        let thread = std::thread::Builder::new().name(format!("faultproxy-{}", addr.port())).spawn(move || {
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!("faultproxy: {e}");
                        return;
                    }
                };
                tokio::select! {
                    _ = serve(listener, st) => {}
                    _ = stop => {}
                }
            });
            // dropping the runtime here cancels the connection tasks
        })?;
        Ok(FaultProxy { addr, state, shutdown: Some(shutdown), thread: Some(thread) })
    }

    /// Listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The shared counters and rules.
    pub fn state(&self) -> Arc<ProxyState> {
        self.state.clone()
    }

    /// See [`ProxyState::set_rules`].
    pub fn set_rules(&self, rules: Vec<Rule>) {
        self.state.set_rules(rules)
    }

    /// See [`ProxyState::exchanges`].
    pub fn exchanges(&self) -> Vec<Exchange> {
        self.state.exchanges()
    }

    /// See [`ProxyState::request_body_bytes`].
    pub fn request_body_bytes(&self) -> u64 {
        self.state.request_body_bytes()
    }

    /// See [`ProxyState::method_count`].
    pub fn method_count(&self, method: &str) -> usize {
        self.state.method_count(method)
    }

    /// See [`ProxyState::rule_stats`].
    pub fn rule_stats(&self, index: usize) -> RuleStats {
        self.state.rule_stats(index)
    }

    /// See [`ProxyState::emulate_referrers_api`].
    pub fn emulate_referrers_api(&self, on: bool) {
        self.state.emulate_referrers_api(on)
    }

    /// See [`ProxyState::paginate_referrers`].
    pub fn paginate_referrers(&self, n: u64) {
        self.state.paginate_referrers(n)
    }

    /// See [`ProxyState::referrers_of`].
    pub fn referrers_of(&self, repo: &str, subject: &str) -> Vec<serde_json::Value> {
        self.state.referrers_of(repo, subject)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rules() {
        let rules = parse_rules(
            "method=put path=/blobs/ nth=2 status=503; every=3 drop-request=64k; \
             path-re=^/v2/.*/manifests/ stall=1.5s status=429 retry-after=3",
        )
        .unwrap();
        assert_eq!(rules.len(), 3);
        assert_eq!(rules[0].method, Some(Method::PUT));
        assert_eq!(rules[0].when, When::Nth(2));
        assert_eq!(rules[0].status, Some(StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(rules[1].when, When::EveryNth(3));
        assert_eq!(rules[1].drop_request_after, Some(65536));
        assert!(rules[2].matches(&Method::GET, "/v2/a/b/manifests/latest"));
        assert!(!rules[2].matches(&Method::GET, "/x/v2/a/manifests/latest"));
        assert_eq!(rules[2].stall, Some(Duration::from_millis(1500)));
        assert_eq!(rules[2].retry_after, Some(3));
        assert!(Rule::from_str("method=PUT").is_err(), "no action");
        assert!(Rule::from_str("nth=1 every=2 status=500").is_err());
        assert!(Rule::from_str("status=abc").is_err());
        assert!(Rule::from_str("bogus=1 status=500").is_err());
    }

    #[test]
    fn when_counts() {
        let hits = |w: When| (1..=6).filter(|&n| w.holds(n)).collect::<Vec<_>>();
        assert_eq!(hits(When::Nth(3)), [3]);
        assert_eq!(hits(When::EveryNth(2)), [2, 4, 6]);
        assert_eq!(hits(When::FirstN(2)), [1, 2]);
        assert_eq!(hits(When::AfterN(4)), [5, 6]);
        assert_eq!(hits(When::Always).len(), 6);
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("10").unwrap(), 10);
        assert_eq!(parse_size("4k").unwrap(), 4096);
        assert_eq!(parse_size("2MiB").unwrap(), 2 << 20);
        assert!(parse_size("x").is_err());
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert!(parse_duration("5").is_err());
    }

    #[test]
    fn upstream_forms() {
        assert_eq!(parse_upstream("127.0.0.1:5000").unwrap(), "http://127.0.0.1:5000");
        assert_eq!(parse_upstream("http://localhost:80/").unwrap(), "http://localhost:80");
        assert!(parse_upstream("https://127.0.0.1:5000").is_err());
        assert!(parse_upstream("http://127.0.0.1:5000/v2/").is_err());
    }

    #[test]
    fn v2_paths() {
        assert_eq!(
            split_v2_path("/v2/a/b/referrers/sha256:ab?artifactType=x%2Fy", "referrers"),
            Some(("a/b", "sha256:ab", "artifactType=x%2Fy"))
        );
        assert_eq!(split_v2_path("/v2/a/manifests/v1", "manifests"), Some(("a", "v1", "")));
        assert_eq!(split_v2_path("/v2/a/blobs/uploads/u", "manifests"), None);
        assert_eq!(split_v2_path("/v2/a/manifests/", "manifests"), None);
        assert_eq!(split_v2_path("/x/a/manifests/v1", "manifests"), None);
    }

    #[test]
    fn referrer_entries_follow_the_spec() {
        let subject =
            r#""subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:aa","size":1}"#;
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.x.config","digest":"sha256:bb","size":2}},"layers":[],{subject},"annotations":{{"k":"v"}}}}"#
        );
        let (s, d) = referrer_entry(m.as_bytes(), None).unwrap();
        assert_eq!(s, "sha256:aa");
        assert_eq!(d["artifactType"], "application/vnd.x.config", "config media type when no artifactType");
        assert_eq!(d["annotations"]["k"], "v");
        assert_eq!(d["size"], m.len());
        assert_eq!(d["digest"], crate::model::digest::Digest::sha256_of(m.as_bytes()).to_string());
        // an index without mediaType or artifactType: the Content-Type, no artifactType
        let i = format!(r#"{{"schemaVersion":2,"manifests":[],{subject}}}"#);
        let (_, d) = referrer_entry(i.as_bytes(), Some("application/vnd.oci.image.index.v1+json")).unwrap();
        assert_eq!(d["mediaType"], "application/vnd.oci.image.index.v1+json");
        assert!(d.get("artifactType").is_none() && d.get("annotations").is_none(), "{d}");
        let with_type = i.replace("\"manifests\"", "\"artifactType\":\"application/vnd.x\",\"manifests\"");
        assert_eq!(referrer_entry(with_type.as_bytes(), Some("x/y")).unwrap().1["artifactType"], "application/vnd.x");
        assert!(referrer_entry(br#"{"schemaVersion":2,"layers":[]}"#, None).is_none(), "no subject");
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
