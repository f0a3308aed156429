//! `hoist build`: build an image from a `hoist.toml` build file, or from a Dockerfile and
//! a context (`hoist build [-f Dockerfile] CONTEXT`), into the local store, then write it to
//! each `--output`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use async_trait::async_trait;
use clap::Args;
use hoist::attest;
use hoist::dockerfile::{
    build_dockerfile, remote, CacheMode, DockerfileBuild, ImageResolver, NamedContext, Secret, Secrets, Snapshotter,
};
use hoist::error::{Error, Result};
use hoist::image::{build_image, BaseImage, BuildFile};
use hoist::layer::Compression;
use hoist::model::descriptor::Descriptor;
use hoist::output::{build_keys, export, merge_annotations, parse_output, refuse_index_keys, OutputSpec};
use hoist::transport::layout::Layout;
use hoist::transport::Endpoint;
use hoist::transport::Source;

use super::resolve_any;
use super::store::{apply_default_tag, deliver_with, OutputArgs};
use super::Ctx;

#[derive(Args)]
pub(crate) struct BuildArgs {
    /// Build file: a `.toml` file is a hoist build file (see docs/build-file.md), anything else
    /// a Dockerfile [default: hoist.toml without CONTEXT, CONTEXT/Dockerfile with it].
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Build context of a Dockerfile build (default `.` when `-f` names a Dockerfile): a
    /// directory, a git URL (`https://host/repo.git#REF:SUBDIR`, `git@host:repo`), an http(s)
    /// URL of a tar (plain or compressed) or of a Dockerfile, or `-`: a tar (or a
    /// Dockerfile) on stdin. `-f -` reads the Dockerfile from stdin; with a fetched
    /// context, `-f PATH` is a path inside it.
    pub context: Option<PathBuf>,
    /// Dockerfile `ARG` value (repeatable).
    #[arg(long = "build-arg", value_name = "K=V")]
    pub build_args: Vec<String>,
    /// Dockerfile stage to build (default: the last).
    #[arg(long, value_name = "STAGE")]
    pub target: Option<String>,
    /// Secret for `RUN --mount=type=secret` (repeatable): `id=ID,src=FILE` (a file),
    /// `id=ID,env=VAR` (an environment variable of hoist), or `id=ID` (the variable ID if
    /// set, else the file ID); `type=file|env` says which (`src=` then names either).
    #[arg(long, value_name = "[type=file|env,]id=ID[,src=FILE|,env=VAR]")]
    pub secret: Vec<String>,
    /// ssh agent for `RUN --mount=type=ssh` (repeatable): `default` or `ID`, with the agent's
    /// socket after `=` (default: $SSH_AUTH_SOCK).
    #[arg(long, value_name = "ID[=SOCKET]")]
    pub ssh: Vec<String>,
    /// OCI runtime for RUN (default: runc, then crun, on PATH).
    #[arg(long, value_name = "PATH")]
    pub runtime: Option<PathBuf>,
    /// Dockerfile builds: do not use the build cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Dockerfile builds: run this stage's steps without the build cache (repeatable; a stage
    /// name, or its index).
    #[arg(long = "no-cache-filter", value_name = "STAGE")]
    pub no_cache_filter: Vec<String>,
    /// Resolve base images at their registry on every build. hoist always does: a tag is
    /// never taken from the store (accepted for docker and buildx scripts).
    #[arg(long)]
    pub pull: bool,
    /// Dockerfile builds: a label on the image (repeatable), as `docker build --label`.
    #[arg(long = "label", value_name = "K=V")]
    pub labels: Vec<String>,
    /// Dockerfile builds: write the built image's digest (manifest, or index for several
    /// platforms) to FILE.
    #[arg(long, value_name = "FILE")]
    pub iidfile: Option<PathBuf>,
    /// Dockerfile builds: a named context (repeatable), `NAME=docker-image://REF` or
    /// `NAME=oci-layout://DIR[:TAG]` (the image `FROM NAME` and `--from=NAME` use), or
    /// `NAME=DIR`, a local directory read as the build context is, or a git URL
    /// (`URL#REF[:SUBDIR]`, its checkout read so), or an http(s) URL (a directory holding the
    /// download as the file `context`, as BuildKit).
    #[arg(long = "build-context", value_name = "NAME=VALUE")]
    pub build_contexts: Vec<String>,
    /// Dockerfile builds: export the step cache (repeatable): `type=registry,ref=REF[,mode=min|max]`,
    /// `type=local,dest=DIR[,mode=min|max]` (an OCI layout), or `type=inline` (in the image's
    /// config; read it back with `--cache-from IMAGE`).
    #[arg(long, value_name = "SPEC")]
    pub cache_to: Vec<String>,
    /// Dockerfile builds: read a step cache (repeatable): `type=registry,ref=REF`, a bare REF,
    /// or `type=local,src=DIR`; REF may also be an image built with `--cache-to type=inline`.
    #[arg(long, value_name = "SPEC")]
    pub cache_from: Vec<String>,
    /// How RUN sees the stage's filesystem: auto (overlayfs, else a copy), overlay, copy.
    #[arg(long, value_name = "auto|overlay|copy", env = "HOIST_SNAPSHOTTER", default_value = "auto")]
    pub snapshotter: String,
    /// Tag in the store (overrides `tag`); its tag part also names unnamed layout/OCI outputs.
    #[arg(short, long)]
    pub tag: Option<String>,
    /// Layer compression: none, gzip[:0-9], zstd[:1-22] (overrides `compression`).
    #[arg(long, value_name = "ALG[:LEVEL]")]
    pub compression: Option<Compression>,
    /// Base image in any transport (overrides `base`).
    #[arg(long, value_name = "REF")]
    pub base: Option<String>,
    /// Store the files that symlinks leading out of a source directory point to (refused otherwise).
    #[arg(long)]
    pub follow_symlinks: bool,
    /// Attach an SBOM of each image (SPDX 2.3; buildx's `--sbom`).
    #[arg(long, value_name = "true|false", num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub sbom: Option<String>,
    /// Attach SLSA provenance: true, false, mode=min|max[,version=v0.2] (buildx's `--provenance`).
    #[arg(long, value_name = "SPEC", num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub provenance: Option<String>,
    /// An attestation (repeatable): type=sbom[,format=cyclonedx][,scan-context=true][,scan-stage=true],
    /// type=provenance[,mode=max][,version=v0.2]. With mode=max the SBOM also covers the
    /// build context and the other stages.
    #[arg(long, value_name = "type=sbom|provenance,...")]
    pub attest: Vec<String>,
    /// Where attestations go: index (an attestation manifest per image, as buildx) or
    /// referrers (OCI 1.1 referrers of each image manifest).
    #[arg(long, value_name = "index|referrers")]
    pub attest_as: Option<String>,
    /// Sign each attestation as a DSSE envelope with this private key (cosign's key formats;
    /// the password from COSIGN_PASSWORD or --attest-passphrase-file).
    #[arg(long, value_name = "KEY")]
    pub attest_key: Option<PathBuf>,
    /// Read the --attest-key password from the first line of this file.
    #[arg(long, value_name = "FILE", requires = "attest_key")]
    pub attest_passphrase_file: Option<PathBuf>,
    #[command(flatten)]
    pub out: OutputArgs,
}

