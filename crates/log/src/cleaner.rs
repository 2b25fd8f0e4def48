//! Log compaction (`cleanup.policy=compact`): rewrites the closed segments
//! below the high watermark so that, of every key, only its latest record
//! remains.
//!
//! A pass runs in three steps so that the partition's log lock is held only
//! briefly: all reading, decoding, encoding and writing of segment data
//! happens in the middle step, without the lock.
//!
//! 1. [`begin`] (under the lock; in memory only) takes a [`CleanPlan`]: for
//!    every segment holding a batch below the high watermark, an open
//!    handle of its file, its size and its next offset, the active segment
//!    included up to its size at that moment; which of them are cleanable
//!    (not the active one, non-empty, wholly below the high watermark:
//!    these form a prefix of the log); the ids of the producers the log
//!    tracks; and the configuration. Segment files are only ever appended
//!    to (the active one, past its size), or replaced or deleted as wholes,
//!    and an open handle keeps reading a deleted file, so the bytes the
//!    plan covers stay readable and unchanged whatever happens to the log
//!    meanwhile (a truncation that cuts into them is caught in step 3).
//! 2. [`CleanPlan::prepare`] (no lock; it owns the plan and cannot reach the
//!    log) does the work:
//!    - An [`OffsetMap`] is built from every batch of the plan below the
//!      high watermark: the offset of the latest record of each key, the
//!      latest batch of each producer id, and `complete_below`, the offset
//!      up to which every data batch was read. Records at or past the high
//!      watermark are left out: a follower truncation may still remove
//!      them, so they must not cost the committed records they would
//!      replace.
//!    - Each cleanable segment is judged batch by batch:
//!      - control and transactional batches are kept untouched (the broker
//!        accepts no transactions, and without aborted-transaction tracking
//!        their records may not shadow others, so they are not in the map
//!        either);
//!      - a batch that cannot be decoded within the decompression cap of
//!        [`crate::records`] is kept as is, and its keys are unknown;
//!      - a record with a null key is kept; a record is removed when a
//!        later record of its key is in the map; a tombstone (null value)
//!        that is the latest of its key is removed once `now - timestamp >=
//!        delete_retention_ms` and it lies below `complete_below`;
//!      - a batch that keeps all its records is copied byte for byte; one
//!        that keeps some is re-encoded by [`reencode`]; one that keeps none
//!        is dropped, except the latest batch of a producer the log tracked
//!        at `begin`, which becomes an empty batch
//!        ([`crate::batch::empty_batch`]) so that the producer's sequence
//!        can still be rebuilt from the log.
//!    - A segment with changes is written to `<base>.log.cleaned` and
//!      fsynced; the entries of its offset and time indexes, gathered while
//!      it is written ([`CleanedIndexes`]), go to `<base>.index.cleaned` and
//!      `<base>.timeindex.cleaned`, fsynced too. A segment left with no
//!      batch leaves no file.
//! 3. [`complete`] (under the lock; short) first checks that the last batch
//!    read into the map is still in place (same file, same header at the
//!    same position). If not, a truncation cut records the map counted, and
//!    the whole pass is dropped. Then each prepared segment must still be
//!    the segment that was read: same base offset, same file handle
//!    (`Arc::ptr_eq`), same size and next offset, and not the active
//!    segment. Retention, DeleteRecords, a truncation or another pass may
//!    have deleted or replaced it meanwhile; then its `.cleaned` files are
//!    deleted and it is skipped (`segments_skipped`), for the next pass to
//!    look at again. Otherwise its replacement is swapped in
//!    ([`Segment::install_cleaned`]: old indexes emptied and synced, the log
//!    file renamed over the old one, the directory synced, the new index
//!    files renamed in). A segment left with no batch is deleted; if it is
//!    the first, the current log start offset is checkpointed first so that
//!    reopening keeps it where it was. Under the lock only renames, syncs,
//!    the new index files and one batch header (the map's end) are read or
//!    written; no segment data is scanned.
//!
//! Appends made while the pass runs only add records after the plan's; the
//! map lacks them, so the pass may remove less than it could, never more.
//! The same holds for producers: a producer first tracked after `begin`
//! writes after the plan, and one that expires meanwhile only keeps an
//! empty batch a pass longer.
//!
//! `.cleaned` files are deleted when a prepared pass is dropped without
//! being completed (an error, a closed log), and on open after a crash. Two
//! passes of one log must not prepare at the same time, since they write the
//! same files; the broker runs one pass at a time. A pass begun before
//! another one completed is safe: the check in step 3 skips what the other
//! replaced.
//!
//! Invariants:
//! - A record is removed only if a later record of its key lies below the
//!   high watermark, or it is an expired tombstone with every data batch
//!   before it readable; so no removal brings an older value back. The
//!   check of the map's end in step 3 keeps this true when a truncation
//!   removes such a later record during the pass.
//! - Offsets never move: segment base offsets, every surviving record's
//!   offset and timestamp, and every kept batch's last offset and last
//!   sequence stay as they were. Removed records leave gaps; a read from a
//!   removed offset returns the next batch.
//! - A crash leaves either the old or the new segment file, never a mix,
//!   and never pairs a log file with indexes of the other one.
//! - Only a segment identical to the one the pass read is replaced or
//!   deleted; appends, reads and the other changes of the log go on while
//!   the pass prepares.
//! - Memory is bounded: batches are decoded one at a time under the
//!   decompression cap, and the map keeps a copy of each key up to a budget;
//!   once spent, the map covers only a prefix of the log, past which nothing
//!   is removed.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fs::{self, File},
    io::{BufWriter, Write},
    mem,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    sync::Arc,
};

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, RecordSet,
};

