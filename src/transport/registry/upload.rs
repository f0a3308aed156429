//! Blob upload: cross-repository mount, one streaming PUT, resumable chunks (PATCH) with
//! the registry's `Range` as the truth about what it holds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use reqwest::header::{HeaderMap, AUTHORIZATION, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION, RANGE};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use tokio::io::AsyncReadExt;

use super::errors::{ErrorBody, ErrorCode};
use super::http::net_err;
use super::retry::{retriable_status, retry_after, RetryState};
use super::{profiles, Host, Repository, UploadMode};
use crate::error::{Error, Result};
use crate::model::descriptor::Descriptor;
use crate::model::digest::{Digest, Hasher};
use crate::model::verify::HashingReader;
use crate::transport::{BlobOutcome, Progress, Source, VerifyReader};

/// Bytes an upload holds according to its `Range: 0-<last>` header. `last` is inclusive, so
/// `0-N` means N+1 bytes, except that distribution (2.8.2) also answers `0-0` for an empty
/// session: `0-0` is read as `if_zero_zero` (0, unless the caller knows a 1-byte upload
/// happened). Getting this wrong is silent: 2.8.2 ignores `Content-Range` and appends a PATCH
/// wherever the session is, so a wrong offset only shows as a digest error at the final PUT.
fn upload_range_len(headers: &HeaderMap, if_zero_zero: u64) -> Option<u64> {
    let v = headers.get(RANGE)?.to_str().ok()?.trim();
    let v = v.strip_prefix("bytes=").unwrap_or(v);
    let (start, last) = v.split_once('-')?;
    let (start, last) = (start.trim().parse::<u64>().ok()?, last.trim().parse::<u64>().ok()?);
    if start != 0 {
        return None;
    }
    Some(if last == 0 { if_zero_zero } else { last + 1 })
}

impl Repository {
    /// Upload `desc` from `src`: a cross-repository mount when `src` serves it from another
    /// repository of this registry ([`Source::mount_from`]), else per the upload mode (monolithic, chunked, or monolithic falling
    /// back to chunks).
    pub(super) async fn upload_blob(
        &self,
        desc: &Descriptor,
        src: &dyn Source,
        progress: &dyn Progress,
    ) -> Result<BlobOutcome> {
        // Alone with this digest in this repository while it is written (see `links`); after
        // another writer of it, it is there already.
        let held = self.client.links.lock(&self.link_scope(), Some(&desc.digest), []).await;
        if held.waited && self.blob_exists(desc).await.unwrap_or(false) {
            return Ok(BlobOutcome::Existed);
        }
        let from = match src.mount_from(desc) {
            Some((reg, repo)) if reg == self.registry && repo != self.repo => Some(repo),
            _ => None,
        };
        if from.is_none() {
            if let Some(session) = self.session_file(desc, src) {
                return self.upload_resumable(desc, src, progress, &session).await;
            }
        }
        let url = match self.start_upload(desc, from.as_deref()).await? {
            None => {
                tracing::info!(digest = %desc.digest, from = ?from, "mounted");
                return Ok(BlobOutcome::Mounted);
            }
            Some(u) => u,
        };
        // A session no file keeps for a re-run is cancelled when the upload gives up, and, when
        // the copy is dropped (Ctrl-C, --timeout, another blob's failure), by
        // `Client::cancel_open_uploads`: nothing is left in the registry's `_uploads`.
        self.track_upload(desc, &url);
        let r = self.upload_untracked(desc, src, progress, url).await;
        if let Some(open) = self.untrack_upload(desc) {
            if r.is_err() {
                self.client.delete_upload(&open).await;
            }
        }
        r
    }

