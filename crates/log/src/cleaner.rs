//! Log compaction (`cleanup.policy=compact`): rewrites the closed segments
//! below the high watermark so that, of every key, only its latest record
//! remains.
//!
//! One pass of [`clean`]:
//!
//! 1. An [`OffsetMap`] is built from every batch below the high watermark,
//!    in all segments including the active one: the offset of the latest
//!    record of each key, the latest batch of each producer id, and
//!    `complete_below`, the offset up to which every data batch was read.
//!    Records at or past the high watermark are left out: a follower
//!    truncation may still remove them, so they must not cost the committed
//!    records they would replace.
//! 2. Each segment that is not the active one and lies wholly below the high
//!    watermark (these form a prefix of the log) is judged batch by batch:
//!    - control and transactional batches are kept untouched (the broker
//!      accepts no transactions, and without aborted-transaction tracking
//!      their records may not shadow others, so they are not in the map
//!      either);
//!    - a batch that cannot be decoded within the decompression cap of
//!      [`crate::records`] is kept as is, and its keys are unknown;
//!    - a record with a null key is kept; a record is removed when a later
//!      record of its key is in the map; a tombstone (null value) that is
//!      the latest of its key is removed once `now - timestamp >=
//!      delete_retention_ms` and it lies below `complete_below`;
//!    - a batch that keeps all its records is copied byte for byte; one that
//!      keeps some is re-encoded by [`reencode`]; one that keeps none is
//!      dropped, except the latest batch of a producer the log still tracks,
//!      which becomes an empty batch ([`crate::batch::empty_batch`]) so that
//!      the producer's sequence can still be rebuilt from the log.
//! 3. A segment with changes is written to `<base>.log.cleaned`, fsynced and
//!    renamed over `<base>.log`, and its indexes are rebuilt
//!    ([`Segment::replace_with_cleaned`]). A segment left with no batch is
//!    deleted; if it was the first, the log start offset is checkpointed
//!    first so that reopening keeps it where it was.
//!
//! Invariants:
//! - A record is removed only if a later record of its key lies below the
//!   high watermark, or it is an expired tombstone with every data batch
//!   before it readable; so no removal brings an older value back.
//! - Offsets never move: segment base offsets, every surviving record's
//!   offset and timestamp, and every kept batch's last offset and last
//!   sequence stay as they were. Removed records leave gaps; a read from a
//!   removed offset returns the next batch.
//! - A crash leaves either the old or the new segment file, never a mix.
//! - Memory is bounded: batches are decoded one at a time under the
//!   decompression cap, and the map keeps a copy of each key up to a budget;
//!   once spent, the map covers only a prefix of the log, past which nothing
//!   is removed.

use std::{
    collections::{BTreeMap, HashMap},
    fs::{self, File},
    io::{BufWriter, Write},
    path::{Path, PathBuf},
};

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, RecordSet,
};

use crate::{
    batch::{BatchHeader, empty_batch, increment_sequence, reseal, verify_crc},
    checkpoint::{sync_dir, write_offset},
    error::{LogError, Result},
    records::decompress,
    segment::{LocatedBatch, Segment},
};

/// The memory the key map may use before it stops growing.
pub(crate) const OFFSET_MAP_BUDGET: usize = 256 << 20;
/// Bytes a map entry is reckoned to take besides its key.
const MAP_ENTRY_OVERHEAD: usize = 48;
/// Bytes copied at a time from a segment into its replacement.
const COPY_CHUNK: u64 = 1 << 20;

/// What one cleaning pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanOutcome {
    /// Segments replaced by a cleaned copy.
    pub segments_rewritten: usize,
    /// Segments deleted because no batch in them survived.
    pub segments_deleted: usize,
    /// Records removed: superseded values and expired tombstones.
    pub records_removed: u64,
    /// Size of the whole log before the pass.
    pub bytes_before: u64,
    /// Size of the whole log after the pass.
    pub bytes_after: u64,
}

/// The inputs of one pass besides the segments.
pub(crate) struct CleanParams<'a> {
    pub(crate) dir: &'a Path,
    pub(crate) now_ms: i64,
    pub(crate) high_watermark: i64,
    pub(crate) delete_retention_ms: i64,
    pub(crate) index_interval_bytes: u64,
    pub(crate) log_start_offset: i64,
    pub(crate) log_start_offset_file: PathBuf,
    pub(crate) map_budget: usize,
    /// Whether the log still tracks this producer id.
    pub(crate) live_producer: &'a dyn Fn(i64) -> bool,
}

