//! `--output` in buildx's syntax, shared by every command that produces content:
//! `type=oci,dest=FILE|DIR[,tar=false][,name=REF]`, `type=docker,dest=FILE[,name=REF]`,
//! `type=image|registry,name=REF[,push=true]`, `type=local-layout,dest=DIR`, or simply a
//! transport (`oci:DIR:TAG`, `docker://REF`, …). `export` writes one root to each output
//! with the one graph copy; `write_metadata` writes buildx-style `--metadata-file` JSON.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use crate::copy::{self, CopyOptions, CopyReport};
use crate::error::{Error, Result};
use crate::model::descriptor::{Descriptor, Platform};
use crate::model::reference::Reference;
use crate::transport::registry::Client;
use crate::transport::{open_destination, Endpoint};
use crate::transport::{Progress, Source};

/// One parsed `--output`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputSpec {
    /// Where the content goes.
    pub endpoint: Endpoint,
    /// Tags to give the root at this destination.
    pub tags: Vec<String>,
    /// Image names (`repo:tag`) this output stands for, for metadata.
    pub names: Vec<String>,
    /// `type=image` without `push=true`: the result stays in the local store only.
    pub local_only: bool,
}

fn bad(spec: &str, why: impl Into<String>) -> Error {
    Error::InvalidReference { reference: spec.to_string(), reason: why.into() }
}

/// Split `k=v,k2="a,b"` (values may be double-quoted to hold commas).
fn split_csv(spec: &str) -> Result<BTreeMap<String, Vec<String>>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut fields = Vec::new();
    for c in spec.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    if quoted {
        return Err(bad(spec, "unbalanced quote"));
    }
    fields.push(cur);
    for f in fields.into_iter().filter(|f| !f.trim().is_empty()) {
        let (k, v) = f.split_once('=').ok_or_else(|| bad(spec, format!("{f:?} is not key=value")))?;
        out.entry(k.trim().to_string()).or_default().push(v.trim().to_string());
    }
    Ok(out)
}

fn truthy(v: Option<&String>, default: bool) -> bool {
    match v.map(|s| s.as_str()) {
        None => default,
        Some("true") | Some("1") | Some("yes") | Some("") => true,
        _ => false,
    }
}

/// Tag part of an image name, if any.
fn tag_of(name: &str) -> Option<String> {
    name.parse::<Reference>().ok().and_then(|r| r.tag)
}

/// Parse one `--output` value.
pub fn parse_output(spec: &str) -> Result<OutputSpec> {
    if !spec.contains("type=") {
        let endpoint: Endpoint = spec.parse()?;
        let tags = endpoint.tag().into_iter().collect();
        let names = match &endpoint {
            Endpoint::Registry(r) => vec![r.to_string()],
            _ => vec![],
        };
        return Ok(OutputSpec { endpoint, tags, names, local_only: false });
    }
    let kv = split_csv(spec)?;
    let one = |k: &str| kv.get(k).and_then(|v| v.last());
    let names: Vec<String> = kv
        .get("name")
        .into_iter()
        .flatten()
        .flat_map(|n| n.split(',').map(str::to_string))
        .filter(|n| !n.is_empty())
        .collect();
    let dest = one("dest").map(PathBuf::from);
    let ty = one("type").ok_or_else(|| bad(spec, "missing type="))?.as_str();
    match ty {
        "oci" | "tar" => {
            let dest = dest.ok_or_else(|| bad(spec, "type=oci needs dest=FILE|DIR"))?;
            let tags: Vec<String> = names.iter().filter_map(|n| tag_of(n)).collect();
            let endpoint = if truthy(one("tar"), true) {
                Endpoint::OciArchive { path: dest, reference: None }
            } else {
                Endpoint::Layout { path: dest, reference: None }
            };
            Ok(OutputSpec { endpoint, tags, names, local_only: false })
        }
        "local-layout" | "layout" | "oci-layout" => {
            let dest = dest.ok_or_else(|| bad(spec, "type=local-layout needs dest=DIR"))?;
            let tags: Vec<String> = names.iter().filter_map(|n| tag_of(n)).collect();
            Ok(OutputSpec {
                endpoint: Endpoint::Layout { path: dest, reference: None },
                tags,
                names,
                local_only: false,
            })
        }
        "docker" => {
            let dest =
                dest.ok_or_else(|| bad(spec, "type=docker needs dest=FILE (hoist has no daemon to load into)"))?;
            let reference = names.first().cloned();
            Ok(OutputSpec {
                endpoint: Endpoint::DockerArchive { path: dest, reference },
                tags: vec![],
                names,
                local_only: false,
            })
        }
        "image" | "registry" => {
            let push = truthy(one("push"), ty == "registry");
            let name = names.first().ok_or_else(|| bad(spec, format!("type={ty} needs name=REF")))?;
            if names.len() > 1 {
                // Several names: one output each is clearer; keep the first here.
                tracing::warn!("{spec}: only the first name is used; repeat --output for more");
            }
            let r: Reference = name.parse()?;
            let tags = r.tag.iter().cloned().collect();
            Ok(OutputSpec { endpoint: Endpoint::Registry(r), tags, names, local_only: !push })
        }
        "containerd" | "podman" => runtime_output(spec, ty, &kv, names),
        other => Err(bad(
            spec,
            format!("unknown output type {other:?} (oci, docker, image, registry, local-layout, containerd, podman)"),
        )),
    }
}

