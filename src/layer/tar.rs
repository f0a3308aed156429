//! The one tar reader: [`TarReader`] reads headers in 512-byte blocks with GNU long names and
//! PAX records applied and every extension header bounded before it is read. The archive
//! transports (over files, seeking past data) and model unpack (over a decompressing stream)
//! use it; nothing in the library parses tar headers another way. Numeric header fields of
//! members unpacked with tar-rs (owners, modes) are read here too, as Go's archive/tar reads
//! them ([`numeric_field`], [`owner`], [`unpack_entry`]).

use std::fs::File;
use std::io::Read;
use std::path::PathBuf;

use crate::error::{Error, IoContext, Result};

/// Bytes in a tar block.
pub(crate) const BLOCK: u64 = 512;
/// Largest GNU long name or link (`L`/`K`) and PAX extended header (`x`/`g`) read into
/// memory: 1 MiB, the bound Go's archive/tar (`maxSpecialFileSize`) uses. Checked on the
/// header's size before a byte of the data is read.
pub(crate) const MAX_HEADER_EXTENSION: u64 = 1 << 20;

/// One member of a tar as its headers describe it, after GNU long names and PAX records
/// were applied.
pub(crate) struct Member {
    /// The 512-byte header of the member itself.
    pub header: tar::Header,
    /// The path: the PAX `path`, else the GNU long name, else the header's (ustar prefix too).
    pub name: Vec<u8>,
    /// The link target: the PAX `linkpath`, else the GNU long link, else the header's.
    pub link: Option<Vec<u8>>,
    /// Offset of the member's data in the file.
    pub offset: u64,
    /// Size of the data: the PAX `size`, else the header's.
    pub size: u64,
}

/// What extension headers said about the member that follows them.
#[derive(Default)]
struct Pending {
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    pax: Option<PaxRecords>,
}

/// The PAX records hoist uses (others, such as mtime or xattrs, do not matter here).
#[derive(Default)]
struct PaxRecords {
    path: Option<Vec<u8>>,
    linkpath: Option<Vec<u8>>,
    size: Option<u64>,
}

/// Parse PAX extended header records (`"%d %s=%s\n"`, the length counting the whole record).
fn parse_pax(mut data: &[u8]) -> std::result::Result<PaxRecords, String> {
    let mut out = PaxRecords::default();
    while !data.is_empty() {
        let sp = data.iter().position(|&b| b == b' ').ok_or("PAX record without a length")?;
        let len: usize = std::str::from_utf8(&data[..sp])
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .ok_or("PAX record with a bad length")?;
        if len <= sp + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Err("PAX record length does not match its contents".into());
        }
        let record = &data[sp + 1..len - 1];
        let eq = record.iter().position(|&b| b == b'=').ok_or("PAX record without '='")?;
        let (key, value) = (&record[..eq], &record[eq + 1..]);
        // An empty value removes the record: the header's field applies again.
        let value = (!value.is_empty()).then(|| value.to_vec());
        match key {
            b"path" => out.path = value,
            b"linkpath" => out.linkpath = value,
            b"size" => {
                out.size = match value {
                    None => None,
                    Some(v) => Some(
                        std::str::from_utf8(&v)
                            .ok()
                            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
                            .and_then(|s| s.parse().ok())
                            .ok_or("PAX size is not a decimal number")?,
                    ),
                }
            }
            _ => {}
        }
        data = &data[len..];
    }
    Ok(out)
}

/// The bytes of a NUL-terminated header string (everything before the first NUL).
fn c_string(bytes: &[u8]) -> Vec<u8> {
    bytes.iter().position(|&b| b == 0).map_or(bytes, |n| &bytes[..n]).to_vec()
}

