//! A partition replica hosted by this broker: its log, its role (leader or
//! follower) at a leader epoch, its high watermark, and the requests
//! waiting for it to grow.
//!
//! Invariants: `log_start_offset <= high_watermark <= log_end_offset`;
//! consumers never see data at or past the high watermark; the high
//! watermark only moves forward while the replica leads. The role and the
//! leader epoch change only under the log's mutex, and an append checks
//! them under it, so nothing lands in the log of a deposed leader (see
//! `role`). The log's mutex is
//! never held across an `.await`, and never taken on an async worker (see
//! `blocking`). Segment data is never fsynced while it is held (flushes
//! sync outside it); what does sync under it is small and rare: the
//! directory and checkpoints of retention, DeleteRecords and truncation, a
//! new leader epoch's checkpoint, and a compaction's swap.

mod activity;
mod follower;
mod progress;
mod role;
mod waiters;

use std::sync::{
    Arc, Mutex, MutexGuard, PoisonError, TryLockError,
    atomic::{AtomicBool, AtomicI32, AtomicI64, Ordering},
};

use keel_log::{LogConfig, LogError, PartitionLog, PendingFlush, ReadMode, ReadSlice};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::error::PartitionError;

pub use self::activity::{Activity, Walk};
pub use self::progress::{Progress, Waiting};
pub use self::{follower::FollowerState, role::Transition};
use self::{role::Role, waiters::Waiters};

/// A request leader epoch compared with the partition's: -1 skips the check.
pub(crate) fn check_leader_epoch(request: i32, current: i32) -> Result<(), PartitionError> {
    if request < 0 || request == current {
        Ok(())
    } else if request < current {
        Err(PartitionError::FencedLeaderEpoch { request, current })
    } else {
        Err(PartitionError::UnknownLeaderEpoch { request, current })
    }
}

/// How far a reader may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadLimit {
    /// Consumers: up to the high watermark.
    HighWatermark,
    /// Follower replicas: up to the log end.
    LogEnd,
}

/// What a read found.
#[derive(Debug)]
pub enum Fetched {
    /// The batches to send, if any.
    Records(Option<ReadSlice>),
    /// The reader's log diverges: `epoch` ends at `end_offset` here.
    Diverged { epoch: i32, end_offset: i64 },
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
    /// The log's end offset, for readers that need not take its lock.
    /// Written under the log's lock.
    log_end_offset: AtomicI64,
    /// The leader epoch this replica is at, and whether it leads in it.
    /// Written under the log's lock, so an append holding the lock sees
    /// the role it appends under.
    leader_epoch: AtomicI32,
    leading: AtomicBool,
    /// This leader holds writes back until its succession completes (see
    /// `replication::succession`); checked without the role's lock on
    /// every produce.
    succession_pending: AtomicBool,
    /// The newest leader epoch the metadata named for this partition,
    /// set before the role changes under the log's lock: an append that
    /// held the lock meanwhile learns from it that it was deposed.
    newest_epoch: AtomicI32,
    /// The leader's view of its followers, or whom a follower follows.
    role: Mutex<Role>,
    /// A flush begun by `begin_flush_if_due` has not completed yet.
    flushing: AtomicBool,
    /// Replica fetches, woken when the log grows.
    appended: Waiters,
    /// Consumer fetches and acks=all produces, woken when the high
    /// watermark moves (and on a change of role).
    committed: Waiters,
    /// Whether the produce appends waiting here make progress.
    progress: Progress,
    /// This replica's (leader epoch, log end offset, high watermark) as
    /// the active controller last acknowledged hearing it in a heartbeat
    /// (see `heartbeat`), so a heartbeat compares each replica with what
    /// was heard without looking it up.
    heard_progress: Mutex<Option<(i32, i64, i64)>>,
    /// The broker-wide count of replica changes this replica adds to.
    activity: Arc<Activity>,
}

/// What [`Partition::begin_flush_if_due`] found.
#[derive(Debug)]
pub enum FlushCheck {
    /// A flush is due and begun: complete it off the log's lock.
    Begun(PendingFlush),
    /// Data is not durable yet, but no flush is due (or one is running,
    /// or the log is busy): look again later.
    NotYet,
    /// Everything appended is durable.
    Durable,
}

