//! `--output` in buildx's syntax, shared by every command that produces content:
//! `type=oci,dest=FILE|DIR[,tar=false][,name=REF]`, `type=docker,dest=FILE[,name=REF]`,
//! `type=image|registry,name=REF[,REF2][,push=true][,push-by-digest=true][,registry.insecure=true]`,
//! `type=local-layout,dest=DIR`, the filesystem as `type=local,dest=DIR` or `type=tar,dest=FILE`
//! (a bare `DIR` is `type=local`), or simply a transport (`oci:DIR:TAG`, `docker://REF`, …).
//! Every key is honoured or refused by name (see [`parse_output`]); keys that change what is
//! built (`annotation.*`, `compression*`) are carried in [`OutputSpec::build_keys`] for the
//! builder. `export` writes one root to each output with the one graph copy (or
//! [`crate::export`] for a filesystem); `write_metadata` writes buildx-style `--metadata-file` JSON.

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
    /// Where the content goes (for a [`FilesystemOutput`]: a layout at the same path, never
    /// written; only its registry-ness is looked at).
    pub endpoint: Endpoint,
    /// Tags to give the root at this destination.
    pub tags: Vec<String>,
    /// Image names (`repo:tag`) this output stands for, for metadata.
    pub names: Vec<String>,
    /// `type=image` without `push=true`: the result stays in the local store only.
    pub local_only: bool,
    /// `name=a,b` on a registry output: the further references, each pushed as well.
    pub more: Vec<Reference>,
    /// `type=local`/`type=tar` (or a bare `--output DIR`): the image's filesystem, not the image.
    pub filesystem: Option<FilesystemOutput>,
    /// `registry.insecure=true`: plain HTTP for this output's registry (buildx: "push to an
    /// insecure HTTP registry"), as `--insecure-registry` gives it.
    pub insecure: bool,
    /// Keys that change what is built (`annotation.*`, `annotation-manifest.*`, `compression`,
    /// `compression-level`, `force-compression`), as typed: `hoist build` honours them, a
    /// command that does not build layers refuses them by name ([`OutputSpec::refuse_build_keys`]).
    pub build_keys: BTreeMap<String, String>,
}

/// A filesystem export (`type=local,dest=DIR` or `type=tar,dest=FILE`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilesystemOutput {
    /// The directory (local) or tar file (tar; `-` is standard output).
    pub dest: PathBuf,
    /// A tar file rather than a directory.
    pub tar: bool,
}

impl OutputSpec {
    /// An output to `endpoint` with `tags`, standing for `names`, and no keys beyond those.
    pub fn new(endpoint: Endpoint, tags: Vec<String>, names: Vec<String>) -> OutputSpec {
        OutputSpec {
            endpoint,
            tags,
            names,
            local_only: false,
            more: vec![],
            filesystem: None,
            insecure: false,
            build_keys: BTreeMap::new(),
        }
    }

    /// Every content destination this output writes to, with the tags each gets: the endpoint,
    /// then one per further `name=` ([`OutputSpec::more`]).
    pub fn destinations(&self) -> Vec<(Endpoint, Vec<String>)> {
        let more = self.more.iter().map(|r| (Endpoint::Registry(r.clone()), r.tag.iter().cloned().collect()));
        std::iter::once((self.endpoint.clone(), self.tags.clone())).chain(more).collect()
    }

