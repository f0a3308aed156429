//! Registry credentials: docker `config.json` (`DOCKER_CONFIG`), podman `auth.json`
//! (`REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`) and credential helpers
//! (`docker-credential-<name>`). Secrets are never logged or put into error messages.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Map, Value};

use crate::error::{Error, IoContext, Result};

/// A credential for one registry.
#[derive(Clone)]
pub enum Credential {
    /// A user name and password (HTTP basic, or the token server's basic login).
    Basic {
        /// The user name.
        username: String,
        /// The password; never printed (see the `Debug` impl).
        password: String,
    },
    /// An OAuth2 refresh token (docker "identitytoken").
    IdentityToken {
        /// The user name stored beside the token (often `<token>`).
        username: String,
        /// The refresh token; never printed.
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
        if let Some(c) = stored_credential(&cfg, registry)? {
            return Ok(Some(c));
        }
        if let Some(store) = cfg.get("credsStore").and_then(Value::as_str) {
            if let Some(c) = run_helper(store, &keys[0])? {
                return Ok(Some(c));
            }
        }
    }
    Ok(None)
}

/// The credential a parsed config.json (or auth.json) keeps inline for `registry` under
/// `auths`, if any; no helper is run. An entry that is there but unreadable is an error.
pub fn stored_credential(config: &Value, registry: &str) -> Result<Option<Credential>> {
    if let Some(auths) = config.get("auths").and_then(Value::as_object) {
        for k in &keys_for(registry) {
            if let Some(entry) = auths.get(k) {
                if let Some(c) = parse_entry(entry, registry)? {
                    return Ok(Some(c));
                }
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

/// How long a credential helper may take before it and its children are killed.
const HELPER_TIMEOUT: Duration = Duration::from_secs(30);

/// Bytes of a helper's stdout or stderr kept (a credential is a few KiB); the rest is read
/// and dropped, so a chatty helper neither stalls on a full pipe nor fills memory.
const MAX_HELPER_OUTPUT: usize = 1 << 20;

/// What a credential helper run ended with.
struct HelperOutput {
    success: bool,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// Read `r` to its end, keeping at most [`MAX_HELPER_OUTPUT`] bytes.
fn read_bounded(r: Option<impl Read>) -> Vec<u8> {
    let mut kept = Vec::new();
    let Some(mut r) = r else { return kept };
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf) {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                let room = MAX_HELPER_OUTPUT - kept.len();
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

/// Kill the process group `pgid` (a helper and the children it started).
fn kill_group(pgid: u32) {
    if let Ok(pgid) = i32::try_from(pgid) {
        if pgid > 0 {
            // SAFETY: kill(2) with a negative pid signals that process group; no memory involved.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }
}

/// Run `docker-credential-<helper> <action>` with `input` on stdin. Its stdout and stderr are
/// read while it runs (a helper printing more than a pipe holds must not stall until the
/// timeout); it runs in its own process group, and when it takes longer than
/// [`HELPER_TIMEOUT`] the whole group is killed, children included.
fn run_helper_action(helper: &str, action: &str, input: &[u8], registry: &str) -> Result<HelperOutput> {
    let prog = format!("docker-credential-{helper}");
    let err = |why: String| Error::Auth {
        registry: registry.to_string(),
        reason: format!("credential helper {prog}: {why}"),
    };
    let mut child = Command::new(&prog)
        .arg(action)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| err(e.to_string()))?;
    let pgid = child.id();
    let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let input = input.to_vec();
    std::thread::spawn(move || {
        if let Some(mut stdin) = stdin {
            let _ = stdin.write_all(&input);
        }
    });
    let (tx_out, rx_out) = std::sync::mpsc::channel();
    let (tx_err, rx_err) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx_out.send(read_bounded(stdout)));
    std::thread::spawn(move || tx_err.send(read_bounded(stderr)));
    let deadline = Instant::now() + HELPER_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() > deadline => {
                kill_group(pgid);
                let _ = child.wait();
                return Err(err(format!("timed out after {HELPER_TIMEOUT:?}; killed it and its children")));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => {
                kill_group(pgid);
                let _ = child.wait();
                return Err(err(e.to_string()));
            }
        }
    };
    // The pipes close when the helper and whatever it left running are gone; children still
    // holding them after the deadline are killed with the group.
    let rest = |rx: &std::sync::mpsc::Receiver<Vec<u8>>| {
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(100));
        rx.recv_timeout(left).ok()
    };
    let stdout = match rest(&rx_out) {
        Some(o) => o,
        None => {
            kill_group(pgid);
            rx_out.recv_timeout(Duration::from_secs(1)).unwrap_or_default()
        }
    };
    let stderr = rest(&rx_err).unwrap_or_default();
    Ok(HelperOutput { success: status.success(), stdout, stderr })
}

fn run_helper(helper: &str, server: &str) -> Result<Option<Credential>> {
    let out = run_helper_action(helper, "get", server.as_bytes(), server)?;
    if !out.success {
        // "credentials not found in native keychain" is not an error for us.
        return Ok(None);
    }
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|_| Error::Auth {
        registry: server.to_string(),
        reason: format!("credential helper docker-credential-{helper}: output is not JSON"),
    })?;
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

/// The file `path` names once its symlinks are followed (docker writes through a symlinked
/// config.json instead of replacing the link); `path` itself when it is not a link.
fn resolve_links(path: &Path) -> Result<PathBuf> {
    let mut p = path.to_path_buf();
    for _ in 0..40 {
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let t = std::fs::read_link(&p).at(&p)?;
                p = if t.is_absolute() { t } else { p.parent().unwrap_or(Path::new(".")).join(t) };
            }
            _ => return Ok(p),
        }
    }
    Err(Error::malformed("auth file", path.display().to_string(), "too many levels of symbolic links"))
}

/// Hold an exclusive lock on `<file>.lock` (next to the auth file) for a read-modify-write,
/// so that concurrent logins do not lose each other's entries.
fn lock_auth_file(file: &Path) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = file.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).at(dir)?;
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    let lock_path = dir.join(name);
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&lock_path)
        .at(&lock_path)?;
    f.lock().at(&lock_path)?;
    Ok(f)
}

