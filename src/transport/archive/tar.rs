//! The one tar reader and the one tar header writer of the archive transports.
//!
//! Reading: [`TarIndex`] indexes an uncompressed tar in one pass over its headers (seeking
//! past entry data) and streams entries from their offsets. Writing: [`TarSink`] appends
//! entries with deterministic headers ([`header_bytes`]) to a temp file renamed on
//! `finish`, or to stdout. Both `oci` and `docker` archives use these and nothing else.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use tempfile::TempPath;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt, AsyncWriteExt, BufWriter};

use crate::error::{Error, IoContext, Result};
use crate::layer::tar::{TarReader, BLOCK};
use crate::model::digest::Digest;
use crate::transport::{unwrap_io_error, BlobStream};

const COPY_BUF: usize = 1 << 20;
const MAX_LINK_DEPTH: usize = 16;

// ---------------------------------------------------------------------------------------
// Reading: an index of a tar file's regular entries.
// ---------------------------------------------------------------------------------------

/// Where a regular file's data lives inside a tar.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct TarEntry {
    pub offset: u64,
    pub size: u64,
}

/// Regular-file entries of an uncompressed tar, by normalized path. Built in one pass
/// without reading entry data; links are resolved to the entries they name.
pub(crate) struct TarIndex {
    pub path: PathBuf,
    pub location: String,
    pub entries: BTreeMap<String, TarEntry>,
}

/// Normalize a tar path: drop `./` and empty components; refuse absolute paths and `..`.
pub(crate) fn normalize_tar_path(raw: &str, location: &str) -> Result<String> {
    let unsafe_path = |reason: &str| Error::UnsafePath {
        path: raw.to_string(),
        location: location.to_string(),
        reason: reason.to_string(),
    };
    if raw.starts_with('/') {
        return Err(unsafe_path("absolute path"));
    }
    let mut parts = Vec::new();
    for c in raw.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(unsafe_path("contains '..'")),
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

/// Resolve a symlink target relative to the directory of `entry`; refuse escapes.
fn join_link(entry: &str, target: &str, location: &str) -> Result<String> {
    let unsafe_path = |reason: &str| Error::UnsafePath {
        path: format!("{entry} -> {target}"),
        location: location.to_string(),
        reason: reason.to_string(),
    };
    if target.starts_with('/') {
        return Err(unsafe_path("link to an absolute path"));
    }
    let mut parts: Vec<&str> = entry.split('/').collect();
    parts.pop();
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(unsafe_path("link escapes the archive"));
                }
            }
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

/// Refuse compressed tarballs with a message that says what to do.
fn refuse_compressed(path: &Path, location: &str) -> Result<()> {
    let mut magic = [0u8; 6];
    let n = crate::layer::codec::read_head(path, &mut magic).at(path)?;
    let kind = match &magic[..n] {
        [0x1f, 0x8b, ..] => Some("gzip"),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Some("zstd"),
        [b'B', b'Z', b'h', ..] => Some("bzip2"),
        [0xfd, b'7', b'z', b'X', b'Z', 0] => Some("xz"),
        _ => None,
    };
    match kind {
        Some(k) => Err(Error::Unsupported(format!(
            "{location} is a {k}-compressed tarball; hoist reads uncompressed archives only (decompress it first)"
        ))),
        None => Ok(()),
    }
}