/// `type=containerd[,address=SOCKET][,namespace=NS][,name=REF][,unpack=BOOL]` and
/// `type=podman[,name=REF]`: straight into the runtime's image store.
fn runtime_output(spec: &str, ty: &str, kv: &BTreeMap<String, Vec<String>>, names: Vec<String>) -> Result<OutputSpec> {
    let allowed: &[&str] =
        if ty == "containerd" { &["type", "address", "namespace", "name", "unpack"] } else { &["type", "name"] };
    if let Some(k) = kv.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(bad(spec, format!("type={ty} takes no {k}= (only {})", allowed.join(", "))));
    }
    let one = |k: &str| kv.get(k).and_then(|v| v.last());
    let name = names.first().ok_or_else(|| bad(spec, format!("type={ty} needs name=REF")))?;
    let endpoint = if ty == "containerd" {
        use crate::transport::containerd::ContainerdTarget;
        let mut t = ContainerdTarget::new(
            one("address").map(PathBuf::from),
            one("namespace").cloned(),
            name.parse().map_err(|e: Error| bad(spec, e.to_string()))?,
        );
        ContainerdTarget::parse(&format!("{}/{name}", t.namespace), spec)?;
        t.unpack = truthy(one("unpack"), true);
        Endpoint::Containerd(t)
    } else {
        let (repository, tag) = crate::transport::podman::podman_name(name)?;
        Endpoint::Podman { repository, tag }
    };
    let tags = vec![endpoint.tag().unwrap_or_else(|| crate::model::reference::DEFAULT_TAG.to_string())];
    Ok(OutputSpec { endpoint, tags, names, local_only: false })
}

/// What one output received.
#[derive(Debug, Serialize)]
pub struct ExportResult {
    /// The destination's location, as its transport names it.
    pub destination: String,
    /// What the copy did there.
    pub report: CopyReport,
}

/// Copy `root` from `src` to each output in turn (build once, write to each).
pub async fn export(
    src: &dyn Source,
    root: &Descriptor,
    outputs: &[OutputSpec],
    client: &Arc<Client>,
    platform: Option<&Platform>,
    opts: &CopyOptions,
    progress: &dyn Progress,
) -> Result<Vec<ExportResult>> {
    let mut results = Vec::new();
    for out in outputs.iter().filter(|o| !o.local_only) {
        let dst = open_destination(&out.endpoint, client, platform).await?;
        let report = copy::graph(src, dst.as_ref(), root, &out.tags, opts, progress).await?;
        dst.finish().await?;
        results.push(ExportResult { destination: dst.location(), report });
    }
    Ok(results)
}