impl BuildArgs {
    /// The hoist.toml this command builds from, None for a Dockerfile build.
    pub(crate) fn toml_file(&self) -> Option<PathBuf> {
        match (&self.file, &self.context) {
            (Some(f), _) if f.extension().is_some_and(|e| e == "toml") => Some(f.clone()),
            (None, None) => Some(PathBuf::from("hoist.toml")),
            _ => None,
        }
    }

    /// The build file or Dockerfile, for messages.
    pub(crate) fn file_shown(&self) -> PathBuf {
        self.toml_file().unwrap_or_else(|| {
            let c = self.context.clone().unwrap_or_else(|| PathBuf::from("."));
            self.file.clone().unwrap_or_else(|| c.join("Dockerfile"))
        })
    }
}

/// The CLI's image resolver; it remembers every image resolved (the provenance's base images).
struct Resolver<'a>(&'a Ctx, std::sync::Mutex<Vec<attest::BaseImage>>);

#[async_trait]
impl ImageResolver for Resolver<'_> {
    async fn resolve(&self, reference: &str) -> Result<(Box<dyn Source>, Descriptor)> {
        let (_, src, root) = resolve_any(self.0, reference).await?;
        self.0.progress.line(&format!("image {reference}: {}", root.digest));
        if let Ok(mut seen) = self.1.lock() {
            if !seen.iter().any(|b| b.name == reference && b.digest == root.digest) {
                seen.push(attest::BaseImage { name: reference.to_string(), digest: root.digest.clone() });
            }
        }
        Ok((src, root))
    }

    fn client(&self) -> Option<std::sync::Arc<hoist::transport::registry::Client>> {
        Some(self.0.client.clone())
    }
}