    /// The rest of [`Repository::upload_blob`] once a plain (not resumable) session `url` is open.
    async fn upload_untracked(
        &self,
        desc: &Descriptor,
        src: &dyn Source,
        progress: &dyn Progress,
        url: url::Url,
    ) -> Result<BlobOutcome> {
        let mode = self.upload_plan(desc).mode;
        if mode == UploadMode::Chunked {
            self.put_chunked(url, 0, desc, src, progress, ChunkStart::default()).await?;
            return Ok(BlobOutcome::Uploaded);
        }
        let mut retry = RetryState::new(&self.client.opts.retry);
        let mut url = url;
        loop {
            let f = match self.put_monolithic(&url, desc, src, progress).await? {
                Ok(()) => return Ok(BlobOutcome::Uploaded),
                Err(f) => f,
            };
            let wait = match retry.failed(f.wait) {
                Some(wait) if f.retry => wait,
                _ => return Err(f.error),
            };
            tracing::info!(digest = %desc.digest, error = %f.error, "upload failed");
            if self.blob_exists(desc).await.unwrap_or(false) {
                return Ok(BlobOutcome::Uploaded);
            }
            if mode == UploadMode::Auto {
                // Continue in chunks: where the registry stopped after an error answer,
                // from zero in a new session after a cut (see `put_chunked`). A cut or
                // a 413 also says how big a request gets through.
                let (offset, next) = match self.upload_offset(&url).await.ok().flatten() {
                    Some(x) => x,
                    None => (0, self.start_upload(desc, None).await?.expect("plain upload")),
                };
                let chunk = self.upload_plan(desc).chunk;
                let first_chunk = match (f.cut_after, f.too_large) {
                    (Some(sent), _) if sent > 0 => Some(chunk.min(sent / 2)),
                    (_, true) => Some(chunk.min(desc.size / 2)),
                    _ => None,
                };
                if f.wait.is_some() {
                    tokio::time::sleep(wait).await;
                }
                progress.reset(desc, offset);
                tracing::info!(digest = %desc.digest, offset, ?first_chunk, "continuing in chunks");
                self.put_chunked(
                    next,
                    offset.min(desc.size),
                    desc,
                    src,
                    progress,
                    ChunkStart { first_chunk, session: None },
                )
                .await?;
                return Ok(BlobOutcome::Uploaded);
            }
            tokio::time::sleep(wait).await;
            progress.reset(desc, 0);
            if let Some(old) = self.untrack_upload(desc) {
                self.client.delete_upload(&old).await;
            }
            url = self.start_upload(desc, None).await?.expect("plain upload");
            self.track_upload(desc, &url);
        }
    }

