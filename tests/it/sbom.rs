//! `hoist sbom`: the packages of an image read from its layers as streams. The test image
//! carries a real dpkg database (this machine's `/var/lib/dpkg/status`, trimmed, with the
//! packages' `.list` and `copyright` files), an apk database, Python dist-info and egg-info
//! metadata and `node_modules`; a second layer hides some of it with whiteouts. The package
//! set is judged by `dpkg-query --admindir` (dpkg) and by the metadata files themselves (the
//! others); SPDX by spdx-tools (`pyspdxtools -i`), CycloneDX by cyclonedx-python-lib's JSON
//! validator.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;
use crate::model::python_with;

/// dpkg packages put into the test image.
const DPKG_PACKAGES: usize = 25;

/// A tar layer of `(path, bytes, mode)`; paths ending in `/` are directories.
pub fn tar_layer(entries: &[(String, Vec<u8>, u32)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data, mode) in entries {
        let mut h = tar::Header::new_gnu();
        if path.ends_with('/') {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
        } else {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(data.len() as u64);
        }
        h.set_mode(*mode);
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, path, data.as_slice()).unwrap();
    }
    b.into_inner().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// What the test image holds, for the checks.
pub struct Fixture {
    /// The OCI layout, tag `v1`.
    pub layout: PathBuf,
    /// A dpkg admin dir with the same `status` (for `dpkg-query --admindir`).
    pub admindir: PathBuf,
    /// (name, version) of the non-dpkg packages that must be found.
    pub others: Vec<(&'static str, &'static str, &'static str)>,
    /// Names that a whiteout hid: must not be found.
    pub hidden: Vec<&'static str>,
    /// The files of one dpkg package that are in the image (absolute paths).
    pub owned: (String, Vec<String>),
}

/// The first `n` installed packages of this machine's dpkg database, as stanzas.
fn host_dpkg(n: usize) -> Vec<(String, String)> {
    let status = std::fs::read_to_string("/var/lib/dpkg/status").expect("this machine's /var/lib/dpkg/status");
    status
        .split("\n\n")
        .filter(|s| s.lines().any(|l| l == "Status: install ok installed"))
        .filter_map(|s| {
            let name = s.lines().find_map(|l| l.strip_prefix("Package: "))?.to_string();
            Some((name, s.trim().to_string()))
        })
        .take(n)
        .collect()
}

/// Build the test image into `dir`.
pub fn fixture(dir: &Path) -> Fixture {
    let mut l1: Vec<(String, Vec<u8>, u32)> = Vec::new();
    let stanzas = host_dpkg(DPKG_PACKAGES);
    let status: String = stanzas.iter().map(|(_, s)| format!("{s}\n\n")).collect();
    l1.push(("var/lib/dpkg/status".into(), status.clone().into_bytes(), 0o644));
    let admindir = dir.join("admindir");
    std::fs::create_dir_all(admindir.join("info")).unwrap();
    std::fs::write(admindir.join("status"), &status).unwrap();
    let mut owned = (String::new(), Vec::new());
    for (name, stanza) in &stanzas {
        let arch = stanza.lines().find_map(|l| l.strip_prefix("Architecture: ")).unwrap_or("all");
        for list in [format!("{name}:{arch}.list"), format!("{name}.list")] {
            let host = Path::new("/var/lib/dpkg/info").join(&list);
            if let Ok(text) = std::fs::read(&host) {
                l1.push((format!("var/lib/dpkg/info/{list}"), text.clone(), 0o644));
                // the small regular files of the first package that has some go in too
                if owned.1.is_empty() {
                    let files: Vec<String> = String::from_utf8_lossy(&text)
                        .lines()
                        .filter(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_file() && m.len() < 200_000))
                        .take(5)
                        .map(str::to_string)
                        .collect();
                    for f in &files {
                        l1.push((f.trim_start_matches('/').to_string(), std::fs::read(f).unwrap(), 0o644));
                    }
                    if !files.is_empty() {
                        owned = (name.clone(), files);
                    }
                }
                break;
            }
        }
        let copyright = format!("/usr/share/doc/{name}/copyright");
        if let Ok(c) = std::fs::read(&copyright) {
            l1.push((copyright.trim_start_matches('/').to_string(), c, 0o644));
        }
    }
    l1.push((
        "etc/os-release".into(),
        b"PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n".to_vec(),
        0o644,
    ));
    let apk = "C:Q1abc=\nP:musl\nV:1.2.4-r2\nA:x86_64\nL:MIT\no:musl\nm:Timo Teräs <timo.teras@iki.fi>\nF:lib\nR:ld-musl-x86_64.so.1\n\nC:Q1def=\nP:busybox\nV:1.36.1-r5\nA:x86_64\nL:GPL-2.0-only\no:busybox\nF:bin\nR:busybox\n\n";
    l1.push(("lib/apk/db/installed".into(), apk.as_bytes().to_vec(), 0o644));
    l1.push(("lib/ld-musl-x86_64.so.1".into(), b"not really musl".to_vec(), 0o755));
    let site = "usr/lib/python3/dist-packages";
    l1.push((
        format!("{site}/six-1.16.0.dist-info/METADATA"),
        b"Metadata-Version: 2.1\nName: six\nVersion: 1.16.0\nLicense: MIT\n\nSix is a Python 2 and 3 compatibility library.\n".to_vec(),
        0o644,
    ));
    l1.push((
        format!("{site}/six-1.16.0.dist-info/RECORD"),
        b"six.py,sha256=x,100\nsix-1.16.0.dist-info/METADATA,,\n".to_vec(),
        0o644,
    ));
    l1.push((format!("{site}/six.py"), b"# six\n".to_vec(), 0o644));
    l1.push((
        format!("{site}/Jinja2-3.1.2.egg-info/PKG-INFO"),
        b"Metadata-Version: 2.1\nName: Jinja2\nVersion: 3.1.2\nClassifier: License :: OSI Approved :: BSD License\n"
            .to_vec(),
        0o644,
    ));
    l1.push((
        format!("{site}/gone-1.0.dist-info/METADATA"),
        b"Metadata-Version: 2.1\nName: gone\nVersion: 1.0\n".to_vec(),
        0o644,
    ));
    l1.push((
        "app/node_modules/left-pad/package.json".into(),
        br#"{"name": "left-pad", "version": "1.3.0", "license": "WTFPL"}"#.to_vec(),
        0o644,
    ));
    l1.push((
        "app/node_modules/@types/node/package.json".into(),
        br#"{"name": "@types/node", "version": "20.11.5", "license": {"type": "MIT"}}"#.to_vec(),
        0o644,
    ));
    l1.push((
        "app/node_modules/left-pad/lib/package.json".into(),
        br#"{"name": "not-a-package", "version": "0.0.1"}"#.to_vec(),
        0o644,
    ));
    l1.push((
        "app/node_modules/@old/thing/package.json".into(),
        br#"{"name": "@old/thing", "version": "0.1.0"}"#.to_vec(),
        0o644,
    ));
    // Layer 2 (gzip): a whiteout and an opaque directory hide packages of layer 1.
    let l2 = vec![
        (format!("{site}/.wh.gone-1.0.dist-info"), Vec::new(), 0o644),
        ("app/node_modules/@old/.wh..wh..opq".into(), Vec::new(), 0o644),
        (
            "app/node_modules/express/package.json".into(),
            br#"{"name": "express", "version": "4.18.2", "license": "MIT"}"#.to_vec(),
            0o644,
        ),
    ];
    let layout = dir.join("layout");
    std::fs::create_dir_all(&layout).unwrap();
    let t1 = tar_layer(&l1);
    let t2 = gzip(&tar_layer(&l2));
    let (m, d) = hoist_testkit::fixtures::write_image(&layout, &[&t1, &t2], "sbom");
    hoist_testkit::fixtures::write_index(&layout, &[("v1", &m, &d)]);
    Fixture {
        layout,
        admindir,
        others: vec![
            ("musl", "1.2.4-r2", "pkg:apk/alpine/musl@1.2.4-r2"),
            ("busybox", "1.36.1-r5", "pkg:apk/alpine/busybox@1.36.1-r5"),
            ("six", "1.16.0", "pkg:pypi/six@1.16.0"),
            ("Jinja2", "3.1.2", "pkg:pypi/jinja2@3.1.2"),
            ("left-pad", "1.3.0", "pkg:npm/left-pad@1.3.0"),
            ("@types/node", "20.11.5", "pkg:npm/%40types/node@20.11.5"),
            ("express", "4.18.2", "pkg:npm/express@4.18.2"),
        ],
        hidden: vec!["gone", "@old/thing", "not-a-package"],
        owned,
    }
}

