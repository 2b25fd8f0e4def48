//! A segment's replacement written by the cleaner: its files beside the
//! segment's own (`<base>.<suffix>.cleaned`), the index entries gathered
//! while writing it, and the swap that puts it in the segment's place.

use std::{
    fs,
    path::{Path, PathBuf},
};

use super::{CLEANED_SUFFIX, INDEX_SUFFIX, LOG_SUFFIX, Segment, TIME_INDEX_SUFFIX, file_name};
use crate::{
    batch::BatchHeader,
    checkpoint::sync_dir,
    error::{LogError, Result},
    index::{OffsetIndex, TimeIndex},
};

/// Where the cleaner writes the replacement of a segment's file with the
/// given suffix: `<base>.<suffix>.cleaned`.
pub(crate) fn cleaned_file(dir: &Path, base_offset: i64, suffix: &str) -> PathBuf {
    dir.join(format!(
        "{}.{CLEANED_SUFFIX}",
        file_name(base_offset, suffix)
    ))
}

/// Deletes whatever replacement files of a segment the cleaner left.
pub(crate) fn remove_cleaned_files(dir: &Path, base_offset: i64) -> Result<()> {
    for suffix in [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
        let path = cleaned_file(dir, base_offset, suffix);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(LogError::io("removing", path, e)),
        }
    }
    Ok(())
}

fn rename(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to).map_err(|e| LogError::io("renaming cleaned file over", to, e))
}

/// The index entries of a segment's replacement, gathered by the cleaner
/// batch by batch as it writes the replacement (outside the log's lock), by
/// the same rule as [`Segment::append`] indexes, so that swapping the
/// replacement in needs no scan of it.
#[derive(Debug)]
pub(crate) struct CleanedIndexes {
    base_offset: i64,
    index_interval_bytes: u64,
    /// (offset, position) entries of the offset index.
    offsets: Vec<(i64, u32)>,
    /// (timestamp, offset) entries of the time index.
    times: Vec<(i64, i64)>,
    size: u64,
    next_offset: i64,
    bytes_since_index_entry: u64,
    max_timestamp: i64,
    offset_of_max_timestamp: i64,
}

impl CleanedIndexes {
    pub(crate) fn new(base_offset: i64, index_interval_bytes: u64) -> Self {
        Self {
            base_offset,
            index_interval_bytes,
            offsets: Vec::new(),
            times: Vec::new(),
            size: 0,
            next_offset: base_offset,
            bytes_since_index_entry: 0,
            max_timestamp: -1,
            offset_of_max_timestamp: -1,
        }
    }

    /// Records the next batch of the replacement, which starts at
    /// [`Self::size`].
    pub(crate) fn add(&mut self, header: &BatchHeader) {
        let len = header.total_len() as u64;
        if header.max_timestamp > self.max_timestamp {
            self.max_timestamp = header.max_timestamp;
            self.offset_of_max_timestamp = header.base_offset;
        }
        if self.bytes_since_index_entry == 0
            || self.bytes_since_index_entry >= self.index_interval_bytes
        {
            self.offsets.push((header.base_offset, self.size as u32));
            if self
                .times
                .last()
                .is_none_or(|&(t, _)| t < self.max_timestamp)
            {
                self.times
                    .push((self.max_timestamp, self.offset_of_max_timestamp));
            }
            self.bytes_since_index_entry = 0;
        }
        self.bytes_since_index_entry += len;
        self.size += len;
        self.next_offset = header.next_offset();
    }

    /// Bytes of the replacement so far.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Writes the entries to `<base>.index.cleaned` and
    /// `<base>.timeindex.cleaned` in `dir` and fsyncs both.
    pub(crate) fn write_files(&self, dir: &Path) -> Result<()> {
        let mut offset_index = OffsetIndex::open(
            &cleaned_file(dir, self.base_offset, INDEX_SUFFIX),
            self.base_offset,
        )?;
        offset_index.clear()?;
        for &(offset, position) in &self.offsets {
            offset_index.append(offset, position)?;
        }
        offset_index.sync()?;
        let mut time_index = TimeIndex::open(
            &cleaned_file(dir, self.base_offset, TIME_INDEX_SUFFIX),
            self.base_offset,
        )?;
        time_index.clear()?;
        for &(timestamp, offset) in &self.times {
            time_index.maybe_append(timestamp, offset)?;
        }
        time_index.sync()
    }
}

impl Segment {
    /// Where the cleaner writes this segment's replacement.
    pub(crate) fn cleaned_path(&self) -> PathBuf {
        cleaned_file(&self.dir, self.base_offset, LOG_SUFFIX)
    }

    /// Puts the replacement the cleaner prepared in place of the segment:
    /// `<base>.log.cleaned` with the indexes `cleaned` describes, already
    /// written to `<base>.index.cleaned` and `<base>.timeindex.cleaned`, all
    /// three complete and fsynced. Only renames, syncs and the reading of
    /// the two new index files happen here; the new log file is not
    /// scanned.
    ///
    /// The old indexes are emptied and synced before the log file is
    /// renamed, and the directory is synced before the new indexes are
    /// renamed in (time index first, offset index last), so after a crash
    /// at any point the log file on disk (old or new) is paired with empty
    /// indexes or with its own, never with those of the other file; an
    /// empty offset index makes the next open scan the segment and rebuild
    /// both. Readers holding the old file keep reading it.
    pub(crate) fn install_cleaned(
        &mut self,
        cleaned: &CleanedIndexes,
        index_interval_bytes: u64,
    ) -> Result<()> {
        let log_path = self.log_path();
        let index_path = self.dir.join(file_name(self.base_offset, INDEX_SUFFIX));
        let time_index_path = self
            .dir
            .join(file_name(self.base_offset, TIME_INDEX_SUFFIX));
        self.offset_index.clear()?;
        self.time_index.clear()?;
        self.offset_index.sync()?;
        self.time_index.sync()?;
        rename(&self.cleaned_path(), &log_path)?;
        sync_dir(&self.dir)?;
        let file = super::file::open(&log_path)?;
        let size = file
            .metadata()
            .map_err(|e| LogError::io("reading metadata of", &log_path, e))?
            .len();
        self.file.replace(file);
        self.size = size;
        self.next_offset = cleaned.next_offset;
        self.max_timestamp = cleaned.max_timestamp;
        self.offset_of_max_timestamp = cleaned.offset_of_max_timestamp;
        self.bytes_since_index_entry = cleaned.bytes_since_index_entry;
        rename(
            &cleaned_file(&self.dir, self.base_offset, TIME_INDEX_SUFFIX),
            &time_index_path,
        )?;
        rename(
            &cleaned_file(&self.dir, self.base_offset, INDEX_SUFFIX),
            &index_path,
        )?;
        sync_dir(&self.dir)?;
        self.time_index = TimeIndex::open(&time_index_path, self.base_offset)?;
        self.offset_index = OffsetIndex::open(&index_path, self.base_offset)?;
        let consistent = size == cleaned.size
            && self.offset_index.is_consistent(size)
            && self
                .time_index
                .is_consistent(self.next_offset - self.base_offset);
        if !consistent {
            // Not what the cleaner wrote; the file itself is the truth.
            tracing::warn!(
                segment = %log_path.display(),
                "cleaned segment does not match its prepared indexes; rebuilding them"
            );
            self.scan_and_rebuild(false, index_interval_bytes)?;
            self.offset_index.sync()?;
            self.time_index.sync()?;
        }
        Ok(())
    }
}
