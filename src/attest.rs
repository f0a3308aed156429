//! Build-time attestations: an SBOM and SLSA provenance for each platform image a build made,
//! as in-toto statements, stored the way BuildKit and docker/buildx store them or as OCI 1.1
//! referrers.
//!
//! - **buildx layout** (default): for each image of the build, an attestation manifest in the
//!   image index, platform `unknown/unknown`, annotations `vnd.docker.reference.type:
//!   attestation-manifest` and `vnd.docker.reference.digest: <image digest>`; its config is
//!   BuildKit's (`{"architecture":"unknown","os":"unknown",…}`), its layers the statements
//!   (`application/vnd.in-toto+json`, annotation `in-toto.io/predicate-type`). A one-platform
//!   build becomes an index, as in buildx.
//! - **referrers** ([`Placement::Referrers`]): one OCI 1.1 artifact per statement, `artifactType`
//!   its predicate type, `subject` the image manifest; the root stays the image itself.
//!
//! Either way the image manifests are untouched: their digests are the same with and without
//! attestations. The statements are in-toto Statement v1; signing them (DSSE) is the job of a
//! [`Signer`] given by the caller, none by default.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::model::descriptor::{Descriptor, Platform};
use crate::model::digest::Digest;
use crate::model::document::View;
use crate::model::media;
use crate::model::platform::{ANNOTATION_DOCKER_REFERENCE_DIGEST, ANNOTATION_DOCKER_REFERENCE_TYPE};
use crate::model::time::rfc3339;
use crate::model::write::{ImageIndex, ImageManifest};
use crate::sbom::{self, ScanOptions};
use crate::transport::layout::Layout;
use crate::transport::Source;

/// Layer annotation of the SBOMs beyond the image's own: `context` (the build context) or
/// `stage:NAME` (another stage of the build). The image's SBOM comes first and has none, so
/// tools that take the first SPDX statement as the image's (buildx's) still do.
pub const ANNOTATION_SBOM_SCOPE: &str = "dev.hoist.sbom.scope";

/// Media type of an in-toto statement layer.
pub const IN_TOTO_MEDIA_TYPE: &str = "application/vnd.in-toto+json";
/// `_type` of an in-toto Statement v1.
pub const STATEMENT_V1: &str = "https://in-toto.io/Statement/v1";
/// Layer annotation naming a statement's predicate type (BuildKit's).
pub const ANNOTATION_PREDICATE_TYPE: &str = "in-toto.io/predicate-type";
/// Value of `vnd.docker.reference.type` on attestation manifests.
pub const ATTESTATION_MANIFEST: &str = "attestation-manifest";
/// SLSA provenance v1 predicate type.
pub const SLSA_V1: &str = "https://slsa.dev/provenance/v1";
/// SLSA provenance v0.2 predicate type (what buildx wrote for years).
pub const SLSA_V02: &str = "https://slsa.dev/provenance/v0.2";
/// The build type hoist's provenance names (a URN: what it means is in docs/attestations.md).
pub const BUILD_TYPE: &str = "urn:hoist:buildtype:v1";

/// How much the provenance says (buildx's modes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProvenanceMode {
    /// Build args, labels and secret ids left out (buildx's default).
    Min,
    /// Everything hoist knows, secrets' ids but never their values.
    Max,
}

/// Which SLSA provenance predicate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlsaVersion {
    /// `https://slsa.dev/provenance/v1`.
    V1,
    /// `https://slsa.dev/provenance/v0.2`.
    V02,
}

/// Where attestations go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Placement {
    /// An attestation manifest per image in the index (docker/buildx).
    #[default]
    Index,
    /// OCI 1.1 referrers of each image manifest.
    Referrers,
}

/// What to attest.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Request {
    /// SBOM format, if an SBOM is wanted.
    pub sbom: Option<sbom::Format>,
    /// Provenance mode and version, if provenance is wanted.
    pub provenance: Option<(ProvenanceMode, SlsaVersion)>,
    /// Where the statements go.
    pub placement: Placement,
    /// Also an SBOM of the build context (BuildKit's `scan-context`; on with `mode=max`).
    pub scan_context: bool,
    /// Also an SBOM of each other stage built (BuildKit's `scan-stage`, its
    /// `BUILDKIT_SBOM_SCAN_STAGE`; on with `mode=max`).
    pub scan_stages: bool,
}

