//! Local files into the local store: blobs written from files and bytes (reflinked where the
//! filesystem can), hashing progress, and `SOURCE_DATE_EPOCH`. Every builder (`image`,
//! `artifact`, `modelpack`, `dockerfile`) stores what it makes through here; none names a
//! transport: the CLI moves the result anywhere with `copy::graph`.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

use crate::error::{Error, IoContext, Result};
use crate::model::descriptor::Descriptor;
use crate::model::digest::{Algorithm, Digest};
use crate::transport::layout::blobfile::{BlobFile, IoBlock};
use crate::transport::layout::Layout;

pub(crate) const BUF: usize = 1 << 20;

/// Progress of hashing local files into blobs (`model pack` reads every file once, and a
/// big model takes minutes): the library calls it, the CLI draws it (the same reporter as
/// transfers). `name` is the file's path as it goes into the artifact. Cheap, thread-safe.
pub trait FileProgress: Send + Sync {
    /// Hashing `name` (`size` bytes) starts.
    fn file_start(&self, _name: &str, _size: u64) {}
    /// `n` more bytes of `name` were hashed.
    fn file_advance(&self, _name: &str, _n: u64) {}
    /// `name` is hashed: its blob's digest.
    fn file_done(&self, _name: &str, _digest: &Digest) {}
}

/// File progress that reports nothing.
pub struct NoFileProgress;
impl FileProgress for NoFileProgress {}

/// The file progress a blocking builder reports to, with the file's name.
#[derive(Clone, Copy)]
pub(crate) struct Reporting<'a> {
    pub(crate) name: &'a str,
    pub(crate) progress: &'a dyn FileProgress,
}

impl Reporting<'_> {
    /// Reports nothing.
    pub(crate) const NONE: Reporting<'static> = Reporting { name: "", progress: &NoFileProgress };
}

/// Files at least this large are hashed with reading and hashing on two threads
/// ([`read_hashing`]); smaller ones on the caller's thread (two threads per small file would
/// cost more than they save).
const OVERLAP_MIN: u64 = 8 << 20;

/// Hash `path` (a file of `size` bytes) reporting to `to` as it goes: start, advance per
/// buffer, done.
pub(crate) fn hash_file_reporting(path: &Path, size: u64, to: Reporting<'_>) -> Result<Digest> {
    let mut f = File::open(path).at(path)?;
    to.progress.file_start(to.name, size);
    let d = if size >= OVERLAP_MIN {
        read_hashing(&mut f, None, path, to)?.0
    } else {
        let mut h = Algorithm::Sha256.hasher();
        let mut buf = vec![0u8; BUF];
        loop {
            let n = f.read(&mut buf).at(path)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            to.progress.file_advance(to.name, n as u64);
        }
        h.finish()
    };
    to.progress.file_done(to.name, &d);
    Ok(d)
}

/// `SOURCE_DATE_EPOCH` from the environment, 0 when unset or not a number.
pub fn source_date_epoch() -> i64 {
    std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0)
}

pub use crate::model::time::{parse_rfc3339, rfc3339};

/// Store in-memory JSON as a blob and return its descriptor.
pub(crate) fn store_bytes(layout: &Layout, media_type: &str, bytes: &[u8]) -> Result<Descriptor> {
    let desc = Descriptor::of_bytes(media_type, bytes);
    layout.write_blob_bytes(&desc, bytes)?;
    Ok(desc)
}

/// A writer that hands whole `BUF` blocks to a thread of its own, which writes them into
/// the inner writer: what the caller does before `write` (reading, tar, hashing) and what
/// the inner writer does (compression, hashing, file writes) run on two cores.
/// Buffers come back for reuse; at most `PIPE_BLOCKS` are queued.
pub(crate) struct PipeWriter<W: Write + Send + 'static> {
    buf: Vec<u8>,
    tx: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    spare: std::sync::mpsc::Receiver<Vec<u8>>,
    thread: Option<std::thread::JoinHandle<io::Result<W>>>,
}

const PIPE_BLOCKS: usize = 2;

