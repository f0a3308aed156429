//! Transport names as users type them: `oci:DIR[:TAG|@DIGEST]`,
//! `oci-archive:FILE[:TAG]`, `docker-archive:FILE[:REPO:TAG]`, `docker://REF` and bare
//! registry references. Opens the matching `Source` or `Destination`.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::model::descriptor::Platform;
use crate::model::reference::{check_ref_name, Reference, TagOrDigest};
use crate::transport::archive::docker::MadeManifest;
use crate::transport::registry::Client;
use crate::transport::{Destination, Source};

/// Where content is read from or written to, as a user names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// OCI layout directory (`oci:DIR[:TAG|@DIGEST]`).
    Layout {
        /// The layout directory.
        path: PathBuf,
        /// A tag or digest.
        reference: Option<String>,
    },
    /// A tar of an OCI layout (`oci-archive:FILE[:TAG]`).
    OciArchive {
        /// The tar file (`-`: standard output, when writing).
        path: PathBuf,
        /// A tag or digest.
        reference: Option<String>,
    },
    /// A docker-archive (`docker-archive:FILE[:REPO:TAG]`).
    DockerArchive {
        /// The tar file (`-`: standard output, when writing).
        path: PathBuf,
        /// `repo:tag` (or a digest when reading).
        reference: Option<String>,
    },
    /// A registry reference (`docker://REF` or a bare `REF`).
    Registry(Reference),
    /// An image in containerd (`containerd:[ADDRESS#]NAMESPACE/REF`).
    Containerd(crate::transport::containerd::ContainerdTarget),
    /// podman's image store, written through `podman load` (`podman:REF`).
    Podman {
        /// The repository as podman names it (`localhost/app`).
        repository: String,
        /// The tag, if one was given.
        tag: Option<String>,
    },
}

/// The transport prefixes, one table: the endpoint parser, the bare-path rule of
/// [`Endpoint::from_user_input`] and `--output`'s bare values all ask [`has_transport_prefix`].
pub const TRANSPORT_PREFIXES: &[&str] =
    &["oci:", "oci-archive:", "docker-archive:", "docker://", "containerd:", "podman:"];

/// Whether `s` starts with one of [`TRANSPORT_PREFIXES`].
pub fn has_transport_prefix(s: &str) -> bool {
    TRANSPORT_PREFIXES.iter().any(|p| s.starts_with(p))
}

/// The runtime transports' parse (`containerd:`, `podman:`), if `s` names one.
fn parse_runtime(s: &str) -> Option<Result<Endpoint>> {
    if let Some(rest) = s.strip_prefix("containerd:") {
        return Some(crate::transport::containerd::ContainerdTarget::parse(rest, s).map(Endpoint::Containerd));
    }
    let rest = s.strip_prefix("podman:")?;
    Some(crate::transport::podman::podman_name(rest).map(|(repository, tag)| Endpoint::Podman { repository, tag }))
}

/// `DIR[:NAME|@DIGEST]` of `oci:` and `oci-archive:`. A digest follows the last `@`; a name
/// follows the first `:`, as skopeo splits it, so a name may itself hold `:` and `/`
/// (`oci:DIR:localhost/app:v1` names podman's `ref.name` `localhost/app:v1`); the name is an
/// OCI `ref.name`. A path holding `:` cannot be named this way (skopeo's rule too).
fn split_path_ref(spec: &str, whole: &str) -> Result<(PathBuf, Option<String>)> {
    if spec.is_empty() {
        return Err(Error::InvalidReference { reference: whole.into(), reason: "empty path".into() });
    }
    if let Some((p, d)) = spec.rsplit_once('@') {
        if d.contains(':') && !p.contains(':') {
            d.parse::<crate::model::digest::Digest>()?;
            return Ok((PathBuf::from(p), Some(d.to_string())));
        }
    }
    if let Some((p, t)) = spec.split_once(':') {
        if !p.is_empty() {
            check_ref_name(t, whole)?;
            return Ok((PathBuf::from(p), Some(t.to_string())));
        }
    }
    Ok((PathBuf::from(spec), None))
}

