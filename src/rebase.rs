//! `hoist rebase` as `crane rebase` does it: an image's old base layers swapped for a new
//! base's. The bases are read once, before the copy ([`prepare`]), into [`BaseImage`]s (one
//! per platform of a base index); the one conversion path ([`crate::copy::convert`]) then
//! restacks each image of the source ([`restack`] for the config, the manifest's layer list
//! there), so a rebase is copied like any other edit and every changed digest is reported.
//!
//! The rules (go-containerregistry's `mutate.Rebase`):
//! - the old base's layers (by digest) must be the first layers of the image, else refused;
//! - the new layers are the new base's, then the image's above the old base; the diff_ids
//!   likewise; the history is the new base's, then the image's entries after the old base's
//!   history; `architecture`, `os` and `os.version` come from the new base; every other config
//!   field is the image's;
//! - the manifest's `org.opencontainers.image.base.name`/`.digest` name the new base.
//!
//! Without `--old-base`, the old base is the image's annotations: `base.name` at `base.digest`;
//! without `--new-base`, the new base is `base.name` resolved again (rebase onto the base's
//! current release). Per platform: an image is matched to the base images of its platform
//! (a base that is a single image serves every platform).

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::model::descriptor::{Descriptor, Platform};
use crate::model::digest::Digest;
use crate::model::document::{Document, View};
use crate::model::media;
use crate::transport::registry::Client;
use crate::transport::{open_source, Endpoint, Source};

/// One image of a base: what a rebase takes from it or checks against it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseImage {
    /// Its platform (from its config).
    pub platform: Platform,
    /// Its manifest's digest.
    pub manifest: Digest,
    /// Its layers, as its manifest lists them.
    pub layers: Vec<Descriptor>,
    /// Its config's `rootfs.diff_ids`.
    pub diff_ids: Vec<Value>,
    /// Its config's `history`.
    pub history: Vec<Value>,
    /// Its config's `os.version`, if any.
    pub os_version: Option<Value>,
}

/// A base as the user named it: its images, and what the annotations of a rebased image say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Base {
    /// The images (one per platform of an index).
    pub images: Vec<BaseImage>,
    /// `org.opencontainers.image.base.name`: the normalized registry reference, none for a
    /// local base.
    pub name: Option<String>,
    /// `org.opencontainers.image.base.digest`: the digest the reference resolved to.
    pub digest: Digest,
}

/// The source of a new base's layers (the copy reads them from there).
#[derive(Clone)]
pub struct BlobSource(pub Arc<dyn Source>);

impl std::fmt::Debug for BlobSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BlobSource({})", self.0.location())
    }
}

impl PartialEq for BlobSource {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}
impl Eq for BlobSource {}

/// What `hoist rebase` does to every image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rebase {
    /// The old bases (several when the images' annotations name different ones).
    pub old: Vec<Base>,
    /// The new base.
    pub new: Base,
    /// Where the new base's layers are read.
    pub source: BlobSource,
}

impl Rebase {
    /// The new base's layer with this digest, if it is one.
    pub fn new_layer(&self, digest: &Digest) -> bool {
        self.new.images.iter().any(|i| i.layers.iter().any(|l| &l.digest == digest))
    }

    /// For the image with `layers` and `platform`: the old base image it stands on and the new
    /// base image that replaces it. Errors when no old base of that platform is a prefix of
    /// `layers` (crane's "not based on") or the new base has no image for the platform.
    pub fn pick(&self, image: &Digest, platform: &Platform, layers: &[Descriptor]) -> Result<(&BaseImage, &BaseImage)> {
        /// The base's images of `platform`; a base that is one image serves every platform.
        fn of_platform<'b>(b: &'b Base, platform: &Platform) -> Vec<&'b BaseImage> {
            let same: Vec<&BaseImage> = b.images.iter().filter(|i| platform.matches(&i.platform)).collect();
            match b.images.as_slice() {
                [one] if same.is_empty() => vec![one],
                _ => same,
            }
        }
        let old_candidates: Vec<&BaseImage> = self.old.iter().flat_map(|b| of_platform(b, platform)).collect();
        if old_candidates.is_empty() {
            return Err(Error::Usage(format!("rebase: the old base has no image for {platform} (image {image})")));
        }
        let old = old_candidates
            .iter()
            .find(|b| b.layers.len() <= layers.len() && b.layers.iter().zip(layers).all(|(a, l)| a.digest == l.digest))
            .ok_or_else(|| {
                let b = old_candidates[0];
                let why = match b.layers.iter().zip(layers).position(|(a, l)| a.digest != l.digest) {
                    _ if b.layers.len() > layers.len() => {
                        format!("it has {} layers, the old base {}", layers.len(), b.layers.len())
                    }
                    Some(i) => format!("layer {i} is {}, the old base's {}", layers[i].digest, b.layers[i].digest),
                    None => "its layers differ".into(),
                };
                Error::Usage(format!(
                    "rebase: image {image} ({platform}) is not based on the old base {}: {why}",
                    b.manifest
                ))
            })?;
        let new = of_platform(&self.new, platform).into_iter().next().ok_or_else(|| {
            Error::Usage(format!("rebase: the new base {} has no image for {platform}", self.new.digest))
        })?;
        Ok((old, new))
    }
}