/// What the provenance says about every build: started now (or at `SOURCE_DATE_EPOCH`), the
/// names the outputs give the image, a fresh invocation id.
fn build_info(frontend: &str, file: &std::path::Path, outputs: &[OutputSpec]) -> Result<attest::BuildInfo> {
    let bytes = std::fs::read(file).map_err(|e| Error::io(file, e))?;
    let digest = hoist::model::digest::Digest::sha256_of(&bytes);
    Ok(attest::BuildInfo {
        frontend: frontend.into(),
        file: Some((file.display().to_string(), digest)),
        names: outputs.iter().flat_map(|o| o.names.iter().cloned()).collect(),
        started: super::sbom::created_now(),
        invocation_id: attest::invocation_id(),
        ..Default::default()
    })
}

/// Attest the build's images as asked; the store's tag (or untagged root) moves to the new
/// root. Returns the root to deliver and whether referrers must travel with it.
async fn attest_build(
    ctx: &Ctx,
    store: &Layout,
    root: Descriptor,
    tag: Option<&str>,
    req: &attest::Request,
    mut info: attest::BuildInfo,
    signer: Option<&attest::KeySigner>,
) -> Result<(Descriptor, bool)> {
    if !req.any() {
        return Ok((root, false));
    }
    info.finished = super::sbom::created_now();
    if std::env::var_os("SOURCE_DATE_EPOCH").is_some() {
        info.started = info.finished;
    }
    let done = attest::attach(store, &root, req, &info, signer.map(|s| s as &dyn attest::Signer)).await?;
    if done.root.digest != root.digest {
        match tag {
            Some(t) => store.set_tag(&done.root, t)?,
            None => store.add_untagged(&done.root)?,
        }
    }
    for (image, ptype, blob) in &done.statements {
        ctx.progress.line(&format!("attested {image}: {ptype} ({blob})"));
    }
    Ok((done.root, req.placement == attest::Placement::Referrers))
}

/// BuildKit's build args `BUILDKIT_SBOM_SCAN_CONTEXT` and `BUILDKIT_SBOM_SCAN_STAGE`
/// (true|false): the SBOM's scan of the context and of the other stages, as `--attest
/// type=sbom,scan-context=…,scan-stage=…` ask for it. Without an SBOM they ask for nothing.
fn buildkit_scan_args(req: &mut attest::Request, build_args: &BTreeMap<String, String>) -> Result<()> {
    let sbom = req.sbom.is_some();
    for (arg, flag) in
        [("BUILDKIT_SBOM_SCAN_CONTEXT", &mut req.scan_context), ("BUILDKIT_SBOM_SCAN_STAGE", &mut req.scan_stages)]
    {
        match build_args.get(arg).map(String::as_str) {
            None => {}
            Some("true" | "1") => *flag = sbom,
            Some("false" | "0") => *flag = false,
            Some(v) => return Err(Error::Usage(format!("--build-arg {arg}={v}: expected true or false"))),
        }
    }
    Ok(())
}

fn attest_request(args: &BuildArgs) -> Result<attest::Request> {
    attest::Request::from_flags(
        args.sbom.as_deref(),
        args.provenance.as_deref(),
        &args.attest,
        args.attest_as.as_deref(),
    )
}

/// The --attest-key signer, its password asked now: a wrong one fails before anything is built.
fn attest_signer(args: &BuildArgs, req: &attest::Request) -> Result<Option<attest::KeySigner>> {
    let Some(k) = &args.attest_key else { return Ok(None) };
    if !req.any() {
        return Err(Error::Usage("--attest-key signs attestations: add --sbom, --provenance or --attest".into()));
    }
    let key = super::trust::load_private_key(k, args.attest_passphrase_file.as_deref())?;
    Ok(Some(attest::KeySigner(key)))
}

