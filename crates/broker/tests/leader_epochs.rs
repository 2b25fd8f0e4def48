//! Leader epoch fencing of the requests that carry the epoch the client
//! believes current: an older one is FENCED_LEADER_EPOCH, a newer one
//! UNKNOWN_LEADER_EPOCH, as Kafka answers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse,
    OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse,
    fetch_request::{FetchPartition, FetchTopic},
    list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic},
    offset_for_leader_epoch_request::{OffsetForLeaderPartition, OffsetForLeaderTopic},
};

use common::{harness, name};

#[tokio::test]
async fn stale_and_future_leader_epochs_are_fenced() {
    let h = harness().await;
    h.create_topic("fe", 1).await;
    // Three leader changes (to the same broker) bring the epoch to 3.
    for epoch in 1..=3 {
        let record = keel_raft_metadata::Record::SetPartitionLeader(
            keel_raft_metadata::records::SetPartitionLeader {
                topic: "fe".into(),
                partition: 0,
                leader: 1,
                leader_epoch: epoch,
                isr: vec![1],
                ..Default::default()
            },
        );
        h.broker
            .propose(record.into(), std::time::Duration::from_secs(5))
            .await
            .unwrap();
    }
    // Kafka's answers: older than the replica's epoch is FENCED_LEADER_EPOCH
    // (74), newer is UNKNOWN_LEADER_EPOCH (75); -1 skips the check.
    for (epoch, code) in [(0, 74), (2, 74), (4, 75), (-1, 0), (3, 0)] {
        let list = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![
                ListOffsetsTopic::default()
                    .with_name(name("fe"))
                    .with_partitions(vec![
                        ListOffsetsPartition::default()
                            .with_partition_index(0)
                            .with_current_leader_epoch(epoch)
                            .with_timestamp(-1),
                    ]),
            ]);
        let response: ListOffsetsResponse = h.call(ApiKey::ListOffsets, 7, &list).await;
        assert_eq!(
            response.topics[0].partitions[0].error_code, code,
            "ListOffsets at epoch {epoch}"
        );

        let fetch = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(0)
            .with_max_bytes(1 << 20)
            .with_topics(vec![
                FetchTopic::default()
                    .with_topic(name("fe"))
                    .with_partitions(vec![
                        FetchPartition::default()
                            .with_partition(0)
                            .with_current_leader_epoch(epoch)
                            .with_partition_max_bytes(1 << 20),
                    ]),
            ]);
        let response: FetchResponse = h.call(ApiKey::Fetch, 12, &fetch).await;
        assert_eq!(
            response.responses[0].partitions[0].error_code, code,
            "Fetch at epoch {epoch}"
        );

        let epochs = OffsetForLeaderEpochRequest::default().with_topics(vec![
            OffsetForLeaderTopic::default()
                .with_topic(name("fe"))
                .with_partitions(vec![
                    OffsetForLeaderPartition::default()
                        .with_partition(0)
                        .with_current_leader_epoch(epoch)
                        .with_leader_epoch(0),
                ]),
        ]);
        let response: OffsetForLeaderEpochResponse =
            h.call(ApiKey::OffsetForLeaderEpoch, 4, &epochs).await;
        assert_eq!(
            response.topics[0].partitions[0].error_code, code,
            "OffsetForLeaderEpoch at epoch {epoch}"
        );
    }
}
