//! Registry references: `[host[:port]/]repository[:tag][@digest]`, as docker and
//! skopeo read them (`docker.io` default, `library/` for single-name repositories).

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::model::digest::Digest;

/// The registry a reference without a host names (`index.docker.io` and
/// `registry-1.docker.io` are read as this too).
pub const DEFAULT_REGISTRY: &str = "docker.io";

/// The tag a reference means when it names neither tag nor digest (docker's rule). The one
/// place it is decided: `copy::plan::default_tag()` and every transport use this.
pub const DEFAULT_TAG: &str = "latest";

/// A parsed registry reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// Registry host, with its port if any (`docker.io`, `localhost:5000`).
    pub registry: String,
    /// Repository path (`library/alpine`, `team/app`).
    pub repository: String,
    /// The tag, if one was given.
    pub tag: Option<String>,
    /// The digest, if one was given (it wins over the tag).
    pub digest: Option<Digest>,
}

impl Reference {
    /// The tag or digest string used in `/v2/<repo>/manifests/<ref>`; `latest` when neither.
    pub fn target(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => DEFAULT_TAG.to_string(),
        }
    }
    /// Same repository, another tag or digest.
    pub fn with_target(&self, target: &str) -> Result<Reference> {
        let mut r = Reference { tag: None, digest: None, ..self.clone() };
        if target.contains(':') {
            r.digest = Some(target.parse()?);
        } else {
            check_tag(target, target)?;
            r.tag = Some(target.to_string());
        }
        Ok(r)
    }
    /// `host/repo` without tag or digest.
    pub fn repo_ref(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
    /// The fully qualified name docker and containerd store (`alpine` ->
    /// `docker.io/library/alpine:latest`, `me/app:v1` -> `docker.io/me/app:v1`): registry,
    /// repository, the tag (`latest` when neither tag nor digest is given) and the digest.
    pub fn normalized(&self) -> String {
        let mut r = self.clone();
        if r.tag.is_none() && r.digest.is_none() {
            r.tag = Some(DEFAULT_TAG.to_string());
        }
        r.to_string()
    }
    /// The short form docker prints (`docker.io/library/alpine:latest` -> `alpine:latest`,
    /// `docker.io/me/app:v1` -> `me/app:v1`; other registries keep their host).
    pub fn familiar(&self) -> String {
        let full = self.normalized();
        match full.strip_prefix("docker.io/") {
            Some(rest) => rest.strip_prefix("library/").filter(|r| !r.contains('/')).unwrap_or(rest).to_string(),
            None => full,
        }
    }
}

/// What a reference names inside one repository or store: a tag (or a stored name) or a
/// digest. The one place that decides which: text that parses as a digest (`ALG:HEX`) is
/// one, anything else is a tag or name (checked, if at all, where it is used).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TagOrDigest {
    /// A tag, or a name as a store keeps it (`v1`, `localhost/app:v1`).
    Tag(String),
    /// A digest.
    Digest(Digest),
}

impl TagOrDigest {
    /// Read `s` once: a digest when it parses as one, else a tag or name.
    pub fn parse(s: &str) -> TagOrDigest {
        match s.parse::<Digest>() {
            Ok(d) => TagOrDigest::Digest(d),
            Err(_) => TagOrDigest::Tag(s.to_string()),
        }
    }
    /// The digest, when it is one.
    pub fn digest(&self) -> Option<&Digest> {
        match self {
            TagOrDigest::Digest(d) => Some(d),
            TagOrDigest::Tag(_) => None,
        }
    }
    /// The tag or name, when it is one.
    pub fn tag(&self) -> Option<&str> {
        match self {
            TagOrDigest::Tag(t) => Some(t),
            TagOrDigest::Digest(_) => None,
        }
    }
    /// The separator that puts it after a name: `@` for a digest, `:` for a tag.
    pub fn separator(&self) -> char {
        match self {
            TagOrDigest::Digest(_) => '@',
            TagOrDigest::Tag(_) => ':',
        }
    }
}

/// [`TagOrDigest::parse`].
impl From<&str> for TagOrDigest {
    fn from(s: &str) -> Self {
        TagOrDigest::parse(s)
    }
}

