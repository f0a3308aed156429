//! Builders: turn files on disk into images, artifacts and model packs inside a local
//! `Layout`, and return the root descriptor. They never name a transport; the CLI moves
//! the result anywhere with `copy::graph`.

pub mod artifact;
pub mod dockerfile;
pub mod hf;
pub mod image;
pub mod layer;
pub mod model;
mod pgzip;

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

use crate::error::{Error, IoContext, Result};
use crate::model::descriptor::Descriptor;
use crate::model::digest::{Algorithm, Digest};
use crate::transport::layout::blobfile::{BlobFile, IoBlock};
use crate::transport::layout::Layout;

pub use artifact::{build_artifact, load_annotation_file, AnnotationFile, ArtifactFile, ArtifactSpec};
pub use image::{build_image, BaseImage, BuildFile, ImageSpec, LayerSpec};
pub use layer::{build_layer_blocking, build_layer_following_blocking, Compression, LayerBlob, LayerEntry};
pub use model::{
    build_model, describe_model, diff_models, list_model, plan_dir_model, unpack_model, unpack_model_with,
    FileSelector, ModelDiff, ModelEntry, ModelFileKind, ModelLayerFormat, ModelMeta, ModelSpec, UnpackOptions,
};

const BUF: usize = 1 << 20;

/// `SOURCE_DATE_EPOCH` from the environment, 0 when unset or not a number.
pub fn source_date_epoch() -> i64 {
    std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0)
}

/// RFC 3339 UTC timestamp (`1970-01-01T00:00:00Z`) of seconds since the epoch.
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Seconds since the epoch and nanoseconds of an RFC 3339 timestamp: what [`rfc3339`] writes,
/// and what Go's `time.Time` marshals to (modctl's file metadata), i.e. with optional
/// fractional seconds and a `Z` or `±HH:MM` offset. `None` for anything else.
pub fn parse_rfc3339(s: &str) -> Option<(i64, u32)> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let d = b.get(r)?;
        d.iter().all(u8::is_ascii_digit).then(|| d.iter().fold(0i64, |n, c| n * 10 + i64::from(c - b'0')))
    };
    let sep = |i: usize, c: &[u8]| b.get(i).is_some_and(|x| c.contains(x));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let days_in_month = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if y % 4 == 0 && (y % 100 != 0 || y % 400 == 0) => 29,
        2 => 28,
        _ => return None,
    };
    // 60: a leap second, which Unix time folds into the next one
    if d < 1 || d > days_in_month || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0u32;
    if sep(i, b".") {
        let start = i + 1;
        i = start;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        let digits = &s[start..i];
        if digits.is_empty() {
            return None;
        }
        // nanosecond precision; further digits are dropped
        let kept = &digits[..digits.len().min(9)];
        nanos = kept.parse::<u32>().ok()? * 10u32.pow(9 - kept.len() as u32);
    }
    let offset = match &b[i..] {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let o = oh * 3600 + om * 60;
            if *sign == b'-' {
                -o
            } else {
                o
            }
        }
        _ => return None,
    };
    // Howard Hinnant's days_from_civil, the inverse of the conversion in `rfc3339`.
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + hh * 3600 + mm * 60 + ss - offset, nanos))
}

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
    let mut input = File::open(src).at(src)?;
    let mut tmp = layout.begin_blob()?;
    let (digest, size) = if reflink(&input, tmp.file()) {
        let size = tmp.file().metadata().at(tmp.path())?.len();
        (crate::transport::layout::hash_file(tmp.path(), Algorithm::Sha256)?, size)
    } else {
        let len = input.metadata().at(src)?.len();
        let out = tmp.blob_file_for_size(len)?;
        let path = tmp.path().to_path_buf();
        copy_hashing(&mut input, out, src, &path)?
    };
    tmp.set_hashed(digest.clone(), size);
    tmp.commit(&digest, size)?;
    Ok(Descriptor::new(media_type, digest, size))
}

/// Copy `input` into `out` and hash it, touching each byte once in user space: this thread
/// reads straight into aligned `IoBlock`s, a second thread hashes them, a third writes them
/// as they are (direct writes need no copy of their own). Reading, hashing and the device
/// overlap, so the copy costs about what hashing alone does. Blocks come back for reuse.
fn copy_hashing(input: &mut File, out: BlobFile, src: &Path, dst: &Path) -> Result<(Digest, u64)> {
    const BLOCKS: usize = 4;
    let (read_tx, read_rx) = std::sync::mpsc::sync_channel::<IoBlock>(BLOCKS);
    let (hashed_tx, hashed_rx) = std::sync::mpsc::sync_channel::<IoBlock>(BLOCKS);
    let (spare_tx, spare_rx) = std::sync::mpsc::sync_channel::<IoBlock>(BLOCKS);
    let spawn = |name: &str| std::thread::Builder::new().name(name.into());
    let hasher = spawn("hoist-hash")
        .spawn(move || {
            let mut hasher = Algorithm::Sha256.hasher();
            let mut total = 0u64;
            for block in read_rx {
                hasher.update(block.filled());
                total += block.filled().len() as u64;
                if hashed_tx.send(block).is_err() {
                    break; // writer failed; its error is reported
                }
            }
            (hasher.finish(), total)
        })
        .expect("spawn hash thread");
    let writer = spawn("hoist-write")
        .spawn(move || -> io::Result<File> {
            let mut out = out;
            for block in hashed_rx {
                out.write_block(&block)?;
                let _ = spare_tx.try_send(block);
            }
            out.finish()
        })
        .expect("spawn writer thread");
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
            if !block.filled().is_empty() && read_tx.send(block).is_err() {
                return Ok(()); // hasher gone after a writer failure
            }
            if eof {
                return Ok(());
            }
        }
    })();
    drop(read_tx);
    let panicked = |what: &str| Error::Other(format!("{what} thread panicked"));
    let (digest, total) = hasher.join().map_err(|_| panicked("hash"))?;
    let written = writer.join().map_err(|_| panicked("blob writer"))?;
    read_result?;
    written.at(dst)?;
    Ok((digest, total))
}

/// Copy all of `r` into `w`, naming the failing side in errors.
pub(crate) fn copy_stream(r: &mut impl Read, w: &mut impl Write, from: &Path, to: &Path) -> Result<u64> {
    copy_stream_buf(r, w, from, to, &mut vec![0u8; BUF])
}

/// `copy_stream` with the caller's buffer (a fresh zeroed 1 MiB per small file cost a
/// 1 MiB memset each: 15% of a 20k-file layer build).
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
