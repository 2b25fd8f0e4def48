//! A follower's side of a replica: where it fetches from, and the writes
//! it takes from its leader (the leader's batches as they are, the
//! leader's log start and high watermark, truncation where the logs
//! diverge). Each write checks, under the log's lock, that this replica
//! still follows the leader epoch the fetch was made in (see `role`).

use std::sync::atomic::Ordering;

use keel_log::{BatchError, FollowerAppend, LogError};

use super::{Partition, role::Role};
use crate::error::PartitionError;

/// Where a follower fetches from: its own log's end, and the epoch of its
/// last batch (the leader checks it for divergence, KIP-320).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerState {
    pub leader: i32,
    pub leader_epoch: i32,
    pub fetch_offset: i64,
    pub last_fetched_epoch: i32,
    pub log_start_offset: i64,
}

impl Partition {
    /// The leader this replica follows, if it follows one.
    pub fn following(&self) -> Option<i32> {
        match &*self.role() {
            Role::Follower { leader } if *leader >= 0 => Some(*leader),
            _ => None,
        }
    }

    /// Where this replica fetches from, if it follows a leader.
    pub fn follower_state(&self) -> Option<FollowerState> {
        let log = self.log();
        let leader = match &*self.role() {
            Role::Follower { leader } if *leader >= 0 => *leader,
            _ => return None,
        };
        Some(FollowerState {
            leader,
            leader_epoch: self.leader_epoch(),
            fetch_offset: log.log_end_offset(),
            last_fetched_epoch: log.latest_epoch().unwrap_or(-1),
            log_start_offset: log.log_start_offset(),
        })
    }

    /// Runs `write` on the log if this replica still follows at
    /// `leader_epoch`, then publishes the new log end offset.
    fn write_as_follower<T>(
        &self,
        leader_epoch: i32,
        write: impl FnOnce(&mut keel_log::PartitionLog) -> Result<T, LogError>,
    ) -> Result<T, PartitionError> {
        let mut log = self.log();
        if self.is_leader() || self.leader_epoch() != leader_epoch {
            return Err(PartitionError::NotFollowing(leader_epoch));
        }
        let result = write(&mut log);
        let log_end_offset = log.log_end_offset();
        self.log_end_offset.store(log_end_offset, Ordering::Release);
        self.high_watermark
            .fetch_min(log_end_offset, Ordering::AcqRel);
        self.activity.note();
        Ok(result?)
    }

    /// Appends the leader's batches as they are, and takes the leader's
    /// high watermark as far as this log reaches.
    pub fn append_as_follower(
        &self,
        leader_epoch: i32,
        fetch_offset: i64,
        records: &[u8],
        leader_high_watermark: i64,
        now_ms: i64,
    ) -> Result<Option<FollowerAppend>, PartitionError> {
        let appended = self.write_as_follower(leader_epoch, |log| {
            // The records answer a fetch from `fetch_offset`; if the log
            // moved since, they could leave a hole (compaction allows a
            // batch to start above the log end, so the log cannot tell).
            if log.log_end_offset() != fetch_offset {
                return Err(LogError::Batch(BatchError::UnexpectedOffsets {
                    base_offset: fetch_offset,
                    last_offset: fetch_offset,
                    log_end_offset: log.log_end_offset(),
                }));
            }
            match log.append_as_follower(records, now_ms) {
                // An empty log starting inside the leader's first batch
                // (the leader's start moved into it): start where the
                // batch does, as Kafka's follower does.
                Err(LogError::Batch(BatchError::UnexpectedOffsets { base_offset, .. }))
                    if log.log_end_offset() == log.log_start_offset()
                        && base_offset < log.log_end_offset() =>
                {
                    log.truncate_fully_and_start_at(base_offset, now_ms)?;
                    log.append_as_follower(records, now_ms)
                }
                other => other,
            }
        })?;
        self.follow_high_watermark(leader_high_watermark);
        Ok(appended)
    }

    /// Moves this follower's log start up to the leader's (retention or
    /// DeleteRecords there), as far as this replica's high watermark.
    pub fn follow_log_start(
        &self,
        leader_epoch: i32,
        leader_log_start_offset: i64,
        now_ms: i64,
    ) -> Result<(), PartitionError> {
        let high_watermark = self.high_watermark();
        self.write_as_follower(leader_epoch, |log| {
            let target = leader_log_start_offset.min(high_watermark);
            if target > log.log_start_offset() {
                log.delete_records_before(target, now_ms)?;
            }
            Ok(())
        })
    }

    /// A follower's high watermark: the leader's, as far as its log reaches.
    pub fn follow_high_watermark(&self, leader_high_watermark: i64) {
        let reachable = leader_high_watermark.min(self.log_end_offset());
        if self.high_watermark.fetch_max(reachable, Ordering::AcqRel) < reachable {
            self.activity.note();
        }
    }

    /// Truncates where the leader said this log diverges from its own
    /// (`diverging_epoch` ends at `end_offset` there); returns the new log
    /// end offset, and whether the logs now agree (else fetch again).
    pub fn truncate_on_divergence(
        &self,
        leader_epoch: i32,
        diverging_epoch: i32,
        end_offset: i64,
        now_ms: i64,
    ) -> Result<(i64, bool), PartitionError> {
        let high_watermark = self.high_watermark();
        self.write_as_follower(leader_epoch, |log| {
            if end_offset < 0 {
                // The leader knows no epoch at or below ours: all this
                // replica can trust is what was committed (Kafka does the
                // same).
                log.truncate_to(high_watermark, now_ms)?;
                return Ok((log.log_end_offset(), true));
            }
            let truncation = log.truncation_point(diverging_epoch, end_offset);
            log.truncate_to(truncation.offset, now_ms)?;
            Ok((log.log_end_offset(), truncation.complete))
        })
    }

    /// Empties this follower's log and starts it at the leader's log start
    /// offset (it fell below it).
    pub fn restart_at(
        &self,
        leader_epoch: i32,
        offset: i64,
        now_ms: i64,
    ) -> Result<(), PartitionError> {
        self.write_as_follower(leader_epoch, |log| {
            log.truncate_fully_and_start_at(offset, now_ms)
        })
    }
}
