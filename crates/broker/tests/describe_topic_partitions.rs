//! DescribeTopicPartitions through the dispatch of a real broker, answered
//! as Apache Kafka 4 answers it: every topic or the named ones in name
//! order, unknown and invalid names with their errors, pages cut by the
//! partition limit and continued from the cursor, and each partition's
//! leader, ISR, eligible leader replicas and offline replicas from the
//! metadata image.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use kafka_protocol::{
    error::ResponseError,
    messages::{
        ApiKey, BrokerId, CreateTopicsRequest, CreateTopicsResponse,
        DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse, MetadataRequest,
        MetadataResponse,
        create_topics_request::{CreatableReplicaAssignment, CreatableTopic},
        describe_topic_partitions_request::{Cursor, TopicRequest},
        metadata_request::MetadataRequestTopic,
    },
};
use keel_raft_metadata::{
    Record,
    records::{FenceBroker, RegisterBroker, UpdateIsr},
};

use common::{Harness, harness, name, versions};

const PROPOSAL_TIMEOUT: Duration = Duration::from_secs(5);

fn request(
    topics: &[&str],
    limit: i32,
    cursor: Option<(&str, i32)>,
) -> DescribeTopicPartitionsRequest {
    DescribeTopicPartitionsRequest::default()
        .with_topics(
            topics
                .iter()
                .map(|t| TopicRequest::default().with_name(name(t)))
                .collect(),
        )
        .with_response_partition_limit(limit)
        .with_cursor(cursor.map(|(topic, partition)| {
            Cursor::default()
                .with_topic_name(name(topic))
                .with_partition_index(partition)
        }))
}

async fn describe(
    h: &Harness,
    request: &DescribeTopicPartitionsRequest,
) -> DescribeTopicPartitionsResponse {
    let mut last = None;
    for version in versions(ApiKey::DescribeTopicPartitions) {
        let response: DescribeTopicPartitionsResponse = h
            .call(ApiKey::DescribeTopicPartitions, version, request)
            .await;
        last = Some(response);
    }
    last.expect("at least one version")
}

/// Each topic of a response by name, with its error and partition indexes.
fn summary(response: &DescribeTopicPartitionsResponse) -> Vec<(String, i16, Vec<i32>)> {
    response
        .topics
        .iter()
        .map(|t| {
            (
                t.name.as_ref().unwrap().to_string(),
                t.error_code,
                t.partitions.iter().map(|p| p.partition_index).collect(),
            )
        })
        .collect()
}

fn cursor_of(response: &DescribeTopicPartitionsResponse) -> Option<(String, i32)> {
    response
        .next_cursor
        .as_ref()
        .map(|c| (c.topic_name.to_string(), c.partition_index))
}

fn ids(ids: &[i32]) -> Vec<BrokerId> {
    ids.iter().map(|id| BrokerId(*id)).collect()
}

async fn propose(h: &Harness, record: Record) {
    h.broker
        .propose(record.into(), PROPOSAL_TIMEOUT)
        .await
        .unwrap();
}

#[tokio::test]
async fn every_topic_is_described_in_name_order() {
    let h = harness().await;
    h.create_topic("zeta", 1).await;
    h.create_topic("alpha", 2).await;
    // The group coordinator's topic, created the way a client's Metadata
    // request for it creates it.
    let offsets = MetadataRequest::default().with_topics(Some(vec![
        MetadataRequestTopic::default().with_name(Some(name("__consumer_offsets"))),
    ]));
    let created: MetadataResponse = h.call(ApiKey::Metadata, 12, &offsets).await;
    assert_eq!(created.topics[0].error_code, 0);

    let response = describe(&h, &request(&[], 2000, None)).await;
    assert_eq!(
        summary(&response),
        vec![
            ("__consumer_offsets".to_string(), 0, vec![0, 1, 2]),
            ("alpha".to_string(), 0, vec![0, 1]),
            ("zeta".to_string(), 0, vec![0]),
        ]
    );
    assert_eq!(response.next_cursor, None);
    for topic in &response.topics {
        let name = topic.name.as_ref().unwrap().to_string();
        assert_eq!(topic.topic_id, h.topic_id(&name), "{name}");
        assert_eq!(topic.is_internal, name == "__consumer_offsets", "{name}");
        // Without an authorizer every topic operation is authorized; this
        // API reports them unasked (KIP-430).
        assert_eq!(topic.topic_authorized_operations, 3576, "{name}");
        for partition in &topic.partitions {
            assert_eq!(partition.error_code, 0);
            assert_eq!(partition.leader_id, BrokerId(1));
            assert_eq!(partition.leader_epoch, 0);
            assert_eq!(partition.replica_nodes, ids(&[1]));
            assert_eq!(partition.isr_nodes, ids(&[1]));
            assert_eq!(partition.eligible_leader_replicas, Some(vec![]));
            assert_eq!(partition.last_known_elr, Some(vec![]));
            assert!(partition.offline_replicas.is_empty());
        }
    }
}

