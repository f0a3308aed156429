//! RUN in an OCI runtime: the stage's unpacked layers as overlay lower layers, a fresh
//! upper directory, a runtime spec with the stage's env, user, workdir and shell, host
//! networking and `/proc`, `/dev`, `/sys`; `runc run` (or crun), then the upper directory
//! becomes one layer (whiteouts → `.wh.` entries, mtimes clamped to SOURCE_DATE_EPOCH).
//!
//! The spec sets no rlimits and no cgroup resources: this sandbox (and many CI runners)
//! lacks CAP_SYS_RESOURCE, and podman's default `RLIMIT_NOFILE`/`RLIMIT_NPROC` made its
//! containers fail here with "setrlimit: operation not permitted".

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::json;

use super::fs::{
    cache_root, diff_snapshot, layer_dir, lookup, materialize, mount_overlay, resolve_in_dir, snapshot, upper_to_items,
    Snapshotter,
};
use super::parse::{Args, Instruction};
use super::stage::{blocking, find_stage, hash, join_abs, mount_stage, truncate, Ctx, Plan, Stage, DEFAULT_PATH};
use super::user::{resolve_user, supplementary_groups};
use super::words::word;
use super::{OutputStream, RunOutput, RUN_OUTPUT_LINE_MAX};
use crate::error::{Error, IoContext, Result};
use crate::layer::{build_items_layer_blocking, normalize_target};
use crate::model::descriptor::Platform;
use crate::transport::layout::Layout;

/// Capabilities of a RUN process (docker's default set).
const CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// The runtime binary: `--runtime`, else runc or crun on PATH.
pub fn find_runtime(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        if p.components().count() > 1 {
            return p.is_file().then(|| p.to_path_buf());
        }
        return which(p.to_str()?);
    }
    which("runc").or_else(|| which("crun"))
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Refuse, before anything is built, what RUN cannot do here: no root, no runtime, or a
/// foreign architecture without binfmt.
pub fn check_can_run(runtime: Option<&Path>, platform: &Platform) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(Error::Unsupported(
            "RUN needs root (overlay mounts and an OCI runtime); run hoist build as root or drop the RUN steps".into(),
        ));
    }
    if find_runtime(runtime).is_none() {
        return Err(Error::Unsupported(format!(
            "RUN needs an OCI runtime: {} not found (install runc or crun, or pass --runtime)",
            runtime.map_or("runc/crun".to_string(), |p| p.display().to_string())
        )));
    }
    let host = Platform::host();
    if platform.architecture != host.architecture {
        let qemu = match platform.architecture.as_str() {
            "amd64" => "x86_64",
            "arm64" => "aarch64",
            "386" => "i386",
            "ppc64le" => "ppc64le",
            other => other,
        };
        let binfmt = Path::new("/proc/sys/fs/binfmt_misc").join(format!("qemu-{qemu}"));
        if !binfmt.exists() {
            return Err(Error::Unsupported(format!(
                "RUN for {platform} on a {host} host needs binfmt_misc with qemu-{qemu}, which is not registered"
            )));
        }
    }
    Ok(())
}

/// One `--mount` of RUN, as BuildKit's frontend reads it.
#[derive(Debug)]
pub(crate) enum RunMount {
    Cache {
        target: String,
        id: String,
        /// uid, gid, mode of a new cache (when `from=` is given, only those set)
        owner: (Option<u32>, Option<u32>),
        mode: Option<u32>,
        /// a stage, named context or image whose `source` seeds a new cache
        from: Option<String>,
        source: String,
        ro: bool,
        sharing: Sharing,
    },
    Bind {
        target: String,
        source: String,
        from: Option<String>,
        rw: bool,
    },
    Secret {
        target: Option<String>,
        id: String,
        required: bool,
        env: Option<String>,
        owner: (u32, u32),
        mode: u32,
    },
    Tmpfs {
        target: String,
        size: Option<u64>,
    },
    Ssh {
        target: Option<String>,
        id: String,
        required: bool,
        owner: (u32, u32),
        mode: u32,
    },
}

/// `sharing=` of a cache mount (BuildKit's): `shared` by concurrent steps, `private` (a busy
/// cache gives the step a fresh one), `locked` (the step waits for it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sharing {
    Shared,
    Private,
    Locked,
}

/// Every key BuildKit's `--mount` takes.
const MOUNT_KEYS: &[&str] = &[
    "type",
    "from",
    "source",
    "src",
    "target",
    "dst",
    "destination",
    "readonly",
    "ro",
    "readwrite",
    "rw",
    "id",
    "sharing",
    "required",
    "size",
    "mode",
    "uid",
    "gid",
    "env",
];

impl RunMount {
    /// The stage, named context or image this mount reads (bind and cache mounts).
    pub(crate) fn from(&self) -> Option<&str> {
        match self {
            RunMount::Cache { from, .. } | RunMount::Bind { from, .. } => from.as_deref(),
            _ => None,
        }
    }
}

fn parse_bool(k: &str, v: &str) -> std::result::Result<bool, String> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(format!("invalid value for {k}: {v}")),
    }
}

/// A size as Docker's `RAMInBytes` reads it: a number with an optional binary unit
/// (`b`, `k`, `m`, `g`, `t`, `p`, each with an optional `b` or `ib`).
fn ram_in_bytes(s: &str) -> Option<u64> {
    let t = s.trim().to_ascii_lowercase();
    let num_end = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (n, unit) = t.split_at(num_end);
    let n: f64 = n.parse().ok()?;
    let unit = unit.trim();
    let unit = unit.strip_suffix("ib").or_else(|| unit.strip_suffix('b').filter(|u| !u.is_empty())).unwrap_or(unit);
    let mult: u64 = match unit {
        "" | "b" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        "p" => 1 << 50,
        _ => return None,
    };
    (n >= 0.0).then_some((n * mult as f64) as u64)
}

