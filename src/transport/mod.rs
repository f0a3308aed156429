//! The trait set every transport implements: a `Source` content is read from and a
//! `Destination` content is written to, and the transports themselves. `copy::graph` is the
//! only code that moves content between them; transports never call each other.

pub mod archive;
pub mod containerd;
pub mod endpoint;
pub mod layout;
pub mod memory;
pub mod origins;
pub(crate) mod podman;
pub mod registry;
pub mod roots;

pub use crate::model::verify::{unwrap_io_error, VerifyReader};
pub use endpoint::{open_destination, open_source, Endpoint};

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::AsyncRead;

use crate::error::{Error, Result};
use crate::model::descriptor::Descriptor;
use crate::model::digest::Digest;
use crate::model::document::{Document, View};
use crate::model::media;
use crate::model::reference::TagOrDigest;

/// A stream of blob bytes.
pub type BlobStream = Pin<Box<dyn AsyncRead + Send>>;

/// What a source answered to [`Source::open_blob_range`].
pub enum RangeRead {
    /// Exactly the bytes asked for (a registry's `206` with a matching `Content-Range`).
    Part(BlobStream),
    /// The server ignored the range and sends the whole blob from byte 0 (a `200`): read it
    /// as one stream instead of in lanes.
    Whole(BlobStream),
    /// No ranged reads here (the source cannot, or the server's answer could not be trusted:
    /// no or a wrong `Content-Range`): read the blob with `open_blob`.
    Unsupported,
}

/// Where to read content from.
#[async_trait]
pub trait Source: Send + Sync {
    /// Human-readable location used in errors, e.g. `oci:./out`.
    fn location(&self) -> String;

    /// Resolve a tag or digest, read once where it came in (`None`: the transport's default
    /// root), to a descriptor.
    async fn resolve(&self, reference: Option<&TagOrDigest>) -> Result<Descriptor>;

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

    /// Whether this source computed `desc`'s digest itself, in this run, from the very bytes
    /// `open_blob` serves (a model planned from local files: `model pack` hashed each file to
    /// name its layer). A destination that has the digest checked anyway (a registry checks it
    /// at the final PUT) may then skip hashing the blob a second time; it still checks the
    /// size, and a refusal must still name the blob. It is no claim that the bytes are right:
    /// a file that changed since it was hashed is caught by that check. Default: false.
    fn hashed_itself(&self, _desc: &Descriptor) -> bool {
        false
    }

    /// A directory where a destination may keep what it needs to resume transfers from this
    /// source after a restart (a registry keeps upload sessions there). A layout answers its
    /// `.hoist/`.
    fn state_dir(&self) -> Option<PathBuf> {
        None
    }

    /// Lanes (parallel ranged reads) worth using for `desc`: 1, the default, means one
    /// stream from `open_blob`. A registry answers more for large blobs (`--lanes`).
    fn range_lanes(&self, _desc: &Descriptor) -> usize {
        1
    }

