//! The content model: validated digests, deterministic descriptors, documents kept as the
//! exact bytes that were hashed (with a read-only parsed view), media types and annotation
//! keys, references, platforms, and the documents hoist writes itself.
//!
//! Not for: moving content (`transport`, `copy`). Nothing here does I/O.

pub mod descriptor;
pub mod digest;
pub mod document;
pub mod media;
pub mod platform;
pub mod reference;
pub(crate) mod time;
pub(crate) mod verify;
pub mod write;

pub use descriptor::Descriptor;
pub use digest::Digest;
pub use document::Document;
pub use platform::Platform;
