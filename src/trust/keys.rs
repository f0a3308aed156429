//! Signing keys in the forms cosign and skopeo users have: cosign's encrypted private key
//! (`ENCRYPTED SIGSTORE PRIVATE KEY`, and the older `ENCRYPTED COSIGN PRIVATE KEY`: PKCS#8
//! sealed by [`super::encrypted`]), unencrypted PKCS#8 (`PRIVATE KEY`), SEC1
//! (`EC PRIVATE KEY`) and PKCS#1 (`RSA PRIVATE KEY`) PEM, and PKIX public keys (`PUBLIC KEY`).
//!
//! Schemes, as cosign uses them: ECDSA P-256 with SHA-256 (DER signatures), RSA PKCS#1 v1.5
//! with SHA-256, Ed25519 over the message itself. ECDSA keys go through RustCrypto's `p256`;
//! RSA and Ed25519 through `ring`, which the TLS stack already builds (no second RSA crate).

use p256::ecdsa::signature::{Signer, Verifier};
use p256::pkcs8::der::pem::LineEnding;
use p256::pkcs8::der::{Decode, Encode};
use p256::pkcs8::spki::{AlgorithmIdentifierRef, SubjectPublicKeyInfoRef};
use p256::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, ObjectIdentifier};
use ring::signature::KeyPair;

use crate::error::{Error, Result};

/// PEM type of the private keys `hoist key generate` (and cosign 2+) writes.
pub const SIGSTORE_PRIVATE_KEY_PEM: &str = "ENCRYPTED SIGSTORE PRIVATE KEY";
/// PEM type of cosign 1's encrypted private keys (same content, read only).
pub const COSIGN_PRIVATE_KEY_PEM: &str = "ENCRYPTED COSIGN PRIVATE KEY";

const OID_EC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

/// Largest key file read (a 16384-bit RSA key in PEM is ~13 KiB).
pub const MAX_KEY_FILE: u64 = 64 * 1024;

/// A private key that signs.
pub enum PrivateKey {
    /// ECDSA P-256 (SHA-256, DER signature): what cosign generates.
    EcdsaP256(p256::ecdsa::SigningKey),
    /// RSA, PKCS#1 v1.5 with SHA-256.
    Rsa(Box<ring::signature::RsaKeyPair>),
    /// Ed25519.
    Ed25519(Box<ring::signature::Ed25519KeyPair>),
}

/// A public key that verifies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublicKey {
    /// ECDSA P-256.
    EcdsaP256(p256::ecdsa::VerifyingKey),
    /// RSA: the PKCS#1 `RSAPublicKey` DER.
    Rsa(Vec<u8>),
    /// Ed25519: the 32 key bytes.
    Ed25519([u8; 32]),
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PrivateKey({})", self.public().algorithm())
    }
}

impl PrivateKey {
    /// A new ECDSA P-256 key, as `cosign generate-key-pair` makes.
    pub fn generate() -> PrivateKey {
        PrivateKey::EcdsaP256(p256::ecdsa::SigningKey::random(&mut p256::elliptic_curve::rand_core::OsRng))
    }

    /// Sign `msg` with this key's scheme.
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>> {
        match self {
            PrivateKey::EcdsaP256(k) => {
                let sig: p256::ecdsa::Signature = k.sign(msg);
                Ok(sig.to_der().as_bytes().to_vec())
            }
            PrivateKey::Rsa(k) => {
                let mut sig = vec![0u8; k.public().modulus_len()];
                k.sign(&ring::signature::RSA_PKCS1_SHA256, &ring::rand::SystemRandom::new(), msg, &mut sig)
                    .map_err(|_| Error::crypto_untyped("RSA signing failed"))?;
                Ok(sig)
            }
            PrivateKey::Ed25519(k) => Ok(k.sign(msg).as_ref().to_vec()),
        }
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        match self {
            PrivateKey::EcdsaP256(k) => PublicKey::EcdsaP256(*k.verifying_key()),
            PrivateKey::Rsa(k) => PublicKey::Rsa(k.public().as_ref().to_vec()),
            PrivateKey::Ed25519(k) => {
                let mut b = [0u8; 32];
                b.copy_from_slice(k.public_key().as_ref());
                PublicKey::Ed25519(b)
            }
        }
    }

