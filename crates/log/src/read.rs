//! A byte range of a segment chosen under the log's lock and read after it
//! is released, so slow reads never block appends.

use std::{
    fs::File,
    io,
    os::{fd::AsFd, unix::fs::FileExt},
    sync::Arc,
};

use bytes::{Bytes, BytesMut};

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
