//! docker-archive transport (the `docker save` / `docker load` tar). Writing stores blobs at
//! `blobs/sha256/<hex>` as they arrive and, at `finish`, `manifest.json` plus `oci-layout`
//! and `index.json` so docker, podman and containerd all load it. Reading synthesizes a
//! Docker v2 schema 2 manifest from `manifest.json`, or reads hoist's own output as OCI.
//! Images only: artifacts are refused before anything is written.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::Path;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::error::{Error, Result};
use crate::layer::codec::WriteDecoder;
use crate::model::descriptor::{Descriptor, Platform};
use crate::model::digest::Digest;
use crate::model::document::{Document, ManifestView, View};
use crate::model::media;
use crate::model::platform::is_attestation;
use crate::model::reference::{normalize_name, same_image_name, split_tag, TagOrDigest};
use crate::model::verify::HashWriter;
use crate::transport::archive::check_stored_name;
use crate::transport::archive::oci::OciArchive;
use crate::transport::archive::tar::{blob_name, normalize_tar_path, TarEntry, TarIndex};
use crate::transport::archive::writer::WriterCore;
use crate::transport::{BlobOutcome, BlobStream, Destination, Progress, Source};

/// Largest image config read into memory.
const MAX_CONFIG_SIZE: u64 = 16 * 1024 * 1024;

/// Whether `media_type` is an image config docker and podman can load.
fn is_image_config(media_type: &str) -> bool {
    media_type == media::OCI_CONFIG || media_type == media::DOCKER_CONFIG
}

/// Whether `media_type` names an image layer (OCI or Docker, any compression).
fn is_layer(media_type: &str) -> bool {
    media_type.starts_with("application/vnd.oci.image.layer.")
        || media_type.starts_with("application/vnd.docker.image.rootfs.")
}

/// The manifest view of `doc` when it is a container image, else `Error::Unsupported`
/// naming what it is.
fn image_view<'a>(doc: &'a Document, location: &str) -> Result<&'a ManifestView> {
    match &doc.view {
        View::Manifest(m) if is_image_config(&m.config.media_type) => Ok(m),
        View::Manifest(m) => {
            let kind = m.artifact_type.clone().unwrap_or_else(|| m.config.media_type.clone());
            Err(Error::Unsupported(format!(
                "{location} holds container images only: manifest {} is an artifact of type {kind}",
                doc.digest
            )))
        }
        View::Index(_) => Err(Error::Unsupported(format!("{location}: nested index {} is not an image", doc.digest))),
    }
}

/// Pick the manifest for `want`, else linux/amd64, else the only image in an index.
pub fn pick_platform(manifests: &[Descriptor], want: Option<&Platform>, location: &str) -> Result<Descriptor> {
    let images: Vec<&Descriptor> =
        manifests.iter().filter(|d| media::is_manifest(&d.media_type) && !is_attestation(d)).collect();
    let matches = |p: &Platform, d: &Descriptor| p.matches_entry(d);
    let listed =
        || images.iter().filter_map(|d| d.platform.as_ref().map(|p| p.to_string())).collect::<Vec<_>>().join(", ");
    if let Some(p) = want {
        return images
            .iter()
            .find(|d| matches(p, d))
            .map(|d| (*d).clone())
            .ok_or_else(|| Error::not_found(format!("platform {p} (index has: {})", listed()), location));
    }
    let amd64 = Platform::parse("linux/amd64").expect("valid platform");
    if let Some(d) = images.iter().find(|d| matches(&amd64, d)) {
        return Ok((*d).clone());
    }
    match images.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(Error::Unsupported(format!("{location}: index has no image manifest"))),
        _ => Err(Error::InvalidReference {
            reference: location.to_string(),
            reason: format!("index has several platforms ({}); choose one", listed()),
        }),
    }
}

/// `name` normalized as docker and containerd store it (`me/app:v1` -> `docker.io/me/app:v1`),
/// or as it is when it is no reference.
fn normalized(name: &str) -> String {
    normalize_name(name).unwrap_or_else(|_| name.to_string())
}