    /// PKCS#8 DER of an ECDSA key (what `key generate` seals); other keys are only read.
    fn to_pkcs8_der(&self) -> Result<Vec<u8>> {
        match self {
            PrivateKey::EcdsaP256(k) => {
                Ok(k.to_pkcs8_der().map_err(|e| Error::crypto("encoding the private key", e))?.as_bytes().to_vec())
            }
            _ => Err(Error::Unsupported("only ECDSA P-256 keys are written".into())),
        }
    }

    /// This key sealed with `password` as cosign writes it (`ENCRYPTED SIGSTORE PRIVATE KEY`).
    pub fn to_encrypted_pem(&self, password: &[u8]) -> Result<String> {
        let der = self.to_pkcs8_der()?;
        let sealed = super::encrypted::seal(&der, password)?;
        pem_encode(SIGSTORE_PRIVATE_KEY_PEM, &sealed)
    }

    /// Read a private key from PEM text. `password` is asked for only when the key is
    /// encrypted; a wrong one is an error that says so. `name` (the file) is named in errors.
    pub fn from_pem(pem: &[u8], name: &str, password: &mut dyn FnMut() -> Result<Vec<u8>>) -> Result<PrivateKey> {
        let (label, body) = pem_decode(pem, name)?;
        let bad = |why: String| Error::malformed("private key", name, why);
        match label.as_str() {
            SIGSTORE_PRIVATE_KEY_PEM | COSIGN_PRIVATE_KEY_PEM => {
                let pass = password()?;
                let der = super::encrypted::open(&body, &pass, name)?;
                PrivateKey::from_pkcs8(&der, name)
            }
            "PRIVATE KEY" => PrivateKey::from_pkcs8(&body, name),
            "EC PRIVATE KEY" => {
                let sk = p256::SecretKey::from_sec1_der(&body)
                    .map_err(|e| bad(format!("not a P-256 SEC1 key ({e}); hoist signs with P-256 EC keys")))?;
                Ok(PrivateKey::EcdsaP256(sk.into()))
            }
            "RSA PRIVATE KEY" => ring::signature::RsaKeyPair::from_der(&body)
                .map(|k| PrivateKey::Rsa(Box::new(k)))
                .map_err(|e| bad(format!("RSA key refused: {e}"))),
            "ENCRYPTED PRIVATE KEY" => Err(Error::Unsupported(format!(
                "{name}: PKCS#8 keys encrypted by openssl are not read; convert it with `hoist key generate` or `openssl pkcs8 -nocrypt`, or use cosign's encrypted format"
            ))),
            other => Err(bad(format!("PEM type {other:?} is not a private key hoist reads"))),
        }
    }

    /// A PKCS#8 `PrivateKeyInfo` (EC P-256, RSA or Ed25519).
    fn from_pkcs8(der: &[u8], name: &str) -> Result<PrivateKey> {
        let bad = |why: String| Error::malformed("private key", name, why);
        let info = p256::pkcs8::PrivateKeyInfo::from_der(der).map_err(|e| bad(format!("not PKCS#8: {e}")))?;
        match info.algorithm.oid {
            OID_EC => {
                let curve = info.algorithm.parameters_oid().ok();
                if curve != Some(OID_P256) {
                    return Err(Error::Unsupported(format!(
                        "{name}: EC key on curve {curve:?}: hoist signs with P-256 EC keys"
                    )));
                }
                let sk = p256::SecretKey::from_pkcs8_der(der).map_err(|e| bad(format!("EC key: {e}")))?;
                Ok(PrivateKey::EcdsaP256(sk.into()))
            }
            OID_RSA => ring::signature::RsaKeyPair::from_pkcs8(der)
                .map(|k| PrivateKey::Rsa(Box::new(k)))
                .map_err(|e| bad(format!("RSA key refused: {e}"))),
            OID_ED25519 => ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
                .map(|k| PrivateKey::Ed25519(Box::new(k)))
                .map_err(|e| bad(format!("Ed25519 key refused: {e}"))),
            oid => Err(Error::Unsupported(format!("{name}: private key algorithm {oid} is not supported"))),
        }
    }

