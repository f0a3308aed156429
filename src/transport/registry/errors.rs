//! Registry error bodies (`{"errors":[{"code":"…","message":"…"}]}`, distribution spec
//! "Error Codes") read into structured codes. Decisions match on the [`ErrorCode`], never
//! on the message text, which registries word as they like.

use std::borrow::Cow;

use futures::StreamExt;
use reqwest::Response;

use crate::error::printable;

/// Bytes of an error body hoist reads; the rest is dropped (an error body only explains a
/// status hoist already has). containers/image bounds error bodies too
/// (`iolimits.MaxErrorBodySize`, 1 MiB); 64 KiB holds any real one.
pub const MAX_ERROR_BODY: usize = 64 << 10;

/// Time an error body may take to arrive: it only explains a status hoist already has, so
/// a trickled one (a byte a second would take 18 hours for [`MAX_ERROR_BODY`]) is cut here.
pub const ERROR_BODY_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// Characters of a non-JSON error body shown in a message.
const MAX_ERROR_TEXT: usize = 300;

/// A distribution error code, e.g. `BLOB_UPLOAD_INVALID`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ErrorCode(pub Cow<'static, str>);

impl ErrorCode {
    /// Blob upload invalid (distribution: the session's state no longer matches its data).
    pub const BLOB_UPLOAD_INVALID: ErrorCode = ErrorCode::known("BLOB_UPLOAD_INVALID");
    /// Blob upload unknown to registry (expired or cancelled session).
    pub const BLOB_UPLOAD_UNKNOWN: ErrorCode = ErrorCode::known("BLOB_UPLOAD_UNKNOWN");
    /// The digest given does not match the content uploaded (a blob's final PUT).
    pub const DIGEST_INVALID: ErrorCode = ErrorCode::known("DIGEST_INVALID");
    /// Manifest unknown.
    pub const MANIFEST_UNKNOWN: ErrorCode = ErrorCode::known("MANIFEST_UNKNOWN");
    /// The operation is unsupported.
    pub const UNSUPPORTED: ErrorCode = ErrorCode::known("UNSUPPORTED");
    /// The `n` of a paginated request is more than the registry serves a page.
    pub const PAGINATION_NUMBER_INVALID: ErrorCode = ErrorCode::known("PAGINATION_NUMBER_INVALID");

    const fn known(s: &'static str) -> ErrorCode {
        ErrorCode(Cow::Borrowed(s))
    }

    /// The code as the registry spelled it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One entry of an error body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryError {
    /// The code (upper case, as the spec writes them); empty when the entry had none.
    pub code: ErrorCode,
    /// The registry's message, as sent (escape it before printing: see [`ErrorBody::detail`]).
    pub message: String,
}

/// An error answer's body: its structured entries, or its text when it was not the
/// distribution JSON.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ErrorBody {
    /// The entries of `{"errors":[…]}`.
    pub errors: Vec<RegistryError>,
    /// The body's text (at most [`MAX_ERROR_TEXT`] characters) when it had no entries.
    pub text: String,
    /// The body went on past [`MAX_ERROR_BODY`] and was not read to its end.
    pub truncated: bool,
    /// The answer's rate-limit headers (Docker Hub's `ratelimit-*`), if any.
    pub rate_limit: Option<String>,
}

impl ErrorBody {
    /// Read `resp`'s body, at most [`MAX_ERROR_BODY`] bytes within [`ERROR_BODY_TIME`]; a
    /// broken, oversized or trickled body gives what came by then.
    pub async fn read(resp: Response) -> ErrorBody {
        let rate_limit = super::profiles::rate_limit_note(resp.headers());
        let mut body = Vec::new();
        let mut truncated = false;
        let mut stream = resp.bytes_stream();
        let deadline = tokio::time::Instant::now() + ERROR_BODY_TIME;
        loop {
            let chunk = match tokio::time::timeout_at(deadline, stream.next()).await {
                Ok(Some(Ok(chunk))) => chunk,
                Ok(_) => break,
                Err(_) => {
                    truncated = true;
                    break;
                }
            };
            let room = MAX_ERROR_BODY - body.len();
            if chunk.len() > room {
                body.extend_from_slice(&chunk[..room]);
                truncated = true;
                break;
            }
            body.extend_from_slice(&chunk);
        }
        let mut e = ErrorBody::parse(&body);
        e.truncated = truncated;
        e.rate_limit = rate_limit;
        e
    }

    /// Parse an error body.
    pub fn parse(body: &[u8]) -> ErrorBody {
        #[derive(serde::Deserialize)]
        struct Errs {
            errors: Vec<E>,
        }
        #[derive(serde::Deserialize)]
        struct E {
            code: Option<String>,
            message: Option<String>,
        }
        if let Ok(e) = serde_json::from_slice::<Errs>(body) {
            let errors: Vec<RegistryError> = e
                .errors
                .into_iter()
                .map(|x| RegistryError {
                    code: ErrorCode(Cow::Owned(x.code.unwrap_or_default().to_ascii_uppercase())),
                    message: x.message.unwrap_or_default(),
                })
                .collect();
            if !errors.is_empty() {
                return ErrorBody { errors, ..Default::default() };
            }
        }
        let text = String::from_utf8_lossy(body);
        ErrorBody { text: text.trim().chars().take(MAX_ERROR_TEXT).collect(), ..Default::default() }
    }

    /// Whether one of the entries has `code`.
    pub fn has(&self, code: &ErrorCode) -> bool {
        self.errors.iter().any(|e| &e.code == code)
    }

    /// The text for an error message (`": CODE message; …"`, or `""`), with control
    /// characters escaped: the registry's words never reach a terminal raw.
    pub fn detail(&self) -> String {
        let parts: Vec<String> =
            self.errors.iter().map(|x| format!("{} {}", x.code.as_str(), x.message).trim().to_string()).collect();
        let text = if parts.is_empty() { self.text.clone() } else { parts.join("; ") };
        let rate = self.rate_limit.as_ref().map(|r| format!(" ({r})")).unwrap_or_default();
        if text.is_empty() {
            return if rate.is_empty() { String::new() } else { format!(":{rate}") };
        }
        format!(": {}{}{rate}", printable(&text), if self.truncated { " (error body truncated)" } else { "" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_detail() {
        let b = ErrorBody::parse(
            br#"{"errors":[{"code":"BLOB_UPLOAD_INVALID","message":"upload resumed at wrong offset\u001b[2J"}]}"#,
        );
        assert!(b.has(&ErrorCode::BLOB_UPLOAD_INVALID));
        assert!(!b.has(&ErrorCode::MANIFEST_UNKNOWN));
        let d = b.detail();
        assert!(d.starts_with(": BLOB_UPLOAD_INVALID upload resumed at wrong offset"), "{d}");
        assert!(!d.contains('\u{1b}'), "{d:?}");
        let t = ErrorBody::parse(b"  not json\x07 ");
        assert!(t.errors.is_empty());
        assert_eq!(t.detail(), ": not json\\u{7}");
        assert_eq!(ErrorBody::parse(b"").detail(), "");
    }
}
