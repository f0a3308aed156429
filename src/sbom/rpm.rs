//! rpm databases: `rpmdb.sqlite` (rpm >= 4.16: Fedora 33+, RHEL 9, openSUSE, Amazon Linux 2023)
//! at `/var/lib/rpm/` or `/usr/lib/sysimage/rpm/`. The `Packages` table holds one rpm header
//! blob per package; the headers are parsed here (the format of rpm's `headerExport`: index
//! count and data length, 16-byte index entries, then the data store), every offset checked
//! against the blob. The database is opened with SQLite (rusqlite, SQLite bundled) from a copy
//! in a temporary directory, with its `-wal` file when the image has one, so a database that
//! was not checkpointed is read whole. Berkeley DB (`Packages`) and ndb databases of older
//! distributions are not read.

use super::purl::{namespace, purl};
use super::tree::{content_bytes, present_files, Tree, RPM_DB_PATHS as DB_PATHS};
use super::{license, Distro, Package, PackageKind};

/// Index entries of one header at most (rpm's own limit, `HEADER_TAGS_MAX`).
const MAX_INDEX: usize = 0xffff;
/// Data store bytes of one header at most (rpm's `HEADER_DATA_MAX`).
const MAX_DATA: usize = 256 << 20;

const TAG_NAME: u32 = 1000;
const TAG_VERSION: u32 = 1001;
const TAG_RELEASE: u32 = 1002;
const TAG_EPOCH: u32 = 1003;
const TAG_VENDOR: u32 = 1011;
const TAG_LICENSE: u32 = 1014;
const TAG_PACKAGER: u32 = 1015;
const TAG_ARCH: u32 = 1022;
const TAG_SOURCERPM: u32 = 1044;
const TAG_DIRINDEXES: u32 = 1116;
const TAG_BASENAMES: u32 = 1117;
const TAG_DIRNAMES: u32 = 1118;

const TYPE_INT32: u32 = 4;
const TYPE_STRING: u32 = 6;
const TYPE_STRING_ARRAY: u32 = 8;
const TYPE_I18NSTRING: u32 = 9;

/// One parsed header: the tags this scanner reads.
#[derive(Debug, Default, PartialEq)]
pub struct Header {
    /// `NAME`.
    pub name: String,
    /// `VERSION`.
    pub version: String,
    /// `RELEASE`.
    pub release: String,
    /// `EPOCH`, when set.
    pub epoch: Option<u32>,
    /// `ARCH`.
    pub arch: String,
    /// `LICENSE`.
    pub license: Option<String>,
    /// `VENDOR`, else `PACKAGER`.
    pub supplier: Option<String>,
    /// `SOURCERPM`.
    pub source_rpm: Option<String>,
    /// Absolute paths of the files the package lists.
    pub files: Vec<String>,
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4).map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// Parse a header blob as stored in `Packages.blob`. `None` if it is malformed.
pub fn parse_header(blob: &[u8]) -> Option<Header> {
    let il = be32(blob, 0)? as usize;
    let dl = be32(blob, 4)? as usize;
    if il == 0 || il > MAX_INDEX || dl > MAX_DATA {
        return None;
    }
    let data_start = 8 + il * 16;
    let data = blob.get(data_start..data_start.checked_add(dl)?)?;
    let mut strings: std::collections::HashMap<u32, Vec<String>> = Default::default();
    let mut ints: std::collections::HashMap<u32, Vec<u32>> = Default::default();
    for i in 0..il {
        let e = 8 + i * 16;
        let (tag, ty, off, count) =
            (be32(blob, e)?, be32(blob, e + 4)?, be32(blob, e + 8)? as usize, be32(blob, e + 12)? as usize);
        if count == 0 || count > dl {
            continue;
        }
        match ty {
            TYPE_STRING | TYPE_STRING_ARRAY | TYPE_I18NSTRING => {
                let n = if ty == TYPE_STRING { 1 } else { count };
                let mut at = off;
                let mut list = Vec::with_capacity(n.min(4096));
                for _ in 0..n {
                    let rest = data.get(at..)?;
                    let end = rest.iter().position(|&c| c == 0)?;
                    list.push(String::from_utf8_lossy(&rest[..end]).into_owned());
                    at += end + 1;
                }
                strings.insert(tag, list);
            }
            TYPE_INT32 => {
                let bytes = data.get(off..off.checked_add(count.checked_mul(4)?)?)?;
                ints.insert(tag, bytes.chunks_exact(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]])).collect());
            }
            _ => {}
        }
    }
    let one = |tag| strings.get(&tag).and_then(|v| v.first()).cloned().filter(|s| !s.is_empty());
    let mut files = Vec::new();
    if let (Some(bases), Some(dirs), Some(idx)) =
        (strings.get(&TAG_BASENAMES), strings.get(&TAG_DIRNAMES), ints.get(&TAG_DIRINDEXES))
    {
        for (base, &d) in bases.iter().zip(idx) {
            let dir = dirs.get(d as usize)?;
            files.push(format!("{dir}{base}"));
        }
    }
    Some(Header {
        name: one(TAG_NAME)?,
        version: one(TAG_VERSION).unwrap_or_default(),
        release: one(TAG_RELEASE).unwrap_or_default(),
        epoch: ints.get(&TAG_EPOCH).and_then(|v| v.first().copied()),
        arch: one(TAG_ARCH).unwrap_or_default(),
        license: one(TAG_LICENSE),
        supplier: one(TAG_VENDOR).or_else(|| one(TAG_PACKAGER)),
        source_rpm: one(TAG_SOURCERPM),
        files,
    })
}