/// Whether a header's checksum matches: the sum of its bytes with the checksum field as
/// spaces, unsigned (POSIX) or signed (some old writers), as Go's archive/tar accepts.
fn checksum_ok(block: &[u8; BLOCK as usize], header: &tar::Header) -> bool {
    let Ok(want) = header.cksum() else { return false };
    let field = 148..156;
    let (mut unsigned, mut signed) = (0u32, 0i32);
    for (i, &b) in block.iter().enumerate() {
        let b = if field.contains(&i) { b' ' } else { b };
        unsigned += u32::from(b);
        signed += i32::from(b as i8);
    }
    want == unsigned || i64::from(want) == i64::from(signed)
}

/// The one tar reader: reads a tar's headers one 512-byte block at a time and applies GNU
/// long names and PAX records to the member they describe. Extension headers are bounded by
/// [`MAX_HEADER_EXTENSION`] before they are read, so a header claiming a 1 GiB long name (or
/// PAX record) costs nothing but an error. Over a file it seeks past entry data; over a stream
/// (a decompressing layer) it reads past it, and [`data`](TarReader::data) reads the data of
/// the member just returned.
pub(crate) struct TarReader<R> {
    file: R,
    /// Offset of the next byte to read.
    pos: u64,
    /// Offset of the next header (after the current member's padded data).
    next: u64,
    path: PathBuf,
    location: String,
}

/// What a [`TarReader`] reads from: moving forward without reading is a seek for a file and a
/// read into nothing for a stream ([`Stream`]).
pub(crate) trait Skip: Read {
    /// Move `n` bytes forward.
    fn skip(&mut self, n: u64) -> std::io::Result<()>;
}

impl Skip for std::io::BufReader<File> {
    fn skip(&mut self, n: u64) -> std::io::Result<()> {
        match i64::try_from(n) {
            Ok(d) => self.seek_relative(d),
            Err(_) => std::io::Seek::seek(self, std::io::SeekFrom::Current(i64::MAX)).map(|_| ()),
        }
    }
}

/// A stream a [`TarReader`] skips through by reading.
pub(crate) struct Stream<R>(pub R);

impl<R: Read> Read for Stream<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl<R: Read> Skip for Stream<R> {
    fn skip(&mut self, n: u64) -> std::io::Result<()> {
        let got = std::io::copy(&mut (&mut self.0).take(n), &mut std::io::sink())?;
        if got != n {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "archive truncated in an entry"));
        }
        Ok(())
    }
}

impl<R: Skip> TarReader<R> {
    /// A reader of the tar in `file`; `path` names it in I/O errors, `location` in the others.
    pub fn new(file: R, path: impl Into<PathBuf>, location: impl Into<String>) -> Self {
        TarReader { file, pos: 0, next: 0, path: path.into(), location: location.into() }
    }

