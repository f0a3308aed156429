//! How the bytes of a large blob reach its temp file.
//!
//! A blob is written once, front to back, then fsynced before it becomes visible. Through
//! the page cache that means copying every byte into freshly allocated cache pages and then
//! waiting for all of them in the final fsync; on the benchmark machine that copy alone cost
//! more than hashing the bytes. So large blobs are written with `O_DIRECT` from one aligned
//! block (the device reads our buffer, the fsync finds nothing left to write), and only the
//! unaligned tail goes through the cache. Where the file system refuses `O_DIRECT` (tmpfs
//! before Linux 6.6, some FUSE file systems, other systems than Linux) the writer falls back
//! to buffered writes, asking the kernel to start writeback every `WRITEBACK_WINDOW` bytes so
//! the final fsync has little left to do.

use std::alloc::{self, Layout as MemLayout};
use std::fs::File;
use std::io::{self, Write};
use std::ptr::NonNull;

/// Blobs at least this large (when their size is known) are written with `O_DIRECT`.
pub(crate) const DIRECT_MIN: u64 = 8 << 20;
/// Memory and file offset alignment for `O_DIRECT`: 4096 covers 512- and 4096-byte devices.
const DIRECT_ALIGN: usize = 4096;
/// Bytes per direct write.
const DIRECT_BLOCK: usize = 1 << 20;
/// Buffered mode: bytes written before the kernel is asked to start writing them back.
const WRITEBACK_WINDOW: u64 = 8 << 20;

/// A temp file for one blob, written front to back; `finish` returns the file for the fsync.
pub(crate) struct BlobFile {
    file: File,
    /// Some while writing with `O_DIRECT`: the block being filled.
    block: Option<IoBlock>,
    /// The file is in O_DIRECT mode.
    direct: bool,
    written: u64,
    flushed: u64,
}

impl BlobFile {
    /// `direct`: the blob is large enough for `O_DIRECT` to pay (see `DIRECT_MIN`).
    pub fn new(file: File, direct: bool) -> Self {
        let block = (direct && direct_allowed() && set_direct(&file, true)).then(IoBlock::new);
        BlobFile { direct: block.is_some(), file, block, written: 0, flushed: 0 }
    }

    /// A blob of `size` bytes.
    pub fn for_size(file: File, size: u64) -> Self {
        BlobFile::new(file, size >= DIRECT_MIN)
    }

    /// Write what is still buffered and return the file (not yet fsynced).
    pub fn finish(mut self) -> io::Result<File> {
        if let Some(block) = self.block.take() {
            let filled = block.filled();
            let aligned = filled.len() / DIRECT_ALIGN * DIRECT_ALIGN;
            self.write_direct(&filled[..aligned])?;
            if aligned < filled.len() {
                // The tail is not a whole block: O_DIRECT would refuse it.
                if self.direct {
                    set_direct(&self.file, false);
                }
                self.file.write_all(&filled[aligned..])?;
            }
        }
        Ok(self.file)
    }

    /// Write a block filled by a reader: whole aligned blocks go straight to the device from
    /// `block` (no copy into our own block); anything else takes the `Write` path.
    pub fn write_block(&mut self, block: &IoBlock) -> io::Result<()> {
        let ours_empty = self.block.as_ref().is_some_and(|b| b.len == 0);
        if self.direct && ours_empty && block.len > 0 && block.len.is_multiple_of(DIRECT_ALIGN) {
            let result = self.write_direct(block.filled());
            if !self.direct {
                self.block = None;
            }
            return result;
        }
        self.write_all(block.filled())
    }

