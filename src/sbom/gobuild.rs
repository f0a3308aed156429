//! Go build info in binaries, found while a file streams by. Since Go 1.18 the linker writes a
//! 32-byte header in the `.go.buildinfo` section: the magic `\xff Go buildinf:`, the pointer
//! size, a flags byte (bit 2: strings inline), padding; then the Go version and the module
//! info as varint-length-prefixed strings. The module info is `go version -m`'s text between
//! two 16-byte sentinels: `path`, `mod`, `dep` and `=>` (replacement) lines, tab-separated.
//! Older binaries (pointers instead of inline strings) are not read.

/// The magic that starts the build info header.
const MAGIC: &[u8] = b"\xff Go buildinf:";
/// Bytes after the magic kept to parse version and module info (a large module list is a few
/// tens of KiB).
const CAPTURE: usize = 1 << 20;

/// A Go module a binary was built from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoModule {
    /// Module path (`github.com/pkg/errors`).
    pub path: String,
    /// Version (`v0.9.1`, `(devel)`).
    pub version: String,
    /// `h1:` checksum from go.sum, when recorded.
    pub sum: Option<String>,
}

/// What a Go binary says about how it was built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoBinary {
    /// Toolchain version (`go1.22.5`).
    pub go_version: String,
    /// The main module, when built in module mode.
    pub main: Option<GoModule>,
    /// Dependencies, replacements applied.
    pub deps: Vec<GoModule>,
}

/// Searches a stream for the build info header and keeps what follows it.
#[derive(Default)]
pub struct Finder {
    /// The last bytes of the previous chunk (a magic may straddle two chunks).
    tail: Vec<u8>,
    /// Bytes from a found magic on, while capturing.
    capture: Option<Vec<u8>>,
    found: Option<GoBinary>,
}

impl Finder {
    /// Feed the next chunk; true once build info was found and parsed.
    pub fn feed(&mut self, chunk: &[u8]) -> bool {
        if self.found.is_some() {
            return true;
        }
        if let Some(c) = self.capture.as_mut() {
            let take = (CAPTURE - c.len()).min(chunk.len());
            c.extend_from_slice(&chunk[..take]);
            if c.len() >= CAPTURE {
                return self.try_parse(false);
            }
            return false;
        }
        let mut joined = std::mem::take(&mut self.tail);
        joined.extend_from_slice(chunk);
        if let Some(i) = memchr::memmem::find(&joined, MAGIC) {
            let mut c = joined[i..].to_vec();
            c.truncate(CAPTURE);
            self.capture = Some(c);
            if self.capture.as_ref().is_some_and(|c| c.len() >= CAPTURE) {
                return self.try_parse(false);
            }
            return false;
        }
        let keep = joined.len().min(MAGIC.len() - 1);
        self.tail = joined[joined.len() - keep..].to_vec();
        false
    }

    /// Parse the capture; when it is not the header (the magic also appears as a string in
    /// binaries that read build info), search on from the next magic in it.
    fn try_parse(&mut self, at_end: bool) -> bool {
        while let Some(c) = self.capture.take() {
            if let Some(b) = parse(&c) {
                self.found = Some(b);
                return true;
            }
            match memchr::memmem::find(&c[1..], MAGIC) {
                Some(i) => {
                    let next = c[1 + i..].to_vec();
                    let complete = next.len() >= CAPTURE || at_end;
                    self.capture = Some(next);
                    if !complete {
                        return false;
                    }
                }
                None => {
                    let keep = c.len().min(MAGIC.len() - 1);
                    self.tail = c[c.len() - keep..].to_vec();
                    return false;
                }
            }
        }
        false
    }

    /// The build info found, if any.
    pub fn take(&mut self) -> Option<GoBinary> {
        self.found.take()
    }

    /// At the end of the file: parse what was captured.
    pub fn finish(&mut self) -> Option<GoBinary> {
        if self.found.is_none() && self.capture.is_some() {
            self.try_parse(true);
        }
        self.found.take()
    }
}

fn uvarint(b: &[u8]) -> Option<(u64, usize)> {
    let mut x = 0u64;
    for (i, &c) in b.iter().enumerate().take(10) {
        x |= u64::from(c & 0x7f) << (7 * i);
        if c < 0x80 {
            return Some((x, i + 1));
        }
    }
    None
}

fn read_string(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let (n, used) = uvarint(b)?;
    let n = usize::try_from(n).ok()?;
    let rest = b.get(used..)?;
    (rest.len() >= n).then(|| (&rest[..n], &rest[n..]))
}

