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
//! use hoist::{copy, CopyOptions, Destination, Layout, NoProgress, Source, TagOrDigest};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let src = Layout::open(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/sample-layout"))?;
//! let dir = tempfile::tempdir()?;
//! let dst = Layout::create(dir.path().join("copy"))?;
//!
//! let root = src.resolve(Some(&TagOrDigest::parse("multi"))).await?; // the tag's descriptor
//! let tags = ["v1".to_string()];
//! // Children first, every digest verified before it becomes visible, the tag last.
//! let report = copy::graph(&src, &dst, &root, &tags, &CopyOptions::default(), &NoProgress).await?;
//! dst.finish().await?;
//!
//! assert_eq!(dst.resolve(Some(&TagOrDigest::parse("v1"))).await?.digest, root.digest); // byte for byte
//! assert!(report.blobs_uploaded > 0);
//! # Ok(())
//! # }
//! ```

//! # The library API
//!
//! The names re-exported at the crate root are the API a caller starts from: the content
//! model, the transport traits and transports, the one graph copy, the error type. The
//! modules below are public because the `hoist` command line (its own crate target) builds
//! on them; their helper modules (registry internals, layout safety, codecs, scanners, key
//! files) are `pub(crate)`, and nothing outside the crate can name them.

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
pub mod store;
pub mod sync;
pub mod transport;
pub mod trust;

// The content model: what a source holds and how it is named.
pub use model::reference::{Reference, TagOrDigest};
pub use model::{Descriptor, Digest, Document, Platform};

// The errors: one type, matched by kind.
pub use error::{Error, Result};

// One trait set for every transport, and the transports.
pub use transport::archive::docker::{DockerArchive, DockerArchiveWriter};
pub use transport::archive::oci::{OciArchive, OciArchiveWriter};
pub use transport::layout::Layout;
pub use transport::memory::Memory;
pub use transport::registry::{Client, RegistryOptions};
pub use transport::{open_destination, open_source, Endpoint};
pub use transport::{BlobOutcome, Destination, NoProgress, Progress, Source};

// The one graph copy that moves content between any two of them.
pub use copy::{CopyOptions, CopyReport};

// Layer compression: one type, one parser, one encoder per algorithm.
pub use layer::Compression;
