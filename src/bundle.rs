//! CNAB bundles as cnab-to-oci stores them: an index whose entries are a config manifest
//! (its config blob is the canonical-JSON bundle.json), the invocation image and the
//! component images, each referenced by digest. `plan` makes it, [`merge::write`](crate::merge::write) ships it.
//!
//! Not for: running bundles, or bundle.json fields beyond images (actions, parameters, …).

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::merge::{platform_of, read_blob, Child, Created, Plan};
use crate::model::descriptor::{Descriptor, Platform};
use crate::model::document::View;
use crate::model::media;
use crate::model::write::{ImageIndex, ImageManifest};
use crate::transport::Source;

/// One image in bundle.json. Fields in sorted order: the struct serializes as canonical JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleImage {
    /// `contentDigest`: digest of the image's manifest or index.
    #[serde(rename = "contentDigest")]
    pub content_digest: String,
    /// `image`: where the image is (`REPO@DIGEST`).
    pub image: String,
    /// `imageType`: always `oci`.
    #[serde(rename = "imageType")]
    pub image_type: String,
    /// `mediaType` of the image's manifest or index.
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// Size of the image's manifest or index.
    pub size: u64,
}

impl BundleImage {
    /// An OCI image `image` (`REPO@DIGEST`) with descriptor `desc`.
    pub fn oci(image: impl Into<String>, desc: &Descriptor) -> Self {
        BundleImage {
            content_digest: desc.digest.to_string(),
            image: image.into(),
            image_type: "oci".into(),
            media_type: desc.media_type.clone(),
            size: desc.size,
        }
    }
}

/// bundle.json, the part hoist writes. Fields in sorted order, maps sorted, compact output:
/// CNAB's canonical JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BundleJson {
    /// The bundle's description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Component images by name.
    pub images: BTreeMap<String, BundleImage>,
    /// `invocationImages`: the image that runs the bundle's actions.
    #[serde(rename = "invocationImages")]
    pub invocation_images: Vec<BundleImage>,
    /// Keywords (`keywords`), if any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub keywords: Vec<String>,
    /// Maintainers (`maintainers`), if any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub maintainers: Vec<Maintainer>,
    /// The bundle's name.
    pub name: String,
    /// `schemaVersion`: [`media::CNAB_SCHEMA_VERSION`].
    #[serde(rename = "schemaVersion")]
    pub schema_version: String,
    /// The bundle's version.
    pub version: String,
}

impl BundleJson {
    /// bundle.json as canonical JSON (sorted keys, compact).
    pub fn to_canonical_bytes(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self).map_err(|e| Error::Other(format!("serialize bundle.json: {e}")))
    }
}

/// A bundle maintainer, as bundle.json has it (fields in sorted order).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Maintainer {
    /// E-mail address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Name.
    pub name: String,
    /// Home page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

impl std::str::FromStr for Maintainer {
    type Err = Error;
    /// `NAME`, `NAME <EMAIL>` or `NAME <EMAIL> (URL)`, as npm writes authors.
    fn from_str(s: &str) -> Result<Maintainer> {
        let (rest, url) = match s.trim().strip_suffix(')').and_then(|r| r.rsplit_once('(')) {
            Some((r, u)) => (r.trim(), Some(u.trim().to_string())),
            None => (s.trim(), None),
        };
        let (name, email) = match rest.strip_suffix('>').and_then(|r| r.rsplit_once('<')) {
            Some((n, e)) => (n.trim(), Some(e.trim().to_string())),
            None => (rest, None),
        };
        if name.is_empty() {
            return Err(Error::InvalidReference { reference: s.into(), reason: "a maintainer needs a name".into() });
        }
        Ok(Maintainer { email, name: name.to_string(), url })
    }
}

/// The index annotation cnab-to-oci writes the bundle's keywords to (a JSON array).
pub const ANNOTATION_CNAB_KEYWORDS: &str = "io.cnab.keywords";
/// The index annotation cnab-to-oci writes the bundle's maintainers to (a JSON array).
pub const ANNOTATION_AUTHORS: &str = "org.opencontainers.image.authors";

/// Name, version and description of a bundle.
#[derive(Clone, Debug, Default)]
pub struct BundleSpec {
    /// The bundle's name (`--name`).
    pub name: String,
    /// The bundle's version (`--version`).
    pub version: String,
    /// An optional description.
    pub description: Option<String>,
    /// Keywords (bundle.json `keywords`, index annotation `io.cnab.keywords`).
    pub keywords: Vec<String>,
    /// Maintainers (bundle.json `maintainers`, index annotation
    /// `org.opencontainers.image.authors`).
    pub maintainers: Vec<Maintainer>,
}

