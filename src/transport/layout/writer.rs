//! The one way a blob enters a layout: `Layout::begin_blob` gives a `BlobWriter` (a temp
//! file in the layout's temp dir, `.hoist/tmp`), the bytes are written into it by whichever
//! pipeline suits them (verified stream, in-memory bytes, a file copied or reflinked, a layer
//! being built), and `commit(digest, size)` checks size and digest, fsyncs, renames into
//! `blobs/<alg>/<hex>` and fsyncs the directory. Until then nothing is visible.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::model::descriptor::Descriptor;
use crate::model::digest::{Algorithm, Digest};
use crate::transport::layout::blobfile::BlobFile;
use crate::transport::layout::{hash_file, safe, sync_dir, write_verified, Layout};
use crate::transport::{BlobStream, Progress};

/// A blob being written into a layout's temp dir; becomes visible only in `commit`.
pub struct BlobWriter {
    root: PathBuf,
    tmp: tempfile::NamedTempFile,
    /// Digest and size of the bytes written, when the pipeline that wrote them hashed them.
    hashed: Option<(Digest, u64)>,
}

impl BlobWriter {
    pub(crate) fn new(layout: &Layout) -> Result<BlobWriter> {
        let root = layout.root().to_path_buf();
        let dir = safe::ensure_dir(&root, super::TMP_DIR)?;
        let tmp = crate::transport::public_temp("blob-").tempfile_in(&dir).at(&dir)?;
        Ok(BlobWriter { root, tmp, hashed: None })
    }

    /// Path of the temp file.
    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// The temp file.
    pub fn file(&self) -> &File {
        self.tmp.as_file()
    }

    /// A `BlobFile` over the temp file for a pipeline that writes it front to back (`direct`:
    /// the blob is large enough for `O_DIRECT`; see `blobfile`).
    pub(crate) fn blob_file(&self, direct: bool) -> Result<BlobFile> {
        Ok(BlobFile::new(self.file().try_clone().at(self.path())?, direct))
    }

    /// A `BlobFile` for a blob of `size` bytes.
    pub(crate) fn blob_file_for_size(&self, size: u64) -> Result<BlobFile> {
        Ok(BlobFile::for_size(self.file().try_clone().at(self.path())?, size))
    }

    /// Record the digest and size the writing pipeline computed from the bytes it wrote, so
    /// `commit` does not hash the file again.
    pub(crate) fn set_hashed(&mut self, digest: Digest, size: u64) {
        self.hashed = Some((digest, size));
    }

    /// Write in-memory bytes, hashed with `alg` on the way.
    pub fn write_bytes(&mut self, bytes: &[u8], alg: Algorithm) -> Result<()> {
        let path = self.tmp.path().to_path_buf();
        self.tmp.write_all(bytes).at(&path)?;
        let mut h = alg.hasher();
        h.update(bytes);
        self.hashed = Some((h.finish(), bytes.len() as u64));
        Ok(())
    }

    /// Write `stream`, checked against `desc` (size and digest) while it is written.
    pub async fn write_stream(
        &mut self,
        desc: &Descriptor,
        stream: BlobStream,
        location: String,
        progress: &dyn Progress,
    ) -> Result<()> {
        let file = self.file().try_clone().at(self.path())?;
        write_verified(file, self.tmp.path(), desc, stream, location, progress).await?;
        self.hashed = Some((desc.digest.clone(), desc.size));
        Ok(())
    }

    /// Check that the file holds `size` bytes hashing to `digest` (hashing it only when the
    /// pipeline did not), fsync it and rename it to `blobs/<alg>/<hex>`; an existing regular
    /// blob of that size is kept. Returns the blob's path.
    pub fn commit(self, digest: &Digest, size: u64) -> Result<PathBuf> {
        let tmp_path = self.tmp.path().to_path_buf();
        let location = format!("oci:{}", self.root.display());
        let actual = self.tmp.as_file().metadata().at(&tmp_path)?.len();
        if actual != size {
            return Err(Error::SizeMismatch { what: format!("blob {digest}"), location, expected: size, actual });
        }
        let hashed = match self.hashed {
            Some((d, n)) if n == size => d,
            _ => hash_file(&tmp_path, digest.algorithm())?,
        };
        if hashed != *digest {
            return Err(Error::DigestMismatch {
                what: "blob".into(),
                location,
                expected: format!("{digest} ({size} bytes)"),
                actual: format!("{hashed} ({actual} bytes)"),
            });
        }
        let dir = safe::ensure_dir(&self.root, &format!("blobs/{}", digest.algorithm().as_str()))?;
        let path = dir.join(digest.hex());
        if super::blob_ok(&path, size) {
            return Ok(path);
        }
        self.tmp.as_file().sync_all().at(&tmp_path)?;
        self.tmp.persist(&path).map_err(|e| Error::io(&path, e.error))?;
        sync_dir(&dir);
        Ok(path)
    }
}
