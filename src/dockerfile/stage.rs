//! What a Dockerfile build carries from step to step: the stage being built ([`Stage`]),
//! the build's context ([`Ctx`]: options, caches, counters), the stage plan ([`Plan`]), the
//! step cache's lookups and records, a stage's filesystem mounted for reading
//! ([`mount_stage`]), and the small helpers every instruction uses. The instructions
//! themselves live in [`super::eval`] and [`super::run`], which both build on this.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use sha2::{Digest as _, Sha256};

use super::cache::{CacheEntry, ImportedCache};
use super::fs::{cache_root, chain_id, ensure_unpacked_blocking, materialize, mount_overlay, Mounted, Snapshotter};
use super::ignore::IgnoreRule;
use super::parse::{err, Dockerfile, Instruction};
use super::statcache::StatCache;
use super::{BuildLog, DockerfileBuild};
use crate::copy::CopyOptions;
use crate::error::{Error, IoContext, Result};
use crate::layer::LayerBlob;
use crate::model::descriptor::{Descriptor, Platform};
use crate::model::write::{History, ImageConfig};
use crate::transport::layout::Layout;
use crate::transport::{Relay, RelayEnd};

/// Default PATH of RUN when the image sets none (BuildKit's).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A stage being built.
#[derive(Clone)]
pub(crate) struct Stage {
    pub name: Option<String>,
    pub config: ImageConfig,
    /// Layer descriptors, aligned with `config.rootfs.diff_ids`.
    pub layers: Vec<Descriptor>,
    pub base: Option<(Descriptor, String)>,
    /// ARGs declared in the stage, with their values.
    pub args: BTreeMap<String, Option<String>>,
    pub shell: Vec<String>,
    pub cmd_set: bool,
    pub key: String,
    pub platform: Platform,
}

impl Stage {
    /// Variables for expansion: the config's ENV, then the stage's ARGs.
    pub fn vars(&self) -> HashMap<String, String> {
        let mut m: HashMap<String, String> = HashMap::new();
        for (k, v) in &self.args {
            if let Some(v) = v {
                m.insert(k.clone(), v.clone());
            }
        }
        for e in &self.config.config.env {
            let (k, v) = e.split_once('=').unwrap_or((e, ""));
            m.insert(k.to_string(), v.to_string());
        }
        m
    }

    pub fn workdir(&self) -> String {
        self.config.config.working_dir.clone().filter(|w| !w.is_empty()).unwrap_or_else(|| "/".into())
    }

    /// Unpack every layer (cached, by chain) and return their directories, bottom first.
    /// Blocking.
    pub fn dirs_blocking(&self, layout: &Layout) -> Result<Vec<PathBuf>> {
        let mut dirs = Vec::new();
        let mut chain: Option<String> = None;
        for (d, id) in self.layers.iter().zip(&self.config.rootfs.diff_ids) {
            let c = chain_id(chain.as_deref(), id);
            dirs.push(ensure_unpacked_blocking(layout, d, &c, &dirs)?);
            chain = Some(c);
        }
        Ok(dirs)
    }

    /// The ChainID (hex) of the stage's layers, None without layers.
    pub fn chain(&self) -> Option<String> {
        let mut chain: Option<String> = None;
        for id in &self.config.rootfs.diff_ids {
            chain = Some(chain_id(chain.as_deref(), id));
        }
        chain
    }

    pub(crate) fn push_layer(&mut self, blob: &LayerBlob, created: &str, by: String) {
        self.layers.push(blob.descriptor.clone());
        self.config.rootfs.diff_ids.push(blob.diff_id.clone());
        self.config.history.push(History { created: Some(created.into()), created_by: Some(by), ..Default::default() });
    }

    pub(crate) fn push_empty(&mut self, created: &str, by: String) {
        self.config.history.push(History {
            created: Some(created.into()),
            created_by: Some(by),
            empty_layer: Some(true),
            ..Default::default()
        });
    }
}

