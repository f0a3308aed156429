//! The YAML source of `hoist sync --src yaml`, skopeo sync's format: a map from registry to
//! `images` (repository -> tags or digests; none: every tag), `images-by-tag-regex`
//! (repository -> regex), `images-by-semver` (repository -> constraint), `credentials`
//! (`username`, `password`), `tls-verify`, `cert-dir`. hoist also reads `exclude`,
//! `keep-last`, `newer-than` and `platforms` per registry; skopeo ignores keys it does not
//! know, so one file serves both.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

/// Bytes of a sync YAML hoist reads.
pub const MAX_CONFIG: u64 = 4 << 20;

/// One registry's entry.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// Repository -> tags or digests (empty or null: every tag).
    #[serde(default)]
    pub images: BTreeMap<String, Option<Vec<String>>>,
    /// Repository -> regular expression the tags must match (unanchored, as Go's MatchString).
    #[serde(default, rename = "images-by-tag-regex")]
    pub images_by_tag_regex: BTreeMap<String, String>,
    /// Repository -> semver constraint the tags must satisfy.
    #[serde(default, rename = "images-by-semver")]
    pub images_by_semver: BTreeMap<String, String>,
    /// Credentials for this registry.
    #[serde(default)]
    pub credentials: Option<Credentials>,
    /// Verify TLS (default: as the command line says).
    #[serde(default, rename = "tls-verify")]
    pub tls_verify: Option<bool>,
    /// Certs directory for this registry.
    #[serde(default, rename = "cert-dir")]
    pub cert_dir: Option<PathBuf>,
    /// hoist: tags matching this regular expression are left out.
    #[serde(default)]
    pub exclude: Option<String>,
    /// hoist: only the N newest tags of each repository.
    #[serde(default, rename = "keep-last")]
    pub keep_last: Option<usize>,
    /// hoist: only images created within this duration (`30d`, `12h`, `90m`).
    #[serde(default, rename = "newer-than")]
    pub newer_than: Option<String>,
    /// hoist: only these platforms of each index (`linux/amd64`, ...).
    #[serde(default)]
    pub platforms: Option<Vec<String>>,
}

/// `credentials:` of a registry entry.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Credentials {
    /// User name.
    #[serde(default)]
    pub username: String,
    /// Password or token.
    #[serde(default)]
    pub password: String,
}

/// The whole file: registry -> entry.
pub type SourceConfig = BTreeMap<String, RegistryConfig>;

/// Read and parse the sync YAML at `path`.
pub fn load(path: &Path) -> Result<SourceConfig> {
    let bytes = crate::transport::layout::read_limited(path, MAX_CONFIG)?;
    parse(&bytes).map_err(|e| Error::malformed("sync YAML", path.display().to_string(), e))
}

/// Parse a sync YAML document.
pub fn parse(bytes: &[u8]) -> std::result::Result<SourceConfig, String> {
    let cfg: SourceConfig = serde_yaml_ng::from_slice(bytes).map_err(|e| e.to_string())?;
    for (reg, c) in &cfg {
        if c.images.is_empty() && c.images_by_tag_regex.is_empty() && c.images_by_semver.is_empty() {
            tracing::warn!(registry = %reg, "no images listed for this registry");
        }
    }
    Ok(cfg)
}

/// A duration as `newer-than` and `--newer-than` take it: a number and a unit, `s`, `m`,
/// `h`, `d` or `w` (`90m`, `36h`, `30d`), or several (`1d12h`).
pub fn parse_duration(s: &str) -> std::result::Result<std::time::Duration, String> {
    let mut total = 0u64;
    let mut num = String::new();
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    for c in t.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            'w' => 7 * 86400,
            _ => return Err(format!("{s:?}: unknown unit {c:?} (use s, m, h, d or w)")),
        };
        let n: u64 = num.parse().map_err(|_| format!("{s:?}: a number must come before {c:?}"))?;
        total = total.saturating_add(n.saturating_mul(unit));
        num.clear();
    }
    if !num.is_empty() {
        return Err(format!("{s:?}: give a unit after {num} (s, m, h, d or w)"));
    }
    Ok(std::time::Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_skopeos_format() {
        let y = br#"
registry.example.com:5000:
  images:
    busybox: []
    redis:
      - "1.0"
      - "sha256:0000000000000000000000000000000000000000000000000000000000000000"
    nginx:
  images-by-tag-regex:
    app: ^v1\..*
  images-by-semver:
    lib: ">= 1.2, < 2"
  credentials:
    username: u
    password: p
  tls-verify: false
  cert-dir: /etc/certs
  keep-last: 3
quay.io:
  images:
    coreos/etcd: ["latest"]
"#;
        let c = parse(y).unwrap();
        let r = &c["registry.example.com:5000"];
        assert_eq!(r.images["busybox"], Some(vec![]));
        assert_eq!(r.images["nginx"], None);
        assert_eq!(r.images["redis"].as_ref().unwrap().len(), 2);
        assert_eq!(r.images_by_tag_regex["app"], r"^v1\..*");
        assert_eq!(r.tls_verify, Some(false));
        assert_eq!(r.credentials.as_ref().unwrap().username, "u");
        assert_eq!(r.keep_last, Some(3));
        assert!(parse(b"r:\n  imagez: {}\n").unwrap_err().contains("imagez"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90m").unwrap().as_secs(), 5400);
        assert_eq!(parse_duration("1d12h").unwrap().as_secs(), 129600);
        assert!(parse_duration("12").is_err());
        assert!(parse_duration("3y").is_err());
    }
}
