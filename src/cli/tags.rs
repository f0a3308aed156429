//! `hoist tags REF`: the tags of a repository, layout or archive, one a line (control
//! characters escaped: tags come from the source).

use clap::Args;
use hoist::error::{printable, Result};
use hoist::transport::{open_source, Endpoint};

use super::out::outln;
use super::Ctx;

/// `hoist tags`.
#[derive(Args)]
pub(crate) struct TagsArgs {
    /// A registry repository, a layout or an archive.
    pub reference: String,
}

/// List the tags.
pub(crate) async fn run(ctx: &Ctx, args: TagsArgs) -> Result<i32> {
    let ep = Endpoint::from_user_input(&args.reference)?;
    let src = open_source(&ep, &ctx.client)?;
    let tags = src.list_tags().await?;
    if ctx.settings.json() {
        outln!("{}", serde_json::json!({ "tags": tags }));
    } else {
        for t in tags {
            outln!("{}", printable(&t));
        }
    }
    Ok(0)
}
