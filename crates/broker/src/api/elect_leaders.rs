//! ElectLeaders: move leadership of the named partitions (or all of them)
//! to their preferred replica, when it is a live member of the ISR.
//!
//! Unclean election (choosing a replica outside the ISR for a partition
//! without a leader) is refused for now: it arrives with the leader elector.

use kafka_protocol::{
    messages::{
        ElectLeadersRequest, ElectLeadersResponse,
        elect_leaders_response::{PartitionResult, ReplicaElectionResult},
    },
    protocol::StrBytes,
};
use keel_raft_metadata::records::LeaderChangeReason;

use super::{RequestContext, topics::admin_timeout};
use crate::{
    error::ElectionError,
    replication::leadership::{Target, move_leader},
};

const PREFERRED: i8 = 0;

pub(super) async fn handle(
    ctx: &RequestContext<'_>,
    request: ElectLeadersRequest,
) -> ElectLeadersResponse {
    let image = ctx.broker.image();
    let timeout = admin_timeout(request.timeout_ms);
    let wanted: Vec<(StrBytes, Vec<i32>)> = match request.topic_partitions {
        Some(topics) => topics
            .into_iter()
            .map(|t| (t.topic.0, t.partitions))
            .collect(),
        None => image
            .topics()
            .map(|t| {
                let partitions = t.partitions.iter().map(|p| p.partition).collect();
                (StrBytes::from_string(t.name.clone()), partitions)
            })
            .collect(),
    };
    let mut results = Vec::with_capacity(wanted.len());
    for (topic, partitions) in wanted {
        let mut partition_results = Vec::with_capacity(partitions.len());
        for partition in partitions {
            let moved = if request.election_type == PREFERRED {
                move_leader(
                    ctx.broker,
                    &topic,
                    partition,
                    Target::Preferred,
                    LeaderChangeReason::PreferredRebalance,
                    timeout,
                )
                .await
                .map(drop)
            } else {
                Err(unclean(&image, &topic, partition))
            };
            let result = PartitionResult::default().with_partition_id(partition);
            partition_results.push(match moved {
                Ok(()) => result,
                Err(error) => result
                    .with_error_code(error.code().code())
                    .with_error_message(Some(StrBytes::from_string(error.to_string()))),
            });
        }
        results.push(
            ReplicaElectionResult::default()
                .with_topic(topic.into())
                .with_partition_result(partition_results),
        );
    }
    ElectLeadersResponse::default().with_replica_election_results(results)
}

/// An unclean election is only ever needed for a partition without a
/// leader; Kafka answers ELECTION_NOT_NEEDED for the others.
fn unclean(
    image: &keel_raft_metadata::MetadataImage,
    topic: &str,
    partition: i32,
) -> ElectionError {
    match image.topic(topic).and_then(|t| t.partition(partition)) {
        None => ElectionError::UnknownTopicOrPartition,
        Some(info) if info.leader >= 0 => ElectionError::NotNeeded(info.leader),
        Some(_) => ElectionError::UncleanUnsupported,
    }
}