/// Write buildx-style metadata: `containerimage.digest`, `containerimage.descriptor`,
/// `image.name`, plus `hoist.outputs`. Written atomically.
pub fn write_metadata(
    path: &Path,
    root: &Descriptor,
    outputs: &[OutputSpec],
    extra: &BTreeMap<String, serde_json::Value>,
) -> Result<()> {
    let mut m = serde_json::Map::new();
    let mut d = root.clone();
    d.annotations.remove(crate::model::media::ANNOTATION_REF_NAME);
    m.insert("containerimage.digest".into(), serde_json::Value::from(d.digest.to_string()));
    m.insert("containerimage.descriptor".into(), serde_json::to_value(&d).map_err(|e| Error::Other(e.to_string()))?);
    let names: Vec<String> = outputs.iter().flat_map(|o| o.names.iter().cloned()).collect();
    if !names.is_empty() {
        m.insert("image.name".into(), serde_json::Value::from(names.join(",")));
    }
    let dests: Vec<String> = outputs.iter().map(|o| o.endpoint.to_string()).collect();
    m.insert("hoist.outputs".into(), serde_json::Value::from(dests));
    for (k, v) in extra {
        m.insert(k.clone(), v.clone());
    }
    let bytes = serde_json::to_vec_pretty(&serde_json::Value::Object(m)).map_err(|e| Error::Other(e.to_string()))?;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp = crate::transport::public_temp(".metadata-").tempfile_in(dir).map_err(|e| Error::io(dir, e))?;
    std::io::Write::write_all(&mut tmp, &bytes).map_err(|e| Error::io(path, e))?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

/// Read a metadata file back: the root descriptor and the image names.
pub fn read_metadata(path: &Path) -> Result<(Descriptor, Vec<String>)> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let v: serde_json::Value =
        serde_json::from_slice(&raw).map_err(|e| Error::malformed("metadata file", path.display().to_string(), e))?;
    let d = v
        .get("containerimage.descriptor")
        .cloned()
        .ok_or_else(|| Error::malformed("metadata file", path.display().to_string(), "no containerimage.descriptor"))?;
    let d: Descriptor =
        serde_json::from_value(d).map_err(|e| Error::malformed("metadata file", path.display().to_string(), e))?;
    let names = v
        .get("image.name")
        .and_then(|n| n.as_str())
        .map(|s| s.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    Ok((d, names))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_buildx_outputs() {
        let o = parse_output("type=oci,dest=out.tar,name=example.com/a:v1").unwrap();
        assert_eq!(o.endpoint, Endpoint::OciArchive { path: "out.tar".into(), reference: None });
        assert_eq!(o.tags, vec!["v1".to_string()]);
        let o = parse_output("type=oci,dest=dir,tar=false").unwrap();
        assert!(matches!(o.endpoint, Endpoint::Layout { .. }));
        let o = parse_output("type=docker,dest=img.tar,name=foo:v2").unwrap();
        assert_eq!(o.endpoint, Endpoint::DockerArchive { path: "img.tar".into(), reference: Some("foo:v2".into()) });
        let o = parse_output("type=image,name=localhost:5000/x:y,push=true").unwrap();
        assert!(!o.local_only && matches!(o.endpoint, Endpoint::Registry(_)));
        assert!(parse_output("type=image,name=localhost:5000/x:y").unwrap().local_only);
        assert!(!parse_output("type=registry,name=localhost:5000/x:y").unwrap().local_only);
        assert!(parse_output("type=docker").is_err());
        assert!(parse_output("type=nope,dest=x").is_err());
        let o = parse_output("oci:dir:v3").unwrap();
        assert_eq!(o.tags, vec!["v3".to_string()]);
    }

    #[test]
    fn parses_runtime_outputs() {
        let o = parse_output("type=containerd,address=/tmp/c.sock,namespace=k8s.io,name=app:v1,unpack=false").unwrap();
        let Endpoint::Containerd(t) = &o.endpoint else { panic!("{:?}", o.endpoint) };
        assert_eq!((t.address.to_str(), t.namespace.as_str(), t.unpack), (Some("/tmp/c.sock"), "k8s.io", false));
        assert_eq!(t.image_name("v1").unwrap(), "docker.io/library/app:v1");
        assert_eq!(o.tags, vec!["v1".to_string()]);
        let o = parse_output("type=containerd,name=quay.io/a/b").unwrap();
        let Endpoint::Containerd(t) = &o.endpoint else { panic!() };
        assert_eq!((t.namespace.as_str(), t.unpack), ("default", true));
        assert_eq!(o.tags, vec!["latest".to_string()]);
        let o = parse_output("type=podman,name=app:v2").unwrap();
        assert_eq!(o.endpoint, Endpoint::Podman { repository: "localhost/app".into(), tag: Some("v2".into()) });
        assert!(parse_output("type=containerd").is_err());
        assert!(parse_output("type=podman,name=a,dest=x").is_err());
        assert!(parse_output("type=containerd,name=a,namespace=b@d").is_err());
    }
}
