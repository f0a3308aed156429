//! Conversion between model artifact formats: CNCF ModelPack and KitOps ModelKits, from
//! either of them or from a Docker Model Runner artifact. Only the manifest and the config
//! change; every layer keeps its blob (digest, size and annotations), so a conversion between
//! two repositories uploads two small documents and mounts or skips the rest.
//!
//! Every layer kind has a counterpart: both formats know raw files and tars (plain, gzip,
//! zstd) with the same `org.cncf.model.filepath` / file metadata annotations, so no layer
//! is re-tarred. The mapping:
//!
//! | ModelPack | ModelKit |
//! |---|---|
//! | `weight` (the first) | `model` (a ModelKit has one) |
//! | `weight` (the others), `weight.config` | `modelpart` |
//! | `doc`, `code`, `dataset` | `docs`, `code`, `dataset` |
//!
//! Back to ModelPack, a `modelpart` whose file name is a weight format (`*.safetensors`,
//! `*.gguf`, ...) is a `weight` again, any other a `weight.config`. Docker layers are GGUF or
//! safetensors weights, a license (doc) and config tars (weight config). A layer of no model
//! media type hoist knows (e.g. a KitOps MCP bundle) is refused by its digest.
//!
//! The configs: ModelPack's `descriptor` maps to the Kitfile's `package` (name, version,
//! description, authors, licenses joined with ` AND `) and `model` (name, format); its other
//! fields (architecture, family, paramSize, precision, quantization, sourceURL, revision,
//! title) go to `model.parameters`, where the way back finds them. Diff IDs come from the
//! source config (ModelPack `modelfs.diffIds`, the Kitfile's `diffId`s, Docker's
//! `rootfs.diff_ids`); a raw or plain tar layer's is its digest; a compressed layer with
//! none stated is read once and decompressed to compute it (nothing is written).

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::AsyncReadExt;

use super::formats::{self, ModelFormat};
use super::modelfile::{KitLayerInfo, KitModel, KitPackage, KitPath, Kitfile};
use super::{layer_media_type, ModelFileKind, ModelLayerFormat, ModelMeta};
use crate::error::{Error, Result};
use crate::layer::codec::{self, WriteDecoder};
use crate::model::descriptor::Descriptor;
use crate::model::digest::Digest;
use crate::model::document::{ManifestView, View};
use crate::model::media;
use crate::model::verify::HashWriter;
use crate::model::write::ImageManifest;
use crate::transport::{BlobStream, RangeRead, Source};

/// Largest model config read (ModelPack configs, Kitfiles and Docker configs are a few KiB;
/// the bound is the one hoist puts on manifests).
pub const MAX_MODEL_CONFIG: u64 = media::MAX_MANIFEST_SIZE;

/// The format to convert to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelTarget {
    /// CNCF ModelPack (`application/vnd.cncf.model.manifest.v1+json`).
    ModelPack,
    /// KitOps ModelKit (`application/vnd.kitops.modelkit.manifest.v1+json`).
    ModelKit,
}

/// What a conversion did.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConvertReport {
    /// The source's format: `modelpack`, `modelkit` or `docker`.
    pub from: &'static str,
    /// The target format.
    pub to: ModelTarget,
    /// The source manifest.
    pub source: Digest,
    /// The converted manifest (the source's when it already was in the target format).
    pub digest: Digest,
    /// The converted config.
    pub config: Digest,
    /// Layers kept (every one: their blobs are the source's).
    pub layers: usize,
    /// Layers whose diff ID was not stated and was computed by reading them.
    pub diff_ids_computed: Vec<Digest>,
    /// The source already was in the target format: nothing changed.
    pub unchanged: bool,
}

/// A converted model artifact: the new manifest and config in memory, every layer read from
/// the source. It is a [`Source`], so `copy::graph` moves it anywhere (and a registry mounts
/// the layers from the source's repository).
pub struct ConvertedModel<'a> {
    inner: &'a dyn Source,
    root: Descriptor,
    manifest: Bytes,
    config_desc: Descriptor,
    config: Bytes,
    /// What was done.
    pub report: ConvertReport,
}

