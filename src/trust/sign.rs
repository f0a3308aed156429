//! Writing signatures next to what they sign, on any destination (a registry, a layout):
//!
//! - the **legacy** format (cosign's `SIGNATURE_SPEC.md`): a manifest tagged
//!   `sha256-<hex>.sig` whose layers are simple-signing payloads, each with its base64
//!   signature in the `dev.cosignproject.cosign/signature` annotation. Signing again adds a
//!   layer to what the tag holds and never drops one (an identical layer is not added twice);
//! - the **bundle** format (cosign's `BUNDLE_SPEC.md`): an OCI 1.1 referrer of artifactType
//!   `application/vnd.dev.sigstore.bundle.v0.3+json` whose one layer is a Sigstore bundle
//!   holding a DSSE envelope over an in-toto statement about the digest. It is pushed
//!   untagged with its `subject`; a registry without the referrers API gets hoist's tag
//!   fallback index (the registry transport keeps it), a layout keeps it as a root.
//!
//! Everything written is deterministic: ECDSA signatures are RFC 6979 and no timestamp is
//! recorded, so signing the same digest with the same key twice writes nothing new.

use std::collections::BTreeMap;

use base64::Engine;
use bytes::Bytes;
use serde_json::{json, Value};

use super::dsse::{Envelope, IN_TOTO_PAYLOAD_TYPE};
use super::keys::PrivateKey;
use super::payload::{self, Bundle};
use crate::error::{Error, Result};
use crate::model::descriptor::Descriptor;
use crate::model::digest::Digest;
use crate::model::document::View;
use crate::model::media;
use crate::model::write::ImageManifest;
use crate::transport::memory::Memory;
use crate::transport::{Destination, NoProgress, Source};

/// Which signature formats to write (or read).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Format {
    /// Both, so every verifier finds one (the default).
    #[default]
    Both,
    /// Only the `sha256-<hex>.sig` tag.
    Legacy,
    /// Only the Sigstore bundle referrer.
    Bundle,
}

impl Format {
    /// Whether the legacy format is included.
    pub fn legacy(self) -> bool {
        matches!(self, Format::Both | Format::Legacy)
    }
    /// Whether the bundle format is included.
    pub fn bundle(self) -> bool {
        matches!(self, Format::Both | Format::Bundle)
    }
}

impl std::str::FromStr for Format {
    type Err = Error;
    fn from_str(s: &str) -> Result<Format> {
        match s {
            "both" => Ok(Format::Both),
            "legacy" => Ok(Format::Legacy),
            "bundle" => Ok(Format::Bundle),
            _ => Err(Error::Usage(format!("signature format {s:?}: want bundle, legacy or both"))),
        }
    }
}

/// One signature document written (or found already there).
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Written {
    /// `legacy` or `bundle`.
    pub format: &'static str,
    /// What was signed.
    pub subject: Digest,
    /// The signature manifest.
    pub manifest: Digest,
    /// Its tag (legacy: `sha256-<hex>.sig`, `.att`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// False when an identical signature was already there (nothing written).
    pub added: bool,
}

/// The legacy signature tag of `digest`: `sha256-<hex>.sig`.
pub fn sig_tag(digest: &Digest) -> String {
    format!("{}-{}.sig", digest.algorithm().as_str(), digest.hex())
}

/// The legacy attestation tag of `digest`: `sha256-<hex>.att`.
pub fn att_tag(digest: &Digest) -> String {
    format!("{}-{}.att", digest.algorithm().as_str(), digest.hex())
}

/// What to sign and how.
pub struct SignRequest<'a> {
    /// The manifest or index signed.
    pub subject: &'a Descriptor,
    /// The `docker-reference` claimed (the destination's normalized name, or
    /// `--sign-identity`); needed by the legacy format, the statement's subject name in a
    /// bundle.
    pub identity: Option<&'a str>,
    /// The key.
    pub key: &'a PrivateKey,
    /// The formats written.
    pub format: Format,
}