    /// The data of the member [`next_member`](Self::next_member) just returned, at most its
    /// size; what is not read is skipped by the next call.
    pub fn data(&mut self, member: &Member) -> impl Read + '_ {
        let left = (member.offset + member.size).saturating_sub(self.pos);
        DataReader { reader: self, left }
    }

    fn malformed(&self, reason: impl ToString) -> Error {
        Error::malformed("tar", &self.location, reason)
    }

    /// Move to `pos` (forward only).
    fn seek_to(&mut self, pos: u64) -> Result<()> {
        if pos > self.pos {
            self.file.skip(pos - self.pos).at(&self.path)?;
        }
        self.pos = pos;
        Ok(())
    }

    /// The next block, or `None` at the end of the file (or a short final block of zeros).
    fn block(&mut self) -> Result<Option<[u8; BLOCK as usize]>> {
        let mut block = [0u8; BLOCK as usize];
        let mut n = 0;
        while n < block.len() {
            match self.file.read(&mut block[n..]) {
                Ok(0) => break,
                Ok(r) => n += r,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io(&self.path, e)),
            }
        }
        self.pos += n as u64;
        match n {
            0 => Ok(None),
            n if n == block.len() => Ok(Some(block)),
            _ => Err(self.malformed(format!("archive truncated in a header at offset {}", self.pos - n as u64))),
        }
    }

    /// The data of an extension header of `size` bytes (already checked against the bound),
    /// leaving the reader at the next header.
    fn extension_data(&mut self, size: u64) -> Result<Vec<u8>> {
        let start = self.pos;
        let mut data = Vec::with_capacity(size as usize);
        (&mut self.file).take(size).read_to_end(&mut data).at(&self.path)?;
        self.pos += data.len() as u64;
        if data.len() as u64 != size {
            return Err(self.malformed(format!("archive truncated in an extension header at offset {start}")));
        }
        self.seek_to(start + size.next_multiple_of(BLOCK))?;
        Ok(data)
    }

    /// Skip the extension blocks that follow a GNU sparse header (`isextended` set).
    fn skip_sparse_extensions(&mut self, header: &tar::Header) -> Result<()> {
        let mut extended = header.as_gnu().is_some_and(|g| g.isextended[0] != 0);
        while extended {
            let block = self.block()?.ok_or_else(|| self.malformed("archive truncated in a sparse header"))?;
            extended = block[504] != 0;
        }
        Ok(())
    }

    /// The next member, or `None` at the end of the archive (end of file or a zero block).
    pub fn next_member(&mut self) -> Result<Option<Member>> {
        let next = self.next;
        self.seek_to(next)?;
        let mut pending = Pending::default();
        loop {
            let at = self.pos;
            let block = match self.block()? {
                Some(b) if b.iter().any(|&x| x != 0) => b,
                _ => {
                    if pending.long_name.is_some() || pending.long_link.is_some() || pending.pax.is_some() {
                        return Err(self.malformed("extension headers at the end of the archive describe no member"));
                    }
                    return Ok(None);
                }
            };
            let header = tar::Header::from_byte_slice(&block).clone();
            if !checksum_ok(&block, &header) {
                return Err(self.malformed(format!("header checksum mismatch at offset {at}")));
            }
            let header_size = header.entry_size().map_err(|e| self.malformed(format!("header at offset {at}: {e}")))?;
            let kind = header.entry_type();
            let what = match kind.as_byte() {
                b'L' => Some("GNU long name"),
                b'K' => Some("GNU long link name"),
                b'x' => Some("PAX extended header"),
                b'g' => Some("PAX global header"),
                _ => None,
            };
            if let Some(what) = what {
                if header_size > MAX_HEADER_EXTENSION {
                    return Err(self.malformed(format!(
                        "{what} at offset {at} is {header_size} bytes, over the {MAX_HEADER_EXTENSION} byte limit"
                    )));
                }
                let data = self.extension_data(header_size)?;
                let twice = || self.malformed(format!("two {what} entries for one member at offset {at}"));
                match kind.as_byte() {
                    b'L' if pending.long_name.is_some() => return Err(twice()),
                    b'L' => pending.long_name = Some(c_string(&data)),
                    b'K' if pending.long_link.is_some() => return Err(twice()),
                    b'K' => pending.long_link = Some(c_string(&data)),
                    b'x' if pending.pax.is_some() => return Err(twice()),
                    b'x' => {
                        let records = parse_pax(&data).map_err(|e| self.malformed(format!("offset {at}: {e}")))?;
                        pending.pax = Some(records);
                    }
                    // Global records (archive comments, mostly) name no member: skipped.
                    _ => {}
                }
                continue;
            }
            if kind.is_gnu_sparse() {
                self.skip_sparse_extensions(&header)?;
            }
            let pax = pending.pax.take().unwrap_or_default();
            let size = pax.size.unwrap_or(header_size);
            let name = pax.path.or(pending.long_name.take()).unwrap_or_else(|| header.path_bytes().into_owned());
            let link =
                pax.linkpath.or(pending.long_link.take()).or_else(|| header.link_name_bytes().map(|l| l.into_owned()));
            let offset = self.pos;
            self.next = size
                .checked_next_multiple_of(BLOCK)
                .and_then(|s| offset.checked_add(s))
                .ok_or_else(|| self.malformed(format!("entry size {size} at offset {at} overflows")))?;
            return Ok(Some(Member { header, name, link, offset, size }));
        }
    }
}

