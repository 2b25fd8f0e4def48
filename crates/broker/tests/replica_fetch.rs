//! Replica fetches and leadership requests through the dispatch of a real
//! broker: a fetch naming a replica is answered only for a registered
//! broker at its incarnation that is a follower of the partition; a fetch
//! whose last fetched epoch diverges gets the DivergingEpoch instead of
//! records; ElectLeaders answers at every version as Kafka does.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use kafka_protocol::{
    error::ResponseError,
    messages::{
        ApiKey, BrokerId, ElectLeadersRequest, ElectLeadersResponse, FetchRequest, FetchResponse,
        elect_leaders_request::TopicPartitions,
        fetch_request::{FetchPartition, FetchTopic, ReplicaState},
    },
};

use common::{harness, name, versions};

fn replica_fetch(
    version: i16,
    topic_id: uuid::Uuid,
    replica_id: i32,
    replica_epoch: i64,
) -> FetchRequest {
    let partition = FetchPartition::default()
        .with_partition(0)
        .with_fetch_offset(0)
        .with_partition_max_bytes(1 << 20);
    let request = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_max_bytes(1 << 20)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(name("r"))
                .with_topic_id(topic_id)
                .with_partitions(vec![partition]),
        ]);
    if version >= 15 {
        request.with_replica_state(
            ReplicaState::default()
                .with_replica_id(BrokerId(replica_id))
                .with_replica_epoch(replica_epoch),
        )
    } else {
        request.with_replica_id(BrokerId(replica_id))
    }
}

#[tokio::test]
async fn a_replica_fetch_from_a_broker_that_is_no_follower_gets_an_error() {
    let h = harness().await;
    h.create_topic("r", 1).await;
    h.produce("r", 9, 3).await;
    let topic_id = h.topic_id("r");
    // Broker 2 is registered but holds no replica of the partition.
    let register =
        keel_raft_metadata::Record::RegisterBroker(keel_raft_metadata::records::RegisterBroker {
            node_id: 2,
            host: "127.0.0.1".into(),
            port: 9,
            rack: None,
            incarnation: 5,
            timestamp_ms: 0,
            max_replicas: None,
        });
    h.broker
        .propose(register.into(), std::time::Duration::from_secs(5))
        .await
        .unwrap();
    let not_leader = ResponseError::NotLeaderOrFollower.code();
    for version in versions(ApiKey::Fetch) {
        for replica_id in [99, 1, 2, i32::MAX] {
            let response: FetchResponse = h
                .call(
                    ApiKey::Fetch,
                    version,
                    &replica_fetch(version, topic_id, replica_id, -1),
                )
                .await;
            let partition = &response.responses[0].partitions[0];
            assert_eq!(
                partition.error_code, not_leader,
                "v{version} replica {replica_id}"
            );
            assert!(
                partition.records.as_ref().is_none_or(|r| r.is_empty()),
                "no records for a non-follower"
            );
        }
    }
    // Broker 1 exists, but a replica fetch at another incarnation is stale.
    let response: FetchResponse = h
        .call(ApiKey::Fetch, 16, &replica_fetch(16, topic_id, 1, 12_345))
        .await;
    assert_eq!(
        response.responses[0].partitions[0].error_code,
        ResponseError::StaleBrokerEpoch.code()
    );
}

#[tokio::test]
async fn a_fetch_whose_last_epoch_diverges_gets_the_epoch_end_instead_of_records() {
    let h = harness().await;
    h.create_topic("d", 1).await;
    h.produce("d", 9, 3).await;
    let topic_id = h.topic_id("d");
    for version in 12..=*versions(ApiKey::Fetch).end() {
        let fetch = |offset: i64, last_fetched_epoch: i32| {
            FetchRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_max_wait_ms(0)
                .with_max_bytes(1 << 20)
                .with_topics(vec![
                    FetchTopic::default()
                        .with_topic(name("d"))
                        .with_topic_id(topic_id)
                        .with_partitions(vec![
                            FetchPartition::default()
                                .with_partition(0)
                                .with_fetch_offset(offset)
                                .with_last_fetched_epoch(last_fetched_epoch)
                                .with_partition_max_bytes(1 << 20),
                        ]),
                ])
        };
        // Epoch 0 ends at offset 3 here; a fetcher at 10 in epoch 0 holds
        // records this log does not.
        let response: FetchResponse = h.call(ApiKey::Fetch, version, &fetch(10, 0)).await;
        let partition = &response.responses[0].partitions[0];
        assert_eq!(partition.error_code, 0, "v{version}");
        assert_eq!(
            (
                partition.diverging_epoch.epoch,
                partition.diverging_epoch.end_offset
            ),
            (0, 3),
            "v{version}"
        );
        assert!(partition.records.as_ref().is_none_or(|r| r.is_empty()));

        let response: FetchResponse = h.call(ApiKey::Fetch, version, &fetch(0, 0)).await;
        let partition = &response.responses[0].partitions[0];
        assert_eq!(partition.diverging_epoch.epoch, -1, "v{version}");
        assert!(partition.records.as_ref().is_some_and(|r| !r.is_empty()));
    }
}

