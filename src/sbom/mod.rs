//! Software bills of materials: what packages an image holds, read from its layers as streams
//! (nothing unpacked to disk), written as SPDX 2.3 JSON or CycloneDX 1.6 JSON.
//!
//! [`scan_image`] picks the image (an index's entry for a platform), reads its layers in
//! parallel ([`tree`]: each regular file hashed, package databases kept, whiteouts applied
//! logically), then the scanners ([`scan`]) list the packages of dpkg, apk, Python, npm and Go
//! binaries. [`spdx::document`] and [`cyclonedx::document`] write the result deterministically
//! (the same image and creation time give the same bytes).
//!
//! Not read (yet): rpm databases, Rust `cargo auditable` data, Go binaries older than 1.18.

pub(crate) mod cyclonedx;
pub(crate) mod gobuild;
pub(crate) mod license;
pub(crate) mod purl;
pub(crate) mod rpm;
pub(crate) mod scan;
pub(crate) mod spdx;
pub(crate) mod tree;

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use futures::StreamExt;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::model::descriptor::{Descriptor, Platform};
use crate::model::document::View;
use crate::model::verify::VerifyReader;
use crate::transport::Source;

/// Layers read at once by default.
pub const DEFAULT_JOBS: usize = 4;

/// The ecosystem a package comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PackageKind {
    /// Debian package (dpkg).
    Deb,
    /// Alpine package (apk).
    Apk,
    /// Python distribution (dist-info, egg-info).
    Python,
    /// npm package under `node_modules`.
    Npm,
    /// Go module linked into a binary.
    Go,
    /// rpm package (`rpmdb.sqlite`).
    Rpm,
}

impl PackageKind {
    /// Short name (`deb`, `apk`, `python`, `npm`, `go`, `rpm`).
    pub fn as_str(self) -> &'static str {
        match self {
            PackageKind::Deb => "deb",
            PackageKind::Apk => "apk",
            PackageKind::Python => "python",
            PackageKind::Npm => "npm",
            PackageKind::Go => "go",
            PackageKind::Rpm => "rpm",
        }
    }
}

/// One package found in an image.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Package {
    /// Its ecosystem.
    pub kind: PackageKind,
    /// Name as the database spells it.
    pub name: String,
    /// Version as the database spells it.
    pub version: String,
    /// Package URL (`pkg:deb/debian/zlib1g@1:1.2.13.dfsg-1?arch=amd64`).
    pub purl: String,
    /// The license as an SPDX expression, when the metadata states one.
    pub license: Option<String>,
    /// The license text as the metadata states it.
    pub license_stated: Option<String>,
    /// Maintainer or author, as stated.
    pub supplier: Option<String>,
    /// Regular files the package owns that are in the image (absolute paths).
    pub files: Vec<String>,
    /// The database or metadata file the package was read from.
    pub location: String,
}

/// The distribution `os-release` names.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Distro {
    /// `ID` (`debian`, `alpine`).
    pub id: String,
    /// `VERSION_ID`.
    pub version_id: Option<String>,
    /// `PRETTY_NAME`.
    pub pretty_name: Option<String>,
}

/// What a scan found in one image.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sbom {
    /// The name the image was asked for by (`localhost:5000/app:v1`), if any.
    pub name: Option<String>,
    /// The image manifest scanned.
    pub manifest: Descriptor,
    /// Its platform, from the config.
    pub platform: Option<Platform>,
    /// The distribution, from `os-release`.
    pub distro: Option<Distro>,
    /// Packages, sorted by kind, name, version.
    pub packages: Vec<Package>,
    /// SHA-1 (hex) of each file some package owns, by absolute path.
    #[serde(skip)]
    pub file_sha1: BTreeMap<String, String>,
    /// What was scanned: an image (the default) or a directory of sources.
    #[serde(skip)]
    pub purpose: Purpose,
}

/// How to scan.
#[derive(Clone, Debug)]
pub struct ScanOptions {
    /// Layers read at once.
    pub jobs: usize,
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions { jobs: DEFAULT_JOBS }
    }
}

/// Scan the image `root` names in `src` (an index: its entry for `platform`; without one, its
/// only image, else this machine's platform as syft and docker pick). `name` is what the image
/// is called in the documents, which also name the platform scanned.
pub async fn scan_image(
    src: &dyn Source,
    root: &Descriptor,
    platform: Option<&Platform>,
    name: Option<&str>,
    opts: &ScanOptions,
) -> Result<Sbom> {
    // several images and none named: this machine's, when the index has it
    let manifest = crate::export::pick_manifest(src, root, platform, Some(&Platform::host())).await?;
    scan_manifest(src, &manifest, name, opts).await
}