fn bool_flag(flag: &str, v: &str) -> Result<bool> {
    match v {
        "true" | "1" | "" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(Error::Usage(format!("{flag}={v:?}: expected true or false"))),
    }
}

impl Request {
    /// Whether anything is attested.
    pub fn any(&self) -> bool {
        self.sbom.is_some() || self.provenance.is_some()
    }

    /// From buildx's flags: `--sbom=true|false`, `--provenance=true|false|mode=min|mode=max[,version=v0.2]`,
    /// `--attest type=sbom[,format=spdx|cyclonedx]`, `--attest type=provenance[,mode=…][,version=…]`,
    /// `--attest-as index|referrers`.
    pub fn from_flags(
        sbom: Option<&str>,
        provenance: Option<&str>,
        attest: &[String],
        attest_as: Option<&str>,
    ) -> Result<Request> {
        let mut r = Request::default();
        // scan-context / scan-stage as given; unset, `mode=max` turns them on
        let (mut scan_context, mut scan_stages) = (None, None);
        if let Some(v) = sbom {
            if bool_flag("--sbom", v)? {
                r.sbom = Some(sbom::Format::SpdxJson);
            }
        }
        if let Some(v) = provenance {
            r.provenance = provenance_spec("--provenance", v)?;
        }
        for a in attest {
            let mut kind = None;
            let mut rest = Vec::new();
            for part in a.split(',') {
                match part.split_once('=') {
                    Some(("type", t)) => kind = Some(t.to_string()),
                    _ => rest.push(part),
                }
            }
            match kind.as_deref() {
                Some("sbom") => {
                    let mut format = sbom::Format::SpdxJson;
                    let mut disabled = false;
                    for p in rest {
                        match p.split_once('=') {
                            Some(("format", f)) => {
                                format = sbom::Format::parse(f).ok_or_else(|| {
                                    Error::Usage(format!("--attest {a:?}: format {f:?}: expected spdx or cyclonedx"))
                                })?
                            }
                            Some(("disabled", d)) => disabled = bool_flag("disabled", d)?,
                            Some(("scan-context", v)) => scan_context = Some(bool_flag(p, v)?),
                            Some(("scan-stage", v)) => scan_stages = Some(bool_flag(p, v)?),
                            _ => {
                                return Err(Error::Usage(format!(
                                    "--attest {a:?}: {p:?} is not supported (keys: format=spdx|cyclonedx, disabled=true|false, scan-context=true|false, scan-stage=true|false)"
                                )))
                            }
                        }
                    }
                    r.sbom = (!disabled).then_some(format);
                }
                // the last one given wins, as the --provenance flag it may override
                Some("provenance") => r.provenance = provenance_spec("--attest", &rest.join(","))?,
                _ => return Err(Error::Usage(format!("--attest {a:?}: expected type=sbom or type=provenance"))),
            }
        }
        let max = matches!(r.provenance, Some((ProvenanceMode::Max, _)));
        r.scan_context = r.sbom.is_some() && scan_context.unwrap_or(max);
        r.scan_stages = r.sbom.is_some() && scan_stages.unwrap_or(max);
        r.placement = match attest_as {
            None | Some("index") => Placement::Index,
            Some("referrers") => Placement::Referrers,
            Some(o) => return Err(Error::Usage(format!("--attest-as {o:?}: expected index or referrers"))),
        };
        Ok(r)
    }
}

