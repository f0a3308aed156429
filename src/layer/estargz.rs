//! eStargz layers, as containerd's stargz-snapshotter (`estargz` package) writes and reads
//! them: a gzip stream of many members, so a reader can start decompressing at any regular
//! file's chunk without the bytes before it.
//!
//! Layout (what [`write`] produces from a tar):
//! - the tar's members in their order, their header bytes unchanged (lossless, like
//!   `AppendTarLossLess`); each chunk of a regular file's data (at most
//!   [`Options::chunk_size`], 4 MiB by default) starts a new gzip member, and the padding and
//!   the headers that follow go into that member;
//! - then one gzip member with a tar entry `stargz.index.json`, the TOC, and the two zero
//!   blocks that end the tar;
//! - then the 51-byte footer: an empty gzip member whose extra field (`SG`, `%016x` offset of
//!   the TOC member, `STARGZ`) says where the TOC is.
//!
//! The TOC lists every entry (name, type, size, mode, owner, modtime, link, xattrs), the file
//! `digest` of each regular file, and for each chunk its compressed `offset`, `chunkOffset`,
//! `chunkSize` and `chunkDigest`. The layer's descriptor carries the TOC's digest and the
//! uncompressed size ([`ANNOTATION_TOC_DIGEST`], [`ANNOTATION_UNCOMPRESSED_SIZE`]).
//!
//! The result is a plain multi-member gzip stream whose content is the input tar's entries
//! followed by the TOC entry; every gzip reader reads it. Its diff_id is therefore not the
//! input tar's: the TOC entry is part of the content (as with every eStargz writer).
//! [`to_plain_tar`] is the way back: the same members without the TOC and the prefetch
//! landmarks, so a layer converted there and back has its first diff_id again.
//!
//! Reproducible and parallel: members are compressed independently (gzip, mtime 0, no name) by
//! [`Options::workers`] threads in batches; member boundaries depend only on the input and the
//! chunk size, so the bytes never depend on the number of threads. Memory does not grow with
//! the layer: batches go through a fixed set of buffers used again, and only as many are in
//! flight as fit in a 32 MiB budget (two at the default chunk size), whatever the core count.
//! What still grows is the TOC (and zstd:chunked's tar-split record): a few hundred bytes per
//! file, as in the Go writers.
//!
//! The one deviation from the Go writer's layout: a run of header-only members (directories,
//! links) longer than the chunk size is cut into several gzip members, so memory stays bounded
//! (readers use offsets of data chunks only).

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Read, Write};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use base64::Engine;
use serde::Serialize;

use super::tar::{clean_name, filter_members, into_io, Member, Skip, Stream, TarReader};
use crate::model::digest::{Algorithm, Digest, Hasher};
use crate::model::verify::HashWriter;

/// One tar block.
const BLOCK: usize = super::tar::BLOCK as usize;

/// A member of a layer with its path and link as text (what the TOC and tar-split hold).
struct Entry {
    m: Member,
    name: String,
    link: String,
}

/// The next member of `tar` for a lazy-pull layer: GNU sparse files and paths that are not
/// UTF-8 are refused (neither TOC can describe them).
fn next_entry<R: Skip>(tar: &mut TarReader<R>, what: &str) -> io::Result<Option<Entry>> {
    let Some(m) = tar.next_member().map_err(into_io)? else { return Ok(None) };
    let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidData, format!("{what}: {why}"));
    if m.header.entry_type().is_gnu_sparse() {
        return Err(bad("GNU sparse files are not supported in lazy-pull layers"));
    }
    let utf8 = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| bad("a path in the tar is not UTF-8"));
    let name = utf8(&m.name)?;
    let link = utf8(m.link.as_deref().unwrap_or_default())?;
    Ok(Some(Entry { m, name, link }))
}

/// Name of the TOC entry in the layer's tar.
pub const TOC_TAR_NAME: &str = "stargz.index.json";
/// Layer annotation: digest of the TOC JSON.
pub const ANNOTATION_TOC_DIGEST: &str = "containerd.io/snapshot/stargz/toc.digest";
/// Layer annotation: size of the uncompressed layer (for containers/storage's stargz store).
pub const ANNOTATION_UNCOMPRESSED_SIZE: &str = "io.containers.estargz.uncompressed-size";
/// Entry marking the end of the prioritized files.
pub const PREFETCH_LANDMARK: &str = ".prefetch.landmark";
/// Entry saying nothing is to be prefetched.
pub const NO_PREFETCH_LANDMARK: &str = ".no.prefetch.landmark";
/// Default chunk size (bytes of a file's data per gzip member), as in the Go writer.
pub const DEFAULT_CHUNK_SIZE: u64 = 4 << 20;
/// Size of the footer.
pub const FOOTER_SIZE: usize = 51;
/// Uncompressed bytes per batch handed to a compression thread.
const JOB_BYTES: usize = 1 << 20;
/// Slack reserved after a chunk for its padding and the headers that follow it in the same
/// member, so the member's buffer is allocated once.
const CHUNK_SLACK: usize = 16 << 10;

