//! Evaluation of a parsed Dockerfile: stages, ARG scoping, variable expansion, the image
//! config, COPY/ADD layers from the context or another stage or image, RUN through
//! [`super::run`], and the build cache.
//!
//! Cache: every layer step has a key, the SHA-256 of the previous step's key and the step
//! (instruction as expanded, plus the content digests of copied files, or for RUN the
//! environment, user, workdir and mounts); `build-cache/steps/KEY.json` in the store records
//! the layer it made. A stage starts from the key of its base (manifest digest, or scratch).
//! No key reads the parent's filesystem (COPY/ADD add the parent's ChainID instead), so a
//! cached step never fetches or unpacks the layers below it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsString;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest as _, Sha256};

use super::cache::{inline_table, write_cache, CacheEntry, ImportedCache, INLINE_CACHE_KEY};
use super::chmod::Chmod;
use super::fs::{cache_root, lookup, resolve_in_dir, resolve_in_stack};
use super::ignore::{fnmatch, ignored, load_dockerignore, parse_ignore, read_ignore_file, IgnoreRule};
use super::parse::{err, parse, Args, Instruction, Keyword};
use super::stage::{
    blocking, find_stage, hash, join_abs, mount_stage, truncate, Ctx, NamedDir, Plan, Prefetch, Selection, SourceRoot,
    Stage, DEFAULT_PATH,
};
use super::statcache::{Listed, StatCache};
use super::user::resolve_user;
use super::words::{word, words};
use super::{BuildLog, BuildOutcome, DockerfileBuild, ImageResolver, NamedContext};
use crate::error::{Error, IoContext, Result};
use crate::image::{load_base, write_manifest, write_root, BaseImage, ImageParts};
use crate::ingest::{rfc3339, source_date_epoch};
use crate::layer::{build_items_layer_blocking, normalize_target, Item, Kind, LayerBlob};
use crate::model::descriptor::{Descriptor, Platform};
use crate::model::write::{Empty, ImageConfig, RootFs};
use crate::transport::layout::Layout;

/// The named contexts of `opts` that are URLs ([`NamedContext::Remote`]), fetched into temp
/// dirs under the store's build cache with the build's credentials for their hosts: each
/// one's directory, and the temp dirs to keep until the build ends.
async fn fetch_named_contexts(
    layout: &Layout,
    opts: &DockerfileBuild,
    client: Option<Arc<crate::transport::registry::Client>>,
    log: &dyn BuildLog,
) -> Result<(BTreeMap<String, PathBuf>, Vec<tempfile::TempDir>)> {
    use super::remote::{
        classify, download, git_authorization, git_checkout_blocking, http_authorization, redact, GitFetch, Remote,
        UrlRequest,
    };
    let (mut dirs, mut keep) = (BTreeMap::new(), Vec::new());
    let base = cache_root(layout).join("git-tmp");
    for (name, c) in &opts.build_contexts {
        let NamedContext::Remote(spec) = c else { continue };
        let (shown, location) = (redact(spec), format!("--build-context {name}"));
        log.line(&format!("fetching build context {name}={shown}"));
        match classify(spec) {
            Some(Remote::Git(g)) => {
                let fetch = GitFetch {
                    location,
                    authorization: git_authorization(&opts.secrets, &g.remote)?,
                    cache: Some(super::remote::git_cache_dir(layout)),
                    ..GitFetch::default()
                };
                let b = base.clone();
                let co = blocking(move || git_checkout_blocking(&g, &b, &fetch)).await?;
                log.line(&format!("  {shown}: commit {}", co.commit));
                dirs.insert(name.clone(), co.dir.clone());
                keep.push(co._tmp);
            }
            Some(Remote::Http(url)) => {
                let client = match &client {
                    Some(c) => c.clone(),
                    None => crate::transport::registry::Client::new(Default::default())?,
                };
                let authorization = http_authorization(&opts.secrets, &url)?;
                let req = UrlRequest { fresh: opts.no_cache, authorization: authorization.as_deref(), checksum: None };
                let d = download(layout, &client, &url, req, &location, log).await?;
                fs::create_dir_all(&base).at(&base)?;
                let tmp = tempfile::Builder::new().prefix("ctx").tempdir_in(&base).at(&base)?;
                // BuildKit's http source: the file `context`, 0600, its mtime Last-Modified
                let f = tmp.path().join("context");
                fs::copy(&d.path, &f).at(&f)?;
                fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).at(&f)?;
                let mtime = filetime::FileTime::from_unix_time(d.mtime.unwrap_or(0) as i64, 0);
                filetime::set_file_mtime(&f, mtime).at(&f)?;
                dirs.insert(name.clone(), tmp.path().to_path_buf());
                keep.push(tmp);
            }
            None => return Err(Error::Usage(format!("--build-context {name}={shown}: not a git or http(s) URL"))),
        }
    }
    Ok((dirs, keep))
}

/// The named directory contexts of `opts` (a URL's: its directory in `fetched`), checked
/// before anything is built.
fn named_dirs(opts: &DockerfileBuild, fetched: &BTreeMap<String, PathBuf>) -> Result<BTreeMap<String, NamedDir>> {
    let mut out = BTreeMap::new();
    for (name, c) in &opts.build_contexts {
        let d = match c {
            NamedContext::Dir(d) => d,
            NamedContext::Remote(_) => match fetched.get(name) {
                Some(d) => d,
                None => continue,
            },
            NamedContext::Image(_) => continue,
        };
        let bad = |why: String| Error::Usage(format!("--build-context {name}={}: {why}", d.display()));
        let dir = fs::canonicalize(d).map_err(|e| bad(e.to_string()))?;
        if !dir.is_dir() {
            return Err(bad("not a directory (nor docker-image://REF or oci-layout://DIR)".into()));
        }
        let ignore = Arc::new(read_ignore_file(&dir.join(".dockerignore"))?);
        out.insert(name.clone(), NamedDir { dir, ignore });
    }
    Ok(out)
}

/// Build the Dockerfile of `opts` into `layout`; returns the image root and what ran.
pub async fn build_dockerfile(
    layout: &Layout,
    opts: &DockerfileBuild,
    resolver: &dyn ImageResolver,
    log: &dyn BuildLog,
) -> Result<BuildOutcome> {
    let text = {
        let f = fs::File::open(&opts.dockerfile).at(&opts.dockerfile)?;
        let mut s = String::new();
        f.take(super::parse::MAX_DOCKERFILE_SIZE as u64 + 1).read_to_string(&mut s).at(&opts.dockerfile)?;
        s
    };
    let file = opts.dockerfile.display().to_string();
    let df = parse(&text, &file)?;
    if let Some(s) = &df.syntax {
        log.line(&format!("note: `# syntax={s}` ignored: hoist parses Dockerfiles itself"));
    }
    let epoch = opts.source_date_epoch.unwrap_or_else(source_date_epoch);
    let ignore = Arc::new(load_dockerignore(&opts.dockerfile, &opts.context)?);
    let context = fs::canonicalize(&opts.context).at(&opts.context)?;
    let stat = Arc::new(StatCache::load(&cache_root(layout).join("stat-cache"), &context, opts.no_cache));
    let (fetched, _fetched_dirs) = fetch_named_contexts(layout, opts, resolver.client(), log).await?;
    let mut ctx = Ctx {
        layout,
        opts,
        log,
        df,
        file,
        epoch,
        created: rfc3339(epoch),
        runs: 0,
        cached: 0,
        ignore,
        context,
        stat,
        imported: Vec::new(),
        origins: Default::default(),
        seen: Mutex::new(BTreeMap::new()),
        pending: Mutex::new(BTreeMap::new()),
        named_dirs: named_dirs(opts, &fetched)?,
        stage_no_cache: false,
        prefetch: Prefetch::new(opts.jobs.unwrap_or(crate::copy::DEFAULT_JOBS)),
        prehash: Default::default(),
        client: resolver.client(),
    };
    let platforms = if opts.platforms.is_empty() { vec![Platform::host()] } else { opts.platforms.clone() };
    crate::image::check_index_annotations(&opts.index_annotations, platforms.len())?;
    let plan = plan_stages(&ctx)?;
    for f in &opts.no_cache_filter {
        if no_cache_stage(&plan, f).is_none() {
            return Err(Error::Usage(format!("--no-cache-filter {f}: no such stage in {}", ctx.file)));
        }
    }
    // Refuse RUN we cannot run before building anything: each stage runs on its own
    // platform (`FROM --platform=$BUILDPLATFORM` runs natively whatever the target).
    for p in &platforms {
        let gvars = global_vars(&ctx, &plan.globals, p)?;
        for &s in &plan.needed {
            if plan.stages[s].iter().any(|&i| ctx.df.instructions[i].keyword == Keyword::Run) {
                super::run::check_can_run(opts.runtime.as_deref(), &stage_platform(&ctx, &plan, s, &gvars, p)?)?;
            }
        }
    }
    // The context files of the COPY steps are hashed from here on, beside the reading of the
    // caches and the fetching of their layers.
    start_prehash(&mut ctx, &plan);
    ctx.imported = import_caches(opts, resolver, log).await;
    for c in &ctx.imported {
        c.note_origins(&mut ctx.origins.lock().expect("origins lock"));
    }
    // the caches' layers are fetched from here on too, reported beside the build
    let prefetch = ctx.start_prefetch();
    prefetch.beside(build_platforms(&mut ctx, &plan, &platforms, resolver), log.transfers()).await
}

/// Build the image of every platform, write its root and the exported caches.
async fn build_platforms(
    ctx: &mut Ctx<'_>,
    plan: &Plan,
    platforms: &[Platform],
    resolver: &dyn ImageResolver,
) -> Result<BuildOutcome> {
    let (opts, layout) = (ctx.opts, ctx.layout);
    let mut manifests = Vec::new();
    let mut image_layers = BTreeSet::new();
    let mut stages = Vec::new();
    let mut stat_saved = None;
    for (n, p) in platforms.iter().enumerate() {
        let before: BTreeSet<String> = ctx.seen.lock().expect("cache record lock").keys().cloned().collect();
        let (stage, others) = build_platform(ctx, plan, p, resolver).await?;
        if n + 1 == platforms.len() {
            // every context file is hashed now: the stat cache is written beside the image
            let stat = ctx.stat.clone();
            stat_saved = Some(tokio::task::spawn_blocking(move || stat.save()));
        }
        image_layers.extend(stage.layers.iter().map(|l| l.digest.clone()));
        ctx.ensure_layers(&stage.layers).await?;
        // `--cache-to type=inline`: the steps of this platform's build, in its config
        let inline = if opts.cache_inline {
            let seen = ctx.seen.lock().expect("cache record lock");
            let mine: BTreeMap<String, CacheEntry> =
                seen.iter().filter(|(k, _)| !before.contains(*k)).map(|(k, e)| (k.clone(), e.clone())).collect();
            Some(inline_table(&mine, &stage.layers.iter().map(|l| l.digest.clone()).collect())?)
        } else {
            None
        };
        let desc = write_image(ctx, &stage, p, inline)?;
        manifests.push(desc);
        if opts.keep_stages {
            stages.extend(stage_images(ctx, plan, others, p).await?);
        }
    }
    let root = write_root(layout, manifests, &opts.annotations, &opts.index_annotations, opts.tag.as_deref())?;
    if let Some(saved) = stat_saved {
        saved.await.map_err(|e| Error::task("writing the stat cache", e))??;
    }
    let seen = ctx.seen.lock().expect("cache record lock").clone();
    if !opts.cache_export.is_empty() {
        // an exported cache holds its layers
        let all: Vec<Descriptor> = seen.values().filter_map(|e| e.layer.clone()).collect();
        ctx.ensure_layers(&all).await?;
    }
    let caches =
        opts.cache_export.iter().map(|m| write_cache(layout, &seen, *m, &image_layers)).collect::<Result<Vec<_>>>()?;
    let origins = std::mem::take(&mut *ctx.origins.lock().expect("origins lock"));
    Ok(BuildOutcome {
        root,
        runs: ctx.runs,
        cached: ctx.cached,
        hashed: ctx.stat.hashed(),
        stat_hits: ctx.stat.hits(),
        caches,
        stages,
        origins,
    })
}

