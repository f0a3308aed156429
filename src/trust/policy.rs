//! containers-policy.json(5): which images may be pulled or copied, as skopeo and podman
//! read it.
//!
//! - Requirement types: `insecureAcceptAnything`, `reject`, `sigstoreSigned` (`keyPath`,
//!   `keyPaths`, `keyData`, `keyDatas`; `signedIdentity`). `signedBy` (GPG),
//!   `signedBaseLayer` and keyless `sigstoreSigned` (`fulcio`, `pki`) are refused by name:
//!   an image whose scope has one is refused, saying which (other scopes of the same file
//!   still work, so a distribution's policy with GPG rules for its own registry does not
//!   stop every other pull).
//! - Signed identities: `matchExact`, `matchRepoDigestOrExact` (the default),
//!   `matchRepository`, `exactReference`, `exactRepository`, `remapIdentity`, with
//!   containers/image's rules (a signature naming only a repository never matches an exact
//!   rule).
//! - Scopes: `transports.<transport>.<scope>` with the most specific scope winning: for
//!   `docker` the full reference, then the repository, its parent namespaces, the host,
//!   then `*.domain` wildcards, then `""` (the transport's default); for path transports
//!   (`oci`, `oci-archive`, `docker-archive`) `PATH:REF`, `PATH`, then each parent
//!   directory. Nothing matching: the top-level `default`.
//! - Every requirement of the chosen list must accept.
//!
//! Signatures of a `sigstoreSigned` requirement are found in both formats (the
//! `sha256-<hex>.sig` tag first, then Sigstore bundle referrers); the first that verifies
//! ends the search.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde_json::Value;

use super::keys::PublicKey;
use super::payload;
use super::sign::Format;
use super::verify::{self, Rules};
use crate::error::{Error, Result};
use crate::model::descriptor::Descriptor;
use crate::model::reference::Reference;
use crate::transport::{Endpoint, Source};

/// Largest policy file read.
const MAX_POLICY: u64 = 4 * 1024 * 1024;

/// One signed-identity rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignedIdentity {
    /// The signature names exactly the image's reference (tag or digest).
    MatchExact,
    /// Exact for a tagged reference; same repository for a digest reference (the default).
    MatchRepoDigestOrExact,
    /// Same repository.
    MatchRepository,
    /// The signature names exactly this reference.
    ExactReference(String),
    /// The signature names this repository.
    ExactRepository(String),
    /// `prefix` of the image's name read as `signed_prefix`, then matchRepoDigestOrExact.
    RemapIdentity {
        /// Prefix of the image's name.
        prefix: String,
        /// What the signature names instead.
        signed_prefix: String,
    },
}

/// One requirement.
#[derive(Clone, Debug)]
pub enum Requirement {
    /// Accept anything.
    InsecureAcceptAnything,
    /// Refuse everything.
    Reject,
    /// A requirement hoist cannot check (`signedBy`, `signedBaseLayer`, keyless
    /// `sigstoreSigned`): images under its scope are refused, naming it.
    Unsupported(String),
    /// A signature by one of `keys`, claiming an identity `identity` accepts.
    SigstoreSigned {
        /// The keys.
        keys: Vec<PublicKey>,
        /// The identity rule.
        identity: SignedIdentity,
    },
}

/// A loaded policy.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Where it was read from (for messages).
    pub source: String,
    default: Vec<Requirement>,
    transports: BTreeMap<String, BTreeMap<String, Vec<Requirement>>>,
}

/// The default policy files, as skopeo reads them: `$HOME/.config/containers/policy.json`,
/// then `/etc/containers/policy.json`; the first that exists.
pub fn default_path() -> Option<PathBuf> {
    let home = std::env::var_os("HOME").map(|h| Path::new(&h).join(".config/containers/policy.json"));
    home.into_iter().chain([PathBuf::from("/etc/containers/policy.json")]).find(|p| p.is_file())
}

impl Policy {
    /// Read and check a policy file.
    pub fn load(path: &Path) -> Result<Policy> {
        use std::io::Read;
        let io = |e| Error::io(path, e);
        let mut buf = Vec::new();
        std::fs::File::open(path).map_err(io)?.take(MAX_POLICY + 1).read_to_end(&mut buf).map_err(io)?;
        if buf.len() as u64 > MAX_POLICY {
            return Err(Error::malformed("policy", path.display().to_string(), "larger than 4 MiB"));
        }
        Policy::parse(&buf, &path.display().to_string(), path.parent().unwrap_or(Path::new(".")))
    }