    /// Manifest annotations the keys ask for (`annotation.K=V`, `annotation-manifest.K=V`).
    pub fn annotations(&self) -> BTreeMap<String, String> {
        self.build_keys
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix("annotation-manifest.")
                    .or(k.strip_prefix("annotation."))
                    .map(|k| (k.to_string(), v.clone()))
            })
            .collect()
    }

    /// Index annotations the keys ask for (`annotation-index.K=V`): on the index a
    /// multi-platform build makes.
    pub fn index_annotations(&self) -> BTreeMap<String, String> {
        self.keys_under("annotation-index.")
    }

    /// Annotations for the index's descriptor in an OCI layout's or archive's `index.json`
    /// (`annotation-index-descriptor.K=V`, type=oci and the layout types only, as BuildKit).
    pub fn index_descriptor_annotations(&self) -> BTreeMap<String, String> {
        self.keys_under("annotation-index-descriptor.")
    }

    fn keys_under(&self, prefix: &str) -> BTreeMap<String, String> {
        self.build_keys.iter().filter_map(|(k, v)| k.strip_prefix(prefix).map(|k| (k.to_string(), v.clone()))).collect()
    }

    /// The layer compression the keys ask for, in hoist's syntax (`none`, `gzip:6`, `zstd:3`).
    pub fn compression(&self) -> Option<String> {
        let alg = self.build_keys.get("compression").map(|c| match c.as_str() {
            "uncompressed" => "none".to_string(),
            other => other.to_string(),
        });
        match (alg, self.build_keys.get("compression-level")) {
            (Some(a), Some(l)) if a != "none" => Some(format!("{a}:{l}")),
            (Some(a), _) => Some(a),
            (None, Some(l)) => Some(format!("gzip:{l}")),
            (None, None) => None,
        }
    }

    /// `force-compression=true`.
    pub fn force_compression(&self) -> bool {
        truthy(self.build_keys.get("force-compression"), false)
    }

    /// For a command that writes what is already built (no layers of its own): an error naming
    /// the first key that would change what is built, since it cannot be honoured there.
    pub fn refuse_build_keys(&self, command: &str) -> Result<()> {
        match self.build_keys.keys().next() {
            Some(k) => Err(Error::Usage(format!(
                "--output key {k:?}: {command} does not build image layers, so it cannot honour it (hoist build does)"
            ))),
            None => Ok(()),
        }
    }
}

fn bad(spec: &str, why: impl Into<String>) -> Error {
    Error::Usage(format!("--output {}: {}", crate::error::printable(&format!("{spec:?}")), why.into()))
}

