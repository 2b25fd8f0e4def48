//! OffsetFetch: a group's committed offsets, for the given partitions or
//! (v2+, topics null) all of them; -1 for partitions never committed.
//! From v8 several groups can be asked at once.

use kafka_protocol::{
    messages::{
        GroupId, OffsetFetchRequest, OffsetFetchResponse, TopicName,
        offset_fetch_response::{
            OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
            OffsetFetchResponseTopic, OffsetFetchResponseTopics,
        },
    },
    protocol::StrBytes,
};

use super::RequestContext;
use crate::group::state::CommittedOffset;

const TOP_LEVEL_ERROR_VERSION: i16 = 2;
const LEADER_EPOCH_VERSION: i16 = 5;
const BATCHED_VERSION: i16 = 8;

/// One topic's partitions and what each has committed, if anything.
type TopicOffsets = (String, Vec<(i32, Option<CommittedOffset>)>);

/// A fetched partition: topic, index and what it has committed, if anything.
type Row = (String, i32, Option<CommittedOffset>);

/// Groups fetched rows by topic, keeping first-seen order.
fn by_topic(rows: Vec<Row>) -> Vec<TopicOffsets> {
    let mut topics: Vec<TopicOffsets> = Vec::new();
    for (topic, partition, committed) in rows {
        match topics.iter_mut().find(|(t, _)| *t == topic) {
            Some((_, partitions)) => partitions.push((partition, committed)),
            None => topics.push((topic, vec![(partition, committed)])),
        }
    }
    topics
}

pub(super) fn handle(ctx: &RequestContext<'_>, request: OffsetFetchRequest) -> OffsetFetchResponse {
    let version = ctx.version;
    if version >= BATCHED_VERSION {
        let groups = request
            .groups
            .iter()
            .map(|group| {
                let wanted = group.topics.as_ref().map(|topics| {
                    topics
                        .iter()
                        .map(|t| (t.name.to_string(), t.partition_indexes.clone()))
                        .collect()
                });
                let response =
                    OffsetFetchResponseGroup::default().with_group_id(group.group_id.clone());
                // From v9 a consumer-protocol member says who it is.
                let member = group
                    .member_id
                    .as_deref()
                    .map(|id| (id, group.member_epoch));
                match ctx.broker.groups.fetch(&group.group_id, member, wanted) {
                    Err(error) => response.with_error_code(error.code()),
                    Ok(rows) => response.with_topics(batched_topics(rows)),
                }
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }

    let wanted = request.topics.as_ref().map(|topics| {
        topics
            .iter()
            .map(|t| (t.name.to_string(), t.partition_indexes.clone()))
            .collect::<Vec<_>>()
    });
    let group: &GroupId = &request.group_id;
    match ctx.broker.groups.fetch(group, None, wanted.clone()) {
        Ok(rows) => OffsetFetchResponse::default().with_topics(topics(rows, version)),
        Err(error) if version >= TOP_LEVEL_ERROR_VERSION => {
            OffsetFetchResponse::default().with_error_code(error.code())
        }
        // v1 has no top-level error: every requested partition carries it.
        Err(error) => OffsetFetchResponse::default().with_topics(
            wanted
                .unwrap_or_default()
                .into_iter()
                .map(|(topic, partitions)| {
                    OffsetFetchResponseTopic::default()
                        .with_name(TopicName(StrBytes::from_string(topic)))
                        .with_partitions(
                            partitions
                                .into_iter()
                                .map(|index| {
                                    OffsetFetchResponsePartition::default()
                                        .with_partition_index(index)
                                        .with_committed_offset(-1)
                                        .with_error_code(error.code())
                                })
                                .collect(),
                        )
                })
                .collect(),
        ),
    }
}

/// The answer of v8 and later, by topic.
fn batched_topics(rows: Vec<Row>) -> Vec<OffsetFetchResponseTopics> {
    by_topic(rows)
        .into_iter()
        .map(|(topic, partitions)| {
            let partitions = partitions
                .into_iter()
                .map(|(index, committed)| {
                    let (offset, epoch, metadata) = parts(committed);
                    OffsetFetchResponsePartitions::default()
                        .with_partition_index(index)
                        .with_committed_offset(offset)
                        .with_committed_leader_epoch(epoch)
                        .with_metadata(Some(metadata))
                })
                .collect();
            OffsetFetchResponseTopics::default()
                .with_name(TopicName(StrBytes::from_string(topic)))
                .with_partitions(partitions)
        })
        .collect()
}

/// The answer before v8, by topic; the leader epoch from v5.
fn topics(rows: Vec<Row>, version: i16) -> Vec<OffsetFetchResponseTopic> {
    by_topic(rows)
        .into_iter()
        .map(|(topic, partitions)| {
            let partitions = partitions
                .into_iter()
                .map(|(index, committed)| {
                    let (offset, epoch, metadata) = parts(committed);
                    let epoch = if version >= LEADER_EPOCH_VERSION {
                        epoch
                    } else {
                        -1
                    };
                    OffsetFetchResponsePartition::default()
                        .with_partition_index(index)
                        .with_committed_offset(offset)
                        .with_committed_leader_epoch(epoch)
                        .with_metadata(Some(metadata))
                })
                .collect();
            OffsetFetchResponseTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic)))
                .with_partitions(partitions)
        })
        .collect()
}

fn parts(committed: Option<CommittedOffset>) -> (i64, i32, StrBytes) {
    match committed {
        Some(c) => (c.offset, c.leader_epoch, StrBytes::from_string(c.metadata)),
        None => (-1, -1, StrBytes::default()),
    }
}