pub(crate) fn parse_mount(s: &str) -> std::result::Result<RunMount, String> {
    let mut kv: BTreeMap<String, String> = BTreeMap::new();
    let mut ro: Option<bool> = None;
    let mut required = false;
    let kind_of = |kv: &BTreeMap<String, String>| kv.get("type").cloned().unwrap_or_else(|| "bind".into());
    for part in s.split(',') {
        let (k, v) = match part.split_once('=') {
            Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v.trim().to_string())),
            None => (part.trim().to_ascii_lowercase(), None),
        };
        match (k.as_str(), v) {
            ("readonly" | "ro", v) => ro = Some(v.as_deref().map_or(Ok(true), |v| parse_bool(&k, v))?),
            ("readwrite" | "rw", v) => ro = Some(!v.as_deref().map_or(Ok(true), |v| parse_bool(&k, v))?),
            ("required", v) => {
                let t = kind_of(&kv);
                if t != "secret" && t != "ssh" {
                    return Err(format!("unexpected key '{k}' for mount type '{t}'"));
                }
                required = v.as_deref().map_or(Ok(true), |v| parse_bool(&k, v))?;
            }
            (_, None) => return Err(format!("invalid field '{part}' must be a key=value pair")),
            (k, Some(_)) if !MOUNT_KEYS.contains(&k) => return Err(format!("unexpected key '{k}' in '{part}'")),
            ("type", Some(v)) => {
                let v = v.to_ascii_lowercase();
                if !["bind", "cache", "tmpfs", "secret", "ssh"].contains(&v.as_str()) {
                    return Err(format!("unsupported mount type {v:?} (bind, cache, tmpfs, secret, ssh)"));
                }
                kv.insert(k, v);
            }
            (k, Some(v)) => {
                let k = match k {
                    "src" => "source",
                    "dst" | "destination" => "target",
                    k => k,
                };
                kv.insert(k.to_string(), v);
            }
        }
    }
    let kind = kind_of(&kv);
    let num = |k: &str, radix: u32| -> std::result::Result<Option<u32>, String> {
        kv.get(k).map_or(Ok(None), |v| {
            u32::from_str_radix(v, radix).map(Some).map_err(|_| format!("invalid value {v} for {k}"))
        })
    };
    let (uid, gid, mode) = (num("uid", 10)?, num("gid", 10)?, num("mode", 8)?);
    if kind == "bind" || kind == "tmpfs" {
        for (k, v) in [("mode", mode), ("uid", uid), ("gid", gid)] {
            if v.is_some() {
                return Err(format!("{k} not allowed for {kind:?} type mounts"));
            }
        }
    }
    if kv.contains_key("size") && kind != "tmpfs" {
        return Err(format!("unexpected key 'size' for mount type '{kind}'"));
    }
    let sharing = match kv.get("sharing").map(|s| s.to_ascii_lowercase()) {
        None => Sharing::Shared,
        Some(_) if kind != "cache" => return Err(format!("invalid cache sharing set for {kind} mount")),
        Some(s) => match s.as_str() {
            "shared" => Sharing::Shared,
            "private" => Sharing::Private,
            "locked" => Sharing::Locked,
            _ => return Err(format!("unsupported sharing value {s:?} (shared, private, locked)")),
        },
    };
    if kv.contains_key("env") && kind != "secret" {
        return Err(format!("unexpected key 'env' for mount type '{kind}'"));
    }
    let target = kv.get("target").cloned().filter(|t| !t.is_empty());
    let source = kv.get("source").cloned().unwrap_or_default();
    let from = kv.get("from").cloned().filter(|f| !f.is_empty());
    match kind.as_str() {
        "cache" => {
            let target = target.ok_or("a cache mount needs target=")?;
            Ok(RunMount::Cache {
                id: kv.get("id").cloned().filter(|i| !i.is_empty()).unwrap_or_else(|| target.clone()),
                target,
                owner: (uid, gid),
                mode,
                from,
                source,
                ro: ro.unwrap_or(false),
                sharing,
            })
        }
        "bind" => Ok(RunMount::Bind {
            target: target.ok_or("a bind mount needs target=")?,
            source,
            from,
            rw: ro == Some(false),
        }),
        "secret" => {
            if from.is_some() {
                return Err("secret mount should not have a from".into());
            }
            if !source.is_empty() && kv.contains_key("id") {
                return Err("both source and id can't be set".into());
            }
            // BuildKit: the id is `id`, else `source`, else the target's base name
            let id = kv.get("id").cloned().filter(|i| !i.is_empty()).or(Some(source).filter(|s| !s.is_empty()));
            let id = id
                .or_else(|| target.as_ref().and_then(|t| Path::new(t).file_name()).map(|n| n.to_string_lossy().into()))
                .ok_or("invalid secret mount. one of source, target required")?;
            Ok(RunMount::Secret {
                target,
                id,
                required,
                env: kv.get("env").cloned().filter(|e| !e.is_empty()),
                owner: (uid.unwrap_or(0), gid.unwrap_or(0)),
                mode: mode.unwrap_or(0o400),
            })
        }
        "ssh" => {
            if !source.is_empty() {
                return Err("ssh does not support source".into());
            }
            Ok(RunMount::Ssh {
                target,
                id: kv.get("id").cloned().filter(|i| !i.is_empty()).unwrap_or_else(|| "default".into()),
                required,
                owner: (uid.unwrap_or(0), gid.unwrap_or(0)),
                mode: mode.unwrap_or(0o600),
            })
        }
        _ => Ok(RunMount::Tmpfs {
            target: target.ok_or("a tmpfs mount needs target=")?,
            size: match kv.get("size") {
                Some(v) => Some(ram_in_bytes(v).ok_or_else(|| format!("invalid value for size: {v}"))?),
                None => None,
            },
        }),
    }
}

