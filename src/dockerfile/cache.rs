//! The Dockerfile step cache shared between machines (buildx's `--cache-to` /
//! `--cache-from`), as an OCI artifact.
//!
//! Keys are the step keys the local cache uses (`build-cache/steps/KEY.json`), so a local
//! and an exported cache always agree. The export is one OCI image manifest:
//! - `artifactType` [`CACHE_ARTIFACT_TYPE`];
//! - `config`: the step table ([`CACHE_CONFIG_TYPE`]), a JSON object
//!   `{"steps": {KEY: {"layer": DESCRIPTOR|null, "diffId": DIGEST|null}}}` in key order (a
//!   step without a layer, such as a RUN that changed nothing, has `null`s);
//! - `layers`: every layer the table names, once, in digest order: the same blobs as the
//!   images', so a registry keeps and mounts them like any layer.
//!
//! `mode=min` exports the steps whose layers are in the built image (and the steps that made
//! no layer); `mode=max` every step of every stage the build went through.
//!
//! `--cache-to type=inline` puts the `mode=min` table in the image config itself, under
//! [`INLINE_CACHE_KEY`] (as BuildKit's inline cache does with its own key): the layers are
//! the image's. `--cache-from` of such an image (a manifest, or an index of them) reads the
//! tables of its configs. On import, a
//! step found in a cache is taken only when its layer can be fetched into the store: an
//! entry naming a blob the registry no longer has is a miss (logged), never an error.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::BuildLog;
use crate::copy::CopyOptions;
use crate::error::{Error, Result};
use crate::ingest::store_bytes;
use crate::layer::LayerBlob;
use crate::model::descriptor::Descriptor;
use crate::model::digest::Digest;
use crate::model::document::View;
use crate::model::media;
use crate::model::platform::is_attestation;
use crate::model::write::ImageManifest;
use crate::transport::layout::Layout;
use crate::transport::origins::BlobOrigins;
use crate::transport::{Progress, RangeRead, Source};

/// `artifactType` of an exported build cache.
pub const CACHE_ARTIFACT_TYPE: &str = "application/vnd.hoist.build-cache.v1";
/// Media type of its config, the step table.
pub const CACHE_CONFIG_TYPE: &str = "application/vnd.hoist.build-cache.steps.v1+json";
/// The field of an image config holding an inline cache (`--cache-to type=inline`).
pub const INLINE_CACHE_KEY: &str = "hoist.build-cache.v1";
/// Largest step table read from a cache.
const MAX_TABLE: u64 = 64 << 20;

/// What `--cache-to` exports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CacheMode {
    /// The steps of the built image's layers.
    #[default]
    Min,
    /// Every step of every stage.
    Max,
}

impl CacheMode {
    /// `min` or `max`.
    pub fn parse(s: &str) -> Option<CacheMode> {
        match s {
            "min" => Some(CacheMode::Min),
            "max" => Some(CacheMode::Max),
            _ => None,
        }
    }
}

/// One step's result: its layer (None: the step made no layer). The record of a step in
/// the local cache and in an exported table.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct CacheEntry {
    pub layer: Option<Descriptor>,
    #[serde(rename = "diffId", alias = "diff_id")]
    pub diff_id: Option<Digest>,
}

impl CacheEntry {
    pub fn of(blob: Option<&LayerBlob>) -> CacheEntry {
        CacheEntry { layer: blob.map(|b| b.descriptor.clone()), diff_id: blob.map(|b| b.diff_id.clone()) }
    }

    pub fn blob(&self) -> Option<LayerBlob> {
        self.layer.clone().zip(self.diff_id.clone()).map(|(descriptor, diff_id)| LayerBlob { descriptor, diff_id })
    }
}

#[derive(Default, Serialize, Deserialize)]
struct StepTable {
    steps: BTreeMap<String, CacheEntry>,
    /// The layers of the image(s) the cache was exported with, in digest order (a cache
    /// manifest's table; an inline table's layers are all the image's): what an unchanged
    /// build will need, fetched from the start of a build that reads the cache.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    image: Vec<Digest>,
}

/// A cache imported with `--cache-from`: where its blobs are and its step table.
pub(crate) struct ImportedCache {
    name: String,
    source: Arc<dyn Source>,
    steps: BTreeMap<String, CacheEntry>,
    /// The layers of the image(s) the cache was exported with.
    image: Vec<Descriptor>,
}