fn key_value(flag: &str, s: &str) -> Result<(String, String)> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| Error::Usage(format!("{flag} {s:?}: expected KEY=VALUE")))
}

/// `--secret` (repeatable, buildx's syntax): the build's secrets, by id.
fn secrets(args: &BuildArgs) -> Result<Secrets> {
    args.secret.iter().map(|s| Secret::parse(s)).collect()
}

async fn run_dockerfile(ctx: &Ctx, args: &BuildArgs, file: PathBuf, context: PathBuf) -> Result<i32> {
    let mut build_args = BTreeMap::new();
    for a in &args.build_args {
        let (k, v) = match a.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            // docker: `--build-arg K` takes K from the environment
            None => (a.clone(), std::env::var(a).unwrap_or_default()),
        };
        build_args.insert(k, v);
    }
    let secrets = secrets(args)?;
    let mut ssh = BTreeMap::new();
    for s in &args.ssh {
        let (id, sock) = match s.split_once('=') {
            Some((id, p)) if !p.is_empty() && !p.contains(',') => (id.to_string(), PathBuf::from(p)),
            Some(_) => return Err(Error::Usage(format!("--ssh {s:?}: expected ID[=SOCKET] (one agent socket)"))),
            None => {
                let sock = std::env::var_os("SSH_AUTH_SOCK").filter(|v| !v.is_empty()).ok_or_else(|| {
                    Error::Usage(format!("--ssh {s}: SSH_AUTH_SOCK is not set; pass --ssh {s}=SOCKET"))
                })?;
                (s.clone(), PathBuf::from(sock))
            }
        };
        if id.is_empty() {
            return Err(Error::Usage(format!("--ssh {s:?}: expected ID[=SOCKET]")));
        }
        // buildx also takes private key files; hoist forwards an agent only
        use std::os::unix::fs::FileTypeExt;
        match std::fs::metadata(&sock) {
            Ok(m) if m.file_type().is_socket() => {}
            Ok(_) => {
                return Err(Error::Usage(format!(
                    "--ssh {id}={}: not a socket (hoist forwards an ssh agent, not key files)",
                    sock.display()
                )))
            }
            Err(e) => return Err(Error::Usage(format!("--ssh {id}={}: {e}", sock.display()))),
        }
        ssh.insert(id, sock);
    }
    let opts = DockerfileBuild {
        dockerfile: file,
        context,
        build_args,
        target: args.target.clone(),
        platforms: ctx.settings.platforms.clone(),
        secrets,
        ssh,
        runtime: args.runtime.clone(),
        compression: args.compression.unwrap_or_default(),
        source_date_epoch: None,
        tag: args.tag.clone(),
        no_cache: args.no_cache,
        no_cache_filter: args.no_cache_filter.clone(),
        labels: args.labels.iter().map(|l| key_value("--label", l)).collect::<Result<_>>()?,
        annotations: BTreeMap::new(),
        index_annotations: BTreeMap::new(),
        snapshotter: Snapshotter::parse(&args.snapshotter).ok_or_else(|| {
            Error::Usage(format!("--snapshotter {:?}: expected auto, overlay or copy", args.snapshotter))
        })?,
        cache_from: args.cache_from.iter().map(|s| cache_from(s)).collect::<Result<_>>()?,
        cache_export: Vec::new(),
        cache_inline: false,
        build_contexts: args
            .build_contexts
            .iter()
            .map(|s| key_value("--build-context", s).map(|(k, v)| (k, NamedContext::parse(&v))))
            .collect::<Result<_>>()?,
        keep_stages: false,
        jobs: Some(ctx.settings.copy.jobs),
    };
    let mut cache_to: Vec<(OutputSpec, CacheMode)> = Vec::new();
    let mut opts = opts;
    for s in &args.cache_to {
        match cache_to_spec(s)? {
            CacheTo::Export(out, mode) => cache_to.push((*out, mode)),
            CacheTo::Inline => opts.cache_inline = true,
        }
    }
    let mut outputs = args.out.parse()?;
    opts.cache_export = cache_to.iter().map(|(_, m)| *m).collect();
    apply_dockerfile_keys(&mut opts, &outputs, args.compression.is_some())?;
    apply_default_tag(&mut outputs, args.tag.as_deref());
    let out_signer = args.out.sign.load_for_outputs(&outputs)?;
    let store = args.out.open_store()?;
    let mut req = attest_request(args)?;
    buildkit_scan_args(&mut req, &opts.build_args)?;
    opts.keep_stages = req.scan_stages;
    let signer = attest_signer(args, &req)?;
    let mut info = build_info("dockerfile.v0", &opts.dockerfile, &outputs)?;
    let resolver = Resolver(ctx, Default::default());
    let outcome = build_dockerfile(&store, &opts, &resolver, &BuildLines(&ctx.progress)).await?;
    ctx.progress.line(&format!(
        "built {} ({}) in oci:{}: {} RUN executed, {} steps cached, {} context files hashed ({} from the stat cache)",
        outcome.root.digest,
        outcome.root.media_type,
        store.root().display(),
        outcome.runs,
        outcome.cached,
        outcome.hashed,
        outcome.stat_hits
    ));
    if req.any() {
        info.target = opts.target.clone();
        info.platforms = ctx.settings.platform_names.clone();
        info.args = opts.build_args.clone();
        info.secrets = opts.secrets.keys().cloned().collect();
        info.bases = resolver.1.lock().map(|b| b.clone()).unwrap_or_default();
        let dir = std::fs::canonicalize(&opts.context).map_err(|e| Error::io(&opts.context, e))?;
        let digest = tokio::task::block_in_place(|| attest::context_digest_blocking(&dir))?;
        info.context = Some((dir.display().to_string(), digest));
        info.stages = outcome.stages.clone();
    }
    // a cache exported to another repository of the registry it was read from mounts too
    let src = outcome.origins.over(&store);
    for ((out, _), cache) in cache_to.iter().zip(&outcome.caches) {
        for r in export(&src, cache, std::slice::from_ref(out), &ctx.client, None, &ctx.copy_options(), &ctx.progress)
            .await?
        {
            ctx.progress.line(&format!(
                "build cache {} -> {}: {} blob(s) written, {} existed",
                cache.digest, r.destination, r.report.blobs_uploaded, r.report.blobs_existed
            ));
        }
    }
    let (root, referrers) =
        attest_build(ctx, &store, outcome.root, args.tag.as_deref(), &req, info, signer.as_ref()).await?;
    // the digest of what is delivered: the index with the attestations, when there are some (buildx)
    if let Some(p) = &args.iidfile {
        std::fs::write(p, root.digest.to_string()).map_err(|e| Error::io(p, e))?;
    }
    let origins = &outcome.origins;
    let metadata = args.out.metadata_file.as_deref();
    deliver_with(ctx, &store, &root, &outputs, metadata, referrers, origins, out_signer.as_ref()).await
}

