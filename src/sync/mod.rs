//! `hoist sync`: mirror many images, as `skopeo sync` does, incrementally and in parallel.
//!
//! - Sources: a registry repository or one image (`docker`), skopeo's YAML (`yaml`, see
//!   [`config`]), or a layout written by a sync to `dir` (`dir`).
//! - Destinations: a registry prefix (`docker`): each image goes to `PREFIX/<last path
//!   component of the source repository>:TAG`, or with `scoped` to `PREFIX/<full source
//!   name>`, skopeo's rule; or one OCI layout (`dir`) keeping every image under its full
//!   name (`ref.name` = `registry/repo:tag`), deduplicated across repositories.
//! - Incremental: a HEAD of each source tag and of its destination run together; an image
//!   whose digest the destination already has under that name is skipped, others go through
//!   the one graph copy (`copy::graph`: mounts, resume, referrers). Checks and copies run
//!   `jobs` wide across tags and repositories.
//! - A failure of one image is reported and the others go on; [`SyncReport`] counts
//!   copied, skipped and failed images and the bytes moved.

pub mod config;
pub mod retention;
pub(crate) mod semver;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

use crate::copy::{self, CopyOptions};
use crate::error::{printable, Error, Result};
use crate::model::descriptor::Descriptor;
use crate::model::digest::Digest;
use crate::model::document::View;
use crate::model::platform::Platform;
use crate::model::reference::Reference;
use crate::transport::archive::oci::{OciArchive, OciArchiveWriter};
use crate::transport::layout::Layout;
use crate::transport::registry::credentials::Credential;
use crate::transport::registry::{Client, RegistryOptions, Repository};
use crate::transport::{BlobOutcome, Destination, Endpoint, Progress, Source};
use crate::trust::policy::Policy;
use crate::trust::sign::Signer;

/// Where a sync reads from.
#[derive(Clone, Debug)]
pub enum SyncSource {
    /// A registry repository (every tag) or one image (`REPO:TAG`, `REPO@DIGEST`).
    Docker(String),
    /// skopeo sync's YAML file.
    Yaml(PathBuf),
    /// An OCI layout written by `sync --dest dir` (roots named `registry/repo:tag`), or an
    /// OCI archive (a path ending in `.tar`).
    Dir(PathBuf),
}

/// Where a sync writes to.
#[derive(Clone, Debug)]
pub enum SyncDest {
    /// A registry and path prefix (`host[:port][/path]`).
    Docker(String),
    /// One OCI layout directory, or an OCI archive when the path ends in `.tar`.
    Dir(PathBuf),
}

/// Whether a `dir` path names an OCI archive (`.tar`) rather than a layout directory.
pub fn is_archive_path(p: &Path) -> bool {
    p.extension().is_some_and(|e| e == "tar")
}

/// The layout an archive destination is assembled in: `.NAME.sync` beside the archive. It is
/// kept when the sync does not complete, so a re-run resumes from it; removed after the
/// archive is written.
pub fn archive_staging(p: &Path) -> PathBuf {
    let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "archive.tar".into());
    p.with_file_name(format!(".{name}.sync"))
}

/// Which tags of the matching images to keep, beyond the source's own selection.
#[derive(Clone, Debug, Default)]
pub struct Filters {
    /// Only the N newest tags of each repository: by semantic version when every tag is one,
    /// else by the image's `created` time.
    pub keep_last: Option<usize>,
    /// Only images created within this duration.
    pub newer_than: Option<Duration>,
    /// Tags matching this are left out.
    pub exclude: Option<regex::Regex>,
}

impl Filters {
    fn merged(&self, other: &Filters) -> Filters {
        Filters {
            keep_last: other.keep_last.or(self.keep_last),
            newer_than: other.newer_than.or(self.newer_than),
            exclude: other.exclude.clone().or_else(|| self.exclude.clone()),
        }
    }
    fn needs_created(&self, all_semver: bool) -> bool {
        self.newer_than.is_some() || (self.keep_last.is_some() && !all_semver)
    }
}

/// How a sync runs.
#[derive(Clone, Debug)]
pub struct SyncOptions {
    /// Destination names keep the full source name (`PREFIX/registry/repo:tag`).
    pub scoped: bool,
    /// Images checked and copied at once (across tags and repositories).
    pub jobs: usize,
    /// The copy of one image: blob jobs, platforms, referrers (on by default for sync).
    pub copy: CopyOptions,
    /// Tag filters.
    pub filters: Filters,
    /// Only say what would be copied.
    pub dry_run: bool,
    /// Stop before a source registry's stated rate limit (`ratelimit-remaining`) falls to
    /// this many requests; the images not synced yet are reported as not run.
    pub rate_limit_floor: Option<u64>,
    /// Every source image that would be copied is checked against this trust policy first;
    /// a refused one is reported (`Status::Refused`) and skipped, the others go on.
    pub policy: Option<Arc<Policy>>,
    /// Sign each copied image at a registry destination (both formats, claiming its
    /// destination name unless the signer names an identity).
    pub signer: Option<Arc<Signer>>,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            scoped: false,
            jobs: DEFAULT_JOBS,
            copy: CopyOptions { referrers: true, ..Default::default() },
            filters: Filters::default(),
            dry_run: false,
            rate_limit_floor: None,
            policy: None,
            signer: None,
        }
    }
}

/// Images a sync checks and copies at once by default: checks are one small round trip
/// each, so a WAN link is used well only with many in flight.
pub const DEFAULT_JOBS: usize = 16;

/// Blob transfers within one image copy (at most; fewer when `jobs` is smaller): with
/// `jobs` images at once, the connections in flight stay near `jobs * this`.
pub const BLOB_JOBS_PER_IMAGE: usize = 4;