    /// Remember the open session `url` of `desc` (replacing an earlier one).
    fn track_upload(&self, desc: &Descriptor, url: &url::Url) {
        let mut open = self.client.open_uploads.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|o| !(o.registry == self.registry && o.repo == self.repo && o.digest == desc.digest));
        open.push(OpenUpload {
            registry: self.registry.clone(),
            repo: self.repo.clone(),
            digest: desc.digest.clone(),
            url: url.clone(),
        });
    }

    /// Forget the open session of `desc`, returning it.
    fn untrack_upload(&self, desc: &Descriptor) -> Option<OpenUpload> {
        let mut open = self.client.open_uploads.lock().unwrap_or_else(|e| e.into_inner());
        let at =
            open.iter().position(|o| o.registry == self.registry && o.repo == self.repo && o.digest == desc.digest)?;
        Some(open.remove(at))
    }

    /// How `desc` goes up to this registry: the configured mode and chunk size shaped by the
    /// registry's profile (see `profiles`), unless the user chose them.
    fn upload_plan(&self, desc: &Descriptor) -> profiles::Upload {
        let o = &self.client.opts;
        let profile = profiles::for_host(&self.registry);
        profiles::upload_for(&profile, desc.size, o.upload, o.upload_set, o.chunk_size, o.chunk_size_set)
    }

    /// The session file for uploading `desc` from `src`, when this upload is to survive a
    /// restart: the source has a state dir, and the blob goes up in chunks (`--upload
    /// chunked`, or `auto` for blobs of at least [`RESUMABLE_MIN`]); a session an earlier run
    /// left is continued in any mode but `monolithic`.
    fn session_file(&self, desc: &Descriptor, src: &dyn Source) -> Option<SessionFile> {
        let mode = self.upload_plan(desc).mode;
        if mode == UploadMode::Monolithic || desc.size == 0 {
            return None;
        }
        let file = SessionFile::new(&src.state_dir()?, &self.registry, &self.repo, &desc.digest);
        let chunked = mode == UploadMode::Chunked || desc.size >= RESUMABLE_MIN;
        (chunked || file.path.exists()).then_some(file)
    }

    /// A chunked upload whose session (its newest `Location`) is kept in `session`: continue
    /// the one an earlier run left where the registry says it stands, or start a new one when
    /// the registry no longer has it.
    async fn upload_resumable(
        &self,
        desc: &Descriptor,
        src: &dyn Source,
        progress: &dyn Progress,
        session: &SessionFile,
    ) -> Result<BlobOutcome> {
        if let Some(url) = session.load() {
            match self.upload_offset(&url).await {
                Ok(Some((offset, next))) if offset <= desc.size => {
                    tracing::info!(digest = %desc.digest, offset, size = desc.size, "continuing the upload session of an earlier run");
                    session.save(&next);
                    progress.reset(desc, offset);
                    self.put_chunked(
                        next,
                        offset,
                        desc,
                        src,
                        progress,
                        ChunkStart { first_chunk: None, session: Some(session) },
                    )
                    .await?;
                    session.remove();
                    return Ok(BlobOutcome::Uploaded);
                }
                other => {
                    tracing::info!(digest = %desc.digest, answer = ?other.map(|o| o.map(|(n, _)| n)), "the registry no longer has the earlier upload session; starting again");
                    session.remove();
                }
            }
        }
        let url = self.start_upload(desc, None).await?.expect("plain upload");
        session.save(&url);
        self.put_chunked(url, 0, desc, src, progress, ChunkStart { first_chunk: None, session: Some(session) }).await?;
        session.remove();
        Ok(BlobOutcome::Uploaded)
    }

    /// Resolve an upload `Location` against the registry; refuse other hosts.
    fn upload_url(&self, host: &Host, resp: &Response) -> Result<url::Url> {
        let loc = resp.headers().get(LOCATION).and_then(|v| v.to_str().ok()).ok_or_else(|| Error::Registry {
            registry: self.registry.clone(),
            method: "POST".into(),
            path: "blobs/uploads".into(),
            status: resp.status().as_u16(),
            detail: ": no Location header".into(),
        })?;
        let base = url::Url::parse(&format!("{}/", host.base)).map_err(|e| Error::Protocol {
            registry: self.registry.clone(),
            reason: format!("bad base URL {}: {e}", host.base),
        })?;
        let url = base.join(loc).map_err(|e| Error::Protocol {
            registry: self.registry.clone(),
            reason: format!("bad upload Location: {e}"),
        })?;
        if url.host_str() != base.host_str()
            || url.port_or_known_default() != base.port_or_known_default()
            || url.scheme() != base.scheme()
        {
            return Err(Error::Network {
                registry: self.registry.clone(),
                reason: format!(
                    "upload Location points to another host ({}); refusing to send data there",
                    url.host_str().unwrap_or("?")
                ),
            });
        }
        Ok(url)
    }

    /// Start an upload, trying a cross-repository mount first when `from` is given.
    /// Ok(None) means the mount succeeded.
    async fn start_upload(&self, desc: &Descriptor, from: Option<&str>) -> Result<Option<url::Url>> {
        let host = self.host().await?;
        let mut scopes = self.scopes_push();
        let path = match from {
            Some(f) => {
                scopes.push(format!("repository:{f}:pull"));
                format!("blobs/uploads/?mount={}&from={}", desc.digest, f)
            }
            None => "blobs/uploads/".to_string(),
        };
        let url = format!("{}/v2/{}/{}", host.base, self.repo, path);
        let http = &self.client.http;
        let resp = self
            .client
            .send(&host, &scopes, &Method::POST, &path, &|| http.post(&url).header(CONTENT_LENGTH, 0))
            .await?;
        match resp.status() {
            StatusCode::CREATED if from.is_some() => Ok(None),
            StatusCode::ACCEPTED | StatusCode::CREATED => Ok(Some(self.upload_url(&host, &resp)?)),
            s => {
                let body = ErrorBody::read(resp).await;
                Err(self.registry_error(&Method::POST, &path, s, &body))
            }
        }
    }

    /// Ask the registry how much of an upload it holds (`Range: 0-N`): returns N+1.
    async fn upload_offset(&self, url: &url::Url) -> Result<Option<(u64, url::Url)>> {
        let host = self.host().await?;
        let http = &self.client.http;
        let u = url.clone();
        let resp = self
            .client
            .send(&host, &self.scopes_push(), &Method::GET, "blobs/uploads/<id>", &|| http.get(u.clone()))
            .await?;
        if resp.status() != StatusCode::NO_CONTENT && !resp.status().is_success() {
            return Ok(None);
        }
        // The answer's Location carries the session state (distribution signs the offset into
        // `_state`); only that newest Location is valid for the next PATCH.
        let next = self.upload_url(&host, &resp).unwrap_or_else(|_| url.clone());
        match upload_range_len(resp.headers(), 0) {
            Some(offset) => Ok(Some((offset, next))),
            // A status answer without a usable Range: no safe offset, so start over.
            None if resp.headers().contains_key(RANGE) => Ok(None),
            None => Ok(Some((0, next))),
        }
    }

    fn with_digest(url: &url::Url, digest: &Digest) -> url::Url {
        let mut u = url.clone();
        u.query_pairs_mut().append_pair("digest", &digest.to_string());
        u
    }

    /// One streaming PUT of the whole blob.
    async fn put_monolithic(
        &self,
        url: &url::Url,
        desc: &Descriptor,
        src: &dyn Source,
        progress: &dyn Progress,
    ) -> Result<std::result::Result<(), UploadFailure>> {
        let host = self.host().await?;
        let stream = src.open_blob(desc, 0).await?;
        let counter = Arc::new(AtomicU64::new(0));
        // A blob the source hashed itself (`model pack` of local files) is not hashed a second
        // time: the registry checks the digest at this PUT and refuses other bytes (a file
        // changed since it was hashed), which `put_refused` reports naming the blob. Its size
        // is still checked on the way.
        let reader = if src.hashed_itself(desc) {
            VerifyReader::size_only(stream, desc, src.location(), 0)
        } else {
            VerifyReader::new(stream, desc, src.location())
        };
        let body = counting_body(reader, counter.clone());
        let mut req = self
            .client
            .http
            .blob_request(Method::PUT, Self::with_digest(url, &desc.digest))
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, desc.size)
            .body(body);
        if let Some(a) = self.client.authorization(&host, &self.scopes_push(), None).await? {
            req = req.header(AUTHORIZATION, a);
        }
        match send_counting(req, &counter, desc, progress).await {
            Ok(resp) if resp.status() == StatusCode::CREATED || resp.status().is_success() => Ok(Ok(())),
            Ok(resp) => {
                let status = resp.status();
                let wait = retry_after(resp.headers());
                let body = ErrorBody::read(resp).await;
                let retry = retriable_status(status)
                    || status == StatusCode::PAYLOAD_TOO_LARGE
                    || status == StatusCode::UNAUTHORIZED;
                let error = self.put_refused(desc, src, status, &body);
                Ok(Err(UploadFailure { retry, error, cut_after: None, too_large: status.as_u16() == 413, wait }))
            }
            Err(e) => {
                // A source that failed verification surfaces as a body error: not retriable.
                if let Some(inner) = find_crate_error(&e) {
                    return Err(inner);
                }
                let sent = counter.load(Ordering::Relaxed);
                let error = net_err(&self.registry, &e);
                Ok(Err(UploadFailure { retry: true, error, cut_after: Some(sent), too_large: false, wait: None }))
            }
        }
    }

    /// Upload the rest of a blob in chunks from `offset`, resuming from the registry's
    /// `Range` after failures.
    ///
    /// What distribution 2.8.2 does, and why this loop looks the way it does:
    /// - an error *answer* (429, 5xx, 401, 413 from the registry or a proxy in front of it)
    ///   leaves the session as it was: ask `GET <Location>` for `Range` and continue there;
    /// - a body cut mid-way (connection dropped) is different: the registry keeps the partial
    ///   bytes in its upload file, but the session's offset lives in the HMAC-signed `_state`
    ///   of the Location it last handed out. That no longer matches the file, so every later
    ///   request on the session (GET, PATCH, PUT) answers `404 BLOB_UPLOAD_INVALID` ("upload
    ///   resumed at wrong offset"): the session and all its earlier chunks are lost and the
    ///   blob restarts from zero in a new session;
    /// - it ignores `Content-Range` and appends, so the offset must be exactly right.
    ///
    /// So resuming saves the bytes across error answers, and against cuts the only defence is
    /// chunks that get through: after a cut, the chunk shrinks below the amount that got
    /// through before the cut (and halves on every further cut), so a link that drops every
    /// few MiB still makes progress and the total sent stays a small multiple of the blob.
    async fn put_chunked(
        &self,
        mut url: url::Url,
        mut offset: u64,
        desc: &Descriptor,
        src: &dyn Source,
        progress: &dyn Progress,
        start: ChunkStart<'_>,
    ) -> Result<()> {
        let ChunkStart { first_chunk, session } = start;
        let host = self.host().await?;
        // every Location the registry hands out is the session's newest state: keep it
        let keep = |url: &url::Url| {
            if let Some(s) = session {
                s.save(url);
            }
        };
        const MIN_CHUNK: u64 = 256 * 1024;
        let plan = self.upload_plan(desc);
        // The registry's minimum chunk: its profile's, or OCI-Chunk-Min-Length once it names one.
        let mut registry_min = plan.min_chunk;
        let mut chunk = first_chunk.unwrap_or(plan.chunk).max(MIN_CHUNK).max(registry_min);
        // Failures without a successful chunk in between, and sessions lost: both bounded
        // by the retry policy.
        let mut retry = RetryState::new(&self.client.opts.retry);
        let mut sessions = RetryState::new(&self.client.opts.retry);
        // The furthest the registry ever held: only passing it is progress, so that a
        // registry whose offset goes back and forth (`0-0`, then 1 byte, then `0-0` again)
        // still runs out of attempts.
        let mut high = offset;
        // The source is verified as it goes out, as in the monolithic PUT: `verified` is the
        // hash state of bytes [0, n) that the registry holds; the last chunk goes through a
        // `VerifyReader`, which fails before handing out its last byte when the digest is
        // wrong, so a blob hoist did not verify never completes. A blob the source hashed
        // itself is not hashed again (as in the monolithic PUT): the registry checks the
        // digest at the final PUT, and the last chunk's size is checked on the way.
        let hashed = src.hashed_itself(desc);
        let mut verified: (u64, Hasher) = (0, desc.digest.algorithm().hasher());
        // The Authorization the registry last answered 401 to: the next chunk asks for a
        // token other than that one.
        let mut refused: Option<String> = None;
        loop {
            if offset >= desc.size {
                break;
            }
            if !hashed && verified.0 != offset {
                verified = self.hash_prefix(src, desc, verified, offset).await?;
            }
            let len = chunk.min(desc.size - offset);
            let end = offset + len;
            let stream = src.open_blob(desc, offset).await?;
            let limited = stream.take(len);
            progress.reset(desc, offset);
            let counter = Arc::new(AtomicU64::new(0));
            let chunk_hash = Arc::new(Mutex::new(verified.1.clone()));
            let body = if hashed && end == desc.size {
                counting_body(VerifyReader::size_only(limited, desc, src.location(), offset), counter.clone())
            } else if hashed {
                counting_body(limited, counter.clone())
            } else if end == desc.size {
                let v = VerifyReader::resume(limited, desc, src.location(), verified.1.clone(), offset);
                counting_body(v, counter.clone())
            } else {
                counting_body(HashingReader::new(limited, chunk_hash.clone()), counter.clone())
            };
            let mut req = self
                .client
                .http
                .blob_request(Method::PATCH, url.clone())
                .header(CONTENT_TYPE, "application/octet-stream")
                .header(CONTENT_LENGTH, len)
                .header(CONTENT_RANGE, format!("{}-{}", offset, end.saturating_sub(1)))
                .body(body);
            let auth = self.client.authorization(&host, &self.scopes_push(), refused.take().as_deref()).await?;
            if let Some(a) = &auth {
                req = req.header(AUTHORIZATION, a);
            }
            let mut wait = None;
            let outcome: Result<()> = match send_counting(req, &counter, desc, progress).await {
                Ok(resp) if resp.status() == StatusCode::ACCEPTED || resp.status().is_success() => {
                    url = self.upload_url(&host, &resp)?;
                    keep(&url);
                    let before = offset;
                    // `0-0` after a 1-byte chunk from 0 means 1 byte; otherwise trust the Range.
                    offset = upload_range_len(resp.headers(), end.min(1)).unwrap_or(end);
                    if offset == end && !hashed {
                        verified = (end, chunk_hash.lock().expect("lock").clone());
                    }
                    if let Some(min) = resp
                        .headers()
                        .get("OCI-Chunk-Min-Length")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                    {
                        registry_min = min;
                        chunk = chunk.max(min);
                    }
                    if offset > high {
                        high = offset;
                        retry.progressed();
                        continue;
                    }
                    if offset > before {
                        // back where the session was before a failure: neither progress
                        // nor a failure
                        continue;
                    }
                    // The registry took the chunk but holds no more than before (a registry
                    // answering `Range: 0-0` forever): a failure like any other, so that it
                    // ends after the policy's attempts instead of sending chunks for ever.
                    Err(Error::Network {
                        registry: self.registry.clone(),
                        reason: format!(
                            "upload of {} does not advance: the registry holds {offset} of {} bytes after {} chunks in a row",
                            desc.digest,
                            desc.size,
                            retry.failures() + 1
                        ),
                    })
                }
                Ok(resp) => {
                    let s = resp.status();
                    wait = retry_after(resp.headers());
                    let body = ErrorBody::read(resp).await;
                    let e = self.registry_error(&Method::PATCH, "blobs/uploads/<id>", s, &body);
                    if s == StatusCode::PAYLOAD_TOO_LARGE {
                        chunk = (chunk / 2).max(MIN_CHUNK).max(registry_min);
                    }
                    let lost = body.has(&ErrorCode::BLOB_UPLOAD_UNKNOWN) || body.has(&ErrorCode::BLOB_UPLOAD_INVALID);
                    if s == StatusCode::RANGE_NOT_SATISFIABLE || lost {
                        // Our offset is not the registry's, or the session is gone: only a
                        // new session is safe.
                        url = self.restart_upload(desc, &mut sessions, e).await?;
                        keep(&url);
                        offset = 0;
                        continue;
                    }
                    if s == StatusCode::UNAUTHORIZED {
                        refused = auth;
                    } else if !(retriable_status(s) || s == StatusCode::PAYLOAD_TOO_LARGE) {
                        return Err(e);
                    }
                    Err(e)
                }
                Err(e) => {
                    // A source that failed verification surfaces as a body error: final.
                    if let Some(inner) = find_crate_error(&e) {
                        return Err(inner);
                    }
                    // The body was cut: learn how much gets through before a drop (what we
                    // handed the socket overstates it by the socket buffers; halving covers
                    // that, and repeated cuts keep halving).
                    let sent = counter.load(Ordering::Relaxed);
                    let through = if sent > 0 { (sent / 2).max(MIN_CHUNK) } else { chunk };
                    chunk = ((chunk / 2).min(through) & !(64 * 1024 - 1)).max(MIN_CHUNK).max(registry_min);
                    Err(net_err(&self.registry, &e))
                }
            };
            if let Err(e) = outcome {
                let Some(wait) = retry.failed(wait) else {
                    return Err(e);
                };
                tracing::info!(digest = %desc.digest, offset, chunk, error = %e, ?wait, "chunk failed; asking the registry where to resume");
                tokio::time::sleep(wait).await;
                match self.upload_offset(&url).await? {
                    Some((o, next)) if o <= desc.size => {
                        offset = o;
                        url = next;
                        keep(&url);
                    }
                    _ => {
                        url = self.restart_upload(desc, &mut sessions, e).await?;
                        keep(&url);
                        offset = 0;
                    }
                }
            }
        }
        // Close the upload with the digest.
        let put_url = Self::with_digest(&url, &desc.digest);
        let http = &self.client.http;
        let resp = self
            .client
            .send(&host, &self.scopes_push(), &Method::PUT, "blobs/uploads/<id>", &|| {
                http.put(put_url.clone()).header(CONTENT_TYPE, "application/octet-stream").header(CONTENT_LENGTH, 0)
            })
            .await?;
        if resp.status().is_success() {
            Ok(())
        } else {
            let s = resp.status();
            let body = ErrorBody::read(resp).await;
            Err(self.put_refused(desc, src, s, &body))
        }
    }

    /// The error for a final PUT of `desc` the registry answered with `status`: a refused
    /// digest (`DIGEST_INVALID`: the bytes it received hash to something else, e.g. a local
    /// file changed since the source hashed it) is a digest mismatch of that blob in `src`.
    fn put_refused(&self, desc: &Descriptor, src: &dyn Source, status: StatusCode, body: &ErrorBody) -> Error {
        if body.has(&ErrorCode::DIGEST_INVALID) {
            return Error::DigestMismatch {
                what: format!("blob {}", desc.digest),
                location: src.location(),
                expected: desc.digest.to_string(),
                actual: format!("other bytes (registry {} refused the upload{})", self.registry, body.detail()),
            };
        }
        self.registry_error(&Method::PUT, &format!("blobs/uploads ({})", desc.digest), status, body)
    }

    /// Hash state of the source's bytes [0, upto), continuing from `from` when it is behind
    /// (a resume further on) and starting over when it is ahead (a restart).
    async fn hash_prefix(
        &self,
        src: &dyn Source,
        desc: &Descriptor,
        from: (u64, Hasher),
        upto: u64,
    ) -> Result<(u64, Hasher)> {
        let (start, mut h) = if from.0 <= upto { from } else { (0, desc.digest.algorithm().hasher()) };
        if start == upto {
            return Ok((upto, h));
        }
        let mut r = src.open_blob(desc, start).await?.take(upto - start);
        let mut buf = vec![0u8; 1 << 20];
        let mut n_total = start;
        loop {
            let n = r
                .read(&mut buf)
                .await
                .map_err(|e| Error::read(format!("blob {} from {}", desc.digest, src.location()), e))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            n_total += n as u64;
        }
        if n_total != upto {
            return Err(Error::SizeMismatch {
                what: format!("blob {}", desc.digest),
                location: src.location(),
                expected: desc.size,
                actual: n_total,
            });
        }
        Ok((upto, h))
    }

    /// The upload session is lost (see `put_chunked`): open a new one, a bounded number of times.
    async fn restart_upload(&self, desc: &Descriptor, sessions: &mut RetryState, why: Error) -> Result<url::Url> {
        if sessions.failed(None).is_none() {
            return Err(why);
        }
        tracing::warn!(digest = %desc.digest, error = %why, "upload session lost; starting the blob again");
        Ok(self.start_upload(desc, None).await?.expect("plain upload"))
    }
}

