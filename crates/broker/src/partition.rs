//! A partition replica hosted by this broker: its log, its high watermark,
//! its leader epoch, and the fetch requests waiting for it to grow.
//!
//! Invariants: `log_start_offset <= high_watermark <= log_end_offset`;
//! consumers never see data at or past the high watermark; the high
//! watermark only moves forward while the replica leads. The log's mutex is
//! never held across an `.await`, and never taken on an async worker (see
//! `blocking`). Segment data is never fsynced while it is held (flushes
//! sync outside it); what does sync under it is small and rare: the
//! directory and checkpoints of retention, DeleteRecords and truncation, a
//! new leader epoch's checkpoint, and a compaction's swap.

use std::sync::{
    Arc, Mutex, MutexGuard, PoisonError, TryLockError, Weak,
    atomic::{AtomicBool, AtomicI32, AtomicI64, Ordering},
};

use keel_log::{AppendOutcome, LogConfig, LogError, PartitionLog, PendingFlush, ReadSlice};
use tokio::sync::Notify;
use uuid::Uuid;

/// How far a reader may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadLimit {
    /// Consumers: up to the high watermark.
    HighWatermark,
    /// Follower replicas: up to the log end.
    LogEnd,
}

/// Offsets a fetch response reports beside the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionOffsets {
    pub log_start_offset: i64,
    pub high_watermark: i64,
    pub log_end_offset: i64,
}

#[derive(Debug)]
pub struct Partition {
    topic: Arc<str>,
    topic_id: Uuid,
    index: i32,
    log: Mutex<PartitionLog>,
    /// The configuration the log should have; `config_changed` says the
    /// log has yet to take it. A change reaches the log the next time its
    /// lock is taken, so applying metadata never waits behind a slow
    /// append, and taking the lock costs one atomic swap when nothing
    /// changed.
    config: Mutex<LogConfig>,
    config_changed: AtomicBool,
    high_watermark: AtomicI64,
    leader_epoch: AtomicI32,
    /// A flush begun by `begin_flush_if_due` has not completed yet.
    flushing: AtomicBool,
    waiters: Mutex<Vec<Weak<Notify>>>,
}

impl Partition {
    pub fn new(
        topic: Arc<str>,
        topic_id: Uuid,
        index: i32,
        log: PartitionLog,
        leader_epoch: i32,
    ) -> Self {
        // A single-replica partition has every record committed; with
        // followers the leader recomputes this from their progress.
        let high_watermark = log.log_end_offset();
        let config = log.config().clone();
        Self {
            topic,
            topic_id,
            index,
            log: Mutex::new(log),
            config: Mutex::new(config),
            config_changed: AtomicBool::new(false),
            high_watermark: AtomicI64::new(high_watermark),
            leader_epoch: AtomicI32::new(leader_epoch),
            flushing: AtomicBool::new(false),
            waiters: Mutex::new(Vec::new()),
        }
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn topic_id(&self) -> Uuid {
        self.topic_id
    }

    pub fn index(&self) -> i32 {
        self.index
    }

    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch.load(Ordering::Acquire)
    }

    pub fn set_leader_epoch(&self, epoch: i32) {
        self.leader_epoch.fetch_max(epoch, Ordering::AcqRel);
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark.load(Ordering::Acquire)
    }

