//! containerd through its gRPC API (`containerd:[ADDRESS#]NAMESPACE/REF`): a destination
//! that writes straight into the content store (no archive in between) and a source that
//! reads images and blobs out of it.
//!
//! Writing:
//! - Every write happens under one lease (`hoist-<pid>-<random>`, expiring after
//!   [`LEASE_EXPIRY`] should hoist die), held for the whole copy and deleted by `finish`:
//!   content is safe from containerd's GC until the image record and the GC labels hold it.
//! - A blob is written through the content service's `Write` stream under the ref
//!   `hoist-<digest>`. An ingest left by an interrupted copy is found again by that ref and
//!   continued from its offset; containerd re-hashes the part it has and checks the digest at
//!   commit, so a resumed write is verified as a fresh one is (by [`VerifyReader`]).
//! - Blobs containerd has are skipped (`Info`); manifests and indexes are committed with the
//!   GC labels containerd's own pull sets (`containerd.io/gc.ref.content.config`, `.l.<i>`,
//!   `.m.<i>`), so the image record alone keeps the whole graph alive.
//! - The image record is created or updated under the normalized name
//!   (`docker.io/library/app:v1`), pointing at the root.
//! - Unpack (on by default for images; `unpack.rs`): the host platform's layers are applied by
//!   the diff service into snapshots committed by chain ID, so `ctr run` starts at once.
//!
//! Not here: containers, tasks, the transfer service. Nothing of another transport.

#[cfg(feature = "containerd")]
mod client;
#[cfg(feature = "containerd")]
mod content;
#[cfg(feature = "containerd")]
mod store;
#[cfg(feature = "containerd")]
mod unpack;

#[cfg(feature = "containerd")]
pub use client::Containerd;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::model::reference::Reference;

/// The socket containerd listens on by default (and `ctr` connects to).
pub const DEFAULT_ADDRESS: &str = "/run/containerd/containerd.sock";
/// The namespace `ctr` uses by default; the kubelet uses `k8s.io`.
pub const DEFAULT_NAMESPACE: &str = "default";
/// The snapshotter containerd uses by default.
pub const DEFAULT_SNAPSHOTTER: &str = "overlayfs";
/// How long a lease outlives a hoist that died without deleting it (containerd's GC then
/// drops what nothing else references, partial ingests included).
pub const LEASE_EXPIRY: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
/// Label containerd's GC reads on a lease: when it expires.
pub const LABEL_GC_EXPIRE: &str = "containerd.io/gc.expire";
/// How deep `has_manifest` follows indexes (the copy refuses deeper nesting too).
pub const MAX_DEPTH: usize = 32;
/// Prefix of the GC labels by which content keeps other content alive.
pub const LABEL_GC_CONTENT: &str = "containerd.io/gc.ref.content";

/// Where in containerd to read or write: socket, namespace, image name and unpack choice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerdTarget {
    /// The containerd socket.
    pub address: PathBuf,
    /// The namespace (`default`, `k8s.io`).
    pub namespace: String,
    /// The image name (repository, and a tag or digest); normalized when stored.
    pub reference: Reference,
    /// Unpack images into `snapshotter` after writing them (default on).
    pub unpack: bool,
    /// The snapshotter to unpack into (`overlayfs`, `native`).
    pub snapshotter: String,
}

impl ContainerdTarget {
    /// A target with the default unpack settings: unpack on, the snapshotter `ctr` would use
    /// (`CONTAINERD_SNAPSHOTTER`, else overlayfs).
    pub fn new(address: Option<PathBuf>, namespace: Option<String>, reference: Reference) -> ContainerdTarget {
        ContainerdTarget {
            address: address.unwrap_or_else(|| PathBuf::from(DEFAULT_ADDRESS)),
            namespace: namespace.unwrap_or_else(|| DEFAULT_NAMESPACE.to_string()),
            reference,
            unpack: true,
            snapshotter: std::env::var("CONTAINERD_SNAPSHOTTER")
                .ok()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| DEFAULT_SNAPSHOTTER.to_string()),
        }
    }

    /// Parse `[ADDRESS#]NAMESPACE/REF` (the part after `containerd:`). Without `/` the whole
    /// text is the image name in the `default` namespace (`containerd:app:v1`).
    pub fn parse(spec: &str, whole: &str) -> Result<ContainerdTarget> {
        let bad = |why: &str| Error::InvalidReference { reference: whole.to_string(), reason: why.to_string() };
        let (address, rest) = match spec.split_once('#') {
            Some((a, r)) if !a.is_empty() => (Some(PathBuf::from(a)), r),
            Some(_) => return Err(bad("empty socket address before '#'")),
            None => (None, spec),
        };
        let (namespace, name) = match rest.split_once('/') {
            Some((ns, name)) => (Some(ns.to_string()), name),
            None => (None, rest),
        };
        if let Some(ns) = &namespace {
            let ok = !ns.is_empty()
                && ns.len() <= 76
                && ns.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_')
                && ns.starts_with(|c: char| c.is_ascii_alphanumeric());
            if !ok {
                return Err(bad("the namespace must be letters, digits, '.', '-' or '_'"));
            }
        }
        if name.is_empty() {
            return Err(bad("no image name after the namespace"));
        }
        let reference: Reference = name.parse()?;
        Ok(ContainerdTarget::new(address, namespace, reference))
    }

    /// `containerd:[ADDRESS#]NAMESPACE/REF`, the address only when it is not the default.
    pub fn spec(&self) -> String {
        let addr = if self.address == Path::new(DEFAULT_ADDRESS) {
            String::new()
        } else {
            format!("{}#", self.address.display())
        };
        format!("containerd:{addr}{}/{}", self.namespace, self.reference)
    }

    /// The image record name for `target` (a tag or a digest) in this repository, normalized
    /// as docker and the kubelet do: `docker.io/library/app:v1`.
    pub fn image_name(&self, target: &str) -> Result<String> {
        Ok(self.reference.with_target(target)?.normalized())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        let t = ContainerdTarget::parse("k8s.io/app:v1", "containerd:k8s.io/app:v1").unwrap();
        assert_eq!(t.namespace, "k8s.io");
        assert_eq!(t.address, PathBuf::from(DEFAULT_ADDRESS));
        assert_eq!(t.image_name("v1").unwrap(), "docker.io/library/app:v1");
        let t = ContainerdTarget::parse("/tmp/c.sock#ns/quay.io/x/y:2", "w").unwrap();
        assert_eq!(t.address, PathBuf::from("/tmp/c.sock"));
        assert_eq!(t.namespace, "ns");
        assert_eq!(t.reference.normalized(), "quay.io/x/y:2");
        assert_eq!(t.spec(), "containerd:/tmp/c.sock#ns/quay.io/x/y:2");
        let t = ContainerdTarget::parse("app", "w").unwrap();
        assert_eq!(
            (t.namespace.as_str(), t.reference.normalized().as_str()),
            ("default", "docker.io/library/app:latest")
        );
        assert!(ContainerdTarget::parse("#ns/app", "w").is_err());
        assert!(ContainerdTarget::parse("ns/", "w").is_err());
        assert!(ContainerdTarget::parse("b@d/app", "w").is_err());
    }
}
