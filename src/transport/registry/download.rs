//! Blob download: one GET streamed to the reader, resumed with `Range` after a broken body;
//! and ranged reads of one part of a blob (`bytes=a-b`), the lanes of a parallel download.
//!
//! A ranged read is trusted only when the answer is `206` with a `Content-Range` naming
//! exactly the bytes asked for (`bytes a-b/size`, size as in the descriptor or `*`). A `200`
//! (a registry or CDN ignoring `Range`, also after a redirect to storage that does) is the
//! whole blob from byte 0: the caller reads it as one stream. A `206` without or with another
//! `Content-Range` is not used at all (the bytes could be anywhere in the blob). A part cut
//! mid-way is resumed alone, from where it broke, with the same checks.

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use reqwest::header::{CONTENT_RANGE, RANGE};
use reqwest::{Method, StatusCode};

use super::errors::ErrorBody;
use super::http::{body_stream, BodyStream};
use super::retry::RetryState;
use super::Repository;
use crate::error::{Error, Result};
use crate::model::descriptor::Descriptor;
use crate::transport::{BlobStream, RangeRead};

/// Blobs smaller than this are downloaded as one stream unless `--lanes` says otherwise.
pub(super) const LANES_MIN_SIZE: u64 = 64 << 20;
/// Default lanes: one per this many bytes of the blob, between 2 and [`MAX_DEFAULT_LANES`].
const BYTES_PER_LANE: u64 = 32 << 20;
/// Default lanes at most. At 50 ms RTT and a 2 MiB window a connection carries ~40 MiB/s,
/// so 8 lanes fill a 1 Gbit/s link three times over (containerd 2.1 defaults to a similar
/// number of parallel range requests).
const MAX_DEFAULT_LANES: usize = 8;
/// `--lanes` at most.
pub const MAX_LANES: usize = 64;

/// Lanes for a blob of `size` bytes: `configured` when set (1: one stream), else a number
/// from the size (1 below [`LANES_MIN_SIZE`]).
pub(super) fn lanes_for(size: u64, configured: Option<usize>) -> usize {
    match configured {
        Some(n) => n.clamp(1, MAX_LANES),
        None if size < LANES_MIN_SIZE => 1,
        None => ((size / BYTES_PER_LANE) as usize).clamp(2, MAX_DEFAULT_LANES),
    }
}

/// A blob download that resumes with `Range` after a dropped connection. The reader polls the
/// response body itself: no task and channel in between.
pub(super) fn resuming_download(repo: Repository, desc: Descriptor, start: u64) -> BlobStream {
    let download = Download::new(repo, desc, start, None);
    into_reader(download)
}

/// Bytes `[offset, offset + len)` of `desc` (see the module doc for what is trusted).
pub(super) async fn open_range(repo: Repository, desc: Descriptor, offset: u64, len: u64) -> Result<RangeRead> {
    let end = offset.saturating_add(len).min(desc.size);
    if offset >= end {
        return Ok(RangeRead::Part(Box::pin(tokio::io::empty())));
    }
    let mut d = Download::new(repo, desc, offset, Some(end));
    let (resp, status) = d.get().await?;
    if status == StatusCode::OK {
        tracing::debug!(digest = %d.desc.digest, "registry ignored Range; one stream");
        let mut whole = Download::new(d.repo, d.desc, 0, None);
        whole.body = Some(body_stream(resp, &whole.repo.registry, whole.repo.client.opts.read_timeout));
        return Ok(RangeRead::Whole(into_reader(whole)));
    }
    if !d.range_answer_ok(&resp) {
        tracing::info!(
            digest = %d.desc.digest,
            content_range = ?resp.headers().get(CONTENT_RANGE),
            "registry answered a range without a matching Content-Range; not using ranges"
        );
        return Ok(RangeRead::Unsupported);
    }
    d.body = Some(body_stream(resp, &d.repo.registry, d.repo.client.opts.read_timeout));
    Ok(RangeRead::Part(into_reader(d)))
}

fn into_reader(download: Download) -> BlobStream {
    // try_unfold ends the stream after the first error.
    let stream =
        futures::stream::try_unfold(
            download,
            |mut d| async move { Ok::<_, Error>(d.next_chunk().await?.map(|c| (c, d))) },
        )
        .map_err(std::io::Error::other);
    Box::pin(tokio_util::io::StreamReader::new(stream))
}

/// State of one download: where it is, where it ends, and the response body being read.
struct Download {
    repo: Repository,
    desc: Descriptor,
    /// `blobs/<digest>`
    path: String,
    offset: u64,
    /// A ranged read ends here (exclusive) and accepts only matching `206` answers.
    end: Option<u64>,
    retry: RetryState,
    body: Option<BodyStream>,
    /// Bytes still to drop from the body: a registry that ignored `Range` sends from 0.
    skip: u64,
}

impl Download {
    fn new(repo: Repository, desc: Descriptor, offset: u64, end: Option<u64>) -> Download {
        let path = format!("blobs/{}", desc.digest);
        let retry = RetryState::new(&repo.client.opts.retry);
        Download { repo, desc, path, offset, end, retry, body: None, skip: 0 }
    }

