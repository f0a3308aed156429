//! License text from package metadata as SPDX license expressions. Metadata states licenses
//! in many spellings (Debian's `GPL-2+`, Python's `MIT License`, npm's `(MIT OR Apache-2.0)`);
//! a known one becomes its SPDX identifier, anything else a `LicenseRef-` that keeps the
//! original text (SPDX documents list those under `hasExtractedLicensingInfos`).

/// SPDX license identifiers hoist recognizes by name (the common ones in distributions and
/// language registries; matched case-insensitively).
const KNOWN: &[&str] = &[
    "0BSD",
    "AFL-2.1",
    "AFL-3.0",
    "AGPL-3.0-only",
    "AGPL-3.0-or-later",
    "Apache-1.1",
    "Apache-2.0",
    "APSL-2.0",
    "Artistic-1.0",
    "Artistic-1.0-Perl",
    "Artistic-2.0",
    "Beerware",
    "blessing",
    "BlueOak-1.0.0",
    "BSD-1-Clause",
    "BSD-2-Clause",
    "BSD-2-Clause-Patent",
    "BSD-3-Clause",
    "BSD-3-Clause-Clear",
    "BSD-4-Clause",
    "BSL-1.0",
    "bzip2-1.0.6",
    "CC-BY-3.0",
    "CC-BY-4.0",
    "CC-BY-SA-3.0",
    "CC-BY-SA-4.0",
    "CC0-1.0",
    "CDDL-1.0",
    "CDDL-1.1",
    "CPL-1.0",
    "curl",
    "ECL-2.0",
    "EPL-1.0",
    "EPL-2.0",
    "EUPL-1.1",
    "EUPL-1.2",
    "FSFAP",
    "FSFUL",
    "FSFULLR",
    "FTL",
    "GFDL-1.2-only",
    "GFDL-1.2-or-later",
    "GFDL-1.3-only",
    "GFDL-1.3-or-later",
    "GPL-1.0-only",
    "GPL-1.0-or-later",
    "GPL-2.0-only",
    "GPL-2.0-or-later",
    "GPL-3.0-only",
    "GPL-3.0-or-later",
    "HPND",
    "ICU",
    "IJG",
    "ISC",
    "LGPL-2.0-only",
    "LGPL-2.0-or-later",
    "LGPL-2.1-only",
    "LGPL-2.1-or-later",
    "LGPL-3.0-only",
    "LGPL-3.0-or-later",
    "Libpng",
    "libpng-2.0",
    "libtiff",
    "LPPL-1.3c",
    "MIT",
    "MIT-0",
    "MPL-1.1",
    "MPL-2.0",
    "MS-PL",
    "MulanPSL-2.0",
    "NCSA",
    "OFL-1.1",
    "OLDAP-2.8",
    "OpenSSL",
    "PHP-3.01",
    "PostgreSQL",
    "PSF-2.0",
    "Python-2.0",
    "Ruby",
    "Sleepycat",
    "TCL",
    "Unicode-3.0",
    "Unicode-DFS-2016",
    "Unlicense",
    "UPL-1.0",
    "Vim",
    "W3C",
    "WTFPL",
    "X11",
    "Zlib",
    "ZPL-2.1",
];

/// SPDX license exceptions (after `WITH`).
const EXCEPTIONS: &[&str] = &[
    "Autoconf-exception-2.0",
    "Autoconf-exception-3.0",
    "Bison-exception-2.2",
    "Classpath-exception-2.0",
    "GCC-exception-2.0",
    "GCC-exception-3.1",
    "LLVM-exception",
    "OpenSSL-exception",
    "Font-exception-2.0",
    "Libtool-exception",
    "Linux-syscall-note",
    "openvpn-openssl-exception",
    "Qt-GPL-exception-1.0",
];

