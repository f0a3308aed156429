//! State shared by the OCI and docker archive writers: the tar sink, the blobs written
//! (deduplicated) and the layout roots, plus the `oci-layout` and `index.json` both write.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::model::descriptor::Descriptor;
use crate::model::digest::Digest;
use crate::model::media;
use crate::transport::archive::tar::{blob_name, TarSink};
use crate::transport::{BlobOutcome, Progress, Source, VerifyReader};

/// The `index.json` hoist writes: fixed field order.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IndexOut<'a> {
    schema_version: u32,
    media_type: &'static str,
    manifests: &'a [Descriptor],
}

/// `index.json` bytes for `manifests`.
pub(crate) fn index_json(manifests: &[Descriptor]) -> Vec<u8> {
    serde_json::to_vec(&IndexOut { schema_version: 2, media_type: media::OCI_INDEX, manifests })
        .expect("descriptors serialize")
}

/// `oci-layout` bytes.
pub(crate) fn oci_layout_json() -> Vec<u8> {
    format!("{{\"imageLayoutVersion\":\"{}\"}}", media::OCI_LAYOUT_VERSION).into_bytes()
}

/// The index.json entries of an archive being written, in order, with the position of each
/// tag and the number of entries per digest: setting a tag or adding a root costs the same
/// with 8,000 roots as with one (a `Vec` scanned per tag made a copy of many tags quadratic).
#[derive(Default)]
pub(crate) struct Roots {
    /// `None`: an entry whose tag a later entry took.
    entries: Vec<Option<Descriptor>>,
    by_tag: HashMap<String, usize>,
    per_digest: HashMap<Digest, usize>,
}

impl Roots {
    /// Append `entry` (carrying `ref.name` = `tag`), dropping the entry that had `tag`.
    fn set_tag(&mut self, entry: Descriptor, tag: &str) {
        if let Some(old) = self.by_tag.remove(tag).and_then(|i| self.entries[i].take()) {
            if let Some(n) = self.per_digest.get_mut(&old.digest) {
                *n -= 1;
            }
        }
        *self.per_digest.entry(entry.digest.clone()).or_default() += 1;
        self.by_tag.insert(tag.to_string(), self.entries.len());
        self.entries.push(Some(entry));
    }

    /// Append `desc` without `ref.name` unless an entry already has its digest.
    fn add_untagged(&mut self, desc: &Descriptor) {
        let n = self.per_digest.entry(desc.digest.clone()).or_default();
        if *n == 0 {
            *n = 1;
            let mut d = desc.clone();
            d.annotations.remove(media::ANNOTATION_REF_NAME);
            self.entries.push(Some(d));
        }
    }

    /// The entries in the order they were added.
    pub fn iter(&self) -> impl Iterator<Item = &Descriptor> {
        self.entries.iter().flatten()
    }
}

/// State shared by the OCI and docker archive writers: the sink, the blobs written
/// (deduplicated) and the layout roots.
pub(crate) struct WriterCore {
    pub sink: TarSink,
    pub location: String,
    blobs: BTreeSet<Digest>,
    dirs: BTreeSet<String>,
    /// index.json entries; tagged ones carry `ref.name`.
    pub roots: Roots,
}

impl WriterCore {
    pub async fn create(path: &Path, location: String) -> Result<WriterCore> {
        let mut sink = TarSink::create(path, location.clone())?;
        let mut dirs = BTreeSet::new();
        for d in ["blobs/", "blobs/sha256/"] {
            sink.dir(d).await?;
            dirs.insert(d.to_string());
        }
        Ok(WriterCore { sink, location, blobs: BTreeSet::new(), dirs, roots: Roots::default() })
    }

    /// Like `create`, streaming into `w` instead of a file.
    pub async fn to_writer(
        w: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send + Sync>>,
        location: String,
    ) -> Result<WriterCore> {
        let mut sink = TarSink::to_writer(w, location.clone());
        let mut dirs = BTreeSet::new();
        for d in ["blobs/", "blobs/sha256/"] {
            sink.dir(d).await?;
            dirs.insert(d.to_string());
        }
        Ok(WriterCore { sink, location, blobs: BTreeSet::new(), dirs, roots: Roots::default() })
    }

    pub fn has(&self, digest: &Digest) -> bool {
        self.blobs.contains(digest)
    }

    async fn ensure_dir(&mut self, digest: &Digest) -> Result<()> {
        let d = format!("blobs/{}/", digest.algorithm().as_str());
        if !self.dirs.contains(&d) {
            self.sink.dir(&d).await?;
            self.dirs.insert(d);
        }
        Ok(())
    }

