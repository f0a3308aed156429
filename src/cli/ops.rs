//! `hoist tag`, `untag`, `delete` and `catalog`: registry operations, each one library call
//! (`hoist::transport::registry::ops`).

use clap::Args;
use hoist::error::{printable, Error, Result};
use hoist::model::reference::Reference;
use hoist::transport::registry::ops::UntagMethod;
use hoist::transport::Endpoint;

use super::out::outln;
use super::Ctx;

/// `hoist tag REF NEWTAG...`.
#[derive(Args)]
pub(crate) struct TagArgs {
    /// The manifest to tag: REGISTRY/REPO:TAG or REGISTRY/REPO@DIGEST
    pub reference: String,
    /// New tags in the same repository
    #[arg(required = true)]
    pub tags: Vec<String>,
}

/// `hoist untag REF`.
#[derive(Args)]
pub(crate) struct UntagArgs {
    /// The tag to remove: REGISTRY/REPO:TAG (the manifest and its other tags stay)
    pub reference: String,
}

/// `hoist delete REF`.
#[derive(Args)]
pub(crate) struct DeleteArgs {
    /// The manifest to delete: REGISTRY/REPO:TAG or REGISTRY/REPO@DIGEST
    pub reference: String,
    /// Delete it even when other tags point at it (they go with it)
    #[arg(long)]
    pub force: bool,
}

/// `hoist catalog REGISTRY`.
#[derive(Args)]
pub(crate) struct CatalogArgs {
    /// The registry: HOST[:PORT]
    pub registry: String,
    /// Only repositories whose name matches this regular expression (unanchored, as Go's MatchString)
    #[arg(long, value_name = "REGEX")]
    pub filter: Option<String>,
}

/// A registry reference, or a usage error naming the command.
pub(crate) fn registry_ref(s: &str, command: &str) -> Result<Reference> {
    match s.parse::<Endpoint>()? {
        Endpoint::Registry(r) => Ok(r),
        _ => Err(Error::Usage(format!("{command}: {} is not a registry reference", printable(s)))),
    }
}

/// The tag or digest a reference names, given explicitly (no implied `latest`).
fn explicit_target(r: &Reference, whole: &str, command: &str) -> Result<String> {
    if let Some(d) = &r.digest {
        return Ok(d.to_string());
    }
    let after_repo = whole.rsplit('/').next().unwrap_or(whole);
    match &r.tag {
        Some(t) if after_repo.contains(':') => Ok(t.clone()),
        _ => Err(Error::Usage(format!(
            "{command}: name a tag or digest ({}:TAG or {}@DIGEST)",
            r.repo_ref(),
            r.repo_ref()
        ))),
    }
}

pub(crate) async fn tag(ctx: &Ctx, args: TagArgs) -> Result<i32> {
    let r = registry_ref(&args.reference, "tag")?;
    let target = r.target();
    let repo = ctx.client.repository(&r);
    let desc = repo.tag(&target, &args.tags).await?;
    if ctx.json() {
        outln!(
            "{}",
            serde_json::json!({"reference": r.to_string(), "digest": desc.digest.to_string(), "tags": args.tags})
        );
    } else {
        for t in &args.tags {
            outln!("{}:{}", r.repo_ref(), printable(t));
        }
    }
    ctx.progress.line(&format!("{} tagged {} (no blob moved)", desc.digest, args.tags.join(", ")));
    Ok(0)
}

pub(crate) async fn untag(ctx: &Ctx, args: UntagArgs) -> Result<i32> {
    let r = registry_ref(&args.reference, "untag")?;
    if r.digest.is_some() {
        return Err(Error::Usage("untag removes a tag: give REPO:TAG (delete removes a manifest by digest)".into()));
    }
    let tag = explicit_target(&r, &args.reference, "untag")?;
    let repo = ctx.client.repository(&r);
    let method = repo.untag(&tag).await?;
    if ctx.json() {
        outln!("{}", serde_json::json!({"reference": r.to_string(), "tag": tag, "method": method}));
    } else {
        outln!("{}", r);
    }
    let how = match method {
        UntagMethod::TagDelete => "the registry deleted the tag",
        UntagMethod::TempManifest => {
            "the registry has no tag deletion: a unique manifest was pushed to the tag and deleted by digest"
        }
    };
    ctx.progress.line(&format!("untagged {r}: {how}; the manifest and its other tags are kept"));
    Ok(0)
}

