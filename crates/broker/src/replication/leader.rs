//! The leader's view of its followers: how far each has fetched, when each
//! last caught up, and what that means for the high watermark and the ISR.
//!
//! A pure state machine: time and the leader's log end offset are passed
//! in, and ISR changes come out as proposals for the controller. The leader
//! never changes its ISR on its own authority: a proposal takes effect only
//! when the metadata log commits it and [`LeaderView::apply_assignment`]
//! hands the committed ISR back.
//!
//! Invariants:
//! - The high watermark is the minimum log end offset over the *maximal*
//!   ISR (the committed ISR plus members whose addition is in flight); a
//!   shrink counts only once committed, so the high watermark never
//!   outruns a replica that may still count as in sync.
//! - While the committed ISR is smaller than min.insync.replicas the high
//!   watermark does not move at all (strict min ISR, KIP-966).
//! - A follower joins the ISR only once it holds everything this leader
//!   wrote: its log end offset has reached both the high watermark and the
//!   offset where this leader's epoch began.
//! - At most one ISR change is in flight at a time.

use std::collections::BTreeMap;

use super::succession::Succession;

/// An ISR change in flight is proposed again after this long without an
/// answer (the proposal may have been lost with a metadata leader).
const PENDING_RETRY_MS: i64 = 5_000;

/// What the metadata image says about a partition this broker leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

/// How far one follower has got, as its fetches show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerProgress {
    /// The offset of its last fetch: everything below is in its log. -1
    /// until it fetches from this leader.
    pub log_end_offset: i64,
    /// The last time it was known to hold everything the leader had.
    pub last_caught_up_ms: i64,
    /// When it last fetched, and the leader's log end offset then.
    pub last_fetch_ms: i64,
    last_fetch_leader_log_end_offset: i64,
    /// The broker incarnation its fetches carry (KIP-903), if they do.
    pub incarnation: Option<u64>,
}

impl FollowerProgress {
    fn unknown(last_caught_up_ms: i64) -> Self {
        Self {
            log_end_offset: -1,
            last_caught_up_ms,
            last_fetch_ms: -1,
            last_fetch_leader_log_end_offset: -1,
            incarnation: None,
        }
    }
}

/// An ISR change for the controller to commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrProposal {
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub isr: Vec<i32>,
    /// Aligned with `isr`: the incarnation each member fetched with, 0
    /// where unknown. The controller checks it for members being added.
    pub incarnations: Vec<u64>,
    pub removed: Vec<i32>,
    pub added: Vec<i32>,
    /// The min.insync.replicas the leader applies (the controller keeps
    /// the ELR by it).
    pub min_insync_replicas: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Pending {
    isr: Vec<i32>,
    partition_epoch: i32,
    proposed_at_ms: i64,
}

/// A fetch from a broker that is not a replica of the partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("broker {0} is not a replica of this partition")]
pub struct NotAReplica(pub i32);

#[derive(Debug, Clone)]
pub struct LeaderView {
    local_id: i32,
    leader_epoch: i32,
    partition_epoch: i32,
    replicas: Vec<i32>,
    isr: Vec<i32>,
    pending: Option<Pending>,
    followers: BTreeMap<i32, FollowerProgress>,
    epoch_start_offset: i64,
    min_insync_replicas: usize,
    /// Until it completes, this leader takes no write (see `succession`).
    succession: Succession,
}

impl LeaderView {
    /// The view of a replica that has just become leader with
    /// `log_end_offset`. Followers in the ISR count as caught up now, so
    /// none is shrunk before it had the chance to fetch.
    pub fn new(
        local_id: i32,
        assignment: &Assignment,
        log_end_offset: i64,
        min_insync_replicas: usize,
        now_ms: i64,
    ) -> Self {
        let followers = assignment
            .replicas
            .iter()
            .filter(|&&id| id != local_id)
            .map(|&id| {
                let caught_up = if assignment.isr.contains(&id) {
                    now_ms
                } else {
                    -1
                };
                (id, FollowerProgress::unknown(caught_up))
            })
            .collect();
        Self {
            local_id,
            leader_epoch: assignment.leader_epoch,
            partition_epoch: assignment.partition_epoch,
            replicas: assignment.replicas.clone(),
            isr: assignment.isr.clone(),
            pending: None,
            followers,
            epoch_start_offset: log_end_offset,
            min_insync_replicas,
            succession: Succession::default(),
        }
    }

