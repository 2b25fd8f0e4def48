//! A replica's role, and what its leader does: appends, the high
//! watermark, the ISR. A follower's writes are in `follower`.
//!
//! The metadata image decides the role ([`Partition::apply_assignment`]):
//! the replica named leader at a leader epoch leads in it, the others
//! follow that leader. Role and epoch change under the log's lock, and
//! every write checks them under the same lock: a leader's append names the
//! epoch it expects, a follower's append and truncation the epoch of the
//! leader they came from. A write that raced a change of leadership fails
//! instead of landing in the wrong log.

use std::{
    sync::{MutexGuard, PoisonError, atomic::Ordering},
    time::Duration,
};

use keel_log::{AppendOutcome, LogError};
use keel_raft_metadata::PartitionInfo;
use tokio::{sync::Notify, time::Instant};

use super::{Partition, check_leader_epoch};
use crate::{
    error::PartitionError,
    replication::{
        leader::{Assignment, IsrProposal, LeaderView},
        succession::Succession,
    },
};

#[derive(Debug)]
pub(super) enum Role {
    /// Opened, and not yet told its role.
    None,
    Leader(LeaderView),
    /// Following `leader`; -1 while the partition has no leader.
    Follower {
        leader: i32,
    },
}

/// What applying an assignment changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Unchanged,
    BecameLeader,
    BecameFollower {
        leader: i32,
    },
    /// No longer hosted here: its log is closed.
    Removed,
}

fn assignment(info: &PartitionInfo) -> Assignment {
    Assignment {
        leader_epoch: info.leader_epoch,
        partition_epoch: info.partition_epoch,
        replicas: info.replicas.clone(),
        isr: info.isr.clone(),
    }
}

impl Partition {
    pub(super) fn role(&self) -> MutexGuard<'_, Role> {
        self.role.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the partition's state from the metadata image: becomes its
    /// leader or a follower of its leader when the leader epoch moved (or
    /// this replica had no role yet, or another role at the same epoch), or
    /// takes an ISR change of the same leadership. An image older than the
    /// replica's epoch changes nothing. A new leadership takes no write
    /// until `succession` completes; for the same leadership, `succession`
    /// (what the image asks for now) only drops replicas fenced since.
    pub fn apply_assignment(
        &self,
        local_id: i32,
        info: &PartitionInfo,
        min_insync_replicas: usize,
        succession: Succession,
        now_ms: i64,
    ) -> Result<Transition, LogError> {
        // The same leadership: at most the ISR, the replicas or the minimum
        // changed, and the log's lock (which a slow append may hold) is not
        // needed. Assignments are applied one at a time (the replica
        // manager's reconcile lock), so the epoch cannot move meanwhile.
        if info.leader_epoch == self.leader_epoch() {
            let mut role = self.role();
            match &mut *role {
                Role::Leader(view) if info.leader == local_id => {
                    view.apply_assignment(&assignment(info), now_ms);
                    view.set_min_insync_replicas(min_insync_replicas);
                    view.settle_succession(&succession);
                    drop(role);
                    // A committed ISR change may call for the next one.
                    self.activity.note();
                    self.succession_wait_ms(now_ms);
                    self.update_high_watermark();
                    return Ok(Transition::Unchanged);
                }
                Role::Follower { leader } if *leader == info.leader && info.leader != local_id => {
                    return Ok(Transition::Unchanged);
                }
                _ => {}
            }
        }
        // Known before the log's lock is had (a stalled append may hold it
        // for long): a write that append finishes is not acknowledged.
        self.learn_leader_epoch(info.leader_epoch);
        let mut log = self.log();
        if info.leader_epoch < self.leader_epoch() {
            return Ok(Transition::Unchanged);
        }
        if info.leader == local_id {
            // Kafka's makeLeader: the epoch starts at the log end, so
            // OffsetForLeaderEpoch answers for it before any append.
            log.assign_leader_epoch(info.leader_epoch)?;
            let view = LeaderView::new(
                local_id,
                &assignment(info),
                log.log_end_offset(),
                min_insync_replicas,
                now_ms,
            )
            .with_succession(succession);
            let pending = view.succession_wait_ms(now_ms).is_some();
            {
                // Flag and role change together, under the role's lock,
                // where `succession_wait_ms` clears the flag.
                let mut role = self.role();
                *role = Role::Leader(view);
                self.succession_pending.store(pending, Ordering::Release);
            }
            self.leader_epoch
                .store(info.leader_epoch, Ordering::Release);
            self.leading.store(true, Ordering::Release);
            self.activity.note();
            drop(log);
            self.update_high_watermark();
            return Ok(Transition::BecameLeader);
        }
        *self.role() = Role::Follower {
            leader: info.leader,
        };
        self.leading.store(false, Ordering::Release);
        self.leader_epoch
            .store(info.leader_epoch, Ordering::Release);
        self.high_watermark
            .fetch_min(log.log_end_offset(), Ordering::AcqRel);
        self.activity.note();
        drop(log);
        // Produces waiting for acknowledgement learn they lost it.
        self.committed.wake_all();
        self.appended.wake_all();
        Ok(Transition::BecameFollower {
            leader: info.leader,
        })
    }

