//! Exit codes: the CLI's mapping of library errors, as the README documents it.

use hoist::error::Error;

/// Success.
pub(crate) const OK: i32 = 0;
/// Anything not listed below (network, I/O, a registry's refusal, a timeout).
pub(crate) const OTHER: i32 = 1;
/// Bad input: a usage error, an invalid reference or digest, a malformed document, an unsafe
/// path, something unsupported (clap's own usage errors exit 2 as well).
pub(crate) const USAGE: i32 = 2;
/// What was asked for is not there.
pub(crate) const NOT_FOUND: i32 = 3;
/// Authentication failed.
pub(crate) const AUTH: i32 = 4;
/// Content does not match its digest or size, or no valid signature vouches for it (also:
/// `layout fsck` found problems).
pub(crate) const INTEGRITY: i32 = 5;
/// Interrupted by Ctrl-C (SIGINT), as a shell reports a process that SIGINT ended (128 + 2).
pub(crate) const INTERRUPTED: i32 = 130;

/// The exit code for `e`.
pub(crate) fn code(e: &Error) -> i32 {
    match e {
        Error::InvalidDigest { .. } | Error::InvalidReference { .. } | Error::Malformed { .. } => USAGE,
        Error::UnsafePath { .. } | Error::Unsupported(_) | Error::Usage(_) => USAGE,
        Error::NotFound { .. } => NOT_FOUND,
        Error::Auth { .. } => AUTH,
        Error::DigestMismatch { .. } | Error::SizeMismatch { .. } | Error::Untrusted { .. } => INTEGRITY,
        _ => OTHER,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        assert_eq!(code(&Error::Usage("x".into())), 2);
        assert_eq!(code(&Error::not_found("a", "b")), 3);
        assert_eq!(code(&Error::Auth { registry: "r".into(), reason: "no".into() }), 4);
        let mismatch =
            Error::DigestMismatch { what: "w".into(), location: "l".into(), expected: "e".into(), actual: "a".into() };
        assert_eq!(code(&mismatch), 5);
        assert_eq!(code(&Error::refused("x", "y")), 1);
    }
}
