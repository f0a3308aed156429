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

/// One `--mount` of RUN.
#[derive(Debug)]
enum RunMount {
    Cache { target: String, id: String, owner: (u32, u32), mode: u32 },
    Bind { target: String, source: String, from: Option<String>, rw: bool },
    Secret { target: String, id: String, required: bool },
    Tmpfs { target: String },
}

fn parse_mount(s: &str) -> std::result::Result<RunMount, String> {
    let mut kv: BTreeMap<String, String> = BTreeMap::new();
    for part in s.split(',') {
        let (k, v) = part.split_once('=').unwrap_or((part, "true"));
        kv.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    let target = kv.get("target").or(kv.get("dst")).or(kv.get("destination")).cloned();
    let kind = kv.get("type").map(String::as_str).unwrap_or("bind");
    match kind {
        "cache" => {
            let target = target.ok_or("a cache mount needs target=")?;
            let id = kv.get("id").cloned().unwrap_or_else(|| target.clone());
            let num = |k: &str, radix: u32, default: u32| -> std::result::Result<u32, String> {
                kv.get(k).map_or(Ok(default), |v| {
                    u32::from_str_radix(v, radix).map_err(|_| format!("{k}={v}: not a number"))
                })
            };
            let owner = (num("uid", 10, 0)?, num("gid", 10, 0)?);
            Ok(RunMount::Cache { target, id, owner, mode: num("mode", 8, 0o755)? })
        }
        "bind" => Ok(RunMount::Bind {
            target: target.ok_or("a bind mount needs target=")?,
            source: kv.get("source").or(kv.get("src")).cloned().unwrap_or_default(),
            from: kv.get("from").cloned().filter(|f| !f.is_empty()),
            rw: kv.get("rw").or(kv.get("readwrite")).is_some_and(|v| v == "true"),
        }),
        "secret" => {
            let id = kv.get("id").cloned().or_else(|| {
                target.as_ref().and_then(|t| Path::new(t).file_name().map(|n| n.to_string_lossy().into_owned()))
            });
            let id = id.ok_or("a secret mount needs id=")?;
            Ok(RunMount::Secret {
                target: target.unwrap_or_else(|| format!("/run/secrets/{id}")),
                id,
                required: kv.get("required").is_some_and(|v| v == "true"),
            })
        }
        "tmpfs" => Ok(RunMount::Tmpfs { target: target.ok_or("a tmpfs mount needs target=")? }),
        other => Err(format!("--mount type={other} is not supported (cache, bind, secret, tmpfs)")),
    }
}

/// Execute one RUN instruction (or take it from the cache).
pub(crate) async fn run_step(
    ctx: &mut Ctx<'_>,
    plan: &Plan,
    s: usize,
    st: &mut Stage,
    ins: &Instruction,
    done: &BTreeMap<usize, Stage>,
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
    let vars = st.vars();
    let get = |n: &str| vars.get(n).cloned();
    let esc = ctx.df.escape;
    let mounts = ins
        .flag_all("mount")
        .map(|m| word(m, &get, esc).map_err(|e| e.to_string()).and_then(|m| parse_mount(&m)))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| ctx_err(ctx, ins, e))?;
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
    // A bind mount from another stage depends on that stage's content: its key goes in.
    let mut mounts_desc = format!("{mounts:?} network-none={net_none}");
    for m in &mounts {
        match m {
            RunMount::Bind { from: Some(f), .. } => {
                if let Some(o) = find_stage(plan, done, f, s, true) {
                    mounts_desc.push_str(&o.key);
                } else if let Some(n) = ctx.named_dirs.get(f.as_str()) {
                    mounts_desc.push_str(&tree_digest(&n.dir));
                }
            }
            // ... and one from the context on the content bound
            RunMount::Bind { from: None, source, .. } => {
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
    // Bind sources from other stages are mounted for the duration of the step.
    let mut stage_mounts = Vec::new();
    // target, host source, rw, mount point removed after the step
    let mut binds: Vec<(String, PathBuf, bool, bool)> = Vec::new();
    let mut tmpfs: Vec<String> = Vec::new();
    let cache_mounts = cache_root(ctx.layout).join("cache-mounts");
    // `rw` bind mounts get a throwaway copy: writes never reach the context or the stage.
    let mut rw_copies: Option<tempfile::TempDir> = None;
    for m in &mounts {
        match m {
            RunMount::Cache { target, id, owner, mode } => {
                let dir = cache_mounts.join(hash(&[id]));
                if !dir.is_dir() {
                    // a new cache directory gets the mount's uid, gid and mode (BuildKit)
                    fs::create_dir_all(&cache_mounts).at(&cache_mounts)?;
                    let tmp = tempfile::Builder::new().prefix(".new-").tempdir_in(&cache_mounts).at(&cache_mounts)?;
                    std::os::unix::fs::lchown(tmp.path(), Some(owner.0), Some(owner.1)).at(tmp.path())?;
                    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(*mode & 0o7777)).at(tmp.path())?;
                    let made = tmp.keep();
                    if fs::rename(&made, &dir).is_err() {
                        let _ = fs::remove_dir(&made);
                    }
                }
                binds.push((join_abs(&cwd, target), dir, true, false));
            }
            RunMount::Bind { target, source, from, rw } => {
                let base = match from {
                    None => ctx.context.clone(),
                    Some(f)
                        if find_stage(plan, done, f, s, true).is_none() && ctx.named_dirs.contains_key(f.as_str()) =>
                    {
                        ctx.named_dirs[f.as_str()].dir.clone()
                    }
                    Some(f) => {
                        let other = find_stage(plan, done, f, s, true).ok_or_else(|| {
                            ctx_err(ctx, ins, format!("--mount from={f}: no such stage before this one"))
                        })?;
                        ctx.ensure_layers(&other.layers).await?;
                        let root = mount_stage(ctx.layout, other, ctx.opts.snapshotter).await?;
                        let d = root.dir.clone();
                        stage_mounts.push(root);
                        d
                    }
                };
                // symlinks on the way resolve inside the context or stage, never on the host
                let rel = resolve_in_dir(&base, &normalize_target(&join_abs("/", source))?, true)
                    .map_err(|e| ctx_err(ctx, ins, format!("--mount source={source}: {e}")))?;
                let src = if rel.is_empty() { base } else { base.join(rel) };
                if src.symlink_metadata().is_err() {
                    return Err(ctx_err(ctx, ins, format!("--mount source={source}: not found")));
                }
                let src = if *rw {
                    let runs = cache_root(ctx.layout).join("runs");
                    if rw_copies.is_none() {
                        fs::create_dir_all(&runs).at(&runs)?;
                        rw_copies = Some(tempfile::Builder::new().prefix("rw").tempdir_in(&runs).at(&runs)?);
                    }
                    let dst = rw_copies.as_ref().expect("made above").path().join(binds.len().to_string());
                    blocking(move || throwaway_copy(&src, &dst).map(|()| dst)).await?
                } else {
                    src
                };
                binds.push((join_abs(&cwd, target), src, *rw, false));
            }
            RunMount::Secret { target, id, required } => match ctx.opts.secrets.get(id) {
                Some(p) => binds.push((join_abs(&cwd, target), p.clone(), false, true)),
                None if *required => {
                    return Err(ctx_err(ctx, ins, format!("secret {id} is required: pass --secret id={id},src=FILE")))
                }
                None => {}
            },
            RunMount::Tmpfs { target } => tmpfs.push(join_abs(&cwd, target)),
        }
    }
    if let Some((path, content)) = &shebang {
        let runs = cache_root(ctx.layout).join("runs");
        if rw_copies.is_none() {
            fs::create_dir_all(&runs).at(&runs)?;
            rw_copies = Some(tempfile::Builder::new().prefix("rw").tempdir_in(&runs).at(&runs)?);
        }
        let p = rw_copies.as_ref().expect("made above").path().join("script");
        fs::write(&p, content).at(&p)?;
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).at(&p)?;
        binds.push((path.clone(), p, false, true));
    }
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
        let groups = supplementary_groups(&dirs, if user.is_empty() { "0" } else { &user }, gid);
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
        let mut spec = spec(&argv, &env, (uid, gid, &groups), &cwd, &merged, &binds, &tmpfs);
        if net_none {
            if let Some(ns) = spec["linux"]["namespaces"].as_array_mut() {
                ns.push(json!({"type": "network"}));
            }
        }
        let spec_path = bundle.join("config.json");
        fs::write(&spec_path, serde_json::to_vec_pretty(&spec).map_err(|e| Error::Other(e.to_string()))?)
            .at(&spec_path)?;
        let state = t.path().join("state");
        let id =
            format!("hoist-{}", t.path().file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
        let mut cmd = Command::new(&runtime);
        cmd.arg("--root").arg(&state).args(["run", "--bundle"]).arg(&bundle).arg(&id).stdin(Stdio::null());
        let status = run_with_output(cmd, output).map_err(|e| Error::Other(format!("{}: {e}", runtime.display())))?;
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
            return Err(Error::Other(format!(
                "{file}:{line}: [{label}] {}: process {:?} did not complete successfully: {how}",
                truncate(&by_step),
                truncate(&argv.join(" ")),
            )));
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
    drop(stage_mounts);
    drop(rw_copies);
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

/// A copy of `src` (a file or a directory tree, owners and modes kept) at `dst`, for a
/// `rw` bind mount whose writes are thrown away after the step, as BuildKit does.
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
    tmpfs: &[String],
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
    for t in tmpfs {
        mounts.push(json!({"destination": t, "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev"]}));
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
            matches!(parse_mount("type=secret,id=tok").unwrap(), RunMount::Secret { ref target, .. } if target == "/run/secrets/tok")
        );
        assert!(matches!(parse_mount("target=/x,source=y,rw").unwrap(), RunMount::Bind { rw: true, .. }));
        assert!(parse_mount("type=ssh").is_err());
    }
}