use crate::{
    batch::{BATCH_HEADER_LEN, BatchHeader, empty_batch, increment_sequence, reseal, verify_crc},
    checkpoint::{sync_dir, write_offset},
    error::{LogError, Result},
    records::decompress,
    segment::{CleanedIndexes, LOG_SUFFIX, Segment, cleaned_file, remove_cleaned_files},
};

/// The memory the key map may use before it stops growing.
pub(crate) const OFFSET_MAP_BUDGET: usize = 256 << 20;
/// Bytes a map entry is reckoned to take besides its key.
const MAP_ENTRY_OVERHEAD: usize = 48;
/// Bytes copied at a time from a segment into its replacement (tiny in unit
/// tests, so that batches straddle chunks).
const COPY_CHUNK: u64 = if cfg!(test) { 100 } else { 1 << 20 };
/// Bytes read at a time when walking a segment's batches.
const READ_CHUNK: u64 = if cfg!(test) { 200 } else { 1 << 20 };

/// What one cleaning pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanOutcome {
    /// Segments replaced by a cleaned copy.
    pub segments_rewritten: usize,
    /// Segments deleted because no batch in them survived.
    pub segments_deleted: usize,
    /// Segments whose cleaned copy was thrown away because the log changed
    /// them (or the records the pass relied on) while the pass ran.
    pub segments_skipped: usize,
    /// Records removed: superseded values and expired tombstones.
    pub records_removed: u64,
    /// Size of the whole log when the pass began.
    pub bytes_before: u64,
    /// Size of the whole log when the pass completed.
    pub bytes_after: u64,
    /// Bytes appended while the pass ran (part of `bytes_after`, and not
    /// looked at by the pass).
    pub bytes_appended: u64,
}

/// The inputs of one pass besides the segments.
#[derive(Debug, Clone)]
pub(crate) struct CleanParams {
    pub(crate) dir: PathBuf,
    pub(crate) now_ms: i64,
    pub(crate) high_watermark: i64,
    pub(crate) delete_retention_ms: i64,
    pub(crate) index_interval_bytes: u64,
    pub(crate) map_budget: usize,
    /// The producer ids the log tracks.
    pub(crate) live_producers: HashSet<i64>,
}

/// A segment as a pass found it at `begin`: an open handle of its file and
/// the part of it the pass may read.
#[derive(Debug, Clone)]
pub(crate) struct SegmentSnapshot {
    base_offset: i64,
    file: Arc<File>,
    size: u64,
    next_offset: i64,
}

impl SegmentSnapshot {
    fn of(segment: &Segment) -> Self {
        Self {
            base_offset: segment.base_offset(),
            file: segment.file(),
            size: segment.size(),
            next_offset: segment.next_offset(),
        }
    }