/// `repo:tag` when `s` names a repository and a tag.
fn split_repo_tag(s: &str) -> Option<(&str, &str)> {
    match split_tag(s) {
        (repo, Some(tag)) if !repo.is_empty() && !tag.is_empty() => Some((repo, tag)),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------
// Writing.
// ---------------------------------------------------------------------------------------

/// What a decompressor writes the layer's uncompressed bytes into: hashed, then dropped.
type DiffSink = HashWriter<std::io::Sink>;

/// Hashes the uncompressed content of a layer as it streams by (the layer's diff_id): the
/// layer codec's push-style decoder, gzip/zstd sniffed from the first bytes, constant memory.
struct DiffHasher(WriteDecoder<DiffSink>);

impl DiffHasher {
    fn new() -> Self {
        DiffHasher(WriteDecoder::sniffing(HashWriter::new(std::io::sink())))
    }

    fn update(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        self.0.write_all(chunk)
    }

    fn finish(self) -> std::io::Result<Digest> {
        Ok(self.0.finish()?.finish().1)
    }
}

/// An image whose manifest was pushed: what manifest.json needs.
struct ImageEntry {
    config: Digest,
    layers: Vec<Digest>,
}

#[derive(Default)]
struct DockerState {
    configs: HashMap<Digest, Vec<u8>>,
    diff_ids: HashMap<Digest, Digest>,
    images: HashMap<Digest, ImageEntry>,
    indexes: HashMap<Digest, Vec<Descriptor>>,
}

/// One `manifest.json` entry, in docker's field order.
#[derive(Serialize, Deserialize)]
struct ManifestJsonEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// A docker-archive being written. Nothing appears at the path until `finish` succeeds.
pub struct DockerArchiveWriter {
    inner: Mutex<(WriterCore, DockerState)>,
    location: String,
    repo_tags: Vec<String>,
    platform: Option<Platform>,
}

impl DockerArchiveWriter {
    /// Start a docker-archive at `path` (or stdout for `-`). `repo_tags` (`repo:tag`) name the
    /// first image in manifest.json, normalized (`me/app:v1` is stored as `docker.io/me/app:v1`,
    /// as containerd and Kubernetes look it up); `platform` picks the image of an index (default
    /// linux/amd64, or the only one).
    pub async fn create(
        path: impl AsRef<Path>,
        repo_tags: Vec<String>,
        platform: Option<Platform>,
    ) -> Result<DockerArchiveWriter> {
        let path = path.as_ref();
        let location = format!("docker-archive:{}", path.display());
        for t in &repo_tags {
            if split_repo_tag(t).is_none() {
                return Err(Error::InvalidReference {
                    reference: t.clone(),
                    reason: "docker-archive tags are repo:tag".into(),
                });
            }
        }
        let repo_tags = repo_tags.iter().map(|t| normalized(t)).collect();
        let core = WriterCore::create(path, location.clone()).await?;
        Ok(DockerArchiveWriter { inner: Mutex::new((core, DockerState::default())), location, repo_tags, platform })
    }

    /// Check a pushed image manifest against its config's diff_ids and record it.
    fn accept_manifest(&self, state: &mut DockerState, doc: &Document) -> Result<()> {
        match &doc.view {
            View::Index(i) => {
                state.indexes.insert(doc.digest.clone(), i.manifests.clone());
                Ok(())
            }
            View::Manifest(_) => {
                let m = image_view(doc, &self.location)?;
                let config = state.configs.get(&m.config.digest).ok_or_else(|| {
                    Error::not_found(
                        format!("config {} of manifest {} (not copied into this archive)", m.config.digest, doc.digest),
                        &self.location,
                    )
                })?;
                #[derive(Deserialize)]
                struct RootFs {
                    #[serde(default)]
                    diff_ids: Vec<Digest>,
                }
                #[derive(Deserialize)]
                struct Config {
                    rootfs: RootFs,
                }
                let what = format!("config {}", m.config.digest);
                let cfg: Config =
                    serde_json::from_slice(config).map_err(|e| Error::malformed(&what, &self.location, e))?;
                if cfg.rootfs.diff_ids.len() != m.layers.len() {
                    return Err(Error::malformed(
                        &what,
                        &self.location,
                        format!(
                            "{} diff_ids for {} layers of manifest {}",
                            cfg.rootfs.diff_ids.len(),
                            m.layers.len(),
                            doc.digest
                        ),
                    ));
                }
                for (layer, want) in m.layers.iter().zip(&cfg.rootfs.diff_ids) {
                    let got = state
                        .diff_ids
                        .get(&layer.digest)
                        .ok_or_else(|| Error::not_found(format!("layer {}", layer.digest), &self.location))?;
                    if got != want {
                        return Err(Error::DigestMismatch {
                            what: format!("uncompressed layer {} (diff_id)", layer.digest),
                            location: self.location.clone(),
                            expected: want.to_string(),
                            actual: got.to_string(),
                        });
                    }
                }
                let entry = ImageEntry {
                    config: m.config.digest.clone(),
                    layers: m.layers.iter().map(|l| l.digest.clone()).collect(),
                };
                state.images.insert(doc.digest.clone(), entry);
                Ok(())
            }
        }
    }

    /// manifest.json and index.json entries for the roots pushed.
    fn plan(&self, core: &WriterCore, state: &DockerState) -> Result<(Vec<ManifestJsonEntry>, Vec<Descriptor>)> {
        // Roots in first-seen order, with every tag pushed for them.
        let mut order: Vec<(Descriptor, Vec<String>)> = Vec::new();
        let mut position: HashMap<Digest, usize> = HashMap::new();
        for r in core.roots.iter() {
            let tag = r.ref_name().map(str::to_string);
            let mut d = r.clone();
            d.annotations.remove(media::ANNOTATION_REF_NAME);
            match position.get(&d.digest) {
                Some(&i) => order[i].1.extend(tag),
                None => {
                    position.insert(d.digest.clone(), order.len());
                    order.push((d, tag.into_iter().collect()));
                }
            }
        }
        let mut manifest_json = Vec::new();
        let mut index = Vec::new();
        for (i, (root, tags)) in order.into_iter().enumerate() {
            let root = match state.indexes.get(&root.digest) {
                Some(children) => pick_platform(children, self.platform.as_ref(), &self.location)?,
                None => root,
            };
            let image = state
                .images
                .get(&root.digest)
                .ok_or_else(|| Error::not_found(format!("image manifest {}", root.digest), &self.location))?;
            let mut repo_tags: Vec<String> = if i == 0 { self.repo_tags.clone() } else { Vec::new() };
            let mut bare = Vec::new();
            for t in tags {
                if split_repo_tag(&t).is_some() {
                    repo_tags.push(normalized(&t));
                } else {
                    bare.push(t);
                }
            }
            let mut seen = BTreeSet::new();
            repo_tags.retain(|t| seen.insert(t.clone()));
            for rt in &repo_tags {
                let tag = split_repo_tag(rt).map(|(_, t)| t).unwrap_or(rt);
                index.push(
                    root.clone()
                        .with_annotation(media::ANNOTATION_CONTAINERD_IMAGE_NAME, rt.clone())
                        .with_annotation(media::ANNOTATION_REF_NAME, tag.to_string()),
                );
            }
            for t in &bare {
                index.push(root.clone().with_annotation(media::ANNOTATION_REF_NAME, t.clone()));
            }
            if repo_tags.is_empty() && bare.is_empty() {
                index.push(root.clone());
            }
            manifest_json.push(ManifestJsonEntry {
                config: blob_name(&image.config),
                repo_tags: Some(repo_tags),
                layers: image.layers.iter().map(blob_name).collect(),
            });
        }
        if manifest_json.is_empty() {
            return Err(Error::refused(&self.location, "no image was copied; nothing to write"));
        }
        Ok((manifest_json, index))
    }
}

#[async_trait]
impl Destination for DockerArchiveWriter {
    fn location(&self) -> String {
        self.location.clone()
    }

    async fn has_blob(&self, desc: &Descriptor) -> Result<bool> {
        Ok(self.inner.lock().await.0.has(&desc.digest))
    }

    async fn has_manifest(&self, desc: &Descriptor) -> Result<bool> {
        Ok(self.inner.lock().await.0.has(&desc.digest))
    }

    async fn select_root(&self, src: &dyn Source, root: &Document) -> Result<Option<Descriptor>> {
        let r = async {
            match &root.view {
                View::Index(i) => {
                    let child = pick_platform(&i.manifests, self.platform.as_ref(), &src.location())?;
                    let doc = src.fetch_document(&child).await?;
                    image_view(&doc, &self.location)?;
                    Ok(Some(child))
                }
                View::Manifest(_) => image_view(root, &self.location).map(|_| None),
            }
        }
        .await;
        if let Err(e) = &r {
            self.inner.lock().await.0.poison(e);
        }
        r
    }

    async fn push_blob(&self, desc: &Descriptor, src: &dyn Source, progress: &dyn Progress) -> Result<BlobOutcome> {
        let mut guard = self.inner.lock().await;
        let (core, state) = &mut *guard;
        if core.has(&desc.digest) {
            return Ok(BlobOutcome::Existed);
        }
        let r = if is_image_config(&desc.media_type) {
            if desc.size > MAX_CONFIG_SIZE {
                Err(Error::malformed(
                    format!("config {}", desc.digest),
                    &self.location,
                    format!("larger than {MAX_CONFIG_SIZE} bytes"),
                ))
            } else {
                let mut bytes = Vec::with_capacity(desc.size as usize);
                let r = core
                    .write_blob(desc, src, progress, &mut |c| {
                        bytes.extend_from_slice(c);
                        Ok(())
                    })
                    .await;
                if r.is_ok() {
                    state.configs.insert(desc.digest.clone(), bytes);
                }
                r
            }
        } else if is_layer(&desc.media_type) {
            let mut diff = Some(DiffHasher::new());
            let what = format!("layer {} in {}", desc.digest, src.location());
            let r = core
                .write_blob(desc, src, progress, &mut |c| {
                    diff.as_mut().expect("hasher").update(c).map_err(|e| Error::malformed(&what, "decompression", e))
                })
                .await;
            match r {
                Ok(o) => match diff.take().expect("hasher").finish() {
                    Ok(d) => {
                        state.diff_ids.insert(desc.digest.clone(), d);
                        Ok(o)
                    }
                    Err(e) => Err(Error::malformed(format!("layer {}", desc.digest), src.location(), e)),
                },
                Err(e) => Err(e),
            }
        } else {
            Err(Error::Unsupported(format!(
                "{} holds container images only: blob {} has media type {}, neither an image config nor a layer",
                self.location, desc.digest, desc.media_type
            )))
        };
        if let Err(e) = &r {
            core.poison(e);
        }
        r
    }

    async fn push_manifest(&self, desc: &Descriptor, bytes: Bytes, tag: Option<&str>) -> Result<()> {
        let mut guard = self.inner.lock().await;
        let (core, state) = &mut *guard;
        let r = async {
            if !core.has(&desc.digest) {
                let doc = Document::from_fetched(desc, bytes.clone(), &self.location)?;
                self.accept_manifest(state, &doc)?;
                core.write_blob_bytes(desc, &bytes).await?;
            }
            if let Some(t) = tag {
                core.set_tag(desc, t);
            }
            Ok(())
        }
        .await;
        if let Err(e) = &r {
            core.poison(e);
        }
        r
    }

    async fn add_root(&self, desc: &Descriptor) -> Result<()> {
        self.inner.lock().await.0.add_untagged(desc);
        Ok(())
    }

    fn max_jobs(&self) -> Option<usize> {
        Some(1)
    }

    async fn finish(&self) -> Result<()> {
        let mut guard = self.inner.lock().await;
        let (core, state) = &mut *guard;
        let planned = self.plan(core, state);
        let (manifest_json, index) = match planned {
            Ok(p) => p,
            Err(e) => {
                core.poison(&e);
                return Err(e);
            }
        };
        let manifest_json = serde_json::to_vec(&manifest_json).map_err(|e| Error::serialize("manifest.json", e))?;
        core.finish(&index, &[("manifest.json", manifest_json)]).await
    }
}

// ---------------------------------------------------------------------------------------
// Reading.
// ---------------------------------------------------------------------------------------

/// Descriptor in a Docker v2 schema 2 manifest, in docker's field order.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct V2Descriptor {
    media_type: &'static str,
    size: u64,
    digest: Digest,
}

/// The Docker v2 schema 2 manifest hoist synthesizes for a docker-archive image.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct V2Manifest {
    schema_version: u32,
    media_type: &'static str,
    config: V2Descriptor,
    layers: Vec<V2Descriptor>,
}

