//! Tar transports: `oci-archive` (a tar of an OCI layout) and `docker-archive` (what
//! `docker save` writes and `docker load` reads). Both read a tar by indexing it once and
//! streaming entries from their offsets, and write deterministic entries as blobs arrive.

pub mod docker;
pub mod oci;

pub use docker::{DockerArchive, DockerArchiveWriter};
pub use oci::{OciArchive, OciArchiveWriter};
