//! Parallel gzip in the style of pigz: one gzip member compressed by several threads, whose
//! bytes depend only on the input and the level, never on the number of threads.
//!
//! The input is cut into fixed [`BLOCK`]-byte blocks. Each block is deflated on its own (raw
//! deflate, primed with the last 32 KiB of the previous block as dictionary, so the ratio stays
//! within a hair of a single stream) and ends byte-aligned with a sync flush; the last block ends
//! the stream. The blocks' outputs concatenate into one valid deflate stream, framed by a fixed
//! gzip header (mtime 0) and a CRC32/ISIZE trailer. Block boundaries are a function of the byte
//! offset only, so how callers chunk their writes and how many workers run change nothing.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use flate2::{Compress, Compression, Crc, FlushCompress, Status};

/// Input bytes per independently compressed block (pigz's default). Part of the output format:
/// changing it changes every gzip layer digest.
pub(crate) const BLOCK: usize = 128 << 10;
/// Deflate's window: how much of the previous block primes the next one.
const WINDOW: usize = 32 << 10;
/// Blocks queued or being compressed per worker: enough to keep every worker busy while the
/// writer thread waits on the oldest, few enough that memory stays constant (about
/// `3 * workers * (2 * BLOCK + WINDOW)` plus each worker's deflate state).
const IN_FLIGHT_PER_WORKER: usize = 3;

struct Job {
    input: Vec<u8>,
    dict: Vec<u8>,
    out: Vec<u8>,
    last: bool,
    reply: SyncSender<io::Result<Done>>,
}

struct Done {
    input: Vec<u8>,
    dict: Vec<u8>,
    out: Vec<u8>,
    crc: Crc,
}

/// Gzip writer that compresses on `workers` threads; results reach the inner writer in order.
/// Call [`finish`](Self::finish) to write the last block and the trailer; dropping without it
/// stops the workers and leaves a truncated stream.
pub(crate) struct ParGzEncoder<W: Write> {
    inner: Option<W>,
    level: Compression,
    /// The block being filled; submitted as soon as it holds `BLOCK` bytes.
    block: Vec<u8>,
    /// Last `WINDOW` bytes of the previously submitted block: the next block's dictionary.
    window: Vec<u8>,
    /// `None` once the workers are stopped (after an error, or in `finish`).
    jobs: Option<Sender<Job>>,
    pending: VecDeque<Receiver<io::Result<Done>>>,
    max_in_flight: usize,
    workers: Vec<JoinHandle<()>>,
    crc: Crc,
    wrote_header: bool,
    spare: Vec<Done>,
}

fn workers_stopped() -> io::Error {
    io::Error::other("gzip: a compression thread stopped (panicked)")
}

