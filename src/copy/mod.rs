//! The graph copy: the only code that moves content between transports. It walks
//! index → manifests → blobs, pushes children before parents, copies blobs concurrently
//! (bounded), skips what the destination has, and tags last. Bytes are never rewritten,
//! except where a copy option asks for it (`platforms` on an index), and the report says so.
//!
//! Bounded for hostile graphs: every document and blob is fetched once however many parents
//! name it (a DAG with 2^40 paths costs one fetch per node), manifest fetches in flight are
//! bounded like blobs (`jobs`), and nesting deeper than [`MAX_DEPTH`] is refused.

pub mod convert;
pub mod plan;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::future::{try_join_all, BoxFuture};
use futures::FutureExt;
use tokio::sync::{OnceCell, Semaphore};

use crate::error::{Error, Result};
use bytes::Bytes;

use crate::model::descriptor::Descriptor;
use crate::model::digest::Digest;
use crate::model::document::{Document, View};
use crate::model::media;
use crate::model::platform::{select_entries, Platform};
use crate::transport::{BlobOutcome, Destination, Progress, Source};

/// Deepest nesting of indexes copied (root = 1). OCI sets no bound; real images nest two or
/// three levels (index → manifest, or CNAB index → bundle index → manifest), so 32 is far
/// beyond any real graph and keeps a hostile chain of thousands of indexes from running away.
pub const MAX_DEPTH: usize = 32;

/// Blobs (and manifest fetches) in flight at once when nothing else is said (`--jobs`).
pub const DEFAULT_JOBS: usize = 4;

/// What to copy and how, decided by the library for every caller (the CLI only fills it in).
#[derive(Clone, Debug)]
pub struct CopyOptions {
    /// Blobs (and manifest fetches) in flight at once.
    pub jobs: usize,
    /// Only these platforms of an index root (empty: all of it). One platform copies that
    /// image's manifest as the root; several copy a new index listing only those entries (a
    /// new digest, reported in [`CopyReport::rewritten`]). A manifest root is copied as is.
    pub platforms: Vec<Platform>,
    /// Conversions on request (`--convert oci`, `--dest-compress`); none by default. Every
    /// digest that changes is in [`CopyReport::converted`], each changed root in
    /// [`CopyReport::rewritten`].
    pub convert: convert::Conversion,
    /// Also copy every referrer of each copied manifest (signatures, SBOMs, attestations),
    /// recursively, found through the source's referrers API or tag fallback (`--referrers`).
    pub referrers: bool,
    /// Also copy the manifests tagged by cosign's conventions for each copied manifest
    /// (`sha256-<hex>.sig`, `.att`, `.sbom`), with those tags, recursively (`--digest-tags`).
    pub digest_tags: bool,
    /// Transfer slots shared with other copies running at the same time (a Dockerfile
    /// build's background prefetch and its fetches): blob transfers of all of them together
    /// stay within the slots' count. `None`: this copy has `jobs` slots of its own.
    pub slots: Option<Slots>,
}

/// Blob transfer slots several copies share (see [`CopyOptions::slots`]): `n` transfers in
/// flight among all of them, handed out in the order they are asked for.
#[derive(Clone, Debug)]
pub struct Slots(Arc<Semaphore>);

impl Slots {
    /// `n` shared transfer slots (at least one).
    pub fn new(n: usize) -> Slots {
        Slots(Arc::new(Semaphore::new(n.max(1))))
    }
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            jobs: DEFAULT_JOBS,
            platforms: Vec::new(),
            convert: convert::Conversion::default(),
            referrers: false,
            digest_tags: false,
            slots: None,
        }
    }
}

/// The tag suffixes cosign gives the signature, attestation and SBOM of a manifest
/// (`sha256-<hex>.sig`): what `--digest-tags` looks for.
pub const COSIGN_TAG_SUFFIXES: [&str; 3] = ["sig", "att", "sbom"];

/// A root written under another digest than the source's, and why.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rewritten {
    /// The source's root.
    pub from: Digest,
    /// What the destination got instead.
    pub to: Digest,
    /// Why, for the user.
    pub reason: String,
}