impl ImportedCache {
    /// Read the cache `root` of `source` (named `name` in messages): a cache manifest, or an
    /// image (a manifest, or an index of them) whose configs carry an inline cache.
    pub async fn load(name: &str, source: Box<dyn Source>, root: &Descriptor) -> Result<ImportedCache> {
        let loc = source.location();
        let what = || format!("build cache {name}");
        let doc = source.fetch_document(root).await?;
        let manifests = match &doc.view {
            View::Manifest(m) => vec![m.clone()],
            View::Index(i) => {
                let mut out = Vec::new();
                for d in i.manifests.iter().filter(|d| media::is_manifest(&d.media_type) && !is_attestation(d)) {
                    if let View::Manifest(m) = source.fetch_document(d).await?.view {
                        out.push(m);
                    }
                }
                out
            }
        };
        let mut steps = BTreeMap::new();
        let mut image: BTreeSet<Digest> = BTreeSet::new();
        let mut found = false;
        for m in &manifests {
            let raw = crate::copy::plan::read_small_blob(source.as_ref(), &m.config, MAX_TABLE).await?;
            let table: Option<StepTable> = if m.config.media_type == CACHE_CONFIG_TYPE {
                Some(serde_json::from_slice(&raw).map_err(|e| Error::malformed(what(), loc.clone(), e))?)
            } else {
                // an image: its config's inline cache, if any
                let mut config: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_slice(&raw).map_err(|e| Error::malformed(what(), loc.clone(), e))?;
                match config.remove(INLINE_CACHE_KEY) {
                    Some(v) => Some(
                        serde_json::from_value(v)
                            .map_err(|e| Error::malformed(format!("{} (inline)", what()), loc.clone(), e))?,
                    ),
                    None => None,
                }
            };
            if let Some(t) = table {
                found = true;
                if m.config.media_type == CACHE_CONFIG_TYPE {
                    image.extend(t.image);
                } else {
                    image.extend(m.layers.iter().map(|l| l.digest.clone()));
                }
                steps.extend(t.steps);
            }
        }
        if !found {
            return Err(Error::malformed(
                what(),
                loc,
                format!("neither a hoist build cache ({CACHE_CONFIG_TYPE}) nor an image with an inline cache"),
            ));
        }
        let mut layers: BTreeMap<Digest, Descriptor> = BTreeMap::new();
        for l in steps.values().filter_map(|e| e.layer.as_ref().filter(|_| e.diff_id.is_some())) {
            if image.contains(&l.digest) {
                layers.entry(l.digest.clone()).or_insert_with(|| l.clone());
            }
        }
        Ok(ImportedCache {
            name: name.to_string(),
            source: Arc::from(source),
            steps,
            image: layers.into_values().collect(),
        })
    }

    /// The layers of the image(s) this cache was exported with (the steps' layers an
    /// unchanged build puts in its image), largest first.
    pub fn image_layers(&self) -> Vec<Descriptor> {
        let mut v = self.image.clone();
        v.sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.digest.cmp(&b.digest)));
        v
    }

    /// Where its blobs are read.
    pub fn source(&self) -> Arc<dyn Source> {
        self.source.clone()
    }

    /// Record, in `origins`, every layer the cache's table names as readable from its
    /// source (a registry repository a push of the image mounts it from). A layer the
    /// registry lost since is answered with an upload session, and uploaded.
    pub fn note_origins(&self, origins: &mut BlobOrigins) {
        for l in self.steps.values().filter_map(|e| e.layer.as_ref()) {
            origins.note(l, self.source.as_ref());
        }
    }

    /// Number of steps the cache holds.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    /// The step `key` when this cache has it and its layer can be had: `(entry, later)`.
    /// `later`: the layer is not in `layout` yet but the cache has it (a one-byte ranged read
    /// or the file answered); [`ImportedCache::fetch`] brings it when a later step or the
    /// image needs it, so a step whose layer nothing reads (an intermediate stage a cached
    /// `COPY --from` replaces) is never downloaded. Where no cheap check exists the layer is
    /// fetched now. A layer the cache no longer has is a miss.
    pub async fn take(
        &self,
        key: &str,
        layout: &Layout,
        log: &dyn BuildLog,
        opts: &CopyOptions,
    ) -> Option<(CacheEntry, bool)> {
        let e = self.steps.get(key)?;
        let Some(l) = &e.layer else {
            return Some((e.clone(), false));
        };
        e.diff_id.as_ref()?;
        if layout.blob_path_of(&l.digest).is_file() {
            return Some((e.clone(), false));
        }
        let check = match self.source.blob_path(l) {
            _ if l.size == 0 => Ok(false),
            Some(p) if p.is_file() => Ok(true),
            Some(p) => Err(Error::io(&p, std::io::Error::from(std::io::ErrorKind::NotFound))),
            None => match self.source.open_blob_range(l, 0, 1.min(l.size)).await {
                Ok(RangeRead::Part(_) | RangeRead::Whole(_)) => Ok(true),
                Ok(RangeRead::Unsupported) => Ok(false),
                Err(err) => Err(err),
            },
        };
        let miss = |err: Error| {
            log.line(&format!("  cache {}: layer {} not fetched ({err}): a miss", self.name, l.digest));
        };
        let later = match check {
            Ok(true) => true,
            Ok(false) => match self.fetch(std::slice::from_ref(l), layout, opts, log.transfers()).await {
                Ok(()) => false,
                Err(err) => {
                    miss(err);
                    return None;
                }
            },
            Err(err) => {
                miss(err);
                return None;
            }
        };
        Some((e.clone(), later))
    }

    /// Fetch the layers `layers` of this cache into `layout` (verified) through the graph copy
    /// ([`crate::copy::children`]: `opts`' bounds, largest first, each reported to
    /// `progress`), skipping those it has.
    pub async fn fetch(
        &self,
        layers: &[Descriptor],
        layout: &Layout,
        opts: &CopyOptions,
        progress: &dyn Progress,
    ) -> Result<()> {
        crate::copy::children(self.source.as_ref(), layout, layers, opts, progress).await.map(|_| ())
    }

    /// The name the cache was given (`--cache-from`), for messages.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// The entries of `steps` that `mode` keeps, `image_layers` being the layers of the built
