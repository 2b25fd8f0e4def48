//! The leadership side of hosting replicas: every replica learns a new
//! leader epoch as soon as the metadata names it, before any role change,
//! and a broker taking a leadership learns whom it must wait for before
//! taking writes (see `replication::succession`).

use std::sync::{PoisonError, atomic::Ordering};

use keel_raft_metadata::{MetadataImage, PartitionInfo};

use super::ReplicaManager;
use crate::{partition::Partition, replication::succession::Succession};

impl ReplicaManager {
    /// Whether a partition of `topic` hosted here leads and takes no write
    /// yet, waiting for earlier leaders to stop.
    pub(super) fn awaits_succession(&self, topic: &str) -> bool {
        let topics = self.topics.read().unwrap_or_else(PoisonError::into_inner);
        topics
            .get(topic)
            .is_some_and(|t| t.partitions.values().any(|p| p.awaits_succession()))
    }

    /// Every local replica learns the leader epoch `image` names for it,
    /// before any role changes and without waiting for a log's lock (a
    /// slow append may hold one for long) or for a reconciliation in
    /// progress: from then on this broker acknowledges no write it
    /// appended as a leader since deposed, and its heartbeats say it has
    /// taken the leadership changes of `image`.
    pub fn learn_leader_epochs(&self, image: &MetadataImage) {
        {
            let topics = self.topics.read().unwrap_or_else(PoisonError::into_inner);
            for topic in image.topics() {
                let Some(local) = topics.get(&topic.name).filter(|l| l.id == topic.id) else {
                    continue;
                };
                for info in &topic.partitions {
                    if let Some(partition) = local.partitions.get(&info.partition) {
                        partition.learn_leader_epoch(info.leader_epoch);
                    }
                }
            }
        }
        self.leadership_changes
            .fetch_max(image.next_history_sequence(), Ordering::AcqRel);
    }

    /// What this broker waits for before taking writes, should it take the
    /// leadership of `info` now: every other live replica's fetch in the
    /// new epoch (see `replication::succession`). A first leadership
    /// (leader epoch 0) has no predecessor.
    ///
    /// The previous leader is waited for even when it is no longer a
    /// replica (a reassignment removed it): it may still lead until it
    /// applies the change. For a leadership `partition` has already taken,
    /// who may still be waited for: every live broker but this one. A
    /// broker fenced since holds no lease; one that merely left the
    /// replicas may still lead, and is waited for as before.
    pub(super) fn succession(
        &self,
        image: &MetadataImage,
        info: &PartitionInfo,
        partition: &Partition,
        now_ms: i64,
    ) -> Succession {
        if info.leader != self.node_id || info.leader_epoch == 0 {
            return Succession::default();
        }
        let live = |id: &i32| *id != self.node_id && image.is_unfenced(*id);
        let taken = partition.is_leader() && partition.leader_epoch() == info.leader_epoch;
        let awaiting: Vec<i32> = if taken {
            image.brokers().map(|b| b.node_id).filter(live).collect()
        } else {
            info.replicas
                .iter()
                .copied()
                .chain(info.previous_leader)
                .filter(live)
                .collect()
        };
        Succession::new(
            awaiting,
            now_ms,
            self.succession_wait_ms,
            info.predecessor_lease_ms,
        )
    }
}