/// One image of a docker-archive, as a synthesized manifest.
struct DockerImage {
    desc: Descriptor,
    manifest: Bytes,
    repo_tags: Vec<String>,
}

struct DockerImages {
    index: TarIndex,
    images: Vec<DockerImage>,
    /// Position in `images` of the first image with a given manifest digest.
    by_digest: HashMap<Digest, usize>,
    blobs: HashMap<Digest, TarEntry>,
    /// Bytes of layers and configs read to hash them while opening.
    bytes_hashed: u64,
}

enum Inner {
    Oci(OciArchive),
    Docker(DockerImages),
}

/// A docker-archive opened for reading.
pub struct DockerArchive {
    inner: Inner,
    location: String,
}

/// The format of the manifest hoist makes for a docker-archive image, which carries no
/// manifest bytes of its own: the destination's native one, as skopeo does (OCI for a layout
/// or an OCI archive, Docker schema 2 for a docker-archive or a registry).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MadeManifest {
    /// Docker v2 schema 2 (`application/vnd.docker.distribution.manifest.v2+json`), Docker
    /// config and layer media types; zstd layers cannot be described and are refused.
    #[default]
    Docker,
    /// OCI image manifest, OCI config and layer media types (the config bytes are the same:
    /// a Docker image config is a valid OCI image config).
    Oci,
}