    /// Parse policy JSON; `name` is named in errors, relative key paths are taken from `dir`.
    pub fn parse(bytes: &[u8], name: &str, dir: &Path) -> Result<Policy> {
        let bad = |why: String| Error::malformed("policy", name, why);
        let v: Value = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        let obj = v.as_object().ok_or_else(|| bad("not a JSON object".into()))?;
        for k in obj.keys() {
            if k != "default" && k != "transports" {
                return Err(bad(format!("unknown field {k:?}")));
            }
        }
        let default = requirements(obj.get("default").ok_or_else(|| bad("no \"default\"".into()))?, name, dir)?;
        let mut transports = BTreeMap::new();
        if let Some(t) = obj.get("transports") {
            let t = t.as_object().ok_or_else(|| bad("\"transports\" is not an object".into()))?;
            for (transport, scopes) in t {
                let scopes =
                    scopes.as_object().ok_or_else(|| bad(format!("transports.{transport} is not an object")))?;
                let mut m = BTreeMap::new();
                for (scope, reqs) in scopes {
                    m.insert(scope.clone(), requirements(reqs, name, dir)?);
                }
                transports.insert(transport.clone(), m);
            }
        }
        Ok(Policy { source: name.to_string(), default, transports })
    }

    /// The requirements for `ep` and the scope that chose them (`default` when none did).
    pub fn requirements_for(&self, ep: &Endpoint) -> (&[Requirement], String) {
        let (transport, scopes) = scopes_of(ep);
        if let Some(t) = self.transports.get(transport) {
            for s in scopes.iter().map(String::as_str).chain([""]) {
                if let Some(r) = t.get(s) {
                    return (r, format!("transports.{transport}.{s:?}"));
                }
            }
        }
        (&self.default, "default".into())
    }

    /// Whether the policy lets `subject` (what `ep` resolved to, read from `src`) in: Ok, or
    /// [`Error::Untrusted`] saying which requirement refused it and why.
    pub async fn check(&self, ep: &Endpoint, src: &dyn Source, subject: &Descriptor) -> Result<()> {
        let (reqs, scope) = self.requirements_for(ep);
        let what = format!("{ep} ({})", subject.digest);
        let refuse = |reason: String| Error::Untrusted {
            reference: what.clone(),
            reason: format!("refused by policy {} ({scope}): {reason}", self.source),
        };
        let intended = match ep {
            Endpoint::Registry(r) => Some(r.clone()),
            _ => None,
        };
        for req in reqs {
            match req {
                Requirement::InsecureAcceptAnything => {}
                Requirement::Reject => return Err(refuse("the policy rejects it".into())),
                Requirement::Unsupported(why) => return Err(refuse(why.clone())),
                Requirement::SigstoreSigned { keys, identity } => {
                    let intended = intended.clone();
                    let rule = identity.clone();
                    let accept = move |claimed: Option<&str>| match claimed {
                        Some(c) => identity_matches(&rule, intended.as_ref(), c),
                        // a bundle statement naming no subject (cosign's): it was found
                        // attached to this very image, so it stands for the image's own name
                        None => {
                            intended.is_some()
                                || matches!(
                                    rule,
                                    SignedIdentity::ExactReference(_) | SignedIdentity::ExactRepository(_)
                                )
                        }
                    };
                    let rules = Rules {
                        keys,
                        identity: &accept,
                        format: Format::Both,
                        predicate_type: payload::COSIGN_SIGN_PREDICATE,
                        first_only: true,
                    };
                    let checked = verify::check(src, subject, &rules).await?;
                    if let Err(Error::Untrusted { reason, .. }) = verify::require_verified(&what, &checked) {
                        return Err(refuse(reason));
                    }
                }
            }
        }
        Ok(())
    }
}

/// A requirement list: non-empty, each entry known.
fn requirements(v: &Value, name: &str, dir: &Path) -> Result<Vec<Requirement>> {
    let bad = |why: String| Error::malformed("policy", name, why);
    let list = v.as_array().ok_or_else(|| bad("a requirement list is not an array".into()))?;
    if list.is_empty() {
        return Err(bad("an empty requirement list (write [{\"type\": \"reject\"}] to refuse)".into()));
    }
    list.iter().map(|r| requirement(r, name, dir)).collect()
}

