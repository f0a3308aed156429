//! containers-registries.conf(5), version 2, as containers/image (podman, skopeo, buildah)
//! reads it: `[[registry]]` tables with `prefix`, `location`, `insecure`, `blocked`,
//! `mirror-by-digest-only` and `[[registry.mirror]]` (`location`, `insecure`,
//! `pull-from-mirror` = `all` | `digest-only` | `tag-only`); version 1's
//! `[registries.insecure]`/`[registries.block]` lists too.
//!
//! Files: `$CONTAINERS_REGISTRIES_CONF` when set, else `~/.config/containers/registries.conf`
//! when it exists, else `/etc/containers/registries.conf`; then the drop-ins
//! `/etc/containers/registries.conf.d/*.conf` and `~/.config/containers/registries.conf.d/*.conf`
//! in name order, a later table replacing an earlier one with the same prefix.
//!
//! The table chosen for a name is the one with the longest matching prefix (`*.example.com`
//! matches subdomains of example.com). Its `location` replaces the prefix (a remap); its
//! mirrors are tried in order before the primary, for reads only: pushes go to the primary.
//!
//! Not for: short-name aliases and `unqualified-search-registries` (hoist names are always
//! normalized the docker way), credential helpers, signature policy.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::model::reference::Reference;

/// Bytes of one registries.conf file hoist reads (podman's default file is 4 KiB).
pub const MAX_CONF_FILE: u64 = 1 << 20;

/// Drop-in files read from one registries.conf.d directory.
pub const MAX_DROP_INS: usize = 1000;

/// Which pulls a mirror serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PullFrom {
    /// Pulls by tag and by digest.
    #[default]
    All,
    /// Only pulls by digest.
    DigestOnly,
    /// Only pulls by tag.
    TagOnly,
}

impl PullFrom {
    /// Whether a pull of a reference that is (or is not) a digest may use the mirror.
    pub fn allows(self, by_digest: bool) -> bool {
        match self {
            PullFrom::All => true,
            PullFrom::DigestOnly => by_digest,
            PullFrom::TagOnly => !by_digest,
        }
    }
}

/// One `[[registry.mirror]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mirror {
    /// `host[:port][/namespace…]`.
    pub location: String,
    /// Plain HTTP and unverified TLS allowed.
    pub insecure: bool,
    /// Which pulls it serves.
    pub pull_from: PullFrom,
}

/// One `[[registry]]` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryEntry {
    /// What names it applies to (`host[:port][/namespace…]`, or `*.domain`).
    pub prefix: String,
    /// Where those names really are (empty only with a wildcard prefix: unchanged).
    pub location: String,
    /// Plain HTTP and unverified TLS allowed.
    pub insecure: bool,
    /// Names under the prefix are refused.
    pub blocked: bool,
    /// Mirrors tried in order before the primary, for pulls.
    pub mirrors: Vec<Mirror>,
    /// The file that defined it.
    pub origin: PathBuf,
}

/// The registries configuration: every `[[registry]]` after merging the files.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegistriesConf {
    /// The tables, in file order.
    pub registries: Vec<RegistryEntry>,
}

/// Where a name's reads and writes go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// The primary: `(registry, repository)` after any remap.
    pub primary: (String, String),
    /// Mirrors, in order: `(registry, repository, pull_from)`.
    pub mirrors: Vec<(String, String, PullFrom)>,
    /// Why the name is refused, when a `blocked` table applies.
    pub blocked: Option<String>,
}

#[derive(Deserialize, Default)]
struct FileV2 {
    #[serde(default)]
    registry: Vec<TableV2>,
    #[serde(default)]
    registries: Option<TablesV1>,
}

#[derive(Deserialize, Default)]
struct TablesV1 {
    #[serde(default)]
    insecure: Option<ListV1>,
    #[serde(default)]
    block: Option<ListV1>,
}