/// Split `k=v,k2="a,b"` (values may be double-quoted to hold commas; a field without `=`
/// continues the previous value, as buildx's `name=a,b` does).
fn split_csv(spec: &str) -> Result<Vec<(String, String)>> {
    let mut out: Vec<(String, String)> = Vec::new();
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
        match f.split_once('=') {
            Some((k, v)) => out.push((k.trim().to_string(), v.trim().to_string())),
            // `name=a,b`: `b` is a second name.
            None => match out.last_mut() {
                Some((k, v)) if k == "name" => {
                    v.push(',');
                    v.push_str(f.trim());
                }
                _ => return Err(bad(spec, format!("{f:?} is not key=value"))),
            },
        }
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

/// A boolean key's value: true/false (1/0, yes/no); anything else is an error naming the key.
fn boolean(spec: &str, key: &str, v: &str) -> Result<bool> {
    match v {
        "true" | "1" | "yes" | "" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(bad(spec, format!("{key}={v:?}: expected true or false"))),
    }
}

/// Tag part of an image name, if any.
fn tag_of(name: &str) -> Option<String> {
    name.parse::<Reference>().ok().and_then(|r| r.tag)
}

/// The output types and the keys each takes (besides `type`). Keys of buildx that hoist
/// refuses are in [`REFUSED_KEYS`]; anything in neither list is an unknown key.
const TYPE_KEYS: &[(&str, &[&str])] = &[
    ("oci", &["dest", "name", "tar", "oci-mediatypes", BUILD]),
    ("docker", &["dest", "name", "tar", "oci-mediatypes", BUILD]),
    ("image", &["name", "push", "push-by-digest", "registry.insecure", "oci-mediatypes", BUILD]),
    ("registry", &["name", "push", "push-by-digest", "registry.insecure", "oci-mediatypes", BUILD]),
    ("local-layout", &["dest", "name", "oci-mediatypes", BUILD]),
    ("layout", &["dest", "name", "oci-mediatypes", BUILD]),
    ("oci-layout", &["dest", "name", "oci-mediatypes", BUILD]),
    ("local", &["dest"]),
    ("tar", &["dest"]),
    ("containerd", &["address", "namespace", "name", "unpack"]),
    ("podman", &["name"]),
];

/// Stands for the keys that change what is built, in [`TYPE_KEYS`].
const BUILD: &str = "<build>";

/// Whether `key` is one of the build keys (`annotation.K`, `annotation-manifest.K`, ...).
fn is_build_key(key: &str) -> bool {
    matches!(key, "compression" | "compression-level" | "force-compression")
        || ["annotation.", "annotation-manifest.", "annotation-index.", "annotation-index-descriptor."]
            .iter()
            .any(|p| key.strip_prefix(p).is_some_and(|k| !k.is_empty()))
}

/// buildx keys hoist knows and refuses, with why.
const REFUSED_KEYS: &[(&str, &str)] = &[
    (
        "annotation-manifest-descriptor.",
        "descriptor annotations of the index's entries are not supported; use annotation.KEY",
    ),
    ("unpack", "hoist has no image store to unpack into; use type=local,dest=DIR"),
    ("store", "hoist keeps every build in its store (--store)"),
    ("dangling-name-prefix", "hoist names untagged results by digest only"),
    ("name-canonical", "names are pushed as given"),
    ("oci-artifact", "hoist writes attestations as it builds them"),
    ("platform-split", "a filesystem export takes one platform (--platform)"),
    ("rewrite-timestamp", "set SOURCE_DATE_EPOCH or source_date_epoch in the build file"),
    ("buildinfo", "hoist records no build info"),
    ("buildinfo-attrs", "hoist records no build info"),
    ("attestation-inline", "hoist writes attestations as it builds them"),
    ("insecure", "use registry.insecure=true"),
    ("context", "hoist has no docker contexts"),
];

/// Parse one `--output` value. Every key is honoured or refused by name: an unknown key,
/// a key of another type, or a key hoist does not support is an error naming it.
pub fn parse_output(spec: &str) -> Result<OutputSpec> {
    if !spec.contains("type=") {
        return parse_bare(spec);
    }
    let kv = split_csv(spec)?;
    let mut seen = std::collections::BTreeSet::new();
    for (k, _) in &kv {
        if !seen.insert(k.as_str()) && k != "name" {
            return Err(bad(spec, format!("key {k:?} given twice")));
        }
    }
    let one = |k: &str| kv.iter().rev().find(|(key, _)| key == k).map(|(_, v)| v);
    let ty = one("type").ok_or_else(|| bad(spec, "missing type="))?.clone();
    let Some((_, allowed)) = TYPE_KEYS.iter().find(|(t, _)| *t == ty) else {
        let types = TYPE_KEYS.iter().map(|(t, _)| *t).collect::<Vec<_>>().join(", ");
        return Err(bad(spec, format!("unknown output type {ty:?} ({types})")));
    };
    for (k, _) in kv.iter().filter(|(k, _)| k != "type") {
        if allowed.contains(&k.as_str()) || (is_build_key(k) && allowed.contains(&BUILD)) {
            continue;
        }
        if let Some((_, why)) =
            REFUSED_KEYS.iter().find(|(r, _)| if r.ends_with('.') { k.starts_with(r) } else { k == r })
        {
            return Err(bad(spec, format!("key {k:?} is not supported: {why}")));
        }
        if is_build_key(k) || TYPE_KEYS.iter().any(|(_, keys)| keys.contains(&k.as_str())) {
            return Err(bad(spec, format!("key {k:?} does not apply to type={ty}")));
        }
        return Err(bad(spec, format!("unknown key {k:?}")));
    }
    let mut build_keys = BTreeMap::new();
    for (k, v) in kv.iter().filter(|(k, _)| is_build_key(k)) {
        build_keys.insert(k.clone(), v.clone());
    }
    check_build_keys(spec, &build_keys)?;
    if let Some(k) = build_keys.keys().find(|k| k.starts_with("annotation-index-descriptor.")) {
        if !matches!(ty.as_str(), "oci" | "local-layout" | "layout" | "oci-layout") {
            return Err(bad(
                spec,
                format!("key {k:?} does not apply to type={ty}: only an OCI layout's index.json keeps the index's descriptor (use annotation-index.KEY)"),
            ));
        }
    }
    if let Some(v) = one("oci-mediatypes") {
        if !boolean(spec, "oci-mediatypes", v)? && ty != "docker" {
            return Err(bad(spec, "oci-mediatypes=false is not supported: hoist writes OCI media types"));
        }
    }
    let names: Vec<String> = kv
        .iter()
        .filter(|(k, _)| k == "name")
        .flat_map(|(_, n)| n.split(',').map(|s| s.trim().to_string()))
        .filter(|n| !n.is_empty())
        .collect();
    let dest = one("dest").map(PathBuf::from);
    let tar = one("tar").map(|v| boolean(spec, "tar", v)).transpose()?;
    let mut out = match ty.as_str() {
        "oci" => {
            let dest = dest.ok_or_else(|| bad(spec, "type=oci needs dest=FILE|DIR"))?;
            let tags: Vec<String> = names.iter().filter_map(|n| tag_of(n)).collect();
            let endpoint = if tar.unwrap_or(true) {
                Endpoint::OciArchive { path: dest, reference: None }
            } else {
                Endpoint::Layout { path: dest, reference: None }
            };
            OutputSpec::new(endpoint, tags, names)
        }
        "local-layout" | "layout" | "oci-layout" => {
            let dest = dest.ok_or_else(|| bad(spec, format!("type={ty} needs dest=DIR")))?;
            let tags: Vec<String> = names.iter().filter_map(|n| tag_of(n)).collect();
            OutputSpec::new(Endpoint::Layout { path: dest, reference: None }, tags, names)
        }
        "docker" => {
            let dest =
                dest.ok_or_else(|| bad(spec, "type=docker needs dest=FILE (hoist has no daemon to load into)"))?;
            if tar == Some(false) {
                return Err(bad(spec, "tar=false is not supported for type=docker: a docker archive is a tar"));
            }
            let reference = names.first().cloned();
            // The first name is the archive's own; the others become more RepoTags.
            let tags = names.iter().skip(1).cloned().collect();
            OutputSpec::new(Endpoint::DockerArchive { path: dest, reference }, tags, names)
        }
        "image" | "registry" => {
            let push = one("push").map(|v| boolean(spec, "push", v)).transpose()?.unwrap_or(ty == "registry");
            let by_digest = one("push-by-digest").map(|v| boolean(spec, "push-by-digest", v)).transpose()?;
            let by_digest = by_digest.unwrap_or(false);
            let mut refs = Vec::new();
            for n in &names {
                let mut r: Reference = n.parse()?;
                if by_digest {
                    // No tag: the digest is in the metadata file (multi-node builds merge by it).
                    r.tag = None;
                }
                refs.push(r);
            }
            let mut refs = refs.into_iter();
            let first = refs.next().ok_or_else(|| bad(spec, format!("type={ty} needs name=REF")))?;
            let tags = first.tag.iter().cloned().collect();
            let mut o = OutputSpec::new(Endpoint::Registry(first), tags, names);
            o.more = refs.collect();
            o.local_only = !push;
            if by_digest && !push {
                return Err(bad(spec, "push-by-digest=true needs push=true (or type=registry)"));
            }
            o.insecure =
                one("registry.insecure").map(|v| boolean(spec, "registry.insecure", v)).transpose()?.unwrap_or(false);
            o
        }
        "local" | "tar" => {
            let dest = dest.ok_or_else(|| {
                bad(spec, format!("type={ty} needs dest={}", if ty == "tar" { "FILE" } else { "DIR" }))
            })?;
            if ty == "local" && dest == Path::new("-") {
                return Err(bad(spec, "type=local needs a directory; use type=tar,dest=- for standard output"));
            }
            filesystem_output(dest, ty == "tar")
        }
        "containerd" | "podman" => runtime_output(spec, &ty, one("address"), one("namespace"), one("unpack"), names)?,
        other => return Err(bad(spec, format!("unknown output type {other:?}"))),
    };
    out.build_keys = build_keys;
    Ok(out)
}

/// A filesystem export to `dest`.
fn filesystem_output(dest: PathBuf, tar: bool) -> OutputSpec {
    let mut o = OutputSpec::new(Endpoint::Layout { path: dest.clone(), reference: None }, vec![], vec![]);
    o.filesystem = Some(FilesystemOutput { dest, tar });
    o
}

/// Values of the build keys, checked before anything is built.
fn check_build_keys(spec: &str, keys: &BTreeMap<String, String>) -> Result<()> {
    if let Some(c) = keys.get("compression") {
        if !matches!(c.as_str(), "uncompressed" | "gzip" | "zstd" | "estargz" | "zstd:chunked") {
            return Err(bad(
                spec,
                format!("compression={c:?}: expected uncompressed, gzip, zstd, estargz or zstd:chunked"),
            ));
        }
    }
    if let Some(l) = keys.get("compression-level") {
        let alg = keys.get("compression").map_or("gzip", String::as_str);
        // The layer codec's one range check.
        let ok = matches!(alg, "gzip" | "zstd" | "estargz" | "zstd:chunked")
            && crate::layer::Compression::from_parts(alg, Some(l)).is_ok();
        if !ok {
            return Err(bad(spec, format!("compression-level={l:?} does not fit compression={alg}")));
        }
    }
    if let Some(v) = keys.get("force-compression") {
        boolean(spec, "force-compression", v)?;
    }
    for (k, v) in keys {
        if k.starts_with("annotation") && v.is_empty() {
            return Err(bad(spec, format!("key {k:?}: an annotation needs a value")));
        }
    }
    Ok(())
}

/// A value without `type=`: a transport (`oci:DIR:TAG`, `docker://REF`, `host/repo:tag`),
/// `-` (the filesystem as a tar on stdout, as buildx's `-o -`), or a directory, which is
/// `type=local,dest=DIR` as in buildx (a path with no `:`, or one starting `/`, `.` or `~`).
fn parse_bare(spec: &str) -> Result<OutputSpec> {
    if spec == "-" {
        return Ok(filesystem_output(PathBuf::from("-"), true));
    }
    let transport = crate::transport::endpoint::has_transport_prefix(spec);
    let looks_like_dir = !spec.contains(':') || spec.starts_with(['/', '.', '~']);
    if !transport && looks_like_dir {
        return Ok(filesystem_output(PathBuf::from(spec), false));
    }
    let endpoint: Endpoint = spec.parse()?;
    let tags = endpoint.tag().into_iter().collect();
    let names = match &endpoint {
        Endpoint::Registry(r) => vec![r.to_string()],
        _ => vec![],
    };
    Ok(OutputSpec::new(endpoint, tags, names))
}

/// `type=containerd[,address=SOCKET][,namespace=NS][,name=REF][,unpack=BOOL]` and
/// `type=podman[,name=REF]`: straight into the runtime's image store.
fn runtime_output(
    spec: &str,
    ty: &str,
    address: Option<&String>,
    namespace: Option<&String>,
    unpack: Option<&String>,
    names: Vec<String>,
) -> Result<OutputSpec> {
    let name = names.first().ok_or_else(|| bad(spec, format!("type={ty} needs name=REF")))?;
    let endpoint = if ty == "containerd" {
        use crate::transport::containerd::ContainerdTarget;
        let mut t = ContainerdTarget::new(
            address.map(PathBuf::from),
            namespace.cloned(),
            name.parse().map_err(|e: Error| bad(spec, e.to_string()))?,
        );
        ContainerdTarget::parse(&format!("{}/{name}", t.namespace), spec)?;
        t.unpack = unpack.map(|v| boolean(spec, "unpack", v)).transpose()?.unwrap_or(true);
        Endpoint::Containerd(t)
    } else {
        let (repository, tag) = crate::transport::podman::podman_name(name)?;
        Endpoint::Podman { repository, tag }
    };
    let tags = vec![endpoint.tag().unwrap_or_else(|| crate::model::reference::DEFAULT_TAG.to_string())];
    Ok(OutputSpec::new(endpoint, tags, names))
}

/// What one output received.
#[derive(Debug, Serialize)]
pub struct ExportResult {
    /// The destination's location, as its transport names it.
    pub destination: String,
    /// What the copy did there.
    pub report: CopyReport,
    /// For a filesystem export: what it wrote.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filesystem: Option<crate::export::FsReport>,
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
        if let Some(fs) = &out.filesystem {
            let what = if fs.tar { "tar" } else { "local" };
            progress.message(&format!(
                "exporting the filesystem of {} to type={what},dest={}",
                root.digest,
                fs.dest.display()
            ));
            let report = crate::export::export_filesystem(src, root, platform, &fs.dest, fs.tar).await?;
            results.push(ExportResult {
                destination: format!("type={what},dest={}", fs.dest.display()),
                report: CopyReport::default(),
                filesystem: Some(report),
            });
            continue;
        }
        let descriptor_annotations = out.index_descriptor_annotations();
        if let Some(k) = descriptor_annotations.keys().next() {
            if !crate::model::media::is_index(&root.media_type) {
                return Err(Error::Unsupported(format!(
                    "--output annotation-index-descriptor.{k}: {} is one manifest, not an index (build for several platforms)",
                    root.digest
                )));
            }
        }
        // `name=a,b`: the first name, then each further one.
        for (endpoint, tags) in out.destinations() {
            let dst = open_destination(&endpoint, client, platform).await?;
            // An OCI layout or archive named with `name=` gets BuildKit's annotations.
            let mut named = oci_named_roots(&endpoint, &out.names, root);
            if !descriptor_annotations.is_empty() {
                // On the index's entry in index.json (only layouts and archives keep one).
                if named.is_empty() {
                    named.push((root.clone(), tags.clone()));
                }
                for (d, _) in &mut named {
                    d.annotations.extend(descriptor_annotations.clone());
                }
            }
            let report = if named.is_empty() {
                copy::graph(src, dst.as_ref(), root, &tags, opts, progress).await?
            } else {
                copy::graph_many(src, dst.as_ref(), &named, opts, progress).await?
            };
            dst.finish().await?;
            results.push(ExportResult { destination: dst.location(), report, filesystem: None });
        }
    }
    Ok(results)
}

