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
//! other content. Recompression is reproducible (gzip without name or time, zstd single
//! threaded; same input, level and library version give the same bytes) and runs `jobs`
//! layers at once.
//!
//! Not here: choosing the format of a manifest a source has no bytes for (a docker-archive's
//! `manifest.json`: [`crate::transport::endpoint::native_manifest_format`]).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::{try_join_all, BoxFuture};
use futures::FutureExt;
use serde_json::Value;
use tokio::io::AsyncSeekExt;
use tokio::sync::{OnceCell, Semaphore};

use crate::edit::ImageEdit;
use crate::error::{Error, Result};
use crate::layer::{codec, estargz, zstdchunked};
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

/// A layer compression to recompress to (`--dest-compress`): the layer codec's one type.
pub use crate::layer::codec::{Compression, LazyOptions};

/// How a layer's bytes are compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Tar,
    Gzip,
    Zstd,
    /// gzip as eStargz: the layer's annotations name its TOC.
    Estargz,
    /// zstd as zstd:chunked: the layer's annotations name its TOC.
    ZstdChunked,
}

/// The layer format a compression writes.
fn kind_of(c: Compression) -> Kind {
    match c {
        Compression::None => Kind::Tar,
        Compression::Gzip { .. } => Kind::Gzip,
        Compression::Zstd { .. } => Kind::Zstd,
        Compression::Estargz { .. } => Kind::Estargz,
        Compression::ZstdChunked { .. } => Kind::ZstdChunked,
    }
}

/// The compression of a regular (distributable) image layer, from its media type; None for
/// anything else (foreign or non-distributable layers, artifact blobs), which is never touched.
fn layer_kind(media_type: &str) -> Option<Kind> {
    match media_type {
        media::OCI_LAYER_TAR | media::DOCKER_LAYER_TAR => Some(Kind::Tar),
        media::OCI_LAYER_GZIP | media::DOCKER_LAYER_GZIP => Some(Kind::Gzip),
        media::OCI_LAYER_ZSTD => Some(Kind::Zstd),
        _ => None,
    }
}

/// The format of a regular image layer: its media type's compression, eStargz when a gzip
/// layer's annotations name an eStargz TOC.
fn layer_format(layer: &Descriptor) -> Option<Kind> {
    match layer_kind(&layer.media_type)? {
        Kind::Gzip if estargz::is_estargz(&layer.annotations) => Some(Kind::Estargz),
        Kind::Zstd if zstdchunked::is_zstd_chunked(&layer.annotations) => Some(Kind::ZstdChunked),
        k => Some(k),
    }
}

/// The layer media type of `kind` in an OCI (`oci`) or Docker manifest; None: zstd, which a
/// Docker manifest cannot describe.
fn layer_type(kind: Kind, oci: bool) -> Option<&'static str> {
    Some(match (kind, oci) {
        (Kind::Tar, true) => media::OCI_LAYER_TAR,
        (Kind::Gzip | Kind::Estargz, true) => media::OCI_LAYER_GZIP,
        (Kind::Zstd | Kind::ZstdChunked, true) => media::OCI_LAYER_ZSTD,
        (Kind::Tar, false) => media::DOCKER_LAYER_TAR,
        (Kind::Gzip | Kind::Estargz, false) => media::DOCKER_LAYER_GZIP,
        (Kind::Zstd | Kind::ZstdChunked, false) => return None,
    })
}

/// What a copy converts. The default converts nothing (a byte-exact copy).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Conversion {
    /// Rewrite Docker schema 2 manifests and manifest lists as OCI (`--convert oci`).
    pub to_oci: bool,
    /// Recompress image layers not already compressed this way (`--dest-compress`).
    pub compress: Option<Compression>,
    /// Edit every image's config and manifest (`hoist mutate`).
    pub edit: Option<ImageEdit>,
    /// Chunk size and prioritized files of the lazy-pull formats.
    pub lazy: LazyOptions,
}

impl Conversion {
    /// Whether nothing is converted.
    pub fn is_none(&self) -> bool {
        !self.to_oci && self.compress.is_none() && self.edit.as_ref().is_none_or(ImageEdit::is_empty)
    }
}

type Cell<T> = Arc<OnceCell<Result<T>>>;

/// A layer after recompression: its new descriptor (eStargz annotations set or removed) and,
/// when its uncompressed content changed (into or out of eStargz), its new diff_id.
#[derive(Clone)]
struct Recompressed {
    desc: Descriptor,
    diff_id: Option<Digest>,
}

