//! A tiny forward proxy for tests of `HTTPS_PROXY`/`HTTP_PROXY`: `CONNECT host:port`
//! tunnels and absolute-form `GET http://host:port/...` requests, every one sent to
//! `127.0.0.1:port` whatever the host (so a name that never resolves, such as
//! `hoist-proxied.test`, reaches a local registry only through the proxy). It records the
//! first request line of each connection.
//!
//! Not for: anything but loopback tests; no auth, no keep-alive across hosts (a connection
//! goes to the host of its first request).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

/// Bytes of a request head the proxy reads before giving up on it.
const MAX_HEAD: usize = 64 << 10;

/// A running forward proxy on 127.0.0.1; stopped on drop.
pub struct ForwardProxy {
    port: u16,
    seen: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl ForwardProxy {
    /// Start listening on a free port.
    pub fn start() -> ForwardProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind forward proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (seen.clone(), stop.clone());
        thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let s = s.clone();
                thread::spawn(move || {
                    let _ = serve(conn, &s);
                });
            }
        });
        ForwardProxy { port, seen, stop }
    }

    /// `http://127.0.0.1:PORT`, the value for `HTTPS_PROXY`/`HTTP_PROXY`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The first request line of every connection so far (`CONNECT host:port HTTP/1.1`,
    /// `GET http://host:port/v2/ HTTP/1.1`).
    pub fn requests(&self) -> Vec<String> {
        self.seen.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

impl Drop for ForwardProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(mut client: TcpStream, seen: &Mutex<Vec<String>>) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        let n = client.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if head.len() > MAX_HEAD {
            return Ok(());
        }
    };
    let text = String::from_utf8_lossy(&head[..end]).into_owned();
    let line = text.lines().next().unwrap_or("").to_string();
    if let Ok(mut s) = seen.lock() {
        s.push(line.clone());
    }
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let authority = if method == "CONNECT" {
        target.to_string()
    } else {
        let rest = target.strip_prefix("http://").unwrap_or("");
        rest.split('/').next().unwrap_or("").to_string()
    };
    let port: u16 = match authority.rsplit_once(':').and_then(|(_, p)| p.parse().ok()) {
        Some(p) => p,
        None if method == "CONNECT" => 443,
        None => 80,
    };
    let mut upstream = match TcpStream::connect(("127.0.0.1", port)) {
        Ok(u) => u,
        Err(_) => {
            client.write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")?;
            return Ok(());
        }
    };
    if method == "CONNECT" {
        client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")?;
        upstream.write_all(&head[end..])?;
    } else {
        // Go's server (distribution) takes the absolute form as is
        upstream.write_all(&head)?;
    }
    let (mut c2, mut u2) = (client.try_clone()?, upstream.try_clone()?);
    let t = thread::spawn(move || {
        let _ = std::io::copy(&mut u2, &mut c2);
        let _ = c2.shutdown(Shutdown::Write);
    });
    let _ = std::io::copy(&mut client, &mut upstream);
    let _ = upstream.shutdown(Shutdown::Write);
    let _ = t.join();
    Ok(())
}
