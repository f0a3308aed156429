//! Command-line mistakes, as a user migrating from crane, skopeo or regctl makes them: a
//! command hoist does not have gets a pointer to the hoist way (clap alone would suggest the
//! nearest name: `hoist tag` -> `tags`, which lists instead of tagging), and every usage
//! error is exit 2, in JSON on stdout too with `--format json`, and an `error` event with
//! `--progress json`.

use clap::error::{ContextKind, ContextValue, ErrorKind};

use super::exit;
use super::out::Failure;

/// Commands of other tools hoist does not have (yet), with the hoist way to get there. A
/// pointer is shown only while hoist has no command of that name ([`super::has_command`]).
const POINTERS: &[(&str, &str)] = &[
    ("tag", "to add a tag, copy within the registry (nothing is uploaded): `hoist copy REGISTRY/REPO:OLD REGISTRY/REPO:NEW`"),
    ("delete", "hoist does not delete from registries yet: `skopeo delete docker://REF` does, where the registry allows it"),
    ("rm", "hoist does not delete from registries yet (`hoist store rm` removes from the local build store)"),
    ("catalog", "hoist does not list a registry's repositories yet: `hoist tags REGISTRY/REPO` lists one repository's tags"),
    ("export", "to write an image's filesystem, copy it to an --output: `hoist copy REF type=local,dest=DIR` (or type=tar,dest=FILE|-), as `crane export` does"),
    ("ls", "`hoist tags REF` lists a repository's tags"),
    ("cp", "`hoist copy SRC DST` copies (every platform, like `crane cp` / `skopeo copy --all`)"),
    ("manifest", "`hoist inspect --raw REF` prints a manifest's exact bytes"),
    ("config", "`hoist inspect --config REF` prints an image's config"),
];

/// The pointer for the unknown command `name`, when hoist has none of that name.
fn pointer(name: &str) -> Option<&'static str> {
    POINTERS.iter().find(|(n, _)| *n == name && !super::has_command(n)).map(|(_, p)| *p)
}

/// Whether the raw arguments ask for `--OPTION VALUE` (or `--OPTION=VALUE`): the flags
/// are not parsed when parsing failed.
fn asks(args: &[String], option: &str, value: &str) -> bool {
    args.windows(2).any(|w| w[0] == option && w[1] == value) || args.iter().any(|a| *a == format!("{option}={value}"))
}

/// Report the clap error `e` and give the exit code: help and version print as clap prints
/// them (exit 0); an unknown command with a pointer says where to go instead.
pub(crate) fn report(e: clap::Error) -> i32 {
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit();
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let json = asks(&args, "--format", "json");
    let events = asks(&args, "--progress", "json");
    let unknown = match (e.kind(), e.get(ContextKind::InvalidSubcommand)) {
        (ErrorKind::InvalidSubcommand, Some(ContextValue::String(name))) => Some(name.clone()),
        _ => None,
    };
    let message = match unknown.as_deref().and_then(|n| pointer(n).map(|p| (n, p))) {
        Some((name, p)) => format!("hoist has no command `{name}`: {p}"),
        None => {
            if !json && !events {
                let _ = e.print();
                return exit::USAGE;
            }
            // clap's message without its "error: " prefix and usage footer.
            let rendered = e.render().to_string();
            let first = rendered.lines().find(|l| !l.trim().is_empty()).unwrap_or("usage error");
            first.strip_prefix("error: ").unwrap_or(first).to_string()
        }
    };
    let failure = Failure { kind: "usage", message, code: exit::USAGE };
    failure.print(json, events);
    exit::USAGE
}

#[cfg(test)]
mod tests {
    #[test]
    fn pointers_name_the_hoist_way() {
        assert!(super::pointer("export").is_some_and(|p| p.contains("type=local")));
        // A command hoist has gets no pointer.
        assert!(super::pointer("copy").is_none() && super::pointer("tags").is_none());
        assert!(super::asks(&["--format".into(), "json".into()], "--format", "json"));
        assert!(super::asks(&["--format=json".into()], "--format", "json"));
    }
}
