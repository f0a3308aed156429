//! Registry credentials: docker `config.json` (`DOCKER_CONFIG`), podman `auth.json`
//! (`REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`) and credential helpers
//! (`docker-credential-<name>`). Secrets are never logged or put into error messages.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;
use serde_json::{Map, Value};

use crate::error::{Error, IoContext, Result};

/// A credential for one registry.
#[derive(Clone)]
pub enum Credential {
    Basic {
        username: String,
        password: String,
    },
    /// An OAuth2 refresh token (docker "identitytoken").
    IdentityToken {
        username: String,
        token: String,
    },
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            Credential::IdentityToken { username, .. } => {
                write!(f, "IdentityToken({username}, ***)")
            }
        }
    }
}

/// The one name of `registry` (`host[:port]`) that explicit credentials are keyed by:
/// lower case, and Docker Hub's `docker.io`, `index.docker.io` and `registry-1.docker.io`
/// (with or without a scheme or `/v1/`) all as `docker.io`.
pub fn registry_key(registry: &str) -> String {
    let r = registry.trim();
    let r = r.strip_prefix("https://").or_else(|| r.strip_prefix("http://")).unwrap_or(r);
    let r = r.split('/').next().unwrap_or(r).to_ascii_lowercase();
    match r.as_str() {
        "index.docker.io" | "registry-1.docker.io" => crate::model::reference::DEFAULT_REGISTRY.to_string(),
        _ => r,
    }
}

/// Keys a registry may be stored under in auth files.
fn keys_for(registry: &str) -> Vec<String> {
    if registry == "docker.io" {
        return vec![
            "https://index.docker.io/v1/".into(),
            "index.docker.io".into(),
            "docker.io".into(),
            "registry-1.docker.io".into(),
        ];
    }
    vec![
        registry.to_string(),
        format!("https://{registry}"),
        format!("http://{registry}"),
        format!("https://{registry}/v1/"),
        format!("https://{registry}/v2/"),
    ]
}

/// Auth files consulted, most specific first.
pub fn auth_files() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(p) = std::env::var_os("REGISTRY_AUTH_FILE") {
        v.push(PathBuf::from(p));
    }
    if let Some(rt) = std::env::var_os("XDG_RUNTIME_DIR") {
        v.push(PathBuf::from(rt).join("containers/auth.json"));
    }
    v.push(docker_config_path());
    v
}

/// `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`.
pub fn docker_config_path() -> PathBuf {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG") {
        return PathBuf::from(d).join("config.json");
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/"));
    home.join(".docker/config.json")
}

fn read_json(path: &Path) -> Option<Value> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Find credentials for `registry` (blocking: may run a credential helper).
pub fn lookup_blocking(registry: &str) -> Result<Option<Credential>> {
    for file in auth_files() {
        let Some(cfg) = read_json(&file) else {
            continue;
        };
        let keys = keys_for(registry);
        if let Some(helpers) = cfg.get("credHelpers").and_then(Value::as_object) {
            for k in &keys {
                if let Some(h) = helpers.get(k).and_then(Value::as_str) {
                    return run_helper(h, k);
                }
            }
        }
        if let Some(auths) = cfg.get("auths").and_then(Value::as_object) {
            for k in &keys {
                if let Some(entry) = auths.get(k) {
                    if let Some(c) = parse_entry(entry, registry)? {
                        return Ok(Some(c));
                    }
                }
            }
        }
        if let Some(store) = cfg.get("credsStore").and_then(Value::as_str) {
            if let Some(c) = run_helper(store, &keys[0])? {
                return Ok(Some(c));
            }
        }
    }
    Ok(None)
}

fn parse_entry(entry: &Value, registry: &str) -> Result<Option<Credential>> {
    let bad = |why: &str| Error::Auth {
        registry: registry.to_string(),
        reason: format!("stored credentials unreadable: {why}"),
    };
    if let Some(tok) = entry.get("identitytoken").and_then(Value::as_str).filter(|t| !t.is_empty()) {
        let username = entry.get("username").and_then(Value::as_str).unwrap_or("<token>").to_string();
        return Ok(Some(Credential::IdentityToken { username, token: tok.to_string() }));
    }
    if let Some(auth) = entry.get("auth").and_then(Value::as_str).filter(|a| !a.is_empty()) {
        let raw =
            base64::engine::general_purpose::STANDARD.decode(auth.trim()).map_err(|_| bad("auth is not base64"))?;
        let s = String::from_utf8(raw).map_err(|_| bad("auth is not UTF-8"))?;
        let (u, p) = s.split_once(':').ok_or_else(|| bad("auth is not user:password"))?;
        return Ok(Some(Credential::Basic { username: u.to_string(), password: p.to_string() }));
    }
    if let (Some(u), Some(p)) =
        (entry.get("username").and_then(Value::as_str), entry.get("password").and_then(Value::as_str))
    {
        return Ok(Some(Credential::Basic { username: u.to_string(), password: p.to_string() }));
    }
    Ok(None)
}