/// An upload session started and not finished (see [`Client::cancel_open_uploads`]).
#[derive(Clone, Debug)]
pub(super) struct OpenUpload {
    registry: String,
    repo: String,
    digest: Digest,
    url: url::Url,
}

/// How long cancelling one upload session may take: it only tidies the registry up.
const CANCEL_TIME: Duration = Duration::from_secs(5);

impl super::Client {
    /// Cancel (`DELETE` on its URL, as the distribution spec has it) every upload session
    /// this client opened and did not finish: what a push leaves when it is dropped (Ctrl-C,
    /// a time-out, another blob's failure). Sessions a session file keeps for a re-run
    /// (chunked uploads of large blobs) are not among them. Best effort, a few seconds each.
    pub async fn cancel_open_uploads(&self) -> usize {
        let open: Vec<OpenUpload> = std::mem::take(&mut *self.open_uploads.lock().unwrap_or_else(|e| e.into_inner()));
        let n = open.len();
        futures::future::join_all(open.iter().map(|o| self.delete_upload(o))).await;
        n
    }

    /// `DELETE` the session `o` (a registry that has lost it, or refuses, changes nothing).
    pub(super) async fn delete_upload(&self, o: &OpenUpload) {
        let work = async {
            let host = self.host(&o.registry).await?;
            let scopes = vec![format!("repository:{}:pull,push", o.repo)];
            let u = o.url.clone();
            let http = &self.http;
            self.send(&host, &scopes, &Method::DELETE, "blobs/uploads/<id>", &|| {
                http.request(Method::DELETE, u.clone())
            })
            .await
        };
        match tokio::time::timeout(CANCEL_TIME, work).await {
            Ok(Ok(resp)) => {
                tracing::info!(digest = %o.digest, status = %resp.status(), "upload session cancelled")
            }
            Ok(Err(e)) => tracing::info!(digest = %o.digest, error = %e, "cancelling the upload session failed"),
            Err(_) => tracing::info!(digest = %o.digest, "cancelling the upload session timed out"),
        }
    }
}

