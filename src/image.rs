//! Container images from files: an `ImageSpec` (layers, run settings, platforms,
//! optional base image) becomes one manifest per platform, plus an index when there are
//! several, written into a `Layout` and tagged. Same inputs give the same digests: every
//! timestamp comes from `SOURCE_DATE_EPOCH` (0 when unset).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::ingest::{rfc3339, source_date_epoch, store_bytes};
use crate::layer::{build_layer_following_blocking, Compression, LayerBlob, LayerEntry};
use crate::model::descriptor::{Descriptor, Platform};
use crate::model::document::View;
use crate::model::media;
use crate::model::write::{Empty, History, ImageConfig, ImageIndex, ImageManifest, RootFs};
use crate::transport::layout::Layout;
use crate::transport::{NoProgress, Progress, Source};

/// Largest base image config hoist reads.
const MAX_CONFIG_SIZE: u64 = 16 * 1024 * 1024;

/// One layer of the image: a set of files, written as one tar.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerSpec {
    /// The files of the layer.
    pub files: Vec<LayerEntry>,
    /// Text for this layer's `history` entry (default `hoist build`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Only these platforms (`os/arch[/variant]`) get this layer; empty: every platform.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<String>,
}

impl LayerSpec {
    /// Whether `platform` gets this layer.
    pub fn applies_to(&self, platform: &Platform) -> bool {
        self.platforms.is_empty()
            || self.platforms.iter().filter_map(|p| Platform::parse(p)).any(|p| p.matches(platform))
    }

    /// The files with `{os}`, `{arch}` and `{variant}` in their `source` replaced by
    /// `platform`'s (an absent variant is empty).
    pub fn files_for(&self, platform: &Platform) -> Vec<LayerEntry> {
        self.files
            .iter()
            .map(|f| {
                let mut f = f.clone();
                if let Some(s) = f.source.to_str().filter(|s| s.contains('{')) {
                    let s = s
                        .replace("{os}", &platform.os)
                        .replace("{arch}", &platform.architecture)
                        .replace("{variant}", platform.variant.as_deref().unwrap_or(""));
                    f.source = s.into();
                }
                f
            })
            .collect()
    }
}

/// What to build. This is also the format of `hoist.toml` (see `docs/build-file.md`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSpec {
    /// Base image reference; the caller resolves it and passes a `BaseImage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// Tag to set in the layout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// `os/arch[/variant]` strings; default `linux/amd64`.
    #[serde(default)]
    pub platforms: Vec<String>,
    #[serde(default)]
    /// Layer compression.
    pub compression: Compression,
    #[serde(default)]
    /// Layers, bottom first, on top of the base image's.
    pub layers: Vec<LayerSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// `Entrypoint` of the config.
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// `Cmd` of the config.
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    /// Environment, merged by name over the base image's.
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// `WorkingDir` of the config.
    pub workdir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// `User` of the config.
    pub user: Option<String>,
    #[serde(default)]
    /// Labels, merged over the base image's.
    pub labels: BTreeMap<String, String>,
    /// `8080`, `8080/tcp`, `53/udp`.
    #[serde(default)]
    pub exposed_ports: Vec<String>,
    /// Manifest annotations (a multi-platform build's index gets them too).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Annotations of the index only (buildx's `annotation-index.KEY=V`); over `annotations`
    /// where both name a key. An index exists only when several platforms are built, so a
    /// one-platform build refuses them, as BuildKit does.
    #[serde(default)]
    pub index_annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// `author` of the config.
    pub author: Option<String>,
    /// Overrides `SOURCE_DATE_EPOCH` for this build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_date_epoch: Option<i64>,
    /// Store what a symlink leading out of a source directory points to (a regular file)
    /// instead of refusing it (`--follow-symlinks`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub follow_symlinks: bool,
}

/// A `hoist.toml` build file.
pub struct BuildFile;

impl BuildFile {
    /// Parse a build file; relative `source` paths are resolved against its directory.
    pub fn load(path: &Path) -> Result<ImageSpec> {
        let text = std::fs::read_to_string(path).at(path)?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::parse(&text, &base, &path.display().to_string())
    }