    /// Read a private key file (bounded), asking for a password only when it is encrypted.
    pub fn load(path: &std::path::Path, password: &mut dyn FnMut() -> Result<Vec<u8>>) -> Result<PrivateKey> {
        let pem = read_key_file(path)?;
        PrivateKey::from_pem(&pem, &path.display().to_string(), password)
    }
}

impl PublicKey {
    /// `ecdsa-p256`, `rsa` or `ed25519`.
    pub fn algorithm(&self) -> &'static str {
        match self {
            PublicKey::EcdsaP256(_) => "ecdsa-p256",
            PublicKey::Rsa(_) => "rsa",
            PublicKey::Ed25519(_) => "ed25519",
        }
    }

    /// Whether `sig` is this key's signature of `msg`.
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        match self {
            PublicKey::EcdsaP256(k) => {
                p256::ecdsa::Signature::from_der(sig).map(|s| k.verify(msg, &s).is_ok()).unwrap_or(false)
            }
            PublicKey::Rsa(der) => {
                ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, der)
                    .verify(msg, sig)
                    .is_ok()
            }
            PublicKey::Ed25519(k) => {
                ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, k).verify(msg, sig).is_ok()
            }
        }
    }

    /// The PKIX `SubjectPublicKeyInfo` DER.
    pub fn to_spki_der(&self) -> Result<Vec<u8>> {
        let enc = |e: p256::pkcs8::der::Error| Error::crypto("encoding a public key", e);
        match self {
            PublicKey::EcdsaP256(k) => {
                Ok(k.to_public_key_der().map_err(|e| Error::crypto("encoding a public key", e))?.as_bytes().to_vec())
            }
            PublicKey::Rsa(pkcs1) => SubjectPublicKeyInfoRef {
                algorithm: AlgorithmIdentifierRef {
                    oid: OID_RSA,
                    parameters: Some(p256::pkcs8::der::asn1::AnyRef::NULL),
                },
                subject_public_key: p256::pkcs8::der::asn1::BitStringRef::from_bytes(pkcs1).map_err(enc)?,
            }
            .to_der()
            .map_err(enc),
            PublicKey::Ed25519(k) => SubjectPublicKeyInfoRef {
                algorithm: AlgorithmIdentifierRef { oid: OID_ED25519, parameters: None },
                subject_public_key: p256::pkcs8::der::asn1::BitStringRef::from_bytes(k).map_err(enc)?,
            }
            .to_der()
            .map_err(enc),
        }
    }

    /// PKIX PEM (`PUBLIC KEY`), as cosign writes `cosign.pub`.
    pub fn to_pem(&self) -> Result<String> {
        pem_encode("PUBLIC KEY", &self.to_spki_der()?)
    }

    /// The key's hint in a Sigstore bundle (`verificationMaterial.publicKey.hint`): the
    /// base64 SHA-256 of its PKIX DER, as sigstore-go computes it.
    pub fn hint(&self) -> Result<String> {
        use base64::Engine;
        use sha2::Digest as _;
        Ok(base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(self.to_spki_der()?)))
    }

    /// A public key from a PKIX DER `SubjectPublicKeyInfo`.
    pub fn from_spki_der(der: &[u8], name: &str) -> Result<PublicKey> {
        let bad = |why: String| Error::malformed("public key", name, why);
        let spki = SubjectPublicKeyInfoRef::from_der(der).map_err(|e| bad(format!("not a PKIX public key: {e}")))?;
        let bits = spki.subject_public_key.as_bytes().ok_or_else(|| bad("unaligned key bits".into()))?;
        match spki.algorithm.oid {
            OID_EC => {
                let k = p256::PublicKey::from_public_key_der(der)
                    .map_err(|e| bad(format!("not a P-256 key ({e}); hoist verifies P-256 EC keys")))?;
                Ok(PublicKey::EcdsaP256(k.into()))
            }
            OID_RSA => Ok(PublicKey::Rsa(bits.to_vec())),
            OID_ED25519 => {
                let k: [u8; 32] = bits.try_into().map_err(|_| bad("Ed25519 key is not 32 bytes".into()))?;
                Ok(PublicKey::Ed25519(k))
            }
            oid => Err(Error::Unsupported(format!("{name}: public key algorithm {oid} is not supported"))),
        }
    }

    /// A public key from PEM text (`PUBLIC KEY`; `RSA PUBLIC KEY` as PKCS#1).
    pub fn from_pem(pem: &[u8], name: &str) -> Result<PublicKey> {
        let (label, body) = pem_decode(pem, name)?;
        match label.as_str() {
            "PUBLIC KEY" => PublicKey::from_spki_der(&body, name),
            "RSA PUBLIC KEY" => Ok(PublicKey::Rsa(body)),
            other => Err(Error::malformed(
                "public key",
                name,
                format!("PEM type {other:?} is not a public key (want PUBLIC KEY)"),
            )),
        }
    }

    /// Read a public key file (bounded).
    pub fn load(path: &std::path::Path) -> Result<PublicKey> {
        let pem = read_key_file(path)?;
        PublicKey::from_pem(&pem, &path.display().to_string())
    }
}

