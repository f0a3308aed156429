//! The package scanners: each reads its database or metadata files from the final tree and
//! names the packages they list, with version, purl, license where stated, and the files a
//! package owns where the database lists them.
//! - dpkg: `var/lib/dpkg/status` (installed stanzas), `status.d/*` (distroless), files from
//!   `info/NAME[:ARCH].list` (`status.d/NAME.md5sums`), licenses from the DEP-5
//!   `usr/share/doc/NAME/copyright`;
//! - apk: `lib/apk/db/installed` (`P`, `V`, `A`, `L`, `F`/`R` for files);
//! - Python: `*.dist-info/METADATA` (+ `RECORD`), `*.egg-info/PKG-INFO` (+
//!   `installed-files.txt`), `*.egg-info` files;
//! - npm: `node_modules/[@SCOPE/]NAME/package.json`;
//! - Go: modules in the build info of ELF binaries;
//! - Rust: crates in the `cargo auditable` data of ELF binaries ([`super::auditable`]).

use std::collections::{BTreeMap, BTreeSet};

use crate::sbom::license;
use crate::sbom::purl::{namespace, purl};
use crate::sbom::tree::{self, present_files, Tree};
use crate::sbom::{Distro, Package, PackageKind};

/// `os-release` (`etc/`, else `usr/lib/`): ID, VERSION_ID, PRETTY_NAME.
pub fn distro(tree: &Tree) -> Option<Distro> {
    let text = ["etc/os-release", "usr/lib/os-release"]
        .iter()
        .find_map(|p| tree::resolve(tree, p).and_then(|(_, e)| e.content.clone()))?;
    let text = String::from_utf8_lossy(&text);
    let mut d = Distro::default();
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else { continue };
        let v = v.trim().trim_matches('"').trim_matches('\'').to_string();
        match k.trim() {
            "ID" => d.id = v,
            "VERSION_ID" => d.version_id = Some(v),
            "PRETTY_NAME" => d.pretty_name = Some(v),
            _ => {}
        }
    }
    (!d.id.is_empty()).then_some(d)
}

/// Every package the tree's databases list, sorted by kind, name, version.
pub fn packages(tree: &Tree, distro: Option<&Distro>) -> Vec<Package> {
    let mut out = Vec::new();
    dpkg(tree, distro, &mut out);
    apk(tree, distro, &mut out);
    python(tree, &mut out);
    npm(tree, &mut out);
    golang(tree, &mut out);
    cargo(tree, &mut out);
    super::rpm::packages(tree, distro, &mut out);
    out.sort_by(|a, b| (a.kind, &a.name, &a.version, &a.purl).cmp(&(b.kind, &b.name, &b.version, &b.purl)));
    out.dedup_by(|b, a| {
        if a.purl == b.purl {
            a.files.append(&mut b.files);
            a.files.sort();
            a.files.dedup();
            true
        } else {
            false
        }
    });
    out
}

/// Paragraphs of a deb822/apk file: blank-line separated, continuation lines (leading space)
/// appended to the field before. Fields as (key, value) in order.
fn stanzas(text: &str, sep: char) -> Vec<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut cur: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            continue;
        }
        if sep == ':' && (line.starts_with(' ') || line.starts_with('\t')) {
            if let Some(last) = cur.last_mut() {
                last.1.push('\n');
                last.1.push_str(line.trim());
            }
            continue;
        }
        if let Some((k, v)) = line.split_once(sep) {
            cur.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn field<'a>(s: &'a [(String, String)], key: &str) -> Option<&'a str> {
    s.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v.as_str())
}

fn content<'a>(tree: &'a Tree, path: &str) -> Option<std::borrow::Cow<'a, str>> {
    tree.get(path).and_then(|e| e.content.as_deref()).map(String::from_utf8_lossy)
}