    /// Parse build-file text; `base_dir` anchors relative sources, `location` names it in errors.
    pub fn parse(text: &str, base_dir: &Path, location: &str) -> Result<ImageSpec> {
        let mut spec: ImageSpec = toml::from_str(text).map_err(|e| Error::malformed("build file", location, e))?;
        for l in &mut spec.layers {
            for f in &mut l.files {
                if f.source.is_relative() {
                    f.source = base_dir.join(&f.source);
                }
            }
        }
        for p in spec.platforms.iter().chain(spec.layers.iter().flat_map(|l| &l.platforms)) {
            Platform::parse(p).ok_or_else(|| {
                Error::malformed("build file", location, format!("platform {p:?} is not os/arch[/variant]"))
            })?;
        }
        Ok(spec)
    }
}

/// The base image to build on: where to read it and its root (manifest or index), and how
/// its layers are copied into the store (by [`crate::copy::children`], the graph copy).
pub struct BaseImage<'a> {
    /// Where the base image is read from.
    pub source: &'a dyn Source,
    /// Its root: a manifest, or an index to pick the platform from.
    pub root: Descriptor,
    /// Reference recorded in `org.opencontainers.image.base.name`.
    pub name: Option<String>,
    /// Layers fetched at once (`--jobs`; [`crate::copy::DEFAULT_JOBS`] from [`BaseImage::new`]).
    pub jobs: usize,
    /// Reports each layer fetched ([`NoProgress`] from [`BaseImage::new`]).
    pub progress: &'a dyn Progress,
}

impl<'a> BaseImage<'a> {
    /// The base `root` read from `source`, named `name`, its layers fetched with the
    /// library's defaults (jobs, no progress).
    pub fn new(source: &'a dyn Source, root: Descriptor, name: Option<String>) -> Self {
        BaseImage { source, root, name, jobs: crate::copy::DEFAULT_JOBS, progress: &NoProgress }
    }
}

pub(crate) struct Base {
    pub(crate) manifest: Descriptor,
    pub(crate) config: ImageConfig,
    pub(crate) layers: Vec<Descriptor>,
}

/// Build the image described by `spec` into `layout`; returns the root descriptor (the
/// manifest, or the index when several platforms are built). Tags it with `spec.tag`
/// (otherwise records it as an untagged root).
pub async fn build_image(layout: &Layout, spec: &ImageSpec, base: Option<BaseImage<'_>>) -> Result<Descriptor> {
    let epoch = spec.source_date_epoch.unwrap_or_else(source_date_epoch);
    let created = rfc3339(epoch);
    let platforms = if spec.platforms.is_empty() { vec!["linux/amd64".to_string()] } else { spec.platforms.clone() };
    let platforms = platforms
        .iter()
        .map(|p| {
            Platform::parse(p).ok_or_else(|| Error::Unsupported(format!("platform {p:?} is not os/arch[/variant]")))
        })
        .collect::<Result<Vec<_>>>()?;
    check_index_annotations(&spec.index_annotations, platforms.len())?;

    // Layers per platform; one build per distinct set of files (most layers are the same
    // for every platform).
    let mut built: Vec<(Vec<LayerEntry>, LayerBlob)> = Vec::new();
    let mut per_platform: Vec<Vec<(&LayerSpec, LayerBlob)>> = Vec::new();
    for platform in &platforms {
        let mut mine = Vec::new();
        for l in spec.layers.iter().filter(|l| l.applies_to(platform)) {
            let files = l.files_for(platform);
            let blob = match built.iter().find(|(f, _)| *f == files) {
                Some((_, b)) => b.clone(),
                None => {
                    let root = layout.root().to_path_buf();
                    let compression = spec.compression;
                    let follow = spec.follow_symlinks;
                    let f2 = files.clone();
                    let blob = tokio::task::spawn_blocking(move || {
                        build_layer_following_blocking(&Layout::open(&root)?, &f2, compression, epoch, follow)
                    })
                    .await
                    .map_err(|e| Error::task("layer builder", e))??;
                    built.push((files, blob.clone()));
                    blob
                }
            };
            mine.push((l, blob));
        }
        per_platform.push(mine);
    }

    let mut manifests = Vec::new();
    for (platform, layers) in platforms.iter().zip(&per_platform) {
        let base_img = match &base {
            Some(b) => Some(load_base(layout, b, platform).await?),
            None => None,
        };
        let mut config = base_img.as_ref().map(|b| b.config.clone()).unwrap_or_default();
        if spec.author.is_some() {
            config.author = spec.author.clone();
        }
        merge_run_config(&mut config, spec);
        for (l, blob) in layers {
            config.rootfs.diff_ids.push(blob.diff_id.clone());
            config.history.push(History {
                created: Some(created.clone()),
                created_by: Some(l.comment.clone().unwrap_or_else(|| "hoist build".into())),
                ..Default::default()
            });
        }
        let mut all_layers: Vec<Descriptor> = base_img.as_ref().map(|b| b.layers.clone()).unwrap_or_default();
        all_layers.extend(layers.iter().map(|(_, l)| l.descriptor.clone()));
        let base_ref = match (&base, &base_img) {
            (Some(b), Some(bi)) => Some((&bi.manifest.digest, b.name.as_deref())),
            _ => None,
        };
        let parts = ImageParts { config, layers: all_layers, annotations: &spec.annotations, base: base_ref };
        manifests.push(write_manifest(layout, parts, platform, &created)?);
    }
    write_root(layout, manifests, &spec.annotations, &spec.index_annotations, spec.tag.as_deref())
}