/// A key file's bytes, refused beyond [`MAX_KEY_FILE`].
fn read_key_file(path: &std::path::Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let io = |e| Error::io(path, e);
    let mut buf = Vec::new();
    std::fs::File::open(path).map_err(io)?.take(MAX_KEY_FILE + 1).read_to_end(&mut buf).map_err(io)?;
    if buf.len() as u64 > MAX_KEY_FILE {
        return Err(Error::malformed("key file", path.display().to_string(), "larger than 64 KiB"));
    }
    Ok(buf)
}

/// The first PEM block of `text`: its label and decoded body. Text around it (comments,
/// a second block) is ignored, as Go's `pem.Decode` does.
pub fn pem_decode(text: &[u8], name: &str) -> Result<(String, Vec<u8>)> {
    let bad = |why: &str| Error::malformed("PEM", name, why.to_string());
    let s = std::str::from_utf8(text).map_err(|_| bad("not text"))?;
    let start = s.find("-----BEGIN ").ok_or_else(|| bad("no -----BEGIN line"))?;
    let rest = &s[start..];
    let end_marker = rest.find("-----END ").ok_or_else(|| bad("no -----END line"))?;
    let end = rest[end_marker + 9..].find("-----").ok_or_else(|| bad("unterminated -----END line"))? + end_marker + 14;
    let block = &rest[..end];
    let (label, body) = p256::pkcs8::der::pem::decode_vec(block.as_bytes()).map_err(|e| bad(&e.to_string()))?;
    Ok((label.to_string(), body))
}

/// PEM text with `label`, 64-column lines, LF line endings.
pub fn pem_encode(label: &str, body: &[u8]) -> Result<String> {
    p256::pkcs8::der::pem::encode_string(label, LineEnding::LF, body)
        .map_err(|e| Error::crypto_untyped(format!("PEM encoding: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_signs_and_verifies_and_round_trips_encrypted() {
        let k = PrivateKey::generate();
        let sig = k.sign(b"hello").unwrap();
        assert!(k.public().verify(b"hello", &sig));
        assert!(!k.public().verify(b"hellO", &sig));
        let pem = k.to_encrypted_pem(b"pw").unwrap();
        assert!(pem.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n"));
        let back = PrivateKey::from_pem(pem.as_bytes(), "k", &mut || Ok(b"pw".to_vec())).unwrap();
        assert_eq!(back.public(), k.public());
        let wrong = PrivateKey::from_pem(pem.as_bytes(), "k", &mut || Ok(b"nope".to_vec())).unwrap_err();
        assert!(wrong.to_string().contains("wrong password"), "{wrong}");
        let pubpem = k.public().to_pem().unwrap();
        assert_eq!(PublicKey::from_pem(pubpem.as_bytes(), "p").unwrap(), k.public());
    }

    #[test]
    fn pem_block_is_found_inside_other_text() {
        let k = PrivateKey::generate();
        let text = format!("a comment\n{}trailing\n", k.public().to_pem().unwrap());
        assert_eq!(PublicKey::from_pem(text.as_bytes(), "p").unwrap(), k.public());
    }
}