pub(crate) struct Ctx<'a> {
    pub layout: &'a Layout,
    pub opts: &'a DockerfileBuild,
    pub log: &'a dyn BuildLog,
    pub df: Dockerfile,
    pub file: String,
    pub epoch: i64,
    pub created: String,
    pub runs: usize,
    pub cached: usize,
    pub ignore: Arc<Vec<IgnoreRule>>,
    /// The context directory, absolute.
    pub context: PathBuf,
    /// Content digests of context files by their stat.
    pub stat: Arc<StatCache>,
    /// Caches of `--cache-from`, asked on a local miss.
    pub imported: Vec<ImportedCache>,
    /// Every step this build went through (cached or not), for `--cache-to`.
    pub seen: Mutex<BTreeMap<String, CacheEntry>>,
    /// Layers of steps taken from an imported cache and not fetched yet: digest → (index in
    /// `imported`, descriptor). [`Ctx::ensure_layers`] fetches them when they are read.
    pub pending: Mutex<BTreeMap<crate::model::digest::Digest, (usize, Descriptor)>>,
    /// The registry repository each blob of a base image or of an imported cache can be
    /// mounted from: what a push of the image reads ([`super::BuildOutcome::origins`]).
    pub origins: Mutex<crate::transport::origins::BlobOrigins>,
    /// Directories named by `--build-context NAME=DIR`.
    pub named_dirs: BTreeMap<String, NamedDir>,
    /// The stage being built is named by `--no-cache-filter`: no step of it is looked up.
    pub stage_no_cache: bool,
    /// Layers fetched in the background from the start ([`Ctx::start_prefetch`]).
    pub prefetch: Prefetch,
    /// Context files of COPY steps hashed ahead, from the start of the build.
    pub prehash: Prehash,
    /// The resolver's registry client, for `ADD <url>` (see [`Ctx::http`]).
    pub client: Option<Arc<crate::transport::registry::Client>>,
}

/// The context COPY steps whose files are hashed ahead (into the stat cache, from the start
/// of the build, while the caches are read and the layers fetched): the step's line → its
/// place in the order they are hashed, and how many are done. A step waits for its own
/// files, then finds every digest in the stat cache.
#[derive(Default)]
pub(crate) struct Prehash {
    pub order: HashMap<usize, usize>,
    pub done: Option<tokio::sync::watch::Receiver<usize>>,
    /// Set when the build ends: the hashing stops at the next step.
    pub cancel: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for Prehash {
    fn drop(&mut self) {
        self.cancel.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Prehash {
    /// Wait until the files of the COPY at `line` are hashed (at once when it is not one
    /// hashed ahead, or when the hashing ended).
    pub(crate) async fn wait(&self, line: usize) {
        if let (Some(&pos), Some(rx)) = (self.order.get(&line), &self.done) {
            let _ = rx.clone().wait_for(|n| *n > pos).await;
        }
    }
}

/// The background fetches of the layers the imported caches' images had: digest → a future
/// that ends when its fetch has (ok or not), and the transfer slots (`--jobs`) every layer
/// fetch of the build shares, background or not. Dropped with the build: a fetch still
/// running then (a layer no step took) is aborted.
pub(crate) struct Prefetch {
    running:
        Mutex<BTreeMap<crate::model::digest::Digest, futures::future::Shared<futures::future::BoxFuture<'static, ()>>>>,
    handles: Mutex<Vec<tokio::task::AbortHandle>>,
    slots: crate::copy::Slots,
}

impl Prefetch {
    /// No fetch yet; `jobs` layer transfers at once among all of them.
    pub(crate) fn new(jobs: usize) -> Prefetch {
        Prefetch { running: Default::default(), handles: Default::default(), slots: crate::copy::Slots::new(jobs) }
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        for h in self.handles.get_mut().unwrap_or_else(|p| p.into_inner()).drain(..) {
            h.abort();
        }
    }
}

/// A directory named by `--build-context NAME=DIR` (buildx's named local context): `FROM
/// NAME`, `COPY --from=NAME` and `RUN --mount=from=NAME` read it as they read the build
/// context (files owned by root, keyed by content, the directory's own `.dockerignore`).
/// A stage of that name comes first, as for images.
#[derive(Clone)]
pub(crate) struct NamedDir {
    pub dir: PathBuf,
    pub ignore: Arc<Vec<IgnoreRule>>,
}

pub(crate) fn hash(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.len().to_le_bytes());
        h.update(p.as_bytes());
    }
    hex::encode(h.finalize())
}

impl Ctx<'_> {
    /// The client `ADD <url>` downloads with: the resolver's, else one with default options.
    pub(crate) fn http(&self) -> Result<Arc<crate::transport::registry::Client>> {
        match &self.client {
            Some(c) => Ok(c.clone()),
            None => crate::transport::registry::Client::new(Default::default()),
        }
    }