impl Partition {
    /// A replica with no role yet; [`Self::apply_assignment`] gives it
    /// one. `high_watermark` is the last one checkpointed, if any: never
    /// trusted beyond the log.
    pub fn new(
        topic: Arc<str>,
        topic_id: Uuid,
        index: i32,
        log: PartitionLog,
        high_watermark: Option<i64>,
        activity: Arc<Activity>,
    ) -> Self {
        let log_end_offset = log.log_end_offset();
        let high_watermark = high_watermark
            .unwrap_or(0)
            .clamp(log.log_start_offset(), log_end_offset);
        let config = log.config().clone();
        Self {
            topic,
            topic_id,
            index,
            log: Mutex::new(log),
            config: Mutex::new(config),
            config_changed: AtomicBool::new(false),
            high_watermark: AtomicI64::new(high_watermark),
            log_end_offset: AtomicI64::new(log_end_offset),
            leader_epoch: AtomicI32::new(-1),
            leading: AtomicBool::new(false),
            succession_pending: AtomicBool::new(false),
            newest_epoch: AtomicI32::new(-1),
            role: Mutex::new(Role::None),
            flushing: AtomicBool::new(false),
            appended: Waiters::default(),
            committed: Waiters::default(),
            progress: Progress::default(),
            heard_progress: Mutex::new(None),
            activity,
        }
    }

