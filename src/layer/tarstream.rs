//! A streaming tar reader that keeps every byte: each member comes with the raw bytes of its
//! header blocks (GNU long names and PAX extended headers included), then its data and padding
//! are read through the reader. The lazy-pull writers (eStargz, zstd:chunked) and their
//! reverse conversion cut a layer at member boundaries without rewriting a header, so a layer's
//! entries keep their exact bytes.
//!
//! Unlike the archive transports' indexed reader (`transport::archive::tar`), this reads a
//! stream once, front to back (a decompressor's output), and never seeks. Extension headers are
//! bounded by [`MAX_HEADER_EXTENSION`] before they are read.

use std::io::{self, Read};

use crate::layer::tar::MAX_HEADER_EXTENSION;

/// One tar block.
pub(crate) const BLOCK: usize = 512;

/// One member: its header blocks as read and what they say.
pub(crate) struct RawMember {
    /// Every header block of the member (extension headers and their data, then the header).
    pub raw: Vec<u8>,
    /// The member's own header.
    pub header: tar::Header,
    /// Path: the PAX `path`, else the GNU long name, else the header's (with the ustar prefix).
    pub name: String,
    /// Link target: the PAX `linkpath`, else the GNU long link, else the header's.
    pub link: String,
    /// Size of the data that follows: the PAX `size`, else the header's.
    pub size: u64,
    /// Every PAX record of the member (`SCHILY.xattr.*`, `uid`, `mtime`, ...), in order.
    pub pax: Vec<(String, Vec<u8>)>,
}

impl RawMember {
    /// The entry type, with the old regular-file flag `\0` read as a regular file (or a
    /// directory when the name ends in `/`) and contiguous files as regular files.
    pub fn kind(&self) -> u8 {
        match self.header.entry_type().as_byte() {
            b'\0' if self.name.ends_with('/') => b'5',
            b'\0' | b'7' => b'0',
            k => k,
        }
    }

    /// A PAX record's value.
    pub fn pax(&self, key: &str) -> Option<&[u8]> {
        self.pax.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_slice())
    }

    /// A numeric field, the PAX record overriding the header.
    pub fn number(&self, key: &str, header: impl FnOnce(&tar::Header) -> io::Result<u64>) -> u64 {
        self.pax(key)
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.split('.').next()?.parse().ok())
            .unwrap_or_else(|| header(&self.header).unwrap_or(0))
    }
}

/// Reads members from a tar stream (see the module docs).
pub(crate) struct TarStream<R: Read> {
    inner: R,
    /// Data bytes of the current member not read yet.
    remaining: u64,
    /// Padding after the current member's data.
    padding: usize,
    /// What the stream is (for errors).
    what: String,
    /// Whether the end of the archive was a zero block (read), rather than the end of input.
    zero_block: bool,
}

fn bad(what: &str, why: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("{what}: {why}"))
}

/// Whether a header's checksum matches: unsigned (POSIX) or signed (old writers) byte sum with
/// the checksum field counted as spaces.
fn checksum_ok(block: &[u8; BLOCK]) -> bool {
    let Ok(want) = tar::Header::from_byte_slice(block).cksum() else { return false };
    let (mut unsigned, mut signed) = (0u32, 0i32);
    for (i, &b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += u32::from(b);
        signed += i32::from(b as i8);
    }
    want == unsigned || i64::from(want) == i64::from(signed)
}

fn c_string(bytes: &[u8]) -> Vec<u8> {
    bytes.iter().position(|&b| b == 0).map_or(bytes, |n| &bytes[..n]).to_vec()
}

impl<R: Read> TarStream<R> {
    /// A reader of the tar `inner`; `what` names it in errors.
    pub fn new(inner: R, what: impl Into<String>) -> Self {
        TarStream { inner, remaining: 0, padding: 0, what: what.into(), zero_block: false }
    }