    fn cache_path(&self, key: &str) -> PathBuf {
        cache_root(self.layout).join("steps").join(format!("{key}.json"))
    }

    /// The cached result of `key`, when its layer blob is still in the store.
    fn cache_get(&self, key: &str) -> Option<CacheEntry> {
        if self.opts.no_cache || self.stage_no_cache {
            return None;
        }
        let raw = fs::read(self.cache_path(key)).ok()?;
        let e: CacheEntry = serde_json::from_slice(&raw).ok()?;
        if let Some(l) = &e.layer {
            if !self.layout.blob_path_of(&l.digest).is_file() {
                return None;
            }
        }
        self.note(key, &e);
        Some(e)
    }

    /// The cached result of `key`: the local cache, else the first `--cache-from` cache
    /// holding it whose layer can be fetched into the store (then recorded locally too).
    pub(crate) async fn cache_lookup(&self, key: &str) -> Result<Option<CacheEntry>> {
        if self.opts.no_cache || self.stage_no_cache {
            return Ok(None);
        }
        if let Some(e) = self.cache_get(key) {
            return Ok(Some(e));
        }
        for (i, c) in self.imported.iter().enumerate() {
            if let Some((e, later)) = c.take(key, self.layout, self.log, &self.copy_options()).await {
                if let Some(l) = e.layer.as_ref().filter(|_| later) {
                    self.pending.lock().expect("pending lock").insert(l.digest.clone(), (i, l.clone()));
                }
                self.cache_put(key, e.blob().as_ref())?;
                return Ok(Some(e));
            }
        }
        Ok(None)
    }

    /// How the build's layer fetches copy: the graph copy's options with `--jobs` transfer
    /// slots shared by all of them (the background prefetch and [`Ctx::ensure_layers`]).
    pub(crate) fn copy_options(&self) -> CopyOptions {
        CopyOptions {
            jobs: self.opts.jobs.unwrap_or(crate::copy::DEFAULT_JOBS),
            slots: Some(self.prefetch.slots.clone()),
            ..Default::default()
        }
    }

