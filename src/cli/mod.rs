//! Argument parsing and dispatch. Data goes to stdout, progress and logs to stderr.

mod artifact;
mod build;
mod merge;
mod model;
mod progress;
mod referrers;
mod store;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use hoist::copy::{self, CopyOptions, CopyReport};
use hoist::error::{Error, Result};
use hoist::model::document::View;
use hoist::transport::layout::{tag_of_ref_name, Layout};
use hoist::transport::registry::credentials::{self, Credential};
use hoist::transport::registry::{Client, RegistryOptions, UploadMode};
use hoist::transport::{open_destination, open_source, Endpoint};
use hoist::transport::{Destination, Source};
use hoist::Descriptor;

use progress::{human, CliProgress};

#[derive(Parser)]
#[command(name = "hoist", version, about = "Build, store and ship OCI images and artifacts without a daemon")]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
pub(crate) struct Global {
    /// More logs on stderr (-v: info, -vv: debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// No progress output.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Output format for results on stdout.
    #[arg(long, global = true, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Allow plain HTTP for this registry (repeatable). Loopback registries fall back to HTTP by themselves.
    #[arg(long = "insecure-registry", global = true, value_name = "HOST[:PORT]")]
    pub insecure: Vec<String>,
    /// Use plain HTTP for every registry.
    #[arg(long, global = true)]
    pub plain_http: bool,
    /// Verify TLS certificates.
    #[arg(long, global = true, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub tls_verify: bool,
    /// Extra CA certificate (PEM) to trust (repeatable).
    #[arg(long = "ca-file", global = true)]
    pub ca_file: Vec<PathBuf>,
    /// Credentials USER:PASSWORD instead of the auth files.
    #[arg(long, global = true, env = "HOIST_CREDS", hide_env_values = true)]
    pub creds: Option<String>,
    /// Blobs transferred at once.
    #[arg(short, long, global = true, default_value_t = 4)]
    pub jobs: usize,
    /// Attempts per request before giving up.
    #[arg(long, global = true, default_value_t = 6)]
    pub retries: u32,
    /// Blob upload strategy.
    #[arg(long, global = true, value_enum, default_value_t = Upload::Auto)]
    pub upload: Upload,
    /// Chunk size for chunked uploads, in MiB.
    #[arg(long, global = true, default_value_t = 16)]
    pub chunk_size_mib: u64,
    /// Platform (os/arch[/variant]) to pick from an index where one image is needed.
    #[arg(long, global = true)]
    pub platform: Option<String>,
    /// Seconds without data before a transfer counts as stalled.
    #[arg(long, global = true, default_value_t = 60)]
    pub read_timeout: u64,
    /// Offer HTTP/2 to TLS registries (default: HTTP/1.1, a connection per blob in flight).
    #[arg(long, global = true)]
    pub http2: bool,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub(crate) enum Format {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Upload {
    Auto,
    Monolithic,
    Chunked,
}

#[derive(Subcommand)]
enum Command {
    /// Copy an image, index or artifact between any two of registry, layout and archive.
    Copy {
        /// oci:DIR[:TAG|@DIGEST], oci-archive:FILE[:TAG], docker-archive:FILE, docker://REF or REF
        src: String,
        dst: String,
    },
    /// Push an OCI layout (all of it, or one tag) to a registry, byte for byte.
    Push {
        /// Layout directory, optionally DIR:TAG or DIR@DIGEST (or any source transport)
        layout: String,
        /// Registry reference
        reference: String,
    },
    /// Pull a registry reference into an OCI layout (or any destination).
    Pull { reference: String, dst: String },
    /// Show a manifest or index.
    Inspect {
        reference: String,
        /// Print the exact manifest bytes.
        #[arg(long)]
        raw: bool,
        /// Print the config blob instead of the manifest.
        #[arg(long)]
        config: bool,
    },
    /// List tags of a repository or layout.
    Tags { reference: String },
    /// Store credentials for a registry.
    Login {
        registry: String,
        #[arg(short, long)]
        username: String,
        #[arg(short, long)]
        password: Option<String>,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Remove stored credentials for a registry.
    Logout { registry: String },
    /// Maintain a local OCI layout.
    #[command(subcommand)]
    Layout(LayoutCmd),
    /// Build an image from a hoist.toml build file (the global --platform takes a list here).
    Build(build::BuildArgs),
    /// Push or pack OCI artifacts made of files.
    #[command(subcommand)]
    Artifact(artifact::ArtifactCmd),
    /// Pack a model directory as a ModelPack artifact, or unpack one.
    #[command(subcommand)]
    Model(model::ModelCmd),
    /// List the manifests whose subject is REF.
    Referrers(referrers::ReferrersArgs),
    /// Make image indexes from manifests and indexes anywhere (multi-node builds).
    #[command(subcommand)]
    Index(merge::IndexCmd),
    /// Make and read CNAB bundles stored as OCI indexes.
    #[command(subcommand)]
    Bundle(merge::BundleCmd),
}

#[derive(Subcommand)]
enum LayoutCmd {
    /// Verify every blob and every reference.
    Fsck { dir: PathBuf },
    /// Delete blobs no index entry reaches, and stale temp files.
    Gc {
        dir: PathBuf,
        #[arg(long)]
        dry_run: bool,
    },
}

pub fn run() -> i32 {
    let cli = Cli::parse();
    let level = match cli.global.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("HOIST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("hoist={level}")));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).init();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hoist: cannot start runtime: {e}");
            return 1;
        }
    };
    match rt.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hoist: error: {e}");
            e.exit_code()
        }
    }
}