/// buildx's cache spec (`type=registry,ref=R,...`) as `(type, value of ref/src/dest, mode)`
/// (`type=inline` has no value).
fn cache_spec(flag: &str, s: &str, path_key: &str) -> Result<(String, String, CacheMode)> {
    if !s.contains('=') {
        return Ok(("registry".into(), s.to_string(), CacheMode::Min));
    }
    let (mut ty, mut target, mut mode) = (None, None, None);
    for part in s.split(',') {
        let (k, v) = key_value(flag, part)?;
        match k.as_str() {
            "type" => ty = Some(v),
            k if k == "ref" || k == path_key => target = Some(v),
            "mode" if flag == "--cache-to" => {
                mode = Some(
                    CacheMode::parse(&v)
                        .ok_or_else(|| Error::Usage(format!("{flag} {s:?}: mode={v}: expected min or max")))?,
                )
            }
            _ => return Err(Error::Usage(format!("{flag} {s:?}: unknown key {k:?}"))),
        }
    }
    let ty = ty.unwrap_or_else(|| "registry".into());
    let want = if ty == "local" { path_key } else { "ref" };
    match (ty.as_str(), target) {
        ("registry" | "local", Some(t)) => Ok((ty, t, mode.unwrap_or_default())),
        ("registry" | "local", None) => Err(Error::Usage(format!("{flag} {s:?}: type={ty} needs {want}="))),
        ("inline", None) if flag == "--cache-to" => match mode {
            Some(CacheMode::Max) => Err(Error::Usage(format!(
                "{flag} {s:?}: an inline cache holds the image's own steps only (mode=min); use type=registry for mode=max"
            ))),
            _ => Ok((ty, String::new(), CacheMode::Min)),
        },
        ("inline", Some(_)) if flag == "--cache-to" => {
            Err(Error::Usage(format!("{flag} {s:?}: type=inline goes into the image: it takes no ref")))
        }
        ("inline", _) => Err(Error::Usage(format!(
            "{flag} {s:?}: an image's inline cache is read with --cache-from type=registry,ref=IMAGE"
        ))),
        _ => Err(Error::Usage(format!("{flag} {s:?}: type={ty} is not supported (registry, local or inline)"))),
    }
}