/// A [`Source`] that is `inner` with conversions applied: new manifests from memory,
/// recompressed layers from temp files (removed when it is dropped).
pub struct Converted<'a> {
    inner: &'a dyn Source,
    conversion: Conversion,
    dir: tempfile::TempDir,
    manifests: Mutex<HashMap<Digest, Bytes>>,
    blobs: Mutex<HashMap<Digest, PathBuf>>,
    docs: Mutex<HashMap<Digest, Cell<Descriptor>>>,
    layers: Mutex<HashMap<Digest, Cell<Recompressed>>>,
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
        .inspect(|c| {
            // Layers `hoist append` adds are served from their files.
            let mut blobs = c.blobs.lock().expect("lock");
            for l in c.conversion.edit.iter().flat_map(|e| &e.layers) {
                blobs.insert(l.desc.digest.clone(), l.path.clone());
            }
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

    /// The source of a new base's layer (`hoist rebase`), when `digest` is one.
    fn base_source(&self, digest: &Digest) -> Option<&dyn Source> {
        let r = self.conversion.edit.as_ref()?.rebase.as_ref()?;
        r.new_layer(digest).then(|| r.source.0.as_ref())
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
                let edit = self.conversion.edit.as_ref().filter(|e| !e.is_empty());
                // Restacking (rebase, flatten) decides the layer list before any recompression.
                let mut layers_in = m.layers.clone();
                let mut restack: Option<Restack> = None;
                if let Some(r) = edit.and_then(|e| e.rebase.as_ref()) {
                    let config = self.read_config(&m.config).await?;
                    let platform = crate::rebase::config_platform(&config);
                    let (old, new) = r.pick(&desc.digest, &platform, &m.layers)?;
                    let upper: Vec<Value> = value
                        .get("layers")
                        .and_then(Value::as_array)
                        .map(|l| l[old.layers.len().min(l.len())..].to_vec())
                        .unwrap_or_default();
                    let mut entries: Vec<Value> = Vec::new();
                    for l in &new.layers {
                        entries.push(serde_json::to_value(l).map_err(|e| Error::serialize("layer descriptor", e))?);
                    }
                    entries.extend(upper);
                    value["layers"] = Value::Array(entries);
                    layers_in = new.layers.iter().chain(&m.layers[old.layers.len()..]).cloned().collect();
                    let annotations = value
                        .as_object_mut()
                        .map(|o| o.entry("annotations").or_insert_with(|| Value::Object(Default::default())))
                        .and_then(Value::as_object_mut)
                        .ok_or_else(|| Error::malformed(&what, &loc, "`annotations` is not an object"))?;
                    annotations.insert(media::ANNOTATION_BASE_DIGEST.into(), Value::from(r.new.digest.to_string()));
                    match &r.new.name {
                        Some(n) => annotations.insert(media::ANNOTATION_BASE_NAME.into(), Value::from(n.clone())),
                        None => annotations.remove(media::ANNOTATION_BASE_NAME),
                    };
                    reasons.push(format!(
                        "{} old base layer(s) replaced by the new base's {}",
                        old.layers.len(),
                        new.layers.len()
                    ));
                    restack = Some(Restack::Rebase(Box::new((old.clone(), new.clone()))));
                }
                if let Some(to) = edit.and_then(|e| e.flatten) {
                    let flat = self.flatten_layers(&desc, to).await?;
                    value["layers"] = Value::Array(vec![
                        serde_json::to_value(&flat.desc).map_err(|e| Error::serialize("layer descriptor", e))?
                    ]);
                    layers_in = vec![flat.desc.clone()];
                    reasons.push(format!("{} layer(s) flattened into {}", m.layers.len(), flat.desc.digest));
                    restack = Some(Restack::Flatten {
                        diff_id: flat.diff_id.clone(),
                        created_by: format!("hoist flatten {}", desc.digest),
                    });
                }
                let layers = try_join_all(layers_in.iter().map(|l| self.convert_layer(l.clone(), oci))).await?;
                let mut recompressed = 0;
                if let Some(list) = value.get_mut("layers").and_then(Value::as_array_mut) {
                    for (entry, (old, (new, _))) in list.iter_mut().zip(layers_in.iter().zip(&layers)) {
                        if old.digest != new.digest {
                            recompressed += 1;
                        }
                        if old.digest != new.digest || old.media_type != new.media_type {
                            set_descriptor(entry, new);
                        }
                        if old.annotations != new.annotations {
                            set_annotations(entry, new);
                        }
                    }
                }
                if recompressed > 0 {
                    reasons.push(format!("{recompressed} layer(s) recompressed"));
                }
                let diff_ids: Vec<(usize, Digest)> =
                    layers.iter().enumerate().filter_map(|(i, (_, d))| Some((i, d.clone()?))).collect();
                if !diff_ids.is_empty() {
                    reasons.push("config diff_ids updated (eStargz content includes its TOC)".into());
                }
                if !diff_ids.is_empty() || edit.is_some_and(ImageEdit::edits_config) {
                    let config =
                        self.rewrite_config(&m.config, &diff_ids, layers_in.len(), edit, restack.as_ref()).await?;
                    set_descriptor(&mut value["config"], &config);
                }
                if let Some(e) = edit {
                    e.apply_to_manifest(&mut value).map_err(|e| Error::malformed(&what, &loc, e))?;
                    if !e.layers.is_empty() {
                        let list = value
                            .as_object_mut()
                            .map(|o| o.entry("layers").or_insert_with(|| Value::Array(Vec::new())))
                            .and_then(Value::as_array_mut)
                            .ok_or_else(|| Error::malformed(&what, &loc, "`layers` is not a list"))?;
                        for l in &e.layers {
                            let mut d = l.desc.clone();
                            let kind = layer_format(&d).unwrap_or(Kind::Gzip);
                            d.media_type = layer_type(kind, oci)
                                .ok_or_else(|| {
                                    Error::Unsupported(format!(
                                        "a zstd layer cannot go into the Docker schema 2 manifest {}; add --convert oci",
                                        desc.digest
                                    ))
                                })?
                                .to_string();
                            list.push(serde_json::to_value(&d).map_err(|e| Error::serialize("layer descriptor", e))?);
                        }
                    }
                    reasons.push(e.describe());
                }
            }
        }
        if reasons.is_empty() {
            return Ok(desc);
        }
        let bytes = serde_json::to_vec(&value).map_err(|e| Error::serialize("converted manifest", e))?;
        let media_type = value.get("mediaType").and_then(Value::as_str).unwrap_or(&desc.media_type).to_string();
        let new = Descriptor::new(&media_type, Digest::sha256_of(&bytes), bytes.len() as u64);
        self.manifests.lock().expect("lock").insert(new.digest.clone(), Bytes::from(bytes));
        self.record(&desc, &new, reasons.join("; "));
        Ok(new)
    }

    /// A copy of the image config `config` with `rootfs.diff_ids[i]` replaced for each of
    /// `changes` and `edit` applied, stored as a new blob; its descriptor.
    async fn rewrite_config(
        &self,
        config: &Descriptor,
        changes: &[(usize, Digest)],
        layers: usize,
        edit: Option<&ImageEdit>,
        restack: Option<&Restack>,
    ) -> Result<Descriptor> {
        let loc = self.inner.location();
        let what = format!("config {}", config.digest);
        let mut value = self.read_config(config).await?;
        match restack {
            Some(Restack::Rebase(b)) => {
                crate::rebase::restack(&mut value, &b.0, &b.1).map_err(|e| Error::malformed(&what, &loc, e))?
            }
            Some(Restack::Flatten { diff_id, created_by }) => {
                let root = value.as_object_mut().ok_or_else(|| Error::malformed(&what, &loc, "not an object"))?;
                let rootfs = root.entry("rootfs").or_insert_with(|| serde_json::json!({"type": "layers"}));
                rootfs["diff_ids"] = serde_json::json!([diff_id.to_string()]);
                let mut h = serde_json::Map::new();
                if let Some(c) = root.get("created").cloned() {
                    h.insert("created".into(), c);
                }
                h.insert("created_by".into(), Value::from(created_by.clone()));
                root.insert("history".into(), Value::Array(vec![Value::Object(h)]));
            }
            None => {}
        }
        if !changes.is_empty() {
            let list = value.pointer_mut("/rootfs/diff_ids").and_then(Value::as_array_mut);
            let list = list.filter(|l| l.len() == layers).ok_or_else(|| {
                Error::malformed(&what, &loc, format!("rootfs.diff_ids does not list the manifest's {layers} layers"))
            })?;
            for (i, d) in changes {
                list[*i] = Value::from(d.to_string());
            }
        }
        if let Some(e) = edit {
            e.apply_to_config(&mut value).map_err(|e| Error::malformed(&what, &loc, e))?;
        }
        let bytes = serde_json::to_vec(&value).map_err(|e| Error::serialize("converted index", e))?;
        let new = Descriptor::new(&config.media_type, Digest::sha256_of(&bytes), bytes.len() as u64);
        let path = self.dir.path().join(format!("blob-{}", new.digest.hex()));
        std::fs::write(&path, &bytes).map_err(|e| Error::io(&path, e))?;
        self.blobs.lock().expect("lock").insert(new.digest.clone(), path);
        self.record(config, &new, "config rewritten".into());
        Ok(new)
    }

    /// The image config `config`, parsed.
    async fn read_config(&self, config: &Descriptor) -> Result<Value> {
        let bytes = crate::copy::plan::read_small_blob(self.inner, config, media::MAX_MANIFEST_SIZE).await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::malformed(format!("config {}", config.digest), self.inner.location(), e))
    }

    /// The layers of the image manifest `manifest` applied in order (whiteouts honoured, by
    /// the one layer applier of [`crate::export`]) into one layer tar, compressed as `to`;
    /// its blob is served from the temp directory.
    async fn flatten_layers(&self, manifest: &Descriptor, to: Compression) -> Result<crate::edit::NewLayer> {
        let _permit = self.jobs.acquire().await.expect("semaphore open");
        let work = tempfile::Builder::new()
            .prefix("flatten-")
            .tempdir_in(self.dir.path())
            .map_err(|e| Error::io(self.dir.path(), e))?;
        let tar = work.path().join("flat.tar");
        crate::export::export_filesystem(self.inner, manifest, None, &tar, true).await?;
        let dir = work.path().to_path_buf();
        let lazy = self.conversion.lazy.clone();
        let mut layer = tokio::task::spawn_blocking(move || prepare_layer_blocking(&tar, to, &lazy, &dir))
            .await
            .map_err(|e| Error::task("layer flattening", e))??;
        let path = self.dir.path().join(format!("blob-{}", layer.desc.digest.hex()));
        std::fs::rename(&layer.path, &path).map_err(|e| Error::io(&path, e))?;
        layer.path = path.clone();
        self.blobs.lock().expect("lock").insert(layer.desc.digest.clone(), path);
        Ok(layer)
    }

    /// One layer in a manifest of the OCI (`oci`) or Docker format: recompressed when asked
    /// and not already in that format (an eStargz layer is kept as it is), its media type that
    /// of the format; the new diff_id when the content changed.
    async fn convert_layer(&self, layer: Descriptor, oci: bool) -> Result<(Descriptor, Option<Digest>)> {
        let Some(kind) = layer_format(&layer) else { return Ok((layer, None)) };
        let target = self.conversion.compress.filter(|c| kind_of(*c) != kind);
        let out_kind = target.map_or(kind, kind_of);
        let media_type = layer_type(out_kind, oci).ok_or_else(|| {
            Error::Unsupported(format!(
                "layer {} would be zstd-compressed in a Docker schema 2 manifest, which cannot describe \
                 zstd; add --convert oci",
                layer.digest
            ))
        })?;
        let (mut out, diff_id) = match target {
            None => (layer.clone(), None),
            Some(c) => {
                let cell = self.layers.lock().expect("lock").entry(layer.digest.clone()).or_default().clone();
                let r = cell.get_or_init(|| self.recompress(layer.clone(), kind, c)).await;
                let new = r.as_ref().map_err(Error::clone)?;
                let mut out = layer.clone();
                out.digest = new.desc.digest.clone();
                out.size = new.desc.size;
                out.annotations = new.desc.annotations.clone();
                (out, new.diff_id.clone())
            }
        };
        out.media_type = media_type.to_string();
        Ok((out, diff_id))
    }

    async fn recompress(&self, layer: Descriptor, from: Kind, to: Compression) -> Result<Recompressed> {
        let _permit = self.jobs.acquire().await.expect("semaphore open");
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
        let lazy = self.conversion.lazy.clone();
        let out = tokio::task::spawn_blocking(move || recompress_file(&i, from, to, &lazy, &o))
            .await
            .map_err(|e| Error::task("recompression", e))?
            .map_err(|e| Error::malformed(&what, "recompression", e))?;
        let _ = std::fs::remove_file(&input);
        let mut new = Descriptor::new(&layer.media_type, out.digest, out.size);
        new.annotations = layer.annotations.clone();
        new.annotations.remove(estargz::ANNOTATION_TOC_DIGEST);
        new.annotations.remove(estargz::ANNOTATION_UNCOMPRESSED_SIZE);
        for k in zstdchunked::ANNOTATIONS {
            new.annotations.remove(k);
        }
        for (k, v) in out.annotations {
            new.annotations.insert(k.to_string(), v);
        }
        let path = self.dir.path().join(format!("blob-{}", new.digest.hex()));
        std::fs::rename(&output, &path).map_err(|e| Error::io(&path, e))?;
        self.blobs.lock().expect("lock").insert(new.digest.clone(), path);
        self.record(&layer, &new, format!("layer recompressed ({to})"));
        Ok(Recompressed { desc: new, diff_id: out.diff_id })
    }
}

