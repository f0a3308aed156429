//! OCI image layout directory as a content-addressed store: `oci-layout`, `index.json`,
//! `blobs/<alg>/<hex>`. Blobs are written to a temp file, verified, fsynced and renamed;
//! index.json is rewritten under an exclusive lock. Writers hold a shared lock on the
//! layout for their whole session so `gc` (exclusive) never races a copy.

pub(crate) mod blobfile;
mod partial;
mod safe;
mod writer;

use crate::transport::public_temp;
pub use crate::transport::roots::{resolve_in_entries, tag_of_ref_name, RootIndex};
pub use partial::STALE_TRANSFER_AGE;
pub use writer::BlobWriter;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::Value;
use tokio::io::AsyncReadExt;

use crate::error::{Error, IoContext, Result};
use crate::model::descriptor::Descriptor;
use crate::model::digest::Digest;
use crate::model::media;
use crate::model::reference::TagOrDigest;
use crate::transport::layout::blobfile::{BlobFile, IoBlock};
use crate::transport::{unwrap_io_error, BlobOutcome, BlobStream, Destination, Progress, Source, VerifyReader};

const TMP_DIR: &str = ".hoist/tmp";
const SESSION_LOCK: &str = ".hoist/session.lock";
const INDEX_LOCK: &str = ".hoist/index.lock";
const COPY_BUF: usize = 1 << 20;
/// Largest `oci-layout` file read.
const MAX_MARKER_SIZE: u64 = 64 << 10;
/// Largest index.json read: 256 MiB is about a million entries (8,000 tags are 2 MiB).
const MAX_INDEX_SIZE: u64 = 256 << 20;
/// Blocks queued for the blob writer thread.
const WRITE_BLOCKS: usize = 2;
/// Blocks a blob reader thread reads ahead.
const READ_BLOCKS: usize = 2;

/// An OCI image layout on disk.
pub struct Layout {
    root: PathBuf,
    _session: Option<File>,
    index_writes: std::sync::atomic::AtomicU64,
}

impl Layout {
    /// Open an existing layout for reading.
    pub fn open(root: impl AsRef<Path>) -> Result<Layout> {
        let root = root.as_ref().to_path_buf();
        let marker = root.join("oci-layout");
        let text = read_regular(&root, &marker, MAX_MARKER_SIZE)?;
        let v: Value =
            serde_json::from_slice(&text).map_err(|e| Error::malformed("oci-layout", root.display().to_string(), e))?;
        if v.get("imageLayoutVersion").and_then(Value::as_str).is_none() {
            return Err(Error::malformed("oci-layout", root.display().to_string(), "missing imageLayoutVersion"));
        }
        safe::dir_exists(&root, "blobs")?;
        Ok(Layout { root, _session: None, index_writes: Default::default() })
    }

    /// Open an existing layout to maintain it (`gc`, `fsck`): it must be a real OCI layout,
    /// an `oci-layout` file and a valid `index.json` (schemaVersion 2, a `manifests` array of
    /// descriptors). Creates nothing and takes no lock; `gc` locks for itself.
    pub fn open_for_gc(root: impl AsRef<Path>) -> Result<Layout> {
        let layout = Layout::open(root)?;
        layout.strict_index()?;
        Ok(layout)
    }

    /// index.json parsed strictly: a missing, unreadable or damaged one is an error naming it.
    fn strict_index(&self) -> Result<RootIndex> {
        let path = self.root.join("index.json");
        let raw = read_regular(&self.root, &path, MAX_INDEX_SIZE)
            .map_err(|e| Error::malformed("OCI layout", self.loc(), format!("{}: {e}", path.display())))?;
        RootIndex::parse_strict(&raw, &path.display().to_string())
    }

