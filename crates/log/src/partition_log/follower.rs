//! What a follower replica does to its log, and what a replica does as it
//! becomes leader: copy the leader's batches as they are, record where a
//! new leadership starts, start over at the leader's log start, and decide
//! where to truncate after a leader change (see [`crate::divergence`]; the
//! cut itself is [`PartitionLog::truncate_to`]).
//!
//! A follower stores every batch byte for byte, base offset and partition
//! leader epoch included, so replicas stay identical and any of them can
//! take over: the epoch cache, the producer state, the flush bookkeeping
//! and segment rolls follow each batch as they follow a leader's append.
//! Nothing the leader already accepted is judged again (sequences, sizes,
//! keys); only what the network could damage (framing, CRC-32C) and what
//! the log's order needs (offsets only move forward) is checked, for the
//! whole fetch before any of it is written, as Kafka does.

use std::io::IoSlice;

use super::{LOG_START_OFFSET_FILE, PartitionLog};
use crate::{
    batch::{BatchHeader, split_whole_batches, validate_replicated_batch},
    checkpoint::{sync_dir, write_offset},
    divergence::{Truncation, truncation_point},
    error::{BatchError, LogError, Result},
    segment::Segment,
};

/// What a follower append wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerAppend {
    /// Base offset of the first batch.
    pub first_offset: i64,
    /// Last offset of the last batch.
    pub last_offset: i64,
    pub log_end_offset: i64,
    /// Records in the batches; a compacted batch holds fewer than its
    /// offset range.
    pub records: i64,
}

impl PartitionLog {
    /// Appends the v2 record batches of a Fetch response from the leader,
    /// each exactly as it came. A trailing partial batch (the response's
    /// size limit cut it) is ignored; `None` when no whole batch came.
    ///
    /// Refused before anything of the fetch is written: a batch whose
    /// framing or CRC-32C is wrong, and a batch that starts below the log
    /// end offset (or below the end of the batch before it), which
    /// [`BatchError::UnexpectedOffsets`] names. A batch may start past the
    /// log end offset: compaction leaves gaps. An empty log refuses the
    /// batch holding the leader's log start offset when that lies inside
    /// it (DeleteRecords); Kafka's follower then starts over at the batch,
    /// [`PartitionLog::truncate_fully_and_start_at`] its base offset, and
    /// appends again.
    pub fn append_as_follower(
        &mut self,
        records: &[u8],
        now_ms: i64,
    ) -> Result<Option<FollowerAppend>> {
        self.begin_append()?;
        let (batches, _partial) = split_whole_batches(records)?;
        let headers = in_order(&batches, self.log_end_offset())?;
        let (Some(first), Some(last)) = (headers.first(), headers.last()) else {
            return Ok(None);
        };
        let (first_offset, last_offset) = (first.base_offset, last.last_offset());
        let appended_records = headers.iter().map(|h| i64::from(h.records_count)).sum();
        // The batches lie one after another from the start of `records`.
        // Those that go to one segment are written together; a roll falls
        // between batches exactly where appending them one at a time puts it.
        let (mut run_start, mut rest) = (0, records);
        while let Some(first) = headers.get(run_start) {
            self.maybe_roll(first.total_len(), first, now_ms)?;
            let (mut run_end, mut run_len) = (run_start + 1, first.total_len());
            while let Some(next) = headers.get(run_end) {
                if self.needs_roll(run_len as u64, next.total_len(), next, now_ms) {
                    break;
                }
                run_len += next.total_len();
                run_end += 1;
            }
            let (run, after) = rest
                .split_at_checked(run_len)
                .ok_or(BatchError::InvalidLength(first.batch_length))?;
            let parts = &mut [IoSlice::new(run)];
            self.append_assigned(&headers[run_start..run_end], parts, now_ms)?;
            (run_start, rest) = (run_end, after);
        }
        Ok(Some(FollowerAppend {
            first_offset,
            last_offset,
            log_end_offset: self.log_end_offset(),
            records: appended_records,
        }))
    }