impl FromStr for Endpoint {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        if let Some(rest) = s.strip_prefix("oci:") {
            let (path, reference) = split_path_ref(rest, s)?;
            return Ok(Endpoint::Layout { path, reference });
        }
        if let Some(rest) = s.strip_prefix("oci-archive:") {
            let (path, reference) = split_path_ref(rest, s)?;
            return Ok(Endpoint::OciArchive { path, reference });
        }
        if let Some(rest) = s.strip_prefix("docker-archive:") {
            let (path, reference) = match rest.split_once(':') {
                Some((p, r)) if !r.is_empty() => (p, Some(r.to_string())),
                _ => (rest, None),
            };
            if path.is_empty() {
                return Err(Error::InvalidReference { reference: s.into(), reason: "empty path".into() });
            }
            return Ok(Endpoint::DockerArchive { path: PathBuf::from(path), reference });
        }
        if let Some(ep) = parse_runtime(s) {
            return ep;
        }
        // A reference pasted as a URL: `https://HOST/REPO:TAG` is the reference (hoist speaks
        // TLS first anyway); `http://` would ask for plain HTTP, which is a registry setting.
        if let Some(rest) = s.strip_prefix("https://") {
            return Ok(Endpoint::Registry(rest.trim_end_matches('/').parse()?));
        }
        if s.starts_with("http://") {
            return Err(Error::InvalidReference {
                reference: s.into(),
                reason: "a URL; write the reference as HOST/REPO[:TAG] (plain HTTP for a registry: --insecure-registry HOST)".into(),
            });
        }
        let r = s.strip_prefix("docker://").unwrap_or(s);
        Ok(Endpoint::Registry(r.parse()?))
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sep = |r: &str| crate::model::reference::TagOrDigest::parse(r).separator();
        match self {
            Endpoint::Layout { path, reference } => {
                write!(f, "oci:{}", path.display())?;
                if let Some(r) = reference {
                    write!(f, "{}{r}", sep(r))?;
                }
                Ok(())
            }
            Endpoint::OciArchive { path, reference } => {
                write!(f, "oci-archive:{}", path.display())?;
                if let Some(r) = reference {
                    write!(f, "{}{r}", sep(r))?;
                }
                Ok(())
            }
            Endpoint::DockerArchive { path, reference } => {
                write!(f, "docker-archive:{}", path.display())?;
                if let Some(r) = reference {
                    write!(f, ":{r}")?;
                }
                Ok(())
            }
            Endpoint::Registry(r) => write!(f, "docker://{r}"),
            Endpoint::Containerd(t) => f.write_str(&t.spec()),
            Endpoint::Podman { repository, tag } => {
                write!(f, "podman:{repository}")?;
                if let Some(t) = tag {
                    write!(f, ":{t}")?;
                }
                Ok(())
            }
        }
    }
}

/// Whether `s` is spelled as a local path: absolute, or starting with `./` or `../`, or `.`.
fn looks_local(s: &str) -> bool {
    s.starts_with('/') || s.starts_with("./") || s.starts_with("../") || s == "."
}

impl Endpoint {
    /// Parse an endpoint as a user types it on a command line: [`FromStr`] plus one rule, a
    /// bare path means an OCI layout (`oci:`). A bare path is one spelled as a path (starting
    /// with `/`, `./`, `../`, or `.` alone) or a directory holding an `oci-layout` file, either
    /// optionally followed by `:TAG` or `@DIGEST`. Looks at the filesystem (one `stat` or two),
    /// so `localhost:5000/a` stays a registry reference unless such a directory exists.
    pub fn from_user_input(s: &str) -> Result<Endpoint> {
        let has_transport = s.contains("://") || has_transport_prefix(s);
        if !has_transport {
            let path_part = match s.rsplit_once('@') {
                Some((p, d)) if d.contains(':') && !p.contains(':') => p,
                _ => s.split_once(':').map_or(s, |(p, _)| p),
            };
            let is_layout = |p: &str| std::path::Path::new(p).join("oci-layout").exists();
            if looks_local(s) || is_layout(path_part) || is_layout(s) {
                return format!("oci:{s}").parse();
            }
        }
        s.parse()
    }