/// What one platform's image is made of: the input of [`write_manifest`], the one image
/// assembly of TOML and Dockerfile builds.
pub(crate) struct ImageParts<'a> {
    /// The config, with its `rootfs.diff_ids` and history; `created`, the platform and a
    /// missing `rootfs.type` are set by [`write_manifest`].
    pub config: ImageConfig,
    /// Every layer, the base image's first.
    pub layers: Vec<Descriptor>,
    /// Annotations of the manifest.
    pub annotations: &'a BTreeMap<String, String>,
    /// The base image's manifest digest and its name as the user typed it (`FROM` text, a
    /// `base` reference): the `org.opencontainers.image.base.*` annotations.
    pub base: Option<(&'a crate::model::digest::Digest, Option<&'a str>)>,
}

/// Store the config and manifest of one platform's image in `layout`; the manifest's
/// descriptor with its platform. `org.opencontainers.image.base.name` is the normalized
/// reference of a registry base (none for a local one), whichever builder made the image.
pub(crate) fn write_manifest(
    layout: &Layout,
    parts: ImageParts<'_>,
    platform: &Platform,
    created: &str,
) -> Result<Descriptor> {
    let mut config = parts.config;
    config.created = Some(created.to_string());
    config.architecture = platform.architecture.clone();
    config.os = platform.os.clone();
    config.variant = platform.variant.clone();
    if config.rootfs.kind.is_empty() {
        config.rootfs = RootFs::layers(std::mem::take(&mut config.rootfs.diff_ids));
    }
    let config_desc = store_bytes(layout, media::OCI_CONFIG, &config.to_bytes()?)?;
    let mut manifest = ImageManifest::new(config_desc, parts.layers);
    manifest.annotations = parts.annotations.clone();
    if let Some((digest, name)) = parts.base {
        manifest.annotations.insert(media::ANNOTATION_BASE_DIGEST.into(), digest.to_string());
        if let Some(n) = name.and_then(crate::transport::endpoint::base_name_annotation) {
            manifest.annotations.insert(media::ANNOTATION_BASE_NAME.into(), n);
        }
    }
    let mut desc = store_bytes(layout, media::OCI_MANIFEST, &manifest.to_bytes()?)?;
    desc.platform = Some(platform.clone());
    Ok(desc)
}

/// The root of a build: the one manifest (without its platform), or an index of several
/// with `annotations` and `index_annotations`; tagged `tag` in `layout`, else recorded as an
/// untagged root.
pub(crate) fn write_root(
    layout: &Layout,
    mut manifests: Vec<Descriptor>,
    annotations: &BTreeMap<String, String>,
    index_annotations: &BTreeMap<String, String>,
    tag: Option<&str>,
) -> Result<Descriptor> {
    let root = if manifests.len() == 1 {
        let mut d = manifests.pop().expect("one manifest");
        d.platform = None;
        d
    } else {
        let mut index = ImageIndex::new(manifests);
        index.annotations = annotations.clone();
        index.annotations.extend(index_annotations.clone());
        store_bytes(layout, media::OCI_INDEX, &index.to_bytes()?)?
    };
    match tag {
        Some(t) => layout.set_tag(&root, t)?,
        None => layout.add_untagged(&root)?,
    }
    Ok(root)
}