fn requirement(v: &Value, name: &str, dir: &Path) -> Result<Requirement> {
    let bad = |why: String| Error::malformed("policy", name, why);
    let o = v.as_object().ok_or_else(|| bad("a requirement is not an object".into()))?;
    let ty = o.get("type").and_then(Value::as_str).ok_or_else(|| bad("a requirement without \"type\"".into()))?;
    let only = |allowed: &[&str]| -> Result<()> {
        match o.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(k) => Err(bad(format!("{ty}: unknown field {k:?}"))),
            None => Ok(()),
        }
    };
    match ty {
        "insecureAcceptAnything" => {
            only(&["type"])?;
            Ok(Requirement::InsecureAcceptAnything)
        }
        "reject" => {
            only(&["type"])?;
            Ok(Requirement::Reject)
        }
        "signedBy" => Ok(Requirement::Unsupported(
            "requirement type \"signedBy\" (GPG signatures) is not supported by hoist; use sigstoreSigned".into(),
        )),
        "signedBaseLayer" => {
            Ok(Requirement::Unsupported("requirement type \"signedBaseLayer\" is not supported by hoist".into()))
        }
        "sigstoreSigned" => {
            for k in [
                "fulcio",
                "pki",
                "rekorPublicKeyPath",
                "rekorPublicKeyPaths",
                "rekorPublicKeyData",
                "rekorPublicKeyDatas",
            ] {
                if o.contains_key(k) {
                    return Ok(Requirement::Unsupported(format!(
                        "sigstoreSigned with {k:?} (keyless, transparency log) is not supported by hoist; use keyPath"
                    )));
                }
            }
            only(&["type", "keyPath", "keyPaths", "keyData", "keyDatas", "signedIdentity"])?;
            let mut keys = Vec::new();
            let n = ["keyPath", "keyPaths", "keyData", "keyDatas"].iter().filter(|k| o.contains_key(**k)).count();
            if n != 1 {
                return Err(bad("sigstoreSigned: give exactly one of keyPath, keyPaths, keyData, keyDatas".into()));
            }
            let str_list = |k: &str| -> Result<Vec<String>> {
                match o.get(k) {
                    None => Ok(Vec::new()),
                    Some(Value::String(s)) => Ok(vec![s.clone()]),
                    Some(Value::Array(a)) if !a.is_empty() => a
                        .iter()
                        .map(|x| x.as_str().map(str::to_string).ok_or_else(|| bad(format!("{k}: not a string"))))
                        .collect(),
                    Some(_) => Err(bad(format!("sigstoreSigned.{k}: not a string or a non-empty list"))),
                }
            };
            for p in str_list("keyPath")?.into_iter().chain(str_list("keyPaths")?) {
                let p = Path::new(&p);
                keys.push(PublicKey::load(&if p.is_absolute() { p.to_path_buf() } else { dir.join(p) })?);
            }
            for d in str_list("keyData")?.into_iter().chain(str_list("keyDatas")?) {
                let pem = base64::engine::general_purpose::STANDARD
                    .decode(d.trim())
                    .map_err(|e| bad(format!("keyData is not base64: {e}")))?;
                keys.push(PublicKey::from_pem(&pem, &format!("{name} keyData"))?);
            }
            let identity = match o.get("signedIdentity") {
                None => SignedIdentity::MatchRepoDigestOrExact,
                Some(i) => signed_identity(i, name)?,
            };
            Ok(Requirement::SigstoreSigned { keys, identity })
        }
        other => Err(bad(format!("unknown requirement type {other:?}"))),
    }
}

fn signed_identity(v: &Value, name: &str) -> Result<SignedIdentity> {
    let bad = |why: String| Error::malformed("policy", name, why);
    let o = v.as_object().ok_or_else(|| bad("signedIdentity is not an object".into()))?;
    let field = |k: &str| -> Result<String> {
        o.get(k).and_then(Value::as_str).map(str::to_string).ok_or_else(|| bad(format!("signedIdentity: no {k:?}")))
    };
    let ty = o.get("type").and_then(Value::as_str).unwrap_or_default();
    let allowed: &[&str] = match ty {
        "exactReference" => &["type", "dockerReference"],
        "exactRepository" => &["type", "dockerRepository"],
        "remapIdentity" => &["type", "prefix", "signedPrefix"],
        _ => &["type"],
    };
    if let Some(k) = o.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(bad(format!("signedIdentity {ty}: unknown field {k:?}")));
    }
    Ok(match ty {
        "matchExact" => SignedIdentity::MatchExact,
        "matchRepoDigestOrExact" => SignedIdentity::MatchRepoDigestOrExact,
        "matchRepository" => SignedIdentity::MatchRepository,
        "exactReference" => {
            let r = field("dockerReference")?;
            let parsed: Reference = r.parse()?;
            if parsed.tag.is_none() && parsed.digest.is_none() {
                return Err(bad(format!("exactReference {r:?} names no tag or digest")));
            }
            SignedIdentity::ExactReference(r)
        }
        "exactRepository" => SignedIdentity::ExactRepository(field("dockerRepository")?),
        "remapIdentity" => {
            SignedIdentity::RemapIdentity { prefix: field("prefix")?, signed_prefix: field("signedPrefix")? }
        }
        other => return Err(bad(format!("unknown signedIdentity type {other:?}"))),
    })
}