/// Runs one pass over `segments`, the last of which is the active one.
pub(crate) fn clean(
    segments: &mut BTreeMap<i64, Segment>,
    params: &CleanParams<'_>,
) -> Result<CleanOutcome> {
    let mut outcome = CleanOutcome {
        bytes_before: total_size(segments),
        ..CleanOutcome::default()
    };
    let map = OffsetMap::build(segments, params.high_watermark, params.map_budget)?;
    let active_base = segments.keys().next_back().copied();
    let cleanable: Vec<i64> = segments
        .values()
        .filter(|s| Some(s.base_offset()) != active_base)
        .filter(|s| !s.is_empty() && s.next_offset() <= params.high_watermark)
        .map(Segment::base_offset)
        .collect();
    let rules = Rules {
        map: &map,
        now_ms: params.now_ms,
        delete_retention_ms: params.delete_retention_ms,
        live_producer: params.live_producer,
    };
    for base in cleanable {
        let is_first = segments.keys().next() == Some(&base);
        let Some(segment) = segments.get_mut(&base) else {
            continue;
        };
        let (result, removed) = match rewrite(segment, &rules) {
            Ok(done) => done,
            Err(e) => {
                let _ = fs::remove_file(segment.cleaned_path());
                return Err(e);
            }
        };
        outcome.records_removed += removed;
        match result {
            Rewrite::Unchanged => {}
            Rewrite::Written => {
                segment.replace_with_cleaned(params.index_interval_bytes)?;
                outcome.segments_rewritten += 1;
            }
            Rewrite::Emptied => {
                if is_first {
                    write_offset(&params.log_start_offset_file, params.log_start_offset)?;
                }
                if let Some(segment) = segments.remove(&base) {
                    segment.delete()?;
                }
                sync_dir(params.dir)?;
                outcome.segments_deleted += 1;
            }
        }
    }
    outcome.bytes_after = total_size(segments);
    tracing::debug!(
        dir = %params.dir.display(),
        rewritten = outcome.segments_rewritten,
        deleted = outcome.segments_deleted,
        removed = outcome.records_removed,
        "cleaned log"
    );
    Ok(outcome)
}

fn total_size(segments: &BTreeMap<i64, Segment>) -> u64 {
    segments.values().map(Segment::size).sum()
}

/// The latest offset of each key below the high watermark.
#[derive(Debug)]
pub(crate) struct OffsetMap {
    latest: HashMap<Box<[u8]>, i64>,
    /// Producer id to the base offset of its latest batch.
    last_batch_of_producer: HashMap<i64, i64>,
    /// Every data batch below this offset was decoded into the map.
    complete_below: i64,
    budget_left: usize,
}

impl OffsetMap {
    pub(crate) fn build(
        segments: &BTreeMap<i64, Segment>,
        high_watermark: i64,
        budget: usize,
    ) -> Result<Self> {
        let mut map = Self {
            latest: HashMap::new(),
            last_batch_of_producer: HashMap::new(),
            complete_below: high_watermark,
            budget_left: budget,
        };
        for segment in segments.values() {
            let mut located = segment.find_batch(segment.base_offset())?;
            while let Some(batch) = located {
                if batch.header.base_offset >= high_watermark
                    || !map.add_batch(segment, &batch, high_watermark)?
                {
                    return Ok(map);
                }
                located = segment.next_batch(&batch)?;
            }
        }
        Ok(map)
    }

