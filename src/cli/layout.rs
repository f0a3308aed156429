//! `hoist layout fsck|gc`: maintain a local OCI layout.

use std::path::PathBuf;

use clap::Subcommand;
use hoist::error::{printable, Result};
use hoist::transport::layout::Layout;

use super::exit;
use super::out::outln;
use super::progress::human;
use super::Ctx;

/// `hoist layout ...`.
#[derive(Subcommand)]
pub(crate) enum LayoutCmd {
    /// Verify every blob and every reference.
    #[command(after_help = "Examples:\n  hoist layout fsck ./layout\n  hoist --format json layout fsck ./layout")]
    Fsck {
        /// The layout directory.
        dir: PathBuf,
    },
    /// Delete blobs no index entry reaches, stale temp files, and partial downloads and push
    /// sessions untouched for a week (never one a running transfer holds).
    #[command(after_help = "Examples:\n  hoist layout gc --dry-run ./layout\n  hoist layout gc ./layout")]
    Gc {
        /// The layout directory.
        dir: PathBuf,
        /// Say what would be removed, remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Run a layout subcommand.
pub(crate) async fn run(ctx: &Ctx, cmd: LayoutCmd) -> Result<i32> {
    match cmd {
        LayoutCmd::Fsck { dir } => {
            let layout = Layout::open(&dir)?;
            let problems = layout.fsck().await?;
            if ctx.settings.json() {
                outln!("{}", serde_json::json!({ "layout": dir, "problems": problems }));
            } else {
                for p in &problems {
                    outln!("{}", printable(p));
                }
            }
            if problems.is_empty() {
                ctx.progress.line(&format!("oci:{}: ok", dir.display()));
                Ok(exit::OK)
            } else {
                eprintln!("hoist: oci:{}: {} problem(s)", dir.display(), problems.len());
                Ok(exit::INTEGRITY)
            }
        }
        LayoutCmd::Gc { dir, dry_run } => {
            let layout = Layout::open_for_gc(&dir)?;
            let report = layout.gc(dry_run).await?;
            let verb = if dry_run { "would remove" } else { "removed" };
            if ctx.settings.json() {
                outln!(
                    "{}",
                    serde_json::json!({"removed": report.removed.iter().map(|d| d.to_string()).collect::<Vec<_>>(), "bytes": report.bytes, "tempFiles": report.temp_files, "tempBytes": report.temp_bytes, "partialFiles": report.partial_files, "partialBytes": report.partial_bytes, "uploadSessions": report.upload_sessions, "dryRun": dry_run})
                );
            } else {
                for d in &report.removed {
                    outln!("{d}");
                }
            }
            ctx.progress.line(&format!(
                "{verb} {} blob(s), {}, and {} stale temp file(s), {}",
                report.removed.len(),
                human(report.bytes),
                report.temp_files,
                human(report.temp_bytes)
            ));
            if report.partial_files + report.upload_sessions > 0 {
                ctx.progress.line(&format!(
                    "{verb} {} stale partial download file(s), {}, and {} stale push session(s)",
                    report.partial_files,
                    human(report.partial_bytes),
                    report.upload_sessions
                ));
            }
            Ok(exit::OK)
        }
    }
}
