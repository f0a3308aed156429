//! Parallel ranged downloads into a layout, kept across restarts.
//!
//! A large blob from a source that reads ranges ([`Source::range_lanes`] > 1) is fetched in
//! fixed-size chunks of [`CHUNK`] bytes by several lanes at once, each lane one request (one
//! connection) at a time, every chunk written at its offset (`pwrite`) into
//! `.hoist/partial/<alg>-<hex>.part`. Beside it, `<alg>-<hex>.state` (JSON, rewritten by
//! rename at most every [`STATE_FLUSH`] and at the end) says how many bytes from each chunk's
//! start are written. A run that is killed leaves both; the next run continues every chunk
//! where its bytes end and fetches only the rest.
//!
//! Nothing is trusted before the whole blob is hashed: one hasher follows the contiguous
//! prefix of written bytes, reading them back from the file (from the page cache while the
//! download runs; after a restart the prefix is hashed again, no hash state is kept), and
//! only a file that hashes to the digest is renamed into `blobs/`. A mismatch removes the
//! partial files. The state file only ever names bytes that were written before it was, so
//! after a kill -9 it never claims more than the file holds (after a power loss it may; the
//! digest check then fails and the next run starts over).
//!
//! A second process pulling the same blob into the same layout finds the partial file locked
//! and downloads into a temp file of its own. `gc` removes partial downloads (and the push
//! sessions of `.hoist/uploads`) untouched for [`STALE_TRANSFER_AGE`], never one a running
//! download holds locked: see [`gc_stale`].

use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

use crate::error::{Error, IoContext, Result};
use crate::model::descriptor::Descriptor;
use crate::model::digest::Hasher;
use crate::transport::layout::{blob_ok, safe, sync_dir, write_atomic, Layout};
use crate::transport::{unwrap_io_error, BlobStream, Progress, RangeRead, Source};

/// Where partial blobs live, below the layout root.
pub(crate) const PARTIAL_DIR: &str = ".hoist/partial";
/// Where push sessions are kept between runs (the registry's upload `SessionFile`s, under the
/// source's `state_dir`), below the layout root.
pub(crate) const UPLOADS_DIR: &str = ".hoist/uploads";
/// Partial downloads and push sessions untouched for this long are stale and `gc` removes
/// them: a week, as distribution purges its own upload sessions after 168 h by default (a
/// session older than that is gone at the registry anyway). A running transfer rewrites its
/// state at least every few seconds.
pub const STALE_TRANSFER_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Bytes per chunk (one ranged request). At 50 ms RTT a lane spends one RTT between two
/// chunks; 8 MiB keeps that under a fifth of a 40 MiB/s lane's time.
pub(crate) const CHUNK: u64 = 8 << 20;
/// How often the state file is rewritten while chunks are in progress.
const STATE_FLUSH: Duration = Duration::from_millis(200);
/// A state file larger than this is not ours (a 100 GiB blob needs ~200 KiB).
const MAX_STATE_SIZE: u64 = 16 << 20;
/// Bytes read from a lane's stream before they are written.
const LANE_BUF: usize = 256 << 10;
/// Bytes the hasher reads back at a time.
const HASH_BUF: usize = 1 << 20;

/// What [`download_lanes`] did.
pub(crate) enum LanesOutcome {
    /// The blob is in `blobs/`, verified.
    Done,
    /// The source does not serve ranges for this blob: read it as one stream (`Some`: the
    /// stream the source already opened, from byte 0).
    OneStream(Option<BlobStream>),
}

/// The state file: which bytes of which chunks are written.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct State {
    digest: String,
    size: u64,
    chunk: u64,
    /// chunk index -> bytes written from the chunk's start (absent: none)
    written: BTreeMap<u64, u64>,
}

impl State {
    fn fresh(desc: &Descriptor) -> State {
        State { digest: desc.digest.to_string(), size: desc.size, chunk: CHUNK, written: BTreeMap::new() }
    }
    fn chunks(&self) -> u64 {
        self.size.div_ceil(self.chunk)
    }
    fn chunk_len(&self, i: u64) -> u64 {
        self.chunk.min(self.size - i * self.chunk)
    }
    fn done_bytes(&self) -> u64 {
        self.written.values().sum()
    }
    /// End of the contiguous prefix of written bytes.
    fn frontier(&self) -> u64 {
        for i in 0..self.chunks() {
            let w = self.written.get(&i).copied().unwrap_or(0);
            if w < self.chunk_len(i) {
                return i * self.chunk + w;
            }
        }
        self.size
    }
    fn consistent(&self, desc: &Descriptor) -> bool {
        self.digest == desc.digest.to_string()
            && self.size == desc.size
            && self.chunk == CHUNK
            && self.written.iter().all(|(&i, &w)| i < self.chunks() && w <= self.chunk_len(i))
    }
}