/// How [`write`] (and [`super::zstdchunked::write`]) writes.
#[derive(Clone, Debug)]
pub struct Options {
    /// gzip level, 0-9 (zstd:chunked: zstd level, 1-22).
    pub level: u32,
    /// Largest chunk of file data per gzip member or zstd frame (> 0).
    pub chunk_size: u64,
    /// Compression threads, at most (output does not depend on it; fewer run when their
    /// buffers would not fit the memory budget at this chunk size).
    pub workers: usize,
    /// Files to put first, in this order, followed by the prefetch landmark (eStargz only;
    /// paths as in the tar, compared cleaned). Empty: no landmark.
    pub prioritized: Vec<String>,
}

impl Options {
    /// `level`, the default chunk size, one thread per core (at least two).
    pub fn new(level: u32) -> Options {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Options { level, chunk_size: DEFAULT_CHUNK_SIZE, workers: cores.max(2), prioritized: Vec::new() }
    }
}

/// What the members of a lazy-pull layer are: gzip members (eStargz) or zstd frames
/// (zstd:chunked). The cutting, the worker threads and the TOC offsets are shared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Frames {
    /// eStargz: a chunk's member goes on with the padding and headers after it.
    Gzip,
    /// zstd:chunked: a file's data is in frames of its own (as containers/storage cuts them).
    Zstd,
}

/// What [`write`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    /// Digest of the compressed blob.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
    /// Digest of the uncompressed content (input entries and the TOC entry).
    pub diff_id: Digest,
    /// Size of the uncompressed content.
    pub uncompressed_size: u64,
    /// Digest of the TOC JSON.
    pub toc_digest: Digest,
}

impl Written {
    /// The layer annotations stargz-snapshotter and containers/storage read.
    pub fn annotations(&self) -> [(&'static str, String); 2] {
        [
            (ANNOTATION_TOC_DIGEST, self.toc_digest.to_string()),
            (ANNOTATION_UNCOMPRESSED_SIZE, self.uncompressed_size.to_string()),
        ]
    }
}

/// Whether a layer descriptor's annotations say it is eStargz.
pub fn is_estargz(annotations: &BTreeMap<String, String>) -> bool {
    annotations.contains_key(ANNOTATION_TOC_DIGEST)
}

#[derive(Serialize)]
struct Toc<'a> {
    version: u32,
    entries: &'a [TocEntry],
}

/// One TOC entry, fields in the Go struct's order, empty ones left out (`omitempty`).
#[derive(Serialize, Default, Clone)]
pub(crate) struct TocEntry {
    pub(crate) name: String,
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    #[serde(skip_serializing_if = "is_zero")]
    pub(crate) size: u64,
    #[serde(rename = "modtime", skip_serializing_if = "String::is_empty")]
    pub(crate) mod_time: String,
    #[serde(rename = "linkName", skip_serializing_if = "String::is_empty")]
    pub(crate) link_name: String,
    #[serde(skip_serializing_if = "is_zero")]
    pub(crate) mode: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub(crate) uid: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub(crate) gid: u64,
    #[serde(rename = "userName", skip_serializing_if = "String::is_empty")]
    pub(crate) user_name: String,
    #[serde(rename = "groupName", skip_serializing_if = "String::is_empty")]
    pub(crate) group_name: String,
    #[serde(skip_serializing_if = "is_zero")]
    pub(crate) offset: u64,
    #[serde(rename = "devMajor", skip_serializing_if = "is_zero")]
    pub(crate) dev_major: u64,
    #[serde(rename = "devMinor", skip_serializing_if = "is_zero")]
    pub(crate) dev_minor: u64,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) xattrs: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub(crate) digest: String,
    #[serde(rename = "chunkOffset", skip_serializing_if = "is_zero")]
    pub(crate) chunk_offset: u64,
    #[serde(rename = "chunkSize", skip_serializing_if = "is_zero")]
    pub(crate) chunk_size: u64,
    #[serde(rename = "chunkDigest", skip_serializing_if = "String::is_empty")]
    pub(crate) chunk_digest: String,
    /// Where the member holding this chunk ends (zstd:chunked's `endOffset`).
    #[serde(skip)]
    pub(crate) end_offset: u64,
    /// Modification time in seconds (zstd:chunked writes it as a time).
    #[serde(skip)]
    pub(crate) mtime: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The TOC's `modtime`: RFC 3339 (UTC, seconds), empty for 0 as the Go writer leaves it out.
fn modtime(secs: u64) -> String {
    match secs {
        0 => String::new(),
        s => crate::model::time::rfc3339(s as i64),
    }
}

/// One gzip member (or zstd frame) of a batch: its bytes `start..end` of the batch's buffer,
/// and the TOC entry whose chunk starts it (the chunk's digest is taken over its first
/// `chunk_len` bytes).
struct Span {
    start: usize,
    end: usize,
    entry: Option<usize>,
    chunk_len: usize,
}

/// Members handed to a compression thread at once: one buffer of their bytes (at least
/// [`JOB_BYTES`], or one chunk's member), and the buffer the result goes into. Both buffers
/// come back with the result and are used again, so the writer allocates a fixed set of
/// buffers once rather than megabytes per member.
struct Job {
    data: Vec<u8>,
    spans: Vec<Span>,
    out: Vec<u8>,
}

struct JobOut {
    compressed: Vec<u8>,
    /// The job's input buffer, to be used again.
    data: Vec<u8>,
    /// Per member: compressed size, TOC entry and chunk digest.
    members: Vec<(u64, Option<(usize, Digest)>)>,
}