#[tokio::test]
async fn named_topics_are_described_once_each_with_errors_for_the_missing() {
    let h = harness().await;
    h.create_topic("a", 2).await;
    h.create_topic("b", 1).await;
    let response = describe(
        &h,
        &request(
            &["b", "nope", "a", "b", "bad name", "__consumer_offsets"],
            2000,
            None,
        ),
    )
    .await;
    let unknown = ResponseError::UnknownTopicOrPartition.code();
    let invalid = ResponseError::InvalidTopicException.code();
    assert_eq!(
        summary(&response),
        vec![
            ("__consumer_offsets".to_string(), unknown, vec![]),
            ("a".to_string(), 0, vec![0, 1]),
            ("b".to_string(), 0, vec![0]),
            ("bad name".to_string(), invalid, vec![]),
            ("nope".to_string(), unknown, vec![]),
        ]
    );
    for topic in response.topics.iter().filter(|t| t.error_code != 0) {
        assert!(topic.topic_id.is_nil());
        // Kafka marks the internal topic's name internal even when it
        // does not exist yet.
        let internal = topic.name.as_ref().unwrap().as_str() == "__consumer_offsets";
        assert_eq!(topic.is_internal, internal);
    }
    // Describing a topic never creates it.
    assert!(h.broker.image().topic("nope").is_none());
    assert!(h.broker.image().topic("__consumer_offsets").is_none());
}

#[tokio::test]
async fn pages_follow_the_cursor_across_partitions_and_topics() {
    let h = harness().await;
    h.create_topic("a3", 3).await;
    h.create_topic("b2", 2).await;
    let expected = vec![
        (
            vec![("a3".to_string(), 0, vec![0, 1])],
            Some(("a3".to_string(), 2)),
        ),
        (
            vec![
                ("a3".to_string(), 0, vec![2]),
                ("b2".to_string(), 0, vec![0]),
            ],
            Some(("b2".to_string(), 1)),
        ),
        (vec![("b2".to_string(), 0, vec![1])], None),
    ];
    // Every topic, and the same two named (in any order), page alike.
    for named in [&[][..], &["b2", "a3"][..]] {
        let mut pages = Vec::new();
        let mut cursor: Option<(String, i32)> = None;
        loop {
            let response = describe(
                &h,
                &request(named, 2, cursor.as_ref().map(|(t, p)| (t.as_str(), *p))),
            )
            .await;
            cursor = cursor_of(&response);
            pages.push((summary(&response), cursor.clone()));
            if cursor.is_none() || pages.len() > expected.len() {
                break;
            }
        }
        assert_eq!(pages, expected, "topics {named:?}");
    }
    // A page filled exactly at a topic's end continues with the next topic.
    let response = describe(&h, &request(&[], 3, None)).await;
    assert_eq!(cursor_of(&response), Some(("b2".to_string(), 0)));
    // An unknown named topic takes no room in the page.
    let response = describe(&h, &request(&["a3", "a4", "b2"], 4, None)).await;
    assert_eq!(
        summary(&response),
        vec![
            ("a3".to_string(), 0, vec![0, 1, 2]),
            (
                "a4".to_string(),
                ResponseError::UnknownTopicOrPartition.code(),
                vec![]
            ),
            ("b2".to_string(), 0, vec![0]),
        ]
    );
    assert_eq!(cursor_of(&response), Some(("b2".to_string(), 1)));
}

#[tokio::test]
async fn a_cursor_outside_the_named_topics_is_an_invalid_request() {
    let h = harness().await;
    h.create_topic("a3", 3).await;
    h.create_topic("b2", 2).await;
    let response = describe(&h, &request(&["a3", "b2"], 10, Some(("c", 0)))).await;
    let invalid = ResponseError::InvalidRequest.code();
    // Kafka's error response: every named topic, with the error.
    assert_eq!(
        summary(&response),
        vec![
            ("a3".to_string(), invalid, vec![]),
            ("b2".to_string(), invalid, vec![])
        ]
    );
    assert!(response.topics.iter().all(|t| t.topic_id.is_nil()));
    assert_eq!(response.next_cursor, None);
}

