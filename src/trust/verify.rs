//! Finding and checking signatures of a digest in both formats (see [`super::sign`]).
//!
//! Cost: the legacy format is one manifest GET (`sha256-<hex>.sig`) and one small blob GET
//! per signature layer; the bundle format is the referrers list, one manifest and one small
//! blob per bundle. With `first_only` (policy checks) the legacy format is read first and
//! the search stops at the first signature that verifies.

use base64::Engine;

use super::dsse::{Envelope, ENVELOPE_MEDIA_TYPE, MAX_ENVELOPE};
use super::keys::PublicKey;
use super::payload::{self, Bundle, Statement};
use super::sign::{att_tag, sig_tag, Format};
use crate::copy::plan::read_small_blob;
use crate::error::{Error, Result};
use crate::model::descriptor::Descriptor;
use crate::model::digest::Digest;
use crate::model::document::View;
use crate::model::reference::Reference;
use crate::transport::{Endpoint, Source};

/// Why a signature was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Reason {
    /// Not signed by any of the keys.
    WrongKey,
    /// A valid signature, over another digest.
    DigestMismatch,
    /// A valid signature over the digest, claiming another identity.
    IdentityMismatch,
    /// Not a signature hoist can read.
    Malformed,
}

impl Reason {
    /// The words a message uses.
    pub fn text(self) -> &'static str {
        match self {
            Reason::WrongKey => "wrong key",
            Reason::DigestMismatch => "digest mismatch",
            Reason::IdentityMismatch => "identity mismatch",
            Reason::Malformed => "malformed signature",
        }
    }
}

/// One signature found, and what became of it.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Checked {
    /// `legacy` or `bundle`.
    pub format: &'static str,
    /// The signature manifest.
    pub manifest: Digest,
    /// The payload or bundle blob.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blob: Option<Digest>,
    /// The identity the signature claims (`docker-reference`, or the statement subject's name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// Whether it verified.
    pub verified: bool,
    /// Why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
    /// Details of the refusal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The verified in-toto statement (bundles and attestations).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statement: Option<serde_json::Value>,
}

/// What to accept.
pub struct Rules<'a> {
    /// Any of these keys.
    pub keys: &'a [PublicKey],
    /// Whether a claimed identity is acceptable (`None`: a bundle whose statement names no
    /// subject, as cosign writes it).
    pub identity: &'a (dyn Fn(Option<&str>) -> bool + Send + Sync),
    /// Which formats to look at.
    pub format: Format,
    /// The statement's predicate type a bundle must have.
    pub predicate_type: &'a str,
    /// Stop at the first signature that verifies.
    pub first_only: bool,
}

/// Every signature of `subject` in `src` in the formats asked for, each checked.
pub async fn check(src: &dyn Source, subject: &Descriptor, rules: &Rules<'_>) -> Result<Vec<Checked>> {
    let mut out = Vec::new();
    if rules.format.legacy() {
        if rules.predicate_type == payload::COSIGN_SIGN_PREDICATE {
            check_legacy(src, subject, rules, &mut out).await?;
        } else {
            check_legacy_attestations(src, subject, rules, &mut out).await?;
        }
        if rules.first_only && out.iter().any(|c| c.verified) {
            return Ok(out);
        }
    }
    if rules.format.bundle() {
        check_bundles(src, subject, rules, &mut out).await?;
    }
    Ok(out)
}

/// Whether a claimed identity names the repository of `expected` (a registry reference).
pub fn same_repository(claimed: &str, expected: &Reference) -> bool {
    claimed.parse::<Reference>().is_ok_and(|c| c.registry == expected.registry && c.repository == expected.repository)
}

/// The identity rule of `hoist verify` (and `--verify-key`): a claimed reference must name
/// `expected`'s repository; with no registry name to compare, any identity is reported.
pub fn repository_rule(expected: Option<Reference>) -> impl Fn(Option<&str>) -> bool + Send + Sync {
    move |claimed: Option<&str>| match (claimed, &expected) {
        (Some(c), Some(e)) => same_repository(c, e),
        // a bundle naming no subject (cosign's) was found in this repository's referrers
        (None, _) | (_, None) => true,
    }
}

