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
//! use hoist_testkit::proxy::{FaultProxy, Rule};
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
//!
//! The parts, one job each: [`rules`] (the rules and their text form), [`state`] (counters
//! and what one exchange is to suffer), [`bodies`] (request and response bodies that are
//! counted, cut or drained), [`serving`] (the hyper server loop and the forwarding of one
//! request), [`referrers`] (the referrers API emulation). This file runs a proxy on its own
//! thread ([`FaultProxy`]).

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::oneshot;

pub mod bodies;
pub mod referrers;
pub mod rules;
pub mod serving;
pub mod state;

pub use bodies::ProxyBody;
pub use rules::{parse_duration, parse_rules, parse_size, PathMatch, Rule, When};
pub use serving::serve;
pub use state::{max_concurrent, Exchange, Fault, ProxyState, RuleStats};

/// Error type of the proxy's bodies and service.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

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