/// The `--mount`s of a RUN, expanded in the stage's variables.
pub(crate) fn mounts_of(ctx: &Ctx<'_>, st: &Stage, ins: &Instruction) -> Result<Vec<RunMount>> {
    let vars = st.vars();
    let get = |n: &str| vars.get(n).cloned();
    ins.flag_all("mount")
        .map(|m| word(m, &get, ctx.df.escape).map_err(|e| e.to_string()).and_then(|m| parse_mount(&m)))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| ctx_err(ctx, ins, e))
}

/// Execute one RUN instruction (or take it from the cache). `images` holds the images that
/// `--mount=from=` names (neither a stage nor a named context), resolved by the caller.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run_step(
    ctx: &mut Ctx<'_>,
    plan: &Plan,
    s: usize,
    st: &mut Stage,
    ins: &Instruction,
    done: &BTreeMap<usize, Stage>,
    images: &BTreeMap<String, Stage>,
    label: &str,
) -> Result<()> {
    ins.check_flags(&["mount", "network", "security"], &ctx.file)?;
    // --network=none: a fresh network namespace (only a loopback interface); default and
    // host: the host's network.
    let net_none = match ins.flag("network") {
        None | Some("default") | Some("host") => false,
        Some("none") => true,
        Some(n) => return Err(ctx_err(ctx, ins, format!("RUN --network={n}: expected default, none or host"))),
    };
    match ins.flag("security") {
        None | Some("sandbox") => {}
        Some("insecure") => {
            return Err(ctx_err(
                ctx,
                ins,
                "RUN --security=insecure is not supported: RUN steps get docker's default capabilities only",
            ))
        }
        Some(s) => return Err(ctx_err(ctx, ins, format!("RUN --security={s}: expected sandbox or insecure"))),
    }
    let mounts = mounts_of(ctx, st, ins)?;
    // `RUN <<EOF` whose script starts with `#!` runs as a file, by that interpreter
    // (BuildKit mounts it at /dev/pipes/NAME).
    let shebang = match (&ins.args, ins.heredocs.as_slice()) {
        (Args::Shell(t), [h]) if h.content.starts_with("#!") && heredoc_script(t, ins) == h.content => {
            // not expanded (BuildKit ignores the option for a script file)
            Some((format!("/dev/pipes/{}", h.name), h.content.clone()))
        }
        _ => None,
    };
    let argv: Vec<String> = match (&ins.args, &shebang) {
        (_, Some((path, _))) => vec![path.clone()],
        (Args::Exec(v), _) => v.clone(),
        (Args::Shell(t), _) => {
            let script = heredoc_script(t, ins);
            st.shell.iter().cloned().chain([script]).collect()
        }
    };
    // Environment: the config's ENV, then the stage's ARGs that ENV does not set.
    let mut env: Vec<String> = st.config.config.env.clone();
    for (k, v) in &st.args {
        if let Some(v) = v {
            if !env.iter().any(|e| e.split_once('=').map_or(e.as_str(), |(n, _)| n) == k) {
                env.push(format!("{k}={v}"));
            }
        }
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, format!("PATH={DEFAULT_PATH}"));
    }
    let user = st.config.config.user.clone().unwrap_or_default();
    let cwd = st.workdir();
    // `type=ssh`: sockets at /run/buildkit/ssh_agent.N unless a target is given, and
    // SSH_AUTH_SOCK the first of them unless ENV sets it (BuildKit).
    let ssh_targets: Vec<String> = mounts
        .iter()
        .filter_map(|m| match m {
            RunMount::Ssh { target, .. } => Some(target.clone()),
            _ => None,
        })
        .enumerate()
        .map(|(i, t)| t.unwrap_or_else(|| format!("/run/buildkit/ssh_agent.{i}")))
        .collect();
    if let Some(first) = ssh_targets.first() {
        if !env.iter().any(|e| e.starts_with("SSH_AUTH_SOCK=")) {
            env.push(format!("SSH_AUTH_SOCK={first}"));
        }
    }
    // A mount from a stage, named context or image depends on its content: its key goes in.
    let mut mounts_desc = format!("{mounts:?} network-none={net_none}");
    let mut from_keys: BTreeMap<String, String> = BTreeMap::new();
    for m in &mounts {
        match (m, m.from()) {
            (_, Some(f)) => {
                let k = if let Some(o) = find_stage(plan, done, f, s, true) {
                    o.key.clone()
                } else if let Some(n) = ctx.named_dirs.get(f) {
                    tree_digest(&n.dir)
                } else if let Some(o) = images.get(f) {
                    o.key.clone()
                } else {
                    return Err(ctx_err(ctx, ins, format!("--mount from={f}: no such stage, context or image")));
                };
                mounts_desc.push_str(&k);
                from_keys.insert(f.to_string(), k);
            }
            // ... and one from the context on the content bound
            (RunMount::Bind { source, .. }, None) => {
                let rel = resolve_in_dir(&ctx.context, &normalize_target(&join_abs("/", source))?, true)
                    .map_err(|e| ctx_err(ctx, ins, format!("--mount source={source}: {e}")))?;
                mounts_desc.push_str(&tree_digest(&ctx.context.join(rel)));
            }
            _ => {}
        }
    }
    let by = format!("RUN {}", ins.text());
    let key = hash(&[&st.key, &by, &argv.join("\0"), &env.join("\0"), &user, &cwd, &mounts_desc]);
    if let Some(c) = ctx.cached_layer(&key).await? {
        ctx.cached += 1;
        ctx.log.line(&format!("  {} CACHED", truncate(&by)));
        st.key = key;
        let created = ctx.created.clone();
        match c {
            Some(b) => st.push_layer(&b, &created, by),
            None => st.push_empty(&created, by),
        }
        return Ok(());
    }
    ctx.log.line(&format!("[{label}] {}", truncate(&by)));
    ctx.ensure_layers(&st.layers).await?;
    // Sources from other stages and images are mounted for the duration of the step.
    let mut stage_mounts = Vec::new();
    // target, host source, rw, mount point removed after the step
    let mut binds: Vec<(String, PathBuf, bool, bool)> = Vec::new();
    let mut tmpfs: Vec<(String, Option<u64>)> = Vec::new();
    let cache_mounts = cache_root(ctx.layout).join("cache-mounts");
    // `rw` bind mounts get a throwaway copy: writes never reach the context or the stage.
    let mut rw_copies: Option<tempfile::TempDir> = None;
    let runs = cache_root(ctx.layout).join("runs");
    let scratch = |rw: &mut Option<tempfile::TempDir>| -> Result<PathBuf> {
        if rw.is_none() {
            fs::create_dir_all(&runs).at(&runs)?;
            *rw = Some(tempfile::Builder::new().prefix("rw").tempdir_in(&runs).at(&runs)?);
        }
        Ok(rw.as_ref().expect("made above").path().to_path_buf())
    };
    // Secret files (a copy with the mount's owner and mode, in memory where /dev/shm is),
    // the secrets passed as environment variables, the agent proxies and the cache locks.
    let mut secret_files: Option<tempfile::TempDir> = None;
    let mut secret_env: Vec<String> = Vec::new();
    let mut agents: Vec<super::agent::AgentProxy> = Vec::new();
    let mut locks: Vec<(PathBuf, fs::File)> = Vec::new();
    let mut ssh_n = 0;
    for (i, m) in mounts.iter().enumerate() {
        match m {
            RunMount::Cache { target, id, owner, mode, from, source, ro, sharing } => {
                let dir = match from {
                    None => {
                        let dir = cache_mounts.join(hash(&[id]));
                        if !dir.is_dir() {
                            // a new cache directory gets the mount's uid, gid and mode (BuildKit)
                            fs::create_dir_all(&cache_mounts).at(&cache_mounts)?;
                            let tmp =
                                tempfile::Builder::new().prefix(".new-").tempdir_in(&cache_mounts).at(&cache_mounts)?;
                            let made = tmp.keep();
                            set_owner_mode(
                                &made,
                                (owner.0.or(Some(0)), owner.1.or(Some(0))),
                                Some(mode.unwrap_or(0o755)),
                            )?;
                            if fs::rename(&made, &dir).is_err() {
                                let _ = fs::remove_dir(&made);
                            }
                        }
                        dir
                    }
                    // `from=`: a new cache starts as a copy of `source` in that stage, context
                    // or image; one cache per id and content of what seeds it (BuildKit).
                    Some(f) => {
                        let src_rel = normalize_target(&join_abs("/", source))?;
                        let dir = cache_mounts.join(hash(&[id, "from", &from_keys[f.as_str()], &src_rel]));
                        if !dir.is_dir() {
                            let base = mount_from(ctx, plan, done, images, s, f, &mut stage_mounts).await?;
                            let rel = resolve_in_dir(&base, &src_rel, true)
                                .map_err(|e| ctx_err(ctx, ins, format!("--mount from={f},source={source}: {e}")))?;
                            let src = if rel.is_empty() { base } else { base.join(rel) };
                            if !src.symlink_metadata().is_ok_and(|m| m.is_dir()) {
                                return Err(ctx_err(
                                    ctx,
                                    ins,
                                    format!("--mount type=cache,from={f},source={source}: not a directory there"),
                                ));
                            }
                            fs::create_dir_all(&cache_mounts).at(&cache_mounts)?;
                            let tmp =
                                tempfile::Builder::new().prefix(".new-").tempdir_in(&cache_mounts).at(&cache_mounts)?;
                            let seeded = tmp.path().join("d");
                            let (s2, owner, mode) = (seeded.clone(), *owner, *mode);
                            blocking(move || {
                                throwaway_copy(&src, &s2)?;
                                set_owner_mode(&s2, owner, mode)
                            })
                            .await?;
                            if let Err(e) = fs::rename(&seeded, &dir) {
                                // another build made it first: it is there
                                if !dir.is_dir() {
                                    return Err(Error::io(&dir, e));
                                }
                            }
                        }
                        dir
                    }
                };
                let dir = match lock_cache(&dir, *sharing, &mut locks).await? {
                    true => dir,
                    // a private cache in use: this step gets a fresh, empty one
                    false => {
                        let d = scratch(&mut rw_copies)?.join(format!("cache{i}"));
                        fs::create_dir(&d).at(&d)?;
                        set_owner_mode(&d, (owner.0.or(Some(0)), owner.1.or(Some(0))), Some(mode.unwrap_or(0o755)))?;
                        d
                    }
                };
                binds.push((join_abs(&cwd, target), dir, !*ro, false));
            }
            RunMount::Bind { target, source, from, rw } => {
                let base = match from {
                    None => ctx.context.clone(),
                    Some(f) => mount_from(ctx, plan, done, images, s, f, &mut stage_mounts).await?,
                };
                // symlinks on the way resolve inside the context or stage, never on the host
                let rel = resolve_in_dir(&base, &normalize_target(&join_abs("/", source))?, true)
                    .map_err(|e| ctx_err(ctx, ins, format!("--mount source={source}: {e}")))?;
                let src = if rel.is_empty() { base } else { base.join(rel) };
                if src.symlink_metadata().is_err() {
                    return Err(ctx_err(ctx, ins, format!("--mount source={source}: not found")));
                }
                let src = if *rw {
                    let dst = scratch(&mut rw_copies)?.join(binds.len().to_string());
                    blocking(move || throwaway_copy(&src, &dst).map(|()| dst)).await?
                } else {
                    src
                };
                binds.push((join_abs(&cwd, target), src, *rw, false));
            }
            RunMount::Secret { target, id, required, env: as_env, owner, mode } => match ctx.opts.secrets.get(id) {
                Some(secret) => {
                    let v = secret.read(id)?;
                    if let Some(name) = as_env {
                        secret_env.push(format!("{name}={}", String::from_utf8_lossy(&v)));
                    }
                    // with env= and no target, only the variable (BuildKit)
                    if target.is_some() || as_env.is_none() {
                        let dest = target.clone().unwrap_or_else(|| {
                            let base = Path::new(id).file_name().map_or(id.clone(), |n| n.to_string_lossy().into());
                            format!("/run/secrets/{base}")
                        });
                        if secret_files.is_none() {
                            let shm = Path::new("/dev/shm");
                            let t = match shm.is_dir() {
                                true => tempfile::Builder::new().prefix("hoist-secret").tempdir_in(shm).ok(),
                                false => None,
                            };
                            secret_files = Some(match t {
                                Some(t) => t,
                                None => tempfile::Builder::new()
                                    .prefix("secret")
                                    .tempdir_in(scratch(&mut rw_copies)?)
                                    .at(&runs)?,
                            });
                        }
                        let f = secret_files.as_ref().expect("made above").path().join(i.to_string());
                        fs::write(&f, &v).at(&f)?;
                        set_owner_mode(&f, (Some(owner.0), Some(owner.1)), Some(*mode))?;
                        binds.push((join_abs(&cwd, &dest), f, false, true));
                    }
                }
                None if *required => {
                    return Err(ctx_err(
                        ctx,
                        ins,
                        format!("secret {id} is required: pass --secret id={id},src=FILE (or env=VAR)"),
                    ))
                }
                None => {}
            },
            RunMount::Tmpfs { target, size } => tmpfs.push((join_abs(&cwd, target), *size)),
            RunMount::Ssh { id, required, owner, mode, .. } => {
                let target = join_abs(&cwd, &ssh_targets[ssh_n]);
                ssh_n += 1;
                match ctx.opts.ssh.get(id) {
                    Some(sock) => {
                        let a = super::agent::AgentProxy::start(sock, *owner, *mode)
                            .map_err(|e| ctx_err(ctx, ins, format!("--mount type=ssh,id={id}: {e}")))?;
                        binds.push((target, a.path().to_path_buf(), true, true));
                        agents.push(a);
                    }
                    None if *required => {
                        return Err(ctx_err(
                            ctx,
                            ins,
                            format!("no SSH key {id:?} forwarded from the client: pass --ssh {id}[=SOCKET]"),
                        ))
                    }
                    // optional and not forwarded: no socket (BuildKit)
                    None => ctx.log.line(&format!("  --mount type=ssh,id={id}: no --ssh {id} given, no agent socket")),
                }
            }
        }
    }
    if let Some((path, content)) = &shebang {
        let p = scratch(&mut rw_copies)?.join("script");
        fs::write(&p, content).at(&p)?;
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).at(&p)?;
        binds.push((path.clone(), p, false, true));
    }
    // secrets as variables reach the process, not the step's key
    let run_env: Vec<String> = env.iter().cloned().chain(secret_env).collect();
    let layout = Layout::open(ctx.layout.root())?;
    let stc = st.clone();
    let runtime = find_runtime(ctx.opts.runtime.as_deref())
        .ok_or_else(|| Error::Unsupported("RUN needs an OCI runtime (runc or crun)".into()))?;
    let (epoch, compression) = (ctx.epoch.max(0) as u64, ctx.opts.compression);
    let (file, line) = (ctx.file.clone(), ins.line);
    let (label, by_step) = (label.to_string(), by.clone());
    let snapshotter = ctx.opts.snapshotter;
    let output = ctx.log.run_output();
    let blob = blocking(move || -> Result<(Option<crate::layer::LayerBlob>, bool)> {
        let dirs = stc.dirs_blocking(&layout)?;
        let (uid, gid) = if user.is_empty() {
            (0, 0)
        } else {
            resolve_user(&dirs, &user).map_err(|e| super::parse::err(&file, line, e))?
        };
        let groups = supplementary_groups(&dirs, if user.is_empty() { "0" } else { &user });
        let runs = cache_root(&layout).join("runs");
        fs::create_dir_all(&runs).at(&runs)?;
        let t = tempfile::Builder::new().prefix("r").tempdir_in(&runs).at(&runs)?;
        let (upper, work, merged, empty, bundle) =
            (t.path().join("u"), t.path().join("w"), t.path().join("m"), t.path().join("e"), t.path().join("b"));
        for d in [&upper, &work, &merged, &empty, &bundle] {
            fs::create_dir_all(d).at(d)?;
        }
        // Mount points the runtime creates for /proc, /dev, /sys and secrets are removed
        // after; those of cache, bind and tmpfs mounts stay in the layer, as in BuildKit.
        let mut targets: Vec<String> = ["/proc", "/dev", "/sys"].iter().map(|s| s.to_string()).collect();
        targets.extend(binds.iter().filter(|b| b.3).map(|b| b.0.clone()));
        let missing: Vec<String> = targets
            .iter()
            .flat_map(|t| {
                let rel = normalize_target(t).unwrap_or_default();
                let mut acc = Vec::new();
                let mut cur = String::new();
                for c in rel.split('/').filter(|c| !c.is_empty()) {
                    cur = if cur.is_empty() { c.to_string() } else { format!("{cur}/{c}") };
                    if lookup(&dirs, &cur).is_none() {
                        acc.push(cur.clone());
                    }
                }
                acc
            })
            .collect();
        let mounted = match snapshotter {
            Snapshotter::Copy => None,
            Snapshotter::Overlay => Some(mount_overlay(&dirs, &empty, Some((&upper, &work)), &merged)?),
            Snapshotter::Auto => mount_overlay(&dirs, &empty, Some((&upper, &work)), &merged).ok(),
        };
        // Without overlayfs: a copy of the layers, diffed against its own snapshot after.
        let before = match mounted {
            Some(_) => None,
            None => {
                materialize(&dirs, &merged)?;
                Some(snapshot(&merged)?)
            }
        };
        // VOLUME directories are not created (BuildKit; buildah and the legacy builder do).
        let mut spec = spec(&argv, &run_env, (uid, gid, &groups), &cwd, &merged, &binds, &tmpfs);
        if net_none {
            if let Some(ns) = spec["linux"]["namespaces"].as_array_mut() {
                ns.push(json!({"type": "network"}));
            }
        }
        let spec_path = bundle.join("config.json");
        fs::write(&spec_path, serde_json::to_vec_pretty(&spec).map_err(|e| Error::serialize("OCI runtime spec", e))?)
            .at(&spec_path)?;
        let state = t.path().join("state");
        let id =
            format!("hoist-{}", t.path().file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
        let mut cmd = Command::new(&runtime);
        cmd.arg("--root").arg(&state).args(["run", "--bundle"]).arg(&bundle).arg(&id).stdin(Stdio::null());
        let status = run_with_output(cmd, output).map_err(|e| Error::io(&runtime, e))?;
        if let Some(m) = mounted {
            m.unmount()?;
        }
        if !status.success() {
            // A failing command is a build failure (exit 1), named as BuildKit names it.
            let how = match (status.code(), std::os::unix::process::ExitStatusExt::signal(&status)) {
                (Some(c), _) => format!("exit code: {c}"),
                (None, Some(sig)) => format!("killed by signal {sig}"),
                _ => status.to_string(),
            };
            return Err(Error::StepFailed {
                location: format!("{file}:{line}"),
                reason: format!(
                    "[{label}] {}: process {:?} did not complete successfully: {how}",
                    truncate(&by_step),
                    truncate(&argv.join(" ")),
                ),
            });
        }
        // Remove the runtime's mount points (deepest first) when they are empty.
        let changed = if before.is_some() { &merged } else { &upper };
        for m in missing.iter().rev() {
            let p = changed.join(m);
            if let Ok(md) = p.symlink_metadata() {
                if md.is_dir() {
                    let _ = fs::remove_dir(&p);
                } else if md.len() == 0 {
                    let _ = fs::remove_file(&p);
                }
            }
        }
        let items = match &before {
            Some(b) => diff_snapshot(&merged, b, epoch)?,
            None => upper_to_items(&upper, epoch)?,
        };
        if items.is_empty() {
            return Ok((None, before.is_some()));
        }
        let blob = build_items_layer_blocking(&layout, items, compression, epoch as i64)?;
        if before.is_some() {
            return Ok((Some(blob), true));
        }
        // The upper directory is that layer unpacked: keep it for the next steps.
        let dir = layer_dir(&layout, &super::fs::chain_id(stc.chain().as_deref(), &blob.diff_id));
        if !dir.exists() {
            if let Some(p) = dir.parent() {
                fs::create_dir_all(p).at(p)?;
            }
            let _ = fs::rename(&upper, &dir);
        }
        Ok((Some(blob), false))
    })
    .await;
    drop((stage_mounts, rw_copies, secret_files, agents, locks));
    let (blob, copied) = blob?;
    if copied {
        ctx.log.line("  (copied snapshot: no overlayfs)");
    }
    ctx.runs += 1;
    ctx.cache_put(&key, blob.as_ref())?;
    st.key = key;
    let created = ctx.created.clone();
    match blob {
        Some(b) => st.push_layer(&b, &created, by),
        None => st.push_empty(&created, by),
    }
    Ok(())
}

