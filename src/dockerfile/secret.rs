//! Build secrets (`hoist build --secret`, buildx's syntax): where each one's value comes
//! from, a file or an environment variable of this process, read only when a step needs it.
//! Errors name the secret's id and its file or variable, never its value.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use crate::error::{Error, Result};

/// Where a build secret's value comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Secret {
    /// The contents of a file (`type=file`, `src=FILE`).
    File(PathBuf),
    /// The value of an environment variable of this process (`type=env`, `env=VAR`).
    Env(String),
}

/// A build's secrets, by id.
pub type Secrets = BTreeMap<String, Secret>;

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::File(p) => write!(f, "file {}", p.display()),
            Secret::Env(v) => write!(f, "environment variable {v}"),
        }
    }
}

impl Secret {
    /// buildx's `--secret [type=file|env,]id=ID[,src=FILE|,env=VAR]`: the id and where its
    /// value comes from. `type=file` reads `src` (default: the id); `type=env` reads the
    /// variable `env` (or `src`; default: the id). Without a type, `env=` means env and
    /// `src=` a file; with neither, the variable named by the id when it is set, else the
    /// file named by it. Unknown keys, and a variable that is not set, are errors.
    pub fn parse(spec: &str) -> Result<(String, Secret)> {
        let usage = |why: String| Error::Usage(format!("--secret {spec:?}: {why}"));
        let (mut typ, mut id, mut src, mut env) = (None, None, None, None);
        for field in spec.split(',') {
            let Some((k, v)) = field.split_once('=') else {
                return Err(usage(format!("{field:?} is not a KEY=VALUE pair")));
            };
            let slot = match k.to_ascii_lowercase().as_str() {
                "type" => &mut typ,
                "id" => &mut id,
                "src" | "source" => &mut src,
                "env" => &mut env,
                _ => return Err(usage(format!("unknown key {k:?} (type, id, src, source, env)"))),
            };
            if slot.replace(v.to_string()).is_some() {
                return Err(usage(format!("{k} is given twice")));
            }
        }
        let id = id.filter(|i| !i.is_empty()).ok_or_else(|| usage("id=ID is required".into()))?;
        let secret = match (typ.as_deref(), src, env) {
            (_, Some(_), Some(_)) => return Err(usage("give src or env, not both".into())),
            (Some("file"), _, Some(_)) => return Err(usage("env= is for type=env".into())),
            (Some("file"), src, None) => Secret::File(src.unwrap_or_else(|| id.clone()).into()),
            (Some("env"), src, env) => Secret::Env(env.or(src).unwrap_or_else(|| id.clone())),
            (Some(t), ..) => return Err(usage(format!("unknown type {t:?} (file, env)"))),
            (None, Some(src), None) => Secret::File(src.into()),
            (None, None, Some(env)) => Secret::Env(env),
            (None, None, None) if std::env::var_os(&id).is_some() => Secret::Env(id.clone()),
            (None, None, None) => Secret::File(id.clone().into()),
        };
        if let Secret::Env(var) = &secret {
            env_value(&id, var)?;
        }
        Ok((id, secret))
    }

    /// The secret's value, the secret `id` as named in errors.
    pub fn read(&self, id: &str) -> Result<Vec<u8>> {
        match self {
            Secret::File(p) => std::fs::read(p).map_err(|e| Error::Usage(format!("secret {id} ({self}): {e}"))),
            Secret::Env(var) => env_value(id, var).map(std::os::unix::ffi::OsStringExt::into_vec),
        }
    }
}

fn env_value(id: &str, var: &str) -> Result<std::ffi::OsString> {
    std::env::var_os(var).ok_or_else(|| Error::Usage(format!("secret {id}: the environment variable {var} is not set")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> std::result::Result<(String, Secret), String> {
        Secret::parse(s).map_err(|e| e.to_string())
    }

    #[test]
    fn buildx_forms() {
        // PATH is set in every test environment; the unset one is named so nowhere
        let unset = "HOIST_SECRET_TEST_NEVER_SET";
        assert_eq!(parse("id=a,src=/f").unwrap(), ("a".into(), Secret::File("/f".into())));
        assert_eq!(parse("type=file,id=a").unwrap(), ("a".into(), Secret::File("a".into())));
        assert_eq!(parse("id=a,env=PATH").unwrap(), ("a".into(), Secret::Env("PATH".into())));
        assert_eq!(parse("type=env,id=a,source=PATH").unwrap(), ("a".into(), Secret::Env("PATH".into())));
        assert_eq!(parse("type=env,id=PATH").unwrap(), ("PATH".into(), Secret::Env("PATH".into())));
        assert_eq!(parse("id=PATH").unwrap(), ("PATH".into(), Secret::Env("PATH".into())));
        assert_eq!(parse(&format!("id={unset}")).unwrap(), (unset.into(), Secret::File(unset.into())));
        for (bad, says) in [
            ("id=a,src=f,colour=red", "unknown key \"colour\""),
            ("id=a,src=f,id=b", "id is given twice"),
            ("src=f", "id=ID is required"),
            ("id=a,src", "not a KEY=VALUE"),
            ("type=ssh,id=a", "unknown type \"ssh\""),
            ("type=file,id=a,env=PATH", "env= is for type=env"),
            ("id=a,src=f,env=PATH", "not both"),
            (&format!("id=a,env={unset}"), &format!("secret a: the environment variable {unset} is not set")),
            (&format!("type=env,id={unset}"), "is not set"),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