    /// The metadata names `leader_epoch` for this partition: a write
    /// appended in an older epoch is no longer acknowledged
    /// ([`Self::check_still_leading`]), whether or not the role has changed
    /// yet. Takes no lock.
    pub fn learn_leader_epoch(&self, leader_epoch: i32) {
        self.newest_epoch.fetch_max(leader_epoch, Ordering::AcqRel);
    }

    /// Appends a producer's batch if this replica leads, at
    /// `expected_epoch` when given. If `flush.messages` asks for it, the
    /// batch is fsynced before this returns, with the log's lock released
    /// meanwhile.
    pub fn append_as_leader(
        &self,
        batch: &[u8],
        expected_epoch: Option<i32>,
        now_ms: i64,
    ) -> Result<AppendOutcome, PartitionError> {
        let (outcome, flush) = {
            let mut log = self.log();
            let epoch = self.leader_epoch();
            if !self.is_leader() || expected_epoch.is_some_and(|e| e != epoch) {
                return Err(PartitionError::NotLeader);
            }
            if let Some(wait_ms) = self.succession_wait_ms(now_ms) {
                return Err(PartitionError::AwaitingSuccession(wait_ms));
            }
            let outcome = log.append_as_leader(batch, epoch, now_ms)?;
            self.log_end_offset
                .store(log.log_end_offset(), Ordering::Release);
            self.activity.note();
            let flush = log.flush_before_ack().then(|| log.begin_flush()).flatten();
            (outcome, flush)
        };
        if let Some(pending) = flush {
            self.complete_flush(pending)?;
        }
        if !outcome.duplicate {
            self.appended.wake_all();
            self.update_high_watermark();
        }
        Ok(outcome)
    }

    /// Whether this replica leads and takes no write yet, waiting for
    /// earlier leaders to stop.
    pub fn awaits_succession(&self) -> bool {
        self.succession_pending.load(Ordering::Acquire)
    }

    /// How much longer this leader must wait before taking writes, for
    /// earlier leaders to stop (see `replication::succession`); `None`
    /// when it may take them, or does not lead. The first call that finds
    /// the succession complete wakes the produce requests parked in
    /// [`Self::await_succession`].
    fn succession_wait_ms(&self, now_ms: i64) -> Option<i64> {
        if !self.succession_pending.load(Ordering::Acquire) {
            return None;
        }
        let role = self.role();
        let wait_ms = match &*role {
            Role::Leader(view) => view.succession_wait_ms(now_ms),
            _ => None,
        };
        if wait_ms.is_none() && self.succession_pending.swap(false, Ordering::AcqRel) {
            drop(role);
            self.committed.wake_all();
        }
        wait_ms
    }

    /// Waits, until `deadline` at most, for this leader's succession to
    /// complete, so that a produce request that arrives just after a change
    /// of leadership is appended rather than refused.
    pub async fn await_succession(&self, deadline: Instant, clock: fn() -> i64) {
        if self.succession_wait_ms(clock()).is_none() {
            return;
        }
        let notify = std::sync::Arc::new(Notify::new());
        loop {
            self.committed.register(&notify);
            let Some(wait_ms) = self.succession_wait_ms(clock()) else {
                return;
            };
            let wake = Instant::now() + Duration::from_millis(u64::try_from(wait_ms).unwrap_or(0));
            if tokio::time::timeout_at(wake.min(deadline), notify.notified())
                .await
                .is_err()
                && Instant::now() >= deadline
            {
                return;
            }
        }
    }

    /// Blocking form of [`Self::await_succession`], for callers on a
    /// blocking thread (the group coordinator's writes).
    pub fn wait_for_succession(&self, timeout: Duration, clock: fn() -> i64) {
        if self.succession_wait_ms(clock()).is_none() {
            return;
        }
        let deadline = Instant::now() + timeout;
        tokio::runtime::Handle::current().block_on(self.await_succession(deadline, clock));
    }

    /// For a write appended at `leader_epoch`: fails unless this replica
    /// still leads in that epoch, and the metadata names no newer one, now
    /// that the write is to be answered.
    pub fn check_still_leading(&self, leader_epoch: i32) -> Result<(), PartitionError> {
        let superseded = self.newest_epoch.load(Ordering::Acquire) > leader_epoch;
        if self.is_leader() && self.leader_epoch() == leader_epoch && !superseded {
            Ok(())
        } else {
            Err(PartitionError::DeposedAfterAppend(leader_epoch))
        }
    }

    /// Moves the high watermark to what the followers' progress allows.
    fn update_high_watermark(&self) {
        let log_end_offset = self.log_end_offset();
        let high_watermark = match &*self.role() {
            Role::Leader(view) => view.high_watermark(log_end_offset),
            _ => None,
        };
        if let Some(high_watermark) = high_watermark {
            self.advance_high_watermark(high_watermark);
        }
    }