/// The root a `from=` mount reads: a stage before this one, a named directory context, or
/// an image (resolved by the caller into `images`), mounted for the step's duration.
async fn mount_from(
    ctx: &Ctx<'_>,
    plan: &Plan,
    done: &BTreeMap<usize, Stage>,
    images: &BTreeMap<String, Stage>,
    s: usize,
    f: &str,
    held: &mut Vec<super::stage::SourceRoot>,
) -> Result<PathBuf> {
    let other = match find_stage(plan, done, f, s, true) {
        Some(o) => o,
        None => {
            if let Some(n) = ctx.named_dirs.get(f) {
                return Ok(n.dir.clone());
            }
            images.get(f).ok_or_else(|| {
                Error::not_found(format!("--mount from={f}"), "the build's stages, contexts and images")
            })?
        }
    };
    ctx.ensure_layers(&other.layers).await?;
    let root = mount_stage(ctx.layout, other, ctx.opts.snapshotter).await?;
    let d = root.dir.clone();
    held.push(root);
    Ok(d)
}

/// Set the owner (each part when given) and mode (when given) of `p`, a symlink's own.
fn set_owner_mode(p: &Path, (uid, gid): (Option<u32>, Option<u32>), mode: Option<u32>) -> Result<()> {
    if uid.is_some() || gid.is_some() {
        std::os::unix::fs::lchown(p, uid, gid).at(p)?;
    }
    if let Some(m) = mode {
        fs::set_permissions(p, fs::Permissions::from_mode(m & 0o7777)).at(p)?;
    }
    Ok(())
}