impl From<Digest> for TagOrDigest {
    fn from(d: Digest) -> Self {
        TagOrDigest::Digest(d)
    }
}

impl fmt::Display for TagOrDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TagOrDigest::Tag(t) => f.write_str(t),
            TagOrDigest::Digest(d) => write!(f, "{d}"),
        }
    }
}

/// `NAME[:TAG]` split at its tag: the tag follows the last `:` after the last `/` (so a
/// registry's port is no tag). The one rule for "the tag part of a name"; a digest
/// (`@...`) is the caller's to remove first.
pub fn split_tag(name: &str) -> (&str, Option<&str>) {
    match name.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n, Some(t)),
        _ => (name, None),
    }
}

/// [`Reference::normalized`] of a name given as text: `alpine` -> `docker.io/library/alpine:latest`.
pub fn normalize_name(name: &str) -> Result<String> {
    Ok(name.parse::<Reference>()?.normalized())
}

/// Whether two image names mean the same image once normalized (`alpine` and
/// `docker.io/library/alpine:latest`, `me/app:v1` and `docker.io/me/app:v1`). Names that do
/// not parse as references match only themselves.
pub fn same_image_name(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    match (normalize_name(a), normalize_name(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// Longest `org.opencontainers.image.ref.name` accepted in an endpoint (the longest reference
/// hoist parses).
pub const MAX_REF_NAME: usize = 4096;

/// Check that `name` is a valid `org.opencontainers.image.ref.name` as the OCI image layout
/// defines it (`component ("/" component)*`, a component alphanumerics joined by one of
/// `-._:@+` or `--`): a plain tag (`v1`) or a full name as podman and BuildKit write it
/// (`localhost/app:v1`, `docker.io/library/alpine:3.20`). The error names `whole`.
pub fn check_ref_name(name: &str, whole: &str) -> Result<()> {
    let component_ok = |c: &str| {
        let b = c.as_bytes();
        if b.is_empty() || !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric() {
            return false;
        }
        let mut i = 0;
        while i < b.len() {
            if b[i].is_ascii_alphanumeric() {
                i += 1;
                continue;
            }
            let start = i;
            while i < b.len() && !b[i].is_ascii_alphanumeric() {
                i += 1;
            }
            let sep = &c[start..i];
            if !(sep.len() == 1 && "-._:@+".contains(sep) || sep == "--") {
                return false;
            }
        }
        true
    };
    if !name.is_empty() && name.len() <= MAX_REF_NAME && name.split('/').all(component_ok) {
        Ok(())
    } else {
        Err(Error::InvalidReference {
            reference: whole.to_string(),
            reason: format!("invalid ref name {name:?} (a tag, or a name such as localhost/app:v1)"),
        })
    }
}

/// Check that `tag` is a valid tag (`[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`); the error names
/// `whole`, the text it came from.
pub fn check_tag(tag: &str, whole: &str) -> Result<()> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && tag.chars().next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && tag.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidReference { reference: whole.to_string(), reason: format!("invalid tag {tag:?}") })
    }
}

fn check_repo_component(c: &str) -> bool {
    // [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*
    if c.is_empty() || !c.starts_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit()) {
        return false;
    }
    if !c.ends_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit()) {
        return false;
    }
    let b = c.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let ch = b[i];
        if ch.is_ascii_lowercase() || ch.is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !(b[i].is_ascii_lowercase() || b[i].is_ascii_digit()) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