/// How a docker-archive layer is compressed, sniffed from its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LayerKind {
    Tar,
    Gzip,
    Zstd,
}

impl MadeManifest {
    fn manifest_type(self) -> &'static str {
        match self {
            MadeManifest::Docker => media::DOCKER_MANIFEST,
            MadeManifest::Oci => media::OCI_MANIFEST,
        }
    }

    fn config_type(self) -> &'static str {
        match self {
            MadeManifest::Docker => media::DOCKER_CONFIG,
            MadeManifest::Oci => media::OCI_CONFIG,
        }
    }

    /// The media type of a layer, or None when this format cannot describe it.
    fn layer_type(self, kind: LayerKind) -> Option<&'static str> {
        Some(match (self, kind) {
            (MadeManifest::Docker, LayerKind::Tar) => media::DOCKER_LAYER_TAR,
            (MadeManifest::Docker, LayerKind::Gzip) => media::DOCKER_LAYER_GZIP,
            (MadeManifest::Docker, LayerKind::Zstd) => return None,
            (MadeManifest::Oci, LayerKind::Tar) => media::OCI_LAYER_TAR,
            (MadeManifest::Oci, LayerKind::Gzip) => media::OCI_LAYER_GZIP,
            (MadeManifest::Oci, LayerKind::Zstd) => media::OCI_LAYER_ZSTD,
        })
    }
}

