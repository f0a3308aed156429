//! DSSE envelopes (the Dead Simple Signing Envelope, v1): a payload, its type, and
//! signatures over `PAE(type, payload)`. What cosign attestations and Sigstore bundles carry.
//!
//! The library API for whoever signs in-toto statements (attestations, SBOMs, provenance):
//!
//! ```
//! use hoist::trust::{dsse, keys::PrivateKey};
//! let key = PrivateKey::generate();
//! let statement = br#"{"_type":"https://in-toto.io/Statement/v1"}"#;
//! let env = dsse::Envelope::sign(&key, dsse::IN_TOTO_PAYLOAD_TYPE, statement).unwrap();
//! let json = env.to_json().unwrap();
//! let back = dsse::Envelope::from_json(&json, "envelope").unwrap();
//! assert_eq!(back.verify(&[key.public()]).unwrap(), statement);
//! ```

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::keys::{PrivateKey, PublicKey};
use crate::error::{Error, Result};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The payload type of an in-toto statement.
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";

/// Media type of a DSSE envelope stored as a blob (cosign's legacy `.att` layers).
pub const ENVELOPE_MEDIA_TYPE: &str = "application/vnd.dsse.envelope.v1+json";

/// Largest envelope read.
pub const MAX_ENVELOPE: u64 = 16 * 1024 * 1024;

/// The pre-authentication encoding: `DSSEv1 <len(type)> <type> <len(body)> <body>`.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut v = format!("DSSEv1 {} {} {} ", payload_type.len(), payload_type, payload.len()).into_bytes();
    v.extend_from_slice(payload);
    v
}

/// One signature of an envelope.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Signature {
    /// Key id (hoist writes it empty, as cosign does).
    #[serde(default)]
    pub keyid: String,
    /// The signature, base64.
    pub sig: String,
}

/// A DSSE envelope as JSON: `payloadType`, `payload` (base64), `signatures`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    /// The payload, base64.
    pub payload: String,
    /// The payload's type.
    pub payload_type: String,
    /// Signatures over `PAE(payloadType, payload)`.
    pub signatures: Vec<Signature>,
}

impl Envelope {
    /// `payload` of `payload_type`, signed by `key`.
    pub fn sign(key: &PrivateKey, payload_type: &str, payload: &[u8]) -> Result<Envelope> {
        let sig = key.sign(&pae(payload_type, payload))?;
        Ok(Envelope {
            payload: B64.encode(payload),
            payload_type: payload_type.to_string(),
            signatures: vec![Signature { keyid: String::new(), sig: B64.encode(sig) }],
        })
    }

    /// The decoded payload, unverified.
    pub fn payload_bytes(&self) -> Result<Vec<u8>> {
        B64.decode(&self.payload).map_err(|e| Error::malformed("DSSE envelope", "payload", e.to_string()))
    }

    /// The payload when one of the signatures is by one of `keys`; otherwise an
    /// [`Error::Untrusted`] saying no signature verified.
    pub fn verify(&self, keys: &[PublicKey]) -> Result<Vec<u8>> {
        let payload = self.payload_bytes()?;
        let msg = pae(&self.payload_type, &payload);
        for s in &self.signatures {
            let Ok(sig) = B64.decode(&s.sig) else { continue };
            if keys.iter().any(|k| k.verify(&msg, &sig)) {
                return Ok(payload);
            }
        }
        Err(Error::Untrusted {
            reference: "DSSE envelope".into(),
            reason: "wrong key: no signature verified with the given key".into(),
        })
    }

    /// Compact JSON.
    pub fn to_json(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self).map_err(|e| Error::serialize("DSSE envelope", e))
    }

    /// Parse an envelope; `what` is named in errors.
    pub fn from_json(bytes: &[u8], what: &str) -> Result<Envelope> {
        serde_json::from_slice(bytes).map_err(|e| Error::malformed("DSSE envelope", what, e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_matches_the_spec_example() {
        // From the DSSE protocol document.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }

    #[test]
    fn tampered_payload_is_refused() {
        let key = PrivateKey::generate();
        let mut env = Envelope::sign(&key, IN_TOTO_PAYLOAD_TYPE, b"{}").unwrap();
        assert_eq!(env.verify(&[key.public()]).unwrap(), b"{}");
        env.payload = B64.encode(b"{\"x\":1}");
        assert!(env.verify(&[key.public()]).is_err());
        let other = PrivateKey::generate();
        let env = Envelope::sign(&other, IN_TOTO_PAYLOAD_TYPE, b"{}").unwrap();
        assert!(env.verify(&[key.public()]).is_err());
    }
}
