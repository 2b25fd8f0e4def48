//! The internal topic `__consumer_offsets`. The broker creates it the first
//! time a group needs a coordinator (or a client names it in Metadata with
//! auto-creation on), compacted, with the configured partition count and
//! `offsets.topic.replication.factor` replicas, capped at the live brokers
//! then (as Kafka does), so a group's state survives the loss of a broker.
//! Clients cannot create, delete or grow it: every group lives in the
//! partition its id hashes to, so a changed partition count or a deleted
//! topic would lose every group's offsets.

use std::{collections::BTreeMap, time::Duration};

use super::create_topics::{TopicSpec, create_topic};
use crate::{broker::Broker, error::AdminError, group::storage::OFFSETS_TOPIC};

/// Segment size of `__consumer_offsets` (Kafka's `offsets.topic.segment.bytes`).
const SEGMENT_BYTES: u64 = 100 * 1024 * 1024;

/// Creates `__consumer_offsets` unless it exists.
pub(super) async fn ensure_offsets_topic(
    broker: &Broker,
    timeout: Duration,
) -> Result<(), AdminError> {
    if broker.image().topic(OFFSETS_TOPIC).is_some() {
        return Ok(());
    }
    let live_brokers = broker.image().live_brokers().count().max(1);
    let replication_factor = broker
        .config
        .offsets_topic_replication_factor
        .min(i16::try_from(live_brokers).unwrap_or(i16::MAX));
    let spec = TopicSpec {
        name: OFFSETS_TOPIC.to_string(),
        num_partitions: broker.groups.partitions(),
        replication_factor,
        configs: BTreeMap::from([
            ("cleanup.policy".to_string(), "compact".to_string()),
            ("segment.bytes".to_string(), SEGMENT_BYTES.to_string()),
        ]),
        ..TopicSpec::default()
    };
    match create_topic(broker, spec, false, timeout).await {
        Ok(_) | Err(AdminError::TopicExists(_)) => Ok(()),
        Err(error) => Err(error),
    }
}

/// Refuses a client's `action` on the internal topic.
pub(super) fn refuse_client_change(topic: &str, action: &str) -> Result<(), AdminError> {
    if topic == OFFSETS_TOPIC {
        return Err(AdminError::InvalidRequest(format!(
            "{OFFSETS_TOPIC} is internal to the group coordinator; clients cannot {action} it"
        )));
    }
    Ok(())
}
