//! The signed documents: the simple-signing payload of cosign's legacy format (as
//! containers/image writes and strictly reads it), the in-toto statement, and the Sigstore
//! bundle v0.3 that wraps a DSSE envelope.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::dsse::Envelope;
use crate::error::{Error, Result};
use crate::model::digest::Digest;

/// Media type of a simple-signing payload layer (`sha256-<hex>.sig` manifests).
pub const SIMPLE_SIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The layer annotation holding the base64 signature of the payload.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// `critical.type` of a cosign signature.
pub const COSIGN_SIGNATURE_TYPE: &str = "cosign container image signature";
/// Media type (and artifactType) of a Sigstore bundle v0.3.
pub const BUNDLE_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
/// The in-toto statement type.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// The predicate type of a cosign v3 image signature statement.
pub const COSIGN_SIGN_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";
/// Annotation of a bundle referrer: `message-signature` or `dsse-envelope`.
pub const BUNDLE_CONTENT_ANNOTATION: &str = "dev.sigstore.bundle.content";
/// Annotation of a bundle referrer: the statement's predicate type.
pub const BUNDLE_PREDICATE_ANNOTATION: &str = "dev.sigstore.bundle.predicateType";
/// Largest simple-signing payload or bundle read.
pub const MAX_PAYLOAD: u64 = 4 * 1024 * 1024;

/// The simple-signing payload for `digest` under the identity `docker_reference` (keys in
/// the order Go's encoder writes them; no timestamp, so signing again gives the same bytes).
pub fn simple_signing(docker_reference: &str, digest: &Digest) -> Vec<u8> {
    let v = json!({
        "critical": {
            "identity": {"docker-reference": docker_reference},
            "image": {"docker-manifest-digest": digest.to_string()},
            "type": COSIGN_SIGNATURE_TYPE,
        },
        "optional": {"creator": format!("hoist {}", env!("CARGO_PKG_VERSION"))},
    });
    serde_json::to_vec(&v).expect("json")
}

/// What a simple-signing payload claims.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimpleSigning {
    /// `critical.image.docker-manifest-digest`.
    pub digest: String,
    /// `critical.identity.docker-reference`.
    pub docker_reference: String,
}

/// Parse a simple-signing payload as strictly as containers/image does: exactly the fields
/// `critical` and `optional`, `critical` exactly `type`, `image`, `identity`, and the cosign
/// type.
pub fn parse_simple_signing(bytes: &[u8], what: &str) -> Result<SimpleSigning> {
    let bad = |why: &str| Error::malformed("simple-signing payload", what, why.to_string());
    let v: Value = serde_json::from_slice(bytes).map_err(|e| bad(&e.to_string()))?;
    let exact = |v: &Value, keys: &[&str]| -> bool {
        v.as_object().is_some_and(|o| o.len() == keys.len() && keys.iter().all(|k| o.contains_key(*k)))
    };
    if !exact(&v, &["critical", "optional"]) {
        return Err(bad("want exactly the fields critical and optional"));
    }
    let c = &v["critical"];
    if !exact(c, &["type", "image", "identity"]) {
        return Err(bad("critical: want exactly type, image and identity"));
    }
    if c["type"] != COSIGN_SIGNATURE_TYPE {
        return Err(bad("critical.type is not \"cosign container image signature\""));
    }
    if !exact(&c["image"], &["docker-manifest-digest"]) || !exact(&c["identity"], &["docker-reference"]) {
        return Err(bad("critical.image / critical.identity: unexpected fields"));
    }
    let digest = c["image"]["docker-manifest-digest"].as_str().ok_or_else(|| bad("digest is not a string"))?;
    let reference =
        c["identity"]["docker-reference"].as_str().ok_or_else(|| bad("docker-reference is not a string"))?;
    Ok(SimpleSigning { digest: digest.to_string(), docker_reference: reference.to_string() })
}

/// An in-toto statement v1 about one subject.
pub fn statement(name: Option<&str>, digest: &Digest, predicate_type: &str, predicate: Value) -> Vec<u8> {
    let mut subject = serde_json::Map::new();
    if let Some(n) = name {
        subject.insert("name".into(), Value::String(n.to_string()));
    }
    subject.insert("digest".into(), json!({ digest.algorithm().as_str(): digest.hex() }));
    let v = json!({
        "_type": STATEMENT_TYPE,
        "subject": [Value::Object(subject)],
        "predicateType": predicate_type,
        "predicate": predicate,
    });
    serde_json::to_vec(&v).expect("json")
}

/// What an in-toto statement claims, as read.
#[derive(Clone, Debug)]
pub struct Statement {
    /// `predicateType`.
    pub predicate_type: String,
    /// The subjects: (name, digests as `alg:hex`).
    pub subjects: Vec<(Option<String>, Vec<String>)>,
    /// The whole statement.
    pub json: Value,
}

