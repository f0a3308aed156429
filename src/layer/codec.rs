//! The one layer codec: the [`Compression`] type (one parser, one default level per
//! algorithm, one range check), one encoder per algorithm ([`Encoder`]) used by every path that
//! compresses a layer (builds, `copy --dest-compress`), and one decompression dispatch
//! ([`decompress`] for readers, [`WriteDecoder`] for push-style hashing): by media type, falling
//! back to the magic bytes.
//!
//! Equal input at equal level gives equal bytes whichever command wrote it and however many
//! cores the machine has: gzip is the parallel encoder of `pgzip` (fixed blocks, one member),
//! zstd runs multithreaded with a fixed job size (zstd's output does not depend on the number of
//! workers once there is at least one).
//!
//! The lazy-pull formats are compressions too (`estargz`, `zstd:chunked`): gzip and zstd
//! streams cut per file with a TOC, written whole-layer by [`compress_layer`] (which
//! dispatches every compression, so builds, `append`, `flatten` and `copy --dest-compress`
//! share it) rather than by a stream [`Encoder`].

use std::io::{self, BufRead, Read, Write};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::pgzip::ParGzEncoder;
use crate::error::{Error, Result};
use crate::model::media;

/// gzip level when none is given (`gzip`).
pub const DEFAULT_GZIP_LEVEL: u32 = 6;
/// zstd level when none is given (`zstd`).
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;
/// gzip levels: 0 (store) to 9 (smallest).
pub const GZIP_LEVELS: std::ops::RangeInclusive<u32> = 0..=9;
/// zstd levels: 1 to 22.
pub const ZSTD_LEVELS: std::ops::RangeInclusive<i32> = 1..=22;

/// zstd multithreaded job size (bytes); part of what makes zstd layers reproducible.
const ZSTD_JOB_SIZE: u32 = 2 << 20;

/// How a layer's bytes are compressed, without a level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// A plain tar.
    None,
    /// gzip (one or more members).
    Gzip,
    /// zstd (one or more frames).
    Zstd,
}

impl Algorithm {
    /// The algorithm of a regular (distributable) image layer, from its media type; `None` for
    /// anything else (foreign or non-distributable layers, artifact blobs, unknown types).
    pub fn of_layer_media_type(media_type: &str) -> Option<Algorithm> {
        match media_type {
            media::OCI_LAYER_TAR | media::DOCKER_LAYER_TAR => Some(Algorithm::None),
            media::OCI_LAYER_GZIP | media::DOCKER_LAYER_GZIP => Some(Algorithm::Gzip),
            media::OCI_LAYER_ZSTD => Some(Algorithm::Zstd),
            _ => None,
        }
    }

    /// The algorithm the first bytes of a stream show (gzip and zstd magic), `None` for
    /// anything else (read as uncompressed, as docker's loader does). Needs up to 4 bytes.
    pub fn sniff(head: &[u8]) -> Algorithm {
        match head {
            [0x1f, 0x8b, ..] => Algorithm::Gzip,
            [0x28, 0xb5, 0x2f, 0xfd, ..] => Algorithm::Zstd,
            _ => Algorithm::None,
        }
    }

    /// The layer media type of this algorithm in an OCI (`oci`) or Docker manifest; `None`:
    /// zstd, which a Docker manifest cannot describe.
    pub fn layer_media_type(self, oci: bool) -> Option<&'static str> {
        Some(match (self, oci) {
            (Algorithm::None, true) => media::OCI_LAYER_TAR,
            (Algorithm::Gzip, true) => media::OCI_LAYER_GZIP,
            (Algorithm::Zstd, true) => media::OCI_LAYER_ZSTD,
            (Algorithm::None, false) => media::DOCKER_LAYER_TAR,
            (Algorithm::Gzip, false) => media::DOCKER_LAYER_GZIP,
            (Algorithm::Zstd, false) => return None,
        })
    }
}

