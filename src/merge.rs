//! Image indexes made from other roots: `plan` merges manifests and indexes from any mix of
//! sources (multi-node builds: one manifest per platform) into one deterministic index, and
//! `write` copies every child to a destination before the index itself, tagging it last.
//!
//! Not for: building images (`build`) or moving an existing graph (`copy`). Child manifests
//! are never rewritten; only the index is created here.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;
use serde::Deserialize;

use crate::copy::{self, CopyOptions, CopyReport};
use crate::error::{Error, Result};
use crate::model::descriptor::{Descriptor, Platform};
use crate::model::digest::Digest;
use crate::model::document::{Document, View};
use crate::model::media;
use crate::model::platform::{is_attestation, select_entries};
use crate::model::write::ImageIndex;
use crate::transport::{BlobOutcome, BlobStream, Destination, Progress, Source};

/// Largest image config read to find a manifest's platform.
const MAX_CONFIG_SIZE: u64 = 16 * 1024 * 1024;

/// One root to put into the index: where it lives and its descriptor (from `resolve`).
pub struct Input<'a> {
    /// Where the root's graph is read from.
    pub source: &'a dyn Source,
    /// The root (a manifest or an index).
    pub desc: Descriptor,
    /// How the user named it (`host/app@sha256:…`), for notes and errors.
    pub label: String,
}

/// Which index entries a per-descriptor annotation applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    /// The index itself.
    Index,
    /// Every entry (`manifest:k=v`).
    AllManifests,
    /// The entry with this digest (`manifest[sha256:…]:k=v`).
    Digest(Digest),
    /// Entries with this platform (`manifest[linux/arm64]:k=v`).
    Platform(Platform),
}

/// One `--annotation`: `k=v` or `index:k=v` (the index), `manifest:k=v` (every entry),
/// `manifest[DIGEST|os/arch[/variant]]:k=v` (matching entries). `manifest-descriptor` (buildx)
/// is accepted for `manifest`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnnotationSpec {
    /// Which entries (or the index) it applies to.
    pub selector: Selector,
    /// Annotation key.
    pub key: String,
    /// Annotation value.
    pub value: String,
}

impl AnnotationSpec {
    /// Parse one `--annotation` value.
    pub fn parse(s: &str) -> Result<AnnotationSpec> {
        let bad = |why: &str| Error::InvalidReference { reference: s.to_string(), reason: why.to_string() };
        let (selector, kv) = if let Some(rest) = s.strip_prefix("index:") {
            (Selector::Index, rest)
        } else if let Some(rest) = s.strip_prefix("manifest-descriptor").or_else(|| s.strip_prefix("manifest")) {
            if let Some(rest) = rest.strip_prefix(':') {
                (Selector::AllManifests, rest)
            } else if let Some(rest) = rest.strip_prefix('[') {
                let (inner, rest) =
                    rest.split_once("]:").ok_or_else(|| bad("expected manifest[SELECTOR]:KEY=VALUE"))?;
                let sel = if inner.contains(':') {
                    Selector::Digest(inner.parse()?)
                } else {
                    Selector::Platform(
                        Platform::parse(inner).ok_or_else(|| bad("selector must be a digest or os/arch[/variant]"))?,
                    )
                };
                (sel, rest)
            } else {
                (Selector::Index, s)
            }
        } else {
            (Selector::Index, s)
        };
        let (k, v) = kv.split_once('=').ok_or_else(|| bad("annotation must be KEY=VALUE"))?;
        if k.is_empty() {
            return Err(bad("empty annotation key"));
        }
        Ok(AnnotationSpec { selector, key: k.to_string(), value: v.to_string() })
    }

    fn matches(&self, d: &Descriptor) -> bool {
        match &self.selector {
            Selector::Index => false,
            Selector::AllManifests => true,
            Selector::Digest(dg) => d.digest == *dg,
            Selector::Platform(p) => p.matches_entry(d),
        }
    }
}

