//! The bodies that pass through the proxy: streamed from the upstream, cut after N bytes, or
//! pumped from the client under the size rules (counted, cut, drained after an injected answer).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::sync::{mpsc, oneshot};

use super::state::{Fault, ProxyState};
use super::BoxError;

/// How long a request body is still read (and thrown away) after an injected error response,
/// so that the client gets to read that response (like nginx's lingering close).
pub(super) const LINGER: Duration = Duration::from_secs(30);

/// How long a cut response waits before breaking the connection, so that the head and the
/// first bytes reach the client first.
const CUT_FLUSH: Duration = Duration::from_millis(50);

/// Body type on both sides of the proxy.
pub struct ProxyBody(pub(super) BodyKind);

pub(super) enum BodyKind {
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
    pub(super) fn full(b: impl Into<Bytes>) -> Self {
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

/// Reads and counts what is left of a request body, for at most [`LINGER`].
pub(super) async fn drain(mut body: Incoming, state: &ProxyState) {
    let _ = tokio::time::timeout(LINGER, async {
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(d) = frame.data_ref() {
                state.request_body_bytes.fetch_add(d.len() as u64, Ordering::SeqCst);
            }
        }
    })
    .await;
}

pub(super) const GO_ON: u8 = 0;
pub(super) const CUT: u8 = 1;
pub(super) const TOO_LARGE: u8 = 2;

/// The size rules one request body is pumped under, and its exchange.
pub(super) struct PumpLimits {
    pub(super) max_body: Option<(usize, u64)>,
    pub(super) drop_after: Option<(usize, u64)>,
    pub(super) exchange: usize,
}

/// Moves the client's request body into the upstream channel frame by frame, counting it and
/// applying the size rules. The verdict is stored before the upstream side learns of a cut,
/// so the service sees it once the upstream request fails.
pub(super) async fn pump(
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