impl<W: Write + Send + 'static> PipeWriter<W> {
    pub fn new(mut inner: W) -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(PIPE_BLOCKS);
        let (spare_tx, spare) = std::sync::mpsc::sync_channel::<Vec<u8>>(PIPE_BLOCKS + 2);
        let thread = std::thread::Builder::new()
            .name("hoist-pipe".into())
            .spawn(move || {
                for block in rx {
                    inner.write_all(&block)?;
                    let _ = spare_tx.try_send(block);
                }
                inner.flush()?;
                Ok(inner)
            })
            .expect("spawn writer thread");
        PipeWriter { buf: Vec::with_capacity(BUF), tx: Some(tx), spare, thread: Some(thread) }
    }

    fn send(&mut self) -> io::Result<()> {
        let next = self.spare.try_recv().unwrap_or_else(|_| Vec::with_capacity(BUF));
        let block = std::mem::replace(&mut self.buf, next);
        self.buf.clear();
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send(block).is_ok());
        if sent {
            Ok(())
        } else {
            // The thread stopped on an error: report it.
            Err(self.join().err().unwrap_or_else(|| io::Error::other("writer thread stopped")))
        }
    }

    fn join(&mut self) -> io::Result<W> {
        self.tx = None;
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| io::Error::other("writer thread panicked"))?,
            None => Err(io::Error::other("writer thread already finished")),
        }
    }

    /// Write what is buffered, wait for the thread and return the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        if !self.buf.is_empty() {
            self.send()?;
        }
        self.join()
    }
}

impl<W: Write + Send + 'static> Write for PipeWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(BUF - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == BUF {
            self.send()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write + Send + 'static> Drop for PipeWriter<W> {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Store a file as a raw blob with one read of the source: reflink (FICLONE) into the
/// temp dir and hash the clone, or copy while hashing. Never hardlinks: a later edit of
/// the source would change the stored blob behind its digest.
pub(crate) fn store_file_blocking(layout: &Layout, src: &Path, media_type: &str) -> Result<Descriptor> {
    store_file_reporting(layout, src, media_type, Reporting::NONE)
}

/// [`store_file_blocking`] reporting the hashing to `to`.
pub(crate) fn store_file_reporting(
    layout: &Layout,
    src: &Path,
    media_type: &str,
    to: Reporting<'_>,
) -> Result<Descriptor> {
    let mut input = File::open(src).at(src)?;
    let mut tmp = layout.begin_blob()?;
    let (digest, size) = if reflink(&input, tmp.file()) {
        let size = tmp.file().metadata().at(tmp.path())?.len();
        (hash_file_reporting(tmp.path(), size, to)?, size)
    } else {
        let len = input.metadata().at(src)?.len();
        let out = tmp.blob_file_for_size(len)?;
        let path = tmp.path().to_path_buf();
        to.progress.file_start(to.name, len);
        let (digest, size) = read_hashing(&mut input, Some((out, &path)), src, to)?;
        to.progress.file_done(to.name, &digest);
        (digest, size)
    };
    tmp.set_hashed(digest.clone(), size);
    tmp.commit(&digest, size)?;
    Ok(Descriptor::new(media_type, digest, size))
}

/// Read `input` (the file `src`) and hash it, touching each byte once in user space, and copy
/// it into `out` (a blob file at the path given with it) when there is one: this thread
/// reads straight into aligned `IoBlock`s, a second thread hashes them, a third writes them
/// as they are (direct writes need no copy of their own). Reading, hashing and the device
/// overlap, so the copy (or the hash of a large file) costs about what hashing alone does.
/// Blocks come back for reuse.
fn read_hashing(
    input: &mut File,
    out: Option<(BlobFile, &Path)>,
    src: &Path,
    to: Reporting<'_>,
) -> Result<(Digest, u64)> {
    const BLOCKS: usize = 4;
    let (read_tx, read_rx) = std::sync::mpsc::sync_channel::<IoBlock>(BLOCKS);
    let (hashed_tx, hashed_rx) = std::sync::mpsc::sync_channel::<IoBlock>(BLOCKS);
    let (spare_tx, spare_rx) = std::sync::mpsc::sync_channel::<IoBlock>(BLOCKS);
    let spawn = |name: &str| std::thread::Builder::new().name(name.into());
    // Without a writer, the hasher hands blocks back for reuse itself.
    let (after_hash, hashed_tx) = match out {
        Some(_) => (None, Some(hashed_tx)),
        None => (Some(spare_tx.clone()), None),
    };
    let hasher = spawn("hoist-hash")
        .spawn(move || {
            let mut hasher = Algorithm::Sha256.hasher();
            let mut total = 0u64;
            for block in read_rx {
                hasher.update(block.filled());
                total += block.filled().len() as u64;
                if let Some(spare) = &after_hash {
                    let _ = spare.try_send(block);
                } else if hashed_tx.as_ref().is_some_and(|tx| tx.send(block).is_err()) {
                    break; // writer failed; its error is reported
                }
            }
            (hasher.finish(), total)
        })
        .expect("spawn hash thread");
    let writer = out.map(|(out, dst)| {
        let thread = spawn("hoist-write")
            .spawn(move || -> io::Result<File> {
                let mut out = out;
                for block in hashed_rx {
                    out.write_block(&block)?;
                    let _ = spare_tx.try_send(block);
                }
                out.finish()
            })
            .expect("spawn writer thread");
        (thread, dst)
    });
    let mut allocated = 0;
    let read_result = (|| -> Result<()> {
        loop {
            let mut block = match spare_rx.try_recv() {
                Ok(b) => b,
                Err(_) if allocated < BLOCKS => {
                    allocated += 1;
                    IoBlock::new()
                }
                Err(_) => match spare_rx.recv() {
                    Ok(b) => b,
                    Err(_) => return Ok(()), // writer failed; its error is reported below
                },
            };
            block.clear();
            let mut eof = false;
            while !block.is_full() {
                let n = input.read(block.spare_mut()).at(src)?;
                if n == 0 {
                    eof = true;
                    break;
                }
                block.advance(n);
            }
            let n = block.filled().len() as u64;
            if n > 0 && read_tx.send(block).is_err() {
                return Ok(()); // hasher gone after a writer failure
            }
            if n > 0 {
                to.progress.file_advance(to.name, n);
            }
            if eof {
                return Ok(());
            }
        }
    })();
    drop(read_tx);
    let panicked = |what: &str| Error::Panicked { what: what.into() };
    let (digest, total) = hasher.join().map_err(|_| panicked("hash"))?;
    let written = match writer {
        Some((thread, dst)) => Some((thread.join().map_err(|_| panicked("blob writer"))?, dst)),
        None => None,
    };
    read_result?;
    if let Some((written, dst)) = written {
        written.at(dst)?;
    }
    Ok((digest, total))
}

