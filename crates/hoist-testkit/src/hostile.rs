//! Pieces for hostile test servers written inside a test (a `TcpListener` on 127.0.0.1 that
//! answers what the test wants, however wrong): reading a request's head; and the one accept
//! loop of the kit's servers ([`serve_connections`], [`serve_http`]).

use std::collections::HashMap;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// The head of one HTTP/1.1 request: method, path and headers (names lower-cased).
pub struct RequestHead {
    /// `GET`, `PUT`, ...
    pub method: String,
    /// The request target as sent (`/v2/a/b/manifests/v1`).
    pub path: String,
    /// Header names in lower case, the last value of each.
    pub headers: HashMap<String, String>,
}

/// Reads the request line and the headers from `r`; `None` when the client closed first.
pub async fn read_request_head<R: AsyncRead + Unpin>(r: &mut BufReader<R>) -> Option<RequestHead> {
    let mut line = String::new();
    if r.read_line(&mut line).await.unwrap_or(0) == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).await.unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    Some(RequestHead { method, path, headers })
}

/// Starts a server on 127.0.0.1 (its own thread and current-thread runtime) that hands every
/// accepted connection to `serve`, each on a task of its own; returns the port.
pub fn serve_connections<F, Fut>(serve: F) -> u16
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    accept_loop(tokio::runtime::Builder::new_current_thread(), serve)
}

/// Starts an HTTP/1.1 server on 127.0.0.1 (its own thread, a runtime of two workers) that
/// answers every request with `handle`; returns the port. It stops with the process.
pub fn serve_http<H, Fut, B>(handle: H) -> u16
where
    H: Fn(hyper::Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = hyper::Response<B>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.worker_threads(2);
    accept_loop(rt, move |sock| {
        let handle = handle.clone();
        async move {
            let svc = hyper::service::service_fn(move |req| {
                let answer = handle(req);
                async move { Ok::<_, std::convert::Infallible>(answer.await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(sock), svc)
                .await;
        }
    })
}

/// The one accept loop of the test servers: bind 127.0.0.1, run `rt` on a thread of its own,
/// hand each connection to `serve` on a task of its own.
fn accept_loop<F, Fut>(mut rt: tokio::runtime::Builder, serve: F) -> u16
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
    listener.set_nonblocking(true).expect("nonblocking listener");
    let port = listener.local_addr().expect("local addr").port();
    let rt = rt.enable_all().build().expect("runtime");
    std::thread::spawn(move || {
        rt.block_on(async move {
            let l = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            loop {
                let Ok((sock, _)) = l.accept().await else { continue };
                tokio::spawn(serve(sock));
            }
        });
    });
    port
}
