//! CNAB bundles as cnab-to-oci stores them: an index whose entries are a config manifest
//! (its config blob is the canonical-JSON bundle.json), the invocation image and the
//! component images, each referenced by digest. `plan` makes it, [`merge::write`](crate::merge::write) ships it.
//!
//! A whole bundle.json (`--bundle-file`) is kept as given, only its images' digests, sizes
//! and media types filled in ([`plan_file`]); [`pull`] gives it back with a relocation map.
//!
//! Not for: running bundles (actions, parameters and credentials are carried, not used).

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::merge::{read_blob, Child, Created, Plan};
use crate::model::descriptor::{Descriptor, Platform};
use crate::model::digest::Digest;
use crate::model::document::View;
use crate::model::media;
use crate::model::write::{ImageIndex, ImageManifest};
use crate::transport::Source;

/// The most bytes of a bundle.json hoist reads (`--bundle-file`, a bundle's config blob).
pub const MAX_BUNDLE_JSON: u64 = media::MAX_MANIFEST_SIZE;

/// `imageType` of an image whose root is a Docker schema 2 manifest or manifest list.
pub const IMAGE_TYPE_DOCKER: &str = "docker";
/// `imageType` of every other image (CNAB's default).
pub const IMAGE_TYPE_OCI: &str = "oci";

/// Which image of a bundle: the invocation image or a component by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// `invocationImages[0]`.
    Invocation,
    /// `images[NAME]`.
    Component(String),
}

/// A whole bundle.json (actions, parameters, credentials, outputs, custom, per-image
/// fields, ...): every member is kept as given; hoist only fills in each image's
/// `contentDigest`, `size`, `mediaType` and `imageType` (and `image` where it has none).
/// Written as CNAB's canonical JSON (keys sorted, compact).
#[derive(Clone, Debug, PartialEq)]
pub struct BundleFile {
    doc: serde_json::Map<String, serde_json::Value>,
    origin: String,
}