/// Blobs at least this large are uploaded in chunks with a kept session under `--upload
/// auto` (when the source has a state dir), so a push killed an hour in continues: the
/// monolithic PUT is faster on loopback but cannot be resumed.
pub(super) const RESUMABLE_MIN: u64 = 1 << 30;
/// A session file larger than this is not ours.
const MAX_SESSION_FILE: u64 = 64 << 10;

/// Where one upload session is kept between runs: `<state dir>/uploads/<key>-<alg>-<hex>.json`
/// with the registry, repository, digest and the session's newest `Location`. Saving is best
/// effort: a session that cannot be kept only means a restart starts the blob again.
///
/// What a registry does with a session cut mid-PATCH decides what a kill costs: one that
/// keeps chunks atomic (ECR's chunks are S3 parts) still has the session at the last whole
/// chunk, and the next run continues there; distribution 2.8.2 keeps the cut chunk's bytes,
/// which breaks its signed `_state`, so the next run's `GET` of the session fails and the
/// blob starts again in a new session. That is distribution's design, not something a client
/// can avoid: its upload dispatcher compares the upload file's size with the `_state` offset
/// on every request and cancels the upload when they differ ("upload resumed at wrong
/// offest"), and a kill leaves a PATCH cut or its answer unread. The test
/// `bigtransfer::push_killed_mid_patch_on_distribution_starts_the_blob_again` shows it against
/// the real registry; what a killed push there sends again is the blobs in flight.
pub(super) struct SessionFile {
    path: std::path::PathBuf,
    saved: SavedSession,
}

