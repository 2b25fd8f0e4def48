//! Sparse indexes kept beside each segment.
//!
//! The offset index maps a batch's offset, relative to the segment's base
//! offset, to the batch's byte position in the segment file; the time index
//! maps a timestamp to the relative offset of the first batch at or past it.
//! An entry is added after every `index_interval_bytes` of appended data, so
//! a lookup lands at most that many bytes before the wanted batch and the
//! reader scans forward from there.
//!
//! Invariant: entries are strictly increasing in their key (relative offset
//! for the offset index, timestamp for the time index), and every position
//! lies inside the segment file. A file that breaks this is discarded and
//! rebuilt from the segment.

use std::{
    fs::{File, OpenOptions},
    io::Read,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    sync::atomic::{AtomicUsize, Ordering},
};

use crate::error::{LogError, Result};

/// Fixed-size entries stored back to back in a file and mirrored in memory.
///
/// No descriptor is held between writes: a broker hosting thousands of
/// partitions would otherwise hold two per segment for its indexes alone.
/// New entries live in memory until the next [`EntryFile::sync`] or
/// [`EntryFile::write_pending`] (a flush, a roll, a close) appends them;
/// an index file that lacks its newest entries is still a consistent
/// prefix, and readers and recovery walk the segment from its last entry.
#[derive(Debug)]
struct EntryFile<const N: usize> {
    path: PathBuf,
    entries: Vec<[u8; N]>,
    /// How many entries the file holds. Atomic because flushes write
    /// pending entries while holding the log only for reading.
    written: AtomicUsize,
}

impl<const N: usize> EntryFile<N> {
    fn open(path: &Path) -> Result<Self> {
        let mut file = Self::open_file(path)?;
        let mut raw = Vec::new();
        file.read_to_end(&mut raw)
            .map_err(|e| LogError::io("reading index", path, e))?;
        let whole = raw.len() / N * N;
        let entries: Vec<[u8; N]> = raw[..whole]
            .chunks_exact(N)
            .map(|chunk| {
                let mut entry = [0u8; N];
                entry.copy_from_slice(chunk);
                entry
            })
            .collect();
        let mut this = Self {
            path: path.to_path_buf(),
            written: AtomicUsize::new(entries.len()),
            entries,
        };
        if whole != raw.len() {
            this.truncate_entries(this.entries.len())?;
        }
        Ok(this)
    }

    fn open_file(path: &Path) -> Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| LogError::io("opening index", path, e))
    }

    fn push(&mut self, entry: [u8; N]) {
        self.entries.push(entry);
    }

    fn truncate_entries(&mut self, keep: usize) -> Result<()> {
        self.entries.truncate(keep);
        Self::open_file(&self.path)?
            .set_len((keep * N) as u64)
            .map_err(|e| LogError::io("truncating index", &self.path, e))?;
        self.written.fetch_min(keep, Ordering::Relaxed);
        Ok(())
    }

    /// Appends the entries the file lacks; returns the open file, for a
    /// caller that fsyncs it and then lets it close.
    fn write_pending(&self) -> Result<File> {
        let file = Self::open_file(&self.path)?;
        let written = self.written.load(Ordering::Relaxed).min(self.entries.len());
        if written < self.entries.len() {
            let pending = self.entries[written..].concat();
            file.write_all_at(&pending, (written * N) as u64)
                .map_err(|e| LogError::io("appending to index", &self.path, e))?;
            self.written.store(self.entries.len(), Ordering::Relaxed);
        }
        Ok(file)
    }

    fn sync(&self) -> Result<()> {
        self.write_pending()?
            .sync_data()
            .map_err(|e| LogError::io("syncing index", &self.path, e))
    }

    /// Whether entries wait to be written.
    fn has_pending(&self) -> bool {
        self.written.load(Ordering::Relaxed) < self.entries.len()
    }
}

/// Relative offset to file position.
#[derive(Debug)]
pub(crate) struct OffsetIndex {
    base_offset: i64,
    inner: EntryFile<8>,
}

impl OffsetIndex {
    pub(crate) fn open(path: &Path, base_offset: i64) -> Result<Self> {
        Ok(Self {
            base_offset,
            inner: EntryFile::open(path)?,
        })
    }

    fn decode(entry: &[u8; 8]) -> (u32, u32) {
        let relative = u32::from_be_bytes([entry[0], entry[1], entry[2], entry[3]]);
        let position = u32::from_be_bytes([entry[4], entry[5], entry[6], entry[7]]);
        (relative, position)
    }