    /// Adds a batch's keys; `false` once the budget is spent.
    fn add_batch(
        &mut self,
        segment: &Segment,
        batch: &LocatedBatch,
        high_watermark: i64,
    ) -> Result<bool> {
        let header = &batch.header;
        if header.has_producer_id() {
            self.last_batch_of_producer
                .insert(header.producer_id, header.base_offset);
        }
        if header.is_control() {
            return Ok(true);
        }
        let decoded = if header.is_transactional() {
            None
        } else {
            decode(&segment.read_bytes(batch.position, header.total_len())?)
        };
        let Some(set) = decoded else {
            self.complete_below = self.complete_below.min(header.base_offset);
            return Ok(true);
        };
        for record in set.records.iter().filter(|r| r.offset < high_watermark) {
            let Some(key) = &record.key else { continue };
            if !self.insert(key, record.offset) {
                self.complete_below = self.complete_below.min(record.offset);
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Records `offset` as the latest of `key`; offsets come in increasing
    /// order. `false` if a new key does not fit the budget.
    fn insert(&mut self, key: &[u8], offset: i64) -> bool {
        if let Some(latest) = self.latest.get_mut(key) {
            *latest = offset;
            return true;
        }
        let cost = key.len() + MAP_ENTRY_OVERHEAD;
        if cost > self.budget_left {
            return false;
        }
        self.budget_left -= cost;
        self.latest.insert(key.into(), offset);
        true
    }
}

/// Decodes a stored batch with the capped decompression.
fn decode(bytes: &[u8]) -> Option<RecordSet> {
    let mut buf = Bytes::copy_from_slice(bytes);
    RecordBatchDecoder::decode_with_custom_compression(
        &mut buf,
        Some(
            |payload: &mut Bytes, compression: Compression| match compression {
                Compression::None => Ok(payload.clone()),
                codec => decompress(codec as i16, payload)
                    .map(Bytes::from)
                    .ok_or_else(|| std::io::Error::other("batch exceeds the cap").into()),
            },
        ),
    )
    .ok()
}

/// Encodes the records that survive of a batch as one batch, or `None` if
/// that is not possible (the caller then keeps the batch as it was).
///
/// The encoder puts records into one batch while `offset - sequence` stays
/// the same, takes the first record's sequence as the base sequence, the
/// first offset as base offset and the last as `base + last_offset_delta`.
/// The decoder numbers record `i` `base_sequence + offset_delta`, so
/// survivors of one batch would already agree; the sequences are set
/// explicitly anyway: the first survivor gets the original base sequence
/// advanced by its offset delta (wrapping as Kafka does), the others follow
/// by offset distance, and a batch without sequence (-1) keeps -1. After
/// encoding, `last_offset_delta` is stretched back to the original last
/// offset, so the batch's last offset and last sequence are unchanged, as
/// Kafka's cleaner leaves them; a LogAppendTime batch gets its timestamp
/// type and max timestamp back, which the encoder does not write; the CRC
/// is recomputed.
fn reencode(
    header: &BatchHeader,
    compression: Compression,
    survivors: &mut [Record],
) -> Option<Vec<u8>> {
    let first_offset = survivors.first()?.offset;
    let first_delta = i32::try_from(first_offset - header.base_offset).ok()?;
    let base_sequence = if header.base_sequence < 0 {
        -1
    } else {
        increment_sequence(header.base_sequence, first_delta)
    };
    for record in survivors.iter_mut() {
        let distance = i32::try_from(record.offset - first_offset).ok()?;
        record.sequence = base_sequence.wrapping_add(distance);
    }
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression,
    };
    RecordBatchEncoder::encode(&mut buf, survivors.iter(), &options).ok()?;
    let mut bytes = buf.to_vec();
    let encoded = BatchHeader::parse(&bytes).ok()?;
    if encoded.total_len() != bytes.len()
        || encoded.base_offset != first_offset
        || usize::try_from(encoded.records_count).ok()? != survivors.len()
    {
        return None;
    }
    let last_offset_delta = i32::try_from(header.last_offset() - first_offset).ok()?;
    let log_append_time = header.is_log_append_time().then_some(header.max_timestamp);
    reseal(&mut bytes, last_offset_delta, log_append_time);
    let sealed = BatchHeader::parse(&bytes).ok()?;
    verify_crc(&sealed, &bytes).ok()?;
    Some(bytes)
}

/// What becomes of one batch.
#[derive(Debug)]
enum Verdict {
    Keep,
    Replace { bytes: Vec<u8>, removed: u64 },
    Drop { removed: u64 },
}

/// What becomes of one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rewrite {
    Unchanged,
    /// The replacement is complete at the segment's cleaned path.
    Written,
    /// Nothing survived; no replacement file is left.
    Emptied,
}

struct Rules<'a> {
    map: &'a OffsetMap,
    now_ms: i64,
    delete_retention_ms: i64,
    live_producer: &'a dyn Fn(i64) -> bool,
}

