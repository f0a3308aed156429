//! `hoist referrers REF`: the manifests whose `subject` is REF, as `Source::referrers` lists
//! them (a registry: the referrers API, else the `sha256-<hex>` fallback index; a layout or
//! archive: a scan of the roots and their child manifests).

use clap::Args;
use hoist::error::{printable, Result};
use hoist::transport::Endpoint;

use super::out::outln;
use super::resolve_any;
use super::Ctx;

/// `hoist referrers`.
#[derive(Args)]
pub(crate) struct ReferrersArgs {
    /// The subject: a registry reference, oci:DIR:TAG, oci-archive:FILE, ...
    pub reference: String,
    /// Only referrers of this artifactType.
    #[arg(long)]
    pub artifact_type: Option<String>,
}

pub(crate) async fn run(ctx: &Ctx, args: ReferrersArgs) -> Result<i32> {
    let (ep, src, subject) = resolve_any(ctx, &args.reference).await?;
    let list = match &ep {
        Endpoint::Registry(r) => {
            ctx.client.repository(r).referrers(&subject.digest, args.artifact_type.as_deref()).await?
        }
        // Layouts and archives: the Source default, a scan of the roots and their indexes.
        _ => src.referrers(&subject.digest, args.artifact_type.as_deref()).await?,
    };
    if ctx.json() {
        let v = serde_json::json!({
            "reference": ep.to_string(),
            "subject": {"mediaType": subject.media_type, "digest": subject.digest.to_string(), "size": subject.size},
            "manifests": list,
        });
        outln!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        for d in &list {
            outln!("{}  {}  {}", d.digest, printable(d.artifact_type.as_deref().unwrap_or("-")), d.size);
        }
    }
    ctx.progress.line(&format!("{}: {} referrer(s) of {}", ep, list.len(), subject.digest));
    Ok(0)
}