/// Scan the image manifest `manifest` of `src`.
pub async fn scan_manifest(
    src: &dyn Source,
    manifest: &Descriptor,
    name: Option<&str>,
    opts: &ScanOptions,
) -> Result<Sbom> {
    let doc = src.fetch_document(manifest).await?;
    let View::Manifest(m) = &doc.view else {
        return Err(Error::Unsupported(format!("{} in {} is not an image manifest", manifest.digest, src.location())));
    };
    // The platform is a label in the documents: a config that cannot be read leaves it out.
    let platform: Option<Platform> = crate::merge::platform_of(src, manifest).await.unwrap_or_default();
    let kept = Arc::new(AtomicU64::new(0));
    let location = src.location();
    let layers = m.layers.clone();
    let scans = futures::stream::iter(layers.into_iter().map(|layer| {
        let kept = kept.clone();
        let location = location.clone();
        async move {
            let stream = src.open_blob(&layer, 0).await?;
            let verified = VerifyReader::new(stream, &layer, location);
            let handle = tokio::runtime::Handle::current();
            tokio::task::spawn_blocking(move || {
                let _guard = handle.enter();
                let mut raw = tokio_util::io::SyncIoBridge::new_with_handle(verified, handle.clone());
                let events = tree::scan_layer_blocking(&mut raw, &layer, &kept);
                // Drain what the decompressor left, so the digest check sees the last byte.
                let drained = std::io::copy(&mut raw, &mut std::io::sink());
                match (events, drained) {
                    (Ok(ev), Ok(_)) => Ok(ev),
                    (_, Err(e)) => Err(crate::model::verify::unwrap_io_error(e, format!("layer {}", layer.digest))),
                    (Err(e), _) => Err(e),
                }
            })
            .await
            .map_err(|e| Error::task("sbom", e))?
        }
    }))
    .buffered(opts.jobs.max(1))
    .collect::<Vec<Result<Vec<tree::Event>>>>()
    .await;
    let mut t = tree::Tree::new();
    for events in scans {
        tree::apply(&mut t, events?);
    }
    Ok(from_tree(&t, name, manifest.clone(), platform, Purpose::Container))
}

/// Scan the directory `dir` (a build context) as if it were an image's filesystem; `digest`
/// (the context's) stands for it in the documents, named `name`. Blocking.
pub fn scan_dir_blocking(dir: &std::path::Path, digest: &crate::model::digest::Digest, name: &str) -> Result<Sbom> {
    let kept = AtomicU64::new(0);
    let mut t = tree::Tree::new();
    tree::apply(&mut t, tree::scan_dir_blocking(dir, &kept)?);
    let subject = Descriptor::new(CONTEXT_MEDIA_TYPE.to_string(), digest.clone(), 0);
    Ok(from_tree(&t, Some(name), subject, None, Purpose::Source))
}

/// Media type standing for a build context directory in an SBOM's subject.
pub const CONTEXT_MEDIA_TYPE: &str = "application/vnd.hoist.build-context.v1";

/// What an SBOM's subject is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Purpose {
    /// A container image (or a build stage's filesystem).
    Container,
    /// A directory of sources (a build context).
    Source,
}

/// The packages of a final tree, and the SHA-1s of the files they own.
fn from_tree(
    t: &tree::Tree,
    name: Option<&str>,
    manifest: Descriptor,
    platform: Option<Platform>,
    purpose: Purpose,
) -> Sbom {
    let distro = scan::distro(t);
    let packages = scan::packages(t, distro.as_ref());
    let mut file_sha1 = BTreeMap::new();
    for p in &packages {
        for f in &p.files {
            if let Some(sha) = t.get(f.trim_start_matches('/')).and_then(|e| e.sha1) {
                file_sha1.insert(f.clone(), hex::encode(sha));
            }
        }
    }
    Sbom { name: name.map(str::to_string), manifest, platform, distro, packages, file_sha1, purpose }
}

/// The formats an SBOM is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// SPDX 2.3 JSON.
    SpdxJson,
    /// CycloneDX 1.6 JSON.
    CycloneDxJson,
}

impl Format {
    /// Parse `spdx-json`/`spdx` or `cyclonedx-json`/`cyclonedx`.
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "spdx-json" | "spdx" => Some(Format::SpdxJson),
            "cyclonedx-json" | "cyclonedx" => Some(Format::CycloneDxJson),
            _ => None,
        }
    }

    /// The in-toto predicate type of a statement carrying this format.
    pub fn predicate_type(self) -> &'static str {
        match self {
            Format::SpdxJson => spdx::PREDICATE_TYPE,
            Format::CycloneDxJson => cyclonedx::PREDICATE_TYPE,
        }
    }

    /// Media type of the document (an OCI referrer's `artifactType`).
    pub fn media_type(self) -> &'static str {
        match self {
            Format::SpdxJson => spdx::MEDIA_TYPE,
            Format::CycloneDxJson => cyclonedx::MEDIA_TYPE,
        }
    }

    /// The document for `sbom`, created at `created` (seconds since the epoch).
    pub fn render(self, sbom: &Sbom, created: i64) -> Result<Vec<u8>> {
        let v = match self {
            Format::SpdxJson => spdx::document(sbom, created),
            Format::CycloneDxJson => cyclonedx::document(sbom, created),
        };
        serde_json::to_vec_pretty(&v).map_err(|e| Error::serialize("sbom", e))
    }
}

/// A name for the image in documents: `name` if given, else its manifest digest.
pub(crate) fn image_name(sbom: &Sbom) -> String {
    sbom.name.clone().unwrap_or_else(|| sbom.manifest.digest.to_string())
}

/// A UUID (version 4 layout) derived from `seed`: documents stay byte-for-byte reproducible.
pub(crate) fn uuid_from(seed: &str) -> String {
    use sha2::Digest as _;
    let h = sha2::Sha256::digest(seed.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&h[..16]);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let x = hex::encode(b);
    format!("{}-{}-{}-{}-{}", &x[..8], &x[8..12], &x[12..16], &x[16..20], &x[20..])
}
