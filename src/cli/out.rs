//! Writing results to stdout and errors to stderr the way a pipeline expects: a closed stdout
//! (`hoist tags REF | head -1`) ends the process quietly with status 0, as ripgrep does, and an
//! error becomes one [`Failure`] (kind, message, exit code) printed as text or, with
//! `--format json`, as `{"error":{"kind":…,"message":…,"exitCode":…}}` on stdout.

use std::io::Write;
use std::path::Path;

use hoist::error::{printable, Error};

use super::exit;

/// `println!` for results: a broken pipe ends the process with status 0, nothing printed.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::out::write_stdout(format!("{}\n", format_args!($($arg)*)).as_bytes())
    };
}
pub(crate) use outln;

/// Write `bytes` to stdout and flush. A reader that went away (EPIPE) is not an error for a
/// command that prints results: the process ends here with status 0, as ripgrep's does.
/// Any other write error ends it with status 1 and a message.
pub(crate) fn write_stdout(bytes: &[u8]) {
    let written = super::progress::suspend_bars(|| {
        let mut out = std::io::stdout().lock();
        out.write_all(bytes).and_then(|_| out.flush())
    });
    if let Err(e) = written {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(exit::OK);
        }
        eprintln!("hoist: error: writing to standard output: {e}");
        std::process::exit(exit::OTHER);
    }
}

/// Whether `e` is, at bottom, a write to a reader that went away.
pub(crate) fn is_broken_pipe(e: &Error) -> bool {
    match e {
        Error::Io { source, .. } | Error::Read { source, .. } => source.kind() == std::io::ErrorKind::BrokenPipe,
        _ => false,
    }
}

/// A panic that is a failed `print!` to a closed pipe (a library or dependency printing
/// directly) ends quietly with status 0 too; any other panic keeps Rust's report.
pub(crate) fn install_broken_pipe_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.contains("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(exit::OK);
        }
        default(info);
    }));
}

/// An error as the user sees it: a kind (camelCase, stable for scripts), a message, an exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    /// `usage`, `notFound`, `notALayout`, `auth`, `integrity`, `untrusted`, `network`, `registry`, `io`,
    /// `interrupted`, `timeout` or `other`.
    pub kind: &'static str,
    /// What went wrong, control characters escaped.
    pub message: String,
    /// The process's exit status.
    pub code: i32,
}

impl Failure {
    /// The failure for `e`, with the messages a user needs: what was not found where, a
    /// directory that is not an OCI layout (exit 2).
    pub fn from_error(e: &Error) -> Failure {
        let code = exit::code(e);
        let (kind, message) = match e {
            Error::Io { path, source }
                if source.kind() == std::io::ErrorKind::NotFound && not_a_layout(path).is_some() =>
            {
                not_a_layout(path).unwrap_or(("io", e.to_string()))
            }
            Error::NotFound { what, location } => ("notFound", not_found_message(what, location)),
            Error::Usage(_)
            | Error::InvalidDigest { .. }
            | Error::InvalidReference { .. }
            | Error::UnsafePath { .. }
            | Error::Unsupported(_) => ("usage", e.to_string()),
            Error::Malformed { .. } => ("malformed", e.to_string()),
            Error::Auth { .. } => ("auth", e.to_string()),
            Error::DigestMismatch { .. } | Error::SizeMismatch { .. } => ("integrity", e.to_string()),
            Error::Untrusted { .. } => ("untrusted", e.to_string()),
            Error::Network { .. } => ("network", e.to_string()),
            Error::Registry { .. } => ("registry", e.to_string()),
            Error::Io { .. } | Error::Read { .. } => ("io", e.to_string()),
            Error::Timeout { .. } => ("timeout", e.to_string()),
            Error::Interrupted => ("interrupted", e.to_string()),
            _ => ("other", e.to_string()),
        };
        let code = match kind {
            "notALayout" => exit::USAGE,
            "notFound" => exit::NOT_FOUND,
            "interrupted" => exit::INTERRUPTED,
            _ => code,
        };
        Failure { kind, message: printable(&without_os_error(&message)).into_owned(), code }
    }

    /// Print to stderr (as an `error` event with `--progress json`, so that stderr stays pure
    /// JSON), and with `json` also as one JSON object on stdout.
    pub fn print(&self, json: bool, events: bool) {
        if events {
            let v = serde_json::json!({"event": "error", "kind": self.kind, "message": self.message, "exitCode": self.code});
            eprintln!("{v}");
        } else {
            eprintln!("hoist: error: {}", self.message);
        }
        if json {
            let v = serde_json::json!({"error": {"kind": self.kind, "message": self.message, "exitCode": self.code}});
            // A closed stdout here changes nothing: the exit code is the failure's.
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{v}");
            let _ = out.flush();
        }
    }
}