/// `true`, `false`, or `mode=min|max` and `version=v1|v0.2` (comma-separated).
fn provenance_spec(flag: &str, v: &str) -> Result<Option<(ProvenanceMode, SlsaVersion)>> {
    let mut mode = ProvenanceMode::Min;
    let mut version = SlsaVersion::V1;
    for part in v.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('=') {
            None if part == "true" || part == "1" => {}
            None if part == "false" || part == "0" => return Ok(None),
            Some(("mode", "min")) => mode = ProvenanceMode::Min,
            Some(("mode", "max")) => mode = ProvenanceMode::Max,
            Some(("version", "v1")) => version = SlsaVersion::V1,
            Some(("version", "v0.2")) => version = SlsaVersion::V02,
            Some(("disabled", d)) if bool_flag(flag, d)? => return Ok(None),
            Some(("disabled", _)) => {}
            _ => {
                return Err(Error::Usage(format!(
                    "{flag} {v:?}: {part:?}: expected true, false, mode=min|max, version=v1|v0.2"
                )))
            }
        }
    }
    Ok(Some((mode, version)))
}

/// A base image of the build, as the build file or Dockerfile wrote it.
#[derive(Clone, Debug)]
pub struct BaseImage {
    /// The name as written (`alpine:3.20`, `oci:./base:v1`).
    pub name: String,
    /// Its root digest as resolved.
    pub digest: Digest,
}

/// What the provenance records about a build.
#[derive(Clone, Debug, Default)]
pub struct BuildInfo {
    /// `dockerfile.v0` (as BuildKit names its Dockerfile frontend) or `hoist.toml`.
    pub frontend: String,
    /// The build file or Dockerfile as given, and its digest.
    pub file: Option<(String, Digest)>,
    /// The Dockerfile stage built.
    pub target: Option<String>,
    /// Platforms asked for.
    pub platforms: Vec<String>,
    /// Build args (`mode=max` only).
    pub args: BTreeMap<String, String>,
    /// Labels (`mode=max` only).
    pub labels: BTreeMap<String, String>,
    /// Ids of the secrets the build was given (`mode=max` only; values never).
    pub secrets: Vec<String>,
    /// Every base image by digest.
    pub bases: Vec<BaseImage>,
    /// The build context (a directory) and its digest.
    pub context: Option<(String, Digest)>,
    /// The images of the other stages the build made (stage name or index, image manifest
    /// with its platform, in the store), for [`Request::scan_stages`].
    pub stages: Vec<(String, Descriptor)>,
    /// Names the image is pushed or tagged as (the statements' subjects).
    pub names: Vec<String>,
    /// Seconds since the epoch the build started and finished.
    pub started: i64,
    /// See `started`.
    pub finished: i64,
    /// A unique id of this build.
    pub invocation_id: String,
}

/// Signs a statement as a DSSE envelope (the trust module's signer, given by the CLI).
pub trait Signer: Send + Sync {
    /// The envelope bytes for `statement`, and the media type they are stored under.
    fn sign(&self, statement: &[u8]) -> Result<(Vec<u8>, String)>;
}

/// Signs statements with a private key as DSSE envelopes (payload type
/// `application/vnd.in-toto+json`, stored as `application/vnd.dsse.envelope.v1+json`), with
/// the trust module's DSSE signer: what cosign writes for an attestation.
pub struct KeySigner(pub crate::trust::PrivateKey);

impl Signer for KeySigner {
    fn sign(&self, statement: &[u8]) -> Result<(Vec<u8>, String)> {
        use crate::trust::dsse::{Envelope, ENVELOPE_MEDIA_TYPE, IN_TOTO_PAYLOAD_TYPE};
        let envelope = Envelope::sign(&self.0, IN_TOTO_PAYLOAD_TYPE, statement)?;
        Ok((envelope.to_json()?, ENVELOPE_MEDIA_TYPE.to_string()))
    }
}

/// `pkg:docker/NAME@TAG?platform=…`: an image name as BuildKit names subjects and materials.
pub fn docker_purl(name: &str, platform: Option<&Platform>) -> String {
    let (repo, version) = match name.rsplit_once('@') {
        Some((r, d)) => (r.to_string(), d.to_string()),
        None => match crate::model::reference::split_tag(name) {
            (r, Some(t)) => (r.to_string(), t.to_string()),
            (_, None) => (name.to_string(), crate::model::reference::DEFAULT_TAG.to_string()),
        },
    };
    let parts: Vec<&str> = repo.split('/').collect();
    let (ns, n) = parts.split_at(parts.len() - 1);
    let mut quals = Vec::new();
    let platform = platform.map(|p| p.to_string());
    if let Some(p) = platform.as_deref() {
        quals.push(("platform", p));
    }
    sbom::purl::purl("docker", ns, n[0], &version, &quals)
}

