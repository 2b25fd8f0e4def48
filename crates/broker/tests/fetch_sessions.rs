//! Incremental fetch sessions (KIP-227) through the dispatch of a real
//! broker, at every Fetch version that has them: a full fetch asking for a
//! session gets one; an incremental fetch reads every partition of the
//! session at the offsets it last named and answers only those with
//! something new; a parked incremental fetch wakes on an append; wrong
//! epochs, unknown sessions and closed sessions are refused with Kafka's
//! errors.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use kafka_protocol::{
    error::ResponseError,
    messages::{
        ApiKey, BrokerId, FetchRequest, FetchResponse,
        fetch_request::{FetchPartition, FetchTopic, ForgottenTopic},
    },
};

use common::{Harness, harness, name, versions};

/// The first Fetch version with sessions.
const SESSION_VERSION: i16 = 7;
const TOPIC_ID_VERSION: i16 = 13;

struct Fetch<'a> {
    h: &'a Harness,
    version: i16,
    topic: &'a str,
}

impl Fetch<'_> {
    fn request(
        &self,
        session: (i32, i32),
        named: &[(i32, i64)],
        forgotten: &[i32],
    ) -> FetchRequest {
        let topic_id = self.h.topic_id(self.topic);
        let partitions = named
            .iter()
            .map(|&(partition, offset)| {
                FetchPartition::default()
                    .with_partition(partition)
                    .with_fetch_offset(offset)
                    .with_partition_max_bytes(1 << 20)
            })
            .collect();
        let mut topics = Vec::new();
        if !named.is_empty() {
            topics.push(
                FetchTopic::default()
                    .with_topic(name(self.topic))
                    .with_topic_id(topic_id)
                    .with_partitions(partitions),
            );
        }
        let mut forgotten_topics = Vec::new();
        if !forgotten.is_empty() {
            forgotten_topics.push(
                ForgottenTopic::default()
                    .with_topic(name(self.topic))
                    .with_topic_id(topic_id)
                    .with_partitions(forgotten.to_vec()),
            );
        }
        FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(0)
            .with_max_bytes(1 << 20)
            .with_session_id(session.0)
            .with_session_epoch(session.1)
            .with_topics(topics)
            .with_forgotten_topics_data(forgotten_topics)
    }

    async fn call(&self, request: &FetchRequest) -> FetchResponse {
        self.h.call(ApiKey::Fetch, self.version, request).await
    }

    async fn send(
        &self,
        session: (i32, i32),
        named: &[(i32, i64)],
        forgotten: &[i32],
    ) -> FetchResponse {
        self.call(&self.request(session, named, forgotten)).await
    }
}

/// (partition, number of records) of each partition answered.
fn answered(response: &FetchResponse) -> Vec<(i32, usize)> {
    let mut answered: Vec<(i32, usize)> = response
        .responses
        .iter()
        .flat_map(|t| &t.partitions)
        .map(|p| {
            let mut bytes = p.records.clone().unwrap_or_default();
            let mut records = 0;
            while !bytes.is_empty() {
                let batch = kafka_protocol::records::RecordBatchDecoder::decode(&mut bytes)
                    .expect("whole batches");
                records += batch.records.len();
            }
            (p.partition_index, records)
        })
        .collect();
    answered.sort_unstable();
    answered
}

#[tokio::test]
async fn an_incremental_fetch_answers_only_the_partitions_with_something_new() {
    let h = harness().await;
    for version in SESSION_VERSION..=*versions(ApiKey::Fetch).end() {
        let topic = format!("s{version}");
        h.create_topic(&topic, 2).await;
        h.produce(&topic, 9, 3).await;
        let fetch = Fetch {
            h: &h,
            version,
            topic: &topic,
        };

        let full = fetch.send((0, 0), &[(0, 0), (1, 0)], &[]).await;
        assert_eq!(full.error_code, 0, "v{version}");
        let id = full.session_id;
        assert_ne!(id, 0, "v{version}: a session is created");
        assert_eq!(answered(&full), [(0, 3), (1, 0)], "v{version}");
        if version >= TOPIC_ID_VERSION {
            assert_eq!(full.responses[0].topic_id, h.topic_id(&topic));
        } else {
            assert_eq!(full.responses[0].topic, name(&topic));
        }

        // Partition 0 is read up to its end: nothing is new anywhere.
        let quiet = fetch.send((id, 1), &[(0, 3)], &[]).await;
        assert_eq!((quiet.error_code, quiet.session_id), (0, id), "v{version}");
        assert!(answered(&quiet).is_empty(), "v{version}: {quiet:?}");

        // New records in partition 0: fetched from where the session
        // holds it, though the request names nothing.
        h.produce(&topic, 9, 2).await;
        let news = fetch.send((id, 2), &[], &[]).await;
        assert_eq!(answered(&news), [(0, 2)], "v{version}");
        assert_eq!(
            news.responses[0].partitions[0].high_watermark, 5,
            "v{version}"
        );

        // The same epoch again, an unknown session, and a forgotten
        // partition.
        let again = fetch.send((id, 2), &[], &[]).await;
        assert_eq!(
            again.error_code,
            ResponseError::InvalidFetchSessionEpoch.code(),
            "v{version}"
        );
        assert!(again.responses.is_empty());
        let unknown = fetch.send((id.wrapping_add(1).max(1), 1), &[], &[]).await;
        assert_eq!(
            unknown.error_code,
            ResponseError::FetchSessionIdNotFound.code(),
            "v{version}"
        );
        let forgot = fetch.send((id, 3), &[], &[0]).await;
        assert_eq!(forgot.error_code, 0, "v{version}");
        assert!(answered(&forgot).is_empty(), "v{version}");
        h.produce(&topic, 9, 1).await;
        let forgotten = fetch.send((id, 4), &[], &[]).await;
        assert!(
            answered(&forgotten).is_empty(),
            "v{version}: a forgotten partition is no longer read"
        );

        // A full fetch closing the session answers whole, without one.
        let closing = fetch.send((id, -1), &[(0, 0), (1, 0)], &[]).await;
        assert_eq!((closing.error_code, closing.session_id), (0, 0));
        assert_eq!(answered(&closing), [(0, 6), (1, 0)], "v{version}");
        let closed = fetch.send((id, 5), &[], &[]).await;
        assert_eq!(
            closed.error_code,
            ResponseError::FetchSessionIdNotFound.code(),
            "v{version}"
        );
    }
}

#[tokio::test]
async fn a_parked_incremental_fetch_wakes_when_a_partition_of_its_session_grows() {
    let h = harness().await;
    h.create_topic("w", 2).await;
    let fetch = Fetch {
        h: &h,
        version: 16,
        topic: "w",
    };
    let id = fetch.send((0, 0), &[(0, 0), (1, 0)], &[]).await.session_id;
    assert_ne!(id, 0);
    let mut parked = fetch.request((id, 1), &[], &[]);
    parked.max_wait_ms = 10_000;
    parked.min_bytes = 1;
    let started = Instant::now();
    let (response, ()) = tokio::join!(fetch.call(&parked), async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        h.produce("w", 9, 4).await;
    });
    assert_eq!(answered(&response), [(0, 4)]);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "woken by the append, not the wait: {:?}",
        started.elapsed()
    );
}