/// The index already at the target, for `--append`.
pub struct Base<'a> {
    /// Where the existing index's children are read from.
    pub source: &'a dyn Source,
    /// The existing index.
    pub document: Document,
}

/// How to merge.
#[derive(Default)]
pub struct IndexOptions<'a> {
    /// Put indexes in as nested entries instead of their manifests.
    pub keep_nested: bool,
    /// Keep two different manifests for one platform instead of failing.
    pub allow_conflicts: bool,
    /// `--annotation`s to apply.
    pub annotations: Vec<AnnotationSpec>,
    /// `artifactType` of the new index.
    pub artifact_type: Option<String>,
    /// Entries (and annotations, artifact type) to start from; a manifest there is the first entry.
    pub base: Option<Base<'a>>,
    /// Keep only the images of these platforms, each with its attestation manifests (empty: all).
    pub platforms: Vec<Platform>,
}

/// One entry of the new index and the source its graph is read from.
pub struct Child<'a> {
    /// Where the entry's graph is read from.
    pub source: &'a dyn Source,
    /// The entry as written in the index.
    pub desc: Descriptor,
    /// How the user named it, for notes and errors.
    pub label: String,
}

/// A document hoist created and holds in memory, with the blobs only it refers to.
pub struct Created {
    /// Its descriptor.
    pub desc: Descriptor,
    /// Its exact bytes.
    pub bytes: Bytes,
}

/// A planned index: its exact bytes, its entries with their sources, and notes for the user.
pub struct Plan<'a> {
    /// Descriptor of the new index.
    pub desc: Descriptor,
    /// The new index's exact bytes.
    pub bytes: Bytes,
    /// The entries, in index order, each with its source.
    pub children: Vec<Child<'a>>,
    /// Documents and blobs hoist made for this index (bundle config), served from memory.
    pub created: Vec<Created>,
    /// What the user should know (duplicates dropped, empty inputs).
    pub notes: Vec<String>,
}

/// The platform written in a manifest's image config, if it is an image.
pub async fn platform_of(src: &dyn Source, desc: &Descriptor) -> Result<Option<Platform>> {
    let doc = src.fetch_document(desc).await?;
    let View::Manifest(m) = &doc.view else {
        return Ok(None);
    };
    if m.config.media_type != media::OCI_CONFIG && m.config.media_type != media::DOCKER_CONFIG {
        return Ok(None);
    }
    let raw = read_blob(src, &m.config, MAX_CONFIG_SIZE).await?;
    #[derive(Deserialize)]
    struct ConfigPlatform {
        #[serde(default)]
        architecture: String,
        #[serde(default)]
        os: String,
        #[serde(default)]
        variant: Option<String>,
        #[serde(rename = "os.version", default)]
        os_version: Option<String>,
        #[serde(rename = "os.features", default)]
        os_features: Option<Vec<String>>,
    }
    let c: ConfigPlatform = serde_json::from_slice(&raw)
        .map_err(|e| Error::malformed(format!("config {} of {}", m.config.digest, desc.digest), src.location(), e))?;
    if c.architecture.is_empty() || c.os.is_empty() {
        return Ok(None);
    }
    Ok(Some(Platform {
        architecture: c.architecture,
        os: c.os,
        os_version: c.os_version.filter(|s| !s.is_empty()),
        os_features: c.os_features.filter(|f| !f.is_empty()),
        variant: c.variant.filter(|s| !s.is_empty()),
        features: None,
    }))
}

/// Read a whole blob (at most `limit` bytes), verified against its descriptor
/// (the library's one small-blob reader, [`crate::copy::plan::read_small_blob`]).
pub async fn read_blob(src: &dyn Source, desc: &Descriptor, limit: u64) -> Result<Vec<u8>> {
    crate::copy::plan::read_small_blob(src, desc, limit).await
}

/// Entries collected so far, with duplicate and platform-conflict checks.
struct Collector<'a> {
    children: Vec<Child<'a>>,
    notes: Vec<String>,
    allow_conflicts: bool,
}

