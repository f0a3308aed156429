//! `hoist completion SHELL`, `hoist man [DIR]`, `hoist version`: about hoist itself.

use std::path::PathBuf;

use clap::{Args, CommandFactory};
use clap_complete::Shell;
use hoist::error::{Error, IoContext, Result};

use super::out::{outln, write_stdout};
use super::Ctx;

/// `hoist --version` and `hoist version`: the package version, git commit and build date
/// (from build.rs; "unknown" commit when built without git).
pub(crate) const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("HOIST_GIT_COMMIT"),
    ", built ",
    env!("HOIST_BUILD_DATE"),
    ")"
);

/// `hoist completion`.
#[derive(Args)]
pub(crate) struct CompletionArgs {
    /// The shell to write a completion script for.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// `hoist man`.
#[derive(Args)]
pub(crate) struct ManArgs {
    /// Write hoist.1 and one page per subcommand (hoist-copy.1, ...) into DIR; without DIR,
    /// print hoist.1 on stdout.
    pub dir: Option<PathBuf>,
}

/// Print the completion script.
pub(crate) fn completion(args: CompletionArgs) -> Result<i32> {
    let mut cmd = super::Cli::command();
    let mut buf = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "hoist", &mut buf);
    write_stdout(&buf);
    Ok(0)
}

/// Print or write the man pages.
pub(crate) fn man(ctx: &Ctx, args: ManArgs) -> Result<i32> {
    let cmd = super::Cli::command();
    match args.dir {
        None => {
            let mut buf = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut buf).map_err(|e| Error::Other(format!("man page: {e}")))?;
            write_stdout(&buf);
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir).at(&dir)?;
            clap_mangen::generate_to(cmd, &dir).at(&dir)?;
            ctx.progress.line(&format!("man pages written to {}", dir.display()));
        }
    }
    Ok(0)
}

/// Print the version.
pub(crate) fn version(ctx: &Ctx) -> Result<i32> {
    if ctx.json() {
        outln!(
            "{}",
            serde_json::json!({
                "version": env!("CARGO_PKG_VERSION"),
                "commit": env!("HOIST_GIT_COMMIT"),
                "buildDate": env!("HOIST_BUILD_DATE"),
            })
        );
    } else {
        outln!("hoist {LONG_VERSION}");
    }
    Ok(0)
}