/// For an OCI layout or archive output with `name=`s, one root per name as BuildKit writes
/// it: `io.containerd.image.name` the normalized name (`me/app:v1` ->
/// `docker.io/me/app:v1`, what `ctr import` stores and Kubernetes looks up) and `ref.name`
/// its tag (`latest` when the name has none). Empty for other outputs and names that are no
/// reference (those keep [`OutputSpec::tags`]).
fn oci_named_roots(endpoint: &Endpoint, names: &[String], root: &Descriptor) -> Vec<copy::plan::Root> {
    if !matches!(endpoint, Endpoint::OciArchive { .. } | Endpoint::Layout { .. }) {
        return Vec::new();
    }
    let parsed: Vec<Reference> = names.iter().filter_map(|n| n.parse().ok()).collect();
    if parsed.len() != names.len() {
        return Vec::new();
    }
    parsed
        .into_iter()
        .map(|r| {
            let tag = match (&r.tag, &r.digest) {
                (Some(t), _) => Some(t.clone()),
                (None, Some(_)) => None,
                (None, None) => Some(crate::model::reference::DEFAULT_TAG.to_string()),
            };
            let desc =
                root.clone().with_annotation(crate::model::media::ANNOTATION_CONTAINERD_IMAGE_NAME, r.normalized());
            (desc, tag.into_iter().collect())
        })
        .collect()
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
    m.insert(
        "containerimage.descriptor".into(),
        serde_json::to_value(&d).map_err(|e| Error::serialize("containerimage.descriptor", e))?,
    );
    let names: Vec<String> = outputs.iter().flat_map(|o| o.names.iter().cloned()).collect();
    if !names.is_empty() {
        m.insert("image.name".into(), serde_json::Value::from(names.join(",")));
    }
    let dests: Vec<String> = outputs
        .iter()
        .map(|o| match &o.filesystem {
            Some(f) => format!("type={},dest={}", if f.tar { "tar" } else { "local" }, f.dest.display()),
            None => o.endpoint.to_string(),
        })
        .collect();
    m.insert("hoist.outputs".into(), serde_json::Value::from(dests));
    for (k, v) in extra {
        m.insert(k.clone(), v.clone());
    }
    let bytes =
        serde_json::to_vec_pretty(&serde_json::Value::Object(m)).map_err(|e| Error::serialize("metadata file", e))?;
    write_file_atomic(path, &bytes)
}

