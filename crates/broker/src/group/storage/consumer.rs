//! How a group under the consumer protocol is kept in its group record:
//! `GroupValue.consumer`, the state machine's snapshot as prost messages.
//! Topic ids are their 16 bytes.

use std::collections::BTreeSet;

use uuid::Uuid;

use crate::group::consumer::{ConsumerSnapshot, MemberSnapshot, Partitions, TopicShape};

#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct ConsumerGroupValue {
    #[prost(int32, tag = "1")]
    epoch: i32,
    #[prost(int32, tag = "2")]
    assignment_epoch: i32,
    #[prost(message, repeated, tag = "3")]
    members: Vec<ConsumerMemberValue>,
    #[prost(message, repeated, tag = "4")]
    topics: Vec<SubscribedTopicValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SubscribedTopicValue {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(bytes = "vec", tag = "2")]
    topic_id: Vec<u8>,
    #[prost(int32, tag = "3")]
    partitions: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ConsumerMemberValue {
    #[prost(string, tag = "1")]
    member_id: String,
    #[prost(string, optional, tag = "2")]
    instance_id: Option<String>,
    #[prost(string, tag = "3")]
    client_id: String,
    #[prost(string, tag = "4")]
    client_host: String,
    #[prost(string, repeated, tag = "5")]
    subscribed_topics: Vec<String>,
    #[prost(string, optional, tag = "6")]
    server_assignor: Option<String>,
    #[prost(int32, tag = "7")]
    rebalance_timeout_ms: i32,
    #[prost(int32, tag = "8")]
    member_epoch: i32,
    #[prost(int32, tag = "9")]
    previous_epoch: i32,
    #[prost(message, repeated, tag = "10")]
    assigned: Vec<TopicPartitionsValue>,
    #[prost(message, repeated, tag = "11")]
    revoking: Vec<TopicPartitionsValue>,
    #[prost(message, repeated, tag = "12")]
    target: Vec<TopicPartitionsValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct TopicPartitionsValue {
    #[prost(bytes = "vec", tag = "1")]
    topic_id: Vec<u8>,
    #[prost(int32, repeated, tag = "2")]
    partitions: Vec<i32>,
}

fn encode_partitions(partitions: &Partitions) -> Vec<TopicPartitionsValue> {
    partitions
        .iter()
        .map(|(topic_id, set)| TopicPartitionsValue {
            topic_id: topic_id.as_bytes().to_vec(),
            partitions: set.iter().copied().collect(),
        })
        .collect()
}

/// Entries whose topic id is not 16 bytes are dropped.
fn decode_partitions(values: Vec<TopicPartitionsValue>) -> Partitions {
    values
        .into_iter()
        .filter_map(|v| {
            let id = Uuid::from_slice(&v.topic_id).ok()?;
            Some((id, v.partitions.into_iter().collect::<BTreeSet<i32>>()))
        })
        .collect()
}

pub(super) fn encode(snapshot: &ConsumerSnapshot) -> ConsumerGroupValue {
    ConsumerGroupValue {
        epoch: snapshot.epoch,
        assignment_epoch: snapshot.assignment_epoch,
        topics: snapshot
            .topics
            .iter()
            .map(|(name, shape)| SubscribedTopicValue {
                name: name.clone(),
                topic_id: shape.id.as_bytes().to_vec(),
                partitions: shape.partitions,
            })
            .collect(),
        members: snapshot
            .members
            .iter()
            .map(|m| ConsumerMemberValue {
                member_id: m.id.clone(),
                instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                subscribed_topics: m.subscribed_topics.clone(),
                server_assignor: m.server_assignor.clone(),
                rebalance_timeout_ms: m.rebalance_timeout_ms,
                member_epoch: m.member_epoch,
                previous_epoch: m.previous_epoch,
                assigned: encode_partitions(&m.assigned),
                revoking: encode_partitions(&m.revoking),
                target: encode_partitions(&m.target),
            })
            .collect(),
    }
}

pub(super) fn decode(value: ConsumerGroupValue) -> ConsumerSnapshot {
    ConsumerSnapshot {
        epoch: value.epoch,
        assignment_epoch: value.assignment_epoch,
        topics: value
            .topics
            .into_iter()
            .filter_map(|t| {
                let id = Uuid::from_slice(&t.topic_id).ok()?;
                Some((
                    t.name,
                    TopicShape {
                        id,
                        partitions: t.partitions,
                    },
                ))
            })
            .collect(),
        members: value
            .members
            .into_iter()
            .map(|m| MemberSnapshot {
                id: m.member_id,
                instance_id: m.instance_id,
                client_id: m.client_id,
                client_host: m.client_host,
                subscribed_topics: m.subscribed_topics,
                server_assignor: m.server_assignor,
                rebalance_timeout_ms: m.rebalance_timeout_ms,
                member_epoch: m.member_epoch,
                previous_epoch: m.previous_epoch,
                assigned: decode_partitions(m.assigned),
                revoking: decode_partitions(m.revoking),
                target: decode_partitions(m.target),
            })
            .collect(),
    }
}