/// Hash, from the start of the build and beside it, the context files of the COPY steps of
/// the stages the target needs whose sources are literal (no variable, no `--from`, no
/// heredoc), in the order the build meets them, into the stat cache ([`super::stage::Prehash`]):
/// the work their cache keys need anyway, done while the caches are read and their layers
/// fetched. A COPY it cannot read is left to its step, which reports the error.
fn start_prehash(ctx: &mut Ctx<'_>, plan: &Plan) {
    let none = |_: &str| -> Option<String> { None };
    let esc = ctx.df.escape;
    let mut specs = Vec::new();
    let mut selections = Vec::new();
    for &s in &plan.needed {
        for &i in &plan.stages[s][1..] {
            let ins = &ctx.df.instructions[i];
            if ins.keyword != Keyword::Copy
                || ins.flag("from").is_some()
                || ins.flag("parents").is_some()
                || !ins.heredocs.is_empty()
                || ins.text().contains('$')
                || ins.flag_all("exclude").any(|e| e.contains('$'))
                || ins.flag("chmod").is_some_and(|m| m.contains('$'))
            {
                continue;
            }
            let args = match &ins.args {
                Args::Exec(v) => v.iter().map(|a| word(a, &none, esc)).collect::<std::result::Result<Vec<_>, _>>(),
                Args::Shell(t) => words(t, &none, esc),
            };
            let (Ok(mut args), Ok(excludes)) = (
                args,
                ins.flag_all("exclude").map(|e| word(e, &none, esc)).collect::<std::result::Result<Vec<_>, _>>(),
            ) else {
                continue;
            };
            // --chmod as the step reads it (a malformed one is the step's error)
            let chmod = match ins.flag("chmod").map(|m| word(m, &none, esc)) {
                None => None,
                Some(Ok(m)) if m.is_empty() => None,
                Some(Ok(m)) => match Chmod::parse(&m) {
                    Ok(c) => Some(c),
                    Err(_) => continue,
                },
                Some(Err(_)) => continue,
            };
            if args.len() < 2 {
                continue;
            }
            let dest_word = args.pop().expect("two or more");
            // An absolute destination is the step's own (a relative one depends on WORKDIR,
            // known only when the stage is built): its entries, and their digest, are then
            // the ones the step's key takes. Otherwise only the files are hashed.
            let selection = dest_word.starts_with('/').then(|| Selection {
                dest: join_abs("/", &dest_word),
                dest_is_dir: dest_word.ends_with('/') || args.len() > 1,
                args: args.clone(),
                chmod: chmod.clone(),
                excludes: excludes.clone(),
            });
            let (dest, dest_is_dir) =
                selection.as_ref().map_or(("/".into(), true), |s| (s.dest.clone(), s.dest_is_dir));
            selections.push(selection);
            specs.push(CopySpec {
                args,
                dest,
                dest_is_dir,
                is_add: false,
                chmod,
                exclude: parse_ignore(&excludes.join("\n")),
                ignore: ctx.ignore.clone(),
                heredoc_dir: None,
                heredoc_names: vec![],
                root_dir: ctx.context.clone(),
                from_context: true,
                file: ctx.file.clone(),
                line: ins.line,
                remote: BTreeMap::new(),
                parents: false,
                found: None,
            });
        }
    }
    if specs.is_empty() {
        return;
    }
    let (tx, rx) = tokio::sync::watch::channel(0usize);
    let cancel = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let entries: Arc<Mutex<HashMap<usize, (Selection, String)>>> = Arc::default();
    ctx.prehash = super::stage::Prehash {
        order: specs.iter().enumerate().map(|(n, s)| (s.line, n)).collect(),
        done: Some(rx),
        cancel: cancel.clone(),
        entries: entries.clone(),
    };
    let (stat, context) = (ctx.stat.clone(), ctx.context.clone());
    tokio::task::spawn_blocking(move || {
        for (n, (spec, selection)) in specs.into_iter().zip(selections).enumerate() {
            if cancel.load(std::sync::atomic::Ordering::Relaxed) {
                return;
            }
            let line = spec.line;
            // the walk tells the hashing threads each file it finds
            let (items, known) = hash_while_walking(&stat, |found| {
                let spec = CopySpec { found: Some(found), ..spec };
                let mut ex = Extracted::new();
                normalize_target(&spec.dest)
                    .and_then(|dest_rel| copy_items(&spec, &[], &dest_rel, (None, None), &mut ex))
            });
            let digest = items.and_then(|items| digest_items(&items, Some((&stat, &context, &known))));
            if let (Some(selection), Ok(digest)) = (selection, digest) {
                entries.lock().unwrap_or_else(|p| p.into_inner()).insert(line, (selection, digest));
            }
            let _ = tx.send(n + 1);
        }
    });
}

/// [`DockerfileBuild::keep_stages`]: the image of each stage built besides the target (its
/// layers stored, config and manifest written untagged), named by the stage's name or index,
/// its descriptor's platform the target platform `p` it was built for.
async fn stage_images(
    ctx: &Ctx<'_>,
    plan: &Plan,
    others: BTreeMap<usize, Stage>,
    p: &Platform,
) -> Result<Vec<(String, Descriptor)>> {
    let mut out = Vec::new();
    for (i, st) in others {
        ctx.ensure_layers(&st.layers).await?;
        let none = BTreeMap::new();
        let parts = ImageParts { config: st.config.clone(), layers: st.layers.clone(), annotations: &none, base: None };
        let mut desc = write_manifest(ctx.layout, parts, &st.platform, &ctx.created)?;
        desc.platform = Some(p.clone());
        out.push((plan.names[i].clone().unwrap_or_else(|| i.to_string()), desc));
    }
    Ok(out)
}

/// The caches of `--cache-from` that can be read; one that cannot (not pushed yet, not a
/// hoist cache) is a warning, as in buildx.
async fn import_caches(opts: &DockerfileBuild, resolver: &dyn ImageResolver, log: &dyn BuildLog) -> Vec<ImportedCache> {
    let mut out = Vec::new();
    if opts.no_cache {
        return out;
    }
    for r in &opts.cache_from {
        let loaded = match resolver.resolve(r).await {
            Ok((src, root)) => ImportedCache::load(r, src, &root).await,
            Err(e) => Err(e),
        };
        match loaded {
            Ok(c) => {
                log.line(&format!("cache {r}: {} steps", c.len()));
                out.push(c);
            }
            Err(e) => log.line(&format!("warning: cache {r} not used: {e}")),
        }
    }
    out
}

fn write_image(ctx: &Ctx<'_>, stage: &Stage, p: &Platform, inline: Option<serde_json::Value>) -> Result<Descriptor> {
    let mut config = stage.config.clone();
    config.config.labels.extend(ctx.opts.labels.clone());
    if let Some(table) = inline {
        config.extra.insert(INLINE_CACHE_KEY.into(), table);
    }
    let parts = ImageParts {
        config,
        layers: stage.layers.clone(),
        annotations: &ctx.opts.annotations,
        base: stage.base.as_ref().map(|(d, name)| (&d.digest, Some(name.as_str()))),
    };
    write_manifest(ctx.layout, parts, p, &ctx.created)
}

fn from_parts(ctx: &Ctx<'_>, ins: &Instruction, vars: &HashMap<String, String>) -> Result<(String, Option<String>)> {
    let get = |n: &str| vars.get(n).cloned();
    let w = words(&ins.text(), &get, ctx.df.escape).map_err(|e| ctx.e(ins, e))?;
    match w.as_slice() {
        [image] => Ok((image.clone(), None)),
        [image, as_, _] if as_.eq_ignore_ascii_case("as") => {
            // The name as written: BuildKit expands no variables in it.
            let raw = ins.text().split_whitespace().nth(2).unwrap_or_default().to_string();
            if !valid_stage_name(&raw) {
                return Err(ctx.e(
                    ins,
                    format!("invalid name for build stage: {raw:?}, name can't start with a number or contain symbols"),
                ));
            }
            Ok((image.clone(), Some(raw.to_ascii_lowercase())))
        }
        _ => Err(ctx.e(ins, "FROM takes IMAGE [AS NAME]")),
    }
}

