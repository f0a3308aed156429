//! CNCF ModelPack artifacts (<https://github.com/modelpack/model-spec>): one layer per
//! file of a model directory, classified by name (weight, weight config, doc, code,
//! dataset), with the ModelPack config and per-file annotations; and `unpack_model`,
//! which restores the files from such an artifact.
//!
//! The config describes the model from, in increasing priority: what the files say
//! ([`describe`]: safetensors and GGUF headers, `config.json`), a modctl `Modelfile`, a
//! KitOps `Kitfile` ([`modelfile`]) and the fields of [`ModelSpec`] (the CLI's flags).
//!
//! Raw layers (the default) are the files themselves. A file is stored by reflink
//! (FICLONE) when the filesystem supports it and by copy otherwise, and hashed from the
//! stored copy. It is never hardlinked: a later edit of the source would silently change
//! a blob behind its digest.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub(crate) mod convert;
pub(crate) mod describe;
pub(crate) mod formats;
pub mod hf;
pub(crate) mod modelfile;
pub(crate) mod planned;
pub(crate) mod select;
pub mod sign;

pub use convert::{convert_model, ConvertReport, ConvertedModel, ModelTarget};
pub use describe::Described;
pub use modelfile::{Kitfile, Modelfile};
pub use select::FileSelector;

use crate::error::{Error, IoContext, Result};
use crate::ingest::{
    hash_file_reporting, parse_rfc3339, rfc3339, source_date_epoch, store_bytes, store_file_reporting, FileProgress,
    NoFileProgress, Reporting,
};
use crate::layer::extract::{checked_dir, Extractor, Profile};
use crate::layer::tar::{Stream, TarReader};
use crate::layer::{build_layer_blocking, codec, Compression, LayerEntry};
use crate::model::descriptor::Descriptor;
use crate::model::digest::Digest;
use crate::model::document::View;
use crate::model::media;
use crate::model::write::ImageManifest;
use crate::transport::layout::{write_verified, Layout};
use crate::transport::{NoProgress, Source};

/// What a model file is, which picks its layer media type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelFileKind {
    /// Model weights.
    Weight,
    /// Weight configuration (config.json, tokenizer files, ...).
    WeightConfig,
    /// Documentation (README, LICENSE, ...).
    Doc,
    /// Code and scripts.
    Code,
    /// Data sets.
    Dataset,
}

impl ModelFileKind {
    fn media_name(self) -> &'static str {
        match self {
            ModelFileKind::Weight => "weight",
            ModelFileKind::WeightConfig => "weight.config",
            ModelFileKind::Doc => "doc",
            ModelFileKind::Code => "code",
            ModelFileKind::Dataset => "dataset",
        }
    }

    /// Classify a file by its name. Unknown files return `None`.
    pub fn classify(path: &str) -> Option<ModelFileKind> {
        let name = path.rsplit('/').next().unwrap_or(path).to_ascii_lowercase();
        let ext = name.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
        const WEIGHT_CONFIG: &[&str] = &[
            "config.json",
            "generation_config.json",
            "tokenizer.model",
            "merges.txt",
            "special_tokens_map.json",
            "added_tokens.json",
            "preprocessor_config.json",
            "chat_template.json",
        ];
        if WEIGHT_CONFIG.contains(&name.as_str())
            || (name.starts_with("tokenizer") && name.ends_with(".json"))
            || name.starts_with("vocab")
            || name.ends_with(".index.json")
        {
            return Some(ModelFileKind::WeightConfig);
        }
        const WEIGHT: &[&str] = &[
            "safetensors",
            "bin",
            "gguf",
            "ggml",
            "pt",
            "pth",
            "onnx",
            "h5",
            "ckpt",
            "pb",
            "tflite",
            "msgpack",
            "npz",
            "keras",
            "mlmodel",
            "engine",
            "plan",
        ];
        if WEIGHT.contains(&ext) {
            return Some(ModelFileKind::Weight);
        }
        if name.starts_with("readme")
            || name.starts_with("license")
            || name.starts_with("notice")
            || ["md", "rst", "pdf"].contains(&ext)
        {
            return Some(ModelFileKind::Doc);
        }
        const CODE: &[&str] = &[
            "py", "sh", "ipynb", "js", "ts", "go", "rs", "c", "cc", "cpp", "h", "hpp", "java", "jinja", "cu", "yaml",
            "yml", "toml",
        ];
        if CODE.contains(&ext) {
            return Some(ModelFileKind::Code);
        }
        const DATASET: &[&str] = &["csv", "tsv", "jsonl", "parquet", "arrow"];
        if DATASET.contains(&ext) {
            return Some(ModelFileKind::Dataset);
        }
        None
    }
}

/// How each file becomes a layer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ModelLayerFormat {
    /// The file itself is the blob.
    #[default]
    #[serde(rename = "raw")]
    Raw,
    #[serde(rename = "tar")]
    /// A tar of the file.
    Tar,
    #[serde(rename = "tar+gzip")]
    /// A gzip-compressed tar of the file.
    TarGzip,
    #[serde(rename = "tar+zstd")]
    /// A zstd-compressed tar of the file.
    TarZstd,
}

impl ModelLayerFormat {
    fn suffix(self) -> &'static str {
        match self {
            ModelLayerFormat::Raw => "raw",
            ModelLayerFormat::Tar => "tar",
            ModelLayerFormat::TarGzip => "tar+gzip",
            ModelLayerFormat::TarZstd => "tar+zstd",
        }
    }
    fn from_suffix(s: &str) -> Option<Self> {
        [ModelLayerFormat::Raw, ModelLayerFormat::Tar, ModelLayerFormat::TarGzip, ModelLayerFormat::TarZstd]
            .into_iter()
            .find(|f| f.suffix() == s)
    }
}