    /// Whether the entries are strictly increasing and point inside a file of
    /// `segment_len` bytes.
    pub(crate) fn is_consistent(&self, segment_len: u64) -> bool {
        let mut previous: Option<(u32, u32)> = None;
        self.inner.entries.iter().map(Self::decode).all(|entry| {
            let ordered = previous.is_none_or(|(r, p)| entry.0 > r && entry.1 > p);
            previous = Some(entry);
            ordered && u64::from(entry.1) < segment_len
        })
    }

    pub(crate) fn append(&mut self, offset: i64, position: u32) -> Result<()> {
        let relative = (offset - self.base_offset) as u32;
        if let Some(last) = self.inner.entries.last() {
            if Self::decode(last).0 >= relative {
                return Ok(());
            }
        }
        let mut entry = [0u8; 8];
        entry[..4].copy_from_slice(&relative.to_be_bytes());
        entry[4..].copy_from_slice(&position.to_be_bytes());
        self.inner.push(entry);
        Ok(())
    }

    /// The last entry as (file position, absolute offset).
    pub(crate) fn last_entry(&self) -> Option<(u64, i64)> {
        self.inner.entries.last().map(|e| {
            let (relative, position) = Self::decode(e);
            (u64::from(position), self.base_offset + i64::from(relative))
        })
    }

    /// Position of the last indexed batch starting at or before `offset`, or
    /// the start of the segment.
    pub(crate) fn lookup(&self, offset: i64) -> u32 {
        let relative = offset - self.base_offset;
        let entries = &self.inner.entries;
        let after = entries.partition_point(|e| i64::from(Self::decode(e).0) <= relative);
        match after {
            0 => 0,
            n => Self::decode(&entries[n - 1]).1,
        }
    }

    pub(crate) fn clear(&mut self) -> Result<()> {
        self.inner.truncate_entries(0)
    }

    pub(crate) fn sync(&self) -> Result<()> {
        self.inner.sync()
    }

    /// Writes the entries the file lacks and returns it open, for a flush
    /// that fsyncs it without holding the log.
    pub(crate) fn write_pending(&self) -> Result<File> {
        self.inner.write_pending()
    }

    pub(crate) fn has_pending(&self) -> bool {
        self.inner.has_pending()
    }
}

/// Timestamp to relative offset.
#[derive(Debug)]
pub(crate) struct TimeIndex {
    base_offset: i64,
    inner: EntryFile<12>,
}

impl TimeIndex {
    pub(crate) fn open(path: &Path, base_offset: i64) -> Result<Self> {
        Ok(Self {
            base_offset,
            inner: EntryFile::open(path)?,
        })
    }

    fn decode(entry: &[u8; 12]) -> (i64, u32) {
        let mut timestamp = [0u8; 8];
        timestamp.copy_from_slice(&entry[..8]);
        let relative = u32::from_be_bytes([entry[8], entry[9], entry[10], entry[11]]);
        (i64::from_be_bytes(timestamp), relative)
    }

    pub(crate) fn is_consistent(&self, next_relative_offset: i64) -> bool {
        let mut previous: Option<(i64, u32)> = None;
        self.inner.entries.iter().map(Self::decode).all(|entry| {
            let ordered = previous.is_none_or(|(t, r)| entry.0 > t && entry.1 >= r);
            previous = Some(entry);
            ordered && i64::from(entry.1) < next_relative_offset
        })
    }

    /// The newest indexed timestamp.
    pub(crate) fn last_timestamp(&self) -> Option<i64> {
        self.inner.entries.last().map(|e| Self::decode(e).0)
    }

    /// The last entry as (timestamp, absolute offset).
    pub(crate) fn last_entry(&self) -> Option<(i64, i64)> {
        self.inner.entries.last().map(|e| {
            let (timestamp, relative) = Self::decode(e);
            (timestamp, self.base_offset + i64::from(relative))
        })
    }

    /// Records that the batch at `offset` reaches `timestamp`; only a new
    /// maximum is stored.
    pub(crate) fn maybe_append(&mut self, timestamp: i64, offset: i64) -> Result<()> {
        if self.last_timestamp().is_some_and(|last| last >= timestamp) {
            return Ok(());
        }
        let mut entry = [0u8; 12];
        entry[..8].copy_from_slice(&timestamp.to_be_bytes());
        entry[8..].copy_from_slice(&((offset - self.base_offset) as u32).to_be_bytes());
        self.inner.push(entry);
        Ok(())
    }

