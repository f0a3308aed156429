//! The crate's error type. Every variant names what it is about: a file, a reference,
//! a registry or a digest, so that a CLI message alone tells the user where to look, and a
//! caller can match on the kind instead of reading the message.
//!
//! Variants come in groups by layer: references and content (the model), files and streams,
//! the network, outside programs and daemons, the command line, and the crate's own tasks.
//! Typed sources are kept behind an [`Arc`] so that an error can be cloned when several
//! waiters share one failure (one blob needed by two manifests, one layer converted once
//! for two images): `Clone` is derived, nothing is re-made from its message.

use std::path::PathBuf;
use std::sync::Arc;

/// A typed source of a library hoist calls (TLS, crypto), shared when the error is cloned.
pub type Source = Arc<dyn std::error::Error + Send + Sync>;

/// `Result` with the crate's [`Error`] as its default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in hoist, each variant naming what it is about.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A string that should be a digest (`algorithm:hex`) is not one, or names an
    /// unsupported algorithm.
    #[error("invalid digest {digest:?}: {reason}")]
    InvalidDigest {
        /// The text that was parsed.
        digest: String,
        /// Why it was refused.
        reason: String,
    },

    /// An image reference or endpoint (`host/repo:tag`, `oci:DIR:TAG`) could not be parsed.
    #[error("invalid reference {reference:?}: {reason}")]
    InvalidReference {
        /// The text that was parsed.
        reference: String,
        /// Why it was refused.
        reason: String,
    },

    /// Content read from a source does not hash to the digest it was asked for or announced
    /// with (a blob, a manifest, a `Docker-Content-Digest` header).
    #[error("{what} in {location}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// What was read ("blob sha256:…", "manifest").
        what: String,
        /// Where it was read from (a layout path, a registry repository).
        location: String,
        /// The digest the content should have had.
        expected: String,
        /// The digest of the bytes actually received.
        actual: String,
    },

    /// Content read from a source is longer or shorter than its descriptor's `size`.
    #[error("{what} in {location}: size {actual} != descriptor {expected}")]
    SizeMismatch {
        /// What was read.
        what: String,
        /// Where it was read from.
        location: String,
        /// The size the descriptor gives.
        expected: u64,
        /// The number of bytes received (for an overlong body, at least this many).
        actual: u64,
    },

    /// A tag, manifest, blob or file does not exist where it was looked for (exit code 3).
    #[error("{what} not found in {location}")]
    NotFound {
        /// What was looked for ("tag latest", "blob sha256:…").
        what: String,
        /// Where it was looked for.
        location: String,
    },

    /// Input from outside is not what its format requires: a JSON document that does not
    /// parse, a tar header out of bounds, an oversized body, a bad `index.json`.
    #[error("malformed {what} in {location}: {reason}")]
    Malformed {
        /// What was malformed ("manifest", "index.json", "tar entry").
        what: String,
        /// Where it came from.
        location: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: Arc<std::io::Error>,
    },

    /// A stream that is not a file failed: a blob body, standard input, a pipe.
    #[error("reading {what}: {source}")]
    Read {
        /// What was being read ("blob sha256:…", "standard input").
        what: String,
        /// The underlying error.
        source: Arc<std::io::Error>,
    },

    /// A registry or its token server refused the credentials, or no token could be had
    /// (exit code 4).
    #[error("registry {registry}: authentication failed: {reason}")]
    Auth {
        /// The registry host.
        registry: String,
        /// What went wrong (the status, the token server's answer).
        reason: String,
    },

    /// A registry answered a request with a status hoist cannot go on from, after any retries.
    #[error("registry {registry}: {method} {path}: {status}{detail}")]
    Registry {
        /// The registry host.
        registry: String,
        /// The HTTP method of the failed request.
        method: String,
        /// The request path.
        path: String,
        /// The HTTP status code.
        status: u16,
        /// A short, bounded excerpt of the error body (empty or starting with `": "`).
        detail: String,
    },

    /// A registry could not be reached or a transfer broke (connect error, TLS failure,
    /// stall or read timeout), after any retries.
    #[error("registry {registry}: {reason}")]
    Network {
        /// The registry host.
        registry: String,
        /// What failed.
        reason: String,
    },

    /// A path or name from outside would reach outside its target: an absolute path, `..`,
    /// a symlink leaving an input directory or layout (exit code 2).
    #[error("unsafe path {path:?} in {location}: {reason}")]
    UnsafePath {
        /// The offending path or name, as found.
        path: String,
        /// Where it was found (an archive, a layout, an input directory).
        location: String,
        /// Why it was refused.
        reason: String,
    },

    /// The command line itself is wrong (a bad flag value, flags that exclude each other):
    /// exit code 2, like clap's own usage errors.
    #[error("{0}")]
    Usage(String),

    /// A valid request hoist does not handle (a media type, transport or operation it does
    /// not support for this input; exit code 2).
    #[error("{0}")]
    Unsupported(String),

    /// A signature or trust policy refused content: no valid signature by the given key, a
    /// signature over another digest or identity, a policy's `reject` (exit code 5, like a
    /// digest mismatch).
    #[error("{reference}: {reason}")]
    Untrusted {
        /// The image or artifact refused.
        reference: String,
        /// Why it was refused.
        reason: String,
    },

    /// A registry answered in a way hoist cannot follow (an upload `Location` that is not a
    /// URL), or is blocked by configuration.
    #[error("registry {registry}: {reason}")]
    Protocol {
        /// The registry host.
        registry: String,
        /// What was wrong.
        reason: String,
    },

    /// An HTTP request to a server that is not a registry (the Hugging Face hub) failed, or
    /// the HTTP client could not be made.
    #[error("{location}: {source}")]
    Http {
        /// The URL, or what was being made ("http client").
        location: String,
        /// The HTTP client's error.
        source: Arc<reqwest::Error>,
    },

    /// A server that is not a registry answered with a status hoist cannot go on from.
    #[error("{url}: {status}{detail}")]
    HttpStatus {
        /// The requested URL.
        url: String,
        /// The status.
        status: reqwest::StatusCode,
        /// More about the request (empty, or starting with a space).
        detail: String,
    },

    /// The TLS configuration for a registry could not be made.
    #[error("{what}: {source}")]
    Tls {
        /// What was being made ("TLS config", "client certificate").
        what: String,
        /// The TLS library's error.
        source: Source,
    },

    /// A cryptographic operation failed: encoding a key, deriving a sealing key, signing.
    #[error("{what}{}", suffix(.source))]
    Crypto {
        /// The operation (with the library's words when its error is not a typed one).
        what: String,
        /// The crypto library's error, when it gives a typed one.
        source: Option<Source>,
    },

    /// A program or daemon hoist drives failed or refused: containerd, podman.
    #[error("{location}: {reason}")]
    Daemon {
        /// The endpoint (`containerd:NAME`, `podman:NAME`).
        location: String,
        /// What failed, with the daemon's own words.
        reason: String,
    },

    /// A build step's command (a Dockerfile `RUN`) exited unsuccessfully or was killed: the
    /// build fails (exit code 1), named as BuildKit names it.
    #[error("{location}: {reason}")]
    StepFailed {
        /// The step (`Dockerfile:LINE`).
        location: String,
        /// The step, its command and how it ended.
        reason: String,
    },

    /// A destination or store refuses the request in its present state: an archive that is
    /// finished or abandoned, a layout with problems that would make gc delete too much, a
    /// source that stopped serving what it served before.
    #[error("{location}: {reason}")]
    Refused {
        /// The destination, store or source.
        location: String,
        /// Why.
        reason: String,
    },

    /// A file changed while hoist was reading it (it grew, shrank or was replaced), so what
    /// was hashed is not what would be stored.
    #[error("{}: {reason}", path.display())]
    Changed {
        /// The file.
        path: PathBuf,
        /// How it changed.
        reason: String,
    },

    /// A document hoist made could not be serialized or read back (`what`: "serialize
    /// bundle.json").
    #[error("{what}: {source}")]
    Serialize {
        /// What was being written.
        what: String,
        /// The serializer's error.
        source: Arc<serde_json::Error>,
    },

    /// A task hoist ran on a blocking thread panicked or was cancelled.
    #[error("{what}: {source}")]
    Task {
        /// The task ("layer builder", "model unpack").
        what: String,
        /// The runtime's error.
        source: Arc<tokio::task::JoinError>,
    },

    /// A thread hoist started panicked.
    #[error("{what} thread panicked")]
    Panicked {
        /// The thread ("hash", "blob writer").
        what: String,
    },

    /// The command did not finish within its time limit (`--timeout`).
    #[error("{what}: timed out after {} s (--timeout)", after.as_secs())]
    Timeout {
        /// The command.
        what: String,
        /// The limit.
        after: std::time::Duration,
    },

    /// The command was interrupted (Ctrl-C).
    #[error(
        "interrupted (Ctrl-C): partial files were removed; blobs already complete are kept, so a re-run continues"
    )]
    Interrupted,

    /// Anything else, with its message (a short list of cases that have no kind yet).
    #[error("{0}")]
    Other(String),
}