/// purl version encoding as the purl spec gives it (`+` and other reserved characters as
/// `%XX`; `:`, `.`, `-`, `_`, `~` kept).
fn purl_version(v: &str) -> String {
    v.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~:".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// (name, version, arch) of the installed packages `dpkg-query` reads from `admindir`.
fn dpkg_query(admindir: &Path) -> BTreeSet<(String, String, String)> {
    let out = Command::new("dpkg-query")
        .arg(format!("--admindir={}", admindir.display()))
        .args(["-W", "-f", "${Status}\t${Package}\t${Version}\t${Architecture}\n"])
        .output()
        .expect("dpkg-query");
    let text = assert_success("dpkg-query", &out);
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f[0] == "install ok installed").then(|| (f[1].to_string(), f[2].to_string(), f[3].to_string()))
        })
        .collect()
}

#[test]
fn spdx_matches_dpkg_query_and_metadata_and_validates() {
    hoist_testkit::require!("dpkg-query");
    let Some(py) = python_with("sbom::spdx_matches_dpkg_query_and_metadata_and_validates", "spdx_tools") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let fx = fixture(tmp.path());
    let reference = format!("oci:{}:v1", fx.layout.display());
    let out = hoist_cmd()
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args(["--format", "spdx-json", "sbom", &reference])
        .output()
        .unwrap();
    let text = assert_success("hoist sbom --format spdx-json", &out);
    let file = tmp.path().join("sbom.spdx.json");
    std::fs::write(&file, &text).unwrap();
    // spdx-tools parses and validates the document
    let judge = Command::new(py.parent().unwrap().join("pyspdxtools")).arg("-i").arg(&file).output().unwrap();
    assert_success("pyspdxtools -i", &judge);
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["spdxVersion"], "SPDX-2.3");
    let packages = doc["packages"].as_array().unwrap();
    let purls: BTreeSet<String> = packages
        .iter()
        .flat_map(|p| p["externalRefs"].as_array().cloned().unwrap_or_default())
        .filter(|r| r["referenceType"] == "purl")
        .map(|r| r["referenceLocator"].as_str().unwrap().to_string())
        .collect();
    let named: BTreeSet<(String, String)> = packages
        .iter()
        .map(|p| (p["name"].as_str().unwrap().to_string(), p["versionInfo"].as_str().unwrap_or("").to_string()))
        .collect();
    // dpkg: every installed package dpkg-query lists, with its version and a deb purl
    let expected = dpkg_query(&fx.admindir);
    assert_eq!(expected.len(), DPKG_PACKAGES, "the trimmed database has {DPKG_PACKAGES} installed packages");
    for (name, version, arch) in &expected {
        assert!(named.contains(&(name.clone(), version.clone())), "dpkg package {name} {version} missing");
        let prefix = format!("pkg:deb/debian/{}@{}?arch={arch}", name.replace('+', "%2B"), purl_version(version));
        assert!(purls.iter().any(|p| p.starts_with(&prefix)), "no purl {prefix}… in {purls:?}");
    }
    let deb_count = purls.iter().filter(|p| p.starts_with("pkg:deb/")).count();
    assert_eq!(deb_count, expected.len(), "no dpkg package beyond what dpkg-query lists");
    // the others, from the metadata files themselves
    for (name, version, purl) in &fx.others {
        assert!(named.contains(&(name.to_string(), version.to_string())), "{name} {version} missing");
        assert!(purls.iter().any(|p| p.starts_with(purl)), "no purl {purl}… in {purls:?}");
    }
    for hidden in &fx.hidden {
        assert!(!named.iter().any(|(n, _)| n == hidden), "{hidden} was hidden by a whiteout but is listed");
    }
    // the files a package owns, with their SHA-1, related by CONTAINS
    let (owner, files) = &fx.owned;
    assert!(!files.is_empty(), "the fixture put some of {owner}'s files in the image");
    let owner_id = packages.iter().find(|p| p["name"] == owner.as_str()).unwrap()["SPDXID"].as_str().unwrap();
    let doc_files = doc["files"].as_array().unwrap();
    for f in files {
        let entry = doc_files
            .iter()
            .find(|e| e["fileName"] == format!(".{f}"))
            .unwrap_or_else(|| panic!("file {f} of {owner} not listed"));
        let sha1 = entry["checksums"][0]["checksumValue"].as_str().unwrap();
        let host = Command::new("sha1sum").arg(f).output().unwrap();
        assert!(String::from_utf8_lossy(&host.stdout).starts_with(sha1), "SHA-1 of {f}");
        let related = doc["relationships"].as_array().unwrap().iter().any(|r| {
            r["spdxElementId"] == owner_id
                && r["relationshipType"] == "CONTAINS"
                && r["relatedSpdxElement"] == entry["SPDXID"]
        });
        assert!(related, "{owner} CONTAINS {f}");
    }
    // licenses where the metadata states one
    let license =
        |n: &str| packages.iter().find(|p| p["name"] == n).unwrap()["licenseDeclared"].as_str().unwrap().to_string();
    assert_eq!(license("musl"), "MIT");
    assert_eq!(license("six"), "MIT");
    assert_eq!(license("@types/node"), "MIT");
    assert_eq!(license("left-pad"), "WTFPL");
    // the same image and SOURCE_DATE_EPOCH give the same bytes
    let again = hoist_cmd()
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args(["--format", "spdx-json", "sbom", &reference])
        .output()
        .unwrap();
    assert_eq!(assert_success("second sbom", &again), text, "SPDX output is reproducible");
}