    /// Whether `segment` is still this one: same base offset, same file,
    /// same size and next offset.
    fn is(&self, segment: &Segment) -> bool {
        segment.base_offset() == self.base_offset
            && Arc::ptr_eq(&segment.file(), &self.file)
            && segment.size() == self.size
            && segment.next_offset() == self.next_offset
    }

    fn read_at(&self, dir: &Path, buf: &mut [u8], position: u64) -> Result<()> {
        self.file.read_exact_at(buf, position).map_err(|e| {
            LogError::io(
                "reading segment",
                dir.join(crate::segment::file_name(self.base_offset, LOG_SUFFIX)),
                e,
            )
        })
    }
}

/// What a pass works from, taken under the log's lock by
/// [`crate::PartitionLog::begin_clean`]. It holds open handles of segment
/// files and copies of settings, not the log, so that
/// [`CleanPlan::prepare`] runs without the lock.
#[derive(Debug)]
pub struct CleanPlan {
    params: CleanParams,
    /// Every segment with a batch below the high watermark, in log order.
    readable: Vec<SegmentSnapshot>,
    /// The closed segments wholly below the high watermark.
    cleanable: Vec<SegmentSnapshot>,
    /// The active segment, to tell what was appended during the pass.
    active: Option<SegmentSnapshot>,
    bytes_before: u64,
}

/// Takes the snapshot a pass over `segments` (the last of which is the
/// active one) works from; with `compact` false the plan does nothing.
pub(crate) fn begin(
    segments: &BTreeMap<i64, Segment>,
    params: CleanParams,
    compact: bool,
) -> CleanPlan {
    let active = segments.values().next_back();
    let mut plan = CleanPlan {
        readable: Vec::new(),
        cleanable: Vec::new(),
        active: active.map(SegmentSnapshot::of),
        bytes_before: total_size(segments),
        params,
    };
    if !compact {
        return plan;
    }
    let high_watermark = plan.params.high_watermark;
    let active_base = active.map(Segment::base_offset);
    plan.readable = segments
        .range(..high_watermark)
        .map(|(_, s)| SegmentSnapshot::of(s))
        .collect();
    plan.cleanable = segments
        .values()
        .filter(|s| Some(s.base_offset()) != active_base)
        .filter(|s| !s.is_empty() && s.next_offset() <= high_watermark)
        .map(SegmentSnapshot::of)
        .collect();
    plan
}

impl CleanPlan {
    /// Builds the key map and writes the replacement of each cleanable
    /// segment that changes, with its indexes, all fsynced. Reads only the
    /// plan's file handles; call it without holding the log. On error, the
    /// files it wrote are deleted.
    pub fn prepare(self) -> Result<PreparedClean> {
        let params = self.params;
        let mut prepared = PreparedClean {
            segments: Vec::new(),
            map_end: None,
            active: self.active,
            bytes_before: self.bytes_before,
            index_interval_bytes: params.index_interval_bytes,
            dir: params.dir.clone(),
        };
        if self.cleanable.is_empty() {
            return Ok(prepared);
        }
        let (map, map_end) = OffsetMap::build(
            &params.dir,
            &self.readable,
            params.high_watermark,
            params.map_budget,
        )?;
        prepared.map_end = map_end;
        let rules = Rules {
            map: &map,
            now_ms: params.now_ms,
            delete_retention_ms: params.delete_retention_ms,
            live_producers: &params.live_producers,
        };
        for segment in &self.cleanable {
            let (change, removed) =
                rewrite(&params.dir, segment, &rules, params.index_interval_bytes)?;
            let Some(change) = change else { continue };
            prepared.segments.push(PreparedSegment {
                dir: params.dir.clone(),
                source: segment.clone(),
                removed,
                change,
                files_left: true,
            });
        }
        Ok(prepared)
    }
}

/// A pass whose replacements are written, to be swapped in by
/// [`crate::PartitionLog::complete_clean`]. Dropped instead, it deletes the
/// files it wrote.
#[derive(Debug)]
pub struct PreparedClean {
    dir: PathBuf,
    segments: Vec<PreparedSegment>,
    /// The last batch read into the key map.
    map_end: Option<MapEnd>,
    active: Option<SegmentSnapshot>,
    bytes_before: u64,
    index_interval_bytes: u64,
}