/// BuildKit's rule for stage names: a letter, then letters, digits, `-`, `_` and `.`.
fn valid_stage_name(n: &str) -> bool {
    let mut c = n.chars();
    c.next().is_some_and(|f| f.is_ascii_alphabetic())
        && c.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// BuildKit's refusal of `--from=$X` (moby/buildkit#6153): the stage graph is known before
/// any variable is.
pub(crate) fn check_from_literal(ctx: &Ctx<'_>, ins: &Instruction, value: &str) -> Result<()> {
    if value.contains('$') {
        return Err(ctx.e(
            ins,
            format!(
                "--from={value}: variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround"
            ),
        ));
    }
    Ok(())
}

fn global_vars(ctx: &Ctx<'_>, globals: &[usize], platform: &Platform) -> Result<HashMap<String, String>> {
    let mut vars = platform_args(platform);
    for &i in globals {
        let ins = &ctx.df.instructions[i];
        for (k, v) in arg_decls(ctx, ins, &vars)? {
            let v = ctx.opts.build_args.get(&k).cloned().or(v);
            match v {
                Some(v) => vars.insert(k, v),
                None => vars.remove(&k),
            };
        }
    }
    Ok(vars)
}

fn plan_stages(ctx: &Ctx<'_>) -> Result<Plan> {
    let mut globals = Vec::new();
    let mut stages: Vec<Vec<usize>> = Vec::new();
    for (i, ins) in ctx.df.instructions.iter().enumerate() {
        if ins.keyword == Keyword::From {
            stages.push(vec![i]);
        } else if let Some(s) = stages.last_mut() {
            s.push(i);
        } else if ins.keyword == Keyword::Arg {
            globals.push(i);
        } else {
            return Err(ctx.e(ins, format!("{} before the first FROM (only ARG may come first)", ins.keyword)));
        }
    }
    if stages.is_empty() {
        return Err(err(&ctx.file, 1, "no FROM instruction"));
    }
    let vars = global_vars(ctx, &globals, &Platform::host())?;
    let names = stages
        .iter()
        .map(|s| from_parts(ctx, &ctx.df.instructions[s[0]], &vars).map(|(_, n)| n))
        .collect::<Result<Vec<_>>>()?;
    // `--from` may name a stage by its index; FROM only by its name (`FROM 0` is an image).
    let find = |r: &str, before: usize, by_index: bool| -> Option<usize> {
        let r = r.to_ascii_lowercase();
        (0..before).find(|&j| names[j].as_deref() == Some(r.as_str()) || (by_index && r == j.to_string()))
    };
    let target = match &ctx.opts.target {
        Some(t) => find(t, stages.len(), false).ok_or_else(|| Error::Usage(format!("--target {t}: no such stage")))?,
        None => stages.len() - 1,
    };
    let mut needed = BTreeSet::new();
    let mut todo = vec![target];
    while let Some(s) = todo.pop() {
        if !needed.insert(s) {
            continue;
        }
        for &i in &stages[s] {
            let ins = &ctx.df.instructions[i];
            let mut refs: Vec<(String, bool)> = Vec::new();
            if ins.keyword == Keyword::From {
                refs.push((from_parts(ctx, ins, &vars)?.0, false));
            }
            if let Some(f) = ins.flag("from") {
                check_from_literal(ctx, ins, f)?;
                refs.push((f.to_string(), true));
            }
            for m in ins.flag_all("mount") {
                for kv in m.split(',') {
                    if let Some(f) = kv.trim().strip_prefix("from=") {
                        check_from_literal(ctx, ins, f)?;
                        refs.push((f.to_string(), true));
                    }
                }
            }
            for (r, by_index) in refs {
                if let Some(j) = find(&r, s, by_index) {
                    todo.push(j);
                }
            }
        }
    }
    Ok(Plan { globals, stages, names, target, needed })
}

/// BuildKit's automatic platform ARGs (the build platform is the host).
fn platform_args(target: &Platform) -> HashMap<String, String> {
    let host = Platform::host();
    let fmt = |p: &Platform| match &p.variant {
        Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
        None => format!("{}/{}", p.os, p.architecture),
    };
    HashMap::from([
        ("TARGETPLATFORM".into(), fmt(target)),
        ("TARGETOS".into(), target.os.clone()),
        ("TARGETARCH".into(), target.architecture.clone()),
        ("TARGETVARIANT".into(), target.variant.clone().unwrap_or_default()),
        ("BUILDPLATFORM".into(), fmt(&host)),
        ("BUILDOS".into(), host.os.clone()),
        ("BUILDARCH".into(), host.architecture.clone()),
        ("BUILDVARIANT".into(), host.variant.clone().unwrap_or_default()),
    ])
}

/// `ARG a[=x] b[=y]` → names and expanded defaults.
fn arg_decls(
    ctx: &Ctx<'_>,
    ins: &Instruction,
    vars: &HashMap<String, String>,
) -> Result<Vec<(String, Option<String>)>> {
    let get = |n: &str| vars.get(n).cloned();
    let w = words(&ins.text(), &get, ctx.df.escape).map_err(|e| ctx.e(ins, e))?;
    Ok(w.into_iter()
        .map(|a| match a.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (a, None),
        })
        .collect())
}

async fn build_platform(
    ctx: &mut Ctx<'_>,
    plan: &Plan,
    platform: &Platform,
    resolver: &dyn ImageResolver,
) -> Result<(Stage, BTreeMap<usize, Stage>)> {
    let gvars = global_vars(ctx, &plan.globals, platform)?;
    let mut done: BTreeMap<usize, Stage> = BTreeMap::new();
    for &s in &plan.needed {
        let stage = build_stage(ctx, plan, s, &gvars, platform, &done, resolver).await?;
        done.insert(s, stage);
    }
    let target = done.remove(&plan.target).ok_or_else(|| Error::Other("target stage not built".into()))?;
    Ok((target, done))
}

/// The stage `--no-cache-filter NAME` names: by name (as BuildKit), else by index.
fn no_cache_stage(plan: &Plan, f: &str) -> Option<usize> {
    let f = f.to_ascii_lowercase();
    (0..plan.stages.len())
        .find(|&j| plan.names[j].as_deref() == Some(f.as_str()))
        .or_else(|| f.parse::<usize>().ok().filter(|&j| j < plan.stages.len()))
}

/// `--from=NAME` naming the stage it is in: BuildKit's circular dependency.
pub(crate) fn check_not_self(ctx: &Ctx<'_>, plan: &Plan, s: usize, ins: &Instruction, r: &str) -> Result<()> {
    let lower = r.to_ascii_lowercase();
    if plan.names[s].as_deref() == Some(lower.as_str()) || lower == s.to_string() {
        return Err(ctx.e(ins, format!("--from={r}: circular dependency detected on stage: {r} (the current stage)")));
    }
    Ok(())
}

async fn image_stage(ctx: &Ctx<'_>, image: &str, platform: &Platform, resolver: &dyn ImageResolver) -> Result<Stage> {
    // A named context (`--build-context NAME=...`) stands for the image NAME.
    let image = match ctx.opts.build_contexts.get(image) {
        Some(NamedContext::Image(r)) => r.as_str(),
        Some(NamedContext::Dir(_) | NamedContext::Remote(_)) => return local_stage(ctx, image, platform).await,
        None => image,
    };
    let mut st = scratch_stage(platform);
    let pf = platform.to_string();
    if image == "scratch" {
        return Ok(st);
    }
    let (source, root) = resolver.resolve(image).await?;
    let mut b = BaseImage::new(source.as_ref(), root, Some(image.to_string()));
    b.jobs = ctx.opts.jobs.unwrap_or(b.jobs);
    b.progress = ctx.log.transfers();
    let base = load_base(ctx.layout, &b, platform).await?;
    {
        let mut origins = ctx.origins.lock().expect("origins lock");
        for l in &base.layers {
            origins.note(l, source.as_ref());
        }
    }
    st.config = base.config;
    // a base's inline cache describes the base's build, not this one
    st.config.extra.remove(INLINE_CACHE_KEY);
    if st.config.rootfs.kind.is_empty() {
        st.config.rootfs = RootFs::layers(vec![]);
    }
    if st.config.rootfs.diff_ids.len() != base.layers.len() {
        return Err(Error::malformed(
            format!("image {image}"),
            "config",
            "rootfs.diff_ids and layers differ in number",
        ));
    }
    if let Some(serde_json::Value::Array(sh)) = st.config.config.extra.get("Shell") {
        let sh: Vec<String> = sh.iter().filter_map(|v| v.as_str().map(String::from)).collect();
        if !sh.is_empty() {
            st.shell = sh;
        }
    }
    st.layers = base.layers;
    st.key = hash(&["hoist-dockerfile-v1", &pf, &base.manifest.digest.to_string()]);
    st.base = Some((base.manifest, image.to_string()));
    Ok(st)
}

/// `FROM NAME` of a named directory context: a stage with a scratch image's config whose
/// filesystem is the directory (one layer, as BuildKit's local source), keyed by content.
async fn local_stage(ctx: &Ctx<'_>, name: &str, platform: &Platform) -> Result<Stage> {
    let n =
        ctx.named_dirs.get(name).cloned().ok_or_else(|| Error::Other(format!("named context {name} not loaded")))?;
    let mut st = scratch_stage(platform);
    let pf = platform.to_string();
    let (stat, context) = (ctx.stat.clone(), ctx.context.clone());
    let (key, items) = blocking(move || {
        let mut items = BTreeMap::new();
        add_tree(&n.dir, "", &mut items, None, None, None, false, (&n.ignore, ""), &[], None)?;
        let key = hash(&[
            "hoist-dockerfile-v1",
            &pf,
            "local",
            &digest_items(&items, Some((&stat, &context, &HashMap::new())))?,
        ]);
        Ok((key, items))
    })
    .await?;
    let created = ctx.created.clone();
    // a fetched context is named by its URL, not by the temp dir it was fetched into
    let shown = match ctx.opts.build_contexts.get(name) {
        Some(NamedContext::Remote(spec)) => super::remote::redact(spec),
        _ => ctx.named_dirs[name].dir.display().to_string(),
    };
    let by = format!("FROM {name} (build context {shown})");
    let blob = match ctx.cache_lookup(&key).await? {
        Some(hit) => hit.blob(),
        None => {
            let layout = Layout::open(ctx.layout.root())?;
            let (compression, epoch) = (ctx.opts.compression, ctx.epoch);
            let blob = blocking(move || build_items_layer_blocking(&layout, items, compression, epoch)).await?;
            ctx.cache_put(&key, Some(&blob))?;
            Some(blob)
        }
    };
    match blob {
        Some(b) => st.push_layer(&b, &created, by),
        None => st.push_empty(&created, by),
    }
    st.key = key;
    Ok(st)
}

/// The stage `FROM scratch` starts.
fn scratch_stage(platform: &Platform) -> Stage {
    let mut st = Stage {
        name: None,
        config: ImageConfig::default(),
        layers: vec![],
        base: None,
        args: BTreeMap::new(),
        shell: vec!["/bin/sh".into(), "-c".into()],
        cmd_set: false,
        key: String::new(),
        platform: platform.clone(),
    };
    st.config.rootfs = RootFs::layers(vec![]);
    // BuildKit and buildah give a scratch image the default PATH.
    st.config.config.env = vec![format!("PATH={DEFAULT_PATH}")];
    // ... and BuildKit a working directory of `/`.
    st.config.config.working_dir = Some("/".into());
    st.key = hash(&["hoist-dockerfile-v1", &platform.to_string(), "scratch"]);
    st
}

/// The platform stage `s` builds for: its `FROM --platform=` (variables from the global
/// scope, where `BUILDPLATFORM` is the host's), else its parent stage's, else the target.
fn stage_platform(
    ctx: &Ctx<'_>,
    plan: &Plan,
    s: usize,
    gvars: &HashMap<String, String>,
    target: &Platform,
) -> Result<Platform> {
    let from = &ctx.df.instructions[plan.stages[s][0]];
    if let Some(p) = from.flag("platform") {
        let get = |n: &str| gvars.get(n).cloned();
        let p = word(p, &get, ctx.df.escape).map_err(|e| ctx.e(from, e))?;
        return Platform::parse(&p).ok_or_else(|| ctx.e(from, format!("--platform {p:?} is not os/arch[/variant]")));
    }
    let (image, _) = from_parts(ctx, from, gvars)?;
    let image = image.to_ascii_lowercase();
    match (0..s).find(|&j| plan.names[j].as_deref() == Some(image.as_str())) {
        Some(j) => stage_platform(ctx, plan, j, gvars, target),
        None => Ok(target.clone()),
    }
}