fn digest_set(d: &Digest) -> Value {
    json!({ d.algorithm().as_str(): d.hex() })
}

/// The in-toto Statement v1 about `image` with `predicate`.
fn statement(
    image: &Descriptor,
    platform: Option<&Platform>,
    names: &[String],
    predicate_type: &str,
    predicate: Value,
) -> Value {
    let subjects: Vec<Value> = if names.is_empty() {
        vec![json!({"name": "_", "digest": digest_set(&image.digest)})]
    } else {
        names.iter().map(|n| json!({"name": docker_purl(n, platform), "digest": digest_set(&image.digest)})).collect()
    };
    json!({"_type": STATEMENT_V1, "subject": subjects, "predicateType": predicate_type, "predicate": predicate})
}

/// The SLSA provenance predicate of a build.
pub fn provenance(info: &BuildInfo, mode: ProvenanceMode, version: SlsaVersion) -> (String, Value) {
    let mut args: BTreeMap<String, String> = BTreeMap::new();
    if let Some(t) = &info.target {
        args.insert("target".into(), t.clone());
    }
    if !info.platforms.is_empty() {
        args.insert("platform".into(), info.platforms.join(","));
    }
    if mode == ProvenanceMode::Max {
        for (k, v) in &info.args {
            args.insert(format!("build-arg:{k}"), v.clone());
        }
        for (k, v) in &info.labels {
            args.insert(format!("label:{k}"), v.clone());
        }
    }
    let mut request = json!({"frontend": info.frontend});
    if !args.is_empty() {
        request["args"] = json!(args);
    }
    if mode == ProvenanceMode::Max && !info.secrets.is_empty() {
        request["secrets"] = info.secrets.iter().map(|id| json!({"id": id})).collect();
    }
    let mut deps: Vec<Value> = info
        .bases
        .iter()
        .map(|b| {
            let local = matches!(
                b.name.parse::<crate::transport::Endpoint>(),
                Ok(crate::transport::Endpoint::Layout { .. }
                    | crate::transport::Endpoint::OciArchive { .. }
                    | crate::transport::Endpoint::DockerArchive { .. })
            );
            let uri = if local { b.name.clone() } else { docker_purl(&b.name, None) };
            json!({"uri": uri, "digest": digest_set(&b.digest), "name": b.name})
        })
        .collect();
    if let Some((dir, d)) = &info.context {
        deps.push(json!({"uri": format!("file://{dir}"), "digest": digest_set(d), "name": "context"}));
    }
    let mut config_source = json!({});
    if let Some((path, d)) = &info.file {
        config_source = json!({"path": path, "digest": digest_set(d)});
    }
    let builder_platform = format!("linux/{}", go_arch());
    let builder_id = format!("urn:hoist:builder:hoist-{}", env!("CARGO_PKG_VERSION"));
    match version {
        SlsaVersion::V1 => {
            let predicate = json!({
                "buildDefinition": {
                    "buildType": BUILD_TYPE,
                    "externalParameters": {"configSource": config_source, "request": request},
                    "internalParameters": {"builderPlatform": builder_platform},
                    "resolvedDependencies": deps,
                },
                "runDetails": {
                    "builder": {"id": builder_id},
                    "metadata": {
                        "invocationId": info.invocation_id,
                        "startedOn": rfc3339(info.started),
                        "finishedOn": rfc3339(info.finished),
                    },
                },
            });
            (SLSA_V1.to_string(), predicate)
        }
        SlsaVersion::V02 => {
            let materials: Vec<Value> = deps.iter().map(|d| json!({"uri": d["uri"], "digest": d["digest"]})).collect();
            let mut cs = json!({});
            if let Some((path, d)) = &info.file {
                cs = json!({"digest": digest_set(d), "entryPoint": path});
            }
            let predicate = json!({
                "builder": {"id": builder_id},
                "buildType": BUILD_TYPE,
                "invocation": {
                    "configSource": cs,
                    "parameters": request,
                    "environment": {"platform": builder_platform},
                },
                "metadata": {
                    "buildInvocationID": info.invocation_id,
                    "buildStartedOn": rfc3339(info.started),
                    "buildFinishedOn": rfc3339(info.finished),
                    "completeness": {"parameters": mode == ProvenanceMode::Max, "environment": true, "materials": false},
                    "reproducible": false,
                },
                "materials": materials,
            });
            (SLSA_V02.to_string(), predicate)
        }
    }
}