    /// Start fetching in the background, through the graph copy (largest first, within the
    /// build's `--jobs`), the layers of the images the `--cache-from` caches were exported
    /// with: an unchanged build puts them all in its image, and fetching them while the keys
    /// are computed (the context hashed) hides the download behind that work. Their progress
    /// goes to the returned [`RelayEnd`], which the build runs beside it. A fetch that fails
    /// is forgotten: the step's lookup decides whether the cache still has the layer
    /// ([`ImportedCache::take`]), and [`Ctx::ensure_layers`] fetches again and reports.
    pub(crate) fn start_prefetch(&self) -> RelayEnd {
        use futures::FutureExt;
        let (relay, end) = Relay::new();
        let mut running = self.prefetch.running.lock().expect("prefetch lock");
        let mut handles = self.prefetch.handles.lock().expect("prefetch lock");
        let mut layers: Vec<(Descriptor, Arc<dyn crate::transport::Source>)> = Vec::new();
        for c in &self.imported {
            for l in c.image_layers() {
                if !running.contains_key(&l.digest)
                    && !layers.iter().any(|(m, _)| m.digest == l.digest)
                    && !self.layout.blob_path_of(&l.digest).is_file()
                {
                    layers.push((l, c.source()));
                }
            }
        }
        layers.sort_by(|(a, _), (b, _)| b.size.cmp(&a.size).then_with(|| a.digest.cmp(&b.digest)));
        for (l, source) in layers {
            let (opts, relay, root) = (self.copy_options(), relay.clone(), self.layout.root().to_path_buf());
            let digest = l.digest.clone();
            let task = tokio::spawn(async move {
                let Ok(layout) = Layout::open(&root) else { return };
                let layers = [l];
                if let Err(e) = crate::copy::children(source.as_ref(), &layout, &layers, &opts, &relay).await {
                    tracing::debug!("prefetch of {} failed: {e}", layers[0].digest);
                }
            });
            handles.push(task.abort_handle());
            running.insert(digest, task.map(|_| ()).boxed().shared());
        }
        end
    }

    /// Fetch the layers of `layers` that a cache hit left in its cache (see `pending`)
    /// through the graph copy, each cache's layers in one copy, all within the build's
    /// `--jobs` and reported: before a stage's files are read (RUN, COPY, WORKDIR, a mount,
    /// `COPY --from`) and before the image is written. A layer being prefetched is waited
    /// for, not fetched twice; one whose prefetch failed is fetched again.
    pub(crate) async fn ensure_layers(&self, layers: &[Descriptor]) -> Result<()> {
        use futures::TryFutureExt;
        let wanted: Vec<(usize, Descriptor)> = {
            let pending = self.pending.lock().expect("pending lock");
            layers.iter().filter_map(|l| pending.get(&l.digest).cloned()).collect()
        };
        if wanted.is_empty() {
            return Ok(());
        }
        let prefetched: Vec<_> = {
            let running = self.prefetch.running.lock().expect("prefetch lock");
            wanted.iter().filter_map(|(_, l)| running.get(&l.digest).cloned()).collect()
        };
        futures::future::join_all(prefetched).await;
        // by cache, those still missing (each layer is copied, and reported, once)
        let mut groups: BTreeMap<usize, Vec<Descriptor>> = BTreeMap::new();
        for (i, l) in &wanted {
            let group = groups.entry(*i).or_default();
            if !self.layout.blob_path_of(&l.digest).is_file() && !group.iter().any(|g| g.digest == l.digest) {
                group.push(l.clone());
            }
        }
        let opts = self.copy_options();
        futures::future::try_join_all(groups.iter().filter(|(_, g)| !g.is_empty()).map(|(i, g)| {
            let cache = &self.imported[*i];
            // the error names the layer and where it was read; its kind is kept
            cache
                .fetch(g, self.layout, &opts, self.log.transfers())
                .inspect_err(|e| tracing::warn!(cache = cache.name(), error = %e, "build cache layers not fetched"))
        }))
        .await?;
        let mut pending = self.pending.lock().expect("pending lock");
        for (_, l) in &wanted {
            pending.remove(&l.digest);
        }
        Ok(())
    }

    /// The cached layer of `key` (None inside: the step made no layer).
    pub(crate) async fn cached_layer(&self, key: &str) -> Result<Option<Option<LayerBlob>>> {
        Ok(self.cache_lookup(key).await?.map(|e| e.blob()))
    }

    /// Record a step of this build for `--cache-to`.
    pub(crate) fn note(&self, key: &str, e: &CacheEntry) {
        self.seen.lock().expect("cache record lock").insert(key.to_string(), e.clone());
    }