/// Layer compression. Text form: `none`, `gzip`, `gzip:9`, `zstd`, `zstd:19`, `estargz`,
/// `estargz:9`, `zstd:chunked`, `zstd:chunked:19`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// An uncompressed tar.
    None,
    /// gzip at `level` (0-9).
    Gzip {
        /// 0 (store) to 9 (smallest).
        level: u32,
    },
    /// zstd at `level` (1-22).
    Zstd {
        /// 1 to 22.
        level: i32,
    },
    /// eStargz ([`super::estargz`]): gzip members per file chunk and a TOC, at this gzip level.
    Estargz {
        /// 0 to 9.
        level: u32,
    },
    /// zstd:chunked ([`super::zstdchunked`]): zstd frames per file chunk, a TOC and tar-split,
    /// at this zstd level.
    ZstdChunked {
        /// 1 to 22.
        level: i32,
    },
}

impl Default for Compression {
    fn default() -> Self {
        Compression::Gzip { level: DEFAULT_GZIP_LEVEL }
    }
}

impl Compression {
    /// `algorithm` at `level` (its default level when `None`), range-checked. `level` is the
    /// text after the colon.
    pub fn from_parts(algorithm: &str, level: Option<&str>) -> Result<Compression> {
        let text = match level {
            Some(l) => format!("{algorithm}:{l}"),
            None => algorithm.to_string(),
        };
        let bad = || {
            Error::Unsupported(format!(
                "compression {text:?}: expected none, gzip[:0-9], zstd[:1-22], estargz[:0-9] or zstd:chunked[:1-22]"
            ))
        };
        match (algorithm, level) {
            ("none", None) => Ok(Compression::None),
            ("gzip", None) => Ok(Compression::Gzip { level: DEFAULT_GZIP_LEVEL }),
            ("zstd", None) => Ok(Compression::Zstd { level: DEFAULT_ZSTD_LEVEL }),
            ("estargz", None) => Ok(Compression::Estargz { level: DEFAULT_GZIP_LEVEL }),
            ("zstd:chunked", None) => Ok(Compression::ZstdChunked { level: DEFAULT_ZSTD_LEVEL }),
            ("gzip", Some(l)) => level_in(l, GZIP_LEVELS).map(|level| Compression::Gzip { level }).ok_or_else(bad),
            ("zstd", Some(l)) => level_in(l, ZSTD_LEVELS).map(|level| Compression::Zstd { level }).ok_or_else(bad),
            ("estargz", Some(l)) => {
                level_in(l, GZIP_LEVELS).map(|level| Compression::Estargz { level }).ok_or_else(bad)
            }
            ("zstd:chunked", Some(l)) => {
                level_in(l, ZSTD_LEVELS).map(|level| Compression::ZstdChunked { level }).ok_or_else(bad)
            }
            _ => Err(bad()),
        }
    }

    /// The algorithm, without the level.
    pub fn algorithm(self) -> Algorithm {
        match self {
            Compression::None => Algorithm::None,
            Compression::Gzip { .. } | Compression::Estargz { .. } => Algorithm::Gzip,
            Compression::Zstd { .. } | Compression::ZstdChunked { .. } => Algorithm::Zstd,
        }
    }

    /// Whether it is a lazy-pull format (written whole-layer, with a TOC).
    pub fn is_lazy(self) -> bool {
        matches!(self, Compression::Estargz { .. } | Compression::ZstdChunked { .. })
    }

    /// Media type of an (OCI) image layer with this compression.
    pub fn layer_media_type(self) -> &'static str {
        self.algorithm().layer_media_type(true).expect("every algorithm has an OCI layer type")
    }

    /// The one encoder of this compression over `w`.
    pub fn encoder<W: Write>(self, w: W) -> io::Result<Encoder<W>> {
        Encoder::new(w, self)
    }
}

/// `text` as a level within `range`.
fn level_in<T: FromStr + PartialOrd>(text: &str, range: std::ops::RangeInclusive<T>) -> Option<T> {
    text.parse().ok().filter(|l| range.contains(l))
}