/// Licenses of a DEP-5 `copyright` file: its distinct `License:` names, joined with AND.
fn deb_license(tree: &Tree, name: &str) -> Option<String> {
    let text = content(tree, &format!("usr/share/doc/{name}/copyright"))?;
    let mut seen = BTreeSet::new();
    let mut ids = Vec::new();
    for line in text.lines() {
        let Some(v) = line.strip_prefix("License:") else { continue };
        let v = v.trim();
        if v.is_empty() || !seen.insert(v.to_string()) {
            continue;
        }
        if let Some(id) = license::to_spdx(v) {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
    }
    match ids.len() {
        0 => None,
        1 => ids.pop(),
        _ => Some(
            ids.iter()
                .map(|i| if i.contains(' ') { format!("({i})") } else { i.clone() })
                .collect::<Vec<_>>()
                .join(" AND "),
        ),
    }
}

fn dpkg(tree: &Tree, distro: Option<&Distro>, out: &mut Vec<Package>) {
    let (ns, distro_q) = namespace(distro, false, "debian");
    let ns = ns.as_str();
    let mut sources: Vec<(String, String, bool)> = Vec::new();
    if let Some(text) = content(tree, "var/lib/dpkg/status") {
        sources.push(("/var/lib/dpkg/status".into(), text.into_owned(), false));
    }
    for (path, e) in
        tree.range("var/lib/dpkg/status.d/".to_string()..).take_while(|(p, _)| p.starts_with("var/lib/dpkg/status.d/"))
    {
        if path.ends_with(".md5sums") {
            continue;
        }
        if let Some(c) = &e.content {
            sources.push((format!("/{path}"), String::from_utf8_lossy(c).into_owned(), true));
        }
    }
    for (location, text, distroless) in sources {
        for s in stanzas(&text, ':') {
            let (Some(name), Some(version)) = (field(&s, "Package"), field(&s, "Version")) else { continue };
            // dpkg keeps removed packages' conffiles as `deinstall ok config-files`
            if !distroless && !field(&s, "Status").is_some_and(|st| st.ends_with(" installed")) {
                continue;
            }
            let arch = field(&s, "Architecture").unwrap_or("");
            let list = if distroless {
                content(tree, &format!("var/lib/dpkg/status.d/{name}.md5sums")).map(|t| {
                    t.lines()
                        .filter_map(|l| l.split_once(char::is_whitespace).map(|(_, p)| p.trim().to_string()))
                        .collect::<Vec<_>>()
                })
            } else {
                content(tree, &format!("var/lib/dpkg/info/{name}:{arch}.list"))
                    .or_else(|| content(tree, &format!("var/lib/dpkg/info/{name}.list")))
                    .map(|t| t.lines().map(str::to_string).collect())
            };
            let files = list.map(|l| present_files(tree, l.iter().map(String::as_str))).unwrap_or_default();
            let mut quals = vec![("arch", arch)];
            if let Some(d) = distro_q.as_deref() {
                quals.push(("distro", d));
            }
            let source = field(&s, "Source").map(|v| v.split_whitespace().next().unwrap_or(v).to_string());
            if let Some(src) = source.as_deref() {
                quals.push(("upstream", src));
            }
            out.push(Package {
                kind: PackageKind::Deb,
                name: name.to_string(),
                version: version.to_string(),
                purl: purl("deb", &[ns], name, version, &quals),
                license: deb_license(tree, name),
                license_stated: None,
                supplier: field(&s, "Maintainer").map(str::to_string),
                files,
                location: location.clone(),
            });
        }
    }
}

fn apk(tree: &Tree, distro: Option<&Distro>, out: &mut Vec<Package>) {
    let Some(text) = content(tree, "lib/apk/db/installed") else { return };
    let (ns, distro_q) = namespace(distro, true, "alpine");
    let ns = ns.as_str();
    for s in stanzas(&text, ':') {
        let (Some(name), Some(version)) = (field(&s, "P"), field(&s, "V")) else { continue };
        let arch = field(&s, "A").unwrap_or("");
        let mut files = Vec::new();
        let mut dir = String::new();
        for (k, v) in &s {
            match k.as_str() {
                "F" => dir = v.clone(),
                "R" => files.push(if dir.is_empty() { v.clone() } else { format!("{dir}/{v}") }),
                _ => {}
            }
        }
        let mut quals = vec![("arch", arch)];
        if let Some(d) = distro_q.as_deref() {
            quals.push(("distro", d));
        }
        if let Some(o) = field(&s, "o").filter(|o| *o != name) {
            quals.push(("upstream", o));
        }
        let stated = field(&s, "L").map(str::to_string);
        out.push(Package {
            kind: PackageKind::Apk,
            name: name.to_string(),
            version: version.to_string(),
            purl: purl("apk", &[ns], name, version, &quals),
            license: stated.as_deref().and_then(license::to_spdx),
            license_stated: stated,
            supplier: field(&s, "m").map(str::to_string),
            files: present_files(tree, files.iter().map(String::as_str)),
            location: "/lib/apk/db/installed".into(),
        });
    }
}

/// The normalized name PyPI and purls use: lowercase, runs of `-_.` as `-` (PEP 503).
fn pep503(name: &str) -> String {
    let mut out = String::new();
    let mut dash = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !dash {
                out.push('-');
            }
            dash = true;
        } else {
            out.push(c.to_ascii_lowercase());
            dash = false;
        }
    }
    out
}