/// Layer media type for a file kind and format, e.g. `application/vnd.cncf.model.weight.v1.raw`.
pub fn layer_media_type(kind: ModelFileKind, format: ModelLayerFormat) -> String {
    format!("{}{}.v1.{}", media::MODEL_LAYER_PREFIX, kind.media_name(), format.suffix())
}

/// What to pack.
#[derive(Clone, Debug)]
pub struct ModelSpec {
    /// Model directory; every file under it except hidden ones (`.git`, ...) is packed.
    /// Symlinks to files inside it are followed; so are those of a Hugging Face cache
    /// snapshot (`models--ORG--NAME/snapshots/REV/`) that stay inside the cache entry
    /// `models--ORG--NAME/` (its files link to `../../blobs/<hash>`). A symlink leading
    /// anywhere else is refused unless `follow_symlinks` is set.
    pub dir: PathBuf,
    /// Follow symlinks that lead out of `dir` (`--follow-symlinks`).
    pub follow_symlinks: bool,
    /// `descriptor.name`.
    pub name: Option<String>,
    /// `descriptor.version`.
    pub version: Option<String>,
    /// `descriptor.family`.
    pub family: Option<String>,
    /// `descriptor.authors`.
    pub authors: Vec<String>,
    /// `descriptor.licenses`.
    pub licenses: Vec<String>,
    /// `descriptor.description`.
    pub description: Option<String>,
    /// `descriptor.title`.
    pub title: Option<String>,
    /// `descriptor.sourceURL` (where the model came from, e.g. a Hugging Face repo URL).
    pub source_url: Option<String>,
    /// `descriptor.revision` (e.g. the commit a Hugging Face revision resolved to).
    pub revision: Option<String>,
    /// A modctl Modelfile to read (else `DIR/Modelfile` when there is one).
    pub modelfile: Option<PathBuf>,
    /// A KitOps Kitfile to read (else `DIR/Kitfile` or `DIR/kitfile` when there is one).
    pub kitfile: Option<PathBuf>,
    /// Which files of `dir` are packed (`--include`/`--exclude`).
    pub select: FileSelector,
    /// `config.architecture`, e.g. `transformer`.
    pub architecture: Option<String>,
    /// e.g. `safetensors`, `gguf`, `onnx`.
    pub format: Option<String>,
    /// e.g. `8b`.
    pub param_size: Option<String>,
    /// `config.precision`, e.g. `bf16`.
    pub precision: Option<String>,
    /// `config.quantization`, e.g. `awq`.
    pub quantization: Option<String>,
    /// How each file becomes a layer.
    pub layer_format: ModelLayerFormat,
    /// Kind for specific relative paths, overriding classification.
    pub kinds: BTreeMap<String, ModelFileKind>,
    /// Kind of files classification does not recognise.
    pub default_kind: ModelFileKind,
    /// Manifest annotations.
    pub annotations: BTreeMap<String, String>,
    /// Overrides `SOURCE_DATE_EPOCH` for this pack.
    pub source_date_epoch: Option<i64>,
    /// Tag in the layout (otherwise an untagged root).
    pub tag: Option<String>,
}

impl ModelSpec {
    /// Pack `dir` with the defaults: raw layers, unknown files as code.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ModelSpec {
            dir: dir.into(),
            follow_symlinks: false,
            name: None,
            version: None,
            family: None,
            authors: vec![],
            licenses: vec![],
            description: None,
            title: None,
            source_url: None,
            revision: None,
            modelfile: None,
            kitfile: None,
            select: FileSelector::default(),
            architecture: None,
            format: None,
            param_size: None,
            precision: None,
            quantization: None,
            layer_format: ModelLayerFormat::Raw,
            kinds: BTreeMap::new(),
            default_kind: ModelFileKind::Code,
            annotations: BTreeMap::new(),
            source_date_epoch: None,
            tag: None,
        }
    }
}

/// ModelPack config document, field order as in model-spec's Go types.
#[derive(Serialize)]
struct ModelConfigDoc {
    descriptor: ModelDescriptorDoc,
    modelfs: ModelFs,
    config: ModelRunConfig,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ModelDescriptorDoc {
    #[serde(skip_serializing_if = "Option::is_none")]
    created_at: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    authors: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    family: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(rename = "sourceURL", skip_serializing_if = "Option::is_none")]
    source_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    revision: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    licenses: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ModelFs {
    #[serde(rename = "type")]
    kind: &'static str,
    diff_ids: Vec<Digest>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ModelRunConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    architecture: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    format: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    param_size: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    precision: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    quantization: Option<String>,
}

/// `org.cncf.model.file.metadata+json`, as modctl writes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMetadata {
    /// File name.
    pub name: String,
    /// Mode bits (with the file type bits, as Go's `os.FileMode` writes them).
    pub mode: u32,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// Modification time (RFC 3339).
    pub mtime: String,
    /// Tar type flag (`b'0'` for a regular file).
    pub typeflag: u8,
}

/// Pack `spec.dir` into `layout`; returns the manifest descriptor (artifactType set).
pub async fn build_model(layout: &Layout, spec: &ModelSpec) -> Result<Descriptor> {
    build_model_with(layout, spec, Arc::new(NoFileProgress)).await
}

/// [`build_model`] reporting each file's hashing to `progress`.
pub async fn build_model_with(
    layout: &Layout,
    spec: &ModelSpec,
    progress: Arc<dyn FileProgress>,
) -> Result<Descriptor> {
    let root = layout.root().to_path_buf();
    let spec2 = spec.clone();
    let desc = tokio::task::spawn_blocking(move || build_model_blocking(&Layout::open(&root)?, &spec2, &*progress))
        .await
        .map_err(|e| Error::task("model builder", e))??;
    match &spec.tag {
        Some(t) => layout.set_tag(&desc, t)?,
        None => layout.add_untagged(&desc)?,
    }
    Ok(desc)
}

