//! Conversions a copy makes only on request ([`Conversion`] in
//! [`CopyOptions`](super::CopyOptions)): `--convert oci` rewrites Docker schema 2 manifests
//! and manifest lists as OCI manifests and indexes (config bytes unchanged: a Docker image
//! config is a valid OCI config, only its media type changes; layer bytes unchanged), and
//! `--dest-compress ALG[:LEVEL]` recompresses image layers (uncompressed content, so the
//! config's `diff_ids`, unchanged). Every manifest above a change is re-serialized with its
//! other fields in their order; everything else stays byte-exact.
//!
//! [`Converted`] is a [`Source`] over the original: it serves the new manifests from memory
//! and the recompressed layers from temp files, so the one graph copy moves them like any
//! other content. Recompression uses the one layer encoder of [`crate::layer::codec`], so a
//! layer recompressed here has the same bytes as the same layer built at the same level
//! (whatever the core count), and runs `jobs` layers at once.
//!
//! Not here: choosing the format of a manifest a source has no bytes for (a docker-archive's
//! `manifest.json`: [`crate::transport::endpoint::native_manifest_format`]).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::{try_join_all, BoxFuture};
use futures::FutureExt;
use serde_json::Value;
use tokio::io::AsyncSeekExt;
use tokio::sync::{OnceCell, Semaphore};

use crate::error::{Error, Result};
use crate::layer::codec::{self, Algorithm};
use crate::layer::Compression;
use crate::model::descriptor::Descriptor;
use crate::model::digest::Digest;
use crate::model::document::View;
use crate::model::media;
use crate::model::verify::HashWriter;
use crate::transport::{unwrap_io_error, BlobStream, Source, VerifyReader};

use super::{Rewritten, MAX_DEPTH};

/// Annotation BuildKit puts on an attestation manifest's index entry: the digest of the image
/// manifest it describes (updated when that manifest is converted).
const ANNOTATION_DOCKER_REFERENCE_DIGEST: &str = "vnd.docker.reference.digest";

/// What a copy converts. The default converts nothing (a byte-exact copy).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Conversion {
    /// Rewrite Docker schema 2 manifests and manifest lists as OCI (`--convert oci`).
    pub to_oci: bool,
    /// Recompress image layers not already compressed this way (`--dest-compress`).
    pub compress: Option<Compression>,
}

impl Conversion {
    /// Whether nothing is converted.
    pub fn is_none(&self) -> bool {
        !self.to_oci && self.compress.is_none()
    }
}

type Cell<T> = Arc<OnceCell<Result<T>>>;

/// A [`Source`] that is `inner` with conversions applied: new manifests from memory,
/// recompressed layers from temp files (removed when it is dropped).
pub struct Converted<'a> {
    inner: &'a dyn Source,
    conversion: Conversion,
    dir: tempfile::TempDir,
    manifests: Mutex<HashMap<Digest, Bytes>>,
    blobs: Mutex<HashMap<Digest, PathBuf>>,
    docs: Mutex<HashMap<Digest, Cell<Descriptor>>>,
    layers: Mutex<HashMap<Digest, Cell<Descriptor>>>,
    changes: Mutex<Vec<Rewritten>>,
    jobs: Semaphore,
}