/// Take a cache mount's lock as its `sharing` says: `shared` none, `locked` waits for the
/// cache, `private` takes it only when free (false: in use, the step needs its own). A
/// directory already locked by this step is not locked again.
async fn lock_cache(dir: &Path, sharing: Sharing, held: &mut Vec<(PathBuf, fs::File)>) -> Result<bool> {
    use std::os::fd::AsRawFd;
    if sharing == Sharing::Shared || held.iter().any(|(d, _)| d == dir) {
        return Ok(true);
    }
    let mut name = dir.as_os_str().to_owned();
    name.push(".lock");
    let lock = PathBuf::from(name);
    let f = fs::OpenOptions::new().create(true).truncate(false).write(true).open(&lock).at(&lock)?;
    let wait = sharing == Sharing::Locked;
    let (f, got) = blocking(move || {
        let op = if wait { libc::LOCK_EX } else { libc::LOCK_EX | libc::LOCK_NB };
        // SAFETY: flock on a file descriptor this closure owns.
        let r = unsafe { libc::flock(f.as_raw_fd(), op) };
        Ok((f, r == 0))
    })
    .await?;
    if got {
        held.push((dir.to_path_buf(), f));
    }
    Ok(got)
}

/// Run `cmd` to its end. Without a sink its stdout and stderr are this process's stderr;
/// with one, both are read line by line (a reader thread each) and handed to it.
fn run_with_output(mut cmd: Command, output: Option<RunOutput>) -> std::io::Result<std::process::ExitStatus> {
    use std::os::fd::AsFd;
    let Some(sink) = output else {
        let stderr = std::io::stderr();
        cmd.stdout(Stdio::from(stderr.as_fd().try_clone_to_owned()?));
        cmd.stderr(Stdio::from(stderr.as_fd().try_clone_to_owned()?));
        return cmd.status();
    };
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let pipes: [(Option<Box<dyn std::io::Read + Send>>, OutputStream); 2] = [
        (child.stdout.take().map(|r| Box::new(r) as _), OutputStream::Stdout),
        (child.stderr.take().map(|r| Box::new(r) as _), OutputStream::Stderr),
    ];
    let readers: Vec<_> = pipes
        .into_iter()
        .filter_map(|(r, stream)| Some((r?, stream)))
        .map(|(r, stream)| {
            let sink = sink.clone();
            std::thread::spawn(move || forward_lines(r, stream, &*sink))
        })
        .collect();
    let status = child.wait();
    for r in readers {
        let _ = r.join();
    }
    status
}