/// Where symlinks under the model directory `dir` may lead: `dir` itself or, for a Hugging
/// Face cache snapshot (`…/models--ORG--NAME/snapshots/REV/…`, also `datasets--`, `spaces--`),
/// the whole cache entry, whose `blobs/` hold what the snapshot's files link to.
fn link_scope(dir: &Path) -> Result<PathBuf> {
    let canon = fs::canonicalize(dir).at(dir)?;
    let comps: Vec<Component> = canon.components().collect();
    for i in 0..comps.len().saturating_sub(2) {
        let Component::Normal(name) = comps[i] else { continue };
        let name = name.to_string_lossy();
        let entry = ["models--", "datasets--", "spaces--"].iter().any(|p| name.starts_with(p));
        if entry && comps[i + 1].as_os_str() == "snapshots" {
            return Ok(comps[..=i].iter().collect());
        }
    }
    Ok(canon)
}

/// Refuse the symlink `link` (under `dir`) unless it resolves inside `scope`.
fn check_link(link: &Path, dir: &Path, scope: &Path) -> Result<()> {
    let unsafe_link = |reason: String| Error::UnsafePath {
        path: link.display().to_string(),
        location: dir.display().to_string(),
        reason,
    };
    let target = fs::canonicalize(link).map_err(|e| unsafe_link(format!("symlink does not resolve: {e}")))?;
    if !target.starts_with(scope) {
        return Err(unsafe_link(format!(
            "symlink to {} leads out of {}; pass --follow-symlinks to pack what it points to",
            target.display(),
            scope.display()
        )));
    }
    Ok(())
}

fn list_files(dir: &Path, follow_symlinks: bool) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let scope = if follow_symlinks { None } else { Some(link_scope(dir)?) };
    let walker = walkdir::WalkDir::new(dir).follow_links(false).min_depth(1).sort_by_file_name().into_iter();
    for w in walker.filter_entry(|e| !e.file_name().to_string_lossy().starts_with('.')) {
        let w = w.map_err(|err| Error::io(err.path().unwrap_or(dir).to_path_buf(), err.into()))?;
        if let (true, Some(scope)) = (w.path_is_symlink(), &scope) {
            check_link(w.path(), dir, scope)?;
        }
        let meta = fs::metadata(w.path()).at(w.path())?;
        if w.file_type().is_dir() {
            continue;
        }
        if !meta.is_file() {
            return Err(Error::Unsupported(format!(
                "{}: only regular files (or symlinks to them) go into a model",
                w.path().display()
            )));
        }
        let rel = w.path().strip_prefix(dir).expect("child of dir");
        let rel = rel
            .to_str()
            .ok_or_else(|| Error::Unsupported(format!("{}: file names must be UTF-8", w.path().display())))?;
        out.push((rel.to_string(), w.path().to_path_buf()));
    }
    out.sort();
    Ok(out)
}

/// Everything the ModelPack config says besides the layers: the merged description.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModelMeta {
    /// `descriptor.createdAt` (RFC 3339).
    pub created_at: Option<String>,
    /// `descriptor.authors`.
    pub authors: Vec<String>,
    /// `descriptor.family`.
    pub family: Option<String>,
    /// `descriptor.name`.
    pub name: Option<String>,
    /// `descriptor.sourceURL`.
    pub source_url: Option<String>,
    /// `descriptor.version`.
    pub version: Option<String>,
    /// `descriptor.revision`.
    pub revision: Option<String>,
    /// `descriptor.licenses`.
    pub licenses: Vec<String>,
    /// `descriptor.title`.
    pub title: Option<String>,
    /// `descriptor.description`.
    pub description: Option<String>,
    /// `config.architecture`.
    pub architecture: Option<String>,
    /// `config.format`.
    pub format: Option<String>,
    /// `config.paramSize`.
    pub param_size: Option<String>,
    /// `config.precision`.
    pub precision: Option<String>,
    /// `config.quantization`.
    pub quantization: Option<String>,
}

fn over(low: &mut Option<String>, high: &Option<String>) {
    if let Some(h) = high.as_ref().filter(|h| !h.is_empty()) {
        *low = Some(h.clone());
    }
}

impl ModelMeta {
    /// Merge, in increasing priority, what the files say, a Modelfile, a Kitfile and the spec.
    pub fn resolve(described: &Described, mf: Option<&Modelfile>, kf: Option<&Kitfile>, spec: &ModelSpec) -> Self {
        let mut m = ModelMeta {
            architecture: described.architecture.clone(),
            family: described.family.clone(),
            format: described.format.clone(),
            param_size: described.param_size.clone(),
            precision: described.precision.clone(),
            quantization: described.quantization.clone(),
            ..Default::default()
        };
        if let Some(mf) = mf {
            over(&mut m.name, &mf.name);
            over(&mut m.architecture, &mf.arch);
            over(&mut m.family, &mf.family);
            over(&mut m.format, &mf.format);
            over(&mut m.param_size, &mf.param_size);
            over(&mut m.precision, &mf.precision);
            over(&mut m.quantization, &mf.quantization);
        }
        if let Some(kf) = kf {
            if let Some(p) = &kf.package {
                over(&mut m.name, &p.name);
                over(&mut m.version, &p.version);
                over(&mut m.description, &p.description);
                if let Some(l) = p.license.as_ref().filter(|l| !l.is_empty()) {
                    m.licenses = vec![l.clone()];
                }
                if !p.authors.is_empty() {
                    m.authors = p.authors.clone();
                }
            }
            if let Some(km) = &kf.model {
                if m.name.is_none() {
                    m.name = km.name.clone();
                }
                over(&mut m.version, &km.version);
                if m.description.is_none() {
                    m.description = km.description.clone();
                }
                if m.licenses.is_empty() {
                    m.licenses.extend(km.license.clone());
                }
            }
        }
        over(&mut m.name, &spec.name);
        over(&mut m.version, &spec.version);
        over(&mut m.family, &spec.family);
        over(&mut m.description, &spec.description);
        over(&mut m.title, &spec.title);
        over(&mut m.source_url, &spec.source_url);
        over(&mut m.revision, &spec.revision);
        over(&mut m.architecture, &spec.architecture);
        over(&mut m.format, &spec.format);
        over(&mut m.param_size, &spec.param_size);
        over(&mut m.precision, &spec.precision);
        over(&mut m.quantization, &spec.quantization);
        if !spec.authors.is_empty() {
            m.authors = spec.authors.clone();
        }
        if !spec.licenses.is_empty() {
            m.licenses = spec.licenses.clone();
        }
        m
    }