/// The platform an image config names.
pub fn config_platform(config: &Value) -> Platform {
    let s = |k: &str| config.get(k).and_then(Value::as_str).map(str::to_string);
    Platform {
        architecture: s("architecture").unwrap_or_default(),
        os: s("os").unwrap_or_default(),
        os_version: s("os.version"),
        os_features: None,
        variant: s("variant"),
        features: None,
    }
}

/// Restack an image config: the new base's diff_ids and history, then the image's above the
/// old base; `architecture`, `os`, `os.version` from the new base. `config` keeps its other
/// fields and their order.
///
/// `Err`: why the config cannot be restacked (the caller names it in an [`Error::Malformed`]).
pub fn restack(config: &mut Value, old: &BaseImage, new: &BaseImage) -> std::result::Result<(), String> {
    let bad = |why: &str| format!("image config: {why}");
    let root = config.as_object_mut().ok_or_else(|| bad("not a JSON object"))?;
    let list = |v: Option<&Value>| v.and_then(Value::as_array).cloned().unwrap_or_default();
    let ids = list(root.get("rootfs").and_then(|r| r.get("diff_ids")));
    if ids.len() < old.layers.len() {
        return Err(bad("rootfs.diff_ids has fewer entries than the old base has layers"));
    }
    if ids[..old.diff_ids.len().min(ids.len())] != old.diff_ids[..] {
        return Err(bad("its first diff_ids are not the old base's"));
    }
    let history = list(root.get("history"));
    let mut new_ids = new.diff_ids.clone();
    new_ids.extend_from_slice(&ids[old.diff_ids.len()..]);
    let mut new_history = new.history.clone();
    new_history.extend(history.into_iter().skip(old.history.len()));
    let rootfs = root.entry("rootfs").or_insert_with(|| serde_json::json!({"type": "layers"}));
    rootfs["diff_ids"] = Value::Array(new_ids);
    root.insert("history".into(), Value::Array(new_history));
    root.insert("architecture".into(), Value::from(new.platform.architecture.clone()));
    root.insert("os".into(), Value::from(new.platform.os.clone()));
    match &new.os_version {
        Some(v) => {
            root.insert("os.version".into(), v.clone());
        }
        None => {
            root.remove("os.version");
        }
    }
    Ok(())
}

/// Read the base `reference` (any transport) into its images.
pub async fn load_base(client: &Arc<Client>, reference: &str) -> Result<(Base, Arc<dyn Source>)> {
    let ep = Endpoint::from_user_input(reference)?;
    let src: Arc<dyn Source> = Arc::from(open_source(&ep, client)?);
    let root = crate::copy::plan::resolve(&ep, src.as_ref()).await?;
    let images = base_images(src.as_ref(), &root).await?;
    let name = crate::transport::endpoint::base_name_annotation(reference);
    Ok((Base { images, name, digest: root.digest.clone() }, src))
}

/// The document of `root` and the image manifests it stands for: itself, or an index's
/// image entries (attestations left out).
async fn image_manifests(src: &dyn Source, root: &Descriptor) -> Result<(Document, Vec<Descriptor>)> {
    let doc = src.fetch_document(root).await?;
    let manifests = match &doc.view {
        View::Manifest(_) => vec![root.clone()],
        View::Index(index) => index
            .manifests
            .iter()
            .filter(|d| media::is_document(&d.media_type) && !crate::model::platform::is_attestation(d))
            .cloned()
            .collect(),
    };
    Ok((doc, manifests))
}

/// The images of the base root `root` (itself, or each image of an index).
async fn base_images(src: &dyn Source, root: &Descriptor) -> Result<Vec<BaseImage>> {
    let (doc, manifests) = image_manifests(src, root).await?;
    let mut out = Vec::new();
    for m in manifests {
        let doc = if m.digest == root.digest { doc.clone() } else { src.fetch_document(&m).await? };
        let View::Manifest(man) = &doc.view else {
            return Err(Error::Unsupported(format!("base {}: an index of indexes", root.digest)));
        };
        let bytes = crate::copy::plan::read_small_blob(src, &man.config, media::MAX_MANIFEST_SIZE).await?;
        let config: Value = serde_json::from_slice(&bytes)
            .map_err(|e| Error::malformed(format!("config {}", man.config.digest), src.location(), e))?;
        let list = |p: &str| config.pointer(p).and_then(Value::as_array).cloned().unwrap_or_default();
        out.push(BaseImage {
            platform: config_platform(&config),
            manifest: m.digest.clone(),
            layers: man.layers.clone(),
            diff_ids: list("/rootfs/diff_ids"),
            history: list("/history"),
            os_version: config.get("os.version").cloned(),
        });
    }
    if out.is_empty() {
        return Err(Error::Usage(format!("base {}: no image in it", root.digest)));
    }
    Ok(out)
}