/// Fewest roots written to a `dir` destination's index.json at once: tags are recorded in
/// batches, so that 100k images are not 100k rewrites of the index. A batch is also at
/// least half the roots the index holds, so the rewrites add up to linear time.
const TAG_BATCH: usize = 256;

/// What happened to one image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Status {
    /// Copied (something was missing or different at the destination).
    Copied,
    /// The destination had it under that name already.
    Skipped,
    /// Would be copied (`dry_run`).
    WouldCopy,
    /// Refused by the trust policy.
    Refused,
    /// Failed; the others went on.
    Failed,
    /// Not synced: the sync stopped before the source's rate-limit floor.
    NotRun,
}

/// One image of a sync.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageResult {
    /// The source image (`registry/repo:tag`; a repository when listing it failed).
    pub source: String,
    /// Its destination (`docker://…` or `oci:DIR:NAME`).
    pub destination: String,
    /// The source digest, when resolved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// What happened.
    pub status: Status,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Blob bytes written for it.
    pub bytes_uploaded: u64,
}

/// The summary of a sync.
#[derive(Clone, Debug, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncReport {
    /// Images copied.
    pub copied: usize,
    /// Images the destination had already.
    pub skipped: usize,
    /// Images that would be copied (dry run).
    pub would_copy: usize,
    /// Images the policy refused.
    pub refused: usize,
    /// Images (or repositories) that failed.
    pub failed: usize,
    /// Images not synced because the sync stopped (rate-limit floor).
    pub not_run: usize,
    /// Why the sync stopped early, and when to come back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    /// Blob bytes written.
    pub bytes_uploaded: u64,
    /// Blobs written, found at the destination, mounted.
    pub blobs_uploaded: u64,
    /// Blobs the destination had.
    pub blobs_existed: u64,
    /// Blobs mounted from another repository.
    pub blobs_mounted: u64,
    /// Every image, in the order of the plan.
    pub images: Vec<ImageResult>,
}

impl SyncReport {
    fn add(&mut self, r: ImageResult) {
        match r.status {
            Status::Copied => self.copied += 1,
            Status::Skipped => self.skipped += 1,
            Status::WouldCopy => self.would_copy += 1,
            Status::Refused => self.refused += 1,
            Status::Failed => self.failed += 1,
            Status::NotRun => self.not_run += 1,
        }
        self.bytes_uploaded += r.bytes_uploaded;
        self.images.push(r);
    }
}

/// How the tags of one repository are chosen.
#[derive(Clone, Debug)]
enum Select {
    /// Every tag.
    All,
    /// These tags or digests.
    Refs(Vec<String>),
    /// Tags matching a regex.
    Regex(regex::Regex),
    /// Tags that are versions satisfying a constraint.
    Semver(semver::Constraint),
}

/// One source repository and how its tags are chosen.
struct RepoSpec {
    client: Arc<Client>,
    name: Reference,
    select: Select,
    filters: Filters,
    platforms: Vec<Platform>,
}

/// Where one image is read from.
#[derive(Clone)]
enum Src {
    Registry(Repository),
    /// A layout or an OCI archive at `path`.
    Local {
        src: Arc<dyn Source>,
        path: Arc<Path>,
        archive: bool,
    },
}

impl Src {
    fn source(&self) -> &dyn Source {
        match self {
            Src::Registry(r) => r,
            Src::Local { src, .. } => src.as_ref(),
        }
    }
    /// How a trust policy names the image `item` (its scope).
    fn endpoint(&self, item: &Item) -> Result<Endpoint> {
        Ok(match self {
            Src::Registry(_) => Endpoint::Registry(item.full_name.parse()?),
            Src::Local { path, archive: false, .. } => {
                Endpoint::Layout { path: path.to_path_buf(), reference: Some(item.target.clone()) }
            }
            Src::Local { path, archive: true, .. } => {
                Endpoint::OciArchive { path: path.to_path_buf(), reference: Some(item.target.clone()) }
            }
        })
    }
}

/// One image to sync.
struct Item {
    src: Src,
    /// Tag or digest at the source.
    target: String,
    /// Already resolved (layout roots).
    known: Option<Descriptor>,
    /// `registry/repo:tag` or `registry/repo@digest`.
    full_name: String,
    platforms: Vec<Platform>,
}

/// Where one image goes.
enum Dst {
    Registry { repo: Repository, tag: Option<String>, shown: String },
    Layout { name: String },
}

