//! Tar transports: `oci-archive` (a tar of an OCI layout) and `docker-archive` (what
//! `docker save` writes and `docker load` reads). Both read a tar through the one tar reader
//! of `tar` (indexing it once and streaming entries from their offsets), and write
//! deterministic entries as blobs arrive through its one header writer and the writer
//! state of `writer`.

pub mod docker;
pub mod oci;
pub(crate) mod tar;
pub(crate) mod writer;

pub use docker::{DockerArchive, DockerArchiveWriter};
pub use oci::{OciArchive, OciArchiveWriter};

use crate::error::{Error, Result};

/// Longest name read from an archive that may become a tag or name (the longest reference
/// hoist parses).
const MAX_STORED_NAME: usize = 4096;

/// Check a name stored in an archive (`ref.name` annotation, `RepoTags` entry) before it
/// is handed out as a tag or name: such names are data from the source, and may never choose
/// a path or another repository at the destination. Refuses empty or overlong names, `..`,
/// absolute paths, backslashes, percent-encoding (`%2f` is an encoded slash), NUL and other
/// control characters, with an error naming `what` and the archive at `location`.
pub fn check_stored_name(name: &str, what: &str, location: &str) -> Result<()> {
    let why = if name.is_empty() {
        Some("is empty")
    } else if name.len() > MAX_STORED_NAME {
        Some("is too long")
    } else if name.chars().any(char::is_control) {
        Some("holds a control character")
    } else if name.starts_with('/') {
        Some("is an absolute path")
    } else if name.contains("..") {
        Some("contains '..'")
    } else if name.contains('\\') {
        Some("contains a backslash")
    } else if name.contains('%') {
        Some("is percent-encoded (an encoded slash or other character)")
    } else {
        None
    };
    match why {
        None => Ok(()),
        Some(why) => Err(Error::InvalidReference {
            reference: name.to_string(),
            reason: format!("{what} stored in {location} {why}; refused as a tag or name"),
        }),
    }
}

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
