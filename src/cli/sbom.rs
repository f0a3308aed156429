//! `hoist sbom REF`: the packages of any image in any transport, read from its layers as
//! streams, as a table, hoist's JSON (`--format json`), SPDX 2.3 JSON (`--format spdx-json`)
//! or CycloneDX 1.6 JSON (`--format cyclonedx-json`). With `--attach`, the SBOM is pushed
//! beside the image as an OCI 1.1 referrer (and, with `--key`, also as a signed in-toto
//! attestation: the trust module's `attest`).

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use hoist::error::{Error, Result};
use hoist::sbom::{self, Format, ScanOptions};
use hoist::transport::{open_destination, Endpoint};
use hoist::trust::sign::{self, SignRequest};

use super::out::outln;
use super::resolve_any;
use super::settings;
use super::Ctx;

/// `hoist sbom`.
#[derive(Args)]
pub(crate) struct SbomArgs {
    /// The image, in any source transport (an index: its image for --platform; without one, its
    /// only image, else this machine's platform).
    pub reference: String,
    /// Push the SBOM (SPDX, or CycloneDX with --format cyclonedx-json) to REF's registry or
    /// layout as an OCI 1.1 referrer of the image manifest (artifactType the document's media
    /// type; the sha256-<hex> tag fallback where the registry has no referrers API), and print
    /// what was written instead of the document.
    #[arg(long)]
    pub attach: bool,
    /// With --attach: also sign the SBOM as an in-toto attestation with this private key (a
    /// Sigstore bundle referrer, as `hoist attest --type spdxjson|cyclonedx`).
    #[arg(long, value_name = "KEY", requires = "attach")]
    pub key: Option<PathBuf>,
    /// Read the key's password from the first line of this file.
    #[arg(long, value_name = "FILE", requires = "key")]
    pub sign_passphrase_file: Option<PathBuf>,
}

/// Scan `args.reference` and print what was found.
pub(crate) async fn run(ctx: &Ctx, args: SbomArgs) -> Result<i32> {
    // the key first: a wrong password fails before anything is read
    let key = match &args.key {
        Some(k) => Some(super::trust::load_private_key(k, args.sign_passphrase_file.as_deref())?),
        None => None,
    };
    let (ep, src, root) = resolve_any(ctx, &args.reference).await?;
    if args.attach && !matches!(ep, Endpoint::Registry(_) | Endpoint::Layout { .. }) {
        return Err(Error::Usage(format!("{ep}: --attach writes referrers to registries and OCI layouts")));
    }
    let platform = ctx.settings.single_platform("sbom")?;
    let name = args.reference.clone();
    let opts = ScanOptions { jobs: ctx.settings.copy.jobs.max(1) };
    let found = sbom::scan_image(src.as_ref(), &root, platform, Some(&name), &opts).await?;
    ctx.progress.line(&format!("{}: {} packages in {}", args.reference, found.packages.len(), found.manifest.digest));
    let created = created_now();
    if args.attach {
        let format = match ctx.settings.format {
            settings::Format::CyclonedxJson => Format::CycloneDxJson,
            _ => Format::SpdxJson,
        };
        let document = format.render(&found, created)?;
        let dst = open_destination(&ep, &ctx.client, None).await?;
        let attached =
            hoist::attest::push_sbom_referrer(dst.as_ref(), &found.manifest, format, document.clone().into(), created)
                .await?;
        // the signing hook: the same document as the predicate of a signed in-toto statement
        let signed = match &key {
            Some(key) => {
                let identity = match &ep {
                    Endpoint::Registry(r) => Some(r.normalized()),
                    _ => None,
                };
                let req = SignRequest {
                    subject: &found.manifest,
                    identity: identity.as_deref(),
                    key,
                    format: sign::Format::Bundle,
                };
                let predicate = sign::predicate_value(&document);
                sign::attest(src.as_ref(), dst.as_ref(), &req, format.predicate_type(), predicate).await?
            }
            None => Vec::new(),
        };
        dst.finish().await?;
        if ctx.json() {
            let v = serde_json::json!({"reference": ep.to_string(), "referrer": attached, "attestations": signed});
            outln!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        } else {
            let new = if attached.added { "" } else { " (already there)" };
            outln!("{} sbom attached ({}): {}{new}", attached.subject, attached.artifact_type, attached.manifest);
            for w in &signed {
                outln!("{} attested ({}): {} {}", w.subject, format.predicate_type(), w.format, w.manifest);
            }
        }
        return Ok(0);
    }
    let mut out = std::io::stdout().lock();
    let bytes = match ctx.settings.format {
        settings::Format::SpdxJson => Format::SpdxJson.render(&found, created)?,
        settings::Format::CyclonedxJson => Format::CycloneDxJson.render(&found, created)?,
        settings::Format::Json => {
            serde_json::to_vec_pretty(&found).map_err(|e| hoist::Error::serialize("sbom report", e))?
        }
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