/// The running machine's architecture in Go's spelling.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// What [`attach`] did.
#[derive(Clone, Debug)]
pub struct Attached {
    /// The new root: an index with the attestation manifests (buildx layout), or the image
    /// root as it was (referrers).
    pub root: Descriptor,
    /// Each statement stored: (image digest, predicate type, blob digest).
    pub statements: Vec<(Digest, String, Digest)>,
    /// Referrer manifests written (referrers layout), each an untagged root of the store.
    pub referrers: Vec<Descriptor>,
}

/// The SBOM document of `scan` as a statement's predicate.
fn render(format: sbom::Format, scan: &sbom::Sbom, created: i64) -> Result<Value> {
    serde_json::from_slice(&format.render(scan, created)?).map_err(|e| Error::serialize("sbom", e))
}

fn store_json(store: &Layout, media_type: &str, bytes: &[u8]) -> Result<Descriptor> {
    let desc = Descriptor::of_bytes(media_type, bytes);
    store.write_blob_bytes(&desc, bytes)?;
    Ok(desc)
}

/// Attest each image of the build `root` in `store` as `req` asks, with `info` for the
/// provenance; `created` is the SBOMs' creation time. Tags are left to the caller.
pub async fn attach(
    store: &Layout,
    root: &Descriptor,
    req: &Request,
    info: &BuildInfo,
    signer: Option<&dyn Signer>,
) -> Result<Attached> {
    let doc = store.fetch_document(root).await?;
    let (entries, index_annotations) = match &doc.view {
        View::Index(i) => (i.manifests.clone(), Some(doc.annotations().clone())),
        View::Manifest(_) => {
            let mut d = root.clone();
            d.annotations.remove(media::ANNOTATION_REF_NAME);
            d.platform = crate::merge::platform_of(store, &d).await?;
            (vec![d], None)
        }
    };
    let mut out = Attached { root: root.clone(), statements: Vec::new(), referrers: Vec::new() };
    // the platforms built, when the build did not name them (BuildKit records them always)
    let mut filled;
    let info = if info.platforms.is_empty() {
        filled = info.clone();
        filled.platforms = entries
            .iter()
            .filter(|d| !crate::model::platform::is_attestation(d))
            .filter_map(|d| d.platform.as_ref().map(|p| p.to_string()))
            .collect();
        &filled
    } else {
        info
    };
    let mut attestation_manifests = Vec::new();
    // the build context is scanned once for every image
    let mut context_sbom: Option<Value> = None;
    for image in
        entries.iter().filter(|d| !crate::model::platform::is_attestation(d) && media::is_manifest(&d.media_type))
    {
        // (predicate type, statement, scope of an extra SBOM)
        let mut statements: Vec<(String, Vec<u8>, Option<String>)> = Vec::new();
        let platform = image.platform.clone();
        let to_vec = |s: &Value| serde_json::to_vec(s).map_err(|e| Error::serialize("in-toto statement", e));
        if let Some(format) = req.sbom {
            let name = info.names.first().map(String::as_str);
            let scan = sbom::scan_manifest(store, image, name, &ScanOptions::default()).await?;
            let ptype = format.predicate_type();
            let s = statement(image, platform.as_ref(), &info.names, ptype, render(format, &scan, info.finished)?);
            statements.push((ptype.to_string(), to_vec(&s)?, None));
            if let (true, Some((dir, digest))) = (req.scan_context, &info.context) {
                if context_sbom.is_none() {
                    let (dir, digest) = (std::path::PathBuf::from(dir), digest.clone());
                    let scan = tokio::task::spawn_blocking(move || sbom::scan_dir_blocking(&dir, &digest, "context"))
                        .await
                        .map_err(|e| Error::task("sbom of the build context", e))??;
                    context_sbom = Some(render(format, &scan, info.finished)?);
                }
                let predicate = context_sbom.clone().unwrap_or_default();
                let s = statement(image, platform.as_ref(), &info.names, ptype, predicate);
                statements.push((ptype.to_string(), to_vec(&s)?, Some("context".to_string())));
            }
            if req.scan_stages {
                for (stage, manifest) in info.stages.iter().filter(|(_, m)| m.platform == platform) {
                    let label = format!("stage:{stage}");
                    let scan = sbom::scan_manifest(store, manifest, Some(&label), &ScanOptions::default()).await?;
                    let s =
                        statement(image, platform.as_ref(), &info.names, ptype, render(format, &scan, info.finished)?);
                    statements.push((ptype.to_string(), to_vec(&s)?, Some(label)));
                }
            }
        }
        if let Some((mode, version)) = req.provenance {
            let (ptype, predicate) = provenance(info, mode, version);
            let s = statement(image, platform.as_ref(), &info.names, &ptype, predicate);
            statements.push((ptype, to_vec(&s)?, None));
        }
        let mut layers = Vec::new();
        for (ptype, bytes, scope) in statements {
            let (bytes, media_type) = match signer {
                Some(s) => s.sign(&bytes)?,
                None => (bytes, IN_TOTO_MEDIA_TYPE.to_string()),
            };
            let mut desc =
                store_json(store, &media_type, &bytes)?.with_annotation(ANNOTATION_PREDICATE_TYPE, ptype.clone());
            if let Some(scope) = scope {
                desc = desc.with_annotation(ANNOTATION_SBOM_SCOPE, scope);
            }
            out.statements.push((image.digest.clone(), ptype, desc.digest.clone()));
            layers.push(desc);
        }
        match req.placement {
            Placement::Index => {
                // BuildKit's attestation config: an "unknown" image whose diff_ids are the statements.
                let diff_ids: Vec<String> = layers.iter().map(|l| l.digest.to_string()).collect();
                let config = serde_json::to_vec(&json!({
                    "architecture": "unknown",
                    "os": "unknown",
                    "config": {},
                    "rootfs": {"type": "layers", "diff_ids": diff_ids},
                }))
                .map_err(|e| Error::serialize("attestation config", e))?;
                let config = store_json(store, media::OCI_CONFIG, &config)?;
                let manifest = ImageManifest::new(config, layers).to_bytes()?;
                let mut desc = store_json(store, media::OCI_MANIFEST, &manifest)?
                    .with_annotation(ANNOTATION_DOCKER_REFERENCE_DIGEST, image.digest.to_string())
                    .with_annotation(ANNOTATION_DOCKER_REFERENCE_TYPE, ATTESTATION_MANIFEST);
                desc.platform = Platform::parse("unknown/unknown");
                attestation_manifests.push(desc);
            }
            Placement::Referrers => {
                store
                    .write_blob_bytes(&Descriptor::of_bytes(media::OCI_EMPTY, media::EMPTY_JSON), media::EMPTY_JSON)?;
                for layer in layers {
                    let ptype = layer.annotations.get(ANNOTATION_PREDICATE_TYPE).cloned().unwrap_or_default();
                    let mut config = Descriptor::of_bytes(media::OCI_EMPTY, media::EMPTY_JSON);
                    config.data = Some(media::EMPTY_JSON_DATA.to_string());
                    let mut m = ImageManifest::new(config, vec![layer]);
                    m.artifact_type = Some(ptype);
                    m.subject = Some(Descriptor::new(image.media_type.clone(), image.digest.clone(), image.size));
                    let desc = store_json(store, media::OCI_MANIFEST, &m.to_bytes()?)?;
                    let mut root_desc = desc.clone();
                    root_desc.artifact_type = m.artifact_type.clone();
                    store.add_untagged(&root_desc)?;
                    out.referrers.push(root_desc);
                }
            }
        }
    }
    if req.placement == Placement::Index && !attestation_manifests.is_empty() {
        let mut manifests: Vec<Descriptor> = entries.clone();
        manifests.extend(attestation_manifests);
        let mut index = ImageIndex::new(manifests);
        if let Some(a) = index_annotations {
            index.annotations = a;
        }
        out.root = store_json(store, media::OCI_INDEX, &index.to_bytes()?)?;
    }
    Ok(out)
}

