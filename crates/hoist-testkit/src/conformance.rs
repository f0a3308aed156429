//! The transport conformance suite, one for every transport (as containerd's content store
//! test suite is): what goes in comes out byte for byte, corrupt blobs are refused and leave
//! nothing visible, and a second copy moves nothing.
//!
//! A transport joins by implementing [`Harness`] (a fresh destination, a way to read it back,
//! a check that a failed write left nothing) and running the suite in one line:
//!
//! ```no_run
//! # async fn example<MyHarness: hoist_testkit::conformance::Harness>(new: fn() -> MyHarness) {
//! hoist_testkit::conformance::run(|| new()).await;
//! # }
//! ```
//!
//! The copy goes through `hoist::copy`, the one graph copy every pair of transports uses.

use async_trait::async_trait;
use bytes::Bytes;
use hoist::copy::{self, CopyOptions};
use hoist::transport::layout::Layout;
use hoist::transport::{BlobStream, Destination, NoProgress, Source};
use hoist::{Descriptor, Digest, Error};
use tokio::io::AsyncReadExt;

/// Runs the whole suite: [`round_trip`] on one harness, then [`refusal`] on another, both made
/// by `fresh` (each must start empty).
pub async fn run<H: Harness>(mut fresh: impl FnMut() -> H) {
    round_trip(&fresh()).await;
    refusal(&fresh()).await;
}

/// The sample layout (`examples/sample-layout`, tags `multi` and `artifact`) the suite copies.
pub fn sample() -> Layout {
    Layout::open(crate::fixtures::sample_layout_dir()).unwrap()
}

/// How a transport under test is made: a fresh destination, and a way to read it back.
#[async_trait]
pub trait Harness: Send + Sync {
    /// The transport's name, for failure messages.
    fn name(&self) -> &str;
    /// A destination to copy into; the same storage each time (a second copy must move nothing).
    async fn destination(&self) -> Box<dyn Destination>;
    /// A source reading back what the destinations wrote.
    async fn reopen(&self) -> Box<dyn Source>;
    /// Tags the transport can hold (docker-archive holds only images).
    fn tags(&self) -> Vec<&'static str> {
        vec!["multi", "artifact"]
    }
    /// Whether anything of a failed write may be visible (archives: the file must not exist).
    async fn is_untouched(&self, corrupt: &Descriptor) -> bool;
    /// Re-copying into the same destination is meaningful (not for write-once archives).
    fn rewritable(&self) -> bool {
        true
    }
}

/// Same as the sample layout, but one blob's bytes are altered (same size).
pub struct Corrupting {
    /// The source whose blob is altered.
    pub inner: Layout,
    /// The blob to alter.
    pub target: Digest,
}

#[async_trait]
impl Source for Corrupting {
    fn location(&self) -> String {
        Source::location(&self.inner)
    }
    async fn resolve(&self, r: Option<&hoist::TagOrDigest>) -> hoist::Result<Descriptor> {
        self.inner.resolve(r).await
    }
    async fn fetch_manifest_bytes(&self, d: &Descriptor) -> hoist::Result<Bytes> {
        self.inner.fetch_manifest_bytes(d).await
    }
    async fn open_blob(&self, d: &Descriptor, offset: u64) -> hoist::Result<BlobStream> {
        let mut s = self.inner.open_blob(d, offset).await?;
        if d.digest != self.target {
            return Ok(s);
        }
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.unwrap();
        buf[0] ^= 0x55;
        Ok(Box::pin(std::io::Cursor::new(buf)))
    }
}

/// The root descriptor `tag` names in `src`.
pub async fn root(src: &dyn Source, tag: &str) -> Descriptor {
    src.resolve(Some(&tag.into())).await.unwrap()
}

