//! hoist: build, store and ship OCI images and artifacts without a daemon.
//!
//! Content model (`digest`, `descriptor`, `document`, `media`), one trait set for every
//! transport (`target`), the transports (`layout`, `registry`, ...) and the one graph
//! copy that moves content between any two of them (`copy`).

pub mod archive;
mod blobfile;
pub mod build;
pub mod bundle;
pub mod copy;
pub mod descriptor;
pub mod digest;
pub mod docker_archive;
pub mod document;
pub mod error;
pub mod index;
pub mod layout;
pub mod media;
pub mod memory;
pub mod output;
pub mod reference;
pub mod registry;
pub mod target;
pub mod transport;

pub use descriptor::{Descriptor, Platform};
pub use digest::Digest;
pub use document::Document;
pub use error::{Error, Result};

#[cfg(feature = "testing")]
pub mod testing;
