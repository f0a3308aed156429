//! In-memory transport: blobs, manifests and tags in maps. For tests, and for library
//! users who assemble small artifacts before exporting them. Blobs are verified like
//! every other destination, and are held whole: not for multi-GB content.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::AsyncReadExt;

use crate::error::{Error, Result};
use crate::model::descriptor::Descriptor;
use crate::model::digest::Digest;
use crate::transport::{unwrap_io_error, BlobOutcome, BlobStream, Destination, Progress, Source, VerifyReader};

#[derive(Default)]
struct State {
    blobs: BTreeMap<Digest, Bytes>,
    manifests: BTreeMap<Digest, (Descriptor, Bytes)>,
    tags: BTreeMap<String, Digest>,
    untagged_roots: Vec<Digest>,
}

/// A content store in memory.
#[derive(Default)]
pub struct Memory {
    state: Mutex<State>,
}

impl Memory {
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

    async fn resolve(&self, reference: Option<&str>) -> Result<Descriptor> {
        let st = self.state.lock().expect("lock");
        let digest = match reference {
            Some(r) if r.parse::<Digest>().is_ok() => r.parse::<Digest>()?,
            Some(tag) => st.tags.get(tag).cloned().ok_or_else(|| Error::not_found(format!("tag {tag:?}"), LOC))?,
            None => {
                let mut all: Vec<&Digest> = st.tags.values().chain(st.untagged_roots.iter()).collect();
                all.dedup();
                match all.as_slice() {
                    [one] => (*one).clone(),
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
        let mut out = Vec::new();
        for (tag, d) in &st.tags {
            if let Some((desc, _)) = st.manifests.get(d) {
                out.push((desc.clone(), Some(tag.clone())));
            }
        }
        for d in &st.untagged_roots {
            if let Some((desc, _)) = st.manifests.get(d) {
                out.push((desc.clone(), None));
            }
        }
        Ok(out)
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
            st.tags.insert(t.to_string(), desc.digest.clone());
        }
        Ok(())
    }

    async fn add_root(&self, desc: &Descriptor) -> Result<()> {
        let mut st = self.state.lock().expect("lock");
        if !st.untagged_roots.contains(&desc.digest) && !st.tags.values().any(|d| *d == desc.digest) {
            st.untagged_roots.push(desc.digest.clone());
        }
        Ok(())
    }
}