impl ConvertedModel<'_> {
    /// The converted manifest's descriptor (with its artifact type).
    pub fn root(&self) -> &Descriptor {
        &self.root
    }

    /// The converted manifest's bytes.
    pub fn manifest_bytes(&self) -> &Bytes {
        &self.manifest
    }

    /// The converted config's bytes.
    pub fn config_bytes(&self) -> &Bytes {
        &self.config
    }
}

#[async_trait]
impl Source for ConvertedModel<'_> {
    fn location(&self) -> String {
        self.inner.location()
    }

    async fn resolve(&self, _reference: Option<&crate::model::reference::TagOrDigest>) -> Result<Descriptor> {
        Ok(self.root.clone())
    }

    async fn fetch_manifest_bytes(&self, desc: &Descriptor) -> Result<Bytes> {
        if desc.digest == self.root.digest {
            return Ok(self.manifest.clone());
        }
        self.inner.fetch_manifest_bytes(desc).await
    }

    async fn open_blob(&self, desc: &Descriptor, offset: u64) -> Result<BlobStream> {
        if desc.digest == self.config_desc.digest {
            let start = (offset as usize).min(self.config.len());
            return Ok(Box::pin(std::io::Cursor::new(self.config.slice(start..))));
        }
        self.inner.open_blob(desc, offset).await
    }

    fn blob_path(&self, desc: &Descriptor) -> Option<PathBuf> {
        if desc.digest == self.config_desc.digest {
            return None;
        }
        self.inner.blob_path(desc)
    }

    fn range_lanes(&self, desc: &Descriptor) -> usize {
        if desc.digest == self.config_desc.digest {
            1
        } else {
            self.inner.range_lanes(desc)
        }
    }

    async fn open_blob_range(&self, desc: &Descriptor, offset: u64, len: u64) -> Result<RangeRead> {
        self.inner.open_blob_range(desc, offset, len).await
    }

    fn hashed_itself(&self, desc: &Descriptor) -> bool {
        desc.digest == self.config_desc.digest || self.inner.hashed_itself(desc)
    }

    fn registry_repo(&self) -> Option<(String, String)> {
        self.inner.registry_repo()
    }
}

/// The format of a model manifest, by its artifact type or config media type.
pub fn manifest_format(m: &ManifestView) -> Option<ModelFormat> {
    let at = m.artifact_type.as_deref().unwrap_or_default();
    let ct = m.config.media_type.as_str();
    if at == media::KITOPS_ARTIFACT || ct == media::KITOPS_CONFIG {
        Some(ModelFormat::ModelKit)
    } else if at == media::MODEL_ARTIFACT || ct == media::MODEL_CONFIG || ct.starts_with("application/vnd.cnai.model.")
    {
        Some(ModelFormat::ModelPack)
    } else if ct.starts_with(media::DOCKER_AI_PREFIX) {
        Some(ModelFormat::Docker)
    } else if m.artifact_type.is_none()
        && m.layers.iter().any(|l| {
            l.media_type.starts_with("application/vnd.cncf.model.")
                || l.media_type.starts_with("application/vnd.cnai.model.")
        })
    {
        // no artifactType and no model config, but model layers (early modctl artifacts); an
        // artifact that names another type is not a model, whatever its layers
        Some(ModelFormat::ModelPack)
    } else {
        None
    }
}

/// The format of the model manifest `m` (of `root` in `loc`), or an error naming what it is
/// instead: its artifact type and config media type (an image, an SBOM, ...).
pub fn model_format(root: &Descriptor, m: &ManifestView, loc: &str) -> Result<ModelFormat> {
    manifest_format(m).ok_or_else(|| {
        Error::Unsupported(format!(
            "{} in {loc} is not a model artifact: artifactType {}, config {} (hoist reads ModelPack, KitOps ModelKit and Docker model artifacts)",
            root.digest,
            m.artifact_type.as_deref().unwrap_or("none"),
            m.config.media_type,
        ))
    })
}