    /// Whether [`Self::next_member`] ended on a zero block (512 bytes read), not at the end of
    /// the input.
    pub fn ended_on_zero_block(&self) -> bool {
        self.zero_block
    }

    /// The input after the end of the archive (the rest of the end blocks, padding).
    pub fn rest(&mut self) -> &mut R {
        &mut self.inner
    }

    /// The next member, or `None` at the end of the archive (a zero block or the end of the
    /// stream). The previous member's data and padding must have been read.
    pub fn next_member(&mut self) -> io::Result<Option<RawMember>> {
        if self.remaining != 0 || self.padding != 0 {
            return Err(io::Error::other("tar stream: member data not read before the next header"));
        }
        let mut raw = Vec::with_capacity(BLOCK);
        let (mut long_name, mut long_link, mut pax) = (None, None, Vec::new());
        loop {
            let mut block = [0u8; BLOCK];
            let n = read_full(&mut self.inner, &mut block)?;
            if n == 0 || (n == BLOCK && block.iter().all(|&b| b == 0)) {
                if !raw.is_empty() {
                    return Err(bad(&self.what, "extension headers at the end of the archive describe no member"));
                }
                self.zero_block = n == BLOCK;
                return Ok(None);
            }
            if n < BLOCK {
                return Err(bad(&self.what, "archive truncated in a header"));
            }
            if !checksum_ok(&block) {
                return Err(bad(&self.what, "tar header checksum mismatch"));
            }
            raw.extend_from_slice(&block);
            let header = tar::Header::from_byte_slice(&block).clone();
            let size = header.entry_size().map_err(|e| bad(&self.what, e))?;
            let kind = header.entry_type().as_byte();
            if matches!(kind, b'L' | b'K' | b'x' | b'g') {
                if size > MAX_HEADER_EXTENSION {
                    return Err(bad(
                        &self.what,
                        format!("extension header of {size} bytes, over the {MAX_HEADER_EXTENSION} byte limit"),
                    ));
                }
                let padded = (size as usize).next_multiple_of(BLOCK);
                let start = raw.len();
                raw.resize(start + padded, 0);
                if read_full(&mut self.inner, &mut raw[start..])? != padded {
                    return Err(bad(&self.what, "archive truncated in an extension header"));
                }
                let data = &raw[start..start + size as usize];
                match kind {
                    b'L' => long_name = Some(c_string(data)),
                    b'K' => long_link = Some(c_string(data)),
                    b'x' => {
                        for ext in tar::PaxExtensions::new(data) {
                            let ext = ext.map_err(|e| bad(&self.what, format!("PAX record: {e}")))?;
                            let key = ext.key().map_err(|e| bad(&self.what, format!("PAX key: {e}")))?;
                            pax.push((key.to_string(), ext.value_bytes().to_vec()));
                        }
                    }
                    // Global records describe no member; their bytes are kept.
                    _ => {}
                }
                continue;
            }
            if header.entry_type().is_gnu_sparse() {
                return Err(bad(&self.what, "GNU sparse files are not supported in lazy-pull layers"));
            }
            let find = |key: &str| pax.iter().rev().find(|(k, _)| k == key).map(|(_, v): &(String, Vec<u8>)| v.clone());
            let size = match find("size") {
                Some(v) => std::str::from_utf8(&v)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| bad(&self.what, "PAX size is not a number"))?,
                None => size,
            };
            let name = find("path").or(long_name).unwrap_or_else(|| header.path_bytes().into_owned());
            let link = find("linkpath")
                .or(long_link)
                .or_else(|| header.link_name_bytes().map(|l| l.into_owned()))
                .unwrap_or_default();
            let utf8 = |b: Vec<u8>| String::from_utf8(b).map_err(|_| bad(&self.what, "a path in the tar is not UTF-8"));
            let (name, link) = (utf8(name)?, utf8(link)?);
            // Links, directories and devices carry no data whatever their size field says.
            let data = match header.entry_type().as_byte() {
                b'1' | b'2' | b'3' | b'4' | b'5' | b'6' => 0,
                _ => size,
            };
            self.remaining = data;
            self.padding = (data.next_multiple_of(BLOCK as u64) - data) as usize;
            return Ok(Some(RawMember { raw, header, name, link, size: data, pax }));
        }
    }

    /// The padding after the current member's data (call once its data is read).
    pub fn read_padding(&mut self) -> io::Result<Vec<u8>> {
        if self.remaining != 0 {
            return Err(io::Error::other("tar stream: padding read before the data"));
        }
        let mut pad = vec![0u8; self.padding];
        if read_full(&mut self.inner, &mut pad)? != pad.len() {
            return Err(bad(&self.what, "archive truncated in an entry's padding"));
        }
        self.padding = 0;
        Ok(pad)
    }
}

