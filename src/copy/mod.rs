//! The graph copy: the only code that moves content between transports. It walks
//! index → manifests → blobs, pushes children before parents, copies blobs concurrently
//! (bounded), skips what the destination has, and tags last. Bytes are never rewritten.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::future::{try_join_all, BoxFuture};
use futures::FutureExt;
use tokio::sync::{OnceCell, Semaphore};

use crate::error::{Error, Result};
use crate::model::descriptor::Descriptor;
use crate::model::digest::Digest;
use crate::model::media;
use crate::transport::{BlobOutcome, Destination, Progress, Source};

#[derive(Clone, Debug)]
pub struct CopyOptions {
    /// Blobs transferred at once.
    pub jobs: usize,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions { jobs: 4 }
    }
}

/// Counters of one copy.
#[derive(Debug, Default, serde::Serialize)]
pub struct CopyReport {
    pub blobs_uploaded: u64,
    pub blobs_existed: u64,
    pub blobs_mounted: u64,
    pub bytes_uploaded: u64,
    pub manifests_pushed: u64,
    pub manifests_existed: u64,
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

type BlobCell = Arc<OnceCell<std::result::Result<BlobOutcome, Arc<Error>>>>;

struct Ctx<'a> {
    src: &'a dyn Source,
    dst: &'a dyn Destination,
    progress: &'a dyn Progress,
    sem: Semaphore,
    blobs: Mutex<HashMap<Digest, BlobCell>>,
    done_docs: Mutex<HashMap<Digest, ()>>,
    counters: Counters,
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
    let ctx = Ctx {
        src,
        dst,
        progress,
        sem: Semaphore::new(dst.max_jobs().map_or(opts.jobs, |m| m.min(opts.jobs)).max(1)),
        blobs: Mutex::new(HashMap::new()),
        done_docs: Mutex::new(HashMap::new()),
        counters: Counters::default(),
    };
    for (root, tags) in roots {
        copy_root(&ctx, root, tags).await?;
    }
    let c = &ctx.counters;
    Ok(CopyReport {
        blobs_uploaded: c.blobs_uploaded.load(Ordering::Relaxed),
        blobs_existed: c.blobs_existed.load(Ordering::Relaxed),
        blobs_mounted: c.blobs_mounted.load(Ordering::Relaxed),
        bytes_uploaded: c.bytes_uploaded.load(Ordering::Relaxed),
        manifests_pushed: c.manifests_pushed.load(Ordering::Relaxed),
        manifests_existed: c.manifests_existed.load(Ordering::Relaxed),
    })
}

async fn copy_root(ctx: &Ctx<'_>, root: &Descriptor, tags: &[String]) -> Result<()> {
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
    if let Some(chosen) = ctx.dst.select_root(ctx.src, &doc).await? {
        root = chosen;
        root.annotations.remove(media::ANNOTATION_REF_NAME);
        doc = ctx.src.fetch_document(&root).await?;
    }
    if !ctx.dst.has_manifest(&root).await? {
        copy_children(ctx, &doc.children(), doc.is_index()).await?;
        if tags.is_empty() {
            ctx.dst.push_manifest(&root, doc.bytes.clone(), None).await?;
        }
        ctx.counters.manifests_pushed.fetch_add(1, Ordering::Relaxed);
    } else {
        ctx.counters.manifests_existed.fetch_add(1, Ordering::Relaxed);
    }
    if tags.is_empty() {
        ctx.dst.add_root(&root).await?;
    }
    for t in tags {
        ctx.dst.push_manifest(&root, doc.bytes.clone(), Some(t)).await?;
    }
    Ok(())
}

async fn copy_children(ctx: &Ctx<'_>, children: &[Descriptor], parent_is_index: bool) -> Result<()> {
    let futs = children.iter().map(|c| {
        if media::is_document(&c.media_type)
            || (parent_is_index && c.media_type.ends_with("+json") && c.media_type.contains("manifest"))
        {
            copy_document(ctx, c.clone())
        } else {
            copy_blob(ctx, c.clone()).boxed()
        }
    });
    try_join_all(futs).await?;
    Ok(())
}

fn copy_document<'a>(ctx: &'a Ctx<'a>, desc: Descriptor) -> BoxFuture<'a, Result<()>> {
    async move {
        if ctx.done_docs.lock().expect("lock").contains_key(&desc.digest) {
            return Ok(());
        }
        if ctx.dst.has_manifest(&desc).await? {
            ctx.counters.manifests_existed.fetch_add(1, Ordering::Relaxed);
            ctx.done_docs.lock().expect("lock").insert(desc.digest.clone(), ());
            return Ok(());
        }
        let doc = ctx.src.fetch_document(&desc).await?;
        copy_children(ctx, &doc.children(), doc.is_index()).await?;
        ctx.dst.push_manifest(&desc, doc.bytes.clone(), None).await?;
        ctx.counters.manifests_pushed.fetch_add(1, Ordering::Relaxed);
        ctx.done_docs.lock().expect("lock").insert(desc.digest.clone(), ());
        Ok(())
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
            let _permit = ctx.sem.acquire().await.expect("semaphore open");
            ctx.progress.start(&desc);
            let outcome = match ctx.dst.has_blob(&desc).await {
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
                Err(e) => Err(Arc::new(e)),
            }
        })
        .await;
    match res {
        Ok(_) => Ok(()),
        Err(e) => Err(Error::Shared(e.clone())),
    }
}