/// `host/repo` of a reference.
fn name(r: &Reference) -> String {
    r.repo_ref()
}

fn name_only(r: &Reference) -> bool {
    r.tag.is_none() && r.digest.is_none()
}

/// The reference as containers/image prints it: `name[:tag][@digest]`.
fn full(r: &Reference) -> String {
    let mut s = name(r);
    if let Some(t) = &r.tag {
        s.push(':');
        s.push_str(t);
    }
    if let Some(d) = &r.digest {
        s.push('@');
        s.push_str(&d.to_string());
    }
    s
}

fn repo_digest_or_exact(intended: &Reference, signature: &Reference) -> bool {
    if name_only(signature) {
        return false;
    }
    if intended.tag.is_some() {
        full(signature) == full(intended)
    } else if intended.digest.is_some() {
        name(signature) == name(intended)
    } else {
        false
    }
}

/// Whether a signature claiming `claimed` satisfies `rule` for the image `intended`.
pub fn identity_matches(rule: &SignedIdentity, intended: Option<&Reference>, claimed: &str) -> bool {
    let Ok(signature) = claimed.parse::<Reference>() else { return false };
    match rule {
        SignedIdentity::ExactReference(r) => {
            let Ok(want) = r.parse::<Reference>() else { return false };
            !name_only(&want) && !name_only(&signature) && full(&want) == full(&signature)
        }
        SignedIdentity::ExactRepository(r) => r.parse::<Reference>().is_ok_and(|want| name(&want) == name(&signature)),
        _ => {
            // the image's own name: none for layouts and archives
            let Some(intended) = intended else { return false };
            match rule {
                SignedIdentity::MatchExact => {
                    !name_only(intended) && !name_only(&signature) && full(intended) == full(&signature)
                }
                SignedIdentity::MatchRepoDigestOrExact => repo_digest_or_exact(intended, &signature),
                SignedIdentity::MatchRepository => name(intended) == name(&signature),
                SignedIdentity::RemapIdentity { prefix, signed_prefix } => {
                    let n = name(intended);
                    let matches =
                        n == *prefix || (n.starts_with(prefix.as_str()) && n[prefix.len()..].starts_with('/'));
                    let remapped = if matches {
                        match full(intended).replacen(prefix.as_str(), signed_prefix, 1).parse::<Reference>() {
                            Ok(r) => r,
                            Err(_) => return false,
                        }
                    } else {
                        intended.clone()
                    };
                    repo_digest_or_exact(&remapped, &signature)
                }
                _ => false,
            }
        }
    }
}

/// The transport name and the scopes of `ep`, most specific first (without `""`).
fn scopes_of(ep: &Endpoint) -> (&'static str, Vec<String>) {
    match ep {
        Endpoint::Registry(r) => {
            let mut v = Vec::new();
            let f = full(r);
            if !name_only(r) {
                v.push(f);
            }
            let n = name(r);
            let mut cur = n.as_str();
            v.push(cur.to_string());
            while let Some((parent, _)) = cur.rsplit_once('/') {
                v.push(parent.to_string());
                cur = parent;
            }
            // *.example.com wildcards for a host a.b.example.com
            let host = r.registry.split(':').next().unwrap_or_default();
            let mut rest = host;
            while let Some((_, tail)) = rest.split_once('.') {
                v.push(format!("*.{tail}"));
                rest = tail;
            }
            ("docker", v)
        }
        Endpoint::Layout { path, reference } => ("oci", path_scopes(path, reference.as_deref())),
        Endpoint::OciArchive { path, reference } => ("oci-archive", path_scopes(path, reference.as_deref())),
        Endpoint::DockerArchive { path, reference } => ("docker-archive", path_scopes(path, reference.as_deref())),
        _ => ("", Vec::new()),
    }
}

