//! Blob download: one GET streamed to the reader, resumed with `Range` after a broken body.

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use reqwest::header::RANGE;
use reqwest::{Method, StatusCode};

use super::errors::ErrorBody;
use super::http::{body_stream, BodyStream};
use super::retry::RetryState;
use super::Repository;
use crate::error::{Error, Result};
use crate::model::descriptor::Descriptor;
use crate::transport::BlobStream;

/// A blob download that resumes with `Range` after a dropped connection. The reader polls the
/// response body itself: no task and channel in between.
pub(super) fn resuming_download(repo: Repository, desc: Descriptor, start: u64) -> BlobStream {
    let path = format!("blobs/{}", desc.digest);
    let retry = RetryState::new(&repo.client.opts.retry);
    let download = Download { repo, desc, path, offset: start, retry, body: None, skip: 0 };
    // try_unfold ends the stream after the first error.
    let stream =
        futures::stream::try_unfold(
            download,
            |mut d| async move { Ok::<_, Error>(d.next_chunk().await?.map(|c| (c, d))) },
        )
        .map_err(std::io::Error::other);
    Box::pin(tokio_util::io::StreamReader::new(stream))
}

/// State of one [`resuming_download`]: where it is, and the response body being read.
struct Download {
    repo: Repository,
    desc: Descriptor,
    /// `blobs/<digest>`
    path: String,
    offset: u64,
    retry: RetryState,
    body: Option<BodyStream>,
    /// Bytes still to drop from the body: a registry that ignored `Range` sends from 0.
    skip: u64,
}

impl Download {
    /// The next piece of the blob; `None` at its end. Reconnects (with `Range`) after a
    /// broken body, up to the retry policy's attempts in a row without progress.
    async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        loop {
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
                    self.offset += chunk.len() as u64;
                    self.retry.progressed();
                    return Ok(Some(chunk));
                }
                None => return Ok(None),
                Some(Err(e)) => {
                    self.body = None;
                    let wait = match self.retry.failed(None) {
                        Some(wait) if self.offset < self.desc.size => wait,
                        _ => return Err(e),
                    };
                    tracing::info!(digest = %self.desc.digest, offset = self.offset, "download interrupted; resuming");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// GET the blob from the current offset.
    async fn connect(&mut self) -> Result<BodyStream> {
        let (range, path) = (self.offset, self.path.as_str());
        let resp = self
            .repo
            .request(Method::GET, path, false, &|r| {
                if range > 0 {
                    r.header(RANGE, format!("bytes={range}-"))
                } else {
                    r
                }
            })
            .await?;
        let status = resp.status();
        if !status.is_success() {
            let body = ErrorBody::read(resp).await;
            return Err(self.repo.registry_error(&Method::GET, path, status, &body));
        }
        self.skip = if range > 0 && status != StatusCode::PARTIAL_CONTENT { range } else { 0 };
        Ok(body_stream(resp, &self.repo.registry, self.repo.client.opts.read_timeout))
    }
}