/// An image to put in a bundle: where it is, its root, and the name bundle.json records
/// for it (`REPO@DIGEST`, normally in the bundle's own repository).
pub struct BundleInput<'a> {
    /// Where the image's graph is read from.
    pub source: &'a dyn Source,
    /// The image's root (manifest or index).
    pub desc: Descriptor,
    /// The name bundle.json records (`REPO@DIGEST`).
    pub image: String,
    /// How the user named it, for notes and errors.
    pub label: String,
}

fn check_name(what: &str, s: &str) -> Result<()> {
    if s.is_empty() || s.chars().any(|c| c.is_control()) {
        return Err(Error::InvalidReference { reference: s.to_string(), reason: format!("invalid {what}") });
    }
    Ok(())
}

/// The index entry of a bundle image: media type from its document, platform from its config.
async fn image_entry(input: &BundleInput<'_>) -> Result<Descriptor> {
    let mut d = input.desc.clone();
    d.annotations.clear();
    let doc = input.source.fetch_document(&d).await?;
    d.media_type = doc.media_type.clone();
    if d.artifact_type.is_none() {
        d.artifact_type = doc.artifact_type();
    }
    if d.platform.is_none() && !doc.is_index() {
        d.platform = platform_of(input.source, &d).await?;
    }
    Ok(d)
}

/// Plan the bundle index: config manifest (bundle.json), invocation image, components
/// (sorted by name). The images are copied by [`merge::write`](crate::merge::write) before the index.
pub async fn plan<'a>(
    spec: &BundleSpec,
    invocation: BundleInput<'a>,
    components: Vec<(String, BundleInput<'a>)>,
) -> Result<Plan<'a>> {
    check_name("bundle name", &spec.name)?;
    check_name("bundle version", &spec.version)?;
    let mut comps: BTreeMap<String, BundleInput<'a>> = BTreeMap::new();
    for (name, c) in components {
        check_name("component name", &name)?;
        if comps.contains_key(&name) {
            return Err(Error::InvalidReference { reference: name, reason: "component named twice".into() });
        }
        comps.insert(name, c);
    }
    let inv_desc = image_entry(&invocation).await?;
    let mut comp_descs = BTreeMap::new();
    for (name, c) in &comps {
        comp_descs.insert(name.clone(), image_entry(c).await?);
    }
    let bundle = BundleJson {
        description: spec.description.clone().filter(|d| !d.is_empty()),
        images: comps.iter().map(|(n, c)| (n.clone(), BundleImage::oci(&c.image, &comp_descs[n]))).collect(),
        invocation_images: vec![BundleImage::oci(&invocation.image, &inv_desc)],
        keywords: spec.keywords.clone(),
        maintainers: spec.maintainers.clone(),
        name: spec.name.clone(),
        schema_version: media::CNAB_SCHEMA_VERSION.into(),
        version: spec.version.clone(),
    };
    let bundle_bytes = Bytes::from(bundle.to_canonical_bytes()?);
    let config = Descriptor::of_bytes(media::CNAB_CONFIG, &bundle_bytes);
    // The OCI image-manifest schema requires at least one layer (and some registries refuse a
    // manifest without): bundle.json is also the one layer, as cnab-to-oci's fallback for
    // such registries has it. Readers take bundle.json from the config, as before.
    let manifest = ImageManifest::new(config.clone(), vec![config.clone()]);
    let manifest_bytes = Bytes::from(manifest.to_bytes()?);
    let manifest_desc = Descriptor::of_bytes(media::OCI_MANIFEST, &manifest_bytes);

    let typed = |d: &Descriptor, ty: &str| d.clone().with_annotation(media::ANNOTATION_CNAB_MANIFEST_TYPE, ty);
    let mut entries = vec![typed(&manifest_desc, "config"), typed(&inv_desc, "invocation")];
    let mut children = vec![Child { source: invocation.source, desc: inv_desc.clone(), label: invocation.label }];
    for (name, c) in comps {
        let d = typed(&comp_descs[&name], "component").with_annotation(media::ANNOTATION_CNAB_COMPONENT_NAME, &name);
        entries.push(d.clone());
        children.push(Child { source: c.source, desc: d, label: c.label });
    }
    let mut index = ImageIndex::new(entries);
    let a = &mut index.annotations;
    a.insert(media::ANNOTATION_CNAB_RUNTIME_VERSION.into(), media::CNAB_RUNTIME_VERSION.into());
    a.insert(media::ANNOTATION_ARTIFACT_TYPE.into(), media::CNAB_MANIFEST_ARTIFACT.into());
    a.insert(media::ANNOTATION_TITLE.into(), spec.name.clone());
    a.insert(media::ANNOTATION_VERSION.into(), spec.version.clone());
    if let Some(d) = bundle.description.as_ref() {
        a.insert(media::ANNOTATION_DESCRIPTION.into(), d.clone());
    }
    // As cnab-to-oci writes them: JSON of bundle.json's arrays.
    let json_err = |e: serde_json::Error| Error::Other(format!("serialize bundle annotations: {e}"));
    if !bundle.keywords.is_empty() {
        a.insert(ANNOTATION_CNAB_KEYWORDS.into(), serde_json::to_string(&bundle.keywords).map_err(json_err)?);
    }
    if !bundle.maintainers.is_empty() {
        a.insert(ANNOTATION_AUTHORS.into(), serde_json::to_string(&bundle.maintainers).map_err(json_err)?);
    }
    let bytes = Bytes::from(index.to_bytes()?);
    let desc = Descriptor::of_bytes(media::OCI_INDEX, &bytes);
    Ok(Plan {
        desc,
        bytes,
        children,
        created: vec![
            Created { desc: config, bytes: bundle_bytes },
            Created { desc: manifest_desc, bytes: manifest_bytes },
        ],
        notes: Vec::new(),
    })
}