/// image(s): `min`, those of the image's layers and those without a layer.
fn kept(
    steps: &BTreeMap<String, CacheEntry>,
    mode: CacheMode,
    image_layers: &BTreeSet<Digest>,
) -> BTreeMap<String, CacheEntry> {
    steps
        .iter()
        .filter(|(_, e)| mode == CacheMode::Max || e.layer.as_ref().is_none_or(|l| image_layers.contains(&l.digest)))
        .map(|(k, e)| (k.clone(), e.clone()))
        .collect()
}

/// The inline cache of an image (`--cache-to type=inline`): the `mode=min` table of
/// `steps` for an image of `image_layers`, the value of [`INLINE_CACHE_KEY`] in its config.
/// The layer descriptors are the image's, as they are.
pub(crate) fn inline_table(
    steps: &BTreeMap<String, CacheEntry>,
    image_layers: &BTreeSet<Digest>,
) -> Result<serde_json::Value> {
    serde_json::to_value(StepTable { steps: kept(steps, CacheMode::Min, image_layers), image: vec![] })
        .map_err(|e| Error::serialize("inline build cache", e))
}

/// Write the cache manifest of `steps` into `layout` (blobs are already there): the entries
/// `mode` keeps, `image_layers` being the layers of the built image(s).
pub(crate) fn write_cache(
    layout: &Layout,
    steps: &BTreeMap<String, CacheEntry>,
    mode: CacheMode,
    image_layers: &BTreeSet<Digest>,
) -> Result<Descriptor> {
    let kept = kept(steps, mode, image_layers);
    let mut layers: BTreeMap<Digest, Descriptor> = BTreeMap::new();
    for e in kept.values() {
        if let Some(l) = &e.layer {
            let mut l = l.clone();
            l.annotations.clear();
            l.platform = None;
            layers.entry(l.digest.clone()).or_insert(l);
        }
    }
    let image = image_layers.iter().filter(|d| layers.contains_key(d)).cloned().collect();
    let table = serde_json::to_vec(&StepTable { steps: kept, image })
        .map_err(|e| Error::serialize("build cache step table", e))?;
    let config = store_bytes(layout, CACHE_CONFIG_TYPE, &table)?;
    let mut manifest = ImageManifest::new(config, layers.into_values().collect());
    manifest.artifact_type = Some(CACHE_ARTIFACT_TYPE.into());
    store_bytes(layout, media::OCI_MANIFEST, &manifest.to_bytes()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_read_the_old_local_spelling_and_write_camel_case() {
        let e: CacheEntry = serde_json::from_str(r#"{"layer":null,"diff_id":null}"#).unwrap();
        assert!(e.layer.is_none() && e.diff_id.is_none());
        assert_eq!(serde_json::to_string(&e).unwrap(), r#"{"layer":null,"diffId":null}"#);
        assert_eq!(CacheMode::parse("max"), Some(CacheMode::Max));
        assert_eq!(CacheMode::parse("all"), None);
    }
}