impl TarIndex {
    /// Index `path` (blocking: one pass over the headers, seeking past entry data).
    pub fn open_blocking(path: &Path, location: &str) -> Result<TarIndex> {
        refuse_compressed(path, location)?;
        let file = File::open(path).at(path)?;
        let mut reader = TarReader::new(std::io::BufReader::with_capacity(64 * 1024, file), path, location);
        let mut entries = BTreeMap::new();
        let mut hard = Vec::new();
        let mut soft = Vec::new();
        while let Some(member) = reader.next_member()? {
            let raw = String::from_utf8(member.name).map_err(|_| Error::UnsafePath {
                path: "<non-UTF-8 name>".into(),
                location: location.into(),
                reason: "not UTF-8".into(),
            })?;
            let name = normalize_tar_path(&raw, location)?;
            let link = member.link.map(|l| String::from_utf8_lossy(&l).into_owned());
            match member.header.entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    entries.insert(name, TarEntry { offset: member.offset, size: member.size });
                }
                tar::EntryType::Link => {
                    let target = link
                        .ok_or_else(|| Error::malformed("tar", location, format!("hard link {raw} has no target")))?;
                    hard.push((name, normalize_tar_path(&target, location)?));
                }
                tar::EntryType::Symlink => {
                    let target =
                        link.ok_or_else(|| Error::malformed("tar", location, format!("symlink {raw} has no target")))?;
                    let resolved = join_link(&name, &target, location)?;
                    soft.push((name, resolved));
                }
                // An image archive has no business holding device nodes or fifos: refuse the
                // archive rather than skip them silently (hostile or broken input).
                tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                    return Err(Error::UnsafePath {
                        path: raw,
                        location: location.into(),
                        reason: "device file or fifo".into(),
                    });
                }
                _ => {}
            }
        }
        // Links may name entries that appear later, or other links: resolve with a bound.
        let links: BTreeMap<String, String> = hard.into_iter().chain(soft).collect();
        for (name, target) in &links {
            let mut t = target.clone();
            let mut found = None;
            for _ in 0..MAX_LINK_DEPTH {
                if let Some(e) = entries.get(&t) {
                    found = Some(*e);
                    break;
                }
                match links.get(&t) {
                    Some(next) => t = next.clone(),
                    None => break,
                }
            }
            if let Some(e) = found {
                entries.insert(name.clone(), e);
            }
        }
        Ok(TarIndex { path: path.to_path_buf(), location: location.to_string(), entries })
    }

    pub fn get(&self, name: &str) -> Option<TarEntry> {
        self.entries.get(name).copied()
    }

    /// The data of `e` as a blocking reader (the file seeked to it, limited to its size).
    fn entry_reader_blocking(&self, e: TarEntry) -> Result<std::io::Take<File>> {
        let mut f = File::open(&self.path).at(&self.path)?;
        std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(e.offset)).at(&self.path)?;
        Ok(f.take(e.size))
    }

    /// Read a whole entry, refusing anything larger than `limit` (blocking).
    pub fn read_entry_blocking(&self, name: &str, limit: u64) -> Result<Vec<u8>> {
        let e = self.get(name).ok_or_else(|| Error::not_found(name.to_string(), &self.location))?;
        if e.size > limit {
            return Err(Error::malformed(
                name,
                &self.location,
                format!("{} bytes exceeds the {limit} byte limit", e.size),
            ));
        }
        let mut out = Vec::with_capacity(e.size as usize);
        self.entry_reader_blocking(e)?.read_to_end(&mut out).at(&self.path)?;
        if out.len() as u64 != e.size {
            return Err(Error::malformed(name, &self.location, "archive truncated"));
        }
        Ok(out)
    }

    /// Hash an entry's bytes (sha256) and return its first four bytes for sniffing its
    /// compression (blocking: reads the whole entry once).
    pub fn hash_entry_blocking(&self, e: TarEntry) -> Result<(Digest, [u8; 4])> {
        let mut r = self.entry_reader_blocking(e)?;
        let mut h = crate::model::digest::Algorithm::Sha256.hasher();
        let mut buf = vec![0u8; COPY_BUF];
        let mut head = [0u8; 4];
        let mut seen = 0u64;
        loop {
            let n = r.read(&mut buf).at(&self.path)?;
            if n == 0 {
                break;
            }
            if seen < 4 {
                for (i, b) in buf[..n].iter().enumerate().take(4 - seen as usize) {
                    head[seen as usize + i] = *b;
                }
            }
            seen += n as u64;
            h.update(&buf[..n]);
        }
        if seen != e.size {
            return Err(Error::malformed("tar", &self.location, "archive truncated"));
        }
        Ok((h.finish(), head))
    }

    /// Stream `entry` from `offset` within it.
    pub async fn open_entry(&self, entry: TarEntry, offset: u64) -> Result<BlobStream> {
        let mut f = tokio::fs::File::open(&self.path).await.at(&self.path)?;
        f.seek(std::io::SeekFrom::Start(entry.offset + offset.min(entry.size))).await.at(&self.path)?;
        let rest = entry.size.saturating_sub(offset);
        Ok(Box::pin(tokio::io::BufReader::with_capacity(COPY_BUF, f.take(rest))))
    }
}