    /// One direct write. A file system that turns out to refuse it (EINVAL) gets the rest
    /// of the bytes buffered, and buffered writes from then on (`block` is dropped).
    fn write_direct(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            match self.file.write(data) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => data = &data[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) && self.direct => {
                    set_direct(&self.file, false);
                    self.direct = false;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn write_buffered(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.file.write(data)?;
        self.written += n as u64;
        if self.written - self.flushed >= WRITEBACK_WINDOW {
            start_writeback(&self.file, self.flushed, self.written - self.flushed);
            self.flushed = self.written;
        }
        Ok(n)
    }
}

impl Write for BlobFile {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let Some(block) = self.block.as_mut() else {
            return self.write_buffered(data);
        };
        let n = block.push(data);
        if block.is_full() {
            let mut block = self.block.take().expect("direct block");
            let result = self.write_direct(block.filled());
            block.clear();
            if self.direct {
                self.block = Some(block);
            }
            result?;
        }
        Ok(n)
    }

    /// Nothing to do: a partial direct block can only be written by `finish`.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `HOIST_DIRECT_IO=0` turns direct writes off (storage where O_DIRECT is slow or broken).
fn direct_allowed() -> bool {
    static ALLOWED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ALLOWED.get_or_init(|| std::env::var_os("HOIST_DIRECT_IO").is_none_or(|v| v != "0"))
}

/// `DIRECT_BLOCK` bytes aligned to `DIRECT_ALIGN`, as `O_DIRECT` requires. Readers fill one
/// directly (`spare_mut`, `advance`) and hand it to `BlobFile::write_block`, which writes a
/// whole block straight from it: no copy between the network and the device.
pub(crate) struct IoBlock {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the block owns its allocation; nothing else points into it.
unsafe impl Send for IoBlock {}

impl IoBlock {
    fn layout() -> MemLayout {
        MemLayout::from_size_align(DIRECT_BLOCK, DIRECT_ALIGN).expect("valid block layout")
    }
    /// A zeroed block (zeroed so `spare_mut` can hand out initialized memory).
    pub fn new() -> Self {
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc::alloc_zeroed(Self::layout()) };
        let ptr = NonNull::new(ptr).unwrap_or_else(|| alloc::handle_alloc_error(Self::layout()));
        IoBlock { ptr, len: 0 }
    }
    pub fn filled(&self) -> &[u8] {
        // SAFETY: the first `len` bytes are initialized (zeroed at allocation, then written).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
    /// The unfilled rest of the block, to read into; `advance` by what was read.
    pub fn spare_mut(&mut self) -> &mut [u8] {
        // SAFETY: inside the allocation, initialized, and exclusively borrowed through `self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(self.len), DIRECT_BLOCK - self.len) }
    }
    pub fn advance(&mut self, n: usize) {
        assert!(self.len + n <= DIRECT_BLOCK, "advance past the end of the block");
        self.len += n;
    }
    fn push(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(DIRECT_BLOCK - self.len);
        // SAFETY: `len + n <= DIRECT_BLOCK`, inside the allocation; `data` cannot overlap it.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.as_ptr().add(self.len), n) };
        self.len += n;
        n
    }
    pub fn is_full(&self) -> bool {
        self.len == DIRECT_BLOCK
    }
    pub fn clear(&mut self) {
        self.len = 0;
    }
}

impl Drop for IoBlock {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with the same layout.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), Self::layout()) }
    }
}

/// Turn `O_DIRECT` on or off for `file`; false if the file system refuses it.
#[cfg(target_os = "linux")]
fn set_direct(file: &File, on: bool) -> bool {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on an fd we own.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 {
            return false;
        }
        let flags = if on { flags | libc::O_DIRECT } else { flags & !libc::O_DIRECT };
        libc::fcntl(fd, libc::F_SETFL, flags) == 0
    }
}

#[cfg(not(target_os = "linux"))]
fn set_direct(_file: &File, on: bool) -> bool {
    !on
}

#[cfg(all(test, target_os = "linux"))]
fn is_direct(file: &File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl on an fd we own.
    let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
    flags >= 0 && flags & libc::O_DIRECT != 0
}