#[tokio::test]
async fn elect_leaders_at_every_version() {
    let h = harness().await;
    h.create_topic("e", 1).await;
    for version in versions(ApiKey::ElectLeaders) {
        for (election_type, partition, expected) in [
            (0, 0, ResponseError::ElectionNotNeeded),
            (1, 0, ResponseError::ElectionNotNeeded),
            (0, 7, ResponseError::UnknownTopicOrPartition),
        ] {
            let request = ElectLeadersRequest::default()
                .with_election_type(if version >= 1 { election_type } else { 0 })
                .with_timeout_ms(5_000)
                .with_topic_partitions(Some(vec![
                    TopicPartitions::default()
                        .with_topic(name("e"))
                        .with_partitions(vec![partition]),
                ]));
            let response: ElectLeadersResponse =
                h.call(ApiKey::ElectLeaders, version, &request).await;
            let result = &response.replica_election_results[0].partition_result[0];
            assert_eq!(result.partition_id, partition);
            assert_eq!(
                result.error_code,
                expected.code(),
                "v{version} type {election_type} partition {partition}"
            );
        }
        // All partitions: none needs a new leader.
        let response: ElectLeadersResponse = h
            .call(
                ApiKey::ElectLeaders,
                version,
                &ElectLeadersRequest::default().with_timeout_ms(5_000),
            )
            .await;
        assert!(
            response
                .replica_election_results
                .iter()
                .flat_map(|t| &t.partition_result)
                .all(|p| p.error_code == ResponseError::ElectionNotNeeded.code())
        );
    }
}

#[tokio::test]
async fn unclean_election_gives_a_partition_without_a_leader_one() {
    let h = harness().await;
    h.create_topic("u", 1).await;
    // The partition goes offline with an empty ISR (as after its only
    // in-sync replica failed).
    let offline = keel_raft_metadata::Record::SetPartitionLeader(
        keel_raft_metadata::records::SetPartitionLeader {
            topic: "u".into(),
            partition: 0,
            leader: -1,
            leader_epoch: 1,
            ..Default::default()
        },
    );
    h.broker
        .propose(offline.into(), std::time::Duration::from_secs(5))
        .await
        .unwrap();
    let elect = |election_type: i8| {
        ElectLeadersRequest::default()
            .with_election_type(election_type)
            .with_timeout_ms(5_000)
            .with_topic_partitions(Some(vec![
                TopicPartitions::default()
                    .with_topic(name("u"))
                    .with_partitions(vec![0]),
            ]))
    };
    let response: ElectLeadersResponse = h.call(ApiKey::ElectLeaders, 2, &elect(0)).await;
    assert_eq!(
        response.replica_election_results[0].partition_result[0].error_code,
        ResponseError::PreferredLeaderNotAvailable.code(),
        "the preferred replica is not in the (empty) ISR"
    );
    let response: ElectLeadersResponse = h.call(ApiKey::ElectLeaders, 2, &elect(1)).await;
    assert_eq!(
        response.replica_election_results[0].partition_result[0].error_code,
        0
    );
    let image = h.broker.image();
    let info = image.topic("u").unwrap().partition(0).unwrap().clone();
    assert_eq!((info.leader, info.leader_epoch, info.isr), (1, 2, vec![1]));
    let last = image.history().next_back().unwrap();
    assert_eq!(
        last.reason,
        keel_raft_metadata::records::LeaderChangeReason::Unclean as i32
    );
    // Now it has a leader: nothing to elect.
    let response: ElectLeadersResponse = h.call(ApiKey::ElectLeaders, 2, &elect(1)).await;
    assert_eq!(
        response.replica_election_results[0].partition_result[0].error_code,
        ResponseError::ElectionNotNeeded.code()
    );
}