/// Read the bases of a rebase of `src`'s root `root`. `old`/`new`: the references given; a
/// missing one comes from the images' `org.opencontainers.image.base.*` annotations.
pub async fn prepare(
    client: &Arc<Client>,
    src: &dyn Source,
    root: &Descriptor,
    old: Option<&str>,
    new: Option<&str>,
) -> Result<Rebase> {
    let annotated = if old.is_none() || new.is_none() { base_annotations(src, root).await? } else { Vec::new() };
    let new_ref = match new {
        Some(n) => n.to_string(),
        None => annotated.iter().map(|(n, _)| n.clone()).next().ok_or_else(|| {
            Error::Usage(format!(
                "rebase: no --new-base, and image {} has no {} annotation",
                root.digest,
                media::ANNOTATION_BASE_NAME
            ))
        })?,
    };
    let old_refs: Vec<String> = match old {
        Some(o) => vec![o.to_string()],
        None if annotated.is_empty() => {
            return Err(Error::Usage(format!(
                "rebase: no --old-base, and image {} has no {} and {} annotations",
                root.digest,
                media::ANNOTATION_BASE_NAME,
                media::ANNOTATION_BASE_DIGEST
            )))
        }
        None => annotated.iter().map(|(name, digest)| format!("{}@{digest}", repository_of(name))).collect(),
    };
    let mut olds = Vec::new();
    for r in &old_refs {
        olds.push(load_base(client, r).await?.0);
    }
    let (new, source) = load_base(client, &new_ref).await?;
    Ok(Rebase { old: olds, new, source: BlobSource(source) })
}

/// `name` without its tag or digest (`registry/repo:tag` -> `registry/repo`).
fn repository_of(name: &str) -> &str {
    crate::model::reference::split_tag(name.split('@').next().unwrap_or(name)).0
}

/// The distinct (`base.name`, `base.digest`) pairs of the images of `root`.
async fn base_annotations(src: &dyn Source, root: &Descriptor) -> Result<Vec<(String, String)>> {
    let (doc, manifests) = image_manifests(src, root).await?;
    let mut out = BTreeSet::new();
    for m in manifests {
        let doc = if m.digest == root.digest { doc.clone() } else { src.fetch_document(&m).await? };
        if let View::Manifest(man) = &doc.view {
            let a = |k: &str| man.annotations.get(k).cloned();
            if let (Some(n), Some(d)) = (a(media::ANNOTATION_BASE_NAME), a(media::ANNOTATION_BASE_DIGEST)) {
                out.insert((n, d));
            }
        }
    }
    Ok(out.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(layers: &[&[u8]], hist: usize) -> BaseImage {
        BaseImage {
            platform: Platform::parse("linux/amd64").unwrap(),
            manifest: Digest::sha256_of(b"m"),
            layers: layers.iter().map(|l| Descriptor::new(media::OCI_LAYER_GZIP, Digest::sha256_of(l), 1)).collect(),
            diff_ids: layers.iter().map(|l| Value::from(format!("d-{}", String::from_utf8_lossy(l)))).collect(),
            history: (0..hist).map(|i| serde_json::json!({ "created_by": format!("base {i}") })).collect(),
            os_version: None,
        }
    }

    #[test]
    fn restack_swaps_the_base_and_keeps_the_rest() {
        let (old, new) = (image(&[b"a"], 2), image(&[b"x", b"y"], 1));
        let mut config = serde_json::json!({
            "architecture": "amd64", "os": "linux", "config": {"Env": ["A=1"]},
            "rootfs": {"type": "layers", "diff_ids": ["d-a", "d-app"]},
            "history": [{"created_by": "base 0"}, {"created_by": "base 1"}, {"created_by": "app"}]
        });
        restack(&mut config, &old, &new).unwrap();
        assert_eq!(config["rootfs"]["diff_ids"], serde_json::json!(["d-x", "d-y", "d-app"]));
        assert_eq!(config["history"], serde_json::json!([{"created_by": "base 0"}, {"created_by": "app"}]));
        assert_eq!(config["config"]["Env"][0], "A=1");
        let mut other = serde_json::json!({"rootfs": {"diff_ids": ["d-b", "d-app"]}});
        assert!(restack(&mut other, &old, &new).is_err());
        assert_eq!(repository_of("localhost:5000/base:v1"), "localhost:5000/base");
        assert_eq!(repository_of("localhost:5000/base"), "localhost:5000/base");
    }
}