type Reply = io::Result<JobOut>;

fn gzip_member(level: u32, data: &[u8], out: &mut Vec<u8>) -> io::Result<u64> {
    let start = out.len();
    let mut gz = flate2::GzBuilder::new().mtime(0).write(&mut *out, flate2::Compression::new(level));
    gz.write_all(data)?;
    gz.finish()?;
    Ok((out.len() - start) as u64)
}

/// One zstd frame of `data` (with its checksum) appended to `out`; its size.
pub(crate) fn zstd_frame(level: u32, data: &[u8], out: &mut Vec<u8>) -> io::Result<u64> {
    let start = out.len();
    let mut z = zstd::stream::write::Encoder::new(&mut *out, level as i32)?;
    z.include_checksum(true)?;
    z.write_all(data)?;
    z.finish()?;
    Ok((out.len() - start) as u64)
}

/// A compression thread's zstd context, made once and used for every frame: the frames are
/// the ones [`zstd_frame`] writes (same level, checksum, no pledged size; the encoder resets
/// the session before each), without allocating a context (window and tables: megabytes at
/// the default level) per frame.
fn zstd_context(level: u32) -> io::Result<zstd::zstd_safe::CCtx<'static>> {
    use zstd::zstd_safe::CParameter;
    let mut c = zstd::zstd_safe::CCtx::try_create().ok_or_else(|| io::Error::other("zstd: out of memory"))?;
    let err = |code| io::Error::other(format!("zstd: {}", zstd::zstd_safe::get_error_name(code)));
    c.set_parameter(CParameter::CompressionLevel(level as i32)).map_err(err)?;
    c.set_parameter(CParameter::ChecksumFlag(true)).map_err(err)?;
    Ok(c)
}

fn compress_job(frames: Frames, level: u32, job: Job, zctx: &mut Option<zstd::zstd_safe::CCtx<'static>>) -> Reply {
    let Job { data, spans, out: mut compressed } = job;
    compressed.clear();
    // What incompressible data and the member overheads can add, reserved once.
    compressed.reserve(data.len() + data.len() / 64 + spans.len() * 64 + 1024);
    let mut members = Vec::with_capacity(spans.len());
    for m in &spans {
        let bytes = &data[m.start..m.end];
        let size = match frames {
            Frames::Gzip => gzip_member(level, bytes, &mut compressed)?,
            Frames::Zstd => {
                let ctx = match zctx {
                    Some(c) => c,
                    None => zctx.insert(zstd_context(level)?),
                };
                let start = compressed.len();
                let mut z = zstd::stream::write::Encoder::with_context(&mut compressed, ctx);
                z.write_all(bytes)?;
                z.finish()?;
                (compressed.len() - start) as u64
            }
        };
        let chunk = m.entry.map(|e| (e, Digest::sha256_of(&bytes[..m.chunk_len])));
        members.push((size, chunk));
    }
    Ok(JobOut { compressed, data, members })
}

/// Buffer memory of the compression pipeline: the batches in flight, their results and the
/// batch being filled stay within it whatever the layer's size and the core count (a chunk
/// size so large that one batch does not fit still gets one thread).
const BUFFER_BUDGET: usize = 32 << 20;

/// The compression threads and the batches in flight, results taken in order.
///
/// Memory is bounded by [`BUFFER_BUDGET`]: a batch is at most about [`JOB_BYTES`] plus one
/// chunk, and as many batches are in flight as their input and output buffers fit in the
/// budget next to the batch being filled (two at the default 4 MiB chunks, more at smaller
/// ones), never more than one per thread. The buffers are used again, not reallocated.
struct Pool {
    jobs: Option<mpsc::Sender<(Job, SyncSender<Reply>)>>,
    pending: VecDeque<Receiver<Reply>>,
    threads: Vec<JoinHandle<()>>,
    max_in_flight: usize,
}

impl Pool {
    fn new(frames: Frames, level: u32, workers: usize, chunk_size: u64) -> Pool {
        let batch = batch_capacity(chunk_size);
        let fit = BUFFER_BUDGET.saturating_sub(batch) / batch.saturating_mul(2).max(1);
        let workers = fit.clamp(1, workers.max(1));
        let (tx, rx) = mpsc::channel::<(Job, SyncSender<Reply>)>();
        let rx = Arc::new(Mutex::new(rx));
        let threads = (0..workers)
            .map(|i| {
                let rx = Arc::clone(&rx);
                std::thread::Builder::new()
                    .name(format!("hoist-estargz-{i}"))
                    .spawn(move || {
                        let mut zctx = None;
                        loop {
                            let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                            let Ok((job, reply)) = job else { return };
                            let _ = reply.send(compress_job(frames, level, job, &mut zctx));
                        }
                    })
                    .expect("spawn estargz worker thread")
            })
            .collect();
        Pool { jobs: Some(tx), pending: VecDeque::new(), threads, max_in_flight: workers }
    }

    fn submit(&mut self, job: Job) -> io::Result<()> {
        let (reply, rx) = mpsc::sync_channel(1);
        let sent = self.jobs.as_ref().is_some_and(|tx| tx.send((job, reply)).is_ok());
        if !sent {
            return Err(io::Error::other("estargz: a compression thread stopped"));
        }
        self.pending.push_back(rx);
        Ok(())
    }