#[derive(serde::Serialize, serde::Deserialize, Clone, PartialEq, Debug)]
struct SavedSession {
    registry: String,
    repository: String,
    digest: String,
    location: String,
}

impl SessionFile {
    fn new(state_dir: &std::path::Path, registry: &str, repo: &str, digest: &Digest) -> SessionFile {
        let mut h = crate::model::digest::Algorithm::Sha256.hasher();
        h.update(format!("{registry}/{repo}").as_bytes());
        let key = h.finish().hex()[..16].to_string();
        let name = format!("{key}-{}-{}.json", digest.algorithm().as_str(), digest.hex());
        SessionFile {
            path: state_dir.join("uploads").join(name),
            saved: SavedSession {
                registry: registry.into(),
                repository: repo.into(),
                digest: digest.to_string(),
                location: String::new(),
            },
        }
    }

    /// The kept session's Location, when the file is ours and for this upload.
    fn load(&self) -> Option<url::Url> {
        use std::io::Read;
        let f = std::fs::File::open(&self.path).ok()?;
        let mut bytes = Vec::new();
        f.take(MAX_SESSION_FILE).read_to_end(&mut bytes).ok()?;
        let s: SavedSession = serde_json::from_slice(&bytes).ok()?;
        let same =
            s.registry == self.saved.registry && s.repository == self.saved.repository && s.digest == self.saved.digest;
        if !same {
            return None;
        }
        url::Url::parse(&s.location).ok()
    }

