//! How the log shrinks: retention by time and size, DeleteRecords moving
//! the log start offset, and truncation of a diverged tail. Compaction is
//! in `clean`.

use super::{LOG_START_OFFSET_FILE, PartitionLog};
use crate::{
    checkpoint::{sync_dir, write_offset},
    error::{LogError, Result},
    segment::Segment,
};

impl PartitionLog {
    /// Moves the log start offset forward (DeleteRecords) and deletes the
    /// segments that fall wholly below it. Returns the new log start offset.
    pub fn delete_records_before(&mut self, offset: i64, now_ms: i64) -> Result<i64> {
        let log_end_offset = self.log_end_offset();
        if offset > log_end_offset || offset < 0 {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start_offset: self.log_start_offset,
                log_end_offset,
            });
        }
        if offset <= self.log_start_offset {
            return Ok(self.log_start_offset);
        }
        self.set_log_start_offset(offset)?;
        self.delete_segments_below_start(now_ms)?;
        Ok(self.log_start_offset)
    }

    fn set_log_start_offset(&mut self, offset: i64) -> Result<()> {
        self.log_start_offset = offset;
        write_offset(&self.dir.join(LOG_START_OFFSET_FILE), offset)?;
        self.epochs.truncate_from_start(offset)
    }

    fn delete_segments_below_start(&mut self, now_ms: i64) -> Result<usize> {
        let doomed: Vec<i64> = self
            .segments
            .values()
            .filter(|s| s.next_offset() <= self.log_start_offset && !s.is_empty())
            .map(Segment::base_offset)
            .collect();
        self.delete_segments(&doomed, now_ms)
    }

    /// Deletes the given segments; if that would remove the active segment,
    /// a new empty one is rolled first so the log is never without one.
    fn delete_segments(&mut self, bases: &[i64], now_ms: i64) -> Result<usize> {
        if bases.is_empty() {
            return Ok(0);
        }
        let active_base = self.active_segment().base_offset();
        if bases.contains(&active_base) {
            self.roll(now_ms)?;
        }
        for base in bases {
            if let Some(segment) = self.segments.remove(base) {
                segment.delete()?;
            }
        }
        let first_base = self.segments.keys().next().copied().unwrap_or(0);
        if first_base > self.log_start_offset {
            self.set_log_start_offset(first_base)?;
        }
        sync_dir(&self.dir)?;
        Ok(bases.len())
    }

    /// Applies `retention.ms` and `retention.bytes`: deletes the oldest
    /// segments that are wholly below `high_watermark` and past either
    /// limit. Returns how many segments were deleted.
    pub fn enforce_retention(&mut self, now_ms: i64, high_watermark: i64) -> Result<usize> {
        self.producers
            .expire(now_ms, self.config.producer_expiration_ms);
        let mut doomed = Vec::new();
        let mut remaining_bytes = self.size_in_bytes() as i64;
        for segment in self.segments.values() {
            if segment.is_empty() || segment.next_offset() > high_watermark {
                break;
            }
            let newest = if segment.max_timestamp() >= 0 {
                segment.max_timestamp()
            } else {
                segment.created_at_ms()
            };
            let expired =
                self.config.retention_ms >= 0 && now_ms - newest > self.config.retention_ms;
            let oversized = self.config.retention_bytes >= 0
                && remaining_bytes - segment.size() as i64 >= self.config.retention_bytes;
            if !expired && !oversized {
                break;
            }
            remaining_bytes -= segment.size() as i64;
            doomed.push(segment.base_offset());
        }
        self.delete_segments(&doomed, now_ms)
    }

    /// Removes every batch at or past `offset` (a follower diverging from a
    /// new leader). A batch straddling `offset` goes too, so the log may end
    /// below it. The log start offset is never crossed.
    pub fn truncate_to(&mut self, offset: i64, now_ms: i64) -> Result<()> {
        let offset = offset.max(self.log_start_offset);
        let log_end_offset = self.log_end_offset();
        if offset >= log_end_offset {
            // No record goes, but an epoch this replica began as leader and
            // appended nothing to starts at the log end and must: the new
            // leader never had it, and a follower that kept it would keep
            // sending it as its latest epoch.
            return self.epochs.truncate_from_end(log_end_offset);
        }
        let doomed: Vec<i64> = self.segments.range(offset..).map(|(&b, _)| b).collect();
        for base in doomed {
            if let Some(segment) = self.segments.remove(&base) {
                segment.delete()?;
            }
        }
        let interval = self.config.index_interval_bytes;
        match self.segments.values_mut().next_back() {
            Some(segment) => {
                segment.truncate_to(offset, interval)?;
            }
            None => {
                let segment = Segment::create(&self.dir, offset, now_ms)?;
                self.segments.insert(offset, segment);
            }
        }
        sync_dir(&self.dir)?;
        let log_end_offset = self.log_end_offset();
        self.epochs.truncate_from_end(log_end_offset)?;
        self.lower_recovery_point(log_end_offset)?;
        self.rebuild_producer_state()
    }
}