/// Sync `src` to `dst`. `client` talks to the registries of the command line (the
/// destination, a `docker` source); a YAML registry entry with its own TLS settings or
/// credentials gets a client of its own made from `client`'s options.
pub async fn sync(
    client: &Arc<Client>,
    src: &SyncSource,
    dst: &SyncDest,
    opts: &SyncOptions,
    progress: &dyn Progress,
) -> Result<SyncReport> {
    let mut report = SyncReport::default();
    let jobs = opts.jobs.max(1);
    // the destination
    if let (Some(_), SyncDest::Dir(p)) = (&opts.signer, dst) {
        return Err(Error::Usage(format!(
            "{}: signing at the destination needs a registry destination (--dest docker); a layout or archive keeps the signatures the source has",
            p.display()
        )));
    }
    if let (SyncSource::Dir(a), SyncDest::Dir(b)) = (src, dst) {
        if a.canonicalize().ok().is_some_and(|a| b.canonicalize().ok().is_some_and(|b| a == b)) {
            return Err(Error::Usage(format!("{}: the source and the destination are the same layout", b.display())));
        }
    }
    let layout_dst = match dst {
        SyncDest::Dir(p) if is_archive_path(p) => Some(Arc::new(LayoutSink::new(staging_for(p).await?)?)),
        SyncDest::Dir(p) => Some(Arc::new(LayoutSink::new(Layout::create(p)?)?)),
        SyncDest::Docker(prefix) => {
            check_prefix(prefix)?;
            None
        }
    };
    // the plan: every image, listed per repository (repositories listed `jobs` at once)
    let mut items: Plan = match src {
        SyncSource::Dir(path) => layout_items(path, &opts.copy.platforms).await?,
        _ => {
            let specs = repo_specs(client, src, opts)?;
            let listed: Vec<(String, Result<Vec<Item>>)> = futures::stream::iter(specs)
                .map(|spec| async move { (spec.name.repo_ref(), expand(spec, jobs).await) })
                .buffered(jobs)
                .collect()
                .await;
            let mut items = Vec::new();
            for (repo, r) in listed {
                match r {
                    Ok(mut v) => items.append(&mut v),
                    Err(e) => report.add(ImageResult {
                        source: repo,
                        destination: String::new(),
                        digest: None,
                        status: Status::Failed,
                        error: Some(e.to_string()),
                        bytes_uploaded: 0,
                    }),
                }
            }
            listed_plan(items)
        }
    };
    // a YAML selecting nothing is no error (skopeo warns and syncs nothing); a repository or
    // layout without images is
    let no_items = items.peek().is_none();
    if no_items && report.failed == 0 && !matches!(src, SyncSource::Yaml(_)) {
        return Err(Error::not_found("images to sync", source_name(src)));
    }
    if no_items {
        progress.message("sync: the source selects no images");
    }
    let existing: HashMap<String, Digest> = match &layout_dst {
        Some(sink) => {
            let index = sink.layout.root_index()?;
            sink.flushed.store(index.len(), Ordering::Relaxed);
            index.tag_digests().map(|(n, d)| (n.to_string(), d.clone())).collect()
        }
        None => HashMap::new(),
    };
    let copy_opts = CopyOptions { jobs: opts.copy.jobs.clamp(1, BLOB_JOBS_PER_IMAGE), ..opts.copy.clone() };
    let ctx =
        RunCtx { client, dst, opts, copy_opts, layout: layout_dst.clone(), existing, progress, stop: Mutex::new(None) };
    let ctx = &ctx;
    let mut results = futures::stream::iter(items.enumerate())
        .map(|(i, item)| async move { (i, ctx.one(item).await) })
        .buffer_unordered(jobs);
    let mut done: Vec<(usize, ImageResult)> = Vec::new();
    while let Some((i, (r, c))) = results.next().await {
        progress.message(&line_for(&r));
        report.blobs_uploaded += c.blobs_uploaded;
        report.blobs_existed += c.blobs_existed;
        report.blobs_mounted += c.blobs_mounted;
        done.push((i, r));
        if let Some(sink) = &layout_dst {
            if sink.due() {
                sink.flush().await?;
            }
        }
    }
    drop(results);
    if let Some(sink) = &layout_dst {
        sink.flush().await?;
    }
    report.stopped = ctx.stop.lock().expect("lock").clone();
    if let (Some(sink), SyncDest::Dir(p)) = (&layout_dst, dst) {
        if is_archive_path(p) && !opts.dry_run {
            let complete = report.failed == 0
                && report.stopped.is_none()
                && done.iter().all(|(_, r)| !matches!(r.status, Status::Failed | Status::NotRun));
            write_archive(&sink.layout, p, complete, progress).await?;
        }
    }
    done.sort_by_key(|(i, _)| *i);
    for (_, r) in done {
        report.add(r);
    }
    Ok(report)
}

/// The staging layout of an archive destination: the one a sync that did not complete left
/// (resumed), else a new one seeded from the archive already at `p`, so that a re-sync
/// copies only what changed at the source.
async fn staging_for(p: &Path) -> Result<Layout> {
    let staging = archive_staging(p);
    let fresh = !staging.join("index.json").exists();
    let layout = Layout::create(&staging)?;
    if fresh && p.is_file() {
        let old = OciArchive::open(p)?;
        let roots = grouped_roots(old.roots().await?);
        copy::graph_many(&old, &layout, &roots, &CopyOptions::default(), &crate::transport::NoProgress).await?;
    }
    Ok(layout)
}

/// Roots as `(descriptor, names)`, one entry per digest, in first-seen order.
fn grouped_roots(roots: Vec<(Descriptor, Option<String>)>) -> Vec<(Descriptor, Vec<String>)> {
    let mut at: HashMap<Digest, usize> = HashMap::new();
    let mut out: Vec<(Descriptor, Vec<String>)> = Vec::new();
    for (d, name) in roots {
        let i = *at.entry(d.digest.clone()).or_insert_with(|| {
            out.push((d.clone(), Vec::new()));
            out.len() - 1
        });
        out[i].1.extend(name);
    }
    out
}

/// Write every root of the staging layout (images under their full names, referrers and
/// other untagged roots as they are) into the OCI archive `p`, each blob once; nothing is at
/// `p` until the archive is complete (temp file, rename). A `complete` sync removes the
/// staging layout; otherwise it stays for the re-run.
async fn write_archive(staging: &Layout, p: &Path, complete: bool, progress: &dyn Progress) -> Result<()> {
    let roots = grouped_roots(staging.roots().await?);
    let out = OciArchiveWriter::create(p).await?;
    copy::graph_many(staging, &out, &roots, &CopyOptions::default(), progress).await?;
    out.finish().await?;
    if complete {
        let dir = staging.root().to_path_buf();
        std::fs::remove_dir_all(&dir).map_err(|e| Error::io(dir, e))?;
    }
    Ok(())
}

fn line_for(r: &ImageResult) -> String {
    let what = match r.status {
        Status::Copied => "copied",
        Status::Skipped => "unchanged",
        Status::WouldCopy => "would copy",
        Status::Refused => "refused",
        Status::Failed => "FAILED",
        Status::NotRun => "not run",
    };
    match &r.error {
        Some(e) => format!("{what} {} -> {}: {e}", printable(&r.source), printable(&r.destination)),
        None => format!("{what} {} -> {}", printable(&r.source), printable(&r.destination)),
    }
}