    /// Bytes `[offset, offset + len)` of a blob as their own request (a lane of a parallel
    /// download; see [`RangeRead`]). Callers verify the whole blob.
    async fn open_blob_range(&self, _desc: &Descriptor, _offset: u64, _len: u64) -> Result<RangeRead> {
        Ok(RangeRead::Unsupported)
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

    /// Registry host and repository the blob `desc` can be cross-repository mounted from:
    /// the source's own ([`Source::registry_repo`]) unless it serves that blob from another
    /// source (a new base's layers in `hoist rebase`).
    fn mount_from(&self, _desc: &Descriptor) -> Option<(String, String)> {
        self.registry_repo()
    }

    /// The registries.conf mirror (`docker://host/repo`) that served this source's reads,
    /// when one did (registries only).
    fn served_by(&self) -> Option<String> {
        None
    }

    /// Manifests whose `subject` is `subject`, only those of `artifact_type` when given.
    /// Default: a scan of the roots and of the manifests their indexes list (layouts,
    /// archives); registries ask the referrers API or its tag fallback.
    async fn referrers(&self, subject: &Digest, artifact_type: Option<&str>) -> Result<Vec<Descriptor>> {
        scan_referrers(self, subject, artifact_type).await
    }
}

/// Referrers of `subject` among the roots of `src` and the manifests their indexes list,
/// each document read once.
pub async fn scan_referrers<S: Source + ?Sized>(
    src: &S,
    subject: &Digest,
    artifact_type: Option<&str>,
) -> Result<Vec<Descriptor>> {
    let mut all = referrer_map(src).await?;
    let mut out = all.remove(subject).unwrap_or_default();
    out.retain(|r| artifact_type.is_none_or(|t| r.artifact_type.as_deref() == Some(t)));
    Ok(out)
}

/// Every referrer among the roots of `src` and the manifests their indexes list, by subject:
/// one scan for a whole store, each document read once (the one walk [`scan_referrers`] and
/// a sync of a layout, which asks once per image, read).
pub async fn referrer_map<S: Source + ?Sized>(src: &S) -> Result<std::collections::HashMap<Digest, Vec<Descriptor>>> {
    referrer_map_from(src, src.roots().await?.into_iter().map(|(d, _)| d)).await
}

/// [`referrer_map`] over the given roots of `src` (a store that can hand them out one at a
/// time, so that a layout of 100k tags is not held as descriptors all at once).
pub async fn referrer_map_from<S, I>(src: &S, roots: I) -> Result<std::collections::HashMap<Digest, Vec<Descriptor>>>
where
    S: Source + ?Sized,
    I: IntoIterator<Item = Descriptor>,
    I::IntoIter: Send,
{
    let mut seen = BTreeSet::new();
    let mut out: std::collections::HashMap<Digest, Vec<Descriptor>> = std::collections::HashMap::new();
    for root in roots {
        let mut queue = vec![root];
        while let Some(d) = queue.pop() {
            if !media::is_document(&d.media_type) || !seen.insert(d.digest.clone()) {
                continue;
            }
            let doc = src.fetch_document(&d).await?;
            if let Some(s) = doc.subject() {
                out.entry(s.digest.clone()).or_default().push(doc.referrer_descriptor());
            }
            if let View::Index(i) = &doc.view {
                queue.extend(i.manifests.iter().rev().cloned());
            }
        }
    }
    Ok(out)
}

/// What happened to one blob during a copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobOutcome {
    /// Written to the destination.
    Uploaded,
    /// The destination had it already.
    Existed,
    /// Mounted from another repository of the same registry (no bytes moved).
    Mounted,
}

/// Where to write content to. Blobs are verified before they become visible.
#[async_trait]
pub trait Destination: Send + Sync {
    /// Human-readable location used in errors, e.g. `docker://localhost:5000/app`.
    fn location(&self) -> String;

    /// Whether the blob `desc` is already there (a copy then skips it).
    async fn has_blob(&self, desc: &Descriptor) -> Result<bool>;

    /// Whether the manifest or index `desc` is already there, with everything it names.
    async fn has_manifest(&self, desc: &Descriptor) -> Result<bool>;

    /// Store a blob read from `src`. The destination checks size and digest before
    /// the blob becomes visible, and may mount it instead when `src` allows.
    async fn push_blob(&self, desc: &Descriptor, src: &dyn Source, progress: &dyn Progress) -> Result<BlobOutcome>;

    /// Store a manifest or index by digest and, when `tag` is set, tag it.
    async fn push_manifest(&self, desc: &Descriptor, bytes: Bytes, tag: Option<&str>) -> Result<()>;

    /// Store a root manifest and tag it with each of `tags` (nothing when `tags` is empty).
    /// Default: one `push_manifest` per tag. Destinations that keep all tags in one file
    /// (layouts) write it once, so a root with thousands of tags costs one rewrite, not one each.
    async fn push_tags(&self, desc: &Descriptor, bytes: Bytes, tags: &[String]) -> Result<()> {
        for t in tags {
            self.push_manifest(desc, bytes.clone(), Some(t)).await?;
        }
        Ok(())
    }

