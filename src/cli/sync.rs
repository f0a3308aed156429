//! `hoist sync`: skopeo sync's interface (`--src docker|yaml|dir`, `--dest docker|dir`,
//! `--scoped`, `--all`), hoist's filters, and a summary; the library (`hoist::sync`) decides
//! what to copy.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use hoist::error::{printable, Error, Result};
use hoist::sync::{self, Filters, Status, SyncDest, SyncOptions, SyncSource};

use super::creds::{Scope, SideCreds};
use super::out::outln;
use super::progress::human;
use super::Ctx;

/// `--src`.
#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub(crate) enum SrcKind {
    /// A registry repository (every tag) or one image
    Docker,
    /// skopeo sync's YAML file
    Yaml,
    /// An OCI layout written by `hoist sync --dest dir`
    Dir,
}

/// `--dest`.
#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub(crate) enum DestKind {
    /// A registry and path prefix: HOST[:PORT][/PATH]
    Docker,
    /// One OCI layout directory holding every image under its full name
    Dir,
}

/// `hoist sync`.
#[derive(Args)]
pub(crate) struct SyncArgs {
    /// What SOURCE is
    #[arg(long = "src", short = 's', value_enum)]
    pub src_kind: SrcKind,
    /// What DESTINATION is
    #[arg(long = "dest", short = 'd', value_enum)]
    pub dest_kind: DestKind,
    /// REGISTRY/REPO[:TAG|@DIGEST], a YAML file, or a layout directory
    pub source: String,
    /// REGISTRY[/PATH] prefix, or a layout directory
    pub destination: String,
    /// Destination names keep the full source name (PREFIX/registry/repo:tag), as skopeo's --scoped
    #[arg(long)]
    pub scoped: bool,
    /// Every platform of an index (the default; accepted for skopeo's command lines)
    #[arg(long, short = 'a')]
    pub all: bool,
    /// Say what would be copied; change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Only the N newest tags of each repository (by semver when every tag is one, else by created time)
    #[arg(long, value_name = "N")]
    pub keep_last: Option<usize>,
    /// Only images created within DURATION (e.g. 30d, 12h, 1w)
    #[arg(long, value_name = "DURATION")]
    pub newer_than: Option<String>,
    /// Leave out tags matching REGEX
    #[arg(long, value_name = "REGEX")]
    pub exclude: Option<String>,
    /// Copy the referrers (signatures, SBOMs, attestations) of each copied image [default: true;
    /// false with --dest-compress, whose new digests the referrers do not name]
    #[arg(long, value_name = "BOOL", action = clap::ArgAction::Set)]
    pub referrers: Option<bool>,
    /// Stop cleanly before a source registry's rate limit (ratelimit-remaining) falls to N
    #[arg(long, value_name = "N")]
    pub rate_limit_floor: Option<u64>,
    /// Go on after a failed image (always so; accepted for skopeo's command lines)
    #[arg(long)]
    pub keep_going: bool,
    #[command(flatten)]
    pub(crate) compress: super::copy::CompressFlags,
    #[command(flatten)]
    pub creds: SideCreds,
    #[command(flatten)]
    pub policy: super::trust::PolicyArgs,
    #[command(flatten)]
    pub sign: super::trust::SignByArgs,
}

impl SyncArgs {
    /// The registries of the two ends, for credentials.
    pub fn scope(&self) -> Scope {
        let src = match self.src_kind {
            SrcKind::Docker => super::creds::registry_of(&self.source),
            _ => None,
        };
        let dst = match self.dest_kind {
            DestKind::Docker => self.destination.split('/').next().map(str::to_string),
            DestKind::Dir => None,
        };
        Scope::Copy { src, dst }
    }
}