    /// The temp file a save writes before its rename: one name per session, so a push killed
    /// mid-save leaves at most this one, which the next save renames and [`SessionFile::remove`]
    /// deletes (a random temp name would be left behind by every such kill).
    fn tmp_path(&self) -> std::path::PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(".tmp");
        p.into()
    }

    /// Keep `url` as the session's newest Location (write to a temp file, rename).
    fn save(&self, url: &url::Url) {
        let mut s = self.saved.clone();
        s.location = url.to_string();
        let result = (|| -> std::io::Result<()> {
            let dir = self.path.parent().unwrap_or(std::path::Path::new("."));
            std::fs::create_dir_all(dir)?;
            let tmp = self.tmp_path();
            std::fs::write(&tmp, serde_json::to_vec(&s).unwrap_or_default())?;
            std::fs::rename(&tmp, &self.path)?;
            Ok(())
        })();
        if let Err(e) = result {
            tracing::debug!(path = %self.path.display(), error = %e, "cannot keep the upload session");
        }
    }

    fn remove(&self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_file(self.tmp_path());
    }
}

/// How a chunked upload starts: the first chunk's size (after a cut, what got through), and
/// where its session is kept for a restart.
#[derive(Default, Clone, Copy)]
struct ChunkStart<'a> {
    first_chunk: Option<u64>,
    session: Option<&'a SessionFile>,
}