#[test]
fn cyclonedx_validates_and_lists_the_same_packages() {
    let Some(py) = python_with("sbom::cyclonedx_validates_and_lists_the_same_packages", "cyclonedx.validation.json")
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let fx = fixture(tmp.path());
    let reference = format!("oci:{}:v1", fx.layout.display());
    let text = ok("hoist sbom cyclonedx", hoist(["--format", "cyclonedx-json", "sbom", &reference]));
    let file = tmp.path().join("bom.json");
    std::fs::write(&file, &text).unwrap();
    let script = "import sys\nfrom cyclonedx.validation.json import JsonStrictValidator\nfrom cyclonedx.schema import SchemaVersion\nerr = JsonStrictValidator(SchemaVersion.V1_6).validate_str(open(sys.argv[1]).read())\nif err: print(err); sys.exit(1)\n";
    assert_success(
        "cyclonedx JsonStrictValidator 1.6",
        &Command::new(&py).args(["-c", script]).arg(&file).output().unwrap(),
    );
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let comps = doc["components"].as_array().unwrap();
    for (name, version, purl) in &fx.others {
        assert!(
            comps.iter().any(|c| c["name"] == *name
                && c["version"] == *version
                && c["purl"].as_str().unwrap().starts_with(purl)),
            "{name} {version} missing"
        );
    }
    assert_eq!(comps.iter().filter(|c| c["purl"].as_str().unwrap().starts_with("pkg:deb/")).count(), DPKG_PACKAGES);
    // the files a package owns, as evidence occurrences
    let (owner, files) = &fx.owned;
    let c = comps.iter().find(|c| c["name"] == owner.as_str()).unwrap();
    let occ: Vec<&str> =
        c["evidence"]["occurrences"].as_array().unwrap().iter().map(|o| o["location"].as_str().unwrap()).collect();
    for f in files {
        assert!(occ.contains(&f.as_str()), "{owner} owns {f}");
    }
}

