//! Compaction of the log in three steps, so that the work runs without the
//! log's lock: [`PartitionLog::begin_clean`] (under the lock, in memory),
//! [`CleanPlan::prepare`] (no lock: reads, judges and writes replacement
//! segments) and [`PartitionLog::complete_clean`] (under the lock: swaps the
//! replacements in). The `cleaner` module describes a pass.

use super::{LOG_START_OFFSET_FILE, PartitionLog};
use crate::{
    cleaner::{self, CleanOutcome, CleanParams, CleanPlan, OFFSET_MAP_BUDGET, PreparedClean},
    error::{LogError, Result},
};

impl PartitionLog {
    /// Compacts the log if the topic is compacted, and is a no-op otherwise:
    /// keeps only the latest record of each key in the segments that are not
    /// the active one and lie wholly below `high_watermark`, and removes
    /// tombstones older than `delete_retention_ms`. Runs the three steps in
    /// a row while the caller holds the log; the broker runs them apart.
    pub fn clean(&mut self, now_ms: i64, high_watermark: i64) -> Result<CleanOutcome> {
        let plan = self.begin_clean(now_ms, high_watermark)?;
        let prepared = plan.prepare()?;
        self.complete_clean(prepared)
    }

    /// Starts a cleaning pass: takes the snapshot of segment files, sizes
    /// and settings that [`CleanPlan::prepare`] works from without the log.
    /// Cheap: reads nothing from disk. For a log that is not compacted the
    /// plan does nothing.
    pub fn begin_clean(&self, now_ms: i64, high_watermark: i64) -> Result<CleanPlan> {
        if self.closed {
            return Err(LogError::Closed);
        }
        let live_producers = if self.config.compact {
            self.producers.producer_ids().collect()
        } else {
            Default::default()
        };
        let params = CleanParams {
            dir: self.dir.clone(),
            now_ms,
            high_watermark: high_watermark.min(self.log_end_offset()),
            delete_retention_ms: self.config.delete_retention_ms,
            min_compaction_lag_ms: self.config.min_compaction_lag_ms,
            index_interval_bytes: self.config.index_interval_bytes,
            map_budget: OFFSET_MAP_BUDGET,
            live_producers,
        };
        cleaner::begin(&self.segments, params, self.config.compact)
    }

    /// Ends a cleaning pass: swaps in each prepared replacement whose
    /// segment is still the one the pass read, deletes the segments left
    /// empty, and discards the rest. Only renames and index files are
    /// written; no segment data is scanned.
    pub fn complete_clean(&mut self, prepared: PreparedClean) -> Result<CleanOutcome> {
        if self.closed {
            return Err(LogError::Closed);
        }
        cleaner::complete(
            &mut self.segments,
            prepared,
            self.log_start_offset,
            &self.dir.join(LOG_START_OFFSET_FILE),
        )
    }
}