    /// The oldest batch's result, when `wait` or when it is ready.
    fn next(&mut self, wait: bool) -> io::Result<Option<JobOut>> {
        let Some(rx) = self.pending.front() else { return Ok(None) };
        let r = if wait {
            rx.recv().map_err(|_| io::Error::other("estargz: a compression thread stopped"))?
        } else {
            match rx.try_recv() {
                Ok(r) => r,
                Err(mpsc::TryRecvError::Empty) => return Ok(None),
                Err(_) => return Err(io::Error::other("estargz: a compression thread stopped")),
            }
        };
        self.pending.pop_front();
        r.map(Some)
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.jobs = None;
        self.pending.clear();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The largest batch at `chunk_size`: small members up to [`JOB_BYTES`], then one chunk's
/// member with the padding and headers after it.
fn batch_capacity(chunk_size: u64) -> usize {
    usize::try_from(chunk_size).unwrap_or(usize::MAX).saturating_add(JOB_BYTES + CHUNK_SLACK)
}

/// The writer's state between members.
pub(crate) struct Writer<W: Write> {
    pub(crate) out: HashWriter<W>,
    pub(crate) opts: Options,
    pool: Pool,
    pub(crate) toc: Vec<TocEntry>,
    /// Regular files whose digest is their single chunk's.
    digest_from_chunk: Vec<usize>,
    pub(crate) diff: Hasher,
    pub(crate) uncompressed: u64,
    /// zstd:chunked's tar-split record.
    pub(crate) split: Option<TarSplit>,
    /// The batch being filled: its bytes and its ended members.
    data: Vec<u8>,
    spans: Vec<Span>,
    /// The member being filled: where it starts in `data`, the TOC entry whose chunk starts
    /// it, that chunk's length.
    cur_start: usize,
    cur_entry: Option<usize>,
    cur_chunk_len: usize,
    /// Buffers of written batches, for the next ones.
    free_data: Vec<Vec<u8>>,
    free_out: Vec<Vec<u8>>,
    /// Compressed bytes written so far.
    pub(crate) offset: u64,
    /// Last user and group names written per id (the Go writer writes a name once per id).
    unames: BTreeMap<u64, String>,
    gnames: BTreeMap<u64, String>,
}

impl<W: Write> Writer<W> {
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        if let Some(s) = self.split.as_mut() {
            s.pending.extend_from_slice(bytes);
        }
        self.diff.update(bytes);
        self.uncompressed += bytes.len() as u64;
        self.data.extend_from_slice(bytes);
    }

    /// Bytes of the member being filled.
    fn cur_len(&self) -> usize {
        self.data.len() - self.cur_start
    }

    /// End the current member (if it has bytes); a chunk of `entry` starts the next one.
    fn cut(&mut self, next_entry: Option<usize>) -> io::Result<()> {
        let end = self.data.len();
        if end > self.cur_start || self.cur_entry.is_some() {
            self.spans.push(Span { start: self.cur_start, end, entry: self.cur_entry, chunk_len: self.cur_chunk_len });
        }
        if end >= JOB_BYTES {
            self.flush_batch()?;
        }
        self.cur_start = self.data.len();
        self.cur_entry = next_entry;
        self.cur_chunk_len = 0;
        Ok(())
    }

    /// Hand the ended members to a compression thread (after writing the oldest batch when
    /// as many as allowed are in flight).
    fn flush_batch(&mut self) -> io::Result<()> {
        if self.spans.is_empty() {
            return Ok(());
        }
        while self.pool.pending.len() >= self.pool.max_in_flight {
            self.take(true)?;
        }
        let cap = batch_capacity(self.opts.chunk_size);
        let next = self.free_data.pop().unwrap_or_else(|| Vec::with_capacity(cap));
        let job = Job {
            data: std::mem::replace(&mut self.data, next),
            spans: std::mem::take(&mut self.spans),
            out: self.free_out.pop().unwrap_or_default(),
        };
        self.pool.submit(job)?;
        self.cur_start = 0;
        while self.take(false)? {}
        Ok(())
    }

    /// Write the oldest finished batch; whether there was one.
    fn take(&mut self, wait: bool) -> io::Result<bool> {
        let Some(job) = self.pool.next(wait)? else { return Ok(false) };
        for (size, chunk) in job.members {
            if let Some((entry, digest)) = chunk {
                self.toc[entry].offset = self.offset;
                self.toc[entry].end_offset = self.offset + size;
                self.toc[entry].chunk_digest = digest.to_string();
            }
            self.offset += size;
        }
        self.out.write_all(&job.compressed)?;
        let (mut data, mut out) = (job.data, job.compressed);
        data.clear();
        out.clear();
        self.free_data.push(data);
        self.free_out.push(out);
        Ok(true)
    }

    fn entry(&mut self, e: &Entry) -> io::Result<TocEntry> {
        let m = &e.m;
        let h = &m.header;
        let uid = m.number("uid", |h| h.uid());
        let gid = m.number("gid", |h| h.gid());
        let name_of = |key: &str, field: Option<&[u8]>| {
            m.pax(key).or(field).map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default()
        };
        let uname = name_of("uname", h.username_bytes());
        let gname = name_of("gname", h.groupname_bytes());
        let once = |map: &mut BTreeMap<u64, String>, id: u64, name: String| {
            if name.is_empty() || map.get(&id) == Some(&name) {
                return String::new();
            }
            map.insert(id, name.clone());
            name
        };
        let user_name = once(&mut self.unames, uid, uname);
        let group_name = once(&mut self.gnames, gid, gname);
        let xattrs = m
            .pax
            .iter()
            .filter_map(|(k, v)| {
                let name = k.strip_prefix("SCHILY.xattr.")?;
                Some((name.to_string(), base64::engine::general_purpose::STANDARD.encode(v)))
            })
            .collect();
        let kind = match m.kind() {
            b'0' => "reg",
            b'1' => "hardlink",
            b'2' => "symlink",
            b'3' => "char",
            b'4' => "block",
            b'5' => "dir",
            b'6' => "fifo",
            k => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("tar entry {:?} has type {:?}, which eStargz cannot describe", e.name, k as char),
                ))
            }
        };
        let device = matches!(kind, "char" | "block");
        Ok(TocEntry {
            name: e.name.clone(),
            kind,
            size: if kind == "reg" { m.size } else { 0 },
            mod_time: modtime(m.number("mtime", |h| h.mtime())),
            link_name: if matches!(kind, "hardlink" | "symlink") { e.link.clone() } else { String::new() },
            mode: u64::from(h.mode().unwrap_or(0)),
            uid,
            gid,
            user_name,
            group_name,
            dev_major: if device { u64::from(h.device_major().ok().flatten().unwrap_or(0)) } else { 0 },
            dev_minor: if device { u64::from(h.device_minor().ok().flatten().unwrap_or(0)) } else { 0 },
            xattrs,
            mtime: m.number("mtime", |h| h.mtime()),
            ..TocEntry::default()
        })
    }
}

