//! OffsetDelete: removes a group's committed offsets for partitions of
//! topics its members do not subscribe to.

use std::collections::BTreeSet;

use kafka_protocol::messages::{
    OffsetDeleteRequest, OffsetDeleteResponse,
    offset_delete_response::{OffsetDeleteResponsePartition, OffsetDeleteResponseTopic},
};

use super::RequestContext;
use crate::group::{embedded, state::Group};

/// Topics the members of a consumer group subscribe to, from their
/// subscription metadata.
fn subscribed_topics(group: &Group) -> BTreeSet<String> {
    let protocol = group.protocol_name.clone().unwrap_or_default();
    group
        .members
        .values()
        .filter_map(|m| embedded::decode_subscription(&m.metadata_for(&protocol)))
        .flat_map(|s| s.topics)
        .collect()
}

pub(super) fn handle(
    ctx: &RequestContext<'_>,
    request: OffsetDeleteRequest,
) -> OffsetDeleteResponse {
    let partitions: Vec<(String, i32)> = request
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (t.name.to_string(), p.partition_index))
        })
        .collect();
    match ctx.broker.groups.delete_offsets(
        ctx.broker,
        &request.group_id,
        partitions,
        subscribed_topics,
    ) {
        Err(error) => OffsetDeleteResponse::default().with_error_code(error.code()),
        Ok(results) => {
            let mut results = results.into_iter();
            OffsetDeleteResponse::default().with_topics(
                request
                    .topics
                    .iter()
                    .map(|topic| {
                        OffsetDeleteResponseTopic::default()
                            .with_name(topic.name.clone())
                            .with_partitions(
                                topic
                                    .partitions
                                    .iter()
                                    .map(|p| {
                                        OffsetDeleteResponsePartition::default()
                                            .with_partition_index(p.partition_index)
                                            .with_error_code(
                                                results.next().flatten().map_or(0, |e| e.code()),
                                            )
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            )
        }
    }
}
