//! OffsetCommit: committed offsets are written to `__consumer_offsets`
//! before the answer. A member commits within its generation; a consumer
//! that assigns partitions itself commits with generation -1 and no member
//! id while the group has no members.

use kafka_protocol::messages::{
    OffsetCommitRequest, OffsetCommitResponse,
    offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic},
};

use super::RequestContext;
use crate::{
    broker::now_ms,
    group::{MemberClaim, state::CommittedOffset},
};

/// The first version carrying the leader epoch of the committed offset.
const LEADER_EPOCH_VERSION: i16 = 6;

pub(super) fn handle(
    ctx: &RequestContext<'_>,
    request: OffsetCommitRequest,
) -> OffsetCommitResponse {
    let image = ctx.broker.image();
    let now = now_ms();
    let mut offsets = Vec::new();
    let mut unknown = Vec::new();
    for topic in &request.topics {
        for partition in &topic.partitions {
            let exists = image
                .topic(&topic.name)
                .and_then(|t| t.partition(partition.partition_index))
                .is_some();
            if !exists {
                unknown.push((topic.name.to_string(), partition.partition_index));
                continue;
            }
            offsets.push((
                topic.name.to_string(),
                partition.partition_index,
                CommittedOffset {
                    offset: partition.committed_offset,
                    leader_epoch: if ctx.version >= LEADER_EPOCH_VERSION {
                        partition.committed_leader_epoch
                    } else {
                        -1
                    },
                    metadata: partition
                        .committed_metadata
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                    commit_timestamp_ms: now,
                },
            ));
        }
    }
    let keys: Vec<(String, i32)> = offsets.iter().map(|(t, p, _)| (t.clone(), *p)).collect();
    let claim = MemberClaim {
        member_id: &request.member_id,
        instance_id: request.group_instance_id.as_deref(),
        generation: request.generation_id_or_member_epoch,
    };
    let results = ctx
        .broker
        .groups
        .commit(ctx.broker, &request.group_id, claim, offsets);
    let error_of = |topic: &str, partition: i32| -> i16 {
        if unknown.iter().any(|(t, p)| t == topic && *p == partition) {
            return kafka_protocol::error::ResponseError::UnknownTopicOrPartition.code();
        }
        match &results {
            Err(error) => error.code(),
            Ok(per_offset) => keys
                .iter()
                .position(|(t, p)| t == topic && *p == partition)
                .and_then(|i| per_offset.get(i).copied().flatten())
                .map_or(0, |e| e.code()),
        }
    };
    let topics = request
        .topics
        .iter()
        .map(|topic| {
            OffsetCommitResponseTopic::default()
                .with_name(topic.name.clone())
                .with_partitions(
                    topic
                        .partitions
                        .iter()
                        .map(|p| {
                            OffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(error_of(&topic.name, p.partition_index))
                        })
                        .collect(),
                )
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}
