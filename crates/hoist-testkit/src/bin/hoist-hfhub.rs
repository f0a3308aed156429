//! hoist-hfhub: the test Hugging Face hub of `hoist_testkit::hfhub` as a program, for
//! benchmarks. Serves every file under DIR (hidden ones left out) as the repo ORG/NAME, from
//! disk; weights and files of 10 MiB or more are LFS files (their sha256 is in the tree
//! listing, as the hub gives it).
//!
//! Prints the endpoint (`http://127.0.0.1:PORT`, what `HF_ENDPOINT` is set to) as the first
//! line on stdout; on SIGINT or SIGTERM prints the number of file downloads as one JSON line
//! and exits.

use std::io::Write;
use std::path::PathBuf;

use clap::Parser;
use hoist_testkit::hfhub::{HfHub, HubFile, HubRepo};

/// Files this large or larger are LFS files (the hub's own threshold is 10 MB).
const LFS_MIN: u64 = 10 << 20;

#[derive(Parser, Debug)]
#[command(name = "hoist-hfhub", about = "A test Hugging Face hub serving one directory as one model repo")]
struct Args {
    /// The repo id, `ORG/NAME`.
    #[arg(long)]
    repo: String,
    /// The directory whose files the repo holds.
    #[arg(long)]
    dir: PathBuf,
    /// Bearer token every request must carry (none: a public repo).
    #[arg(long)]
    token: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut files = Vec::new();
    for e in walkdir::WalkDir::new(&args.dir).sort_by_file_name() {
        let e = e?;
        let rel = e.path().strip_prefix(&args.dir)?.to_string_lossy().to_string();
        if !e.file_type().is_file() || rel.split('/').any(|c| c.starts_with('.')) {
            continue;
        }
        let size = e.metadata()?.len();
        let weight = [".safetensors", ".gguf", ".bin", ".pt", ".onnx"].iter().any(|x| rel.ends_with(x));
        files.push(HubFile::disk(&rel, e.path(), weight || size >= LFS_MIN));
    }
    anyhow::ensure!(!files.is_empty(), "no files under {}", args.dir.display());
    let hub = HfHub::start(vec![HubRepo::new(&args.repo, files)], args.token.as_deref());
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", hub.url())?;
        out.flush()?;
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        anyhow::Ok(())
    })?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", serde_json::json!({"downloads": hub.downloads()}))?;
    out.flush()?;
    Ok(())
}