/// What every command gets: global flags, the registry client, progress output.
pub(crate) struct Ctx {
    pub global: Global,
    pub client: Arc<Client>,
    pub progress: CliProgress,
}

impl Ctx {
    pub fn copy_options(&self) -> CopyOptions {
        CopyOptions { jobs: self.global.jobs, ..Default::default() }
    }
    pub fn json(&self) -> bool {
        self.global.format == Format::Json
    }
}

fn client_for(g: &Global) -> Result<Arc<Client>> {
    let credential = match &g.creds {
        Some(c) => {
            let (u, p) = c.split_once(':').ok_or_else(|| Error::Other("--creds must be USER:PASSWORD".into()))?;
            Some(Credential::Basic { username: u.to_string(), password: p.to_string() })
        }
        None => None,
    };
    let opts = RegistryOptions {
        insecure: g.insecure.clone(),
        plain_http: g.plain_http,
        tls_verify: g.tls_verify,
        ca_files: g.ca_file.clone(),
        credential,
        retry: hoist::transport::registry::RetryPolicy { max_attempts: g.retries.max(1), ..Default::default() },
        upload: match g.upload {
            Upload::Auto => UploadMode::Auto,
            Upload::Monolithic => UploadMode::Monolithic,
            Upload::Chunked => UploadMode::Chunked,
        },
        chunk_size: g.chunk_size_mib.max(1) << 20,
        read_timeout: Duration::from_secs(g.read_timeout.max(1)),
        http2: g.http2,
        ..Default::default()
    };
    Client::new(opts)
}

pub(crate) fn parse_platform(s: &str) -> Result<hoist::Platform> {
    hoist::Platform::parse(s).ok_or_else(|| Error::InvalidReference {
        reference: s.to_string(),
        reason: "platform must be os/arch[/variant]".into(),
    })
}

/// A bare path (existing directory, or starting with `.`/`/`) means an OCI layout.
pub(crate) fn endpoint(s: &str) -> Result<Endpoint> {
    let looks_local = s.starts_with('/') || s.starts_with("./") || s.starts_with("../") || s == ".";
    if !s.contains("://")
        && !s.starts_with("oci:")
        && !s.starts_with("oci-archive:")
        && !s.starts_with("docker-archive:")
    {
        let (path_part, _) = match s.rsplit_once('@') {
            Some((p, d)) if d.contains(':') => (p, Some(d)),
            _ => match s.rsplit_once(':') {
                Some((p, t)) if !t.contains('/') => (p, Some(t)),
                _ => (s, None),
            },
        };
        if looks_local
            || std::path::Path::new(path_part).join("oci-layout").exists()
            || std::path::Path::new(s).join("oci-layout").exists()
        {
            return format!("oci:{s}").parse();
        }
    }
    s.parse()
}