impl PreparedClean {
    /// Segments with a replacement (or to be deleted) waiting for
    /// `complete`.
    pub fn segments_prepared(&self) -> usize {
        self.segments.len()
    }
}

/// The cleaned replacement of one segment.
#[derive(Debug)]
struct PreparedSegment {
    dir: PathBuf,
    source: SegmentSnapshot,
    removed: u64,
    change: Change,
    /// Whether `.cleaned` files of this segment may still be on disk.
    files_left: bool,
}

impl Drop for PreparedSegment {
    fn drop(&mut self) {
        if self.files_left {
            if let Err(e) = remove_cleaned_files(&self.dir, self.source.base_offset) {
                tracing::warn!(error = %e, "could not remove a cleaned segment left over");
            }
        }
    }
}

/// What becomes of a segment that changes.
#[derive(Debug)]
enum Change {
    /// The replacement and its indexes are complete at the cleaned paths.
    Written(CleanedIndexes),
    /// Nothing survived; no replacement file is left.
    Emptied,
}

/// Where the key map ended: the last batch it read.
#[derive(Debug)]
struct MapEnd {
    segment: SegmentSnapshot,
    position: u64,
    header: BatchHeader,
}

impl MapEnd {
    /// Whether the batch is still in place, in the same file: no truncation
    /// cut it (and with it records the map counted), and its segment was not
    /// deleted or replaced. Reads one batch header.
    fn holds(&self, segments: &BTreeMap<i64, Segment>) -> Result<bool> {
        let Some(segment) = segments.get(&self.segment.base_offset) else {
            return Ok(false);
        };
        let len = self.header.total_len() as u64;
        if !Arc::ptr_eq(&segment.file(), &self.segment.file) || segment.size() < self.position + len
        {
            return Ok(false);
        }
        let now = segment.read_bytes(self.position, BATCH_HEADER_LEN)?;
        Ok(BatchHeader::parse(&now).is_ok_and(|header| header == self.header))
    }
}

/// Swaps the prepared replacements into `segments` (the last of which is
/// the active one), skipping those whose segment changed since `begin`.
/// `log_start_offset` is checkpointed to `log_start_offset_file` before an
/// emptied first segment is deleted.
pub(crate) fn complete(
    segments: &mut BTreeMap<i64, Segment>,
    mut prepared: PreparedClean,
    log_start_offset: i64,
    log_start_offset_file: &Path,
) -> Result<CleanOutcome> {
    let mut outcome = CleanOutcome {
        bytes_before: prepared.bytes_before,
        ..CleanOutcome::default()
    };
    let pending = mem::take(&mut prepared.segments);
    let map_holds = match &prepared.map_end {
        Some(end) if !pending.is_empty() => end.holds(segments)?,
        _ => true,
    };
    if !map_holds {
        tracing::info!(
            dir = %prepared.dir.display(),
            "the log was truncated during a cleaning pass; dropped the pass"
        );
    }
    for mut segment in pending {
        let base = segment.source.base_offset;
        let active_base = segments.keys().next_back().copied();
        let unchanged = map_holds
            && Some(base) != active_base
            && segments.get(&base).is_some_and(|s| segment.source.is(s));
        if !unchanged {
            outcome.segments_skipped += 1;
            continue;
        }
        match &segment.change {
            Change::Written(indexes) => {
                if let Some(current) = segments.get_mut(&base) {
                    current.install_cleaned(indexes, prepared.index_interval_bytes)?;
                }
                segment.files_left = false;
                outcome.segments_rewritten += 1;
            }
            Change::Emptied => {
                if segments.keys().next() == Some(&base) {
                    write_offset(log_start_offset_file, log_start_offset)?;
                }
                if let Some(current) = segments.remove(&base) {
                    current.delete()?;
                }
                sync_dir(&prepared.dir)?;
                outcome.segments_deleted += 1;
            }
        }
        outcome.records_removed += segment.removed;
    }
    outcome.bytes_after = total_size(segments);
    outcome.bytes_appended = prepared
        .active
        .as_ref()
        .map_or(0, |active| appended_since(segments, active));
    tracing::debug!(
        dir = %prepared.dir.display(),
        rewritten = outcome.segments_rewritten,
        deleted = outcome.segments_deleted,
        skipped = outcome.segments_skipped,
        removed = outcome.records_removed,
        "cleaned log"
    );
    Ok(outcome)
}

