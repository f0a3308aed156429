//! zstd:chunked layers, as containers/storage writes them (`pkg/chunked/compressor`): a zstd
//! stream of many frames, so podman and CRI-O can fetch and decompress single files (partial
//! pulls) and reuse the files they already have.
//!
//! Layout (what [`write`] produces from a tar; the frames are cut by the same engine as
//! eStargz's members, [`super::estargz::frames`]):
//! - the tar's bytes unchanged, in zstd frames: a file's data (each chunk of at most
//!   [`Options::chunk_size`](super::estargz::Options)) in frames of its own, the padding and
//!   headers between files in others;
//! - a skippable frame with the TOC ("manifest"): `{"version":1,"entries":[...]}`, one entry
//!   per member (type, name, mode, owner, time, file `digest`, `offset`/`endOffset` of its
//!   frames, and for a file of several chunks each chunk's `chunkOffset`, `chunkSize`,
//!   `chunkDigest`), zstd-compressed;
//! - a skippable frame with the tar-split record (zstd-compressed JSON lines), from which the
//!   exact tar is rebuilt after a partial pull;
//! - a skippable frame with the 64-byte footer (manifest offset and sizes, type 1, tar-split
//!   offset and sizes, the `GNUlInUx` magic).
//!
//! A zstd decoder skips skippable frames, so the layer's content is the input tar byte for
//! byte: the diff_id does not change, and every reader of zstd layers reads it. The layer's
//! descriptor names the manifest in annotations of both generations of containers/storage:
//! `io.github.containers.zstd-chunked.*` (manifest checksum and position, tar-split position;
//! containers/storage 1.45 and later) and `io.containers.zstd-chunked.*` (checksum and
//! position; 1.43, Debian 12's podman).
//!
//! Reproducible and parallel as eStargz is: frame boundaries depend only on the input and the
//! chunk size, frames are compressed independently by several threads.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

use serde::Serialize;

use super::estargz::{frames, zstd_frame, Frames, Options, TocEntry};
use crate::model::digest::Digest;

/// Layer annotation (containers/storage 1.45+): digest of the compressed TOC.
pub const ANNOTATION_MANIFEST_CHECKSUM: &str = "io.github.containers.zstd-chunked.manifest-checksum";
/// Layer annotation (1.45+): `offset:length:uncompressed length:type` of the TOC.
pub const ANNOTATION_MANIFEST_POSITION: &str = "io.github.containers.zstd-chunked.manifest-position";
/// Layer annotation (1.45+): `offset:length:uncompressed length` of the tar-split data.
pub const ANNOTATION_TARSPLIT_POSITION: &str = "io.github.containers.zstd-chunked.tarsplit-position";
/// Layer annotation (1.45 to 1.52): digest of the compressed tar-split data.
pub const ANNOTATION_TARSPLIT_CHECKSUM: &str = "io.github.containers.zstd-chunked.tarsplit-checksum";
/// Layer annotation of containers/storage 1.43 (Debian 12): digest of the compressed TOC.
pub const ANNOTATION_LEGACY_MANIFEST_CHECKSUM: &str = "io.containers.zstd-chunked.manifest-checksum";
/// Layer annotation of containers/storage 1.43: `offset:length:uncompressed length:type`.
pub const ANNOTATION_LEGACY_MANIFEST_POSITION: &str = "io.containers.zstd-chunked.manifest-position";
/// The footer's magic (`GNUlInUx`).
pub const FOOTER_MAGIC: [u8; 8] = [0x47, 0x6e, 0x55, 0x6c, 0x49, 0x6e, 0x55, 0x78];
/// Size of the footer's data.
pub const FOOTER_SIZE: usize = 64;
/// The TOC type containers/storage writes (CRFS-compatible).
const MANIFEST_TYPE_CRFS: u64 = 1;
/// A zstd skippable frame's magic (little endian 0x184D2A50).
const SKIPPABLE_MAGIC: [u8; 4] = [0x50, 0x2a, 0x4d, 0x18];

