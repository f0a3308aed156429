//! The crate's error type. Every variant names what it is about: a file, a reference
//! or a digest, so that a CLI message alone tells the user where to look.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid digest {digest:?}: {reason}")]
    InvalidDigest { digest: String, reason: String },

    #[error("invalid reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },

    #[error("{what} in {location}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { what: String, location: String, expected: String, actual: String },

    #[error("{what} in {location}: size {actual} != descriptor {expected}")]
    SizeMismatch { what: String, location: String, expected: u64, actual: u64 },

    #[error("{what} not found in {location}")]
    NotFound { what: String, location: String },

    #[error("malformed {what} in {location}: {reason}")]
    Malformed { what: String, location: String, reason: String },

    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },

    /// A stream that is not a file failed: a blob body, standard input, a pipe.
    #[error("reading {what}: {source}")]
    Read { what: String, source: std::io::Error },

    #[error("registry {registry}: authentication failed: {reason}")]
    Auth { registry: String, reason: String },

    #[error("registry {registry}: {method} {path}: {status}{detail}")]
    Registry { registry: String, method: String, path: String, status: u16, detail: String },

    #[error("registry {registry}: {reason}")]
    Network { registry: String, reason: String },

    #[error("unsafe path {path:?} in {location}: {reason}")]
    UnsafePath { path: String, location: String, reason: String },

    /// The command line itself is wrong (a bad flag value, flags that exclude each other):
    /// exit code 2, like clap's own usage errors.
    #[error("{0}")]
    Usage(String),

    #[error("{0}")]
    Unsupported(String),

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
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
    pub fn malformed(what: impl Into<String>, location: impl Into<String>, reason: impl ToString) -> Self {
        Error::Malformed { what: what.into(), location: location.into(), reason: reason.to_string() }
    }
    pub fn not_found(what: impl Into<String>, location: impl Into<String>) -> Self {
        Error::NotFound { what: what.into(), location: location.into() }
    }
}

/// Attach a path to an `std::io::Error`.
pub trait IoContext<T> {
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