    /// Locks the log, handing it the latest configuration first. Callers
    /// must not hold the guard across an `.await`, and must not call this
    /// on an async worker (see `blocking`).
    pub fn log(&self) -> MutexGuard<'_, PartitionLog> {
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        if self.config_changed.swap(false, Ordering::AcqRel) {
            let config = self.config.lock().unwrap_or_else(PoisonError::into_inner);
            log.set_config(config.clone());
        }
        log
    }

    /// Sets the log's configuration without waiting for its lock.
    pub fn set_config(&self, new: &LogConfig) {
        let mut config = self.config.lock().unwrap_or_else(PoisonError::into_inner);
        if &*config != new {
            *config = new.clone();
            self.config_changed.store(true, Ordering::Release);
        }
    }

    pub fn offsets(&self) -> PartitionOffsets {
        let log = self.log();
        PartitionOffsets {
            log_start_offset: log.log_start_offset(),
            high_watermark: self.high_watermark(),
            log_end_offset: log.log_end_offset(),
        }
    }

    /// Appends a producer's batch as leader at the current leader epoch.
    /// If `flush.messages` asks for it, the batch is fsynced before this
    /// returns, with the log's lock released meanwhile.
    pub fn append_as_leader(&self, batch: &[u8], now_ms: i64) -> Result<AppendOutcome, LogError> {
        let (outcome, log_end_offset, flush) = {
            let mut log = self.log();
            let outcome = log.append_as_leader(batch, self.leader_epoch(), now_ms)?;
            let flush = log.flush_before_ack().then(|| log.begin_flush()).flatten();
            (outcome, log.log_end_offset(), flush)
        };
        if let Some(pending) = flush {
            self.complete_flush(pending)?;
        }
        if !outcome.duplicate {
            self.advance_high_watermark(log_end_offset);
        }
        Ok(outcome)
    }

    /// Begins a background flush if a flush policy asks for one now, and
    /// none begun here is still running. A log whose lock is busy (an
    /// append in progress, perhaps on a slow disk) is left for the next
    /// look rather than waited for. Complete it with
    /// [`Self::complete_background_flush`].
    pub fn begin_flush_if_due(&self, now_ms: i64) -> Option<PendingFlush> {
        if self.flushing.load(Ordering::Acquire) {
            return None;
        }
        let log = match self.log.try_lock() {
            Ok(log) => log,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        let pending = log.flush_due(now_ms).then(|| log.begin_flush()).flatten();
        self.flushing.store(pending.is_some(), Ordering::Release);
        pending
    }

    /// Completes a flush begun by [`Self::begin_flush_if_due`].
    pub fn complete_background_flush(&self, pending: PendingFlush) -> Result<(), LogError> {
        let result = self.complete_flush(pending);
        self.flushing.store(false, Ordering::Release);
        result
    }

    /// fsyncs and checkpoints a flush begun under the lock, holding the
    /// lock only to record it. A failed fsync stops the log taking writes.
    fn complete_flush(&self, pending: PendingFlush) -> Result<(), LogError> {
        if let Err(e) = pending.sync() {
            self.log().mark_failed();
            return Err(e);
        }
        let checkpoint = self.log().complete_flush(&pending);
        match checkpoint {
            Some(checkpoint) => checkpoint.write(),
            None => Ok(()),
        }
    }

    /// Applies `retention.ms` and `retention.bytes` below the high
    /// watermark; returns how many segments were deleted.
    pub fn enforce_retention(&self, now_ms: i64) -> Result<usize, LogError> {
        let high_watermark = self.high_watermark();
        self.log().enforce_retention(now_ms, high_watermark)
    }

    /// Moves the high watermark forward and wakes waiting fetches.
    pub fn advance_high_watermark(&self, to: i64) {
        let previous = self.high_watermark.fetch_max(to, Ordering::AcqRel);
        if to > previous {
            self.wake_waiters();
        }
    }

    /// Chooses whole batches from `offset` within `max_bytes` (one larger
    /// first batch allowed with `min_one_batch`). The bytes are read by the
    /// caller from the returned slice, outside the log's lock.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        limit: ReadLimit,
        min_one_batch: bool,
    ) -> Result<(Option<ReadSlice>, PartitionOffsets), LogError> {
        let log = self.log();
        let offsets = PartitionOffsets {
            log_start_offset: log.log_start_offset(),
            high_watermark: self.high_watermark(),
            log_end_offset: log.log_end_offset(),
        };
        let upper_bound = match limit {
            ReadLimit::HighWatermark => offsets.high_watermark,
            ReadLimit::LogEnd => offsets.log_end_offset,
        };
        let slice = log.read(offset, max_bytes, upper_bound, min_one_batch)?;
        Ok((slice, offsets))
    }

    /// Registers `notify` to be woken when the partition grows. Dead
    /// registrations are pruned here, so an idle partition polled by many
    /// fetches does not accumulate them.
    pub fn register_waiter(&self, notify: &Arc<Notify>) {
        let mut waiters = self.waiters.lock().unwrap_or_else(PoisonError::into_inner);
        waiters.retain(|w| w.strong_count() > 0);
        waiters.push(Arc::downgrade(notify));
    }

    fn wake_waiters(&self) {
        let waiters =
            std::mem::take(&mut *self.waiters.lock().unwrap_or_else(PoisonError::into_inner));
        for waiter in waiters.iter().filter_map(Weak::upgrade) {
            waiter.notify_one();
        }
    }
}