    /// Record many roots at the end of a copy, each with its tags, or untagged (`add_root`)
    /// when it has none. Default: `push_tags` or `add_root` per root. Layouts apply them all
    /// in one index.json write, so copying a layout of 8,000 roots stays linear.
    async fn tag_roots(&self, roots: &[(Descriptor, Bytes, Vec<String>)]) -> Result<()> {
        for (desc, bytes, tags) in roots {
            if tags.is_empty() {
                self.add_root(desc).await?;
            } else {
                self.push_tags(desc, bytes.clone(), tags).await?;
            }
        }
        Ok(())
    }

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
    /// A blob transfer starts.
    fn start(&self, _desc: &Descriptor) {}
    /// `n` more bytes of `desc` moved. After a retry the count may restart: see `reset`.
    fn advance(&self, _desc: &Descriptor, _n: u64) {}
    /// Bytes for `desc` restart from `offset` (a retry or resume).
    fn reset(&self, _desc: &Descriptor, _offset: u64) {}
    /// A blob is done, with what happened to it.
    fn done(&self, _desc: &Descriptor, _outcome: BlobOutcome) {}
    /// A note for the user (a retry, a fallback taken).
    fn message(&self, _msg: &str) {}
}

/// Progress that reports nothing.
pub struct NoProgress;
impl Progress for NoProgress {}

/// Shared handle to a progress sink.
pub type SharedProgress = Arc<dyn Progress>;

/// One [`Progress`] call, sent through a [`Relay`].
enum ProgressEvent {
    Start(Descriptor),
    Advance(Descriptor, u64),
    Reset(Descriptor, u64),
    Done(Descriptor, BlobOutcome),
    Message(String),
}

/// Progress of spawned (`'static`) tasks for a sink they cannot borrow: each call is sent to
/// the [`RelayEnd`] made with it, which hands it to the sink on the task that owns the sink.
#[derive(Clone)]
pub struct Relay(tokio::sync::mpsc::UnboundedSender<ProgressEvent>);

/// Where a [`Relay`]'s calls arrive.
pub struct RelayEnd(tokio::sync::mpsc::UnboundedReceiver<ProgressEvent>);

impl Relay {
    /// A relay and the end its calls arrive at.
    pub fn new() -> (Relay, RelayEnd) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        (Relay(tx), RelayEnd(rx))
    }
}

impl Progress for Relay {
    fn start(&self, d: &Descriptor) {
        let _ = self.0.send(ProgressEvent::Start(d.clone()));
    }
    fn advance(&self, d: &Descriptor, n: u64) {
        let _ = self.0.send(ProgressEvent::Advance(d.clone(), n));
    }
    fn reset(&self, d: &Descriptor, offset: u64) {
        let _ = self.0.send(ProgressEvent::Reset(d.clone(), offset));
    }
    fn done(&self, d: &Descriptor, outcome: BlobOutcome) {
        let _ = self.0.send(ProgressEvent::Done(d.clone(), outcome));
    }
    fn message(&self, msg: &str) {
        let _ = self.0.send(ProgressEvent::Message(msg.to_string()));
    }
}

impl RelayEnd {
    fn deliver(e: ProgressEvent, to: &dyn Progress) {
        match e {
            ProgressEvent::Start(d) => to.start(&d),
            ProgressEvent::Advance(d, n) => to.advance(&d, n),
            ProgressEvent::Reset(d, o) => to.reset(&d, o),
            ProgressEvent::Done(d, o) => to.done(&d, o),
            ProgressEvent::Message(m) => to.message(&m),
        }
    }

    /// Run `body`, handing the relayed calls to `to` while it runs; every call made before
    /// `body` ends is handed over before this returns. Calls made after are dropped.
    pub async fn beside<T>(mut self, body: impl std::future::Future<Output = T>, to: &dyn Progress) -> T {
        let out = {
            let body = std::pin::pin!(body);
            let relay = std::pin::pin!(async {
                while let Some(e) = self.0.recv().await {
                    Self::deliver(e, to);
                }
            });
            match futures::future::select(body, relay).await {
                futures::future::Either::Left((out, _)) => out,
                futures::future::Either::Right(((), body)) => body.await,
            }
        };
        while let Ok(e) = self.0.try_recv() {
            Self::deliver(e, to);
        }
        out
    }
}