impl FromStr for Reference {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| Error::InvalidReference { reference: s.to_string(), reason: why.to_string() };
        if s.is_empty() || s.len() > 4096 {
            return Err(bad("empty or too long"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (r, Some(d.parse::<Digest>()?)),
            None => (s, None),
        };
        let (name, tag) = split_tag(rest);
        let tag = tag.map(str::to_string);
        if let Some(t) = &tag {
            check_tag(t, s)?;
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, remainder))
                if first.contains('.') || first.contains(':') || first == "localhost" || first.starts_with('[') =>
            {
                (first.to_string(), remainder.to_string())
            }
            _ => (DEFAULT_REGISTRY.to_string(), name.to_string()),
        };
        let repository = if registry == DEFAULT_REGISTRY && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        if repository.is_empty() || repository.len() > 255 {
            return Err(bad("empty or too long repository"));
        }
        if !repository.split('/').all(check_repo_component) {
            return Err(bad("repository must be lowercase components [a-z0-9] separated by '/', '.', '_', '-'"));
        }
        if registry.is_empty() || registry.contains(|c: char| c.is_whitespace() || c == '@' || c == '?' || c == '#') {
            return Err(bad("invalid registry host"));
        }
        let registry = if registry == "index.docker.io" || registry == "registry-1.docker.io" {
            DEFAULT_REGISTRY.to_string()
        } else {
            registry
        };
        Ok(Reference { registry, repository, tag, digest })
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_forms() {
        let r: Reference = "alpine".parse().unwrap();
        assert_eq!(r.to_string(), "docker.io/library/alpine");
        assert_eq!(r.target(), "latest");
        let r: Reference = "127.0.0.1:5000/a/b:v1".parse().unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("127.0.0.1:5000", "a/b", Some("v1"))
        );
        let r: Reference =
            "localhost/x@sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a".parse().unwrap();
        assert!(r.digest.is_some() && r.tag.is_none());
        assert_eq!(r.registry, "localhost");
    }

    #[test]
    fn normalizes_like_docker() {
        for (short, full, familiar) in [
            ("alpine", "docker.io/library/alpine:latest", "alpine:latest"),
            ("me/app:v1", "docker.io/me/app:v1", "me/app:v1"),
            ("docker.io/library/alpine:3", "docker.io/library/alpine:3", "alpine:3"),
            ("index.docker.io/library/a/b:1", "docker.io/library/a/b:1", "library/a/b:1"),
            ("localhost/app:v1", "localhost/app:v1", "localhost/app:v1"),
            ("127.0.0.1:5000/x", "127.0.0.1:5000/x:latest", "127.0.0.1:5000/x:latest"),
        ] {
            assert_eq!(normalize_name(short).unwrap(), full, "{short}");
            assert_eq!(short.parse::<Reference>().unwrap().familiar(), familiar, "{short}");
        }
    }

    #[test]
    fn ref_names_and_same_names() {
        for ok in ["v1", "localhost/app:v1", "docker.io/library/alpine:3.20", "a--b", "1.0+build", "x_y"] {
            assert!(check_ref_name(ok, ok).is_ok(), "{ok}");
        }
        for bad in ["", "a//b", "-x", "a b", "a:", "/a", "a/", "a---b"] {
            assert!(check_ref_name(bad, bad).is_err(), "{bad}");
        }
        assert!(same_image_name("alpine", "docker.io/library/alpine:latest"));
        assert!(same_image_name("me/app:v1", "docker.io/me/app:v1"));
        assert!(!same_image_name("me/app:v1", "docker.io/me/app:v2"));
        assert!(!same_image_name("Bad Name", "bad"));
    }

    #[test]
    fn rejects_bad() {
        for s in ["", "UPPER/case", "host:5000/repo:bad tag", "a/../b", "r@sha256:123", "repo:-x", "a//b"] {
            assert!(s.parse::<Reference>().is_err(), "{s}");
        }
    }

    #[test]
    fn tag_or_digest_and_tag_parts() {
        let d = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
        assert_eq!(TagOrDigest::parse(d), TagOrDigest::Digest(d.parse().unwrap()));
        assert_eq!(TagOrDigest::parse(d).separator(), '@');
        for t in ["v1", "localhost/app:v1", "sha256:short", "latest"] {
            assert_eq!(TagOrDigest::parse(t).tag(), Some(t), "{t}");
            assert_eq!(TagOrDigest::parse(t).to_string(), t);
        }
        assert_eq!(split_tag("localhost:5000/app:v1"), ("localhost:5000/app", Some("v1")));
        assert_eq!(split_tag("localhost:5000/app"), ("localhost:5000/app", None));
        assert_eq!(split_tag("app"), ("app", None));
        assert_eq!(split_tag("v1"), ("v1", None));
    }
}
