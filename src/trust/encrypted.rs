//! Private keys sealed with a password the way cosign seals them: go-securesystemslib's
//! `encrypted` package. The PEM body is JSON:
//!
//! ```json
//! {"kdf":{"name":"scrypt","params":{"N":65536,"r":8,"p":1},"salt":"<base64 32 bytes>"},
//!  "cipher":{"name":"nacl/secretbox","nonce":"<base64 24 bytes>"},
//!  "ciphertext":"<base64 secretbox(PKCS#8 DER)>"}
//! ```
//!
//! The key of the box is scrypt(password, salt, N, r, p, 32). Only the three scrypt
//! parameter sets go-securesystemslib writes are read (N = 2^15, 2^16, 2^17 with r = 8,
//! p = 1), which also bounds the memory a hostile key file can make hoist spend.

use base64::Engine;
use crypto_secretbox::aead::{Aead, KeyInit};
use crypto_secretbox::XSalsa20Poly1305;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// scrypt N the keys hoist writes use (go-securesystemslib's `Standard`, cosign's default).
const WRITE_LOG_N: u8 = 16;

#[derive(Serialize, Deserialize)]
struct Sealed {
    kdf: Kdf,
    cipher: Cipher,
    ciphertext: String,
}

#[derive(Serialize, Deserialize)]
struct Kdf {
    name: String,
    params: Params,
    salt: String,
}

#[derive(Serialize, Deserialize)]
struct Params {
    #[serde(rename = "N")]
    n: u64,
    r: u32,
    p: u32,
}

#[derive(Serialize, Deserialize)]
struct Cipher {
    name: String,
    nonce: String,
}

fn derive(password: &[u8], salt: &[u8], log_n: u8, r: u32, p: u32) -> Result<[u8; 32]> {
    let params =
        scrypt::Params::new(log_n, r, p, 32).map_err(|e| Error::crypto_untyped(format!("scrypt parameters: {e}")))?;
    let mut key = [0u8; 32];
    scrypt::scrypt(password, salt, &params, &mut key).map_err(|e| Error::crypto_untyped(format!("scrypt: {e}")))?;
    Ok(key)
}

/// `plaintext` sealed under `password`: the JSON document above.
pub fn seal(plaintext: &[u8], password: &[u8]) -> Result<Vec<u8>> {
    use p256::elliptic_curve::rand_core::{OsRng, RngCore};
    let mut salt = [0u8; 32];
    let mut nonce = [0u8; 24];
    OsRng.fill_bytes(&mut salt);
    OsRng.fill_bytes(&mut nonce);
    let key = derive(password, &salt, WRITE_LOG_N, 8, 1)?;
    let ct = XSalsa20Poly1305::new(&key.into())
        .encrypt(&nonce.into(), plaintext)
        .map_err(|_| Error::crypto_untyped("secretbox sealing failed"))?;
    let doc = Sealed {
        kdf: Kdf { name: "scrypt".into(), params: Params { n: 1 << WRITE_LOG_N, r: 8, p: 1 }, salt: B64.encode(salt) },
        cipher: Cipher { name: "nacl/secretbox".into(), nonce: B64.encode(nonce) },
        ciphertext: B64.encode(ct),
    };
    serde_json::to_vec(&doc).map_err(|e| Error::serialize("sealing a key", e))
}

/// Open a sealed document with `password`. `name` (the key file) is named in errors; a
/// wrong password is an error that says so.
pub fn open(sealed: &[u8], password: &[u8], name: &str) -> Result<Vec<u8>> {
    let bad = |why: String| Error::malformed("encrypted private key", name, why);
    let doc: Sealed = serde_json::from_slice(sealed).map_err(|e| bad(format!("not cosign's encrypted JSON: {e}")))?;
    if doc.kdf.name != "scrypt" {
        return Err(bad(format!("unknown kdf {:?}", doc.kdf.name)));
    }
    if doc.cipher.name != "nacl/secretbox" {
        return Err(bad(format!("unknown cipher {:?}", doc.cipher.name)));
    }
    let Params { n, r, p } = doc.kdf.params;
    let log_n = match (n, r, p) {
        (32768, 8, 1) => 15,
        (65536, 8, 1) => 16,
        (131072, 8, 1) => 17,
        _ => return Err(bad(format!("unsupported scrypt parameters N={n} r={r} p={p}"))),
    };
    let salt = B64.decode(&doc.kdf.salt).map_err(|e| bad(format!("salt: {e}")))?;
    let nonce: [u8; 24] = B64
        .decode(&doc.cipher.nonce)
        .map_err(|e| bad(format!("nonce: {e}")))?
        .try_into()
        .map_err(|_| bad("nonce is not 24 bytes".into()))?;
    let ct = B64.decode(&doc.ciphertext).map_err(|e| bad(format!("ciphertext: {e}")))?;
    let key = derive(password, &salt, log_n, r, p)?;
    XSalsa20Poly1305::new(&key.into())
        .decrypt(&nonce.into(), ct.as_slice())
        .map_err(|_| Error::Usage(format!("{name}: wrong password (the encrypted private key did not open)")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_layout() {
        let sealed = seal(b"secret der", b"pw").unwrap();
        let v: serde_json::Value = serde_json::from_slice(&sealed).unwrap();
        assert_eq!(v["kdf"]["params"], serde_json::json!({"N": 65536, "r": 8, "p": 1}));
        assert_eq!(v["cipher"]["name"], "nacl/secretbox");
        // secretbox: 16-byte tag + ciphertext
        assert_eq!(B64.decode(v["ciphertext"].as_str().unwrap()).unwrap().len(), 16 + 10);
        assert_eq!(open(&sealed, b"pw", "k").unwrap(), b"secret der");
        assert!(open(&sealed, b"pw2", "k").unwrap_err().to_string().contains("wrong password"));
    }
}
