//! Where a store's blobs came from: the registry repository each one was read from (a
//! Dockerfile build's base image layers, the layers of its `--cache-from` caches), so a push
//! of what was built to another repository of that registry mounts them
//! ([`Source::mount_from`]) instead of uploading them again. A push to another registry, or
//! of a blob with no recorded origin, uploads as always; a registry that no longer has the
//! blob at its origin answers the mount with an upload session, and the blob is uploaded.

use std::collections::BTreeMap;
use std::path::PathBuf;

use async_trait::async_trait;
use bytes::Bytes;

use super::{BlobStream, RangeRead, Source};
use crate::error::Result;
use crate::model::descriptor::Descriptor;
use crate::model::digest::Digest;
use crate::model::document::Document;
use crate::model::reference::TagOrDigest;

/// Blob digest → the (registry, repository) it can be cross-repository mounted from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BlobOrigins(BTreeMap<Digest, (String, String)>);

impl BlobOrigins {
    /// Record that `desc` can be read from `src`: its mount origin when `src` names one (a
    /// registry repository); the first origin recorded for a digest stays.
    pub fn note(&mut self, desc: &Descriptor, src: &dyn Source) {
        if let Some(o) = src.mount_from(desc) {
            self.0.entry(desc.digest.clone()).or_insert(o);
        }
    }

    /// The (registry, repository) `digest` was recorded from.
    pub fn get(&self, digest: &Digest) -> Option<&(String, String)> {
        self.0.get(digest)
    }

    /// Number of blobs with an origin.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// No blob has an origin.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `inner` (the store the blobs are in), offering each blob with an origin for a mount
    /// from there; everything else is `inner`'s.
    pub fn over<'a>(&'a self, inner: &'a dyn Source) -> WithOrigins<'a> {
        WithOrigins { inner, origins: self }
    }
}

/// A [`Source`] that reads everything from its inner source and answers
/// [`Source::mount_from`] from [`BlobOrigins`] first.
pub struct WithOrigins<'a> {
    inner: &'a dyn Source,
    origins: &'a BlobOrigins,
}

#[async_trait]
impl Source for WithOrigins<'_> {
    fn location(&self) -> String {
        self.inner.location()
    }
    async fn resolve(&self, reference: Option<&TagOrDigest>) -> Result<Descriptor> {
        self.inner.resolve(reference).await
    }
    async fn fetch_manifest_bytes(&self, desc: &Descriptor) -> Result<Bytes> {
        self.inner.fetch_manifest_bytes(desc).await
    }
    async fn fetch_document(&self, desc: &Descriptor) -> Result<Document> {
        self.inner.fetch_document(desc).await
    }
    async fn open_blob(&self, desc: &Descriptor, offset: u64) -> Result<BlobStream> {
        self.inner.open_blob(desc, offset).await
    }
    fn blob_path(&self, desc: &Descriptor) -> Option<PathBuf> {
        self.inner.blob_path(desc)
    }
    fn state_dir(&self) -> Option<PathBuf> {
        self.inner.state_dir()
    }
    fn range_lanes(&self, desc: &Descriptor) -> usize {
        self.inner.range_lanes(desc)
    }
    async fn open_blob_range(&self, desc: &Descriptor, offset: u64, len: u64) -> Result<RangeRead> {
        self.inner.open_blob_range(desc, offset, len).await
    }
    async fn roots(&self) -> Result<Vec<(Descriptor, Option<String>)>> {
        self.inner.roots().await
    }
    async fn list_tags(&self) -> Result<Vec<String>> {
        self.inner.list_tags().await
    }
    fn registry_repo(&self) -> Option<(String, String)> {
        self.inner.registry_repo()
    }
    fn mount_from(&self, desc: &Descriptor) -> Option<(String, String)> {
        self.origins.get(&desc.digest).cloned().or_else(|| self.inner.mount_from(desc))
    }
    fn served_by(&self) -> Option<String> {
        self.inner.served_by()
    }
    async fn referrers(&self, subject: &Digest, artifact_type: Option<&str>) -> Result<Vec<Descriptor>> {
        self.inner.referrers(subject, artifact_type).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::memory::Memory;

    struct Repo;

    #[async_trait]
    impl Source for Repo {
        fn location(&self) -> String {
            "docker://reg.test/cache".into()
        }
        async fn resolve(&self, _: Option<&TagOrDigest>) -> Result<Descriptor> {
            unreachable!()
        }
        async fn fetch_manifest_bytes(&self, _: &Descriptor) -> Result<Bytes> {
            unreachable!()
        }
        async fn open_blob(&self, _: &Descriptor, _: u64) -> Result<BlobStream> {
            unreachable!()
        }
        fn registry_repo(&self) -> Option<(String, String)> {
            Some(("reg.test".into(), "cache".into()))
        }
    }

    #[test]
    fn a_noted_blob_mounts_from_its_origin_and_others_ask_the_inner_source() {
        let d = |n: u8| Descriptor::new("application/octet-stream", Digest::sha256_of(&[n]), 1);
        let mut o = BlobOrigins::default();
        o.note(&d(1), &Repo);
        o.note(&d(2), &Memory::new());
        assert_eq!(o.len(), 1);
        let store = Memory::new();
        let src = o.over(&store);
        assert_eq!(src.mount_from(&d(1)), Some(("reg.test".into(), "cache".into())));
        assert_eq!(src.mount_from(&d(2)), None);
        assert_eq!(src.registry_repo(), None);
    }
}