    /// The ModelPack config document for these layers' diff IDs (deterministic bytes).
    pub fn config_bytes(&self, diff_ids: Vec<Digest>) -> Result<Vec<u8>> {
        let config = ModelConfigDoc {
            descriptor: ModelDescriptorDoc {
                created_at: self.created_at.clone(),
                authors: self.authors.clone(),
                family: self.family.clone(),
                name: self.name.clone(),
                source_url: self.source_url.clone(),
                version: self.version.clone(),
                revision: self.revision.clone(),
                licenses: self.licenses.clone(),
                title: self.title.clone(),
                description: self.description.clone(),
            },
            modelfs: ModelFs { kind: "layers", diff_ids },
            config: ModelRunConfig {
                architecture: self.architecture.clone(),
                format: self.format.clone(),
                param_size: self.param_size.clone(),
                precision: self.precision.clone(),
                quantization: self.quantization.clone(),
            },
        };
        crate::model::write::to_json(&config)
    }
}

/// The Modelfile and Kitfile of a pack: the spec's, else `Modelfile` / `Kitfile` /
/// `kitfile` at the top of `dir`. Returns them and the relative names of those found in
/// `dir` (which describe the model and are not packed as layers).
fn description_files(spec: &ModelSpec) -> Result<(Option<Modelfile>, Option<Kitfile>, Vec<String>)> {
    let mut own = Vec::new();
    let mut find = |given: &Option<PathBuf>, names: &[&str]| -> Option<PathBuf> {
        if let Some(p) = given {
            if let Ok(rel) = p.strip_prefix(&spec.dir) {
                own.push(rel.to_string_lossy().to_string());
            }
            return Some(p.clone());
        }
        names.iter().map(|n| (n, spec.dir.join(n))).find(|(_, p)| p.is_file()).map(|(n, p)| {
            own.push(n.to_string());
            p
        })
    };
    let mf = find(&spec.modelfile, &["Modelfile"]);
    let kf = find(&spec.kitfile, &["Kitfile", "kitfile"]);
    let mf = mf.map(|p| Modelfile::load(&p)).transpose()?;
    let kf = kf.map(|p| Kitfile::load(&p)).transpose()?;
    Ok((mf, kf, own))
}

/// The kind of the file `rel`: the spec's, a Kitfile path's, a Modelfile glob's, then by name.
fn kind_of(
    rel: &str,
    spec: &ModelSpec,
    kf_kinds: &[(ModelFileKind, String)],
    mf_globs: &[(ModelFileKind, globset::GlobMatcher)],
) -> ModelFileKind {
    spec.kinds
        .get(rel)
        .copied()
        .or_else(|| kf_kinds.iter().find(|(_, p)| modelfile::under(rel, p)).map(|(k, _)| *k))
        .or_else(|| mf_globs.iter().find(|(_, g)| g.is_match(rel)).map(|(k, _)| *k))
        .or_else(|| ModelFileKind::classify(rel))
        .unwrap_or(spec.default_kind)
}

/// The per-file annotations of a model layer: `org.cncf.model.filepath`, the modctl-style
/// file metadata and the title.
pub fn annotate_file_layer(desc: &mut Descriptor, rel: &str, mode: u32, size: u64, mtime: &str) -> Result<()> {
    let name = rel.rsplit('/').next().unwrap_or(rel).to_string();
    let fm = FileMetadata { name: name.clone(), mode, uid: 0, gid: 0, size, mtime: mtime.to_string(), typeflag: b'0' };
    desc.annotations.insert(media::ANNOTATION_MODEL_FILEPATH.into(), rel.to_string());
    desc.annotations.insert(
        media::ANNOTATION_MODEL_FILE_METADATA.into(),
        String::from_utf8(crate::model::write::to_json(&fm)?).expect("json is utf-8"),
    );
    desc.annotations.insert(media::ANNOTATION_TITLE.into(), name);
    Ok(())
}

/// Describe the model of `spec` without packing it: the config fields hoist would write.
pub fn describe_model(spec: &ModelSpec) -> Result<ModelMeta> {
    let (mf, kf, own) = description_files(spec)?;
    let files: Vec<_> = list_files(&spec.dir, spec.follow_symlinks)?
        .into_iter()
        .filter(|(rel, _)| !own.contains(rel) && spec.select.matches(rel))
        .collect();
    Ok(describe_listed(spec, &files, mf.as_ref(), kf.as_ref())?.0)
}

type Kinds = Vec<ModelFileKind>;

