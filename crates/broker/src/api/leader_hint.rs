//! KIP-951 leader hints: with NOT_LEADER_OR_FOLLOWER, Produce (v10+) and
//! Fetch (v16+) name the current leader and its endpoint so the client can
//! re-route without a metadata round trip.

use std::collections::BTreeMap;

use keel_raft_metadata::{BrokerInfo, MetadataImage};

/// The leader of a partition as the image knows it: `(leader, epoch)`, or
/// `(-1, -1)` if unknown.
pub(crate) fn current_leader(image: &MetadataImage, topic: &str, partition: i32) -> (i32, i32) {
    image
        .topic(topic)
        .and_then(|t| t.partition(partition))
        .map_or((-1, -1), |p| (p.leader, p.leader_epoch))
}

/// Collects the endpoints of the leaders named in a response.
#[derive(Debug, Default)]
pub(crate) struct Endpoints(BTreeMap<i32, BrokerInfo>);

impl Endpoints {
    pub(crate) fn add(&mut self, image: &MetadataImage, node_id: i32) {
        if let Some(broker) = image.broker(node_id) {
            self.0.insert(node_id, broker.clone());
        }
    }

    pub(crate) fn into_brokers(self) -> impl Iterator<Item = BrokerInfo> {
        self.0.into_values()
    }
}