    /// Open a layout for writing, creating it when missing, and take the shared session lock.
    pub fn create(root: impl AsRef<Path>) -> Result<Layout> {
        let root = root.as_ref().to_path_buf();
        fs::create_dir_all(&root).at(&root)?;
        safe::ensure_dir(&root, "blobs/sha256")?;
        safe::ensure_dir(&root, TMP_DIR)?;
        let session = lock_file(&root, SESSION_LOCK, false)?;
        // index.json before the `oci-layout` marker: a writer killed in between leaves a
        // directory that is not (yet) a layout, never a layout without an index.
        let index = root.join("index.json");
        if !index.exists() {
            let _g = lock_file(&root, INDEX_LOCK, true)?;
            if !index.exists() {
                write_atomic(&root, &index, empty_index().as_bytes())?;
            }
        }
        let marker = root.join("oci-layout");
        if !marker.exists() {
            write_atomic(
                &root,
                &marker,
                format!("{{\"imageLayoutVersion\":\"{}\"}}", media::OCI_LAYOUT_VERSION).as_bytes(),
            )?;
        }
        Ok(Layout { root, _session: Some(session), index_writes: Default::default() })
    }

    /// The layout's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob `digest` lives: `blobs/<alg>/<hex>`.
    pub fn blob_path_of(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs").join(digest.algorithm().as_str()).join(digest.hex())
    }

    /// Open a blob as a regular file of this layout: not through a symlinked `blobs/` or
    /// `blobs/<alg>/`, never a FIFO, device or a symlink leading out of the layout.
    fn open_blob_file(&self, digest: &Digest) -> Result<File> {
        safe::dir_exists(&self.root, &format!("blobs/{}", digest.algorithm().as_str()))?;
        safe::open_regular(&self.root, &self.blob_path_of(digest))
    }

    /// A blob's bytes, at most `limit` of them.
    fn read_blob(&self, digest: &Digest, limit: u64) -> Result<Vec<u8>> {
        read_limited_from(self.open_blob_file(digest)?, &self.blob_path_of(digest), limit)
    }

    fn loc(&self) -> String {
        format!("oci:{}", self.root.display())
    }

    /// The root index (index.json), as read now.
    pub fn root_index(&self) -> Result<RootIndex> {
        let path = self.root.join("index.json");
        let raw = read_regular(&self.root, &path, MAX_INDEX_SIZE)?;
        RootIndex::parse(&raw, &self.loc())
    }

    /// The raw index.json entries, in file order.
    pub fn index_entries(&self) -> Result<Vec<Descriptor>> {
        Ok(self.root_index()?.entries())
    }

    /// Update index.json under the exclusive index lock: `f` edits the root index, which is
    /// then written back once (temp file, fsync, rename).
    pub fn update_index<T>(&self, f: impl FnOnce(&mut RootIndex) -> Result<T>) -> Result<T> {
        let _g = lock_file(&self.root, INDEX_LOCK, true)?;
        let mut index = self.root_index()?;
        let out = f(&mut index)?;
        write_atomic(&self.root, &self.root.join("index.json"), &index.to_bytes()?)?;
        self.index_writes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(out)
    }

