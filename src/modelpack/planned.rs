//! A model artifact that exists only as a plan: its manifest and config in memory and each
//! layer where its bytes already are (a local file, a Hugging Face file, or memory). It is a
//! [`Source`], so the one graph copy moves it to any destination: blobs the destination has
//! are skipped before anything is read, the rest stream from where they are straight into the
//! destination (which verifies them). Nothing is written locally on the way. Local files and
//! bytes in memory were hashed by the planner to be named ([`Source::hashed_itself`]), so a
//! registry need not hash them a second time on the way up: it checks the digest itself.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::{Error, IoContext, Result};
use crate::model::descriptor::Descriptor;
use crate::model::digest::Digest;
use crate::transport::{BlobStream, Source};

/// Opens one remote file from an offset (the Hugging Face client implements it).
#[async_trait]
pub trait RemoteFiles: Send + Sync {
    /// A stream of `path` from byte `offset` on.
    async fn open_file(&self, path: &str, offset: u64) -> Result<BlobStream>;
    /// Where the files are, for errors.
    fn location(&self) -> String;
}

/// Where a planned blob's bytes are.
#[derive(Clone)]
pub enum Origin {
    /// In memory (configs, small files).
    Bytes(Bytes),
    /// A local file.
    File(PathBuf),
    /// A remote file by its path.
    Remote(Arc<dyn RemoteFiles>, String),
}

/// A planned model artifact (see the module doc).
#[derive(Clone)]
pub struct PlannedModel {
    location: String,
    root: Descriptor,
    manifest: Bytes,
    blobs: HashMap<Digest, Origin>,
}

impl PlannedModel {
    /// A plan of the manifest `root` (bytes `manifest`) and its blobs.
    pub fn new(location: String, root: Descriptor, manifest: Bytes, blobs: HashMap<Digest, Origin>) -> Self {
        PlannedModel { location, root, manifest, blobs }
    }

    /// The root descriptor.
    pub fn root(&self) -> &Descriptor {
        &self.root
    }
}

#[async_trait]
impl Source for PlannedModel {
    fn location(&self) -> String {
        self.location.clone()
    }

    async fn resolve(&self, _reference: Option<&crate::model::reference::TagOrDigest>) -> Result<Descriptor> {
        Ok(self.root.clone())
    }

    async fn fetch_manifest_bytes(&self, desc: &Descriptor) -> Result<Bytes> {
        if desc.digest == self.root.digest {
            return Ok(self.manifest.clone());
        }
        Err(Error::not_found(format!("manifest {}", desc.digest), self.location.clone()))
    }

    async fn open_blob(&self, desc: &Descriptor, offset: u64) -> Result<BlobStream> {
        let origin = self
            .blobs
            .get(&desc.digest)
            .ok_or_else(|| Error::not_found(format!("blob {}", desc.digest), self.location.clone()))?;
        match origin {
            Origin::Bytes(b) => {
                let start = (offset as usize).min(b.len());
                Ok(Box::pin(std::io::Cursor::new(b.slice(start..))))
            }
            Origin::File(p) => {
                use tokio::io::AsyncSeekExt;
                let mut f = tokio::fs::File::open(p).await.at(p)?;
                f.seek(std::io::SeekFrom::Start(offset)).await.at(p)?;
                Ok(Box::pin(tokio::io::BufReader::with_capacity(1 << 20, f)))
            }
            Origin::Remote(r, path) => r.open_file(path, offset).await,
        }
    }

    /// Local files (hashed by the planner, read again by the upload) and bytes in memory; not
    /// remote files, whose digests may come from the hub or an earlier run.
    fn hashed_itself(&self, desc: &Descriptor) -> bool {
        matches!(self.blobs.get(&desc.digest), Some(Origin::File(_) | Origin::Bytes(_)))
    }

    fn blob_path(&self, desc: &Descriptor) -> Option<PathBuf> {
        match self.blobs.get(&desc.digest) {
            Some(Origin::File(p)) => Some(p.clone()),
            _ => None,
        }
    }
}