impl<'a> Collector<'a> {
    fn add(&mut self, child: Child<'a>) -> Result<()> {
        if let Some(prev) = self.children.iter().find(|c| c.desc.digest == child.desc.digest) {
            self.notes.push(format!(
                "{} from {} is already in the index (from {}); dropped the duplicate",
                child.desc.digest, child.label, prev.label
            ));
            return Ok(());
        }
        if let Some(p) = child.desc.platform.as_ref().filter(|_| !is_attestation(&child.desc)) {
            let clash = self.children.iter().find(|c| {
                !is_attestation(&c.desc)
                    && c.desc.platform.as_ref() == Some(p)
                    && media::is_manifest(&c.desc.media_type)
            });
            if let Some(prev) = clash.filter(|_| media::is_manifest(&child.desc.media_type)) {
                if !self.allow_conflicts {
                    return Err(Error::InvalidReference {
                        reference: child.label.clone(),
                        reason: format!(
                            "conflicting platform {p}: {} (from {}) and {} (from {}) are different manifests; \
                             drop one, or allow conflicts to keep both",
                            prev.desc.digest, prev.label, child.desc.digest, child.label
                        ),
                    });
                }
                self.notes.push(format!(
                    "platform {p} appears twice: {} and {} (conflicts allowed)",
                    prev.desc.digest, child.desc.digest
                ));
            }
        }
        self.children.push(child);
        Ok(())
    }
}

/// Keep the entries of `platforms` and their attestation manifests (the one rule,
/// [`select_entries`]); a note for each entry dropped, an error when nothing is left.
fn narrow_to_platforms(col: &mut Collector<'_>, platforms: &[Platform]) -> Result<()> {
    let descs: Vec<Descriptor> = col.children.iter().map(|c| c.desc.clone()).collect();
    let keep: Vec<Digest> = select_entries(&descs, |d| platforms.iter().any(|p| p.matches_entry(d)))
        .into_iter()
        .map(|d| d.digest.clone())
        .collect();
    let wanted = platforms.iter().map(Platform::to_string).collect::<Vec<_>>().join(", ");
    if keep.is_empty() {
        return Err(Error::InvalidReference {
            reference: wanted.clone(),
            reason: format!("no entry of the sources is an image for {wanted}"),
        });
    }
    let children = std::mem::take(&mut col.children);
    for c in children {
        if keep.contains(&c.desc.digest) {
            col.children.push(c);
        } else {
            let what = match (is_attestation(&c.desc), c.desc.platform.as_ref()) {
                (true, _) => "attestation manifest".to_string(),
                (false, Some(p)) => format!("{p} image"),
                (false, None) => "entry without a platform".to_string(),
            };
            col.notes.push(format!("{} ({what}, from {}) dropped: not for {wanted}", c.desc.digest, c.label));
        }
    }
    Ok(())
}

/// A descriptor as it goes into an index: no layout tag.
fn entry(desc: &Descriptor) -> Descriptor {
    let mut d = desc.clone();
    d.annotations.remove(media::ANNOTATION_REF_NAME);
    d
}

/// Fill in the platform of a manifest entry from its config when the descriptor lacks it.
async fn with_platform(src: &dyn Source, mut d: Descriptor) -> Result<Descriptor> {
    if d.platform.is_none() && media::is_manifest(&d.media_type) {
        d.platform = platform_of(src, &d).await?;
    }
    Ok(d)
}

/// One index source and nothing to change (no base, annotation, artifact type or nesting):
/// that index as it is, same bytes and digest, as `buildx imagetools create` documents for a
/// single source. None when the merge would change something.
async fn carbon_copy<'a>(inputs: &[Input<'a>], opts: &IndexOptions<'a>) -> Result<Option<Plan<'a>>> {
    let [input] = inputs else { return Ok(None) };
    if opts.base.is_some()
        || !opts.annotations.is_empty()
        || opts.artifact_type.is_some()
        || opts.keep_nested
        || !opts.platforms.is_empty()
    {
        return Ok(None);
    }
    let root = entry(&input.desc);
    let doc = input.source.fetch_document(&root).await?;
    let View::Index(i) = &doc.view else { return Ok(None) };
    let children = i
        .manifests
        .iter()
        .map(|m| Child { source: input.source, desc: entry(m), label: input.label.clone() })
        .collect();
    let mut desc = doc.descriptor();
    desc.artifact_type = i.artifact_type.clone();
    let note = format!("{} is the only source and an index: copied as it is ({})", input.label, doc.digest);
    Ok(Some(Plan { desc, bytes: doc.bytes.clone(), children, created: Vec::new(), notes: vec![note] }))
}