/// Ok when a cosign signature (either format) by one of `keys` covers `subject`, the image
/// `ep` resolved to in `src`, with `ep`'s repository as identity; else [`Error::Untrusted`].
pub async fn verify_signed(ep: &Endpoint, src: &dyn Source, subject: &Descriptor, keys: &[PublicKey]) -> Result<()> {
    let expected = match ep {
        Endpoint::Registry(r) => Some(r.clone()),
        _ => None,
    };
    let identity = repository_rule(expected);
    let rules = Rules {
        keys,
        identity: &identity,
        format: Format::Both,
        predicate_type: payload::COSIGN_SIGN_PREDICATE,
        first_only: true,
    };
    let checked = check(src, subject, &rules).await?;
    require_verified(&ep.to_string(), &checked)
}

/// Which signature let a model artifact in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelTrust {
    /// A cosign signature (legacy `.sig` tag or Sigstore bundle) of the artifact's manifest.
    Cosign,
    /// An OpenSSF model signature referrer whose files are the artifact's.
    ModelSignature,
}

/// Ok when the model artifact `root` (what `ep` resolved to in `src`) is signed by one of
/// `keys`: a cosign signature of its manifest (checked first: a few small GETs), else an
/// OpenSSF model signature referrer over its files. With neither, [`Error::Untrusted`]
/// names why each kind was refused. `model unpack --verify-key` calls it before any file
/// is written.
pub async fn verify_model_artifact(
    ep: &Endpoint,
    src: &dyn Source,
    root: &Descriptor,
    keys: &[PublicKey],
) -> Result<ModelTrust> {
    let cosign = match verify_signed(ep, src, root, keys).await {
        Ok(()) => return Ok(ModelTrust::Cosign),
        Err(Error::Untrusted { reason, .. }) => reason,
        Err(e) => return Err(e),
    };
    match crate::modelpack::sign::verify_artifact(src, root, keys).await {
        Ok(_) => Ok(ModelTrust::ModelSignature),
        Err(Error::Untrusted { reason, .. }) => Err(Error::Untrusted {
            reference: format!("{ep} ({})", root.digest),
            reason: format!("{cosign}; and as a model: {reason}"),
        }),
        Err(e) => Err(e),
    }
}

/// Ok when one of `checked` verified; else [`Error::Untrusted`] naming why for `what`.
pub fn require_verified(what: &str, checked: &[Checked]) -> Result<()> {
    if checked.iter().any(|c| c.verified) {
        return Ok(());
    }
    let reason = if checked.is_empty() {
        "no signature found (neither a sha256-<hex>.sig tag nor a Sigstore bundle referrer)".to_string()
    } else {
        let each: Vec<String> = checked
            .iter()
            .map(|c| {
                let r = c.reason.map(Reason::text).unwrap_or("refused");
                match &c.detail {
                    Some(d) => format!("{} signature {}: {r} ({d})", c.format, c.manifest.short()),
                    None => format!("{} signature {}: {r}", c.format, c.manifest.short()),
                }
            })
            .collect();
        format!("no valid signature: {}", each.join("; "))
    };
    Err(Error::Untrusted { reference: what.to_string(), reason })
}

/// Whether the statement `st` is about `subject` and signed as an identity `rules` accept,
/// recorded in `c` (the one rule of both signature formats).
fn judge_subject(c: &mut Checked, st: &Statement, subject: &Descriptor, rules: &Rules<'_>) {
    match st.subject_of(&subject.digest) {
        None => {
            c.reason = Some(Reason::DigestMismatch);
            c.detail = Some(format!("the statement is not about {}", subject.digest));
        }
        Some(name) => {
            c.identity = name.map(str::to_string);
            if (rules.identity)(name) {
                c.verified = true;
            } else {
                c.reason = Some(Reason::IdentityMismatch);
                c.detail = Some(format!("signed as {}", name.unwrap_or("-")));
            }
        }
    }
}

fn refused(format: &'static str, manifest: &Digest, blob: Option<Digest>, reason: Reason, detail: String) -> Checked {
    Checked {
        format,
        manifest: manifest.clone(),
        blob,
        identity: None,
        verified: false,
        reason: Some(reason),
        detail: Some(detail),
        statement: None,
    }
}