pub(crate) async fn run(ctx: &Ctx, args: SyncArgs) -> Result<i32> {
    let src = match args.src_kind {
        SrcKind::Docker => SyncSource::Docker(args.source.clone()),
        SrcKind::Yaml => SyncSource::Yaml(PathBuf::from(&args.source)),
        SrcKind::Dir => SyncSource::Dir(PathBuf::from(&args.source)),
    };
    let dst = match args.dest_kind {
        DestKind::Docker => {
            SyncDest::Docker(args.destination.strip_prefix("docker://").unwrap_or(&args.destination).into())
        }
        DestKind::Dir => SyncDest::Dir(PathBuf::from(&args.destination)),
    };
    let filters = Filters {
        keep_last: args.keep_last,
        newer_than: args
            .newer_than
            .as_deref()
            .map(sync::config::parse_duration)
            .transpose()
            .map_err(|e| Error::Usage(format!("--newer-than: {e}")))?,
        exclude: args
            .exclude
            .as_deref()
            .map(regex::Regex::new)
            .transpose()
            .map_err(|e| Error::Usage(format!("--exclude: {e}")))?,
    };
    // the signing key first: a wrong password fails before anything moves
    // (the library refuses a signer for a layout or archive destination)
    let end: hoist::transport::Endpoint = match &dst {
        SyncDest::Docker(prefix) => format!("docker://{prefix}/x:y").parse()?,
        SyncDest::Dir(p) => hoist::transport::Endpoint::Layout { path: p.clone(), reference: None },
    };
    let signer = args.sign.load(&end)?.map(std::sync::Arc::new);
    let policy = args.policy.load()?.map(std::sync::Arc::new);
    let copy = ctx.copy_options();
    let convert = args.compress.conversion()?;
    // referrers name their subject by its source digest, which a recompression changes: they
    // are left out (the graph copy refuses them with a conversion), and asking for both is an error
    let converts = convert != hoist::copy::convert::Conversion::default();
    let referrers = match args.referrers {
        Some(true) if converts => {
            return Err(Error::Usage(
                "--referrers true with --dest-compress: the conversion changes the image digests that the \
                 referrers name; leave out one of them"
                    .into(),
            ))
        }
        Some(asked) => asked,
        None => !converts,
    };
    if converts && args.referrers.is_none() {
        ctx.progress.line("sync: --dest-compress changes the image digests; referrers are not copied");
    }
    let opts = SyncOptions {
        scoped: args.scoped,
        jobs: copy.jobs,
        copy: hoist::copy::CopyOptions { platforms: ctx.settings.platforms.clone(), referrers, convert, ..copy },
        filters,
        dry_run: args.dry_run,
        rate_limit_floor: args.rate_limit_floor,
        policy,
        signer,
    };
    let report = sync::sync(&ctx.client, &src, &dst, &opts, &ctx.progress).await?;
    if ctx.json() {
        outln!("{}", serde_json::to_string(&report).unwrap_or_default());
    } else {
        for i in &report.images {
            let status = match i.status {
                Status::Copied => "copied",
                Status::Skipped => "unchanged",
                Status::WouldCopy => "would-copy",
                Status::Refused => "refused",
                Status::Failed => "failed",
                Status::NotRun => "not-run",
            };
            outln!("{status}\t{}\t{}", printable(&i.source), printable(&i.destination));
        }
    }
    ctx.progress.line(&format!(
        "sync: {} copied, {} unchanged, {} refused, {} failed{}; {} moved",
        report.copied,
        report.skipped,
        report.refused,
        report.failed,
        if args.dry_run { format!(", {} would be copied", report.would_copy) } else { String::new() },
        human(report.bytes_uploaded)
    ));
    if let Some(why) = &report.stopped {
        eprintln!("hoist: sync {}; {} image(s) not synced", printable(why), report.not_run);
    }
    for i in report.images.iter().filter(|i| matches!(i.status, Status::Failed | Status::Refused)) {
        ctx.progress.line(&format!(
            "{}: {}: {}",
            if i.status == Status::Failed { "failed" } else { "refused" },
            printable(&i.source),
            printable(i.error.as_deref().unwrap_or("unknown error"))
        ));
    }
    // 1 when any image failed or the sync stopped early; else 5 when the policy refused any
    Ok(if report.failed > 0 || report.stopped.is_some() {
        super::exit::OTHER
    } else if report.refused > 0 {
        super::exit::INTEGRITY
    } else {
        0
    })
}