    /// The tag or digest named, if any, read once here: what a source resolves
    /// ([`Source::resolve`]; a docker-archive's `repo:tag` is a name it keeps, a tag here).
    pub fn reference(&self) -> Option<TagOrDigest> {
        let of =
            |r: &Reference| r.digest.clone().map(TagOrDigest::Digest).or_else(|| r.tag.clone().map(TagOrDigest::Tag));
        match self {
            Endpoint::Layout { reference, .. }
            | Endpoint::OciArchive { reference, .. }
            | Endpoint::DockerArchive { reference, .. } => reference.as_deref().map(TagOrDigest::parse),
            Endpoint::Registry(r) => of(r),
            Endpoint::Containerd(t) => of(&t.reference),
            Endpoint::Podman { tag, .. } => tag.clone().map(TagOrDigest::Tag),
        }
    }

    /// The tag named (not a digest).
    pub fn tag(&self) -> Option<String> {
        match self.reference()? {
            TagOrDigest::Tag(t) => Some(t),
            TagOrDigest::Digest(_) => None,
        }
    }
}

/// Open `ep` for reading.
pub fn open_source(ep: &Endpoint, client: &Arc<Client>) -> Result<Box<dyn Source>> {
    open_source_as(ep, client, MadeManifest::Docker)
}

/// Open `ep` for reading; a docker-archive without `index.json` gets manifests of `made`
/// (see [`native_manifest_format`]).
pub fn open_source_as(ep: &Endpoint, client: &Arc<Client>, made: MadeManifest) -> Result<Box<dyn Source>> {
    Ok(match ep {
        Endpoint::Layout { path, .. } => Box::new(crate::transport::layout::Layout::open(path)?),
        Endpoint::Registry(r) => Box::new(client.repository(r)),
        Endpoint::OciArchive { path, .. } => Box::new(crate::transport::archive::oci::OciArchive::open(path)?),
        Endpoint::DockerArchive { path, .. } => {
            Box::new(crate::transport::archive::docker::DockerArchive::open_as(path, made)?)
        }
        Endpoint::Containerd(t) => open_containerd(t)?,
        Endpoint::Podman { .. } => {
            return Err(Error::Unsupported(format!(
                "{ep}: podman is a destination only; read with containers-storage tools"
            )))
        }
    })
}

/// The manifest format native to the destination `dst`, made for sources that carry no
/// manifest bytes (a docker-archive's `manifest.json`), as skopeo does: OCI for `oci:` and
/// `oci-archive:`, Docker schema 2 for `docker-archive:` and registries.
pub fn native_manifest_format(dst: &Endpoint) -> MadeManifest {
    match dst {
        // containerd stores either; podman gets an OCI archive.
        Endpoint::Layout { .. } | Endpoint::OciArchive { .. } | Endpoint::Containerd(_) | Endpoint::Podman { .. } => {
            MadeManifest::Oci
        }
        Endpoint::DockerArchive { .. } | Endpoint::Registry(_) => MadeManifest::Docker,
    }
}

/// Open `ep` for writing. `platform` picks the image a docker-archive gets from an index.
pub async fn open_destination(
    ep: &Endpoint,
    client: &Arc<Client>,
    platform: Option<&Platform>,
) -> Result<Box<dyn Destination>> {
    Ok(match ep {
        Endpoint::Layout { path, .. } => Box::new(crate::transport::layout::Layout::create(path)?),
        Endpoint::Registry(r) => Box::new(client.repository(r)),
        Endpoint::OciArchive { path, .. } => {
            Box::new(crate::transport::archive::oci::OciArchiveWriter::create(path).await?)
        }
        Endpoint::DockerArchive { path, reference } => {
            let tags = reference.iter().map(|r| docker_repo_tag(r, &ep.to_string())).collect::<Result<Vec<_>>>()?;
            Box::new(
                crate::transport::archive::docker::DockerArchiveWriter::create(path, tags, platform.cloned()).await?,
            )
        }
        Endpoint::Containerd(t) => open_containerd(t)?,
        Endpoint::Podman { repository, .. } => {
            Box::new(crate::transport::podman::PodmanLoad::spawn(repository, &[]).await?)
        }
    })
}

