//! `hoist copy`, `push` and `pull`: one graph copy between two endpoints, with the roots and
//! tags [`hoist::copy::plan`] decides.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Args;
use hoist::copy::convert::{Compression, Conversion, LazyOptions};
use hoist::copy::{self, CopyOptions, CopyReport};
use hoist::error::printable;
use hoist::error::{Error, Result};
use hoist::model::document::View;
use hoist::model::platform::is_attestation;
use hoist::output::{parse_output, write_metadata, OutputSpec};
use hoist::transport::archive::docker::MadeManifest;
use hoist::transport::endpoint::{native_manifest_format, open_source_as};
use hoist::transport::{open_destination, Endpoint};
use hoist::transport::{Destination, Source};
use hoist::Descriptor;

use super::creds::{Scope, SideCreds};
use super::out::outln;
use super::progress::human;
use super::sides::SideTls;
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
    tls: SideTls,
    #[command(flatten)]
    conv: CopyFlags,
}

/// What `copy`, `push` and `pull` change or add on request (nothing by default).
#[derive(Args, Clone, Debug, Default)]
pub(crate) struct CopyFlags {
    /// Rewrite Docker schema 2 manifests and manifest lists as OCI (only `oci`); layer bytes unchanged
    #[arg(long, value_name = "FORMAT", value_parser = ["oci"])]
    convert: Option<String>,
    #[command(flatten)]
    pub(crate) compress: CompressFlags,
    /// Also copy every referrer (signatures, SBOMs, attestations) of each copied manifest, recursively
    #[arg(long)]
    referrers: bool,
    /// Also copy cosign's digest tags (sha256-<hex>.sig, .att, .sbom) of each copied manifest, recursively
    #[arg(long)]
    digest_tags: bool,
    /// Write into a directory that is neither empty nor an OCI layout (refused otherwise, so a
    /// typo does not turn a directory of yours into a layout)
    #[arg(long)]
    force: bool,
    /// Write buildx-style metadata (containerimage.digest, containerimage.descriptor, image.name)
    /// of the root the destination got (after --convert, --dest-compress, --platform) to FILE
    #[arg(long, value_name = "FILE")]
    metadata_file: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) policy: super::trust::PolicyArgs,
    #[command(flatten)]
    pub(crate) sign: super::trust::SignByArgs,
}

/// `--dest-compress` and the lazy-format knobs, shared by `copy`/`push`/`pull` and `sync`.
#[derive(Args, Clone, Debug, Default)]
pub(crate) struct CompressFlags {
    /// Recompress image layers at the destination: none, gzip[:0-9], zstd[:1-22] (diff_ids unchanged),
    /// estargz[:0-9] (lazy-pull gzip with a TOC; diff_ids updated), zstd:chunked[:1-22] (lazy-pull
    /// zstd with a TOC and tar-split; diff_ids unchanged)
    #[arg(long, value_name = "ALG[:LEVEL]")]
    dest_compress: Option<String>,
    /// eStargz and zstd:chunked: largest chunk of a file per gzip member or zstd frame, in bytes
    /// (default 4194304)
    #[arg(long, value_name = "BYTES")]
    estargz_chunk_size: Option<u64>,
    /// eStargz: put FILE (its path in the layer) first, in the order given, followed by the prefetch
    /// landmark (repeatable; a layer without the file skips it)
    #[arg(long, value_name = "FILE")]
    estargz_prioritized: Vec<String>,
}

impl CopyFlags {
    /// The library's conversion options.
    fn conversion(&self) -> Result<Conversion> {
        Ok(Conversion { to_oci: self.convert.is_some(), ..self.compress.conversion()? })
    }
}

impl CompressFlags {
    /// The library's conversion options for `--dest-compress` and the lazy-format knobs.
    pub(crate) fn conversion(&self) -> Result<Conversion> {
        Ok(Conversion {
            to_oci: false,
            compress: self.dest_compress.as_deref().map(str::parse::<Compression>).transpose()?,
            edit: None,
            lazy: self.lazy()?,
        })
    }

