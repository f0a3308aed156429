//! What the producing commands (`build`, `artifact`, `model pack`) share: the local store
//! layout they build into, `--output`/`--metadata-file`, and resolving a reference typed
//! in any transport to a descriptor.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::Args;
use hoist::error::{Error, Result};
use hoist::output::{export, parse_output, write_metadata, OutputSpec};
use hoist::store::{age_of, default_store, prune, remove_roots, total_size, KEEP_UNTAGGED};
use hoist::transport::layout::Layout;
use hoist::transport::origins::BlobOrigins;
use hoist::transport::Endpoint;
use hoist::Descriptor;

use super::out::outln;
use super::Ctx;

/// `--store`, `--output`, `--metadata-file`.
#[derive(Args, Clone, Default)]
pub(crate) struct OutputArgs {
    /// Where to write the result (repeatable), buildx syntax: the image as
    /// `type=oci,dest=FILE|DIR[,tar=false]`, `type=docker,dest=FILE,name=REF`,
    /// `type=registry,name=REF`, `type=image,name=REF[,push=true]`, `type=local-layout,dest=DIR`,
    /// `type=containerd,name=REF`, `type=podman,name=REF`; its filesystem as
    /// `type=local,dest=DIR` (or a bare DIR) and `type=tar,dest=FILE`; or a transport
    /// (`oci:DIR:TAG`, `docker://REF`, ...). `dest=-` writes a tar to stdout.
    #[arg(short, long = "output", value_name = "SPEC")]
    pub outputs: Vec<String>,
    /// Write buildx-style metadata JSON (digest, descriptor, names) to FILE.
    #[arg(long, value_name = "FILE")]
    pub metadata_file: Option<PathBuf>,
    /// Local store (an OCI layout) to build into [default: $HOIST_STORE or ~/.local/share/hoist/store].
    #[arg(long, value_name = "DIR")]
    pub store: Option<PathBuf>,
    #[command(flatten)]
    pub sign: super::trust::SignByArgs,
}

impl OutputArgs {
    /// Parse every `--output` (before building, so a typo fails fast and writes nothing).
    pub fn parse(&self) -> Result<Vec<OutputSpec>> {
        self.outputs.iter().map(|o| parse_output(o)).collect()
    }

    /// [`OutputArgs::parse`] for a command that builds no image layers: keys that would change
    /// what is built (`annotation.*`, `compression*`) are refused by name.
    pub fn parse_for(&self, command: &str) -> Result<Vec<OutputSpec>> {
        let outputs = self.parse()?;
        for o in &outputs {
            o.refuse_build_keys(command)?;
            if o.filesystem.is_some() {
                return Err(Error::Usage(format!(
                    "--output type=local/type=tar exports an image's filesystem; {command} makes an artifact, which has none (use type=oci or type=local-layout)"
                )));
            }
        }
        Ok(outputs)
    }

    /// Open (creating) the store layout.
    pub fn open_store(&self) -> Result<Layout> {
        let dir = self.store.clone().unwrap_or_else(default_store);
        Layout::create(&dir)
    }
}

/// Outputs writing to a layout or OCI archive without a name get `default_tag` (the tag
/// part of `--tag`), so `--tag v1 --output type=local-layout,dest=DIR` gives `oci:DIR:v1`.
pub(crate) fn apply_default_tag(outputs: &mut [OutputSpec], default_tag: Option<&str>) {
    // `sample:latest` and `reg/sample:latest` give `latest`; a bare `v1` stays `v1`.
    let tag_part = |n: &str| hoist::model::reference::split_tag(n).1.unwrap_or(n).to_string();
    let Some(tag) = default_tag.map(tag_part).filter(|t| !t.is_empty()) else {
        return;
    };
    for o in outputs {
        if o.tags.is_empty()
            && o.filesystem.is_none()
            && matches!(o.endpoint, Endpoint::Layout { .. } | Endpoint::OciArchive { .. })
        {
            o.tags.push(tag.to_string());
        }
    }
}

fn writes_stdout(o: &OutputSpec) -> bool {
    if let Some(f) = &o.filesystem {
        return f.dest == Path::new("-");
    }
    match &o.endpoint {
        Endpoint::OciArchive { path, .. } | Endpoint::DockerArchive { path, .. } => path == Path::new("-"),
        _ => false,
    }
}

/// Copy `root` from the store to every output, write the metadata file, and print the
/// root digest on stdout (unless an output is stdout itself).
pub(crate) async fn deliver(
    ctx: &Ctx,
    store: &Layout,
    root: &Descriptor,
    outputs: &[OutputSpec],
    metadata_file: Option<&Path>,
    signer: Option<&hoist::trust::sign::Signer>,
) -> Result<i32> {
    deliver_with(ctx, store, root, outputs, metadata_file, false, &BlobOrigins::default(), signer).await
}