/// What [`write`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    /// Digest of the compressed blob.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
    /// Digest of the uncompressed content: the input tar's.
    pub diff_id: Digest,
    /// The layer annotations (both generations of containers/storage).
    pub annotations: Vec<(&'static str, String)>,
}

/// Whether a layer descriptor's annotations say it is zstd:chunked.
pub fn is_zstd_chunked(annotations: &BTreeMap<String, String>) -> bool {
    annotations.contains_key(ANNOTATION_MANIFEST_CHECKSUM)
        || annotations.contains_key(ANNOTATION_LEGACY_MANIFEST_CHECKSUM)
}

/// The annotation keys of the format (removed when a layer is converted to another).
pub const ANNOTATIONS: [&str; 6] = [
    ANNOTATION_MANIFEST_CHECKSUM,
    ANNOTATION_MANIFEST_POSITION,
    ANNOTATION_TARSPLIT_POSITION,
    ANNOTATION_TARSPLIT_CHECKSUM,
    ANNOTATION_LEGACY_MANIFEST_CHECKSUM,
    ANNOTATION_LEGACY_MANIFEST_POSITION,
];

#[derive(Serialize)]
struct Toc<'a> {
    version: u32,
    entries: &'a [Entry],
    #[serde(rename = "tarSplitDigest")]
    tar_split_digest: String,
}