    /// The same view, taking no write until `succession` completes.
    pub fn with_succession(mut self, succession: Succession) -> Self {
        self.succession = succession;
        self
    }

    /// Stops waiting for replicas that `current` (the succession the image
    /// would ask for now) no longer waits for: fenced since, they hold no
    /// lease.
    pub fn settle_succession(&mut self, current: &Succession) {
        self.succession.retain_awaited(current);
    }

    /// How much longer writes must wait for earlier leaders to stop, or
    /// `None` when they may be accepted.
    pub fn succession_wait_ms(&self, now_ms: i64) -> Option<i64> {
        self.succession.wait_ms(now_ms)
    }

    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch
    }

    /// The committed ISR.
    pub fn isr(&self) -> &[i32] {
        &self.isr
    }

    pub fn min_insync_replicas(&self) -> usize {
        self.min_insync_replicas
    }

    pub fn set_min_insync_replicas(&mut self, min_insync_replicas: usize) {
        self.min_insync_replicas = min_insync_replicas;
    }

    /// Whether the committed ISR is smaller than min.insync.replicas.
    pub fn under_min_isr(&self) -> bool {
        self.isr.len() < self.min_insync_replicas
    }

    pub fn followers(&self) -> impl Iterator<Item = (i32, &FollowerProgress)> {
        self.followers.iter().map(|(&id, p)| (id, p))
    }

    /// Takes a committed change of the same leadership (an ISR change or a
    /// new replica set). A pending proposal is settled once the partition
    /// epoch moves past the one it was based on.
    pub fn apply_assignment(&mut self, assignment: &Assignment, now_ms: i64) {
        if assignment.partition_epoch < self.partition_epoch {
            return;
        }
        let previous_isr = std::mem::replace(&mut self.isr, assignment.isr.clone());
        self.partition_epoch = assignment.partition_epoch;
        self.replicas = assignment.replicas.clone();
        if self
            .pending
            .as_ref()
            .is_some_and(|p| p.partition_epoch < assignment.partition_epoch)
        {
            self.pending = None;
        }
        self.followers
            .retain(|id, _| assignment.replicas.contains(id));
        for &id in &assignment.replicas {
            if id == self.local_id {
                continue;
            }
            let progress = self
                .followers
                .entry(id)
                .or_insert_with(|| FollowerProgress::unknown(-1));
            // A member just added counts as caught up from now, or it
            // could be shrunk again before its next fetch.
            if self.isr.contains(&id) && !previous_isr.contains(&id) {
                progress.last_caught_up_ms = progress.last_caught_up_ms.max(now_ms);
            }
        }
    }

    /// The controller refused the proposal in flight, or it timed out.
    pub fn proposal_failed(&mut self) {
        self.pending = None;
    }

    /// Records a follower's fetch at `fetch_offset` while the leader's log
    /// ends at `leader_log_end_offset` (Kafka's rule: caught up now if it
    /// reached the log end, or as of its previous fetch if it reached what
    /// the log end was then). A fetch in this leader's epoch also shows the
    /// follower no longer leads (the succession). Returns whether the
    /// follower's log end offset or incarnation changed: what could let it
    /// join the ISR.
    pub fn record_fetch(
        &mut self,
        replica: i32,
        fetch_offset: i64,
        leader_log_end_offset: i64,
        incarnation: Option<u64>,
        now_ms: i64,
    ) -> Result<bool, NotAReplica> {
        let progress = self
            .followers
            .get_mut(&replica)
            .ok_or(NotAReplica(replica))?;
        let moved = progress.log_end_offset != fetch_offset
            || (incarnation.is_some() && progress.incarnation != incarnation);
        if fetch_offset >= leader_log_end_offset {
            progress.last_caught_up_ms = progress.last_caught_up_ms.max(now_ms);
        } else if fetch_offset >= progress.last_fetch_leader_log_end_offset
            && progress.last_fetch_ms >= 0
        {
            progress.last_caught_up_ms = progress.last_caught_up_ms.max(progress.last_fetch_ms);
        }
        progress.log_end_offset = fetch_offset;
        progress.last_fetch_ms = now_ms;
        self.succession.fetched(replica);
        progress.last_fetch_leader_log_end_offset = leader_log_end_offset;
        if incarnation.is_some() {
            progress.incarnation = incarnation;
        }
        Ok(moved)
    }

    /// The members the high watermark must wait for: the committed ISR and
    /// any member whose addition is in flight.
    fn maximal_isr(&self) -> impl Iterator<Item = i32> + '_ {
        let pending = self.pending.iter().flat_map(|p| p.isr.iter());
        self.isr
            .iter()
            .chain(pending.filter(|id| !self.isr.contains(id)))
            .copied()
    }

    /// The high watermark the followers' progress allows, or `None` while
    /// the ISR is below min.insync.replicas. The caller never lets it move
    /// backwards.
    pub fn high_watermark(&self, leader_log_end_offset: i64) -> Option<i64> {
        if self.under_min_isr() {
            return None;
        }
        self.maximal_isr()
            .map(|id| {
                if id == self.local_id {
                    leader_log_end_offset
                } else {
                    self.followers.get(&id).map_or(-1, |p| p.log_end_offset)
                }
            })
            .min()
    }

    /// The ISR change the followers' progress calls for, if any and none is
    /// in flight (or the one in flight went unanswered too long): members
    /// that have not caught up for `lag_max_ms` leave, followers that hold
    /// everything this leader wrote join if `eligible` says their broker,
    /// at the incarnation it fetched with, may (registered, unfenced: the
    /// controller refuses the rest, KIP-903). Marks it in flight.
    pub fn propose_isr_change(
        &mut self,
        leader_log_end_offset: i64,
        high_watermark: i64,
        lag_max_ms: i64,
        now_ms: i64,
        eligible: &dyn Fn(i32, u64) -> bool,
    ) -> Option<IsrProposal> {
        if let Some(pending) = &self.pending {
            if now_ms - pending.proposed_at_ms < PENDING_RETRY_MS {
                return None;
            }
        }
        let removed: Vec<i32> = self
            .isr
            .iter()
            .copied()
            .filter(|&id| id != self.local_id)
            .filter(|id| {
                self.followers.get(id).is_none_or(|p| {
                    p.log_end_offset != leader_log_end_offset
                        && now_ms - p.last_caught_up_ms > lag_max_ms
                })
            })
            .collect();
        let added: Vec<i32> = self
            .followers
            .iter()
            .filter(|(id, p)| {
                !self.isr.contains(id)
                    && p.incarnation.is_some_and(|i| eligible(**id, i))
                    && p.log_end_offset >= high_watermark
                    && p.log_end_offset >= self.epoch_start_offset
            })
            .map(|(&id, _)| id)
            .collect();
        if removed.is_empty() && added.is_empty() {
            self.pending = None;
            return None;
        }
        let isr: Vec<i32> = self
            .replicas
            .iter()
            .copied()
            .filter(|id| (self.isr.contains(id) && !removed.contains(id)) || added.contains(id))
            .collect();
        let incarnations = isr
            .iter()
            .map(|id| {
                self.followers
                    .get(id)
                    .and_then(|p| p.incarnation)
                    .unwrap_or(0)
            })
            .collect();
        self.pending = Some(Pending {
            isr: isr.clone(),
            partition_epoch: self.partition_epoch,
            proposed_at_ms: now_ms,
        });
        Some(IsrProposal {
            leader_epoch: self.leader_epoch,
            partition_epoch: self.partition_epoch,
            isr,
            incarnations,
            removed,
            added,
            min_insync_replicas: self.min_insync_replicas,
        })
    }
}

#[cfg(test)]
mod tests;