impl FromStr for Compression {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        if let Some(rest) = s.strip_prefix("zstd:chunked") {
            match rest.strip_prefix(':') {
                Some(level) => return Compression::from_parts("zstd:chunked", Some(level)),
                None if rest.is_empty() => return Compression::from_parts("zstd:chunked", None),
                None => {}
            }
        }
        match s.split_once(':') {
            Some((name, level)) => Compression::from_parts(name, Some(level)),
            None => Compression::from_parts(s, None),
        }
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Compression::None => write!(f, "none"),
            Compression::Gzip { level } => write!(f, "gzip:{level}"),
            Compression::Zstd { level } => write!(f, "zstd:{level}"),
            Compression::Estargz { level } => write!(f, "estargz:{level}"),
            Compression::ZstdChunked { level } => write!(f, "zstd:chunked:{level}"),
        }
    }
}

impl Serialize for Compression {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Compression {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// The compressor of a [`Compression`] over a writer; `finish` writes the trailer and returns
/// the writer.
pub struct Encoder<W: Write>(Enc<W>);

enum Enc<W: Write> {
    Plain(W),
    /// Parallel, thread-count-independent gzip (see `pgzip`): flate2's `GzEncoder` uses one core.
    Gzip(Box<ParGzEncoder<W>>),
    /// Multithreaded zstd with a fixed job size.
    Zstd(Box<zstd::stream::write::Encoder<'static, W>>),
}

impl<W: Write> Encoder<W> {
    fn new(w: W, c: Compression) -> io::Result<Self> {
        Ok(Encoder(match c {
            Compression::Estargz { .. } | Compression::ZstdChunked { .. } => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("{c} is a whole-layer format: write it with layer::codec::compress_layer"),
                ))
            }
            Compression::None => Enc::Plain(w),
            Compression::Gzip { level } => Enc::Gzip(Box::new(ParGzEncoder::new(w, flate2::Compression::new(level)))),
            Compression::Zstd { level } => {
                let mut e = zstd::stream::write::Encoder::new(w, level)?;
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
                e.multithread(cores.max(2))?;
                // 2 MiB jobs instead of zstd's default (4x the window, 8 MiB at level 3): each
                // worker holds a job's input and output, so this keeps peak memory well under
                // 64 MiB. Output still does not depend on the number of workers.
                e.set_parameter(zstd::stream::raw::CParameter::JobSize(ZSTD_JOB_SIZE))?;
                Enc::Zstd(Box::new(e))
            }
        }))
    }

    /// Write what is buffered and the trailer; the inner writer. zstd ends with a flush and
    /// then the end of the frame, as layers were always written (their digests stay).
    pub fn finish(self) -> io::Result<W> {
        match self.0 {
            Enc::Plain(w) => Ok(w),
            Enc::Gzip(e) => e.finish(),
            Enc::Zstd(mut e) => {
                e.flush()?;
                e.finish()
            }
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.0 {
            Enc::Plain(w) => w.write(buf),
            Enc::Gzip(e) => e.write(buf),
            Enc::Zstd(e) => e.write(buf),
        }
    }
    /// Flushes the inner writer only: a zstd flush would end a block early, so the bytes
    /// would depend on when a caller flushes rather than on the input alone.
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.0 {
            Enc::Plain(w) => w.flush(),
            Enc::Gzip(e) => e.flush(),
            Enc::Zstd(e) => e.get_mut().flush(),
        }
    }
}

/// Options of the lazy-pull formats; the other compressions ignore them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LazyOptions {
    /// Largest chunk of a file's data per gzip member or zstd frame (`--estargz-chunk-size`);
    /// `None`: 4 MiB.
    pub chunk_size: Option<u64>,
    /// eStargz: files to put first, followed by the prefetch landmark (`--estargz-prioritized`).
    pub prioritized: Vec<String>,
}