/// How an image's layer stack is rebuilt before its layers are converted.
enum Restack {
    /// `hoist rebase`: (old base image, new base image).
    Rebase(Box<(crate::rebase::BaseImage, crate::rebase::BaseImage)>),
    /// `hoist flatten`: one layer of this diff_id; the history collapsed to one entry.
    Flatten { diff_id: Digest, created_by: String },
}

/// Set a layer entry's annotations to the descriptor's (eStargz annotations added or
/// removed), keeping its other fields; no `annotations` field when there are none.
fn set_annotations(entry: &mut Value, d: &Descriptor) {
    let Some(obj) = entry.as_object_mut() else { return };
    if d.annotations.is_empty() {
        obj.remove("annotations");
    } else {
        let map = d.annotations.iter().map(|(k, v)| (k.clone(), Value::from(v.clone()))).collect();
        obj.insert("annotations".into(), Value::Object(map));
    }
}

/// Set `digest`, `size` and `mediaType` of a descriptor in a document's JSON, keeping its
/// other fields and their order.
fn set_descriptor(entry: &mut Value, d: &Descriptor) {
    entry["mediaType"] = Value::from(d.media_type.clone());
    entry["digest"] = Value::from(d.digest.to_string());
    entry["size"] = Value::from(d.size);
}