    /// Offset of the last indexed batch whose timestamp is below `timestamp`:
    /// the first batch reaching `timestamp` starts at or after it.
    pub(crate) fn lookup(&self, timestamp: i64) -> i64 {
        let entries = &self.inner.entries;
        let after = entries.partition_point(|e| Self::decode(e).0 < timestamp);
        match after {
            0 => self.base_offset,
            n => self.base_offset + i64::from(Self::decode(&entries[n - 1]).1),
        }
    }

    pub(crate) fn clear(&mut self) -> Result<()> {
        self.inner.truncate_entries(0)
    }

    pub(crate) fn sync(&self) -> Result<()> {
        self.inner.sync()
    }

    /// Writes the entries the file lacks and returns it open, for a flush
    /// that fsyncs it without holding the log.
    pub(crate) fn write_pending(&self) -> Result<File> {
        self.inner.write_pending()
    }

    pub(crate) fn has_pending(&self) -> bool {
        self.inner.has_pending()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_lookup_finds_the_floor_entry() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = OffsetIndex::open(&dir.path().join("i"), 100).unwrap();
        index.append(100, 0).unwrap();
        index.append(110, 4096).unwrap();
        index.append(125, 8192).unwrap();
        assert_eq!(index.lookup(100), 0);
        assert_eq!(index.lookup(109), 0);
        assert_eq!(index.lookup(110), 4096);
        assert_eq!(index.lookup(200), 8192);
        assert!(index.is_consistent(9000));
        assert!(!index.is_consistent(8192));
    }

    #[test]
    fn offset_index_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i");
        {
            let mut index = OffsetIndex::open(&path, 0).unwrap();
            for i in 0..10 {
                index.append(i * 10, (i * 100) as u32).unwrap();
            }
            index.sync().unwrap();
        }
        let index = OffsetIndex::open(&path, 0).unwrap();
        assert_eq!(index.lookup(1000), 900);
        assert_eq!(index.last_entry(), Some((900, 90)));
    }

    #[test]
    fn entries_reach_the_file_when_written_and_a_cut_keeps_a_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i");
        let len = || std::fs::metadata(&path).unwrap().len();
        let mut index = OffsetIndex::open(&path, 0).unwrap();
        for i in 1..=4 {
            index.append(i * 10, (i * 100) as u32).unwrap();
        }
        assert_eq!(len(), 0, "appends stay in memory");
        assert!(index.has_pending());
        drop(index.write_pending().unwrap());
        assert_eq!(len(), 32);
        assert!(!index.has_pending());
        // A rebuild (after a truncation) starts the file over: what is
        // written next follows the new entries, never stale ones.
        index.clear().unwrap();
        assert_eq!(len(), 0);
        for (offset, position) in [(10, 100), (20, 200), (30, 250)] {
            index.append(offset, position).unwrap();
        }
        index.sync().unwrap();
        let reopened = OffsetIndex::open(&path, 0).unwrap();
        assert_eq!(reopened.last_entry(), Some((250, 30)));
        assert_eq!(reopened.lookup(29), 200);
        assert_eq!(len(), 24);
    }

    #[test]
    fn a_torn_index_entry_is_dropped_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i");
        {
            let mut index = OffsetIndex::open(&path, 0).unwrap();
            index.append(5, 10).unwrap();
            index.sync().unwrap();
        }
        let mut raw = std::fs::read(&path).unwrap();
        raw.extend([1, 2, 3]);
        std::fs::write(&path, raw).unwrap();
        let index = OffsetIndex::open(&path, 0).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 8);
        assert_eq!(index.lookup(7), 10);
    }

    #[test]
    fn time_lookup_returns_an_offset_before_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = TimeIndex::open(&dir.path().join("t"), 0).unwrap();
        index.maybe_append(1_000, 0).unwrap();
        index.maybe_append(900, 5).unwrap();
        index.maybe_append(2_000, 10).unwrap();
        assert_eq!(index.last_timestamp(), Some(2_000));
        assert_eq!(index.lookup(500), 0);
        assert_eq!(index.lookup(1_500), 0);
        assert_eq!(index.lookup(2_500), 10);
        assert!(index.is_consistent(11));
        assert!(!index.is_consistent(10));
    }
}