/// What [`compress_layer`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompressedLayer {
    /// Digest of the uncompressed content when it is not the input tar's (eStargz adds its
    /// TOC entry and landmarks); `None`: the input's.
    pub diff_id: Option<crate::model::digest::Digest>,
    /// Annotations the layer's descriptor carries (the lazy formats' TOC digests, positions).
    pub annotations: Vec<(&'static str, String)>,
}

/// Compress the uncompressed layer tar `tar` as `c` onto `out`: the one entry point of every
/// compression, stream encoders and whole-layer lazy formats alike. `what` names the layer in
/// errors. Returns `out` (the encoder finished) and what changed.
pub fn compress_layer<R: Read, W: Write>(
    c: Compression,
    lazy: &LazyOptions,
    mut tar: R,
    out: W,
    what: &str,
) -> io::Result<(W, CompressedLayer)> {
    let opts = |level: u32| {
        let mut o = super::estargz::Options::new(level);
        if let Some(size) = lazy.chunk_size {
            o.chunk_size = size;
        }
        o.prioritized = lazy.prioritized.clone();
        o
    };
    match c {
        Compression::Estargz { level } => {
            let (w, written) = super::estargz::write(tar, out, &opts(level), what)?;
            Ok((
                w,
                CompressedLayer { diff_id: Some(written.diff_id.clone()), annotations: written.annotations().to_vec() },
            ))
        }
        Compression::ZstdChunked { level } => {
            let (w, written) = super::zstdchunked::write(tar, out, &opts(level as u32), what)?;
            Ok((w, CompressedLayer { diff_id: None, annotations: written.annotations }))
        }
        _ => {
            let mut e = c.encoder(out)?;
            io::copy(&mut tar, &mut e)?;
            Ok((e.finish()?, CompressedLayer { diff_id: None, annotations: Vec::new() }))
        }
    }
}

/// `r` decompressed as `algorithm`: gzip reads every member, zstd every frame.
pub fn decoder<'a, R: BufRead + Send + 'a>(algorithm: Algorithm, r: R) -> io::Result<Box<dyn Read + Send + 'a>> {
    Ok(match algorithm {
        Algorithm::None => Box::new(r),
        Algorithm::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(r)),
        Algorithm::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(r)?),
    })
}

/// Whether `head` starts a stream of a compression that archives `ADD` extracts may use but
/// layers never do: xz and bzip2 (BuildKit extracts both).
pub fn is_archive_only_compression(head: &[u8]) -> bool {
    matches!(head, [0xfd, b'7', b'z', b'X', b'Z', 0, ..] | [b'B', b'Z', b'h', ..])
}

/// The decompression of a local archive (`ADD`), by the magic bytes `head` it starts with:
/// xz and bzip2 (every stream of a multi-stream file), else the layer algorithms.
pub fn archive_decoder<'a, R: BufRead + Send + 'a>(head: &[u8], r: R) -> io::Result<Box<dyn Read + Send + 'a>> {
    match head {
        [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => Ok(Box::new(liblzma::bufread::XzDecoder::new_multi_decoder(r))),
        [b'B', b'Z', b'h', ..] => Ok(Box::new(bzip2::bufread::MultiBzDecoder::new(r))),
        _ => decoder(Algorithm::sniff(head), r),
    }
}

/// The one decompression dispatch for a layer read as a stream: by `media_type` when it names
/// a tar layer, otherwise (no media type, or one that does not say) by the magic bytes at the
/// start of `r`.
pub fn decompress<'a, R: BufRead + Send + 'a>(
    media_type: Option<&str>,
    mut r: R,
) -> io::Result<Box<dyn Read + Send + 'a>> {
    let algorithm = match media_type.and_then(Algorithm::of_layer_media_type) {
        Some(a) => a,
        None => Algorithm::sniff(peek(&mut r, 4)?),
    };
    decoder(algorithm, r)
}

