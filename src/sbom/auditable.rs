//! Rust `cargo auditable` data: the dependency list cargo-auditable embeds in an executable
//! (a `.dep-v0` section holding zlib-compressed JSON, `{"packages":[{"name", "version",
//! "source", "kind", "dependencies", "root"}, ...]}`).
//!
//! Files are read as streams (layers are never unpacked), and the section table of an ELF file
//! comes after the sections, so the data is found by its content instead: each zlib header in
//! the file is tried, and the stream whose first inflated bytes are `{"packages":[` is the
//! audit data. A probe inflates at most [`PROBE_OUTPUT`] bytes and stops at the first error
//! (garbage fails within bytes); at most [`MAX_PROBES`] are tried per file, the inflated JSON is
//! at most [`MAX_JSON`] bytes.

use serde::Deserialize;

/// Largest inflated audit data accepted.
pub const MAX_JSON: usize = 8 << 20;
/// Zlib headers tried per file at most.
pub const MAX_PROBES: usize = 1 << 16;
/// Bytes a probe inflates to decide.
const PROBE_OUTPUT: usize = 32;
/// Input kept after a candidate so that a probe can decide (a dynamic Huffman header and the
/// first symbols fit well within it).
const LOOKAHEAD: usize = 4096;
/// How the audit data's JSON starts (cargo-auditable writes it compact).
const PREFIX: &[u8] = b"{\"packages\":[";

/// One crate the executable was built from.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Crate {
    /// Crate name.
    pub name: String,
    /// Version.
    pub version: String,
    /// `crates.io`, `local`, `git`, `registry`, or another source name.
    #[serde(default)]
    pub source: String,
    /// `runtime` (the default) or `build` (a build dependency, not linked in).
    #[serde(default)]
    pub kind: Option<String>,
    /// The package the executable is (the root of the tree).
    #[serde(default)]
    pub root: bool,
}

#[derive(Deserialize)]
struct AuditData {
    packages: Vec<Crate>,
}

/// Searches a file fed in chunks for cargo-auditable data.
#[derive(Default)]
pub struct Finder {
    /// Bytes not yet tried as candidate starts, plus the lookahead behind them.
    window: Vec<u8>,
    /// The audit stream being inflated, and what it gave so far.
    active: Option<(flate2::Decompress, Vec<u8>)>,
    /// The inflated JSON, once complete.
    found: Option<Vec<u8>>,
    probes: usize,
    done: bool,
}

/// Whether `b` starts a zlib stream (deflate, 32 KiB window, no preset dictionary).
fn zlib_header(b: &[u8]) -> bool {
    b.len() >= 2 && b[0] == 0x78 && b[1] & 0x20 == 0 && (u16::from(b[0]) << 8 | u16::from(b[1])) % 31 == 0
}

/// Whether the zlib stream at the start of `input` inflates to the audit data's prefix.
fn probe(input: &[u8]) -> bool {
    let mut d = flate2::Decompress::new(true);
    let mut out = [0u8; PROBE_OUTPUT];
    let mut produced = 0;
    let mut consumed = 0;
    while produced < PREFIX.len() {
        let (i0, o0) = (d.total_in(), d.total_out());
        let r = d.decompress(&input[consumed..], &mut out[produced..], flate2::FlushDecompress::None);
        consumed += (d.total_in() - i0) as usize;
        produced += (d.total_out() - o0) as usize;
        if out[..produced.min(PREFIX.len())] != PREFIX[..produced.min(PREFIX.len())] {
            return false;
        }
        match r {
            Ok(flate2::Status::Ok) if d.total_in() > i0 || d.total_out() > o0 => {}
            _ => break,
        }
    }
    produced >= PREFIX.len()
}

impl Finder {
    /// Feed the next chunk of the file; true once the search is over (found or given up).
    pub fn feed(&mut self, chunk: &[u8]) -> bool {
        if self.done {
            return true;
        }
        if self.active.is_some() {
            self.inflate(chunk);
            return self.done;
        }
        self.window.extend_from_slice(chunk);
        self.scan(false);
        self.done
    }

    /// The crates found, when the file held audit data.
    pub fn finish(&mut self) -> Option<Vec<Crate>> {
        if !self.done && self.active.is_none() {
            self.scan(true);
        }
        let json = self.found.take()?;
        serde_json::from_slice::<AuditData>(&json).ok().map(|a| a.packages)
    }

    /// Try the candidates of the window that have their lookahead (all of them at the end).
    fn scan(&mut self, at_end: bool) {
        let limit = if at_end { self.window.len() } else { self.window.len().saturating_sub(LOOKAHEAD) };
        let mut pos = 0;
        while pos < limit {
            let Some(off) = self.window[pos..limit].iter().position(|&b| b == 0x78) else {
                pos = limit;
                break;
            };
            pos += off;
            if zlib_header(&self.window[pos..]) {
                self.probes += 1;
                if self.probes > MAX_PROBES {
                    self.done = true;
                    self.window = Vec::new();
                    return;
                }
                if probe(&self.window[pos..]) {
                    let rest = self.window.split_off(pos);
                    self.window = Vec::new();
                    self.active = Some((flate2::Decompress::new(true), Vec::new()));
                    self.inflate(&rest);
                    return;
                }
            }
            pos += 1;
        }
        self.window.drain(..pos);
    }

    /// Inflate more of the audit stream.
    fn inflate(&mut self, mut input: &[u8]) {
        let Some((d, out)) = self.active.as_mut() else { return };
        while !input.is_empty() {
            if out.len() >= MAX_JSON {
                self.active = None;
                self.done = true;
                return;
            }
            out.reserve((input.len() * 4).clamp(4096, MAX_JSON - out.len()));
            let i0 = d.total_in();
            match d.decompress_vec(input, out, flate2::FlushDecompress::None) {
                Ok(flate2::Status::StreamEnd) => {
                    self.found = self.active.take().map(|(_, o)| o);
                    self.done = true;
                    return;
                }
                Ok(_) => input = &input[(d.total_in() - i0) as usize..],
                Err(_) => {
                    self.active = None;
                    self.done = true;
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn finds_the_audit_data_among_other_zlib_streams_across_chunks() {
        let json = br#"{"packages":[{"name":"app","version":"0.1.0","source":"local","root":true,"dependencies":[1]},{"name":"itoa","version":"1.0.11","source":"crates.io"},{"name":"cc","version":"1.0.0","source":"crates.io","kind":"build"}]}"#;
        let z = |data: &[u8]| {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(7));
            e.write_all(data).unwrap();
            e.finish().unwrap()
        };
        let mut file = b"\x7fELF".to_vec();
        file.extend(std::iter::repeat_n(0x78u8, 3000));
        file.extend(z(b"{\"other\": 1}"));
        file.extend(vec![0u8; 5000]);
        file.extend(z(json));
        file.extend(vec![0x78u8; 100]);
        for size in [1, 7, 4096, file.len()] {
            let mut f = Finder::default();
            for c in file.chunks(size) {
                if f.feed(c) {
                    break;
                }
            }
            let crates = f.finish().expect("found");
            assert_eq!(crates.len(), 3, "chunks of {size}");
            assert_eq!(crates[1].name, "itoa");
            assert_eq!(crates[2].kind.as_deref(), Some("build"));
            assert!(crates[0].root);
        }
        let mut f = Finder::default();
        f.feed(&file[..4000]);
        assert!(f.finish().is_none(), "no audit data in the first bytes");
    }
}