/// Counters of one copy (camelCase in JSON, as every document hoist prints).
#[derive(Debug, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CopyReport {
    /// Blobs written to the destination.
    pub blobs_uploaded: u64,
    /// Blobs the destination had already.
    pub blobs_existed: u64,
    /// Blobs mounted from another repository of the same registry.
    pub blobs_mounted: u64,
    /// Bytes of the blobs written.
    pub bytes_uploaded: u64,
    /// Manifests and indexes written.
    pub manifests_pushed: u64,
    /// Manifests and indexes the destination had already.
    pub manifests_existed: u64,
    /// Roots written under another digest (a platform filter); empty for a byte-exact copy.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rewritten: Vec<Rewritten>,
    /// Every digest a conversion changed (manifests, indexes, layers); empty without one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub converted: Vec<Rewritten>,
    /// Referrers (and cosign digest-tag manifests) copied with the roots, with their tag if any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub referrers: Vec<CopiedReferrer>,
    /// Each root as the destination got it (after a conversion, a platform filter or the
    /// destination's choice), in the order asked: what a metadata file describes.
    #[serde(skip)]
    pub roots: Vec<Descriptor>,
}

/// A referrer copied along with what it refers to.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CopiedReferrer {
    /// The manifest it refers to.
    pub subject: Digest,
    /// The referrer.
    pub digest: Digest,
    /// Its `artifactType`, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// The cosign tag it was found by (`--digest-tags`), if so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

impl std::ops::AddAssign for CopyReport {
    fn add_assign(&mut self, r: CopyReport) {
        self.blobs_uploaded += r.blobs_uploaded;
        self.blobs_existed += r.blobs_existed;
        self.blobs_mounted += r.blobs_mounted;
        self.bytes_uploaded += r.bytes_uploaded;
        self.manifests_pushed += r.manifests_pushed;
        self.manifests_existed += r.manifests_existed;
        self.rewritten.extend(r.rewritten);
        self.converted.extend(r.converted);
        self.referrers.extend(r.referrers);
        self.roots.extend(r.roots);
    }
}

#[derive(Default)]
struct Counters {
    blobs_uploaded: AtomicU64,
    blobs_existed: AtomicU64,
    blobs_mounted: AtomicU64,
    bytes_uploaded: AtomicU64,
    manifests_pushed: AtomicU64,
    manifests_existed: AtomicU64,
}

type Cell<T> = Arc<OnceCell<Result<T>>>;

struct Ctx<'a> {
    src: &'a dyn Source,
    dst: &'a dyn Destination,
    progress: &'a dyn Progress,
    /// Blob transfers in flight (shared with other copies when [`CopyOptions::slots`] says so).
    sem: Arc<Semaphore>,
    /// Manifest fetches in flight (held for the fetch only, never while children copy).
    doc_sem: Semaphore,
    /// Existence checks of blobs run ahead of the transfers (a HEAD at a registry): this
    /// many at once, outside `sem`, so a transfer slot is not idle for the check's round
    /// trip. `None` when the destination takes one blob at a time (archives): there the
    /// check stays inside the transfer's slot.
    check_sem: Option<Semaphore>,
    blobs: Mutex<HashMap<Digest, Cell<BlobOutcome>>>,
    docs: Mutex<HashMap<Digest, Cell<()>>>,
    counters: Counters,
    rewritten: Mutex<Vec<Rewritten>>,
    platforms: &'a [Platform],
}