/// `value` with every object's keys sorted (serde_json keeps insertion order here).
fn canonical(value: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            Value::Object(keys.into_iter().map(|k| (k.clone(), canonical(&m[k]))).collect())
        }
        Value::Array(a) => Value::Array(a.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

impl BundleFile {
    /// Parse a bundle.json read from `origin` (named in errors). It needs a string `name`
    /// and `version`, exactly one invocation image (as cnab-to-oci), and an `image`
    /// reference in every image. Top-level `null` members are dropped (cnab-go omits empty
    /// fields; the CNAB schema has no nulls there).
    pub fn parse(bytes: &[u8], origin: &str) -> Result<BundleFile> {
        let bad = |why: String| Error::malformed("bundle.json", origin, why);
        if bytes.len() as u64 > MAX_BUNDLE_JSON {
            return Err(bad(format!("larger than {MAX_BUNDLE_JSON} bytes")));
        }
        let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        let serde_json::Value::Object(mut doc) = v else {
            return Err(bad("not a JSON object".into()));
        };
        doc.retain(|_, v| !v.is_null());
        for key in ["name", "version"] {
            match doc.get(key).and_then(|v| v.as_str()) {
                Some(s) => check_name(&format!("bundle {key}"), s)?,
                None => return Err(bad(format!("no string `{key}`"))),
            }
        }
        doc.entry("schemaVersion").or_insert_with(|| media::CNAB_SCHEMA_VERSION.into());
        let f = BundleFile { doc, origin: origin.to_string() };
        match f.doc.get("invocationImages").and_then(|v| v.as_array()).map(Vec::len) {
            Some(1) => {}
            Some(n) => return Err(bad(format!("{n} invocation images; a bundle has exactly one"))),
            None => return Err(bad("no `invocationImages` array".into())),
        }
        if f.doc.get("images").is_some_and(|v| !v.is_object()) {
            return Err(bad("`images` is not an object".into()));
        }
        let mut roles = vec![Role::Invocation];
        roles.extend(f.component_names().into_iter().map(Role::Component));
        for role in roles {
            let what = f.describe(&role);
            let img = f.image(&role).ok_or_else(|| bad(format!("{what} is not an object")))?;
            let image = img.get("image").and_then(|i| i.as_str()).unwrap_or_default();
            if image.is_empty() {
                return Err(bad(format!("{what} has no `image` reference")));
            }
        }
        Ok(f)
    }

    /// The skeleton `bundle create --name ... --invocation ... --component ...` fills in.
    fn from_spec(spec: &BundleSpec, components: &[&str]) -> Result<BundleFile> {
        use serde_json::{json, Value};
        let json_err = |e: serde_json::Error| Error::serialize("serialize bundle.json", e);
        let mut doc = serde_json::Map::new();
        if let Some(d) = spec.description.as_ref().filter(|d| !d.is_empty()) {
            doc.insert("description".into(), d.as_str().into());
        }
        let images: serde_json::Map<String, Value> = components.iter().map(|n| (n.to_string(), json!({}))).collect();
        doc.insert("images".into(), Value::Object(images));
        doc.insert("invocationImages".into(), json!([{}]));
        if !spec.keywords.is_empty() {
            doc.insert("keywords".into(), serde_json::to_value(&spec.keywords).map_err(json_err)?);
        }
        if !spec.maintainers.is_empty() {
            doc.insert("maintainers".into(), serde_json::to_value(&spec.maintainers).map_err(json_err)?);
        }
        doc.insert("name".into(), spec.name.as_str().into());
        doc.insert("schemaVersion".into(), media::CNAB_SCHEMA_VERSION.into());
        doc.insert("version".into(), spec.version.as_str().into());
        Ok(BundleFile { doc, origin: "the command line".into() })
    }

    /// A top-level string member.
    fn text(&self, key: &str) -> Option<&str> {
        self.doc.get(key).and_then(|v| v.as_str())
    }

    /// The bundle's name.
    pub fn name(&self) -> &str {
        self.text("name").unwrap_or_default()
    }

    /// The bundle's version.
    pub fn version(&self) -> &str {
        self.text("version").unwrap_or_default()
    }

    /// The component names (`images` keys), sorted.
    pub fn component_names(&self) -> Vec<String> {
        let mut v: Vec<String> =
            self.doc.get("images").and_then(|v| v.as_object()).map(|m| m.keys().cloned().collect()).unwrap_or_default();
        v.sort();
        v
    }

    fn image(&self, role: &Role) -> Option<&serde_json::Map<String, serde_json::Value>> {
        match role {
            Role::Invocation => self.doc.get("invocationImages")?.as_array()?.first()?.as_object(),
            Role::Component(n) => self.doc.get("images")?.as_object()?.get(n)?.as_object(),
        }
    }

    fn image_mut(&mut self, role: &Role) -> Option<&mut serde_json::Map<String, serde_json::Value>> {
        match role {
            Role::Invocation => self.doc.get_mut("invocationImages")?.as_array_mut()?.first_mut()?.as_object_mut(),
            Role::Component(n) => self.doc.get_mut("images")?.as_object_mut()?.get_mut(n)?.as_object_mut(),
        }
    }

    fn describe(&self, role: &Role) -> String {
        match role {
            Role::Invocation => "invocationImages[0]".into(),
            Role::Component(n) => format!("images[{n:?}]"),
        }
    }

    /// The `image` reference of an image, as the bundle names it.
    pub fn image_ref(&self, role: &Role) -> Option<&str> {
        self.image(role)?.get("image")?.as_str()
    }

    /// Record that `role`'s image is `desc` (its root as copied): `contentDigest`, `size`,
    /// `mediaType`, `imageType` (`docker` for Docker schema 2, else `oci`); `image` set to
    /// `default_image` only when the bundle has none. A `contentDigest`, `size` or
    /// `mediaType` the bundle already states must match (as `cnab-to-oci push` checks).
    pub fn fill(&mut self, role: &Role, desc: &Descriptor, default_image: &str) -> Result<()> {
        let origin = self.origin.clone();
        let what = self.describe(role);
        let img = self
            .image_mut(role)
            .ok_or_else(|| Error::malformed("bundle.json", &origin, format!("{what} is missing")))?;
        let name = img.get("image").and_then(|v| v.as_str()).unwrap_or(default_image).to_string();
        let stated = |key: &str, now: serde_json::Value| -> Result<()> {
            match img.get(key) {
                Some(v) if *v != now => Err(Error::malformed(
                    "bundle.json",
                    &origin,
                    format!("{what} ({name}) says {key} {v}, but the image has {now}; remove the field to take the image as it is"),
                )),
                _ => Ok(()),
            }
        };
        stated("contentDigest", desc.digest.to_string().into())?;
        stated("size", desc.size.into())?;
        stated("mediaType", desc.media_type.as_str().into())?;
        let docker = desc.media_type == media::DOCKER_MANIFEST || desc.media_type == media::DOCKER_MANIFEST_LIST;
        let image_type = if docker { IMAGE_TYPE_DOCKER } else { IMAGE_TYPE_OCI };
        img.entry("image").or_insert_with(|| default_image.into());
        img.insert("contentDigest".into(), desc.digest.to_string().into());
        img.insert("size".into(), desc.size.into());
        img.insert("mediaType".into(), desc.media_type.as_str().into());
        img.insert("imageType".into(), image_type.into());
        Ok(())
    }

    /// bundle.json as canonical JSON (sorted keys, compact).
    pub fn to_canonical_bytes(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(&canonical(&serde_json::Value::Object(self.doc.clone())))
            .map_err(|e| Error::serialize("serialize bundle.json", e))
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
    /// `NAME`, `NAME <EMAIL>` or `NAME <EMAIL> (URL)`, as npm writes authors, or
    /// `NAME:EMAIL[:URL]` (an empty EMAIL skips it: `NAME::URL`).
    fn from_str(s: &str) -> Result<Maintainer> {
        if !s.contains('<') && !s.contains('(') {
            if let Some((name, rest)) = s.split_once(':') {
                let (email, url) = match rest.split_once(':') {
                    Some((e, u)) => (e, Some(u)),
                    None => (rest, None),
                };
                let some = |v: &str| Some(v.trim().to_string()).filter(|v| !v.is_empty());
                if name.trim().is_empty() {
                    return Err(Error::Usage(format!("--maintainer {s:?}: a maintainer needs a name")));
                }
                return Ok(Maintainer { email: some(email), name: name.trim().to_string(), url: url.and_then(some) });
            }
        }
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
    /// The name bundle.json records when the bundle names none (`REPO@DIGEST`); a
    /// bundle file's own `image` is kept.
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

/// The index entry of a bundle image: media type from its document, and no platform, as
/// cnab-to-oci writes it: with platforms, `docker pull` of the bundle's reference would pick
/// a component image as if the bundle were a multi-platform image.
async fn image_entry(input: &BundleInput<'_>) -> Result<Descriptor> {
    let mut d = input.desc.clone();
    d.annotations.clear();
    d.platform = None;
    let doc = input.source.fetch_document(&d).await?;
    d.media_type = doc.media_type.clone();
    if d.artifact_type.is_none() {
        d.artifact_type = doc.artifact_type();
    }
    Ok(d)
}

/// Plan the bundle index from `--name`, `--version`, ...: bundle.json records each image
/// as its input's `image` (`REPO@DIGEST`). See [`plan_file`].
pub async fn plan<'a>(
    spec: &BundleSpec,
    invocation: BundleInput<'a>,
    components: Vec<(String, BundleInput<'a>)>,
) -> Result<Plan<'a>> {
    check_name("bundle name", &spec.name)?;
    check_name("bundle version", &spec.version)?;
    let mut seen = std::collections::BTreeSet::new();
    for (name, _) in &components {
        check_name("component name", name)?;
        if !seen.insert(name.as_str()) {
            return Err(Error::InvalidReference { reference: name.clone(), reason: "component named twice".into() });
        }
    }
    let names: Vec<&str> = components.iter().map(|(n, _)| n.as_str()).collect();
    let file = BundleFile::from_spec(spec, &names)?;
    plan_file(file, invocation, components).await
}

/// Plan the bundle index for a whole bundle.json (`--bundle-file`, as `cnab-to-oci push`):
/// config manifest (bundle.json, every member kept, each image's `contentDigest`, `size`,
/// `mediaType` and `imageType` filled in and its `image` kept), invocation image,
/// components (sorted by name). `components` must name exactly the bundle's `images`. The
/// images are copied by [`merge::write`](crate::merge::write) before the index.
pub async fn plan_file<'a>(
    mut file: BundleFile,
    invocation: BundleInput<'a>,
    components: Vec<(String, BundleInput<'a>)>,
) -> Result<Plan<'a>> {
    let mut comps: BTreeMap<String, BundleInput<'a>> = BTreeMap::new();
    for (name, c) in components {
        if comps.contains_key(&name) {
            return Err(Error::InvalidReference { reference: name, reason: "component named twice".into() });
        }
        comps.insert(name, c);
    }
    let wanted = file.component_names();
    if wanted.iter().ne(comps.keys()) {
        return Err(Error::malformed(
            "bundle.json",
            &file.origin,
            format!("images {wanted:?}, but images given for {:?}", comps.keys().collect::<Vec<_>>()),
        ));
    }
    let inv_desc = image_entry(&invocation).await?;
    file.fill(&Role::Invocation, &inv_desc, &invocation.image)?;
    let mut comp_descs = BTreeMap::new();
    for (name, c) in &comps {
        let d = image_entry(c).await?;
        file.fill(&Role::Component(name.clone()), &d, &c.image)?;
        comp_descs.insert(name.clone(), d);
    }
    let bundle_bytes = Bytes::from(file.to_canonical_bytes()?);
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
    a.insert(media::ANNOTATION_TITLE.into(), file.name().to_string());
    a.insert(media::ANNOTATION_VERSION.into(), file.version().to_string());
    if let Some(d) = file.text("description").filter(|d| !d.is_empty()) {
        a.insert(media::ANNOTATION_DESCRIPTION.into(), d.to_string());
    }
    // As cnab-to-oci writes them: JSON of bundle.json's arrays.
    for (key, annotation) in [("keywords", ANNOTATION_CNAB_KEYWORDS), ("maintainers", ANNOTATION_AUTHORS)] {
        if let Some(v) = file.doc.get(key).filter(|v| v.as_array().is_some_and(|a| !a.is_empty())) {
            let text = serde_json::to_string(&canonical(v))
                .map_err(|e| Error::serialize("serialize bundle annotations", e))?;
            a.insert(annotation.into(), text);
        }
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

/// The index entries of the bundle rooted at `desc` and its bundle.json's exact bytes (from
/// the config manifest's config blob, verified, at most [`MAX_BUNDLE_JSON`]).
async fn read_bundle(src: &dyn Source, desc: &Descriptor) -> Result<(Vec<Descriptor>, Vec<u8>)> {
    let doc = src.fetch_document(desc).await?;
    let not_bundle = |why: &str| Error::malformed(format!("bundle {}", desc.digest), src.location(), why);
    let View::Index(index) = &doc.view else {
        return Err(not_bundle("a manifest, not a bundle index"));
    };
    let config_entry =
        index.manifests.iter().find(|d| kind(d) == "config").ok_or_else(|| not_bundle("no config manifest entry"))?;
    let config_doc = src.fetch_document(config_entry).await?;
    let View::Manifest(m) = &config_doc.view else {
        return Err(not_bundle("config entry is not a manifest"));
    };
    if m.config.media_type != media::CNAB_CONFIG {
        return Err(not_bundle(&format!("config media type {} is not {}", m.config.media_type, media::CNAB_CONFIG)));
    }
    let raw = read_blob(src, &m.config, MAX_BUNDLE_JSON).await?;
    Ok((index.manifests.clone(), raw))
}

/// The `io.cnab.manifest.type` of an index entry (`config`, `invocation`, `component`).
fn kind(d: &Descriptor) -> String {
    d.annotations.get(media::ANNOTATION_CNAB_MANIFEST_TYPE).cloned().unwrap_or_default()
}

/// A bundle as `bundle pull` writes it.
#[derive(Clone, Debug)]
pub struct Pulled {
    /// bundle.json: the exact bytes stored in the bundle (verified by digest).
    pub bundle_json: Vec<u8>,
    /// The relocation map: each image's `image` as bundle.json names it -> where the image
    /// is now (what `located` said for its digest), as `cnab-to-oci pull` writes it.
    pub relocation_map: BTreeMap<String, String>,
}

impl Pulled {
    /// The relocation map as canonical JSON (sorted keys, compact).
    pub fn relocation_map_bytes(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(&self.relocation_map).map_err(|e| Error::serialize("serialize relocation map", e))
    }
}

/// Read the bundle rooted at `desc` in `src` for `bundle pull`: bundle.json as stored and
/// the relocation map, each invocation and component entry of the index mapped from the
/// `image` bundle.json gives it to `located(digest)` (`REPO@DIGEST` where the bundle is).
pub async fn pull(src: &dyn Source, desc: &Descriptor, located: &dyn Fn(&Digest) -> String) -> Result<Pulled> {
    let (entries, raw) = read_bundle(src, desc).await?;
    let file = BundleFile::parse(&raw, &format!("{} (bundle {})", src.location(), desc.digest))?;
    let mut relocation_map = BTreeMap::new();
    for d in &entries {
        let role = match kind(d).as_str() {
            "config" => continue,
            "invocation" => Role::Invocation,
            "component" => match d.annotations.get(media::ANNOTATION_CNAB_COMPONENT_NAME) {
                Some(n) => Role::Component(n.clone()),
                None => {
                    return Err(Error::malformed(
                        format!("bundle {}", desc.digest),
                        src.location(),
                        format!("component entry {} has no {}", d.digest, media::ANNOTATION_CNAB_COMPONENT_NAME),
                    ))
                }
            },
            other => {
                return Err(Error::malformed(
                    format!("bundle {}", desc.digest),
                    src.location(),
                    format!("entry {} has {} {other:?}", d.digest, media::ANNOTATION_CNAB_MANIFEST_TYPE),
                ))
            }
        };
        let image = file.image_ref(&role).ok_or_else(|| {
            Error::malformed(
                format!("bundle {}", desc.digest),
                src.location(),
                format!("bundle.json has no {} for index entry {}", file.describe(&role), d.digest),
            )
        })?;
        relocation_map.insert(image.to_string(), located(&d.digest));
    }
    Ok(Pulled { bundle_json: raw, relocation_map })
}

/// Read the bundle rooted at `desc` in `src`: bundle.json from the config manifest, images
/// from the index entries (by their `io.cnab.*` annotations).
pub async fn inspect(src: &dyn Source, desc: &Descriptor) -> Result<BundleInfo> {
    let (manifests, raw) = read_bundle(src, desc).await?;
    let b: BundleView = serde_json::from_slice(&raw)
        .map_err(|e| Error::malformed(format!("bundle.json of {}", desc.digest), src.location(), e))?;
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
    for d in &manifests {
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
    fn maintainers_parse_with_colons() {
        let m: Maintainer = "Jane Doe:jane@example.com:https://example.com/jane".parse().unwrap();
        assert_eq!(m.name, "Jane Doe");
        assert_eq!(m.email.as_deref(), Some("jane@example.com"));
        assert_eq!(m.url.as_deref(), Some("https://example.com/jane"));
        let m: Maintainer = "Jane::https://example.com".parse().unwrap();
        assert_eq!((m.email, m.url.as_deref()), (None, Some("https://example.com")));
        assert!(":x@y".parse::<Maintainer>().is_err());
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
        let spec = BundleSpec {
            name: "demo".into(),
            version: "0.1.0".into(),
            description: Some("A demo".into()),
            ..Default::default()
        };
        let mut b = BundleFile::from_spec(&spec, &["web", "db"]).unwrap();
        b.fill(&Role::Invocation, &inv, &format!("r.example/b@{}", inv.digest)).unwrap();
        b.fill(&Role::Component("web".into()), &web, &format!("r.example/b@{}", web.digest)).unwrap();
        b.fill(&Role::Component("db".into()), &db, &format!("r.example/b@{}", db.digest)).unwrap();
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

    #[test]
    fn a_bundle_file_is_kept_whole_and_filled_in() {
        let raw = br#"{"name":"hello","version":"0.1.0","actions":{"io.cnab.status":{}},
            "parameters":{"port":{"definition":"port","destination":{"env":"PORT"}}},
            "credentials":null,"custom":{"z":1,"a":[{"y":2,"b":3}]},
            "invocationImages":[{"image":"r.example/inv:v1","imageType":"docker","labels":{"k":"v"}}],
            "images":{"web":{"image":"r.example/web:v1","description":"the web"}}}"#;
        let mut b = BundleFile::parse(raw, "bundle.json").unwrap();
        assert_eq!(b.component_names(), vec!["web".to_string()]);
        let inv = Descriptor::of_bytes(media::DOCKER_MANIFEST, b"inv");
        let web = Descriptor::of_bytes(media::OCI_MANIFEST, b"web");
        b.fill(&Role::Invocation, &inv, "ignored").unwrap();
        b.fill(&Role::Component("web".into()), &web, "ignored").unwrap();
        let out: serde_json::Value = serde_json::from_slice(&b.to_canonical_bytes().unwrap()).unwrap();
        assert!(sorted_keys(&out));
        assert!(out.get("credentials").is_none(), "top-level null dropped");
        assert_eq!(out["actions"], serde_json::json!({"io.cnab.status": {}}));
        assert_eq!(out["custom"]["a"][0]["b"], 3);
        assert_eq!(out["parameters"]["port"]["destination"]["env"], "PORT");
        let i = &out["invocationImages"][0];
        assert_eq!(
            (i["image"].as_str(), i["imageType"].as_str(), i["size"].as_u64()),
            (Some("r.example/inv:v1"), Some("docker"), Some(3))
        );
        assert_eq!(i["contentDigest"], inv.digest.to_string());
        assert_eq!(i["labels"]["k"], "v");
        let w = &out["images"]["web"];
        assert_eq!((w["image"].as_str(), w["imageType"].as_str()), (Some("r.example/web:v1"), Some("oci")));
        assert_eq!((w["mediaType"].as_str(), w["description"].as_str()), (Some(media::OCI_MANIFEST), Some("the web")));
        // A stated digest must match.
        let raw =
            br#"{"name":"h","version":"1","invocationImages":[{"image":"r/i:v1","contentDigest":"sha256:aaaa"}]}"#;
        let mut b = BundleFile::parse(raw, "bundle.json").unwrap();
        let e = b.fill(&Role::Invocation, &inv, "x").unwrap_err().to_string();
        assert!(e.contains("contentDigest") && e.contains("sha256:aaaa"), "{e}");
        // Shapes refused by name.
        for bad in [
            &br#"{"version":"1","invocationImages":[{"image":"a"}]}"#[..],
            br#"{"name":"h","version":"1","invocationImages":[]}"#,
            br#"{"name":"h","version":"1","invocationImages":[{"imageType":"oci"}]}"#,
            br#"{"name":"h","version":"1","invocationImages":[{"image":"a"}],"images":{"w":{}}}"#,
        ] {
            assert!(BundleFile::parse(bad, "bundle.json").is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
