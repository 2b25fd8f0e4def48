//! Writing a segment's replacement: the `.cleaned` files of `prepare`.
//!
//! A segment with changes is written to `<base>.log.cleaned` and fsynced:
//! the bytes before its first changed batch are copied in chunks, then each
//! batch as [`Rules::judge`] decides. The entries of its offset and time
//! indexes, gathered while it is written ([`CleanedIndexes`]), go to
//! `<base>.index.cleaned` and `<base>.timeindex.cleaned`, fsynced too. A
//! segment left with no batch leaves no file, and neither does one with
//! bytes that are not a batch, or an error.

use std::{
    fs::{self, File},
    io::{BufWriter, Write},
    path::{Path, PathBuf},
};

use super::{
    Change,
    rules::{Rules, Verdict},
    snapshot::{BatchReader, SegmentSnapshot},
};
use crate::{
    batch::BatchHeader,
    error::{LogError, Result},
    segment::{CleanedIndexes, LOG_SUFFIX, cleaned_file, remove_cleaned_files},
};

/// Bytes copied at a time from a segment into its replacement (tiny in unit
/// tests, so that batches straddle chunks).
pub(super) const COPY_CHUNK: u64 = if cfg!(test) { 100 } else { 1 << 20 };

/// Judges every batch of `segment`; writes the replacement and its index
/// files at its cleaned paths from the first change on. Returns what
/// becomes of the segment (`None`: nothing changes) and the number of
/// records removed. On error, no cleaned file of the segment is left.
pub(super) fn rewrite(
    dir: &Path,
    segment: &SegmentSnapshot,
    rules: &Rules<'_>,
    index_interval_bytes: u64,
) -> Result<(Option<Change>, u64)> {
    let result = write_replacement(dir, segment, rules, index_interval_bytes);
    if result.is_err() {
        let _ = remove_cleaned_files(dir, segment.base_offset);
    }
    result
}

fn write_replacement(
    dir: &Path,
    segment: &SegmentSnapshot,
    rules: &Rules<'_>,
    index_interval_bytes: u64,
) -> Result<(Option<Change>, u64)> {
    let mut out: Option<CleanedFile> = None;
    let mut indexes = CleanedIndexes::new(segment.base_offset, index_interval_bytes);
    let mut removed = 0u64;
    let mut reader = BatchReader::new(dir, segment);
    while let Some((batch, bytes)) = reader.next_batch()? {
        let verdict = rules.judge(bytes, &batch.header);
        if out.is_none() && !matches!(verdict, Verdict::Keep) {
            out = Some(CleanedFile::create(dir, segment, batch.position)?);
        }
        match verdict {
            Verdict::Keep => {
                indexes.add(&batch.header);
                if let Some(out) = out.as_mut() {
                    out.write(bytes)?;
                }
            }
            Verdict::Replace { bytes, removed: n } => {
                removed += n;
                indexes.add(&BatchHeader::parse(&bytes)?);
                if let Some(out) = out.as_mut() {
                    out.write(&bytes)?;
                }
            }
            Verdict::Drop { removed: n } => removed += n,
        }
    }
    let Some(out) = out else {
        return Ok((None, 0));
    };
    if reader.position != segment.size {
        // Bytes that are not a batch: the segment's invariant says there
        // are none, but a copy without them would lose data.
        tracing::warn!(
            base_offset = segment.base_offset,
            "unreadable bytes in a segment; left it uncleaned"
        );
        out.discard()?;
        return Ok((None, 0));
    }
    if indexes.size() == 0 {
        out.discard()?;
        return Ok((Some(Change::Emptied), removed));
    }
    let written = out.finish()?;
    if written != indexes.size() {
        return Err(LogError::io(
            "writing",
            cleaned_file(dir, segment.base_offset, LOG_SUFFIX),
            std::io::Error::other("cleaned segment length does not match its batches"),
        ));
    }
    indexes.write_files(dir)?;
    Ok((Some(Change::Written(indexes)), removed))
}

/// A segment's replacement being written.
struct CleanedFile {
    path: PathBuf,
    writer: BufWriter<File>,
    written: u64,
}

impl CleanedFile {
    /// Creates the file and copies the first `prefix_len` bytes of the
    /// segment into it.
    fn create(dir: &Path, segment: &SegmentSnapshot, prefix_len: u64) -> Result<Self> {
        let path = cleaned_file(dir, segment.base_offset, LOG_SUFFIX);
        let file = File::create(&path).map_err(|e| LogError::io("creating", &path, e))?;
        let mut this = Self {
            path,
            writer: BufWriter::with_capacity(COPY_CHUNK as usize, file),
            written: 0,
        };
        let mut chunk = vec![0u8; prefix_len.min(COPY_CHUNK) as usize];
        let mut copied = 0u64;
        while copied < prefix_len {
            let len = (prefix_len - copied).min(COPY_CHUNK) as usize;
            segment.read_at(dir, &mut chunk[..len], copied)?;
            this.write(&chunk[..len])?;
            copied += len as u64;
        }
        Ok(this)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.written += bytes.len() as u64;
        self.writer
            .write_all(bytes)
            .map_err(|e| LogError::io("writing", &self.path, e))
    }

    /// Flushes and fsyncs the file; returns its length.
    fn finish(self) -> Result<u64> {
        let file = self
            .writer
            .into_inner()
            .map_err(|e| LogError::io("writing", &self.path, e.into_error()))?;
        file.sync_all()
            .map_err(|e| LogError::io("syncing", &self.path, e))?;
        Ok(self.written)
    }

    fn discard(self) -> Result<()> {
        drop(self.writer);
        fs::remove_file(&self.path).map_err(|e| LogError::io("removing", &self.path, e))
    }
}
