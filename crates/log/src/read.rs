//! A byte range of a segment chosen under the log's lock and read after it
//! is released, so slow reads never block appends; and reads that take
//! only what is already in memory, for callers that must never wait on a
//! disk (an async worker).

use std::{
    fs::File,
    io,
    os::{fd::AsFd, unix::fs::FileExt},
    sync::Arc,
};

use bytes::{Bytes, BytesMut};
use rustix::io::ReadWriteFlags;

/// Whether a read may wait on the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMode {
    /// Reads from the disk what the page cache lacks.
    MayWait,
    /// Takes only what is in memory (open files, the page cache): a read
    /// that would wait fails with [`crate::LogError::WouldWait`] instead.
    CachedOnly,
}

/// Fills `buf` from `position` of `file`. [`ReadMode::CachedOnly`] reads
/// with `RWF_NOWAIT` and fails with [`io::ErrorKind::WouldBlock`] as soon
/// as a page is not cached; a range past the file's end fails with
/// [`io::ErrorKind::UnexpectedEof`] either way.
pub(crate) fn read_exact_at(
    file: &File,
    mut buf: &mut [u8],
    mut position: u64,
    mode: ReadMode,
) -> io::Result<()> {
    if mode == ReadMode::MayWait {
        return file.read_exact_at(buf, position);
    }
    while !buf.is_empty() {
        let read = rustix::io::preadv2(
            file,
            &mut [io::IoSliceMut::new(buf)],
            position,
            ReadWriteFlags::NOWAIT,
        )
        .map_err(|e| match e {
            rustix::io::Errno::AGAIN => io::ErrorKind::WouldBlock.into(),
            e => io::Error::from(e),
        })?;
        if read == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf = &mut buf[read..];
        position += read as u64;
    }
    Ok(())
}

/// Whole batches `[first_offset, last_offset]` stored at
/// `[position, position + len)` of a segment file.
#[derive(Debug, Clone)]
pub struct ReadSlice {
    file: Arc<File>,
    position: u64,
    len: usize,
    first_offset: i64,
    last_offset: i64,
}

impl ReadSlice {
    pub(crate) fn new(
        file: Arc<File>,
        position: u64,
        len: usize,
        first_offset: i64,
        last_offset: i64,
    ) -> Self {
        Self {
            file,
            position,
            len,
            first_offset,
            last_offset,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn first_offset(&self) -> i64 {
        self.first_offset
    }

    pub fn last_offset(&self) -> i64 {
        self.last_offset
    }

    /// Reads the bytes. The file stays readable even if its segment is
    /// deleted meanwhile, since this slice holds it open.
    pub fn read(&self) -> io::Result<Bytes> {
        let mut buf = BytesMut::zeroed(self.len);
        self.file.read_exact_at(&mut buf, self.position)?;
        Ok(buf.freeze())
    }

    /// Reads the bytes if every page of them is in the page cache, without
    /// waiting on the disk: `None` when one is not.
    pub fn read_cached(&self) -> io::Result<Option<Bytes>> {
        let mut buf = BytesMut::zeroed(self.len);
        match read_exact_at(&self.file, &mut buf, self.position, ReadMode::CachedOnly) {
            Ok(()) => Ok(Some(buf.freeze())),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sends the bytes from `sent` on to `out` without copying them
    /// through user space (`sendfile`), as many as `out` takes now, and
    /// returns how many. A non-blocking `out` that takes none fails with
    /// [`io::ErrorKind::WouldBlock`].
    ///
    /// Records below the log end are never rewritten in place, but a
    /// replica truncating a diverged log may cut a file short while its
    /// bytes are on their way: a range that ends past the file's end fails
    /// with [`io::ErrorKind::UnexpectedEof`] once its end is reached.
    pub fn send_to(&self, out: impl AsFd, sent: usize) -> io::Result<usize> {
        let remaining = self.len.saturating_sub(sent);
        if remaining == 0 {
            return Ok(0);
        }
        let mut position = self.position + sent as u64;
        let written = rustix::fs::sendfile(out, &*self.file, Some(&mut position), remaining)?;
        if written == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the segment file ends before the range chosen for a read",
            ));
        }
        Ok(written)
    }
}
