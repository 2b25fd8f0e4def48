//! DescribeTopicPartitions (KIP-966): the named topics, or every topic,
//! with each partition's leader, leader epoch, replicas, ISR, eligible
//! leader replicas and offline replicas, from the metadata image, one page
//! at a time.
//!
//! Answers as Apache Kafka 4 does: topics in name order, each described
//! once; at most `response_partition_limit` partitions per response, capped
//! at Kafka's default `max.request.partition.size.limit`; a `cursor` names
//! the topic and partition where a page starts, and `next_cursor` where the
//! next one does when the limit cut this one short. A named topic that does
//! not exist gets UNKNOWN_TOPIC_OR_PARTITION (INVALID_TOPIC_EXCEPTION for a
//! name Kafka would never accept) and takes no room in the page. A cursor
//! whose topic is not among the named ones is an invalid request: every
//! named topic gets INVALID_REQUEST.

use std::collections::BTreeSet;

use kafka_protocol::messages::{
    BrokerId, DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse,
    describe_topic_partitions_response::{
        Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
    },
};
use keel_raft_metadata::{MetadataImage, PartitionInfo, TopicInfo};

use super::{
    RequestContext, authorized_operations,
    topics::{broker_ids, live_leader, offline_replicas, topic_name, validate_topic_name},
};
use crate::{error::AdminError, group::storage::OFFSETS_TOPIC};

/// Kafka's default `max.request.partition.size.limit`: the most partitions
/// one response describes, whatever the request asks for.
const MAX_PARTITIONS_PER_RESPONSE: i32 = 2000;

pub(super) fn handle(
    ctx: &RequestContext<'_>,
    request: DescribeTopicPartitionsRequest,
) -> DescribeTopicPartitionsResponse {
    let requested: Vec<&str> = request.topics.iter().map(|t| t.name.as_str()).collect();
    let cursor = request
        .cursor
        .as_ref()
        .map(|c| (c.topic_name.as_str(), c.partition_index));
    let limit = request
        .response_partition_limit
        .min(MAX_PARTITIONS_PER_RESPONSE);
    match describe(&ctx.broker.image(), &requested, cursor, limit) {
        Ok(response) => response,
        Err(error) => {
            tracing::debug!(%error, "DescribeTopicPartitions refused");
            refused(&requested, &error)
        }
    }
}

/// The page of `requested` (every topic when empty) that starts at
/// `cursor` and describes at most `limit` partitions.
fn describe(
    image: &MetadataImage,
    requested: &[&str],
    cursor: Option<(&str, i32)>,
    limit: i32,
) -> Result<DescribeTopicPartitionsResponse, AdminError> {
    let every_topic = requested.is_empty();
    let (cursor_topic, cursor_partition) = cursor.unwrap_or(("", 0));
    // Topics named before the cursor's were described on earlier pages.
    let names: BTreeSet<&str> = if every_topic {
        image
            .topics()
            .map(|t| t.name.as_str())
            .filter(|name| *name >= cursor_topic)
            .collect()
    } else {
        requested
            .iter()
            .copied()
            .filter(|name| *name >= cursor_topic)
            .collect()
    };
    if cursor.is_some() && !every_topic && !names.contains(cursor_topic) {
        return Err(AdminError::InvalidRequest(format!(
            "the cursor names topic '{cursor_topic}', which is not among the topics requested"
        )));
    }

    let mut response = DescribeTopicPartitionsResponse::default();
    let mut room = limit;
    for name in names {
        let first = if name == cursor_topic {
            cursor_partition.max(0)
        } else {
            0
        };
        if room <= 0 {
            // The page is full; the next one starts here, whether or not
            // this topic exists.
            response.next_cursor = Some(next_cursor(name, first));
            break;
        }
        let Some(topic) = image.topic(name) else {
            response.topics.push(missing(name));
            continue;
        };
        let (described, next) = page_of_topic(image, topic, first, room);
        room -= i32::try_from(described.partitions.len()).unwrap_or(i32::MAX);
        response.topics.push(described);
        if let Some(next) = next {
            response.next_cursor = Some(next_cursor(name, next));
            break;
        }
    }
    Ok(response)
}

/// Up to `limit` partitions of `topic` from index `first` on, and the
/// index of the first partition left out, if any.
fn page_of_topic(
    image: &MetadataImage,
    topic: &TopicInfo,
    first: i32,
    limit: i32,
) -> (DescribeTopicPartitionsResponseTopic, Option<i32>) {
    // The image numbers a topic's partitions from 0 without gaps, so a
    // partition's index is its position.
    let start = usize::try_from(first).unwrap_or(0);
    let partitions: Vec<_> = topic
        .partitions
        .iter()
        .skip(start)
        .take(usize::try_from(limit).unwrap_or(0))
        .map(|p| describe_partition(image, p))
        .collect();
    let end = start.saturating_add(partitions.len());
    let next = (end < topic.partitions.len())
        .then(|| i32::try_from(end).ok())
        .flatten();
    // Keel has no authorizer: as in its Metadata answers, the authorized
    // operations stay unknown (i32::MIN) rather than claimed.
    let described = DescribeTopicPartitionsResponseTopic::default()
        .with_name(Some(topic_name(&topic.name)))
        .with_topic_id(topic.id)
        .with_is_internal(is_internal(&topic.name))
        .with_topic_authorized_operations(authorized_operations::TOPIC)
        .with_partitions(partitions);
    (described, next)
}

