//! A byte range of a segment chosen under the log's lock and read after it
//! is released, so slow reads never block appends.

use std::{fs::File, os::unix::fs::FileExt, sync::Arc};

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
    pub fn read(&self) -> std::io::Result<Bytes> {
        let mut buf = BytesMut::zeroed(self.len);
        self.file.read_exact_at(&mut buf, self.position)?;
        Ok(buf.freeze())
    }
}