/// Sign `req.subject`, writing to `dst`; `src` reads what `dst` holds (the same place: the
/// existing `.sig` manifest is extended, never replaced by a shorter one).
pub async fn sign(src: &dyn Source, dst: &dyn Destination, req: &SignRequest<'_>) -> Result<Vec<Written>> {
    let mut out = Vec::new();
    if req.format.legacy() {
        let identity = req.identity.ok_or_else(|| {
            Error::Usage(format!(
                "signing {} in the legacy format needs an identity: name a registry reference, or give --sign-identity",
                req.subject.digest
            ))
        })?;
        let payload = payload::simple_signing(identity, &req.subject.digest);
        let sig = req.key.sign(&payload)?;
        let layer = Descriptor::of_bytes(payload::SIMPLE_SIGNING_MEDIA_TYPE, &payload)
            .with_annotation(payload::SIGNATURE_ANNOTATION, base64::engine::general_purpose::STANDARD.encode(sig));
        let tag = sig_tag(&req.subject.digest);
        out.push(append_layer(src, dst, &req.subject.digest, &tag, layer, Bytes::from(payload), "legacy").await?);
    }
    if req.format.bundle() {
        let statement =
            payload::statement(req.identity, &req.subject.digest, payload::COSIGN_SIGN_PREDICATE, json!({}));
        out.push(write_bundle(dst, req.subject, req.key, &statement, payload::COSIGN_SIGN_PREDICATE).await?);
    }
    Ok(out)
}

/// A loaded key and the identity its signatures claim: the one hook that signs what a
/// destination got (`--sign-by-sigstore-private-key` on copy/push/pull, build outputs,
/// artifact push/pack, model pack; `sync`).
pub struct Signer {
    /// The key.
    pub key: PrivateKey,
    /// `--sign-identity`: the `docker-reference` claimed instead of the destination's name.
    pub identity: Option<String>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("identity", &self.identity).finish_non_exhaustive()
    }
}

impl Signer {
    /// Sign `root` where `dst` holds it (`src` reads the same place). The identity claimed
    /// is `self.identity`, else `default_identity` (the destination's normalized name);
    /// both formats with an identity, the bundle only without one.
    pub async fn sign_root(
        &self,
        src: &dyn Source,
        dst: &dyn Destination,
        root: &Descriptor,
        default_identity: Option<String>,
    ) -> Result<Vec<Written>> {
        let identity = self.identity.clone().or(default_identity);
        let format = if identity.is_some() { Format::Both } else { Format::Bundle };
        sign(src, dst, &SignRequest { subject: root, identity: identity.as_deref(), key: &self.key, format }).await
    }

    /// Whether signatures can be written where `ep` points (a registry or an OCI layout).
    pub fn can_sign(ep: &crate::transport::Endpoint) -> bool {
        matches!(ep, crate::transport::Endpoint::Registry(_) | crate::transport::Endpoint::Layout { .. })
    }

    /// Sign `root` where `ep` holds it (tagged `tag`, if any), opening it: both formats when
    /// there is a name to claim (the destination's normalized `name:tag`, or `name@digest`,
    /// or `--sign-identity`), else the bundle format only (a layout).
    pub async fn sign_at(
        &self,
        client: &std::sync::Arc<crate::transport::registry::Client>,
        ep: &crate::transport::Endpoint,
        root: &Descriptor,
        tag: Option<&str>,
    ) -> Result<Vec<Written>> {
        use crate::transport::Endpoint;
        if !Signer::can_sign(ep) {
            return Err(Error::Unsupported(format!("{ep}: signatures are written to registries and OCI layouts only")));
        }
        let default_identity = match ep {
            Endpoint::Registry(r) => Some(match tag {
                Some(t) => r.with_target(t)?.normalized(),
                None => format!("{}@{}", r.repo_ref(), root.digest),
            }),
            _ => None,
        };
        let src = crate::transport::open_source(ep, client)?;
        let dst = crate::transport::open_destination(ep, client, None).await?;
        let written = self.sign_root(src.as_ref(), dst.as_ref(), root, default_identity).await?;
        dst.finish().await?;
        Ok(written)
    }
}