#[tokio::test]
async fn eligible_leader_replicas_and_offline_replicas_come_from_the_image() {
    let h = harness().await;
    for node_id in [2, 3] {
        propose(
            &h,
            Record::RegisterBroker(RegisterBroker {
                node_id,
                host: "127.0.0.1".into(),
                port: 1,
                rack: None,
                incarnation: 1,
                timestamp_ms: 0,
                max_replicas: None,
            }),
        )
        .await;
    }
    let create = CreateTopicsRequest::default().with_topics(vec![
        CreatableTopic::default()
            .with_name(name("elr"))
            .with_num_partitions(-1)
            .with_replication_factor(-1)
            .with_assignments(vec![
                CreatableReplicaAssignment::default()
                    .with_partition_index(0)
                    .with_broker_ids(ids(&[1, 2, 3])),
            ]),
        CreatableTopic::default()
            .with_name(name("led-by-3"))
            .with_num_partitions(-1)
            .with_replication_factor(-1)
            .with_assignments(vec![
                CreatableReplicaAssignment::default()
                    .with_partition_index(0)
                    .with_broker_ids(ids(&[3, 1])),
            ]),
    ]);
    let created: CreateTopicsResponse = h.call(ApiKey::CreateTopics, 7, &create).await;
    assert!(
        created.topics.iter().all(|t| t.error_code == 0),
        "{created:?}"
    );

    // The leader shrinks the ISR to itself while min.insync.replicas is 3:
    // the high watermark cannot have moved without 2 and 3, so they stay
    // eligible to lead (KIP-966).
    let image = h.broker.image();
    let partition = image.topic("elr").unwrap().partition(0).unwrap();
    let leader = image.broker(1).unwrap();
    propose(
        &h,
        Record::UpdateIsr(UpdateIsr {
            topic: "elr".into(),
            partition: 0,
            leader_epoch: partition.leader_epoch,
            isr: vec![1],
            partition_epoch: partition.partition_epoch,
            isr_incarnations: vec![leader.incarnation],
            min_insync_replicas: 3,
        }),
    )
    .await;
    // Broker 3 goes silent and is fenced.
    propose(
        &h,
        Record::FenceBroker(FenceBroker {
            node_id: 3,
            incarnation: 1,
        }),
    )
    .await;

    let response = describe(&h, &request(&["elr", "led-by-3"], 10, None)).await;
    let elr = &response.topics[0].partitions[0];
    assert_eq!(response.topics[0].error_code, 0);
    assert_eq!(elr.error_code, 0);
    assert_eq!(elr.leader_id, BrokerId(1));
    assert_eq!(elr.leader_epoch, 0);
    assert_eq!(elr.replica_nodes, ids(&[1, 2, 3]));
    assert_eq!(elr.isr_nodes, ids(&[1]));
    assert_eq!(elr.eligible_leader_replicas, Some(ids(&[2, 3])));
    assert_eq!(elr.last_known_elr, Some(vec![]));
    assert_eq!(elr.offline_replicas, ids(&[3]));

    // A partition whose leader is fenced has no leader to offer; Kafka
    // still answers it without an error.
    let orphan = &response.topics[1].partitions[0];
    assert_eq!(
        response.topics[1].name.as_ref().unwrap().as_str(),
        "led-by-3"
    );
    assert_eq!(orphan.error_code, 0);
    assert_eq!(orphan.leader_id, BrokerId(-1));
    assert_eq!(orphan.replica_nodes, ids(&[3, 1]));
    assert_eq!(orphan.isr_nodes, ids(&[3, 1]));
    assert_eq!(orphan.offline_replicas, ids(&[3]));

    // Metadata tells the same story about leaders and offline replicas.
    let metadata: MetadataResponse = h
        .call(
            ApiKey::Metadata,
            12,
            &MetadataRequest::default().with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(name("elr"))),
                MetadataRequestTopic::default().with_name(Some(name("led-by-3"))),
            ])),
        )
        .await;
    for (described, listed) in response.topics.iter().zip(&metadata.topics) {
        let (d, m) = (&described.partitions[0], &listed.partitions[0]);
        assert_eq!(
            (d.leader_id, &d.isr_nodes, &d.offline_replicas),
            (m.leader_id, &m.isr_nodes, &m.offline_replicas)
        );
    }
}
