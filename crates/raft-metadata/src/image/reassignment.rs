//! Partition reassignment (AlterPartitionReassignments), the KRaft way: a
//! partition's replicas move to a target set in steps that never leave a
//! committed record with fewer in-sync copies than before.
//!
//! 1. **Start.** `replicas` becomes the target followed by the current
//!    replicas that leave; `adding_replicas` names the target replicas
//!    that are new, `removing_replicas` the ones that leave. New replicas
//!    fetch from the leader and join the ISR as any follower does.
//! 2. **Leader move.** Once every target replica is in the ISR, a leader
//!    that is leaving hands over to a target replica in the ISR
//!    (`SetPartitionLeader`, reason `reassignment`) while it is still a
//!    replica, so its successor waits for it to follow before taking
//!    writes (see the broker's succession).
//! 3. **Complete.** `replicas` becomes the target; the leaving replicas
//!    leave the ISR and the ELR.
//!
//! A cancel reverts to the original replicas: the ones being added leave
//! the ISR at once. Where Kafka elects a new leader in the same change, a
//! leader that is itself being added hands over to an original replica in
//! the ISR first, by a leader change of its own; a cancel that would leave
//! no original replica in the ISR is refused, as Kafka refuses it without
//! unclean election.
//!
//! The decisions are pure functions of the partition ([`start`],
//! [`complete`], [`cancel`]); a `ChangePartitionReplicas` record carries
//! what they decided and applies only at the partition epoch it was
//! computed from.
//!
//! Invariants of an applied change: `replicas` is non-empty without
//! duplicates; `adding_replicas` and `removing_replicas` are disjoint
//! subsets of it; the leader stays a replica and in the ISR; the ISR only
//! loses members (joining is `UpdateIsr`'s, with its KIP-903 checks) and
//! is never emptied.

use super::{
    ApplyError, MetadataImage, PartitionInfo,
    partitions::{check_leader_and_isr, first_duplicate, next_partition_epoch},
};
use crate::records::ChangePartitionReplicas;

/// Why a reassignment cannot be started or cancelled, in Kafka's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReassignmentError {
    #[error("The manual partition assignment includes an empty replica list.")]
    EmptyReplicas,
    #[error("The manual partition assignment includes the broker {0} more than once.")]
    DuplicateReplica(i32),
    #[error(
        "The manual partition assignment includes broker {0}, but no such broker is registered."
    )]
    UnknownBroker(i32),
    #[error("The replication factor is changed from {from} to {to}")]
    ReplicationFactorChanged { from: usize, to: usize },
    #[error("No partition reassignment is in progress.")]
    NotInProgress,
    #[error(
        "Unable to revert partition assignment for {topic}:{partition} because it would require \
         an unclean leader election."
    )]
    RevertNeedsUncleanElection { topic: String, partition: i32 },
    #[error(
        "Unable to change the replicas of {topic}:{partition}: its leader {leader}, a replica \
         being added, would leave, and no live replica in the ISR that stays could take over."
    )]
    LeaderBeingAdded {
        topic: String,
        partition: i32,
        leader: i32,
    },
}

impl PartitionInfo {
    /// Whether a reassignment is in progress.
    pub fn is_reassigning(&self) -> bool {
        !self.adding_replicas.is_empty() || !self.removing_replicas.is_empty()
    }

    /// The replicas before the reassignment in progress (all of them when
    /// none is).
    pub fn original_replicas(&self) -> Vec<i32> {
        without(&self.replicas, &self.adding_replicas)
    }

    /// The replicas once the reassignment in progress completes (all of
    /// them when none is).
    pub fn target_replicas(&self) -> Vec<i32> {
        without(&self.replicas, &self.removing_replicas)
    }
}