    /// Whether acks=all may append: the committed ISR is at least
    /// min.insync.replicas.
    pub fn check_min_isr(&self) -> Result<(), PartitionError> {
        match &*self.role() {
            Role::Leader(view) if view.under_min_isr() => Err(PartitionError::NotEnoughReplicas {
                isr: view.isr().len(),
                required: view.min_insync_replicas(),
            }),
            Role::Leader(_) => Ok(()),
            _ => Err(PartitionError::NotLeader),
        }
    }

    /// Waits until the high watermark reaches `required` while this replica
    /// leads at `leader_epoch` (acks=all), or until `deadline`.
    pub async fn await_high_watermark(
        &self,
        leader_epoch: i32,
        required: i64,
        deadline: Instant,
    ) -> Result<(), PartitionError> {
        let notify = std::sync::Arc::new(Notify::new());
        loop {
            self.committed.register(&notify);
            if !self.is_leader() || self.leader_epoch() != leader_epoch {
                return Err(PartitionError::NotLeader);
            }
            if self.high_watermark() >= required {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, notify.notified())
                .await
                .is_err()
            {
                if self.high_watermark() >= required {
                    return Ok(());
                }
                return Err(match self.check_min_isr() {
                    Err(PartitionError::NotEnoughReplicas { isr, required }) => {
                        PartitionError::NotEnoughReplicasAfterAppend { isr, required }
                    }
                    Err(error) => error,
                    Ok(()) => PartitionError::RequestTimedOut,
                });
            }
        }
    }

    /// Blocking form of [`Self::await_high_watermark`], for callers on a
    /// blocking thread (the group coordinator's writes).
    pub fn wait_for_high_watermark(
        &self,
        leader_epoch: i32,
        required: i64,
        timeout: Duration,
    ) -> Result<(), PartitionError> {
        if self.high_watermark() >= required {
            return Ok(());
        }
        let deadline = Instant::now() + timeout;
        tokio::runtime::Handle::current().block_on(self.await_high_watermark(
            leader_epoch,
            required,
            deadline,
        ))
    }

    /// A follower's fetch, in `leader_epoch` as it named it, reached
    /// `fetch_offset` (its log end offset). It counts only for the
    /// leadership it names: a successor waits for its predecessor's fetch
    /// in the successor's own epoch (see `replication::succession`).
    pub fn record_follower_fetch(
        &self,
        replica: i32,
        leader_epoch: i32,
        fetch_offset: i64,
        incarnation: Option<u64>,
        now_ms: i64,
    ) -> Result<(), PartitionError> {
        match &mut *self.role() {
            Role::Leader(view) => {
                check_leader_epoch(leader_epoch, view.leader_epoch())?;
                let moved = view
                    .record_fetch(
                        replica,
                        fetch_offset,
                        self.log_end_offset(),
                        incarnation,
                        now_ms,
                    )
                    .map_err(|e| PartitionError::NotAReplica(e.0))?;
                if moved {
                    self.activity.note();
                }
            }
            _ => return Err(PartitionError::NotLeader),
        }
        self.succession_wait_ms(now_ms);
        self.update_high_watermark();
        Ok(())
    }

    /// The ISR change this leader's followers call for, if any (see
    /// [`LeaderView::propose_isr_change`]).
    pub fn propose_isr_change(
        &self,
        lag_max_ms: i64,
        now_ms: i64,
        eligible: &dyn Fn(i32, u64) -> bool,
    ) -> Option<IsrProposal> {
        let log_end_offset = self.log_end_offset();
        let high_watermark = self.high_watermark();
        match &mut *self.role() {
            Role::Leader(view) => view.propose_isr_change(
                log_end_offset,
                high_watermark,
                lag_max_ms,
                now_ms,
                eligible,
            ),
            _ => None,
        }
    }

    /// The controller refused an ISR change proposed at `leader_epoch`.
    pub fn isr_proposal_failed(&self, leader_epoch: i32) {
        if let Role::Leader(view) = &mut *self.role() {
            if view.leader_epoch() == leader_epoch {
                view.proposal_failed();
                self.activity.note();
            }
        }
    }

    /// The ISR a leader works with and its min.insync.replicas.
    pub fn isr(&self) -> Option<(Vec<i32>, usize)> {
        match &*self.role() {
            Role::Leader(view) => Some((view.isr().to_vec(), view.min_insync_replicas())),
            _ => None,
        }
    }

    /// Each follower's lag behind this leader: `(replica, records, ms)`.
    pub fn follower_lag(&self, now_ms: i64) -> Vec<(i32, i64, i64)> {
        let log_end_offset = self.log_end_offset();
        match &*self.role() {
            Role::Leader(view) => view
                .followers()
                .map(|(id, p)| {
                    let records = if p.log_end_offset < 0 {
                        log_end_offset
                    } else {
                        log_end_offset - p.log_end_offset
                    };
                    let ms = if p.last_caught_up_ms < 0 {
                        -1
                    } else {
                        now_ms - p.last_caught_up_ms
                    };
                    (id, records, ms)
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}
