//! hoist: build, store and ship OCI images and artifacts without a daemon.
//!
//! The crate is layered; each layer uses only the ones above it in this list:
//! - [`model`]: the content model (digests, descriptors, documents kept as their exact bytes,
//!   media types, references, platforms, and the deterministic documents hoist writes);
//! - [`transport`]: the `Source`/`Destination` trait set and every transport implementing it
//!   (OCI layout, OCI and docker archives, in-memory, registry), plus endpoint parsing;
//! - operations on any two transports: [`copy`] (the one graph copy), [`merge`] (indexes made
//!   from many roots), [`bundle`] (CNAB), [`output`] (buildx-style `--output`);
//! - [`build`]: images, artifacts and ModelPack models built into a local layout.

#![warn(missing_docs)]

pub mod build;
pub mod bundle;
pub mod copy;
pub mod error;
pub mod merge;
pub mod model;
pub mod output;
pub mod transport;

pub use error::{Error, Result};
pub use model::{Descriptor, Digest, Document, Platform};