/// A fresh build id (random, UUID layout).
pub fn invocation_id() -> String {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut b);
    sbom::uuid_from(&hex::encode(b))
}

/// The digest of a build context directory: SHA-256 over a sorted listing of every entry
/// (path, type, mode, and the SHA-256 of a file's bytes or a symlink's target), so any change
/// of content, name or mode changes it.
pub fn context_digest_blocking(dir: &std::path::Path) -> Result<Digest> {
    use std::os::unix::fs::PermissionsExt;
    let mut listing: Vec<u8> = Vec::new();
    for e in walkdir::WalkDir::new(dir).sort_by_file_name() {
        let e = e.map_err(|e| Error::walk(dir, e))?;
        let rel = e.path().strip_prefix(dir).unwrap_or(e.path()).to_string_lossy().into_owned();
        let meta = e.path().symlink_metadata().map_err(|err| Error::io(e.path(), err))?;
        let mode = meta.permissions().mode() & 0o7777;
        let what = if meta.is_file() {
            let d = crate::transport::layout::hash_file(e.path(), crate::model::digest::Algorithm::Sha256)?;
            format!("file {d}")
        } else if meta.file_type().is_symlink() {
            format!("link {}", std::fs::read_link(e.path()).map_err(|err| Error::io(e.path(), err))?.display())
        } else if meta.is_dir() {
            "dir".to_string()
        } else {
            "other".to_string()
        };
        listing.extend_from_slice(format!("{rel}\0{mode:o}\0{what}\n").as_bytes());
    }
    Ok(Digest::sha256_of(&listing))
}