/// Paths of one blob's partial files.
struct Paths {
    data: PathBuf,
    state: PathBuf,
}

fn paths(layout: &Layout, desc: &Descriptor) -> Result<Paths> {
    let dir = safe::ensure_dir(layout.root(), PARTIAL_DIR)?;
    let name = format!("{}-{}", desc.digest.algorithm().as_str(), desc.digest.hex());
    Ok(Paths { data: dir.join(format!("{name}.part")), state: dir.join(format!("{name}.state")) })
}

/// Remove the partial files of `desc` (after a finished or failed-verification download, or
/// when it was downloaded some other way).
pub(crate) fn discard(layout: &Layout, desc: &Descriptor) {
    if let Ok(p) = paths(layout, desc) {
        let _ = std::fs::remove_file(&p.state);
        let _ = std::fs::remove_file(&p.data);
    }
}

/// What [`gc_stale`] removed (or, in a dry run, would remove).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct StaleTransfers {
    /// Files of partial downloads (`.part` and `.state`).
    pub partial_files: usize,
    /// Their size.
    pub partial_bytes: u64,
    /// Push sessions (`.hoist/uploads/*.json`, and temp files beside them).
    pub upload_sessions: usize,
}

/// How long ago `m` was modified (0 when in the future or unknown).
fn age(m: &std::fs::Metadata) -> Duration {
    m.modified().ok().and_then(|t| t.elapsed().ok()).unwrap_or(Duration::ZERO)
}

/// Remove partial downloads and push sessions below `root` untouched for `max_age`. A partial
/// download whose `.part` a running download holds locked is kept whatever its age; only
/// regular files are looked at (a symlinked directory is not followed).
pub(crate) fn gc_stale(root: &Path, max_age: Duration, dry_run: bool) -> Result<StaleTransfers> {
    let mut report = StaleTransfers::default();
    if safe::dir_exists(root, PARTIAL_DIR)? {
        let dir = root.join(PARTIAL_DIR);
        // one entry per blob: `<alg>-<hex>` -> its files
        let mut blobs: BTreeMap<String, Vec<(PathBuf, std::fs::Metadata)>> = BTreeMap::new();
        for e in std::fs::read_dir(&dir).at(&dir)?.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let Some(stem) = name.strip_suffix(".part").or_else(|| name.strip_suffix(".state")) else {
                continue;
            };
            if let Ok(m) = std::fs::symlink_metadata(e.path()) {
                if m.is_file() {
                    blobs.entry(stem.to_string()).or_default().push((e.path(), m));
                }
            }
        }
        for (stem, files) in blobs {
            if files.iter().any(|(_, m)| age(m) < max_age) {
                continue;
            }
            let data = dir.join(format!("{stem}.part"));
            if let Ok(f) = OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(&data) {
                if f.try_lock().is_err() {
                    tracing::debug!(path = %data.display(), "partial download in use; kept");
                    continue;
                }
            }
            for (path, m) in files {
                report.partial_files += 1;
                report.partial_bytes += m.len();
                if !dry_run {
                    std::fs::remove_file(&path).at(&path)?;
                }
            }
        }
    }
    if safe::dir_exists(root, UPLOADS_DIR)? {
        let dir = root.join(UPLOADS_DIR);
        for e in std::fs::read_dir(&dir).at(&dir)?.flatten() {
            let Ok(m) = std::fs::symlink_metadata(e.path()) else { continue };
            if m.is_file() && age(&m) >= max_age {
                report.upload_sessions += 1;
                if !dry_run {
                    std::fs::remove_file(e.path()).at(e.path())?;
                }
            }
        }
    }
    Ok(report)
}

fn load_state(path: &Path, desc: &Descriptor, file_len: u64) -> Option<State> {
    let f = File::open(path).ok()?;
    let bytes = super::read_limited_from(f, path, MAX_STATE_SIZE).ok()?;
    let s: State = serde_json::from_slice(&bytes).ok()?;
    (s.consistent(desc) && file_len == desc.size).then_some(s)
}

fn save_state(layout: &Layout, path: &Path, state: &State) -> Result<()> {
    let bytes = serde_json::to_vec(state).map_err(|e| Error::serialize("partial state", e))?;
    write_atomic(layout.root(), path, &bytes)
}