async fn dispatch(cli: Cli) -> Result<i32> {
    let client = client_for(&cli.global)?;
    let ctx = Ctx { progress: CliProgress::new(cli.global.quiet), client, global: cli.global };
    match cli.command {
        Command::Copy { src, dst } => transfer(&ctx, &endpoint(&src)?, &endpoint(&dst)?).await,
        Command::Push { layout, reference } => {
            let src = endpoint(&layout)?;
            let src = match src {
                Endpoint::Registry(_) => format!("oci:{layout}").parse()?,
                other => other,
            };
            let dst: Endpoint = reference.parse()?;
            if !matches!(dst, Endpoint::Registry(_)) {
                return Err(Error::InvalidReference {
                    reference,
                    reason: "push needs a registry reference; use `hoist copy` for other destinations".into(),
                });
            }
            transfer(&ctx, &src, &dst).await
        }
        Command::Pull { reference, dst } => {
            let src: Endpoint = reference.parse()?;
            let dst = match endpoint(&dst)? {
                Endpoint::Registry(_) => format!("oci:{dst}").parse()?,
                other => other,
            };
            transfer(&ctx, &src, &dst).await
        }
        Command::Inspect { reference, raw, config } => inspect(&ctx, &endpoint(&reference)?, raw, config).await,
        Command::Tags { reference } => {
            let ep = endpoint(&reference)?;
            let src = open_source(&ep, &ctx.client)?;
            let tags = src.list_tags().await?;
            if ctx.json() {
                println!("{}", serde_json::json!({ "tags": tags }));
            } else {
                for t in tags {
                    println!("{t}");
                }
            }
            Ok(0)
        }
        Command::Login { registry, username, password, password_stdin } => {
            let password = match (password, password_stdin) {
                (Some(p), false) => p,
                (None, true) => {
                    let mut s = String::new();
                    std::io::stdin().read_to_string(&mut s).map_err(|e| Error::io("<stdin>", e))?;
                    s.trim_end_matches(['\n', '\r']).to_string()
                }
                _ => return Err(Error::Other("give exactly one of --password or --password-stdin".into())),
            };
            let registry = registry
                .strip_prefix("https://")
                .or(registry.strip_prefix("http://"))
                .unwrap_or(&registry)
                .trim_end_matches('/')
                .to_string();
            let mut g = ctx.global.clone();
            g.creds = Some(format!("{username}:{password}"));
            let checker = client_for(&g)?;
            checker.check_login(&registry, None).await?;
            let (r, u, p) = (registry.clone(), username.clone(), password.clone());
            let path = tokio::task::spawn_blocking(move || credentials::store_blocking(&r, &u, &p))
                .await
                .map_err(|e| Error::Other(e.to_string()))??;
            ctx.progress.line(&format!("Login succeeded for {registry} (saved in {})", path.display()));
            Ok(0)
        }
        Command::Logout { registry } => {
            let r = registry.clone();
            let removed = tokio::task::spawn_blocking(move || credentials::remove_blocking(&r))
                .await
                .map_err(|e| Error::Other(e.to_string()))??;
            if removed {
                ctx.progress.line(&format!("Removed credentials for {registry}"));
                Ok(0)
            } else {
                Err(Error::not_found(
                    format!("credentials for {registry}"),
                    credentials::login_file().display().to_string(),
                ))
            }
        }
        Command::Build(args) => build::run(&ctx, args).await,
        Command::Artifact(cmd) => artifact::run(&ctx, cmd).await,
        Command::Model(cmd) => model::run(&ctx, cmd).await,
        Command::Referrers(args) => referrers::run(&ctx, args).await,
        Command::Index(cmd) => merge::run_index(&ctx, cmd).await,
        Command::Bundle(cmd) => merge::run_bundle(&ctx, cmd).await,
        Command::Layout(LayoutCmd::Fsck { dir }) => {
            let layout = Layout::open(&dir)?;
            let problems = layout.fsck().await?;
            if ctx.json() {
                println!("{}", serde_json::json!({ "layout": dir, "problems": problems }));
            } else {
                for p in &problems {
                    println!("{p}");
                }
            }
            if problems.is_empty() {
                ctx.progress.line(&format!("oci:{}: ok", dir.display()));
                Ok(0)
            } else {
                eprintln!("hoist: oci:{}: {} problem(s)", dir.display(), problems.len());
                Ok(5)
            }
        }
        Command::Layout(LayoutCmd::Gc { dir, dry_run }) => {
            let layout = Layout::open_for_gc(&dir)?;
            let report = layout.gc(dry_run).await?;
            let verb = if dry_run { "would remove" } else { "removed" };
            if ctx.json() {
                println!(
                    "{}",
                    serde_json::json!({"removed": report.removed.iter().map(|d| d.to_string()).collect::<Vec<_>>(), "bytes": report.bytes, "tempFiles": report.temp_files, "dryRun": dry_run})
                );
            } else {
                for d in &report.removed {
                    println!("{d}");
                }
            }
            ctx.progress.line(&format!(
                "{verb} {} blob(s), {}, and {} temp file(s)",
                report.removed.len(),
                human(report.bytes),
                report.temp_files
            ));
            Ok(0)
        }
    }
}

