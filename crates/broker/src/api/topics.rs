//! Rules shared by the handlers: topic names, finding the local leader
//! replica of a partition, and how a partition's leader and replicas, and
//! the controller, are described to clients.

use std::{sync::Arc, time::Duration};

use kafka_protocol::{
    messages::{BrokerId, TopicName},
    protocol::StrBytes,
};

use crate::{
    broker::Broker,
    error::PartitionError,
    partition::{Partition, check_leader_epoch},
};
use keel_raft_metadata::{MetadataImage, PartitionInfo};

/// How long an admin change waits for the metadata quorum when the request
/// does not say (Kafka's default request timeout).
const DEFAULT_ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The timeout of an admin request: its own `timeout_ms` when positive.
pub(crate) fn admin_timeout(timeout_ms: i32) -> Duration {
    match u64::try_from(timeout_ms) {
        Ok(ms) if ms > 0 => Duration::from_millis(ms),
        _ => DEFAULT_ADMIN_TIMEOUT,
    }
}

/// Kafka's limit on topic name length.
const MAX_NAME_LEN: usize = 249;

/// Checks a topic name against Kafka's rules.
pub(crate) fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("topic name is empty".into());
    }
    if name == "." || name == ".." {
        return Err(format!("topic name cannot be '{name}'"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "topic name is {} characters long, the limit is {MAX_NAME_LEN}",
            name.len()
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "topic name '{name}' contains '{bad}'; only ASCII letters, digits, '.', '_' and '-' are allowed"
        ));
    }
    Ok(())
}

/// Topics whose names differ only in '.' versus '_' collide in metric names;
/// Kafka refuses the second one.
pub(crate) fn colliding_topic<'a>(image: &'a MetadataImage, name: &str) -> Option<&'a str> {
    let normalise = |n: &str| n.replace('.', "_");
    let wanted = normalise(name);
    image
        .topics()
        .map(|t| t.name.as_str())
        .find(|existing| *existing != name && normalise(existing) == wanted)
}

/// The controller as clients are told it: the broker they send admin
/// requests to. Any broker takes them (it proposes through the quorum), so
/// while there is an active controller this is that controller if it is a
/// live broker of `image`, and otherwise this broker, as Kafka's brokers
/// name a live broker of theirs. Naming a node missing from the brokers of
/// the same answer would leave librdkafka's admin client waiting for a
/// broker it cannot find until its request times out. Without an active
/// controller it is -1: clients then wait on their side, rather than park
/// an admin request here that would hold up every later request of their
/// connection until it times out.
pub(crate) fn controller_for_clients(broker: &Broker, image: &MetadataImage) -> i32 {
    let live = |id: i32| image.is_unfenced(id);
    let controller = broker.controller_id();
    if controller < 0 || live(controller) {
        controller
    } else if live(broker.config.node_id) {
        broker.config.node_id
    } else {
        -1
    }
}

/// The partition's leader as clients are told it: a leader that is fenced
/// or not registered cannot be reached, so the partition has none until the
/// controller elects one.
pub(crate) fn live_leader(image: &MetadataImage, partition: &PartitionInfo) -> Option<i32> {
    image
        .is_unfenced(partition.leader)
        .then_some(partition.leader)
}

/// The replicas on brokers that are not registered or are fenced.
pub(crate) fn offline_replicas(image: &MetadataImage, partition: &PartitionInfo) -> Vec<BrokerId> {
    partition
        .replicas
        .iter()
        .filter(|id| image.broker(**id).is_none_or(|b| b.fenced))
        .map(|id| BrokerId(*id))
        .collect()
}

/// A topic name as the protocol carries it.
pub(crate) fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

/// Broker ids as the protocol carries them.
pub(crate) fn broker_ids(ids: &[i32]) -> Vec<BrokerId> {
    ids.iter().map(|id| BrokerId(*id)).collect()
}

/// The local replica of a partition this broker leads.
pub(crate) fn leader_replica(
    broker: &Broker,
    image: &MetadataImage,
    topic: &str,
    partition: i32,
    current_leader_epoch: i32,
) -> Result<Arc<Partition>, PartitionError> {
    let info = image
        .topic(topic)
        .and_then(|t| t.partition(partition))
        .ok_or(PartitionError::UnknownTopicOrPartition)?;
    if info.leader < 0 {
        return Err(PartitionError::LeaderNotAvailable);
    }
    if info.leader != broker.config.node_id {
        return Err(PartitionError::NotLeader);
    }
    check_leader_epoch(current_leader_epoch, info.leader_epoch)?;
    broker
        .replicas
        .get(topic, partition)
        .ok_or(PartitionError::NotLeader)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafkas_rules() {
        assert!(validate_topic_name("orders.v1_eu-west").is_ok());
        for bad in ["", ".", "..", "a b", "ü", &"x".repeat(250)] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?} accepted");
        }
    }
}
