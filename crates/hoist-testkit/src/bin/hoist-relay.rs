//! hoist-relay: the WAN relay of `hoist_testkit::relay` as a program, for benchmarks.
//!
//! Prints the listen address (`127.0.0.1:PORT`) as the first line on stdout; on SIGINT or
//! SIGTERM prints the byte counters as one JSON line on stdout and exits.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use hoist_testkit::proxy::parse_size;
use hoist_testkit::relay::{serve, RelayConfig, RelayStats};

#[derive(Parser, Debug)]
#[command(name = "hoist-relay", about = "TCP relay adding delay, a per-connection window and a shared rate limit")]
struct Args {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Upstream address (HOST:PORT).
    #[arg(long)]
    upstream: SocketAddr,
    /// Round-trip time in milliseconds (half of it is added in each direction).
    #[arg(long, default_value_t = 50)]
    rtt_ms: u64,
    /// Bytes in flight per connection and direction (k/m/g suffixes: KiB/MiB/GiB); 0: no cap.
    #[arg(long, default_value = "2m")]
    window: String,
    /// Link rate in Mbit/s per direction, shared by all connections; 0: unlimited.
    #[arg(long, default_value_t = 1000)]
    mbit: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let window = parse_size(&args.window).map_err(anyhow::Error::msg)?;
    let config = RelayConfig {
        delay: Duration::from_micros(args.rtt_ms * 500),
        window: usize::try_from(window)?,
        rate: args.mbit * 1_000_000 / 8,
    };
    let stats = Arc::new(RelayStats::default());
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
            _ = serve(listener, args.upstream, config, stats.clone()) => {}
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        let (up, down, connections) = stats.snapshot();
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", serde_json::json!({"up": up, "down": down, "connections": connections}))?;
        out.flush()?;
        anyhow::Ok(())
    })
}
