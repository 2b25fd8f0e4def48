//! Changes to an existing partition's leader, ISR and eligible leader
//! replicas, the KRaft way: every change bumps the partition epoch, an ISR
//! update must name the partition epoch it was computed from, a broker joins
//! the ISR only at its current, unfenced incarnation (KIP-903), and members
//! that leave the ISR while it is below min.insync.replicas stay eligible to
//! lead (KIP-966).

use super::{ApplyError, MetadataImage};
use crate::records::{
    LeaderChangeReason, LeadershipChange, PartitionAssignment, SetPartitionLeader, UpdateIsr,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    pub partition: i32,
    pub replicas: Vec<i32>,
    pub leader: i32,
    pub leader_epoch: i32,
    pub isr: Vec<i32>,
    /// Bumped by every leader or ISR change; an ISR update must name the
    /// current one.
    pub partition_epoch: i32,
    /// Eligible leader replicas (KIP-966): out of the ISR but holding every
    /// committed record. Never overlaps `isr`.
    pub elr: Vec<i32>,
    /// How long the previous leader may still have held a lease when the
    /// current leadership was decided (see `SetPartitionLeader`).
    pub predecessor_lease_ms: i64,
    /// While a reassignment is in progress, the replicas it adds and the
    /// ones it removes; both are in `replicas` (see `reassignment`).
    pub adding_replicas: Vec<i32>,
    pub removing_replicas: Vec<i32>,
    /// Who led before the current leader took over, if anyone did: until
    /// it has followed, it may not know it no longer leads, even once a
    /// reassignment has removed it from the replicas.
    pub previous_leader: Option<i32>,
}

impl From<&PartitionAssignment> for PartitionInfo {
    fn from(a: &PartitionAssignment) -> Self {
        Self {
            partition: a.partition,
            replicas: a.replicas.clone(),
            leader: a.leader,
            leader_epoch: a.leader_epoch,
            isr: a.isr.clone(),
            partition_epoch: a.partition_epoch,
            elr: a.elr.clone(),
            predecessor_lease_ms: a.predecessor_lease_ms,
            adding_replicas: a.adding_replicas.clone(),
            removing_replicas: a.removing_replicas.clone(),
            previous_leader: a.previous_leader,
        }
    }
}

impl From<&PartitionInfo> for PartitionAssignment {
    fn from(p: &PartitionInfo) -> Self {
        Self {
            partition: p.partition,
            replicas: p.replicas.clone(),
            leader: p.leader,
            leader_epoch: p.leader_epoch,
            isr: p.isr.clone(),
            partition_epoch: p.partition_epoch,
            elr: p.elr.clone(),
            predecessor_lease_ms: p.predecessor_lease_ms,
            adding_replicas: p.adding_replicas.clone(),
            removing_replicas: p.removing_replicas.clone(),
            previous_leader: p.previous_leader,
        }
    }
}

impl MetadataImage {
    pub(super) fn set_partition_leader(
        &mut self,
        r: &SetPartitionLeader,
        term: u64,
    ) -> Result<(), ApplyError> {
        let current = self.partition_info(&r.topic, r.partition)?.clone();
        if r.leader_epoch != current.leader_epoch + 1 {
            return Err(ApplyError::StaleLeaderEpoch {
                expected: current.leader_epoch + 1,
                got: r.leader_epoch,
            });
        }
        if let Some(decided_at) = r.partition_epoch
            && decided_at != current.partition_epoch
        {
            return Err(ApplyError::StalePartitionEpoch {
                expected: current.partition_epoch,
                got: decided_at,
            });
        }
        check_leader_and_isr(&current.replicas, r.leader, &r.isr)?;
        if let Some(twice) = first_duplicate(&r.isr) {
            return Err(ApplyError::DuplicateIsrMember(twice));
        }
        if r.leader >= 0 && !r.isr.contains(&r.leader) {
            return Err(ApplyError::LeaderNotInIsr(r.leader));
        }
        // Members leaving the ISR below min ISR keep their eligibility, and
        // so do ELR members not elected, which is what lets an offline
        // partition be led again later without data loss; one elected from
        // the ELR is in sync again.
        let elr = next_elr(&current, &r.isr, r.min_insync_replicas);
        let partition = self.partition_mut(&r.topic, r.partition)?;
        partition.leader = r.leader;
        partition.leader_epoch = r.leader_epoch;
        partition.isr = r.isr.clone();
        partition.partition_epoch = next_partition_epoch(current.partition_epoch);
        partition.elr = elr;
        partition.predecessor_lease_ms = r.predecessor_lease_ms;
        partition.previous_leader = (current.leader >= 0 && current.leader != r.leader)
            .then_some(current.leader)
            .or(current.previous_leader);
        self.record_change(LeadershipChange {
            sequence: 0,
            topic: r.topic.clone(),
            partition: r.partition,
            leader_epoch: r.leader_epoch,
            raft_term: term,
            previous_leader: current.leader,
            new_leader: r.leader,
            controller: r.controller,
            reason: r.reason,
            isr: r.isr.clone(),
            eligible: r.eligible.clone(),
            log_end_offset: r.log_end_offset,
            high_watermark: r.high_watermark,
            timestamp_ms: r.timestamp_ms,
            committed_at_ms: 0,
            new_leader_log_end_offset: r.new_leader_log_end_offset,
        });
        Ok(())
    }

