//! Helpers shared by the reliability tests (`faults`, `crash`, `hostile`): the test kit's
//! hand-written OCI layouts (`hoist_testkit::fixtures`).
#![allow(unused_imports)]

pub use hoist_testkit::fixtures::*;
pub use hoist_testkit::tools::{output_text, registry_manifest_digest, sha256 as digest_of};
