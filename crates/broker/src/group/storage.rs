//! What the group coordinator keeps in `__consumer_offsets`: ordinary
//! Kafka record batches whose keys and values are prost messages, so the
//! topic's compaction keeps exactly the latest state of every key.
//!
//! - key `OffsetKey {group, topic, partition}` → `OffsetValue`, or a
//!   tombstone when the offset is deleted or expires;
//! - key `GroupKey {group}` → `GroupValue` (generation, protocol, leader,
//!   members with their subscription and assignment, and the members of
//!   the epochs and subscribed topics of the consumer protocol), or a
//!   tombstone when the group is deleted;
//! - key `ConsumerMemberKey {group, member}` → one member under the
//!   consumer protocol with its epochs, assignment and target, or a
//!   tombstone when it leaves. One record per member keeps what a
//!   heartbeat writes small, whatever the size of the group.
//!
//! Keys and values start with a version byte (0). A group lives in
//! partition `abs(java_hash(group)) % partitions`, as in Kafka, and the
//! coordinator of a group is the leader of that partition.

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use prost::Message;

mod consumer;

pub(crate) use self::consumer::consumer_entries;
use super::{
    consumer::{ConsumerSnapshot, MemberSnapshot},
    state::{CommittedOffset, Group, RestoredMember},
};

/// The internal topic.
pub(crate) const OFFSETS_TOPIC: &str = "__consumer_offsets";
const FORMAT_VERSION: u8 = 0;

