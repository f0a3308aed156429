//! The fault rules: which requests a rule matches ([`PathMatch`], method, [`When`]), what it
//! does to them, and the text form the `hoist-faultproxy` binary takes ([`parse_rules`]).

use std::str::FromStr;
use std::time::Duration;

use hyper::{Method, StatusCode};

/// Request bodies a [`Rule::buffer_request`] holds at most (larger ones are refused with 413).
pub const MAX_BUFFERED_BODY: usize = 256 << 20;

/// Which path a rule applies to.
#[derive(Clone, Debug)]
pub enum PathMatch {
    /// The path and query contain this string.
    Contains(String),
    /// The path and query match this regular expression (unanchored).
    Regex(regex::Regex),
}

impl PathMatch {
    pub(super) fn is_match(&self, path: &str) -> bool {
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
    pub(super) fn holds(self, n: u64) -> bool {
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
    pub(super) method: Option<Method>,
    pub(super) path: Option<PathMatch>,
    pub(super) when: When,
    pub(super) status: Option<StatusCode>,
    pub(super) retry_after: Option<u64>,
    pub(super) headers: Vec<(String, String)>,
    pub(super) max_body: Option<u64>,
    pub(super) drop_request_after: Option<u64>,
    pub(super) drop_response_after: Option<u64>,
    pub(super) stall: Option<Duration>,
    pub(super) strip_request_headers: Vec<String>,
    pub(super) strip_response_headers: Vec<String>,
    pub(super) response_headers: Vec<(String, String)>,
    pub(super) buffer_request: bool,
    pub(super) min_body: Option<u64>,
    pub(super) stable_uploads: bool,
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

    /// Remove this header from the request before forwarding it (e.g. `Range`, to play a
    /// server that ignores ranges).
    pub fn strip_request_header(mut self, name: &str) -> Self {
        self.strip_request_headers.push(name.to_owned());
        self
    }

    /// Forward without the `Range` header: the upstream answers `200` with the whole body,
    /// as a registry or CDN that ignores ranges does.
    pub fn ignore_range(self) -> Self {
        self.strip_request_header("range")
    }

    /// Remove this header from the forwarded response (e.g. `Content-Range`).
    pub fn strip_response_header(mut self, name: &str) -> Self {
        self.strip_response_headers.push(name.to_owned());
        self
    }

    /// Set this header on the forwarded response, replacing the upstream's (e.g. a false
    /// `Content-Range`).
    pub fn response_header(mut self, name: &str, value: &str) -> Self {
        self.response_headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// A chunked upload whose accepted chunks, all but the last, are under `bytes` is refused
    /// at its closing PUT with `400 SIZE_INVALID`, as ECR's layer upload completion refuses S3
    /// parts under 5 MiB. Aim the rule at `/blobs/uploads/` (PATCH and PUT).
    pub fn min_body(mut self, bytes: u64) -> Self {
        self.min_body = Some(bytes);
        self
    }

    /// Send every request of an upload session with the session's newest `_state` (the one
    /// in the last `Location` the registry answered): plays a registry whose session URL is
    /// stable and whose status GET tells what it holds. distribution 2.8.2 signs the offset
    /// into `_state`, so a client killed after its last PATCH body left, but before the answer
    /// came, would otherwise find the session broken.
    pub fn stable_uploads(mut self) -> Self {
        self.stable_uploads = true;
        self
    }

    /// Read the whole request body (up to [`MAX_BUFFERED_BODY`]) before forwarding any of
    /// it: a client that goes away mid-body leaves nothing upstream. This plays a registry
    /// whose chunks are atomic (ECR's chunks are S3 parts), unlike distribution 2.8.2, which
    /// keeps a cut PATCH's bytes and so loses the session.
    pub fn buffer_request(mut self) -> Self {
        self.buffer_request = true;
        self
    }

    pub(super) fn rewrites(&self) -> bool {
        !(!self.buffer_request
            && !self.stable_uploads
            && self.strip_request_headers.is_empty()
            && self.strip_response_headers.is_empty()
            && self.response_headers.is_empty())
    }

    pub(super) fn matches(&self, method: &Method, path: &str) -> bool {
        self.method.as_ref().is_none_or(|m| m == method) && self.path.as_ref().is_none_or(|p| p.is_match(path))
    }

    pub(super) fn stall_only(&self) -> bool {
        self.status.is_none()
            && !self.rewrites()
            && self.min_body.is_none()
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
/// `max-body=BYTES`, `drop-request=BYTES`, `drop-response=BYTES`, `stall=DURATION`,
/// `min-body=BYTES`, `buffer-request=true`, `stable-uploads=true`, `strip-request-header=NAME` (e.g. `Range`), `strip-response-header=NAME`,
/// `response-header=Name:Value` (set on the forwarded response).
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
                "min-body" => {
                    rule.min_body = Some(parse_size(value)?);
                    has_action = true;
                }
                "stable-uploads" => {
                    rule.stable_uploads = value == "1" || value == "true";
                    has_action = true;
                }
                "buffer-request" => {
                    rule.buffer_request = value == "1" || value == "true";
                    has_action = true;
                }
                "strip-request-header" => {
                    rule.strip_request_headers.push(value.to_owned());
                    has_action = true;
                }
                "strip-response-header" => {
                    rule.strip_response_headers.push(value.to_owned());
                    has_action = true;
                }
                "response-header" => {
                    let (n, v) =
                        value.split_once(':').ok_or_else(|| format!("rule token {token:?}: expected Name:Value"))?;
                    rule.response_headers.push((n.to_owned(), v.to_owned()));
                    has_action = true;
                }
                _ => return Err(format!("rule token {token:?}: unknown key {key:?}")),
            }
        }
        if !has_action {
            return Err(format!("rule {s:?}: no action (status, max-body, drop-request, drop-response, stall, strip-request-header, strip-response-header, response-header)"));
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
}
