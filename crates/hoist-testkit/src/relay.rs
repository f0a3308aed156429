//! A TCP relay that makes loopback look like a wide-area link, for benchmarks and tests of
//! transfers over real networks (`tc netem` is not available on the test machines).
//!
//! Every accepted connection is relayed to one upstream address; each direction of each
//! connection suffers three things:
//! - a fixed **one-way delay** (`delay`): bytes read from one side are written to the other
//!   side `delay` later;
//! - a **window** (`window` bytes in flight per connection and direction), which models a TCP
//!   window: a sender may have at most `window` bytes not yet acknowledged, and bytes are
//!   acknowledged one round trip after they were sent (delivered after `delay`, the ack
//!   travelling back another `delay`). One connection therefore tops out at `window / (2 *
//!   delay)`: 2 MiB at 50 ms RTT is 40 MiB/s;
//! - a **bandwidth shaper** (`rate` bytes per second) shared by all connections of the relay
//!   (one token bucket per direction, as a full-duplex link has): the link as a whole tops out
//!   at `rate`.
//!
//! The relay counts the bytes it carried per direction ([`RelayStats`]), so tests can check
//! how much a transfer really moved. It sees bytes only, not HTTP: put it between hoist and the
//! registry (or a fault proxy).
//!
//! Not modelled: loss, reordering, slow start. The sockets on both sides still have their own
//! (loopback) buffers, so a connection can burst a little above the window at its start.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::Instant;

/// Bytes read from a socket at a time (and the shaper's burst).
const READ_BUF: usize = 64 << 10;

/// How a [`Relay`] shapes traffic.
#[derive(Clone, Copy, Debug)]
pub struct RelayConfig {
    /// One-way delay per direction (RTT / 2).
    pub delay: Duration,
    /// Bytes in flight (sent, not yet acknowledged) per connection and direction; 0: no cap.
    pub window: usize,
    /// Link rate in bytes per second per direction, shared by all connections; 0: unlimited.
    pub rate: u64,
}

impl RelayConfig {
    /// The benchmark link of issue 18: 50 ms RTT, 2 MiB in flight per connection, 1 Gbit/s.
    pub fn wan() -> Self {
        RelayConfig { delay: Duration::from_millis(25), window: 2 << 20, rate: 1_000_000_000 / 8 }
    }

    /// Throughput limit of one connection in bytes per second (`window / RTT`, capped by the
    /// link rate).
    pub fn connection_limit(&self) -> f64 {
        let rtt = (2 * self.delay).as_secs_f64();
        let by_window = if self.window == 0 || rtt == 0.0 { f64::INFINITY } else { self.window as f64 / rtt };
        let by_rate = if self.rate == 0 { f64::INFINITY } else { self.rate as f64 };
        by_window.min(by_rate)
    }
}

/// Bytes a relay carried.
#[derive(Debug, Default)]
pub struct RelayStats {
    /// Client to upstream.
    pub up: AtomicU64,
    /// Upstream to client.
    pub down: AtomicU64,
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Connections open now (accepted, not yet closed on both sides): zero after a killed
    /// client's connections have drained, so the counters above then hold everything it sent.
    pub open: AtomicU64,
}

impl RelayStats {
    /// `(up, down, connections)` now.
    pub fn snapshot(&self) -> (u64, u64, u64) {
        (self.up.load(Ordering::SeqCst), self.down.load(Ordering::SeqCst), self.connections.load(Ordering::SeqCst))
    }
}

/// A token bucket shared by every connection of one direction.
struct Bucket {
    rate: f64,
    burst: f64,
    /// (tokens, time of the last update)
    state: Mutex<(f64, Instant)>,
}

impl Bucket {
    fn new(rate: u64) -> Option<Arc<Bucket>> {
        (rate > 0).then(|| {
            let burst = (READ_BUF as f64).max(rate as f64 / 1000.0);
            Arc::new(Bucket { rate: rate as f64, burst, state: Mutex::new((burst, Instant::now())) })
        })
    }