/// Parse a build info header and what follows (`data` starts at the magic).
pub fn parse(data: &[u8]) -> Option<GoBinary> {
    if data.len() < 32 || !data.starts_with(MAGIC) {
        return None;
    }
    let flags = data[15];
    if flags & 0x2 == 0 {
        return None;
    }
    let (version, rest) = read_string(&data[32..])?;
    let (modinfo, _) = read_string(rest)?;
    let version = std::str::from_utf8(version).ok()?;
    if !version.starts_with("go") {
        return None;
    }
    // 16-byte sentinels around the text (binary bytes, not UTF-8: cut before decoding)
    let mut modinfo = modinfo;
    if modinfo.len() >= 33 && modinfo[modinfo.len() - 17] == b'\n' {
        modinfo = &modinfo[16..modinfo.len() - 16];
    }
    let modinfo = std::str::from_utf8(modinfo).ok()?;
    let mut main = None;
    let mut deps: Vec<GoModule> = Vec::new();
    for line in modinfo.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let module = |f: &[&str]| GoModule {
            path: f.get(1).unwrap_or(&"").to_string(),
            version: f.get(2).unwrap_or(&"").to_string(),
            sum: f.get(3).filter(|s| !s.is_empty()).map(|s| s.to_string()),
        };
        match f.first().copied() {
            Some("mod") if f.len() >= 3 => main = Some(module(&f)),
            Some("dep") if f.len() >= 3 => deps.push(module(&f)),
            // a replacement by another module stands for the dependency; one by a directory
            // (`./dep`, `/src/dep`: no module path, version `(devel)`) keeps what was required
            Some("=>") if f.len() >= 3 && !is_dir_path(f[1]) => {
                if let Some(last) = deps.last_mut() {
                    *last = module(&f);
                }
            }
            _ => {}
        }
    }
    Some(GoBinary { go_version: version.to_string(), main, deps })
}

/// Whether a `replace` target is a directory (go.mod's rule: it starts with `./`, `../` or `/`).
fn is_dir_path(p: &str) -> bool {
    p.starts_with("./") || p.starts_with("../") || p.starts_with('/') || p == "." || p == ".."
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(version: &str, modinfo: &str) -> Vec<u8> {
        let mut b = MAGIC.to_vec();
        b.push(8);
        b.push(2);
        b.resize(32, 0);
        b.push(version.len() as u8);
        b.extend_from_slice(version.as_bytes());
        // Go's own sentinels (cmd/go/internal/modload): bytes that are not UTF-8
        let (start, end) = (
            b"\x30\x77\xaf\x0c\x92\x74\x08\x02\x41\xe1\xc1\x07\xe6\xd6\x18\xe6",
            b"\xf9\x32\x43\x31\x86\x18\x20\x72\x00\x82\x42\x10\x41\x16\xd8\xf2",
        );
        let mut m = start.to_vec();
        m.extend_from_slice(modinfo.as_bytes());
        m.extend_from_slice(end);
        let mut n = m.len();
        while n >= 0x80 {
            b.push((n as u8) | 0x80);
            n >>= 7;
        }
        b.push(n as u8);
        b.extend_from_slice(&m);
        b
    }

    #[test]
    fn finds_build_info_across_chunks() {
        let info = "path\texample.com/app\nmod\texample.com/app\tv1.2.3\th1:abc=\ndep\tgithub.com/pkg/errors\tv0.9.1\th1:x=\ndep\tgolang.org/x/sys\tv0.1.0\th1:y=\n=>\tgolang.org/x/sys\tv0.2.0\th1:z=\n";
        let mut file = vec![0u8; 5000];
        file.extend_from_slice(b"\xff Go buildinf: this is a string, not the header");
        file.extend(header("go1.22.5", info));
        file.extend(vec![0u8; 3000]);
        let mut f = Finder::default();
        for c in file.chunks(7) {
            f.feed(c);
        }
        let b = f.finish().expect("found");
        assert_eq!(b.go_version, "go1.22.5");
        assert_eq!(b.main.unwrap().version, "v1.2.3");
        assert_eq!(b.deps.len(), 2);
        assert_eq!(b.deps[1].version, "v0.2.0", "replacement applied");
        let info = "path\tex.com/app\nmod\tex.com/app\t(devel)\t\ndep\tex.com/dep\tv0.3.1\n=>\t./dep\t(devel)\t\n";
        let b = parse(&header("go1.19.8", info)).expect("parsed");
        assert_eq!(
            (b.deps[0].path.as_str(), b.deps[0].version.as_str()),
            ("ex.com/dep", "v0.3.1"),
            "a directory keeps what was required"
        );
    }
}
