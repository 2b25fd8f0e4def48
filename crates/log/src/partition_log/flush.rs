//! Flushing: the fsync policy decides when, and the fsync itself may run
//! outside the log's lock (`begin_flush`, `PendingFlush::sync`,
//! `complete_flush`) so appends are not held up by the disk.

use std::{fs::File, sync::Arc};

use super::{PartitionLog, RECOVERY_POINT_FILE};
use crate::{
    checkpoint::write_offset,
    error::{LogError, Result},
};

/// The files to fsync for a flush done outside the log's lock.
#[derive(Debug)]
pub struct PendingFlush {
    files: Vec<Arc<File>>,
    up_to_offset: i64,
    messages: u64,
}

impl PendingFlush {
    /// fsyncs every file; call without holding the log.
    pub fn sync(&self) -> std::io::Result<()> {
        self.files.iter().try_for_each(|f| f.sync_data())
    }
}

impl PartitionLog {
    /// Flushes everything appended so far, inline.
    pub fn flush(&mut self) -> Result<()> {
        if let Some(pending) = self.begin_flush() {
            pending
                .sync()
                .map_err(|e| LogError::io("syncing", self.dir.clone(), e))?;
            self.complete_flush(&pending)?;
        }
        Ok(())
    }

    /// Whether the interval flush policy asks for a flush now.
    pub fn flush_due(&self, now_ms: i64) -> bool {
        match (self.config.flush.interval_ms, self.oldest_unflushed_ms) {
            (Some(interval), Some(oldest)) => now_ms - oldest >= interval as i64,
            _ => false,
        }
    }

    /// Collects the files holding unflushed data so they can be fsynced
    /// without holding the log; `None` when everything is durable.
    pub fn begin_flush(&self) -> Option<PendingFlush> {
        let log_end_offset = self.log_end_offset();
        if self.recovery_point >= log_end_offset && self.unflushed_messages == 0 {
            return None;
        }
        let from = self
            .segments
            .range(..=self.recovery_point)
            .next_back()
            .map_or(i64::MIN, |(&base, _)| base);
        Some(PendingFlush {
            files: self.segments.range(from..).map(|(_, s)| s.file()).collect(),
            up_to_offset: log_end_offset,
            messages: self.unflushed_messages,
        })
    }

    /// Records a finished flush and checkpoints the recovery point.
    pub fn complete_flush(&mut self, flushed: &PendingFlush) -> Result<()> {
        if flushed.up_to_offset <= self.recovery_point {
            return Ok(());
        }
        self.recovery_point = flushed.up_to_offset;
        self.unflushed_messages = self.unflushed_messages.saturating_sub(flushed.messages);
        if self.unflushed_messages == 0 {
            self.oldest_unflushed_ms = None;
        }
        write_offset(&self.dir.join(RECOVERY_POINT_FILE), self.recovery_point)
    }
}
