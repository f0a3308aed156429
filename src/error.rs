//! The crate's error type. Every variant names what it is about: a file, a reference
//! or a digest, so that a CLI message alone tells the user where to look.

use std::path::PathBuf;

/// `Result` with the crate's [`Error`] as its default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in hoist, each variant naming what it is about.
#[derive(Debug, thiserror::Error)]
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
        source: std::io::Error,
    },

    /// A stream that is not a file failed: a blob body, standard input, a pipe.
    #[error("reading {what}: {source}")]
    Read {
        /// What was being read ("blob sha256:…", "standard input").
        what: String,
        /// The underlying error.
        source: std::io::Error,
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

    /// Anything else, with its message.
    #[error("{0}")]
    Other(String),
}

/// Errors are cloned when several waiters share one failure (one blob needed by two
/// manifests): an io error is re-made with its kind and message.
impl Clone for Error {
    fn clone(&self) -> Self {
        let io = |e: &std::io::Error| std::io::Error::new(e.kind(), e.to_string());
        match self {
            Error::InvalidDigest { digest, reason } => {
                Error::InvalidDigest { digest: digest.clone(), reason: reason.clone() }
            }
            Error::InvalidReference { reference, reason } => {
                Error::InvalidReference { reference: reference.clone(), reason: reason.clone() }
            }
            Error::DigestMismatch { what, location, expected, actual } => Error::DigestMismatch {
                what: what.clone(),
                location: location.clone(),
                expected: expected.clone(),
                actual: actual.clone(),
            },
            Error::SizeMismatch { what, location, expected, actual } => Error::SizeMismatch {
                what: what.clone(),
                location: location.clone(),
                expected: *expected,
                actual: *actual,
            },
            Error::NotFound { what, location } => Error::NotFound { what: what.clone(), location: location.clone() },
            Error::Malformed { what, location, reason } => {
                Error::Malformed { what: what.clone(), location: location.clone(), reason: reason.clone() }
            }
            Error::Io { path, source } => Error::Io { path: path.clone(), source: io(source) },
            Error::Read { what, source } => Error::Read { what: what.clone(), source: io(source) },
            Error::Auth { registry, reason } => Error::Auth { registry: registry.clone(), reason: reason.clone() },
            Error::Untrusted { reference, reason } => {
                Error::Untrusted { reference: reference.clone(), reason: reason.clone() }
            }
            Error::Registry { registry, method, path, status, detail } => Error::Registry {
                registry: registry.clone(),
                method: method.clone(),
                path: path.clone(),
                status: *status,
                detail: detail.clone(),
            },
            Error::Network { registry, reason } => {
                Error::Network { registry: registry.clone(), reason: reason.clone() }
            }
            Error::UnsafePath { path, location, reason } => {
                Error::UnsafePath { path: path.clone(), location: location.clone(), reason: reason.clone() }
            }
            Error::Usage(m) => Error::Usage(m.clone()),
            Error::Unsupported(m) => Error::Unsupported(m.clone()),
            Error::Other(m) => Error::Other(m.clone()),
        }
    }
}

impl Error {
    /// A failed read of a stream that is not a file (`what`: "blob sha256:…", "standard input").
    pub fn read(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Read { what: what.into(), source }
    }
    /// An [`Error::Io`] for a failure on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
    /// An [`Error::Malformed`]: `what` in `location` is wrong because of `reason`.
    pub fn malformed(what: impl Into<String>, location: impl Into<String>, reason: impl ToString) -> Self {
        Error::Malformed { what: what.into(), location: location.into(), reason: reason.to_string() }
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
