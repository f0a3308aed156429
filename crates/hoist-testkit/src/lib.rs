//! hoist's test kit: what hoist's tests (and benchmarks) use to judge it, kept out of the
//! library so that hoist itself has no test-only code or dependencies.
//!
//! - [`proxy`]: a fault-injecting HTTP/1.1 reverse proxy with a rules language (also the
//!   `hoist-faultproxy` binary), which also emulates the OCI referrers API.
//! - [`tools`]: one sha256 helper (independent of hoist's own hashing).
//!
//! Not for: use outside hoist's own tests; nothing here is a stable API (`publish = false`).
#![warn(missing_docs)]

pub mod proxy;
pub mod tools;