    /// `--estargz-chunk-size`, `--estargz-prioritized`.
    fn lazy(&self) -> Result<LazyOptions> {
        if self.estargz_chunk_size == Some(0) {
            return Err(Error::Usage("--estargz-chunk-size must be positive".into()));
        }
        Ok(LazyOptions { chunk_size: self.estargz_chunk_size, prioritized: self.estargz_prioritized.clone() })
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
    tls: SideTls,
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
    tls: SideTls,
    #[command(flatten)]
    conv: CopyFlags,
}

/// A copy's two ends, parsed, and the side credentials.
pub(crate) struct Ends {
    src: Endpoint,
    dst: Endpoint,
    /// The destination given in `--output` syntax (`type=local,dest=DIR`, `type=tar,...`,
    /// `type=oci,...`): written as `hoist build --output` writes it.
    output: Option<OutputSpec>,
    /// `--src-creds`/`--dest-creds`.
    pub creds: SideCreds,
    /// `--src-tls-verify`, `--dest-cert-dir`, ...
    pub tls: SideTls,
    /// `--convert`, `--dest-compress`, ...
    flags: CopyFlags,
    /// `hoist mutate`'s edit.
    edit: Option<hoist::edit::ImageEdit>,
}

impl Ends {
    /// `hoist mutate SRC DST`: a copy whose conversion is `edit`.
    pub fn edit(src: &str, dst: &str, creds: SideCreds, edit: hoist::edit::ImageEdit) -> Result<Ends> {
        let (src, dst) = (Endpoint::from_user_input(src)?, Endpoint::from_user_input(dst)?);
        Ok(Ends {
            src,
            dst,
            output: None,
            creds,
            tls: SideTls::default(),
            flags: CopyFlags::default(),
            edit: Some(edit),
        })
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

/// A destination in `--output` syntax (`type=local,dest=DIR`: the filesystem, as
/// `crane export` writes it; any other type as `build --output` writes it), or `None`.
fn output_destination(command: &str, s: &str) -> Result<Option<OutputSpec>> {
    if !s.starts_with("type=") {
        return Ok(None);
    }
    let spec = parse_output(s)?;
    spec.refuse_build_keys(command)?;
    if spec.local_only {
        return Err(Error::Usage(format!(
            "{command} {s}: type=image without push=true would only keep the image in the build store; name a registry with type=registry,name=REF"
        )));
    }
    Ok(Some(spec))
}

impl CopyArgs {
    /// Parse both ends.
    pub fn ends(&self) -> Result<Ends> {
        let output = output_destination("copy", &self.dst)?;
        let mut dst = match &output {
            Some(o) => o.endpoint.clone(),
            None => Endpoint::from_user_input(&self.dst)?,
        };
        if let Endpoint::Containerd(t) = &mut dst {
            t.unpack = self.unpack;
        }
        Ok(Ends {
            src: Endpoint::from_user_input(&self.src)?,
            dst,
            output,
            creds: self.creds.clone(),
            tls: self.tls.clone(),
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
        Ok(Ends {
            src,
            dst,
            output: None,
            creds: self.creds.clone(),
            tls: self.tls.clone(),
            flags: self.conv.clone(),
            edit: None,
        })
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
        let output = output_destination("pull", &self.dst)?;
        let dst = match &output {
            Some(o) => o.endpoint.clone(),
            None => match Endpoint::from_user_input(&self.dst)? {
                Endpoint::Registry(_) => format!("oci:{}", self.dst).parse()?,
                other => other,
            },
        };
        Ok(Ends {
            src,
            dst,
            output,
            creds: self.creds.clone(),
            tls: self.tls.clone(),
            flags: self.conv.clone(),
            edit: None,
        })
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
    if let Endpoint::Layout { path, .. } = dst_ep {
        check_layout_destination(path, ends.flags.force)?;
    }
    let src = open_source_as(src_ep, &ctx.client, made)?;
    if let Some(spec) = &ends.output {
        return run_to_output(ctx, src.as_ref(), ends, spec).await;
    }
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
    if matches!(dst_ep, Endpoint::DockerArchive { .. }) && ctx.settings.platforms.is_empty() {
        for (root, _) in &plan {
            one_image_for_docker_archive(src.as_ref(), root).await?;
        }
    }
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
            for w in signer.sign_at(&ctx.client, dst_ep, root, tags.first().map(String::as_str)).await? {
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

/// A layout destination: a new directory, an empty one or a layout; a file, or a directory
/// holding other things, is refused before anything is written (`--force` writes into the
/// directory anyway), as `crane pull` and `skopeo copy oci:` would otherwise mix a layout
/// into someone's files.
fn check_layout_destination(path: &std::path::Path, force: bool) -> Result<()> {
    let Ok(md) = std::fs::metadata(path) else { return Ok(()) };
    if !md.is_dir() {
        return Err(Error::Usage(format!(
            "{} is a file, and an OCI layout is a directory: name a new directory, or write a tar with oci-archive:{}",
            path.display(),
            path.display()
        )));
    }
    // a layout, or one another writer is creating right now (its lock and blobs come first)
    if force || ["oci-layout", "index.json", "blobs", ".hoist"].iter().any(|n| path.join(n).exists()) {
        return Ok(());
    }
    let mut entries = std::fs::read_dir(path).map_err(|e| Error::io(path, e))?;
    if entries.next().is_some() {
        return Err(Error::Usage(format!(
            "{} is not empty and not an OCI layout: name a new or empty directory, or pass --force to write the layout into it",
            path.display()
        )));
    }
    Ok(())
}

/// `copy SRC type=...`: the one root `SRC` names, written as `build --output` writes it
/// (the filesystem for `type=local`/`type=tar`, as `crane export` does; an index needs
/// `--platform` there). Prints the root's digest.
async fn run_to_output(ctx: &Ctx, src: &dyn Source, ends: &Ends, spec: &OutputSpec) -> Result<i32> {
    if ends.flags.convert.is_some() || ends.flags.compress.dest_compress.is_some() || ends.flags.referrers {
        return Err(Error::Usage(
            "--convert, --dest-compress and --referrers apply to image destinations, not to --output syntax".into(),
        ));
    }
    let root = copy::plan::resolve(&ends.src, src).await?;
    let platform = if spec.filesystem.is_some() {
        ctx.settings.single_platform("a filesystem export")?
    } else {
        ctx.settings.single_platform("an --output destination")?
    };
    let results = hoist::output::export(
        src,
        &root,
        std::slice::from_ref(spec),
        &ctx.client,
        platform,
        &ctx.copy_options(),
        &ctx.progress,
    )
    .await?;
    if let Some(path) = &ends.flags.metadata_file {
        write_metadata(path, &root, std::slice::from_ref(spec), &BTreeMap::new())?;
    }
    if ctx.json() {
        let outputs: Vec<_> = results
            .iter()
            .map(|r| {
                let mut v = serde_json::json!({"destination": r.destination, "report": r.report});
                if let Some(fs) = &r.filesystem {
                    v["filesystem"] = serde_json::to_value(fs).unwrap_or_default();
                }
                v
            })
            .collect();
        outln!(
            "{}",
            serde_json::json!({"source": src.location(), "digest": root.digest.to_string(), "mediaType": root.media_type, "size": root.size, "outputs": outputs})
        );
    } else {
        outln!("{}", root.digest);
    }
    for r in &results {
        ctx.progress.line(&format!("{} -> {}", printable(&src.location()), printable(&r.destination)));
    }
    Ok(0)
}

/// A docker-archive holds one image per name, so an index of several platforms needs
/// `--platform` to say which one goes in (refused before anything is written, rather than
/// taking linux/amd64 silently and reporting the index's digest).
async fn one_image_for_docker_archive(src: &dyn Source, root: &Descriptor) -> Result<()> {
    if !hoist::model::media::is_index(&root.media_type) {
        return Ok(());
    }
    let doc = src.fetch_document(root).await?;
    let View::Index(index) = &doc.view else { return Ok(()) };
    let platforms: Vec<String> = index
        .manifests
        .iter()
        .filter(|d| hoist::model::media::is_manifest(&d.media_type) && !is_attestation(d))
        .map(|d| d.platform.as_ref().map_or_else(|| "unknown".to_string(), |p| p.to_string()))
        .collect();
    if platforms.len() < 2 {
        return Ok(());
    }
    Err(Error::Usage(format!(
        "{} in {} is an index of {} platforms ({}), and a docker-archive holds one image: choose one with --platform (e.g. --platform {}), or copy to oci-archive: to keep them all",
        root.digest,
        src.location(),
        platforms.len(),
        printable(&platforms.join(", ")),
        printable(&platforms[0]),
    )))
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

/// The roots as the destination got them, in the plan's order (the plan's own when the
/// report has none).
fn written<'a>(plan: &'a [(Descriptor, Vec<String>)], report: &'a CopyReport) -> Vec<&'a Descriptor> {
    if report.roots.len() == plan.len() {
        report.roots.iter().collect()
    } else {
        plan.iter().map(|(d, _)| d).collect()
    }
}

fn print_result(
    ctx: &Ctx,
    src: &dyn Source,
    dst: &dyn Destination,
    plan: &[(Descriptor, Vec<String>)],
    report: &CopyReport,
) {
    if ctx.settings.json() {
        // Each root as the destination got it; `sourceDigest` when that is not the source's.
        let roots: Vec<_> = plan
            .iter()
            .zip(written(plan, report))
            .map(|((s, tags), d)| {
                let mut v = serde_json::json!({"digest": d.digest.to_string(), "mediaType": d.media_type, "size": d.size, "tags": tags});
                if d.digest != s.digest {
                    v["sourceDigest"] = s.digest.to_string().into();
                }
                v
            })
            .collect();
        let mut v = serde_json::json!({"source": src.location(), "destination": dst.location(), "roots": roots, "report": report});
        if let Some(m) = src.served_by() {
            v["servedBy"] = m.into();
        }
        outln!("{v}");
    } else {
        // Each root as the destination got it (a platform filter, a conversion, the one image
        // a docker-archive took of an index).
        for d in written(plan, report) {
            outln!("{}", d.digest);
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
    // A retag moves no manifest: say that the tag was set, not only that it "existed".
    let tags: Vec<&str> = plan.iter().flat_map(|(_, t)| t.iter().map(String::as_str)).collect();
    let tagged = if tags.is_empty() { String::new() } else { format!("; tagged {}", printable(&tags.join(", "))) };
    ctx.progress.line(&format!(
        "{} -> {}: {} blob(s) copied ({}), {} already there, {} mounted; {} manifest(s) written, {} already there{tagged}",
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