async fn check_legacy(src: &dyn Source, subject: &Descriptor, rules: &Rules<'_>, out: &mut Vec<Checked>) -> Result<()> {
    let tag = sig_tag(&subject.digest);
    let desc = match src.resolve(Some(&crate::model::reference::TagOrDigest::Tag(tag.clone()))).await {
        Ok(d) => d,
        Err(Error::NotFound { .. }) => return Ok(()),
        Err(e) => return Err(e),
    };
    let doc = src.fetch_document(&desc).await?;
    let View::Manifest(m) = doc.view else {
        out.push(refused("legacy", &desc.digest, None, Reason::Malformed, format!("{tag} is an index")));
        return Ok(());
    };
    for layer in m.layers.iter().filter(|l| l.media_type == payload::SIMPLE_SIGNING_MEDIA_TYPE) {
        let c = check_legacy_layer(src, &desc.digest, layer, subject, rules).await?;
        let ok = c.verified;
        out.push(c);
        if ok && rules.first_only {
            return Ok(());
        }
    }
    Ok(())
}

async fn check_legacy_layer(
    src: &dyn Source,
    manifest: &Digest,
    layer: &Descriptor,
    subject: &Descriptor,
    rules: &Rules<'_>,
) -> Result<Checked> {
    let blob = Some(layer.digest.clone());
    let Some(sig) = layer
        .annotations
        .get(payload::SIGNATURE_ANNOTATION)
        .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
    else {
        return Ok(refused("legacy", manifest, blob, Reason::Malformed, "no base64 signature annotation".into()));
    };
    let bytes = read_small_blob(src, layer, payload::MAX_PAYLOAD).await?;
    if !rules.keys.iter().any(|k| k.verify(&bytes, &sig)) {
        return Ok(refused("legacy", manifest, blob, Reason::WrongKey, "not signed by the given key".into()));
    }
    let claim = match payload::parse_simple_signing(&bytes, &layer.digest.to_string()) {
        Ok(c) => c,
        Err(e) => return Ok(refused("legacy", manifest, blob, Reason::Malformed, e.to_string())),
    };
    let mut c = Checked {
        format: "legacy",
        manifest: manifest.clone(),
        blob,
        identity: Some(claim.docker_reference.clone()),
        verified: false,
        reason: None,
        detail: None,
        statement: None,
    };
    if claim.digest != subject.digest.to_string() {
        c.reason = Some(Reason::DigestMismatch);
        c.detail = Some(format!("signs {}, not {}", claim.digest, subject.digest));
    } else if !(rules.identity)(Some(&claim.docker_reference)) {
        c.reason = Some(Reason::IdentityMismatch);
        c.detail = Some(format!("signed as {}", claim.docker_reference));
    } else {
        c.verified = true;
    }
    Ok(c)
}

async fn check_bundles(
    src: &dyn Source,
    subject: &Descriptor,
    rules: &Rules<'_>,
    out: &mut Vec<Checked>,
) -> Result<()> {
    let list = src.referrers(&subject.digest, Some(payload::BUNDLE_MEDIA_TYPE)).await?;
    for r in list {
        // a bundle that says it holds another predicate (an attestation, a model signature)
        // is not what was asked for: not even fetched
        if r.annotations.get(payload::BUNDLE_PREDICATE_ANNOTATION).is_some_and(|t| t != rules.predicate_type) {
            continue;
        }
        let c = check_bundle(src, &r, subject, rules).await?;
        let ok = c.verified;
        out.push(c);
        if ok && rules.first_only {
            return Ok(());
        }
    }
    Ok(())
}