#[derive(Deserialize, Default)]
struct ListV1 {
    #[serde(default)]
    registries: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
struct TableV2 {
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    location: String,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    blocked: bool,
    #[serde(default)]
    mirror_by_digest_only: bool,
    #[serde(default)]
    mirror: Vec<MirrorV2>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
struct MirrorV2 {
    #[serde(default)]
    location: String,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    pull_from_mirror: String,
}

/// A location must be a bare `host[:port][/path]`: no scheme, no spaces, no trailing `/`.
fn check_location(loc: &str, origin: &Path) -> Result<String> {
    let l = loc.trim().trim_end_matches('/');
    if l.is_empty() || l.contains("://") || l.contains(char::is_whitespace) || l.starts_with('/') {
        return Err(Error::malformed(
            "registries.conf",
            origin.display().to_string(),
            format!("invalid location {loc:?}"),
        ));
    }
    Ok(l.to_string())
}

impl RegistriesConf {
    /// Parse one file's text (`origin` names it in errors and in `blocked` refusals).
    pub fn parse(text: &str, origin: &Path) -> Result<Vec<RegistryEntry>> {
        let bad = |why: String| Error::malformed("registries.conf", origin.display().to_string(), why);
        let f: FileV2 = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        let mut out = Vec::new();
        if let Some(v1) = f.registries {
            if !f.registry.is_empty() {
                return Err(bad("mixes the version 1 [registries.*] tables with version 2 [[registry]]".into()));
            }
            for (list, insecure, blocked) in [(v1.insecure, true, false), (v1.block, false, true)] {
                for r in list.map(|l| l.registries).unwrap_or_default() {
                    let location = check_location(&r, origin)?;
                    out.push(RegistryEntry {
                        prefix: location.clone(),
                        location,
                        insecure,
                        blocked,
                        mirrors: vec![],
                        origin: origin.to_path_buf(),
                    });
                }
            }
        }
        for t in f.registry {
            let wildcard = t.prefix.starts_with("*.");
            let location = if t.location.trim().is_empty() {
                if !wildcard {
                    return Err(bad(format!("[[registry]] prefix {:?} without a location", t.prefix)));
                }
                String::new()
            } else {
                if wildcard {
                    return Err(bad(format!(
                        "[[registry]] prefix {:?}: a wildcard prefix takes no location",
                        t.prefix
                    )));
                }
                check_location(&t.location, origin)?
            };
            let prefix = if t.prefix.trim().is_empty() { location.clone() } else { t.prefix.trim().to_string() };
            if wildcard && (prefix.contains('/') || prefix.len() < 3) {
                return Err(bad(format!("invalid wildcard prefix {prefix:?}: give *.domain")));
            }
            let mut mirrors = Vec::new();
            for m in t.mirror {
                let pull_from = match (t.mirror_by_digest_only, m.pull_from_mirror.as_str()) {
                    (true, "" | "digest-only") => PullFrom::DigestOnly,
                    (true, other) => {
                        return Err(bad(format!(
                            "mirror {:?}: pull-from-mirror {other:?} with mirror-by-digest-only",
                            m.location
                        )))
                    }
                    (false, "" | "all") => PullFrom::All,
                    (false, "digest-only") => PullFrom::DigestOnly,
                    (false, "tag-only") => PullFrom::TagOnly,
                    (false, other) => {
                        return Err(bad(format!("mirror {:?}: unknown pull-from-mirror {other:?}", m.location)))
                    }
                };
                mirrors.push(Mirror {
                    location: check_location(&m.location, origin)?,
                    insecure: m.insecure,
                    pull_from,
                });
            }
            out.push(RegistryEntry {
                prefix,
                location,
                insecure: t.insecure,
                blocked: t.blocked,
                mirrors,
                origin: origin.to_path_buf(),
            });
        }
        Ok(out)
    }

    /// Add the tables of one file, each replacing a table with the same prefix.
    pub fn merge(&mut self, entries: Vec<RegistryEntry>) {
        for e in entries {
            match self.registries.iter_mut().find(|r| r.prefix == e.prefix) {
                Some(r) => *r = e,
                None => self.registries.push(e),
            }
        }
    }

    /// Read and merge `files` in order (a missing file is skipped when `optional`).
    pub fn load_files(files: &[(PathBuf, bool)]) -> Result<RegistriesConf> {
        let mut conf = RegistriesConf::default();
        for (path, optional) in files {
            let text = match read_bounded(path) {
                Ok(t) => t,
                Err(e) if *optional && e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(path, e)),
            };
            conf.merge(Self::parse(&text, path)?);
        }
        Ok(conf)
    }