/// Copy all of `r` into `w` with the caller's buffer, naming the failing side in errors (a
/// fresh zeroed 1 MiB per small file cost a 1 MiB memset each: 15% of a 20k-file layer build).
pub(crate) fn copy_stream_buf(
    r: &mut impl Read,
    w: &mut impl Write,
    from: &Path,
    to: &Path,
    buf: &mut [u8],
) -> Result<u64> {
    let mut total = 0u64;
    loop {
        let n = r.read(buf).at(from)?;
        if n == 0 {
            return Ok(total);
        }
        w.write_all(&buf[..n]).at(to)?;
        total += n as u64;
    }
}

#[cfg(target_os = "linux")]
fn reflink(src: &File, dst: &File) -> bool {
    use std::os::unix::io::AsRawFd;
    // FICLONE = _IOW(0x94, 9, int)
    const FICLONE: libc::c_ulong = 0x4004_9409;
    // SAFETY: both descriptors are open files owned by the caller for the whole call.
    let r = unsafe { libc::ioctl(dst.as_raw_fd(), FICLONE as _, src.as_raw_fd()) };
    r == 0
}

#[cfg(not(target_os = "linux"))]
fn reflink(_src: &File, _dst: &File) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts what a hash reports.
    #[derive(Default)]
    struct Count(std::sync::atomic::AtomicU64);
    impl FileProgress for Count {
        fn file_advance(&self, _name: &str, n: u64) {
            self.0.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        }
    }

    #[test]
    fn files_hash_alike_on_one_thread_and_on_two() {
        let t = tempfile::tempdir().unwrap();
        for size in [0, 5, OVERLAP_MIN - 1, OVERLAP_MIN, OVERLAP_MIN + 4096 + 7] {
            let data: Vec<u8> = (0..size).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
            let path = t.path().join(format!("f{size}"));
            std::fs::write(&path, &data).unwrap();
            let count = Count::default();
            let d = hash_file_reporting(&path, size, Reporting { name: "f", progress: &count }).unwrap();
            assert_eq!(d, Digest::sha256_of(&data), "{size} bytes");
            assert_eq!(count.0.into_inner(), size, "{size} bytes reported");
        }
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn rfc3339_parses_what_it_and_go_write() {
        for secs in [0, 1, 951_782_400, 1_700_000_000, -86_401, 4_102_444_800] {
            assert_eq!(parse_rfc3339(&rfc3339(secs)), Some((secs, 0)), "{}", rfc3339(secs));
        }
        // Go's RFC3339Nano, with offsets
        assert_eq!(parse_rfc3339("2023-11-14T23:13:20.5+01:00"), Some((1_700_000_000, 500_000_000)));
        assert_eq!(parse_rfc3339("2023-11-14T17:13:20.123456789-05:00"), Some((1_700_000_000, 123_456_789)));
        assert_eq!(parse_rfc3339("2023-11-14T22:13:20.1234567891Z"), Some((1_700_000_000, 123_456_789)));
        for bad in [
            "",
            "yesterday",
            "2023-11-14",
            "2023-11-14T22:13:20",
            "2023-11-14T22:13:20+0100",
            "2023-13-14T22:13:20Z",
            "2023-02-29T22:13:20Z",
            "2023-11-14T24:13:20Z",
            "2023-11-14T22:13:20.Z",
            "2023-11-14T22:13:20ZZ",
            "+023-11-14T22:13:20Z",
            "2023-11-14T22:13:20é",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