fn suffix(source: &Option<Source>) -> String {
    source.as_ref().map(|s| format!(": {s}")).unwrap_or_default()
}

impl Error {
    /// A failed read of a stream that is not a file (`what`: "blob sha256:…", "standard input").
    pub fn read(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Read { what: what.into(), source: Arc::new(source) }
    }
    /// An [`Error::Io`] for a failure on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source: Arc::new(source) }
    }
    /// An [`Error::Malformed`]: `what` in `location` is wrong because of `reason`.
    pub fn malformed(what: impl Into<String>, location: impl Into<String>, reason: impl ToString) -> Self {
        Error::Malformed { what: what.into(), location: location.into(), reason: reason.to_string() }
    }
    /// An [`Error::Serialize`]: writing `what` failed.
    pub fn serialize(what: impl Into<String>, source: serde_json::Error) -> Self {
        Error::Serialize { what: what.into(), source: Arc::new(source) }
    }
    /// An [`Error::Task`]: the blocking task `what` panicked or was cancelled.
    pub fn task(what: impl Into<String>, source: tokio::task::JoinError) -> Self {
        Error::Task { what: what.into(), source: Arc::new(source) }
    }
    /// An [`Error::Http`]: a request to `location` failed.
    pub fn http(location: impl Into<String>, source: reqwest::Error) -> Self {
        Error::Http { location: location.into(), source: Arc::new(source) }
    }
    /// An [`Error::Crypto`]: `what` failed with `source`.
    pub fn crypto(what: impl Into<String>, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error::Crypto { what: what.into(), source: Some(Arc::new(source)) }
    }
    /// An [`Error::Crypto`] from a library whose error type is not a `std` error (or gives
    /// none): `what` says what failed, with the library's words.
    pub fn crypto_untyped(what: impl Into<String>) -> Self {
        Error::Crypto { what: what.into(), source: None }
    }
    /// An [`Error::Tls`]: making `what` failed with `source`.
    pub fn tls(what: impl Into<String>, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error::Tls { what: what.into(), source: Arc::new(source) }
    }
    /// An [`Error::Refused`]: `location` refuses because of `reason`.
    pub fn refused(location: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Refused { location: location.into(), reason: reason.into() }
    }
    /// An [`Error::Daemon`]: the daemon behind `location` failed with `reason`.
    pub fn daemon(location: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Daemon { location: location.into(), reason: reason.into() }
    }
    /// An [`Error::Changed`]: `path` changed while it was read.
    pub fn changed(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Changed { path: path.into(), reason: reason.into() }
    }
    /// A failed directory walk under `root`, as an [`Error::Io`] naming the entry that failed.
    pub(crate) fn walk(root: &std::path::Path, e: walkdir::Error) -> Self {
        let path = e.path().unwrap_or(root).to_path_buf();
        Error::Io { path, source: Arc::new(e.into()) }
    }
    /// An [`Error::NotFound`]: `what` is missing from `location`.
    pub fn not_found(what: impl Into<String>, location: impl Into<String>) -> Self {
        Error::NotFound { what: what.into(), location: location.into() }
    }
}

