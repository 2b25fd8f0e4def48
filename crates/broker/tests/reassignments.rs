//! AlterPartitionReassignments and ListPartitionReassignments through the
//! dispatch of a real one-node broker at every advertised version, with a
//! second broker registered that never runs: a reassignment onto it starts
//! and stays in progress, so it can be listed and cancelled. Kafka's
//! refusals come back with Kafka's codes and messages. The Python tests
//! drive reassignments to completion on real clusters with kafka-python.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, ApiKey, BrokerId,
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse,
    alter_partition_reassignments_request::{ReassignablePartition, ReassignableTopic},
    list_partition_reassignments_request::ListPartitionReassignmentsTopics,
};
use keel_raft_metadata::{Record, records::RegisterBroker};

use common::{Harness, harness, name, versions};

const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const INVALID_REPLICATION_FACTOR: i16 = 38;
const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
const NO_REASSIGNMENT_IN_PROGRESS: i16 = 85;

/// One partition of `topic` to `replicas`, or a cancel (`None`).
fn reassign(topic: &'static str, replicas: Option<&[i32]>) -> AlterPartitionReassignmentsRequest {
    AlterPartitionReassignmentsRequest::default().with_topics(vec![
        ReassignableTopic::default()
            .with_name(name(topic))
            .with_partitions(vec![
                ReassignablePartition::default()
                    .with_partition_index(0)
                    .with_replicas(
                        replicas.map(|ids| ids.iter().map(|id| BrokerId(*id)).collect()),
                    ),
            ]),
    ])
}

async fn alter(
    h: &Harness,
    version: i16,
    request: &AlterPartitionReassignmentsRequest,
) -> (i16, String) {
    let response: AlterPartitionReassignmentsResponse = h
        .call(ApiKey::AlterPartitionReassignments, version, request)
        .await;
    assert_eq!(response.error_code, 0, "v{version}");
    let partition = &response.responses[0].partitions[0];
    let message = partition
        .error_message
        .as_ref()
        .map(|m| m.to_string())
        .unwrap_or_default();
    (partition.error_code, message)
}

/// The reassignments in progress: (topic, partition, replicas, adding,
/// removing).
async fn list(
    h: &Harness,
    topics: Option<&[&'static str]>,
) -> Vec<(String, i32, Vec<i32>, Vec<i32>, Vec<i32>)> {
    let request = ListPartitionReassignmentsRequest::default().with_topics(topics.map(|names| {
        names
            .iter()
            .map(|t| {
                ListPartitionReassignmentsTopics::default()
                    .with_name(name(t))
                    .with_partition_indexes(vec![0, 7])
            })
            .collect()
    }));
    let version = *versions(ApiKey::ListPartitionReassignments).end();
    let response: ListPartitionReassignmentsResponse = h
        .call(ApiKey::ListPartitionReassignments, version, &request)
        .await;
    assert_eq!(response.error_code, 0);
    let ids = |ids: &[BrokerId]| ids.iter().map(|id| id.0).collect::<Vec<_>>();
    response
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                (
                    t.name.to_string(),
                    p.partition_index,
                    ids(&p.replicas),
                    ids(&p.adding_replicas),
                    ids(&p.removing_replicas),
                )
            })
        })
        .collect()
}

#[tokio::test]
async fn reassignments_start_list_and_cancel_and_are_refused_as_kafka_refuses_them() {
    let h = harness().await;
    h.create_topic("t", 1).await;
    h.create_topic("quiet", 1).await;
    let elsewhere = Record::RegisterBroker(RegisterBroker {
        node_id: 2,
        host: "127.0.0.1".into(),
        port: 1,
        incarnation: 1,
        ..Default::default()
    });
    h.broker
        .propose(elsewhere.into(), Duration::from_secs(10))
        .await
        .unwrap();
    for version in versions(ApiKey::AlterPartitionReassignments) {
        assert_eq!(
            alter(&h, version, &reassign("t", Some(&[1, 2]))).await.0,
            0,
            "v{version}"
        );
        let started = vec![("t".to_string(), 0, vec![1, 2], vec![2], vec![])];
        assert_eq!(list(&h, None).await, started, "v{version}");
        assert_eq!(list(&h, Some(&["t", "quiet", "missing"])).await, started);
        assert_eq!(list(&h, Some(&["quiet"])).await, vec![]);

        assert_eq!(
            alter(&h, version, &reassign("t", None)).await.0,
            0,
            "v{version}"
        );
        assert_eq!(list(&h, None).await, vec![], "v{version}: cancelled");
        assert_eq!(
            alter(&h, version, &reassign("t", None)).await,
            (
                NO_REASSIGNMENT_IN_PROGRESS,
                "No partition reassignment is in progress.".to_string()
            )
        );
        assert_eq!(
            alter(&h, version, &reassign("t", Some(&[1]))).await.0,
            0,
            "nothing to do"
        );

        let refused = [
            (
                Some(&[1, 9][..]),
                INVALID_REPLICA_ASSIGNMENT,
                "broker 9, but no such broker is registered",
            ),
            (
                Some(&[2, 1, 2][..]),
                INVALID_REPLICA_ASSIGNMENT,
                "the broker 2 more than once",
            ),
            (
                Some(&[][..]),
                INVALID_REPLICA_ASSIGNMENT,
                "an empty replica list",
            ),
        ];
        for (replicas, code, words) in refused {
            let (got, message) = alter(&h, version, &reassign("t", replicas)).await;
            assert_eq!(got, code, "v{version} {replicas:?}: {message}");
            assert!(message.contains(words), "v{version}: {message}");
        }
        let (got, _) = alter(&h, version, &reassign("missing", Some(&[1]))).await;
        assert_eq!(got, UNKNOWN_TOPIC_OR_PARTITION);
        if version >= 1 {
            let keep_factor =
                reassign("t", Some(&[1, 2])).with_allow_replication_factor_change(false);
            assert_eq!(
                alter(&h, version, &keep_factor).await,
                (
                    INVALID_REPLICATION_FACTOR,
                    "The replication factor is changed from 1 to 2".to_string()
                )
            );
            let moved = reassign("t", Some(&[2])).with_allow_replication_factor_change(false);
            assert_eq!(
                alter(&h, version, &moved).await.0,
                0,
                "the same factor elsewhere"
            );
            assert_eq!(alter(&h, version, &reassign("t", None)).await.0, 0);
        }
        assert_eq!(list(&h, None).await, vec![], "v{version}");
    }
}
