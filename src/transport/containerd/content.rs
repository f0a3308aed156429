//! containerd's content service: `Info`, `Read` as a stream, and `Write` as a session that
//! resumes an ingest by its ref.
//!
//! Protocol facts (containerd 1.6 `services/content/contentserver.go`): the first message of
//! a `Write` stream opens the writer for its ref (with `total` and `expected` it fails
//! `AlreadyExists` when the blob is there); every request gets one response; a `WRITE` at
//! offset 0 truncates an existing ingest, at any other offset it must be the ingest's current
//! offset; `COMMIT` checks size and digest (re-hashing a resumed ingest) before the blob is
//! visible, and fails `FailedPrecondition` otherwise. A ref held by a live writer fails
//! `Unavailable` ("locked") until that writer's stream ends.

use std::collections::BTreeMap;

use bytes::Bytes;
use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::{
    AbortRequest, Info, InfoRequest, ReadContentRequest, UpdateRequest, WriteAction, WriteContentRequest,
    WriteContentResponse,
};
use containerd_client::tonic::{transport::Channel, Code, Status, Streaming};
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::Containerd;
use crate::error::{Error, Result};
use crate::model::descriptor::Descriptor;
use crate::model::digest::Digest;
use crate::transport::{unwrap_io_error, BlobOutcome, BlobStream, Progress, Source, VerifyReader};

/// Bytes per `Write` message: well under containerd's 16 MiB receive limit.
pub(super) const CHUNK: usize = 1 << 20;
/// The largest message hoist accepts from containerd (`Read` sends 1 MiB chunks; containerd's
/// own send limit is 16 MiB).
pub(super) const MAX_MESSAGE: usize = 16 << 20;
/// `Write` messages in flight before hoist waits for containerd's answers.
const WINDOW: usize = 4;
/// How often a write retries a ref another writer still holds (a killed hoist's stream is
/// closed by containerd within moments), and how long it waits between tries.
const LOCKED_RETRIES: u32 = 25;
const LOCKED_WAIT: std::time::Duration = std::time::Duration::from_millis(200);

/// The ingest ref of a blob: the same in every run, so an interrupted write is found again.
pub(super) fn ingest_ref(digest: &Digest) -> String {
    format!("hoist-{digest}")
}

/// One `Write` stream: requests go in one at a time, each answered before the next.
struct Session {
    tx: tokio::sync::mpsc::Sender<WriteContentRequest>,
    rx: Streaming<WriteContentResponse>,
}

impl Session {
    /// Queue `req` (containerd answers each request, in order: see [`Session::recv`]).
    async fn send(&mut self, req: WriteContentRequest) -> std::result::Result<(), Status> {
        if self.tx.send(req).await.is_err() {
            // The stream ended: its status says why.
            return match self.rx.message().await {
                Err(s) => Err(s),
                Ok(_) => Err(Status::aborted("containerd closed the write stream")),
            };
        }
        Ok(())
    }

    /// The answer to the oldest request not yet answered.
    async fn recv(&mut self) -> std::result::Result<WriteContentResponse, Status> {
        match self.rx.message().await {
            Ok(Some(r)) => Ok(r),
            Ok(None) => Err(Status::aborted("containerd closed the write stream")),
            Err(s) => Err(s),
        }
    }

    async fn call(&mut self, req: WriteContentRequest) -> std::result::Result<WriteContentResponse, Status> {
        self.send(req).await?;
        self.recv().await
    }
}

/// How a session opened: there is nothing to write, or the ingest's current offset.
enum Opened {
    Exists,
    At(Box<Session>, u64),
}

impl Containerd {
    pub(super) fn content(&self) -> ContentClient<Channel> {
        ContentClient::new(self.channel.clone()).max_decoding_message_size(MAX_MESSAGE)
    }

    /// The content store's record of `digest`, if it has it.
    pub(super) async fn info(&self, digest: &Digest) -> Result<Option<Info>> {
        match self.content().info(self.req(InfoRequest { digest: digest.to_string() })).await {
            Ok(r) => Ok(r.into_inner().info),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(self.status(&format!("content {digest}"), s)),
        }
    }

    /// Add `labels` to the content `digest` (others it has stay).
    pub(super) async fn add_labels(&self, digest: &Digest, labels: BTreeMap<String, String>) -> Result<()> {
        if labels.is_empty() {
            return Ok(());
        }
        let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
        let info = Info {
            digest: digest.to_string(),
            size: 0,
            created_at: None,
            updated_at: None,
            labels: labels.into_iter().collect(),
        };
        let req = UpdateRequest { info: Some(info), update_mask: Some(prost_types::FieldMask { paths }) };
        self.content().update(self.req(req)).await.map_err(|s| self.status(&format!("content {digest}"), s))?;
        Ok(())
    }

