//! `hoist sbom REF`: the packages of any image in any transport, read from its layers as
//! streams, as a table, hoist's JSON (`--format json`), SPDX 2.3 JSON (`--format spdx-json`)
//! or CycloneDX 1.6 JSON (`--format cyclonedx-json`).

use std::io::Write;

use clap::Args;
use hoist::error::Result;
use hoist::sbom::{self, Format, ScanOptions};

use super::settings;
use super::store::resolve_any;
use super::Ctx;

/// `hoist sbom`.
#[derive(Args)]
pub(crate) struct SbomArgs {
    /// The image, in any source transport (an index: its image for --platform, or its only one).
    pub reference: String,
}

/// Scan `args.reference` and print what was found.
pub(crate) async fn run(ctx: &Ctx, args: SbomArgs) -> Result<i32> {
    let (ep, src, root) = resolve_any(ctx, &args.reference).await?;
    let platform = ctx.settings.single_platform("sbom")?;
    let name = args.reference.clone();
    let _ = ep;
    let opts = ScanOptions { jobs: ctx.settings.copy.jobs.max(1) };
    let found = sbom::scan_image(src.as_ref(), &root, platform, Some(&name), &opts).await?;
    ctx.progress.line(&format!("{}: {} packages in {}", args.reference, found.packages.len(), found.manifest.digest));
    let mut out = std::io::stdout().lock();
    let created = created_now();
    let bytes = match ctx.settings.format {
        settings::Format::SpdxJson => Format::SpdxJson.render(&found, created)?,
        settings::Format::CyclonedxJson => Format::CycloneDxJson.render(&found, created)?,
        settings::Format::Json => serde_json::to_vec_pretty(&found).map_err(|e| hoist::Error::Other(e.to_string()))?,
        settings::Format::Text => {
            let mut s = String::new();
            let w = found.packages.iter().map(|p| p.name.len()).max().unwrap_or(4).max(4);
            let v = found.packages.iter().map(|p| p.version.len()).max().unwrap_or(7).max(7);
            s.push_str(&format!("{:<6} {:<w$} {:<v$} {}\n", "TYPE", "NAME", "VERSION", "LICENSE"));
            for p in &found.packages {
                s.push_str(&format!(
                    "{:<6} {:<w$} {:<v$} {}\n",
                    p.kind.as_str(),
                    p.name,
                    p.version,
                    p.license.as_deref().unwrap_or("-")
                ));
            }
            s.into_bytes()
        }
    };
    let _ = out.write_all(&bytes);
    if !bytes.ends_with(b"\n") {
        let _ = out.write_all(b"\n");
    }
    Ok(0)
}

/// The creation time documents carry: `SOURCE_DATE_EPOCH` when set, else now.
pub(crate) fn created_now() -> i64 {
    match std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|s| s.trim().parse().ok()) {
        Some(t) => t,
        None => {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
        }
    }
}