impl<'a> Ctx<'a> {
    fn new(src: &'a dyn Source, dst: &'a dyn Destination, opts: &'a CopyOptions, progress: &'a dyn Progress) -> Self {
        Ctx {
            src,
            dst,
            progress,
            // a destination taking one blob at a time (an archive) keeps its own bound
            sem: match (&opts.slots, dst.max_jobs()) {
                (Some(Slots(shared)), None) => shared.clone(),
                _ => Arc::new(Semaphore::new(dst.max_jobs().map_or(opts.jobs, |m| m.min(opts.jobs)).max(1))),
            },
            doc_sem: Semaphore::new(opts.jobs.max(1)),
            check_sem: dst.max_jobs().is_none().then(|| Semaphore::new(opts.jobs.max(1))),
            blobs: Mutex::new(HashMap::new()),
            docs: Mutex::new(HashMap::new()),
            counters: Counters::default(),
            rewritten: Mutex::new(Vec::new()),
            platforms: &opts.platforms,
        }
    }

    /// The counters as a report (no roots: the caller knows them).
    fn report(self) -> CopyReport {
        let c = &self.counters;
        CopyReport {
            blobs_uploaded: c.blobs_uploaded.load(Ordering::Relaxed),
            blobs_existed: c.blobs_existed.load(Ordering::Relaxed),
            blobs_mounted: c.blobs_mounted.load(Ordering::Relaxed),
            bytes_uploaded: c.bytes_uploaded.load(Ordering::Relaxed),
            manifests_pushed: c.manifests_pushed.load(Ordering::Relaxed),
            manifests_existed: c.manifests_existed.load(Ordering::Relaxed),
            rewritten: self.rewritten.into_inner().expect("lock"),
            converted: Vec::new(),
            referrers: Vec::new(),
            roots: Vec::new(),
        }
    }
}

/// Copy the graph rooted at `root` from `src` to `dst`; tag it with each of `tags`
/// (none: record it as an untagged root where the destination keeps roots).
pub async fn graph(
    src: &dyn Source,
    dst: &dyn Destination,
    root: &Descriptor,
    tags: &[String],
    opts: &CopyOptions,
    progress: &dyn Progress,
) -> Result<CopyReport> {
    graph_many(src, dst, &[(root.clone(), tags.to_vec())], opts, progress).await
}

/// Copy several roots (e.g. a whole layout) sharing one blob cache.
pub async fn graph_many(
    src: &dyn Source,
    dst: &dyn Destination,
    roots: &[(Descriptor, Vec<String>)],
    opts: &CopyOptions,
    progress: &dyn Progress,
) -> Result<CopyReport> {
    if opts.convert.is_none() {
        let (mut report, copied) = graph_many_exact(src, dst, roots, opts, progress).await?;
        if opts.referrers || opts.digest_tags {
            copy_referrers(src, dst, (roots, copied), opts, progress, &mut report).await?;
        }
        return Ok(report);
    }
    if opts.referrers || opts.digest_tags {
        return Err(Error::Unsupported(
            "referrers name their subject by its source digest; copying them with a conversion that changes \
             that digest would leave them pointing at nothing (copy without --convert/--dest-compress)"
                .into(),
        ));
    }
    let conv = convert::Converted::new(src, opts.convert.clone(), opts.jobs)?;
    let mut converted = Vec::with_capacity(roots.len());
    let mut rewritten = Vec::new();
    for (root, tags) in roots {
        let new = conv.convert_root(root).await?;
        if new.digest != root.digest {
            rewritten.push(Rewritten {
                from: root.digest.clone(),
                to: new.digest.clone(),
                reason: "converted on request".into(),
            });
        }
        converted.push((new, tags.clone()));
    }
    let (mut report, _) = graph_many_exact(&conv, dst, &converted, opts, progress).await?;
    // A platform filter after a conversion: what the destination got is the filtered root.
    for r in &mut rewritten {
        if let Some(f) = report.rewritten.iter().find(|f| f.from == r.to) {
            r.to = f.to.clone();
        }
    }
    report.rewritten.retain(|f| !rewritten.iter().any(|r| r.to == f.to));
    report.rewritten.extend(rewritten);
    report.converted = conv.changes();
    Ok(report)
}

