//! Helpers for judging hoist with code that is not hoist's: digests computed here.

use sha2::{Digest as _, Sha256};

/// `sha256:<hex>` of `data`, computed with the `sha2` crate (not with hoist's digest code).
pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(data))
}

/// The lowercase hex SHA-256 of `data` (no `sha256:` prefix).
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}