/// Path of a blob inside an OCI layout or archive.
pub(crate) fn blob_name(digest: &Digest) -> String {
    format!("blobs/{}/{}", digest.algorithm().as_str(), digest.hex())
}

// ---------------------------------------------------------------------------------------
// Writing: a tar stream with deterministic headers, to a temp file or stdout.
// ---------------------------------------------------------------------------------------

enum Out {
    File(BufWriter<tokio::fs::File>),
    Stdout(BufWriter<tokio::io::Stdout>),
    /// Any writer (a pipe into `podman load`).
    Pipe(BufWriter<std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send + Sync>>>),
}

/// A tar being written. Every entry header is deterministic: mode 0644 (dirs 0755), uid/gid
/// 0, no user/group names, mtime 0 or `SOURCE_DATE_EPOCH`, GNU format (long names via
/// `././@LongLink`). A failed write poisons the sink; the temp file is removed on drop
/// unless `finish` renamed it into place.
pub(crate) struct TarSink {
    out: Option<Out>,
    tmp: Option<TempPath>,
    dest: Option<PathBuf>,
    location: String,
    mtime: u64,
    poisoned: Option<String>,
}

/// The timestamp written in every header: `SOURCE_DATE_EPOCH` when set, else 0.
pub(crate) fn header_mtime() -> u64 {
    std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0)
}

/// Header block(s) for one entry (a GNU long-name entry first when the name is long).
pub(crate) fn header_bytes(name: &str, size: u64, kind: tar::EntryType, mtime: u64) -> Vec<u8> {
    fn base(kind: tar::EntryType, size: u64, mtime: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(if kind == tar::EntryType::Directory { 0o755 } else { 0o644 });
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(mtime);
        h
    }
    let mut out = Vec::with_capacity(3 * BLOCK as usize);
    let name_bytes = name.as_bytes();
    let mut h = base(kind, size, mtime);
    {
        let old = h.as_old_mut();
        let n = name_bytes.len().min(old.name.len());
        old.name[..n].copy_from_slice(&name_bytes[..n]);
    }
    if name_bytes.len() > 100 {
        let mut long = base(tar::EntryType::GNULongName, name_bytes.len() as u64 + 1, mtime);
        long.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
        long.set_cksum();
        out.extend_from_slice(long.as_bytes());
        out.extend_from_slice(name_bytes);
        out.push(0);
        out.resize(out.len().next_multiple_of(BLOCK as usize), 0);
    }
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out
}