fn describe_listed(
    spec: &ModelSpec,
    files: &[(String, PathBuf)],
    mf: Option<&Modelfile>,
    kf: Option<&Kitfile>,
) -> Result<(ModelMeta, Kinds)> {
    let mf_globs = mf
        .map(|m| {
            m.globs
                .iter()
                .map(|(k, g)| {
                    let g = g.strip_prefix("./").unwrap_or(g);
                    globset::Glob::new(g)
                        .map(|g| (*k, g.compile_matcher()))
                        .map_err(|e| Error::malformed("Modelfile", g.to_string(), e.to_string()))
                })
                .collect::<Result<Vec<_>>>()
        })
        .transpose()?
        .unwrap_or_default();
    let kf_kinds = kf.map(Kitfile::kinds).unwrap_or_default();
    let kinds: Kinds = files.iter().map(|(rel, _)| kind_of(rel, spec, &kf_kinds, &mf_globs)).collect();
    let weights: Vec<&str> = files
        .iter()
        .zip(&kinds)
        .filter(|(_, k)| **k == ModelFileKind::Weight)
        .map(|((rel, _), _)| rel.as_str())
        .collect();
    let listed: Vec<(String, describe::FileBytes<'_>)> =
        files.iter().map(|(r, p)| (r.clone(), describe::FileBytes::Path(p))).collect();
    let described = describe::describe_files(&listed, &weights);
    Ok((ModelMeta::resolve(&described, mf, kf, spec), kinds))
}

/// Plan the ModelPack artifact of `spec.dir` without storing anything: each file is hashed
/// where it is (one read) and becomes a raw layer whose bytes the destination reads from the
/// file itself (see [`planned`]). Only raw layers: a tar layer would have to be written
/// somewhere to be hashed.
pub async fn plan_dir_model(spec: &ModelSpec) -> Result<planned::PlannedModel> {
    plan_dir_model_with(spec, Arc::new(NoFileProgress)).await
}

/// [`plan_dir_model`] reporting each file's hashing to `progress`.
pub async fn plan_dir_model_with(spec: &ModelSpec, progress: Arc<dyn FileProgress>) -> Result<planned::PlannedModel> {
    if spec.layer_format != ModelLayerFormat::Raw {
        return Err(Error::Unsupported("packing without a store takes raw layers only".into()));
    }
    let spec = spec.clone();
    tokio::task::spawn_blocking(move || plan_dir_model_blocking(&spec, &*progress))
        .await
        .map_err(|e| Error::task("model planner", e))?
}

/// The files of `spec.dir` that go into the model (Modelfile/Kitfile and unselected files
/// left out), described, with the `created` timestamp every layer and the config carry.
#[allow(clippy::type_complexity)]
fn list_and_describe(spec: &ModelSpec) -> Result<(String, Vec<(String, PathBuf)>, ModelMeta, Kinds)> {
    let epoch = spec.source_date_epoch.unwrap_or_else(source_date_epoch);
    let created = rfc3339(epoch);
    let (mf, kf, own) = description_files(spec)?;
    let files: Vec<_> = list_files(&spec.dir, spec.follow_symlinks)?
        .into_iter()
        .filter(|(rel, _)| !own.contains(rel) && spec.select.matches(rel))
        .collect();
    if files.is_empty() {
        return Err(Error::not_found("any file", spec.dir.display().to_string()));
    }
    let (mut meta, kinds) = describe_listed(spec, &files, mf.as_ref(), kf.as_ref())?;
    meta.created_at = Some(created.clone());
    Ok((created, files, meta, kinds))
}

fn plan_dir_model_blocking(spec: &ModelSpec, progress: &dyn FileProgress) -> Result<planned::PlannedModel> {
    let (created, files, meta, kinds) = list_and_describe(spec)?;
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    let mut blobs = std::collections::HashMap::new();
    for ((rel, path), kind) in files.into_iter().zip(kinds) {
        let fmeta = fs::metadata(&path).at(&path)?;
        let digest = hash_file_reporting(&path, fmeta.len(), Reporting { name: &rel, progress })?;
        let size = fs::metadata(&path).at(&path)?.len();
        if size != fmeta.len() {
            return Err(Error::changed(path, "changed while it was hashed"));
        }
        let mut desc = Descriptor::new(layer_media_type(kind, ModelLayerFormat::Raw), digest.clone(), size);
        annotate_file_layer(&mut desc, &rel, fmeta.permissions().mode() & 0o7777, size, &created)?;
        blobs.insert(digest.clone(), planned::Origin::File(path));
        layers.push(desc);
        diff_ids.push(digest);
    }
    let config = bytes::Bytes::from(meta.config_bytes(diff_ids)?);
    let config_desc = Descriptor::of_bytes(media::MODEL_CONFIG, &config);
    blobs.insert(config_desc.digest.clone(), planned::Origin::Bytes(config));
    let mut manifest = ImageManifest::new(config_desc, layers);
    manifest.artifact_type = Some(media::MODEL_ARTIFACT.into());
    manifest.annotations = spec.annotations.clone();
    let bytes = bytes::Bytes::from(manifest.to_bytes()?);
    let mut root = Descriptor::of_bytes(media::OCI_MANIFEST, &bytes);
    root.artifact_type = manifest.artifact_type;
    Ok(planned::PlannedModel::new(format!("dir:{}", spec.dir.display()), root, bytes, blobs))
}

fn build_model_blocking(layout: &Layout, spec: &ModelSpec, progress: &dyn FileProgress) -> Result<Descriptor> {
    let epoch = spec.source_date_epoch.unwrap_or_else(source_date_epoch);
    let (created, files, meta, kinds) = list_and_describe(spec)?;
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for ((rel, path), kind) in files.into_iter().zip(kinds) {
        let mt = layer_media_type(kind, spec.layer_format);
        let meta = fs::metadata(&path).at(&path)?;
        let (mut desc, diff_id) = match spec.layer_format {
            ModelLayerFormat::Raw => {
                let d = store_file_reporting(layout, &path, &mt, Reporting { name: &rel, progress })?;
                let id = d.digest.clone();
                (d, id)
            }
            f => {
                let compression = match f {
                    ModelLayerFormat::TarGzip => Compression::Gzip { level: 6 },
                    ModelLayerFormat::TarZstd => Compression::Zstd { level: 3 },
                    _ => Compression::None,
                };
                // The tar layer is hashed as it is built: start and end, no byte count between.
                progress.file_start(&rel, meta.len());
                let blob = build_layer_blocking(layout, &[LayerEntry::new(&path, rel.clone())], compression, epoch)?;
                progress.file_advance(&rel, meta.len());
                progress.file_done(&rel, &blob.descriptor.digest);
                let mut d = blob.descriptor;
                d.media_type = mt;
                (d, blob.diff_id)
            }
        };
        annotate_file_layer(&mut desc, &rel, meta.permissions().mode() & 0o7777, meta.len(), &created)?;
        layers.push(desc);
        diff_ids.push(diff_id);
    }
    let config_desc = store_bytes(layout, media::MODEL_CONFIG, &meta.config_bytes(diff_ids)?)?;
    let mut manifest = ImageManifest::new(config_desc, layers);
    manifest.artifact_type = Some(media::MODEL_ARTIFACT.into());
    manifest.annotations = spec.annotations.clone();
    let mut desc = store_bytes(layout, media::OCI_MANIFEST, &manifest.to_bytes()?)?;
    desc.artifact_type = manifest.artifact_type;
    Ok(desc)
}

/// A relative path inside the output directory: no root, no `..`, not empty.
fn safe_rel(path: &str, location: &str) -> Result<PathBuf> {
    let bad = |reason: &str| Error::UnsafePath {
        path: path.to_string(),
        location: location.to_string(),
        reason: reason.into(),
    };
    let mut out = PathBuf::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => return Err(bad("`..` would leave the output directory")),
            Component::RootDir | Component::Prefix(_) => return Err(bad("absolute path")),
        }
    }
    if out.as_os_str().is_empty() {
        return Err(bad("empty path"));
    }
    Ok(out)
}