    /// The produce heartbeat: whether produce appends make progress.
    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// A produce append begins at `now_ms` (see [`Progress::begin`]).
    pub fn begin_produce(&self, now_ms: i64, clock: fn() -> i64) -> Waiting<'_> {
        self.activity.note();
        self.progress.begin(now_ms, clock)
    }

    /// This replica's (leader epoch, log end offset, high watermark)
    /// now.
    pub fn replication_progress(&self) -> (i32, i64, i64) {
        (
            self.leader_epoch(),
            self.log_end_offset(),
            self.high_watermark(),
        )
    }

    /// What the active controller last heard of
    /// [`Self::replication_progress`], kept by the heartbeat.
    pub fn heard_progress(&self) -> &Mutex<Option<(i32, i64, i64)>> {
        &self.heard_progress
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

    /// Whether this replica leads at its current leader epoch.
    pub fn is_leader(&self) -> bool {
        self.leading.load(Ordering::Acquire)
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark.load(Ordering::Acquire)
    }

    pub fn log_end_offset(&self) -> i64 {
        self.log_end_offset.load(Ordering::Acquire)
    }

    /// Locks the log, handing it the latest configuration first. Callers
    /// must not hold the guard across an `.await`, and must not call this
    /// on an async worker (see `blocking`).
    pub fn log(&self) -> MutexGuard<'_, PartitionLog> {
        let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        self.with_current_config(log)
    }

    /// The log, waiting for its lock only if `mode` allows it: with
    /// [`ReadMode::CachedOnly`] a held lock (whoever holds it may be
    /// waiting on the disk) is [`LogError::WouldWait`].
    fn log_in(&self, mode: ReadMode) -> Result<MutexGuard<'_, PartitionLog>, LogError> {
        if mode == ReadMode::MayWait {
            return Ok(self.log());
        }
        let log = match self.log.try_lock() {
            Ok(log) => log,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return Err(LogError::WouldWait),
        };
        Ok(self.with_current_config(log))
    }

    fn with_current_config<'a>(
        &self,
        mut log: MutexGuard<'a, PartitionLog>,
    ) -> MutexGuard<'a, PartitionLog> {
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

    /// Begins a background flush if a flush policy asks for one now, and
    /// none begun here is still running. A log whose lock is busy (an
    /// append in progress, perhaps on a slow disk) is left for the next
    /// look rather than waited for. Complete it with
    /// [`Self::complete_background_flush`].
    pub fn begin_flush_if_due(&self, now_ms: i64) -> FlushCheck {
        if self.flushing.load(Ordering::Acquire) {
            return FlushCheck::NotYet;
        }
        let log = match self.log.try_lock() {
            Ok(log) => log,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return FlushCheck::NotYet,
        };
        if !log.has_unflushed() {
            return FlushCheck::Durable;
        }
        let pending = log.flush_due(now_ms).then(|| log.begin_flush()).flatten();
        self.flushing.store(pending.is_some(), Ordering::Release);
        pending.map_or(FlushCheck::NotYet, FlushCheck::Begun)
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

    /// Moves the high watermark forward and wakes what waits for it.
    fn advance_high_watermark(&self, to: i64) {
        let previous = self.high_watermark.fetch_max(to, Ordering::AcqRel);
        if to > previous {
            self.activity.note();
            self.committed.wake_all();
        }
    }

    /// Chooses whole batches from `offset` within `max_bytes` (one larger
    /// first batch allowed with `min_one_batch`). The bytes are read by the
    /// caller from the returned slice, outside the log's lock.
    ///
    /// A reader that names the epoch of the last batch it holds
    /// (`last_fetched_epoch`, -1 for none) gets, instead of records, where
    /// its log diverges from this one when that epoch ends here before
    /// `offset` or is older than any epoch here at or below it (KIP-320,
    /// Kafka's rule). The check and the read are one look under the lock.
    ///
    /// With [`ReadMode::CachedOnly`] nothing waits: a log whose lock is
    /// held, or a read that needs the disk, fails with
    /// [`LogError::WouldWait`].
    pub fn read(
        &self,
        offset: i64,
        last_fetched_epoch: i32,
        max_bytes: usize,
        limit: ReadLimit,
        min_one_batch: bool,
        mode: ReadMode,
    ) -> Result<(Fetched, PartitionOffsets), LogError> {
        let log = self.log_in(mode)?;
        let offsets = PartitionOffsets {
            log_start_offset: log.log_start_offset(),
            high_watermark: self.high_watermark(),
            log_end_offset: log.log_end_offset(),
        };
        if last_fetched_epoch >= 0 {
            let (epoch, end_offset) = log.end_offset_for_epoch(last_fetched_epoch);
            // (-1, -1) cannot be told from "no divergence" on the wire; a
            // leader always knows its own epoch, so it only answers a
            // reader ahead of anything here, which the offset check catches.
            let diverged = epoch < last_fetched_epoch || end_offset < offset;
            if diverged && end_offset >= 0 {
                return Ok((Fetched::Diverged { epoch, end_offset }, offsets));
            }
        }
        let upper_bound = match limit {
            ReadLimit::HighWatermark => offsets.high_watermark,
            ReadLimit::LogEnd => offsets.log_end_offset,
        };
        let slice = log.read_in(offset, max_bytes, upper_bound, min_one_batch, mode)?;
        Ok((Fetched::Records(slice), offsets))
    }

    /// Registers `notify` to be woken when what `limit` lets a reader see
    /// grows: the log end for replica fetches, the high watermark (or a
    /// change of role) otherwise.
    pub fn register_waiter(&self, notify: &Arc<Notify>, limit: ReadLimit) {
        match limit {
            ReadLimit::LogEnd => self.appended.register(notify),
            ReadLimit::HighWatermark => self.committed.register(notify),
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
impl Partition {
    /// A partition led by broker 1, its only replica.
    pub(crate) fn leading_alone(log: PartitionLog) -> Arc<Self> {
        let partition = Self::new("t".into(), Uuid::nil(), 0, log, None, Arc::default());
        let info = keel_raft_metadata::PartitionInfo {
            partition: 0,
            replicas: vec![1],
            leader: 1,
            leader_epoch: 0,
            isr: vec![1],
            partition_epoch: 0,
            elr: Vec::new(),
            predecessor_lease_ms: 0,
            adding_replicas: vec![],
            removing_replicas: vec![],
            previous_leader: None,
        };
        let transition = partition.apply_assignment(
            1,
            &info,
            1,
            crate::replication::succession::Succession::default(),
            0,
        );
        assert_eq!(transition.ok(), Some(Transition::BecameLeader));
        Arc::new(partition)
    }
}
