//! Flushing: the fsync policy decides when, and no fsync happens under the
//! log's lock. `begin_flush` (under the lock) collects the files to sync,
//! [`PendingFlush::sync`] fsyncs them without the lock, `complete_flush`
//! (under the lock) moves the recovery point, and the returned
//! [`RecoveryCheckpoint`] is written without the lock. Appends go on
//! meanwhile; what they add after `begin_flush` waits for the next flush.
//!
//! A roll does no fsync either: it asks for a flush, which then syncs the
//! closed segment with its indexes and the directory that names the new
//! one.

use std::{
    fs::File,
    path::PathBuf,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use super::{PartitionLog, RECOVERY_POINT_FILE};
use crate::{
    checkpoint::{sync_dir, write_offset},
    error::{LogError, Result},
};

/// The files to fsync for a flush done outside the log's lock.
#[derive(Debug)]
pub struct PendingFlush {
    dir: PathBuf,
    files: Vec<Arc<File>>,
    /// Indexes of segments closed since the last flush, opened one at a
    /// time to be synced: an index is rebuilt from its segment if it is
    /// found wanting, so one that cannot be synced fails nothing.
    index_files: Vec<PathBuf>,
    /// A segment was created since the last flush: its directory entry
    /// must be made durable too.
    sync_dir: bool,
    up_to_offset: i64,
    /// Messages appended when the flush began.
    appended_messages: u64,
    rolls: u64,
    truncations: u64,
    /// Test-only faults: a stall before the fsync, or its failure (see
    /// [`Faults`]).
    stall: Duration,
    fail: bool,
    /// Why a segment file to sync could not be had.
    unavailable: Option<String>,
}

impl PendingFlush {
    /// fsyncs every file (and the directory if a segment was created);
    /// call without holding the log.
    pub fn sync(&self) -> Result<()> {
        if !self.stall.is_zero() {
            std::thread::sleep(self.stall);
        }
        if self.fail {
            return Err(LogError::io(
                "syncing",
                self.dir.clone(),
                std::io::Error::other("injected fsync failure"),
            ));
        }
        if let Some(reason) = &self.unavailable {
            return Err(LogError::io(
                "syncing",
                self.dir.clone(),
                std::io::Error::other(reason.clone()),
            ));
        }
        self.files
            .iter()
            .try_for_each(|f| f.sync_data())
            .map_err(|e| LogError::io("syncing", self.dir.clone(), e))?;
        for path in &self.index_files {
            if let Err(error) = File::open(path).and_then(|index| index.sync_data()) {
                if error.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %path.display(), %error, "cannot sync a segment index; it will be checked against its segment if needed");
                }
            }
        }
        if self.sync_dir {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }
}

/// The recovery point to checkpoint after a flush, written without the
/// log's lock. Checkpoints of one log are written one at a time and never
/// move backwards, and one taken before a truncation is never written
/// after it: it could name offsets the truncation cut and later appends
/// rewrote, unflushed.
#[derive(Debug)]
pub struct RecoveryCheckpoint {
    path: PathBuf,
    offset: i64,
    truncations: u64,
    shared: Arc<Mutex<CheckpointState>>,
}

/// What the recovery point file holds, shared between the log and the
/// checkpoints it hands out.
#[derive(Debug)]
pub(super) struct CheckpointState {
    written: i64,
    /// The log's truncation count when the file was last set by the log.
    truncations: u64,
}

impl CheckpointState {
    pub(super) fn new() -> Self {
        Self {
            written: -1,
            truncations: 0,
        }
    }
}

impl RecoveryCheckpoint {
    pub fn write(self) -> Result<()> {
        let mut shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        if self.offset <= shared.written || self.truncations != shared.truncations {
            return Ok(());
        }
        write_offset(&self.path, self.offset)?;
        shared.written = self.offset;
        Ok(())
    }
}

/// Test-only faults, to show that a slow disk on one partition holds up
/// nothing else (each fsync of the log, or each append, sleeps this long
/// first) and that a failed fsync stops the log. None in normal operation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    pub fsync_stall: Duration,
    pub append_stall: Duration,
    pub fsync_fails: bool,
}

impl PartitionLog {
    /// Flushes everything appended so far, inline (the caller may hold
    /// the log, as on close).
    pub fn flush(&mut self) -> Result<()> {
        if let Some(pending) = self.begin_flush() {
            if let Err(e) = pending.sync() {
                self.mark_failed();
                return Err(e);
            }
            if let Some(checkpoint) = self.complete_flush(&pending) {
                checkpoint.write()?;
            }
        }
        Ok(())
    }

    /// Whether any flush policy asks for a flush now: `flush.messages`,
    /// `flush.ms`, or a segment rolled since the last flush.
    pub fn flush_due(&self, now_ms: i64) -> bool {
        let by_interval = match (self.config.flush.interval_ms, self.oldest_unflushed_ms) {
            (Some(interval), Some(oldest)) => now_ms - oldest >= interval as i64,
            _ => false,
        };
        by_interval || self.rolls > self.flushed_rolls || self.flush_before_ack()
    }

    /// Whether `flush.messages` asks for a flush before what was appended
    /// is acknowledged.
    pub fn flush_before_ack(&self) -> bool {
        self.config
            .flush
            .messages
            .is_some_and(|every| self.unflushed_messages() >= every)
    }