    /// Records that leader epoch `epoch` starts at the log end offset, as a
    /// replica does when it becomes leader, so OffsetForLeaderEpoch and the
    /// followers' divergence checks know the epoch before its first append.
    /// An epoch not newer than the latest is ignored; a latest epoch that
    /// starts at the log end offset (nothing was appended in it) is
    /// replaced. Reopening the log forgets an epoch with nothing in it, as
    /// Kafka's does: a restarted replica is made leader afresh.
    pub fn assign_leader_epoch(&mut self, epoch: i32) -> Result<()> {
        self.check_writable()?;
        let log_end_offset = self.log_end_offset();
        self.epochs.assign(epoch, log_end_offset)
    }

    /// Drops every segment and restarts the log, empty, at `offset`: what a
    /// follower does when its log ends below the leader's log start offset,
    /// since what lies between can no longer be fetched. The epoch cache
    /// and the producer state describe nothing that is left and are
    /// cleared; the log start offset and the recovery point become `offset`.
    pub fn truncate_fully_and_start_at(&mut self, offset: i64, now_ms: i64) -> Result<()> {
        self.check_writable()?;
        if offset < 0 {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start_offset: self.log_start_offset,
                log_end_offset: self.log_end_offset(),
            });
        }
        // The epochs go first: if this stops part-way, a follower without
        // epochs falls back to truncating to its high watermark, while
        // epochs left over from deleted data would vouch for records that
        // are gone.
        self.epochs.clear()?;
        self.producers.clear();
        // The new segment is in the map before the old ones leave it, so
        // the log always has one; one already at `offset` is emptied.
        let interval = self.config.index_interval_bytes;
        match self.segments.get_mut(&offset) {
            Some(segment) => {
                segment.truncate_to(offset, interval)?;
            }
            None => {
                let segment = Segment::create(&self.dir, offset, now_ms)?;
                self.segments.insert(offset, segment);
            }
        }
        let doomed: Vec<i64> = self
            .segments
            .keys()
            .copied()
            .filter(|&b| b != offset)
            .collect();
        for base in doomed {
            if let Some(segment) = self.segments.remove(&base) {
                segment.delete()?;
            }
        }
        sync_dir(&self.dir)?;
        self.log_start_offset = offset;
        write_offset(&self.dir.join(LOG_START_OFFSET_FILE), offset)?;
        self.reset_recovery_point(offset)?;
        // Nothing unflushed is left, and the directory naming the new
        // segment is synced: no flush is owed.
        self.flushed_messages = self.appended_messages;
        self.flushed_rolls = self.rolls;
        self.oldest_unflushed_ms = None;
        Ok(())
    }

    /// Where this replica truncates given its leader's answer for its
    /// latest epoch: [`truncation_point`] over this log's epoch cache and
    /// log end offset.
    pub fn truncation_point(&self, leader_epoch: i32, leader_end_offset: i64) -> Truncation {
        truncation_point(
            self.epochs.entries(),
            self.log_end_offset(),
            leader_epoch,
            leader_end_offset,
        )
    }
}

/// Validates every batch of a fetch and checks that each starts at or past
/// where the one before it (the log, for the first) ends.
fn in_order(batches: &[&[u8]], log_end_offset: i64) -> Result<Vec<BatchHeader>> {
    let mut headers = Vec::with_capacity(batches.len());
    let mut next_offset = log_end_offset;
    for batch in batches {
        let header = validate_replicated_batch(batch)?;
        let delta = i64::from(header.last_offset_delta);
        // The last offset must leave room for a next one.
        let last_offset = header
            .base_offset
            .checked_add(delta)
            .filter(|&last| last < i64::MAX && header.base_offset >= next_offset);
        let Some(last_offset) = last_offset else {
            return Err(BatchError::UnexpectedOffsets {
                base_offset: header.base_offset,
                last_offset: header.base_offset.saturating_add(delta),
                log_end_offset: next_offset,
            }
            .into());
        };
        next_offset = last_offset + 1;
        headers.push(header);
    }
    Ok(headers)
}
