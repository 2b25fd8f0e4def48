//! How a group under the consumer protocol is stored: its epochs and
//! subscribed topics in the group record (`GroupValue.consumer`), each
//! member in a record of its own, so that a heartbeat writes only what it
//! changed. Topic ids are their 16 bytes.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use prost::Message;
use uuid::Uuid;

use super::{Entry, KeyKind, StoredKey, group_entry, versioned};
use crate::group::{
    consumer::{
        ClassicProtocols, ConsumerGroup, ConsumerSnapshot, MemberSnapshot, Partitions, TopicShape,
    },
    state::Group,
};

#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct ConsumerGroupValue {
    #[prost(int32, tag = "1")]
    epoch: i32,
    #[prost(int32, tag = "2")]
    assignment_epoch: i32,
    #[prost(message, repeated, tag = "3")]
    topics: Vec<SubscribedTopicValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct ConsumerMemberKey {
    #[prost(string, tag = "1")]
    pub(super) group: String,
    #[prost(string, tag = "2")]
    pub(super) member_id: String,
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
    #[prost(bool, tag = "13")]
    away: bool,
    #[prost(string, repeated, tag = "14")]
    subscribed_names: Vec<String>,
    #[prost(string, optional, tag = "15")]
    subscribed_regex: Option<String>,
    /// Set for a member under the classic protocol.
    #[prost(message, optional, tag = "16")]
    classic: Option<ClassicProtocolsValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ClassicProtocolsValue {
    #[prost(int32, tag = "1")]
    session_timeout_ms: i32,
    #[prost(message, repeated, tag = "2")]
    protocols: Vec<ClassicProtocolValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ClassicProtocolValue {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(bytes = "bytes", tag = "2")]
    metadata: Bytes,
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

pub(super) fn encode_group(snapshot: &ConsumerSnapshot) -> ConsumerGroupValue {
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
    }
}

/// The epochs and topics of a group record, without members.
pub(super) fn decode_group(value: ConsumerGroupValue) -> ConsumerSnapshot {
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
        members: Vec::new(),
    }
}

fn member_entry(group: &str, member_id: &str, member: Option<&MemberSnapshot>) -> Entry {
    let key = StoredKey {
        kind: Some(KeyKind::ConsumerMember(ConsumerMemberKey {
            group: group.to_string(),
            member_id: member_id.to_string(),
        })),
    };
    Entry {
        key: versioned(&key),
        value: member.map(|m| {
            versioned(&ConsumerMemberValue {
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
                away: m.away,
                subscribed_names: m.subscribed_names.clone(),
                subscribed_regex: m.subscribed_regex.clone(),
                classic: m.classic.as_ref().map(|c| ClassicProtocolsValue {
                    session_timeout_ms: c.session_timeout_ms,
                    protocols: c
                        .protocols
                        .iter()
                        .map(|(name, metadata)| ClassicProtocolValue {
                            name: name.clone(),
                            metadata: metadata.clone(),
                        })
                        .collect(),
                }),
            })
        }),
    }
}

pub(super) fn decode_member(bytes: &[u8]) -> Option<MemberSnapshot> {
    let m = ConsumerMemberValue::decode(bytes).ok()?;
    Some(MemberSnapshot {
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
        away: m.away,
        subscribed_names: m.subscribed_names,
        subscribed_regex: m.subscribed_regex,
        classic: m.classic.map(|c| ClassicProtocols {
            session_timeout_ms: c.session_timeout_ms,
            protocols: c
                .protocols
                .into_iter()
                .map(|p| (p.name, p.metadata))
                .collect(),
        }),
    })
}

/// The records that take the stored group from `before` to what `group`
/// holds now: each new or changed member, a tombstone for each member
/// gone, and the group record if its epochs or topics moved or
/// `migrated` says the group moved between the protocols (a tombstone if
/// nothing is left of the group).
pub(crate) fn consumer_entries(
    group: &Group,
    before: &ConsumerSnapshot,
    migrated: bool,
) -> Vec<Entry> {
    let after = group
        .consumer
        .as_ref()
        .map(ConsumerGroup::snapshot)
        .unwrap_or_default();
    let old: BTreeMap<&str, &MemberSnapshot> =
        before.members.iter().map(|m| (m.id.as_str(), m)).collect();
    let new: BTreeMap<&str, &MemberSnapshot> =
        after.members.iter().map(|m| (m.id.as_str(), m)).collect();
    let mut entries: Vec<Entry> = new
        .iter()
        .filter(|(id, member)| old.get(*id) != Some(*member))
        .map(|(id, member)| member_entry(&group.id, id, Some(member)))
        .collect();
    entries.extend(
        old.keys()
            .filter(|id| !new.contains_key(*id))
            .map(|id| member_entry(&group.id, id, None)),
    );
    let moved = (before.epoch, before.assignment_epoch, &before.topics)
        != (after.epoch, after.assignment_epoch, &after.topics);
    if group.is_vacant() {
        entries.push(group_entry(group, true));
    } else if moved || migrated {
        entries.push(group_entry(group, false));
    }
    entries
}