    /// The files containers/image reads, in order (see the module doc): the main file
    /// (required when `$CONTAINERS_REGISTRIES_CONF` names it), then the drop-ins.
    pub fn default_files() -> Vec<(PathBuf, bool)> {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let user_dir = home.as_ref().map(|h| h.join(".config/containers"));
        let mut files = Vec::new();
        let user_file = user_dir.as_ref().map(|d| d.join("registries.conf")).filter(|f| f.exists());
        match (std::env::var_os("CONTAINERS_REGISTRIES_CONF"), user_file) {
            (Some(p), _) if !p.is_empty() => files.push((PathBuf::from(p), false)),
            (_, Some(u)) => files.push((u, true)),
            _ => files.push((PathBuf::from("/etc/containers/registries.conf"), true)),
        }
        let mut dirs = vec![PathBuf::from("/etc/containers/registries.conf.d")];
        dirs.extend(user_dir.map(|d| d.join("registries.conf.d")));
        for d in dirs {
            let Ok(rd) = std::fs::read_dir(&d) else { continue };
            let mut names: Vec<PathBuf> = rd
                .take(MAX_DROP_INS)
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "conf"))
                .collect();
            names.sort();
            files.extend(names.into_iter().map(|p| (p, true)));
        }
        files
    }

    /// The configuration of this machine and user ([`Self::default_files`]).
    pub fn load_default() -> Result<RegistriesConf> {
        Self::load_files(&Self::default_files())
    }

    /// The table that applies to `name` (`host/repo[:tag][@digest]`), with the length of
    /// the matched part.
    fn find(&self, name: &str) -> Option<(&RegistryEntry, usize)> {
        let mut best: Option<(&RegistryEntry, usize)> = None;
        for r in &self.registries {
            if let Some(n) = matching_prefix(name, &r.prefix) {
                if best.is_none_or(|(b, _)| r.prefix.len() > b.prefix.len()) {
                    best = Some((r, n));
                }
            }
        }
        best
    }

    /// Where `reference`'s reads and writes go.
    pub fn route(&self, reference: &Reference) -> Route {
        let plain = || Route {
            primary: (reference.registry.clone(), reference.repository.clone()),
            mirrors: vec![],
            blocked: None,
        };
        let name = reference.to_string();
        let Some((entry, len)) = self.find(&name) else { return plain() };
        if entry.blocked {
            let mut r = plain();
            r.blocked = Some(format!(
                "{} is blocked by {} ([[registry]] prefix = {:?})",
                reference.repo_ref(),
                entry.origin.display(),
                entry.prefix
            ));
            return r;
        }
        let rest = &name[len..];
        let rewrite = |location: &str| -> Option<(String, String)> {
            let r: Reference = format!("{location}{rest}").parse().ok()?;
            Some((r.registry, r.repository))
        };
        let primary = if entry.location.is_empty() {
            (reference.registry.clone(), reference.repository.clone())
        } else {
            rewrite(&entry.location).unwrap_or_else(|| {
                tracing::warn!(name, location = %entry.location, "registries.conf location gives no valid name; not remapped");
                (reference.registry.clone(), reference.repository.clone())
            })
        };
        let mirrors = entry
            .mirrors
            .iter()
            .filter_map(|m| rewrite(&m.location).map(|(reg, repo)| (reg, repo, m.pull_from)))
            .collect();
        Route { primary, mirrors, blocked: None }
    }

    /// Whether `host` (`host[:port]`) is an endpoint some table or mirror calls insecure.
    pub fn is_insecure(&self, host: &str) -> bool {
        let host_of = |loc: &str| loc.split('/').next().unwrap_or("").to_ascii_lowercase();
        let h = host.to_ascii_lowercase();
        self.registries.iter().any(|r| {
            (r.insecure
                && if r.location.is_empty() {
                    matching_prefix(&h, &r.prefix).is_some()
                } else {
                    host_of(&r.location) == h
                })
                || r.mirrors.iter().any(|m| m.insecure && host_of(&m.location) == h)
        })
    }
}

fn read_bounded(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut buf = String::new();
    std::fs::File::open(path)?.take(MAX_CONF_FILE + 1).read_to_string(&mut buf)?;
    if buf.len() as u64 > MAX_CONF_FILE {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("larger than {MAX_CONF_FILE} bytes")));
    }
    Ok(buf)
}

