//! `hoist copy`, `push` and `pull`: one graph copy between two endpoints, with the roots and
//! tags [`hoist::copy::plan`] decides.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Args;
use hoist::copy::convert::{Compression, Conversion};
use hoist::copy::{self, CopyOptions, CopyReport};
use hoist::error::printable;
use hoist::error::{Error, Result};
use hoist::output::{write_metadata, OutputSpec};
use hoist::transport::archive::docker::MadeManifest;
use hoist::transport::endpoint::{native_manifest_format, open_source_as};
use hoist::transport::{open_destination, Endpoint};
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
    /// containerd destination: unpack images into the snapshotter (CONTAINERD_SNAPSHOTTER,
    /// default overlayfs) so `ctr run` starts at once
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    unpack: bool,
    #[command(flatten)]
    creds: SideCreds,
    #[command(flatten)]
    conv: CopyFlags,
}

/// What `copy`, `push` and `pull` change or add on request (nothing by default).
#[derive(Args, Clone, Debug, Default)]
pub(crate) struct CopyFlags {
    /// Rewrite Docker schema 2 manifests and manifest lists as OCI (only `oci`); layer bytes unchanged
    #[arg(long, value_name = "FORMAT", value_parser = ["oci"])]
    convert: Option<String>,
    /// Recompress image layers at the destination: none, gzip[:0-9], zstd[:1-22] (diff_ids unchanged),
    /// estargz[:0-9] (lazy-pull gzip with a TOC; diff_ids updated)
    #[arg(long, value_name = "ALG[:LEVEL]")]
    dest_compress: Option<String>,
    /// Also copy every referrer (signatures, SBOMs, attestations) of each copied manifest, recursively
    #[arg(long)]
    referrers: bool,
    /// Also copy cosign's digest tags (sha256-<hex>.sig, .att, .sbom) of each copied manifest, recursively
    #[arg(long)]
    digest_tags: bool,
    /// Write buildx-style metadata (containerimage.digest, containerimage.descriptor, image.name)
    /// of the root the destination got (after --convert, --dest-compress, --platform) to FILE
    #[arg(long, value_name = "FILE")]
    metadata_file: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) policy: super::trust::PolicyArgs,
    #[command(flatten)]
    pub(crate) sign: super::trust::SignByArgs,
}

impl CopyFlags {
    /// The library's conversion options.
    fn conversion(&self) -> Result<Conversion> {
        Ok(Conversion {
            to_oci: self.convert.is_some(),
            compress: self.dest_compress.as_deref().map(str::parse::<Compression>).transpose()?,
            edit: None,
        })
    }
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
    #[command(flatten)]
    conv: CopyFlags,
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
    #[command(flatten)]
    conv: CopyFlags,
}

/// A copy's two ends, parsed, and the side credentials.
pub(crate) struct Ends {
    src: Endpoint,
    dst: Endpoint,
    /// `--src-creds`/`--dest-creds`.
    pub creds: SideCreds,
    /// `--convert`, `--dest-compress`, ...
    flags: CopyFlags,
    /// `hoist mutate`'s edit.
    edit: Option<hoist::edit::ImageEdit>,
}