/// The first bytes of the file `path`, as many as fit in `buf` (fewer for a shorter file):
/// what [`Algorithm::sniff`] and other magic checks look at.
pub fn read_head(path: &std::path::Path, buf: &mut [u8]) -> io::Result<usize> {
    let mut f = std::fs::File::open(path)?;
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Up to `n` bytes at the start of `r` without consuming them (fewer at the end of input or
/// when the buffer is smaller).
fn peek<R: BufRead>(r: &mut R, n: usize) -> io::Result<&[u8]> {
    let buf = r.fill_buf()?;
    Ok(&buf[..buf.len().min(n)])
}

/// Decompression push-style (for hashing a layer's uncompressed bytes as it streams by, in
/// constant memory): the algorithm from the media type, or sniffed from the first 4 bytes.
pub enum WriteDecoder<W: Write> {
    /// Waiting for the first bytes to choose.
    Sniff(Vec<u8>, Option<W>),
    /// Uncompressed.
    Plain(W),
    /// gzip, every member.
    Gzip(Box<flate2::write::MultiGzDecoder<W>>),
    /// zstd.
    Zstd(Box<zstd::stream::write::Decoder<'static, W>>),
}

impl<W: Write> WriteDecoder<W> {
    /// A decoder into `w` that chooses by the magic bytes of what is written first.
    pub fn sniffing(w: W) -> Self {
        WriteDecoder::Sniff(Vec::with_capacity(4), Some(w))
    }

    /// A decoder of `algorithm` into `w`.
    pub fn of(algorithm: Algorithm, w: W) -> io::Result<Self> {
        Ok(match algorithm {
            Algorithm::None => WriteDecoder::Plain(w),
            Algorithm::Gzip => WriteDecoder::Gzip(Box::new(flate2::write::MultiGzDecoder::new(w))),
            Algorithm::Zstd => WriteDecoder::Zstd(Box::new(zstd::stream::write::Decoder::new(w)?)),
        })
    }

    /// Flush what is left and return the inner writer. A stream shorter than the sniff (under
    /// 4 bytes) is passed on as it is.
    pub fn finish(self) -> io::Result<W> {
        match self {
            WriteDecoder::Sniff(head, w) => {
                let mut w = w.expect("writer present until chosen");
                w.write_all(&head)?;
                Ok(w)
            }
            WriteDecoder::Plain(w) => Ok(w),
            WriteDecoder::Gzip(mut d) => {
                d.try_finish()?;
                d.finish()
            }
            WriteDecoder::Zstd(mut d) => {
                d.flush()?;
                Ok(d.into_inner())
            }
        }
    }
}

impl<W: Write> Write for WriteDecoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let WriteDecoder::Sniff(head, w) = self {
            let take = (4 - head.len()).min(buf.len());
            head.extend_from_slice(&buf[..take]);
            if head.len() < 4 {
                return Ok(take);
            }
            let head = std::mem::take(head);
            let w = w.take().expect("writer present until chosen");
            *self = WriteDecoder::of(Algorithm::sniff(&head), w)?;
            self.write_all(&head)?;
            return Ok(take);
        }
        match self {
            WriteDecoder::Sniff(..) => unreachable!("chosen above"),
            WriteDecoder::Plain(w) => w.write(buf),
            WriteDecoder::Gzip(d) => d.write(buf),
            WriteDecoder::Zstd(d) => d.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            WriteDecoder::Sniff(..) => Ok(()),
            WriteDecoder::Plain(w) => w.flush(),
            WriteDecoder::Gzip(d) => d.flush(),
            WriteDecoder::Zstd(d) => d.flush(),
        }
    }
}

/// A reader that fails once more than `limit` bytes come out of `inner` (the bound on what a
/// compressed archive may expand to); its `exceeded` flag tells that io error apart from
/// others (the tar reader turns it into its own).
pub(crate) struct Bounded<R> {
    inner: R,
    left: u64,
    exceeded: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl<R> Bounded<R> {
    /// `inner`, cut off after `limit` bytes; `exceeded` turns true when the bound is hit.
    pub(crate) fn new(inner: R, limit: u64, exceeded: std::sync::Arc<std::sync::atomic::AtomicBool>) -> Self {
        Bounded { inner, left: limit, exceeded }
    }
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            // At the bound: only the end of the stream is fine.
            let mut probe = [0u8; 1];
            if self.inner.read(&mut probe)? == 0 {
                return Ok(0);
            }
            self.exceeded.store(true, std::sync::atomic::Ordering::Relaxed);
            return Err(io::Error::other("expands beyond its bound"));
        }
        let n = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..n])?;
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_parses_with_one_range_check() {
        assert_eq!("zstd:19".parse::<Compression>().unwrap(), Compression::Zstd { level: 19 });
        assert_eq!("gzip".parse::<Compression>().unwrap(), Compression::Gzip { level: DEFAULT_GZIP_LEVEL });
        assert_eq!("zstd".parse::<Compression>().unwrap(), Compression::Zstd { level: DEFAULT_ZSTD_LEVEL });
        assert_eq!("none".parse::<Compression>().unwrap(), Compression::None);
        assert_eq!("estargz".parse::<Compression>().unwrap(), Compression::Estargz { level: DEFAULT_GZIP_LEVEL });
        assert_eq!("zstd:chunked:19".parse::<Compression>().unwrap(), Compression::ZstdChunked { level: 19 });
        assert_eq!("zstd:chunked".parse::<Compression>().unwrap().to_string(), "zstd:chunked:3");
        for bad in [
            "gzip:10",
            "zstd:0",
            "zstd:23",
            "lz4",
            "none:1",
            "gzip:x",
            "gzip:-1",
            "zstd:chunked:0",
            "estargz:10",
            "zstd:chunkedx",
        ] {
            assert!(bad.parse::<Compression>().is_err(), "{bad}");
        }
        assert_eq!(Compression::from_parts("zstd", Some("5")).unwrap().to_string(), "zstd:5");
    }

    fn encode(c: Compression, data: &[u8]) -> Vec<u8> {
        let mut e = c.encoder(Vec::new()).unwrap();
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn both_decoders_read_what_the_encoder_writes() {
        let data = b"layer content ".repeat(50_000);
        for c in [Compression::None, Compression::Gzip { level: 1 }, Compression::Zstd { level: 3 }] {
            let enc = encode(c, &data);
            // By media type, and by magic bytes.
            for mt in [Some(c.layer_media_type()), None] {
                let mut out = Vec::new();
                decompress(mt, &enc[..]).unwrap().read_to_end(&mut out).unwrap();
                assert_eq!(out, data, "{c} {mt:?}");
                let mut w = match mt.and_then(Algorithm::of_layer_media_type) {
                    Some(a) => WriteDecoder::of(a, Vec::new()).unwrap(),
                    None => WriteDecoder::sniffing(Vec::new()),
                };
                for chunk in enc.chunks(3) {
                    w.write_all(chunk).unwrap();
                }
                assert_eq!(w.finish().unwrap(), data, "{c} {mt:?} push-style");
            }
        }
    }

    #[test]
    fn zstd_bytes_do_not_depend_on_the_worker_count() {
        let data: Vec<u8> = (0..6u32 << 20).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8 & 0x3f).collect();
        let ours = encode(Compression::Zstd { level: 3 }, &data);
        let mut e = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        e.multithread(7).unwrap();
        e.set_parameter(zstd::stream::raw::CParameter::JobSize(ZSTD_JOB_SIZE)).unwrap();
        e.write_all(&data).unwrap();
        e.flush().unwrap();
        assert_eq!(ours, e.finish().unwrap());
        // A caller's flush in the middle changes nothing.
        let mut mid = Compression::Zstd { level: 3 }.encoder(Vec::new()).unwrap();
        mid.write_all(&data[..1000]).unwrap();
        mid.flush().unwrap();
        mid.write_all(&data[1000..]).unwrap();
        assert_eq!(ours, mid.finish().unwrap());
    }
}
