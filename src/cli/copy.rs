//! `hoist copy`, `push` and `pull`: one graph copy between two endpoints, with the roots and
//! tags [`hoist::copy::plan`] decides.

use clap::Args;
use hoist::copy::{self, CopyOptions, CopyReport};
use hoist::error::printable;
use hoist::error::{Error, Result};
use hoist::transport::{open_destination, open_source, Endpoint};
use hoist::transport::{Destination, Source};
use hoist::Descriptor;

use super::creds::{Scope, SideCreds};
use super::out::outln;
use super::progress::human;
use super::Ctx;

/// `hoist copy SRC DST`.
#[derive(Args)]
pub(crate) struct CopyArgs {
    /// Source: oci:DIR[:TAG|@DIGEST], oci-archive:FILE[:TAG], docker-archive:FILE, docker://REF or REF
    src: String,
    /// Destination, in the same syntax (a layout or archive is created; a tag names the root there).
    dst: String,
    #[command(flatten)]
    creds: SideCreds,
}

/// `hoist push LAYOUT REF`.
#[derive(Args)]
pub(crate) struct PushArgs {
    /// Layout directory, optionally DIR:TAG or DIR@DIGEST (or any source transport)
    layout: String,
    /// Registry reference
    reference: String,
    #[command(flatten)]
    creds: SideCreds,
}

/// `hoist pull REF DST`.
#[derive(Args)]
pub(crate) struct PullArgs {
    /// Registry reference REGISTRY/REPO[:TAG|@DIGEST]
    reference: String,
    /// Destination: a layout directory (DIR or DIR:TAG), or any destination transport
    dst: String,
    #[command(flatten)]
    creds: SideCreds,
}

/// A copy's two ends, parsed, and the side credentials.
pub(crate) struct Ends {
    src: Endpoint,
    dst: Endpoint,
    /// `--src-creds`/`--dest-creds`.
    pub creds: SideCreds,
}

impl Ends {
    /// The registries of the two ends, for credentials.
    pub fn scope(&self) -> Scope {
        let host = |e: &Endpoint| match e {
            Endpoint::Registry(r) => Some(r.registry.clone()),
            _ => None,
        };
        Scope::Copy { src: host(&self.src), dst: host(&self.dst) }
    }
}

impl CopyArgs {
    /// Parse both ends.
    pub fn ends(&self) -> Result<Ends> {
        Ok(Ends {
            src: Endpoint::from_user_input(&self.src)?,
            dst: Endpoint::from_user_input(&self.dst)?,
            creds: self.creds.clone(),
        })
    }
    /// What a message about this command names.
    pub fn describe(&self) -> String {
        format!("copy {} {}", self.src, self.dst)
    }
}

impl PushArgs {
    /// Parse both ends: the source is local (a bare name is a layout), the destination a registry.
    pub fn ends(&self) -> Result<Ends> {
        let src = match Endpoint::from_user_input(&self.layout)? {
            Endpoint::Registry(_) => format!("oci:{}", self.layout).parse()?,
            other => other,
        };
        let dst: Endpoint = self.reference.parse()?;
        if !matches!(dst, Endpoint::Registry(_)) {
            return Err(Error::InvalidReference {
                reference: self.reference.clone(),
                reason: "push needs a registry reference; use `hoist copy` for other destinations".into(),
            });
        }
        Ok(Ends { src, dst, creds: self.creds.clone() })
    }
    /// What a message about this command names.
    pub fn describe(&self) -> String {
        format!("push {} {}", self.layout, self.reference)
    }
}

impl PullArgs {
    /// Parse both ends: the source is a registry reference, the destination local.
    pub fn ends(&self) -> Result<Ends> {
        let src: Endpoint = self.reference.parse()?;
        let dst = match Endpoint::from_user_input(&self.dst)? {
            Endpoint::Registry(_) => format!("oci:{}", self.dst).parse()?,
            other => other,
        };
        Ok(Ends { src, dst, creds: self.creds.clone() })
    }
    /// What a message about this command names.
    pub fn describe(&self) -> String {
        format!("pull {} {}", self.reference, self.dst)
    }
}

/// Copy what the plan says from one end to the other, then print the roots.
pub(crate) async fn run(ctx: &Ctx, ends: &Ends) -> Result<i32> {
    let (src_ep, dst_ep) = (&ends.src, &ends.dst);
    let src = open_source(src_ep, &ctx.client)?;
    // --platform: the platforms of an index root to copy (a library copy option, for every
    // destination); a docker-archive holds one image, so it takes exactly one.
    let platform = match dst_ep {
        Endpoint::DockerArchive { .. } => ctx.settings.single_platform("a docker-archive destination")?,
        _ => None,
    };
    let opts = CopyOptions { platforms: ctx.settings.platforms.clone(), ..ctx.copy_options() };
    let dst = open_destination(dst_ep, &ctx.client, platform).await?;
    let plan = copy::plan::roots(src_ep, src.as_ref(), dst_ep).await?;
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
    if ctx.settings.json() {
        let roots: Vec<_> = plan
            .iter()
            .map(|(d, tags)| serde_json::json!({"digest": d.digest.to_string(), "mediaType": d.media_type, "size": d.size, "tags": tags}))
            .collect();
        let v = serde_json::json!({"source": src.location(), "destination": dst.location(), "roots": roots, "report": report});
        outln!("{v}");
    } else {
        // A root the platform filter rewrote is printed as what the destination got.
        for (d, _) in plan {
            let got = report.rewritten.iter().find(|r| r.from == d.digest).map_or(&d.digest, |r| &r.to);
            outln!("{got}");
        }
    }
    for r in &report.rewritten {
        ctx.progress.line(&format!("{} written as {}: {}", r.from, r.to, printable(&r.reason)));
    }
    ctx.progress.line(&format!(
        "{} -> {}: {} blob(s) copied ({}), {} existed, {} mounted; {} manifest(s) written, {} existed",
        printable(&src.location()),
        printable(&dst.location()),
        report.blobs_uploaded,
        human(report.bytes_uploaded),
        report.blobs_existed,
        report.blobs_mounted,
        report.manifests_pushed,
        report.manifests_existed
    ));
}