/// containerd, when this build has it (the `containerd` feature).
#[cfg(feature = "containerd")]
fn open_containerd(
    t: &crate::transport::containerd::ContainerdTarget,
) -> Result<Box<crate::transport::containerd::Containerd>> {
    Ok(Box::new(crate::transport::containerd::Containerd::connect(t.clone())?))
}

#[cfg(not(feature = "containerd"))]
fn open_containerd<T: ?Sized>(t: &crate::transport::containerd::ContainerdTarget) -> Result<Box<T>> {
    Err(Error::Unsupported(format!("{}: hoist was built without the containerd feature", t.spec())))
}

/// The `org.opencontainers.image.base.name` value for a base named `name` as the user typed
/// it: a plain, normalized distribution reference (`docker://alpine:3` ->
/// `docker.io/library/alpine:3`), as BuildKit writes it; none for a local base (a layout or
/// archive path says nothing to whoever reads the image elsewhere).
pub(crate) fn base_name_annotation(name: &str) -> Option<String> {
    match Endpoint::from_user_input(name) {
        Ok(Endpoint::Registry(r)) => Some(r.normalized()),
        _ => None,
    }
}

/// `repo[:tag]` as docker-archive `RepoTags` hold it: normalized as docker and containerd
/// store it (`me/app` -> `docker.io/me/app:latest`), so `ctr import` and Kubernetes find it.
fn docker_repo_tag(r: &str, whole: &str) -> Result<String> {
    let bad = |why: String| Error::InvalidReference { reference: whole.to_string(), reason: why };
    let parsed: Reference = r.parse().map_err(|_| bad(format!("{r:?} is not REPO[:TAG]")))?;
    if parsed.digest.is_some() {
        return Err(bad("docker-archive names take a tag, not a digest".into()));
    }
    Ok(parsed.normalized())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_transports() {
        assert_eq!(
            "oci:./out:v1".parse::<Endpoint>().unwrap(),
            Endpoint::Layout { path: "./out".into(), reference: Some("v1".into()) }
        );
        assert_eq!("oci:/a/b".parse::<Endpoint>().unwrap(), Endpoint::Layout { path: "/a/b".into(), reference: None });
        let d = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
        assert_eq!(
            format!("oci:x@{d}").parse::<Endpoint>().unwrap(),
            Endpoint::Layout { path: "x".into(), reference: Some(d.into()) }
        );
        assert!(matches!("localhost:5000/a:b".parse::<Endpoint>().unwrap(), Endpoint::Registry(_)));
        assert!(matches!("docker://localhost:5000/a".parse::<Endpoint>().unwrap(), Endpoint::Registry(_)));
        assert_eq!(
            "docker-archive:x.tar:repo/a:v1".parse::<Endpoint>().unwrap(),
            Endpoint::DockerArchive { path: "x.tar".into(), reference: Some("repo/a:v1".into()) }
        );
        assert!("oci:dir:bad tag".parse::<Endpoint>().is_err());
    }

    #[test]
    fn ref_names_with_colons_and_slashes_split_as_skopeo_does() {
        let layout = |p: &str, r: &str| Endpoint::Layout { path: p.into(), reference: Some(r.into()) };
        assert_eq!("oci:dir:localhost/app:v1".parse::<Endpoint>().unwrap(), layout("dir", "localhost/app:v1"));
        assert_eq!(
            "oci-archive:/t/a.tar:docker.io/library/alpine:3".parse::<Endpoint>().unwrap(),
            Endpoint::OciArchive { path: "/t/a.tar".into(), reference: Some("docker.io/library/alpine:3".into()) }
        );
        assert_eq!(Endpoint::from_user_input("./d:localhost/app:v1").unwrap(), layout("./d", "localhost/app:v1"));
        // Display gives back what parses to the same endpoint.
        for s in ["oci:dir:localhost/app:v1", "oci:dir:sha-x:1", "oci:dir:v1"] {
            assert_eq!(s.parse::<Endpoint>().unwrap().to_string(), s);
        }
        assert_eq!(docker_repo_tag("me/app", "x").unwrap(), "docker.io/me/app:latest");
        assert_eq!(docker_repo_tag("localhost/app:v1", "x").unwrap(), "localhost/app:v1");
    }

    #[test]
    fn parses_runtime_transports() {
        let e = Endpoint::from_user_input("containerd:/run/k3s/c.sock#k8s.io/app:v1").unwrap();
        let Endpoint::Containerd(t) = &e else { panic!("{e:?}") };
        assert_eq!((t.address.to_str(), t.namespace.as_str()), (Some("/run/k3s/c.sock"), "k8s.io"));
        assert_eq!(e.tag().as_deref(), Some("v1"));
        assert_eq!(e.to_string(), "containerd:/run/k3s/c.sock#k8s.io/docker.io/library/app:v1");
        assert_eq!(e.to_string().parse::<Endpoint>().unwrap(), e);
        let e = Endpoint::from_user_input("podman:app:v2").unwrap();
        assert_eq!(e, Endpoint::Podman { repository: "localhost/app".into(), tag: Some("v2".into()) });
        assert_eq!(e.to_string(), "podman:localhost/app:v2");
        assert!("containerd:ns/".parse::<Endpoint>().is_err());
    }

    #[test]
    fn user_input_bare_paths_are_layouts() {
        let layout = |p: &str, r: Option<&str>| Endpoint::Layout { path: p.into(), reference: r.map(String::from) };
        assert_eq!(Endpoint::from_user_input("./out").unwrap(), layout("./out", None));
        assert_eq!(Endpoint::from_user_input("../out:v1").unwrap(), layout("../out", Some("v1")));
        assert_eq!(Endpoint::from_user_input("/abs/dir").unwrap(), layout("/abs/dir", None));
        assert_eq!(Endpoint::from_user_input(".").unwrap(), layout(".", None));
        // Registry references and explicit transports are left alone.
        assert!(matches!(Endpoint::from_user_input("localhost:5000/a:b").unwrap(), Endpoint::Registry(_)));
        assert!(matches!(Endpoint::from_user_input("docker://x/y").unwrap(), Endpoint::Registry(_)));
        assert!(matches!(Endpoint::from_user_input("oci-archive:/a.tar").unwrap(), Endpoint::OciArchive { .. }));
    }

    #[test]
    fn user_input_directory_with_oci_layout_is_a_layout() {
        // A relative name that would otherwise be a registry reference (docker.io/library/NAME);
        // unit tests run in the crate directory.
        let name = format!("endpoint-test-layout-{}", std::process::id());
        let _ = std::fs::remove_dir_all(&name);
        std::fs::create_dir(&name).unwrap();
        let is_registry = matches!(Endpoint::from_user_input(&name), Ok(Endpoint::Registry(_)));
        std::fs::write(std::path::Path::new(&name).join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        let d = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
        let got: Vec<_> = [name.clone(), format!("{name}:v2"), format!("{name}@{d}")]
            .iter()
            .map(|input| Endpoint::from_user_input(input).ok())
            .collect();
        let _ = std::fs::remove_dir_all(&name);
        assert!(is_registry, "without oci-layout, {name} is a registry reference");
        let layout =
            |r: Option<&str>| Some(Endpoint::Layout { path: name.clone().into(), reference: r.map(String::from) });
        assert_eq!(got, vec![layout(None), layout(Some("v2")), layout(Some(d))]);
    }
}
