//! DescribeQuorum: Keel's metadata quorum is the Raft group this API
//! describes, its log the `__cluster_metadata` partition 0. Any broker
//! answers: the quorum's leader alone knows its peers' logs, so a broker
//! that does not lead asks it (as a Kafka broker forwards the request to
//! the controller). Voters and observers (Raft learners) carry their log
//! end offsets and the leader's last-fetch and last-caught-up times; the
//! voters' endpoints are their Kafka listeners, since Keel's controllers
//! are its brokers.

use std::time::Duration;

use kafka_protocol::{
    error::ResponseError,
    messages::{
        BrokerId, DescribeQuorumRequest, DescribeQuorumResponse, TopicName,
        describe_quorum_response::{Listener, Node, PartitionData, ReplicaState, TopicData},
    },
    protocol::StrBytes,
};
use keel_raft_metadata::{
    MetadataImage,
    ids::node_id,
    quorum::{QuorumDescription, ReplicaDescription},
};

use super::RequestContext;

const METADATA_TOPIC: &str = "__cluster_metadata";
/// How long a broker waits for the quorum's leader to answer.
const LEADER_ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// The name the voters' endpoints are listed under.
const LISTENER_NAME: &str = "PLAINTEXT";
/// The first version with the last-fetch and last-caught-up times.
const TIMES_VERSION: i16 = 1;
/// The first version with error messages and the voters' endpoints.
const NODES_VERSION: i16 = 2;

pub(super) async fn handle(
    ctx: &RequestContext<'_>,
    request: DescribeQuorumRequest,
) -> DescribeQuorumResponse {
    let asks_for_the_metadata_log = matches!(
        request.topics.as_slice(),
        [topic] if topic.topic_name.as_str() == METADATA_TOPIC
            && matches!(topic.partitions.as_slice(), [p] if p.partition_index == 0)
    );
    let mut partition = if !asks_for_the_metadata_log {
        refused(
            ResponseError::UnknownTopicOrPartition,
            "DescribeQuorum describes __cluster_metadata partition 0 alone",
        )
    } else {
        match ctx
            .broker
            .metadata
            .describe_quorum(LEADER_ANSWER_TIMEOUT)
            .await
        {
            Some(quorum) => describe(&quorum, ctx.version),
            None => refused(
                ResponseError::NotLeaderOrFollower,
                "no leader of the metadata quorum answered",
            ),
        }
    };
    let nodes = if partition.error_code == 0 && ctx.version >= NODES_VERSION {
        endpoints(&ctx.broker.image(), &partition.current_voters)
    } else {
        Vec::new()
    };
    if ctx.version < NODES_VERSION {
        partition.error_message = None;
    }
    DescribeQuorumResponse::default()
        .with_topics(vec![
            TopicData::default()
                .with_topic_name(TopicName(StrBytes::from_static_str(METADATA_TOPIC)))
                .with_partitions(vec![partition]),
        ])
        .with_nodes(nodes)
}

fn refused(error: ResponseError, message: &'static str) -> PartitionData {
    PartitionData::default()
        .with_error_code(error.code())
        .with_error_message(Some(StrBytes::from_static_str(message)))
        .with_leader_id(BrokerId(-1))
        .with_leader_epoch(-1)
        .with_high_watermark(-1)
}

fn describe(quorum: &QuorumDescription, version: i16) -> PartitionData {
    let replicas = |replicas: &[ReplicaDescription]| {
        let mut described: Vec<_> = replicas.iter().map(|r| replica(r, version)).collect();
        described.sort_by_key(|r| r.replica_id);
        described
    };
    PartitionData::default()
        .with_leader_id(BrokerId(node_id(quorum.leader_id)))
        .with_leader_epoch(i32::try_from(quorum.term).unwrap_or(i32::MAX))
        .with_high_watermark(offset(quorum.high_watermark))
        .with_current_voters(replicas(&quorum.voters))
        .with_observers(replicas(&quorum.observers))
}

fn replica(replica: &ReplicaDescription, version: i16) -> ReplicaState {
    let state = ReplicaState::default()
        .with_replica_id(BrokerId(node_id(replica.replica_id)))
        .with_log_end_offset(offset(replica.log_end_offset));
    if version < TIMES_VERSION {
        return state;
    }
    state
        .with_last_fetch_timestamp(replica.last_fetch_ms)
        .with_last_caught_up_timestamp(replica.last_caught_up_ms)
}

/// The voters' endpoints, for those registered as brokers.
fn endpoints(image: &MetadataImage, voters: &[ReplicaState]) -> Vec<Node> {
    voters
        .iter()
        .filter_map(|voter| image.broker(voter.replica_id.0))
        .map(|broker| {
            Node::default()
                .with_node_id(BrokerId(broker.node_id))
                .with_listeners(vec![
                    Listener::default()
                        .with_name(StrBytes::from_static_str(LISTENER_NAME))
                        .with_host(StrBytes::from_string(broker.host.clone()))
                        .with_port(u16::try_from(broker.port).unwrap_or_default()),
                ])
        })
        .collect()
}

fn offset(raft_index: u64) -> i64 {
    i64::try_from(raft_index).unwrap_or(i64::MAX)
}
