//! What brokers report of their replicas' logs in their heartbeats, as the
//! controller keeps it: for the election's choice of the most caught-up
//! candidate and for the leadership history.

use std::{collections::HashMap, sync::PoisonError};

use keel_leader_elector::plan::ReplicaProgress;
use keel_raft_metadata::MetadataImage;

use crate::broker::Broker;

/// What is known here of `replica`'s log of `partition` of `topic`: this
/// broker's own if it is that replica, else the replica's last report if
/// this node is the controller that heard it.
pub fn replica_log(
    broker: &Broker,
    topic: &str,
    partition: i32,
    replica: i32,
) -> Option<ReplicaProgress> {
    if replica == broker.config.node_id {
        let local = broker.replicas.get(topic, partition)?;
        return Some(ReplicaProgress {
            leader_epoch: local.leader_epoch(),
            log_end_offset: local.log_end_offset(),
            high_watermark: local.high_watermark(),
        });
    }
    let state = broker
        .controller
        .state
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    reported(&broker.image(), &state.progress, topic, partition, replica)
}

/// `replica`'s last report of its log of `partition` of `topic`, if its
/// current incarnation made it.
pub(super) fn reported(
    image: &MetadataImage,
    progress: &HashMap<(String, i32, i32), (u64, ReplicaProgress)>,
    topic: &str,
    partition: i32,
    replica: i32,
) -> Option<ReplicaProgress> {
    let incarnation = image.broker(replica)?.incarnation;
    progress
        .get(&(topic.to_string(), partition, replica))
        .filter(|(reported_by, _)| *reported_by == incarnation)
        .map(|(_, progress)| *progress)
}