/// Why one upload request failed, and what it tells about the next try.
struct UploadFailure {
    retry: bool,
    error: Error,
    /// The connection broke after this many body bytes were handed to it.
    cut_after: Option<u64>,
    too_large: bool,
    /// The server's Retry-After.
    wait: Option<Duration>,
}

fn find_crate_error(e: &reqwest::Error) -> Option<Error> {
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref().and_then(|i| i.downcast_ref::<Error>()) {
                return Some(inner.clone());
            }
        }
        if let Some(inner) = s.downcast_ref::<Error>() {
            return Some(inner.clone());
        }
        src = s.source();
    }
    None
}

/// A request body that counts the bytes it hands out.
fn counting_body<R: tokio::io::AsyncRead + Send + 'static>(reader: R, counter: Arc<AtomicU64>) -> reqwest::Body {
    let stream = tokio_util::io::ReaderStream::with_capacity(reader, 1 << 20).map_ok(move |chunk: Bytes| {
        counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        chunk
    });
    reqwest::Body::wrap_stream(stream)
}

/// Send `req`, reporting the body's progress from `counter` while waiting.
async fn send_counting(
    req: RequestBuilder,
    counter: &AtomicU64,
    desc: &Descriptor,
    progress: &dyn Progress,
) -> reqwest::Result<Response> {
    let fut = req.send();
    tokio::pin!(fut);
    let mut reported = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            res = &mut fut => {
                let now = counter.load(Ordering::Relaxed);
                if now > reported {
                    progress.advance(desc, now - reported);
                }
                return res;
            }
            _ = tick.tick() => {
                let now = counter.load(Ordering::Relaxed);
                if now > reported {
                    progress.advance(desc, now - reported);
                    reported = now;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(RANGE, v.parse().unwrap());
        h
    }

    #[test]
    fn upload_range_reads_distribution_answers() {
        // distribution 2.8.2 answers `0-0` for an empty session (and for a 1-byte one)
        assert_eq!(upload_range_len(&range("0-0"), 0), Some(0));
        assert_eq!(upload_range_len(&range("0-0"), 1), Some(1));
        assert_eq!(upload_range_len(&range("0-999"), 0), Some(1000));
        assert_eq!(upload_range_len(&range("bytes=0-4095"), 0), Some(4096));
        assert_eq!(upload_range_len(&range("5-10"), 0), None);
        assert_eq!(upload_range_len(&range("0-x"), 0), None);
        assert_eq!(upload_range_len(&HeaderMap::new(), 0), None);
    }
}