/// Work out the index: entries from `opts.base` first, then each input in order (indexes
/// flattened unless `keep_nested`), platforms filled in, duplicates dropped, conflicts refused.
pub async fn plan<'a>(inputs: &[Input<'a>], opts: IndexOptions<'a>) -> Result<Plan<'a>> {
    if let Some(copy) = carbon_copy(inputs, &opts).await? {
        return Ok(copy);
    }
    let mut col = Collector { children: Vec::new(), notes: Vec::new(), allow_conflicts: opts.allow_conflicts };
    let mut annotations = BTreeMap::new();
    let mut artifact_type = None;
    if let Some(base) = &opts.base {
        let label = format!("{}@{}", base.source.location(), base.document.digest);
        match &base.document.view {
            View::Index(i) => {
                annotations = i.annotations.clone();
                artifact_type = i.artifact_type.clone();
                for m in &i.manifests {
                    col.add(Child { source: base.source, desc: m.clone(), label: label.clone() })?;
                }
            }
            // A single manifest at the target becomes the first entry.
            View::Manifest(_) => {
                let d = with_platform(base.source, base.document.descriptor()).await?;
                col.add(Child { source: base.source, desc: d, label })?;
            }
        }
    }
    for input in inputs {
        let root = entry(&input.desc);
        let doc = input.source.fetch_document(&root).await?;
        if doc.is_index() && !opts.keep_nested {
            let View::Index(i) = &doc.view else { unreachable!() };
            if i.manifests.is_empty() {
                col.notes.push(format!("{} is an empty index; nothing taken from it", input.label));
            }
            for m in &i.manifests {
                let d = with_platform(input.source, entry(m)).await?;
                col.add(Child { source: input.source, desc: d, label: input.label.clone() })?;
            }
        } else {
            let mut d = root.clone();
            d.media_type = doc.media_type.clone();
            if d.artifact_type.is_none() {
                d.artifact_type = doc.artifact_type();
            }
            let d = with_platform(input.source, d).await?;
            col.add(Child { source: input.source, desc: d, label: input.label.clone() })?;
        }
    }
    if !opts.platforms.is_empty() {
        narrow_to_platforms(&mut col, &opts.platforms)?;
    }
    for a in &opts.annotations {
        if a.selector == Selector::Index {
            annotations.insert(a.key.clone(), a.value.clone());
            continue;
        }
        let mut hit = false;
        for c in col.children.iter_mut().filter(|c| a.matches(&c.desc)) {
            c.desc.annotations.insert(a.key.clone(), a.value.clone());
            hit = true;
        }
        if !hit {
            return Err(Error::InvalidReference {
                reference: format!("{}={}", a.key, a.value),
                reason: format!("annotation selector {:?} matches no manifest in the index", a.selector),
            });
        }
    }
    if opts.artifact_type.is_some() {
        artifact_type = opts.artifact_type.clone();
    }
    let Collector { children, notes, .. } = col;
    let mut index = ImageIndex::new(children.iter().map(|c| c.desc.clone()).collect());
    index.annotations = annotations;
    index.artifact_type = artifact_type;
    let bytes = Bytes::from(index.to_bytes()?);
    let mut desc = Descriptor::of_bytes(media::OCI_INDEX, &bytes);
    desc.artifact_type = index.artifact_type.clone();
    Ok(Plan { desc, bytes, children, created: Vec::new(), notes })
}