/// The license core metadata states: `License-Expression`, else `License` (a short one),
/// else the `License ::` classifiers.
fn python_license(headers: &[(String, String)]) -> Option<String> {
    if let Some(e) = field(headers, "License-Expression") {
        return Some(e.to_string());
    }
    if let Some(l) = field(headers, "License").filter(|l| !l.is_empty() && !l.contains('\n') && l.len() < 100) {
        return Some(l.to_string());
    }
    let classifiers: Vec<&str> = headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("Classifier"))
        .filter_map(|(_, v)| v.strip_prefix("License ::"))
        .map(|v| v.rsplit("::").next().unwrap_or(v).trim())
        .filter(|v| *v != "OSI Approved")
        .collect();
    (!classifiers.is_empty()).then(|| classifiers.join(" OR "))
}

fn python(tree: &Tree, out: &mut Vec<Package>) {
    for (path, e) in tree {
        let Some(c) = &e.content else { continue };
        let (meta_dir, record) = if let Some(dir) = path.strip_suffix("/METADATA").filter(|d| d.ends_with(".dist-info"))
        {
            (dir, format!("{dir}/RECORD"))
        } else if let Some(dir) = path.strip_suffix("/PKG-INFO").filter(|d| d.ends_with(".egg-info")) {
            (dir, format!("{dir}/installed-files.txt"))
        } else if path.ends_with(".egg-info") {
            (path.as_str(), String::new())
        } else {
            continue;
        };
        let text = String::from_utf8_lossy(c);
        // The headers end at the first blank line; the description follows.
        let head = text.split("\n\n").next().unwrap_or("");
        let headers = stanzas(head, ':').into_iter().next().unwrap_or_default();
        let (Some(name), Some(version)) = (field(&headers, "Name"), field(&headers, "Version")) else { continue };
        let site = meta_dir.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        let mut files = Vec::new();
        if let Some(list) = content(tree, &record) {
            let base = if record.ends_with("RECORD") { site.to_string() } else { meta_dir.to_string() };
            for line in list.lines() {
                let rel = if record.ends_with("RECORD") { line.split(',').next().unwrap_or("") } else { line };
                if rel.is_empty() {
                    continue;
                }
                files.push(if rel.starts_with('/') { rel.to_string() } else { format!("{base}/{rel}") });
            }
        }
        let files =
            present_files(tree, files.iter().map(|f| normalize(f)).collect::<Vec<_>>().iter().map(String::as_str));
        let stated = python_license(&headers);
        out.push(Package {
            kind: PackageKind::Python,
            name: name.to_string(),
            version: version.to_string(),
            purl: purl("pypi", &[], &pep503(name), version, &[]),
            license: stated.as_deref().and_then(license::to_spdx),
            license_stated: stated,
            supplier: field(&headers, "Author").map(str::to_string),
            files,
            location: format!("/{path}"),
        });
    }
}

