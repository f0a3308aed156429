//! Package URLs (purl) as the SBOM documents and attestations name packages and images:
//! the encoding, the `pkg:TYPE/NAMESPACE/NAME@VERSION?QUALIFIERS` form, and the namespace a
//! distribution's packages take.

use crate::sbom::Distro;

/// purl percent-encoding: letters, digits and `.-_~` stay, and `:` (as packageurl-python
/// and syft keep it in versions); everything else becomes `%XX`.
pub fn purl_encode(s: &str, keep_colon: bool) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (keep_colon && b == b':') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `pkg:TYPE/NAMESPACE/NAME@VERSION?k=v&…` (qualifiers sorted, empty ones left out).
pub fn purl(kind: &str, namespace: &[&str], name: &str, version: &str, qualifiers: &[(&str, &str)]) -> String {
    let mut s = format!("pkg:{kind}/");
    for n in namespace.iter().filter(|n| !n.is_empty()) {
        s.push_str(&purl_encode(n, false));
        s.push('/');
    }
    s.push_str(&purl_encode(name, false));
    if !version.is_empty() {
        s.push('@');
        s.push_str(&purl_encode(version, true));
    }
    let mut q: Vec<&(&str, &str)> = qualifiers.iter().filter(|(_, v)| !v.is_empty()).collect();
    q.sort();
    for (i, (k, v)) in q.iter().enumerate() {
        s.push(if i == 0 { '?' } else { '&' });
        s.push_str(k);
        s.push('=');
        s.push_str(&purl_encode(v, true));
    }
    s
}

/// Distributions whose packages are apks (the rest, for dpkg, are Debian-like).
const APK_DISTROS: &[&str] = &["alpine", "wolfi", "chainguard", "postmarketos"];

/// The purl namespace of a package manager's packages (the distribution's ID when it is one
/// of that manager's, else `fallback`) and the `distro` qualifier that goes with it.
pub(crate) fn namespace(distro: Option<&Distro>, apk: bool, fallback: &'static str) -> (String, Option<String>) {
    match distro.filter(|d| !d.id.is_empty() && APK_DISTROS.contains(&d.id.as_str()) == apk) {
        Some(d) => (d.id.clone(), d.version_id.as_ref().map(|v| format!("{}-{v}", d.id))),
        None => (fallback.to_string(), None),
    }
}