/// One TOC entry, fields in the Go struct's (`internal.FileMetadata`) order, empty ones left
/// out (`omitempty`).
#[derive(Serialize, Default)]
struct Entry {
    #[serde(rename = "type")]
    kind: &'static str,
    name: String,
    #[serde(rename = "linkName", skip_serializing_if = "String::is_empty")]
    link_name: String,
    #[serde(skip_serializing_if = "is_zero")]
    mode: u64,
    #[serde(skip_serializing_if = "is_zero")]
    size: u64,
    #[serde(skip_serializing_if = "is_zero")]
    uid: u64,
    #[serde(skip_serializing_if = "is_zero")]
    gid: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    modtime: String,
    #[serde(rename = "devMajor", skip_serializing_if = "is_zero")]
    dev_major: u64,
    #[serde(rename = "devMinor", skip_serializing_if = "is_zero")]
    dev_minor: u64,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    xattrs: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    digest: String,
    #[serde(skip_serializing_if = "is_zero")]
    offset: u64,
    #[serde(rename = "endOffset", skip_serializing_if = "is_zero")]
    end_offset: u64,
    #[serde(rename = "chunkSize", skip_serializing_if = "is_zero")]
    chunk_size: u64,
    #[serde(rename = "chunkOffset", skip_serializing_if = "is_zero")]
    chunk_offset: u64,
    #[serde(rename = "chunkDigest", skip_serializing_if = "String::is_empty")]
    chunk_digest: String,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The containers/storage entries of the shared TOC (eStargz's shape): a file of one chunk
/// has its frames' `offset`/`endOffset` and no chunk fields; a file of several has them on
/// every chunk, as the Go writer lays them out.
fn entries(toc: &[TocEntry]) -> Vec<Entry> {
    let mut out: Vec<Entry> = Vec::with_capacity(toc.len());
    let mut i = 0;
    while i < toc.len() {
        let e = &toc[i];
        let chunks = toc[i + 1..].iter().take_while(|c| c.kind == "chunk").count();
        let mut head = Entry {
            kind: e.kind,
            name: e.name.clone(),
            link_name: e.link_name.clone(),
            mode: e.mode,
            size: e.size,
            uid: e.uid,
            gid: e.gid,
            modtime: crate::model::time::rfc3339(e.mtime as i64),
            dev_major: e.dev_major,
            dev_minor: e.dev_minor,
            xattrs: e.xattrs.clone(),
            digest: if e.kind == "reg" && e.size > 0 { e.digest.clone() } else { String::new() },
            offset: e.offset,
            end_offset: toc[i + chunks].end_offset,
            ..Entry::default()
        };
        if chunks > 0 {
            let size_of = |k: usize| {
                let next = toc.get(i + k + 1).filter(|c| c.kind == "chunk").map_or(e.size, |c| c.chunk_offset);
                next - toc[i + k].chunk_offset
            };
            head.chunk_size = size_of(0);
            head.chunk_digest = e.chunk_digest.clone();
            out.push(head);
            for k in 1..=chunks {
                let c = &toc[i + k];
                out.push(Entry {
                    kind: "chunk",
                    name: e.name.clone(),
                    offset: c.offset,
                    chunk_size: size_of(k),
                    chunk_offset: c.chunk_offset,
                    chunk_digest: c.chunk_digest.clone(),
                    ..Entry::default()
                });
            }
        } else {
            out.push(head);
        }
        i += chunks + 1;
    }
    out
}

fn skippable(out: &mut impl Write, data: &[u8]) -> io::Result<()> {
    out.write_all(&SKIPPABLE_MAGIC)?;
    out.write_all(&(data.len() as u32).to_le_bytes())?;
    out.write_all(data)
}

/// Convert the uncompressed tar `input` to zstd:chunked on `out` at zstd level `opts.level`
/// (see the module docs; `opts.prioritized` is not used). `what` names the layer in errors.
pub fn write<R: Read, W: Write>(input: R, out: W, opts: &Options, what: &str) -> io::Result<(W, Written)> {
    let mut w = frames(input, out, opts, Frames::Zstd, what)?;
    let level = w.opts.level;
    let split = w.split.take().map(|s| s.json).unwrap_or_default();
    let mut split_z = Vec::new();
    zstd_frame(level, &split, &mut split_z)?;
    let split_digest = Digest::sha256_of(&split_z);
    let toc = entries(&w.toc);
    let manifest = serde_json::to_vec(&Toc { version: 1, entries: &toc, tar_split_digest: split_digest.to_string() })
        .map_err(io::Error::other)?;
    let mut manifest_z = Vec::new();
    zstd_frame(level, &manifest, &mut manifest_z)?;
    let manifest_offset = w.offset + 8;
    let split_offset = manifest_offset + manifest_z.len() as u64 + 8;
    skippable(&mut w.out, &manifest_z)?;
    skippable(&mut w.out, &split_z)?;
    let mut footer = [0u8; FOOTER_SIZE];
    for (i, v) in [
        manifest_offset,
        manifest_z.len() as u64,
        manifest.len() as u64,
        MANIFEST_TYPE_CRFS,
        split_offset,
        split_z.len() as u64,
        split.len() as u64,
    ]
    .into_iter()
    .enumerate()
    {
        footer[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
    }
    footer[56..].copy_from_slice(&FOOTER_MAGIC);
    skippable(&mut w.out, &footer)?;
    let checksum = Digest::sha256_of(&manifest_z).to_string();
    let position = format!("{manifest_offset}:{}:{}:{MANIFEST_TYPE_CRFS}", manifest_z.len(), manifest.len());
    let annotations = vec![
        (ANNOTATION_MANIFEST_CHECKSUM, checksum.clone()),
        (ANNOTATION_MANIFEST_POSITION, position.clone()),
        (ANNOTATION_TARSPLIT_POSITION, format!("{split_offset}:{}:{}", split_z.len(), split.len())),
        (ANNOTATION_TARSPLIT_CHECKSUM, split_digest.to_string()),
        (ANNOTATION_LEGACY_MANIFEST_CHECKSUM, checksum),
        (ANNOTATION_LEGACY_MANIFEST_POSITION, position),
    ];
    let diff_id = w.diff.finish();
    let (out, digest, size) = w.out.finish();
    Ok((out, Written { digest, size, diff_id, annotations }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_tar() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |name: &str, kind: tar::EntryType, data: &[u8]| {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(kind);
            h.set_size(data.len() as u64);
            h.set_mode(if kind == tar::EntryType::Directory { 0o755 } else { 0o644 });
            h.set_mtime(1_700_000_000);
            b.append_data(&mut h, name, data).unwrap();
        };
        add("app/", tar::EntryType::Directory, b"");
        add("app/small.txt", tar::EntryType::Regular, b"hello\n");
        add("app/empty", tar::EntryType::Regular, b"");
        let big: Vec<u8> = (0..300_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        add("app/big.bin", tar::EntryType::Regular, &big);
        b.into_inner().unwrap()
    }

    #[test]
    fn same_content_reproducible_and_a_readable_manifest() {
        let tar = sample_tar();
        let mut outs = Vec::new();
        for workers in [1, 3] {
            let opts = Options { level: 3, chunk_size: 256 << 10, workers, prioritized: Vec::new() };
            outs.push(write(&tar[..], Vec::new(), &opts, "test").unwrap());
        }
        assert_eq!(outs[0], outs[1]);
        let (blob, written) = &outs[0];
        assert_eq!(written.digest, Digest::sha256_of(blob));
        // Every zstd reader gets the input tar back: the diff_id does not change.
        let plain = zstd::stream::decode_all(&blob[..]).unwrap();
        assert_eq!(plain, tar);
        assert_eq!(written.diff_id, Digest::sha256_of(&tar));
        // The footer and the position annotation name the same manifest.
        let footer = &blob[blob.len() - FOOTER_SIZE..];
        assert_eq!(&footer[56..], &FOOTER_MAGIC);
        let off = u64::from_le_bytes(footer[..8].try_into().unwrap()) as usize;
        let len = u64::from_le_bytes(footer[8..16].try_into().unwrap()) as usize;
        let ann: BTreeMap<_, _> = written.annotations.iter().cloned().collect();
        assert_eq!(
            ann[ANNOTATION_MANIFEST_POSITION],
            format!("{off}:{len}:{}:1", u64::from_le_bytes(footer[16..24].try_into().unwrap()))
        );
        assert_eq!(ann[ANNOTATION_MANIFEST_CHECKSUM], Digest::sha256_of(&blob[off..off + len]).to_string());
        let toc: serde_json::Value =
            serde_json::from_slice(&zstd::stream::decode_all(&blob[off..off + len]).unwrap()).unwrap();
        let big: Vec<&serde_json::Value> =
            toc["entries"].as_array().unwrap().iter().filter(|e| e["name"] == "app/big.bin").collect();
        assert_eq!(big.len(), 5, "1.2 MB in 256 KiB chunks");
        // Each chunk's frames decompress to its bytes.
        for c in &big {
            let o = c["offset"].as_u64().unwrap() as usize;
            let mut d = zstd::stream::read::Decoder::new(&blob[o..]).unwrap();
            let mut chunk = vec![0; c["chunkSize"].as_u64().unwrap() as usize];
            d.read_exact(&mut chunk).unwrap();
            assert_eq!(Digest::sha256_of(&chunk).to_string(), c["chunkDigest"].as_str().unwrap());
        }
        let small = toc["entries"].as_array().unwrap().iter().find(|e| e["name"] == "app/small.txt").unwrap();
        let (o, end) = (small["offset"].as_u64().unwrap() as usize, small["endOffset"].as_u64().unwrap() as usize);
        assert_eq!(zstd::stream::decode_all(&blob[o..end]).unwrap(), b"hello\n");
        assert_eq!(small["digest"], Digest::sha256_of(b"hello\n").to_string());
    }

    #[test]
    fn crc64_is_gos_iso() {
        // Go: crc64.Checksum([]byte("hello"), crc64.MakeTable(crc64.ISO)) == 0x3c3eeee2d8100000
        let mut c = super::super::estargz::Crc64::new();
        c.update(b"hello");
        assert_eq!(c.finish(), 0x3c3eeee2d8100000);
    }
}