/// tar-split's record of a tar (github.com/vbatts/tar-split, `storage.NewJSONPacker`): one
/// JSON object per line, raw bytes between files as segments (type 2, base64 payload), each
/// member as a file entry (type 1: name, size, the CRC-64/ISO of its data as payload).
/// With it, containers/storage rebuilds the exact tar from the files of a partial pull.
#[derive(Default)]
pub(crate) struct TarSplit {
    /// Raw bytes since the last entry.
    pending: Vec<u8>,
    /// The JSON lines.
    pub(crate) json: Vec<u8>,
    position: u64,
}

impl TarSplit {
    fn line(&mut self, v: serde_json::Value) {
        self.json.extend_from_slice(v.to_string().as_bytes());
        self.json.push(b'\n');
        self.position += 1;
    }

    /// A segment of the pending raw bytes (if any).
    fn segment(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let payload = base64::engine::general_purpose::STANDARD.encode(std::mem::take(&mut self.pending));
        let position = self.position;
        self.line(serde_json::json!({ "type": 2, "payload": payload, "position": position }));
    }

    /// A file entry, after the segment of the raw bytes before it (its headers).
    fn file(&mut self, name: &str, size: u64, crc: Option<u64>) {
        self.segment();
        let mut v = serde_json::Map::new();
        v.insert("type".into(), 1.into());
        v.insert("name".into(), name.into());
        if size > 0 {
            v.insert("size".into(), size.into());
        }
        let payload = match crc {
            Some(c) => base64::engine::general_purpose::STANDARD.encode(c.to_be_bytes()).into(),
            None => serde_json::Value::Null,
        };
        v.insert("payload".into(), payload);
        v.insert("position".into(), self.position.into());
        self.line(serde_json::Value::Object(v));
    }
}

/// CRC-64 with the ISO polynomial, as Go's `hash/crc64` (`crc64.ISO`) computes it: what
/// tar-split stores for each file's data. (Twelve lines; no crate in the tree has it.)
pub(crate) struct Crc64(u64);

fn crc64_table() -> &'static [u64; 256] {
    static TABLE: std::sync::OnceLock<[u64; 256]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = [0u64; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            let mut c = i as u64;
            for _ in 0..8 {
                c = if c & 1 == 1 { (c >> 1) ^ 0xD800_0000_0000_0000 } else { c >> 1 };
            }
            *slot = c;
        }
        t
    })
}

impl Crc64 {
    pub(crate) fn new() -> Crc64 {
        Crc64(!0)
    }
    pub(crate) fn update(&mut self, data: &[u8]) {
        let t = crc64_table();
        for &b in data {
            self.0 = t[((self.0 as u8) ^ b) as usize] ^ (self.0 >> 8);
        }
    }
    pub(crate) fn finish(&self) -> u64 {
        !self.0
    }
}