/// Every document and blob digest under `desc`, documents with their bytes.
pub async fn walk(src: &dyn Source, desc: &Descriptor, docs: &mut Vec<(Digest, Bytes)>, blobs: &mut Vec<Descriptor>) {
    let doc = src.fetch_document(desc).await.unwrap();
    docs.push((doc.digest.clone(), doc.bytes.clone()));
    for c in doc.children() {
        if hoist::model::media::is_document(&c.media_type) {
            Box::pin(walk(src, &c, docs, blobs)).await;
        } else {
            blobs.push(c);
        }
    }
}

/// The round trip: what goes in comes out byte for byte (same digests, document bytes and blob
/// bytes under every tag), and, for a rewritable transport, a second copy moves no blob.
pub async fn round_trip(h: &dyn Harness) {
    let src = sample();
    let opts = CopyOptions::default();

    // 1. Round trip: same digests, same document bytes, same blob bytes.
    let dst = h.destination().await;
    let mut plan = Vec::new();
    for tag in h.tags() {
        plan.push((root(&src, tag).await, vec![tag.to_string()]));
    }
    let first = copy::graph_many(&src, dst.as_ref(), &plan, &opts, &NoProgress).await.unwrap();
    dst.finish().await.unwrap();
    drop(dst);
    assert!(first.blobs_uploaded > 0, "{}: nothing uploaded", h.name());
    let back = h.reopen().await;
    for tag in h.tags() {
        let want = root(&src, tag).await;
        let got = back.resolve(Some(&tag.into())).await.unwrap_or_else(|e| panic!("{}: resolve {tag}: {e}", h.name()));
        assert_eq!(got.digest, want.digest, "{}: tag {tag}", h.name());
        let (mut want_docs, mut want_blobs) = (Vec::new(), Vec::new());
        walk(&src, &want, &mut want_docs, &mut want_blobs).await;
        let (mut got_docs, mut got_blobs) = (Vec::new(), Vec::new());
        walk(back.as_ref(), &got, &mut got_docs, &mut got_blobs).await;
        assert_eq!(got_docs, want_docs, "{}: documents under {tag}", h.name());
        assert_eq!(got_blobs, want_blobs, "{}: blob descriptors under {tag}", h.name());
        for b in &got_blobs {
            let mut s = back.open_blob(b, 0).await.unwrap();
            let mut bytes = Vec::new();
            s.read_to_end(&mut bytes).await.unwrap();
            assert_eq!(b.digest.same_alg_of(&bytes), b.digest, "{}: blob {}", h.name(), b.digest);
        }
    }

    // 2. A second copy into the same destination moves no blob.
    if h.rewritable() {
        let dst = h.destination().await;
        let second = copy::graph_many(&src, dst.as_ref(), &plan, &opts, &NoProgress).await.unwrap();
        dst.finish().await.unwrap();
        assert_eq!(second.blobs_uploaded, 0, "{}: second copy uploaded blobs", h.name());
    }
}

/// The refusal: a copy whose source serves one corrupt layer fails with a digest mismatch
/// naming that blob, and leaves nothing of it visible in the destination.
pub async fn refusal(h: &dyn Harness) {
    let src = sample();
    let art = root(&src, "multi").await;
    let (mut docs, mut blobs) = (Vec::new(), Vec::new());
    walk(&src, &art, &mut docs, &mut blobs).await;
    let victim = blobs.iter().find(|b| b.media_type.contains("layer")).unwrap().clone();
    let bad = Corrupting { inner: sample(), target: victim.digest.clone() };
    let dst = h.destination().await;
    let err = copy::graph(&bad, dst.as_ref(), &art, &["multi".into()], &CopyOptions::default(), &NoProgress).await;
    let err = err.expect_err("corrupt blob accepted");
    assert!(matches!(err, Error::DigestMismatch { .. }), "{}: {err}", h.name());
    assert!(err.to_string().contains(&victim.digest.to_string()), "{}: error names the digest: {err}", h.name());
    drop(dst);
    assert!(h.is_untouched(&victim).await, "{}: corrupt content visible", h.name());
}