impl MetadataImage {
    /// Checks a reassignment's target as Kafka does, in Kafka's order: with
    /// `allow_replication_factor_change` false (KIP-860), as many replicas
    /// as the partition is heading for (its target, if a reassignment is in
    /// progress); then non-empty, and, broker by broker in id order,
    /// registered and not named twice.
    pub fn check_reassignment_target(
        &self,
        partition: &PartitionInfo,
        target: &[i32],
        allow_replication_factor_change: bool,
    ) -> Result<(), ReassignmentError> {
        let from = partition.target_replicas().len();
        if !allow_replication_factor_change && from != target.len() {
            return Err(ReassignmentError::ReplicationFactorChanged {
                from,
                to: target.len(),
            });
        }
        if target.is_empty() {
            return Err(ReassignmentError::EmptyReplicas);
        }
        let mut sorted = target.to_vec();
        sorted.sort_unstable();
        let mut previous = None;
        for id in sorted {
            if self.broker(id).is_none() {
                return Err(ReassignmentError::UnknownBroker(id));
            }
            if previous == Some(id) {
                return Err(ReassignmentError::DuplicateReplica(id));
            }
            previous = Some(id);
        }
        Ok(())
    }

    pub(super) fn change_partition_replicas(
        &mut self,
        r: &ChangePartitionReplicas,
    ) -> Result<(), ApplyError> {
        let current = self.partition_info(&r.topic, r.partition)?;
        if r.partition_epoch != current.partition_epoch {
            return Err(ApplyError::StalePartitionEpoch {
                expected: current.partition_epoch,
                got: r.partition_epoch,
            });
        }
        if r.replicas.is_empty() {
            return Err(ApplyError::NoReplicas);
        }
        for ids in [
            &r.replicas,
            &r.adding_replicas,
            &r.removing_replicas,
            &r.isr,
        ] {
            if let Some(twice) = first_duplicate(ids) {
                return Err(ApplyError::DuplicateReplica(twice));
            }
        }
        if let Some(&outsider) = r
            .adding_replicas
            .iter()
            .chain(&r.removing_replicas)
            .find(|id| !r.replicas.contains(id))
        {
            return Err(ApplyError::NotAReplica(outsider));
        }
        if let Some(&both) = r
            .adding_replicas
            .iter()
            .find(|id| r.removing_replicas.contains(id))
        {
            return Err(ApplyError::AddedAndRemoved(both));
        }
        if let Some(&unknown) = r.replicas.iter().find(|id| self.broker(**id).is_none()) {
            return Err(ApplyError::UnknownBroker(unknown));
        }
        check_leader_and_isr(&r.replicas, current.leader, &r.isr)?;
        if r.isr.is_empty() || (current.leader >= 0 && !r.isr.contains(&current.leader)) {
            return Err(ApplyError::LeaderNotInIsr(current.leader));
        }
        if let Some(&joining) = r.isr.iter().find(|id| !current.isr.contains(id)) {
            return Err(ApplyError::IneligibleIsrMember {
                node_id: joining,
                reason: "a replica change does not add to the ISR".to_string(),
            });
        }
        let elr = current
            .elr
            .iter()
            .copied()
            .filter(|id| r.replicas.contains(id) && !r.isr.contains(id))
            .collect();
        let partition = self.partition_mut(&r.topic, r.partition)?;
        partition.replicas = r.replicas.clone();
        partition.adding_replicas = r.adding_replicas.clone();
        partition.removing_replicas = r.removing_replicas.clone();
        partition.isr = r.isr.clone();
        partition.elr = elr;
        partition.partition_epoch = next_partition_epoch(partition.partition_epoch);
        Ok(())
    }
}