    /// A stream of `desc`'s bytes from `offset`.
    pub(super) async fn read_stream(&self, desc: &Descriptor, offset: u64) -> Result<BlobStream> {
        let req = ReadContentRequest { digest: desc.digest.to_string(), offset: offset as i64, size: 0 };
        let what = format!("blob {}", desc.digest);
        let stream = self.content().read(self.req(req)).await.map_err(|s| self.status(&what, s))?.into_inner();
        let stream = stream.map(|r| match r {
            Ok(m) => Ok(Bytes::from(m.data)),
            Err(s) => Err(std::io::Error::other(format!("containerd: {}", s.message()))),
        });
        Ok(Box::pin(tokio_util::io::StreamReader::new(stream)))
    }

    /// All of `desc`'s bytes, at most `limit` (a manifest read back).
    pub(super) async fn read_all(&self, desc: &Descriptor, limit: u64) -> Result<Bytes> {
        let s = self.read_stream(desc, 0).await?;
        let mut buf = Vec::with_capacity(desc.size.min(limit) as usize);
        let what = format!("blob {}", desc.digest);
        s.take(limit + 1).read_to_end(&mut buf).await.map_err(|e| Error::read(what.clone(), e))?;
        if buf.len() as u64 > limit {
            return Err(Error::malformed(what, self.location.clone(), format!("larger than {limit} bytes")));
        }
        Ok(Bytes::from(buf))
    }

    /// Open a `Write` session for `desc`'s ingest ref and ask where it stands.
    async fn open_session(&self, desc: &Descriptor) -> Result<Opened> {
        let what = format!("write {}", desc.digest);
        let mut tries = 0;
        loop {
            let (tx, rx) = tokio::sync::mpsc::channel(2);
            let stat = WriteContentRequest {
                action: WriteAction::Stat as i32,
                r#ref: ingest_ref(&desc.digest),
                total: desc.size as i64,
                expected: desc.digest.to_string(),
                offset: 0,
                data: Vec::new(),
                labels: Default::default(),
            };
            let _ = tx.send(stat).await;
            let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
            let opened = async {
                let rx = self.content().write(self.req(stream)).await?.into_inner();
                let mut s = Session { tx, rx };
                let first = match s.rx.message().await? {
                    Some(r) => r,
                    None => return Err(Status::aborted("containerd closed the write stream")),
                };
                Ok((s, first))
            }
            .await;
            match opened {
                Ok((s, first)) => {
                    let at = u64::try_from(first.offset).unwrap_or(0);
                    return Ok(Opened::At(Box::new(s), if at > desc.size { 0 } else { at }));
                }
                Err(s) if s.code() == Code::AlreadyExists => return Ok(Opened::Exists),
                Err(s) if s.code() == Code::Unavailable && s.message().contains("locked") && tries < LOCKED_RETRIES => {
                    tries += 1;
                    tokio::time::sleep(LOCKED_WAIT).await;
                }
                Err(s) => return Err(self.status(&what, s)),
            }
        }
    }