/// Write a file the user named (metadata file, pulled bundle.json, relocation map)
/// atomically: a temp file next to it, fsync, rename.
pub fn write_file_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp = crate::transport::public_temp(".hoist-").tempfile_in(dir).map_err(|e| Error::io(dir, e))?;
    std::io::Write::write_all(&mut tmp, bytes).map_err(|e| Error::io(path, e))?;
    tmp.as_file().sync_all().map_err(|e| Error::io(path, e))?;
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

/// Sign `root` at every output that can hold signatures (registries, OCI layouts), after
/// [`export`] wrote it there: each under its own name and first tag. Archive and filesystem
/// outputs are passed over (their locations are returned second).
pub async fn sign_outputs(
    signer: &crate::trust::sign::Signer,
    root: &Descriptor,
    outputs: &[OutputSpec],
    client: &Arc<Client>,
) -> Result<(Vec<crate::trust::sign::Written>, Vec<String>)> {
    let mut written = Vec::new();
    let mut passed = Vec::new();
    for out in outputs.iter().filter(|o| !o.local_only) {
        if let Some(fs) = &out.filesystem {
            passed.push(fs.dest.display().to_string());
            continue;
        }
        for (endpoint, tags) in out.destinations() {
            if !crate::trust::sign::Signer::can_sign(&endpoint) {
                passed.push(endpoint.to_string());
                continue;
            }
            written.extend(signer.sign_at(client, &endpoint, root, tags.first().map(String::as_str)).await?);
        }
    }
    Ok((written, passed))
}