/// `--cache-from`: the reference the build's resolver opens.
fn cache_from(s: &str) -> Result<String> {
    let (ty, t, _) = cache_spec("--cache-from", s, "src")?;
    Ok(if ty == "local" { format!("oci:{t}:{CACHE_TAG}") } else { t })
}

/// What one `--cache-to` asks for.
enum CacheTo {
    /// A cache manifest written there, holding what the mode says.
    Export(Box<OutputSpec>, CacheMode),
    /// The step table in the image's config.
    Inline,
}

/// `--cache-to`: where the cache goes, and what it holds.
fn cache_to_spec(s: &str) -> Result<CacheTo> {
    let (ty, t, mode) = cache_spec("--cache-to", s, "dest")?;
    let out = match ty.as_str() {
        "inline" => return Ok(CacheTo::Inline),
        "local" => {
            OutputSpec::new(Endpoint::Layout { path: t.into(), reference: None }, vec![CACHE_TAG.into()], vec![])
        }
        _ => parse_output(&format!("type=registry,name={t}"))?,
    };
    Ok(CacheTo::Export(Box::new(out), mode))
}

/// The tag of a `type=local` cache in its OCI layout.
const CACHE_TAG: &str = "latest";

/// Whether `-f` or CONTEXT is `-` (stdin).
fn is_stdin(p: Option<&PathBuf>) -> bool {
    p.is_some_and(|p| p.as_os_str() == "-")
}

/// A CONTEXT that is fetched, not a local directory: `-`, a git or http(s) URL.
fn is_fetched(c: Option<&PathBuf>) -> bool {
    is_stdin(c) || c.and_then(|c| c.to_str()).is_some_and(|c| remote::classify(c).is_some())
}

/// The files a build reads, checked before anything starts: a missing one is bad input
/// (exit 2) naming its flag; no build file here, but a Dockerfile, suggests `hoist build .`.
fn check_inputs(args: &BuildArgs) -> Result<()> {
    let (file, context) = (args.file.as_ref(), args.context.as_ref());
    if is_stdin(file) && is_stdin(context) {
        return Err(Error::Usage("-f - and CONTEXT -: stdin holds one of them, not both".into()));
    }
    if is_fetched(context) {
        return Ok(());
    }
    if let Some(f) = file.filter(|f| !is_stdin(Some(f)) && !f.is_file()) {
        let why = if f.exists() { "not a file" } else { "no such file" };
        return Err(Error::Usage(format!("-f {}: {why}", f.display())));
    }
    if let Some(c) = context.filter(|c| !c.is_dir()) {
        return Err(Error::Usage(format!("build context {}: no such directory", c.display())));
    }
    if is_stdin(file) {
        return Ok(());
    }
    match (&args.file, &args.context) {
        (None, None) if !std::path::Path::new("hoist.toml").is_file() => {
            let hint = if std::path::Path::new("Dockerfile").is_file() {
                "this directory holds a Dockerfile: build it with `hoist build .`"
            } else {
                "name a build file with -f FILE, or a Dockerfile's context: `hoist build DIR`"
            };
            Err(Error::Usage(format!("no hoist.toml in the current directory; {hint}")))
        }
        (None, Some(c)) if !c.join("Dockerfile").is_file() => Err(Error::Usage(format!(
            "{}: no such file (name the Dockerfile with -f FILE)",
            c.join("Dockerfile").display()
        ))),
        _ => Ok(()),
    }
}

