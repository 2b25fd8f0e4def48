//! ConsumerGroupHeartbeat (KIP-848): joining, staying in and leaving a
//! group under the consumer protocol, whose assignment the coordinator
//! computes.

use std::collections::BTreeMap;

use kafka_protocol::{
    messages::{
        ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse,
        consumer_group_heartbeat_request::TopicPartitions as OwnedTopic,
        consumer_group_heartbeat_response::{Assignment, TopicPartitions},
    },
    protocol::StrBytes,
};

use super::RequestContext;
use crate::group::consumer::{ConsumerHeartbeat, Partitions};

/// From this version the member makes its own id.
const CLIENT_MEMBER_ID_VERSION: i16 = 1;

pub(super) fn handle(
    ctx: &RequestContext<'_>,
    request: ConsumerGroupHeartbeatRequest,
) -> ConsumerGroupHeartbeatResponse {
    let refused = |error: kafka_protocol::error::ResponseError, message: String| {
        ConsumerGroupHeartbeatResponse::default()
            .with_error_code(error.code())
            .with_error_message(Some(StrBytes::from_string(message)))
    };
    if request.group_id.is_empty() {
        return refused(
            kafka_protocol::error::ResponseError::InvalidRequest,
            "the group id is empty".into(),
        );
    }
    if ctx.version >= CLIENT_MEMBER_ID_VERSION
        && request.member_epoch == 0
        && request.member_id.is_empty()
    {
        return refused(
            kafka_protocol::error::ResponseError::InvalidRequest,
            "from version 1 a joining member names itself".into(),
        );
    }
    let heartbeat = ConsumerHeartbeat {
        member_id: request.member_id.to_string(),
        instance_id: request.instance_id.as_ref().map(ToString::to_string),
        member_epoch: request.member_epoch,
        rebalance_timeout_ms: request.rebalance_timeout_ms,
        subscribed_topics: request
            .subscribed_topic_names
            .as_ref()
            .map(|names| names.iter().map(|n| n.to_string()).collect()),
        subscribed_regex: request
            .subscribed_topic_regex
            .as_ref()
            .map(ToString::to_string),
        server_assignor: request.server_assignor.as_ref().map(ToString::to_string),
        owned: request.topic_partitions.as_deref().map(owned),
        client_id: ctx.client_id.clone(),
        client_host: ctx.client_host.to_string(),
    };
    let groups = &ctx.broker.groups;
    match groups.consumer_heartbeat(ctx.broker, &request.group_id, heartbeat) {
        Ok(outcome) => ConsumerGroupHeartbeatResponse::default()
            .with_member_id(Some(StrBytes::from_string(outcome.member_id)))
            .with_member_epoch(outcome.member_epoch)
            .with_heartbeat_interval_ms(
                groups.consumer_heartbeat_interval_ms(ctx.broker, &request.group_id),
            )
            .with_assignment(outcome.assignment.map(assignment)),
        Err(error) => refused(error, error.to_string()),
    }
}

fn owned(topics: &[OwnedTopic]) -> Partitions {
    let mut owned: Partitions = BTreeMap::new();
    for topic in topics {
        owned
            .entry(topic.topic_id)
            .or_default()
            .extend(topic.partitions.iter().copied());
    }
    owned
}

fn assignment(partitions: Partitions) -> Assignment {
    Assignment::default().with_topic_partitions(
        partitions
            .into_iter()
            .map(|(topic_id, partitions)| {
                TopicPartitions::default()
                    .with_topic_id(topic_id)
                    .with_partitions(partitions.into_iter().collect())
            })
            .collect(),
    )
}
