//! hoist: build, store and ship OCI images and artifacts without a daemon.
//!
//! The crate is layered; each layer uses only the ones above it in this list:
//! - [`model`]: the content model (digests, descriptors, documents kept as their exact bytes,
//!   media types, references, platforms, and the deterministic documents hoist writes);
//! - [`transport`]: the `Source`/`Destination` trait set and every transport implementing it
//!   (OCI layout, OCI and docker archives, in-memory, registry), plus endpoint parsing;
//! - operations on any two transports: [`copy`] (the one graph copy), [`merge`] (indexes made
//!   from many roots), [`bundle`] (CNAB), [`output`] (buildx-style `--output`);
//! - [`layer`]: the one layer home (compression, encoders, tar layers);
//! - builders, each named by what it makes, storing into a local layout through [`ingest`]:
//!   [`image`] (TOML/flag builds), [`dockerfile`], [`artifact`] (OCI 1.1 artifacts),
//!   [`modelpack`] (CNCF ModelPack models, KitOps ModelKits, `hf://` sources).
//!
//! Every move of content is one call to [`copy::graph`] between a [`transport::Source`] and
//! a [`transport::Destination`]. Copying the tag `multi` of one OCI layout (a two-platform
//! index) into a new layout as `v1`:
//!
//! ```
//! use hoist::copy::{self, CopyOptions};
//! use hoist::transport::layout::Layout;
//! use hoist::transport::{Destination, NoProgress, Source};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let src = Layout::open(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/sample-layout"))?;
//! let dir = tempfile::tempdir()?;
//! let dst = Layout::create(dir.path().join("copy"))?;
//!
//! let root = src.resolve(Some("multi")).await?; // the tag's descriptor
//! let tags = ["v1".to_string()];
//! // Children first, every digest verified before it becomes visible, the tag last.
//! let report = copy::graph(&src, &dst, &root, &tags, &CopyOptions::default(), &NoProgress).await?;
//! dst.finish().await?;
//!
//! assert_eq!(dst.resolve(Some("v1")).await?.digest, root.digest); // byte for byte
//! assert!(report.blobs_uploaded > 0);
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod artifact;
pub mod attest;
pub mod bundle;
pub mod copy;
pub mod dockerfile;
pub mod edit;
pub mod error;
pub mod export;
pub mod image;
pub mod ingest;
pub mod layer;
pub mod merge;
pub mod model;
pub mod modelpack;
pub mod output;
pub mod rebase;
pub mod sbom;
pub mod sync;
pub mod transport;
pub mod trust;

pub use error::{Error, Result};
pub use model::{Descriptor, Digest, Document, Platform};
