//! Tar transports: `oci-archive` (a tar of an OCI layout) and `docker-archive` (what
//! `docker save` writes and `docker load` reads). Both read a tar through the one tar reader
//! of `tar` (indexing it once and streaming entries from their offsets), and write
//! deterministic entries as blobs arrive through its one header writer and the writer
//! state of `writer`.

pub mod docker;
pub mod oci;
pub(crate) mod tar;
pub(crate) mod writer;

pub use crate::transport::roots::check_stored_name;
pub use docker::{DockerArchive, DockerArchiveWriter};
pub use oci::{OciArchive, OciArchiveWriter};

#[cfg(test)]
mod tests {
    use super::check_stored_name;

    #[test]
    fn stored_names() {
        for ok in ["v1", "docker.io/library/alpine:3.20", "localhost:5000/a/b:1.0-rc_1", "latest"] {
            check_stored_name(ok, "ref.name", "t").unwrap();
        }
        for bad in ["", "../x", "a/../b", "x..y", "/etc/x", "a%2fb", "a%2Fb", "a\\b", "a\0b", "t\u{1b}[31m", "t\n"] {
            let e = check_stored_name(bad, "ref.name", "oci-archive:t.tar").unwrap_err().to_string();
            assert!(e.contains("oci-archive:t.tar"), "{e}");
        }
        assert!(check_stored_name(&"a".repeat(5000), "ref.name", "t").is_err());
    }
}
