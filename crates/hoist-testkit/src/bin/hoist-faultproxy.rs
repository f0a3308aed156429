//! hoist-faultproxy: the fault-injecting HTTP/1.1 reverse proxy of `hoist_testkit::proxy` as a
//! program, for shell tests and benchmarks.
//!
//! Prints the listen address (`127.0.0.1:PORT`) as the first line on stdout; on SIGINT or
//! SIGTERM prints the counters as one JSON line on stdout and exits.

use std::io::Write;
use std::net::SocketAddr;

use clap::Parser;
use hoist_testkit::proxy::{parse_rules, serve, ProxyState};

#[derive(Parser, Debug)]
#[command(
    name = "hoist-faultproxy",
    about = "Fault-injecting HTTP/1.1 reverse proxy for registry tests",
    after_help = "RULES: ';'-separated rules of whitespace-separated key=value tokens.\n  \
        filters: method=PUT path=SUBSTRING path-re=REGEX\n  \
        when:    nth=N every=N times=N after=N (default: every matching request)\n  \
        actions: status=CODE retry-after=SECS header=Name:Value max-body=SIZE\n           \
        drop-request=SIZE drop-response=SIZE stall=DURATION strip-request-header=NAME\n           \
        strip-response-header=NAME response-header=Name:Value buffer-request=true\n           \
        min-body=SIZE stable-uploads=true\n\
        Example: --rules 'method=PUT path=/blobs/ nth=2 status=503; method=PATCH every=3 drop-request=1m'"
)]
struct Args {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Upstream registry origin, plain HTTP (http://HOST:PORT).
    #[arg(long)]
    upstream: String,
    /// Fault rules (see below); none = plain pass-through with counters.
    #[arg(long, default_value = "")]
    rules: String,
    /// Emulate the OCI referrers API in front of an upstream without it (OCI-Subject on
    /// manifest PUTs with a subject, GET /v2/<repo>/referrers/<digest> answered by the proxy).
    #[arg(long)]
    referrers_api: bool,
    /// On exit, also list every request as [method, path, status].
    #[arg(long)]
    log_requests: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rules = parse_rules(&args.rules).map_err(anyhow::Error::msg)?;
    let state = ProxyState::new(&args.upstream, rules).map_err(anyhow::Error::msg)?;
    state.emulate_referrers_api(args.referrers_api);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen).await?;
        let addr = listener.local_addr()?;
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{addr}")?;
            out.flush()?;
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = serve(listener, state.clone()) => r?,
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        let mut summary = state.summary_json();
        if args.log_requests {
            let reqs: Vec<_> =
                state.exchanges().into_iter().map(|e| serde_json::json!([e.method, e.path, e.status])).collect();
            summary["exchanges"] = serde_json::Value::Array(reqs);
        }
        let mut out = std::io::stdout().lock();
        writeln!(out, "{summary}")?;
        out.flush()?;
        anyhow::Ok(())
    })
}