/// The config blob of the model manifest `m`, verified, at most [`MAX_MODEL_CONFIG`] bytes.
async fn read_model_config(source: &dyn Source, m: &ManifestView) -> Result<Vec<u8>> {
    crate::copy::plan::read_small_blob(source, &m.config, MAX_MODEL_CONFIG).await
}

/// What the config of the model artifact `root` says (name, version, format, precision, ...),
/// whatever its format: what `model diff` compares.
pub async fn model_meta(source: &dyn Source, root: &Descriptor) -> Result<ModelMeta> {
    let loc = source.location();
    let doc = source.fetch_document(root).await?;
    let View::Manifest(m) = &doc.view else {
        return Err(Error::Unsupported(format!("{} in {loc} is an index; pick one model manifest", root.digest)));
    };
    let format = model_format(root, m, &loc)?;
    let config = read_model_config(source, m).await?;
    Ok(read_said(format, &config, m, &loc)?.meta)
}

fn format_name(f: ModelFormat) -> &'static str {
    match f {
        ModelFormat::ModelPack => "modelpack",
        ModelFormat::ModelKit => "modelkit",
        ModelFormat::Docker => "docker",
    }
}

/// What a source config says, in neutral terms.
#[derive(Default)]
struct Said {
    meta: ModelMeta,
    /// Diff IDs by layer index (ModelPack, Docker) ...
    by_index: Vec<Option<Digest>>,
    /// ... or by layer digest (a Kitfile's entries).
    by_digest: HashMap<String, Digest>,
}

fn s(v: &serde_json::Value) -> Option<String> {
    v.as_str().filter(|s| !s.is_empty()).map(str::to_string)
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(s).collect()).unwrap_or_default()
}

fn digests(v: &serde_json::Value) -> Vec<Option<Digest>> {
    v.as_array().map(|a| a.iter().map(|d| d.as_str().and_then(|d| d.parse().ok())).collect()).unwrap_or_default()
}