/// Hand what `r` gives to `sink`, a line (or [`RUN_OUTPUT_LINE_MAX`] bytes of one) at a time.
fn forward_lines(r: impl std::io::Read, stream: OutputStream, sink: &(dyn Fn(OutputStream, &str) + Send + Sync)) {
    use std::io::BufRead;
    let mut r = std::io::BufReader::new(r);
    let mut line = Vec::new();
    loop {
        let (done, used) = match r.fill_buf() {
            Ok([]) | Err(_) => (true, 0),
            Ok(buf) => {
                let room = RUN_OUTPUT_LINE_MAX - line.len();
                match buf.iter().take(room).position(|&b| b == b'\n') {
                    Some(i) => {
                        line.extend_from_slice(&buf[..i]);
                        sink(stream, &String::from_utf8_lossy(&line));
                        line.clear();
                        (false, i + 1)
                    }
                    None => {
                        let n = buf.len().min(room);
                        line.extend_from_slice(&buf[..n]);
                        if line.len() == RUN_OUTPUT_LINE_MAX {
                            sink(stream, &String::from_utf8_lossy(&line));
                            line.clear();
                        }
                        (false, n)
                    }
                }
            }
        };
        if done {
            if !line.is_empty() {
                sink(stream, &String::from_utf8_lossy(&line));
            }
            return;
        }
        r.consume(used);
    }
}