async fn check_bundle(src: &dyn Source, r: &Descriptor, subject: &Descriptor, rules: &Rules<'_>) -> Result<Checked> {
    let doc = src.fetch_document(r).await?;
    let View::Manifest(m) = doc.view else {
        return Ok(refused("bundle", &r.digest, None, Reason::Malformed, "an index, not a bundle manifest".into()));
    };
    if m.subject.as_ref().map(|s| &s.digest) != Some(&subject.digest) {
        return Ok(refused("bundle", &r.digest, None, Reason::DigestMismatch, "its subject is another digest".into()));
    }
    let Some(layer) = m.layers.iter().find(|l| l.media_type == payload::BUNDLE_MEDIA_TYPE) else {
        return Ok(refused("bundle", &r.digest, None, Reason::Malformed, "no bundle layer".into()));
    };
    let blob = Some(layer.digest.clone());
    let bytes = read_small_blob(src, layer, payload::MAX_PAYLOAD).await?;
    let bundle = match Bundle::parse(&bytes, &layer.digest.to_string()) {
        Ok(b) => b,
        Err(e) => return Ok(refused("bundle", &r.digest, blob, Reason::Malformed, e.to_string())),
    };
    let Some(env) = bundle.dsse_envelope else {
        return Ok(refused(
            "bundle",
            &r.digest,
            blob,
            Reason::Malformed,
            "a message signature bundle; hoist verifies DSSE bundles".into(),
        ));
    };
    let statement = match env.verify(rules.keys) {
        Ok(p) => p,
        Err(_) => {
            return Ok(refused("bundle", &r.digest, blob, Reason::WrongKey, "not signed by the given key".into()))
        }
    };
    let st = match Statement::parse(&statement, &layer.digest.to_string()) {
        Ok(s) => s,
        Err(e) => return Ok(refused("bundle", &r.digest, blob, Reason::Malformed, e.to_string())),
    };
    let mut c = Checked {
        format: "bundle",
        manifest: r.digest.clone(),
        blob,
        identity: None,
        verified: false,
        reason: None,
        detail: None,
        statement: Some(st.json.clone()),
    };
    if st.predicate_type != rules.predicate_type {
        c.reason = Some(Reason::Malformed);
        c.detail = Some(format!("predicate type {}, want {}", st.predicate_type, rules.predicate_type));
        return Ok(c);
    }
    judge_subject(&mut c, &st, subject, rules);
    Ok(c)
}

/// cosign's legacy attestations: DSSE envelope layers of the `sha256-<hex>.att` manifest;
/// only those of the predicate type asked for are checked.
async fn check_legacy_attestations(
    src: &dyn Source,
    subject: &Descriptor,
    rules: &Rules<'_>,
    out: &mut Vec<Checked>,
) -> Result<()> {
    let tag = att_tag(&subject.digest);
    let desc = match src.resolve(Some(&crate::model::reference::TagOrDigest::Tag(tag.clone()))).await {
        Ok(d) => d,
        Err(Error::NotFound { .. }) => return Ok(()),
        Err(e) => return Err(e),
    };
    let View::Manifest(m) = src.fetch_document(&desc).await?.view else {
        out.push(refused("legacy", &desc.digest, None, Reason::Malformed, format!("{tag} is an index")));
        return Ok(());
    };
    for layer in m.layers.iter().filter(|l| l.media_type == ENVELOPE_MEDIA_TYPE) {
        if layer.annotations.get("predicateType").is_some_and(|t| t != rules.predicate_type) {
            continue;
        }
        let blob = Some(layer.digest.clone());
        let bytes = read_small_blob(src, layer, MAX_ENVELOPE).await?;
        let env = match Envelope::from_json(&bytes, &layer.digest.to_string()) {
            Ok(e) => e,
            Err(e) => {
                out.push(refused("legacy", &desc.digest, blob, Reason::Malformed, e.to_string()));
                continue;
            }
        };
        let Ok(statement) = env.verify(rules.keys) else {
            out.push(refused("legacy", &desc.digest, blob, Reason::WrongKey, "not signed by the given key".into()));
            continue;
        };
        let st = match Statement::parse(&statement, &layer.digest.to_string()) {
            Ok(s) => s,
            Err(e) => {
                out.push(refused("legacy", &desc.digest, blob, Reason::Malformed, e.to_string()));
                continue;
            }
        };
        if st.predicate_type != rules.predicate_type {
            continue;
        }
        let mut c = Checked {
            format: "legacy",
            manifest: desc.digest.clone(),
            blob,
            identity: None,
            verified: false,
            reason: None,
            detail: None,
            statement: Some(st.json.clone()),
        };
        judge_subject(&mut c, &st, subject, rules);
        let ok = c.verified;
        out.push(c);
        if ok && rules.first_only {
            return Ok(());
        }
    }
    Ok(())
}