    /// Stream a blob from `src` into the tar, verified; `tap` sees the verified bytes.
    pub async fn write_blob(
        &mut self,
        desc: &Descriptor,
        src: &dyn Source,
        progress: &dyn Progress,
        tap: &mut (dyn FnMut(&[u8]) -> Result<()> + Send),
    ) -> Result<BlobOutcome> {
        if self.has(&desc.digest) {
            return Ok(BlobOutcome::Existed);
        }
        self.sink.check()?;
        self.ensure_dir(&desc.digest).await?;
        let stream = match src.open_blob(desc, 0).await {
            Ok(s) => s,
            Err(e) => {
                // Nothing written for this blob yet: the archive stays consistent.
                return Err(e);
            }
        };
        let reader = VerifyReader::new(stream, desc, src.location());
        let mut tap_progress = |chunk: &[u8]| -> Result<()> {
            tap(chunk)?;
            progress.advance(desc, chunk.len() as u64);
            Ok(())
        };
        self.sink.file_stream(&blob_name(&desc.digest), desc.size, reader, &mut tap_progress).await?;
        self.blobs.insert(desc.digest.clone());
        Ok(BlobOutcome::Uploaded)
    }

    /// Store in-memory bytes (a manifest) as a blob after checking them.
    pub async fn write_blob_bytes(&mut self, desc: &Descriptor, bytes: &[u8]) -> Result<()> {
        if self.has(&desc.digest) {
            return Ok(());
        }
        let actual = desc.digest.same_alg_of(bytes);
        if actual != desc.digest || bytes.len() as u64 != desc.size {
            return Err(Error::DigestMismatch {
                what: "manifest".into(),
                location: self.location.clone(),
                expected: format!("{} ({} bytes)", desc.digest, desc.size),
                actual: format!("{} ({} bytes)", actual, bytes.len()),
            });
        }
        self.ensure_dir(&desc.digest).await?;
        self.sink.file_bytes(&blob_name(&desc.digest), bytes).await?;
        self.blobs.insert(desc.digest.clone());
        Ok(())
    }

    /// Point `tag` at `desc`, replacing an entry with that tag (like `Layout::set_tag`). The
    /// entry's `ref.name` is `tag` whatever `ref.name` `desc` carried (the tag it had in its
    /// source, which may be a BuildKit full reference): callers pass a source's descriptor as is.
    pub fn set_tag(&mut self, desc: &Descriptor, tag: &str) {
        let mut entry = desc.clone();
        entry.annotations.insert(media::ANNOTATION_REF_NAME.into(), tag.to_string());
        self.roots.set_tag(entry, tag);
    }

    /// Add an untagged root unless the digest is already a root.
    pub fn add_untagged(&mut self, desc: &Descriptor) {
        self.roots.add_untagged(desc);
    }

    /// Write `extra` files, `oci-layout` and `index.json` (with `index` entries), then finish.
    pub async fn finish(&mut self, index: &[Descriptor], extra: &[(&str, Vec<u8>)]) -> Result<()> {
        self.sink.check()?;
        for (name, bytes) in extra {
            self.sink.file_bytes(name, bytes).await?;
        }
        self.sink.file_bytes("oci-layout", &oci_layout_json()).await?;
        self.sink.file_bytes("index.json", &index_json(index)).await?;
        self.sink.finish().await
    }

    /// Record a failure that leaves the archive unusable.
    pub fn poison(&mut self, e: &Error) {
        self.sink.poison_with(e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn set_tag_replaces_the_source_ref_name() {
        let t = tempfile::tempdir().unwrap();
        let mut core = WriterCore::create(&t.path().join("a.tar"), "oci-archive:a.tar".into()).await.unwrap();
        let from_source = Descriptor::of_bytes(media::OCI_MANIFEST, b"{}")
            .with_annotation(media::ANNOTATION_REF_NAME, "docker.io/library/alpine:3.20")
            .with_annotation("keep", "me");
        core.set_tag(&from_source, "v1");
        core.set_tag(&from_source, "v2");
        core.set_tag(&from_source, "v1");
        let tags: Vec<_> = core.roots.iter().map(|r| r.ref_name()).collect();
        assert_eq!(tags, [Some("v2"), Some("v1")]);
        assert!(core.roots.iter().all(|r| r.annotations.get("keep").map(String::as_str) == Some("me")));
    }
}