/// What [`recompress_file`] wrote.
struct Output {
    digest: Digest,
    size: u64,
    /// The new diff_id when the uncompressed content changed (into or out of eStargz).
    diff_id: Option<Digest>,
    /// Annotations the layer's descriptor gets (eStargz's TOC digest and size).
    annotations: Vec<(&'static str, String)>,
}

/// Decompress `input` (of `from`) and compress it as `to` into `output`, by the layer codec's
/// one dispatch ([`codec::compress_layer`]). Reproducible whatever the core count. Out of
/// eStargz, the plain tar first (TOC and landmark entries dropped): from one lazy format to
/// another, the uncompressed tar is made once.
fn recompress_file(
    input: &Path,
    from: Kind,
    to: Compression,
    lazy: &LazyOptions,
    output: &Path,
) -> std::io::Result<Output> {
    let file = std::io::BufReader::new(std::fs::File::open(input)?);
    // The layer codec's one decompression dispatch.
    let algorithm = match from {
        Kind::Tar => codec::Algorithm::None,
        Kind::Gzip | Kind::Estargz => codec::Algorithm::Gzip,
        Kind::Zstd | Kind::ZstdChunked => codec::Algorithm::Zstd,
    };
    let reader = codec::decoder(algorithm, file)?;
    let sink = HashWriter::new(std::io::BufWriter::new(std::fs::File::create(output)?));
    let what = format!("layer {}", input.display());
    let (sink, layer, plain_diff) = if from == Kind::Estargz {
        use std::io::Seek;
        let mut plain = tempfile::tempfile()?;
        let mut hashed = HashWriter::new(std::io::BufWriter::new(&mut plain));
        estargz::to_plain_tar(reader, &mut hashed, "eStargz layer")?;
        let (mut w, diff, _) = hashed.finish();
        w.flush()?;
        drop(w);
        plain.seek(std::io::SeekFrom::Start(0))?;
        let (sink, layer) = codec::compress_layer(to, lazy, std::io::BufReader::new(plain), sink, &what)?;
        (sink, layer, Some(diff))
    } else {
        let (sink, layer) = codec::compress_layer(to, lazy, reader, sink, &what)?;
        (sink, layer, None)
    };
    let (mut w, digest, size) = sink.finish();
    w.flush()?;
    w.get_ref().sync_all()?;
    Ok(Output { digest, size, diff_id: layer.diff_id.or(plain_diff), annotations: layer.annotations })
}

/// Compress the layer tar `input` (plain, gzip or zstd, told by its first bytes) as `to` into
/// a file in `dir`, for `hoist append`: its descriptor and diff_id. Blocking.
pub fn prepare_layer_blocking(
    input: &Path,
    to: Compression,
    lazy: &LazyOptions,
    dir: &Path,
) -> Result<crate::edit::NewLayer> {
    let head = {
        let mut h = [0u8; 4];
        let mut f = std::fs::File::open(input).map_err(|e| Error::io(input, e))?;
        let n = f.read(&mut h).map_err(|e| Error::io(input, e))?;
        h[..n].to_vec()
    };
    let from = match head.as_slice() {
        [0x1f, 0x8b, ..] => Kind::Gzip,
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Kind::Zstd,
        _ => Kind::Tar,
    };
    let what = format!("layer {}", input.display());
    let plain = dir.join(format!("plain-{}", std::process::id()));
    let diff = recompress_file(input, from, Compression::None, lazy, &plain)
        .map_err(|e| Error::malformed(&what, "append", e))?;
    // Check that it is a tar before it becomes a layer.
    estargz::to_plain_tar(std::fs::File::open(&plain).map_err(|e| Error::io(&plain, e))?, &mut std::io::sink(), &what)
        .map_err(|e| Error::malformed(&what, "append", e))?;
    let out = dir.join("layer.tmp");
    let o = recompress_file(&plain, Kind::Tar, to, lazy, &out).map_err(|e| Error::malformed(&what, "append", e))?;
    let _ = std::fs::remove_file(&plain);
    let path = dir.join(format!("layer-{}", o.digest.hex()));
    std::fs::rename(&out, &path).map_err(|e| Error::io(&path, e))?;
    let kind = kind_of(to);
    let mut desc = Descriptor::new(layer_type(kind, true).unwrap_or(media::OCI_LAYER_GZIP), o.digest, o.size);
    for (k, v) in o.annotations {
        desc.annotations.insert(k.to_string(), v);
    }
    let name = input.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    Ok(crate::edit::NewLayer {
        path,
        desc,
        diff_id: o.diff_id.unwrap_or(diff.digest),
        created_by: format!("hoist append {name}"),
    })
}

#[async_trait]
impl Source for Converted<'_> {
    fn location(&self) -> String {
        self.inner.location()
    }

