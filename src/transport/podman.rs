//! podman's image store as a destination (`podman:REF`, `--output type=podman`): an OCI
//! archive streamed into `podman load` through a pipe, no archive file on hoist's side.
//!
//! Why `podman load` and not podman's API socket: the CLI is there wherever podman is (the
//! socket needs `podman system service` running, which rootless and CI setups rarely have), it
//! honours the user's storage configuration (`CONTAINERS_STORAGE_CONF`, rootless storage)
//! exactly as `podman run` will read it, and an OCI archive keeps every digest. The archive's
//! `index.json` names each root as podman would (`localhost/app:v1`), so the loaded image
//! carries that name.

use std::ffi::OsString;
use std::process::Stdio;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::AsyncReadExt;
use tokio::sync::Mutex;

use crate::error::{Error, Result};
use crate::model::descriptor::Descriptor;
use crate::model::document::Document;
use crate::model::reference::{check_tag, split_tag};
use crate::transport::archive::oci::OciArchiveWriter;
use crate::transport::{BlobOutcome, Destination, Progress, Source};

/// How much of `podman load`'s stderr an error quotes.
const MAX_STDERR: u64 = 16 * 1024;

/// A name as podman stores it: a name without a registry gets `localhost/` (`app` ->
/// `localhost/app`), as podman does for local images; returns (repository, tag).
pub fn podman_name(name: &str) -> Result<(String, Option<String>)> {
    let bad = |why: &str| Error::InvalidReference { reference: name.to_string(), reason: why.to_string() };
    if name.contains('@') {
        return Err(bad("podman names take a tag, not a digest"));
    }
    let (repo, tag) = split_tag(name);
    let tag = tag.map(str::to_string);
    if let Some(t) = &tag {
        check_tag(t, name)?;
    }
    let first = repo.split('/').next().unwrap_or_default();
    let qualified = repo.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    let full = if qualified { repo.to_string() } else { format!("localhost/{repo}") };
    // The registry parser checks the repository's grammar.
    full.parse::<crate::model::reference::Reference>().map_err(|_| bad("not a valid image name"))?;
    Ok((full, tag))
}

/// `podman load` fed an OCI archive through its standard input.
pub struct PodmanLoad {
    inner: OciArchiveWriter,
    child: Mutex<Option<tokio::process::Child>>,
    repository: String,
    location: String,
}

impl PodmanLoad {
    /// Start `podman [ARGS] load` (`podman` from `PATH`, or `$HOIST_PODMAN`) for images named
    /// `repository` (already normalized by [`podman_name`]).
    pub async fn spawn(repository: &str, podman_args: &[OsString]) -> Result<PodmanLoad> {
        let program = std::env::var_os("HOIST_PODMAN").unwrap_or_else(|| OsString::from("podman"));
        let location = format!("podman:{repository}");
        let mut child = tokio::process::Command::new(&program)
            .args(podman_args)
            .arg("load")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                Error::daemon(
                    &location,
                    format!("cannot start {}: {e} (is podman installed?)", program.to_string_lossy()),
                )
            })?;
        let stdin = child.stdin.take().ok_or_else(|| Error::daemon(&location, "no pipe to podman"))?;
        let inner = OciArchiveWriter::to_writer(Box::pin(stdin), location.clone()).await?;
        Ok(PodmanLoad { inner, child: Mutex::new(Some(child)), repository: repository.to_string(), location })
    }

    fn name_of(&self, tag: &str) -> String {
        format!("{}:{tag}", self.repository)
    }
}

#[async_trait]
impl Destination for PodmanLoad {
    fn location(&self) -> String {
        self.location.clone()
    }
    async fn has_blob(&self, desc: &Descriptor) -> Result<bool> {
        self.inner.has_blob(desc).await
    }
    async fn has_manifest(&self, desc: &Descriptor) -> Result<bool> {
        self.inner.has_manifest(desc).await
    }
    async fn push_blob(&self, desc: &Descriptor, src: &dyn Source, progress: &dyn Progress) -> Result<BlobOutcome> {
        self.inner.push_blob(desc, src, progress).await
    }
    async fn push_manifest(&self, desc: &Descriptor, bytes: Bytes, tag: Option<&str>) -> Result<()> {
        let name = tag.map(|t| self.name_of(t));
        self.inner.push_manifest(desc, bytes, name.as_deref()).await
    }
    async fn select_root(&self, src: &dyn Source, root: &Document) -> Result<Option<Descriptor>> {
        self.inner.select_root(src, root).await
    }
    async fn add_root(&self, desc: &Descriptor) -> Result<()> {
        // Loaded without a name (podman lists it as `<none>`).
        self.inner.add_root(desc).await
    }
    fn max_jobs(&self) -> Option<usize> {
        Some(1)
    }
    async fn finish(&self) -> Result<()> {
        let written = self.inner.finish().await;
        let Some(mut child) = self.child.lock().await.take() else { return written };
        let mut err = Vec::new();
        if let Some(stderr) = child.stderr.take() {
            let _ = stderr.take(MAX_STDERR).read_to_end(&mut err).await;
        }
        let status = child.wait().await.map_err(|e| Error::daemon(&self.location, format!("podman load: {e}")))?;
        written?;
        if !status.success() {
            return Err(Error::daemon(
                &self.location,
                format!(
                    "podman load failed ({status}): {}",
                    crate::error::printable(String::from_utf8_lossy(&err).trim())
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_as_podman() {
        assert_eq!(podman_name("app:v1").unwrap(), ("localhost/app".into(), Some("v1".into())));
        assert_eq!(podman_name("me/app").unwrap(), ("localhost/me/app".into(), None));
        assert_eq!(podman_name("quay.io/x/y:2").unwrap(), ("quay.io/x/y".into(), Some("2".into())));
        assert_eq!(podman_name("localhost:5000/y").unwrap(), ("localhost:5000/y".into(), None));
        assert_eq!(podman_name("localhost/y:1").unwrap(), ("localhost/y".into(), Some("1".into())));
        assert!(podman_name("app@sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a").is_err());
        assert!(podman_name("Bad Name").is_err());
    }
}
