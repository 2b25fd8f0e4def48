//! An idempotent producer's pipelined batches stay in order across a
//! refusal: after the broker refused one without appending it, the next
//! batch on the same connection, which finds the gap, is refused the same
//! retriable way (NOT_LEADER_OR_FOLLOWER), not with
//! OUT_OF_ORDER_SEQUENCE_NUMBER, which makes librdkafka bump its producer
//! epoch and write again what it had possibly written. A gap the client
//! made itself is still OUT_OF_ORDER_SEQUENCE_NUMBER.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use kafka_protocol::messages::{ApiKey, ProduceResponse};
use keel_log::testing::{BatchSpec, ProducerIdentity, build_batch};

use common::{Harness, harness, produce_request};

const NOT_LEADER_OR_FOLLOWER: i16 = 6;
const NOT_ENOUGH_REPLICAS: i16 = 19;
const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;

async fn produce(h: &Harness, acks: i16, base_sequence: i32) -> i16 {
    let batch = build_batch(&BatchSpec {
        producer: Some(ProducerIdentity {
            producer_id: 7,
            producer_epoch: 0,
            base_sequence,
        }),
        ..BatchSpec::default()
    });
    let request = produce_request("ordered", acks, batch).with_timeout_ms(1_000);
    let response: ProduceResponse = h.call(ApiKey::Produce, 11, &request).await;
    response.responses[0].partition_responses[0].error_code
}

#[tokio::test]
async fn a_batch_behind_a_refused_one_is_refused_too_and_both_land_in_order() {
    let h = harness().await;
    // One replica and min.insync.replicas 2: acks=all is refused before
    // anything is appended, acks=1 is not.
    h.create_topic_with("ordered", 1, &[("min.insync.replicas", "2")])
        .await;

    assert_eq!(produce(&h, 1, 0).await, 0);
    assert_eq!(produce(&h, -1, 1).await, NOT_ENOUGH_REPLICAS);
    assert_eq!(
        produce(&h, 1, 2).await,
        NOT_LEADER_OR_FOLLOWER,
        "the gap is the broker's doing: retry in order"
    );
    assert_eq!(produce(&h, 1, 1).await, 0);
    assert_eq!(produce(&h, 1, 2).await, 0);

    // On another connection the same kind of gap is the client's own.
    let other = Harness::from(std::sync::Arc::clone(&h.broker));
    assert_eq!(produce(&other, 1, 5).await, OUT_OF_ORDER_SEQUENCE_NUMBER);
}