/// Other spellings of known licenses: Debian's DEP-5 short names, Python classifiers, old SPDX ids.
const ALIASES: &[(&str, &str)] = &[
    ("GPL-1", "GPL-1.0-only"),
    ("GPL-1+", "GPL-1.0-or-later"),
    ("GPL-2", "GPL-2.0-only"),
    ("GPL-2+", "GPL-2.0-or-later"),
    ("GPL-2.0", "GPL-2.0-only"),
    ("GPL-2.0+", "GPL-2.0-or-later"),
    ("GPL-3", "GPL-3.0-only"),
    ("GPL-3+", "GPL-3.0-or-later"),
    ("GPL-3.0", "GPL-3.0-only"),
    ("GPL-3.0+", "GPL-3.0-or-later"),
    ("GPLv2", "GPL-2.0-only"),
    ("GPLv2+", "GPL-2.0-or-later"),
    ("GPLv3", "GPL-3.0-only"),
    ("GPLv3+", "GPL-3.0-or-later"),
    ("LGPL-2", "LGPL-2.0-only"),
    ("LGPL-2+", "LGPL-2.0-or-later"),
    ("LGPL-2.0", "LGPL-2.0-only"),
    ("LGPL-2.0+", "LGPL-2.0-or-later"),
    ("LGPL-2.1", "LGPL-2.1-only"),
    ("LGPL-2.1+", "LGPL-2.1-or-later"),
    ("LGPL-3", "LGPL-3.0-only"),
    ("LGPL-3+", "LGPL-3.0-or-later"),
    ("LGPL-3.0", "LGPL-3.0-only"),
    ("LGPL-3.0+", "LGPL-3.0-or-later"),
    ("AGPL-3", "AGPL-3.0-only"),
    ("AGPL-3+", "AGPL-3.0-or-later"),
    ("AGPL-3.0", "AGPL-3.0-only"),
    ("GFDL-1.2", "GFDL-1.2-only"),
    ("GFDL-1.2+", "GFDL-1.2-or-later"),
    ("GFDL-1.3", "GFDL-1.3-only"),
    ("GFDL-1.3+", "GFDL-1.3-or-later"),
    ("Expat", "MIT"),
    ("BSD-2-clause", "BSD-2-Clause"),
    ("BSD-3-clause", "BSD-3-Clause"),
    ("BSD-4-clause", "BSD-4-Clause"),
    ("Apache-2", "Apache-2.0"),
    ("Apache 2.0", "Apache-2.0"),
    ("Apache License 2.0", "Apache-2.0"),
    ("Apache License, Version 2.0", "Apache-2.0"),
    ("Apache Software License", "Apache-2.0"),
    ("MIT License", "MIT"),
    ("ISC License", "ISC"),
    ("ISC License (ISCL)", "ISC"),
    ("Mozilla Public License 2.0 (MPL 2.0)", "MPL-2.0"),
    ("MPL-2", "MPL-2.0"),
    ("Python Software Foundation License", "PSF-2.0"),
    ("PSF", "PSF-2.0"),
    ("zlib/libpng", "Zlib"),
    ("The Unlicense (Unlicense)", "Unlicense"),
    ("Public Domain", "LicenseRef-public-domain"),
    ("public-domain", "LicenseRef-public-domain"),
    ("Artistic", "Artistic-1.0-Perl"),
    ("Perl", "Artistic-1.0-Perl"),
    ("GNU General Public License v2 (GPLv2)", "GPL-2.0-only"),
    ("GNU General Public License v3 (GPLv3)", "GPL-3.0-only"),
    ("GNU Lesser General Public License v3 (LGPLv3)", "LGPL-3.0-only"),
    ("BSD", "LicenseRef-BSD"),
];

fn lookup(token: &str) -> Option<String> {
    KNOWN
        .iter()
        .find(|k| k.eq_ignore_ascii_case(token))
        .map(|k| k.to_string())
        .or_else(|| ALIASES.iter().find(|(a, _)| a.eq_ignore_ascii_case(token)).map(|(_, v)| v.to_string()))
}

/// `LicenseRef-` with the text's letters, digits, `.` and `-` (others become `-`).
pub fn license_ref(text: &str) -> String {
    let mut id: String =
        text.trim().chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' { c } else { '-' }).collect();
    while id.contains("--") {
        id = id.replace("--", "-");
    }
    let id = id.trim_matches('-');
    format!("LicenseRef-{}", if id.is_empty() { "unknown" } else { id })
}