impl Rules<'_> {
    fn judge(&self, bytes: &[u8], header: &BatchHeader) -> Verdict {
        if header.is_control() || header.is_transactional() {
            return Verdict::Keep;
        }
        let Some(set) = decode(bytes) else {
            return Verdict::Keep;
        };
        let total = set.records.len();
        let mut survivors: Vec<Record> = set
            .records
            .into_iter()
            .filter(|record| self.keeps(record, header))
            .collect();
        let removed = (total - survivors.len()) as u64;
        if survivors.is_empty() {
            return match (self.is_last_of_live_producer(header), total) {
                (true, 0) => Verdict::Keep,
                (true, _) => Verdict::Replace {
                    bytes: empty_batch(header),
                    removed,
                },
                (false, _) => Verdict::Drop { removed },
            };
        }
        if removed == 0 {
            return Verdict::Keep;
        }
        match reencode(header, set.compression, &mut survivors) {
            Some(bytes) => Verdict::Replace { bytes, removed },
            None => {
                tracing::warn!(
                    base_offset = header.base_offset,
                    "could not re-encode a batch for compaction; kept it whole"
                );
                Verdict::Keep
            }
        }
    }

    fn keeps(&self, record: &Record, header: &BatchHeader) -> bool {
        let Some(key) = &record.key else {
            return true;
        };
        let latest = self.map.latest.get(key.as_ref()).copied();
        if latest.is_some_and(|latest| latest > record.offset) {
            return false;
        }
        if record.value.is_some() {
            return true;
        }
        let timestamp = if header.is_log_append_time() {
            header.max_timestamp
        } else {
            record.timestamp
        };
        let expired = self.now_ms.saturating_sub(timestamp) >= self.delete_retention_ms;
        !(expired && record.offset < self.map.complete_below)
    }

    fn is_last_of_live_producer(&self, header: &BatchHeader) -> bool {
        header.has_producer_id()
            && self.map.last_batch_of_producer.get(&header.producer_id) == Some(&header.base_offset)
            && (self.live_producer)(header.producer_id)
    }
}

/// Judges every batch of `segment`; writes the replacement at its cleaned
/// path from the first change on. Returns the verdict on the segment and
/// the number of records removed.
fn rewrite(segment: &Segment, rules: &Rules<'_>) -> Result<(Rewrite, u64)> {
    let mut out: Option<CleanedFile> = None;
    let mut kept = 0usize;
    let mut removed = 0u64;
    let mut located = segment.find_batch(segment.base_offset())?;
    while let Some(batch) = located {
        let bytes = segment.read_bytes(batch.position, batch.header.total_len())?;
        let verdict = rules.judge(&bytes, &batch.header);
        if out.is_none() && !matches!(verdict, Verdict::Keep) {
            out = Some(CleanedFile::create(segment, batch.position)?);
        }
        let written = match verdict {
            Verdict::Keep => Some(bytes),
            Verdict::Replace { bytes, removed: n } => {
                removed += n;
                Some(bytes)
            }
            Verdict::Drop { removed: n } => {
                removed += n;
                None
            }
        };
        if let Some(bytes) = written {
            kept += 1;
            if let Some(out) = out.as_mut() {
                out.write(&bytes)?;
            }
        }
        located = segment.next_batch(&batch)?;
    }
    let result = match out {
        None => Rewrite::Unchanged,
        Some(out) if kept == 0 => {
            out.discard()?;
            Rewrite::Emptied
        }
        Some(out) => {
            out.finish()?;
            Rewrite::Written
        }
    };
    Ok((result, removed))
}

/// A segment's replacement being written.
struct CleanedFile {
    path: PathBuf,
    writer: BufWriter<File>,
}

impl CleanedFile {
    /// Creates the file and copies the first `prefix_len` bytes of the
    /// segment into it.
    fn create(segment: &Segment, prefix_len: u64) -> Result<Self> {
        let path = segment.cleaned_path();
        let file = File::create(&path).map_err(|e| LogError::io("creating", &path, e))?;
        let mut this = Self {
            path,
            writer: BufWriter::with_capacity(COPY_CHUNK as usize, file),
        };
        let mut copied = 0u64;
        while copied < prefix_len {
            let len = (prefix_len - copied).min(COPY_CHUNK);
            this.write(&segment.read_bytes(copied, len as usize)?)?;
            copied += len;
        }
        Ok(this)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.writer
            .write_all(bytes)
            .map_err(|e| LogError::io("writing", &self.path, e))
    }

    /// Flushes and fsyncs the file.
    fn finish(self) -> Result<()> {
        let file = self
            .writer
            .into_inner()
            .map_err(|e| LogError::io("writing", &self.path, e.into_error()))?;
        file.sync_all()
            .map_err(|e| LogError::io("syncing", &self.path, e))
    }

    fn discard(self) -> Result<()> {
        drop(self.writer);
        fs::remove_file(&self.path).map_err(|e| LogError::io("removing", &self.path, e))
    }
}

#[cfg(test)]
mod tests;