fn read_said(format: ModelFormat, config: &[u8], manifest: &ManifestView, loc: &str) -> Result<Said> {
    let bad = |e: String| Error::malformed("model config", loc.to_string(), e);
    let mut said = Said::default();
    match format {
        ModelFormat::ModelPack => {
            let v: serde_json::Value = serde_json::from_slice(config).map_err(|e| bad(e.to_string()))?;
            let d = &v["descriptor"];
            let c = &v["config"];
            said.meta = ModelMeta {
                created_at: s(&d["createdAt"]),
                authors: strings(&d["authors"]),
                family: s(&d["family"]),
                name: s(&d["name"]),
                source_url: s(&d["sourceURL"]),
                version: s(&d["version"]),
                revision: s(&d["revision"]),
                licenses: strings(&d["licenses"]),
                title: s(&d["title"]),
                description: s(&d["description"]),
                architecture: s(&c["architecture"]),
                format: s(&c["format"]),
                param_size: s(&c["paramSize"]),
                precision: s(&c["precision"]),
                quantization: s(&c["quantization"]),
            };
            said.by_index = digests(&v["modelfs"]["diffIds"]);
        }
        ModelFormat::Docker => {
            let v: serde_json::Value = serde_json::from_slice(config).map_err(|e| bad(e.to_string()))?;
            let c = &v["config"];
            said.meta = ModelMeta {
                created_at: s(&v["descriptor"]["created"]).filter(|t| crate::model::time::parse_rfc3339(t).is_some()),
                architecture: s(&c["architecture"]),
                format: s(&c["format"]),
                param_size: s(&c["parameters"]),
                quantization: s(&c["quantization"]),
                ..Default::default()
            };
            said.by_index = digests(&v["rootfs"]["diff_ids"]);
        }
        ModelFormat::ModelKit => {
            let text = std::str::from_utf8(config).map_err(|_| bad("not UTF-8".into()))?;
            let kf = Kitfile::parse(text, loc)?;
            let pkg = kf.package.clone().unwrap_or_default();
            let model = kf.model.clone().unwrap_or_default();
            let p = model.parameters.clone().unwrap_or_default();
            let license = pkg.license.clone().or(model.license.clone());
            said.meta = ModelMeta {
                created_at: manifest
                    .annotations
                    .get(media::ANNOTATION_CREATED)
                    .filter(|t| crate::model::time::parse_rfc3339(t).is_some())
                    .cloned(),
                authors: pkg.authors.clone(),
                family: s(&p["family"]),
                name: pkg.name.clone().or(model.name.clone()).filter(|n| !n.is_empty()),
                source_url: s(&p["sourceURL"]),
                version: pkg.version.clone().or(model.version.clone()),
                revision: s(&p["revision"]),
                licenses: license.map(|l| l.split(" AND ").map(str::to_string).collect()).unwrap_or_default(),
                title: s(&p["title"]),
                description: pkg.description.clone().or(model.description.clone()),
                architecture: s(&p["architecture"]),
                format: model.format.clone().or(s(&p["format"])),
                param_size: s(&p["paramSize"]),
                precision: s(&p["precision"]),
                quantization: s(&p["quantization"]),
            };
            let mut add = |l: &KitLayerInfo| {
                if let (Some(d), Some(id)) = (&l.digest, l.diff_id.as_deref().and_then(|i| i.parse().ok())) {
                    said.by_digest.insert(d.clone(), id);
                }
            };
            add(&model.layer);
            for e in model.parts.iter().chain(&kf.code).chain(&kf.datasets).chain(&kf.docs) {
                add(&e.layer);
            }
        }
    }
    Ok(said)
}

/// Read a compressed layer once (verifying it) and return the digest of what it decompresses to.
async fn compute_diff_id(source: &dyn Source, layer: &Descriptor, format: ModelLayerFormat) -> Result<Digest> {
    let loc = source.location();
    let what = format!("layer {}", layer.digest);
    let mut stream = source.open_blob(layer, 0).await?;
    let mut blob_hash = layer.digest.algorithm().hasher();
    let algorithm = match format {
        ModelLayerFormat::TarGzip => codec::Algorithm::Gzip,
        _ => codec::Algorithm::Zstd,
    };
    let sink = HashWriter::new(std::io::sink());
    let mut dec = WriteDecoder::of(algorithm, sink).map_err(|e| Error::malformed(&what, &loc, e))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = stream.read(&mut buf).await.map_err(|e| Error::malformed(&what, &loc, e))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > layer.size {
            return Err(Error::malformed(&what, &loc, "longer than its descriptor says"));
        }
        blob_hash.update(&buf[..n]);
        dec.write_all(&buf[..n]).map_err(|e| Error::malformed(&what, &loc, format!("does not decompress: {e}")))?;
    }
    if total != layer.size || blob_hash.finish() != layer.digest {
        return Err(Error::malformed(&what, &loc, "its bytes do not match its digest and size"));
    }
    let sink = dec.finish().map_err(|e| Error::malformed(&what, &loc, format!("does not decompress: {e}")))?;
    Ok(sink.finish().1)
}

/// The ModelPack kind of a layer, as the conversion sees it (see the module doc).
fn modelpack_kind(info: &formats::LayerInfo) -> ModelFileKind {
    if info.format == ModelFormat::ModelKit
        && info.kind == ModelFileKind::WeightConfig
        && info.path.as_deref().and_then(ModelFileKind::classify) == Some(ModelFileKind::Weight)
    {
        return ModelFileKind::Weight;
    }
    info.kind
}