/// The message without Rust's " (os error N)" suffixes: the error's words say it already.
fn without_os_error(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find(" (os error ") {
        out.push_str(&rest[..at]);
        let tail = &rest[at + " (os error ".len()..];
        match tail.find(')') {
            Some(end) if tail[..end].bytes().all(|b| b.is_ascii_digit()) => rest = &tail[end + 1..],
            _ => {
                out.push_str(" (os error ");
                rest = tail;
            }
        }
    }
    out.push_str(rest);
    out
}

/// A missing `DIR/oci-layout` means DIR is not an OCI layout (usage, exit 2); a missing DIR
/// is not found (exit 3). `None` for any other missing file (it keeps its I/O message).
fn not_a_layout(path: &Path) -> Option<(&'static str, String)> {
    if path.file_name().is_some_and(|n| n == "oci-layout") {
        let dir = path.parent()?;
        return Some(if dir.is_dir() {
            ("notALayout", format!("{} is not an OCI layout (it has no oci-layout file)", dir.display()))
        } else {
            ("notFound", format!("directory {} not found", dir.display()))
        });
    }
    None
}

/// "tag `v1` not found in repository localhost:5000/demo": the registry transport names only
/// the last path segment of a 404 (`v1`, `sha256:…`, `list` for tags/list).
fn not_found_message(what: &str, location: &str) -> String {
    // "any manifest" (a store with nothing to copy): say that it holds none.
    if let Some(kind) = what.strip_prefix("any ") {
        return format!("{location} holds no {kind}");
    }
    let Some(repo) = location.strip_prefix("docker://") else {
        return format!("{what} not found in {location}");
    };
    if let Some(rest) = what.strip_prefix("repository") {
        return format!("repository {repo} not found{rest}");
    }
    if what.contains(' ') {
        return format!("{what} not found in repository {repo}");
    }
    if what == "list" {
        return format!("repository {repo} not found");
    }
    if hoist::model::reference::TagOrDigest::parse(what).digest().is_some() {
        return format!("manifest or blob {what} not found in repository {repo}");
    }
    format!("tag `{what}` not found in repository {repo}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_say_what_was_not_found_where() {
        let f = Failure::from_error(&Error::not_found("v1", "docker://localhost:5000/demo"));
        assert_eq!(f.message, "tag `v1` not found in repository localhost:5000/demo");
        assert_eq!((f.kind, f.code), ("notFound", 3));
        let f = Failure::from_error(&Error::not_found("list", "docker://localhost:5000/demo"));
        assert_eq!(f.message, "repository localhost:5000/demo not found");
        let dir = tempfile::tempdir().unwrap();
        let e = Error::io(dir.path().join("oci-layout"), std::io::Error::from(std::io::ErrorKind::NotFound));
        let f = Failure::from_error(&e);
        assert_eq!((f.kind, f.code), ("notALayout", 2), "{f:?}");
        assert!(f.message.contains("is not an OCI layout"), "{f:?}");
        let e = Error::io(dir.path().join("nope/oci-layout"), std::io::Error::from(std::io::ErrorKind::NotFound));
        assert_eq!(Failure::from_error(&e).code, 3);
        let f = Failure::from_error(&Error::not_found("repository", "docker://localhost:5000/demo"));
        assert_eq!(f.message, "repository localhost:5000/demo not found");
        let f = Failure::from_error(&Error::not_found("any manifest", "oci:/tmp/x"));
        assert_eq!(f.message, "oci:/tmp/x holds no manifest");
        let e = Error::io("/nope", std::io::Error::from_raw_os_error(2));
        assert_eq!(Failure::from_error(&e).message, "/nope: No such file or directory");
        let pipe = Error::io("-", std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert!(is_broken_pipe(&pipe));
    }

    #[test]
    fn timeouts_and_interrupts_are_kinds_not_words_in_a_message() {
        let f = Failure::from_error(&Error::Interrupted);
        assert_eq!((f.kind, f.code), ("interrupted", 130));
        let t = Error::Timeout { what: "copy".into(), after: std::time::Duration::from_secs(3) };
        let f = Failure::from_error(&t);
        assert_eq!((f.kind, f.code, f.message.as_str()), ("timeout", 1, "copy: timed out after 3 s (--timeout)"));
        // A daemon's message that happens to say "interrupted" is not a Ctrl-C.
        let f = Failure::from_error(&Error::daemon("podman:x", "podman load failed (exit 1): interrupted system call"));
        assert_eq!((f.kind, f.code), ("other", 1));
    }
}