/// Make the manifest bytes of `format` (deterministic: fixed field order, compact).
fn synthesize_manifest_as(
    format: MadeManifest,
    config: (Digest, u64),
    layers: &[(Digest, u64, &'static str)],
) -> Vec<u8> {
    let m = V2Manifest {
        schema_version: 2,
        media_type: format.manifest_type(),
        config: V2Descriptor { media_type: format.config_type(), size: config.1, digest: config.0 },
        layers: layers.iter().map(|(d, s, mt)| V2Descriptor { media_type: mt, size: *s, digest: d.clone() }).collect(),
    };
    serde_json::to_vec(&m).expect("manifest serializes")
}

/// The Docker v2 schema 2 manifest bytes (deterministic: fixed field order, compact).
#[cfg(test)]
fn synthesize_manifest(config: (Digest, u64), layers: &[(Digest, u64, &'static str)]) -> Vec<u8> {
    synthesize_manifest_as(MadeManifest::Docker, config, layers)
}

impl DockerArchive {
    /// Open a docker-archive (blocking: indexes the tar and hashes every layer once). A tar
    /// that also holds `oci-layout` and `index.json` is read as an OCI layout; otherwise
    /// hoist makes Docker schema 2 manifests ([`DockerArchive::open_as`] chooses).
    pub fn open(path: impl AsRef<Path>) -> Result<DockerArchive> {
        Self::open_as(path, MadeManifest::Docker)
    }

    /// [`DockerArchive::open`], making manifests of `format` for the images of a
    /// `manifest.json` (an archive with `index.json` has real manifest bytes, read as they are).
    pub fn open_as(path: impl AsRef<Path>, format: MadeManifest) -> Result<DockerArchive> {
        let path = path.as_ref();
        let location = format!("docker-archive:{}", path.display());
        let index = TarIndex::open_blocking(path, &location)?;
        if index.get("oci-layout").is_some() && index.get("index.json").is_some() {
            return Ok(DockerArchive { inner: Inner::Oci(OciArchive::from_index(index)?), location });
        }
        if index.get("manifest.json").is_none() {
            return Err(Error::Unsupported(format!(
                "{location} has no manifest.json (the pre-1.10 docker save format is not supported)"
            )));
        }
        let raw = index.read_entry_blocking("manifest.json", media::MAX_MANIFEST_SIZE)?;
        let entries: Vec<ManifestJsonEntry> =
            serde_json::from_slice(&raw).map_err(|e| Error::malformed("manifest.json", &location, e))?;
        let mut blobs: HashMap<Digest, TarEntry> = HashMap::new();
        // Each entry is hashed once however often (and under whatever names or links)
        // manifest.json names it: work stays linear in the archive, not in its references.
        let mut hashed: HashMap<TarEntry, (Digest, u64, &'static str)> = HashMap::new();
        let mut configs: HashMap<TarEntry, Digest> = HashMap::new();
        let mut bytes_hashed = 0u64;
        let mut images = Vec::new();
        let mut by_digest = HashMap::new();
        for entry in entries {
            let lookup = |p: &str| -> Result<(String, TarEntry)> {
                let name = normalize_tar_path(p, &location)?;
                let e = index
                    .get(&name)
                    .ok_or_else(|| Error::not_found(format!("{p} (named in manifest.json)"), &location))?;
                Ok((name, e))
            };
            let (cname, ce) = lookup(&entry.config)?;
            let cdigest = match configs.get(&ce) {
                Some(d) => d.clone(),
                None => {
                    let config = index.read_entry_blocking(&cname, MAX_CONFIG_SIZE)?;
                    bytes_hashed += ce.size;
                    let d = Digest::sha256_of(&config);
                    configs.insert(ce, d.clone());
                    d
                }
            };
            blobs.insert(cdigest.clone(), ce);
            let mut layers = Vec::new();
            for l in &entry.layers {
                let (_, le) = lookup(l)?;
                if let Some(h) = hashed.get(&le) {
                    layers.push(h.clone());
                    continue;
                }
                let (digest, head) = index.hash_entry_blocking(le)?;
                bytes_hashed += le.size;
                let kind = match head {
                    [0x1f, 0x8b, ..] => LayerKind::Gzip,
                    [0x28, 0xb5, 0x2f, 0xfd] => LayerKind::Zstd,
                    _ => LayerKind::Tar,
                };
                let mt = format.layer_type(kind).ok_or_else(|| {
                    Error::Unsupported(format!(
                        "{location}: layer {l} is zstd-compressed, which a Docker v2 schema 2 manifest cannot describe \
                         (an OCI destination, or --convert oci, takes it)"
                    ))
                })?;
                blobs.insert(digest.clone(), le);
                hashed.insert(le, (digest.clone(), le.size, mt));
                layers.push((digest, le.size, mt));
            }
            let manifest = synthesize_manifest_as(format, (cdigest, ce.size), &layers);
            if manifest.len() as u64 > media::MAX_MANIFEST_SIZE {
                return Err(Error::malformed(
                    "manifest.json",
                    &location,
                    format!(
                        "an image of {} layers needs a {} byte manifest, over the {} byte limit",
                        layers.len(),
                        manifest.len(),
                        media::MAX_MANIFEST_SIZE
                    ),
                ));
            }
            let desc = Descriptor::of_bytes(format.manifest_type(), &manifest);
            by_digest.entry(desc.digest.clone()).or_insert(images.len());
            images.push(DockerImage {
                desc,
                manifest: Bytes::from(manifest),
                repo_tags: entry.repo_tags.unwrap_or_default(),
            });
        }
        let images = DockerImages { index, images, by_digest, blobs, bytes_hashed };
        Ok(DockerArchive { inner: Inner::Docker(images), location })
    }

    /// Whether the archive was read through its OCI `index.json`.
    pub fn is_oci(&self) -> bool {
        matches!(self.inner, Inner::Oci(_))
    }

    /// Bytes of layers and configs `open` read to hash them (0 for an OCI layout): each
    /// tar entry once, however many times manifest.json names it. For tests.
    #[doc(hidden)]
    pub fn bytes_hashed(&self) -> u64 {
        match &self.inner {
            Inner::Oci(_) => 0,
            Inner::Docker(d) => d.bytes_hashed,
        }
    }
}

impl DockerImages {
    fn resolve(&self, reference: Option<&TagOrDigest>, location: &str) -> Result<Descriptor> {
        let found = match reference {
            None => match self.images.as_slice() {
                [one] => Some(one),
                [] => None,
                _ => {
                    return Err(Error::InvalidReference {
                        reference: location.to_string(),
                        reason: format!(
                            "archive has {} images; name one with :TAG or @DIGEST (tags: {})",
                            self.images.len(),
                            self.images.iter().flat_map(|i| i.repo_tags.iter().cloned()).collect::<Vec<_>>().join(", ")
                        ),
                    })
                }
            },
            Some(TagOrDigest::Digest(d)) => self.images.iter().find(|i| i.desc.digest == *d),
            // As written, then the same name normalized (`alpine` finds
            // `docker.io/library/alpine:latest`), then a bare tag.
            Some(TagOrDigest::Tag(name)) => self
                .images
                .iter()
                .find(|i| i.repo_tags.iter().any(|t| t == name))
                .or_else(|| self.images.iter().find(|i| i.repo_tags.iter().any(|t| same_image_name(t, name))))
                .or_else(|| {
                    self.images
                        .iter()
                        .find(|i| i.repo_tags.iter().any(|t| split_repo_tag(t).is_some_and(|(_, x)| x == name)))
                }),
        };
        found.map(|i| i.desc.clone()).ok_or_else(|| {
            Error::not_found(format!("image {:?}", reference.map(|r| r.to_string()).unwrap_or_default()), location)
        })
    }
}

#[async_trait]
impl Source for DockerArchive {
    fn location(&self) -> String {
        self.location.clone()
    }

    async fn resolve(&self, reference: Option<&TagOrDigest>) -> Result<Descriptor> {
        match &self.inner {
            Inner::Oci(o) => o.resolve(reference).await,
            Inner::Docker(d) => d.resolve(reference, &self.location),
        }
    }

    async fn fetch_manifest_bytes(&self, desc: &Descriptor) -> Result<Bytes> {
        match &self.inner {
            Inner::Oci(o) => o.fetch_manifest_bytes(desc).await,
            Inner::Docker(d) => d
                .by_digest
                .get(&desc.digest)
                .map(|&i| d.images[i].manifest.clone())
                .ok_or_else(|| Error::not_found(format!("manifest {}", desc.digest), &self.location)),
        }
    }

    async fn open_blob(&self, desc: &Descriptor, offset: u64) -> Result<BlobStream> {
        match &self.inner {
            Inner::Oci(o) => o.open_blob(desc, offset).await,
            Inner::Docker(d) => {
                let e = d
                    .blobs
                    .get(&desc.digest)
                    .ok_or_else(|| Error::not_found(format!("blob {}", desc.digest), &self.location))?;
                d.index.open_entry(*e, offset).await
            }
        }
    }

    async fn roots(&self) -> Result<Vec<(Descriptor, Option<String>)>> {
        match &self.inner {
            Inner::Oci(o) => o.roots().await,
            Inner::Docker(d) => {
                let mut roots = Vec::new();
                for i in &d.images {
                    if i.repo_tags.is_empty() {
                        roots.push((i.desc.clone(), None));
                    }
                    for t in &i.repo_tags {
                        check_stored_name(t, "RepoTags entry", &self.location)?;
                        roots.push((i.desc.clone(), Some(t.clone())));
                    }
                }
                Ok(roots)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_synthesized_manifest() {
        let config = Digest::sha256_of(b"{}");
        let layer = Digest::sha256_of(b"");
        let bytes = synthesize_manifest((config, 2), &[(layer, 0, media::DOCKER_LAYER_GZIP)]);
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            concat!(
                r#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","#,
                r#""config":{"mediaType":"application/vnd.docker.container.image.v1+json","size":2,"#,
                r#""digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"},"#,
                r#""layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":0,"#,
                r#""digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}]}"#
            )
        );
    }

    #[test]
    fn diff_hasher_sees_through_compression() {
        let plain = b"hello layer contents".repeat(100);
        let want = Digest::sha256_of(&plain);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&plain).unwrap();
        let gz = gz.finish().unwrap();
        let zs = zstd::encode_all(&plain[..], 3).unwrap();
        for data in [plain.clone(), gz, zs, b"ab".to_vec()] {
            let mut h = DiffHasher::new();
            for c in data.chunks(3) {
                h.update(c).unwrap();
            }
            let got = h.finish().unwrap();
            if data == b"ab" {
                assert_eq!(got, Digest::sha256_of(b"ab"));
            } else {
                assert_eq!(got, want);
            }
        }
    }

    #[test]
    fn platform_choice() {
        let d = |p: &str| {
            let mut d = Descriptor::of_bytes(media::OCI_MANIFEST, p.as_bytes());
            d.platform = Platform::parse(p);
            d
        };
        let all = vec![d("linux/arm64"), d("linux/amd64"), d("unknown/unknown")];
        assert_eq!(pick_platform(&all, None, "t").unwrap().platform.unwrap().to_string(), "linux/amd64");
        let arm = Platform::parse("linux/arm64").unwrap();
        assert_eq!(pick_platform(&all, Some(&arm), "t").unwrap().platform.unwrap().to_string(), "linux/arm64");
        assert_eq!(
            pick_platform(&[d("linux/s390x"), d("unknown/unknown")], None, "t").unwrap().platform.unwrap().to_string(),
            "linux/s390x"
        );
        assert!(pick_platform(&[d("linux/s390x"), d("linux/arm64")], None, "t").is_err());
    }
}