/// `a/b/../c` as `a/c`.
fn normalize(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for s in p.split('/') {
        match s {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    parts.join("/")
}

fn npm(tree: &Tree, out: &mut Vec<Package>) {
    for (path, e) in tree {
        let Some(c) = &e.content else { continue };
        if !path.ends_with("/package.json") || !tree::is_node_module_manifest(path) {
            continue;
        }
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(c) else { continue };
        let (Some(name), Some(version)) = (v["name"].as_str(), v["version"].as_str()) else { continue };
        let stated = match &v["license"] {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Object(o) => o.get("type").and_then(|t| t.as_str()).map(str::to_string),
            _ => v["licenses"]
                .as_array()
                .map(|a| a.iter().filter_map(|l| l["type"].as_str().or(l.as_str())).collect::<Vec<_>>().join(" OR ")),
        }
        .filter(|s| !s.is_empty());
        let (ns, base) = match name.split_once('/') {
            Some((scope, n)) if scope.starts_with('@') => (vec![scope], n),
            _ => (vec![], name),
        };
        out.push(Package {
            kind: PackageKind::Npm,
            name: name.to_string(),
            version: version.to_string(),
            purl: purl("npm", &ns, base, version, &[]),
            license: stated.as_deref().and_then(license::to_spdx),
            license_stated: stated,
            supplier: v["author"].as_str().map(str::to_string),
            files: Vec::new(),
            location: format!("/{path}"),
        });
    }
}

fn golang(tree: &Tree, out: &mut Vec<Package>) {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (path, e) in tree {
        let Some(g) = &e.go else { continue };
        let mods = g.main.iter().filter(|m| !m.path.is_empty()).chain(g.deps.iter());
        for m in mods {
            let (ns, name) = match m.path.rsplit_once('/') {
                Some((ns, n)) => (ns.split('/').collect::<Vec<_>>(), n),
                None => (vec![], m.path.as_str()),
            };
            let version = if m.version == "(devel)" { "" } else { m.version.as_str() };
            let p = purl("golang", &ns, name, version, &[]);
            linked_into(out, &mut seen, path, PackageKind::Go, &m.path, &m.version, p);
        }
    }
}

/// The crates of `cargo auditable` data, linked into each binary (build dependencies, which
/// are not linked in, left out); one package per purl, owning every binary that has it.
fn cargo(tree: &Tree, out: &mut Vec<Package>) {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (path, e) in tree {
        let Some(crates) = &e.rust else { continue };
        for c in crates.iter().filter(|c| c.kind.as_deref() != Some("build")) {
            let p = purl("cargo", &[], &c.name, &c.version, &[]);
            linked_into(out, &mut seen, path, PackageKind::Cargo, &c.name, &c.version, p);
        }
    }
}

/// A package linked into the binary at `path`: one package per purl (`seen` maps a purl to
/// its index in `out`), owning every binary that links it.
fn linked_into(
    out: &mut Vec<Package>,
    seen: &mut BTreeMap<String, usize>,
    path: &str,
    kind: PackageKind,
    name: &str,
    version: &str,
    purl: String,
) {
    let file = format!("/{path}");
    if let Some(&i) = seen.get(&purl) {
        out[i].files.push(file);
        return;
    }
    seen.insert(purl.clone(), out.len());
    out.push(Package {
        kind,
        name: name.to_string(),
        version: version.to_string(),
        purl,
        license: None,
        license_stated: None,
        supplier: None,
        location: file.clone(),
        files: vec![file],
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purls() {
        assert_eq!(
            purl("deb", &["debian"], "zlib1g", "1:1.2.13.dfsg-1", &[("arch", "amd64")]),
            "pkg:deb/debian/zlib1g@1:1.2.13.dfsg-1?arch=amd64"
        );
        assert_eq!(
            purl("deb", &["debian"], "libstdc++6", "12.2.0-14+deb12u1", &[]),
            "pkg:deb/debian/libstdc%2B%2B6@12.2.0-14%2Bdeb12u1"
        );
        assert_eq!(purl("npm", &["@babel"], "core", "7.0.0", &[]), "pkg:npm/%40babel/core@7.0.0");
        assert_eq!(pep503("Foo_Bar.baz"), "foo-bar-baz");
    }
}