#[allow(clippy::too_many_arguments)]
async fn build_stage(
    ctx: &mut Ctx<'_>,
    plan: &Plan,
    s: usize,
    gvars: &HashMap<String, String>,
    target_platform: &Platform,
    done: &BTreeMap<usize, Stage>,
    resolver: &dyn ImageResolver,
) -> Result<Stage> {
    let from = &ctx.df.instructions[plan.stages[s][0]].clone();
    from.check_flags(&["platform"], &ctx.file)?;
    let (image, name) = from_parts(ctx, from, gvars)?;
    let platform = stage_platform(ctx, plan, s, gvars, target_platform)?;
    // `--no-cache-filter`: this stage's steps (its ONBUILD triggers too) run
    ctx.stage_no_cache = ctx.opts.no_cache_filter.iter().any(|f| no_cache_stage(plan, f) == Some(s));
    let uncached = if ctx.stage_no_cache { " (no cache: --no-cache-filter)" } else { "" };
    ctx.log.line(&format!("[{}] FROM {image}{uncached}", name.as_deref().unwrap_or(&s.to_string())));
    let mut st = match find_stage(plan, done, &image, s, false) {
        Some(prev) => {
            let mut st = prev.clone();
            st.args.clear();
            st.cmd_set = false;
            st
        }
        None => image_stage(ctx, &image, &platform, resolver).await?,
    };
    st.name = name;
    st.platform = platform;
    let label = st.name.clone().unwrap_or_else(|| s.to_string());
    // The base's ONBUILD triggers run first, as in BuildKit; they are not passed on.
    let triggers: Vec<String> = match st.config.config.extra.remove("OnBuild") {
        Some(serde_json::Value::Array(a)) => a.iter().filter_map(|v| v.as_str().map(String::from)).collect(),
        _ => vec![],
    };
    for t in triggers {
        let file = format!("{} (ONBUILD of {image})", ctx.file);
        for mut ins in parse(&t, &file)?.instructions {
            if matches!(ins.keyword, Keyword::Onbuild | Keyword::From | Keyword::Maintainer) {
                return Err(err(&file, from.line, format!("ONBUILD {} is not allowed", ins.keyword)));
            }
            ctx.log.line(&format!("  ONBUILD {}", truncate(&t)));
            ins.line = from.line;
            step(ctx, plan, s, &mut st, &ins, gvars, done, resolver, &label).await?;
        }
    }
    for &i in &plan.stages[s][1..] {
        let ins = ctx.df.instructions[i].clone();
        step(ctx, plan, s, &mut st, &ins, gvars, done, resolver, &label).await?;
    }
    ctx.stage_no_cache = false;
    Ok(st)
}

#[allow(clippy::too_many_arguments)]
async fn step(
    ctx: &mut Ctx<'_>,
    plan: &Plan,
    s: usize,
    st: &mut Stage,
    ins: &Instruction,
    gvars: &HashMap<String, String>,
    done: &BTreeMap<usize, Stage>,
    resolver: &dyn ImageResolver,
    label: &str,
) -> Result<()> {
    let vars = st.vars();
    let get = |n: &str| vars.get(n).cloned();
    let esc = ctx.df.escape;
    let ws = |t: &str| words(t, &get, esc).map_err(|e| ctx.e(ins, e));
    let by = format!("{} {}", ins.keyword, ins.text());
    let created = ctx.created.clone();
    if !matches!(ins.keyword, Keyword::Copy | Keyword::Add | Keyword::Run) {
        ins.check_flags(if ins.keyword == Keyword::Healthcheck { HEALTH_FLAGS } else { &[] }, &ctx.file)?;
    }
    match ins.keyword {
        Keyword::Arg => {
            for (k, v) in arg_decls(ctx, ins, &vars)? {
                let v = ctx.opts.build_args.get(&k).cloned().or(v).or_else(|| gvars.get(&k).cloned());
                st.args.insert(k, v);
            }
        }
        Keyword::Env => {
            let w = ws(&ins.text())?;
            let pairs: Vec<(String, String)> = if w.first().is_some_and(|f| !f.contains('=')) {
                // legacy `ENV KEY value with spaces`
                let text = ins.text();
                let rest = text.trim_start().split_once(char::is_whitespace).map(|(_, r)| r).unwrap_or("");
                vec![(w[0].clone(), word(rest.trim(), &get, esc).map_err(|e| ctx.e(ins, e))?)]
            } else {
                w.iter().map(|p| p.split_once('=').map(|(k, v)| (k.into(), v.into())).unwrap_or_default()).collect()
            };
            for (k, v) in pairs {
                if k.is_empty() {
                    return Err(ctx.e(ins, "ENV needs KEY=VALUE"));
                }
                set_env(&mut st.config, &k, &v);
            }
            st.push_empty(&created, by);
        }
        Keyword::Label => {
            let w = ws(&ins.text())?;
            if w.first().is_some_and(|f| !f.contains('=')) {
                // legacy `LABEL key value with spaces`
                let text = ins.text();
                let rest = text.trim_start().split_once(char::is_whitespace).map(|(_, r)| r).unwrap_or("");
                let v = word(rest.trim(), &get, esc).map_err(|e| ctx.e(ins, e))?;
                st.config.config.labels.insert(w[0].clone(), v);
            } else {
                for p in w {
                    let (k, v) = p.split_once('=').ok_or_else(|| ctx.e(ins, "LABEL needs KEY=VALUE"))?;
                    st.config.config.labels.insert(k.to_string(), v.to_string());
                }
            }
            st.push_empty(&created, by);
        }
        Keyword::Maintainer => {
            st.config.author = Some(ins.text());
            st.push_empty(&created, by);
        }
        Keyword::Expose => {
            for p in ws(&ins.text())? {
                let p = if p.contains('/') { p.to_ascii_lowercase() } else { format!("{p}/tcp") };
                st.config.config.exposed_ports.insert(p, Empty {});
            }
            st.push_empty(&created, by);
        }
        Keyword::Volume => {
            let vols = match &ins.args {
                Args::Exec(v) => v.clone(),
                Args::Shell(t) => ws(t)?,
            };
            for v in vols {
                st.config.config.volumes.insert(v, Empty {});
            }
            st.push_empty(&created, by);
        }
        Keyword::User => {
            st.config.config.user = Some(word(ins.text().trim(), &get, esc).map_err(|e| ctx.e(ins, e))?);
            st.push_empty(&created, by);
        }
        Keyword::Stopsignal => {
            st.config.config.stop_signal = Some(word(ins.text().trim(), &get, esc).map_err(|e| ctx.e(ins, e))?);
            st.push_empty(&created, by);
        }
        Keyword::Workdir => {
            let w = word(ins.text().trim(), &get, esc).map_err(|e| ctx.e(ins, e))?;
            let path = join_abs(&st.workdir(), &w);
            st.config.config.working_dir = Some(path.clone());
            workdir_layer(ctx, st, ins, &path).await?;
        }
        Keyword::Cmd | Keyword::Entrypoint => {
            let v = match &ins.args {
                Args::Exec(v) => v.clone(),
                Args::Shell(t) if t.trim().is_empty() => vec![],
                Args::Shell(t) => st.shell.iter().cloned().chain([t.clone()]).collect(),
            };
            if ins.keyword == Keyword::Cmd {
                st.config.config.cmd = Some(v);
                st.cmd_set = true;
            } else {
                st.config.config.entrypoint = Some(v);
                if !st.cmd_set {
                    st.config.config.cmd = None;
                }
            }
            st.push_empty(&created, by);
        }
        Keyword::Shell => {
            if let Args::Exec(v) = &ins.args {
                st.shell = v.clone();
                st.config.config.extra.insert("Shell".into(), serde_json::json!(v));
            }
            st.push_empty(&created, by);
        }
        Keyword::Healthcheck => {
            let hc = healthcheck(ctx, ins, &st.shell)?;
            st.config.config.extra.insert("Healthcheck".into(), hc);
            st.push_empty(&created, by);
        }
        Keyword::Onbuild => {
            let list = st.config.config.extra.entry("OnBuild".to_string()).or_insert_with(|| serde_json::json!([]));
            if let serde_json::Value::Array(a) = list {
                a.push(serde_json::Value::String(ins.text()));
            }
            st.push_empty(&created, by);
        }
        Keyword::Copy | Keyword::Add => copy(ctx, plan, s, st, ins, done, resolver, label).await?,
        Keyword::Run => {
            // `--mount=from=IMAGE`: images are resolved here, as for `COPY --from`
            let mut images = BTreeMap::new();
            for m in super::run::mounts_of(ctx, st, ins)? {
                let Some(f) = m.from() else { continue };
                check_from_literal(ctx, ins, f)?;
                if find_stage(plan, done, f, s, true).is_some() || ctx.named_dirs.contains_key(f) {
                    continue;
                }
                // a stage defined at or after this one (BuildKit)
                let lower = f.to_ascii_lowercase();
                if plan.names[s..].iter().any(|n| n.as_deref() == Some(lower.as_str())) {
                    return Err(ctx.e(
                        ins,
                        format!("cannot mount from stage {f:?}, stage needs to be defined before current command"),
                    ));
                }
                if !images.contains_key(f) {
                    let o = image_stage(ctx, f, &st.platform, resolver).await?;
                    images.insert(f.to_string(), o);
                }
            }
            super::run::run_step(ctx, plan, s, st, ins, done, &images, label).await?
        }
        // a stage starts at its FROM (plan_stages), and ONBUILD FROM is refused
        Keyword::From => return Err(ctx.e(ins, "FROM inside a stage")),
    }
    Ok(())
}

const HEALTH_FLAGS: &[&str] = &["interval", "timeout", "start-period", "start-interval", "retries"];

fn healthcheck(ctx: &Ctx<'_>, ins: &Instruction, shell: &[String]) -> Result<serde_json::Value> {
    let text = ins.text();
    let t = text.trim();
    if t.eq_ignore_ascii_case("none") {
        return Ok(serde_json::json!({"Test": ["NONE"]}));
    }
    let rest = t.get(..3).filter(|c| c.eq_ignore_ascii_case("cmd")).map(|_| t[3..].trim_start());
    let rest = rest.ok_or_else(|| ctx.e(ins, "HEALTHCHECK takes NONE or CMD ..."))?;
    let test = match serde_json::from_str::<Vec<String>>(rest) {
        Ok(v) if rest.starts_with('[') => std::iter::once("CMD".to_string()).chain(v).collect::<Vec<_>>(),
        _ => vec!["CMD-SHELL".to_string(), rest.to_string()],
    };
    let _ = shell;
    let mut hc = serde_json::Map::new();
    hc.insert("Test".into(), serde_json::json!(test));
    for (flag, key) in [
        ("interval", "Interval"),
        ("timeout", "Timeout"),
        ("start-period", "StartPeriod"),
        ("start-interval", "StartInterval"),
    ] {
        if let Some(v) = ins.flag(flag) {
            let ns = duration_ns(v).ok_or_else(|| ctx.e(ins, format!("--{flag}={v}: not a duration")))?;
            hc.insert(key.into(), serde_json::json!(ns));
        }
    }
    if let Some(r) = ins.flag("retries") {
        let n: u64 = r.parse().map_err(|_| ctx.e(ins, format!("--retries={r}: not a number")))?;
        hc.insert("Retries".into(), serde_json::json!(n));
    }
    Ok(serde_json::Value::Object(hc))
}

