//! OpenSSF model signatures of model artifacts (ModelPack, ModelKit, Docker model): the same
//! statement `model_signing sign key` makes for the model's directory (one resource per
//! file, named by its path in the model), signed by a key as a Sigstore bundle, attached to
//! the artifact's manifest as a referrer (artifactType
//! `application/vnd.dev.sigstore.bundle.v0.3+json`, predicate type
//! `https://model_signing/signature/v1.0` in its annotation).
//!
//! When every layer is a raw file (hoist's default), the resources are the layers' own
//! digests: nothing is downloaded to sign or verify. Otherwise the artifact is unpacked to a
//! temporary directory and hashed there. The signature the referrer holds is the bundle
//! `model_signing verify key` accepts for the unpacked directory.

use std::collections::BTreeMap;

use super::formats;
use super::{unpack_model_with, ModelLayerFormat, UnpackOptions};
use crate::error::{Error, IoContext, Result};
use crate::ingest::NoFileProgress;
use crate::model::descriptor::Descriptor;
use crate::model::document::View;
use crate::transport::{Destination, Source};
use crate::trust::keys::{PrivateKey, PublicKey};
use crate::trust::modelsig::{self, Key, ModelManifest, Serialization, Verified};
use crate::trust::payload;
use crate::trust::sign::{push_bundle, Written};

/// What the model artifact `root` in `src` holds, as the model signature lists it: `name`
/// is the model's name in the statement.
pub async fn artifact_manifest(src: &dyn Source, root: &Descriptor, name: &str) -> Result<ModelManifest> {
    let loc = src.location();
    let doc = src.fetch_document(root).await?;
    let View::Manifest(m) = &doc.view else {
        return Err(Error::Unsupported(format!("{} in {loc} is an index; pick one model manifest", root.digest)));
    };
    let layers: Vec<_> = m.layers.iter().filter_map(|l| formats::layer_info(l).map(|i| (l, i))).collect();
    if layers.is_empty() {
        return Err(Error::Unsupported(format!("{} in {loc} has no model layers", root.digest)));
    }
    let serialization = Serialization::files(&[]);
    let all_raw = layers.iter().all(|(l, i)| {
        i.layer_format == ModelLayerFormat::Raw && i.path.is_some() && l.digest.algorithm().as_str() == "sha256"
    });
    if all_raw {
        let mut resources = BTreeMap::new();
        for (l, i) in &layers {
            let path = i.path.as_deref().unwrap_or_default();
            let comps: Vec<String> =
                path.split('/').filter(|c| !c.is_empty() && *c != ".").map(str::to_string).collect();
            if comps.is_empty() || comps.iter().any(|c| c == "..") {
                return Err(Error::malformed(
                    format!("layer {}", l.digest),
                    loc.clone(),
                    format!("file path {path:?}"),
                ));
            }
            let mut d = [0u8; 32];
            hex::decode_to_slice(l.digest.hex(), &mut d)
                .map_err(|e| Error::malformed(format!("layer {}", l.digest), loc.clone(), e))?;
            if resources.insert(Key { path: comps, range: None }, d).is_some() {
                return Err(Error::malformed(
                    format!("layer {}", l.digest),
                    loc.clone(),
                    format!("second layer for {path}"),
                ));
            }
        }
        return Ok(ModelManifest { name: name.to_string(), serialization, resources });
    }
    // tar layers: the files as unpacked
    let tmp =
        tempfile::Builder::new().prefix("hoist-modelsig-").tempdir().map_err(|e| Error::io(std::env::temp_dir(), e))?;
    let dir = tmp.path().join("model");
    unpack_model_with(src, root, &dir, &UnpackOptions::default()).await?;
    let dir2 = dir.clone();
    let mut manifest =
        tokio::task::spawn_blocking(move || modelsig::hash_model(&dir2, &serialization, &NoFileProgress))
            .await
            .map_err(|e| Error::task(format!("hashing {}", dir.display()), e))??;
    manifest.name = name.to_string();
    std::fs::remove_dir_all(tmp.path()).at(tmp.path())?;
    Ok(manifest)
}

/// Sign the model artifact `root` (read from `src`) with `key`, attaching the signature to
/// it in `dst` (the same place) as a referrer.
pub async fn sign_artifact(
    src: &dyn Source,
    dst: &dyn Destination,
    root: &Descriptor,
    name: &str,
    key: &PrivateKey,
) -> Result<(Written, ModelManifest)> {
    let manifest = artifact_manifest(src, root, name).await?;
    let bundle = modelsig::sign_manifest(&manifest, key)?;
    let written = push_bundle(dst, root, bundle, modelsig::PREDICATE_TYPE).await?;
    Ok((written, manifest))
}

/// Verify the model artifact `root`: a model signature referrer signed by one of `keys`
/// whose files are the artifact's. The first that verifies wins; with none, the error
/// names why each was refused (or that there is none).
pub async fn verify_artifact(
    src: &dyn Source,
    root: &Descriptor,
    keys: &[PublicKey],
) -> Result<(Descriptor, Verified)> {
    let loc = format!("{} in {}", root.digest, src.location());
    let list = src.referrers(&root.digest, Some(payload::BUNDLE_MEDIA_TYPE)).await?;
    let mut actual: Option<ModelManifest> = None;
    let mut refusals = Vec::new();
    for r in list {
        if r.annotations.get(payload::BUNDLE_PREDICATE_ANNOTATION).is_some_and(|t| t != modelsig::PREDICATE_TYPE) {
            continue;
        }
        let View::Manifest(m) = src.fetch_document(&r).await?.view else { continue };
        if m.subject.as_ref().map(|s| &s.digest) != Some(&root.digest) {
            refusals.push(format!("{}: its subject is another digest", r.digest.short()));
            continue;
        }
        let Some(layer) = m.layers.iter().find(|l| l.media_type == payload::BUNDLE_MEDIA_TYPE) else { continue };
        if layer.size > modelsig::MAX_SIGNATURE {
            refusals.push(format!("{}: a bundle of {} bytes", r.digest.short(), layer.size));
            continue;
        }
        let bytes = crate::copy::plan::read_small_blob(src, layer, modelsig::MAX_SIGNATURE).await?;
        let signed = match modelsig::open_bundle(&bytes, keys, &r.digest.short()) {
            Ok(s) => s,
            Err(e @ (Error::Untrusted { .. } | Error::Malformed { .. } | Error::Unsupported(_))) => {
                refusals.push(e.to_string());
                continue;
            }
            Err(e) => return Err(e),
        };
        if actual.is_none() {
            actual = Some(artifact_manifest(src, root, &signed.name).await?);
        }
        let now = actual.as_ref().expect("set above");
        match modelsig::compare(&signed, now, &loc) {
            Ok(()) => {
                let v = Verified {
                    name: signed.name.clone(),
                    root_digest: format!("sha256:{}", signed.root_digest()),
                    resources: signed.resources.len(),
                    method: "files",
                };
                return Ok((r, v));
            }
            Err(e) => refusals.push(format!("{}: {}", r.digest.short(), e)),
        }
    }
    let reason = if refusals.is_empty() {
        "no model signature found (no Sigstore bundle referrer of predicate type https://model_signing/signature/v1.0)"
            .into()
    } else {
        format!("no valid model signature: {}", refusals.join("; "))
    };
    Err(Error::Untrusted { reference: loc, reason })
}