pub(crate) async fn run(ctx: &Ctx, args: BuildArgs) -> Result<i32> {
    check_inputs(&args)?;
    let Some(file) = args.toml_file() else {
        let (context, file, _fetched) = dockerfile_inputs(ctx, &args).await?;
        return run_dockerfile(ctx, &args, file, context).await;
    };
    if args.context.is_some()
        || !args.build_args.is_empty()
        || args.target.is_some()
        || !args.secret.is_empty()
        || !args.ssh.is_empty()
        || !args.labels.is_empty()
        || args.iidfile.is_some()
        || !args.cache_to.is_empty()
        || !args.cache_from.is_empty()
        || !args.build_contexts.is_empty()
        || !args.no_cache_filter.is_empty()
    {
        return Err(Error::Usage(
            "CONTEXT, --build-arg, --target, --secret, --ssh, --label, --iidfile, --build-context, --no-cache-filter and --cache-to/--cache-from are for Dockerfile builds".into(),
        ));
    }
    let mut spec = BuildFile::load(&file)?;
    if let Some(t) = &args.tag {
        spec.tag = Some(t.clone());
    }
    if let Some(c) = args.compression {
        spec.compression = c;
    }
    if let Some(b) = &args.base {
        spec.base = Some(b.clone());
    }
    spec.follow_symlinks |= args.follow_symlinks;
    // The global --platform takes a comma-separated list here.
    if !ctx.settings.platform_names.is_empty() {
        spec.platforms = ctx.settings.platform_names.clone();
    }
    let mut outputs = args.out.parse()?;
    apply_output_keys(&mut spec, &outputs, args.compression.is_some())?;
    apply_default_tag(&mut outputs, spec.tag.as_deref());
    let out_signer = args.out.sign.load_for_outputs(&outputs)?;
    let store = args.out.open_store()?;
    let req = attest_request(&args)?;
    let signer = attest_signer(&args, &req)?;
    let mut info = build_info("hoist.toml", &file, &outputs)?;
    info.platforms = spec.platforms.clone();
    info.labels = spec.labels.clone();
    let root = match &spec.base {
        Some(b) => {
            let (_, src, base_root) = resolve_any(ctx, b).await?;
            ctx.progress.line(&format!("base {b}: {}", base_root.digest));
            info.bases.push(attest::BaseImage { name: b.clone(), digest: base_root.digest.clone() });
            let base = BaseImage {
                jobs: ctx.settings.copy.jobs,
                progress: &ctx.progress,
                ..BaseImage::new(src.as_ref(), base_root, Some(b.clone()))
            };
            build_image(&store, &spec, Some(base)).await?
        }
        None => build_image(&store, &spec, None).await?,
    };
    ctx.progress.line(&format!("built {} ({}) in oci:{}", root.digest, root.media_type, store.root().display()));
    let (root, referrers) = attest_build(ctx, &store, root, spec.tag.as_deref(), &req, info, signer.as_ref()).await?;
    let metadata = args.out.metadata_file.as_deref();
    deliver_with(ctx, &store, &root, &outputs, metadata, referrers, &Default::default(), out_signer.as_ref()).await
}

/// What a fetched context or a Dockerfile from stdin keeps on disk until the build ends.
struct Fetched {
    _context: Option<remote::FetchedContext>,
    _dockerfile: Option<tempfile::TempDir>,
}