/// [`graph_many`] without conversions: bytes as the source has them. Also returns the roots
/// as written (after a platform filter or a destination's choice).
async fn graph_many_exact(
    src: &dyn Source,
    dst: &dyn Destination,
    roots: &[(Descriptor, Vec<String>)],
    opts: &CopyOptions,
    progress: &dyn Progress,
) -> Result<(CopyReport, Vec<Descriptor>)> {
    let ctx = Ctx::new(src, dst, opts, progress);
    // Content of every root first, then every tag in one call: tags last, and a layout
    // rewrites index.json once for all roots.
    let mut tagging = Vec::with_capacity(roots.len());
    for (root, tags) in roots {
        tagging.push(copy_root(&ctx, root, tags).await?);
    }
    dst.tag_roots(&tagging).await?;
    let mut report = ctx.report();
    report.roots = tagging.iter().map(|(d, _, _)| d.clone()).collect();
    Ok((report, tagging.into_iter().map(|(d, _, _)| d).collect()))
}

/// Copy what a document names, but not the document: `children` (blobs, or child manifests
/// with their graphs) from `src` to `dst`, with [`graph`]'s bounds (`opts.jobs` transfers,
/// existence checks ahead of them, largest first), one transfer per digest and `progress`.
/// Nothing is tagged or recorded as a root. For a build's base image: its layers go into
/// the store, its manifest and config are replaced by the build's own.
pub async fn children(
    src: &dyn Source,
    dst: &dyn Destination,
    children: &[Descriptor],
    opts: &CopyOptions,
    progress: &dyn Progress,
) -> Result<CopyReport> {
    let ctx = Ctx::new(src, dst, opts, progress);
    copy_children(&ctx, children, false, 1).await?;
    Ok(ctx.report())
}

/// The manifests of the graphs of `roots` in `src`: the roots and, through every index,
/// their children (manifests themselves are not fetched: only indexes name more).
async fn graph_documents(src: &dyn Source, roots: Vec<Descriptor>) -> Result<Vec<Descriptor>> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut queue: Vec<(Descriptor, usize)> = roots.into_iter().map(|d| (d, 1)).collect();
    while let Some((d, depth)) = queue.pop() {
        if !media::is_document(&d.media_type) || !seen.insert(d.digest.clone()) {
            continue;
        }
        if media::is_index(&d.media_type) {
            if depth > MAX_DEPTH {
                return Err(Error::malformed(format!("index {}", d.digest), src.location(), "nested too deep"));
            }
            if let View::Index(i) = &src.fetch_document(&d).await?.view {
                queue.extend(i.manifests.iter().map(|c| (c.clone(), depth + 1)));
            }
        }
        out.push(d);
    }
    Ok(out)
}