    /// How many times this handle rewrote index.json (for tests that check work stays linear).
    #[doc(hidden)]
    pub fn index_writes(&self) -> u64 {
        self.index_writes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Point `tag` at `desc` (replacing any entry with that tag). The entry's `ref.name` is
    /// `tag` whatever `ref.name` `desc` carried (the tag it had in its source).
    pub fn set_tag(&self, desc: &Descriptor, tag: &str) -> Result<()> {
        self.set_tags(desc, &[tag])
    }

    /// Point each of `tags` at `desc` with one rewrite of index.json.
    pub fn set_tags(&self, desc: &Descriptor, tags: &[impl AsRef<str>]) -> Result<()> {
        if tags.is_empty() {
            return Ok(());
        }
        self.update_index(|index| tags.iter().try_for_each(|t| index.set_tag(desc, t.as_ref())))
    }

    /// Add an untagged root entry unless the digest is already a root.
    pub fn add_untagged(&self, desc: &Descriptor) -> Result<()> {
        if self.root_index()?.contains_digest(&desc.digest) {
            return Ok(());
        }
        self.update_index(|index| index.add_untagged(desc)).map(drop)
    }

    /// Remove the entry tagged `tag`.
    pub fn untag(&self, tag: &str) -> Result<bool> {
        self.update_index(|index| Ok(index.untag(tag)))
    }

    /// Start writing a blob: a temp file in the layout's temp dir that becomes
    /// `blobs/<alg>/<hex>` only in [`BlobWriter::commit`].
    pub fn begin_blob(&self) -> Result<BlobWriter> {
        BlobWriter::new(self)
    }

    /// Store in-memory bytes as a blob (verified, atomic).
    pub fn write_blob_bytes(&self, desc: &Descriptor, bytes: &[u8]) -> Result<()> {
        if blob_ok(&self.blob_path_of(&desc.digest), desc.size) {
            return Ok(());
        }
        let mut w = self.begin_blob()?;
        w.write_bytes(bytes, desc.digest.algorithm())?;
        w.commit(&desc.digest, desc.size)?;
        Ok(())
    }

    /// Store a stream as a blob: hashed while written to a temp file, renamed only when
    /// size and digest match.
    pub async fn write_blob_stream(
        &self,
        desc: &Descriptor,
        stream: BlobStream,
        progress: &dyn Progress,
    ) -> Result<()> {
        if blob_ok(&self.blob_path_of(&desc.digest), desc.size) {
            return Ok(());
        }
        let mut w = self.begin_blob()?;
        w.write_stream(desc, stream, self.loc(), progress).await?;
        w.commit(&desc.digest, desc.size)?;
        Ok(())
    }

    /// Resolve a tag (`ref.name`), a digest, or the only root when `reference` is None.
    pub fn resolve_sync(&self, reference: Option<&TagOrDigest>) -> Result<Descriptor> {
        self.root_index()?.resolve(reference, &self.loc(), |digest| {
            match self.read_blob(digest, media::MAX_MANIFEST_SIZE) {
                Ok(b) => Ok(Some(Bytes::from(b))),
                Err(e) if safe::is_not_found(&e) => Ok(None),
                Err(e) => Err(e),
            }
        })
    }

    /// Every digest reachable from index.json, with the descriptor that names it.
    pub async fn reachable(&self) -> Result<(BTreeMap<Digest, Descriptor>, Vec<String>)> {
        let mut seen: BTreeMap<Digest, Descriptor> = BTreeMap::new();
        let mut problems = Vec::new();
        let mut stack = self.index_entries()?;
        while let Some(d) = stack.pop() {
            if seen.contains_key(&d.digest) {
                continue;
            }
            seen.insert(d.digest.clone(), d.clone());
            if media::is_document(&d.media_type) {
                match self.fetch_document(&d).await {
                    Ok(doc) => stack.extend(doc.children()),
                    Err(e) => problems.push(e.to_string()),
                }
            }
        }
        Ok((seen, problems))
    }

    /// Check every reference and every blob; returns the problems found.
    pub async fn fsck(&self) -> Result<Vec<String>> {
        self.strict_index()?;
        let (reachable, mut problems) = self.reachable().await?;
        for (digest, desc) in &reachable {
            let path = self.blob_path_of(digest);
            match self.open_blob_file(digest).and_then(|f| f.metadata().at(&path)) {
                Err(e) if safe::is_not_found(&e) => {
                    problems.push(format!("missing blob {digest} ({})", desc.media_type))
                }
                Err(e) => problems.push(e.to_string()),
                Ok(m) if m.len() != desc.size => {
                    problems.push(format!("blob {digest}: size {} != descriptor {}", m.len(), desc.size))
                }
                Ok(_) => {}
            }
        }
        for (digest, path) in self.all_blobs()? {
            let root = self.root.clone();
            let d2 = digest.clone();
            let actual = tokio::task::spawn_blocking(move || {
                let f = safe::open_regular(&root, &path)?;
                hash_reader(f, &path, d2.algorithm())
            })
            .await
            .map_err(|e| Error::task("blob check", e))?;
            match actual {
                Ok(a) if a != digest => {
                    problems.push(format!("blob {digest} in oci:{}: content hashes to {a}", self.root.display()))
                }
                Ok(_) => {}
                Err(e) => problems.push(e.to_string()),
            }
        }
        Ok(problems)
    }

    /// Every blob file present, with its digest (files with invalid names are skipped).
    pub fn all_blobs(&self) -> Result<Vec<(Digest, PathBuf)>> {
        let mut out = Vec::new();
        if !safe::dir_exists(&self.root, "blobs")? {
            return Ok(out);
        }
        let blobs = self.root.join("blobs");
        let algs = fs::read_dir(&blobs).at(&blobs)?;
        for alg in algs.flatten() {
            let alg_name = alg.file_name().to_string_lossy().to_string();
            // A symlinked `blobs/<alg>` would make gc delete another directory's files.
            if !safe::dir_exists(&self.root, &format!("blobs/{alg_name}"))? {
                continue;
            }
            let files = fs::read_dir(alg.path()).at(alg.path())?;
            for f in files.flatten() {
                let name = f.file_name().to_string_lossy().to_string();
                if let Ok(d) = format!("{alg_name}:{name}").parse::<Digest>() {
                    out.push((d, f.path()));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Remove unreferenced blobs, stale temp files, and partial downloads and push sessions
    /// untouched for [`STALE_TRANSFER_AGE`]. Waits for running writers.
    pub async fn gc(&self, dry_run: bool) -> Result<GcReport> {
        self.strict_index()?;
        // A dry run writes nothing, not even the lock file: it locks only one that exists.
        let _lock = if dry_run {
            if safe::dir_exists(&self.root, ".hoist")? {
                let path = self.root.join(SESSION_LOCK);
                let f = safe::open_lock(&self.root, &path, false)?;
                if let Some(f) = &f {
                    f.lock_shared().at(&path)?;
                }
                f
            } else {
                None
            }
        } else {
            Some(lock_file(&self.root, SESSION_LOCK, true)?)
        };
        let has_tmp = safe::dir_exists(&self.root, TMP_DIR)?;
        let (reachable, problems) = self.reachable().await?;
        if !problems.is_empty() {
            return Err(Error::refused(self.loc(), format!("refusing gc: {}", problems.join("; "))));
        }
        let mut report = GcReport::default();
        let keep: BTreeSet<&Digest> = reachable.keys().collect();
        for (digest, path) in self.all_blobs()? {
            if !keep.contains(&digest) {
                report.bytes += fs::symlink_metadata(&path).map(|m| m.len()).unwrap_or(0);
                report.removed.push(digest);
                if !dry_run {
                    fs::remove_file(&path).at(&path)?;
                }
            }
        }
        let rd = if has_tmp { fs::read_dir(self.root.join(TMP_DIR)).ok() } else { None };
        if let Some(rd) = rd {
            for f in rd.flatten() {
                report.temp_files += 1;
                report.temp_bytes += f.metadata().map(|m| m.len()).unwrap_or(0);
                if !dry_run {
                    let _ = fs::remove_file(f.path());
                }
            }
        }
        let stale = partial::gc_stale(&self.root, partial::STALE_TRANSFER_AGE, dry_run)?;
        report.partial_files = stale.partial_files;
        report.partial_bytes = stale.partial_bytes;
        report.upload_sessions = stale.upload_sessions;
        Ok(report)
    }
}

/// What `gc` removed (or, in a dry run, would remove).
#[derive(Debug, Default)]
pub struct GcReport {
    /// Unreferenced blobs.
    pub removed: Vec<Digest>,
    /// Their total size.
    pub bytes: u64,
    /// Stale temp files in `.hoist/tmp`.
    pub temp_files: usize,
    /// Their total size.
    pub temp_bytes: u64,
    /// Files of partial downloads (`.hoist/partial`) untouched for the layout's stale
    /// transfer age ([`STALE_TRANSFER_AGE`], a week) and not in use by a running download.
    pub partial_files: usize,
    /// Their total size.
    pub partial_bytes: u64,
    /// Push sessions (`.hoist/uploads`) untouched for that long.
    pub upload_sessions: usize,
}

fn empty_index() -> String {
    format!("{{\"schemaVersion\":2,\"mediaType\":\"{}\",\"manifests\":[]}}", media::OCI_INDEX)
}

/// Write `stream` into `file` while checking it against `desc` (size and digest), then fsync.
/// The caller renames the file into place only on success; errors name `path`.
///
/// Whole 1 MiB `IoBlock`s go to one blocking thread writing with std::fs (through `BlobFile`:
/// straight from the block for large blobs); blocks come back for reuse. tokio's File would hand every
/// network-sized chunk to the blocking pool (a thread wake-up and a copy each) and allocate
/// fresh buffers.
pub(crate) async fn write_verified(
    file: File,
    path: &Path,
    desc: &Descriptor,
    stream: BlobStream,
    location: String,
    progress: &dyn Progress,
) -> Result<()> {
    let size = desc.size;
    let what = format!("blob {} from {location}", desc.digest);
    let mut reader = VerifyReader::new(stream, desc, location);
    let (full_tx, mut full_rx) = tokio::sync::mpsc::channel::<IoBlock>(WRITE_BLOCKS);
    let (empty_tx, mut empty_rx) = tokio::sync::mpsc::channel::<IoBlock>(WRITE_BLOCKS + 1);
    let writer = tokio::task::spawn_blocking(move || -> std::io::Result<File> {
        let mut file = BlobFile::for_size(file, size);
        while let Some(block) = full_rx.blocking_recv() {
            file.write_block(&block)?;
            let _ = empty_tx.try_send(block);
        }
        file.finish()
    });
    let mut allocated = 0;
    let read_result: Result<()> = async {
        loop {
            let mut block = match empty_rx.try_recv() {
                Ok(b) => b,
                Err(_) if allocated <= WRITE_BLOCKS => {
                    allocated += 1;
                    IoBlock::new()
                }
                Err(_) => match empty_rx.recv().await {
                    Some(b) => b,
                    None => return Ok(()), // writer failed; its error is reported below
                },
            };
            block.clear();
            let mut eof = false;
            while !block.is_full() {
                let n = reader.read(block.spare_mut()).await.map_err(|e| unwrap_io_error(e, what.as_str()))?;
                if n == 0 {
                    eof = true;
                    break;
                }
                block.advance(n);
                progress.advance(desc, n as u64);
            }
            if !block.filled().is_empty() && full_tx.send(block).await.is_err() {
                return Ok(()); // writer failed
            }
            if eof {
                return Ok(());
            }
        }
    }
    .await;
    drop(full_tx);
    let file = writer.await.map_err(|e| Error::task("blob writer", e))?.at(path);
    read_result?;
    let file = file?;
    tokio::task::spawn_blocking(move || file.sync_all()).await.map_err(|e| Error::task("blob writer", e))?.at(path)
}

/// A file as a stream read in COPY_BUF blocks by one blocking thread with std::fs, a few
/// blocks ahead of the consumer (tokio's File would copy every read once more and wake a
/// blocking-pool thread per read).
fn read_blocks_blocking(mut f: File) -> BlobStream {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(READ_BLOCKS);
    tokio::task::spawn_blocking(move || loop {
        // read_to_end fills the spare capacity: no zeroing of each new block.
        let mut buf = Vec::with_capacity(COPY_BUF);
        match (&mut f).take(COPY_BUF as u64).read_to_end(&mut buf) {
            Ok(0) => return,
            Ok(_) => {
                if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                    return;
                }
            }
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
    Box::pin(tokio_util::io::StreamReader::new(stream))
}

/// A regular file (not a symlink) of `size` bytes is at `path`.
pub(crate) fn blob_ok(path: &Path, size: u64) -> bool {
    fs::symlink_metadata(path).map(|m| m.is_file() && m.len() == size).unwrap_or(false)
}

/// Lock `root/rel` (created when missing, never through a symlink).
fn lock_file(root: &Path, rel: &str, exclusive: bool) -> Result<File> {
    if let Some((dir, _)) = rel.rsplit_once('/') {
        safe::ensure_dir(root, dir)?;
    }
    let path = root.join(rel);
    let f =
        safe::open_lock(root, &path, true)?.ok_or_else(|| Error::not_found("lock file", path.display().to_string()))?;
    if exclusive { f.lock() } else { f.lock_shared() }.at(&path)?;
    Ok(f)
}

/// Read a file of the layout `root` as a regular file (see `safe::open_regular`), refusing
/// anything larger than `limit`.
fn read_regular(root: &Path, path: &Path, limit: u64) -> Result<Vec<u8>> {
    read_limited_from(safe::open_regular(root, path)?, path, limit)
}

fn read_limited_from(f: File, path: &Path, limit: u64) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    f.take(limit + 1).read_to_end(&mut out).at(path)?;
    if out.len() as u64 > limit {
        return Err(Error::malformed(
            path.display().to_string(),
            path.display().to_string(),
            format!("larger than {limit} bytes"),
        ));
    }
    Ok(out)
}

/// Read a file refusing anything larger than `limit`.
pub fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>> {
    read_limited_from(File::open(path).at(path)?, path, limit)
}

/// Hash a file with `alg` (blocking).
pub fn hash_file(path: &Path, alg: crate::model::digest::Algorithm) -> Result<Digest> {
    hash_reader(File::open(path).at(path)?, path, alg)
}

fn hash_reader(mut f: File, path: &Path, alg: crate::model::digest::Algorithm) -> Result<Digest> {
    let mut h = alg.hasher();
    let mut buf = vec![0u8; COPY_BUF];
    loop {
        let n = f.read(&mut buf).at(path)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finish())
}

/// Write `bytes` to `path` atomically: temp file in the layout's temp dir, fsync, rename, fsync dir.
pub fn write_atomic(root: &Path, path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp_dir = safe::ensure_dir(root, TMP_DIR)?;
    let mut tmp = public_temp("w-").tempfile_in(&tmp_dir).at(&tmp_dir)?;
    tmp.write_all(bytes).at(tmp.path())?;
    tmp.as_file().sync_all().at(tmp.path())?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    if let Some(parent) = path.parent() {
        sync_dir(parent);
    }
    Ok(())
}

pub(crate) fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

#[async_trait]
impl Source for Layout {
    fn location(&self) -> String {
        self.loc()
    }

    async fn resolve(&self, reference: Option<&TagOrDigest>) -> Result<Descriptor> {
        self.resolve_sync(reference)
    }

    async fn fetch_manifest_bytes(&self, desc: &Descriptor) -> Result<Bytes> {
        if desc.size > media::MAX_MANIFEST_SIZE {
            return Err(Error::malformed(
                format!("manifest {}", desc.digest),
                self.loc(),
                format!("descriptor size {} exceeds the manifest limit", desc.size),
            ));
        }
        match self.read_blob(&desc.digest, media::MAX_MANIFEST_SIZE) {
            Ok(b) => Ok(Bytes::from(b)),
            Err(e) if safe::is_not_found(&e) => Err(Error::not_found(format!("manifest {}", desc.digest), self.loc())),
            Err(e) => Err(e),
        }
    }

    async fn open_blob(&self, desc: &Descriptor, offset: u64) -> Result<BlobStream> {
        let path = self.blob_path_of(&desc.digest);
        let mut f = match self.open_blob_file(&desc.digest) {
            Ok(f) => f,
            Err(e) if safe::is_not_found(&e) => {
                return Err(Error::not_found(format!("blob {}", desc.digest), self.loc()))
            }
            Err(e) => return Err(e),
        };
        if offset > 0 {
            f.seek(std::io::SeekFrom::Start(offset)).at(&path)?;
        }
        Ok(read_blocks_blocking(f))
    }

    fn blob_path(&self, desc: &Descriptor) -> Option<PathBuf> {
        Some(self.blob_path_of(&desc.digest))
    }

    fn state_dir(&self) -> Option<PathBuf> {
        Some(self.root.join(".hoist"))
    }

    async fn roots(&self) -> Result<Vec<(Descriptor, Option<String>)>> {
        Ok(self.root_index()?.roots())
    }
}

#[async_trait]
impl Destination for Layout {
    fn location(&self) -> String {
        self.loc()
    }

    async fn has_blob(&self, desc: &Descriptor) -> Result<bool> {
        Ok(blob_ok(&self.blob_path_of(&desc.digest), desc.size))
    }

    async fn has_manifest(&self, desc: &Descriptor) -> Result<bool> {
        Ok(blob_ok(&self.blob_path_of(&desc.digest), desc.size))
    }

    async fn push_blob(&self, desc: &Descriptor, src: &dyn Source, progress: &dyn Progress) -> Result<BlobOutcome> {
        if blob_ok(&self.blob_path_of(&desc.digest), desc.size) {
            return Ok(BlobOutcome::Existed);
        }
        let lanes = src.range_lanes(desc);
        let opened = if lanes > 1 && desc.size > partial::CHUNK {
            match partial::download_lanes(self, desc, src, lanes, progress).await? {
                partial::LanesOutcome::Done => return Ok(BlobOutcome::Uploaded),
                partial::LanesOutcome::OneStream(s) => {
                    progress.reset(desc, 0);
                    s
                }
            }
        } else {
            None
        };
        let stream = match opened {
            Some(s) => s,
            None => src.open_blob(desc, 0).await?,
        };
        self.write_blob_stream(desc, stream, progress).await?;
        Ok(BlobOutcome::Uploaded)
    }

    async fn push_manifest(&self, desc: &Descriptor, bytes: Bytes, tag: Option<&str>) -> Result<()> {
        self.write_blob_bytes(desc, &bytes)?;
        if let Some(t) = tag {
            self.set_tag(desc, t)?;
        }
        Ok(())
    }

    async fn push_tags(&self, desc: &Descriptor, bytes: Bytes, tags: &[String]) -> Result<()> {
        if tags.is_empty() {
            return Ok(());
        }
        self.write_blob_bytes(desc, &bytes)?;
        self.set_tags(desc, tags)
    }

    async fn add_root(&self, desc: &Descriptor) -> Result<()> {
        let mut d = desc.clone();
        d.annotations.remove(media::ANNOTATION_REF_NAME);
        self.add_untagged(&d)
    }

    async fn tag_roots(&self, roots: &[(Descriptor, Bytes, Vec<String>)]) -> Result<()> {
        if roots.is_empty() {
            return Ok(());
        }
        for (desc, bytes, tags) in roots {
            if !tags.is_empty() {
                self.write_blob_bytes(desc, bytes)?;
            }
        }
        self.update_index(|index| {
            for (desc, _, tags) in roots {
                if tags.is_empty() {
                    let mut d = desc.clone();
                    d.annotations.remove(media::ANNOTATION_REF_NAME);
                    if !index.contains_digest(&d.digest) {
                        index.add_untagged(&d)?;
                    }
                }
                for t in tags {
                    index.set_tag(desc, t)?;
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tags_replace_and_resolve_buildkit_names() {
        let t = tempfile::tempdir().unwrap();
        let l = Layout::create(t.path()).unwrap();
        let a = Descriptor::of_bytes(media::OCI_MANIFEST, b"a");
        let b = Descriptor::of_bytes(media::OCI_MANIFEST, b"b");
        l.set_tag(&a, "docker.io/library/app:v1").unwrap();
        l.set_tag(&b, "v2").unwrap();
        assert_eq!(l.resolve_sync(Some(&"v1".into())).unwrap().digest, a.digest);
        l.set_tag(&a, "v2").unwrap();
        assert_eq!(l.resolve_sync(Some(&"v2".into())).unwrap().digest, a.digest);
        assert_eq!(l.index_entries().unwrap().len(), 2);
        l.add_untagged(&a).unwrap();
        assert_eq!(l.index_entries().unwrap().len(), 2, "untagged root not duplicated");
        assert!(l.resolve_sync(None).is_err(), "two roots: must name one");
    }

    #[tokio::test]
    async fn push_manifest_tags_replace_the_source_ref_name() {
        let t = tempfile::tempdir().unwrap();
        let l = Layout::create(t.path()).unwrap();
        let bytes = Bytes::from_static(b"{}");
        let from_source = Descriptor::of_bytes(media::OCI_MANIFEST, &bytes)
            .with_annotation(media::ANNOTATION_REF_NAME, "docker.io/library/alpine:3.20");
        l.push_manifest(&from_source, bytes, Some("v1")).await.unwrap();
        let tags: Vec<_> = l.index_entries().unwrap().iter().map(|e| e.ref_name().map(str::to_owned)).collect();
        assert_eq!(tags, [Some("v1".to_owned())]);
    }
}