    /// Wait until `n` bytes may go onto the link. Tokens may go negative: the caller waits
    /// for the debt it made, so concurrent connections queue up in arrival order.
    async fn take(&self, n: usize) {
        let wait = {
            let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let (tokens, last) = *s;
            let tokens = (tokens + now.duration_since(last).as_secs_f64() * self.rate).min(self.burst) - n as f64;
            *s = (tokens, now);
            if tokens < 0.0 {
                Duration::from_secs_f64(-tokens / self.rate)
            } else {
                Duration::ZERO
            }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// A running relay with its own thread and runtime. Stops on drop.
pub struct Relay {
    addr: SocketAddr,
    stats: Arc<RelayStats>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Relay {
    /// A relay on `127.0.0.1:<free port>` in front of `upstream`.
    pub fn start(upstream: SocketAddr, config: RelayConfig) -> io::Result<Relay> {
        let listener = std::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(RelayStats::default());
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        let (shutdown, stop) = oneshot::channel::<()>();
        let st = stats.clone();
        let thread = std::thread::Builder::new().name(format!("relay-{}", addr.port())).spawn(move || {
            runtime.block_on(async move {
                let Ok(listener) = TcpListener::from_std(listener) else { return };
                tokio::select! {
                    _ = serve(listener, upstream, config, st) => {}
                    _ = stop => {}
                }
            });
        })?;
        Ok(Relay { addr, stats, shutdown: Some(shutdown), thread: Some(thread) })
    }

    /// Listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The byte counters.
    pub fn stats(&self) -> Arc<RelayStats> {
        self.stats.clone()
    }

    /// Waits until no connection is open (a killed client's bytes have all gone through and
    /// both sides closed) or `limit` passed; whether it drained.
    pub fn wait_drained(&self, limit: Duration) -> bool {
        let start = std::time::Instant::now();
        while self.stats.open.load(Ordering::SeqCst) > 0 {
            if start.elapsed() > limit {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Accept connections on `listener` and relay each to `upstream` until the future is dropped.
pub async fn serve(listener: TcpListener, upstream: SocketAddr, config: RelayConfig, stats: Arc<RelayStats>) {
    let up_bucket = Bucket::new(config.rate);
    let down_bucket = Bucket::new(config.rate);
    loop {
        let client = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!("relay accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        stats.connections.fetch_add(1, Ordering::SeqCst);
        stats.open.fetch_add(1, Ordering::SeqCst);
        let (stats, up_bucket, down_bucket) = (stats.clone(), up_bucket.clone(), down_bucket.clone());
        tokio::spawn(async move {
            /// Counts the connection closed when the task ends, however it ends.
            struct Open(Arc<RelayStats>);
            impl Drop for Open {
                fn drop(&mut self) {
                    self.0.open.fetch_sub(1, Ordering::SeqCst);
                }
            }
            let _open = Open(stats.clone());
            let Ok(server) = TcpStream::connect(upstream).await else { return };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            let st = stats.clone();
            let up = tokio::spawn(pipe(cr, sw, config, up_bucket, move |n| {
                st.up.fetch_add(n, Ordering::Relaxed);
            }));
            let down = pipe(sr, cw, config, down_bucket, move |n| {
                stats.down.fetch_add(n, Ordering::Relaxed);
            });
            down.await;
            let _ = up.await;
        });
    }
}

/// One direction of one connection: read, wait for window and link, deliver `delay` later,
/// acknowledge (free the window) another `delay` later.
async fn pipe(
    mut rd: tokio::net::tcp::OwnedReadHalf,
    mut wr: tokio::net::tcp::OwnedWriteHalf,
    config: RelayConfig,
    bucket: Option<Arc<Bucket>>,
    count: impl Fn(u64) + Send + 'static,
) {
    let window = (config.window > 0).then(|| Arc::new(Semaphore::new(config.window)));
    let per_read = if config.window > 0 { READ_BUF.min(config.window) } else { READ_BUF };
    // (delivery time, bytes); empty bytes = end of stream
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let delay = config.delay;
    let win = window.clone();
    let writer = tokio::spawn(async move {
        while let Some((at, data)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if data.is_empty() {
                break;
            }
            // Counted before the write: once write_all returns, the reader may already have
            // everything and read the counters (a test did, and saw one chunk short). A write
            // that then fails overcounts by one chunk, which errs on the safe side for the
            // "at most N x the blob" checks that use these counters.
            count(data.len() as u64);
            if wr.write_all(&data).await.is_err() {
                return;
            }
            if let Some(w) = &win {
                // the ack travels back for another `delay`
                let (w, n) = (w.clone(), data.len());
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    w.add_permits(n);
                });
            }
        }
        let _ = wr.shutdown().await;
    });
    let mut buf = vec![0u8; per_read];
    loop {
        let permit = match &window {
            Some(w) => match w.clone().acquire_many_owned(per_read as u32).await {
                Ok(p) => Some(p),
                Err(_) => break,
            },
            None => None,
        };
        let n = match rd.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(p) = permit {
            // keep the permits of the bytes in flight; give back the rest
            p.forget();
            if let Some(w) = &window {
                w.add_permits(per_read - n);
            }
        }
        if let Some(b) = &bucket {
            b.take(n).await;
        }
        if tx.send((Instant::now() + delay, buf[..n].to_vec())).is_err() {
            break;
        }
    }
    let _ = tx.send((Instant::now() + delay, Vec::new()));
    let _ = writer.await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// An echo-free sink upstream that counts what it received and answers with `reply` bytes.
    fn sink(reply: usize) -> SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                std::thread::spawn(move || {
                    let mut b = [0u8; 1];
                    if s.read_exact(&mut b).is_ok() {
                        let data = vec![7u8; reply];
                        let _ = s.write_all(&data);
                    }
                });
            }
        });
        addr
    }

    fn download(relay: &Relay, n: usize) -> Duration {
        let t = std::time::Instant::now();
        let mut c = std::net::TcpStream::connect(relay.addr()).unwrap();
        c.write_all(b"x").unwrap();
        let mut got = vec![0u8; n];
        c.read_exact(&mut got).unwrap();
        t.elapsed()
    }

    #[test]
    fn delay_and_window_bound_one_connection() {
        let n = 4 << 20;
        let up = sink(n);
        // 20 ms each way, 512 KiB window: <= 512 KiB per 40 ms = 12.8 MiB/s; 4 MiB takes >= ~0.3 s
        let cfg = RelayConfig { delay: Duration::from_millis(20), window: 512 << 10, rate: 0 };
        let relay = Relay::start(up, cfg).unwrap();
        let took = download(&relay, n);
        let expect = n as f64 / cfg.connection_limit();
        assert!(took.as_secs_f64() > expect * 0.8, "took {took:?}, window limit says {expect:.2}s");
        assert!(took.as_secs_f64() < expect * 3.0 + 1.0, "took {took:?}, expected about {expect:.2}s");
        let (up_b, down_b, conns) = relay.stats().snapshot();
        assert_eq!((up_b, down_b, conns), (1, n as u64, 1));
    }

    #[test]
    fn rate_is_shared_by_connections() {
        let n = 2 << 20;
        let up = sink(n);
        // 8 MiB/s for the whole link; two connections of 2 MiB take >= 0.5 s together
        let cfg = RelayConfig { delay: Duration::from_millis(1), window: 0, rate: 8 << 20 };
        let relay = Arc::new(Relay::start(up, cfg).unwrap());
        let t = std::time::Instant::now();
        let hs: Vec<_> = (0..2)
            .map(|_| {
                let r = relay.clone();
                std::thread::spawn(move || download(&r, n))
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        let took = t.elapsed().as_secs_f64();
        assert!(took > 0.4, "two connections through an 8 MiB/s link took {took:.2}s");
        assert_eq!(relay.stats().snapshot().1, 2 * n as u64);
    }
}