#[test]
fn sbom_refuses_a_corrupt_layer_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let fx = fixture(tmp.path());
    // flip a byte of the gzip layer (the second one)
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fx.layout.join("index.json")).unwrap()).unwrap();
    let m = index["manifests"][0]["digest"].as_str().unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(hoist_testkit::fixtures::blob_path(&fx.layout, m)).unwrap()).unwrap();
    let layer = manifest["layers"][1]["digest"].as_str().unwrap();
    let path = hoist_testkit::fixtures::blob_path(&fx.layout, layer);
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let out = hoist(["sbom", &format!("oci:{}:v1", fx.layout.display())]);
    assert!(!out.status.success(), "a corrupt layer must fail the scan");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&layer["sha256:".len()..][..12]) || err.contains(layer), "error names the layer: {err}");
}

/// An index scanned without --platform: its image for this machine's platform (as syft picks),
/// the same scan `--platform` of that platform gives, named in the document; an index without
/// this machine's platform is refused, listing what it has.
#[test]
fn sbom_of_an_index_without_platform_scans_this_machines_image() {
    let layout = hoist_testkit::fixtures::sample_layout_dir();
    let multi = format!("oci:{}:multi", layout.display());
    let scan = |extra: &[&str]| {
        let mut args = vec!["--format", "json", "sbom", multi.as_str()];
        args.extend_from_slice(extra);
        let out = hoist(&args);
        assert!(out.status.success(), "sbom {extra:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let host = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let default = scan(&[]);
    assert_eq!(default["platform"]["architecture"], host, "{default}");
    assert_eq!(default, scan(&["--platform", &format!("linux/{host}")]));
    let other = if host == "amd64" { "arm64" } else { "amd64" };
    assert_ne!(default["manifest"]["digest"], scan(&["--platform", &format!("linux/{other}")])["manifest"]["digest"]);

    // the same images listed as two platforms this machine is not: refused, naming both
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("l");
    hoist_testkit::fixtures::copy_tree(&layout, &dir);
    let root: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let multi_digest = root["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["annotations"]["org.opencontainers.image.ref.name"] == "multi")
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(hoist_testkit::fixtures::blob_path(&dir, &multi_digest)).unwrap())
            .unwrap();
    for (entry, arch) in index["manifests"].as_array_mut().unwrap().iter_mut().zip(["s390x", "ppc64le"]) {
        entry["platform"]["architecture"] = arch.into();
    }
    let bytes = index.to_string().into_bytes();
    let digest = hoist_testkit::fixtures::put_blob(&dir, &bytes);
    let root = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.index.v1+json", "digest": digest, "size": bytes.len(),
        "annotations": {"org.opencontainers.image.ref.name": "foreign"}}]});
    std::fs::write(dir.join("index.json"), root.to_string()).unwrap();
    let out = hoist(["sbom", &format!("oci:{}:foreign", dir.display())]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("linux/s390x, linux/ppc64le") && err.contains("--platform"), "{err}");
}

