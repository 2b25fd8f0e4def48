//! Produce answers for records a topic refuses, through the dispatch of a
//! real broker at every Produce version: from v8 the response names each
//! refused record by its index in the batch (KIP-467), with Kafka's
//! messages; before v8 only the partition's error code tells.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use kafka_protocol::messages::{ApiKey, ProduceResponse};
use keel_log::testing::{BatchSpec, build_keyed_batch};

use common::{harness, produce_request, versions};

const INVALID_RECORD: i16 = 87;

#[tokio::test]
async fn records_without_a_key_are_named_when_a_compacted_topic_refuses_them() {
    let h = harness().await;
    h.create_topic_with("compacted", 1, &[("cleanup.policy", "compact")])
        .await;

    let batch = build_keyed_batch(
        &BatchSpec {
            records: 4,
            ..BatchSpec::default()
        },
        &[
            (Some("a"), Some("1")),
            (None, Some("2")),
            (Some("c"), Some("3")),
            (None, Some("4")),
        ],
    );
    let mut request = produce_request("compacted", 1, batch);
    request.topic_data[0].topic_id = h.topic_id("compacted");
    let record_message =
        "Compacted topic cannot accept message without key in topic partition compacted-0.";
    for version in versions(ApiKey::Produce) {
        let response: ProduceResponse = h.call(ApiKey::Produce, version, &request).await;
        let partition = &response.responses[0].partition_responses[0];
        assert_eq!(partition.error_code, INVALID_RECORD, "v{version}");
        let named: Vec<_> = partition
            .record_errors
            .iter()
            .map(|e| {
                (
                    e.batch_index,
                    e.batch_index_error_message.as_deref().unwrap_or_default(),
                )
            })
            .collect();
        if version < 8 {
            assert!(named.is_empty(), "v{version}");
            continue;
        }
        assert_eq!(named, [(1, record_message), (3, record_message)]);
        assert_eq!(
            partition.error_message.as_deref(),
            Some(
                format!(
                    "One or more records have been rejected due to 2 record errors in total, and \
                     only showing the first three errors at most: [RecordError(batchIndex=1, \
                     message='{record_message}'), RecordError(batchIndex=3, \
                     message='{record_message}')]"
                )
                .as_str()
            ),
            "v{version}"
        );
    }
    // Nothing of the refused batches was stored.
    assert_eq!(
        h.broker
            .replicas
            .get("compacted", 0)
            .unwrap()
            .log_end_offset(),
        0
    );
}

#[tokio::test]
async fn records_outside_the_topics_time_window_are_named() {
    let h = harness().await;
    h.create_topic_with("timely", 1, &[("message.timestamp.after.max.ms", "60000")])
        .await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    // Two records ten minutes ahead of the broker's clock.
    let batch = build_keyed_batch(
        &BatchSpec {
            first_timestamp: now + 600_000,
            ..BatchSpec::default()
        },
        &[(Some("a"), Some("1")), (Some("b"), Some("2"))],
    );
    let response: ProduceResponse = h
        .call(ApiKey::Produce, 11, &produce_request("timely", 1, batch))
        .await;
    let partition = &response.responses[0].partition_responses[0];
    assert_eq!(partition.error_code, 32, "INVALID_TIMESTAMP");
    assert_eq!(
        partition.error_message.as_deref(),
        Some("One or more records have been rejected due to invalid timestamp")
    );
    let named: Vec<_> = partition
        .record_errors
        .iter()
        .map(|e| e.batch_index)
        .collect();
    assert_eq!(named, [0, 1]);
    let message = partition.record_errors[0]
        .batch_index_error_message
        .as_deref()
        .unwrap();
    assert!(
        message.starts_with(&format!(
            "Timestamp {} of message with offset 0 is out of range. The timestamp should be \
             within [",
            now + 600_000
        )),
        "{message}"
    );
    // Kafka's default window reaches an hour ahead: the same batch is fine
    // on a topic that keeps it.
    h.create_topic("default-window", 1).await;
    let batch = build_keyed_batch(
        &BatchSpec {
            first_timestamp: now + 600_000,
            ..BatchSpec::default()
        },
        &[(Some("a"), Some("1"))],
    );
    let response: ProduceResponse = h
        .call(
            ApiKey::Produce,
            11,
            &produce_request("default-window", 1, batch),
        )
        .await;
    assert_eq!(response.responses[0].partition_responses[0].error_code, 0);
}
