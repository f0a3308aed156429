//! Registry profiles: limits of the big hosted registries, known by host name and applied
//! before they bite, instead of learnt from a failed upload an hour in.
//!
//! | Registry | Hosts | Limit | What hoist does |
//! |---|---|---|---|
//! | GitHub (GHCR) | `ghcr.io` | PATCH bodies over 4 MiB refused | chunks of at most 4 MiB |
//! | Amazon ECR | `*.dkr.ecr.*.amazonaws.com` | chunks under 5 MiB refused (all but the last; they are S3 parts) | chunks never shrink below 5 MiB, also after cuts |
//! | Google Artifact Registry / GCR | `*-docker.pkg.dev`, `gcr.io`, `*.gcr.io` | no chunked upload | one PUT per blob, retried from zero |
//! | Quay | `quay.io` | single PUT at most 20 GB | larger blobs go up in chunks |
//! | Docker Hub | `docker.io`, `registry-1.docker.io`, `index.docker.io` | blob GETs redirected to a CDN; `ratelimit-*` headers | redirects followed without credentials; rate limits shown in errors and `-v` |
//!
//! `--upload` and `--chunk-size-mib`, when given, win over a profile. `HOIST_REGISTRY_PROFILE`
//! (`HOST=NAME,...`, NAME one of `ghcr`, `ecr`, `gar`, `quay`, `dockerhub`, `none`) gives a
//! host a profile by hand: a mirror in front of one of these, or a test.

use reqwest::header::HeaderMap;

use super::UploadMode;

/// What hoist knows about one kind of registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Profile {
    /// Short name (`ghcr`, `ecr`, ...; `none` for registries without a profile).
    pub name: &'static str,
    /// Largest PATCH body the registry takes.
    pub max_patch: Option<u64>,
    /// Smallest chunk it takes (but for the last one).
    pub min_chunk: Option<u64>,
    /// No chunked upload: every blob is one PUT.
    pub monolithic_only: bool,
    /// Largest single PUT.
    pub max_put: Option<u64>,
}

/// No known limits.
pub const NONE: Profile =
    Profile { name: "none", max_patch: None, min_chunk: None, monolithic_only: false, max_put: None };
/// GitHub Container Registry: PATCH bodies of at most 4 MiB.
pub const GHCR: Profile = Profile { name: "ghcr", max_patch: Some(4 << 20), ..NONE };
/// Amazon ECR: chunks of at least 5 MiB (S3 multipart parts), but for the last.
pub const ECR: Profile = Profile { name: "ecr", min_chunk: Some(5 << 20), ..NONE };
/// Google Artifact Registry and GCR: no chunked upload.
pub const GAR: Profile = Profile { name: "gar", monolithic_only: true, ..NONE };
/// Quay: a single PUT of at most 20 GB.
pub const QUAY: Profile = Profile { name: "quay", max_put: Some(20_000_000_000), ..NONE };
/// Docker Hub: no upload limits hoist needs to know; its rate-limit headers are reported.
pub const DOCKER_HUB: Profile = Profile { name: "dockerhub", ..NONE };

const ALL: [Profile; 6] = [NONE, GHCR, ECR, GAR, QUAY, DOCKER_HUB];

/// The environment variable giving hosts a profile by hand.
pub const PROFILE_ENV: &str = "HOIST_REGISTRY_PROFILE";

/// The profile of `host` (`host[:port]` as in references).
pub fn for_host(host: &str) -> Profile {
    if let Ok(v) = std::env::var(PROFILE_ENV) {
        if let Some(p) = from_assignments(&v, host) {
            return p;
        }
    }
    by_name_of_host(host)
}

/// `HOST=NAME,...`: the profile named for `host`, if any.
fn from_assignments(v: &str, host: &str) -> Option<Profile> {
    v.split(',').filter_map(|a| a.split_once('=')).find(|(h, _)| h.trim().eq_ignore_ascii_case(host)).and_then(
        |(_, name)| {
            let name = name.trim();
            ALL.iter().copied().find(|p| p.name.eq_ignore_ascii_case(name))
        },
    )
}