/// Convert the model artifact `root` of `source` to `to` (see the module doc).
pub async fn convert_model<'a>(
    source: &'a dyn Source,
    root: &Descriptor,
    to: ModelTarget,
) -> Result<ConvertedModel<'a>> {
    let loc = source.location();
    let doc = source.fetch_document(root).await?;
    let View::Manifest(m) = &doc.view else {
        return Err(Error::Unsupported(format!("{} in {loc} is an index; pick one model manifest", root.digest)));
    };
    let from = model_format(root, m, &loc)?;
    let config = read_model_config(source, m).await?;
    let same = matches!(
        (from, to),
        (ModelFormat::ModelPack, ModelTarget::ModelPack) | (ModelFormat::ModelKit, ModelTarget::ModelKit)
    );
    let mut report = ConvertReport {
        from: format_name(from),
        to,
        source: root.digest.clone(),
        digest: root.digest.clone(),
        config: m.config.digest.clone(),
        layers: m.layers.len(),
        diff_ids_computed: vec![],
        unchanged: same,
    };
    if same {
        let mut root = root.clone();
        root.artifact_type = m.artifact_type.clone().or(root.artifact_type);
        return Ok(ConvertedModel {
            inner: source,
            root,
            manifest: doc.bytes.clone(),
            config_desc: m.config.clone(),
            config: Bytes::from(config),
            report,
        });
    }
    let said = read_said(from, &config, m, &loc)?;

    // The layers: same blobs, target media types.
    let mut layers = Vec::with_capacity(m.layers.len());
    let mut diff_ids = Vec::with_capacity(m.layers.len());
    let mut kinds = Vec::with_capacity(m.layers.len());
    let mut model_taken = false;
    for (i, l) in m.layers.iter().enumerate() {
        let info = formats::layer_info(l).ok_or_else(|| {
            Error::Unsupported(format!(
                "layer {} ({}) of {} in {loc}: media type {} has no {} counterpart hoist knows",
                l.digest,
                formats::annotated_path(l).unwrap_or_default(),
                root.digest,
                l.media_type,
                match to {
                    ModelTarget::ModelPack => "ModelPack",
                    ModelTarget::ModelKit => "ModelKit",
                }
            ))
        })?;
        let kind = modelpack_kind(&info);
        let mut nl = l.clone();
        nl.media_type = match to {
            ModelTarget::ModelPack => layer_media_type(kind, info.layer_format),
            ModelTarget::ModelKit => {
                if kind == ModelFileKind::Weight && !model_taken {
                    model_taken = true;
                    formats::kitops_media_type(ModelFileKind::Weight, info.layer_format)
                } else if kind == ModelFileKind::Weight {
                    formats::kitops_media_type(ModelFileKind::WeightConfig, info.layer_format)
                } else {
                    formats::kitops_media_type(kind, info.layer_format)
                }
            }
        };
        if let Some(p) = &info.path {
            if formats::annotated_path(l).is_none() {
                nl.annotations.insert(media::ANNOTATION_MODEL_FILEPATH.into(), p.clone());
            }
        }
        let stated =
            said.by_index.get(i).cloned().flatten().or_else(|| said.by_digest.get(&l.digest.to_string()).cloned());
        let id = match (stated, info.layer_format) {
            (Some(id), _) => id,
            (None, ModelLayerFormat::Raw | ModelLayerFormat::Tar) => l.digest.clone(),
            (None, f) => {
                report.diff_ids_computed.push(l.digest.clone());
                compute_diff_id(source, l, f).await?
            }
        };
        layers.push(nl);
        diff_ids.push(id);
        kinds.push((kind, info.path.clone()));
    }

    let (config_bytes, config_type, artifact_type) = match to {
        ModelTarget::ModelPack => {
            if diff_ids.is_empty() {
                return Err(Error::Unsupported(format!(
                    "{} in {loc} has no layers: a ModelPack needs one",
                    root.digest
                )));
            }
            (said.meta.config_bytes(diff_ids)?, media::MODEL_CONFIG, media::MODEL_ARTIFACT)
        }
        ModelTarget::ModelKit => {
            (kitfile_for(&said.meta, &layers, &kinds, &diff_ids)?, media::KITOPS_CONFIG, media::KITOPS_ARTIFACT)
        }
    };
    let config = Bytes::from(config_bytes);
    let config_desc = Descriptor::of_bytes(config_type, &config);
    let mut manifest = ImageManifest::new(config_desc.clone(), layers);
    manifest.artifact_type = Some(artifact_type.into());
    manifest.subject = m.subject.clone();
    manifest.annotations = m.annotations.clone();
    if let (ModelTarget::ModelKit, Some(t)) = (to, &said.meta.created_at) {
        manifest.annotations.entry(media::ANNOTATION_CREATED.into()).or_insert_with(|| t.clone());
    }
    let bytes = Bytes::from(manifest.to_bytes()?);
    let mut new_root = Descriptor::of_bytes(media::OCI_MANIFEST, &bytes);
    new_root.artifact_type = manifest.artifact_type;
    report.digest = new_root.digest.clone();
    report.config = config_desc.digest.clone();
    Ok(ConvertedModel { inner: source, root: new_root, manifest: bytes, config_desc, config, report })
}

