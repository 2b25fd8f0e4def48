//! The segments as a pass found them at `begin`, and walking their batches.
//!
//! A [`SegmentSnapshot`] holds an open handle of a segment's file and the
//! part of it the pass may read: segment files are only ever appended to,
//! or replaced or deleted as wholes, and an open handle keeps reading a
//! deleted file, so those bytes stay readable and unchanged while the pass
//! runs. [`BatchReader`] walks a snapshot's batches from its start, reading
//! the file in large chunks rather than batch by batch.

use std::{fs::File, os::unix::fs::FileExt, path::Path, sync::Arc};

use crate::{
    batch::{BATCH_HEADER_LEN, BatchHeader},
    error::{LogError, Result},
    segment::{LOG_SUFFIX, LocatedBatch, Segment},
};

/// Bytes read at a time when walking a segment's batches.
pub(super) const READ_CHUNK: u64 = if cfg!(test) { 200 } else { 1 << 20 };

/// A segment as a pass found it at `begin`: an open handle of its file and
/// the part of it the pass may read.
#[derive(Debug, Clone)]
pub(super) struct SegmentSnapshot {
    pub(super) base_offset: i64,
    pub(super) file: Arc<File>,
    /// Which file `file` is (see `Segment::file_id`).
    pub(super) file_id: u64,
    pub(super) size: u64,
    pub(super) next_offset: i64,
}

impl SegmentSnapshot {
    pub(super) fn of(segment: &Segment) -> Result<Self> {
        Ok(Self {
            base_offset: segment.base_offset(),
            file: segment.file()?,
            file_id: segment.file_id(),
            size: segment.size(),
            next_offset: segment.next_offset(),
        })
    }

    /// Whether `segment` is still this one: same base offset, same file,
    /// same size and next offset.
    pub(super) fn is(&self, segment: &Segment) -> bool {
        segment.base_offset() == self.base_offset
            && segment.file_id() == self.file_id
            && segment.size() == self.size
            && segment.next_offset() == self.next_offset
    }

    pub(super) fn read_at(&self, dir: &Path, buf: &mut [u8], position: u64) -> Result<()> {
        self.file.read_exact_at(buf, position).map_err(|e| {
            LogError::io(
                "reading segment",
                dir.join(crate::segment::file_name(self.base_offset, LOG_SUFFIX)),
                e,
            )
        })
    }
}

/// Walks the batches of a snapshot from its start, reading the file in
/// large chunks rather than batch by batch.
pub(super) struct BatchReader<'a> {
    dir: &'a Path,
    segment: &'a SegmentSnapshot,
    /// Where the next batch starts.
    pub(super) position: u64,
    buf: Vec<u8>,
    buf_start: u64,
}

impl<'a> BatchReader<'a> {
    pub(super) fn new(dir: &'a Path, segment: &'a SegmentSnapshot) -> Self {
        Self {
            dir,
            segment,
            position: 0,
            buf: Vec::new(),
            buf_start: 0,
        }
    }

    /// The next whole batch and its bytes; `None` at the end of the
    /// snapshot, or where the bytes are not a batch.
    pub(super) fn next_batch(&mut self) -> Result<Option<(LocatedBatch, &[u8])>> {
        let position = self.position;
        let header_len = BATCH_HEADER_LEN as u64;
        if position + header_len > self.segment.size {
            return Ok(None);
        }
        let Ok(header) = BatchHeader::parse(self.fill(position, header_len)?) else {
            return Ok(None);
        };
        let len = header.total_len() as u64;
        if position + len > self.segment.size {
            return Ok(None);
        }
        self.position = position + len;
        let bytes = self.fill(position, len)?;
        Ok(Some((LocatedBatch { position, header }, bytes)))
    }

    /// Bytes `[position, position + len)`, which lie within the snapshot.
    fn fill(&mut self, position: u64, len: u64) -> Result<&[u8]> {
        let buf_end = self.buf_start + self.buf.len() as u64;
        if position < self.buf_start || position + len > buf_end {
            let want = len.max(READ_CHUNK.min(self.segment.size - position));
            self.buf.resize(want as usize, 0);
            self.buf_start = position;
            self.segment.read_at(self.dir, &mut self.buf, position)?;
        }
        let from = (position - self.buf_start) as usize;
        Ok(&self.buf[from..from + len as usize])
    }
}