    /// Drop the ingest of `desc` (after a failed write: nothing of it stays).
    async fn abort(&self, desc: &Descriptor) {
        let _ = self.content().abort(self.req(AbortRequest { r#ref: ingest_ref(&desc.digest) })).await;
    }

    /// Write the blob `desc` read from `src` (resuming an interrupted ingest), committed with
    /// `labels`.
    pub(super) async fn write_from(
        &self,
        desc: &Descriptor,
        src: &dyn Source,
        labels: BTreeMap<String, String>,
        progress: &dyn Progress,
    ) -> Result<BlobOutcome> {
        let (session, offset) = match self.open_session(desc).await? {
            Opened::Exists => return Ok(BlobOutcome::Existed),
            Opened::At(s, o) => (s, o),
        };
        let reader: BlobStream = if offset == desc.size {
            // All there (an ingest that died before its commit, or content containerd shares
            // from another namespace): the commit checks it.
            Box::pin(tokio::io::empty())
        } else if offset > 0 {
            // containerd re-hashes what it has and checks the whole digest at commit.
            progress.message(&format!("{}: resuming {} at byte {offset} of {}", self.location, desc.digest, desc.size));
            progress.reset(desc, offset);
            Box::pin(src.open_blob(desc, offset).await?.take(desc.size - offset + 1))
        } else {
            Box::pin(VerifyReader::new(src.open_blob(desc, 0).await?, desc, src.location()))
        };
        let r = self.send_all(session, desc, reader, offset, labels, progress, &src.location()).await;
        // Wrong bytes are dropped; an interrupted transfer keeps its ingest for the next run.
        if let Err(Error::DigestMismatch { .. } | Error::SizeMismatch { .. }) = &r {
            self.abort(desc).await;
        }
        r.map(|()| BlobOutcome::Uploaded)
    }

    /// Write a blob whose bytes are at hand (a manifest), committed with `labels`.
    pub(super) async fn write_bytes(
        &self,
        desc: &Descriptor,
        bytes: Bytes,
        labels: BTreeMap<String, String>,
    ) -> Result<()> {
        let session = match self.open_session(desc).await? {
            Opened::Exists => return self.add_labels(&desc.digest, labels).await,
            Opened::At(s, _) => s,
        };
        let reader = VerifyReader::new(std::io::Cursor::new(bytes), desc, self.location.clone());
        let r = self.send_all(session, desc, reader, 0, labels, &crate::transport::NoProgress, &self.location).await;
        if r.is_err() {
            self.abort(desc).await;
        }
        r
    }

    /// Stream `reader` (the blob from `offset`) into the session and commit.
    #[allow(clippy::too_many_arguments)]
    async fn send_all<R: AsyncRead + Unpin>(
        &self,
        mut s: Box<Session>,
        desc: &Descriptor,
        mut reader: R,
        mut offset: u64,
        labels: BTreeMap<String, String>,
        progress: &dyn Progress,
        src_location: &str,
    ) -> Result<()> {
        let what = format!("write {}", desc.digest);
        let chunk = CHUNK.min(desc.size.saturating_sub(offset) as usize + 1).max(1);
        // Offsets containerd must answer with, oldest first: up to WINDOW writes in flight, so
        // reading the source overlaps containerd's writes (one at a time cost a round trip per MiB).
        let mut pending: std::collections::VecDeque<u64> = std::collections::VecDeque::new();
        let check = |resp: WriteContentResponse, want: u64| {
            let now = u64::try_from(resp.offset).unwrap_or(0);
            if now != want {
                return Err(Error::daemon(
                    &self.location,
                    format!("{what}: containerd is at offset {now}, expected {want}"),
                ));
            }
            Ok(())
        };
        // the one write request (data, then the commit) and the one size check of this ingest
        let request = |action: WriteAction, offset: u64, data: Vec<u8>, labels| WriteContentRequest {
            action: action as i32,
            r#ref: ingest_ref(&desc.digest),
            total: desc.size as i64,
            expected: desc.digest.to_string(),
            offset: offset as i64,
            data,
            labels,
        };
        let size_mismatch = |actual: u64| Error::SizeMismatch {
            what: format!("blob {}", desc.digest),
            location: src_location.to_string(),
            expected: desc.size,
            actual,
        };
        let mut first = true;
        loop {
            let mut buf = vec![0u8; chunk];
            let mut filled = 0;
            while filled < buf.len() {
                let n = reader.read(&mut buf[filled..]).await.map_err(|e| unwrap_io_error(e, src_location))?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            if offset + filled as u64 > desc.size {
                return Err(size_mismatch(offset + filled as u64));
            }
            let last = filled < chunk || offset + filled as u64 == desc.size;
            if filled > 0 || first {
                buf.truncate(filled);
                let req = request(WriteAction::Write, offset, buf, Default::default());
                s.send(req).await.map_err(|st| self.status(&what, st))?;
                offset += filled as u64;
                pending.push_back(offset);
                progress.advance(desc, filled as u64);
                first = false;
                if pending.len() > WINDOW {
                    let want = pending.pop_front().unwrap_or_default();
                    check(s.recv().await.map_err(|st| self.status(&what, st))?, want)?;
                }
            }
            if last {
                break;
            }
        }
        while let Some(want) = pending.pop_front() {
            check(s.recv().await.map_err(|st| self.status(&what, st))?, want)?;
        }
        if offset != desc.size {
            return Err(size_mismatch(offset));
        }
        let commit = request(WriteAction::Commit, offset, Vec::new(), labels.into_iter().collect());
        match s.call(commit).await {
            Ok(_) => Ok(()),
            Err(st) if st.code() == Code::AlreadyExists => Ok(()),
            Err(st) if st.code() == Code::FailedPrecondition && st.message().contains("digest") => {
                Err(Error::DigestMismatch {
                    what: format!("blob {}", desc.digest),
                    location: src_location.to_string(),
                    expected: desc.digest.to_string(),
                    actual: crate::error::printable(st.message()).into_owned(),
                })
            }
            Err(st) => Err(self.status(&what, st)),
        }
    }
}
