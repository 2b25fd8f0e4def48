//! The last step of a pass, under the log's lock: swapping the prepared
//! replacements in.
//!
//! [`complete`] first checks that the last batch read into the map is
//! still in place (same file, same header at the same position). If not, a
//! truncation cut records the map counted, and the whole pass is dropped.
//! Then each prepared segment must still be the segment that was read:
//! same base offset, same file (`Segment::file_id`), same size and next
//! offset, and not the active segment. Retention, DeleteRecords, a
//! truncation or another pass may have deleted or replaced it meanwhile;
//! then its `.cleaned` files are deleted and it is skipped
//! (`segments_skipped`), for the next pass to look at again. Otherwise its
//! replacement is swapped in ([`Segment::install_cleaned`]: old indexes
//! emptied and synced, the log file renamed over the old one, the directory
//! synced, the new index files renamed in). A segment left with no batch is
//! deleted; if it is the first, the current log start offset is
//! checkpointed first so that reopening keeps it where it was. Under the
//! lock only renames, syncs, the new index files and one batch header (the
//! map's end) are read or written; no segment data is scanned.

use std::{collections::BTreeMap, mem, path::Path};

use super::{Change, CleanOutcome, PreparedClean, snapshot::SegmentSnapshot, total_size};
use crate::{
    checkpoint::{sync_dir, write_offset},
    error::Result,
    segment::Segment,
};

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
        bytes_held_back: prepared.bytes_held_back,
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

/// Bytes in `segments` past what the active segment held at `begin`.
fn appended_since(segments: &BTreeMap<i64, Segment>, active: &SegmentSnapshot) -> u64 {
    segments
        .range(active.base_offset..)
        .map(|(&base, s)| {
            if base == active.base_offset && s.file_id() == active.file_id {
                s.size().saturating_sub(active.size)
            } else {
                s.size()
            }
        })
        .sum()
}