    /// The next piece of the blob; `None` at its end. Reconnects (with `Range`) after a
    /// broken body, up to the retry policy's attempts in a row without progress.
    async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        loop {
            if let Some(end) = self.end {
                if self.offset >= end {
                    return Ok(None);
                }
            }
            if self.body.is_none() {
                let body = self.connect().await?;
                self.body = Some(body);
            }
            let next = self.body.as_mut().expect("connected").next().await;
            match next {
                Some(Ok(mut chunk)) => {
                    if self.skip > 0 {
                        let n = self.skip.min(chunk.len() as u64) as usize;
                        chunk = chunk.slice(n..);
                        self.skip -= n as u64;
                        if chunk.is_empty() {
                            continue;
                        }
                    }
                    if let Some(end) = self.end {
                        // a server sending more than the range asked for: cut at its end
                        let left = end - self.offset;
                        if chunk.len() as u64 > left {
                            chunk = chunk.slice(..left as usize);
                        }
                    }
                    self.offset += chunk.len() as u64;
                    self.retry.progressed();
                    return Ok(Some(chunk));
                }
                None => return Ok(None),
                Some(Err(e)) => {
                    self.body = None;
                    self.wait_or_fail(e).await?;
                }
            }
        }
    }

    /// After a failure: wait for the next attempt, or give up with `e`.
    async fn wait_or_fail(&mut self, e: Error) -> Result<()> {
        let limit = self.end.unwrap_or(self.desc.size);
        let wait = match self.retry.failed(None) {
            Some(wait) if self.offset < limit => wait,
            _ => return Err(e),
        };
        tracing::info!(digest = %self.desc.digest, offset = self.offset, ranged = self.end.is_some(), error = %e, "download interrupted; resuming");
        tokio::time::sleep(wait).await;
        Ok(())
    }

    /// The `Range` header for the current position, if one is needed.
    fn range_header(&self) -> Option<String> {
        match self.end {
            Some(end) => Some(format!("bytes={}-{}", self.offset, end - 1)),
            None if self.offset > 0 => Some(format!("bytes={}-", self.offset)),
            None => None,
        }
    }

    /// GET the blob from the current offset: the answer and its status (errors are errors).
    async fn get(&mut self) -> Result<(reqwest::Response, StatusCode)> {
        let range = self.range_header();
        let path = self.path.as_str();
        let resp = self
            .repo
            .request_blob(Method::GET, path, &|r| match &range {
                Some(v) => r.header(RANGE, v.as_str()),
                None => r,
            })
            .await?;
        let status = resp.status();
        if !status.is_success() {
            let body = ErrorBody::read(resp).await;
            return Err(self.repo.registry_error(&Method::GET, path, status, &body));
        }
        Ok((resp, status))
    }

    /// The answer is `206` with `Content-Range: bytes <offset>-<end-1>/<size or *>`.
    fn range_answer_ok(&self, resp: &reqwest::Response) -> bool {
        let Some(end) = self.end else { return true };
        if resp.status() != StatusCode::PARTIAL_CONTENT {
            return false;
        }
        let Some(v) = resp.headers().get(CONTENT_RANGE).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        content_range_matches(v, self.offset, end - 1, self.desc.size)
    }

    /// GET the blob from the current offset, as a body to read.
    async fn connect(&mut self) -> Result<BodyStream> {
        let (resp, status) = self.get().await?;
        if self.end.is_some() {
            if !self.range_answer_ok(&resp) {
                // It honoured ranges before: an answer we cannot place is a failure.
                return Err(Error::Network {
                    registry: self.repo.registry.clone(),
                    reason: format!(
                        "ranged GET of {} at {} answered {status} with Content-Range {:?}",
                        self.desc.digest,
                        self.offset,
                        resp.headers().get(CONTENT_RANGE)
                    ),
                });
            }
            self.skip = 0;
        } else {
            let range = self.offset;
            self.skip = if range > 0 && status != StatusCode::PARTIAL_CONTENT { range } else { 0 };
        }
        Ok(body_stream(resp, &self.repo.registry, self.repo.client.opts.read_timeout))
    }
}

/// `bytes <first>-<last>/<size>` (or `/*`) naming exactly `first..=last` of a `size`-byte blob.
fn content_range_matches(v: &str, first: u64, last: u64, size: u64) -> bool {
    let Some(rest) = v.trim().strip_prefix("bytes ") else { return false };
    let Some((range, total)) = rest.split_once('/') else { return false };
    let Some((a, b)) = range.split_once('-') else { return false };
    let total_ok = total.trim() == "*" || total.trim().parse::<u64>().ok() == Some(size);
    total_ok && a.trim().parse::<u64>().ok() == Some(first) && b.trim().parse::<u64>().ok() == Some(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_must_name_the_range() {
        assert!(content_range_matches("bytes 0-99/1000", 0, 99, 1000));
        assert!(content_range_matches("bytes 100-199/*", 100, 199, 1000));
        assert!(!content_range_matches("bytes 0-999/1000", 100, 199, 1000));
        assert!(!content_range_matches("bytes 100-199/2000", 100, 199, 1000));
        assert!(!content_range_matches("100-199/1000", 100, 199, 1000));
        assert!(!content_range_matches("bytes */1000", 100, 199, 1000));
    }

    #[test]
    fn lanes_from_size_or_flag() {
        assert_eq!(lanes_for(10 << 20, None), 1);
        assert_eq!(lanes_for(LANES_MIN_SIZE, None), 2);
        assert_eq!(lanes_for(4 << 30, None), MAX_DEFAULT_LANES);
        assert_eq!(lanes_for(10 << 20, Some(4)), 4);
        assert_eq!(lanes_for(4 << 30, Some(1)), 1);
        assert_eq!(lanes_for(4 << 30, Some(0)), 1);
        assert_eq!(lanes_for(4 << 30, Some(1000)), MAX_LANES);
    }
}