/// The SPDX expression for what metadata states; `None` for nothing stated.
pub fn to_spdx(raw: &str) -> Option<String> {
    let raw = raw.trim();
    if raw.is_empty() || raw.eq_ignore_ascii_case("UNKNOWN") || raw == "NOASSERTION" {
        return None;
    }
    if let Some(id) = lookup(raw) {
        return Some(id);
    }
    parse_expression(raw).or_else(|| Some(license_ref(raw)))
}

/// A well-formed expression of licenses joined by AND/OR (and WITH exceptions), each license
/// mapped; `None` if `raw` is not one (then it is a single name).
fn parse_expression(raw: &str) -> Option<String> {
    let spaced = raw.replace('(', " ( ").replace(')', " ) ");
    let tokens: Vec<&str> = spaced.split_whitespace().collect();
    let mut out: Vec<String> = Vec::new();
    let mut depth = 0i32;
    let mut expect_term = true;
    let mut i = 0;
    while i < tokens.len() {
        let t = tokens[i];
        let upper = t.to_ascii_uppercase();
        if expect_term {
            if t == "(" {
                depth += 1;
                out.push("(".into());
            } else if matches!(upper.as_str(), "AND" | "OR" | "WITH" | ")") {
                return None;
            } else {
                let id = if t.starts_with("LicenseRef-") {
                    t.to_string()
                } else {
                    lookup(t).unwrap_or_else(|| license_ref(t))
                };
                if tokens.get(i + 1).is_some_and(|w| w.eq_ignore_ascii_case("WITH")) {
                    let exc = tokens.get(i + 2)?;
                    match EXCEPTIONS.iter().find(|e| e.eq_ignore_ascii_case(exc)) {
                        Some(e) if !id.starts_with("LicenseRef-") => out.push(format!("{id} WITH {e}")),
                        _ => out.push(license_ref(&format!("{t}-with-{exc}"))),
                    }
                    i += 2;
                } else {
                    out.push(id);
                }
                expect_term = false;
            }
        } else if t == ")" {
            depth -= 1;
            if depth < 0 {
                return None;
            }
            out.push(")".into());
        } else if upper == "AND" || upper == "OR" || t == "&" || t == "|" || t == "/" {
            out.push(if upper == "AND" || t == "&" { "AND".into() } else { "OR".into() });
            expect_term = true;
        } else {
            return None;
        }
        i += 1;
    }
    if expect_term || depth != 0 || out.is_empty() {
        return None;
    }
    Some(out.join(" ").replace("( ", "(").replace(" )", ")"))
}

/// The `LicenseRef-` identifiers an expression uses.
pub fn refs_in(expr: &str) -> Vec<String> {
    expr.split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .filter(|t| t.starts_with("LicenseRef-"))
        .map(str::to_string)
        .collect()
}

/// Whether `expr` is one SPDX-listed identifier (no operator, no `LicenseRef-`).
pub fn is_single_id(expr: &str) -> bool {
    !expr.contains(' ') && !expr.starts_with("LicenseRef-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_become_spdx() {
        assert_eq!(to_spdx("GPL-2+").unwrap(), "GPL-2.0-or-later");
        assert_eq!(to_spdx("MIT License").unwrap(), "MIT");
        assert_eq!(to_spdx("(MIT OR Apache-2.0)").unwrap(), "(MIT OR Apache-2.0)");
        assert_eq!(to_spdx("GPL-2+ or Artistic").unwrap(), "GPL-2.0-or-later OR Artistic-1.0-Perl");
        assert_eq!(
            to_spdx("GPL-2.0-or-later WITH Classpath-exception-2.0").unwrap(),
            "GPL-2.0-or-later WITH Classpath-exception-2.0"
        );
        assert_eq!(to_spdx("Some odd license, v2").unwrap(), "LicenseRef-Some-odd-license-v2");
        assert_eq!(to_spdx("mit and zlib").unwrap(), "MIT AND Zlib");
        assert!(to_spdx("UNKNOWN").is_none());
        assert_eq!(refs_in("MIT AND LicenseRef-x"), ["LicenseRef-x"]);
    }
}