/// The auth file as a JSON object: empty when it does not exist (or is empty); an
/// unreadable or invalid file is an error naming it, never a reason to start afresh and
/// drop the other registries' entries.
fn read_auth_file(path: &Path) -> Result<Map<String, Value>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Map::new()),
        Err(e) => return Err(Error::io(path, e)),
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(Error::malformed("auth file", path.display().to_string(), "not a JSON object")),
        Err(e) => Err(Error::malformed("auth file", path.display().to_string(), e)),
    }
}

/// The credential helper configured for `registry` in `cfg`: `credHelpers` for one of its
/// keys, else `credsStore`.
fn configured_helper(cfg: &Map<String, Value>, registry: &str) -> Option<String> {
    if let Some(helpers) = cfg.get("credHelpers").and_then(Value::as_object) {
        for k in keys_for(registry) {
            if let Some(h) = helpers.get(&k).and_then(Value::as_str).filter(|h| !h.is_empty()) {
                return Some(h.to_string());
            }
        }
    }
    cfg.get("credsStore").and_then(Value::as_str).filter(|h| !h.is_empty()).map(str::to_string)
}

/// Store `user:password` for `registry`: through the configured credential helper
/// (`credHelpers`/`credsStore`, as docker does; the file then only gets an empty entry), else
/// base64 in the login file. The file is locked for the read-modify-write, written through
/// a symlink, atomically (temp file in its directory, fsync, rename), keeping its mode
/// (0600 for a new file). Returns the login file's path.
pub fn store_blocking(registry: &str, username: &str, password: &str) -> Result<PathBuf> {
    let path = login_file();
    let target = resolve_links(&path)?;
    let _lock = lock_auth_file(&target)?;
    let mut cfg = read_auth_file(&target)?;
    let key = keys_for(registry).remove(0);
    let helper = configured_helper(&cfg, registry);
    if let Some(h) = &helper {
        let input = serde_json::json!({"ServerURL": key, "Username": username, "Secret": password}).to_string();
        let out = run_helper_action(h, "store", input.as_bytes(), registry)?;
        if !out.success {
            return Err(Error::Auth {
                registry: registry.to_string(),
                reason: format!(
                    "credential helper docker-credential-{h} could not store the credentials: {}",
                    crate::error::printable(String::from_utf8_lossy(&out.stderr).trim())
                ),
            });
        }
    }
    let auths = cfg.entry("auths").or_insert_with(|| Value::Object(Map::new()));
    let auths = auths
        .as_object_mut()
        .ok_or_else(|| Error::malformed("auth file", target.display().to_string(), "auths is not an object"))?;
    for k in keys_for(registry) {
        auths.remove(&k);
    }
    let mut entry = Map::new();
    if helper.is_none() {
        let enc = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
        entry.insert("auth".into(), Value::from(enc));
    }
    auths.insert(key, Value::Object(entry));
    write_atomic(&target, &Value::Object(cfg))?;
    Ok(path)
}

/// Remove stored credentials for `registry` (from the file, and through the configured
/// helper); returns whether any were removed. Same locking and writing as [`store_blocking`].
pub fn remove_blocking(registry: &str) -> Result<bool> {
    let path = login_file();
    let target = resolve_links(&path)?;
    if !target.exists() {
        return Ok(false);
    }
    let _lock = lock_auth_file(&target)?;
    let mut cfg = read_auth_file(&target)?;
    let mut removed = false;
    if let Some(h) = configured_helper(&cfg, registry) {
        let key = keys_for(registry).remove(0);
        removed |= run_helper_action(&h, "erase", key.as_bytes(), registry)?.success;
    }
    let mut changed = false;
    if let Some(auths) = cfg.get_mut("auths").and_then(Value::as_object_mut) {
        for k in keys_for(registry) {
            changed |= auths.remove(&k).is_some();
        }
    }
    if changed {
        write_atomic(&target, &Value::Object(cfg))?;
    }
    Ok(removed || changed)
}

/// Replace `path` by `cfg` atomically: a temp file in the same directory, fsynced, renamed
/// over it, the directory fsynced. The file keeps its mode (a new one gets 0600).
fn write_atomic(path: &Path, cfg: &Value) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).at(dir)?;
    let mode = match std::fs::metadata(path) {
        Ok(m) => m.permissions().mode() & 0o7777,
        Err(_) => 0o600,
    };
    let mut tmp = tempfile::Builder::new().prefix(".auth-").tempfile_in(dir).at(dir)?;
    tmp.as_file().set_permissions(std::fs::Permissions::from_mode(mode)).at(tmp.path())?;
    let bytes = serde_json::to_vec_pretty(cfg).map_err(|e| Error::serialize("credentials file", e))?;
    tmp.write_all(&bytes).at(tmp.path())?;
    tmp.as_file().sync_all().at(tmp.path())?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
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