impl<W: Write> ParGzEncoder<W> {
    /// One worker per available core, at least two.
    pub fn new(inner: W, level: Compression) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self::with_workers(inner, level, cores.max(2))
    }

    pub fn with_workers(inner: W, level: Compression, workers: usize) -> Self {
        let workers = workers.max(1);
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let handles = (0..workers)
            .map(|i| {
                let rx = Arc::clone(&rx);
                std::thread::Builder::new()
                    .name(format!("hoist-gzip-{i}"))
                    .spawn(move || worker(level, &rx))
                    .expect("spawn gzip worker thread")
            })
            .collect();
        ParGzEncoder {
            inner: Some(inner),
            level,
            block: Vec::with_capacity(BLOCK),
            window: Vec::with_capacity(WINDOW),
            jobs: Some(tx),
            pending: VecDeque::new(),
            max_in_flight: workers * IN_FLIGHT_PER_WORKER,
            workers: handles,
            crc: Crc::new(),
            wrote_header: false,
            spare: Vec::new(),
        }
    }

    /// Wait for every block, write the final one and the trailer, and return the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.submit(true)?;
        while self.write_next(true)? {}
        let trailer = [self.crc.sum().to_le_bytes(), self.crc.amount().to_le_bytes()].concat();
        let res = self.inner.as_mut().map_or(Ok(()), |w| w.write_all(&trailer));
        self.stop();
        res?;
        Ok(self.inner.take().expect("inner writer present until finish"))
    }

    /// Hand the current block (full, or the last one of any size) to the workers.
    fn submit(&mut self, last: bool) -> io::Result<()> {
        if self.jobs.is_none() {
            return Err(io::Error::other("gzip: encoder stopped after an earlier error"));
        }
        while self.pending.len() >= self.max_in_flight {
            self.write_next(true)?;
        }
        let spare = self.spare.pop();
        let (next, mut window, out) = match spare {
            Some(d) => (d.input, d.dict, d.out),
            None => (Vec::with_capacity(BLOCK), Vec::with_capacity(WINDOW), Vec::new()),
        };
        let input = std::mem::replace(&mut self.block, next);
        self.block.clear();
        window.clear();
        window.extend_from_slice(&input[input.len().saturating_sub(WINDOW)..]);
        let dict = std::mem::replace(&mut self.window, window);
        let (reply, rx) = mpsc::sync_channel(1);
        let job = Job { input, dict, out, last, reply };
        if self.jobs.as_ref().is_none_or(|tx| tx.send(job).is_err()) {
            return Err(self.fail(workers_stopped()));
        }
        self.pending.push_back(rx);
        // Write whatever is already done so output flows while the queue fills.
        while self.write_next(false)? {}
        Ok(())
    }

    /// Write the oldest block's output if it is done (or once it is, with `wait`). Returns
    /// whether a block was written.
    fn write_next(&mut self, wait: bool) -> io::Result<bool> {
        let Some(rx) = self.pending.front() else { return Ok(false) };
        let res = if wait {
            rx.recv().map_err(|_| workers_stopped())
        } else {
            match rx.try_recv() {
                Ok(r) => Ok(r),
                Err(TryRecvError::Empty) => return Ok(false),
                Err(TryRecvError::Disconnected) => Err(workers_stopped()),
            }
        };
        self.pending.pop_front();
        let done = match res.and_then(|r| r) {
            Ok(d) => d,
            Err(e) => return Err(self.fail(e)),
        };
        if let Err(e) = self.write_out(&done) {
            return Err(self.fail(e));
        }
        self.crc.combine(&done.crc);
        self.spare.push(done);
        Ok(true)
    }

    fn write_out(&mut self, done: &Done) -> io::Result<()> {
        let inner = self.inner.as_mut().ok_or_else(|| io::Error::other("gzip: encoder already finished"))?;
        if !self.wrote_header {
            inner.write_all(&header(self.level))?;
            self.wrote_header = true;
        }
        inner.write_all(&done.out)
    }

    /// Stop the workers (they exit after their current block) and return `e`.
    fn fail(&mut self, e: io::Error) -> io::Error {
        self.stop();
        e
    }

    fn stop(&mut self) {
        self.jobs = None;
        self.pending.clear();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// The fixed 10-byte header flate2's `GzEncoder` writes: no name, mtime 0, XFL from the level,
/// OS 255 ("unknown", so the bytes do not depend on the build machine).
fn header(level: Compression) -> [u8; 10] {
    let xfl = match level.level() {
        9.. => 2,
        0 | 1 => 4,
        _ => 0,
    };
    [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 255]
}

fn worker(level: Compression, jobs: &Mutex<Receiver<Job>>) {
    loop {
        // The lock is held only while waiting for a job, never while compressing.
        let job = jobs.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(Job { input, dict, mut out, last, reply }) = job else { return };
        let mut crc = Crc::new();
        crc.update(&input);
        let res = deflate_block(level, &input, &dict, &mut out, last).map(|()| Done { input, dict, out, crc });
        let _ = reply.send(res);
    }
}

/// Raw-deflate `input` into `out` after priming the window with `dict`. A non-final block ends
/// with a sync flush (empty stored block: byte-aligned, not final) so the next block's output
/// can simply follow it; the final block ends the deflate stream.
///
/// Each block gets a fresh deflate state (its window starts zeroed). `Compress::reset` would save
/// an allocation but keeps the old window: near a block's end the match search reads past the
/// input into bytes left by whatever block that worker compressed before, so the output would
/// depend on how blocks were spread over threads. A fresh state costs ~300 KiB of allocation per
/// 128 KiB block, small next to compressing it.
fn deflate_block(level: Compression, input: &[u8], dict: &[u8], out: &mut Vec<u8>, last: bool) -> io::Result<()> {
    let mut c = Compress::new(level, false);
    if !dict.is_empty() {
        c.set_dictionary(dict).map_err(|e| io::Error::other(format!("gzip: set dictionary: {e}")))?;
    }
    out.clear();
    // Room for incompressible input (stored blocks) plus the flush markers, so one call suffices.
    out.reserve(input.len() + input.len() / 8 + 64);
    let flush = if last { FlushCompress::Finish } else { FlushCompress::Sync };
    loop {
        let consumed = c.total_in() as usize;
        let status =
            c.compress_vec(&input[consumed..], out, flush).map_err(|e| io::Error::other(format!("gzip: {e}")))?;
        let room_left = out.len() < out.capacity();
        match status {
            Status::StreamEnd => return Ok(()),
            _ if !last && room_left && c.total_in() as usize == input.len() => return Ok(()),
            _ => out.reserve(64 << 10),
        }
    }
}

impl<W: Write> Write for ParGzEncoder<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.jobs.is_none() {
            return Err(io::Error::other("gzip: encoder stopped after an earlier error"));
        }
        let n = data.len().min(BLOCK - self.block.len());
        self.block.extend_from_slice(&data[..n]);
        if self.block.len() == BLOCK {
            self.submit(false)?;
        }
        Ok(n)
    }

    /// Writes every submitted block and flushes the inner writer. The partly filled block stays
    /// buffered: cutting it early would make the bytes depend on when callers flush.
    fn flush(&mut self) -> io::Result<()> {
        while self.write_next(true)? {}
        self.inner.as_mut().map_or(Ok(()), |w| w.flush())
    }
}