#[derive(Clone, PartialEq, prost::Message)]
struct StoredKey {
    #[prost(oneof = "KeyKind", tags = "1, 2, 3")]
    kind: Option<KeyKind>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum KeyKind {
    #[prost(message, tag = "1")]
    Offset(OffsetKey),
    #[prost(message, tag = "2")]
    Group(GroupKey),
    #[prost(message, tag = "3")]
    ConsumerMember(consumer::ConsumerMemberKey),
}

#[derive(Clone, PartialEq, prost::Message)]
struct OffsetKey {
    #[prost(string, tag = "1")]
    group: String,
    #[prost(string, tag = "2")]
    topic: String,
    #[prost(int32, tag = "3")]
    partition: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct GroupKey {
    #[prost(string, tag = "1")]
    group: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct OffsetValue {
    #[prost(int64, tag = "1")]
    offset: i64,
    #[prost(int32, tag = "2")]
    leader_epoch: i32,
    #[prost(string, tag = "3")]
    metadata: String,
    #[prost(int64, tag = "4")]
    commit_timestamp_ms: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct GroupValue {
    #[prost(string, optional, tag = "1")]
    protocol_type: Option<String>,
    #[prost(string, optional, tag = "2")]
    protocol_name: Option<String>,
    #[prost(int32, tag = "3")]
    generation: i32,
    #[prost(string, optional, tag = "4")]
    leader: Option<String>,
    #[prost(message, repeated, tag = "5")]
    members: Vec<MemberValue>,
    /// When the group last became empty, so offset expiry does not start
    /// over when a coordinator loads the group.
    #[prost(int64, tag = "6")]
    empty_since_ms: i64,
    /// Members under the consumer protocol, if the group has that kind.
    #[prost(message, optional, tag = "7")]
    consumer: Option<consumer::ConsumerGroupValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct MemberValue {
    #[prost(string, tag = "1")]
    member_id: String,
    #[prost(string, optional, tag = "2")]
    instance_id: Option<String>,
    #[prost(string, tag = "3")]
    client_id: String,
    #[prost(string, tag = "4")]
    client_host: String,
    #[prost(int32, tag = "5")]
    rebalance_timeout_ms: i32,
    #[prost(int32, tag = "6")]
    session_timeout_ms: i32,
    /// The subscription for the group's protocol.
    #[prost(bytes = "bytes", tag = "7")]
    subscription: Bytes,
    #[prost(bytes = "bytes", tag = "8")]
    assignment: Bytes,
}

/// One change to write: a key and its new value (`None`: delete).
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    key: Bytes,
    value: Option<Bytes>,
}

fn versioned(message: &impl Message) -> Bytes {
    let mut out = BytesMut::with_capacity(1 + message.encoded_len());
    out.extend_from_slice(&[FORMAT_VERSION]);
    out.extend_from_slice(&message.encode_to_vec());
    out.freeze()
}

fn unversioned(bytes: &[u8]) -> Option<&[u8]> {
    match bytes.split_first() {
        Some((&FORMAT_VERSION, rest)) => Some(rest),
        _ => None,
    }
}

/// Java's `String.hashCode`, which places groups in Kafka.
fn java_hash(s: &str) -> i32 {
    s.encode_utf16().fold(0i32, |h, unit| {
        h.wrapping_mul(31).wrapping_add(i32::from(unit))
    })
}

/// The `__consumer_offsets` partition holding `group`.
pub(crate) fn partition_for(group: &str, partitions: i32) -> i32 {
    // Kafka's Utils.abs: the absolute value, with i32::MIN taken as 0.
    let hash = java_hash(group);
    let magnitude = if hash == i32::MIN { 0 } else { hash.abs() };
    magnitude % partitions.max(1)
}

pub(crate) fn offset_entry(
    group: &str,
    topic: &str,
    partition: i32,
    value: Option<&CommittedOffset>,
) -> Entry {
    let key = StoredKey {
        kind: Some(KeyKind::Offset(OffsetKey {
            group: group.to_string(),
            topic: topic.to_string(),
            partition,
        })),
    };
    Entry {
        key: versioned(&key),
        value: value.map(|v| {
            versioned(&OffsetValue {
                offset: v.offset,
                leader_epoch: v.leader_epoch,
                metadata: v.metadata.clone(),
                commit_timestamp_ms: v.commit_timestamp_ms,
            })
        }),
    }
}

/// The group's membership as it stands, or a tombstone.
pub(crate) fn group_entry(group: &Group, deleted: bool) -> Entry {
    let key = StoredKey {
        kind: Some(KeyKind::Group(GroupKey {
            group: group.id.clone(),
        })),
    };
    let value = (!deleted).then(|| {
        let protocol = group.protocol_name.clone().unwrap_or_default();
        versioned(&GroupValue {
            protocol_type: group.protocol_type.clone(),
            protocol_name: group.protocol_name.clone(),
            generation: group.generation,
            leader: group.leader.clone(),
            members: group
                .members
                .values()
                .map(|m| MemberValue {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: m.session_timeout_ms,
                    subscription: m.metadata_for(&protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
            empty_since_ms: group.empty_since_ms,
            consumer: group
                .consumer
                .as_ref()
                .map(|c| consumer::encode_group(&c.header())),
        })
    });
    Entry {
        key: versioned(&key),
        value,
    }
}

/// Encodes entries as one uncompressed record batch.
pub(crate) fn encode_batch(entries: &[Entry], now_ms: i64) -> Vec<u8> {
    let records: Vec<Record> = entries
        .iter()
        .enumerate()
        .map(|(i, entry)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder keeps records in one batch while offset - sequence
            // is constant; the first sequence (-1) becomes "no sequence".
            sequence: i as i32 - 1,
            timestamp: now_ms,
            key: Some(entry.key.clone()),
            value: entry.value.clone(),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    match RecordBatchEncoder::encode(&mut buf, &records, &options) {
        Ok(()) => buf.to_vec(),
        Err(e) => unreachable!("encoding plain records into memory failed: {e}"),
    }
}

/// A stored change, decoded.
#[derive(Debug, Clone)]
pub(crate) enum Loaded {
    Offset {
        group: String,
        topic: String,
        partition: i32,
        value: Option<CommittedOffset>,
    },
    Group {
        group: String,
        value: Option<LoadedGroup>,
    },
    ConsumerMember {
        group: String,
        member_id: String,
        value: Option<MemberSnapshot>,
    },
}

#[derive(Debug, Clone)]
pub(crate) struct LoadedGroup {
    pub(crate) protocol_type: Option<String>,
    pub(crate) protocol_name: Option<String>,
    pub(crate) generation: i32,
    pub(crate) leader: Option<String>,
    pub(crate) members: Vec<RestoredMember>,
    pub(crate) empty_since_ms: i64,
    pub(crate) consumer: Option<ConsumerSnapshot>,
}

/// Decodes every record of a run of batches read from the partition.
/// Records that are not ours (an unknown version, a foreign producer) are
/// skipped.
pub(crate) fn decode_batches(bytes: Bytes) -> Vec<Loaded> {
    let mut buf = bytes;
    let Ok(batches) = RecordBatchDecoder::decode_all(&mut buf) else {
        return Vec::new();
    };
    batches
        .into_iter()
        .flat_map(|batch| batch.records)
        .filter_map(|record| decode_record(record.key.as_deref()?, record.value.as_deref()))
        .collect()
}

fn decode_record(key: &[u8], value: Option<&[u8]>) -> Option<Loaded> {
    let key = StoredKey::decode(unversioned(key)?).ok()?;
    match key.kind? {
        KeyKind::Offset(key) => {
            let value = match value {
                None => None,
                Some(bytes) => {
                    let v = OffsetValue::decode(unversioned(bytes)?).ok()?;
                    Some(CommittedOffset {
                        offset: v.offset,
                        leader_epoch: v.leader_epoch,
                        metadata: v.metadata,
                        commit_timestamp_ms: v.commit_timestamp_ms,
                    })
                }
            };
            Some(Loaded::Offset {
                group: key.group,
                topic: key.topic,
                partition: key.partition,
                value,
            })
        }
        KeyKind::Group(key) => {
            let value = match value {
                None => None,
                Some(bytes) => {
                    let v = GroupValue::decode(unversioned(bytes)?).ok()?;
                    let protocol = v.protocol_name.clone().unwrap_or_default();
                    Some(LoadedGroup {
                        protocol_type: v.protocol_type,
                        protocol_name: v.protocol_name,
                        generation: v.generation,
                        leader: v.leader,
                        members: v
                            .members
                            .into_iter()
                            .map(|m| RestoredMember {
                                id: m.member_id,
                                instance_id: m.instance_id,
                                client_id: m.client_id,
                                client_host: m.client_host,
                                rebalance_timeout_ms: m.rebalance_timeout_ms,
                                session_timeout_ms: m.session_timeout_ms,
                                protocols: vec![(protocol.clone(), m.subscription)],
                                assignment: m.assignment,
                            })
                            .collect(),
                        empty_since_ms: v.empty_since_ms,
                        consumer: v.consumer.map(consumer::decode_group),
                    })
                }
            };
            Some(Loaded::Group {
                group: key.group,
                value,
            })
        }
        KeyKind::ConsumerMember(key) => {
            let value = match value {
                None => None,
                Some(bytes) => Some(consumer::decode_member(unversioned(bytes)?)?),
            };
            Some(Loaded::ConsumerMember {
                group: key.group,
                member_id: key.member_id,
                value,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_land_where_kafka_puts_them() {
        // Values of Java's String.hashCode.
        assert_eq!(java_hash(""), 0);
        assert_eq!(java_hash("a"), 97);
        assert_eq!(java_hash("ab"), 97 * 31 + 98);
        assert_eq!(java_hash("hello"), 99_162_322);
        assert!((0..50).contains(&partition_for("any group", 50)));
        assert_eq!(partition_for("hello", 50), 99_162_322 % 50);
        // Negative hashes use the absolute value, not the low 31 bits.
        assert_eq!(java_hash("my-group"), -1_906_497_762);
        assert_eq!(partition_for("my-group", 50), 12);
        assert_eq!(java_hash("polygenelubricants"), i32::MIN);
        assert_eq!(partition_for("polygenelubricants", 50), 0);
    }

    #[test]
    fn entries_round_trip_through_a_batch() {
        let committed = CommittedOffset {
            offset: 42,
            leader_epoch: 3,
            metadata: "m".into(),
            commit_timestamp_ms: 7,
        };
        let entries = vec![
            offset_entry("g", "t", 1, Some(&committed)),
            offset_entry("g", "t", 2, None),
        ];
        let batch = encode_batch(&entries, 99);
        keel_log::batch::validate_client_batch(&batch).unwrap();
        let loaded = decode_batches(Bytes::from(batch));
        assert_eq!(loaded.len(), 2);
        match &loaded[0] {
            Loaded::Offset {
                group,
                topic,
                partition,
                value,
            } => {
                assert_eq!((group.as_str(), topic.as_str(), *partition), ("g", "t", 1));
                assert_eq!(value.as_ref(), Some(&committed));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            &loaded[1],
            Loaded::Offset {
                value: None,
                partition: 2,
                ..
            }
        ));
    }
}
