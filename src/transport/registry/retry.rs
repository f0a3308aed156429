//! The one retry decision of the registry client. Every loop that may try again (ping, token
//! fetch, request send, monolithic and chunked upload, upload session restarts, download
//! reconnects) keeps a [`RetryState`] and asks it after each failure. `--retries N`
//! (`RetryPolicy::max_attempts`) means the same everywhere: N attempts in all, the first
//! included, counted since the loop last made progress.

use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::StatusCode;

/// Attempts per request and transfer when nothing else is said (`--retries`).
pub const DEFAULT_RETRIES: u32 = 6;

/// Retry policy for requests: exponential backoff with jitter, bounded in count and time.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts in all (the first one included) before a loop gives up.
    pub max_attempts: u32,
    /// Wait before the second attempt; doubles for each further one.
    pub base_delay: Duration,
    /// Upper bound for the backoff between two attempts.
    pub max_delay: Duration,
    /// Upper bound for a server's Retry-After.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: DEFAULT_RETRIES,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// Backoff before attempt `attempt + 1`: `base * 2^attempt`, capped, with ±25% jitter.
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let exp = self.base_delay.saturating_mul(1u32 << attempt.min(16));
        let capped = exp.min(self.max_delay);
        let jitter = rand::random::<f64>() * 0.5 + 0.75;
        capped.mul_f64(jitter)
    }
}

/// Where one retrying loop stands: the attempts that failed since its last progress.
#[derive(Debug)]
pub(crate) struct RetryState {
    policy: RetryPolicy,
    failures: u32,
}

impl RetryState {
    /// A loop that has not failed yet.
    pub(crate) fn new(policy: &RetryPolicy) -> Self {
        RetryState { policy: policy.clone(), failures: 0 }
    }

    /// Record a failed attempt. `Some(wait)` when another attempt is allowed (the server's
    /// `Retry-After`, capped, else the backoff), `None` when the policy's attempts are spent.
    pub(crate) fn failed(&mut self, retry_after: Option<Duration>) -> Option<Duration> {
        self.failures += 1;
        if self.failures >= self.policy.max_attempts.max(1) {
            return None;
        }
        Some(
            retry_after
                .map(|d| d.min(self.policy.max_retry_after))
                .unwrap_or_else(|| self.policy.backoff(self.failures)),
        )
    }

    /// The loop made progress: the next failure counts as the first again.
    pub(crate) fn progressed(&mut self) {
        self.failures = 0;
    }

    /// Attempts that failed since the last progress.
    pub(crate) fn failures(&self) -> u32 {
        self.failures
    }
}

/// Answers worth another attempt: 408, 429 and the 5xx of an overloaded or restarting server.
pub(crate) fn retriable_status(s: StatusCode) -> bool {
    matches!(s.as_u16(), 408 | 429 | 500 | 502 | 503 | 504)
}

/// A `Retry-After: <seconds>` header.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    v.parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn n_attempts_in_all() {
        let policy = RetryPolicy { max_attempts: 3, base_delay: Duration::ZERO, ..Default::default() };
        let mut s = RetryState::new(&policy);
        // attempt 1 failed, attempt 2 allowed; attempt 2 failed, attempt 3 allowed; then none
        assert!(s.failed(None).is_some());
        assert!(s.failed(None).is_some());
        assert!(s.failed(None).is_none());
        s.progressed();
        assert_eq!(s.failures(), 0);
        assert_eq!(s.failed(Some(Duration::from_secs(1000))), Some(policy.max_retry_after));
        let mut one = RetryState::new(&RetryPolicy { max_attempts: 1, ..Default::default() });
        assert!(one.failed(None).is_none());
    }
}