    async fn resolve(&self, reference: Option<&crate::model::reference::TagOrDigest>) -> Result<Descriptor> {
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
            None => match self.base_source(&desc.digest) {
                Some(base) => base.open_blob(desc, offset).await,
                None => self.inner.open_blob(desc, offset).await,
            },
        }
    }

    fn blob_path(&self, desc: &Descriptor) -> Option<PathBuf> {
        let made = self.blobs.lock().expect("lock").get(&desc.digest).cloned();
        made.or_else(|| match self.base_source(&desc.digest) {
            Some(base) => base.blob_path(desc),
            None => self.inner.blob_path(desc),
        })
    }

    async fn roots(&self) -> Result<Vec<(Descriptor, Option<String>)>> {
        self.inner.roots().await
    }

    fn registry_repo(&self) -> Option<(String, String)> {
        self.inner.registry_repo()
    }

    /// A new base's layer mounts from the base's repository; a blob made here (a converted
    /// or appended layer) is offered to the inner one, as [`Source::registry_repo`] says.
    fn mount_from(&self, desc: &Descriptor) -> Option<(String, String)> {
        if self.blobs.lock().expect("lock").contains_key(&desc.digest) {
            return self.inner.registry_repo();
        }
        match self.base_source(&desc.digest) {
            Some(base) => base.mount_from(desc),
            None => self.inner.mount_from(desc),
        }
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
            let o = recompress_file(&input, Kind::Tar, Compression::Gzip { level: 6 }, &LazyOptions::default(), &out)
                .unwrap();
            outs.push((o.digest, o.size));
        }
        assert_eq!(outs[0], outs[1]);
        let zs = dir.path().join("zs");
        recompress_file(
            &dir.path().join("gz0"),
            Kind::Gzip,
            Compression::Zstd { level: 3 },
            &LazyOptions::default(),
            &zs,
        )
        .unwrap();
        let back = dir.path().join("back");
        let o = recompress_file(&zs, Kind::Zstd, Compression::None, &LazyOptions::default(), &back).unwrap();
        assert_eq!((o.digest, o.size), (Digest::sha256_of(&plain), plain.len() as u64));
    }
}