/// Convert the uncompressed tar `input` to eStargz on `out` (see the module docs). `what`
/// names the layer in errors. Returns `out` and what was written.
pub fn write<R: Read, W: Write>(input: R, out: W, opts: &Options, what: &str) -> io::Result<(W, Written)> {
    let input = prioritize(input, &opts.prioritized, what)?;
    let mut w = frames(input, out, opts, Frames::Gzip, what)?;
    // The TOC member: a tar entry with the JSON, then the end of the tar.
    let toc_offset = w.offset;
    let json = toc_json(&w.toc)?;
    let toc_digest = Digest::sha256_of(&json);
    let mut tail = toc_header(json.len() as u64).to_vec();
    tail.extend_from_slice(&json);
    tail.resize(tail.len().next_multiple_of(BLOCK), 0);
    tail.extend_from_slice(&[0u8; 2 * BLOCK]);
    w.diff.update(&tail);
    w.uncompressed += tail.len() as u64;
    let mut gz = Vec::new();
    gzip_member(w.opts.level, &tail, &mut gz)?;
    w.out.write_all(&gz)?;
    w.out.write_all(&footer(toc_offset))?;
    let Writer { out, diff, uncompressed, .. } = w;
    let (out, digest, size) = out.finish();
    Ok((out, Written { digest, size, diff_id: diff.finish(), uncompressed_size: uncompressed, toc_digest }))
}

/// The tar `input` with the `prioritized` files first (in that order, each after its parent
/// directories) and the prefetch landmark after them, as the Go writer orders a layer with
/// `WithPrioritizedFiles` (files not in this layer skipped, the landmark written all the same);
/// every other member follows in its order. Without prioritized files,
/// `input` as it is. Reordering needs the whole tar: it is spooled to an anonymous temp file.
fn prioritize<'a, R: Read + 'a>(input: R, prioritized: &[String], what: &str) -> io::Result<Box<dyn Read + 'a>> {
    use std::io::{Seek, SeekFrom};
    if prioritized.is_empty() {
        return Ok(Box::new(input));
    }
    let mut spool = tempfile::tempfile()?;
    io::copy(&mut { input }, &mut spool)?;
    spool.seek(SeekFrom::Start(0))?;
    // Where each member starts and ends (headers, data, padding) in the spooled tar.
    let mut spans: Vec<(String, u64, u64)> = Vec::new();
    {
        let mut tar = TarReader::new(Stream(io::BufReader::new(&spool)), what, what);
        let mut at = 0u64;
        while let Some(e) = next_entry(&mut tar, what)? {
            let data = io::copy(&mut tar.data(&e.m), &mut io::sink())?;
            let pad = tar.padding(&e.m).map_err(into_io)?.len() as u64;
            let end = at + e.m.raw.len() as u64 + data + pad;
            spans.push((clean_name(&e.name), at, end));
            at = end;
        }
    }
    let mut order: Vec<usize> = Vec::new();
    let mut used = vec![false; spans.len()];
    let mut take = |i: usize, order: &mut Vec<usize>| {
        if !used[i] {
            used[i] = true;
            order.push(i);
        }
    };
    for p in prioritized.iter().map(|p| clean_name(p)) {
        // A file another layer holds is skipped, as `ctr-remote` and nerdctl allow it.
        let Some(i) = spans.iter().position(|(n, _, _)| *n == p) else { continue };
        let mut parents: Vec<&str> = Vec::new();
        let mut dir = p.as_str();
        while let Some((d, _)) = dir.rsplit_once('/') {
            parents.push(d);
            dir = d;
        }
        for d in parents.iter().rev() {
            if let Some(j) = spans.iter().position(|(n, _, _)| n == d) {
                take(j, &mut order);
            }
        }
        take(i, &mut order);
    }
    let rest: Vec<usize> = (0..spans.len()).filter(|i| !order.contains(i)).collect();
    let mut out = tempfile::tempfile()?;
    let mut copy_span = |out: &mut std::fs::File, i: usize| -> io::Result<()> {
        let (_, start, end) = spans[i];
        spool.seek(SeekFrom::Start(start))?;
        io::copy(&mut (&spool).take(end - start), out)?;
        Ok(())
    };
    for &i in &order {
        copy_span(&mut out, i)?;
    }
    out.write_all(&landmark_header(PREFETCH_LANDMARK))?;
    let mut data = [0u8; BLOCK];
    data[0] = 0xf;
    out.write_all(&data)?;
    for i in rest {
        copy_span(&mut out, i)?;
    }
    out.write_all(&[0u8; 2 * BLOCK])?;
    out.seek(SeekFrom::Start(0))?;
    Ok(Box::new(io::BufReader::new(out)))
}

/// The header of a landmark entry: a regular file of one byte (`0xf`, what the Go writer
/// puts in it), mode 0644, owner 0, time 0.
fn landmark_header(name: &str) -> [u8; BLOCK] {
    let mut h = tar::Header::new_ustar();
    h.set_path(name).expect("short name");
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(1);
    h.set_cksum();
    *h.as_bytes()
}