/// Copy the referrers (`opts.referrers`) and cosign digest-tag manifests (`opts.digest_tags`)
/// of every manifest in the graphs of `copied`, and theirs in turn, each once. A referrer is
/// written as an untagged root (a registry lists it through its referrers API or the tag
/// fallback hoist keeps; a layout keeps it in index.json, where its referrers scan finds it);
/// a digest-tag manifest keeps its tag.
async fn copy_referrers(
    src: &dyn Source,
    dst: &dyn Destination,
    (roots, copied): (&[(Descriptor, Vec<String>)], Vec<Descriptor>),
    opts: &CopyOptions,
    progress: &dyn Progress,
    report: &mut CopyReport,
) -> Result<()> {
    let plain = CopyOptions { platforms: Vec::new(), referrers: false, digest_tags: false, ..opts.clone() };
    let mut done: std::collections::HashSet<Digest> = std::collections::HashSet::new();
    // A root a platform filter rewrote is not in the source (its referrers would name the
    // source's index, which the destination does not hold): walk the entries it kept.
    let mut walk = Vec::with_capacity(copied.len());
    for root in copied {
        let rewritten = report.rewritten.iter().find(|r| r.to == root.digest && r.from != root.digest);
        let original = rewritten.and_then(|r| roots.iter().find(|(d, _)| d.digest == r.from));
        match original {
            Some((from, _)) if !opts.platforms.is_empty() => {
                let kept = match &src.fetch_document(from).await?.view {
                    View::Index(i) => {
                        select_entries(&i.manifests, |d| opts.platforms.iter().any(|p| p.matches_entry(d)))
                            .into_iter()
                            .cloned()
                            .collect()
                    }
                    _ => Vec::new(),
                };
                walk.extend(kept);
            }
            _ => walk.push(root),
        }
    }
    let mut queue = graph_documents(src, walk).await?;
    while let Some(subject) = queue.pop() {
        if !done.insert(subject.digest.clone()) {
            continue;
        }
        let mut found: Vec<(Descriptor, Option<String>)> = Vec::new();
        if opts.referrers {
            found.extend(src.referrers(&subject.digest, None).await?.into_iter().map(|r| (r, None)));
        }
        if opts.digest_tags {
            let base = crate::transport::registry::referrers::fallback_tag(&subject.digest);
            for suffix in COSIGN_TAG_SUFFIXES {
                let tag = format!("{base}.{suffix}");
                match src.resolve(Some(&crate::model::reference::TagOrDigest::Tag(tag.clone()))).await {
                    Ok(d) => found.push((d, Some(tag))),
                    Err(Error::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        for (r, tag) in found {
            let (rep, written) =
                graph_many_exact(src, dst, &[(r.clone(), tag.iter().cloned().collect())], &plain, progress).await?;
            *report += rep;
            report.referrers.push(CopiedReferrer {
                subject: subject.digest.clone(),
                digest: r.digest.clone(),
                artifact_type: r.artifact_type.clone(),
                tag,
            });
            queue.extend(graph_documents(src, written).await?.into_iter().filter(|d| !done.contains(&d.digest)));
        }
    }
    Ok(())
}

/// Copy one root's graph; returns what `tag_roots` records for it once every root is copied.
async fn copy_root(ctx: &Ctx<'_>, root: &Descriptor, tags: &[String]) -> Result<(Descriptor, Bytes, Vec<String>)> {
    let mut root = root.clone();
    root.annotations.remove(media::ANNOTATION_REF_NAME);
    if !media::is_document(&root.media_type) {
        return Err(Error::Unsupported(format!(
            "{} in {} has media type {}, not a manifest or index",
            root.digest,
            ctx.src.location(),
            root.media_type
        )));
    }
    let mut doc = ctx.src.fetch_document(&root).await?;
    if doc.is_index() && !ctx.platforms.is_empty() {
        (root, doc) = filter_platforms(ctx, &root, doc).await?;
    }
    if let Some(chosen) = ctx.dst.select_root(ctx.src, &doc).await? {
        root = chosen;
        root.annotations.remove(media::ANNOTATION_REF_NAME);
        doc = ctx.src.fetch_document(&root).await?;
    }
    if !ctx.dst.has_manifest(&root).await? {
        copy_children(ctx, &doc.children(), doc.is_index(), 1).await?;
        if tags.is_empty() {
            ctx.dst.push_manifest(&root, doc.bytes.clone(), None).await?;
        }
        ctx.counters.manifests_pushed.fetch_add(1, Ordering::Relaxed);
    } else {
        ctx.counters.manifests_existed.fetch_add(1, Ordering::Relaxed);
    }
    Ok((root, doc.bytes.clone(), tags.to_vec()))
}

/// The index root narrowed to `ctx.platforms`: the one matching manifest for one platform, a
/// new index of the matching entries (same fields, same order otherwise) for several.
async fn filter_platforms(ctx: &Ctx<'_>, root: &Descriptor, doc: Document) -> Result<(Descriptor, Document)> {
    let loc = ctx.src.location();
    let View::Index(index) = &doc.view else { return Ok((root.clone(), doc)) };
    // the images of the platforms asked for, each with its attestation manifests (buildx's)
    let keep: Vec<&Descriptor> = select_entries(&index.manifests, |d| ctx.platforms.iter().any(|p| p.matches_entry(d)));
    let wanted = || ctx.platforms.iter().map(Platform::to_string).collect::<Vec<_>>().join(", ");
    if keep.is_empty() {
        let has = index.manifests.iter().filter_map(|d| d.platform.as_ref().map(Platform::to_string));
        return Err(Error::not_found(
            format!("platform {} (index {} has: {})", wanted(), root.digest, has.collect::<Vec<_>>().join(", ")),
            loc,
        ));
    }
    if let [one] = keep.as_slice() {
        let mut chosen = (*one).clone();
        let platform = chosen.platform.take().map_or_else(wanted, |p| p.to_string());
        let child = ctx.src.fetch_document(&chosen).await?;
        // Not new bytes, but not the root asked for either: the report says what was taken.
        ctx.rewritten.lock().expect("lock").push(Rewritten {
            from: root.digest.clone(),
            to: chosen.digest.clone(),
            reason: format!("the {platform} image of the index (its manifest as it is)"),
        });
        return Ok((chosen, child));
    }
    if keep.len() == index.manifests.len() {
        return Ok((root.clone(), doc));
    }
    // Drop the other entries from the exact bytes' JSON: every other field keeps its order.
    let mut value: serde_json::Value =
        serde_json::from_slice(&doc.bytes).map_err(|e| Error::malformed(format!("index {}", root.digest), &loc, e))?;
    if let Some(list) = value.get_mut("manifests").and_then(|m| m.as_array_mut()) {
        // the parsed entries are the JSON's, one for one and in order
        let flags: Vec<bool> = index.manifests.iter().map(|m| keep.iter().any(|k| std::ptr::eq(*k, m))).collect();
        if flags.len() != list.len() {
            return Err(Error::malformed(format!("index {}", root.digest), &loc, "manifests do not parse one for one"));
        }
        let mut flags = flags.into_iter();
        list.retain(|_| flags.next().unwrap_or(false));
    }
    let bytes = Bytes::from(serde_json::to_vec(&value).map_err(|e| Error::serialize("filtered index", e))?);
    let mut desc = Descriptor::of_bytes(doc.media_type.clone(), &bytes);
    desc.annotations = root.annotations.clone();
    let filtered = Document::from_fetched(&desc, bytes, &loc)?;
    ctx.rewritten.lock().expect("lock").push(Rewritten {
        from: root.digest.clone(),
        to: desc.digest.clone(),
        reason: format!("index filtered to {}", wanted()),
    });
    Ok((desc, filtered))
}

async fn copy_children(ctx: &Ctx<'_>, children: &[Descriptor], parent_is_index: bool, depth: usize) -> Result<()> {
    // Largest first where transfers run in parallel (transfer slots are handed out in this
    // order): a big layer is not left to run alone on one connection at the end, and small
    // blobs fill the gaps. One-at-a-time destinations (archives) keep the manifest's order.
    let mut order: Vec<&Descriptor> = children.iter().collect();
    if ctx.check_sem.is_some() {
        order.sort_by_key(|c| std::cmp::Reverse(c.size));
    }
    let futs = order.into_iter().map(|c| {
        if media::is_document(&c.media_type)
            || (parent_is_index && c.media_type.ends_with("+json") && c.media_type.contains("manifest"))
        {
            copy_document(ctx, c.clone(), depth + 1)
        } else {
            copy_blob(ctx, c.clone()).boxed()
        }
    });
    try_join_all(futs).await?;
    Ok(())
}

/// Copy one child document and its graph, once per digest: a second parent waits for the
/// first copy and shares its result.
fn copy_document<'a>(ctx: &'a Ctx<'a>, desc: Descriptor, depth: usize) -> BoxFuture<'a, Result<()>> {
    async move {
        if depth > MAX_DEPTH {
            return Err(Error::malformed(
                format!("manifest {}", desc.digest),
                ctx.src.location(),
                format!("indexes nested deeper than {MAX_DEPTH} levels"),
            ));
        }
        let cell = ctx.docs.lock().expect("lock").entry(desc.digest.clone()).or_default().clone();
        let res = cell
            .get_or_init(|| async {
                let doc = {
                    let _permit = ctx.doc_sem.acquire().await.expect("semaphore open");
                    if ctx.dst.has_manifest(&desc).await? {
                        ctx.counters.manifests_existed.fetch_add(1, Ordering::Relaxed);
                        return Ok(());
                    }
                    ctx.src.fetch_document(&desc).await?
                };
                copy_children(ctx, &doc.children(), doc.is_index(), depth).await?;
                ctx.dst.push_manifest(&desc, doc.bytes.clone(), None).await?;
                ctx.counters.manifests_pushed.fetch_add(1, Ordering::Relaxed);
                Ok(())
            })
            .await;
        res.clone()
    }
    .boxed()
}

async fn copy_blob(ctx: &Ctx<'_>, desc: Descriptor) -> Result<()> {
    let cell = {
        let mut map = ctx.blobs.lock().expect("lock");
        map.entry(desc.digest.clone()).or_default().clone()
    };
    let res = cell
        .get_or_init(|| async {
            let checked = match &ctx.check_sem {
                Some(check) => {
                    let _check = check.acquire().await.expect("semaphore open");
                    Some(ctx.dst.has_blob(&desc).await)
                }
                None => None,
            };
            let _permit = match checked {
                Some(Ok(true)) | Some(Err(_)) => None,
                _ => Some(ctx.sem.acquire().await.expect("semaphore open")),
            };
            ctx.progress.start(&desc);
            let exists = match checked {
                Some(r) => r,
                None => ctx.dst.has_blob(&desc).await,
            };
            let outcome = match exists {
                Ok(true) => Ok(BlobOutcome::Existed),
                Ok(false) => ctx.dst.push_blob(&desc, ctx.src, ctx.progress).await,
                Err(e) => Err(e),
            };
            match outcome {
                Ok(o) => {
                    let c = &ctx.counters;
                    match o {
                        BlobOutcome::Uploaded => {
                            c.blobs_uploaded.fetch_add(1, Ordering::Relaxed);
                            c.bytes_uploaded.fetch_add(desc.size, Ordering::Relaxed);
                        }
                        BlobOutcome::Existed => {
                            c.blobs_existed.fetch_add(1, Ordering::Relaxed);
                        }
                        BlobOutcome::Mounted => {
                            c.blobs_mounted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    ctx.progress.done(&desc, o);
                    Ok(o)
                }
                Err(e) => Err(e),
            }
        })
        .await;
    res.as_ref().map(|_| ()).map_err(Error::clone)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use async_trait::async_trait;

    use super::*;
    use crate::model::write::{ImageIndex, ImageManifest};
    use crate::transport::memory::Memory;
    use crate::transport::{BlobStream, NoProgress};

    /// A memory source that counts manifest fetches.
    struct Counting {
        inner: Memory,
        fetches: AtomicUsize,
    }

    #[async_trait]
    impl Source for Counting {
        fn location(&self) -> String {
            "counting".into()
        }
        async fn resolve(&self, r: Option<&crate::model::reference::TagOrDigest>) -> Result<Descriptor> {
            self.inner.resolve(r).await
        }
        async fn fetch_manifest_bytes(&self, desc: &Descriptor) -> Result<Bytes> {
            self.fetches.fetch_add(1, Ordering::SeqCst);
            self.inner.fetch_manifest_bytes(desc).await
        }
        async fn open_blob(&self, desc: &Descriptor, offset: u64) -> Result<BlobStream> {
            self.inner.open_blob(desc, offset).await
        }
    }

    async fn put(m: &Memory, media_type: &str, bytes: Vec<u8>) -> Descriptor {
        let d = Descriptor::of_bytes(media_type, &bytes);
        m.push_manifest(&d, Bytes::from(bytes), None).await.unwrap();
        d
    }

    /// An image manifest with an empty config, and on top of it `levels` indexes that each
    /// list the level below twice: 2^levels paths to the image.
    async fn diamond_chain(m: &Memory, levels: usize) -> Descriptor {
        let config = Descriptor::of_bytes(media::OCI_EMPTY, b"{}");
        m.insert_blob(&config, Bytes::from_static(b"{}")).unwrap();
        let mut top = put(m, media::OCI_MANIFEST, ImageManifest::new(config, vec![]).to_bytes().unwrap()).await;
        for i in 0..levels {
            let mut a = top.clone();
            a.annotations.insert("n".into(), format!("{i}a"));
            let mut b = top.clone();
            b.annotations.insert("n".into(), format!("{i}b"));
            top = put(m, media::OCI_INDEX, ImageIndex::new(vec![a, b]).to_bytes().unwrap()).await;
        }
        top
    }

    #[tokio::test]
    async fn dag_costs_one_fetch_per_document() {
        let src = Counting { inner: Memory::new(), fetches: AtomicUsize::new(0) };
        let root = diamond_chain(&src.inner, 30).await;
        let dst = Memory::new();
        let report = graph(&src, &dst, &root, &[], &CopyOptions::default(), &NoProgress).await.unwrap();
        assert_eq!(report.manifests_pushed, 31);
        assert_eq!(src.fetches.load(Ordering::SeqCst), 31, "each document fetched once");
        assert_eq!(report.blobs_uploaded, 1);
    }

    #[tokio::test]
    async fn deep_chain_is_refused() {
        let src = Memory::new();
        let root = diamond_chain(&src, MAX_DEPTH + 5).await;
        let e = graph(&src, &Memory::new(), &root, &[], &CopyOptions::default(), &NoProgress).await.unwrap_err();
        assert!(e.to_string().contains("nested deeper"), "{e}");
    }

    #[tokio::test]
    async fn platforms_narrow_an_index() {
        let src = Memory::new();
        let config = Descriptor::of_bytes(media::OCI_EMPTY, b"{}");
        src.insert_blob(&config, Bytes::from_static(b"{}")).unwrap();
        let mut entries = Vec::new();
        for (i, p) in ["linux/amd64", "linux/arm64/v8", "linux/s390x"].iter().enumerate() {
            let mut m = ImageManifest::new(config.clone(), vec![]);
            m.annotations.insert("i".into(), i.to_string());
            let mut d = put(&src, media::OCI_MANIFEST, m.to_bytes().unwrap()).await;
            d.platform = Platform::parse(p);
            entries.push(d);
        }
        let root = put(&src, media::OCI_INDEX, ImageIndex::new(entries.clone()).to_bytes().unwrap()).await;
        let one = CopyOptions { platforms: vec![Platform::parse("linux/arm64").unwrap()], ..Default::default() };
        let dst = Memory::new();
        let r = graph(&src, &dst, &root, &["v1".into()], &one, &NoProgress).await.unwrap();
        assert_eq!(dst.resolve(Some(&"v1".into())).await.unwrap().digest, entries[1].digest);
        assert_eq!(r.rewritten.len(), 1, "the report says the index's arm64 image was taken");
        assert_eq!((&r.rewritten[0].from, &r.rewritten[0].to), (&root.digest, &entries[1].digest));
        let two =
            CopyOptions { platforms: Platform::parse_list("linux/amd64,linux/s390x").unwrap(), ..Default::default() };
        let dst = Memory::new();
        let r = graph(&src, &dst, &root, &["v1".into()], &two, &NoProgress).await.unwrap();
        let tagged = dst.resolve(Some(&"v1".into())).await.unwrap();
        assert_eq!(r.rewritten.len(), 1);
        assert_eq!(r.rewritten[0].to, tagged.digest);
        let doc = dst.fetch_document(&tagged).await.unwrap();
        let kept: Vec<_> = doc.children().into_iter().map(|d| d.digest).collect();
        assert_eq!(kept, vec![entries[0].digest.clone(), entries[2].digest.clone()]);
        assert!(!dst.has_manifest(&entries[1]).await.unwrap());
        let none = CopyOptions { platforms: vec![Platform::parse("windows/amd64").unwrap()], ..Default::default() };
        let e = graph(&src, &Memory::new(), &root, &[], &none, &NoProgress).await.unwrap_err();
        assert!(e.to_string().contains("linux/s390x"), "{e}");
    }
}
