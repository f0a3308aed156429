//! Trust: cosign-compatible keys, signatures and their verification.
//!
//! - [`keys`]: ECDSA P-256 (generated, cosign's encrypted format), RSA and Ed25519 keys read
//!   from every PEM form users have; [`encrypted`]: cosign's scrypt + secretbox sealing;
//! - [`dsse`]: DSSE envelopes, the library API for signing in-toto statements;
//! - [`payload`]: the simple-signing payload, in-toto statements, Sigstore bundles;
//! - [`sign`] / [`verify`]: writing and checking both formats (the legacy `sha256-<hex>.sig`
//!   tag and the Sigstore bundle referrer) on any transport;
//! - [`modelsig`]: OpenSSF model signing (`model.sig`, the `model-signing` package's format);
//! - [`policy`]: containers-policy.json(5), checked before anything is fetched or written.

pub mod dsse;
pub(crate) mod encrypted;
pub mod keys;
pub mod modelsig;
pub mod payload;
pub mod policy;
pub mod sign;
pub mod verify;

pub use keys::{PrivateKey, PublicKey};