/// rpm: two packages built with `rpmbuild` and installed with `rpm --root` into a tree (its
/// `rpmdb.sqlite`, rpm 4.18's database), made an image by a Dockerfile `COPY`. hoist's SBOM
/// lists what `rpm -qa` lists (names, epoch:version-release, arch), purls, licenses and the
/// files each package owns; spdx-tools accepts the SPDX document.
#[test]
fn rpm_sqlite_database_matches_rpm_qa() {
    hoist_testkit::require!("rpm", "rpmbuild");
    let Some(py) = python_with("sbom::rpm_sqlite_database_matches_rpm_qa", "spdx_tools") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let root = t.join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/os-release"), "ID=fedora\nVERSION_ID=39\nPRETTY_NAME=\"Fedora Linux 39\"\n").unwrap();
    for (name, epoch, license) in [("hoist-one", "Epoch: 1\n", "MIT AND BSD-3-Clause"), ("hoist-two", "", "Apache-2.0")]
    {
        let spec = format!(
            "Name: {name}\nVersion: 1.2\nRelease: 3\n{epoch}Summary: test\nLicense: {license}\nBuildArch: noarch\n\
             %description\ntest\n%install\nmkdir -p %{{buildroot}}/usr/share/{name}\necho {name} > %{{buildroot}}/usr/share/{name}/README\n\
             %files\n/usr/share/{name}/README\n"
        );
        let spec_file = t.join(format!("{name}.spec"));
        std::fs::write(&spec_file, spec).unwrap();
        let topdir = format!("_topdir {}", t.join("top").display());
        assert_success(
            "rpmbuild",
            &Command::new("rpmbuild").args(["-bb", "--define", &topdir]).arg(&spec_file).output().unwrap(),
        );
        let rpm = t.join(format!("top/RPMS/noarch/{name}-1.2-3.noarch.rpm"));
        let install = Command::new("rpm")
            .arg("--root")
            .arg(&root)
            .args(["--dbpath", "/var/lib/rpm", "--nodeps", "-i"])
            .arg(&rpm)
            .output();
        assert_success("rpm -i", &install.unwrap());
    }
    assert!(root.join("var/lib/rpm/rpmdb.sqlite").is_file(), "rpm wrote an sqlite database");
    let qa = Command::new("rpm")
        .arg("--root")
        .arg(&root)
        .args([
            "--dbpath",
            "/var/lib/rpm",
            "-qa",
            "--qf",
            "%{NAME}\\t%|EPOCH?{%{EPOCH}:}:{}|%{VERSION}-%{RELEASE}\\t%{ARCH}\\n",
        ])
        .output()
        .unwrap();
    let expected: BTreeSet<(String, String)> = assert_success("rpm -qa", &qa)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f[0].to_string(), f[1].to_string())
        })
        .collect();
    assert_eq!(expected.len(), 2, "{expected:?}");
    std::fs::write(t.join("Dockerfile"), "FROM scratch\nCOPY root/ /\n").unwrap();
    let store = t.join("store");
    ok("build", hoist(["build", "--store", store.to_str().unwrap(), "-t", "rpm:v1", t.to_str().unwrap()]));
    let reference = format!("oci:{}:rpm:v1", store.display());
    let found: serde_json::Value =
        serde_json::from_str(&ok("sbom", hoist(["--format", "json", "sbom", &reference]))).unwrap();
    let rpms: Vec<&serde_json::Value> =
        found["packages"].as_array().unwrap().iter().filter(|p| p["kind"] == "rpm").collect();
    let got: BTreeSet<(String, String)> = rpms
        .iter()
        .map(|p| (p["name"].as_str().unwrap().to_string(), p["version"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(got, expected, "hoist's rpm packages = rpm -qa");
    let one = rpms.iter().find(|p| p["name"] == "hoist-one").unwrap();
    assert_eq!(
        one["purl"],
        "pkg:rpm/fedora/hoist-one@1.2-3?arch=noarch&distro=fedora-39&epoch=1&upstream=hoist-one-1.2-3.src.rpm"
    );
    assert_eq!(one["license"], "MIT AND BSD-3-Clause");
    assert_eq!(one["files"], serde_json::json!(["/usr/share/hoist-one/README"]));
    let two = rpms.iter().find(|p| p["name"] == "hoist-two").unwrap();
    assert!(two["purl"].as_str().unwrap().starts_with("pkg:rpm/fedora/hoist-two@1.2-3?arch=noarch"), "{two}");
    assert!(!two["purl"].as_str().unwrap().contains("epoch="), "{two}");
    let spdx = t.join("rpm.spdx.json");
    std::fs::write(&spdx, ok("sbom spdx", hoist(["--format", "spdx-json", "sbom", &reference]))).unwrap();
    assert_success(
        "pyspdxtools -i",
        &Command::new(py.parent().unwrap().join("pyspdxtools")).arg("-i").arg(&spdx).output().unwrap(),
    );
}

/// Go build info of a real binary: a module with a dependency (and one replaced by a local
/// directory), built by this machine's `go` offline, put in an image by a Dockerfile `COPY`.
/// hoist's SBOM lists every module `go version -m` prints (the main module and each `dep`,
/// with its version and a `pkg:golang` purl), and spdx-tools accepts the SPDX document.
#[test]
fn go_binaries_list_the_modules_go_version_m_prints() {
    hoist_testkit::require!("go");
    let Some(py) = python_with("sbom::go_binaries_list_the_modules_go_version_m_prints", "spdx_tools") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let src = t.join("src");
    for (path, text) in [
        ("go.mod", "module example.com/hoistapp\n\ngo 1.18\n\nrequire (\n\texample.com/dep v0.3.1\n\texample.com/lib v1.2.0\n)\n\nreplace example.com/dep => ./dep\n\nreplace example.com/lib => example.com/libfork v1.2.5\n"),
        ("main.go", "package main\n\nimport (\n\t\"fmt\"\n\n\t\"example.com/dep\"\n\t\"example.com/lib\"\n)\n\nfunc main() { fmt.Println(dep.Hello(), lib.Name()) }\n"),
        ("dep/go.mod", "module example.com/dep\n\ngo 1.18\n"),
        ("dep/dep.go", "package dep\n\nfunc Hello() string { return \"hi\" }\n"),
    ] {
        std::fs::create_dir_all(src.join(path).parent().unwrap()).unwrap();
        std::fs::write(src.join(path), text).unwrap();
    }
    // example.com/libfork v1.2.5 from a local module proxy directory (GOPROXY=file://...)
    let proxy = t.join("proxy/example.com/libfork/@v");
    std::fs::create_dir_all(&proxy).unwrap();
    std::fs::write(proxy.join("list"), "v1.2.5\n").unwrap();
    std::fs::write(proxy.join("v1.2.5.info"), r#"{"Version":"v1.2.5","Time":"2024-01-01T00:00:00Z"}"#).unwrap();
    std::fs::write(proxy.join("v1.2.5.mod"), "module example.com/libfork\n\ngo 1.18\n").unwrap();
    let zip = "import sys, zipfile\nwith zipfile.ZipFile(sys.argv[1], 'w') as z:\n    z.writestr('example.com/libfork@v1.2.5/go.mod', 'module example.com/libfork\\n\\ngo 1.18\\n')\n    z.writestr('example.com/libfork@v1.2.5/lib.go', 'package lib\\n\\nfunc Name() string { return \"fork\" }\\n')\n";
    assert_success(
        "python3 zipfile",
        &Command::new("python3").args(["-c", zip]).arg(proxy.join("v1.2.5.zip")).output().unwrap(),
    );
    let root = t.join("root");
    std::fs::create_dir_all(root.join("usr/local/bin")).unwrap();
    let bin = root.join("usr/local/bin/hoistapp");
    let go = |args: &[&str]| {
        Command::new("go")
            .args(args)
            .current_dir(&src)
            .env("GOPROXY", format!("file://{}", t.join("proxy").display()))
            .env("GOFLAGS", "-mod=mod")
            .env("GOSUMDB", "off")
            .env("GOCACHE", t.join("gocache"))
            .env("GOPATH", t.join("gopath"))
            .env("CGO_ENABLED", "0")
            .env("GO111MODULE", "on")
            .output()
            .unwrap()
    };
    assert_success("go build", &go(&["build", "-o", bin.to_str().unwrap(), "."]));
    // the judge: go's own reading of the build info
    let m = assert_success("go version -m", &go(&["version", "-m", bin.to_str().unwrap()]));
    let replaced = m.lines().any(|l| l.contains("=>\texample.com/libfork\tv1.2.5"));
    assert!(replaced, "go did not record the module replacement: {m}");
    // go prints dep lines in order, each replacement right after its dep: read them as pairs
    let mut want: BTreeSet<(String, String)> = BTreeSet::new();
    let lines: Vec<Vec<&str>> = m.lines().map(|l| l.trim_start().split('\t').collect()).collect();
    for (i, f) in lines.iter().enumerate() {
        match f.first().copied() {
            Some("mod") => {
                want.insert((f[1].to_string(), f[2].to_string()));
            }
            Some("dep") => {
                let next = lines.get(i + 1).filter(|n| n.first() == Some(&"=>") && !n[1].starts_with("./"));
                let (p, v) = match next {
                    Some(n) => (n[1], n[2]),
                    None => (f[1], f[2]),
                };
                want.insert((p.to_string(), v.to_string()));
            }
            _ => {}
        }
    }
    assert_eq!(want.len(), 3, "{m}");
    std::fs::write(t.join("Dockerfile"), "FROM scratch\nCOPY root/ /\n").unwrap();
    let store = t.join("store");
    ok("build", hoist(["build", "--store", store.to_str().unwrap(), "-t", "go:v1", t.to_str().unwrap()]));
    let reference = format!("oci:{}:go:v1", store.display());
    let found: serde_json::Value =
        serde_json::from_str(&ok("sbom", hoist(["--format", "json", "sbom", &reference]))).unwrap();
    let gos: Vec<&serde_json::Value> =
        found["packages"].as_array().unwrap().iter().filter(|p| p["kind"] == "go").collect();
    let got: BTreeSet<(String, String)> = gos
        .iter()
        .map(|p| (p["name"].as_str().unwrap().to_string(), p["version"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(got, want, "hoist's Go modules = go version -m");
    let purl = |name: &str| gos.iter().find(|p| p["name"] == name).unwrap()["purl"].as_str().unwrap().to_string();
    assert_eq!(purl("example.com/dep"), "pkg:golang/example.com/dep@v0.3.1");
    assert_eq!(purl("example.com/libfork"), "pkg:golang/example.com/libfork@v1.2.5");
    assert_eq!(purl("example.com/hoistapp"), "pkg:golang/example.com/hoistapp");
    for p in &gos {
        assert_eq!(p["files"], serde_json::json!(["/usr/local/bin/hoistapp"]), "{p}");
    }
    let spdx = t.join("go.spdx.json");
    std::fs::write(&spdx, ok("sbom spdx", hoist(["--format", "spdx-json", "sbom", &reference]))).unwrap();
    assert_success(
        "pyspdxtools -i",
        &Command::new(py.parent().unwrap().join("pyspdxtools")).arg("-i").arg(&spdx).output().unwrap(),
    );
}

/// Rust `cargo auditable` data of a real binary: a crate with a path dependency and a build
/// dependency, built by `cargo auditable build` (offline), put in an image by a Dockerfile
/// `COPY`. hoist's SBOM lists the crates `cargo metadata` resolves for the binary (names,
/// versions, `pkg:cargo` purls), without the build dependency, which is not linked in; spdx-tools
/// accepts the SPDX document.
#[test]
fn cargo_auditable_binaries_list_their_crates() {
    hoist_testkit::require!("cargo", "cargo-auditable");
    let Some(py) = python_with("sbom::cargo_auditable_binaries_list_their_crates", "spdx_tools") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let src = t.join("src");
    for (path, text) in [
        ("Cargo.toml", "[package]\nname = \"hoistaudit\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\nhoistdep = { path = \"dep\" }\n\n[build-dependencies]\nhoistbuild = { path = \"build-dep\" }\n\n[workspace]\n"),
        ("build.rs", "fn main() { hoistbuild::note(); }\n"),
        ("src/main.rs", "fn main() { println!(\"{}\", hoistdep::hello()); }\n"),
        ("dep/Cargo.toml", "[package]\nname = \"hoistdep\"\nversion = \"0.2.0\"\nedition = \"2021\"\n"),
        ("dep/src/lib.rs", "pub fn hello() -> &'static str { \"hi\" }\n"),
        ("build-dep/Cargo.toml", "[package]\nname = \"hoistbuild\"\nversion = \"0.3.0\"\nedition = \"2021\"\n"),
        ("build-dep/src/lib.rs", "pub fn note() {}\n"),
    ] {
        std::fs::create_dir_all(src.join(path).parent().unwrap()).unwrap();
        std::fs::write(src.join(path), text).unwrap();
    }
    let cargo = |args: &[&str]| {
        Command::new("cargo")
            .args(args)
            .current_dir(&src)
            .env("CARGO_TARGET_DIR", t.join("target"))
            .env_remove("RUSTFLAGS")
            .output()
            .unwrap()
    };
    assert_success("cargo auditable build", &cargo(&["auditable", "build", "--offline", "-q"]));
    // the judge: cargo's own resolution (normal dependencies of the binary, not build ones)
    let meta: serde_json::Value = serde_json::from_str(&assert_success(
        "cargo metadata",
        &cargo(&["metadata", "--format-version", "1", "--offline"]),
    ))
    .unwrap();
    let version_of = |id: &str| {
        let p = meta["packages"].as_array().unwrap().iter().find(|p| p["id"] == id).unwrap();
        (p["name"].as_str().unwrap().to_string(), p["version"].as_str().unwrap().to_string())
    };
    let root_id = meta["resolve"]["root"].as_str().unwrap();
    let node = meta["resolve"]["nodes"].as_array().unwrap().iter().find(|n| n["id"] == root_id).unwrap();
    let mut want: BTreeSet<(String, String)> = BTreeSet::new();
    want.insert(version_of(root_id));
    let mut build_only = Vec::new();
    for d in node["deps"].as_array().unwrap() {
        let kinds: Vec<&serde_json::Value> = d["dep_kinds"].as_array().unwrap().iter().map(|k| &k["kind"]).collect();
        if kinds.iter().any(|k| k.is_null()) {
            want.insert(version_of(d["pkg"].as_str().unwrap()));
        } else {
            build_only.push(version_of(d["pkg"].as_str().unwrap()).0);
        }
    }
    assert_eq!((want.len(), build_only.len()), (2, 1), "{want:?} {build_only:?}");
    let root = t.join("root");
    std::fs::create_dir_all(root.join("usr/local/bin")).unwrap();
    std::fs::copy(t.join("target/debug/hoistaudit"), root.join("usr/local/bin/hoistaudit")).unwrap();
    std::fs::write(t.join("Dockerfile"), "FROM scratch\nCOPY root/ /\n").unwrap();
    let store = t.join("store");
    ok("build", hoist(["build", "--store", store.to_str().unwrap(), "-t", "rust:v1", t.to_str().unwrap()]));
    let reference = format!("oci:{}:rust:v1", store.display());
    let found: serde_json::Value =
        serde_json::from_str(&ok("sbom", hoist(["--format", "json", "sbom", &reference]))).unwrap();
    let crates: Vec<&serde_json::Value> =
        found["packages"].as_array().unwrap().iter().filter(|p| p["kind"] == "cargo").collect();
    let got: BTreeSet<(String, String)> = crates
        .iter()
        .map(|p| (p["name"].as_str().unwrap().to_string(), p["version"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(got, want, "hoist's crates = cargo metadata's (build dependencies left out)");
    let dep = crates.iter().find(|p| p["name"] == "hoistdep").unwrap();
    assert_eq!(dep["purl"], "pkg:cargo/hoistdep@0.2.0");
    assert_eq!(dep["files"], serde_json::json!(["/usr/local/bin/hoistaudit"]));
    let spdx = t.join("rust.spdx.json");
    std::fs::write(&spdx, ok("sbom spdx", hoist(["--format", "spdx-json", "sbom", &reference]))).unwrap();
    assert_success(
        "pyspdxtools -i",
        &Command::new(py.parent().unwrap().join("pyspdxtools")).arg("-i").arg(&spdx).output().unwrap(),
    );
}