/// The context directory and the Dockerfile of a Dockerfile build: a local directory, or a
/// context fetched by the library (a git or http(s) URL, a tar on stdin); `-f -` reads the
/// Dockerfile from stdin. With a fetched context a relative `-f` is inside it.
async fn dockerfile_inputs(ctx: &Ctx, args: &BuildArgs) -> Result<(PathBuf, PathBuf, Fetched)> {
    let tmp = std::env::temp_dir();
    let fetched = match args.context.as_ref() {
        Some(c) if is_stdin(Some(c)) => {
            let tmp = tmp.clone();
            let read = move || remote::context_from_reader_blocking(std::io::stdin().lock(), &tmp);
            Some(tokio::task::spawn_blocking(read).await.map_err(|e| Error::task("reading stdin", e))??)
        }
        Some(c) if is_fetched(Some(c)) => {
            let spec = c.to_str().unwrap_or_default();
            ctx.progress.line(&format!("fetching build context {}", remote::redact(spec)));
            // BuildKit's build arg: the checkout keeps its .git
            let keep_git_dir = args.build_args.iter().any(|a| {
                matches!(a.as_str(), "BUILDKIT_CONTEXT_KEEP_GIT_DIR=1" | "BUILDKIT_CONTEXT_KEEP_GIT_DIR=true")
            });
            let store = args.out.open_store()?;
            Some(remote::fetch_context(spec, &ctx.client, &store, &tmp, keep_git_dir, &secrets(args)?).await?)
        }
        _ => None,
    };
    let context = match &fetched {
        Some(f) => f.dir.clone(),
        None => args.context.clone().unwrap_or_else(|| PathBuf::from(".")),
    };
    let (file, df_tmp) = match (&args.file, &fetched) {
        (Some(f), _) if is_stdin(Some(f)) => {
            let tmp = tmp.clone();
            let (t, p) = tokio::task::spawn_blocking(move || {
                remote::dockerfile_from_reader_blocking(std::io::stdin().lock(), &tmp)
            })
            .await
            .map_err(|e| Error::task("reading stdin", e))??;
            (p, Some(t))
        }
        (Some(f), Some(_)) => (context.join(f), None),
        (None, Some(fc)) => (fc.dockerfile.clone().unwrap_or_else(|| context.join("Dockerfile")), None),
        _ => (args.file_shown(), None),
    };
    if fetched.is_some() && !file.is_file() {
        return Err(Error::Usage(format!(
            "{}: no such file in the fetched build context (name it with -f PATH inside the context)",
            file.strip_prefix(&context).unwrap_or(&file).display()
        )));
    }
    Ok((context, file, Fetched { _context: fetched, _dockerfile: df_tmp }))
}

/// The `--output` keys that change what is built, applied to the one build: annotations are
/// added to the manifests (and to the index a multi-platform build makes), index annotations
/// to the index only, `compression=` and `compression-level=` choose the layer compression,
/// and `--compression` must agree with them. `force-compression=true` is honoured when every
/// layer is built here (no base image).
fn apply_output_keys(spec: &mut hoist::image::ImageSpec, outputs: &[OutputSpec], flag: bool) -> Result<()> {
    refuse_index_keys(outputs, spec.platforms.len().max(1))?;
    let keys = build_keys(outputs)?;
    merge_annotations(&mut spec.annotations, keys.annotations)?;
    merge_annotations(&mut spec.index_annotations, keys.index_annotations)?;
    if keys.force && spec.base.is_some() {
        return Err(Error::Unsupported(
            "--output force-compression=true: hoist keeps a base image's layers as they are; build without a base or drop the key".into(),
        ));
    }
    if let Some(parsed) = keys.compression {
        if flag && parsed != spec.compression {
            return Err(Error::Usage("--compression and --output compression= disagree".into()));
        }
        spec.compression = parsed;
    }
    Ok(())
}

/// The same keys for a Dockerfile build: annotations and compression honoured;
/// `force-compression=true` refused (a `FROM` image's layers are kept as they are).
fn apply_dockerfile_keys(opts: &mut DockerfileBuild, outputs: &[OutputSpec], flag: bool) -> Result<()> {
    refuse_index_keys(outputs, opts.platforms.len().max(1))?;
    let keys = build_keys(outputs)?;
    if keys.force {
        return Err(Error::Unsupported(
            "--output force-compression=true: a Dockerfile build keeps its FROM image's layers as they are; drop the key".into(),
        ));
    }
    opts.annotations = keys.annotations;
    opts.index_annotations = keys.index_annotations;
    if let Some(parsed) = keys.compression {
        if flag && parsed != opts.compression {
            return Err(Error::Usage("--compression and --output compression= disagree".into()));
        }
        opts.compression = parsed;
    }
    Ok(())
}

/// A Dockerfile build's notes and RUN output, as the progress mode shows them.
struct BuildLines<'a>(&'a super::progress::CliProgress);

impl hoist::dockerfile::BuildLog for BuildLines<'_> {
    fn line(&self, s: &str) {
        self.0.line(s)
    }

    fn run_output(&self) -> Option<hoist::dockerfile::RunOutput> {
        self.0.run_output()
    }

    fn transfers(&self) -> &dyn hoist::transport::Progress {
        self.0
    }
}