fn source_name(src: &SyncSource) -> String {
    match src {
        SyncSource::Docker(s) => format!("docker://{s}"),
        SyncSource::Yaml(p) => p.display().to_string(),
        SyncSource::Dir(p) => p.display().to_string(),
    }
}

fn check_prefix(prefix: &str) -> Result<()> {
    let probe = format!("{}/x:y", prefix.trim_end_matches('/'));
    let r: Reference = probe.parse().map_err(|_| Error::InvalidReference {
        reference: prefix.to_string(),
        reason: "a sync destination is a registry and an optional path: HOST[:PORT][/PATH]".into(),
    })?;
    if !prefix.starts_with(&r.registry) {
        return Err(Error::InvalidReference {
            reference: prefix.to_string(),
            reason: "a sync destination starts with a registry host (HOST[:PORT][/PATH])".into(),
        });
    }
    Ok(())
}

/// The destination name of the source image `full_name` under `prefix`: skopeo's rule, the
/// last path component (`repo:tag`) or, with `scoped`, the whole name.
pub fn destination_name(prefix: &str, full_name: &str, scoped: bool) -> String {
    let suffix = if scoped { full_name } else { full_name.rsplit('/').next().unwrap_or(full_name) };
    format!("{}/{}", prefix.trim_end_matches('/'), suffix)
}

/// The repositories a `docker` or `yaml` source names.
fn repo_specs(client: &Arc<Client>, src: &SyncSource, opts: &SyncOptions) -> Result<Vec<RepoSpec>> {
    let mut out = Vec::new();
    match src {
        SyncSource::Docker(s) => {
            let s = s.strip_prefix("docker://").unwrap_or(s);
            let r: Reference = s.parse()?;
            let select = match (&r.digest, &r.tag) {
                (Some(d), _) => Select::Refs(vec![d.to_string()]),
                (None, Some(t)) => Select::Refs(vec![t.clone()]),
                (None, None) => Select::All,
            };
            let name = Reference { tag: None, digest: None, ..r };
            out.push(RepoSpec {
                client: client.clone(),
                name,
                select,
                filters: opts.filters.clone(),
                platforms: opts.copy.platforms.clone(),
            });
        }
        SyncSource::Yaml(path) => {
            let cfg = config::load(path)?;
            let bad = |why: String| Error::malformed("sync YAML", path.display().to_string(), why);
            for (registry, c) in cfg {
                let reg_client = client_for(client, &registry, &c)?;
                let filters = opts.filters.merged(&Filters {
                    keep_last: c.keep_last,
                    newer_than: c.newer_than.as_deref().map(config::parse_duration).transpose().map_err(bad)?,
                    exclude: c
                        .exclude
                        .as_deref()
                        .map(regex::Regex::new)
                        .transpose()
                        .map_err(|e| bad(format!("{registry}: exclude: {e}")))?,
                });
                let platforms = match &c.platforms {
                    Some(list) => list
                        .iter()
                        .map(|p| Platform::parse(p).ok_or_else(|| bad(format!("{registry}: platform {p:?}"))))
                        .collect::<Result<Vec<_>>>()?,
                    None => opts.copy.platforms.clone(),
                };
                let repo = |name: &str| -> Result<Reference> {
                    let r: Reference =
                        format!("{registry}/{name}").parse().map_err(|e| bad(format!("{registry}/{name}: {e}")))?;
                    if r.tag.is_some() || r.digest.is_some() {
                        return Err(bad(format!("{registry}/{name}: names an image, not a repository")));
                    }
                    Ok(r)
                };
                let mut push = |name: Reference, select: Select| {
                    out.push(RepoSpec {
                        client: reg_client.clone(),
                        name,
                        select,
                        filters: filters.clone(),
                        platforms: platforms.clone(),
                    })
                };
                for (name, refs) in &c.images {
                    let select = match refs {
                        Some(v) if !v.is_empty() => Select::Refs(v.clone()),
                        _ => Select::All,
                    };
                    push(repo(name)?, select);
                }
                for (name, re) in &c.images_by_tag_regex {
                    let re = regex::Regex::new(re).map_err(|e| bad(format!("{registry}/{name}: {e}")))?;
                    push(repo(name)?, Select::Regex(re));
                }
                for (name, cons) in &c.images_by_semver {
                    let cons = semver::Constraint::parse(cons).map_err(|e| bad(format!("{registry}/{name}: {e}")))?;
                    push(repo(name)?, Select::Semver(cons));
                }
            }
        }
        SyncSource::Dir(_) => {}
    }
    Ok(out)
}

/// The client for a YAML registry entry: `base` unless the entry sets TLS or credentials.
fn client_for(base: &Arc<Client>, registry: &str, c: &config::RegistryConfig) -> Result<Arc<Client>> {
    if c.tls_verify.is_none() && c.cert_dir.is_none() && c.credentials.is_none() {
        return Ok(base.clone());
    }
    let mut o: RegistryOptions = base.options().clone();
    if let Some(v) = c.tls_verify {
        o.tls_verify = v;
        if !v {
            // skopeo's tls-verify: false also allows plain HTTP
            o.insecure.push(registry.to_string());
        }
    }
    if let Some(d) = &c.cert_dir {
        o.cert_dirs.push(d.clone());
    }
    if let Some(cr) = &c.credentials {
        o.set_credential(registry, Credential::Basic { username: cr.username.clone(), password: cr.password.clone() });
    }
    Client::new(o)
}