/// `&T`, `Box<T>` and `Arc<T>` of a source or destination are one too, so a caller can hand
/// over whatever handle it holds.
macro_rules! forward {
    ($($wrapper:ty),*) => {$(
        #[async_trait]
        impl<T: Source + ?Sized> Source for $wrapper {
            fn location(&self) -> String {
                (**self).location()
            }
            async fn resolve(&self, reference: Option<&TagOrDigest>) -> Result<Descriptor> {
                (**self).resolve(reference).await
            }
            async fn fetch_manifest_bytes(&self, desc: &Descriptor) -> Result<Bytes> {
                (**self).fetch_manifest_bytes(desc).await
            }
            async fn fetch_document(&self, desc: &Descriptor) -> Result<Document> {
                (**self).fetch_document(desc).await
            }
            async fn open_blob(&self, desc: &Descriptor, offset: u64) -> Result<BlobStream> {
                (**self).open_blob(desc, offset).await
            }
            fn blob_path(&self, desc: &Descriptor) -> Option<PathBuf> {
                (**self).blob_path(desc)
            }
            fn range_lanes(&self, desc: &Descriptor) -> usize {
                (**self).range_lanes(desc)
            }
            fn hashed_itself(&self, desc: &Descriptor) -> bool {
                (**self).hashed_itself(desc)
            }
            fn state_dir(&self) -> Option<PathBuf> {
                (**self).state_dir()
            }
            async fn open_blob_range(&self, desc: &Descriptor, offset: u64, len: u64) -> Result<RangeRead> {
                (**self).open_blob_range(desc, offset, len).await
            }
            async fn roots(&self) -> Result<Vec<(Descriptor, Option<String>)>> {
                (**self).roots().await
            }
            async fn list_tags(&self) -> Result<Vec<String>> {
                (**self).list_tags().await
            }
            fn registry_repo(&self) -> Option<(String, String)> {
                (**self).registry_repo()
            }
            fn mount_from(&self, desc: &Descriptor) -> Option<(String, String)> {
                (**self).mount_from(desc)
            }
            fn served_by(&self) -> Option<String> {
                (**self).served_by()
            }
            async fn referrers(&self, subject: &Digest, artifact_type: Option<&str>) -> Result<Vec<Descriptor>> {
                (**self).referrers(subject, artifact_type).await
            }
        }

        #[async_trait]
        impl<T: Destination + ?Sized> Destination for $wrapper {
            fn location(&self) -> String {
                (**self).location()
            }
            async fn has_blob(&self, desc: &Descriptor) -> Result<bool> {
                (**self).has_blob(desc).await
            }
            async fn has_manifest(&self, desc: &Descriptor) -> Result<bool> {
                (**self).has_manifest(desc).await
            }
            async fn push_blob(&self, desc: &Descriptor, src: &dyn Source, progress: &dyn Progress) -> Result<BlobOutcome> {
                (**self).push_blob(desc, src, progress).await
            }
            async fn push_manifest(&self, desc: &Descriptor, bytes: Bytes, tag: Option<&str>) -> Result<()> {
                (**self).push_manifest(desc, bytes, tag).await
            }
            async fn push_tags(&self, desc: &Descriptor, bytes: Bytes, tags: &[String]) -> Result<()> {
                (**self).push_tags(desc, bytes, tags).await
            }
            async fn tag_roots(&self, roots: &[(Descriptor, Bytes, Vec<String>)]) -> Result<()> {
                (**self).tag_roots(roots).await
            }
            async fn select_root(&self, src: &dyn Source, root: &Document) -> Result<Option<Descriptor>> {
                (**self).select_root(src, root).await
            }
            async fn add_root(&self, desc: &Descriptor) -> Result<()> {
                (**self).add_root(desc).await
            }
            fn max_jobs(&self) -> Option<usize> {
                (**self).max_jobs()
            }
            async fn finish(&self) -> Result<()> {
                (**self).finish().await
            }
        }
    )*};
}

forward!(&T, Box<T>, Arc<T>);

/// A temp-file builder for content that becomes visible by rename: mode 0644 (less the
/// umask) like files other tools write, not tempfile's private 0600.
pub(crate) fn public_temp(prefix: &str) -> tempfile::Builder<'_, 'static> {
    use std::os::unix::fs::PermissionsExt;
    let mut b = tempfile::Builder::new();
    b.prefix(prefix).permissions(std::fs::Permissions::from_mode(0o644));
    b
}
