//! The consumer protocol's own bytes inside the classic group protocol: a
//! member's subscription (JoinGroup metadata) and its assignment
//! (SyncGroup), each a version (i16) followed by the message at that
//! version. The coordinator reads them where it must understand classic
//! members (migration between the protocols, OffsetDelete) and writes them
//! where it assigns partitions to classic members itself.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::{
    messages::{
        ConsumerProtocolAssignment, ConsumerProtocolSubscription, TopicName,
        consumer_protocol_assignment::TopicPartition,
    },
    protocol::{Decodable, Encodable, StrBytes},
};

/// The newest version of either message this broker reads and writes.
const NEWEST_VERSION: i16 = 3;

/// Partitions by topic name, as the embedded messages carry them.
pub(crate) type NamedPartitions = Vec<(String, Vec<i32>)>;

/// A member's subscription as its JoinGroup metadata gives it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct EmbeddedSubscription {
    /// The version the member wrote, which its assignment is answered in.
    pub(crate) version: i16,
    pub(crate) topics: Vec<String>,
    /// What the member says it owns (version 1 on; eager members say
    /// nothing).
    pub(crate) owned: NamedPartitions,
}

/// The version at the front of embedded bytes, within what this broker
/// reads; `None` if there is no version.
fn version_of(bytes: &mut Bytes) -> Option<i16> {
    (bytes.remaining() >= 2).then(|| bytes.get_i16().clamp(0, NEWEST_VERSION))
}

/// Reads a subscription; `None` if the bytes are not one.
pub(crate) fn decode_subscription(bytes: &Bytes) -> Option<EmbeddedSubscription> {
    let mut bytes = bytes.clone();
    let version = version_of(&mut bytes)?;
    let subscription = ConsumerProtocolSubscription::decode(&mut bytes, version).ok()?;
    Some(EmbeddedSubscription {
        version,
        topics: subscription
            .topics
            .iter()
            .map(ToString::to_string)
            .collect(),
        owned: subscription
            .owned_partitions
            .iter()
            .map(|t| (t.topic.to_string(), t.partitions.clone()))
            .collect(),
    })
}

/// Reads an assignment; `None` if the bytes are not one.
pub(crate) fn decode_assignment(bytes: &Bytes) -> Option<NamedPartitions> {
    let mut bytes = bytes.clone();
    let version = version_of(&mut bytes)?;
    let assignment = ConsumerProtocolAssignment::decode(&mut bytes, version).ok()?;
    Some(
        assignment
            .assigned_partitions
            .iter()
            .map(|t| (t.topic.to_string(), t.partitions.clone()))
            .collect(),
    )
}

/// Writes an assignment at `version` (that of the member's subscription).
pub(crate) fn encode_assignment(version: i16, partitions: NamedPartitions) -> Bytes {
    let assignment = ConsumerProtocolAssignment::default().with_assigned_partitions(
        partitions
            .into_iter()
            .map(|(topic, partitions)| {
                TopicPartition::default()
                    .with_topic(TopicName(StrBytes::from_string(topic)))
                    .with_partitions(partitions)
            })
            .collect(),
    );
    with_version(&assignment, version.clamp(0, NEWEST_VERSION))
}

/// Writes a subscription to `topics` at version 0.
pub(crate) fn encode_subscription(topics: Vec<String>) -> Bytes {
    let subscription = ConsumerProtocolSubscription::default()
        .with_topics(topics.into_iter().map(StrBytes::from_string).collect());
    with_version(&subscription, 0)
}

/// The version a member's subscription metadata was written in, 0 when it
/// has none: what its assignment is written in.
pub(crate) fn subscription_version(metadata: &Bytes) -> i16 {
    version_of(&mut metadata.clone()).unwrap_or(0)
}

fn with_version(message: &impl Encodable, version: i16) -> Bytes {
    let mut out = BytesMut::new();
    out.put_i16(version);
    // Encoding a message built here at a version this broker knows cannot
    // fail; empty bytes are the fallback all the same.
    match message.encode(&mut out, version) {
        Ok(()) => out.freeze(),
        Err(_) => Bytes::new(),
    }
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::consumer_protocol_subscription::TopicPartition as Owned;

    use super::*;

    #[test]
    fn a_subscription_with_owned_partitions_is_read_at_its_version() {
        let subscription = ConsumerProtocolSubscription::default()
            .with_topics(vec![StrBytes::from_static_str("t")])
            .with_owned_partitions(vec![
                Owned::default()
                    .with_topic(TopicName(StrBytes::from_static_str("t")))
                    .with_partitions(vec![0, 2]),
            ]);
        let bytes = with_version(&subscription, 1);
        assert_eq!(
            decode_subscription(&bytes),
            Some(EmbeddedSubscription {
                version: 1,
                topics: vec!["t".into()],
                owned: vec![("t".into(), vec![0, 2])],
            })
        );
        assert_eq!(subscription_version(&bytes), 1);
    }

    #[test]
    fn an_assignment_round_trips_and_empty_bytes_are_none() {
        let bytes = encode_assignment(3, vec![("t".into(), vec![1, 3])]);
        assert_eq!(
            decode_assignment(&bytes),
            Some(vec![("t".into(), vec![1, 3])])
        );
        assert_eq!(decode_assignment(&Bytes::new()), None);
    }

    #[test]
    fn bytes_that_are_no_message_are_refused() {
        let garbage = Bytes::from_static(&[0, 0, 0xff, 0xff, 0xff]);
        assert_eq!(decode_subscription(&garbage), None);
        assert_eq!(decode_assignment(&garbage), None);
        assert_eq!(decode_subscription(&Bytes::from_static(&[1])), None);
    }
}