impl<'a> Converted<'a> {
    /// Conversions of `inner`'s content, recompressing `jobs` layers at once; temp files
    /// go to the system temp directory.
    pub fn new(inner: &'a dyn Source, conversion: Conversion, jobs: usize) -> Result<Converted<'a>> {
        let dir = crate::transport::public_temp(".hoist-convert-")
            .tempdir()
            .map_err(|e| Error::io(std::env::temp_dir(), e))?;
        Ok(Converted {
            inner,
            conversion,
            dir,
            manifests: Mutex::new(HashMap::new()),
            blobs: Mutex::new(HashMap::new()),
            docs: Mutex::new(HashMap::new()),
            layers: Mutex::new(HashMap::new()),
            changes: Mutex::new(Vec::new()),
            jobs: Semaphore::new(jobs.max(1)),
        })
    }

    /// Convert the graph of `root`; returns the root's descriptor after conversion (the same
    /// one when nothing in its graph changed).
    pub async fn convert_root(&self, root: &Descriptor) -> Result<Descriptor> {
        let mut d = root.clone();
        d.annotations.remove(media::ANNOTATION_REF_NAME);
        let mut out = self.convert_doc(d, 1).await?;
        out.annotations = root.annotations.clone();
        Ok(out)
    }

    /// Every digest that changed (manifests, indexes, layers), in the order converted.
    pub fn changes(&self) -> Vec<Rewritten> {
        self.changes.lock().expect("lock").clone()
    }

    fn record(&self, from: &Descriptor, to: &Descriptor, reason: String) {
        self.changes.lock().expect("lock").push(Rewritten { from: from.digest.clone(), to: to.digest.clone(), reason });
    }

    /// A document once, however many parents name it.
    fn convert_doc(&self, desc: Descriptor, depth: usize) -> BoxFuture<'_, Result<Descriptor>> {
        async move {
            let cell = self.docs.lock().expect("lock").entry(desc.digest.clone()).or_default().clone();
            let r = cell.get_or_init(|| self.convert_doc_once(desc.clone(), depth)).await;
            match r {
                Ok(d) => {
                    // Keep the parent's fields of the entry (platform, annotations).
                    let mut out = desc.clone();
                    out.digest = d.digest.clone();
                    out.size = d.size;
                    out.media_type = d.media_type.clone();
                    Ok(out)
                }
                Err(e) => Err(e.clone()),
            }
        }
        .boxed()
    }

    async fn convert_doc_once(&self, desc: Descriptor, depth: usize) -> Result<Descriptor> {
        let loc = self.inner.location();
        if depth > MAX_DEPTH {
            return Err(Error::malformed(
                format!("index {}", desc.digest),
                &loc,
                format!("nested deeper than {MAX_DEPTH}"),
            ));
        }
        let doc = self.inner.fetch_document(&desc).await?;
        let what = format!("manifest {}", desc.digest);
        let mut value: Value = serde_json::from_slice(&doc.bytes).map_err(|e| Error::malformed(&what, &loc, e))?;
        let mut reasons: Vec<String> = Vec::new();
        match &doc.view {
            View::Index(index) => {
                let children = try_join_all(index.manifests.iter().map(|c| async move {
                    if media::is_document(&c.media_type) {
                        self.convert_doc(c.clone(), depth + 1).await
                    } else {
                        Ok(c.clone())
                    }
                }))
                .await?;
                let moved: HashMap<String, String> = index
                    .manifests
                    .iter()
                    .zip(&children)
                    .filter(|(a, b)| a.digest != b.digest)
                    .map(|(a, b)| (a.digest.to_string(), b.digest.to_string()))
                    .collect();
                if let Some(list) = value.get_mut("manifests").and_then(Value::as_array_mut) {
                    for (entry, (old, new)) in list.iter_mut().zip(index.manifests.iter().zip(&children)) {
                        if old.digest != new.digest || old.media_type != new.media_type {
                            set_descriptor(entry, new);
                        }
                        let reference = entry.pointer("/annotations/vnd.docker.reference.digest");
                        if let Some(to) = reference.and_then(Value::as_str).and_then(|d| moved.get(d)).cloned() {
                            entry["annotations"][ANNOTATION_DOCKER_REFERENCE_DIGEST] = Value::from(to);
                        }
                    }
                }
                if !moved.is_empty() {
                    reasons.push(format!("{} child manifest(s) converted", moved.len()));
                }
                if self.conversion.to_oci && desc.media_type == media::DOCKER_MANIFEST_LIST {
                    value["mediaType"] = Value::from(media::OCI_INDEX);
                    reasons.push("Docker manifest list rewritten as an OCI index".into());
                }
            }
            View::Manifest(m) => {
                let is_image = m.config.media_type == media::OCI_CONFIG || m.config.media_type == media::DOCKER_CONFIG;
                if !is_image {
                    return Ok(desc);
                }
                let docker = desc.media_type == media::DOCKER_MANIFEST;
                let oci = !docker || self.conversion.to_oci;
                if docker && oci {
                    value["mediaType"] = Value::from(media::OCI_MANIFEST);
                    if m.config.media_type == media::DOCKER_CONFIG {
                        value["config"]["mediaType"] = Value::from(media::OCI_CONFIG);
                    }
                    reasons.push("Docker schema 2 rewritten as OCI".into());
                }
                let layers = try_join_all(m.layers.iter().map(|l| self.convert_layer(l.clone(), oci))).await?;
                let mut recompressed = 0;
                if let Some(list) = value.get_mut("layers").and_then(Value::as_array_mut) {
                    for (entry, (old, new)) in list.iter_mut().zip(m.layers.iter().zip(&layers)) {
                        if old.digest != new.digest {
                            recompressed += 1;
                        }
                        if old.digest != new.digest || old.media_type != new.media_type {
                            set_descriptor(entry, new);
                        }
                    }
                }
                if recompressed > 0 {
                    reasons.push(format!("{recompressed} layer(s) recompressed"));
                }
            }
        }
        if reasons.is_empty() {
            return Ok(desc);
        }
        let bytes = serde_json::to_vec(&value).map_err(|e| Error::Other(e.to_string()))?;
        let media_type = value.get("mediaType").and_then(Value::as_str).unwrap_or(&desc.media_type).to_string();
        let new = Descriptor::new(&media_type, Digest::sha256_of(&bytes), bytes.len() as u64);
        self.manifests.lock().expect("lock").insert(new.digest.clone(), Bytes::from(bytes));
        self.record(&desc, &new, reasons.join("; "));
        Ok(new)
    }