/// The profile the host name says.
fn by_name_of_host(host: &str) -> Profile {
    let name = host.rsplit_once(':').map_or(host, |(h, port)| if port.parse::<u16>().is_ok() { h } else { host });
    let name = name.to_ascii_lowercase();
    let labels: Vec<&str> = name.split('.').collect();
    match name.as_str() {
        "ghcr.io" => GHCR,
        "quay.io" => QUAY,
        "docker.io" | "registry-1.docker.io" | "index.docker.io" => DOCKER_HUB,
        "gcr.io" => GAR,
        _ if name.ends_with(".gcr.io") || name.ends_with("-docker.pkg.dev") => GAR,
        // <account>.dkr.ecr.<region>.amazonaws.com(.cn)
        _ if labels.len() >= 6
            && labels[1] == "dkr"
            && labels[2] == "ecr"
            && (name.ends_with(".amazonaws.com") || name.ends_with(".amazonaws.com.cn")) =>
        {
            ECR
        }
        _ => NONE,
    }
}

/// Upload settings for one blob after the profile and the user's choices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Upload {
    pub mode: UploadMode,
    /// Bytes per PATCH.
    pub chunk: u64,
    /// Chunks never shrink below this (after cuts or 413s).
    pub min_chunk: u64,
}

/// The upload of a `size`-byte blob to a registry with `profile`: `mode` and `chunk` as
/// configured, `*_set` when the user gave them (then the profile does not change them).
pub(super) fn upload_for(
    profile: &Profile,
    size: u64,
    mode: UploadMode,
    mode_set: bool,
    chunk: u64,
    chunk_set: bool,
) -> Upload {
    let mut up = Upload { mode, chunk, min_chunk: 0 };
    if !mode_set {
        if profile.monolithic_only {
            up.mode = UploadMode::Monolithic;
        } else if profile.max_put.is_some_and(|max| size > max) {
            up.mode = UploadMode::Chunked;
        }
    }
    if !chunk_set {
        if let Some(max) = profile.max_patch {
            up.chunk = up.chunk.min(max);
        }
        if let Some(min) = profile.min_chunk {
            up.chunk = up.chunk.max(min);
            up.min_chunk = min;
        }
    }
    up
}

