//! Credentials from the command line, per registry: `--src-creds`/`--dest-creds` (skopeo's
//! names) for the two sides of a copy, `--creds` (or HOIST_CREDS) for a command that talks to
//! one registry. A credential typed for one registry is never handed to another: `--creds` on
//! a command naming two different registries is refused as ambiguous (a usage error).

use std::collections::{BTreeMap, BTreeSet};

use clap::Args;
use hoist::error::{Error, Result};
use hoist::transport::registry::credentials::Credential;
use hoist::transport::Endpoint;

/// Credentials keyed by registry host[:port], as `Reference::registry` spells it.
pub(crate) type CredentialMap = BTreeMap<String, Credential>;

/// `--src-creds` and `--dest-creds` of `copy`, `push` and `pull`.
#[derive(Args, Clone, Default)]
pub(crate) struct SideCreds {
    /// Credentials USER:PASSWORD for the source registry only.
    #[arg(long, value_name = "USER:PASSWORD")]
    pub src_creds: Option<String>,
    /// Credentials USER:PASSWORD for the destination registry only.
    #[arg(long = "dest-creds", value_name = "USER:PASSWORD")]
    pub dest_creds: Option<String>,
}

/// Which registries a command talks to, as far as its command line tells.
pub(crate) enum Scope {
    /// A copy: the source's and the destination's registry (`None`: not a registry).
    Copy { src: Option<String>, dst: Option<String> },
    /// Any other command: every registry it names.
    Hosts(Vec<String>),
}

/// `USER:PASSWORD` given to `flag`; anything else is a usage error (the value is not echoed).
pub(crate) fn parse_credential(flag: &str, s: &str) -> Result<Credential> {
    let (u, p) = s.split_once(':').ok_or_else(|| Error::Usage(format!("{flag} must be USER:PASSWORD")))?;
    Ok(Credential::Basic { username: u.to_string(), password: p.to_string() })
}

/// The registry host[:port] `s` names when it is a registry reference (as users type it).
pub(crate) fn registry_of(s: &str) -> Option<String> {
    match Endpoint::from_user_input(s) {
        Ok(Endpoint::Registry(r)) => Some(r.registry),
        _ => None,
    }
}

/// The registry host[:port] an `--output` spec writes to, if it writes to one.
pub(crate) fn registry_of_output(s: &str) -> Option<String> {
    match hoist::output::parse_output(s) {
        Ok(o) if !o.local_only => match o.endpoint {
            Endpoint::Registry(r) => Some(r.registry),
            _ => None,
        },
        _ => None,
    }
}

/// The credentials the command line gives, per registry: `creds` (`--creds`/HOIST_CREDS),
/// `sides` (`--src-creds`/`--dest-creds`, copies only) within `scope`.
pub(crate) fn credential_map(creds: Option<&str>, sides: &SideCreds, scope: &Scope) -> Result<CredentialMap> {
    let mut map = CredentialMap::new();
    match scope {
        Scope::Copy { src, dst } => {
            let mut given: BTreeMap<String, &str> = BTreeMap::new();
            for (flag, value, host, side) in [
                ("--src-creds", &sides.src_creds, src, "source"),
                ("--dest-creds", &sides.dest_creds, dst, "destination"),
            ] {
                let Some(value) = value else { continue };
                let cred = parse_credential(flag, value)?;
                let host =
                    host.as_ref().ok_or_else(|| Error::Usage(format!("{flag}: the {side} is not a registry")))?;
                if given.get(host).is_some_and(|v| v != value) {
                    return Err(Error::Usage(format!(
                        "--src-creds and --dest-creds differ for the same registry {host}; give one"
                    )));
                }
                given.insert(host.clone(), value);
                map.insert(host.clone(), cred);
            }
            let hosts: BTreeSet<&String> = src.iter().chain(dst.iter()).collect();
            let uncovered: Vec<&String> = hosts.iter().copied().filter(|h| !map.contains_key(*h)).collect();
            if let Some(c) = creds.filter(|_| !uncovered.is_empty()) {
                if hosts.len() > 1 {
                    let (s, d) = (src.as_deref().unwrap_or("-"), dst.as_deref().unwrap_or("-"));
                    return Err(Error::Usage(format!(
                        "--creds is ambiguous for a copy between two registries ({s} and {d}): \
                         give --src-creds and/or --dest-creds"
                    )));
                }
                let cred = parse_credential("--creds", c)?;
                for h in uncovered {
                    map.insert(h.clone(), cred.clone());
                }
            }
        }
        Scope::Hosts(hosts) => {
            let hosts: BTreeSet<&String> = hosts.iter().collect();
            if let Some(c) = creds {
                if hosts.len() > 1 {
                    let names: Vec<&str> = hosts.iter().map(|h| h.as_str()).collect();
                    return Err(Error::Usage(format!(
                        "--creds is ambiguous: this command talks to {} registries ({}); \
                         store credentials per registry with `hoist login`",
                        names.len(),
                        names.join(", ")
                    )));
                }
                let cred = parse_credential("--creds", c)?;
                for h in hosts {
                    map.insert(h.clone(), cred.clone());
                }
            }
        }
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(map: &CredentialMap, host: &str) -> Option<String> {
        match map.get(host)? {
            Credential::Basic { username, .. } => Some(username.clone()),
            _ => None,
        }
    }

    fn copy(src: Option<&str>, dst: Option<&str>) -> Scope {
        Scope::Copy { src: src.map(String::from), dst: dst.map(String::from) }
    }

    #[test]
    fn sides_go_to_their_registry_only() {
        let sides = SideCreds { src_creds: Some("a:1".into()), dest_creds: Some("b:2".into()) };
        let m = credential_map(None, &sides, &copy(Some("r1:5000"), Some("r2:5000"))).unwrap();
        assert_eq!((user(&m, "r1:5000"), user(&m, "r2:5000")), (Some("a".into()), Some("b".into())));
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn creds_on_two_registries_is_ambiguous() {
        let e = credential_map(Some("u:p"), &SideCreds::default(), &copy(Some("r1"), Some("r2"))).unwrap_err();
        assert!(matches!(&e, Error::Usage(m) if m.contains("r1") && m.contains("r2")), "{e}");
        // Within one registry, or to a layout, --creds is fine.
        let m = credential_map(Some("u:p"), &SideCreds::default(), &copy(Some("r1"), Some("r1"))).unwrap();
        assert_eq!(user(&m, "r1").as_deref(), Some("u"));
        let m = credential_map(Some("u:p"), &SideCreds::default(), &copy(None, Some("r1"))).unwrap();
        assert_eq!(m.len(), 1);
        // Both sides covered: --creds (say from HOIST_CREDS) is not needed and not used.
        let sides = SideCreds { src_creds: Some("a:1".into()), dest_creds: Some("b:2".into()) };
        let m = credential_map(Some("u:p"), &sides, &copy(Some("r1"), Some("r2"))).unwrap();
        assert_eq!(user(&m, "r1").as_deref(), Some("a"));
        let e = credential_map(Some("u:p"), &SideCreds::default(), &Scope::Hosts(vec!["a".into(), "b".into()]));
        assert!(matches!(e, Err(Error::Usage(_))));
    }

    #[test]
    fn bad_values_are_usage_errors() {
        assert!(matches!(parse_credential("--creds", "nocolon"), Err(Error::Usage(_))));
        let sides = SideCreds { src_creds: Some("a:1".into()), dest_creds: None };
        let e = credential_map(None, &sides, &copy(None, Some("r"))).unwrap_err();
        assert!(matches!(&e, Error::Usage(m) if m.contains("source is not a registry")), "{e}");
    }
}