impl Ends {
    /// `hoist mutate SRC DST`: a copy whose conversion is `edit`.
    pub fn edit(src: &str, dst: &str, creds: SideCreds, edit: hoist::edit::ImageEdit) -> Result<Ends> {
        let (src, dst) = (Endpoint::from_user_input(src)?, Endpoint::from_user_input(dst)?);
        Ok(Ends { src, dst, creds, flags: CopyFlags::default(), edit: Some(edit) })
    }

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
        let mut dst = Endpoint::from_user_input(&self.dst)?;
        if let Endpoint::Containerd(t) = &mut dst {
            t.unpack = self.unpack;
        }
        Ok(Ends {
            src: Endpoint::from_user_input(&self.src)?,
            dst,
            creds: self.creds.clone(),
            flags: self.conv.clone(),
            edit: None,
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
        Ok(Ends { src, dst, creds: self.creds.clone(), flags: self.conv.clone(), edit: None })
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
        Ok(Ends { src, dst, creds: self.creds.clone(), flags: self.conv.clone(), edit: None })
    }
    /// What a message about this command names.
    pub fn describe(&self) -> String {
        format!("pull {} {}", self.reference, self.dst)
    }
}

/// Copy what the plan says from one end to the other, then print the roots.
pub(crate) async fn run(ctx: &Ctx, ends: &Ends) -> Result<i32> {
    let (src_ep, dst_ep) = (&ends.src, &ends.dst);
    let mut convert = ends.flags.conversion()?;
    convert.edit = ends.edit.clone();
    // A docker-archive without index.json gets manifests in the destination's native format
    // (OCI when --convert oci asks for it).
    let made = if convert.to_oci { MadeManifest::Oci } else { native_manifest_format(dst_ep) };
    let src = open_source_as(src_ep, &ctx.client, made)?;
    // --platform: the platforms of an index root to copy (a library copy option, for every
    // destination); a docker-archive holds one image, so it takes exactly one.
    let platform = match dst_ep {
        Endpoint::DockerArchive { .. } => ctx.settings.single_platform("a docker-archive destination")?,
        _ => None,
    };
    let opts = CopyOptions {
        platforms: ctx.settings.platforms.clone(),
        convert,
        referrers: ends.flags.referrers,
        digest_tags: ends.flags.digest_tags,
        ..ctx.copy_options()
    };
    // the signing key first: a wrong password fails before anything moves
    let signer = ends.flags.sign.load(dst_ep)?;
    let plan = copy::plan::roots(src_ep, src.as_ref(), dst_ep).await?;
    // The policy decides on the digests the plan resolved, before anything is fetched or the
    // destination is opened (a refused image writes nothing); the copy then moves exactly
    // those digests, never the tag again.
    if let Some(policy) = ends.flags.policy.load()? {
        for (root, _) in &plan {
            policy.check(src_ep, src.as_ref(), root).await?;
        }
    }
    let dst = open_destination(dst_ep, &ctx.client, platform).await?;
    if ends.flags.metadata_file.is_some() && plan.len() != 1 {
        return Err(Error::Usage(format!(
            "--metadata-file describes one image, but {} holds {} roots; name one with :TAG or @DIGEST",
            src.location(),
            plan.len()
        )));
    }
    let report = copy::graph_many(src.as_ref(), dst.as_ref(), &plan, &opts, &ctx.progress).await?;
    dst.finish().await?;
    if let Some(signer) = &signer {
        // what the destination got (after --convert, --dest-compress, --platform) is signed
        for (root, (_, tags)) in report.roots.iter().zip(&plan) {
            for w in signer.sign_at(ctx, dst_ep, root, tags.first().map(String::as_str)).await? {
                ctx.progress.line(&format!("signed {}: {} signature {}", w.subject, w.format, w.manifest));
            }
        }
    }
    if let (Some(path), Some(root), Some((_, tags))) = (&ends.flags.metadata_file, report.roots.first(), plan.first()) {
        write_metadata(path, root, &[metadata_output(dst_ep, root, tags)], &BTreeMap::new())?;
    }
    print_result(ctx, src.as_ref(), dst.as_ref(), &plan, &report);
    Ok(0)
}

/// The destination as the metadata file names it: a registry destination's `image.name`
/// is `REPO:TAG` for each tag written (`REPO@DIGEST` when untagged), as buildx writes it.
fn metadata_output(dst: &Endpoint, root: &Descriptor, tags: &[String]) -> OutputSpec {
    let names = match dst {
        Endpoint::Registry(r) if tags.is_empty() => vec![format!("{}@{}", r.repo_ref(), root.digest)],
        Endpoint::Registry(r) => tags.iter().map(|t| format!("{}:{t}", r.repo_ref())).collect(),
        _ => Vec::new(),
    };
    OutputSpec::new(dst.clone(), tags.to_vec(), names)
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
        let mut v = serde_json::json!({"source": src.location(), "destination": dst.location(), "roots": roots, "report": report});
        if let Some(m) = src.served_by() {
            v["servedBy"] = m.into();
        }
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
    for r in &report.referrers {
        let tag = r.tag.as_deref().map(|t| format!(" (tag {t})")).unwrap_or_default();
        ctx.progress.line(&format!("referrer {} of {}{}", r.digest, r.subject, printable(&tag)));
    }
    for r in &report.converted {
        ctx.progress.line(&format!("converted {} -> {}: {}", r.from, r.to, printable(&r.reason)));
    }
    // A pull a registries.conf mirror served names the mirror.
    let from = match src.served_by() {
        Some(m) => format!("{} (served by mirror {m})", src.location()),
        None => src.location(),
    };
    ctx.progress.line(&format!(
        "{} -> {}: {} blob(s) copied ({}), {} existed, {} mounted; {} manifest(s) written, {} existed",
        printable(&from),
        printable(&dst.location()),
        report.blobs_uploaded,
        human(report.bytes_uploaded),
        report.blobs_existed,
        report.blobs_mounted,
        report.manifests_pushed,
        report.manifests_existed
    ));
}
