//! Generic OCI artifacts, as oras pushes them: each file is one layer, stored raw (no
//! tar), titled with its file name; the config is a given file or the empty `{}`
//! descriptor; an optional `subject` makes the artifact a referrer of another manifest.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::ingest::{store_bytes, store_file_blocking};
use crate::model::descriptor::Descriptor;
use crate::model::media;
use crate::model::write::ImageManifest;
use crate::transport::layout::Layout;

/// One file of an artifact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArtifactFile {
    /// Path of the file on disk.
    pub path: PathBuf,
    /// Layer media type; default `application/octet-stream`.
    pub media_type: Option<String>,
    /// `org.opencontainers.image.title`; default the file name.
    pub title: Option<String>,
}

impl ArtifactFile {
    /// A file with the default media type and title.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        ArtifactFile { path: path.into(), media_type: None, title: None }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
/// What `build_artifact` builds: files, config, annotations, subject, tag.
pub struct ArtifactSpec {
    /// The manifest's `artifactType`.
    pub artifact_type: Option<String>,
    /// The files, one layer each, in order.
    pub files: Vec<ArtifactFile>,
    /// Config file and its media type; `None`: the empty descriptor.
    pub config: Option<(PathBuf, String)>,
    /// Manifest annotations.
    pub annotations: BTreeMap<String, String>,
    /// Extra annotations per layer, keyed by title (see `load_annotation_file`).
    pub file_annotations: BTreeMap<String, BTreeMap<String, String>>,
    /// Extra annotations on the config descriptor.
    pub config_annotations: BTreeMap<String, String>,
    /// The manifest this artifact refers to.
    pub subject: Option<Descriptor>,
    /// Tag in the layout (otherwise an untagged root).
    pub tag: Option<String>,
}

/// Annotations from an oras-style JSON file: `{"$manifest": {..}, "$config": {..}, "<title>": {..}}`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AnnotationFile {
    /// `$manifest`: manifest annotations.
    pub manifest: BTreeMap<String, String>,
    /// `$config`: config descriptor annotations.
    pub config: BTreeMap<String, String>,
    /// Layer annotations keyed by file title.
    pub files: BTreeMap<String, BTreeMap<String, String>>,
}

/// Read an annotation file (oras `--annotation-file` format).
pub fn load_annotation_file(path: &Path) -> Result<AnnotationFile> {
    let raw = std::fs::read(path).at(path)?;
    let mut all: BTreeMap<String, BTreeMap<String, String>> =
        serde_json::from_slice(&raw).map_err(|e| Error::malformed("annotation file", path.display().to_string(), e))?;
    Ok(AnnotationFile {
        manifest: all.remove("$manifest").unwrap_or_default(),
        config: all.remove("$config").unwrap_or_default(),
        files: all,
    })
}

impl ArtifactSpec {
    /// Merge an annotation file into this spec (file values win).
    pub fn apply_annotation_file(&mut self, a: AnnotationFile) {
        self.annotations.extend(a.manifest);
        self.config_annotations.extend(a.config);
        for (k, v) in a.files {
            self.file_annotations.entry(k).or_default().extend(v);
        }
    }
}

/// Build the artifact into `layout`, tag it (or record it as an untagged root) and
/// return its manifest descriptor (with `artifactType` set).
pub async fn build_artifact(layout: &Layout, spec: &ArtifactSpec) -> Result<Descriptor> {
    let root = layout.root().to_path_buf();
    let spec2 = spec.clone();
    let (config, layers) = tokio::task::spawn_blocking(move || store_files(&Layout::open(&root)?, &spec2))
        .await
        .map_err(|e| Error::task("artifact builder", e))??;
    let mut manifest = ImageManifest::new(config, layers);
    manifest.artifact_type = spec.artifact_type.clone();
    if manifest.artifact_type.is_none() && manifest.config.media_type == media::OCI_EMPTY {
        // image-spec: artifactType is required when the config is the empty descriptor.
        manifest.artifact_type = Some(media::OCTET_STREAM.into());
    }
    if manifest.layers.is_empty() {
        manifest.layers.push(empty_descriptor());
    }
    manifest.subject = spec.subject.clone();
    manifest.annotations = spec.annotations.clone();
    let mut desc = store_bytes(layout, media::OCI_MANIFEST, &manifest.to_bytes()?)?;
    desc.artifact_type = manifest.artifact_type.clone();
    match &spec.tag {
        Some(t) => layout.set_tag(&desc, t)?,
        None => layout.add_untagged(&desc)?,
    }
    Ok(desc)
}

/// The empty config descriptor with its inline data.
pub fn empty_descriptor() -> Descriptor {
    let mut d = Descriptor::of_bytes(media::OCI_EMPTY, media::EMPTY_JSON);
    d.data = Some(media::EMPTY_JSON_DATA.into());
    d
}

fn store_files(layout: &Layout, spec: &ArtifactSpec) -> Result<(Descriptor, Vec<Descriptor>)> {
    let mut config = match &spec.config {
        Some((path, mt)) => store_file_blocking(layout, path, mt)?,
        None => {
            store_bytes(layout, media::OCI_EMPTY, media::EMPTY_JSON)?;
            empty_descriptor()
        }
    };
    config.annotations.extend(spec.config_annotations.clone());
    let mut layers = Vec::new();
    for f in &spec.files {
        let meta = std::fs::metadata(&f.path).at(&f.path)?;
        if !meta.is_file() {
            return Err(Error::Unsupported(format!("{}: artifact files must be regular files", f.path.display())));
        }
        let title = match &f.title {
            Some(t) => t.clone(),
            None => f
                .path
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| Error::Unsupported(format!("{}: file name must be UTF-8", f.path.display())))?
                .to_string(),
        };
        let mut d = store_file_blocking(layout, &f.path, f.media_type.as_deref().unwrap_or(media::OCTET_STREAM))?;
        d.annotations.insert(media::ANNOTATION_TITLE.into(), title.clone());
        if let Some(extra) = spec.file_annotations.get(&title) {
            d.annotations.extend(extra.clone());
        }
        layers.push(d);
    }
    Ok((config, layers))
}