/// [`deliver`], with `referrers`: the root's referrers in the store (attestations stored as
/// OCI 1.1 referrers) travel with it to every output; and `origins`: the registry
/// repositories a build read blobs from, which a registry output mounts them from.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn deliver_with(
    ctx: &Ctx,
    store: &Layout,
    root: &Descriptor,
    outputs: &[OutputSpec],
    metadata_file: Option<&Path>,
    referrers: bool,
    origins: &BlobOrigins,
    signer: Option<&hoist::trust::sign::Signer>,
) -> Result<i32> {
    if outputs.iter().filter(|o| writes_stdout(o)).count() > 1 {
        return Err(Error::Usage("--output: only one output can write to stdout (dest=-)".into()));
    }
    // `type=image` without push: the store is the image store; name the result there.
    for name in outputs.iter().filter(|o| o.local_only).flat_map(|o| o.names.iter()) {
        store.set_tag(root, name)?;
        ctx.progress.line(&format!("tagged {name} in oci:{}", store.root().display()));
    }
    // One --platform picks the image a docker-archive output gets; a list is what `build`
    // made (an index), and no single image is picked from it.
    let platform = match ctx.settings.platforms.as_slice() {
        [one] => Some(one),
        _ => None,
    };
    let mut copy_options = ctx.copy_options();
    copy_options.referrers |= referrers;
    let src = origins.over(store);
    let results = export(&src, root, outputs, &ctx.client, platform, &copy_options, &ctx.progress).await?;
    for r in &results {
        ctx.progress.line(&format!(
            "{} -> {}: {} blob(s) written, {} existed",
            root.digest, r.destination, r.report.blobs_uploaded, r.report.blobs_existed
        ));
    }
    let signatures = super::trust::sign_outputs(ctx, signer, root, outputs).await?;
    if let Some(path) = metadata_file {
        write_metadata(path, root, outputs, &BTreeMap::new())?;
    }
    if outputs.iter().any(writes_stdout) {
        return Ok(0);
    }
    print_delivered(ctx, root, Some(store.root()), &results, signer.is_some().then_some(&signatures[..]));
    Ok(0)
}

/// What a command that wrote `root` prints: its digest, or with `--format json` the root,
/// the store it is in (if any), each output's report and, when signing, the signatures.
pub(crate) fn print_delivered(
    ctx: &Ctx,
    root: &Descriptor,
    store: Option<&Path>,
    results: &[hoist::output::ExportResult],
    signatures: Option<&[hoist::trust::sign::Written]>,
) {
    if !ctx.json() {
        outln!("{}", root.digest);
        return;
    }
    let mut v = serde_json::json!({
        "digest": root.digest.to_string(),
        "mediaType": root.media_type,
        "size": root.size,
        "artifactType": root.artifact_type,
    });
    if let Some(store) = store {
        v["store"] = serde_json::json!(store);
    }
    v["outputs"] = results
        .iter()
        .map(|r| serde_json::json!({"destination": r.destination, "report": r.report}))
        .collect::<Vec<_>>()
        .into();
    if let Some(signatures) = signatures {
        v["signatures"] = serde_json::json!(signatures);
    }
    outln!("{v}");
}

/// `hoist store ...`: the local build store.
#[derive(clap::Subcommand)]
pub(crate) enum StoreCmd {
    /// List the store's roots: tags, digests, sizes, age.
    #[command(after_help = "Examples:\n  hoist store ls\n  hoist --format json store ls --store ./store")]
    Ls {
        /// The store [default: $HOIST_STORE or ~/.local/share/hoist/store].
        #[arg(long, value_name = "DIR")]
        store: Option<PathBuf>,
    },
    /// Remove tags (or untagged roots, by digest) from the store, then what nothing uses.
    #[command(
        after_help = "Examples:\n  hoist store rm sample:latest\n  hoist --format json store rm sample:latest  # a tag, or a root's digest"
    )]
    Rm {
        /// Tags or root digests.
        #[arg(required = true)]
        refs: Vec<String>,
        /// The store [default: $HOIST_STORE or ~/.local/share/hoist/store].
        #[arg(long, value_name = "DIR")]
        store: Option<PathBuf>,
    },
    /// Remove untagged roots older than --older-than, then every blob nothing uses (and partial
    /// downloads and push sessions untouched for a week).
    #[command(after_help = "Examples:\n  hoist store prune\n  hoist store prune --older-than 0s --dry-run")]
    Prune {
        /// Age of an untagged root to remove: 30s, 15m, 24h, 7d (default 24h).
        #[arg(long, default_value = "24h", value_name = "AGE")]
        older_than: String,
        /// Say what would be removed, remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// The store [default: $HOIST_STORE or ~/.local/share/hoist/store].
        #[arg(long, value_name = "DIR")]
        store: Option<PathBuf>,
    },
}

/// `30s`, `15m`, `24h`, `7d`, or plain seconds.
fn parse_age(s: &str) -> Result<std::time::Duration> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| Error::Usage(format!("--older-than {s:?}: give e.g. 30s, 15m, 24h, 7d")))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(Error::Usage(format!("--older-than {s:?}: unit must be s, m, h or d"))),
    };
    Ok(std::time::Duration::from_secs(n.saturating_mul(mult)))
}