/// The ModelKit config (a Kitfile as JSON) for these layers.
fn kitfile_for(
    meta: &ModelMeta,
    layers: &[Descriptor],
    kinds: &[(ModelFileKind, Option<String>)],
    diff_ids: &[Digest],
) -> Result<Vec<u8>> {
    let info =
        |i: usize| KitLayerInfo { digest: Some(layers[i].digest.to_string()), diff_id: Some(diff_ids[i].to_string()) };
    let path = |i: usize| kinds[i].1.clone().unwrap_or_else(|| ".".into());
    let entry = |i: usize| KitPath { path: path(i), layer: info(i), ..Default::default() };
    let mut params = serde_json::Map::new();
    for (k, v) in [
        ("architecture", &meta.architecture),
        ("family", &meta.family),
        ("paramSize", &meta.param_size),
        ("precision", &meta.precision),
        ("quantization", &meta.quantization),
        ("sourceURL", &meta.source_url),
        ("revision", &meta.revision),
        ("title", &meta.title),
    ] {
        if let Some(v) = v {
            params.insert(k.into(), serde_json::Value::String(v.clone()));
        }
    }
    let mut kf = Kitfile {
        manifest_version: "1.0.0".into(),
        package: Some(KitPackage {
            name: meta.name.clone(),
            version: meta.version.clone(),
            description: meta.description.clone(),
            license: (!meta.licenses.is_empty()).then(|| meta.licenses.join(" AND ")),
            authors: meta.authors.clone(),
        }),
        ..Default::default()
    };
    let mut model: Option<KitModel> = None;
    for (i, l) in layers.iter().enumerate() {
        let mt = l.media_type.as_str();
        let base = mt.strip_prefix(media::KITOPS_LAYER_PREFIX).and_then(|r| r.split_once(".v1.")).map(|(b, _)| b);
        let m = || KitModel {
            name: meta.name.clone(),
            format: meta.format.clone(),
            parameters: (!params.is_empty()).then(|| serde_json::Value::Object(params.clone())),
            ..Default::default()
        };
        match base {
            Some("model") => {
                let mm = model.get_or_insert_with(m);
                mm.path = Some(path(i));
                mm.layer = info(i);
            }
            Some("modelpart") => model.get_or_insert_with(m).parts.push(entry(i)),
            Some("code") => kf.code.push(entry(i)),
            Some("dataset") => kf.datasets.push(entry(i)),
            Some("docs") => kf.docs.push(entry(i)),
            _ => {
                return Err(Error::Unsupported(format!(
                    "layer {}: media type {mt} has no place in a Kitfile (model, modelpart, code, dataset, docs)",
                    l.digest
                )))
            }
        }
    }
    kf.model = model;
    crate::model::write::to_json(&kf)
}
