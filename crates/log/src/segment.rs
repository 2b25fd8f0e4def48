//! One segment of a partition log: a file of RecordBatches starting at
//! `base_offset`, plus its offset and time indexes.
//!
//! Files are named after the base offset, zero-padded to 20 digits, as Kafka
//! names them: `00000000000000000000.log`, `.index`, `.timeindex`. The
//! cleaner writes a segment's replacement as `.log.cleaned` beside it, with
//! its indexes as `.index.cleaned` and `.timeindex.cleaned`; such files are
//! only ever renamed over the segment's own once complete and fsynced, so
//! one found on open is an unfinished rewrite and is deleted.
//!
//! Invariants: `size` is the length of the valid prefix of the file; every
//! byte below it belongs to a whole, CRC-checked batch; batches are in
//! strictly increasing offset order and `next_offset` is one past the last.

use std::{
    fs::{self, File, OpenOptions},
    io::IoSlice,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    sync::Arc,
};

use crate::{
    batch::{BATCH_HEADER_LEN, BatchHeader, verify_crc},
    error::{LogError, Result},
    index::{OffsetIndex, TimeIndex},
    read::{ReadMode, read_exact_at},
};

mod cleaned;
mod file;

pub(crate) use self::cleaned::{CleanedIndexes, cleaned_file, remove_cleaned_files};
use self::file::SegmentFile;

pub(crate) const LOG_SUFFIX: &str = "log";
const INDEX_SUFFIX: &str = "index";
const TIME_INDEX_SUFFIX: &str = "timeindex";
pub(crate) const CLEANED_SUFFIX: &str = "cleaned";

pub(crate) fn file_name(base_offset: i64, suffix: &str) -> String {
    format!("{base_offset:020}.{suffix}")
}

/// A batch found in a segment file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LocatedBatch {
    pub(crate) position: u64,
    pub(crate) header: BatchHeader,
}

#[derive(Debug)]
pub(crate) struct Segment {
    base_offset: i64,
    dir: PathBuf,
    file: SegmentFile,
    size: u64,
    next_offset: i64,
    offset_index: OffsetIndex,
    time_index: TimeIndex,
    bytes_since_index_entry: u64,
    max_timestamp: i64,
    offset_of_max_timestamp: i64,
    created_at_ms: i64,
    /// Appended bytes from here on have not been handed to the disk yet
    /// (see [`WRITEBACK_STEP`]).
    writeback_from: u64,
}

/// Appended bytes are handed to the disk in steps of this size as they
/// come, without waiting, instead of all at once by the next fsync (as
/// RocksDB's `bytes_per_sync` does): the periodic fsync then finds little
/// left to write, and appends, here and in the other logs on the disk, do
/// not queue behind a burst of writeback. On three local nodes it took the
/// p99 of acks=all writes at half of peak from 10-86 ms to 5-9 ms
/// (docs/benchmarks.md).
const WRITEBACK_STEP: u64 = 1024 * 1024;

/// What a scan of the segment file found.
#[derive(Debug)]
pub(crate) struct ScanOutcome {
    pub(crate) truncated_bytes: u64,
}