impl Statement {
    /// Parse a statement (v1, or v0.1 as older cosign wrote).
    pub fn parse(bytes: &[u8], what: &str) -> Result<Statement> {
        let bad = |why: &str| Error::malformed("in-toto statement", what, why.to_string());
        let v: Value = serde_json::from_slice(bytes).map_err(|e| bad(&e.to_string()))?;
        let t = v["_type"].as_str().unwrap_or_default();
        if t != STATEMENT_TYPE && t != "https://in-toto.io/Statement/v0.1" {
            return Err(bad("_type is not an in-toto statement"));
        }
        let predicate_type = v["predicateType"].as_str().ok_or_else(|| bad("no predicateType"))?.to_string();
        let subjects = v["subject"]
            .as_array()
            .ok_or_else(|| bad("no subject list"))?
            .iter()
            .map(|s| {
                let name = s["name"].as_str().map(str::to_string);
                let digests = s["digest"]
                    .as_object()
                    .map(|m| m.iter().filter_map(|(k, v)| v.as_str().map(|h| format!("{k}:{h}"))).collect())
                    .unwrap_or_default();
                (name, digests)
            })
            .collect();
        Ok(Statement { predicate_type, subjects, json: v })
    }

    /// Whether a subject has `digest`; its name when one does.
    pub fn subject_of(&self, digest: &Digest) -> Option<Option<&str>> {
        let want = digest.to_string();
        self.subjects.iter().find(|(_, ds)| ds.contains(&want)).map(|(n, _)| n.as_deref())
    }
}

/// A Sigstore bundle v0.3 holding a DSSE envelope signed by a key (no certificate, no
/// transparency log entry: `tlogEntries` is empty).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bundle {
    /// `application/vnd.dev.sigstore.bundle.v0.3+json`.
    pub media_type: String,
    /// The key hint (and any log entries, kept as read).
    pub verification_material: Value,
    /// The envelope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dsse_envelope: Option<Envelope>,
    /// A message signature (read only to say it is not handled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_signature: Option<Value>,
}

impl Bundle {
    /// A bundle around `envelope`, the key named by `hint`.
    pub fn new(envelope: Envelope, hint: &str) -> Bundle {
        Bundle {
            media_type: BUNDLE_MEDIA_TYPE.into(),
            verification_material: json!({"publicKey": {"hint": hint}, "tlogEntries": []}),
            dsse_envelope: Some(envelope),
            message_signature: None,
        }
    }

    /// Compact JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("json")
    }

    /// Parse a bundle (any `application/vnd.dev.sigstore.bundle` version).
    pub fn parse(bytes: &[u8], what: &str) -> Result<Bundle> {
        let b: Bundle =
            serde_json::from_slice(bytes).map_err(|e| Error::malformed("Sigstore bundle", what, e.to_string()))?;
        if !b.media_type.starts_with("application/vnd.dev.sigstore.bundle") {
            return Err(Error::malformed("Sigstore bundle", what, format!("mediaType {:?}", b.media_type)));
        }
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_signing_golden_and_strict_parse() {
        let d = Digest::sha256_of(b"x");
        let p = simple_signing("localhost:5000/app:v1", &d);
        assert_eq!(
            String::from_utf8(p.clone()).unwrap(),
            format!(
                r#"{{"critical":{{"identity":{{"docker-reference":"localhost:5000/app:v1"}},"image":{{"docker-manifest-digest":"{d}"}},"type":"cosign container image signature"}},"optional":{{"creator":"hoist {}"}}}}"#,
                env!("CARGO_PKG_VERSION")
            )
        );
        let s = parse_simple_signing(&p, "t").unwrap();
        assert_eq!(s.docker_reference, "localhost:5000/app:v1");
        assert_eq!(s.digest, d.to_string());
        let cosign_style = format!(
            r#"{{"critical":{{"identity":{{"docker-reference":"r/a"}},"image":{{"docker-manifest-digest":"{d}"}},"type":"cosign container image signature"}},"optional":null}}"#
        );
        assert!(parse_simple_signing(cosign_style.as_bytes(), "t").is_ok());
        let extra = cosign_style.replace(r#""optional":null"#, r#""optional":null,"x":1"#);
        assert!(parse_simple_signing(extra.as_bytes(), "t").is_err());
    }

    #[test]
    fn statement_round_trip() {
        let d = Digest::sha256_of(b"x");
        let s = Statement::parse(&statement(Some("r/a"), &d, COSIGN_SIGN_PREDICATE, json!({})), "t").unwrap();
        assert_eq!(s.predicate_type, COSIGN_SIGN_PREDICATE);
        assert_eq!(s.subject_of(&d), Some(Some("r/a")));
        assert_eq!(s.subject_of(&Digest::sha256_of(b"y")), None);
    }
}
