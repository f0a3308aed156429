//! The connection to containerd: the socket, namespace and lease headers, gRPC errors mapped
//! to hoist's, and descriptors as containerd's API carries them. Everything else of the
//! transport (`content.rs`, `unpack.rs`, `store.rs`) sits on this.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use containerd_client::services::v1::{
    leases_client::LeasesClient, namespaces_client::NamespacesClient, ListNamespacesRequest,
};
use containerd_client::tonic::{transport::Channel, Code, Request, Status};

use super::{ContainerdTarget, LABEL_GC_EXPIRE, LEASE_EXPIRY};
use crate::error::{Error, Result};
use crate::model::descriptor::Descriptor;
use crate::model::digest::Digest;

/// A connection to containerd for one namespace and image name.
pub struct Containerd {
    pub(super) channel: Channel,
    pub(super) target: ContainerdTarget,
    pub(super) location: String,
    /// The lease every write is made under, created at the first write.
    pub(super) lease: tokio::sync::OnceCell<String>,
    /// Roots already unpacked by this handle.
    pub(super) unpacked: Mutex<HashMap<Digest, ()>>,
}

impl Containerd {
    /// Connect to `target.address`. The errors say what is wrong: no socket there, no
    /// permission to use it, or nothing answering. The gRPC channel itself connects lazily
    /// (needs a tokio runtime).
    pub fn connect(target: ContainerdTarget) -> Result<Containerd> {
        let location = target.spec();
        let addr = target.address.clone();
        if let Err(e) = std::os::unix::net::UnixStream::connect(&addr) {
            let why = match e.kind() {
                std::io::ErrorKind::NotFound => format!(
                    "no containerd socket at {} (is containerd running? name another socket as containerd:ADDRESS#NAMESPACE/REF)",
                    addr.display()
                ),
                std::io::ErrorKind::PermissionDenied => format!(
                    "permission denied on the containerd socket {} (run as root, or as a member of the group owning it)",
                    addr.display()
                ),
                std::io::ErrorKind::ConnectionRefused => {
                    format!("nothing listens on {} (containerd is not running)", addr.display())
                }
                _ => format!("cannot connect to the containerd socket {}: {e}", addr.display()),
            };
            return Err(Error::daemon(location, why));
        }
        let path = addr.clone();
        let channel = containerd_client::tonic::transport::Endpoint::from_static("http://[::]")
            .connect_with_connector_lazy(tower::service_fn(move |_| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tokio::net::UnixStream::connect(path).await?))
                }
            }));
        Ok(Containerd { channel, target, location, lease: tokio::sync::OnceCell::new(), unpacked: Mutex::default() })
    }

    /// What this handle reads and writes.
    pub fn target(&self) -> &ContainerdTarget {
        &self.target
    }

    /// Fail unless the namespace exists (a source reads nothing otherwise).
    pub async fn check_namespace(&self) -> Result<()> {
        // `Get` of an unknown namespace answers with empty labels (containerd 1.6): list them.
        let mut ns = NamespacesClient::new(self.channel.clone());
        let list = ns
            .list(ListNamespacesRequest { filter: String::new() })
            .await
            .map_err(|s| self.status("namespace list", s))?
            .into_inner();
        if list.namespaces.iter().any(|n| n.name == self.target.namespace) {
            return Ok(());
        }
        Err(Error::not_found(
            format!("namespace {:?} (`ctr namespaces ls` lists them)", self.target.namespace),
            format!("containerd at {}", self.target.address.display()),
        ))
    }

    /// `msg` with the namespace header (and the lease, once there is one).
    pub(super) fn req<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        let md = r.metadata_mut();
        if let Ok(v) = self.target.namespace.parse() {
            md.insert("containerd-namespace", v);
        }
        if let Some(l) = self.lease.get().and_then(|l| l.parse().ok()) {
            md.insert("containerd-lease", l);
        }
        r
    }

    /// A gRPC failure as an error naming this endpoint and what was being done.
    pub(super) fn status(&self, what: &str, s: Status) -> Error {
        let msg = crate::error::printable(s.message()).into_owned();
        match s.code() {
            Code::NotFound => Error::not_found(format!("{what}: {msg}"), self.location.clone()),
            Code::PermissionDenied | Code::Unauthenticated => {
                Error::daemon(&self.location, format!("{what}: permission denied: {msg}"))
            }
            Code::Unavailable => Error::daemon(
                &self.location,
                format!("{what}: containerd at {} is unavailable: {msg}", self.target.address.display()),
            ),
            code => Error::daemon(&self.location, format!("{what}: {code:?}: {msg}")),
        }
    }

    /// The lease every write is made under (created once, on first use).
    pub(super) async fn ensure_lease(&self) -> Result<()> {
        self.lease
            .get_or_try_init(|| async {
                let id = format!("hoist-{}-{:016x}", std::process::id(), rand::random::<u64>());
                let expire = std::time::SystemTime::now() + LEASE_EXPIRY;
                let expire = rfc3339(expire);
                let labels = BTreeMap::from([(LABEL_GC_EXPIRE.to_string(), expire)]);
                let mut leases = LeasesClient::new(self.channel.clone());
                let mut r = Request::new(containerd_client::services::v1::CreateRequest {
                    id: id.clone(),
                    labels: labels.into_iter().collect(),
                });
                if let Ok(v) = self.target.namespace.parse() {
                    r.metadata_mut().insert("containerd-namespace", v);
                }
                leases.create(r).await.map_err(|s| self.status("lease create", s))?;
                Ok::<_, Error>(id)
            })
            .await?;
        Ok(())
    }

    /// Delete the lease (what the image record and GC labels hold stays).
    pub(super) async fn release_lease(&self) -> Result<()> {
        if let Some(id) = self.lease.get() {
            let mut leases = LeasesClient::new(self.channel.clone());
            let r = self.req(containerd_client::services::v1::DeleteRequest { id: id.clone(), sync: false });
            match leases.delete(r).await {
                Ok(_) => {}
                Err(s) if s.code() == Code::NotFound => {}
                Err(s) => return Err(self.status("lease delete", s)),
            }
        }
        Ok(())
    }
}

/// `t` as RFC 3339 UTC (`2026-01-02T03:04:05Z`), what containerd's GC parses.
fn rfc3339(t: std::time::SystemTime) -> String {
    crate::model::time::rfc3339(t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64)
}

/// A descriptor as containerd's API carries it.
pub(super) fn to_proto(d: &Descriptor) -> containerd_client::types::Descriptor {
    containerd_client::types::Descriptor {
        media_type: d.media_type.clone(),
        digest: d.digest.to_string(),
        size: d.size as i64,
        annotations: d.annotations.clone().into_iter().collect(),
    }
}

/// containerd's descriptor as hoist's (the digest checked).
pub(super) fn from_proto(d: &containerd_client::types::Descriptor, location: &str) -> Result<Descriptor> {
    let digest: Digest = d.digest.parse()?;
    let size = u64::try_from(d.size).map_err(|_| Error::malformed("image target", location, "negative size"))?;
    let mut out = Descriptor::new(d.media_type.clone(), digest, size);
    out.annotations = d.annotations.clone().into_iter().collect();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_767_323_045);
        assert_eq!(rfc3339(t), "2026-01-02T03:04:05Z");
        assert_eq!(rfc3339(std::time::UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }
}