/// Go duration (`30s`, `1m30s`, `500ms`) in nanoseconds.
fn duration_ns(s: &str) -> Option<u64> {
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let n_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let n: f64 = rest[..n_end].parse().ok()?;
        rest = &rest[n_end..];
        let u_end = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let mult = match &rest[..u_end] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += n * mult;
        rest = &rest[u_end..];
    }
    Some(total as u64)
}

fn set_env(config: &mut ImageConfig, k: &str, v: &str) {
    let entry = format!("{k}={v}");
    let env = &mut config.config.env;
    match env.iter_mut().find(|e| e.split_once('=').map_or(e.as_str(), |(n, _)| n) == k) {
        Some(slot) => *slot = entry,
        None => env.push(entry),
    }
}

/// WORKDIR creates its directory when missing (a layer with it and its missing parents).
async fn workdir_layer(ctx: &mut Ctx<'_>, st: &mut Stage, ins: &Instruction, path: &str) -> Result<()> {
    let by = format!("WORKDIR {path}");
    // The directory is made as the stage's USER: a different user is a different step.
    let user = st.config.config.user.clone().unwrap_or_default();
    let key = hash(&[&st.key, &by, "user", &user]);
    let (layout, epoch, compression) = (Layout::open(ctx.layout.root())?, ctx.epoch, ctx.opts.compression);
    let (blob, cached) = match ctx.cache_lookup(&key).await? {
        Some(e) => (e.blob(), true),
        None => {
            ctx.ensure_layers(&st.layers).await?;
            let stc = st.clone();
            let p = path.to_string();
            let (uid, gid) = {
                let dirs = blocking({
                    let stc = stc.clone();
                    let layout = Layout::open(layout.root())?;
                    move || stc.dirs_blocking(&layout)
                })
                .await?;
                match stc.config.config.user.as_deref() {
                    Some(u) if !u.is_empty() => resolve_user(&dirs, u).map_err(|e| ctx.e(ins, e))?,
                    _ => (0, 0),
                }
            };
            let blob = blocking(move || -> Result<Option<LayerBlob>> {
                let dirs = stc.dirs_blocking(&layout)?;
                // a WORKDIR that is a dangling symlink creates its target (inside the image)
                let rel = resolve_in_stack(&dirs, &normalize_target(&p)?, true)
                    .map_err(|e| Error::io(format!("WORKDIR {p}"), e))?;
                if rel.is_empty() || lookup(&dirs, &rel).is_some() {
                    return Ok(None);
                }
                // `mkdir -p` as the stage's USER, as BuildKit does: every missing directory is
                // the user's, and one made in a set-group-ID directory takes its group and bit.
                let mut items: BTreeMap<String, Item> = BTreeMap::new();
                let mut cur = String::new();
                let mut parent: Option<(u32, u64)> = lookup(&dirs, "").map(|m| (m.mode(), u64::from(m.gid())));
                for c in rel.split('/') {
                    cur = join_rel(&cur, c);
                    if let Some(m) = lookup(&dirs, &cur) {
                        parent = Some((m.mode(), u64::from(m.gid())));
                        continue;
                    }
                    let (mode, g) = match parent {
                        Some((pm, pg)) if pm & 0o2000 != 0 => (0o2755, pg),
                        _ => (0o755, gid),
                    };
                    items.insert(cur.clone(), Item { kind: Kind::Dir, mode, uid, gid: g, mtime: None });
                    parent = Some((mode, g));
                }
                Ok(Some(build_items_layer_blocking(&layout, items, compression, epoch)?))
            })
            .await?;
            ctx.cache_put(&key, blob.as_ref())?;
            (blob, false)
        }
    };
    if cached {
        ctx.cached += 1;
    }
    st.key = key;
    match blob {
        Some(b) => st.push_layer(&b, &ctx.created.clone(), by),
        None => st.push_empty(&ctx.created.clone(), by),
    }
    Ok(())
}

/// Parents of `rel` missing from the stack, as 0755 root directories.
fn add_parents(dirs: &[PathBuf], rel: &str, items: &mut BTreeMap<String, Item>) {
    let mut cur = String::new();
    let parts: Vec<&str> = rel.split('/').collect();
    for p in &parts[..parts.len().saturating_sub(1)] {
        if !cur.is_empty() {
            cur.push('/');
        }
        cur.push_str(p);
        if !items.contains_key(&cur) && lookup(dirs, &cur).is_none() {
            items.insert(cur.clone(), Item { kind: Kind::Dir, mode: 0o755, uid: 0, gid: 0, mtime: None });
        }
    }
}

fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

// ---------------------------------------------------------------- COPY / ADD

#[allow(clippy::too_many_arguments)]
async fn copy(
    ctx: &mut Ctx<'_>,
    plan: &Plan,
    s: usize,
    st: &mut Stage,
    ins: &Instruction,
    done: &BTreeMap<usize, Stage>,
    resolver: &dyn ImageResolver,
    _label: &str,
) -> Result<()> {
    let is_add = ins.keyword == Keyword::Add;
    if is_add {
        ins.check_flags(&["chown", "chmod", "link", "keep-git-dir", "checksum"], &ctx.file)?;
    } else {
        ins.check_flags(&["from", "chown", "chmod", "link", "parents", "exclude"], &ctx.file)?;
    }
    // --parents[=BOOL] (BuildKit's dockerfile 1.7 labs, stable in 1.20)
    let parents = match ins.flag("parents") {
        None | Some("false") => false,
        Some("" | "true") => true,
        Some(v) => return Err(ctx.e(ins, format!("--parents={v}: expected true or false"))),
    };
    let vars = st.vars();
    let get = |n: &str| vars.get(n).cloned();
    let esc = ctx.df.escape;
    let mut args = match &ins.args {
        Args::Exec(v) => v.iter().map(|a| word(a, &get, esc)).collect::<std::result::Result<Vec<_>, _>>(),
        Args::Shell(t) => words(t, &get, esc),
    }
    .map_err(|e| ctx.e(ins, e))?;
    if args.len() < 2 {
        return Err(ctx.e(ins, format!("{} needs a source and a destination", ins.keyword)));
    }
    let dest_word = args.pop().expect("two or more");
    // --exclude=PATTERN (repeatable): .dockerignore-style patterns matched against each
    // source's name and the paths inside a source directory.
    let excludes: Vec<String> = ins
        .flag_all("exclude")
        .map(|p| word(p, &get, esc))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| ctx.e(ins, e))?;
    let exclude = parse_ignore(&excludes.join("\n"));
    let dest = join_abs(&st.workdir(), &dest_word);
    let dest_is_dir = dest_word.ends_with('/') || args.len() > 1;
    let chown = match ins.flag("chown") {
        Some(c) => Some(word(c, &get, esc).map_err(|e| ctx.e(ins, e))?),
        None => None,
    };
    let chmod = match ins.flag("chmod") {
        Some(m) => {
            let m = word(m, &get, esc).map_err(|e| ctx.e(ins, e))?;
            // BuildKit: a --chmod that expands to nothing is no --chmod
            if m.is_empty() {
                None
            } else {
                Some(Chmod::parse(&m).map_err(|why| ctx.e(ins, format!("--chmod={m}: {why}")))?)
            }
        }
        None => None,
    };
    let checksum = ins.flag("checksum").map(|c| word(c, &get, esc)).transpose().map_err(|e| ctx.e(ins, e))?;
    let (remote, _checkouts) = fetch_remote(ctx, ins, &args, is_add, checksum).await?;
    // Heredoc sources become files named after their terminator.
    let heredoc_dir = if ins.heredocs.is_empty() {
        None
    } else {
        let t = tempfile::tempdir().at(std::env::temp_dir())?;
        for h in &ins.heredocs {
            let content = if h.expand {
                super::words::heredoc(&h.content, &get).map_err(|e| ctx.e(ins, e))?
            } else {
                h.content.clone()
            };
            let p = t.path().join(&h.name);
            fs::write(&p, content).at(&p)?;
            fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).at(&p)?;
        }
        Some(t)
    };
    let from = ins.flag("from").map(str::to_string);
    if from.as_deref() == Some("") {
        return Err(ctx.e(ins, "--from needs a value: --from=STAGE or --from=IMAGE"));
    }
    if let Some(f) = &from {
        check_from_literal(ctx, ins, f)?;
        check_not_self(ctx, plan, s, ins, f)?;
    }
    // --from=NAME of a named directory context (when no stage has that name) reads it as
    // the build context is read
    let named = from
        .as_deref()
        .filter(|f| find_stage(plan, done, f, s, true).is_none())
        .and_then(|f| ctx.named_dirs.get(f))
        .cloned();
    let other = match &from {
        None => None,
        Some(_) if named.is_some() => None,
        Some(f) => Some(match find_stage(plan, done, f, s, true) {
            Some(o) => o.clone(),
            None => image_stage(ctx, f, &st.platform, resolver).await?,
        }),
    };
    // COPY --from: the source's layers (diff_ids) say what is read, so the cache key needs
    // neither a mount nor a read of the files.
    let from_key = match &other {
        Some(o) if ins.heredocs.is_empty() => {
            let ids: Vec<String> = o.config.rootfs.diff_ids.iter().map(|d| d.to_string()).collect();
            let flags = format!("{chown:?}\0{chmod:?}\0{}\0{excludes:?}\0{parents}", ins.flag("link").is_some());
            Some(hash(&[&st.key, ins.keyword.as_str(), &args.join("\0"), &dest_word, &dest, &flags, &ids.join("\0")]))
        }
        _ => None,
    };
    if let Some(key) = &from_key {
        if let Some(blob) = ctx.cached_layer(key).await? {
            ctx.cached += 1;
            ctx.log.line(&format!("  {} CACHED", truncate(&format!("{} {}", ins.keyword, ins.text()))));
            st.key = key.clone();
            let (created, by) = (ctx.created.clone(), format!("{} {}", ins.keyword, ins.text()));
            match blob {
                Some(b) => st.push_layer(&b, &created, by),
                None => st.push_empty(&created, by),
            }
            return Ok(());
        }
    }
    let root = match &other {
        None => SourceRoot {
            dir: named.as_ref().map_or_else(|| ctx.context.clone(), |n| n.dir.clone()),
            from_context: true,
            _mount: None,
            _tmp: None,
        },
        Some(o) => {
            ctx.ensure_layers(&o.layers).await?;
            mount_stage(ctx.layout, o, ctx.opts.snapshotter).await?
        }
    };
    let heredoc_names: Vec<String> =
        ins.heredocs.iter().flat_map(|h| [format!("<<{}", h.name), format!("<<-{}", h.name)]).collect();
    let spec = Arc::new(CopySpec {
        args,
        dest: dest.clone(),
        dest_is_dir: dest_is_dir || parents,
        parents,
        is_add,
        chmod: chmod.clone(),
        exclude,
        ignore: named.as_ref().map_or_else(|| ctx.ignore.clone(), |n| n.ignore.clone()),
        heredoc_dir: heredoc_dir.as_ref().map(|t| t.path().to_path_buf()),
        heredoc_names,
        root_dir: root.dir.clone(),
        from_context: root.from_context,
        remote,
        file: ctx.file.clone(),
        line: ins.line,
        found: None,
    });
    let (epoch, compression) = (ctx.epoch, ctx.opts.compression);
    let by = format!("{} {} exclude={excludes:?} parents={parents}", ins.keyword, ins.text());
    let extracted: Arc<Mutex<Extracted>> = Arc::default();
    // First the key, then the caches (local, then `--cache-from`), and only on a miss the
    // parent's filesystem and the layer. The key needs no parent filesystem: what is copied
    // (names, modes and content digests of the selected files, placed at the destination as
    // written, on an empty root) and the options, on the parent's key and ChainID, which
    // fix everything the parent decides (symlinks on the destination, directories that
    // exist, the users `--chown` names).
    let (key, hit) = match from_key {
        // a COPY --from whose key missed above
        Some(k) => (k, None),
        None => {
            // its files may be being hashed ahead: wait for them rather than hash them twice,
            // and take the digest of its entries when they were selected as here
            ctx.prehash.wait(ins.line).await;
            let (spec2, extracted2, stat, context_dir) =
                (spec.clone(), extracted.clone(), ctx.stat.clone(), ctx.context.clone());
            let parent = format!("{}\0{}", st.key, st.chain().unwrap_or_default());
            let owners = format!("{chown:?}\0{chmod:?}");
            let ahead = (from.is_none() && !is_add && !parents && ins.heredocs.is_empty())
                .then(|| Selection {
                    args: spec.args.clone(),
                    dest: spec.dest.clone(),
                    dest_is_dir: spec.dest_is_dir,
                    chmod: chmod.clone(),
                    excludes: excludes.clone(),
                })
                .and_then(|sel| ctx.prehash.take(ins.line, &sel));
            let key = match ahead {
                Some(entries) => hash(&[&parent, &by, &owners, &entries]),
                None => {
                    blocking(move || {
                        let dest_rel = normalize_target(&spec2.dest)?;
                        let mut ex = extracted2.lock().expect("extract lock");
                        let items = copy_items(&spec2, &[], &dest_rel, (None, None), &mut ex)?;
                        let stat = Some((&*stat, context_dir.as_path(), &HashMap::new()));
                        Ok(hash(&[&parent, &by, &owners, &digest_items(&items, stat)?]))
                    })
                    .await?
                }
            };
            let hit = ctx.cache_lookup(&key).await?;
            (key, hit)
        }
    };
    let (blob, cached) = match hit {
        Some(hit) => (hit.blob(), true),
        None => {
            ctx.ensure_layers(&st.layers).await?;
            let layout = Layout::open(ctx.layout.root())?;
            let stc = st.clone();
            let blob = blocking(move || {
                let e = |r: String| err(&spec.file, spec.line, r);
                let dirs = stc.dirs_blocking(&layout)?;
                let owner = match &chown {
                    Some(c) => {
                        let (u, g) = resolve_user(&dirs, c).map_err(e)?;
                        (Some(u), Some(g))
                    }
                    None => (None, None),
                };
                // A destination that is a symlink (dangling or not), or under one, is followed
                // inside the image, as Docker does: `COPY x /etc/hbase` with /etc/hbase ->
                // /usr/local/hbase writes under /usr/local/hbase.
                let dest_rel = resolve_in_stack(&dirs, &normalize_target(&spec.dest)?, true)
                    .map_err(|er| e(format!("{}: {er}", spec.dest)))?;
                let mut ex = extracted.lock().expect("extract lock");
                let items = copy_items(&spec, &dirs, &dest_rel, owner, &mut ex)?;
                let blob = build_items_layer_blocking(&layout, items, compression, epoch)?;
                ex.clear();
                Ok(blob)
            })
            .await?;
            (Some(blob), false)
        }
    };
    drop(root);
    drop(heredoc_dir);
    if cached {
        ctx.cached += 1;
        ctx.note(&key, &CacheEntry::of(blob.as_ref()));
        ctx.log.line(&format!("  {} CACHED", truncate(&format!("{} {}", ins.keyword, ins.text()))));
    } else {
        ctx.cache_put(&key, blob.as_ref())?;
        ctx.log.line(&format!("  {}", truncate(&format!("{} {}", ins.keyword, ins.text()))));
    }
    st.key = key;
    let created = ctx.created.clone();
    match blob {
        Some(b) => st.push_layer(&b, &created, format!("{} {}", ins.keyword, ins.text())),
        None => st.push_empty(&created, format!("{} {}", ins.keyword, ins.text())),
    }
    Ok(())
}