/// The members of the tar `input` as gzip members or zstd frames (see [`Frames`]) on `out`,
/// each file's chunks in the TOC with their offsets and digests. Returns the writer, for the
/// format to add its tail. For zstd:chunked the end of the tar is kept as it was (so the
/// content, and the diff_id, are the input's) and the tar-split record is made on the way.
pub(crate) fn frames<R: Read, W: Write>(
    input: R,
    out: W,
    opts: &Options,
    kind: Frames,
    what: &str,
) -> io::Result<Writer<W>> {
    assert!(opts.chunk_size > 0, "lazy-pull chunk size must be positive");
    let zstd = kind == Frames::Zstd;
    let mut w = Writer {
        out: HashWriter::new(out),
        opts: opts.clone(),
        pool: Pool::new(kind, opts.level, opts.workers, opts.chunk_size),
        toc: Vec::new(),
        digest_from_chunk: Vec::new(),
        diff: Algorithm::Sha256.hasher(),
        uncompressed: 0,
        split: zstd.then(TarSplit::default),
        data: Vec::with_capacity(batch_capacity(opts.chunk_size)),
        spans: Vec::new(),
        cur_start: 0,
        cur_entry: None,
        cur_chunk_len: 0,
        free_data: Vec::new(),
        free_out: Vec::new(),
        offset: 0,
        unames: BTreeMap::new(),
        gnames: BTreeMap::new(),
    };
    let mut tar = TarReader::new(Stream(input), what, what);
    let chunk_size = w.opts.chunk_size;
    while let Some(e) = next_entry(&mut tar, what)? {
        let m = &e.m;
        if !zstd && clean_name(&e.name) == TOC_TAR_NAME {
            // An earlier TOC: the new one replaces it (the Go writer drops it too).
            io::copy(&mut tar.data(m), &mut io::sink())?;
            tar.padding(m).map_err(into_io)?;
            continue;
        }
        let mut ent = w.entry(&e)?;
        w.push(&m.raw);
        if ent.kind == "reg" && m.size > 0 {
            let size = m.size;
            let reg = w.toc.len();
            let mut file_hash = (size > chunk_size).then(|| Algorithm::Sha256.hasher());
            let mut crc = zstd.then(Crc64::new);
            let mut written = 0u64;
            while written < size {
                let chunk = chunk_size.min(size - written);
                if chunk == chunk_size {
                    ent.chunk_size = chunk;
                }
                ent.chunk_offset = written;
                let idx = w.toc.len();
                w.toc.push(std::mem::take(&mut ent));
                w.cut(Some(idx))?;
                let start = w.data.len();
                w.data.reserve(chunk as usize + CHUNK_SLACK);
                w.data.resize(start + chunk as usize, 0);
                tar.data(m).read_exact(&mut w.data[start..])?;
                let data = &w.data[start..];
                w.diff.update(data);
                w.uncompressed += chunk;
                if let Some(h) = file_hash.as_mut() {
                    h.update(data);
                }
                if let Some(c) = crc.as_mut() {
                    c.update(data);
                }
                w.cur_chunk_len = chunk as usize;
                written += chunk;
                ent = TocEntry { name: e.name.clone(), kind: "chunk", ..TocEntry::default() };
            }
            match file_hash {
                Some(h) => w.toc[reg].digest = h.finish().to_string(),
                None => w.digest_from_chunk.push(reg),
            }
            if let Some(s) = w.split.as_mut() {
                s.file(&e.name, size, crc.map(|c| c.finish()));
            }
            if zstd {
                // The padding and the next headers start a frame of their own.
                w.cut(None)?;
            }
        } else {
            if let Some(s) = w.split.as_mut() {
                s.file(&e.name, 0, None);
            }
            if ent.kind == "reg" {
                ent.digest = Digest::sha256_of(b"").to_string();
            }
            w.toc.push(ent);
        }
        let pad = tar.padding(m).map_err(into_io)?;
        w.push(&pad);
        if (w.cur_len() - w.cur_chunk_len) as u64 >= chunk_size {
            w.cut(None)?;
        }
    }
    if zstd {
        // The tar's end as it was (its zero blocks and whatever follows).
        if tar.ended_on_zero_block() {
            w.push(&[0u8; BLOCK]);
        }
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = tar.rest().0.read(&mut buf)?;
            if n == 0 {
                break;
            }
            w.push(&buf[..n]);
            if w.cur_len() as u64 >= chunk_size {
                w.cut(None)?;
            }
        }
        if let Some(s) = w.split.as_mut() {
            s.segment();
        }
    }
    w.cut(None)?;
    w.flush_batch()?;
    while w.take(true)? {}
    for reg in std::mem::take(&mut w.digest_from_chunk) {
        w.toc[reg].digest = w.toc[reg].chunk_digest.clone();
    }
    Ok(w)
}

/// The TOC as the Go writer marshals it (`json.MarshalIndent(toc, "", "\t")`).
fn toc_json(entries: &[TocEntry]) -> io::Result<Vec<u8>> {
    let mut json = Vec::new();
    let mut ser =
        serde_json::Serializer::with_formatter(&mut json, serde_json::ser::PrettyFormatter::with_indent(b"\t"));
    Toc { version: 1, entries }.serialize(&mut ser).map_err(io::Error::other)?;
    Ok(json)
}

/// The header of the TOC's tar entry: a regular file, mode 0644, owner 0, time 0.
fn toc_header(size: u64) -> [u8; BLOCK] {
    let mut h = tar::Header::new_ustar();
    h.set_path(TOC_TAR_NAME).expect("short name");
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(size);
    h.set_cksum();
    *h.as_bytes()
}

/// The 51-byte footer: an empty gzip member (stored, as Go's `NoCompression` writes it) whose
/// extra field holds the TOC member's offset.
fn footer(toc_offset: u64) -> [u8; FOOTER_SIZE] {
    let mut f = [0u8; FOOTER_SIZE];
    let subfield = format!("{toc_offset:016x}STARGZ");
    let mut v = vec![0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 0xff];
    v.extend_from_slice(&(4 + subfield.len() as u16).to_le_bytes());
    v.extend_from_slice(b"SG");
    v.extend_from_slice(&(subfield.len() as u16).to_le_bytes());
    v.extend_from_slice(subfield.as_bytes());
    // A final stored block of length 0, then CRC32 and size of the empty content.
    v.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    v.extend_from_slice(&[0; 8]);
    f.copy_from_slice(&v);
    f
}