/// The images of one repository spec: its tags listed and filtered, or the refs it names.
async fn expand(spec: RepoSpec, jobs: usize) -> Result<Vec<Item>> {
    let repo = spec.client.repository(&spec.name);
    let base = spec.name.repo_ref();
    let mut targets: Vec<String> = match &spec.select {
        Select::Refs(v) => v.clone(),
        Select::All | Select::Regex(_) | Select::Semver(_) => {
            let tags = repo.tags().await?;
            tags.into_iter()
                .filter(|t| match &spec.select {
                    Select::Regex(re) => re.is_match(t),
                    Select::Semver(c) => semver::Version::parse(t).is_some_and(|v| c.matches(&v)),
                    _ => true,
                })
                .collect()
        }
    };
    if let Some(ex) = &spec.filters.exclude {
        targets.retain(|t| !ex.is_match(t));
    }
    let targets = apply_age_filters(&repo, targets, &spec.filters, jobs).await?;
    let src = Src::Registry(repo);
    Ok(targets
        .into_iter()
        .map(|t| {
            let full_name = if t.contains(':') { format!("{base}@{t}") } else { format!("{base}:{t}") };
            Item { src: src.clone(), target: t, known: None, full_name, platforms: spec.platforms.clone() }
        })
        .collect())
}

/// `keep_last` and `newer_than`: by semantic version when every tag is one (keep_last
/// only), else by each image's `created` time (its config; an index's first image).
async fn apply_age_filters(repo: &Repository, targets: Vec<String>, f: &Filters, jobs: usize) -> Result<Vec<String>> {
    if f.keep_last.is_none() && f.newer_than.is_none() {
        return Ok(targets);
    }
    let versions: Vec<Option<semver::Version>> = targets.iter().map(|t| semver::Version::parse(t)).collect();
    let all_semver = !targets.is_empty() && versions.iter().all(Option::is_some);
    let mut dated: Vec<(String, Option<i64>, Option<semver::Version>)> = if f.needs_created(all_semver) {
        let created: Vec<Option<i64>> = futures::stream::iter(targets.iter().cloned())
            .map(|t| async move { created_of(repo, &t).await })
            .buffered(jobs.max(1))
            .collect::<Vec<Result<Option<i64>>>>()
            .await
            .into_iter()
            .collect::<Result<_>>()?;
        targets.into_iter().zip(created).zip(versions).map(|((t, c), v)| (t, c, v)).collect()
    } else {
        targets.into_iter().zip(versions).map(|(t, v)| (t, None, v)).collect()
    };
    if let Some(d) = f.newer_than {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        let cutoff = now - d.as_secs() as i64;
        dated.retain(|(_, c, _)| c.is_some_and(|c| c >= cutoff));
    }
    if let Some(n) = f.keep_last {
        if all_semver {
            dated.sort_by(|a, b| b.2.cmp(&a.2));
        } else {
            // newest first; undated last; equal times by tag name, descending
            dated.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
        }
        dated.truncate(n);
    }
    Ok(dated.into_iter().map(|(t, _, _)| t).collect())
}

/// The `created` time (Unix seconds) of the image `target` names: its config's, or for an
/// index its first image's (attestations skipped).
async fn created_of(repo: &Repository, target: &str) -> Result<Option<i64>> {
    let desc = repo.resolve(Some(&crate::model::reference::TagOrDigest::parse(target))).await?;
    let mut doc = repo.fetch_document(&desc).await?;
    if let View::Index(i) = &doc.view {
        if let Some(t) = i.annotations.get(crate::model::media::ANNOTATION_CREATED) {
            return Ok(crate::model::time::parse_rfc3339(t).map(|(s, _)| s));
        }
        let Some(child) = i.manifests.iter().find(|d| !crate::model::platform::is_attestation(d)).cloned() else {
            return Ok(None);
        };
        doc = repo.fetch_document(&child).await?;
    }
    let View::Manifest(m) = &doc.view else { return Ok(None) };
    if m.config.size > crate::model::media::MAX_MANIFEST_SIZE {
        return Ok(None);
    }
    let mut body = Vec::new();
    let mut r =
        crate::transport::VerifyReader::new(repo.open_blob(&m.config, 0).await?, &m.config, Source::location(repo));
    tokio::io::AsyncReadExt::read_to_end(&mut r, &mut body)
        .await
        .map_err(|e| crate::transport::unwrap_io_error(e, format!("config {}", m.config.digest)))?;
    #[derive(serde::Deserialize)]
    struct Created {
        created: Option<String>,
    }
    Ok(serde_json::from_slice::<Created>(&body)
        .ok()
        .and_then(|c| c.created)
        .and_then(|c| crate::model::time::parse_rfc3339(&c))
        .map(|(s, _)| s))
}

/// The images of a layout (or OCI archive) written by `sync --dest dir`: every tagged root.
/// A root named `registry/repo:tag` keeps that name; a plain tag is read as `<dir name>:tag`,
/// as skopeo names an image directory by its path. Each item is made when the sync reaches
/// it: a layout of 100k tags is held as its index's entries, not as 100k planned images.
async fn layout_items(path: &Path, platforms: &[Platform]) -> Result<Plan> {
    let archive = is_archive_path(path) && path.is_file();
    let dir = if archive { None } else { Some(Arc::new(Layout::open(path)?)) };
    let layout: Arc<dyn Source> = match &dir {
        Some(l) => l.clone(),
        None => Arc::new(OciArchive::open(path)?),
    };
    let local: Arc<dyn Source> =
        Arc::new(LocalSource { inner: layout.clone(), dir: dir.clone(), referrers: Default::default() });
    let src = Src::Local { src: local, path: Arc::from(path), archive };
    let dir_name = path
        .canonicalize()
        .ok()
        .and_then(|p| if archive { p.file_stem() } else { p.file_name() }.map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "image".into());
    // a layout's roots are parsed one at a time from its index
    let roots: Box<dyn Iterator<Item = (Descriptor, Option<String>)> + Send> = match &dir {
        Some(l) => Box::new(l.root_index()?.into_roots()),
        None => Box::new(layout.roots().await?.into_iter()),
    };
    let platforms = platforms.to_vec();
    let items = roots.filter_map(move |(mut desc, name)| {
        let name = name?;
        // the name travels in the item; the copy drops it from the root anyway (and an
        // annotation map costs half a KiB per root of a 100k-tag layout)
        desc.annotations.remove(crate::model::media::ANNOTATION_REF_NAME);
        if desc.annotations.is_empty() {
            desc.annotations = Default::default();
        }
        let full_name = match name.parse::<Reference>() {
            Ok(r) if name.contains('/') => r.to_string(),
            _ => format!("{dir_name}:{name}"),
        };
        Some(Item { src: src.clone(), target: name, known: Some(desc), full_name, platforms: platforms.clone() })
    });
    let items: Box<dyn Iterator<Item = Item> + Send> = Box::new(items);
    Ok(items.peekable())
}