    /// One layer in a manifest of the OCI (`oci`) or Docker format: recompressed when asked
    /// and not already compressed that way, its media type that of the format.
    async fn convert_layer(&self, layer: Descriptor, oci: bool) -> Result<Descriptor> {
        let Some(kind) = Algorithm::of_layer_media_type(&layer.media_type) else { return Ok(layer) };
        let target = self.conversion.compress.filter(|c| c.algorithm() != kind);
        let out_kind = target.map_or(kind, Compression::algorithm);
        let media_type = out_kind.layer_media_type(oci).ok_or_else(|| {
            Error::Unsupported(format!(
                "layer {} would be zstd-compressed in a Docker schema 2 manifest, which cannot describe \
                 zstd; add --convert oci",
                layer.digest
            ))
        })?;
        let mut out = match target {
            None => layer.clone(),
            Some(c) => {
                let cell = self.layers.lock().expect("lock").entry(layer.digest.clone()).or_default().clone();
                let r = cell.get_or_init(|| self.recompress(layer.clone(), kind, c)).await;
                let new = r.as_ref().map_err(Error::clone)?;
                let mut out = layer.clone();
                out.digest = new.digest.clone();
                out.size = new.size;
                out
            }
        };
        out.media_type = media_type.to_string();
        Ok(out)
    }

    async fn recompress(&self, layer: Descriptor, from: Algorithm, to: Compression) -> Result<Descriptor> {
        let _permit = self.jobs.acquire().await.map_err(|e| Error::Other(e.to_string()))?;
        let loc = self.inner.location();
        let input = self.dir.path().join(format!("in-{}", layer.digest.hex()));
        {
            let stream = self.inner.open_blob(&layer, 0).await?;
            let mut reader = VerifyReader::new(stream, &layer, &loc);
            let mut file = tokio::fs::File::create(&input).await.map_err(|e| Error::io(&input, e))?;
            tokio::io::copy(&mut reader, &mut file)
                .await
                .map_err(|e| unwrap_io_error(e, format!("layer {}", layer.digest)))?;
            file.sync_all().await.map_err(|e| Error::io(&input, e))?;
        }
        let output = self.dir.path().join(format!("out-{}", layer.digest.hex()));
        let (i, o) = (input.clone(), output.clone());
        let what = format!("layer {} in {loc}", layer.digest);
        let (digest, size) = tokio::task::spawn_blocking(move || recompress_file(&i, from, to, &o))
            .await
            .map_err(|e| Error::Other(e.to_string()))?
            .map_err(|e| Error::malformed(&what, "recompression", e))?;
        let _ = std::fs::remove_file(&input);
        let new = Descriptor::new(&layer.media_type, digest, size);
        let path = self.dir.path().join(format!("blob-{}", new.digest.hex()));
        std::fs::rename(&output, &path).map_err(|e| Error::io(&path, e))?;
        self.blobs.lock().expect("lock").insert(new.digest.clone(), path);
        self.record(&layer, &new, format!("layer recompressed ({to})"));
        Ok(new)
    }
}