/// Every header blob of the database `db` (with its write-ahead log `wal`, if any).
fn blobs(db: &[u8], wal: Option<&[u8]>) -> Result<Vec<Vec<u8>>, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let path = dir.path().join("rpmdb.sqlite");
    std::fs::write(&path, db).map_err(|e| e.to_string())?;
    if let Some(w) = wal {
        std::fs::write(dir.path().join("rpmdb.sqlite-wal"), w).map_err(|e| e.to_string())?;
    }
    let conn = rusqlite::Connection::open(&path).map_err(|e| e.to_string())?;
    let mut stmt = conn.prepare("SELECT blob FROM Packages").map_err(|e| e.to_string())?;
    let rows = stmt.query_map([], |r| r.get::<_, Vec<u8>>(0)).map_err(|e| e.to_string())?;
    rows.collect::<Result<Vec<_>, _>>().map_err(|e| e.to_string())
}

/// The packages of the image's rpm database, if it has one. A database SQLite cannot read
/// is reported on stderr (the tracing log) and skipped: the rest of the SBOM stands.
pub fn packages(tree: &Tree, distro: Option<&Distro>, out: &mut Vec<Package>) {
    let Some(db_path) = DB_PATHS.iter().find(|p| content_bytes(tree, p).is_some()) else { return };
    let db = content_bytes(tree, db_path).unwrap_or_default();
    let wal = content_bytes(tree, &format!("{db_path}-wal"));
    let headers = match blobs(db, wal) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!("sbom: rpm database /{db_path}: {e}");
            return;
        }
    };
    let (ns, distro_q) = namespace(distro, false, "redhat");
    for blob in headers {
        let Some(h) = parse_header(&blob) else {
            tracing::warn!("sbom: rpm database /{db_path}: a malformed header skipped");
            continue;
        };
        // the public keys rpm imported are pseudo-packages, not software
        if h.name == "gpg-pubkey" {
            continue;
        }
        let vr = format!("{}-{}", h.version, h.release);
        let epoch = h.epoch.map(|e| e.to_string());
        let mut quals: Vec<(&str, &str)> = vec![("arch", h.arch.as_str())];
        if let Some(e) = epoch.as_deref() {
            quals.push(("epoch", e));
        }
        if let Some(d) = distro_q.as_deref() {
            quals.push(("distro", d));
        }
        if let Some(s) = h.source_rpm.as_deref() {
            quals.push(("upstream", s));
        }
        out.push(Package {
            kind: PackageKind::Rpm,
            name: h.name.clone(),
            version: match &epoch {
                Some(e) => format!("{e}:{vr}"),
                None => vr.clone(),
            },
            purl: purl("rpm", &[ns.as_str()], &h.name, &vr, &quals),
            license: h.license.as_deref().and_then(license::to_spdx),
            license_stated: h.license.clone(),
            supplier: h.supplier.clone(),
            files: present_files(tree, h.files.iter().map(String::as_str)),
            location: format!("/{db_path}"),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header blob with the given (tag, type, data) entries, laid out as rpm does.
    fn header(entries: &[(u32, u32, Vec<u8>, u32)]) -> Vec<u8> {
        let mut index = Vec::new();
        let mut data = Vec::new();
        for (tag, ty, bytes, count) in entries {
            if *ty == TYPE_INT32 {
                while data.len() % 4 != 0 {
                    data.push(0);
                }
            }
            for v in [*tag, *ty, data.len() as u32, *count] {
                index.extend_from_slice(&v.to_be_bytes());
            }
            data.extend_from_slice(bytes);
        }
        let mut out = Vec::new();
        out.extend_from_slice(&(entries.len() as u32).to_be_bytes());
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend(index);
        out.extend(data);
        out
    }

    #[test]
    fn parses_names_versions_and_files_and_refuses_bad_offsets() {
        let s = |v: &str| format!("{v}\0").into_bytes();
        let blob = header(&[
            (TAG_NAME, TYPE_STRING, s("zlib"), 1),
            (TAG_VERSION, TYPE_STRING, s("1.2.13"), 1),
            (TAG_RELEASE, TYPE_STRING, s("3.fc39"), 1),
            (TAG_EPOCH, TYPE_INT32, 2u32.to_be_bytes().to_vec(), 1),
            (TAG_ARCH, TYPE_STRING, s("x86_64"), 1),
            (TAG_LICENSE, TYPE_STRING, s("Zlib"), 1),
            (TAG_BASENAMES, TYPE_STRING_ARRAY, [s("libz.so.1"), s("README")].concat(), 2),
            (TAG_DIRNAMES, TYPE_STRING_ARRAY, [s("/usr/lib64/"), s("/usr/share/doc/zlib/")].concat(), 2),
            (TAG_DIRINDEXES, TYPE_INT32, [0u32.to_be_bytes(), 1u32.to_be_bytes()].concat(), 2),
        ]);
        let h = parse_header(&blob).unwrap();
        assert_eq!(
            (h.name.as_str(), h.version.as_str(), h.release.as_str(), h.epoch),
            ("zlib", "1.2.13", "3.fc39", Some(2))
        );
        assert_eq!(h.files, ["/usr/lib64/libz.so.1", "/usr/share/doc/zlib/README"]);
        // an offset past the data, a truncated blob, an absurd index count: no header, no panic
        let mut bad = blob.clone();
        bad[8 + 8..8 + 12].copy_from_slice(&10_000u32.to_be_bytes());
        assert!(parse_header(&bad).is_none());
        assert!(parse_header(&blob[..blob.len() - 3]).is_none());
        assert!(parse_header(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]).is_none());
    }
}