/// The images of a sync in order, made or handed out as the sync reaches them.
type Plan = std::iter::Peekable<Box<dyn Iterator<Item = Item> + Send>>;

/// A plan of items listed up front (registries): handed out from the end of the list, whose
/// buffer shrinks as it empties.
fn listed_plan(mut items: Vec<Item>) -> Plan {
    items.reverse();
    let feed = std::iter::from_fn(move || {
        let item = items.pop()?;
        if items.capacity() > 1024 && items.len() < items.capacity() / 4 {
            items.shrink_to_fit();
        }
        Some(item)
    });
    let feed: Box<dyn Iterator<Item = Item> + Send> = Box::new(feed);
    feed.peekable()
}

struct RunCtx<'a> {
    client: &'a Arc<Client>,
    dst: &'a SyncDest,
    opts: &'a SyncOptions,
    copy_opts: CopyOptions,
    layout: Option<Arc<LayoutSink>>,
    existing: HashMap<String, Digest>,
    progress: &'a dyn Progress,
    /// Set when the sync stops early: why.
    stop: Mutex<Option<String>>,
}

impl RunCtx<'_> {
    fn destination(&self, item: &Item) -> Result<Dst> {
        match self.dst {
            SyncDest::Dir(_) => Ok(Dst::Layout { name: item.full_name.clone() }),
            SyncDest::Docker(prefix) => {
                let name = destination_name(prefix, &item.full_name, self.opts.scoped);
                let r: Reference = name.parse()?;
                let shown = format!("docker://{name}");
                let tag = if r.digest.is_some() { None } else { r.tag.clone() };
                Ok(Dst::Registry { repo: self.client.repository(&r), tag, shown })
            }
        }
    }

    /// Check and, when needed, copy one image; never an error (a failure is its result).
    async fn one(&self, item: Item) -> (ImageResult, copy::CopyReport) {
        let mut result = ImageResult {
            source: item.full_name.clone(),
            destination: String::new(),
            digest: None,
            status: Status::Failed,
            error: None,
            bytes_uploaded: 0,
        };
        let dst = match self.destination(&item) {
            Ok(d) => d,
            Err(e) => {
                result.error = Some(e.to_string());
                return (result, Default::default());
            }
        };
        result.destination = match &dst {
            Dst::Registry { shown, .. } => shown.clone(),
            Dst::Layout { name } => match self.dst {
                SyncDest::Dir(p) if is_archive_path(p) => format!("oci-archive:{}:{name}", p.display()),
                SyncDest::Dir(p) => format!("oci:{}:{name}", p.display()),
                _ => name.clone(),
            },
        };
        if self.stop.lock().expect("lock").is_some() {
            result.status = Status::NotRun;
            return (result, Default::default());
        }
        match self.check_and_copy(&item, &dst).await {
            Ok((digest, status, report, note)) => {
                result.digest = Some(digest.to_string());
                result.status = status;
                result.error = note;
                result.bytes_uploaded = report.bytes_uploaded;
                (result, report)
            }
            Err(e) => {
                result.error = Some(e.to_string());
                (result, Default::default())
            }
        }
    }

    /// The source endpoint of `item`'s repository at `digest`, and that manifest, if there.
    async fn subject_of(&self, item: &Item, digest: &Digest) -> Result<Option<(Endpoint, Descriptor)>> {
        let at = digest.to_string();
        Ok(match &item.src {
            Src::Registry(r) => {
                let mut name: Reference = item.full_name.parse()?;
                name.tag = None;
                name.digest = Some(digest.clone());
                r.head_manifest(&at).await?.map(|d| (Endpoint::Registry(name), d))
            }
            Src::Local { src, .. } => match src
                .resolve(Some(&crate::model::reference::TagOrDigest::Digest(digest.clone())))
                .await
            {
                Ok(d) => {
                    let mut endpoint = item.src.endpoint(item)?;
                    if let Endpoint::Layout { reference, .. } | Endpoint::OciArchive { reference, .. } = &mut endpoint {
                        *reference = Some(at);
                    }
                    Some((endpoint, d))
                }
                Err(Error::NotFound { .. }) => None,
                Err(e) => return Err(e),
            },
        })
    }

    /// What happened to `item`: its digest, status, copy report, and why it was refused.
    async fn check_and_copy(
        &self,
        item: &Item,
        dst: &Dst,
    ) -> Result<(Digest, Status, copy::CopyReport, Option<String>)> {
        // the source's digest and the destination's, asked together
        let src_head = async {
            match (&item.known, &item.src) {
                (Some(d), _) => Ok(d.clone()),
                (None, Src::Registry(r)) => r
                    .head_manifest(&item.target)
                    .await?
                    .ok_or_else(|| Error::not_found(item.target.clone(), Source::location(r))),
                (None, Src::Local { src, .. }) => {
                    src.resolve(Some(&crate::model::reference::TagOrDigest::parse(&item.target))).await
                }
            }
        };
        let dst_head = async {
            match dst {
                Dst::Registry { repo, tag, .. } => match tag {
                    Some(t) => repo.head_manifest(t).await,
                    None => repo.head_manifest(&item.target).await,
                },
                Dst::Layout { name } => Ok(self.existing.get(name).map(|d| Descriptor::new("", d.clone(), 0))),
            }
        };
        let (desc, have) = tokio::join!(src_head, dst_head);
        let desc = desc?;
        let have = have?;
        if let Some(h) = &have {
            if h.digest == desc.digest || self.same_after_filter(item, &desc, h, dst).await? {
                return Ok((desc.digest, Status::Skipped, Default::default(), None));
            }
        }
        // the trust policy decides on the digest just resolved, before anything is copied;
        // the copy then moves exactly that digest
        if let Some(policy) = &self.opts.policy {
            // a signature, attestation or referrers-fallback tag is no image of its own: it is
            // decided by its subject's verdict (as `copy --digest-tags` carries it along)
            let (endpoint, subject) = match retention::attached_subject(&item.target) {
                Some(d) => match self.subject_of(item, &d).await? {
                    Some(found) => found,
                    None => {
                        let why = format!("{}: its subject {d} is not in the source", item.full_name);
                        return Ok((desc.digest, Status::Refused, Default::default(), Some(why)));
                    }
                },
                None => (item.src.endpoint(item)?, desc.clone()),
            };
            match policy.check(&endpoint, item.src.source(), &subject).await {
                Ok(()) => {}
                Err(e @ Error::Untrusted { .. }) => {
                    return Ok((desc.digest, Status::Refused, Default::default(), Some(e.to_string())))
                }
                Err(e) => return Err(e),
            }
        }
        if self.opts.dry_run {
            return Ok((desc.digest, Status::WouldCopy, Default::default(), None));
        }
        if let (Some(floor), Src::Registry(r)) = (self.opts.rate_limit_floor, &item.src) {
            if self.stop.lock().expect("lock").is_some() {
                return Ok((desc.digest, Status::NotRun, Default::default(), None));
            }
            if let Some(rl) = r.rate_limit().await {
                if rl.remaining <= floor {
                    let why = format!(
                        "stopped before the rate limit of {}: {} of {} requests left (floor {floor}); {}",
                        r.name().split('/').next().unwrap_or_default(),
                        rl.remaining,
                        rl.limit,
                        rl.when_reset()
                    );
                    let mut stop = self.stop.lock().expect("lock");
                    if stop.is_none() {
                        *stop = Some(why);
                    }
                    return Ok((desc.digest, Status::NotRun, Default::default(), None));
                }
            }
        }
        let opts = CopyOptions { platforms: item.platforms.clone(), ..self.copy_opts.clone() };
        let src = item.src.source();
        let report = match dst {
            Dst::Registry { repo, tag, shown } => {
                let tags: Vec<String> = tag.iter().cloned().collect();
                let report = copy::graph(src, repo, &desc, &tags, &opts, self.progress).await?;
                if let Some(signer) = &self.opts.signer {
                    // what the destination got (after a platform filter) is signed, claiming
                    // its destination name
                    let root = report.roots.first().unwrap_or(&desc);
                    let name = shown.strip_prefix("docker://").unwrap_or(shown);
                    let identity = name.parse::<Reference>().ok().map(|r| match &r.tag {
                        Some(_) => r.normalized(),
                        None => format!("{}@{}", r.repo_ref(), root.digest),
                    });
                    for w in signer.sign_root(repo, repo, root, identity).await? {
                        self.progress.message(&format!("signed {}: {} signature {}", w.subject, w.format, w.manifest));
                    }
                }
                report
            }
            Dst::Layout { name } => {
                let sink = self.layout.as_ref().expect("layout destination");
                copy::graph(src, sink.as_ref(), &desc, std::slice::from_ref(name), &opts, self.progress).await?
            }
        };
        Ok((desc.digest, Status::Copied, report, None))
    }

    /// With a platform filter the destination holds a rewritten root: it is unchanged when
    /// it lists (or is) exactly what the filter takes from the source's index now.
    async fn same_after_filter(&self, item: &Item, src: &Descriptor, have: &Descriptor, dst: &Dst) -> Result<bool> {
        if item.platforms.is_empty() || !crate::model::media::is_index(&src.media_type) {
            return Ok(false);
        }
        let doc = item.src.source().fetch_document(src).await?;
        let View::Index(i) = &doc.view else { return Ok(false) };
        // the images the filter keeps and their attestation manifests (the copy's one rule)
        let wanted: Vec<&Digest> =
            crate::model::platform::select_entries(&i.manifests, |d| item.platforms.iter().any(|p| p.matches_entry(d)))
                .into_iter()
                .map(|d| &d.digest)
                .collect();
        if wanted.len() == 1 {
            return Ok(&have.digest == wanted[0]);
        }
        let got = match dst {
            Dst::Registry { repo, .. } => repo.fetch_document(have).await?,
            Dst::Layout { .. } => {
                let sink = self.layout.as_ref().expect("layout destination");
                let d = sink
                    .layout
                    .resolve(Some(&crate::model::reference::TagOrDigest::Digest(have.digest.clone())))
                    .await?;
                sink.layout.fetch_document(&d).await?
            }
        };
        let View::Index(g) = &got.view else { return Ok(false) };
        let have_set: Vec<&Digest> = g.manifests.iter().map(|d| &d.digest).collect();
        Ok(have_set == wanted)
    }
}