/// Set `digest`, `size` and `mediaType` of a descriptor in a document's JSON, keeping its
/// other fields and their order.
fn set_descriptor(entry: &mut Value, d: &Descriptor) {
    entry["mediaType"] = Value::from(d.media_type.clone());
    entry["digest"] = Value::from(d.digest.to_string());
    entry["size"] = Value::from(d.size);
}

/// Decompress `input` (of `from`) and compress it as `to` into `output` with the one layer
/// encoder; the new digest and size.
fn recompress_file(input: &Path, from: Algorithm, to: Compression, output: &Path) -> std::io::Result<(Digest, u64)> {
    let file = std::io::BufReader::new(std::fs::File::open(input)?);
    let mut reader = codec::decoder(from, file)?;
    let sink = HashWriter::new(std::io::BufWriter::new(std::fs::File::create(output)?));
    let mut w = to.encoder(sink)?;
    std::io::copy(&mut reader, &mut w)?;
    let (mut w, digest, size) = w.finish()?.finish();
    w.flush()?;
    w.get_ref().sync_all()?;
    Ok((digest, size))
}

#[async_trait]
impl Source for Converted<'_> {
    fn location(&self) -> String {
        self.inner.location()
    }

    async fn resolve(&self, reference: Option<&str>) -> Result<Descriptor> {
        self.inner.resolve(reference).await
    }

    async fn fetch_manifest_bytes(&self, desc: &Descriptor) -> Result<Bytes> {
        let made = self.manifests.lock().expect("lock").get(&desc.digest).cloned();
        match made {
            Some(b) => Ok(b),
            None => self.inner.fetch_manifest_bytes(desc).await,
        }
    }

    async fn open_blob(&self, desc: &Descriptor, offset: u64) -> Result<BlobStream> {
        let path = self.blobs.lock().expect("lock").get(&desc.digest).cloned();
        match path {
            Some(p) => {
                let mut f = tokio::fs::File::open(&p).await.map_err(|e| Error::io(&p, e))?;
                f.seek(std::io::SeekFrom::Start(offset)).await.map_err(|e| Error::io(&p, e))?;
                Ok(Box::pin(f))
            }
            None => self.inner.open_blob(desc, offset).await,
        }
    }

    fn blob_path(&self, desc: &Descriptor) -> Option<PathBuf> {
        let made = self.blobs.lock().expect("lock").get(&desc.digest).cloned();
        made.or_else(|| self.inner.blob_path(desc))
    }

    async fn roots(&self) -> Result<Vec<(Descriptor, Option<String>)>> {
        self.inner.roots().await
    }

    fn registry_repo(&self) -> Option<(String, String)> {
        self.inner.registry_repo()
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

    #[test]
    fn recompression_is_reproducible_and_keeps_content() {
        let dir = tempfile::tempdir().unwrap();
        let plain = b"layer content ".repeat(1000);
        let input = dir.path().join("in");
        std::fs::write(&input, &plain).unwrap();
        let mut outs = Vec::new();
        for n in 0..2 {
            let out = dir.path().join(format!("gz{n}"));
            outs.push(recompress_file(&input, Algorithm::None, Compression::Gzip { level: 6 }, &out).unwrap());
        }
        assert_eq!(outs[0], outs[1]);
        let zs = dir.path().join("zs");
        recompress_file(&dir.path().join("gz0"), Algorithm::Gzip, Compression::Zstd { level: 3 }, &zs).unwrap();
        let back = dir.path().join("back");
        let (d, size) = recompress_file(&zs, Algorithm::Zstd, Compression::None, &back).unwrap();
        assert_eq!((d, size), (Digest::sha256_of(&plain), plain.len() as u64));
    }
}