/// One image of a bundle as `inspect` reports it.
#[derive(Clone, Debug, Serialize)]
pub struct ComponentInfo {
    /// `invocation` or the component name.
    pub name: String,
    /// `invocation` or `component`.
    pub role: String,
    /// Digest of the image's manifest or index.
    pub digest: String,
    /// Its media type.
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// Its size.
    pub size: u64,
    /// Its platform, if the index entry states one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Where bundle.json says the image is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

/// What a bundle holds.
#[derive(Clone, Debug, Serialize)]
pub struct BundleInfo {
    /// Digest of the bundle index.
    pub digest: String,
    /// The bundle's name, from bundle.json.
    pub name: String,
    /// The bundle's version, from bundle.json.
    pub version: String,
    /// The bundle's description, from bundle.json.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// bundle.json's `schemaVersion`.
    #[serde(rename = "schemaVersion")]
    pub schema_version: String,
    /// The invocation image first, then the components.
    pub components: Vec<ComponentInfo>,
}

#[derive(Deserialize)]
struct BundleView {
    #[serde(default)]
    name: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(rename = "schemaVersion", default)]
    schema_version: String,
    #[serde(default)]
    images: BTreeMap<String, BundleImageView>,
    #[serde(rename = "invocationImages", default)]
    invocation_images: Vec<BundleImageView>,
}

#[derive(Deserialize)]
struct BundleImageView {
    #[serde(default)]
    image: String,
    #[serde(rename = "contentDigest", default)]
    content_digest: Option<String>,
}

