//! The trait set every transport implements: a `Source` content is read from and a
//! `Destination` content is written to, and the transports themselves. `copy::graph` is the
//! only code that moves content between them; transports never call each other.

pub mod archive;
pub mod endpoint;
pub mod layout;
pub mod memory;
pub mod registry;

pub use endpoint::{open_destination, open_source, Endpoint};

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::{AsyncRead, ReadBuf};

use crate::error::{Error, Result};
use crate::model::descriptor::Descriptor;
use crate::model::digest::Hasher;
use crate::model::document::Document;

/// A stream of blob bytes.
pub type BlobStream = Pin<Box<dyn AsyncRead + Send>>;

/// Where to read content from.
#[async_trait]
pub trait Source: Send + Sync {
    /// Human-readable location used in errors, e.g. `oci:./out`.
    fn location(&self) -> String;

    /// Resolve a tag or digest (`None`: the transport's default root) to a descriptor.
    async fn resolve(&self, reference: Option<&str>) -> Result<Descriptor>;

    /// Raw bytes of a manifest or index (not yet verified).
    async fn fetch_manifest_bytes(&self, desc: &Descriptor) -> Result<Bytes>;

    /// A verified, parsed manifest or index.
    async fn fetch_document(&self, desc: &Descriptor) -> Result<Document> {
        let bytes = self.fetch_manifest_bytes(desc).await?;
        Document::from_fetched(desc, bytes, &self.location())
    }

    /// Stream a blob from `offset` (0 for the whole blob). Callers verify the bytes.
    async fn open_blob(&self, desc: &Descriptor, offset: u64) -> Result<BlobStream>;

    /// Path of the blob on the local filesystem, when the source keeps it as a file.
    fn blob_path(&self, _desc: &Descriptor) -> Option<PathBuf> {
        None
    }

    /// Every root this source holds with its tag, if it can enumerate them (layouts, archives).
    async fn roots(&self) -> Result<Vec<(Descriptor, Option<String>)>> {
        Err(Error::Unsupported(format!("{} cannot list its roots; name a tag or digest", self.location())))
    }

    /// Tags known to this source.
    async fn list_tags(&self) -> Result<Vec<String>> {
        Ok(self.roots().await?.into_iter().filter_map(|(_, t)| t).collect())
    }

    /// Registry host and repository, for cross-repository mounts.
    fn registry_repo(&self) -> Option<(String, String)> {
        None
    }
}

/// What happened to one blob during a copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobOutcome {
    Uploaded,
    Existed,
    Mounted,
}

/// Where to write content to. Blobs are verified before they become visible.
#[async_trait]
pub trait Destination: Send + Sync {
    fn location(&self) -> String;

    async fn has_blob(&self, desc: &Descriptor) -> Result<bool>;

    async fn has_manifest(&self, desc: &Descriptor) -> Result<bool>;

    /// Store a blob read from `src`. The destination checks size and digest before
    /// the blob becomes visible, and may mount it instead when `src` allows.
    async fn push_blob(&self, desc: &Descriptor, src: &dyn Source, progress: &dyn Progress) -> Result<BlobOutcome>;

    /// Store a manifest or index by digest and, when `tag` is set, tag it.
    async fn push_manifest(&self, desc: &Descriptor, bytes: Bytes, tag: Option<&str>) -> Result<()>;

    /// Called once per root, before anything of it is copied. A destination that holds only
    /// some kinds of content refuses here, before writing anything (docker-archive: images
    /// only), or names a child of an index to copy instead (one platform); default: copy `root`.
    async fn select_root(&self, _src: &dyn Source, _root: &Document) -> Result<Option<Descriptor>> {
        Ok(None)
    }

    /// Record `desc` as an untagged root (layouts keep it in index.json); default no-op.
    async fn add_root(&self, _desc: &Descriptor) -> Result<()> {
        Ok(())
    }

    /// Upper bound on concurrent blob pushes (archives write one entry at a time: 1).
    fn max_jobs(&self) -> Option<usize> {
        None
    }

    /// Finish the write (archives write their trailer here).
    async fn finish(&self) -> Result<()> {
        Ok(())
    }
}

/// Progress callbacks; implementations must be cheap and thread-safe.
pub trait Progress: Send + Sync {
    fn start(&self, _desc: &Descriptor) {}
    /// `n` more bytes of `desc` moved. After a retry the count may restart: see `reset`.
    fn advance(&self, _desc: &Descriptor, _n: u64) {}
    /// Bytes for `desc` restart from `offset` (a retry or resume).
    fn reset(&self, _desc: &Descriptor, _offset: u64) {}
    fn done(&self, _desc: &Descriptor, _outcome: BlobOutcome) {}
    fn message(&self, _msg: &str) {}
}

/// Progress that reports nothing.
pub struct NoProgress;
impl Progress for NoProgress {}

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
    pub fn new(inner: R, desc: &Descriptor, location: impl Into<String>) -> Self {
        VerifyReader {
            inner,
            hasher: Some(desc.digest.algorithm().hasher()),
            desc: desc.clone(),
            location: location.into(),
            seen: 0,
        }
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

/// Turn an io error produced by `VerifyReader` back into the crate error it carries.
pub fn unwrap_io_error(e: std::io::Error, path: impl Into<PathBuf>) -> Error {
    if e.get_ref().is_some_and(|inner| inner.is::<Error>()) {
        if let Ok(inner) = e.into_inner().expect("checked").downcast::<Error>() {
            return *inner;
        }
        unreachable!()
    }
    Error::io(path, e)
}

/// Shared handle to a progress sink.
pub type SharedProgress = Arc<dyn Progress>;

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
}