/// A copy of `src` (a file or a directory tree, owners and modes kept) at `dst`, for a
/// `rw` bind mount whose writes are thrown away after the step, as BuildKit does, and for
/// a cache mount seeded `from=` a stage or image.
fn throwaway_copy(src: &Path, dst: &Path) -> Result<()> {
    let m = src.metadata().at(src)?;
    if m.is_dir() {
        fs::create_dir(dst).at(dst)?;
        materialize(&[src.to_path_buf()], dst)?;
        std::os::unix::fs::lchown(dst, Some(m.uid()), Some(m.gid())).at(dst)?;
        fs::set_permissions(dst, fs::Permissions::from_mode(m.mode() & 0o7777)).at(dst)?;
    } else {
        fs::copy(src, dst).at(dst)?;
        std::os::unix::fs::lchown(dst, Some(m.uid()), Some(m.gid())).at(dst)?;
        fs::set_permissions(dst, fs::Permissions::from_mode(m.mode() & 0o7777)).at(dst)?;
    }
    Ok(())
}

/// Digest of a file tree's paths, kinds, modes and contents (a bind mount's cache input).
fn tree_digest(root: &Path) -> String {
    use sha2::Digest as _;
    use std::io::Read;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    for w in walkdir::WalkDir::new(root).sort_by_file_name().into_iter().filter_map(|w| w.ok()) {
        let Ok(m) = w.path().symlink_metadata() else { continue };
        h.update(format!("{}\0{:o}\0", w.path().display(), m.mode()).as_bytes());
        if m.is_file() {
            if let Ok(mut f) = fs::File::open(w.path()) {
                while let Ok(n) = f.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                }
            }
        } else if m.file_type().is_symlink() {
            if let Ok(t) = fs::read_link(w.path()) {
                h.update(t.to_string_lossy().as_bytes());
            }
        }
    }
    hex::encode(h.finalize())
}