fn open_existing_store(store: Option<PathBuf>) -> Result<Layout> {
    Layout::open(store.unwrap_or_else(default_store))
}

/// Run a store subcommand.
pub(crate) async fn run_store(ctx: &Ctx, cmd: StoreCmd) -> Result<i32> {
    match cmd {
        StoreCmd::Ls { store } => {
            let layout = open_existing_store(store)?;
            let mut rows = Vec::new();
            for (d, tag) in layout.root_index()?.roots() {
                let size = total_size(&layout, &d).await;
                let age = age_of(&layout, &d).map(|a| a.as_secs());
                rows.push((d, tag, size, age));
            }
            if ctx.json() {
                let v: Vec<_> = rows
                    .iter()
                    .map(|(d, tag, size, age)| {
                        serde_json::json!({"tag": tag, "digest": d.digest.to_string(), "mediaType": d.media_type, "size": size, "ageSeconds": age})
                    })
                    .collect();
                outln!("{}", serde_json::json!({ "store": layout.root(), "roots": v }));
            } else {
                outln!("{:<32} {:<20} {:>10} {:>8}", "TAG", "DIGEST", "SIZE", "AGE");
                for (d, tag, size, age) in rows {
                    let tag = tag.map_or("<untagged>".to_string(), |t| hoist::error::printable(&t).into_owned());
                    let age = age.map_or("-".to_string(), human_age);
                    outln!("{:<32} {:<20} {:>10} {:>8}", tag, d.digest.short(), super::progress::human(size), age);
                }
            }
            Ok(0)
        }
        StoreCmd::Rm { refs, store } => {
            let layout = open_existing_store(store)?;
            for r in &refs {
                let removed = if let Ok(digest) = r.parse::<hoist::Digest>() {
                    remove_roots(&layout, |d, _| d.digest == digest)?
                } else {
                    usize::from(layout.untag(r)?)
                };
                if removed == 0 {
                    return Err(Error::not_found(
                        format!("tag or root {r:?}"),
                        format!("oci:{}", layout.root().display()),
                    ));
                }
                ctx.progress.line(&format!("removed {r}"));
            }
            let report = layout.gc(false).await?;
            ctx.progress.line(&format!(
                "gc: removed {} blob(s), {}",
                report.removed.len(),
                super::progress::human(report.bytes)
            ));
            if ctx.json() {
                outln!(
                    "{}",
                    serde_json::json!({"removed": refs, "blobsRemoved": report.removed.len(), "bytes": report.bytes})
                );
            }
            Ok(0)
        }
        StoreCmd::Prune { older_than, dry_run, store } => {
            let age = parse_age(&older_than)?;
            let layout = open_existing_store(store)?;
            let (roots, report) = prune(&layout, age, dry_run).await?;
            let verb = if dry_run { "would remove" } else { "removed" };
            if ctx.json() {
                outln!(
                    "{}",
                    serde_json::json!({"roots": roots.iter().map(|d| d.digest.to_string()).collect::<Vec<_>>(), "blobsRemoved": report.removed.len(), "bytes": report.bytes, "partialFiles": report.partial_files, "partialBytes": report.partial_bytes, "uploadSessions": report.upload_sessions, "dryRun": dry_run})
                );
            } else {
                for d in &roots {
                    outln!("{}", d.digest);
                }
            }
            ctx.progress.line(&format!(
                "{verb} {} untagged root(s) and {} blob(s), {}",
                roots.len(),
                report.removed.len(),
                super::progress::human(report.bytes)
            ));
            if report.partial_files + report.upload_sessions > 0 {
                ctx.progress.line(&format!(
                    "{verb} {} stale partial download file(s), {}, and {} stale push session(s)",
                    report.partial_files,
                    super::progress::human(report.partial_bytes),
                    report.upload_sessions
                ));
            }
            Ok(0)
        }
    }
}

fn human_age(secs: u64) -> String {
    match secs {
        0..=119 => format!("{secs}s"),
        120..=7199 => format!("{}m", secs / 60),
        7200..=172_799 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

/// After `artifact push` or `model pack`: untagged results older than [`KEEP_UNTAGGED`] go.
/// Takes the store's directory: the caller drops its own handle first (a build session's
/// lock would make gc wait for it forever).
pub(crate) async fn prune_old_untagged(ctx: &Ctx, store: &Path) {
    let pruned = match Layout::open_for_gc(store) {
        Ok(layout) => prune(&layout, KEEP_UNTAGGED, false).await,
        Err(e) => Err(e),
    };
    match pruned {
        Ok((roots, r)) if !roots.is_empty() => ctx.progress.line(&format!(
            "store: pruned {} untagged result(s) older than a day ({})",
            roots.len(),
            super::progress::human(r.bytes)
        )),
        Ok(_) => {}
        // The command itself succeeded; a store that cannot be pruned now is pruned next time.
        Err(e) => tracing::warn!("store prune: {e}"),
    }
}