/// A source of ADD from outside the context, fetched.
#[derive(Clone, Debug)]
enum Fetched {
    /// `ADD <url>`: a blob of the store, written as `name` (mode 0600 unless `--chmod`,
    /// owned by root unless `--chown`, its mtime the server's `Last-Modified`, as BuildKit;
    /// never extracted).
    File { path: PathBuf, size: u64, name: String, mtime: Option<u64> },
    /// `ADD <git url>`: the checkout's contents, owned by root, every mtime the commit's time.
    Tree { dir: PathBuf, mtime: u64 },
}

/// ADD's http(s) and git sources among `args`, fetched (and the checkouts to keep until the
/// layer is written); `--checksum` checked. COPY refuses them, as BuildKit does.
async fn fetch_remote(
    ctx: &Ctx<'_>,
    ins: &Instruction,
    args: &[String],
    is_add: bool,
    checksum: Option<String>,
) -> Result<(BTreeMap<String, Fetched>, Vec<tempfile::TempDir>)> {
    use super::remote::{
        classify, download, git_authorization, git_checkout_blocking, http_authorization, url_file_name, GitFetch,
        Remote, UrlRequest,
    };
    if checksum.is_some() && args.len() != 1 {
        return Err(ctx.e(ins, "checksum can't be specified for multiple sources"));
    }
    let keep_git_dir = match ins.flag("keep-git-dir") {
        None | Some("false") => false,
        Some("" | "true") => true,
        Some(v) => return Err(ctx.e(ins, format!("--keep-git-dir={v}: expected true or false"))),
    };
    let (mut out, mut keep) = (BTreeMap::new(), Vec::new());
    let location = format!("{}:{}", ctx.file, ins.line);
    for a in args {
        let r = classify(a);
        if checksum.is_some() && r.is_none() {
            return Err(ctx.e(ins, format!("--checksum: {a}: checksum requires HTTP(S) or Git sources")));
        }
        let Some(r) = r else { continue };
        if !is_add {
            return Err(ctx.e(ins, format!("COPY {a}: source can't be a URL for COPY (ADD fetches URLs)")));
        }
        match r {
            Remote::Http(url) => {
                let checksum = match &checksum {
                    Some(c) => {
                        let d: crate::model::digest::Digest = c
                            .parse()
                            .map_err(|_| ctx.e(ins, format!("--checksum={c}: expected sha256:<64 hex digits>")))?;
                        if d.algorithm() != crate::model::digest::Algorithm::Sha256 {
                            return Err(ctx.e(ins, format!("--checksum={c}: only sha256 is supported")));
                        }
                        Some(d)
                    }
                    None => None,
                };
                let client = ctx.http()?;
                let authorization = http_authorization(&ctx.opts.secrets, &url)?;
                let req = UrlRequest {
                    checksum: checksum.as_ref(),
                    fresh: ctx.opts.no_cache,
                    authorization: authorization.as_deref(),
                };
                let d = download(ctx.layout, &client, &url, req, &location, ctx.log).await?;
                let f = Fetched::File { path: d.path, size: d.size, name: url_file_name(&url), mtime: d.mtime };
                out.insert(a.clone(), f);
            }
            Remote::Git(g) => {
                let base = cache_root(ctx.layout).join("git-tmp");
                let opts = GitFetch {
                    keep_git_dir,
                    checksum: checksum.clone(),
                    location: location.clone(),
                    authorization: git_authorization(&ctx.opts.secrets, &g.remote)?,
                    cache: Some(super::remote::git_cache_dir(ctx.layout)),
                    ..GitFetch::default()
                };
                let co = blocking(move || git_checkout_blocking(&g, &base, &opts)).await?;
                ctx.log.line(&format!("  {}: commit {}", super::remote::redact(a), co.commit));
                out.insert(a.clone(), Fetched::Tree { dir: co.dir.clone(), mtime: co.time });
                keep.push(co._tmp);
            }
        }
    }
    Ok((out, keep))
}

/// What a COPY/ADD reads and where it writes, fixed before any filesystem is looked at.
struct CopySpec {
    /// The sources, expanded.
    args: Vec<String>,
    /// The destination, absolute and expanded (symlinks not resolved).
    dest: String,
    /// DEST ends with `/` or there are several sources (or `--parents`).
    dest_is_dir: bool,
    /// `COPY --parents`: each source keeps its path below its root.
    parents: bool,
    is_add: bool,
    chmod: Option<Chmod>,
    exclude: Vec<IgnoreRule>,
    ignore: Arc<Vec<IgnoreRule>>,
    heredoc_dir: Option<PathBuf>,
    /// `<<NAME` and `<<-NAME` of each heredoc source.
    heredoc_names: Vec<String>,
    /// Where the sources are read: the context, a named context or a mounted stage.
    root_dir: PathBuf,
    from_context: bool,
    /// ADD's sources outside the context, by source as written.
    remote: BTreeMap<String, Fetched>,
    file: String,
    line: usize,
    /// Told each regular file of the context the walk selects, as it is found: the hashing
    /// ahead ([`start_prehash`]) hashes them while the walk goes on.
    found: Option<std::sync::mpsc::Sender<Listed>>,
}

/// Archives ADD extracted, by path (None: not an archive), kept from the key to the layer.
type Extracted = BTreeMap<PathBuf, Option<tempfile::TempDir>>;