    pub(crate) fn cache_put(&self, key: &str, blob: Option<&LayerBlob>) -> Result<()> {
        let e = CacheEntry::of(blob);
        self.note(key, &e);
        let p = self.cache_path(key);
        let dir = p.parent().expect("steps dir");
        fs::create_dir_all(dir).at(dir)?;
        let tmp = tempfile::NamedTempFile::new_in(dir).at(dir)?;
        fs::write(tmp.path(), serde_json::to_vec(&e).map_err(|e| Error::serialize("build cache entry", e))?)
            .at(tmp.path())?;
        tmp.persist(&p).map_err(|e| Error::io(&p, e.error))?;
        Ok(())
    }

    pub(crate) fn e(&self, ins: &Instruction, reason: impl ToString) -> Error {
        err(&self.file, ins.line, reason)
    }
}

/// Instruction indexes of the global part and of each stage, and the stages the target needs.
pub(crate) struct Plan {
    pub globals: Vec<usize>,
    pub stages: Vec<Vec<usize>>,
    pub names: Vec<Option<String>>,
    pub target: usize,
    pub needed: BTreeSet<usize>,
}

/// The stage `r` names among the first `before` (by name, or for `--from` by index too).
pub(crate) fn find_stage<'s>(
    plan: &Plan,
    done: &'s BTreeMap<usize, Stage>,
    r: &str,
    before: usize,
    by_index: bool,
) -> Option<&'s Stage> {
    let r = r.to_ascii_lowercase();
    (0..before)
        .find(|&j| plan.names[j].as_deref() == Some(r.as_str()) || (by_index && r == j.to_string()))
        .and_then(|j| done.get(&j))
}

/// `rel` against the absolute directory `base`, normalized, absolute.
pub(crate) fn join_abs(base: &str, rel: &str) -> String {
    let joined = if rel.starts_with('/') { rel.to_string() } else { format!("{base}/{rel}") };
    let mut parts: Vec<&str> = Vec::new();
    for c in joined.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Error::task("build step", e))?
}

pub(crate) fn truncate(s: &str) -> String {
    let one = s.replace('\n', "\\n");
    if one.chars().count() > 100 {
        format!("{}…", one.chars().take(100).collect::<String>())
    } else {
        one
    }
}

/// Where COPY reads: the context, or a stage's/image's mounted filesystem.
pub(crate) struct SourceRoot {
    pub dir: PathBuf,
    pub from_context: bool,
    pub _mount: Option<Mounted>,
    pub _tmp: Option<tempfile::TempDir>,
}

/// Mount `st`'s layers read-only in a temp dir (for COPY --from and RUN --mount from=).
/// Without overlayfs (`snapshotter`), a copy of them.
pub(crate) async fn mount_stage(layout: &Layout, st: &Stage, snapshotter: Snapshotter) -> Result<SourceRoot> {
    let layout2 = Layout::open(layout.root())?;
    let stc = st.clone();
    blocking(move || {
        let dirs = stc.dirs_blocking(&layout2)?;
        let base = cache_root(&layout2).join("mounts-tmp");
        fs::create_dir_all(&base).at(&base)?;
        let t = tempfile::Builder::new().prefix("m").tempdir_in(&base).at(&base)?;
        let (empty, target) = (t.path().join("e"), t.path().join("m"));
        fs::create_dir_all(&empty).at(&empty)?;
        fs::create_dir_all(&target).at(&target)?;
        let m = match snapshotter {
            Snapshotter::Copy => None,
            Snapshotter::Overlay => Some(mount_overlay(&dirs, &empty, None, &target)?),
            Snapshotter::Auto => mount_overlay(&dirs, &empty, None, &target).ok(),
        };
        if m.is_none() {
            materialize(&dirs, &target)?;
        }
        Ok(SourceRoot { dir: target, from_context: false, _mount: m, _tmp: Some(t) })
    })
    .await
}