    /// A broker came back as a new incarnation: whatever its log held
    /// before may be gone (an unclean stop loses what was not fsynced), so
    /// wherever another in-sync replica holds what was committed it leaves
    /// the ISR and the ELR (KIP-903, KIP-966) and stops leading: a
    /// partition it led goes offline at the next leader epoch, for the
    /// controller to elect one of the others, and it rejoins the ISR only
    /// once a leader sees it caught up. As the last ISR member it stays, and
    /// leads if it led: nobody holds more. Kafka gets there by fencing the
    /// restarted broker's previous registration.
    pub(super) fn forget_restarted_replica(&mut self, node_id: i32, timestamp_ms: i64, term: u64) {
        let names: Vec<String> = self
            .topics
            .values()
            .filter(|t| t.partitions.iter().any(|p| must_forget(p, node_id)))
            .map(|t| t.name.clone())
            .collect();
        let mut changes = Vec::new();
        for name in names {
            let Ok(topic) = self.topic_mut(&name) else {
                continue;
            };
            for partition in &mut topic.partitions {
                if !must_forget(partition, node_id) {
                    continue;
                }
                if partition.isr.len() > 1 || !partition.isr.contains(&node_id) {
                    partition.isr.retain(|id| *id != node_id);
                }
                partition.elr.retain(|id| *id != node_id);
                partition.partition_epoch = next_partition_epoch(partition.partition_epoch);
                if partition.leader == node_id && !partition.isr.contains(&node_id) {
                    // Restarted, it leads nothing: no successor waits for it.
                    partition.previous_leader = None;
                    partition.leader = -1;
                    partition.leader_epoch += 1;
                    changes.push(LeadershipChange {
                        topic: name.clone(),
                        partition: partition.partition,
                        leader_epoch: partition.leader_epoch,
                        raft_term: term,
                        previous_leader: node_id,
                        new_leader: -1,
                        controller: -1,
                        reason: LeaderChangeReason::BrokerFailure as i32,
                        isr: partition.isr.clone(),
                        eligible: Vec::new(),
                        log_end_offset: -1,
                        high_watermark: -1,
                        timestamp_ms,
                        committed_at_ms: 0,
                        new_leader_log_end_offset: None,
                        sequence: 0,
                    });
                }
            }
        }
        for change in changes {
            self.record_change(change);
        }
    }

    pub(super) fn update_isr(&mut self, r: &UpdateIsr) -> Result<(), ApplyError> {
        let current = self.partition_info(&r.topic, r.partition)?;
        if r.leader_epoch != current.leader_epoch {
            return Err(ApplyError::StaleLeaderEpoch {
                expected: current.leader_epoch,
                got: r.leader_epoch,
            });
        }
        if r.partition_epoch != current.partition_epoch {
            return Err(ApplyError::StalePartitionEpoch {
                expected: current.partition_epoch,
                got: r.partition_epoch,
            });
        }
        if r.isr_incarnations.len() != r.isr.len() {
            return Err(ApplyError::IsrIncarnations);
        }
        check_leader_and_isr(&current.replicas, current.leader, &r.isr)?;
        // Also rules out an empty ISR, and any update while the partition
        // has no leader (-1): only a leader may change its ISR.
        if !r.isr.contains(&current.leader) {
            return Err(ApplyError::LeaderNotInIsr(current.leader));
        }
        if let Some(twice) = first_duplicate(&r.isr) {
            return Err(ApplyError::DuplicateIsrMember(twice));
        }
        // Only members joining are checked, as Kafka does: re-checking the
        // ones already in would reject the very shrink that drops a member
        // that was fenced or restarted meanwhile.
        for (&node_id, &incarnation) in r.isr.iter().zip(&r.isr_incarnations) {
            if !current.isr.contains(&node_id) {
                self.check_may_join_isr(node_id, incarnation)?;
            }
        }
        let elr = next_elr(current, &r.isr, r.min_insync_replicas);
        let partition = self.partition_mut(&r.topic, r.partition)?;
        partition.isr = r.isr.clone();
        partition.elr = elr;
        partition.partition_epoch = next_partition_epoch(partition.partition_epoch);
        Ok(())
    }