/// The data of one member, read through the [`TarReader`] (which counts it).
struct DataReader<'a, R> {
    reader: &'a mut TarReader<R>,
    left: u64,
}

impl<R: Skip> Read for DataReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let max = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        if max == 0 {
            return Ok(0);
        }
        let n = self.reader.file.read(&mut buf[..max])?;
        self.left -= n as u64;
        self.reader.pos += n as u64;
        Ok(n)
    }
}

/// A numeric header field (uid, gid, mode) read as Go's archive/tar reads it, which is what
/// BuildKit, containerd and docker unpack with: base-256 when the first byte's high bit is set,
/// else octal with leading and trailing NULs and spaces ignored, an empty field being 0.
/// tar-rs's `Header::uid()` refuses an empty field (tar-rs's own `Header::new_gnu()` leaves
/// an unset one empty), which made images every other tool reads fail to unpack. `None`: not a
/// number (or negative).
pub(crate) fn numeric_field(field: &[u8]) -> Option<u64> {
    if let Some(&first) = field.first().filter(|b| *b & 0x80 != 0) {
        if first & 0x40 != 0 {
            return None;
        }
        let mut n = u64::from(first & 0x3f);
        for &b in &field[1..] {
            n = n.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(n);
    }
    let start = field.iter().position(|b| *b != 0 && *b != b' ').unwrap_or(field.len());
    let end = field.iter().rposition(|b| *b != 0 && *b != b' ').map_or(start, |i| i + 1);
    let text = field.get(start..end).unwrap_or_default();
    // a field cut short by a NUL ("644\0junk") ends there, as in tar-rs and Go
    let text = text.split(|b| *b == 0).next().unwrap_or_default();
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(std::str::from_utf8(text).ok()?, 8).ok()
}

/// The owner (uid, gid) of a member: its PAX `uid`/`gid` records, else its header fields as
/// [`numeric_field`] reads them.
pub(crate) fn owner(header: &tar::Header, pax: Option<tar::PaxExtensions<'_>>) -> std::io::Result<(u32, u32)> {
    let (mut uid, mut gid) = (None, None);
    for ext in pax.into_iter().flatten() {
        let ext = ext?;
        let value = || std::str::from_utf8(ext.value_bytes()).ok().and_then(|v| v.trim().parse::<u64>().ok());
        match ext.key_bytes() {
            b"uid" => uid = value(),
            b"gid" => gid = value(),
            _ => {}
        }
    }
    let old = header.as_old();
    let id = |pax: Option<u64>, field: &[u8], what: &str| {
        pax.or_else(|| numeric_field(field))
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{what} is not a number")))
    };
    Ok((id(uid, &old.uid, "uid")?, id(gid, &old.gid, "gid")?))
}

/// Unpack one member under `root` as containerd's applier does: tar-rs's `unpack_in` (which
/// refuses a path leaving `root`; the archive must have `preserve_ownerships` off, tar-rs's
/// strict reading of the owner fields is what this replaces), then the owner [`owner`] reads
/// and, after that chown cleared any set-id bits, the mode again. A hard link keeps its
/// target's owner and mode, a symlink has no mode. Returns the path written, `None` when
/// `unpack_in` skipped the member (a `..` in its path).
pub(crate) fn unpack_entry<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    root: &std::path::Path,
) -> std::io::Result<Option<PathBuf>> {
    let (uid, gid) = owner(&entry.header().clone(), entry.pax_extensions()?)?;
    let header = entry.header();
    let kind = header.entry_type();
    let mode = numeric_field(&header.as_old().mode).map(|m| (m & 0o7777) as u32);
    let mut dst = root.to_path_buf();
    for c in entry.path()?.components() {
        if let std::path::Component::Normal(c) = c {
            dst.push(c);
        }
    }
    let written = entry.unpack_in(root).map_err(|e| {
        // tar-rs's error says only "failed to unpack `PATH`": keep its cause
        let cause = e.get_ref().and_then(|inner| inner.source()).map(|c| format!(": {c}")).unwrap_or_default();
        std::io::Error::new(e.kind(), format!("{e}{cause}"))
    })?;
    if !written {
        return Ok(None);
    }
    if kind.is_hard_link() {
        return Ok(Some(dst));
    }
    std::os::unix::fs::lchown(&dst, Some(uid), Some(gid))?;
    if !kind.is_symlink() {
        if let Some(mode) = mode {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(mode))?;
        }
    }
    Ok(Some(dst))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_fields_read_as_go_reads_them() {
        assert_eq!(numeric_field(&[0u8; 8]), Some(0), "an empty field is 0");
        assert_eq!(numeric_field(b"0000644\0"), Some(0o644));
        assert_eq!(numeric_field(b"  1750 \0"), Some(0o1750));
        assert_eq!(numeric_field(b"\0\x00001750"), Some(0o1750), "leading NULs are skipped");
        assert_eq!(numeric_field(&[0x80, 0, 0, 0, 0, 0, 0x01, 0x00]), Some(256), "base-256");
        assert_eq!(numeric_field(&[0xff; 8]), None, "negative");
        assert_eq!(numeric_field(b"12x\0"), None);
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        assert!(h.uid().is_err(), "tar-rs refuses the empty field this reads as 0");
        assert_eq!(owner(&h, None).unwrap(), (0, 0));
        h.set_uid(1000);
        h.set_gid(50);
        assert_eq!(owner(&h, None).unwrap(), (1000, 50));
    }

    #[test]
    fn pax_records() {
        let r = parse_pax(b"17 path=a/b/cdef\n12 size=123\n13 linkpath=\n").unwrap();
        assert_eq!(r.path.as_deref(), Some(&b"a/b/cdef"[..]));
        assert_eq!(r.size, Some(123));
        assert_eq!(r.linkpath, None);
        for bad in [&b"17 path=a/b/cdef"[..], b"99 path=x\n", b"x path=y\n", b"6 ab\n\n", b"12 size=-12\n"] {
            assert!(parse_pax(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn signed_and_unsigned_checksums() {
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..3].copy_from_slice("\u{e9}a".as_bytes());
        h.set_size(0);
        h.set_cksum();
        let block: [u8; 512] = h.as_bytes()[..].try_into().unwrap();
        assert!(checksum_ok(&block, &h));
        let mut bad = block;
        bad[0] ^= 1;
        assert!(!checksum_ok(&bad, tar::Header::from_byte_slice(&bad)));
    }

    #[test]
    fn a_stream_is_read_member_by_member_and_a_huge_pax_header_refused_unread() {
        let mut ar = tar::Builder::new(Vec::new());
        for (name, data) in [("a.txt", &b"alpha"[..]), (&"x/".repeat(80)[..], b"long name")] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            ar.append_data(&mut h, name, data).unwrap();
        }
        let bytes = ar.into_inner().unwrap();
        let mut r = TarReader::new(Stream(&bytes[..]), "t.tar", "test");
        let mut seen = Vec::new();
        while let Some(m) = r.next_member().unwrap() {
            let mut data = String::new();
            if seen.is_empty() {
                r.data(&m).read_to_string(&mut data).unwrap();
            }
            seen.push((String::from_utf8(m.name).unwrap(), data));
        }
        assert_eq!(seen, [("a.txt".into(), "alpha".into()), ("x/".repeat(80), String::new())]);

        // A PAX header claiming 64 MiB: refused on its size, the reader never buffers it.
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_size(64 << 20);
        h.set_cksum();
        let mut r = TarReader::new(
            Stream(std::io::Read::chain(h.as_bytes().as_slice(), std::io::repeat(b'1'))),
            "t",
            "layer X",
        );
        let e = r.next_member().err().unwrap().to_string();
        assert!(e.contains("layer X") && e.contains("67108864"), "{e}");
    }
}