/// Ask the kernel to start writing back `len` bytes at `offset` now (Linux
/// `sync_file_range(SYNC_FILE_RANGE_WRITE)`, a hint that does not wait), so the fsync that
/// makes a blob durable at the end finds little left to flush. The fsync still decides.
fn start_writeback(file: &File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: a plain syscall on an fd we own; errors only lose the hint.
        unsafe {
            libc::sync_file_range(file.as_raw_fd(), offset as i64, len as i64, libc::SYNC_FILE_RANGE_WRITE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 4096) as u8).collect()
    }

    /// Every size around the block and alignment edges comes back byte for byte, written in
    /// odd-sized pieces, in direct and buffered mode.
    #[test]
    fn writes_every_byte_in_both_modes() {
        let dir = tempfile::tempdir().unwrap();
        for direct in [true, false] {
            for len in
                [0, 1, 4095, 4096, 4097, DIRECT_BLOCK - 1, DIRECT_BLOCK, DIRECT_BLOCK + 1, 3 * DIRECT_BLOCK + 12345]
            {
                let data = pattern(len);
                let path = dir.path().join(format!("blob-{direct}-{len}"));
                let mut w = BlobFile::new(File::create(&path).unwrap(), direct);
                for piece in data.chunks(100_003) {
                    w.write_all(piece).unwrap();
                }
                w.flush().unwrap();
                let file = w.finish().unwrap();
                file.sync_all().unwrap();
                drop(file);
                let mut back = Vec::new();
                File::open(&path).unwrap().read_to_end(&mut back).unwrap();
                assert!(back == data, "{len} bytes, direct {direct}: content differs");
            }
        }
    }

    /// Blocks filled by a reader (full ones written straight from the reader's block, a
    /// partial last one copied) and plain writes mixed give the same bytes in both modes.
    #[test]
    fn reader_blocks_and_plain_writes_mix() {
        let dir = tempfile::tempdir().unwrap();
        for direct in [true, false] {
            let data = pattern(3 * DIRECT_BLOCK + 777);
            let path = dir.path().join(format!("mixed-{direct}"));
            let mut w = BlobFile::new(File::create(&path).unwrap(), direct);
            let mut block = IoBlock::new();
            // two full reader blocks, 10 plain bytes, a full block, then a partial block
            for piece in [&data[..DIRECT_BLOCK], &data[DIRECT_BLOCK..2 * DIRECT_BLOCK]] {
                block.spare_mut()[..piece.len()].copy_from_slice(piece);
                block.advance(piece.len());
                assert!(block.is_full());
                w.write_block(&block).unwrap();
                block.clear();
            }
            w.write_all(&data[2 * DIRECT_BLOCK..2 * DIRECT_BLOCK + 10]).unwrap();
            for piece in [&data[2 * DIRECT_BLOCK + 10..3 * DIRECT_BLOCK + 10], &data[3 * DIRECT_BLOCK + 10..]] {
                block.spare_mut()[..piece.len()].copy_from_slice(piece);
                block.advance(piece.len());
                w.write_block(&block).unwrap();
                block.clear();
            }
            w.finish().unwrap().sync_all().unwrap();
            assert!(std::fs::read(&path).unwrap() == data, "direct {direct}: content differs");
        }
    }

    /// On a file system that supports it (the target dir's), large blobs really bypass the
    /// page cache: the file is in O_DIRECT mode while written.
    #[test]
    #[cfg(target_os = "linux")]
    fn large_blobs_use_o_direct_where_supported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("probe");
        let w = BlobFile::for_size(File::create(&path).unwrap(), DIRECT_MIN);
        let supported = set_direct(&File::create(dir.path().join("p2")).unwrap(), true);
        assert_eq!(is_direct(&w.file), supported);
        assert!(w.block.is_some() == supported);
        let small = BlobFile::for_size(File::create(dir.path().join("small")).unwrap(), DIRECT_MIN - 1);
        assert!(!is_direct(&small.file) && small.block.is_none());
    }
}