/// A partition as Kafka describes it: error 0 even without a leader (the
/// leader id -1 says so), every replica and ISR member whether or not its
/// broker is up, and the replicas whose broker is gone or fenced apart.
fn describe_partition(
    image: &MetadataImage,
    partition: &PartitionInfo,
) -> DescribeTopicPartitionsResponsePartition {
    DescribeTopicPartitionsResponsePartition::default()
        .with_partition_index(partition.partition)
        .with_leader_id(BrokerId(live_leader(image, partition).unwrap_or(-1)))
        .with_leader_epoch(partition.leader_epoch)
        .with_replica_nodes(broker_ids(&partition.replicas))
        .with_isr_nodes(broker_ids(&partition.isr))
        .with_eligible_leader_replicas(Some(broker_ids(&partition.elr)))
        // Keel does not keep the last known ELR of a partition whose ELR
        // emptied; it reports none.
        .with_last_known_elr(Some(Vec::new()))
        .with_offline_replicas(offline_replicas(image, partition))
}

/// A named topic the image does not hold.
fn missing(name: &str) -> DescribeTopicPartitionsResponseTopic {
    let error = match validate_topic_name(name) {
        Ok(()) => AdminError::UnknownTopic(name.to_string()),
        Err(reason) => AdminError::InvalidTopic(reason),
    };
    DescribeTopicPartitionsResponseTopic::default()
        .with_error_code(error.code().code())
        .with_name(Some(topic_name(name)))
        .with_is_internal(is_internal(name))
}

/// The answer to a request that cannot be served: every named topic with
/// the error, as Kafka's error response for this API has it.
fn refused(requested: &[&str], error: &AdminError) -> DescribeTopicPartitionsResponse {
    let code = error.code().code();
    DescribeTopicPartitionsResponse::default().with_topics(
        requested
            .iter()
            .map(|name| {
                DescribeTopicPartitionsResponseTopic::default()
                    .with_error_code(code)
                    .with_name(Some(topic_name(name)))
            })
            .collect(),
    )
}

fn next_cursor(topic: &str, partition: i32) -> Cursor {
    Cursor::default()
        .with_topic_name(topic_name(topic))
        .with_partition_index(partition)
}

fn is_internal(name: &str) -> bool {
    name == OFFSETS_TOPIC
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::test_image::{create_topic, partition, register};

    /// Broker 1, and topics "a" with 3 partitions and "b" with 2.
    fn image() -> MetadataImage {
        let mut image = MetadataImage::default();
        register(&mut image, 1, 1);
        for (id, name, count) in [(1u128, "a", 3), (2, "b", 2)] {
            let partitions = (0..count).map(|p| partition(p, &[1], 1, &[1])).collect();
            create_topic(&mut image, name, id, partitions, 0);
        }
        image
    }

    /// Topics by name with their partition indexes.
    type Topics = Vec<(String, Vec<i32>)>;

    /// The topics and partition indexes of a page, and its next cursor.
    fn page(
        requested: &[&str],
        cursor: Option<(&str, i32)>,
        limit: i32,
    ) -> (Topics, Option<(String, i32)>) {
        let response = describe(&image(), requested, cursor, limit).unwrap();
        let topics = response
            .topics
            .iter()
            .map(|t| {
                let name = t.name.as_ref().unwrap().to_string();
                (
                    name,
                    t.partitions.iter().map(|p| p.partition_index).collect(),
                )
            })
            .collect();
        let next = response
            .next_cursor
            .map(|c| (c.topic_name.to_string(), c.partition_index));
        (topics, next)
    }

    fn topics(pages: &[(&str, &[i32])]) -> Topics {
        pages
            .iter()
            .map(|(name, partitions)| (name.to_string(), partitions.to_vec()))
            .collect()
    }

    #[test]
    fn a_page_filled_at_a_topic_boundary_points_at_the_next_topic() {
        assert_eq!(
            page(&[], None, 3),
            (topics(&[("a", &[0, 1, 2])]), Some(("b".into(), 0)))
        );
        // The last topic filling the page leaves nothing to continue with.
        assert_eq!(
            page(&[], Some(("b", 0)), 2),
            (topics(&[("b", &[0, 1])]), None)
        );
    }

    #[test]
    fn an_empty_page_names_where_the_next_one_starts() {
        assert_eq!(
            page(&[], Some(("a", 1)), 0),
            (vec![], Some(("a".into(), 1)))
        );
        assert_eq!(page(&["b"], None, -5), (vec![], Some(("b".into(), 0))));
    }

    #[test]
    fn a_cursor_past_the_last_partition_describes_none_of_that_topic() {
        assert_eq!(
            page(&[], Some(("a", 7)), 10),
            (topics(&[("a", &[]), ("b", &[0, 1])]), None)
        );
        // A negative partition index starts at the first partition.
        assert_eq!(
            page(&["a"], Some(("a", -3)), 2),
            (topics(&[("a", &[0, 1])]), Some(("a".into(), 2)))
        );
    }

    #[test]
    fn a_cursor_outside_the_named_topics_is_an_invalid_request() {
        let error = describe(&image(), &["b"], Some(("a", 0)), 10).unwrap_err();
        assert!(matches!(error, AdminError::InvalidRequest(_)), "{error}");
        // Named topics before the cursor's were on earlier pages.
        assert_eq!(
            page(&["b", "a", "b"], Some(("b", 1)), 10),
            (topics(&[("b", &[1])]), None)
        );
    }
}