/// The TOC offset a footer names, if `tail` (a blob's last bytes) ends with an eStargz footer.
pub fn footer_toc_offset(tail: &[u8]) -> Option<u64> {
    let f = tail.get(tail.len().checked_sub(FOOTER_SIZE)?..)?;
    if f[..4] != [0x1f, 0x8b, 8, 4] || &f[12..14] != b"SG" || &f[32..38] != b"STARGZ" {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(&f[16..32]).ok()?, 16).ok()
}

/// Write the plain tar of an eStargz layer's uncompressed content `input` to `out`: its
/// members without the TOC entry and the prefetch landmarks, then the tar's end.
pub fn to_plain_tar(input: impl Read, out: &mut impl Write, what: &str) -> io::Result<()> {
    filter_members(input, out, what, |name| matches!(name, TOC_TAR_NAME | PREFETCH_LANDMARK | NO_PREFETCH_LANDMARK))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_tar() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |name: &str, kind: tar::EntryType, data: &[u8], mtime: u64| {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(kind);
            h.set_size(data.len() as u64);
            h.set_mode(if kind == tar::EntryType::Directory { 0o755 } else { 0o644 });
            h.set_mtime(mtime);
            h.set_username("root").unwrap();
            b.append_data(&mut h, name, data).unwrap();
        };
        add("app/", tar::EntryType::Directory, b"", 1_700_000_000);
        add("app/small.txt", tar::EntryType::Regular, b"hello\n", 0);
        add("app/empty", tar::EntryType::Regular, b"", 0);
        let big: Vec<u8> = (0..300_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        add("app/big.bin", tar::EntryType::Regular, &big, 0);
        add("app/z.txt", tar::EntryType::Regular, &b"z".repeat(1000), 0);
        b.into_inner().unwrap()
    }

    fn gunzip(b: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(b).read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn reproducible_whatever_the_thread_count_and_reversible() {
        let tar = sample_tar();
        let mut outs = Vec::new();
        for workers in [1, 3] {
            let opts = Options { level: 6, chunk_size: 256 << 10, workers, prioritized: Vec::new() };
            let (blob, written) = write(&tar[..], Vec::new(), &opts, "test").unwrap();
            assert_eq!(written.digest, Digest::sha256_of(&blob));
            outs.push((blob, written));
        }
        assert_eq!(outs[0], outs[1]);
        let (blob, written) = &outs[0];
        let plain = gunzip(blob);
        assert_eq!(written.diff_id, Digest::sha256_of(&plain));
        assert_eq!(written.uncompressed_size, plain.len() as u64);
        // The entries come first, byte for byte; then the TOC entry.
        assert_eq!(plain[..tar.len() - 1024], tar[..tar.len() - 1024]);
        let mut back = Vec::new();
        to_plain_tar(&plain[..], &mut back, "test").unwrap();
        assert_eq!(back, tar);

        // The footer points at the TOC member, which holds the TOC entry.
        let toc_off = footer_toc_offset(blob).unwrap() as usize;
        let toc_tar = gunzip(&blob[toc_off..]);
        let mut a = tar::Archive::new(&toc_tar[..]);
        let mut e = a.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(e.path().unwrap().to_str().unwrap(), TOC_TAR_NAME);
        let mut json = Vec::new();
        e.read_to_end(&mut json).unwrap();
        assert_eq!(Digest::sha256_of(&json), written.toc_digest);
        let toc: serde_json::Value = serde_json::from_slice(&json).unwrap();
        let entries = toc["entries"].as_array().unwrap();
        let big: Vec<_> = entries.iter().filter(|e| e["name"] == "app/big.bin" || e["type"] == "chunk").collect();
        assert_eq!(big.len(), 5, "1.2 MB in 256 KiB chunks");
        // Every chunk's bytes decompress from its offset and match its digest.
        for c in &big {
            let off = c["offset"].as_u64().unwrap() as usize;
            let chunk_offset = c["chunkOffset"].as_u64().unwrap_or(0);
            let len = c["chunkSize"].as_u64().unwrap_or(1_200_000 - chunk_offset) as usize;
            let mut d = flate2::read::GzDecoder::new(&blob[off..]);
            let mut chunk = vec![0; len];
            d.read_exact(&mut chunk).unwrap();
            assert_eq!(Digest::sha256_of(&chunk).to_string(), c["chunkDigest"].as_str().unwrap());
        }
        assert_eq!(entries[0]["modtime"], "2023-11-14T22:13:20Z");
        assert_eq!(entries[0]["userName"], "root");
        assert!(entries[1].get("userName").is_none(), "names once per id");
        assert_eq!(entries[2]["digest"], Digest::sha256_of(b"").to_string());
    }

    #[test]
    fn footer_is_51_bytes_and_a_gzip_member() {
        let f = footer(0x1234);
        assert_eq!(footer_toc_offset(&f), Some(0x1234));
        assert!(gunzip(&f).is_empty());
    }
}
