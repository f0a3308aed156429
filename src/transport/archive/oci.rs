//! OCI archive transport: a tar of an OCI image layout (`oci-layout`, `index.json`,
//! `blobs/<alg>/<hex>`). Reading indexes the tar once and streams blobs from their offsets
//! (no extraction); writing streams entries as blobs arrive into a temp file renamed on
//! `finish` (or to stdout), with deterministic headers. Compressed tarballs are refused.
//!
//! The tar reading and writing live in `archive::tar`, the writer state shared with
//! `docker` in `archive::writer`.

use std::path::Path;

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::Value;
use tokio::sync::Mutex;

use crate::error::{Error, Result};
use crate::model::descriptor::Descriptor;
use crate::model::digest::Digest;
use crate::model::media;
use crate::model::reference::TagOrDigest;
use crate::transport::archive::check_stored_name;
use crate::transport::archive::tar::{blob_name, TarEntry, TarIndex};
use crate::transport::archive::writer::WriterCore;
use crate::transport::{BlobOutcome, BlobStream, Destination, Progress, Source};

// ---------------------------------------------------------------------------------------
// OciArchive: Source.
// ---------------------------------------------------------------------------------------

/// An OCI archive opened for reading.
pub struct OciArchive {
    index: TarIndex,
    roots: Vec<Descriptor>,
}

impl OciArchive {
    /// Open and index an OCI archive (blocking: reads the tar headers once).
    pub fn open(path: impl AsRef<Path>) -> Result<OciArchive> {
        let path = path.as_ref();
        let location = format!("oci-archive:{}", path.display());
        let index = TarIndex::open_blocking(path, &location)?;
        OciArchive::from_index(index)
    }

    /// Read an already indexed tar as an OCI layout; fails unless it has `oci-layout`.
    pub(crate) fn from_index(index: TarIndex) -> Result<OciArchive> {
        let marker = index.read_entry_blocking("oci-layout", 64 * 1024)?;
        let v: Value =
            serde_json::from_slice(&marker).map_err(|e| Error::malformed("oci-layout", &index.location, e))?;
        if v.get("imageLayoutVersion").and_then(Value::as_str).is_none() {
            return Err(Error::malformed("oci-layout", &index.location, "missing imageLayoutVersion"));
        }
        let raw = index.read_entry_blocking("index.json", media::MAX_MANIFEST_SIZE)?;
        let v: Value = serde_json::from_slice(&raw).map_err(|e| Error::malformed("index.json", &index.location, e))?;
        let manifests = v.get("manifests").cloned().unwrap_or(Value::Array(vec![]));
        let roots =
            serde_json::from_value(manifests).map_err(|e| Error::malformed("index.json", &index.location, e))?;
        Ok(OciArchive { index, roots })
    }

    /// The raw index.json entries, in file order.
    pub fn index_entries(&self) -> &[Descriptor] {
        &self.roots
    }

    fn entry_of(&self, digest: &Digest) -> Option<TarEntry> {
        self.index.get(&blob_name(digest))
    }
}

#[async_trait]
impl Source for OciArchive {
    fn location(&self) -> String {
        self.index.location.clone()
    }

    async fn resolve(&self, reference: Option<&TagOrDigest>) -> Result<Descriptor> {
        crate::transport::roots::resolve_in_entries(&self.roots, reference, &self.index.location, |d| {
            if self.entry_of(d).is_none() {
                return Ok(None);
            }
            Ok(Some(Bytes::from(self.index.read_entry_blocking(&blob_name(d), media::MAX_MANIFEST_SIZE)?)))
        })
    }

    async fn fetch_manifest_bytes(&self, desc: &Descriptor) -> Result<Bytes> {
        if desc.size > media::MAX_MANIFEST_SIZE {
            return Err(Error::malformed(
                format!("manifest {}", desc.digest),
                self.location(),
                format!("descriptor size {} exceeds the manifest limit", desc.size),
            ));
        }
        if self.entry_of(&desc.digest).is_none() {
            return Err(Error::not_found(format!("manifest {}", desc.digest), self.location()));
        }
        Ok(Bytes::from(self.index.read_entry_blocking(&blob_name(&desc.digest), media::MAX_MANIFEST_SIZE)?))
    }

    async fn open_blob(&self, desc: &Descriptor, offset: u64) -> Result<BlobStream> {
        let e = self
            .entry_of(&desc.digest)
            .ok_or_else(|| Error::not_found(format!("blob {}", desc.digest), self.location()))?;
        self.index.open_entry(e, offset).await
    }

    async fn roots(&self) -> Result<Vec<(Descriptor, Option<String>)>> {
        self.roots
            .iter()
            .map(|d| {
                let name = d.ref_name().map(str::to_string);
                if let Some(n) = &name {
                    check_stored_name(n, "ref.name", &self.index.location)?;
                }
                Ok((d.clone(), name))
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------
// OciArchiveWriter: Destination.
// ---------------------------------------------------------------------------------------

/// An OCI archive being written. Nothing appears at the path until `finish` succeeds.
pub struct OciArchiveWriter {
    core: Mutex<WriterCore>,
    location: String,
}

impl OciArchiveWriter {
    /// Start writing an OCI archive to `path`, or to stdout when `path` is `-`.
    pub async fn create(path: impl AsRef<Path>) -> Result<OciArchiveWriter> {
        let path = path.as_ref();
        let location = format!("oci-archive:{}", path.display());
        let core = WriterCore::create(path, location.clone()).await?;
        Ok(OciArchiveWriter { core: Mutex::new(core), location })
    }

    /// Start an OCI archive streamed into `w` (a pipe into `podman load`); `finish` writes
    /// the trailer and closes `w`. `location` names it in errors.
    pub async fn to_writer(
        w: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send + Sync>>,
        location: String,
    ) -> Result<OciArchiveWriter> {
        let core = WriterCore::to_writer(w, location.clone()).await?;
        Ok(OciArchiveWriter { core: Mutex::new(core), location })
    }
}

#[async_trait]
impl Destination for OciArchiveWriter {
    fn location(&self) -> String {
        self.location.clone()
    }

    async fn has_blob(&self, desc: &Descriptor) -> Result<bool> {
        Ok(self.core.lock().await.has(&desc.digest))
    }

    async fn has_manifest(&self, desc: &Descriptor) -> Result<bool> {
        Ok(self.core.lock().await.has(&desc.digest))
    }

    async fn push_blob(&self, desc: &Descriptor, src: &dyn Source, progress: &dyn Progress) -> Result<BlobOutcome> {
        self.core.lock().await.write_blob(desc, src, progress, &mut |_| Ok(())).await
    }

    async fn push_manifest(&self, desc: &Descriptor, bytes: Bytes, tag: Option<&str>) -> Result<()> {
        let mut core = self.core.lock().await;
        core.write_blob_bytes(desc, &bytes).await?;
        if let Some(t) = tag {
            core.set_tag(desc, t);
        }
        Ok(())
    }

    async fn add_root(&self, desc: &Descriptor) -> Result<()> {
        self.core.lock().await.add_untagged(desc);
        Ok(())
    }

    fn max_jobs(&self) -> Option<usize> {
        Some(1)
    }

    async fn finish(&self) -> Result<()> {
        let mut core = self.core.lock().await;
        let roots: Vec<Descriptor> = core.roots.iter().cloned().collect();
        core.finish(&roots, &[]).await
    }
}