/// Attach a path to an `std::io::Error`.
pub trait IoContext<T> {
    /// Turn an io error into an [`Error::Io`] naming `path`.
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::result::Result<T, std::io::Error> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}

/// `s` with control characters escaped (`\u{1b}`, `\n`, ...), for text that came from outside
/// (a registry's tags, annotations, error bodies) before it reaches a terminal or a log: no
/// raw ESC or BEL from a hostile server gets to move the cursor or retitle the window.
pub fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(s);
    }
    std::borrow::Cow::Owned(
        s.chars()
            .flat_map(|c| -> Box<dyn Iterator<Item = char>> {
                if c.is_control() {
                    Box::new(c.escape_default())
                } else {
                    Box::new(std::iter::once(c))
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clone_keeps_the_typed_source_and_the_message() {
        let e = Error::io("/x/y", std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied"));
        let c = e.clone();
        assert_eq!(c.to_string(), e.to_string());
        let Error::Io { source, .. } = &c else { panic!("{c:?}") };
        assert_eq!(source.kind(), std::io::ErrorKind::PermissionDenied);
        assert!(std::error::Error::source(&c).is_some());
        let j = Error::serialize("manifest", serde_json::from_str::<u8>("x").unwrap_err());
        assert!(j.clone().to_string().starts_with("manifest: expected value"), "{j}");
    }

    #[test]
    fn kinds_name_their_place() {
        let t = Error::Timeout { what: "copy".into(), after: std::time::Duration::from_secs(5) };
        assert_eq!(t.to_string(), "copy: timed out after 5 s (--timeout)");
        assert!(Error::Interrupted.to_string().starts_with("interrupted (Ctrl-C)"));
        assert_eq!(
            Error::changed("/m/w.bin", "changed while it was hashed").to_string(),
            "/m/w.bin: changed while it was hashed"
        );
        assert_eq!(Error::crypto_untyped("RSA signing failed").to_string(), "RSA signing failed");
        assert_eq!(
            Error::refused("oci-archive:a.tar", "archive already finished").to_string(),
            "oci-archive:a.tar: archive already finished"
        );
        let p = Error::Protocol { registry: "r.example".into(), reason: "blocked".into() };
        assert_eq!(p.to_string(), "registry r.example: blocked");
    }
}
