//! ElectLeaders: move leadership of the named partitions (or all of them)
//! to their preferred replica, when it is a live member of the ISR
//! (preferred election); or give a partition without a leader one (unclean
//! election: from the ISR or ELR if any member is live, else from any live
//! replica, recorded with reason `unclean`). A partition that has a leader
//! needs no unclean election.

use kafka_protocol::{
    messages::{
        ElectLeadersRequest, ElectLeadersResponse,
        elect_leaders_response::{PartitionResult, ReplicaElectionResult},
    },
    protocol::StrBytes,
};
use keel_raft_metadata::records::LeaderChangeReason;

use super::{RequestContext, topics::admin_timeout};
use crate::replication::leadership::{Target, move_leader};

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
            let (target, reason) = if request.election_type == PREFERRED {
                (Target::Preferred, LeaderChangeReason::PreferredRebalance)
            } else {
                (Target::Unclean, LeaderChangeReason::Manual)
            };
            let moved = move_leader(ctx.broker, &topic, partition, target, reason, timeout)
                .await
                .map(drop);
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