/// Copy from `src` to `dst`: one root when the source names one, else every root
/// of a layout or archive with its own tag.
async fn transfer(ctx: &Ctx, src_ep: &Endpoint, dst_ep: &Endpoint) -> Result<i32> {
    let src = open_source(src_ep, &ctx.client)?;
    let platform = ctx.global.platform.as_deref().map(parse_platform).transpose()?;
    let dst = open_destination(dst_ep, &ctx.client, platform.as_ref()).await?;
    let mut plan: Vec<(Descriptor, Vec<String>)> = Vec::new();
    let dst_is_registry = matches!(dst_ep, Endpoint::Registry(_));
    let dst_digest = match dst_ep {
        Endpoint::Registry(r) => r.digest.clone(),
        _ => dst_ep.reference().and_then(|r| r.parse().ok()),
    };
    // docker-archive names (repo:tag) go into manifest.json when the writer is created.
    let explicit_dst_tag = if matches!(dst_ep, Endpoint::DockerArchive { .. }) { None } else { dst_ep.tag() };
    let src_ref = src_ep.source_reference();
    let found: Vec<(Descriptor, Option<String>)> = match (&src_ref, src_ep) {
        (Some(r), _) => vec![(src.resolve(Some(r)).await?, src_ep.tag())],
        (None, Endpoint::Registry(_)) => vec![(src.resolve(None).await?, Some("latest".to_string()))],
        (None, _) => {
            let roots = src.roots().await?;
            if roots.is_empty() {
                return Err(Error::not_found("any manifest", src.location()));
            }
            roots.into_iter().map(|(d, t)| (d, t.map(|t| tag_of_ref_name(&t).to_string()))).collect()
        }
    };
    // One root per digest, with all the tags the source gives it.
    let mut roots: Vec<(Descriptor, Vec<String>)> = Vec::new();
    for (desc, tag) in found {
        match roots.iter_mut().find(|(d, _)| d.digest == desc.digest) {
            Some((_, tags)) => tags.extend(tag.filter(|t| !tags.contains(t))),
            None => roots.push((desc, tag.into_iter().collect())),
        }
    }
    if roots.len() > 1 && (dst_ep.reference().is_some() || dst_digest.is_some()) {
        return Err(Error::InvalidReference {
            reference: src_ep.to_string(),
            reason: format!(
                "holds {} manifests; name one with :TAG or @DIGEST to give it the tag {}",
                roots.len(),
                dst_ep
            ),
        });
    }
    for (desc, src_tags) in roots {
        if let Some(d) = &dst_digest {
            if *d != desc.digest {
                return Err(Error::DigestMismatch {
                    what: "destination reference".into(),
                    location: dst_ep.to_string(),
                    expected: d.to_string(),
                    actual: desc.digest.to_string(),
                });
            }
        }
        let tags = match (&explicit_dst_tag, &dst_digest) {
            (Some(t), _) => vec![t.clone()],
            (None, Some(_)) => vec![],
            (None, None) if dst_is_registry && src_tags.is_empty() => vec!["latest".to_string()],
            (None, None) => src_tags,
        };
        plan.push((desc, tags));
    }
    let opts = ctx.copy_options();
    let report = copy::graph_many(src.as_ref(), dst.as_ref(), &plan, &opts, &ctx.progress).await?;
    dst.finish().await?;
    print_result(ctx, src.as_ref(), dst.as_ref(), &plan, &report);
    Ok(0)
}