/// What [`push_sbom_referrer`] wrote.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SbomReferrer {
    /// The image manifest the SBOM is about.
    pub subject: Digest,
    /// The referrer manifest.
    pub manifest: Digest,
    /// Its `artifactType` (the SBOM document's media type).
    pub artifact_type: String,
    /// The SBOM document blob.
    pub document: Digest,
    /// False when the same referrer was already there (nothing written).
    pub added: bool,
}

/// Push `document`, an SBOM in `format` about the image manifest `subject`, to `dst` as an OCI
/// 1.1 referrer artifact (as `oras attach --artifact-type application/spdx+json` does):
/// `artifactType` the document's media type, the empty config, one layer the document,
/// `subject` the image, `org.opencontainers.image.created` from `created` (seconds since the
/// epoch; `SOURCE_DATE_EPOCH`-aware callers keep it reproducible). A registry without the
/// referrers API gets the `sha256-<hex>` tag fallback index (the registry transport keeps it on
/// every push of a manifest with a subject); a layout keeps it as an untagged root.
pub async fn push_sbom_referrer(
    dst: &dyn crate::transport::Destination,
    subject: &Descriptor,
    format: sbom::Format,
    document: bytes::Bytes,
    created: i64,
) -> Result<SbomReferrer> {
    use crate::transport::memory::Memory;
    use crate::transport::NoProgress;
    let layer = Descriptor::of_bytes(format.media_type(), &document);
    let mut config = Descriptor::of_bytes(media::OCI_EMPTY, media::EMPTY_JSON);
    config.data = Some(media::EMPTY_JSON_DATA.to_string());
    let mut manifest = ImageManifest::new(config.clone(), vec![layer.clone()]);
    manifest.artifact_type = Some(format.media_type().to_string());
    manifest.subject = Some(Descriptor::new(subject.media_type.clone(), subject.digest.clone(), subject.size));
    manifest.annotations = BTreeMap::from([(media::ANNOTATION_CREATED.to_string(), rfc3339(created))]);
    let bytes = bytes::Bytes::from(manifest.to_bytes()?);
    let desc = Descriptor::of_bytes(media::OCI_MANIFEST, &bytes);
    let added = !dst.has_manifest(&desc).await?;
    if added {
        let mem = Memory::new();
        mem.insert_blob(&layer, document)?;
        mem.insert_blob(&config, bytes::Bytes::from_static(media::EMPTY_JSON))?;
        for b in [&layer, &config] {
            if !dst.has_blob(b).await? {
                dst.push_blob(b, &mem, &NoProgress).await?;
            }
        }
        dst.push_manifest(&desc, bytes, None).await?;
        let mut root = desc.clone();
        root.artifact_type = manifest.artifact_type.clone();
        dst.add_root(&root).await?;
    }
    Ok(SbomReferrer {
        subject: subject.digest.clone(),
        manifest: desc.digest,
        artifact_type: format.media_type().to_string(),
        document: layer.digest,
        added,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buildx_flags() {
        let r = |sbom: Option<&str>, prov: Option<&str>, attest: &[&str]| {
            let attest: Vec<String> = attest.iter().map(|s| s.to_string()).collect();
            Request::from_flags(sbom, prov, &attest, None)
        };
        let both = r(Some("true"), Some("mode=max"), &[]).unwrap();
        assert_eq!(both.sbom, Some(sbom::Format::SpdxJson));
        assert_eq!(both.provenance, Some((ProvenanceMode::Max, SlsaVersion::V1)));
        assert!(!r(Some("false"), Some("false"), &[]).unwrap().any());
        let a = r(None, None, &["type=sbom,format=cyclonedx", "type=provenance,mode=min,version=v0.2"]).unwrap();
        assert_eq!(a.sbom, Some(sbom::Format::CycloneDxJson));
        assert_eq!(a.provenance, Some((ProvenanceMode::Min, SlsaVersion::V02)));
        // disabled=true turns off what a flag before turned on
        let off = r(Some("true"), Some("true"), &["type=sbom,disabled=true", "type=provenance,disabled=true"]).unwrap();
        assert!(!off.any(), "{off:?}");
        // mode=max scans the context and the stages too, unless told not to
        assert!(both.scan_context && both.scan_stages, "{both:?}");
        let min = r(Some("true"), Some("true"), &[]).unwrap();
        assert!(!min.scan_context && !min.scan_stages, "{min:?}");
        let stage = r(None, None, &["type=sbom,scan-stage=true"]).unwrap();
        assert!(stage.scan_stages && !stage.scan_context, "{stage:?}");
        let no_ctx = r(Some("true"), Some("mode=max"), &["type=sbom,scan-context=false"]).unwrap();
        assert!(!no_ctx.scan_context && no_ctx.scan_stages, "{no_ctx:?}");
        // no SBOM, nothing to scan
        let prov_only = r(None, Some("mode=max"), &[]).unwrap();
        assert!(!prov_only.scan_context && !prov_only.scan_stages, "{prov_only:?}");
        assert!(r(None, None, &["type=sbom,scan-stage=maybe"]).is_err());
        assert!(r(None, Some("mode=huge"), &[]).is_err());
        assert!(r(None, None, &["type=vex"]).is_err());
        assert!(Request::from_flags(None, None, &[], Some("sideways")).is_err());
    }

    #[test]
    fn docker_purls() {
        let p = Platform::parse("linux/arm64").unwrap();
        assert_eq!(docker_purl("alpine:3.20", None), "pkg:docker/alpine@3.20");
        assert_eq!(
            docker_purl("localhost:5000/team/app:v1", Some(&p)),
            "pkg:docker/localhost%3A5000/team/app@v1?platform=linux%2Farm64"
        );
        assert_eq!(docker_purl("busybox", None), "pkg:docker/busybox@latest");
    }
}