    /// KIP-903: a broker that restarted (perhaps with an empty disk) must
    /// not be taken into the ISR on the strength of its previous run's
    /// fetches, nor a fenced broker that no longer answers for its data.
    fn check_may_join_isr(&self, node_id: i32, incarnation: u64) -> Result<(), ApplyError> {
        let reason = match self.brokers.get(&node_id) {
            None => "not registered".to_string(),
            Some(b) if b.fenced => "fenced".to_string(),
            Some(b) if b.incarnation != incarnation => format!(
                "incarnation {incarnation} is not the registered {}",
                b.incarnation
            ),
            Some(_) => return Ok(()),
        };
        Err(ApplyError::IneligibleIsrMember { node_id, reason })
    }

    pub(super) fn partition_info(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<&PartitionInfo, ApplyError> {
        self.topic(topic)
            .ok_or_else(|| ApplyError::UnknownTopic(topic.to_string()))?
            .partition(partition)
            .ok_or_else(|| ApplyError::UnknownPartition {
                topic: topic.to_string(),
                partition,
            })
    }

    pub(super) fn partition_mut(
        &mut self,
        topic: &str,
        partition: i32,
    ) -> Result<&mut PartitionInfo, ApplyError> {
        let unknown = || ApplyError::UnknownPartition {
            topic: topic.to_string(),
            partition,
        };
        let index = usize::try_from(partition).map_err(|_| unknown())?;
        self.topic_mut(topic)?
            .partitions
            .get_mut(index)
            .ok_or_else(unknown)
    }
}

/// A partition created by CreateTopic or CreatePartitions. It has no
/// history yet, so it starts at partition epoch 0 with no eligible leader
/// replicas whatever the record carries: nothing can be stale against it,
/// and no replica has left its ISR.
pub(super) fn new_partition(a: &PartitionAssignment) -> PartitionInfo {
    PartitionInfo {
        partition_epoch: 0,
        elr: Vec::new(),
        adding_replicas: Vec::new(),
        removing_replicas: Vec::new(),
        previous_leader: None,
        ..PartitionInfo::from(a)
    }
}

/// The leader (unless -1) and every ISR member must be replicas.
pub(super) fn check_leader_and_isr(
    replicas: &[i32],
    leader: i32,
    isr: &[i32],
) -> Result<(), ApplyError> {
    if leader >= 0 && !replicas.contains(&leader) {
        return Err(ApplyError::NotAReplica(leader));
    }
    match isr.iter().find(|id| !replicas.contains(id)) {
        Some(&outsider) => Err(ApplyError::NotAReplica(outsider)),
        None => Ok(()),
    }
}

/// Whether a restart of `node_id` changes `partition`: it is in the ELR,
/// or in the ISR beside others.
fn must_forget(partition: &PartitionInfo, node_id: i32) -> bool {
    partition.elr.contains(&node_id)
        || (partition.isr.contains(&node_id) && partition.isr.len() > 1)
}

pub(super) fn first_duplicate(ids: &[i32]) -> Option<i32> {
    ids.iter()
        .enumerate()
        .find(|(i, id)| ids[..*i].contains(id))
        .map(|(_, &id)| id)
}

/// Wraps instead of overflowing: only equality with the epoch an update
/// names is ever checked, and an apply must not panic.
pub(super) fn next_partition_epoch(epoch: i32) -> i32 {
    epoch.wrapping_add(1)
}

/// The ELR after the ISR goes from `current.isr` to `isr` (KIP-966, as
/// Kafka's PartitionChangeBuilder computes it). At or above min ISR the ISR
/// alone holds every committed record, so the ELR is cleared. Below it the
/// high watermark cannot advance, so whoever was in the ISR until now holds
/// every committed record: members leaving join the ELR, and the ELR never
/// holds an ISR member. A min ISR of 0 (a record that does not say) clears
/// the ELR.
fn next_elr(current: &PartitionInfo, isr: &[i32], min_insync_replicas: i32) -> Vec<i32> {
    let min = usize::try_from(min_insync_replicas).unwrap_or(0);
    if isr.len() >= min {
        return Vec::new();
    }
    let mut elr: Vec<i32> = current
        .elr
        .iter()
        .copied()
        .filter(|id| !isr.contains(id))
        .collect();
    for &left in current.isr.iter().filter(|id| !isr.contains(id)) {
        if !elr.contains(&left) {
            elr.push(left);
        }
    }
    elr
}
