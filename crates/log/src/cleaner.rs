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
//!    The snapshots and the reading of their batches are in [`snapshot`].
//! 2. [`CleanPlan::prepare`] (no lock; it owns the plan and cannot reach the
//!    log) does the work:
//!    - An [`OffsetMap`] is built from every batch of the plan below the
//!      high watermark: the offset of the latest record of each key, the
//!      latest batch of each producer id, and `complete_below`, the offset
//!      up to which every data batch was read ([`offset_map`]).
//!    - Each cleanable segment is judged batch by batch ([`rules`]): a
//!      record is removed when a later record of its key is in the map, or
//!      when it is an expired tombstone; a batch is kept byte for byte,
//!      re-encoded with its survivors, dropped, or (the latest batch of a
//!      live producer) left as an empty batch.
//!    - A segment with changes is written to `<base>.log.cleaned` and
//!      fsynced, with its offset and time indexes beside it ([`files`]). A
//!      segment left with no batch leaves no file.
//! 3. [`complete`] (under the lock; short) checks that the log did not
//!    change under the pass: the last batch read into the map must still be
//!    in place, or the whole pass is dropped, and each prepared segment
//!    must still be the segment that was read, or it is skipped
//!    (`segments_skipped`). Otherwise its replacement is swapped in, or a
//!    segment left with no batch is deleted ([`swap`]). Under the lock only
//!    renames, syncs, the new index files and one batch header (the map's
//!    end) are read or written; no segment data is scanned.
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

mod files;
mod offset_map;
mod rules;
mod snapshot;
mod swap;

use std::{
    collections::{BTreeMap, HashSet},
    path::PathBuf,
};

pub(crate) use offset_map::OFFSET_MAP_BUDGET;
pub(crate) use swap::complete;

use self::{
    files::rewrite,
    offset_map::{MapEnd, OffsetMap},
    rules::Rules,
    snapshot::SegmentSnapshot,
};
use crate::{
    error::Result,
    segment::{CleanedIndexes, Segment, remove_cleaned_files},
};

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
    /// Bytes of closed segments the pass left for later because they hold
    /// records younger than `min.compaction.lag.ms` (part of `bytes_after`,
    /// and still dirty).
    pub bytes_held_back: u64,
}

/// The inputs of one pass besides the segments.
#[derive(Debug, Clone)]
pub(crate) struct CleanParams {
    pub(crate) dir: PathBuf,
    pub(crate) now_ms: i64,
    pub(crate) high_watermark: i64,
    pub(crate) delete_retention_ms: i64,
    /// Segments from the first holding a record younger than this are
    /// left for a later pass (`min.compaction.lag.ms`).
    pub(crate) min_compaction_lag_ms: i64,
    pub(crate) index_interval_bytes: u64,
    pub(crate) map_budget: usize,
    /// The producer ids the log tracks.
    pub(crate) live_producers: HashSet<i64>,
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
    /// The closed segments wholly below the high watermark, up to the
    /// first with a record younger than the minimum compaction lag.
    cleanable: Vec<SegmentSnapshot>,
    /// The active segment, to tell what was appended during the pass.
    active: Option<SegmentSnapshot>,
    bytes_before: u64,
    bytes_held_back: u64,
}

/// Takes the snapshot a pass over `segments` (the last of which is the
/// active one) works from; with `compact` false the plan does nothing.
/// The snapshot holds the files it reads open until the pass ends.
pub(crate) fn begin(
    segments: &BTreeMap<i64, Segment>,
    params: CleanParams,
    compact: bool,
) -> Result<CleanPlan> {
    let active = segments.values().next_back();
    let mut plan = CleanPlan {
        readable: Vec::new(),
        cleanable: Vec::new(),
        active: active.map(SegmentSnapshot::of).transpose()?,
        bytes_before: total_size(segments),
        bytes_held_back: 0,
        params,
    };
    if !compact {
        return Ok(plan);
    }
    let high_watermark = plan.params.high_watermark;
    let active_base = active.map(Segment::base_offset);
    plan.readable = segments
        .range(..high_watermark)
        .map(|(_, s)| SegmentSnapshot::of(s))
        .collect::<Result<_>>()?;
    // Without a minimum lag, as in Kafka, a segment's timestamps do not
    // matter (they may even lie ahead of the broker's clock).
    let min_lag = plan.params.min_compaction_lag_ms;
    let youngest_cleanable = plan.params.now_ms.saturating_sub(min_lag);
    let closed: Vec<&Segment> = segments
        .values()
        .filter(|s| Some(s.base_offset()) != active_base)
        .filter(|s| !s.is_empty() && s.next_offset() <= high_watermark)
        .collect();
    let young = closed
        .iter()
        .position(|s| min_lag > 0 && s.max_timestamp() > youngest_cleanable)
        .unwrap_or(closed.len());
    plan.bytes_held_back = closed[young..].iter().map(|s| s.size()).sum();
    plan.cleanable = closed[..young]
        .iter()
        .map(|s| SegmentSnapshot::of(s))
        .collect::<Result<_>>()?;
    Ok(plan)
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
            bytes_held_back: self.bytes_held_back,
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
    bytes_held_back: u64,
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

fn total_size(segments: &BTreeMap<i64, Segment>) -> u64 {
    segments.values().map(Segment::size).sum()
}

#[cfg(test)]
mod tests;