impl<R: Read> Read for TarStream<R> {
    /// The current member's data (0 at its end).
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf.len().min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(bad(&self.what, "archive truncated in an entry's data"));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Copy the tar `input` to `out` without the members `drop` names (after cleaning the path),
/// ending it with the two zero blocks of a tar's end; everything after the first end of
/// archive is ignored. The bytes of every other member are kept as they were.
pub(crate) fn filter_members(
    input: impl Read,
    out: &mut impl io::Write,
    what: &str,
    drop: impl Fn(&str) -> bool,
) -> io::Result<()> {
    let mut tar = TarStream::new(input, what);
    let mut buf = vec![0u8; 1 << 20];
    while let Some(m) = tar.next_member()? {
        let keep = !drop(&clean_name(&m.name));
        if keep {
            out.write_all(&m.raw)?;
        }
        loop {
            let n = tar.read(&mut buf)?;
            if n == 0 {
                break;
            }
            if keep {
                out.write_all(&buf[..n])?;
            }
        }
        let pad = tar.read_padding()?;
        if keep {
            out.write_all(&pad)?;
        }
    }
    out.write_all(&[0u8; 2 * BLOCK])
}

/// A tar path as Go's `path.Clean("/" + name)` without the leading `/`: what the eStargz TOC
/// and its readers compare.
pub(crate) fn clean_name(name: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in name.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_keep_their_bytes_and_filtering_drops_whole_members() {
        let mut b = tar::Builder::new(Vec::new());
        let long = format!("dir/{}", "x".repeat(150));
        for (name, data) in [("a.txt", &b"hello"[..]), (long.as_str(), b"long"), ("stargz.index.json", b"{}")] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, name, data).unwrap();
        }
        let tar = b.into_inner().unwrap();
        let mut s = TarStream::new(&tar[..], "t");
        let mut names = Vec::new();
        let mut rebuilt = Vec::new();
        while let Some(m) = s.next_member().unwrap() {
            names.push(m.name.clone());
            rebuilt.extend_from_slice(&m.raw);
            std::io::copy(&mut s, &mut rebuilt).unwrap();
            rebuilt.extend(s.read_padding().unwrap());
        }
        assert_eq!(names, ["a.txt", long.as_str(), "stargz.index.json"]);
        rebuilt.extend_from_slice(&[0; 1024]);
        assert_eq!(rebuilt, tar);

        let mut out = Vec::new();
        filter_members(&tar[..], &mut out, "t", |n| n == "stargz.index.json").unwrap();
        let mut names = Vec::new();
        for e in tar::Archive::new(&out[..]).entries().unwrap() {
            names.push(e.unwrap().path().unwrap().to_string_lossy().into_owned());
        }
        assert_eq!(names, ["a.txt", long.as_str()]);
        assert!(tar.starts_with(&out[..out.len() - 1024]));
    }

    #[test]
    fn clean_names_like_go() {
        assert_eq!(clean_name("./a//b/"), "a/b");
        assert_eq!(clean_name("/stargz.index.json"), "stargz.index.json");
        assert_eq!(clean_name("../../x"), "x");
    }
}