/// Download `desc` from `src` in `lanes` parallel ranged reads into the layout, continuing a
/// partial download a killed run left. See the module doc.
pub(crate) async fn download_lanes(
    layout: &Layout,
    desc: &Descriptor,
    src: &dyn Source,
    lanes: usize,
    progress: &dyn Progress,
) -> Result<LanesOutcome> {
    let p = paths(layout, desc)?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&p.data)
        .at(&p.data)?;
    if file.try_lock().is_err() {
        // another process is downloading this blob here: do not share its file
        tracing::info!(digest = %desc.digest, "partial download locked by another process; one stream");
        return Ok(LanesOutcome::OneStream(None));
    }
    let len = file.metadata().at(&p.data)?.len();
    let state = match load_state(&p.state, desc, len) {
        Some(s) => {
            tracing::info!(digest = %desc.digest, done = s.done_bytes(), size = desc.size, "resuming partial download");
            s
        }
        None => {
            file.set_len(0).at(&p.data)?;
            file.set_len(desc.size).at(&p.data)?;
            State::fresh(desc)
        }
    };
    progress.reset(desc, state.done_bytes());
    let mut queue: VecDeque<u64> =
        (0..state.chunks()).filter(|&i| state.written.get(&i).copied().unwrap_or(0) < state.chunk_len(i)).collect();

    // The first open decides whether the source serves ranges at all.
    let first = match queue.pop_front() {
        None => None,
        Some(i) => {
            let (off, left) = remaining(&state, i);
            match src.open_blob_range(desc, off, left).await? {
                RangeRead::Part(stream) => Some((i, stream)),
                RangeRead::Whole(stream) => {
                    discard(layout, desc);
                    return Ok(LanesOutcome::OneStream(Some(stream)));
                }
                RangeRead::Unsupported => {
                    discard(layout, desc);
                    return Ok(LanesOutcome::OneStream(None));
                }
            }
        }
    };

    let file = Arc::new(file);
    let shared = Shared {
        state: Mutex::new(state),
        queue: Mutex::new(queue),
        wake_hasher: tokio::sync::Notify::new(),
        lanes_done: AtomicBool::new(false),
        no_ranges: AtomicBool::new(false),
    };
    let first = Mutex::new(first);
    let lane_futs = (0..lanes.max(1)).map(|_| lane(&shared, &first, &file, &p.data, desc, src, progress));
    let all_lanes = async {
        let r = futures::future::try_join_all(lane_futs).await;
        shared.lanes_done.store(true, Ordering::SeqCst);
        shared.wake_hasher.notify_one();
        r
    };
    let result = tokio::try_join!(all_lanes, hasher(&shared, &file, &p.data, desc), flusher(layout, &shared, &p.state));
    // Whatever happened, the next run continues from what is written.
    let final_state = lock(&shared.state).clone();
    let hash = match result {
        Ok((_, hash, ())) => hash,
        Err(e) => {
            let _ = save_state(layout, &p.state, &final_state);
            if shared.no_ranges.load(Ordering::SeqCst) {
                discard(layout, desc);
                return Ok(LanesOutcome::OneStream(None));
            }
            return Err(e);
        }
    };
    let digest = hash.finish();
    if digest != desc.digest {
        discard(layout, desc);
        return Err(Error::DigestMismatch {
            what: "blob".into(),
            location: src.location(),
            expected: format!("{} ({} bytes)", desc.digest, desc.size),
            actual: format!("{digest} (downloaded in ranges)"),
        });
    }
    let dir = safe::ensure_dir(layout.root(), &format!("blobs/{}", desc.digest.algorithm().as_str()))?;
    let target = dir.join(desc.digest.hex());
    if !blob_ok(&target, desc.size) {
        let f = file.clone();
        tokio::task::spawn_blocking(move || f.sync_all())
            .await
            .map_err(|e| Error::task("blob writer", e))?
            .at(&p.data)?;
        std::fs::rename(&p.data, &target).at(&target)?;
        sync_dir(&dir);
    }
    discard(layout, desc);
    Ok(LanesOutcome::Done)
}

/// Offset and length of what chunk `i` still lacks.
fn remaining(state: &State, i: u64) -> (u64, u64) {
    let w = state.written.get(&i).copied().unwrap_or(0);
    (i * state.chunk + w, state.chunk_len(i) - w)
}

