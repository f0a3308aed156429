//! `hoist inspect REF`: a manifest or index, its exact bytes (`--raw`), or its config blob.
//! With `--platform OS/ARCH` an index shows its image for that platform instead, as
//! `crane manifest --platform` and `oras manifest fetch --platform` do.

use std::io::Write;

use clap::Args;
use hoist::copy::plan;
use hoist::error::{printable, Error, Result};
use hoist::model::document::View;
use hoist::model::media;
use hoist::transport::{open_source, Endpoint};

use super::progress::human;
use super::Ctx;

/// `hoist inspect`.
#[derive(Args)]
pub(crate) struct InspectArgs {
    /// Any source transport (a registry reference without tag means the default tag).
    pub reference: String,
    /// Print the exact manifest bytes.
    #[arg(long)]
    raw: bool,
    /// Print the config blob instead of the manifest.
    #[arg(long)]
    config: bool,
    #[command(flatten)]
    policy: super::trust::PolicyArgs,
}

/// `hoist digest`.
#[derive(Args)]
pub(crate) struct DigestArgs {
    /// Any source transport (a registry reference without tag means the default tag).
    pub reference: String,
}

/// Print the digest of the manifest or index `args.reference` names (with `--platform`, of
/// an index's image for that platform), as `crane digest` and `skopeo inspect --format
/// '{{.Digest}}'` do.
pub(crate) async fn digest(ctx: &Ctx, args: DigestArgs) -> Result<i32> {
    let (ep, _, doc) = resolve_document(ctx, &args.reference, "digest", None).await?;
    if ctx.settings.json() {
        let v = serde_json::json!({"reference": ep.to_string(), "digest": doc.digest.to_string(), "mediaType": doc.media_type, "size": doc.bytes.len()});
        super::out::outln!("{v}");
    } else {
        super::out::outln!("{}", doc.digest);
    }
    Ok(0)
}

/// The document `reference` names; with `--platform`, an index stands for its image for that
/// platform (a manifest stays itself).
async fn resolve_document(
    ctx: &Ctx,
    reference: &str,
    command: &str,
    policy: Option<&super::trust::PolicyArgs>,
) -> Result<(Endpoint, Box<dyn hoist::transport::Source>, hoist::model::document::Document)> {
    let ep = Endpoint::from_user_input(reference)?;
    let src = open_source(&ep, &ctx.client)?;
    let desc = plan::resolve(&ep, src.as_ref()).await?;
    if let Some(policy) = policy {
        policy.check(&ep, src.as_ref(), &desc).await?;
    }
    let mut doc = src.fetch_document(&desc).await?;
    if let Some(want) = ctx.settings.single_platform(command)? {
        if let View::Index(i) = &doc.view {
            let Some(entry) = i.manifests.iter().find(|d| want.matches_entry(d)) else {
                let have: Vec<String> =
                    i.manifests.iter().filter_map(|d| d.platform.as_ref().map(|p| p.to_string())).collect();
                return Err(Error::not_found(
                    format!("an image for platform {want}"),
                    format!("{ep} (it has: {})", if have.is_empty() { "none".into() } else { have.join(", ") }),
                ));
            };
            let entry = entry.clone();
            doc = src.fetch_document(&entry).await?;
        }
    }
    Ok((ep, src, doc))
}

/// Show the document `args.reference` names.
pub(crate) async fn run(ctx: &Ctx, args: InspectArgs) -> Result<i32> {
    let (ep, src, doc) = resolve_document(ctx, &args.reference, "inspect", Some(&args.policy)).await?;
    let mut out = std::io::stdout().lock();
    if args.config {
        let View::Manifest(m) = &doc.view else {
            let platforms: Vec<String> = match &doc.view {
                View::Index(i) => {
                    i.manifests.iter().filter_map(|d| d.platform.as_ref().map(|p| p.to_string())).collect()
                }
                View::Manifest(_) => vec![],
            };
            return Err(Error::Usage(format!(
                "{ep} is an index, which has no config: pick its image with --platform{}",
                match platforms.first() {
                    Some(p) => format!(" (it has: {}; e.g. --platform {p})", printable(&platforms.join(", "))),
                    None => " or a manifest by digest".into(),
                }
            )));
        };
        let buf = plan::read_small_blob(src.as_ref(), &m.config, media::MAX_MANIFEST_SIZE).await?;
        let _ = out.write_all(&buf);
        // The config's exact bytes with --raw; otherwise a line ends the output, so that the
        // shell prompt does not land on it (JSON configs usually end without one).
        if !args.raw && !buf.ends_with(b"\n") {
            let _ = out.write_all(b"\n");
        }
        return Ok(0);
    }
    if args.raw {
        let _ = out.write_all(&doc.bytes);
        return Ok(0);
    }
    let parsed: serde_json::Value =
        serde_json::from_slice(&doc.bytes).map_err(|e| Error::malformed("manifest", src.location(), e))?;
    if ctx.settings.json() {
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
    // Everything below but the digests came from the source: printed with controls escaped.
    let p = |s: &str| printable(s).into_owned();
    let _ = writeln!(out, "Reference:  {}", p(&ep.to_string()));
    let _ = writeln!(out, "Digest:     {}", doc.digest);
    let _ = writeln!(out, "MediaType:  {}", p(&doc.media_type));
    let _ = writeln!(out, "Size:       {}", doc.bytes.len());
    if let Some(at) = doc.artifact_type() {
        let _ = writeln!(out, "ArtifactType: {}", p(&at));
    }
    if let Some(s) = doc.subject() {
        let _ = writeln!(out, "Subject:    {} ({})", s.digest, p(&s.media_type));
    }
    for (k, v) in doc.annotations() {
        let _ = writeln!(out, "Annotation: {}={}", p(k), p(v));
    }
    match &doc.view {
        View::Index(i) => {
            let _ = writeln!(out, "Manifests:");
            for m in &i.manifests {
                let plat = m.platform.as_ref().map(|p| p.to_string()).unwrap_or_else(|| "-".into());
                let _ = writeln!(out, "  {}  {:<16} {} {}", m.digest, p(&plat), human(m.size), p(&m.media_type));
            }
        }
        View::Manifest(m) => {
            let _ =
                writeln!(out, "Config:     {} {} ({})", m.config.digest, human(m.config.size), p(&m.config.media_type));
            let _ = writeln!(out, "Layers:");
            for l in &m.layers {
                let title =
                    l.annotations.get(media::ANNOTATION_TITLE).map(|t| format!("  {}", p(t))).unwrap_or_default();
                let format = if hoist::layer::estargz::is_estargz(&l.annotations) {
                    "  (eStargz)"
                } else if hoist::layer::zstdchunked::is_zstd_chunked(&l.annotations) {
                    "  (zstd:chunked)"
                } else {
                    ""
                };
                let _ = writeln!(out, "  {}  {:>10}  {}{}{}", l.digest, human(l.size), p(&l.media_type), format, title);
            }
        }
    }
    Ok(0)
}
