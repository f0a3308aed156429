//! Tar transports: `oci-archive` (a tar of an OCI layout) and `docker-archive` (what
//! `docker save` writes and `docker load` reads). Both read a tar through the one tar reader
//! of [`tar`] (indexing it once and streaming entries from their offsets), and write
//! deterministic entries as blobs arrive through its one header writer and the writer
//! state of [`writer`].

pub mod docker;
pub mod oci;
pub(crate) mod tar;
pub(crate) mod writer;

pub use docker::{DockerArchive, DockerArchiveWriter};
pub use oci::{OciArchive, OciArchiveWriter};