impl TarSink {
    /// Start a tar at `path` (a temp file next to it) or on stdout when `path` is `-`.
    pub fn create(path: &Path, location: String) -> Result<TarSink> {
        let mtime = header_mtime();
        if path == Path::new("-") {
            let out = Out::Stdout(BufWriter::with_capacity(COPY_BUF, tokio::io::stdout()));
            return Ok(TarSink { out: Some(out), tmp: None, dest: None, location, mtime, poisoned: None });
        }
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "archive".into());
        // As tar(1): the directory must be there; a typo in it is not created.
        if !parent.is_dir() {
            return Err(Error::not_found(format!("directory {}", parent.display()), location));
        }
        let tmp = crate::transport::public_temp(&format!(".{file_name}.tmp-")).tempfile_in(&parent).at(&parent)?;
        let (file, tmp) = tmp.into_parts();
        let out = Out::File(BufWriter::with_capacity(COPY_BUF, tokio::fs::File::from_std(file)));
        Ok(TarSink { out: Some(out), tmp: Some(tmp), dest: Some(path.to_path_buf()), location, mtime, poisoned: None })
    }

    /// Start a tar streamed into `w` (closed by `finish`); nothing is renamed into place.
    pub fn to_writer(w: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send + Sync>>, location: String) -> TarSink {
        let out = Out::Pipe(BufWriter::with_capacity(COPY_BUF, w));
        TarSink { out: Some(out), tmp: None, dest: None, location, mtime: header_mtime(), poisoned: None }
    }

    fn io_path(&self) -> PathBuf {
        self.dest.clone().unwrap_or_else(|| PathBuf::from("<stdout>"))
    }

    /// Fail when an earlier write failed or the archive is finished.
    pub fn check(&self) -> Result<()> {
        if let Some(p) = &self.poisoned {
            return Err(Error::refused(
                &self.location,
                format!("an earlier write failed, the archive is abandoned: {p}"),
            ));
        }
        if self.out.is_none() {
            return Err(Error::refused(&self.location, "archive already finished"));
        }
        Ok(())
    }

    /// Record a failure that leaves the archive unusable.
    pub fn poison_with(&mut self, e: &Error) {
        self.poisoned.get_or_insert_with(|| e.to_string());
    }

    fn poison<T>(&mut self, r: Result<T>) -> Result<T> {
        if let Err(e) = &r {
            self.poisoned.get_or_insert_with(|| e.to_string());
        }
        r
    }

    async fn raw_write(&mut self, bytes: &[u8]) -> Result<()> {
        let path = self.io_path();
        let r = match self.out.as_mut() {
            Some(Out::File(w)) => w.write_all(bytes).await,
            Some(Out::Stdout(w)) => w.write_all(bytes).await,
            Some(Out::Pipe(w)) => w.write_all(bytes).await,
            None => return Err(Error::refused(&self.location, "archive already finished")),
        };
        r.at(path)
    }

    async fn pad(&mut self, size: u64) -> Result<()> {
        let rem = (size % BLOCK) as usize;
        if rem != 0 {
            self.raw_write(&[0u8; BLOCK as usize][..BLOCK as usize - rem]).await?;
        }
        Ok(())
    }

    /// Append a directory entry (`name` ends with `/`).
    pub async fn dir(&mut self, name: &str) -> Result<()> {
        self.check()?;
        let h = header_bytes(name, 0, tar::EntryType::Directory, self.mtime);
        let r = self.raw_write(&h).await;
        self.poison(r)
    }

    /// Append a regular file from memory.
    pub async fn file_bytes(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        self.check()?;
        let h = header_bytes(name, bytes.len() as u64, tar::EntryType::Regular, self.mtime);
        let mut r = self.raw_write(&h).await;
        if r.is_ok() {
            r = self.raw_write(bytes).await;
        }
        if r.is_ok() {
            r = self.pad(bytes.len() as u64).await;
        }
        self.poison(r)
    }

    /// Append a regular file of exactly `size` bytes read from `reader`; `tap` sees every chunk.
    /// A read error (e.g. a `VerifyReader` mismatch) poisons the sink.
    pub async fn file_stream<R: AsyncRead + Unpin>(
        &mut self,
        name: &str,
        size: u64,
        mut reader: R,
        tap: &mut (dyn FnMut(&[u8]) -> Result<()> + Send),
    ) -> Result<()> {
        self.check()?;
        let r = self.file_stream_inner(name, size, &mut reader, tap).await;
        self.poison(r)
    }

    async fn file_stream_inner<R: AsyncRead + Unpin>(
        &mut self,
        name: &str,
        size: u64,
        reader: &mut R,
        tap: &mut (dyn FnMut(&[u8]) -> Result<()> + Send),
    ) -> Result<()> {
        let h = header_bytes(name, size, tar::EntryType::Regular, self.mtime);
        self.raw_write(&h).await?;
        let mut buf = vec![0u8; COPY_BUF.min(size.max(1) as usize)];
        let mut seen = 0u64;
        loop {
            let n =
                reader.read(&mut buf).await.map_err(|e| unwrap_io_error(e, format!("{} ({name})", self.location)))?;
            if n == 0 {
                break;
            }
            seen += n as u64;
            if seen > size {
                return Err(Error::SizeMismatch {
                    what: name.to_string(),
                    location: self.location.clone(),
                    expected: size,
                    actual: seen,
                });
            }
            tap(&buf[..n])?;
            self.raw_write(&buf[..n]).await?;
        }
        if seen != size {
            return Err(Error::SizeMismatch {
                what: name.to_string(),
                location: self.location.clone(),
                expected: size,
                actual: seen,
            });
        }
        self.pad(size).await
    }

    /// Write the end-of-archive marker, flush, and move the file into place.
    pub async fn finish(&mut self) -> Result<()> {
        self.check()?;
        let r = self.finish_inner().await;
        self.poison(r)
    }

    async fn finish_inner(&mut self) -> Result<()> {
        self.raw_write(&[0u8; 2 * BLOCK as usize]).await?;
        let path = self.io_path();
        match self.out.take() {
            Some(Out::File(mut w)) => {
                w.flush().await.at(&path)?;
                let f = w.into_inner();
                f.sync_all().await.at(&path)?;
                drop(f);
                let tmp = self.tmp.take().expect("file sink has a temp path");
                let dest = self.dest.clone().expect("file sink has a destination");
                tmp.persist(&dest).map_err(|e| Error::io(&dest, e.error))?;
                if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
                    if let Ok(d) = File::open(parent) {
                        let _ = d.sync_all();
                    }
                }
            }
            Some(Out::Stdout(mut w)) => w.flush().await.at(&path)?,
            Some(Out::Pipe(mut w)) => {
                w.flush().await.at(&path)?;
                w.shutdown().await.at(&path)?;
            }
            None => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_paths() {
        assert_eq!(normalize_tar_path("./blobs//sha256/ab", "t").unwrap(), "blobs/sha256/ab");
        assert!(normalize_tar_path("/etc/passwd", "t").is_err());
        assert!(normalize_tar_path("blobs/../../x", "t").is_err());
        assert_eq!(join_link("a/b/layer.tar", "../c/layer.tar", "t").unwrap(), "a/c/layer.tar");
        assert!(join_link("a/layer.tar", "../../x", "t").is_err());
        assert!(join_link("a/layer.tar", "/x", "t").is_err());
    }

    #[test]
    fn headers_are_deterministic() {
        let h = header_bytes("blobs/sha256/ab", 3, tar::EntryType::Regular, 0);
        assert_eq!(h.len(), 512);
        let hdr = tar::Header::from_byte_slice(&h);
        assert_eq!(hdr.mode().unwrap(), 0o644);
        assert_eq!(hdr.uid().unwrap(), 0);
        assert_eq!(hdr.mtime().unwrap(), 0);
        assert_eq!(hdr.username().unwrap(), Some(""));
        let long = format!("blobs/sha512/{}", "a".repeat(128));
        let h = header_bytes(&long, 3, tar::EntryType::Regular, 0);
        assert_eq!(h.len(), 512 * 3);
        let mut data = h.clone();
        data.extend_from_slice(b"xyz");
        data.resize(data.len() + 509 + 1024, 0);
        let mut ar = tar::Archive::new(&data[..]);
        let e = ar.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(e.path().unwrap().to_str().unwrap(), long);
    }
}
