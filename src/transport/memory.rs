//! In-memory transport: blobs, manifests and tags in maps. For tests, and for library
//! users who assemble small artifacts before exporting them. Blobs are verified like
//! every other destination, and are held whole: not for multi-GB content.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::AsyncReadExt;

use crate::error::{Error, Result};
use crate::model::descriptor::Descriptor;
use crate::model::digest::Digest;
use crate::model::reference::TagOrDigest;
use crate::transport::roots::RootIndex;
use crate::transport::{unwrap_io_error, BlobOutcome, BlobStream, Destination, Progress, Source, VerifyReader};

#[derive(Default)]
struct State {
    blobs: BTreeMap<Digest, Bytes>,
    manifests: BTreeMap<Digest, (Descriptor, Bytes)>,
    /// Tags and untagged roots, as a layout's index.json keeps them.
    roots: RootIndex,
}

/// A content store in memory.
#[derive(Default)]
pub struct Memory {
    state: Mutex<State>,
}

impl Memory {
    /// An empty store.
    pub fn new() -> Memory {
        Memory::default()
    }

    /// Store `bytes` as the blob `desc`, checked against its size and digest.
    pub fn insert_blob(&self, desc: &Descriptor, bytes: Bytes) -> Result<()> {
        let actual = Descriptor::of_bytes(desc.media_type.clone(), &bytes);
        if actual.size != desc.size || actual.digest != desc.digest {
            return Err(Error::DigestMismatch {
                what: format!("blob {}", desc.digest),
                location: LOC.into(),
                expected: desc.digest.to_string(),
                actual: actual.digest.to_string(),
            });
        }
        self.state.lock().expect("lock").blobs.insert(desc.digest.clone(), bytes);
        Ok(())
    }

    /// Number of blobs held (manifests excluded).
    pub fn blob_count(&self) -> usize {
        self.state.lock().expect("lock").blobs.len()
    }
}

const LOC: &str = "memory:";

#[async_trait]
impl Source for Memory {
    fn location(&self) -> String {
        LOC.to_string()
    }

    async fn resolve(&self, reference: Option<&TagOrDigest>) -> Result<Descriptor> {
        let st = self.state.lock().expect("lock");
        let digest = match reference {
            Some(TagOrDigest::Digest(d)) => d.clone(),
            Some(tag @ TagOrDigest::Tag(_)) => st.roots.resolve(Some(tag), LOC, |_| Ok(None))?.digest,
            None => {
                let all: BTreeSet<Digest> = st.roots.entries().into_iter().map(|d| d.digest).collect();
                match all.into_iter().collect::<Vec<_>>().as_slice() {
                    [one] => one.clone(),
                    _ => {
                        return Err(Error::InvalidReference {
                            reference: LOC.into(),
                            reason: "name a tag or digest".into(),
                        })
                    }
                }
            }
        };
        st.manifests
            .get(&digest)
            .map(|(d, _)| d.clone())
            .ok_or_else(|| Error::not_found(format!("manifest {digest}"), LOC))
    }

    async fn fetch_manifest_bytes(&self, desc: &Descriptor) -> Result<Bytes> {
        let st = self.state.lock().expect("lock");
        st.manifests
            .get(&desc.digest)
            .map(|(_, b)| b.clone())
            .ok_or_else(|| Error::not_found(format!("manifest {}", desc.digest), LOC))
    }

    async fn open_blob(&self, desc: &Descriptor, offset: u64) -> Result<BlobStream> {
        let st = self.state.lock().expect("lock");
        let b = st.blobs.get(&desc.digest).ok_or_else(|| Error::not_found(format!("blob {}", desc.digest), LOC))?;
        let start = (offset as usize).min(b.len());
        Ok(Box::pin(std::io::Cursor::new(b.slice(start..))))
    }

    async fn roots(&self) -> Result<Vec<(Descriptor, Option<String>)>> {
        let st = self.state.lock().expect("lock");
        Ok(st
            .roots
            .roots()
            .into_iter()
            .filter_map(|(d, tag)| st.manifests.get(&d.digest).map(|(desc, _)| (desc.clone(), tag)))
            .collect())
    }
}

#[async_trait]
impl Destination for Memory {
    fn location(&self) -> String {
        LOC.to_string()
    }

    async fn has_blob(&self, desc: &Descriptor) -> Result<bool> {
        Ok(self.state.lock().expect("lock").blobs.contains_key(&desc.digest))
    }

    async fn has_manifest(&self, desc: &Descriptor) -> Result<bool> {
        Ok(self.state.lock().expect("lock").manifests.contains_key(&desc.digest))
    }

    async fn push_blob(&self, desc: &Descriptor, src: &dyn Source, progress: &dyn Progress) -> Result<BlobOutcome> {
        if self.has_blob(desc).await? {
            return Ok(BlobOutcome::Existed);
        }
        let stream = src.open_blob(desc, 0).await?;
        let mut reader = VerifyReader::new(stream, desc, src.location());
        let mut buf = Vec::with_capacity(desc.size.min(1 << 26) as usize);
        reader.read_to_end(&mut buf).await.map_err(|e| unwrap_io_error(e, LOC))?;
        progress.advance(desc, buf.len() as u64);
        self.state.lock().expect("lock").blobs.insert(desc.digest.clone(), Bytes::from(buf));
        Ok(BlobOutcome::Uploaded)
    }

    async fn push_manifest(&self, desc: &Descriptor, bytes: Bytes, tag: Option<&str>) -> Result<()> {
        let doc = crate::model::document::Document::from_fetched(desc, bytes.clone(), LOC)?;
        let mut st = self.state.lock().expect("lock");
        let mut d = doc.descriptor();
        d.media_type = desc.media_type.clone();
        st.manifests.insert(desc.digest.clone(), (d, bytes));
        if let Some(t) = tag {
            st.roots.set_tag(desc, t)?;
        }
        Ok(())
    }

    async fn add_root(&self, desc: &Descriptor) -> Result<()> {
        self.state.lock().expect("lock").roots.add_untagged(desc)?;
        Ok(())
    }
}