fn path_scopes(path: &Path, reference: Option<&str>) -> Vec<String> {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut v = Vec::new();
    if let Some(r) = reference {
        v.push(format!("{}:{r}", abs.display()));
    }
    let mut cur = Some(abs.as_path());
    while let Some(p) = cur {
        v.push(p.display().to_string());
        cur = p.parent();
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Reference {
        s.parse().unwrap()
    }

    #[test]
    fn identities_as_containers_policy_json_5() {
        let tagged = r("example.com/ns/app:v1");
        let by_digest = r(&format!("example.com/ns/app@{}", crate::Digest::sha256_of(b"x")));
        let m = SignedIdentity::MatchRepoDigestOrExact;
        assert!(identity_matches(&m, Some(&tagged), "example.com/ns/app:v1"));
        assert!(!identity_matches(&m, Some(&tagged), "example.com/ns/app:v2"));
        assert!(!identity_matches(&m, Some(&tagged), "example.com/ns/app"));
        assert!(identity_matches(&m, Some(&by_digest), "example.com/ns/app:v2"));
        assert!(!identity_matches(&m, Some(&by_digest), "example.com/ns/other:v2"));
        let repo = SignedIdentity::MatchRepository;
        assert!(identity_matches(&repo, Some(&tagged), "example.com/ns/app"));
        assert!(identity_matches(&repo, Some(&tagged), "example.com/ns/app:v9"));
        assert!(!identity_matches(&repo, Some(&tagged), "example.com/ns/app2:v1"));
        assert!(!identity_matches(&repo, None, "example.com/ns/app:v1"));
        let exact = SignedIdentity::ExactReference("example.com/ns/app:v1".into());
        assert!(identity_matches(&exact, None, "example.com/ns/app:v1"));
        assert!(!identity_matches(&exact, None, "example.com/ns/app:v2"));
        assert!(!identity_matches(&exact, None, "example.com/ns/app"));
        let exact_repo = SignedIdentity::ExactRepository("example.com/ns/app".into());
        assert!(identity_matches(&exact_repo, None, "example.com/ns/app:any"));
        let remap =
            SignedIdentity::RemapIdentity { prefix: "mirror.local/ns".into(), signed_prefix: "example.com/ns".into() };
        assert!(identity_matches(&remap, Some(&r("mirror.local/ns/app:v1")), "example.com/ns/app:v1"));
        assert!(!identity_matches(&remap, Some(&r("mirror.local/nsx/app:v1")), "example.com/ns/app:v1"));
        // docker.io normalization
        assert!(identity_matches(&m, Some(&r("alpine:3")), "docker.io/library/alpine:3"));
    }

    #[test]
    fn scopes_most_specific_first_and_refusals_by_name() {
        let policy = br#"{"default":[{"type":"reject"}],"transports":{"docker":{
            "a.example.com/ns/app:v1":[{"type":"insecureAcceptAnything"}],
            "a.example.com/ns":[{"type":"reject"}],
            "*.example.com":[{"type":"insecureAcceptAnything"}],
            "":[{"type":"reject"}]}}}"#;
        let p = Policy::parse(policy, "p", Path::new("/")).unwrap();
        let scope = |s: &str| p.requirements_for(&s.parse().unwrap()).1;
        assert_eq!(scope("a.example.com/ns/app:v1"), "transports.docker.\"a.example.com/ns/app:v1\"");
        assert_eq!(scope("a.example.com/ns/app:v2"), "transports.docker.\"a.example.com/ns\"");
        assert_eq!(scope("b.example.com/x:v2"), "transports.docker.\"*.example.com\"");
        assert_eq!(scope("quay.io/x:v2"), "transports.docker.\"\"");
        assert_eq!(scope("oci:/tmp/x:v1"), "default");
        let gpg = br#"{"default":[{"type":"signedBy","keyType":"GPGKeys","keyPath":"/k"}]}"#;
        let p = Policy::parse(gpg, "p", Path::new("/")).unwrap();
        let (reqs, _) = p.requirements_for(&"quay.io/x:v2".parse().unwrap());
        assert!(matches!(&reqs[0], Requirement::Unsupported(m) if m.contains("signedBy")));
        assert!(Policy::parse(br#"{"default":[]}"#, "p", Path::new("/")).is_err());
        assert!(Policy::parse(br#"{"default":[{"type":"reject","x":1}]}"#, "p", Path::new("/")).is_err());
    }
}
