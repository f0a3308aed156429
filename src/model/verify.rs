//! The hashing and verifying adapters: every byte that crosses a transport or is written into
//! a blob is hashed on the way, by one of these three.
//! - [`VerifyReader`]: a reader checked against a descriptor; fails at the first byte too
//!   many, or instead of the last bytes when the digest differs (no consumer sees a whole body
//!   that does not match). `size_only` checks the size alone, for an upload whose digest the
//!   registry checks.
//! - [`HashingReader`]: a reader that only hashes (an upload chunk whose digest is checked by
//!   the registry, a resumed download's prefix).
//! - [`HashWriter`]: a blocking writer that hashes and counts (layers being built).

use std::io::{self, Write};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

use crate::error::Error;
use crate::model::descriptor::Descriptor;
use crate::model::digest::{Algorithm, Digest, Hasher};

/// Wraps a stream, hashes it and fails as soon as it can tell the bytes do not match
/// the descriptor: on overflow, or at the last byte when the digest differs. The failing
/// read returns an error instead of the last bytes, so no consumer sees a complete body.
pub struct VerifyReader<R> {
    inner: R,
    hasher: Option<Hasher>,
    desc: Descriptor,
    location: String,
    seen: u64,
}

impl<R> VerifyReader<R> {
    /// Verify `inner` against `desc`; errors name `location`.
    pub fn new(inner: R, desc: &Descriptor, location: impl Into<String>) -> Self {
        VerifyReader {
            inner,
            hasher: Some(desc.digest.algorithm().hasher()),
            desc: desc.clone(),
            location: location.into(),
            seen: 0,
        }
    }

    /// Check only the size of `inner`, the bytes of `desc` from `offset` on: for bytes whose
    /// digest the reader's consumer has checked elsewhere (a registry checks it at the final
    /// PUT of an upload; see `Source::hashed_itself`). Nothing is hashed.
    pub fn size_only(inner: R, desc: &Descriptor, location: impl Into<String>, offset: u64) -> Self {
        VerifyReader { inner, hasher: None, desc: desc.clone(), location: location.into(), seen: offset }
    }

    /// Continue verifying from `offset` with a hasher already holding the bytes before it.
    pub fn resume(inner: R, desc: &Descriptor, location: impl Into<String>, hasher: Hasher, offset: u64) -> Self {
        VerifyReader { inner, hasher: Some(hasher), desc: desc.clone(), location: location.into(), seen: offset }
    }
}

fn verify_err(e: Error) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e)
}

impl<R: AsyncRead + Unpin> AsyncRead for VerifyReader<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let chunk = &buf.filled()[before..];
                let n = chunk.len() as u64;
                // Only errors need it: no allocation per read on the hot path.
                let what = || format!("blob {}", this.desc.digest);
                if n == 0 {
                    if this.seen != this.desc.size {
                        let e = Error::SizeMismatch {
                            what: what(),
                            location: this.location.clone(),
                            expected: this.desc.size,
                            actual: this.seen,
                        };
                        return Poll::Ready(Err(verify_err(e)));
                    }
                    return Poll::Ready(Ok(()));
                }
                if this.seen + n > this.desc.size {
                    buf.set_filled(before);
                    let e = Error::SizeMismatch {
                        what: what(),
                        location: this.location.clone(),
                        expected: this.desc.size,
                        actual: this.seen + n,
                    };
                    return Poll::Ready(Err(verify_err(e)));
                }
                if let Some(h) = this.hasher.as_mut() {
                    h.update(chunk);
                }
                this.seen += n;
                if this.seen == this.desc.size {
                    if let Some(h) = this.hasher.take() {
                        let actual = h.finish();
                        if actual != this.desc.digest {
                            buf.set_filled(before);
                            let e = Error::DigestMismatch {
                                what: what(),
                                location: this.location.clone(),
                                expected: this.desc.digest.to_string(),
                                actual: actual.to_string(),
                            };
                            return Poll::Ready(Err(verify_err(e)));
                        }
                    }
                }
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