/// Split a ModelPack (or older CNAI) layer media type into kind name and format.
#[cfg(test)]
fn parse_layer_media_type(mt: &str) -> Option<(&str, ModelLayerFormat)> {
    let rest =
        mt.strip_prefix(media::MODEL_LAYER_PREFIX).or_else(|| mt.strip_prefix(media::MODEL_LAYER_PREFIX_CNAI))?;
    let (kind, format) = rest.split_once(".v1.")?;
    Some((kind, ModelLayerFormat::from_suffix(format)?))
}

/// Restore the files of the model artifact `root` from `source` into `dir`. Every blob
/// is verified while it is written; files appear only complete (temp file + rename), with
/// the permission bits and mtime the artifact recorded: a raw layer's from its
/// `org.cncf.model.file.metadata+json` annotation (when there is one that parses), a tar
/// layer's from its entries' headers. Returns the relative paths written.
pub async fn unpack_model(source: &dyn Source, root: &Descriptor, dir: &Path) -> Result<Vec<PathBuf>> {
    unpack_model_with(source, root, dir, &UnpackOptions::default()).await
}

/// Bounds and selection for [`unpack_model_with`].
#[derive(Clone, Debug, Default)]
pub struct UnpackOptions {
    /// Most bytes one layer may expand to (a raw layer's size, a tar layer's uncompressed
    /// stream). A tar layer of a regular file is bounded anyway by the size its
    /// `org.cncf.model.file.metadata+json` declares (plus tar headers).
    pub max_size: Option<u64>,
    /// Which files to restore (`--include`/`--exclude`): a layer whose file does not match
    /// is not fetched at all; a tar layer's entries are extracted only where they match.
    pub select: FileSelector,
}

/// Room for tar headers, PAX records (at most 1 MiB each, as Go's archive/tar allows) and
/// the end-of-archive padding (GNU tar pads to 10 KiB records) around a file's declared size.
const TAR_OVERHEAD: u64 = 2 << 20;

/// One layer of a model artifact as `model unpack --list` and `model diff` show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ModelEntry {
    /// Path of the file (or of the tar's directory) in the model.
    pub path: String,
    /// Weight, weight-config, doc, code, dataset.
    pub kind: ModelFileKind,
    /// The layer's media type.
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// The layer's digest.
    pub digest: Digest,
    /// The layer's size.
    pub size: u64,
}

/// The manifest of a model artifact and what each of its layers is; layers of no known
/// model media type are left out.
async fn model_manifest(source: &dyn Source, root: &Descriptor) -> Result<Vec<(Descriptor, formats::LayerInfo)>> {
    let loc = source.location();
    let doc = source.fetch_document(root).await?;
    let View::Manifest(m) = &doc.view else {
        return Err(Error::Unsupported(format!("{} in {loc} is an index; pick one model manifest", root.digest)));
    };
    convert::model_format(root, m, &loc)?;
    Ok(m.layers.iter().filter_map(|l| formats::layer_info(l).map(|i| (l.clone(), i))).collect())
}

/// The files of the model artifact `root` (one entry per layer; a tar layer without a path
/// is named by its digest), matching `select`, without fetching any blob.
pub async fn list_model(source: &dyn Source, root: &Descriptor, select: &FileSelector) -> Result<Vec<ModelEntry>> {
    Ok(model_manifest(source, root)
        .await?
        .into_iter()
        .map(|(l, i)| ModelEntry {
            path: i.path.clone().unwrap_or_else(|| l.digest.to_string()),
            kind: i.kind,
            media_type: l.media_type.clone(),
            digest: l.digest.clone(),
            size: l.size,
        })
        .filter(|e| select.matches(&e.path))
        .collect())
}

/// What changed from model `a` to model `b`, by path and layer digest.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ModelDiff {
    /// Files only in `b`.
    pub added: Vec<ModelEntry>,
    /// Files only in `a`.
    pub removed: Vec<ModelEntry>,
    /// Files in both whose layer digest differs: (in `a`, in `b`).
    pub changed: Vec<(ModelEntry, ModelEntry)>,
    /// Files in both with the same layer.
    pub unchanged: Vec<ModelEntry>,
    /// What the configs say differently (name, version, format, precision, ...; not the
    /// creation time), field by field.
    pub config: Vec<ConfigChange>,
}

impl ModelDiff {
    /// Whether the two models differ (in a file or in what their configs say).
    pub fn differs(&self) -> bool {
        !(self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty() && self.config.is_empty())
    }
}