/// Read the bundle rooted at `desc` in `src`: bundle.json from the config manifest, images
/// from the index entries (by their `io.cnab.*` annotations).
pub async fn inspect(src: &dyn Source, desc: &Descriptor) -> Result<BundleInfo> {
    let doc = src.fetch_document(desc).await?;
    let not_bundle = |why: &str| Error::malformed(format!("bundle {}", desc.digest), src.location(), why);
    let View::Index(index) = &doc.view else {
        return Err(not_bundle("a manifest, not a bundle index"));
    };
    let kind = |d: &Descriptor| d.annotations.get(media::ANNOTATION_CNAB_MANIFEST_TYPE).cloned().unwrap_or_default();
    let config_entry =
        index.manifests.iter().find(|d| kind(d) == "config").ok_or_else(|| not_bundle("no config manifest entry"))?;
    let config_doc = src.fetch_document(config_entry).await?;
    let View::Manifest(m) = &config_doc.view else {
        return Err(not_bundle("config entry is not a manifest"));
    };
    if m.config.media_type != media::CNAB_CONFIG {
        return Err(not_bundle(&format!("config media type {} is not {}", m.config.media_type, media::CNAB_CONFIG)));
    }
    let raw = read_blob(src, &m.config, media::MAX_MANIFEST_SIZE).await?;
    let b: BundleView = serde_json::from_slice(&raw)
        .map_err(|e| Error::malformed(format!("bundle.json {}", m.config.digest), src.location(), e))?;
    let image_of = |digest: &str, named: Option<&str>| {
        let from_named = named.and_then(|n| b.images.get(n)).map(|i| i.image.clone());
        from_named.or_else(|| {
            b.invocation_images
                .iter()
                .chain(b.images.values())
                .find(|i| i.content_digest.as_deref() == Some(digest))
                .map(|i| i.image.clone())
        })
    };
    let mut components = Vec::new();
    for d in &index.manifests {
        let (name, role) = match kind(d).as_str() {
            "invocation" => ("invocation".to_string(), "invocation"),
            "component" => (
                d.annotations.get(media::ANNOTATION_CNAB_COMPONENT_NAME).cloned().unwrap_or_else(|| "?".into()),
                "component",
            ),
            _ => continue,
        };
        let digest = d.digest.to_string();
        let image = image_of(&digest, (role == "component").then_some(name.as_str()));
        components.push(ComponentInfo {
            name,
            role: role.into(),
            digest,
            media_type: d.media_type.clone(),
            size: d.size,
            platform: d.platform.clone(),
            image,
        });
    }
    Ok(BundleInfo {
        digest: desc.digest.to_string(),
        name: b.name,
        version: b.version,
        description: b.description,
        schema_version: b.schema_version,
        components,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted_keys(v: &serde_json::Value) -> bool {
        match v {
            serde_json::Value::Object(m) => {
                let keys: Vec<&String> = m.keys().collect();
                keys.windows(2).all(|w| w[0] < w[1]) && m.values().all(sorted_keys)
            }
            serde_json::Value::Array(a) => a.iter().all(sorted_keys),
            _ => true,
        }
    }

    #[test]
    fn maintainers_parse_like_npm_authors() {
        let m: Maintainer = "Jane Doe <jane@example.com> (https://example.com)".parse().unwrap();
        assert_eq!(
            (m.name.as_str(), m.email.as_deref(), m.url.as_deref()),
            ("Jane Doe", Some("jane@example.com"), Some("https://example.com"))
        );
        let m: Maintainer = "Solo".parse().unwrap();
        assert_eq!((m.name.as_str(), m.email, m.url), ("Solo", None, None));
        assert!(" <a@b>".parse::<Maintainer>().is_err());
        assert_eq!(
            serde_json::to_string(&"A <a@b>".parse::<Maintainer>().unwrap()).unwrap(),
            r#"{"email":"a@b","name":"A"}"#
        );
    }

    #[test]
    fn golden_bundle_json() {
        let inv = Descriptor::of_bytes(media::OCI_MANIFEST, b"invocation");
        let web = Descriptor::of_bytes(media::OCI_INDEX, b"web");
        let db = Descriptor::of_bytes(media::OCI_MANIFEST, b"db");
        let b = BundleJson {
            description: Some("A demo".into()),
            images: [
                ("web".to_string(), BundleImage::oci(format!("r.example/b@{}", web.digest), &web)),
                ("db".to_string(), BundleImage::oci(format!("r.example/b@{}", db.digest), &db)),
            ]
            .into_iter()
            .collect(),
            invocation_images: vec![BundleImage::oci(format!("r.example/b@{}", inv.digest), &inv)],
            keywords: vec![],
            maintainers: vec![],
            name: "demo".into(),
            schema_version: media::CNAB_SCHEMA_VERSION.into(),
            version: "0.1.0".into(),
        };
        let bytes = b.to_canonical_bytes().unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert_eq!(
            text,
            concat!(
                r#"{"description":"A demo","images":{"#,
                r#""db":{"contentDigest":"sha256:7bdc25d1694ef984782a16f6f1710c1c6bc83ba7a131b515baf532bea021d011","image":"r.example/b@sha256:7bdc25d1694ef984782a16f6f1710c1c6bc83ba7a131b515baf532bea021d011","imageType":"oci","mediaType":"application/vnd.oci.image.manifest.v1+json","size":2},"#,
                r#""web":{"contentDigest":"sha256:4b5e57f6eb2f42b9039b3d1e13929295f231749c510cbe341cd68036d9af97e2","image":"r.example/b@sha256:4b5e57f6eb2f42b9039b3d1e13929295f231749c510cbe341cd68036d9af97e2","imageType":"oci","mediaType":"application/vnd.oci.image.index.v1+json","size":3}},"#,
                r#""invocationImages":[{"contentDigest":"sha256:40493fe6739aee8019fcd0c22c87b5811255e4ac5e09fb895119c4de495226a8","image":"r.example/b@sha256:40493fe6739aee8019fcd0c22c87b5811255e4ac5e09fb895119c4de495226a8","imageType":"oci","mediaType":"application/vnd.oci.image.manifest.v1+json","size":10}],"#,
                r#""name":"demo","schemaVersion":"v1.0.0","version":"0.1.0"}"#
            )
        );
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert!(sorted_keys(&v), "bundle.json keys must be sorted (canonical JSON)");
        assert!(!text.contains(' ') || text.contains("A demo"));
    }
}
