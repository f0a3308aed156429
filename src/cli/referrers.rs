//! `hoist referrers REF`: the manifests whose `subject` is REF. On a registry: the
//! referrers API, else the `sha256-<hex>` fallback index. In a layout or archive: a scan
//! of the roots and their child manifests.

use std::collections::BTreeSet;

use clap::Args;
use hoist::error::{printable, Result};
use hoist::model::document::View;
use hoist::model::media;
use hoist::transport::registry::referrers::referrer_descriptor;
use hoist::transport::Endpoint;
use hoist::transport::Source;
use hoist::{Descriptor, Digest};

use super::store::resolve_any;
use super::Ctx;

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
        _ => scan(src.as_ref(), &subject.digest, args.artifact_type.as_deref()).await?,
    };
    if ctx.json() {
        let v = serde_json::json!({
            "reference": ep.to_string(),
            "subject": {"mediaType": subject.media_type, "digest": subject.digest.to_string(), "size": subject.size},
            "manifests": list,
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        for d in &list {
            println!("{}  {}  {}", d.digest, printable(d.artifact_type.as_deref().unwrap_or("-")), d.size);
        }
    }
    ctx.progress.line(&format!("{}: {} referrer(s) of {}", ep, list.len(), subject.digest));
    Ok(0)
}

/// Referrers of `subject` among the roots of `src` and the manifests their indexes list.
async fn scan(src: &dyn Source, subject: &Digest, artifact_type: Option<&str>) -> Result<Vec<Descriptor>> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    let mut queue: Vec<Descriptor> = src.roots().await?.into_iter().map(|(d, _)| d).collect();
    queue.reverse();
    while let Some(d) = queue.pop() {
        if !media::is_document(&d.media_type) || !seen.insert(d.digest.clone()) {
            continue;
        }
        let doc = src.fetch_document(&d).await?;
        if doc.subject().is_some_and(|s| &s.digest == subject) {
            let r = referrer_descriptor(&doc);
            if artifact_type.is_none_or(|t| r.artifact_type.as_deref() == Some(t)) {
                out.push(r);
            }
        }
        if let View::Index(i) = &doc.view {
            queue.extend(i.manifests.iter().rev().cloned());
        }
    }
    Ok(out)
}