pub(crate) async fn delete(ctx: &Ctx, args: DeleteArgs) -> Result<i32> {
    let r = registry_ref(&args.reference, "delete")?;
    let target = explicit_target(&r, &args.reference, "delete")?;
    let repo = ctx.client.repository(&r);
    let desc = repo.head_manifest(&target).await?.ok_or_else(|| Error::not_found(target.clone(), r.repo_ref()))?;
    let tags = repo.tags_pointing_at(&desc.digest, ctx.settings.copy.jobs.max(8)).await?;
    let others: Vec<&String> = tags.iter().filter(|t| Some(*t) != r.tag.as_ref() || r.digest.is_some()).collect();
    if !others.is_empty() && !args.force {
        return Err(Error::Usage(format!(
            "delete {}: refused, {} other tag(s) point at {}: {}; `hoist untag` removes one tag, --force deletes the manifest with all its tags",
            r,
            others.len(),
            desc.digest,
            others.iter().map(|t| printable(t).into_owned()).collect::<Vec<_>>().join(", ")
        )));
    }
    repo.delete_manifest(&desc.digest).await?;
    if ctx.json() {
        outln!(
            "{}",
            serde_json::json!({"reference": r.to_string(), "digest": desc.digest.to_string(), "deletedTags": tags})
        );
    } else {
        outln!("{}", desc.digest);
    }
    ctx.progress.line(&format!("deleted {}@{} ({} tag(s) with it)", r.repo_ref(), desc.digest, tags.len()));
    Ok(0)
}

pub(crate) async fn catalog(ctx: &Ctx, args: CatalogArgs) -> Result<i32> {
    let registry = args.registry.trim_end_matches('/');
    let registry = registry.strip_prefix("docker://").unwrap_or(registry);
    if registry.is_empty() || registry.contains('/') {
        return Err(Error::Usage(format!("catalog: give a registry HOST[:PORT], not {}", printable(&args.registry))));
    }
    let filter = args
        .filter
        .as_deref()
        .map(regex::Regex::new)
        .transpose()
        .map_err(|e| Error::Usage(format!("--filter: {e}")))?;
    let mut repos = ctx.client.catalog(registry).await?;
    if let Some(f) = &filter {
        repos.retain(|r| f.is_match(r));
    }
    if ctx.json() {
        outln!("{}", serde_json::json!({"registry": registry, "repositories": repos}));
    } else {
        for r in &repos {
            outln!("{}", printable(r));
        }
    }
    Ok(0)
}

/// `hoist retention REPO`.
#[derive(Args)]
pub(crate) struct RetentionArgs {
    /// The repository: REGISTRY/REPO
    pub repository: String,
    /// Keep the N newest tags the policy covers (semver order when all are versions, else created time)
    #[arg(long, value_name = "N")]
    pub keep_last: Option<usize>,
    /// Remove tags whose image is older than DURATION (e.g. 90d, 12h)
    #[arg(long, value_name = "DURATION")]
    pub older_than: Option<String>,
    /// Only tags matching REGEX are covered (alone: every matching tag is removed)
    #[arg(long = "match", value_name = "REGEX")]
    pub matching: Option<String>,
    /// Print the plan; change nothing
    #[arg(long)]
    pub dry_run: bool,
}

pub(crate) async fn retention(ctx: &Ctx, args: RetentionArgs) -> Result<i32> {
    use hoist::sync::retention::{self, Action, Policy};
    let r = registry_ref(&args.repository, "retention")?;
    if r.digest.is_some() || args.repository.rsplit('/').next().is_some_and(|l| l.contains(':')) {
        return Err(Error::Usage("retention: give a repository REGISTRY/REPO, without tag or digest".into()));
    }
    let policy = Policy {
        keep_last: args.keep_last,
        older_than: args
            .older_than
            .as_deref()
            .map(hoist::sync::config::parse_duration)
            .transpose()
            .map_err(|e| Error::Usage(format!("--older-than: {e}")))?,
        matching: args
            .matching
            .as_deref()
            .map(regex::Regex::new)
            .transpose()
            .map_err(|e| Error::Usage(format!("--match: {e}")))?,
    };
    let repo = ctx.client.repository(&r);
    let plan = retention::plan(&repo, &policy, ctx.settings.copy.jobs.max(8)).await?;
    if !ctx.json() {
        for a in &plan.actions {
            match a {
                Action::Keep { tag, digest } => outln!("keep\t{}\t{digest}", printable(tag)),
                Action::Untag { tag, digest } => outln!("untag\t{}\t{digest}", printable(tag)),
                Action::Delete { digest, tags, reason } => {
                    outln!("delete\t{digest}\t{}\t{}", printable(&tags.join(",")), printable(reason))
                }
            }
        }
    }
    let applied = if args.dry_run { None } else { Some(retention::apply(&repo, &plan).await?) };
    if ctx.json() {
        outln!(
            "{}",
            serde_json::json!({"repository": r.repo_ref(), "dryRun": args.dry_run, "plan": plan, "applied": applied})
        );
    }
    match &applied {
        None => ctx.progress.line(&format!("retention {}: dry run, nothing changed", r.repo_ref())),
        Some(a) => {
            ctx.progress.line(&format!(
                "retention {}: {} tag(s) kept, {} untagged, {} manifest(s) deleted, {} error(s)",
                r.repo_ref(),
                plan.kept(),
                a.untagged,
                a.deleted,
                a.errors.len()
            ));
            for e in &a.errors {
                eprintln!("hoist: retention: {}", printable(e));
            }
        }
    }
    Ok(if applied.is_some_and(|a| !a.errors.is_empty()) { super::exit::OTHER } else { 0 })
}