/// The entries a COPY/ADD writes on the stack `dirs` (bottom first; empty for the cache key),
/// its destination resolved to `dest_rel`, owned by `owner` (`--chown`, resolved).
fn copy_items(
    spec: &CopySpec,
    dirs: &[PathBuf],
    dest_rel: &str,
    (uid, gid): (Option<u64>, Option<u64>),
    extracted: &mut Extracted,
) -> Result<BTreeMap<String, Item>> {
    let e = |r: String| err(&spec.file, spec.line, r);
    let (exclude, chmod) = (&spec.exclude, spec.chmod.as_ref());
    let dest_rel = dest_rel.to_string();
    let mut items: BTreeMap<String, Item> = BTreeMap::new();
    let mut unmatched: Vec<String> = Vec::new();
    let mut sources = Vec::new();
    let mut remotes = Vec::new();
    for a in &spec.args {
        if let Some(f) = spec.remote.get(a) {
            remotes.push(f);
            continue;
        }
        if spec.parents && !spec.heredoc_names.contains(a) {
            parents_source(spec, a, &dest_rel, &mut items, (uid, gid))?;
            continue;
        }
        // heredoc source?
        let (base, pattern, ctxfile) = if spec.heredoc_names.contains(a) {
            let name = a.trim_start_matches("<<").trim_start_matches('-');
            (spec.heredoc_dir.clone().expect("heredoc dir"), name.to_string(), false)
        } else {
            (spec.root_dir.clone(), normalize_target(&join_abs("/", a))?, spec.from_context)
        };
        let matches: Vec<String> = if has_glob(&pattern) {
            // A pattern matching nothing is fine next to a source that matches (Docker).
            let m = glob_in(&base, &pattern, if ctxfile { &spec.ignore } else { &[] })?;
            unmatched.extend(m.is_empty().then(|| a.clone()));
            m
        } else {
            vec![pattern.clone()]
        };
        sources.push((a, base, ctxfile, matches));
    }
    // One source path (a wildcard matching one) is copied to DEST itself; several go
    // into DEST/ (Docker).
    let dest_is_dir = spec.dest_is_dir || sources.iter().map(|s| s.3.len()).sum::<usize>() + remotes.len() > 1;
    let dest_dir_exists = lookup(dirs, &dest_rel).is_some_and(|m| m.is_dir());
    for f in remotes {
        let (u, g) = (uid.unwrap_or(0), gid.unwrap_or(0));
        match f {
            Fetched::File { path, size, name, mtime } => {
                let target = if dest_is_dir || dest_rel.is_empty() || dest_dir_exists {
                    join_rel(&dest_rel, name)
                } else {
                    dest_rel.clone()
                };
                let kind = Kind::File { src: path.clone(), size: *size, link_key: None };
                items.insert(
                    target,
                    Item { kind, mode: chmod.map_or(0o600, |c| c.apply(0o600, false)), uid: u, gid: g, mtime: *mtime },
                );
            }
            Fetched::Tree { dir, mtime } => {
                if lookup(dirs, &dest_rel).is_none() && !dest_rel.is_empty() {
                    items.insert(dest_rel.clone(), Item { kind: Kind::Dir, mode: 0o755, uid: u, gid: g, mtime: None });
                }
                let before: BTreeSet<String> = items.keys().cloned().collect();
                add_tree(dir, &dest_rel, &mut items, uid, gid, chmod, false, (&[], ""), exclude, None)?;
                for (k, it) in items.iter_mut() {
                    if !before.contains(k) {
                        it.mtime = Some(*mtime);
                    }
                }
            }
        }
    }
    for (a, base, ctxfile, matches) in sources {
        for m in matches {
            let name = Path::new(&m).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if !exclude.is_empty() && (ignored(exclude, &m) || ignored(exclude, &name)) {
                continue;
            }
            // Symlinks on the way (and a link named as the source) resolve inside the
            // context or stage root, never on the host; a dangling one is an error.
            let resolved = resolve_in_dir(&base, &m, true).map_err(|err| e(format!("{a}: {err}")))?;
            let src = if resolved.is_empty() { base.clone() } else { base.join(&resolved) };
            let where_ = if ctxfile { "build context" } else { "source" };
            let meta = src.symlink_metadata().map_err(|_| {
                if resolved == m {
                    e(format!("{a}: not found in the {where_}"))
                } else {
                    e(format!("{a}: not found in the {where_} (a symlink to /{resolved}, which does not exist)"))
                }
            })?;
            if ctxfile && !m.is_empty() && ignored(&spec.ignore, &m) {
                return Err(e(format!("{a}: excluded by .dockerignore")));
            }
            // ADD of a local archive: its contents
            if spec.is_add && meta.is_file() {
                if !extracted.contains_key(&src) {
                    extracted.insert(src.clone(), try_extract(&src)?);
                }
                if let Some(dir) = &extracted[&src] {
                    add_tree(dir.path(), &dest_rel, &mut items, uid, gid, chmod, true, (&[], ""), exclude, None)?;
                    continue;
                }
            }
            if meta.is_dir() {
                let rules: &[IgnoreRule] = if ctxfile { &spec.ignore } else { &[] };
                if lookup(dirs, &dest_rel).is_none() && !dest_rel.is_empty() {
                    // BuildKit makes a missing destination 0755 root (the contents are
                    // copied into it, not the source directory's own metadata)
                    // (--chmod applies to what is copied into it)
                    let (u, g) = (uid.unwrap_or(0), gid.unwrap_or(0));
                    items.insert(dest_rel.clone(), Item { kind: Kind::Dir, mode: 0o755, uid: u, gid: g, mtime: None });
                }
                let found = spec.found.as_ref().filter(|_| ctxfile);
                add_tree(&src, &dest_rel, &mut items, uid, gid, chmod, !ctxfile, (rules, &m), exclude, found)?;
            } else {
                let target =
                    if dest_is_dir || dest_rel.is_empty() || lookup(dirs, &dest_rel).is_some_and(|m| m.is_dir()) {
                        join_rel(&dest_rel, &name)
                    } else {
                        dest_rel.clone()
                    };
                let (u, g) = owner(&meta, uid, gid, ctxfile);
                let own = meta.permissions().mode() & 0o7777;
                let mode = chmod.map_or(own, |c| c.apply(own, meta.is_dir()));
                if let Some(found) = spec.found.as_ref().filter(|_| ctxfile && meta.is_file()) {
                    let _ = found.send(Listed::new(src.clone(), &meta));
                }
                items.insert(
                    target,
                    Item {
                        kind: Kind::File { src: src.clone(), size: meta.len(), link_key: None },
                        mode,
                        uid: u,
                        gid: g,
                        mtime: None,
                    },
                );
            }
        }
    }
    if unmatched.len() == spec.args.len() {
        return Err(e(format!("{}: no source files were specified (nothing matches)", unmatched.join(" "))));
    }
    if dest_is_dir && !dest_rel.is_empty() && lookup(dirs, &dest_rel).is_none() {
        let (u, g) = (uid.unwrap_or(0), gid.unwrap_or(0));
        items.entry(dest_rel.clone()).or_insert(Item { kind: Kind::Dir, mode: 0o755, uid: u, gid: g, mtime: None });
    }
    let keys: Vec<String> = items.keys().cloned().collect();
    for k in keys {
        add_parents(dirs, &k, &mut items);
    }
    Ok(items)
}

fn owner(meta: &fs::Metadata, uid: Option<u64>, gid: Option<u64>, from_context: bool) -> (u64, u64) {
    let (du, dg) = if from_context { (0, 0) } else { (u64::from(meta.uid()), u64::from(meta.gid())) };
    (uid.unwrap_or(du), gid.unwrap_or(dg))
}

fn join_rel(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ => format!("{a}/{b}"),
    }
}

/// The contents of directory `src` under `dest` (the directory itself is not added); each
/// regular file told to `found` as it is found.
#[allow(clippy::too_many_arguments)]
fn add_tree(
    src: &Path,
    dest: &str,
    items: &mut BTreeMap<String, Item>,
    uid: Option<u64>,
    gid: Option<u64>,
    chmod: Option<&Chmod>,
    keep_owner: bool,
    (ignore, ctx_prefix): (&[IgnoreRule], &str),
    exclude: &[IgnoreRule],
    found: Option<&std::sync::mpsc::Sender<Listed>>,
) -> Result<()> {
    walk_sorted(src, &mut |p, m| {
        let rel = p.strip_prefix(src).expect("under src");
        let rel =
            rel.to_str().ok_or_else(|| Error::Unsupported(format!("{}: file names must be UTF-8", rel.display())))?;
        let dropped = (!ignore.is_empty() && ignored(ignore, &join_rel(ctx_prefix, rel)))
            .then_some(ignore)
            .or_else(|| (!exclude.is_empty() && ignored(exclude, rel)).then_some(exclude));
        if let Some(rules) = dropped {
            // a directory: a negated rule may re-include something below, only skip it
            // when none could
            return Ok(rules.iter().any(|r| r.negate));
        }
        let item = item_of_meta(p, m, (uid, gid), chmod, keep_owner)?;
        if let (Some(found), Kind::File { src, .. }) = (found, &item.kind) {
            let _ = found.send(Listed::new(src.clone(), m));
        }
        items.insert(join_rel(dest, rel), item);
        Ok(true)
    })
}

/// Every entry below the directory `dir` (not `dir` itself), depth first and by name
/// within a directory (as `walkdir` sorted by file name, links not followed), told to
/// `visit` with its lstat, taken by its name in its open directory (one path component
/// looked up, not the whole path: the walk of a large context spends its time there);
/// `visit` says whether to go into a directory.
fn walk_sorted(dir: &Path, visit: &mut dyn FnMut(&Path, &fs::Metadata) -> Result<bool>) -> Result<()> {
    let mut entries: Vec<(OsString, fs::DirEntry)> =
        fs::read_dir(dir).at(dir)?.map(|e| e.map(|e| (e.file_name(), e))).collect::<std::io::Result<_>>().at(dir)?;
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, e) in entries {
        let p = dir.join(name);
        let m = e.metadata().at(&p)?;
        if visit(&p, &m)? && m.is_dir() {
            walk_sorted(&p, visit)?;
        }
    }
    Ok(())
}

/// The layer entry of the file, directory or symlink `p` (not followed): owned by `uid`/`gid`
/// where given, else by its own owner when `keep_owner` (a stage's file), else by root (a
/// context file); `chmod` sets its mode.
fn item_of(p: &Path, owner: (Option<u64>, Option<u64>), chmod: Option<&Chmod>, keep_owner: bool) -> Result<Item> {
    item_of_meta(p, &p.symlink_metadata().at(p)?, owner, chmod, keep_owner)
}

/// [`item_of`] with `p`'s lstat `m`, taken already.
fn item_of_meta(
    p: &Path,
    m: &fs::Metadata,
    (uid, gid): (Option<u64>, Option<u64>),
    chmod: Option<&Chmod>,
    keep_owner: bool,
) -> Result<Item> {
    let (u, g) = owner(m, uid, gid, !keep_owner);
    let mode = m.permissions().mode() & 0o7777;
    let ft = m.file_type();
    let kind = if ft.is_dir() {
        Kind::Dir
    } else if ft.is_file() {
        let link_key = (m.nlink() > 1).then(|| (m.dev(), m.ino()));
        Kind::File { src: p.to_path_buf(), size: m.len(), link_key }
    } else if ft.is_symlink() {
        let t = fs::read_link(p).at(p)?;
        Kind::Symlink { target: t.to_string_lossy().into_owned() }
    } else {
        return Err(Error::Unsupported(format!("{}: devices, sockets and fifos cannot be copied", p.display())));
    };
    let mode = match (&kind, chmod) {
        (Kind::Symlink { .. }, _) => 0o777,
        (_, Some(c)) => c.apply(mode, matches!(kind, Kind::Dir)),
        (_, None) => mode,
    };
    Ok(Item { kind, mode, uid: u, gid: g, mtime: None })
}