/// The predicate type URI of a `--type` as cosign names them (`slsaprovenance1`,
/// `slsaprovenance`, `spdxjson`, `cyclonedx`, `vuln`, `custom`, ...), or the URI given.
pub fn predicate_type_uri(t: &str) -> Result<String> {
    Ok(match t {
        "custom" => "https://cosign.sigstore.dev/attestation/v1",
        "slsaprovenance" | "slsaprovenance02" => "https://slsa.dev/provenance/v0.2",
        "slsaprovenance1" => "https://slsa.dev/provenance/v1",
        "spdx" | "spdxjson" => "https://spdx.dev/Document",
        "cyclonedx" => "https://cyclonedx.org/bom",
        "link" => "https://in-toto.io/attestation/link/v0.3",
        "vuln" => "https://cosign.sigstore.dev/attestation/vuln/v1",
        "openvex" => "https://openvex.dev/ns",
        uri if uri.contains("://") && url::Url::parse(uri).is_ok() => uri,
        other => {
            return Err(Error::Usage(format!(
                "predicate type {other:?}: want slsaprovenance1, slsaprovenance, spdxjson, cyclonedx, link, vuln, openvex, custom or a URI"
            )))
        }
    }
    .to_string())
}

/// Sign an in-toto statement about `subject` with `predicate` of `predicate_type` (a URI)
/// and write it: as a bundle referrer, and with the legacy format as a DSSE envelope layer
/// of `sha256-<hex>.att` (cosign's `attest`). A `custom` predicate that is not JSON is
/// wrapped as cosign does (`{"data": TEXT}`).
pub async fn attest(
    src: &dyn Source,
    dst: &dyn Destination,
    req: &SignRequest<'_>,
    predicate_type: &str,
    predicate: Value,
) -> Result<Vec<Written>> {
    let predicate = match (predicate_type, predicate) {
        ("https://cosign.sigstore.dev/attestation/v1", Value::String(s)) => json!({ "data": s }),
        (_, p) => p,
    };
    let statement = payload::statement(req.identity, &req.subject.digest, predicate_type, predicate);
    let mut out = Vec::new();
    if req.format.bundle() {
        out.push(write_bundle(dst, req.subject, req.key, &statement, predicate_type).await?);
    }
    if req.format.legacy() {
        let env = Envelope::sign(req.key, IN_TOTO_PAYLOAD_TYPE, &statement)?.to_json()?;
        let layer = Descriptor::of_bytes(super::dsse::ENVELOPE_MEDIA_TYPE, &env)
            .with_annotation(payload::SIGNATURE_ANNOTATION, "")
            .with_annotation("predicateType", predicate_type);
        let tag = att_tag(&req.subject.digest);
        out.push(append_layer(src, dst, &req.subject.digest, &tag, layer, Bytes::from(env), "legacy").await?);
    }
    Ok(out)
}

/// The config of a legacy signature or attestation manifest: an image config naming the
/// layers as its diff_ids, as cosign writes it.
fn legacy_config(layers: &[Descriptor]) -> Vec<u8> {
    let diff_ids: Vec<String> = layers.iter().map(|l| l.digest.to_string()).collect();
    let v = json!({
        "architecture": "",
        "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"}],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "config": {},
    });
    serde_json::to_vec(&v).expect("json")
}