impl Segment {
    pub(crate) fn create(dir: &Path, base_offset: i64, now_ms: i64) -> Result<Self> {
        let log_path = dir.join(file_name(base_offset, LOG_SUFFIX));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&log_path)
            .map_err(|e| LogError::io("creating segment", &log_path, e))?;
        let mut offset_index =
            OffsetIndex::open(&dir.join(file_name(base_offset, INDEX_SUFFIX)), base_offset)?;
        offset_index.clear()?;
        let mut time_index = TimeIndex::open(
            &dir.join(file_name(base_offset, TIME_INDEX_SUFFIX)),
            base_offset,
        )?;
        time_index.clear()?;
        Ok(Self {
            base_offset,
            dir: dir.to_path_buf(),
            file: SegmentFile::new(log_path, file),
            size: 0,
            writeback_from: 0,
            next_offset: base_offset,
            offset_index,
            time_index,
            bytes_since_index_entry: 0,
            max_timestamp: -1,
            offset_of_max_timestamp: -1,
            created_at_ms: now_ms,
        })
    }

    /// Opens an existing segment. With `recover`, every batch is read and
    /// CRC-checked, a torn or corrupt tail is cut off and both indexes are
    /// rebuilt; without it, the indexes are trusted if they are consistent
    /// and only the batches after the last index entry are walked.
    pub(crate) fn open(
        dir: &Path,
        base_offset: i64,
        recover: bool,
        index_interval_bytes: u64,
        now_ms: i64,
    ) -> Result<(Self, ScanOutcome)> {
        let log_path = dir.join(file_name(base_offset, LOG_SUFFIX));
        let file = file::open(&log_path)?;
        let file_len = file
            .metadata()
            .map_err(|e| LogError::io("reading metadata of", &log_path, e))?
            .len();
        let created_at_ms = file
            .metadata()
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(now_ms, |d| d.as_millis() as i64);
        let offset_index =
            OffsetIndex::open(&dir.join(file_name(base_offset, INDEX_SUFFIX)), base_offset)?;
        let time_index = TimeIndex::open(
            &dir.join(file_name(base_offset, TIME_INDEX_SUFFIX)),
            base_offset,
        )?;
        let mut segment = Self {
            base_offset,
            dir: dir.to_path_buf(),
            file: SegmentFile::new(log_path, file),
            size: file_len,
            writeback_from: file_len,
            next_offset: base_offset,
            offset_index,
            time_index,
            bytes_since_index_entry: 0,
            max_timestamp: -1,
            offset_of_max_timestamp: -1,
            created_at_ms,
        };
        let resumed = if recover {
            None
        } else {
            segment.resume_from_indexes()?
        };
        let outcome = match resumed {
            Some(outcome) => outcome,
            None => segment.scan_and_rebuild(true, index_interval_bytes)?,
        };
        // Closed once scanned, so opening a log of many segments holds one
        // file at a time; the log pins what takes appends or awaits a flush.
        segment.file.unpin();
        Ok((segment, outcome))
    }

    /// Trusts the indexes of a cleanly closed segment: walks only the
    /// batches after the last index entry. Returns `None` when the indexes
    /// or the tail do not line up, so the caller falls back to a full scan.
    fn resume_from_indexes(&mut self) -> Result<Option<ScanOutcome>> {
        if !self.offset_index.is_consistent(self.size) {
            return Ok(None);
        }
        let Some((mut position, first_offset)) = self.offset_index.last_entry() else {
            return Ok(if self.size == 0 {
                Some(ScanOutcome { truncated_bytes: 0 })
            } else {
                None
            });
        };
        if let Some((timestamp, offset)) = self.time_index.last_entry() {
            self.max_timestamp = timestamp;
            self.offset_of_max_timestamp = offset;
        }
        let mut expected_offset = first_offset;
        while position < self.size {
            let Some(header) = self.read_header_at(position, self.size)? else {
                return Ok(None);
            };
            let len = header.total_len() as u64;
            if header.base_offset < expected_offset || position + len > self.size {
                return Ok(None);
            }
            if header.max_timestamp > self.max_timestamp {
                self.max_timestamp = header.max_timestamp;
                self.offset_of_max_timestamp = header.base_offset;
            }
            self.bytes_since_index_entry += len;
            expected_offset = header.next_offset();
            position += len;
        }
        if !self
            .time_index
            .is_consistent(expected_offset - self.base_offset)
        {
            return Ok(None);
        }
        self.next_offset = expected_offset;
        Ok(Some(ScanOutcome { truncated_bytes: 0 }))
    }

    /// Walks every batch header; validates CRCs when `verify` is set. Stops
    /// at the first batch that is incomplete or invalid and cuts the file
    /// there. Rebuilds the indexes from what it walked.
    fn scan_and_rebuild(&mut self, verify: bool, index_interval_bytes: u64) -> Result<ScanOutcome> {
        self.offset_index.clear()?;
        self.time_index.clear()?;
        self.bytes_since_index_entry = 0;
        self.max_timestamp = -1;
        self.offset_of_max_timestamp = -1;
        let file = self.file.handle()?;
        let file_len = self.size;
        let mut position = 0u64;
        let mut body = Vec::new();
        let mut previous_next_offset = self.base_offset;
        while position < file_len {
            let Some(header) = self.read_header_at(position, file_len)? else {
                break;
            };
            let len = header.total_len() as u64;
            if position + len > file_len || header.base_offset < previous_next_offset {
                break;
            }
            if verify {
                body.resize(header.total_len(), 0);
                file.read_exact_at(&mut body, position)
                    .map_err(|e| LogError::io("reading segment", self.log_path(), e))?;
                if verify_crc(&header, &body).is_err() {
                    break;
                }
            }
            self.index_batch(&header, position, len, index_interval_bytes)?;
            previous_next_offset = header.next_offset();
            position += len;
        }
        let truncated_bytes = file_len - position;
        if truncated_bytes > 0 {
            file.set_len(position)
                .map_err(|e| LogError::io("truncating torn tail of", self.log_path(), e))?;
        }
        self.size = position;
        self.next_offset = previous_next_offset;
        Ok(ScanOutcome { truncated_bytes })
    }

    fn read_header_at(&self, position: u64, limit: u64) -> Result<Option<BatchHeader>> {
        self.read_header_in(position, limit, ReadMode::MayWait)
    }

    fn read_header_in(
        &self,
        position: u64,
        limit: u64,
        mode: ReadMode,
    ) -> Result<Option<BatchHeader>> {
        if position + BATCH_HEADER_LEN as u64 > limit {
            return Ok(None);
        }
        let mut raw = [0u8; BATCH_HEADER_LEN];
        read_exact_at(&*self.file_in(mode)?, &mut raw, position, mode).map_err(|e| {
            if e.kind() == std::io::ErrorKind::WouldBlock {
                LogError::WouldWait
            } else {
                LogError::io("reading segment", self.log_path(), e)
            }
        })?;
        Ok(BatchHeader::parse(&raw).ok())
    }

    fn index_batch(
        &mut self,
        header: &BatchHeader,
        position: u64,
        len: u64,
        index_interval_bytes: u64,
    ) -> Result<()> {
        if header.max_timestamp > self.max_timestamp {
            self.max_timestamp = header.max_timestamp;
            self.offset_of_max_timestamp = header.base_offset;
        }
        if self.bytes_since_index_entry == 0 || self.bytes_since_index_entry >= index_interval_bytes
        {
            self.offset_index
                .append(header.base_offset, position as u32)?;
            self.time_index
                .maybe_append(self.max_timestamp, self.offset_of_max_timestamp)?;
            self.bytes_since_index_entry = 0;
        }
        self.bytes_since_index_entry += len;
        Ok(())
    }

    /// Appends whole batches whose offsets are already assigned, `parts`
    /// holding their bytes one after another as `headers` describe them (a
    /// leader's rewritten header and its client's records, so the client's
    /// bytes are not copied first; or a run of a follower's fetch). The
    /// bytes go to the file in one write and are indexed batch by batch, as
    /// if appended one at a time.
    pub(crate) fn append(
        &mut self,
        headers: &[BatchHeader],
        parts: &mut [IoSlice<'_>],
        index_interval_bytes: u64,
    ) -> Result<()> {
        let Some(last) = headers.last() else {
            return Ok(());
        };
        self.file.pin()?;
        let file = self.file.handle()?;
        let mut position = self.size;
        let len: u64 = parts.iter().map(|part| part.len() as u64).sum();
        write_all_vectored_at(&file, parts, position)
            .map_err(|e| LogError::io("appending to", self.log_path(), e))?;
        let at = position + len;
        self.size = at;
        self.next_offset = last.next_offset();
        // A truncation may have cut below where writeback stood.
        let unwritten_from = self.writeback_from.min(position);
        if at - unwritten_from >= WRITEBACK_STEP {
            start_writeback(&file, unwritten_from, at - unwritten_from);
            self.writeback_from = at;
        }
        for header in headers {
            let len = header.total_len() as u64;
            self.index_batch(header, position, len, index_interval_bytes)?;
            position += len;
        }
        Ok(())
    }

    /// The first batch whose last offset is at or past `offset`, if any.
    pub(crate) fn find_batch(&self, offset: i64) -> Result<Option<LocatedBatch>> {
        self.find_batch_in(offset, ReadMode::MayWait)
    }

    pub(crate) fn find_batch_in(
        &self,
        offset: i64,
        mode: ReadMode,
    ) -> Result<Option<LocatedBatch>> {
        // Held across the walk, so the file opens once.
        let _file = self.file_in(mode)?;
        let mut position = u64::from(self.offset_index.lookup(offset));
        while let Some(header) = self.read_header_in(position, self.size, mode)? {
            if header.last_offset() >= offset {
                return Ok(Some(LocatedBatch { position, header }));
            }
            position += header.total_len() as u64;
        }
        Ok(None)
    }

    /// The batch that starts right after `batch`, if any.
    pub(crate) fn next_batch(&self, batch: &LocatedBatch) -> Result<Option<LocatedBatch>> {
        self.next_batch_in(batch, ReadMode::MayWait)
    }

    pub(crate) fn next_batch_in(
        &self,
        batch: &LocatedBatch,
        mode: ReadMode,
    ) -> Result<Option<LocatedBatch>> {
        let position = batch.position + batch.header.total_len() as u64;
        Ok(self
            .read_header_in(position, self.size, mode)?
            .map(|header| LocatedBatch { position, header }))
    }

    /// The first batch that may hold a record with a timestamp at or past
    /// `timestamp`.
    pub(crate) fn find_batch_by_timestamp(&self, timestamp: i64) -> Result<Option<LocatedBatch>> {
        let start_offset = self.time_index.lookup(timestamp);
        let mut located = self.find_batch(start_offset)?;
        while let Some(batch) = located {
            if batch.header.max_timestamp >= timestamp {
                return Ok(Some(batch));
            }
            located = self.next_batch(&batch)?;
        }
        Ok(None)
    }

    pub(crate) fn read_bytes(&self, position: u64, len: usize) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        self.file
            .handle()?
            .read_exact_at(&mut buf, position)
            .map_err(|e| LogError::io("reading segment", self.log_path(), e))?;
        Ok(buf)
    }

    /// Removes every batch whose last offset is at or past `offset`.
    pub(crate) fn truncate_to(&mut self, offset: i64, index_interval_bytes: u64) -> Result<u64> {
        let Some(batch) = self.find_batch(offset)? else {
            return Ok(0);
        };
        let cut = batch.position;
        let removed = self.size - cut;
        self.file
            .handle()?
            .set_len(cut)
            .map_err(|e| LogError::io("truncating", self.log_path(), e))?;
        self.size = cut;
        self.scan_and_rebuild(false, index_interval_bytes)?;
        Ok(removed)
    }

    /// Writes the index entries that wait in memory and fsyncs both index
    /// files (the segment file itself is a flush's to sync).
    pub(crate) fn sync_indexes(&self) -> Result<()> {
        self.offset_index.sync()?;
        self.time_index.sync()
    }

    /// Whether index entries wait in memory.
    pub(crate) fn has_pending_index_entries(&self) -> bool {
        self.offset_index.has_pending() || self.time_index.has_pending()
    }

    /// The segment's file, to read or fsync without holding the log;
    /// opened if no one holds it open (see `file`).
    pub(crate) fn file(&self) -> Result<Arc<File>> {
        self.file.handle()
    }

    /// The segment's file, opened only if `mode` may wait for that.
    pub(crate) fn file_in(&self, mode: ReadMode) -> Result<Arc<File>> {
        match mode {
            ReadMode::MayWait => self.file.handle(),
            ReadMode::CachedOnly => self.file.open_handle().ok_or(LogError::WouldWait),
        }
    }

    /// Which file the segment is; another once the cleaner rewrote it.
    pub(crate) fn file_id(&self) -> u64 {
        self.file.id()
    }

    /// Keeps the segment's file open: it takes appends or holds data not
    /// yet flushed.
    pub(crate) fn pin_file(&mut self) -> Result<()> {
        self.file.pin()
    }

    /// Lets the segment's file close between reads.
    pub(crate) fn unpin_file(&mut self) {
        self.file.unpin();
    }

    /// Writes every index entry waiting in memory and returns the index
    /// files, for a flush to fsync one at a time without holding the log.
    /// An index that cannot be written is left out: it is a consistent
    /// prefix all the same, and the segment is the truth.
    pub(crate) fn index_files_to_sync(&self) -> Vec<PathBuf> {
        [
            (self.offset_index.write_pending(), INDEX_SUFFIX),
            (self.time_index.write_pending(), TIME_INDEX_SUFFIX),
        ]
        .into_iter()
        .filter_map(|(written, suffix)| match written {
            Ok(_) => Some(self.dir.join(file_name(self.base_offset, suffix))),
            Err(error) => {
                tracing::warn!(%error, "cannot write a segment index; it will be walked from its last entry");
                None
            }
        })
        .collect()
    }

    /// Writes index entries that wait in memory, without an fsync (the
    /// active segment's indexes are not synced: a restart after a crash
    /// rebuilds them above the recovery point).
    pub(crate) fn write_pending_indexes(&self) {
        if self.has_pending_index_entries() {
            self.index_files_to_sync();
        }
    }

    /// Deletes the segment's files. Readers holding the file keep reading
    /// it until they drop it.
    pub(crate) fn delete(self) -> Result<()> {
        Self::delete_files(&self.dir, self.base_offset)
    }

    pub(crate) fn delete_files(dir: &Path, base_offset: i64) -> Result<()> {
        for suffix in [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
            let path = dir.join(file_name(base_offset, suffix));
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(LogError::io("deleting", path, e)),
            }
        }
        Ok(())
    }

    pub(crate) fn log_path(&self) -> PathBuf {
        self.file.path().to_path_buf()
    }

    pub(crate) fn base_offset(&self) -> i64 {
        self.base_offset
    }

    pub(crate) fn next_offset(&self) -> i64 {
        self.next_offset
    }

    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.size == 0
    }

    pub(crate) fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }

    pub(crate) fn offset_of_max_timestamp(&self) -> i64 {
        self.offset_of_max_timestamp
    }

    pub(crate) fn created_at_ms(&self) -> i64 {
        self.created_at_ms
    }
}

/// Writes `parts` one after another at `position` of `file`, in one system
/// call unless the kernel takes less: at a few records per batch, a call
/// per part cost a leader a second call for its 61-byte rewritten header.
fn write_all_vectored_at(
    file: &File,
    mut parts: &mut [IoSlice<'_>],
    position: u64,
) -> std::io::Result<()> {
    let mut at = position;
    while !parts.is_empty() {
        let written = match rustix::io::pwritev(file, parts, at) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(written) => written,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        };
        at += written as u64;
        IoSlice::advance_slices(&mut parts, written);
    }
    Ok(())
}

/// Starts writing `len` bytes of `file` from `offset` to the disk and
/// returns at once. Only a hint: the fsync that follows reports errors.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn start_writeback(file: &std::fs::File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: sync_file_range only reads its integer arguments; the file
    // descriptor is open for as long as `file` is borrowed.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &std::fs::File, _offset: u64, _len: u64) {}