/// `COPY --parents SRC DEST` (BuildKit): SRC is a pattern below its root, the source's root
/// or, after a `/./` pivot, the directories the part before it names (wildcards allowed
/// there too). What the pattern matches (a directory with everything in it) is copied to
/// DEST at its path below the root; the directories on the way keep their own metadata.
/// Without wildcards SRC must exist; a wildcard matching nothing copies nothing.
fn parents_source(
    spec: &CopySpec,
    a: &str,
    dest_rel: &str,
    items: &mut BTreeMap<String, Item>,
    owner: (Option<u64>, Option<u64>),
) -> Result<()> {
    let e = |r: String| err(&spec.file, spec.line, r);
    let (pivot, pattern) = a.split_once("/./").unwrap_or(("/", a));
    let pivot = normalize_target(&join_abs("/", pivot))?;
    let pattern = normalize_target(&join_abs("/", pattern))?;
    let required = !has_glob(&pivot) && !has_glob(&pattern);
    let where_ = if spec.from_context { "build context" } else { "source" };
    let rules: &[IgnoreRule] = if spec.from_context { &spec.ignore } else { &[] };
    let roots = if has_glob(&pivot) { glob_in(&spec.root_dir, &pivot, rules)? } else { vec![pivot.clone()] };
    let include = [IgnoreRule::pattern(&pattern)];
    // the walk starts at the pattern's first wildcard
    let prefix =
        pattern.split('/').filter(|c| !c.is_empty()).take_while(|c| !has_glob(c)).collect::<Vec<_>>().join("/");
    let keep_owner = !spec.from_context;
    // symlinks on the way resolve inside the source root, never on the host
    let resolve = |logical: &str| -> Result<Option<PathBuf>> {
        match resolve_in_dir(&spec.root_dir, logical, true) {
            Ok(r) => {
                let p = if r.is_empty() { spec.root_dir.clone() } else { spec.root_dir.join(r) };
                Ok(p.symlink_metadata().is_ok().then_some(p))
            }
            Err(_) if !required => Ok(None),
            Err(er) => Err(e(format!("{a}: {er}"))),
        }
    };
    for root in roots {
        let Some(start) = resolve(&join_rel(&root, &prefix))? else {
            if required {
                return Err(e(format!("{a}: not found in the {where_}")));
            }
            continue;
        };
        if !prefix.is_empty() && spec.from_context && ignored(rules, &join_rel(&root, &prefix)) {
            if required {
                return Err(e(format!("{a}: excluded by .dockerignore")));
            }
            continue;
        }
        let mut parents_done: BTreeSet<String> = BTreeSet::new();
        let mut it = walkdir::WalkDir::new(&start).follow_links(false).sort_by_file_name().into_iter();
        while let Some(w) = it.next() {
            let w = w.map_err(|er| Error::io(er.path().unwrap_or(&start).to_path_buf(), er.into()))?;
            let sub = w.path().strip_prefix(&start).expect("under start");
            let sub = sub
                .to_str()
                .ok_or_else(|| Error::Unsupported(format!("{}: file names must be UTF-8", sub.display())))?;
            let rel = join_rel(&prefix, sub);
            if rel.is_empty() {
                continue; // the root itself: only what is in it
            }
            let dropped = (!rules.is_empty() && ignored(rules, &join_rel(&root, &rel)))
                .then_some(rules)
                .or_else(|| (!spec.exclude.is_empty() && ignored(&spec.exclude, &rel)).then_some(&spec.exclude[..]));
            if let Some(r) = dropped {
                if w.file_type().is_dir() && !r.iter().any(|r| r.negate) {
                    it.skip_current_dir();
                }
                continue;
            }
            if !pattern.is_empty() && !ignored(&include, &rel) {
                continue;
            }
            // the directories above it, with their own metadata
            let comps: Vec<&str> = rel.split('/').collect();
            for n in 1..comps.len() {
                let up = comps[..n].join("/");
                if parents_done.insert(up.clone()) {
                    if let Some(p) = resolve(&join_rel(&root, &up))? {
                        items.insert(join_rel(dest_rel, &up), item_of(&p, owner, spec.chmod.as_ref(), keep_owner)?);
                    }
                }
            }
            items.insert(join_rel(dest_rel, &rel), item_of(w.path(), owner, spec.chmod.as_ref(), keep_owner)?);
        }
    }
    Ok(())
}

/// Relative paths under `base` matching `pattern` component by component.
fn glob_in(base: &Path, pattern: &str, ignore: &[IgnoreRule]) -> Result<Vec<String>> {
    let parts: Vec<&str> = pattern.split('/').collect();
    let mut cur = vec![String::new()];
    for p in parts {
        let mut next = Vec::new();
        for c in &cur {
            // directories on the way resolve inside `base` (a symlinked directory is followed
            // there, never on the host)
            let Ok(dir) = resolve_in_dir(base, c, true).map(|r| base.join(r)) else { continue };
            if !has_glob(p) {
                let cand = join_rel(c, p);
                if resolve_in_dir(base, &cand, false).is_ok_and(|r| base.join(r).symlink_metadata().is_ok()) {
                    next.push(cand);
                }
                continue;
            }
            let Ok(rd) = fs::read_dir(&dir) else { continue };
            let mut names: Vec<String> =
                rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
            names.sort();
            for n in names {
                if fnmatch(p, &n) {
                    next.push(join_rel(c, &n));
                }
            }
        }
        cur = next;
    }
    Ok(cur.into_iter().filter(|m| !ignored(ignore, m)).collect())
}

/// The content digests of the regular files of `items` under `under`, from the stat cache
/// `sc` (or hashed, and remembered there), on every core (the stat cache is shared): a warm
/// build from a registry cache spends its time here. Those in `known` (hashed while their
/// walk went on, [`hash_while_walking`]) are taken from there.
fn context_digests(
    items: &BTreeMap<String, Item>,
    sc: &StatCache,
    under: &Path,
    known: &Known,
) -> Result<Vec<Option<[u8; 32]>>> {
    // by the item's place in `items` (a path-keyed map costs as much as the hashing here)
    let mut digests: Vec<Option<[u8; 32]>> = vec![None; items.len()];
    let mut files: Vec<(usize, &Path)> = Vec::new();
    for (i, it) in items.values().enumerate() {
        if let Kind::File { src, .. } = &it.kind {
            match known.get(src.as_os_str()) {
                Some(d) => digests[i] = Some(*d),
                None if src.starts_with(under) => files.push((i, src.as_path())),
                None => {}
            }
        }
    }
    let threads = hashing_threads(files.len().div_ceil(64).max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| -> Result<()> {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut hasher = sc.hasher();
                    let mut out = Vec::new();
                    loop {
                        let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(&(i, f)) = files.get(n) else { return Ok(out) };
                        out.push((i, hasher.digest(f)?));
                    }
                })
            })
            .collect();
        for w in workers {
            for (i, d) in w.join().expect("hashing thread")? {
                digests[i] = Some(d);
            }
        }
        Ok(())
    })?;
    Ok(digests)
}

/// Content digests of context files hashed already, by path.
type Known = HashMap<OsString, [u8; 32]>;

/// Threads that hash context files: one a core, at most 8 and at most `wanted`.
fn hashing_threads(wanted: usize) -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 8).min(wanted.max(1))
}

/// Run `walk`, which tells each context file it finds (with the stat it took) to the
/// sender it is given, while hashing threads hash those files into the stat cache `sc`: the
/// walk's result and the digests (a file that cannot be read is left out, for the caller's
/// own pass to report). The hashing ends when the walk has returned and dropped its sender.
fn hash_while_walking<T>(sc: &StatCache, walk: impl FnOnce(std::sync::mpsc::Sender<Listed>) -> T) -> (T, Known) {
    let (tx, rx) = std::sync::mpsc::channel::<Listed>();
    let rx = Mutex::new(rx);
    // before any of the walk's stats
    let at = super::statcache::now_ns();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..hashing_threads(usize::MAX))
            .map(|_| {
                scope.spawn(|| {
                    let mut hasher = sc.hasher();
                    let mut out = Vec::new();
                    loop {
                        let next = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        let Ok(l) = next else { return out };
                        if let Ok(d) = hasher.digest_listed(&l, at) {
                            out.push((l.path.into_os_string(), d));
                        }
                    }
                })
            })
            .collect();
        let r = walk(tx);
        let mut known = HashMap::new();
        for w in workers {
            known.extend(w.join().expect("hashing thread"));
        }
        (r, known)
    })
}

/// A digest of everything a layer would hold: paths, kinds, modes, owners, file contents.
/// Files under `stat.1` take their content digest from the stat cache `stat.0`, those in
/// `stat.2` (hashed already) from there.
fn digest_items(items: &BTreeMap<String, Item>, stat: Option<(&StatCache, &Path, &Known)>) -> Result<String> {
    let digests = match stat {
        Some((sc, under, known)) => context_digests(items, sc, under, known)?,
        None => vec![None; items.len()],
    };
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    for ((p, it), digest) in items.iter().zip(&digests) {
        h.update(format!("{p}\0{:o}\0{}\0{}\0{:?}\0", it.mode, it.uid, it.gid, it.mtime).as_bytes());
        match &it.kind {
            Kind::Dir => h.update(b"d"),
            Kind::Empty => h.update(b"e"),
            Kind::Symlink { target } => h.update(format!("l{target}").as_bytes()),
            Kind::Hardlink { target } => h.update(format!("h{target}").as_bytes()),
            Kind::File { src, size, link_key } => {
                h.update(format!("f{size}\0{}", link_key.is_some()).as_bytes());
                if let Some(d) = digest {
                    h.update(d);
                    continue;
                }
                let mut f = fs::File::open(src).at(src)?;
                loop {
                    let n = f.read(&mut buf).at(src)?;
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                }
            }
        }
    }
    Ok(hex::encode(h.finalize()))
}

/// If `src` is a tar (plain, gzip, zstd, xz or bzip2, as BuildKit), extract it to a temp dir.
fn try_extract(src: &Path) -> Result<Option<tempfile::TempDir>> {
    let t = tempfile::tempdir().at(std::env::temp_dir())?;
    Ok(crate::layer::extract::extract_archive_file(src, t.path(), None)?.then_some(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_durations() {
        assert_eq!(join_abs("/app", "sub/../x"), "/app/x");
        assert_eq!(join_abs("/app", "/abs"), "/abs");
        assert_eq!(join_abs("/", "."), "/");
        assert_eq!(duration_ns("1m30s"), Some(90_000_000_000));
        assert_eq!(duration_ns("500ms"), Some(500_000_000));
        assert_eq!(duration_ns("x"), None);
    }
}