    /// Whether anything appended (or a segment rolled) is not durable yet.
    /// A failed log has nothing more to flush: it takes no writes.
    pub fn has_unflushed(&self) -> bool {
        !self.failed
            && (self.recovery_point < self.log_end_offset()
                || self.unflushed_messages() > 0
                || self.rolls > self.flushed_rolls)
    }

    /// Collects the files holding unflushed data so they can be fsynced
    /// without holding the log; `None` when everything is durable.
    pub fn begin_flush(&self) -> Option<PendingFlush> {
        if !self.has_unflushed() {
            return None;
        }
        let log_end_offset = self.log_end_offset();
        let rolled = self.rolls > self.flushed_rolls;
        let from = self
            .segments
            .range(..=self.recovery_point)
            .next_back()
            .map_or(i64::MIN, |(&base, _)| base);
        let active = self.active_segment().base_offset();
        let mut files = Vec::new();
        let mut index_files = Vec::new();
        let mut unavailable = None;
        for (&base, segment) in self.segments.range(from..) {
            // Segments with data not yet flushed keep their files open
            // (see `pin_unflushed`): this only fails if that broke, and
            // then the flush fails rather than call the data durable.
            match segment.file() {
                Ok(file) => files.push(file),
                Err(error) => unavailable = Some(error.to_string()),
            }
            // A closed segment falls below the recovery point, where the
            // next open trusts its indexes.
            if base != active {
                index_files.extend(segment.index_files_to_sync());
            } else {
                segment.write_pending_indexes();
            }
        }
        Some(PendingFlush {
            dir: self.dir.clone(),
            files,
            index_files,
            sync_dir: rolled,
            up_to_offset: log_end_offset,
            appended_messages: self.appended_messages,
            rolls: self.rolls,
            truncations: self.truncations,
            stall: self.faults.fsync_stall,
            fail: self.faults.fsync_fails,
            unavailable,
        })
    }

    /// Records a finished flush; returns the recovery point to checkpoint
    /// (without the lock), if it moved.
    pub fn complete_flush(&mut self, flushed: &PendingFlush) -> Option<RecoveryCheckpoint> {
        if flushed.truncations != self.truncations {
            // The tail it synced may since have been cut and rewritten.
            return None;
        }
        self.flushed_rolls = self.flushed_rolls.max(flushed.rolls);
        self.flushed_messages = self.flushed_messages.max(flushed.appended_messages);
        if self.unflushed_messages() == 0 {
            self.oldest_unflushed_ms = None;
        }
        if flushed.up_to_offset <= self.recovery_point {
            return None;
        }
        self.recovery_point = flushed.up_to_offset;
        self.unpin_flushed();
        Some(RecoveryCheckpoint {
            path: self.dir.join(RECOVERY_POINT_FILE),
            offset: self.recovery_point,
            truncations: self.truncations,
            shared: Arc::clone(&self.recovery_checkpoint),
        })
    }

    /// Lets the files of segments wholly below the recovery point, but
    /// the active one, close between reads (see `segment::file`).
    pub(super) fn unpin_flushed(&mut self) {
        let active = self.active_segment().base_offset();
        let recovery_point = self.recovery_point;
        for (&base, segment) in &mut self.segments {
            if base != active && segment.next_offset() <= recovery_point {
                segment.unpin_file();
            }
        }
    }

    /// Keeps open the files of the active segment and of every segment
    /// holding data not yet flushed, so a flush always finds them.
    pub(super) fn pin_unflushed(&mut self) -> Result<()> {
        let active = self.active_segment().base_offset();
        let recovery_point = self.recovery_point;
        for (&base, segment) in &mut self.segments {
            if base == active || segment.next_offset() > recovery_point {
                segment.pin_file()?;
            }
        }
        Ok(())
    }

    /// Stops the log taking writes: a write or fsync failed (see
    /// [`LogError::Failed`]).
    pub fn mark_failed(&mut self) {
        if !self.failed {
            tracing::error!(dir = %self.dir.display(), "a write or fsync failed; the log takes no more writes");
        }
        self.failed = true;
    }

    fn unflushed_messages(&self) -> u64 {
        self.appended_messages - self.flushed_messages
    }

    /// Lowers the recovery point to `offset` (a truncation cut the log
    /// there) and checkpoints it at once, so a restart never trusts
    /// segments past it.
    pub(crate) fn lower_recovery_point(&mut self, offset: i64) -> Result<()> {
        self.reset_recovery_point(offset.min(self.recovery_point))
    }

    /// Sets the recovery point to `offset` after a truncation, checkpoints
    /// it at once, and voids the checkpoints and flushes begun before.
    pub(crate) fn reset_recovery_point(&mut self, offset: i64) -> Result<()> {
        self.truncations += 1;
        let mut shared = self
            .recovery_checkpoint
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        shared.truncations = self.truncations;
        if offset != self.recovery_point || shared.written != offset {
            self.recovery_point = offset;
            write_offset(&self.dir.join(RECOVERY_POINT_FILE), offset)?;
            shared.written = offset;
        }
        drop(shared);
        // The truncation may have made an older segment the active one.
        self.pin_unflushed()
    }

    /// No recovery point checkpoint is written after this (the log is
    /// closing); one in flight finishes first.
    pub(crate) fn stop_checkpoints(&mut self) {
        self.recovery_checkpoint
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .written = i64::MAX;
    }

    /// Sets test-only faults (see [`Faults`]).
    pub fn set_faults(&mut self, faults: Faults) {
        self.faults = faults;
    }
}