/// Add `layer` (bytes `blob`) to the manifest tagged `tag` (created when missing), unless
/// an identical layer (same digest and annotations) is already there.
pub(crate) async fn append_layer(
    src: &dyn Source,
    dst: &dyn Destination,
    subject: &Digest,
    tag: &str,
    layer: Descriptor,
    blob: Bytes,
    format: &'static str,
) -> Result<Written> {
    let mut layers = match src.resolve(Some(&crate::model::reference::TagOrDigest::Tag(tag.to_string()))).await {
        Ok(d) => match src.fetch_document(&d).await?.view {
            View::Manifest(m) => m.layers,
            View::Index(_) => {
                return Err(Error::malformed(
                    format!("signature tag {tag}"),
                    src.location(),
                    "is an index, not a signature manifest",
                ))
            }
        },
        Err(Error::NotFound { .. }) => Vec::new(),
        Err(e) => return Err(e),
    };
    let written = |manifest: Digest, added| Written {
        format,
        subject: subject.clone(),
        manifest,
        tag: Some(tag.to_string()),
        added,
    };
    if let Some(existing) = layers.iter().find(|l| l.digest == layer.digest && l.annotations == layer.annotations) {
        let _ = existing;
        let d = src.resolve(Some(&crate::model::reference::TagOrDigest::Tag(tag.to_string()))).await?;
        return Ok(written(d.digest, false));
    }
    layers.push(layer.clone());
    let config_bytes = legacy_config(&layers);
    let config = Descriptor::of_bytes(media::OCI_CONFIG, &config_bytes);
    let manifest = ImageManifest::new(config.clone(), layers);
    let bytes = Bytes::from(manifest.to_bytes()?);
    let desc = Descriptor::of_bytes(media::OCI_MANIFEST, &bytes);
    let mem = Memory::new();
    mem.insert_blob(&layer, blob)?;
    mem.insert_blob(&config, Bytes::from(config_bytes))?;
    for b in [&layer, &config] {
        if !dst.has_blob(b).await? {
            dst.push_blob(b, &mem, &NoProgress).await?;
        }
    }
    dst.push_manifest(&desc, bytes, Some(tag)).await?;
    Ok(written(desc.digest, true))
}

/// Sign `statement` (an in-toto statement about `subject`) as a DSSE envelope in a Sigstore
/// bundle, and write it as a referrer of `subject`.
pub(crate) async fn write_bundle(
    dst: &dyn Destination,
    subject: &Descriptor,
    key: &PrivateKey,
    statement: &[u8],
    predicate_type: &str,
) -> Result<Written> {
    let envelope = Envelope::sign(key, IN_TOTO_PAYLOAD_TYPE, statement)?;
    let bundle = Bundle::new(envelope, &key.public().hint()?).to_json();
    push_bundle(dst, subject, bundle, predicate_type).await
}

/// Write `bundle` (a Sigstore bundle's JSON whose statement has `predicate_type`) as a
/// referrer of `subject`: an OCI 1.1 manifest of artifactType
/// `application/vnd.dev.sigstore.bundle.v0.3+json`, untagged; nothing is written when it is
/// there already.
pub async fn push_bundle(
    dst: &dyn Destination,
    subject: &Descriptor,
    bundle: Vec<u8>,
    predicate_type: &str,
) -> Result<Written> {
    let layer = Descriptor::of_bytes(payload::BUNDLE_MEDIA_TYPE, &bundle);
    let config = Descriptor::of_bytes(media::OCI_EMPTY, media::EMPTY_JSON);
    let mut manifest = ImageManifest::new(config.clone(), vec![layer.clone()]);
    manifest.artifact_type = Some(payload::BUNDLE_MEDIA_TYPE.into());
    manifest.subject = Some(Descriptor::new(subject.media_type.clone(), subject.digest.clone(), subject.size));
    manifest.annotations = BTreeMap::from([
        (payload::BUNDLE_CONTENT_ANNOTATION.to_string(), "dsse-envelope".to_string()),
        (payload::BUNDLE_PREDICATE_ANNOTATION.to_string(), predicate_type.to_string()),
    ]);
    let bytes = Bytes::from(manifest.to_bytes()?);
    let desc = Descriptor::of_bytes(media::OCI_MANIFEST, &bytes);
    let mem = Memory::new();
    mem.insert_blob(&layer, Bytes::from(bundle))?;
    mem.insert_blob(&config, Bytes::from_static(media::EMPTY_JSON))?;
    let added = !dst.has_manifest(&desc).await?;
    if added {
        for b in [&layer, &config] {
            if !dst.has_blob(b).await? {
                dst.push_blob(b, &mem, &NoProgress).await?;
            }
        }
        dst.push_manifest(&desc, bytes, None).await?;
        // a layout keeps it as an untagged root (found by the referrers scan); no-op elsewhere
        let mut root = desc.clone();
        root.artifact_type = Some(payload::BUNDLE_MEDIA_TYPE.into());
        dst.add_root(&root).await?;
    }
    Ok(Written { format: "bundle", subject: subject.digest.clone(), manifest: desc.digest, tag: None, added })
}

/// A statement's JSON value from a predicate file's bytes (JSON, or a string for
/// non-JSON predicates).
pub fn predicate_value(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}