/// A `Source` over a plan: the created documents and blobs from memory, everything else
/// from the source of the entry it hangs under. Routes are learnt as manifests are served
/// (the graph copy always fetches a parent before its children).
pub struct PlanSource<'p, 'a> {
    plan: &'p Plan<'a>,
    sources: Vec<&'a dyn Source>,
    routes: Mutex<HashMap<Digest, usize>>,
}

impl<'p, 'a> PlanSource<'p, 'a> {
    /// Serve `plan`'s graph.
    pub fn new(plan: &'p Plan<'a>) -> Self {
        let mut sources: Vec<&'a dyn Source> = Vec::new();
        let mut routes = HashMap::new();
        for c in &plan.children {
            let i = match sources.iter().position(|s| std::ptr::addr_eq(*s, c.source)) {
                Some(i) => i,
                None => {
                    sources.push(c.source);
                    sources.len() - 1
                }
            };
            routes.insert(c.desc.digest.clone(), i);
        }
        PlanSource { plan, sources, routes: Mutex::new(routes) }
    }

    fn created(&self, digest: &Digest) -> Option<Bytes> {
        if *digest == self.plan.desc.digest {
            return Some(self.plan.bytes.clone());
        }
        self.plan.created.iter().find(|c| c.desc.digest == *digest).map(|c| c.bytes.clone())
    }

    fn route(&self, desc: &Descriptor) -> Result<&'a dyn Source> {
        let i = self.routes.lock().expect("lock").get(&desc.digest).copied();
        i.map(|i| self.sources[i]).ok_or_else(|| Error::not_found(format!("{}", desc.digest), self.location()))
    }

    fn learn(&self, bytes: &Bytes, desc: &Descriptor) {
        let Ok(doc) = Document::parse(bytes.clone(), desc.digest.clone(), Some(&desc.media_type), "plan") else {
            return;
        };
        let mut routes = self.routes.lock().expect("lock");
        if let Some(i) = routes.get(&desc.digest).copied() {
            for c in doc.children() {
                routes.entry(c.digest).or_insert(i);
            }
        }
    }
}

#[async_trait]
impl Source for PlanSource<'_, '_> {
    fn location(&self) -> String {
        format!("index {}", self.plan.desc.digest)
    }

    async fn resolve(&self, reference: Option<&crate::model::reference::TagOrDigest>) -> Result<Descriptor> {
        match reference {
            None => Ok(self.plan.desc.clone()),
            Some(r) if r.digest() == Some(&self.plan.desc.digest) => Ok(self.plan.desc.clone()),
            Some(r) => Err(Error::not_found(r.to_string(), self.location())),
        }
    }

    async fn fetch_manifest_bytes(&self, desc: &Descriptor) -> Result<Bytes> {
        if let Some(b) = self.created(&desc.digest) {
            return Ok(b);
        }
        let src = self.route(desc)?;
        let bytes = src.fetch_manifest_bytes(desc).await?;
        self.learn(&bytes, desc);
        Ok(bytes)
    }

    async fn open_blob(&self, desc: &Descriptor, offset: u64) -> Result<BlobStream> {
        if let Some(b) = self.created(&desc.digest) {
            let start = (offset as usize).min(b.len());
            return Ok(Box::pin(std::io::Cursor::new(b.slice(start..))));
        }
        self.route(desc)?.open_blob(desc, offset).await
    }

    fn blob_path(&self, desc: &Descriptor) -> Option<PathBuf> {
        self.route(desc).ok().and_then(|s| s.blob_path(desc))
    }
}

/// A destination that takes content but records no roots and never finishes: children are
/// copied through it, the index after them through the real destination.
struct ChildrenOnly<'d>(&'d dyn Destination);