/// A local source (layout, archive) whose referrers come from one scan of all its roots,
/// made on first use and shared by every image of the sync; the default answers each image
/// with a scan of its own, quadratic in the roots.
struct LocalSource {
    inner: Arc<dyn Source>,
    /// The same source when it is a layout directory: its roots are read one at a time.
    dir: Option<Arc<Layout>>,
    referrers: tokio::sync::OnceCell<HashMap<Digest, Vec<Descriptor>>>,
}

#[async_trait]
impl Source for LocalSource {
    fn location(&self) -> String {
        self.inner.location()
    }
    async fn resolve(&self, reference: Option<&crate::model::reference::TagOrDigest>) -> Result<Descriptor> {
        self.inner.resolve(reference).await
    }
    async fn fetch_manifest_bytes(&self, desc: &Descriptor) -> Result<Bytes> {
        self.inner.fetch_manifest_bytes(desc).await
    }
    async fn open_blob(&self, desc: &Descriptor, offset: u64) -> Result<crate::transport::BlobStream> {
        self.inner.open_blob(desc, offset).await
    }
    fn blob_path(&self, desc: &Descriptor) -> Option<PathBuf> {
        self.inner.blob_path(desc)
    }
    fn state_dir(&self) -> Option<PathBuf> {
        self.inner.state_dir()
    }
    async fn roots(&self) -> Result<Vec<(Descriptor, Option<String>)>> {
        self.inner.roots().await
    }
    async fn list_tags(&self) -> Result<Vec<String>> {
        self.inner.list_tags().await
    }
    async fn referrers(&self, subject: &Digest, artifact_type: Option<&str>) -> Result<Vec<Descriptor>> {
        let map = self
            .referrers
            .get_or_try_init(|| async {
                match &self.dir {
                    Some(l) => {
                        let roots = l.root_index()?.into_roots().map(|(d, _)| d);
                        crate::transport::referrer_map_from(self.inner.as_ref(), roots).await
                    }
                    None => crate::transport::referrer_map(self.inner.as_ref()).await,
                }
            })
            .await?;
        Ok(map
            .get(subject)
            .into_iter()
            .flatten()
            .filter(|r| artifact_type.is_none_or(|t| r.artifact_type.as_deref() == Some(t)))
            .cloned()
            .collect())
    }
}