/// The `--output` keys that change what is built, of every output together. One build
/// serves every output, so outputs that set the same key must agree.
#[derive(Default)]
pub struct BuildKeys {
    /// `annotation.K`, `annotation-manifest.K`: each manifest (and the index, if any).
    pub annotations: BTreeMap<String, String>,
    /// `annotation-index.K`: the index only.
    pub index_annotations: BTreeMap<String, String>,
    /// `compression=` with `compression-level=`.
    pub compression: Option<crate::layer::Compression>,
    /// `force-compression=true` on some output.
    pub force: bool,
}

/// Add `from` to `into`; a key both set to different values is a usage error.
pub fn merge_annotations(into: &mut BTreeMap<String, String>, from: BTreeMap<String, String>) -> Result<()> {
    for (k, v) in from {
        if let Some(old) = into.get(&k).filter(|old| **old != v) {
            return Err(Error::Usage(format!(
                "--output annotation {k}: {v:?} differs from {old:?} (one build serves every output)"
            )));
        }
        into.insert(k, v);
    }
    Ok(())
}

/// Index annotations (`annotation-index.K`, `annotation-index-descriptor.K`) with fewer than
/// two platforms: there is no index, so they are refused before anything is built (BuildKit:
/// "index annotations not supported for single platform export").
pub fn refuse_index_keys(outputs: &[OutputSpec], platforms: usize) -> Result<()> {
    if platforms >= 2 {
        return Ok(());
    }
    match outputs.iter().flat_map(|o| o.build_keys.keys()).find(|k| k.starts_with("annotation-index")) {
        Some(k) => Err(Error::Usage(format!(
            "--output key {k:?}: one platform is built, so there is no index to annotate; build for several (--platform A,B) or use annotation.KEY"
        ))),
        None => Ok(()),
    }
}