fn total_size(segments: &BTreeMap<i64, Segment>) -> u64 {
    segments.values().map(Segment::size).sum()
}

/// Bytes in `segments` past what the active segment held at `begin`.
fn appended_since(segments: &BTreeMap<i64, Segment>, active: &SegmentSnapshot) -> u64 {
    segments
        .range(active.base_offset..)
        .map(|(&base, s)| {
            if base == active.base_offset && Arc::ptr_eq(&s.file(), &active.file) {
                s.size().saturating_sub(active.size)
            } else {
                s.size()
            }
        })
        .sum()
}

/// Walks the batches of a snapshot from its start, reading the file in
/// large chunks rather than batch by batch.
struct BatchReader<'a> {
    dir: &'a Path,
    segment: &'a SegmentSnapshot,
    /// Where the next batch starts.
    position: u64,
    buf: Vec<u8>,
    buf_start: u64,
}

/// A batch read by [`BatchReader`].
#[derive(Debug, Clone, Copy)]
struct LocatedBatch {
    position: u64,
    header: BatchHeader,
}

impl<'a> BatchReader<'a> {
    fn new(dir: &'a Path, segment: &'a SegmentSnapshot) -> Self {
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
    fn next_batch(&mut self) -> Result<Option<(LocatedBatch, &[u8])>> {
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
    /// Builds the map from the batches below `high_watermark` of
    /// `segments`, in log order; also returns the last batch it read.
    fn build(
        dir: &Path,
        segments: &[SegmentSnapshot],
        high_watermark: i64,
        budget: usize,
    ) -> Result<(Self, Option<MapEnd>)> {
        let mut map = Self {
            latest: HashMap::new(),
            last_batch_of_producer: HashMap::new(),
            complete_below: high_watermark,
            budget_left: budget,
        };
        let mut end: Option<(usize, LocatedBatch)> = None;
        'segments: for (index, segment) in segments.iter().enumerate() {
            let mut reader = BatchReader::new(dir, segment);
            while let Some((batch, bytes)) = reader.next_batch()? {
                if batch.header.base_offset >= high_watermark {
                    break 'segments;
                }
                end = Some((index, batch));
                if !map.add_batch(&batch.header, bytes, high_watermark) {
                    break 'segments;
                }
            }
        }
        let end = end.map(|(index, batch)| MapEnd {
            segment: segments[index].clone(),
            position: batch.position,
            header: batch.header,
        });
        Ok((map, end))
    }

    /// Adds a batch's keys; `false` once the budget is spent.
    fn add_batch(&mut self, header: &BatchHeader, bytes: &[u8], high_watermark: i64) -> bool {
        if header.has_producer_id() {
            self.last_batch_of_producer
                .insert(header.producer_id, header.base_offset);
        }
        if header.is_control() {
            return true;
        }
        let decoded = if header.is_transactional() {
            None
        } else {
            decode(bytes)
        };
        let Some(set) = decoded else {
            self.complete_below = self.complete_below.min(header.base_offset);
            return true;
        };
        for record in set.records.iter().filter(|r| r.offset < high_watermark) {
            let Some(key) = &record.key else { continue };
            if !self.insert(key, record.offset) {
                self.complete_below = self.complete_below.min(record.offset);
                return false;
            }
        }
        true
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

struct Rules<'a> {
    map: &'a OffsetMap,
    now_ms: i64,
    delete_retention_ms: i64,
    live_producers: &'a HashSet<i64>,
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
            && self.live_producers.contains(&header.producer_id)
    }
}

/// Judges every batch of `segment`; writes the replacement and its index
/// files at its cleaned paths from the first change on. Returns what
/// becomes of the segment (`None`: nothing changes) and the number of
/// records removed. On error, no cleaned file of the segment is left.
fn rewrite(
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

#[cfg(test)]
mod tests;