/// What the lanes, the hasher and the flusher share.
struct Shared {
    state: Mutex<State>,
    queue: Mutex<VecDeque<u64>>,
    wake_hasher: tokio::sync::Notify,
    lanes_done: AtomicBool,
    /// A lane found the source no longer serving ranges.
    no_ranges: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One lane: takes chunks from the queue until it is empty, one ranged read at a time.
async fn lane(
    shared: &Shared,
    first: &Mutex<Option<(u64, BlobStream)>>,
    file: &File,
    path: &Path,
    desc: &Descriptor,
    src: &dyn Source,
    progress: &dyn Progress,
) -> Result<()> {
    let mut buf = vec![0u8; LANE_BUF];
    loop {
        let opened = lock(first).take();
        let (i, mut stream) = match opened {
            Some(x) => x,
            None => {
                let Some(i) = lock(&shared.queue).pop_front() else { return Ok(()) };
                let (off, left) = remaining(&lock(&shared.state), i);
                match src.open_blob_range(desc, off, left).await? {
                    RangeRead::Part(s) => (i, s),
                    RangeRead::Whole(_) | RangeRead::Unsupported => {
                        shared.no_ranges.store(true, Ordering::SeqCst);
                        return Err(Error::refused(src.location(), "stopped serving ranges"));
                    }
                }
            }
        };
        let (mut off, mut left) = remaining(&lock(&shared.state), i);
        let what = format!("blob {} from {}", desc.digest, src.location());
        while left > 0 {
            let want = (buf.len() as u64).min(left) as usize;
            let n = stream.read(&mut buf[..want]).await.map_err(|e| unwrap_io_error(e, &what))?;
            if n == 0 {
                return Err(Error::SizeMismatch {
                    what: format!("blob {} (range at {off})", desc.digest),
                    location: src.location(),
                    expected: left,
                    actual: 0,
                });
            }
            file.write_all_at(&buf[..n], off).at(path)?;
            off += n as u64;
            left -= n as u64;
            *lock(&shared.state).written.entry(i).or_insert(0) += n as u64;
            progress.advance(desc, n as u64);
        }
        shared.wake_hasher.notify_one();
    }
}

/// Hash the contiguous prefix of written bytes as it grows; the hash of the whole blob once
/// the lanes are done.
async fn hasher(shared: &Shared, file: &Arc<File>, path: &Path, desc: &Descriptor) -> Result<Hasher> {
    let mut h = Some(desc.digest.algorithm().hasher());
    let mut hashed = 0u64;
    loop {
        let frontier = lock(&shared.state).frontier();
        if frontier > hashed {
            let (f, mut hh) = (file.clone(), h.take().expect("hasher"));
            let from = hashed;
            hh = tokio::task::spawn_blocking(move || -> io::Result<Hasher> {
                let mut buf = vec![0u8; HASH_BUF];
                let mut at = from;
                while at < frontier {
                    let n = (HASH_BUF as u64).min(frontier - at) as usize;
                    f.read_exact_at(&mut buf[..n], at)?;
                    hh.update(&buf[..n]);
                    at += n as u64;
                }
                Ok(hh)
            })
            .await
            .map_err(|e| Error::task("blob hasher", e))?
            .at(path)?;
            h = Some(hh);
            hashed = frontier;
            continue;
        }
        if hashed >= desc.size {
            return Ok(h.take().expect("hasher"));
        }
        if shared.lanes_done.load(Ordering::SeqCst) {
            // lanes finished but the prefix has a hole: their errors are reported instead
            return Err(Error::refused(
                format!("blob {}", desc.digest),
                format!("ranged download incomplete at {hashed}"),
            ));
        }
        let _ = tokio::time::timeout(STATE_FLUSH, shared.wake_hasher.notified()).await;
    }
}

/// Rewrite the state file every [`STATE_FLUSH`] while it changes, until the lanes are done.
async fn flusher(layout: &Layout, shared: &Shared, path: &Path) -> Result<()> {
    let mut last: Option<State> = None;
    while !shared.lanes_done.load(Ordering::SeqCst) {
        tokio::time::sleep(STATE_FLUSH).await;
        let now = lock(&shared.state).clone();
        if last.as_ref() != Some(&now) {
            save_state(layout, path, &now)?;
            last = Some(now);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frontier_follows_the_contiguous_prefix() {
        let desc =
            Descriptor::new("application/octet-stream", crate::model::digest::Digest::sha256_of(b"x"), 3 * CHUNK + 5);
        let mut s = State::fresh(&desc);
        assert_eq!(s.chunks(), 4);
        assert_eq!(s.frontier(), 0);
        s.written.insert(1, CHUNK);
        assert_eq!(s.frontier(), 0);
        s.written.insert(0, 10);
        assert_eq!(s.frontier(), 10);
        s.written.insert(0, CHUNK);
        s.written.insert(2, 7);
        assert_eq!(s.frontier(), 2 * CHUNK + 7);
        s.written.insert(2, CHUNK);
        s.written.insert(3, 5);
        assert_eq!(s.frontier(), desc.size);
        assert!(s.consistent(&desc));
        s.written.insert(3, 6);
        assert!(!s.consistent(&desc));
        assert_eq!(remaining(&State::fresh(&desc), 3), (3 * CHUNK, 5));
    }

    /// A source serving ranges of `data` (which may not be the blob the descriptor names).
    struct Ranges {
        data: bytes::Bytes,
    }

    #[async_trait::async_trait]
    impl Source for Ranges {
        fn location(&self) -> String {
            "ranges:test".into()
        }
        async fn resolve(&self, _r: Option<&crate::model::reference::TagOrDigest>) -> Result<Descriptor> {
            Err(Error::not_found("any root", "ranges:test"))
        }
        async fn fetch_manifest_bytes(&self, _d: &Descriptor) -> Result<bytes::Bytes> {
            Err(Error::not_found("any manifest", "ranges:test"))
        }
        async fn open_blob(&self, _d: &Descriptor, offset: u64) -> Result<BlobStream> {
            Ok(Box::pin(std::io::Cursor::new(self.data.slice(offset as usize..))))
        }
        fn range_lanes(&self, _d: &Descriptor) -> usize {
            3
        }
        async fn open_blob_range(&self, _d: &Descriptor, offset: u64, len: u64) -> Result<RangeRead> {
            let (a, b) = (offset as usize, (offset + len) as usize);
            Ok(RangeRead::Part(Box::pin(std::io::Cursor::new(self.data.slice(a..b)))))
        }
    }

    #[tokio::test]
    async fn only_a_verified_blob_becomes_visible() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::create(dir.path()).unwrap();
        let data: Vec<u8> = (0..(2 * CHUNK + 777) as usize).map(|i| (i * 31 + i / 977) as u8).collect();
        let desc = Descriptor::of_bytes("application/octet-stream", &data);
        let mut wrong = data.clone();
        wrong[CHUNK as usize + 5] ^= 1;
        let bad = Ranges { data: wrong.into() };
        let err = download_lanes(&layout, &desc, &bad, 3, &crate::transport::NoProgress).await.err().expect("mismatch");
        assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
        assert!(!layout.blob_path_of(&desc.digest).exists(), "an unverified blob is visible");
        let p = paths(&layout, &desc).unwrap();
        assert!(!p.data.exists() && !p.state.exists(), "a partial that failed verification is kept");
        let good = Ranges { data: data.clone().into() };
        let done = download_lanes(&layout, &desc, &good, 3, &crate::transport::NoProgress).await.unwrap();
        assert!(matches!(done, LanesOutcome::Done));
        assert!(std::fs::read(layout.blob_path_of(&desc.digest)).unwrap() == data);
        assert!(!p.data.exists() && !p.state.exists());
    }

    /// A partial state left by a killed run: only the missing bytes are fetched again.
    #[tokio::test]
    async fn a_partial_download_continues_where_it_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::create(dir.path()).unwrap();
        let data: Vec<u8> = (0..(3 * CHUNK) as usize).map(|i| (i * 7 + i / 4093) as u8).collect();
        let desc = Descriptor::of_bytes("application/octet-stream", &data);
        let p = paths(&layout, &desc).unwrap();
        // chunk 0 whole and 100 bytes of chunk 2 are on disk; the rest of the file is junk
        let mut on_disk = vec![0xAAu8; data.len()];
        on_disk[..CHUNK as usize].copy_from_slice(&data[..CHUNK as usize]);
        let c2 = 2 * CHUNK as usize;
        on_disk[c2..c2 + 100].copy_from_slice(&data[c2..c2 + 100]);
        std::fs::write(&p.data, &on_disk).unwrap();
        let mut st = State::fresh(&desc);
        st.written.insert(0, CHUNK);
        st.written.insert(2, 100);
        save_state(&layout, &p.state, &st).unwrap();
        // the source serves the junk where the state says bytes are written: if they were
        // fetched again, the blob would not verify
        let mut served = data.clone();
        served[..CHUNK as usize].fill(0x55);
        served[c2..c2 + 100].fill(0x55);
        let src = Ranges { data: served.into() };
        let done = download_lanes(&layout, &desc, &src, 2, &crate::transport::NoProgress).await.unwrap();
        assert!(matches!(done, LanesOutcome::Done));
        assert!(std::fs::read(layout.blob_path_of(&desc.digest)).unwrap() == data);
    }
}