fn run_helper(helper: &str, server: &str) -> Result<Option<Credential>> {
    let prog = format!("docker-credential-{helper}");
    let err =
        |why: String| Error::Auth { registry: server.to_string(), reason: format!("credential helper {prog}: {why}") };
    let mut child = Command::new(&prog)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| err(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write;
        let _ = stdin.write_all(server.as_bytes());
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if std::time::Instant::now() > deadline => {
                let _ = child.kill();
                return Err(err("timed out after 30s".into()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(err(e.to_string())),
        }
    }
    let out = child.wait_with_output().map_err(|e| err(e.to_string()))?;
    if !out.status.success() {
        // "credentials not found in native keychain" is not an error for us.
        return Ok(None);
    }
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|_| err("output is not JSON".into()))?;
    let user = v.get("Username").and_then(Value::as_str).unwrap_or_default().to_string();
    let secret = v.get("Secret").and_then(Value::as_str).unwrap_or_default().to_string();
    if secret.is_empty() {
        return Ok(None);
    }
    if user == "<token>" {
        return Ok(Some(Credential::IdentityToken { username: user, token: secret }));
    }
    Ok(Some(Credential::Basic { username: user, password: secret }))
}

/// The file `login`/`logout` write: `REGISTRY_AUTH_FILE` when set, else docker's config.json.
pub fn login_file() -> PathBuf {
    std::env::var_os("REGISTRY_AUTH_FILE").map(PathBuf::from).unwrap_or_else(docker_config_path)
}

/// Store `user:password` for `registry` in the login file (atomic write, mode 0600).
pub fn store_blocking(registry: &str, username: &str, password: &str) -> Result<PathBuf> {
    let path = login_file();
    let mut cfg = read_json(&path).unwrap_or_else(|| Value::Object(Map::new()));
    let obj = cfg
        .as_object_mut()
        .ok_or_else(|| Error::malformed("auth file", path.display().to_string(), "not a JSON object"))?;
    let auths = obj.entry("auths").or_insert_with(|| Value::Object(Map::new()));
    let auths = auths
        .as_object_mut()
        .ok_or_else(|| Error::malformed("auth file", path.display().to_string(), "auths is not an object"))?;
    let key = keys_for(registry).remove(0);
    let enc = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    let mut entry = Map::new();
    entry.insert("auth".into(), Value::from(enc));
    auths.insert(key, Value::Object(entry));
    write_private(&path, &cfg)?;
    Ok(path)
}

/// Remove stored credentials for `registry`; returns whether an entry was removed.
pub fn remove_blocking(registry: &str) -> Result<bool> {
    let path = login_file();
    let Some(mut cfg) = read_json(&path) else {
        return Ok(false);
    };
    let mut removed = false;
    if let Some(auths) = cfg.get_mut("auths").and_then(Value::as_object_mut) {
        for k in keys_for(registry) {
            removed |= auths.remove(&k).is_some();
        }
    }
    if removed {
        write_private(&path, &cfg)?;
    }
    Ok(removed)
}

fn write_private(path: &Path, cfg: &Value) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).at(dir)?;
    let mut tmp = tempfile::Builder::new().prefix(".auth-").tempfile_in(dir).at(dir)?;
    tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o600)).at(tmp.path())?;
    let bytes = serde_json::to_vec_pretty(cfg).map_err(|e| Error::Other(e.to_string()))?;
    tmp.write_all(&bytes).at(tmp.path())?;
    tmp.as_file().sync_all().at(tmp.path())?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_secret() {
        let c = Credential::Basic { username: "u".into(), password: "hunter2".into() };
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn parses_auth_entry() {
        let v: Value = serde_json::json!({"auth": "dXNlcjpwYTpzcw=="});
        match parse_entry(&v, "r").unwrap() {
            Some(Credential::Basic { username, password }) => {
                assert_eq!((username.as_str(), password.as_str()), ("user", "pa:ss"))
            }
            _ => panic!("expected basic"),
        }
    }
}