/// Index annotations need an index, which only a build for several platforms makes: with
/// one platform they are refused (BuildKit: "index annotations not supported for single
/// platform export") rather than dropped.
pub fn check_index_annotations(index_annotations: &BTreeMap<String, String>, platforms: usize) -> Result<()> {
    match index_annotations.keys().next() {
        Some(k) if platforms < 2 => Err(Error::Unsupported(format!(
            "index annotation {k:?}: this build makes one manifest (one platform), no index; build for several platforms or annotate the manifest (annotation.KEY)"
        ))),
        _ => Ok(()),
    }
}

/// Apply the spec's run settings over the base image's: set values win, env and labels
/// merge by key, a new entrypoint clears the base's cmd unless `cmd` is set too.
fn merge_run_config(config: &mut ImageConfig, spec: &ImageSpec) {
    let c = &mut config.config;
    if let Some(u) = &spec.user {
        c.user = Some(u.clone());
    }
    if let Some(w) = &spec.workdir {
        c.working_dir = Some(w.clone());
    }
    if let Some(e) = &spec.entrypoint {
        c.entrypoint = Some(e.clone());
        c.cmd = None;
    }
    if let Some(cmd) = &spec.cmd {
        c.cmd = Some(cmd.clone());
    }
    for (k, v) in &spec.env {
        let entry = format!("{k}={v}");
        match c.env.iter_mut().find(|e| e.split_once('=').map_or(e.as_str(), |(n, _)| n) == k) {
            Some(slot) => *slot = entry,
            None => c.env.push(entry),
        }
    }
    c.labels.extend(spec.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    for p in &spec.exposed_ports {
        let p = if p.contains('/') { p.clone() } else { format!("{p}/tcp") };
        c.exposed_ports.insert(p, Empty {});
    }
}

/// Pick the base manifest for `platform`, read its config and copy its layers into `layout`.
pub(crate) async fn load_base(layout: &Layout, b: &BaseImage<'_>, platform: &Platform) -> Result<Base> {
    let loc = b.source.location();
    let root = b.source.fetch_document(&b.root).await?;
    let (manifest_desc, doc) = match &root.view {
        View::Index(i) => {
            let d = i
                .manifests
                .iter()
                .find(|d| media::is_manifest(&d.media_type) && platform.matches_entry(d))
                .ok_or_else(|| {
                    Error::not_found(format!("platform {platform} in base image {}", b.root.digest), loc.clone())
                })?
                .clone();
            let doc = b.source.fetch_document(&d).await?;
            (d, doc)
        }
        View::Manifest(_) => (b.root.clone(), root.clone()),
    };
    let View::Manifest(m) = &doc.view else {
        return Err(Error::malformed(format!("manifest {}", manifest_desc.digest), loc, "expected an image manifest"));
    };
    // The one small-blob reader: bounded before it is read, size and digest verified.
    let raw = crate::copy::plan::read_small_blob(b.source, &m.config, MAX_CONFIG_SIZE).await?;
    let config: ImageConfig = serde_json::from_slice(&raw)
        .map_err(|e| Error::malformed(format!("config {}", m.config.digest), loc.clone(), e))?;
    if config.os != platform.os || config.architecture != platform.architecture {
        return Err(Error::Unsupported(format!(
            "base image {} in {loc} is {}/{}, not {platform}",
            manifest_desc.digest, config.os, config.architecture
        )));
    }
    // The graph copy moves the layers (its bounds, one transfer per digest, progress); the
    // manifest and config are the build's own.
    let opts = crate::copy::CopyOptions { jobs: b.jobs, ..Default::default() };
    crate::copy::children(b.source, layout, &m.layers, &opts, b.progress).await?;
    let layers = m
        .layers
        .iter()
        .map(|l| {
            let mut l = l.clone();
            l.media_type = match l.media_type.as_str() {
                media::DOCKER_LAYER_GZIP => media::OCI_LAYER_GZIP.into(),
                media::DOCKER_LAYER_TAR => media::OCI_LAYER_TAR.into(),
                other => other.into(),
            };
            l
        })
        .collect();
    Ok(Base { manifest: manifest_desc, config, layers })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn build_file_parses_and_resolves_sources() {
        let text = r#"
tag = "t"
platforms = ["linux/arm64/v8"]
compression = "zstd:19"
entrypoint = ["/app/run"]
[env]
A = "1"
[[layers]]
files = [{ source = "app", target = "/app" }, { source = "/abs/run.sh", target = "/usr/local/bin/", mode = 0o755, uid = 1000 }]
"#;
        let spec = BuildFile::parse(text, Path::new("/ctx"), "hoist.toml").unwrap();
        assert_eq!(spec.compression, Compression::Zstd { level: 19 });
        assert_eq!(spec.layers[0].files[0].source, PathBuf::from("/ctx/app"));
        assert_eq!(spec.layers[0].files[1].source, PathBuf::from("/abs/run.sh"));
        assert_eq!(spec.layers[0].files[1].mode, Some(0o755));
        assert!(BuildFile::parse("tga = 1", Path::new("/"), "x").is_err());
        assert!(BuildFile::parse("platforms = [\"linux\"]", Path::new("/"), "x").is_err());
    }

    #[test]
    fn per_platform_sources_and_layer_filters() {
        let t = tempfile::tempdir().unwrap();
        for arch in ["amd64", "arm64"] {
            std::fs::create_dir_all(t.path().join(format!("bin-{arch}"))).unwrap();
            std::fs::write(t.path().join(format!("bin-{arch}/tool")), format!("tool for {arch}")).unwrap();
        }
        std::fs::write(t.path().join("arm-only"), "x").unwrap();
        let text = r#"
platforms = ["linux/amd64", "linux/arm64/v8"]
[[layers]]
files = [{ source = "bin-{arch}/tool", target = "/usr/bin/tool" }]
[[layers]]
platforms = ["linux/arm64"]
files = [{ source = "arm-only", target = "/arm" }]
"#;
        let spec = BuildFile::parse(text, t.path(), "hoist.toml").unwrap();
        let arm = Platform::parse("linux/arm64/v8").unwrap();
        let amd = Platform::parse("linux/amd64").unwrap();
        assert!(spec.layers[1].applies_to(&arm) && !spec.layers[1].applies_to(&amd));
        assert_eq!(spec.layers[0].files_for(&arm)[0].source, t.path().join("bin-arm64/tool"));
        assert!(BuildFile::parse("[[layers]]\nplatforms = [\"x\"]\nfiles = []", t.path(), "x").is_err());

        let layout = Layout::create(t.path().join("store")).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let root = rt.block_on(build_image(&layout, &spec, None)).unwrap();
        let idx: serde_json::Value =
            serde_json::from_slice(&std::fs::read(layout.blob_path_of(&root.digest)).unwrap()).unwrap();
        let layers = |i: usize| -> Vec<String> {
            let d: crate::model::digest::Digest = idx["manifests"][i]["digest"].as_str().unwrap().parse().unwrap();
            let m: serde_json::Value =
                serde_json::from_slice(&std::fs::read(layout.blob_path_of(&d)).unwrap()).unwrap();
            m["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_string()).collect()
        };
        let (a, b) = (layers(0), layers(1));
        assert_eq!(a.len(), 1, "amd64 has the tool only");
        assert_eq!(b.len(), 2, "arm64 has the tool and its own layer");
        assert_ne!(a[0], b[0], "each platform carries its own binary");
    }

    #[test]
    fn run_config_merges_over_base() {
        let mut cfg = ImageConfig::default();
        cfg.config.env = vec!["PATH=/bin".into(), "A=old".into()];
        cfg.config.cmd = Some(vec!["sh".into()]);
        let spec = ImageSpec {
            entrypoint: Some(vec!["/run".into()]),
            env: BTreeMap::from([("A".into(), "new".into()), ("B".into(), "2".into())]),
            exposed_ports: vec!["80".into()],
            ..Default::default()
        };
        merge_run_config(&mut cfg, &spec);
        assert_eq!(cfg.config.env, vec!["PATH=/bin", "A=new", "B=2"]);
        assert_eq!(cfg.config.cmd, None);
        assert!(cfg.config.exposed_ports.contains_key("80/tcp"));
    }
}