/// Turn an io error produced by `VerifyReader` back into the crate error it carries; any other
/// io error becomes a failed read of `what` (e.g. "blob sha256:… from oci:./dir").
pub fn unwrap_io_error(e: std::io::Error, what: impl Into<String>) -> Error {
    if e.get_ref().is_some_and(|inner| inner.is::<Error>()) {
        if let Ok(inner) = e.into_inner().expect("checked").downcast::<Error>() {
            return *inner;
        }
        unreachable!()
    }
    Error::read(what, e)
}

/// A reader that hashes what passes through into a hasher it shares with its owner, who
/// reads the digest once the reader is gone (one chunk of a resumable upload).
pub struct HashingReader<R> {
    inner: R,
    hasher: Arc<Mutex<Hasher>>,
}

impl<R> HashingReader<R> {
    /// Hash everything read from `inner` into `hasher`.
    pub fn new(inner: R, hasher: Arc<Mutex<Hasher>>) -> Self {
        HashingReader { inner, hasher }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for HashingReader<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &res {
            self.hasher.lock().expect("lock").update(&buf.filled()[before..]);
        }
        res
    }
}

/// A writer that hashes and counts what passes through it.
pub struct HashWriter<W> {
    /// The writer the bytes go to.
    pub inner: W,
    hasher: Hasher,
    count: u64,
}

impl<W: Write> HashWriter<W> {
    /// Hash (sha256) and count what is written to `inner`.
    pub fn new(inner: W) -> Self {
        HashWriter { inner, hasher: Algorithm::Sha256.hasher(), count: 0 }
    }
    /// The inner writer, the digest and the number of bytes written.
    pub fn finish(self) -> (W, Digest, u64) {
        (self.inner, self.hasher.finish(), self.count)
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn verify_reader_refuses_wrong_bytes() {
        let desc = Descriptor::of_bytes("x", b"hello world");
        let mut ok = Vec::new();
        VerifyReader::new(&b"hello world"[..], &desc, "t").read_to_end(&mut ok).await.unwrap();
        assert_eq!(ok, b"hello world");
        let mut out = Vec::new();
        let e = VerifyReader::new(&b"hello WORLD"[..], &desc, "t").read_to_end(&mut out).await.unwrap_err();
        assert!(matches!(unwrap_io_error(e, "t"), Error::DigestMismatch { .. }));
        assert_ne!(out, b"hello WORLD");
        let e = VerifyReader::new(&b"hello world!"[..], &desc, "t").read_to_end(&mut Vec::new()).await.unwrap_err();
        assert!(matches!(unwrap_io_error(e, "t"), Error::SizeMismatch { .. }));
        let e = VerifyReader::new(&b"hello"[..], &desc, "t").read_to_end(&mut Vec::new()).await.unwrap_err();
        assert!(matches!(unwrap_io_error(e, "t"), Error::SizeMismatch { .. }));
    }

    #[tokio::test]
    async fn size_only_checks_the_size_and_hashes_nothing() {
        let desc = Descriptor::of_bytes("x", b"hello world");
        let mut out = Vec::new();
        VerifyReader::size_only(&b"hello WORLD"[..], &desc, "t", 0).read_to_end(&mut out).await.unwrap();
        assert_eq!(out, b"hello WORLD", "the digest is the consumer's to check");
        VerifyReader::size_only(&b"WORLD"[..], &desc, "t", 6).read_to_end(&mut Vec::new()).await.unwrap();
        for (bytes, offset) in [(&b"hello world!"[..], 0), (&b"hello"[..], 0), (&b"WORLD!"[..], 6)] {
            let e = VerifyReader::size_only(bytes, &desc, "t", offset).read_to_end(&mut Vec::new()).await.unwrap_err();
            assert!(matches!(unwrap_io_error(e, "t"), Error::SizeMismatch { .. }));
        }
    }
}