/// The build keys of every output, merged (see [`BuildKeys`]).
pub fn build_keys(outputs: &[OutputSpec]) -> Result<BuildKeys> {
    let mut keys = BuildKeys::default();
    let mut compression: Option<String> = None;
    for o in outputs {
        merge_annotations(&mut keys.annotations, o.annotations())?;
        merge_annotations(&mut keys.index_annotations, o.index_annotations())?;
        if let Some(c) = o.compression() {
            match &compression {
                Some(prev) if *prev != c => {
                    return Err(Error::Usage(format!(
                        "--output compression {c} differs from {prev} (one build serves every output)"
                    )))
                }
                _ => compression = Some(c),
            }
        }
        keys.force |= o.force_compression();
    }
    keys.compression = compression.map(|c| c.parse()).transpose()?;
    Ok(keys)
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
        let o = parse_output("type=oci,dest=o.tar,name=me/app").unwrap();
        let root = Descriptor::of_bytes(crate::model::media::OCI_MANIFEST, b"m");
        let named = oci_named_roots(&o.endpoint, &o.names, &root);
        assert_eq!(named.len(), 1);
        assert_eq!(named[0].1, vec!["latest".to_string()]);
        assert_eq!(
            named[0].0.annotations.get(crate::model::media::ANNOTATION_CONTAINERD_IMAGE_NAME).map(String::as_str),
            Some("docker.io/me/app:latest")
        );
        let o = parse_output("oci:dir:v3").unwrap();
        assert_eq!(o.tags, vec!["v3".to_string()]);
    }

    fn err(spec: &str) -> String {
        parse_output(spec).unwrap_err().to_string()
    }

    #[test]
    fn every_buildx_key_is_honoured_or_refused_by_name() {
        // name=a,b: both names, both pushed.
        let o = parse_output("type=registry,name=localhost:5000/a:v1,localhost:5000/b:v2").unwrap();
        assert_eq!(o.names.len(), 2);
        assert_eq!(o.more.len(), 1);
        assert_eq!(o.more[0].tag.as_deref(), Some("v2"));
        let o = parse_output("type=image,\"name=localhost:5000/a:v1,localhost:5000/b:v2\",push=true").unwrap();
        assert_eq!(o.more.len(), 1);
        // push-by-digest: no tag anywhere.
        let o = parse_output("type=image,name=localhost:5000/a:v1,push=true,push-by-digest=true").unwrap();
        assert!(o.tags.is_empty());
        assert!(matches!(&o.endpoint, Endpoint::Registry(r) if r.tag.is_none()));
        assert!(err("type=image,name=localhost:5000/a:v1,push-by-digest=true").contains("push=true"));
        // annotations: manifest and index ones carried to the build, the index descriptor's
        // to an OCI layout's index.json (refused where there is none); entry descriptors refused.
        let o = parse_output("type=oci,dest=x.tar,annotation.org.a=1,annotation-manifest.org.b=2,annotation-index.org.c=3,annotation-index-descriptor.org.d=4").unwrap();
        let a = o.annotations();
        assert_eq!(a.get("org.a").map(String::as_str), Some("1"));
        assert_eq!(a.get("org.b").map(String::as_str), Some("2"));
        assert_eq!(a.len(), 2);
        assert_eq!(o.index_annotations().get("org.c").map(String::as_str), Some("3"));
        assert_eq!(o.index_descriptor_annotations().get("org.d").map(String::as_str), Some("4"));
        let o = parse_output("type=image,name=localhost:5000/a:v1,push=true,annotation-index.org.c=3").unwrap();
        assert_eq!(o.index_annotations().len(), 1);
        assert!(err("type=image,name=localhost:5000/a:v1,annotation-index-descriptor.org.d=4")
            .contains("annotation-index-descriptor.org.d"));
        assert!(
            err("type=oci,dest=x.tar,annotation-manifest-descriptor.k=3").contains("annotation-manifest-descriptor.k")
        );
        // compression keys.
        let o =
            parse_output("type=oci,dest=x.tar,compression=zstd,compression-level=19,force-compression=true").unwrap();
        assert_eq!(o.compression().as_deref(), Some("zstd:19"));
        assert!(o.force_compression());
        assert_eq!(
            parse_output("type=oci,dest=x,compression=uncompressed").unwrap().compression().as_deref(),
            Some("none")
        );
        assert!(err("type=oci,dest=x,compression=lz4").contains("estargz"));
        assert_eq!(
            parse_output("type=oci,dest=x,compression=estargz,compression-level=9").unwrap().compression().as_deref(),
            Some("estargz:9")
        );
        assert!(err("type=oci,dest=x,compression=gzip,compression-level=12").contains("compression-level"));
        assert!(err("type=oci,dest=x,force-compression=maybe").contains("force-compression"));
        // oci-mediatypes: true is what hoist writes; false only where docker types are written.
        assert!(parse_output("type=oci,dest=x,oci-mediatypes=true").is_ok());
        assert!(err("type=oci,dest=x,oci-mediatypes=false").contains("oci-mediatypes"));
        assert!(parse_output("type=docker,dest=x.tar,oci-mediatypes=false").is_ok());
        // registry.insecure.
        assert!(parse_output("type=registry,name=r.example/a:v1,registry.insecure=true").unwrap().insecure);
        assert!(err("type=oci,dest=x,registry.insecure=true").contains("does not apply to type=oci"));
        // tar=.
        assert!(matches!(parse_output("type=oci,dest=x,tar=false").unwrap().endpoint, Endpoint::Layout { .. }));
        assert!(err("type=docker,dest=x,tar=false").contains("tar=false"));
        assert!(err("type=oci,dest=x,tar=perhaps").contains("tar="));
        // Filesystem outputs, and a bare directory.
        let o = parse_output("type=local,dest=out").unwrap();
        assert_eq!(o.filesystem, Some(FilesystemOutput { dest: "out".into(), tar: false }));
        let o = parse_output("type=tar,dest=fs.tar").unwrap();
        assert_eq!(o.filesystem, Some(FilesystemOutput { dest: "fs.tar".into(), tar: true }));
        assert_eq!(parse_output("./rootfs").unwrap().filesystem.map(|f| f.tar), Some(false));
        assert_eq!(parse_output("rootfs").unwrap().filesystem.map(|f| f.tar), Some(false));
        assert_eq!(parse_output("-").unwrap().filesystem.map(|f| f.tar), Some(true));
        assert!(parse_output("localhost:5000/a:v1").unwrap().filesystem.is_none());
        assert!(err("type=local,dest=x,name=a:v1").contains("does not apply to type=local"));
        assert!(err("type=local,dest=x,compression=gzip").contains("does not apply to type=local"));
        // Unknown keys and refused buildx keys are named.
        assert!(err("type=oci,dest=x,colour=blue").contains("unknown key \"colour\""));
        assert!(err("type=image,name=a/b:c,unpack=true").contains("\"unpack\" is not supported"));
        assert!(err("type=oci,dest=x,dest=y").contains("twice"));
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
