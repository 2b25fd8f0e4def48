//! ListPartitionReassignments: the reassignments in progress, with each
//! partition's replicas and the ones being added and removed, for every
//! topic or for the partitions named. Names the image does not know are
//! left out, as Kafka leaves them out.

use kafka_protocol::messages::{
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse,
    list_partition_reassignments_response::{
        OngoingPartitionReassignment, OngoingTopicReassignment,
    },
};
use keel_raft_metadata::{PartitionInfo, TopicInfo};

use super::{
    RequestContext,
    topics::{broker_ids, topic_name},
};

pub(super) fn handle(
    ctx: &RequestContext<'_>,
    request: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    let image = ctx.broker.image();
    let topics: Vec<OngoingTopicReassignment> = match request.topics {
        None => image
            .topics()
            .filter_map(|topic| ongoing(topic, topic.partitions.iter()))
            .collect(),
        Some(wanted) => wanted
            .iter()
            .filter_map(|w| {
                let topic = image.topic(&w.name.0)?;
                let partitions = w
                    .partition_indexes
                    .iter()
                    .filter_map(|&index| topic.partition(index));
                ongoing(topic, partitions)
            })
            .collect(),
    };
    ListPartitionReassignmentsResponse::default().with_topics(topics)
}

/// The reassignments in progress among `partitions` of `topic`, if any.
fn ongoing<'a>(
    topic: &TopicInfo,
    partitions: impl Iterator<Item = &'a PartitionInfo>,
) -> Option<OngoingTopicReassignment> {
    let partitions: Vec<OngoingPartitionReassignment> = partitions
        .filter(|p| p.is_reassigning())
        .map(|p| {
            OngoingPartitionReassignment::default()
                .with_partition_index(p.partition)
                .with_replicas(broker_ids(&p.replicas))
                .with_adding_replicas(broker_ids(&p.adding_replicas))
                .with_removing_replicas(broker_ids(&p.removing_replicas))
        })
        .collect();
    (!partitions.is_empty()).then(|| {
        OngoingTopicReassignment::default()
            .with_name(topic_name(&topic.name))
            .with_partitions(partitions)
    })
}