/// Rate-limit headers of an answer (Docker Hub's `ratelimit-limit`, `ratelimit-remaining`,
/// `docker-ratelimit-source`), as one line; `None` without them.
pub fn rate_limit_note(headers: &HeaderMap) -> Option<String> {
    let parts: Vec<String> = ["ratelimit-limit", "ratelimit-remaining", "ratelimit-reset", "docker-ratelimit-source"]
        .iter()
        .filter_map(|n| {
            let v = headers.get(*n)?.to_str().ok()?;
            Some(format!("{n}: {}", crate::error::printable(&v.chars().take(100).collect::<String>())))
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// A registry's rate limit as its last answer stated it (Docker Hub's `ratelimit-limit:
/// 100;w=21600`, `ratelimit-remaining: 76;w=21600`, and the IETF draft's `ratelimit-reset`,
/// seconds until the window resets).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RateLimit {
    /// Requests the window allows.
    pub limit: u64,
    /// Requests left in the window.
    pub remaining: u64,
    /// The window, in seconds (`w=`), when stated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_secs: Option<u64>,
    /// When the window resets (Unix seconds), when the registry said (`ratelimit-reset`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reset_at: Option<u64>,
}

impl RateLimit {
    /// The rate limit an answer's headers state, if they state one.
    pub fn from_headers(headers: &HeaderMap) -> Option<RateLimit> {
        let field = |name: &str| -> Option<(u64, Option<u64>)> {
            let v = headers.get(name)?.to_str().ok()?;
            let mut parts = v.split(';');
            let n = parts.next()?.trim().parse().ok()?;
            let w = parts.find_map(|p| p.trim().strip_prefix("w=").and_then(|w| w.trim().parse().ok()));
            Some((n, w))
        };
        let (limit, w1) = field("ratelimit-limit")?;
        let (remaining, w2) = field("ratelimit-remaining")?;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let reset_at = field("ratelimit-reset").map(|(secs, _)| now + secs);
        Some(RateLimit { limit, remaining, window_secs: w1.or(w2), reset_at })
    }

    /// When to come back, for a message: the reset time, else the window.
    pub fn when_reset(&self) -> String {
        match (self.reset_at, self.window_secs) {
            (Some(at), _) => format!("the limit resets at {}", crate::model::time::rfc3339(at as i64)),
            (None, Some(w)) => format!("the limit counts requests over a {w} s window; retry when it has passed"),
            (None, None) => "the registry did not say when the limit resets".into(),
        }
    }
}

/// Log a registry's rate-limit headers (shown with `-v`).
pub(super) fn log_rate_limit(registry: &str, headers: &HeaderMap) {
    if let Some(note) = rate_limit_note(headers) {
        tracing::info!(registry, "rate limit: {note}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_get_their_profiles() {
        assert_eq!(by_name_of_host("ghcr.io"), GHCR);
        assert_eq!(by_name_of_host("123456789012.dkr.ecr.eu-west-1.amazonaws.com"), ECR);
        assert_eq!(by_name_of_host("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn"), ECR);
        assert_eq!(by_name_of_host("ecr.amazonaws.com"), NONE);
        assert_eq!(by_name_of_host("europe-west1-docker.pkg.dev"), GAR);
        assert_eq!(by_name_of_host("eu.gcr.io"), GAR);
        assert_eq!(by_name_of_host("gcr.io"), GAR);
        assert_eq!(by_name_of_host("quay.io"), QUAY);
        assert_eq!(by_name_of_host("docker.io"), DOCKER_HUB);
        assert_eq!(by_name_of_host("GHCR.IO:443"), GHCR);
        assert_eq!(by_name_of_host("127.0.0.1:5000"), NONE);
        assert_eq!(by_name_of_host("notghcr.io"), NONE);
        assert_eq!(from_assignments("127.0.0.1:5000=ghcr, x=ecr", "127.0.0.1:5000"), Some(GHCR));
        assert_eq!(from_assignments("127.0.0.1:5000=ghcr, x=ecr", "x"), Some(ECR));
        assert_eq!(from_assignments("127.0.0.1:5000=nope", "127.0.0.1:5000"), None);
    }

    #[test]
    fn profiles_shape_uploads_unless_the_user_chose() {
        let auto = UploadMode::Auto;
        let mib = 1u64 << 20;
        assert_eq!(upload_for(&GHCR, 100, auto, false, 16 * mib, false).chunk, 4 * mib);
        assert_eq!(upload_for(&GHCR, 100, auto, false, 16 * mib, true).chunk, 16 * mib);
        let ecr = upload_for(&ECR, 100, auto, false, mib, false);
        assert_eq!((ecr.chunk, ecr.min_chunk), (5 * mib, 5 * mib));
        assert_eq!(upload_for(&GAR, 100, UploadMode::Chunked, false, mib, false).mode, UploadMode::Monolithic);
        assert_eq!(upload_for(&GAR, 100, UploadMode::Chunked, true, mib, false).mode, UploadMode::Chunked);
        assert_eq!(upload_for(&QUAY, 20_000_000_001, auto, false, mib, false).mode, UploadMode::Chunked);
        assert_eq!(upload_for(&QUAY, 20_000_000_000, auto, false, mib, false).mode, auto);
        assert_eq!(
            upload_for(&NONE, 1 << 40, auto, false, mib, false),
            Upload { mode: auto, chunk: mib, min_chunk: 0 }
        );
    }

    #[test]
    fn rate_limit_headers_are_noted() {
        let mut h = HeaderMap::new();
        assert_eq!(rate_limit_note(&h), None);
        h.insert("ratelimit-limit", "100;w=21600".parse().unwrap());
        h.insert("ratelimit-remaining", "0;w=21600".parse().unwrap());
        assert_eq!(rate_limit_note(&h).unwrap(), "ratelimit-limit: 100;w=21600, ratelimit-remaining: 0;w=21600");
        let r = RateLimit::from_headers(&h).unwrap();
        assert_eq!((r.limit, r.remaining, r.window_secs, r.reset_at), (100, 0, Some(21600), None));
        h.insert("ratelimit-reset", "30".parse().unwrap());
        assert!(RateLimit::from_headers(&h).unwrap().reset_at.is_some());
    }
}