/// How much of `name` the `prefix` matches, as containers/image's `refMatchingPrefix`:
/// the whole prefix followed by the end, `/`, `:` or `@`; `*.domain` matches a host ending
/// in `.domain` (then the end or one of those).
pub fn matching_prefix(name: &str, prefix: &str) -> Option<usize> {
    let boundary = |i: usize| i == name.len() || matches!(name.as_bytes()[i], b'/' | b':' | b'@');
    if let Some(domain) = prefix.strip_prefix('*') {
        // domain starts with '.'
        let host_end = name.find('/').unwrap_or(name.len());
        let idx = name[..host_end].find(domain)?;
        let end = idx + domain.len();
        return (idx > 0 && boundary(end)).then_some(end);
    }
    (name.starts_with(prefix) && boundary(prefix.len())).then_some(prefix.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(text: &str) -> RegistriesConf {
        let mut c = RegistriesConf::default();
        c.merge(RegistriesConf::parse(text, Path::new("/etc/containers/registries.conf")).unwrap());
        c
    }

    fn route(c: &RegistriesConf, name: &str) -> Route {
        c.route(&name.parse().unwrap())
    }

    #[test]
    fn prefix_matching_as_containers_image() {
        assert_eq!(matching_prefix("example.com/foo/app:v1", "example.com/foo"), Some(15));
        assert_eq!(matching_prefix("example.com/foobar/app", "example.com/foo"), None);
        assert_eq!(matching_prefix("example.com/foo", "example.com/foo"), Some(15));
        assert_eq!(matching_prefix("example.com/foo@sha256:x", "example.com/foo"), Some(15));
        assert_eq!(matching_prefix("a.example.com/x", "*.example.com"), Some(13));
        assert_eq!(matching_prefix("a.b.example.com:5000/x", "*.example.com"), Some(15));
        assert_eq!(matching_prefix("example.com/x", "*.example.com"), None);
        assert_eq!(matching_prefix("evil.com/a.example.com/x", "*.example.com"), None);
        assert_eq!(matching_prefix("a.example.community/x", "*.example.com"), None);
    }

    #[test]
    fn longest_prefix_remaps_and_orders_mirrors() {
        let c = conf(
            r#"
unqualified-search-registries = ["example.com"]
[[registry]]
location = "example.com"
[[registry.mirror]]
location = "mirror.local/all"

[[registry]]
prefix = "example.com/foo"
location = "internal.example.net/bar"
[[registry.mirror]]
location = "m0.local/mirror-for-foo"
[[registry.mirror]]
location = "m1.local:5000/mirrors/foo"
insecure = true
pull-from-mirror = "digest-only"
"#,
        );
        let r = route(&c, "example.com/foo/image:latest");
        assert_eq!(r.primary, ("internal.example.net".into(), "bar/image".into()));
        assert_eq!(
            r.mirrors,
            vec![
                ("m0.local".into(), "mirror-for-foo/image".into(), PullFrom::All),
                ("m1.local:5000".into(), "mirrors/foo/image".into(), PullFrom::DigestOnly),
            ]
        );
        let r = route(&c, "example.com/other:v1");
        assert_eq!(r.primary, ("example.com".into(), "other".into()));
        assert_eq!(r.mirrors, vec![("mirror.local".into(), "all/other".into(), PullFrom::All)]);
        let r = route(&c, "unrelated.io/x:v1");
        assert_eq!((r.primary, r.mirrors.len()), (("unrelated.io".into(), "x".into()), 0));
        assert!(c.is_insecure("m1.local:5000") && !c.is_insecure("m0.local"));
    }

    #[test]
    fn blocked_names_the_file_and_wildcards_match_subdomains() {
        let c = conf(
            r#"
[[registry]]
prefix = "*.blocked.example"
blocked = true
[[registry]]
location = "docker.io/library/busybox"
blocked = true
[[registry]]
prefix = "*.lab.example"
insecure = true
"#,
        );
        let why = route(&c, "a.blocked.example/x:v1").blocked.unwrap();
        assert!(why.contains("/etc/containers/registries.conf") && why.contains("*.blocked.example"), "{why}");
        assert!(route(&c, "busybox").blocked.is_some());
        assert!(route(&c, "docker.io/library/alpine").blocked.is_none());
        assert!(c.is_insecure("reg.lab.example:5000") && !c.is_insecure("lab.example"));
    }

    #[test]
    fn drop_ins_replace_by_prefix_and_v1_lists_work() {
        let mut c = conf("[[registry]]\nlocation = \"a.example\"\nblocked = true\n");
        c.merge(RegistriesConf::parse("[[registry]]\nlocation = \"a.example\"\n", Path::new("/d/1.conf")).unwrap());
        assert_eq!(c.registries.len(), 1);
        assert!(route(&c, "a.example/x").blocked.is_none());
        let v1 = conf(
            "[registries.insecure]\nregistries = ['r3.example']\n[registries.block]\nregistries = ['bad.example']\n",
        );
        assert!(v1.is_insecure("r3.example"));
        assert!(route(&v1, "bad.example/x").blocked.is_some());
    }

    #[test]
    fn bad_files_are_refused_with_their_name() {
        for text in [
            "[[registry]]\nprefix = \"x.example\"\n",
            "[[registry]]\nlocation = \"https://x.example\"\n",
            "[[registry]]\nprefix = \"*.x.example\"\nlocation = \"y.example\"\n",
            "[[registry]]\nlocation = \"x.example\"\n[[registry.mirror]]\nlocation = \"m\"\npull-from-mirror = \"sometimes\"\n",
            "[[registry]\n",
        ] {
            let e = RegistriesConf::parse(text, Path::new("/tmp/r.conf")).unwrap_err().to_string();
            assert!(e.contains("/tmp/r.conf"), "{text}: {e}");
        }
    }
}