/// The change that moves `partition` of `topic` to `target` (checked with
/// [`MetadataImage::check_reassignment_target`]), completed at once when
/// the ISR already allows it; `None` when the replicas are already the
/// target and nothing is in progress.
///
/// Measured from the replicas before any reassignment in progress: the
/// adding replicas are the target's new ones, the removing replicas the
/// original ones the target leaves out. A replica an earlier reassignment
/// was adding that the new target leaves out is dropped at once, from the
/// ISR too (nothing depended on it); if it leads, it must hand over first
/// ([`ReassignmentError::LeaderBeingAdded`]).
pub fn start(
    topic: &str,
    partition: &PartitionInfo,
    target: &[i32],
) -> Result<Option<ChangePartitionReplicas>, ReassignmentError> {
    let abandoned = without(&partition.adding_replicas, target);
    if abandoned.contains(&partition.leader) {
        return Err(leader_being_added(topic, partition));
    }
    let original = partition.original_replicas();
    let mut removing: Vec<i32> = without(&partition.replicas, target)
        .into_iter()
        .filter(|id| !abandoned.contains(id))
        .collect();
    removing.sort_unstable();
    let mut adding = without(target, &original);
    adding.sort_unstable();
    let mut replicas = target.to_vec();
    replicas.extend(&removing);
    let unchanged = replicas == partition.replicas && adding.is_empty() && removing.is_empty();
    if unchanged && !partition.is_reassigning() {
        return Ok(None);
    }
    let started = PartitionInfo {
        replicas,
        adding_replicas: adding,
        removing_replicas: removing,
        isr: without(&partition.isr, &abandoned),
        ..partition.clone()
    };
    let change =
        complete(topic, &started).unwrap_or_else(|| change(topic, &started, started.isr.clone()));
    Ok(Some(change))
}

/// The change that completes the reassignment in progress, if it may
/// complete now: every target replica is in the ISR and the leader is one
/// of them (a leaving leader is moved first).
pub fn complete(topic: &str, partition: &PartitionInfo) -> Option<ChangePartitionReplicas> {
    if !partition.is_reassigning() || partition.leader < 0 {
        return None;
    }
    let target = partition.target_replicas();
    let ready =
        target.contains(&partition.leader) && target.iter().all(|id| partition.isr.contains(id));
    ready.then(|| {
        let completed = PartitionInfo {
            replicas: target,
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
            ..partition.clone()
        };
        change(
            topic,
            &completed,
            without(&partition.isr, &partition.removing_replicas),
        )
    })
}

/// The change that cancels the reassignment in progress: back to the
/// original replicas, without the ones being added in the ISR. A leader
/// that is being added must hand over to an original replica first
/// ([`ReassignmentError::LeaderBeingAdded`]), by a leader change of its
/// own, so its successor waits for it to follow.
pub fn cancel(
    topic: &str,
    partition: &PartitionInfo,
) -> Result<ChangePartitionReplicas, ReassignmentError> {
    if !partition.is_reassigning() {
        return Err(ReassignmentError::NotInProgress);
    }
    if partition.adding_replicas.contains(&partition.leader) {
        return Err(leader_being_added(topic, partition));
    }
    let isr = without(&partition.isr, &partition.adding_replicas);
    if isr.is_empty() {
        return Err(ReassignmentError::RevertNeedsUncleanElection {
            topic: topic.to_string(),
            partition: partition.partition,
        });
    }
    let reverted = PartitionInfo {
        replicas: partition.original_replicas(),
        adding_replicas: Vec::new(),
        removing_replicas: Vec::new(),
        ..partition.clone()
    };
    Ok(change(topic, &reverted, isr))
}

/// The record that gives `partition` of `topic` the replica set of `to`
/// with `isr`, from the partition epoch of `to`.
fn change(topic: &str, to: &PartitionInfo, isr: Vec<i32>) -> ChangePartitionReplicas {
    ChangePartitionReplicas {
        topic: topic.to_string(),
        partition: to.partition,
        partition_epoch: to.partition_epoch,
        replicas: to.replicas.clone(),
        adding_replicas: to.adding_replicas.clone(),
        removing_replicas: to.removing_replicas.clone(),
        isr,
    }
}

fn leader_being_added(topic: &str, partition: &PartitionInfo) -> ReassignmentError {
    ReassignmentError::LeaderBeingAdded {
        topic: topic.to_string(),
        partition: partition.partition,
        leader: partition.leader,
    }
}

/// `ids` without the members of `gone`, in order.
fn without(ids: &[i32], gone: &[i32]) -> Vec<i32> {
    ids.iter()
        .copied()
        .filter(|id| !gone.contains(id))
        .collect()
}

#[cfg(test)]
mod tests;
