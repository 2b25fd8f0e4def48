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
    // Whether each partition of the request, in order, exists.
    let mut known = Vec::new();
    for topic in &request.topics {
        for partition in &topic.partitions {
            let exists = image
                .topic(&topic.name)
                .and_then(|t| t.partition(partition.partition_index))
                .is_some();
            known.push(exists);
            if !exists {
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
    let claim = MemberClaim {
        member_id: &request.member_id,
        instance_id: request.group_instance_id.as_deref(),
        generation: request.generation_id_or_member_epoch,
    };
    let results = ctx
        .broker
        .groups
        .commit(ctx.broker, &request.group_id, claim, offsets);
    // The coordinator answers the known partitions in request order.
    let mut known = known.into_iter();
    let mut answers = results.as_ref().map(|r| r.iter());
    let mut next_error = || -> i16 {
        if !known.next().unwrap_or(false) {
            return kafka_protocol::error::ResponseError::UnknownTopicOrPartition.code();
        }
        match answers.as_mut() {
            Err(error) => error.code(),
            Ok(answers) => answers.next().copied().flatten().map_or(0, |e| e.code()),
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
                                .with_error_code(next_error())
                        })
                        .collect(),
                )
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}