#[async_trait]
impl Destination for ChildrenOnly<'_> {
    fn location(&self) -> String {
        self.0.location()
    }
    async fn has_blob(&self, desc: &Descriptor) -> Result<bool> {
        self.0.has_blob(desc).await
    }
    async fn has_manifest(&self, desc: &Descriptor) -> Result<bool> {
        self.0.has_manifest(desc).await
    }
    async fn push_blob(&self, desc: &Descriptor, src: &dyn Source, progress: &dyn Progress) -> Result<BlobOutcome> {
        self.0.push_blob(desc, src, progress).await
    }
    async fn push_manifest(&self, desc: &Descriptor, bytes: Bytes, tag: Option<&str>) -> Result<()> {
        self.0.push_manifest(desc, bytes, tag).await
    }
    fn max_jobs(&self) -> Option<usize> {
        self.0.max_jobs()
    }
}

/// Write a planned index to `dst`: each entry's graph from its own source first (so a
/// registry mounts blobs from another repository of the same registry), then the created
/// documents and the index, tagged with `tags`. The caller calls `dst.finish()`.
pub async fn write(
    plan: &Plan<'_>,
    dst: &dyn Destination,
    tags: &[String],
    opts: &CopyOptions,
    progress: &dyn Progress,
) -> Result<CopyReport> {
    let mut total = CopyReport::default();
    let children_only = ChildrenOnly(dst);
    for c in &plan.children {
        let r = copy::graph(c.source, &children_only, &c.desc, &[], opts, progress).await?;
        total += r;
    }
    let src = PlanSource::new(plan);
    let r = copy::graph(&src, dst, &plan.desc, tags, opts, progress).await?;
    total += r;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::write::ImageManifest;

    /// Blobs and manifests in memory, by digest.
    #[derive(Default)]
    struct Mem(HashMap<Digest, Bytes>);

    impl Mem {
        fn put(&mut self, media_type: &str, bytes: &[u8]) -> Descriptor {
            let d = Descriptor::of_bytes(media_type, bytes);
            self.0.insert(d.digest.clone(), Bytes::copy_from_slice(bytes));
            d
        }
        /// An image manifest whose config says `arch`.
        fn image(&mut self, arch: &str, variant: Option<&str>) -> Descriptor {
            let v = variant.map(|v| format!(r#","variant":"{v}""#)).unwrap_or_default();
            let cfg =
                format!(r#"{{"architecture":"{arch}","os":"linux"{v},"rootfs":{{"type":"layers","diff_ids":[]}}}}"#);
            let cfg = self.put(media::OCI_CONFIG, cfg.as_bytes());
            let m = ImageManifest::new(cfg, vec![]).to_bytes().unwrap();
            self.put(media::OCI_MANIFEST, &m)
        }
    }

    #[async_trait]
    impl Source for Mem {
        fn location(&self) -> String {
            "mem".into()
        }
        async fn resolve(&self, _r: Option<&crate::model::reference::TagOrDigest>) -> Result<Descriptor> {
            Err(Error::Unsupported("mem".into()))
        }
        async fn fetch_manifest_bytes(&self, desc: &Descriptor) -> Result<Bytes> {
            self.0.get(&desc.digest).cloned().ok_or_else(|| Error::not_found(desc.digest.to_string(), "mem"))
        }
        async fn open_blob(&self, desc: &Descriptor, _offset: u64) -> Result<BlobStream> {
            let b = self.fetch_manifest_bytes(desc).await?;
            Ok(Box::pin(std::io::Cursor::new(b)))
        }
    }

    fn input<'a>(src: &'a Mem, desc: &Descriptor, label: &str) -> Input<'a> {
        Input { source: src, desc: desc.clone(), label: label.into() }
    }

    #[tokio::test]
    async fn golden_index_from_two_platforms() {
        let mut mem = Mem::default();
        let amd = mem.image("amd64", None);
        let arm = mem.image("arm64", Some("v8"));
        let opts = IndexOptions {
            annotations: vec![
                AnnotationSpec::parse("org.example.z=1").unwrap(),
                AnnotationSpec::parse("index:org.example.a=2").unwrap(),
                AnnotationSpec::parse("manifest[linux/arm64]:org.example.arch=arm").unwrap(),
            ],
            artifact_type: Some("application/x.example".into()),
            ..Default::default()
        };
        let plan = plan(&[input(&mem, &amd, "amd"), input(&mem, &arm, "arm"), input(&mem, &amd, "again")], opts)
            .await
            .unwrap();
        assert_eq!(plan.notes.len(), 1, "{:?}", plan.notes);
        assert!(plan.notes[0].contains("dropped the duplicate"));
        let text = String::from_utf8(plan.bytes.to_vec()).unwrap();
        let expected = format!(
            concat!(
                r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","artifactType":"application/x.example","manifests":["#,
                r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":{},"platform":{{"architecture":"amd64","os":"linux"}}}},"#,
                r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":{},"annotations":{{"org.example.arch":"arm"}},"platform":{{"architecture":"arm64","os":"linux","variant":"v8"}}}}],"#,
                r#""annotations":{{"org.example.a":"2","org.example.z":"1"}}}}"#
            ),
            amd.digest, amd.size, arm.digest, arm.size
        );
        assert_eq!(text, expected);
        assert_eq!(plan.desc.digest, Digest::sha256_of(expected.as_bytes()));
        assert_eq!(plan.desc.artifact_type.as_deref(), Some("application/x.example"));
    }

    #[tokio::test]
    async fn refuses_conflicting_platforms_unless_allowed() {
        let mut mem = Mem::default();
        let a = mem.image("amd64", None);
        // Same config as `a` (same platform), different manifest.
        let cfg = serde_json::from_slice::<ConfigOnly>(&mem.0[&a.digest]).unwrap().config;
        let mut m2 = ImageManifest::new(cfg, vec![]);
        m2.annotations.insert("k".into(), "v".into());
        let b = mem.put(media::OCI_MANIFEST, &m2.to_bytes().unwrap());
        let err = plan(&[input(&mem, &a, "one"), input(&mem, &b, "two")], IndexOptions::default())
            .await
            .err()
            .expect("conflict");
        let msg = err.to_string();
        assert!(msg.contains("conflicting platform linux/amd64"), "{msg}");
        assert!(msg.contains(&a.digest.to_string()) && msg.contains(&b.digest.to_string()), "{msg}");
        let opts = IndexOptions { allow_conflicts: true, ..Default::default() };
        let p = plan(&[input(&mem, &a, "one"), input(&mem, &b, "two")], opts).await.unwrap();
        assert_eq!(p.children.len(), 2);
        let bad = IndexOptions {
            annotations: vec![AnnotationSpec::parse("manifest[linux/s390x]:k=v").unwrap()],
            ..Default::default()
        };
        assert!(plan(&[input(&mem, &a, "one")], bad).await.is_err(), "a selector that matches nothing is an error");
    }

    #[derive(Deserialize)]
    struct ConfigOnly {
        config: Descriptor,
    }

    #[test]
    fn parses_annotations() {
        let a = AnnotationSpec::parse("a=b").unwrap();
        assert_eq!(a.selector, Selector::Index);
        assert_eq!((a.key.as_str(), a.value.as_str()), ("a", "b"));
        assert_eq!(AnnotationSpec::parse("index:x=y=z").unwrap().value, "y=z");
        assert_eq!(AnnotationSpec::parse("manifest:x=1").unwrap().selector, Selector::AllManifests);
        assert_eq!(
            AnnotationSpec::parse("manifest[linux/arm64]:x=1").unwrap().selector,
            Selector::Platform(Platform::parse("linux/arm64").unwrap())
        );
        assert_eq!(
            AnnotationSpec::parse("manifest-descriptor[linux/amd64]:x=1").unwrap().selector,
            Selector::Platform(Platform::parse("linux/amd64").unwrap())
        );
        let d = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
        assert_eq!(
            AnnotationSpec::parse(&format!("manifest[{d}]:x=1")).unwrap().selector,
            Selector::Digest(d.parse().unwrap())
        );
        assert!(AnnotationSpec::parse("manifest[linux]:x=1").is_err());
        assert!(AnnotationSpec::parse("noequals").is_err());
        assert!(AnnotationSpec::parse("=v").is_err());
    }
}