/// One config field that differs between two models.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConfigChange {
    /// The field, as ModelPack's config names it (`descriptor.version`, `config.precision`).
    pub field: &'static str,
    /// Its value in `a` (`None`: not set).
    pub from: Option<String>,
    /// Its value in `b`.
    pub to: Option<String>,
}

/// The fields of two model configs that differ (all but `descriptor.createdAt`, which every
/// pack changes).
fn config_changes(a: &ModelMeta, b: &ModelMeta) -> Vec<ConfigChange> {
    let list = |v: &[String]| (!v.is_empty()).then(|| v.join(", "));
    let fields: [(&'static str, Option<String>, Option<String>); 14] = [
        ("descriptor.name", a.name.clone(), b.name.clone()),
        ("descriptor.version", a.version.clone(), b.version.clone()),
        ("descriptor.revision", a.revision.clone(), b.revision.clone()),
        ("descriptor.family", a.family.clone(), b.family.clone()),
        ("descriptor.title", a.title.clone(), b.title.clone()),
        ("descriptor.description", a.description.clone(), b.description.clone()),
        ("descriptor.sourceURL", a.source_url.clone(), b.source_url.clone()),
        ("descriptor.authors", list(&a.authors), list(&b.authors)),
        ("descriptor.licenses", list(&a.licenses), list(&b.licenses)),
        ("config.architecture", a.architecture.clone(), b.architecture.clone()),
        ("config.format", a.format.clone(), b.format.clone()),
        ("config.paramSize", a.param_size.clone(), b.param_size.clone()),
        ("config.precision", a.precision.clone(), b.precision.clone()),
        ("config.quantization", a.quantization.clone(), b.quantization.clone()),
    ];
    fields.into_iter().filter(|(_, x, y)| x != y).map(|(field, from, to)| ConfigChange { field, from, to }).collect()
}

/// Compare two model artifacts (any transports) by their manifests alone.
pub async fn diff_models(a: (&dyn Source, &Descriptor), b: (&dyn Source, &Descriptor)) -> Result<ModelDiff> {
    let all = FileSelector::default();
    let la: BTreeMap<String, ModelEntry> =
        list_model(a.0, a.1, &all).await?.into_iter().map(|e| (e.path.clone(), e)).collect();
    let mut lb: BTreeMap<String, ModelEntry> =
        list_model(b.0, b.1, &all).await?.into_iter().map(|e| (e.path.clone(), e)).collect();
    let mut d = ModelDiff::default();
    for (path, ea) in la {
        match lb.remove(&path) {
            None => d.removed.push(ea),
            Some(eb) if eb.digest == ea.digest => d.unchanged.push(eb),
            Some(eb) => d.changed.push((ea, eb)),
        }
    }
    d.added = lb.into_values().collect();
    d.config = config_changes(&convert::model_meta(a.0, a.1).await?, &convert::model_meta(b.0, b.1).await?);
    Ok(d)
}

/// [`unpack_model`] with bounds and a selection: a tar layer that expands beyond its declared
/// size (or `opts.max_size`) stops with an error and leaves none of its files behind; a tar
/// entry cut short never leaves a truncated file under its name. Reads ModelPack, ModelKit
/// and Docker Model Runner artifacts.
pub async fn unpack_model_with(
    source: &dyn Source,
    root: &Descriptor,
    dir: &Path,
    opts: &UnpackOptions,
) -> Result<Vec<PathBuf>> {
    let loc = source.location();
    let layers = model_manifest(source, root).await?;
    fs::create_dir_all(dir).at(dir)?;
    let mut written = Vec::new();
    for (layer, info) in &layers {
        let format = info.layer_format;
        let filepath = info.path.as_ref();
        let metadata: Option<FileMetadata> = layer
            .annotations
            .get(media::ANNOTATION_MODEL_FILE_METADATA)
            .or_else(|| layer.annotations.get(media::ANNOTATION_MODEL_FILE_METADATA_CNAI))
            .and_then(|s| serde_json::from_str(s).ok());
        // Skip what is not asked for before fetching: a raw layer by its path; a tar layer
        // when its path names one regular file that does not match (a directory's tar, or
        // one without a path, is fetched and filtered by entry).
        let single_file = format == ModelLayerFormat::Raw || metadata.as_ref().is_some_and(|m| m.typeflag == b'0');
        if let (true, Some(p)) = (single_file, filepath) {
            if !opts.select.matches(p) {
                continue;
            }
        }
        if let Some(max) = opts.max_size.filter(|m| layer.size > *m) {
            return Err(Error::malformed(
                format!("layer {}", layer.digest),
                loc.clone(),
                format!("size {} exceeds --max-size {max}", layer.size),
            ));
        }
        let declared = metadata.as_ref().filter(|m| m.typeflag == b'0').map(|m| m.size.saturating_add(TAR_OVERHEAD));
        let limit = match (declared, opts.max_size) {
            (Some(d), Some(m)) => Some(d.min(m)),
            (d, m) => d.or(m),
        };
        // Download (verified) next to its destination, so the final rename stays on one filesystem.
        let tmp = tempfile::Builder::new().prefix(".hoist-unpack-").tempfile_in(dir).at(dir)?;
        let (std_file, tmp_path) = tmp.into_parts();
        let stream = source.open_blob(layer, 0).await?;
        write_verified(std_file, &tmp_path, layer, stream, loc.clone(), &NoProgress).await?;
        match format {
            ModelLayerFormat::Raw => {
                let rel_s = filepath.ok_or_else(|| {
                    Error::malformed(
                        format!("layer {}", layer.digest),
                        loc.clone(),
                        "raw model layer without org.cncf.model.filepath",
                    )
                })?;
                let rel = safe_rel(rel_s, &loc)?;
                // Its directories checked as tar layers' are: never written through a symlink.
                let parent = checked_dir(dir, rel.parent().unwrap_or(Path::new("")), &loc)?;
                let dest = parent.join(rel.file_name().unwrap_or_default());
                if let Some(md) = &metadata {
                    restore_mode_and_mtime(&tmp_path, md.mode, parse_rfc3339(&md.mtime))?;
                }
                tmp_path.persist(&dest).map_err(|e| Error::io(&dest, e.error))?;
                written.push(rel);
            }
            f => {
                let dir2 = dir.to_path_buf();
                let loc2 = format!("layer {} in {loc}", layer.digest);
                let select = opts.select.clone();
                let files = tokio::task::spawn_blocking(move || {
                    extract_tar_blocking(&tmp_path, f, &dir2, &loc2, limit, &select)
                })
                .await
                .map_err(|e| Error::task("model unpack", e))??;
                written.extend(files);
            }
        }
    }
    Ok(written)
}

/// Give an unpacked file (still at its temp path: the rename keeps both) the permission bits
/// and mtime the artifact recorded, so that `make`-style tools and caches keyed on mtime see
/// the packed file, and a pack-unpack round trip is faithful. Only the rwx bits: a setuid,
/// setgid or sticky bit from a pulled artifact is not something to recreate on disk.
/// `mtime` is seconds and nanoseconds since the epoch; without one the file keeps "now".
fn restore_mode_and_mtime(path: &Path, mode: u32, mtime: Option<(i64, u32)>) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o777)).at(path)?;
    if let Some((secs, nanos)) = mtime {
        filetime::set_file_mtime(path, filetime::FileTime::from_unix_time(secs, nanos)).at(path)?;
    }
    Ok(())
}