fn print_result(
    ctx: &Ctx,
    src: &dyn Source,
    dst: &dyn Destination,
    plan: &[(Descriptor, Vec<String>)],
    report: &CopyReport,
) {
    if ctx.global.format == Format::Json {
        let roots: Vec<_> = plan
            .iter()
            .map(|(d, tags)| serde_json::json!({"digest": d.digest.to_string(), "mediaType": d.media_type, "size": d.size, "tags": tags}))
            .collect();
        let v = serde_json::json!({"source": src.location(), "destination": dst.location(), "roots": roots, "report": report});
        println!("{v}");
    } else {
        for (d, _) in plan {
            println!("{}", d.digest);
        }
    }
    ctx.progress.line(&format!(
        "{} -> {}: {} blob(s) copied ({}), {} existed, {} mounted; {} manifest(s) written, {} existed",
        src.location(),
        dst.location(),
        report.blobs_uploaded,
        human(report.bytes_uploaded),
        report.blobs_existed,
        report.blobs_mounted,
        report.manifests_pushed,
        report.manifests_existed
    ));
}

async fn inspect(ctx: &Ctx, ep: &Endpoint, raw: bool, config: bool) -> Result<i32> {
    let src = open_source(ep, &ctx.client)?;
    let reference = ep.source_reference();
    let desc = match (&reference, ep) {
        (None, Endpoint::Registry(_)) => src.resolve(Some("latest")).await?,
        (r, _) => src.resolve(r.as_deref()).await?,
    };
    let doc = src.fetch_document(&desc).await?;
    let mut out = std::io::stdout().lock();
    if config {
        let View::Manifest(m) = &doc.view else {
            return Err(Error::Unsupported(format!("{ep} is an index; pick a manifest by digest to see its config")));
        };
        let mut stream = src.open_blob(&m.config, 0).await?;
        if m.config.size > hoist::model::media::MAX_MANIFEST_SIZE {
            return Err(Error::malformed("config", src.location(), "config larger than 4 MiB"));
        }
        let mut buf = Vec::new();
        let mut verify = hoist::transport::VerifyReader::new(&mut stream, &m.config, src.location());
        tokio::io::AsyncReadExt::read_to_end(&mut verify, &mut buf)
            .await
            .map_err(|e| hoist::transport::unwrap_io_error(e, "config"))?;
        let _ = out.write_all(&buf);
        return Ok(0);
    }
    if raw {
        let _ = out.write_all(&doc.bytes);
        return Ok(0);
    }
    let parsed: serde_json::Value =
        serde_json::from_slice(&doc.bytes).map_err(|e| Error::malformed("manifest", src.location(), e))?;
    if ctx.global.format == Format::Json {
        let v = serde_json::json!({
            "reference": ep.to_string(),
            "digest": doc.digest.to_string(),
            "mediaType": doc.media_type,
            "size": doc.bytes.len(),
            "artifactType": doc.artifact_type(),
            "manifest": parsed,
        });
        let _ = writeln!(out, "{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(0);
    }
    let _ = writeln!(out, "Reference:  {ep}");
    let _ = writeln!(out, "Digest:     {}", doc.digest);
    let _ = writeln!(out, "MediaType:  {}", doc.media_type);
    let _ = writeln!(out, "Size:       {}", doc.bytes.len());
    if let Some(at) = doc.artifact_type() {
        let _ = writeln!(out, "ArtifactType: {at}");
    }
    if let Some(s) = doc.subject() {
        let _ = writeln!(out, "Subject:    {} ({})", s.digest, s.media_type);
    }
    for (k, v) in doc.annotations() {
        let _ = writeln!(out, "Annotation: {k}={v}");
    }
    match &doc.view {
        View::Index(i) => {
            let _ = writeln!(out, "Manifests:");
            for m in &i.manifests {
                let plat = m.platform.as_ref().map(|p| p.to_string()).unwrap_or_else(|| "-".into());
                let _ = writeln!(out, "  {}  {:<16} {} {}", m.digest, plat, human(m.size), m.media_type);
            }
        }
        View::Manifest(m) => {
            let _ = writeln!(out, "Config:     {} {} ({})", m.config.digest, human(m.config.size), m.config.media_type);
            let _ = writeln!(out, "Layers:");
            for l in &m.layers {
                let title = l
                    .annotations
                    .get(hoist::model::media::ANNOTATION_TITLE)
                    .map(|t| format!("  {t}"))
                    .unwrap_or_default();
                let _ = writeln!(out, "  {}  {:>10}  {}{}", l.digest, human(l.size), l.media_type, title);
            }
        }
    }
    Ok(0)
}