fn ctx_err(ctx: &Ctx<'_>, ins: &Instruction, r: impl ToString) -> Error {
    super::parse::err(&ctx.file, ins.line, r)
}

/// The shell script of a shell-form RUN: `RUN <<EOF` alone runs the heredoc; otherwise the
/// heredocs stay part of the command, as the shell reads them.
fn heredoc_script(text: &str, ins: &Instruction) -> String {
    if ins.heredocs.is_empty() {
        return text.to_string();
    }
    let t = text.trim();
    if ins.heredocs.len() == 1 {
        let h = &ins.heredocs[0];
        let forms =
            [format!("<<{}", h.name), format!("<<-{}", h.name), format!("<<\"{}\"", h.name), format!("<<'{}'", h.name)];
        if forms.iter().any(|f| f == t) {
            return h.content.clone();
        }
    }
    let mut s = text.to_string();
    for h in &ins.heredocs {
        s.push('\n');
        s.push_str(&h.content);
        s.push_str(&h.name);
    }
    s
}

#[allow(clippy::too_many_arguments)]
fn spec(
    argv: &[String],
    env: &[String],
    (uid, gid, groups): (u64, u64, &[u64]),
    cwd: &str,
    root: &Path,
    binds: &[(String, PathBuf, bool, bool)],
    tmpfs: &[(String, Option<u64>)],
) -> serde_json::Value {
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc"}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "bind", "source": "/sys", "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]}),
    ];
    for (target, src, rw, _) in binds {
        let mut o = vec!["rbind"];
        o.push(if *rw { "rw" } else { "ro" });
        mounts.push(json!({"destination": target, "type": "bind", "source": src, "options": o}));
    }
    for (t, size) in tmpfs {
        let mut o = vec!["nosuid".to_string(), "nodev".to_string()];
        o.extend(size.map(|n| format!("size={n}")));
        mounts.push(json!({"destination": t, "type": "tmpfs", "source": "tmpfs", "options": o}));
    }
    let caps: Vec<&str> = CAPS.to_vec();
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": uid, "gid": gid, "additionalGids": groups},
            "args": argv,
            "env": env,
            "cwd": cwd,
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "noNewPrivileges": false
        },
        "root": {"path": root, "readonly": false},
        "hostname": "hoist",
        "mounts": mounts,
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_parse() {
        assert!(matches!(parse_mount("type=cache,target=/c").unwrap(), RunMount::Cache { ref id, .. } if id == "/c"));
        assert!(
            matches!(parse_mount("type=secret,id=tok").unwrap(), RunMount::Secret { target: None, ref id, .. } if id == "tok")
        );
        assert!(matches!(parse_mount("target=/x,source=y,rw").unwrap(), RunMount::Bind { rw: true, .. }));
        assert!(matches!(parse_mount("target=/x,rw=false").unwrap(), RunMount::Bind { rw: false, .. }));
        assert!(matches!(
            parse_mount("type=secret,source=tok,uid=1000").unwrap(),
            RunMount::Secret { ref id, owner: (1000, 0), mode: 0o400, .. } if id == "tok"
        ));
        assert!(matches!(
            parse_mount("type=ssh").unwrap(),
            RunMount::Ssh { ref id, target: None, mode: 0o600, required: false, .. } if id == "default"
        ));
        assert!(matches!(
            parse_mount("type=cache,target=/c,from=img,source=/etc,sharing=LOCKED,ro").unwrap(),
            RunMount::Cache { ro: true, sharing: Sharing::Locked, ref from, .. } if from.as_deref() == Some("img")
        ));
        assert!(
            matches!(parse_mount("type=tmpfs,target=/t,size=64m").unwrap(), RunMount::Tmpfs { size: Some(s), .. } if s == 64 << 20)
        );
        assert!(parse_mount("type=tmpfs,target=/t,uid=1").unwrap_err().contains("uid not allowed"));
        assert!(parse_mount("type=bind,target=/t,required").unwrap_err().contains("unexpected key 'required'"));
        assert!(parse_mount("type=secret,id=a,source=b").unwrap_err().contains("both source and id"));
        assert!(parse_mount("type=nfs,target=/t").unwrap_err().contains("unsupported mount type"));
        assert!(parse_mount("type=bind,target=/t,foo").unwrap_err().contains("must be a key=value pair"));
    }

    #[test]
    fn sizes_read_as_docker_reads_them() {
        assert_eq!(ram_in_bytes("1024"), Some(1024));
        assert_eq!(ram_in_bytes("1k"), Some(1024));
        assert_eq!(ram_in_bytes("1.5KiB"), Some(1536));
        assert_eq!(ram_in_bytes("2g"), Some(2 << 30));
        assert_eq!(ram_in_bytes("3MB"), Some(3 << 20));
        assert_eq!(ram_in_bytes("x"), None);
        assert_eq!(ram_in_bytes("1q"), None);
    }
}