/// Extract a tar layer into `dir`; on any error the files it wrote are removed again.
fn extract_tar_blocking(
    blob: &Path,
    format: ModelLayerFormat,
    dir: &Path,
    loc: &str,
    limit: Option<u64>,
    select: &FileSelector,
) -> Result<Vec<PathBuf>> {
    let exceeded = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut written = Vec::new();
    let result = extract_entries(blob, format, dir, loc, limit, select, &exceeded, &mut written);
    let _ = fs::remove_file(blob);
    match result {
        Ok(()) => Ok(written),
        Err(e) => {
            for rel in &written {
                let _ = fs::remove_file(dir.join(rel));
            }
            if exceeded.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(Error::malformed(
                    "tar layer",
                    loc,
                    format!("expands beyond {} bytes (its declared size or --max-size)", limit.unwrap_or(0)),
                ));
            }
            Err(e)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn extract_entries(
    blob: &Path,
    format: ModelLayerFormat,
    dir: &Path,
    loc: &str,
    limit: Option<u64>,
    select: &FileSelector,
    exceeded: &std::sync::Arc<std::sync::atomic::AtomicBool>,
    written: &mut Vec<PathBuf>,
) -> Result<()> {
    let file = fs::File::open(blob).at(blob)?;
    let algorithm = match format {
        ModelLayerFormat::TarGzip => codec::Algorithm::Gzip,
        ModelLayerFormat::TarZstd => codec::Algorithm::Zstd,
        _ => codec::Algorithm::None,
    };
    let reader = codec::decoder(algorithm, std::io::BufReader::new(file)).at(blob)?;
    let reader = codec::Bounded::new(reader, limit.unwrap_or(u64::MAX), exceeded.clone());
    // The one tar reader: extension headers (PAX, GNU long names) bounded before they are read;
    // the one extraction (nothing written through a symlink, a file visible only when whole).
    let mut archive = TarReader::new(Stream(std::io::BufReader::with_capacity(64 << 10, reader)), blob, loc);
    let mut ext = Extractor::new(dir, Profile::Model);
    ext.begin_layer(loc);
    let result = (|| {
        while let Some(member) = archive.next_member()? {
            let raw_path = String::from_utf8_lossy(&member.name).into_owned();
            let rel = safe_rel(&raw_path, loc)?;
            let kind = member.header.entry_type();
            let is_file = matches!(kind, tar::EntryType::Regular | tar::EntryType::Continuous);
            if !select.is_all() && (!is_file || !select.matches(&rel.to_string_lossy())) {
                // Not asked for (directories appear as the parents of the files that are).
                if is_file || kind == tar::EntryType::Directory {
                    continue;
                }
            }
            ext.apply(&rel, &member, &mut archive)?;
        }
        Ok(())
    })();
    *written = std::mem::take(&mut ext.written);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_files() {
        use ModelFileKind::*;
        for (name, kind) in [
            ("model.safetensors", Some(Weight)),
            ("sub/pytorch_model-00001.bin", Some(Weight)),
            ("model.safetensors.index.json", Some(WeightConfig)),
            ("config.json", Some(WeightConfig)),
            ("tokenizer_config.json", Some(WeightConfig)),
            ("tokenizer.model", Some(WeightConfig)),
            ("vocab.txt", Some(WeightConfig)),
            ("README.md", Some(Doc)),
            ("LICENSE", Some(Doc)),
            ("run.py", Some(Code)),
            ("train.parquet", Some(Dataset)),
            ("weird.xyz", None),
        ] {
            assert_eq!(ModelFileKind::classify(name), kind, "{name}");
        }
        assert_eq!(
            layer_media_type(WeightConfig, ModelLayerFormat::TarZstd),
            "application/vnd.cncf.model.weight.config.v1.tar+zstd"
        );
        assert_eq!(
            parse_layer_media_type("application/vnd.cnai.model.weight.v1.raw"),
            Some(("weight", ModelLayerFormat::Raw))
        );
    }

    #[test]
    fn unpack_paths_are_confined() {
        assert!(safe_rel("a/b.txt", "t").is_ok());
        for p in ["../x", "/etc/passwd", "a/../../x", ""] {
            assert!(matches!(safe_rel(p, "t"), Err(Error::UnsafePath { .. })), "{p}");
        }
    }
}