/// A layout destination that records roots and tags in batches (`flush`) instead of
/// rewriting index.json for every image; content goes straight to the layout.
struct LayoutSink {
    layout: Layout,
    pending: Mutex<Vec<(Descriptor, Bytes, Vec<String>)>>,
    flushing: AtomicBool,
    /// Roots the index holds (about): what the next rewrite costs.
    flushed: AtomicUsize,
}

impl LayoutSink {
    fn new(layout: Layout) -> Result<LayoutSink> {
        Ok(LayoutSink {
            layout,
            pending: Mutex::new(Vec::new()),
            flushing: AtomicBool::new(false),
            flushed: AtomicUsize::new(0),
        })
    }
    /// Whether enough roots wait for a rewrite of index.json to be worth it.
    fn due(&self) -> bool {
        self.pending.lock().expect("lock").len() >= TAG_BATCH.max(self.flushed.load(Ordering::Relaxed) / 2)
    }
    async fn flush(&self) -> Result<()> {
        if self.flushing.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let batch = std::mem::take(&mut *self.pending.lock().expect("lock"));
        self.flushed.fetch_add(batch.len(), Ordering::Relaxed);
        let r = if batch.is_empty() { Ok(()) } else { self.layout.tag_roots(&batch).await };
        self.flushing.store(false, Ordering::SeqCst);
        r
    }
}

#[async_trait]
impl Destination for LayoutSink {
    fn location(&self) -> String {
        Destination::location(&self.layout)
    }
    async fn has_blob(&self, desc: &Descriptor) -> Result<bool> {
        self.layout.has_blob(desc).await
    }
    async fn has_manifest(&self, desc: &Descriptor) -> Result<bool> {
        self.layout.has_manifest(desc).await
    }
    async fn push_blob(&self, desc: &Descriptor, src: &dyn Source, progress: &dyn Progress) -> Result<BlobOutcome> {
        self.layout.push_blob(desc, src, progress).await
    }
    async fn push_manifest(&self, desc: &Descriptor, bytes: Bytes, tag: Option<&str>) -> Result<()> {
        self.layout.push_manifest(desc, bytes, tag).await
    }
    async fn tag_roots(&self, roots: &[(Descriptor, Bytes, Vec<String>)]) -> Result<()> {
        // tagged roots wait for the next flush; untagged ones (referrers) likewise. A tagged
        // root's manifest is stored now (no entry names it before the flush, so nothing
        // points at it early), so the batch holds only descriptors and names.
        let mut batch = Vec::with_capacity(roots.len());
        for (desc, bytes, tags) in roots {
            if !tags.is_empty() {
                self.layout.write_blob_bytes(desc, bytes)?;
            }
            let mut d = desc.clone();
            d.annotations.remove(crate::model::media::ANNOTATION_REF_NAME);
            if d.annotations.is_empty() {
                d.annotations = Default::default();
            }
            batch.push((d, Bytes::new(), tags.clone()));
        }
        self.pending.lock().expect("lock").extend(batch);
        Ok(())
    }
    async fn add_root(&self, desc: &Descriptor) -> Result<()> {
        self.pending.lock().expect("lock").push((desc.clone(), Bytes::new(), Vec::new()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_as_skopeo_makes_them() {
        assert_eq!(destination_name("reg:5000/mirror/", "src:5000/team/app:v1", false), "reg:5000/mirror/app:v1");
        assert_eq!(
            destination_name("reg:5000/mirror", "docker.io/library/busybox:1", true),
            "reg:5000/mirror/docker.io/library/busybox:1"
        );
        assert_eq!(
            destination_name(
                "reg:5000",
                "src/app@sha256:0000000000000000000000000000000000000000000000000000000000000000",
                false
            ),
            "reg:5000/app@sha256:0000000000000000000000000000000000000000000000000000000000000000"
        );
        assert!(check_prefix("localhost:5000/mirror").is_ok());
        assert!(check_prefix("not a prefix").is_err());
    }
}
