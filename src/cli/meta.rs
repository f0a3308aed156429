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

/// The EXIT STATUS section of every man page (the codes of [`super::exit`]).
const EXIT_STATUS: &str = r#".SH "EXIT STATUS"
.TP
\fB0\fR
Success (for \fBmodel diff\fR: the models are the same).
.TP
\fB1\fR
Any other failure: network, I/O, a registry's refusal, a time\-out (for \fBmodel diff\fR: the models differ).
.TP
\fB2\fR
Bad input: a usage error, an invalid reference, digest or \-\-output, a missing input file, a malformed document, an unsafe path, something unsupported; also a directory that is not an OCI layout.
.TP
\fB3\fR
What was asked for is not there (a tag, manifest, repository, blob or file).
.TP
\fB4\fR
Authentication failed.
.TP
\fB5\fR
Content does not match its digest or size (also: \fBlayout fsck\fR found problems).
.TP
\fB130\fR
Interrupted (Ctrl\-C); partial files were removed.
"#;

/// The usage line of `cmd` (called `name`) with each option's value named, as SYNOPSIS shows
/// it: `hoist copy [--src-creds USER:PASSWORD] ... SRC DST`.
fn synopsis(cmd: &clap::Command, name: &str) -> String {
    use clap::ArgAction;
    let mut s = name.to_string();
    for a in cmd.get_arguments().filter(|a| !a.is_hide_set() && !a.is_positional()) {
        let flag = match (a.get_short(), a.get_long()) {
            (Some(c), Some(l)) => format!("-{c}|--{l}"),
            (Some(c), None) => format!("-{c}"),
            (None, Some(l)) => format!("--{l}"),
            (None, None) => continue,
        };
        let value = if a.get_action().takes_values() {
            let v = a.get_value_names().map(|v| v.join(" ")).unwrap_or_else(|| a.get_id().as_str().to_uppercase());
            format!(" {v}")
        } else {
            String::new()
        };
        let more = if matches!(a.get_action(), ArgAction::Append | ArgAction::Count) { "..." } else { "" };
        if a.is_required_set() {
            s.push_str(&format!(" {flag}{value}{more}"));
        } else {
            s.push_str(&format!(" [{flag}{value}]{more}"));
        }
    }
    for p in cmd.get_positionals().filter(|a| !a.is_hide_set()) {
        let v = p.get_value_names().map(|v| v.join(" ")).unwrap_or_else(|| p.get_id().as_str().to_uppercase());
        let more = if matches!(p.get_action(), ArgAction::Append) { "..." } else { "" };
        if p.is_required_set() {
            s.push_str(&format!(" {v}{more}"));
        } else {
            s.push_str(&format!(" [{v}]{more}"));
        }
    }
    if cmd.has_subcommands() {
        s.push_str(" COMMAND");
    }
    s
}

/// `cmd` and its subcommands (recursively) with their SYNOPSIS from [`synopsis`].
fn with_synopsis(cmd: clap::Command, name: &str) -> clap::Command {
    let usage = synopsis(&cmd, name);
    let subs: Vec<String> = cmd.get_subcommands().map(|s| s.get_name().to_string()).collect();
    let mut cmd = cmd.override_usage(usage);
    for sub in subs {
        let full = format!("{name} {sub}");
        cmd = cmd.mut_subcommand(&sub, |c| with_synopsis(c, &full));
    }
    cmd
}

/// One man page: clap_mangen's sections, then EXIT STATUS.
fn render_page(cmd: clap::Command) -> Result<(String, Vec<u8>)> {
    let man = clap_mangen::Man::new(cmd);
    let mut buf = Vec::new();
    man.render(&mut buf).map_err(|e| Error::read("man page", e))?;
    buf.extend_from_slice(EXIT_STATUS.as_bytes());
    Ok((man.get_filename(), buf))
}

/// Every page: the command's, then each visible subcommand's (recursively).
fn pages(cmd: &clap::Command, out: &mut Vec<(String, Vec<u8>)>) -> Result<()> {
    out.push(render_page(cmd.clone())?);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        pages(sub, out)?;
    }
    Ok(())
}

/// The root command as the man pages show it.
fn man_command() -> clap::Command {
    let mut cmd = super::Cli::command().disable_help_subcommand(true);
    cmd.build();
    with_synopsis(cmd, "hoist")
}

/// Print or write the man pages.
pub(crate) fn man(ctx: &Ctx, args: ManArgs) -> Result<i32> {
    let cmd = man_command();
    match args.dir {
        None => {
            let (_, buf) = render_page(cmd)?;
            write_stdout(&buf);
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir).at(&dir)?;
            let mut all = Vec::new();
            pages(&cmd, &mut all)?;
            for (name, buf) in &all {
                let path = dir.join(name);
                std::fs::write(&path, buf).at(&path)?;
            }
            ctx.progress.line(&format!("{} man pages written to {}", all.len(), dir.display()));
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

#[cfg(test)]
mod tests {
    #[test]
    fn man_pages_name_option_values_and_have_an_exit_status() {
        let mut all = Vec::new();
        super::pages(&super::man_command(), &mut all).unwrap();
        let page = |n: &str| {
            let (_, b) = all.iter().find(|(f, _)| f == n).unwrap_or_else(|| panic!("no {n}"));
            String::from_utf8_lossy(b).into_owned()
        };
        let copy = page("hoist-copy.1");
        assert!(copy.contains("EXIT STATUS") && copy.contains("130"), "{copy}");
        let synopsis = copy.split(".SH SYNOPSIS").nth(1).unwrap().split(".SH").next().unwrap();
        assert!(synopsis.contains("USER:PASSWORD") && synopsis.contains("SRC DST"), "{synopsis}");
        assert!(page("hoist.1").contains("EXIT STATUS"));
    }
}