impl<W: Write> Drop for ParGzEncoder<W> {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::GzDecoder;
    use rand::{Rng, SeedableRng};
    use std::io::Read;

    /// Half random bytes, half text-like runs: exercises stored and Huffman blocks alike.
    fn mixed(len: usize, seed: u64) -> Vec<u8> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut v = Vec::with_capacity(len);
        while v.len() < len {
            if rng.gen_bool(0.5) {
                let n = rng.gen_range(1..20_000);
                v.extend((0..n).map(|_| rng.gen::<u8>()));
            } else {
                let word = format!("line {} of some layer file with repeated words\n", rng.gen_range(0..500));
                v.extend(word.as_bytes().iter().cycle().take(rng.gen_range(1..50_000)));
            }
        }
        v.truncate(len);
        v
    }

    /// Lines drawn from a pool of a few hundred (about 25 KiB): most matches are to earlier lines,
    /// so a block that starts without the previous block's window loses a lot.
    fn text(len: usize) -> Vec<u8> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let words = ["layer", "image", "blob", "digest", "manifest", "index", "tar", "gzip", "zstd", "config"];
        let pool: Vec<String> = (0..400)
            .map(|_| {
                let line: Vec<&str> = (0..8).map(|_| words[rng.gen_range(0..words.len())]).collect();
                format!("{} {}\n", line.join(" "), rng.gen_range(0..100_000))
            })
            .collect();
        let mut v = Vec::with_capacity(len);
        while v.len() < len {
            v.extend_from_slice(pool[rng.gen_range(0..pool.len())].as_bytes());
        }
        v.truncate(len);
        v
    }

    fn compress(data: &[u8], level: u32, workers: usize, chunk: usize) -> Vec<u8> {
        let mut e = ParGzEncoder::with_workers(Vec::new(), Compression::new(level), workers);
        for c in data.chunks(chunk.max(1)) {
            e.write_all(c).unwrap();
        }
        e.finish().unwrap()
    }

    /// `GzDecoder` reads exactly one member: if it returns everything, the output is one member.
    fn gunzip(gz: &[u8]) -> Vec<u8> {
        let mut d = GzDecoder::new(gz);
        let mut out = Vec::new();
        d.read_to_end(&mut out).unwrap();
        assert!(d.into_inner().is_empty(), "trailing bytes after the gzip member");
        out
    }

    #[test]
    fn round_trips_as_one_member() {
        let sizes = [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 2 * BLOCK, 5 << 20];
        for (i, &len) in sizes.iter().enumerate() {
            let data = mixed(len, i as u64);
            for level in [1, 6, 9] {
                let gz = compress(&data, level, 2, 100_003);
                assert!(gunzip(&gz) == data, "size {len} level {level}");
                assert_eq!(&gz[gz.len() - 4..], &(len as u32).to_le_bytes(), "ISIZE, size {len}");
            }
        }
    }

    #[test]
    fn header_matches_flate2() {
        for level in [0, 1, 6, 9] {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), Compression::new(level));
            e.write_all(b"x").unwrap();
            let want = e.finish().unwrap();
            assert_eq!(&compress(b"x", level, 1, 1)[..10], &want[..10], "level {level}");
        }
    }

    #[test]
    fn bytes_do_not_depend_on_threads_or_write_sizes() {
        let data = mixed(3 * BLOCK + 12_345, 42);
        let want = compress(&data, 6, 1, data.len());
        for (workers, chunk) in [(2, 1 << 20), (3, 4096), (8, 77_777), (1, 1)] {
            let got = compress(&data, 6, workers, chunk);
            assert!(got == want, "{workers} workers, {chunk}-byte writes");
        }
        // A worker's history must not leak into later blocks: a reused, merely reset deflate
        // state does (stale window bytes past the input steer the match search near a block's
        // end). Machine code, with its many near-repeats, shows it within a few MiB.
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let data = &exe[..exe.len().min(8 << 20)];
        for level in [1, 6, 9] {
            let want = compress(data, level, 1, 1 << 20);
            for workers in [2, 3, 8] {
                let got = compress(data, level, workers, 1 << 20);
                let diff = want.iter().zip(&got).position(|(a, b)| a != b);
                assert!(got == want, "level {level}, {workers} workers: first difference at {diff:?}");
            }
        }
    }

    #[test]
    fn ratio_close_to_a_single_stream() {
        // With each block starting cold (no dictionary) level 6 is ~6% larger on this input.
        let data = text(4 << 20);
        for level in [1, 6, 9] {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), Compression::new(level));
            e.write_all(&data).unwrap();
            let single = e.finish().unwrap().len() as f64;
            let par = compress(&data, level, 2, 1 << 20).len() as f64;
            assert!(par / single < 1.01, "level {level}: {par} vs {single} bytes");
        }
    }

    #[test]
    fn system_gzip_accepts_output() {
        hoist_testkit::require!("gzip");
        let data = mixed(3 * BLOCK + 1, 3);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.gz");
        std::fs::write(&path, compress(&data, 6, 2, 65536)).unwrap();
        let st = std::process::Command::new("gzip").arg("-t").arg(&path).status().unwrap();
        assert!(st.success(), "gzip -t {}", path.display());
        let out = std::process::Command::new("gzip").arg("-dc").arg(&path).output().unwrap();
        assert!(out.status.success() && out.stdout == data);
    }

    /// Accepts `limit` bytes, then fails every write.
    struct Failing {
        limit: usize,
        written: usize,
    }

    impl Write for Failing {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if self.written + b.len() > self.limit {
                return Err(io::Error::other("disk full"));
            }
            self.written += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn inner_write_error_surfaces_without_hanging() {
        let data = mixed(8 << 20, 9);
        for limit in [0, 50_000, 1 << 20] {
            let mut e = ParGzEncoder::with_workers(Failing { limit, written: 0 }, Compression::new(6), 2);
            let err = data.chunks(1 << 20).try_for_each(|c| e.write_all(c)).err();
            let err = match err {
                Some(e) => e,
                None => e.finish().err().expect("finish must fail"),
            };
            assert!(err.to_string().contains("disk full"), "{err}");
        }
        // Later writes keep failing; finish fails; neither hangs.
        let mut e = ParGzEncoder::with_workers(Failing { limit: 0, written: 0 }, Compression::new(6), 2);
        assert!(data.chunks(BLOCK).try_for_each(|c| e.write_all(c)).is_err());
        assert!(e.write_all(&data[..BLOCK]).is_err());
        assert!(e.finish().is_err());
    }

    #[test]
    fn drop_without_finish_does_not_hang() {
        let data = mixed(4 << 20, 11);
        let mut e = ParGzEncoder::with_workers(Vec::new(), Compression::new(9), 3);
        e.write_all(&data).unwrap();
        drop(e);
    }
}
