//! The in-process broker and raw request helpers shared by the protocol
//! tests.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

pub mod groups;

use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::{
    messages::{
        ApiKey, CreateTopicsRequest, CreateTopicsResponse, ProduceRequest, ProduceResponse,
        RequestHeader, ResponseHeader, TopicName,
        create_topics_request::{CreatableTopic, CreatableTopicConfig},
        produce_request::{PartitionProduceData, TopicProduceData},
    },
    protocol::{Decodable, Encodable, StrBytes},
};
use keel_broker::{
    api::{self, SUPPORTED_APIS},
    broker::Broker,
    config::BrokerConfig,
};
use keel_log::testing::{BatchSpec, build_batch};

pub struct Harness {
    pub broker: Arc<Broker>,
    /// One client connection: every request of the harness comes on it.
    pub connection: api::Connection,
    _dir: Option<tempfile::TempDir>,
}

/// A harness around a broker whose data directory the caller owns, for
/// tests that reopen it.
impl From<Arc<Broker>> for Harness {
    fn from(broker: Arc<Broker>) -> Self {
        Harness {
            broker,
            connection: api::Connection::new("/127.0.0.1".into()),
            _dir: None,
        }
    }
}

pub async fn harness() -> Harness {
    harness_with(|_| {}).await
}

/// A broker whose test configuration `configure` changed first.
pub async fn harness_with(configure: impl FnOnce(&mut BrokerConfig)) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let mut config = BrokerConfig::for_tests(dir.path());
    configure(&mut config);
    let (broker, _) = Broker::open(config).await.unwrap();
    broker.ready().await;
    Harness {
        broker,
        connection: api::Connection::new("/127.0.0.1".into()),
        _dir: Some(dir),
    }
}

pub fn versions(api: ApiKey) -> std::ops::RangeInclusive<i16> {
    let &(_, min, max) = SUPPORTED_APIS.iter().find(|(k, _, _)| *k == api).unwrap();
    min..=max
}

/// A produce request of one batch to partition 0 of `topic`.
pub fn produce_request(topic: &str, acks: i16, batch: Vec<u8>) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(5_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(name(topic))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(Bytes::from(batch))),
                ]),
        ])
}

pub fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

pub fn frame<Req: Encodable>(api: ApiKey, version: i16, request: &Req) -> Bytes {
    let header = RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(41)
        .with_client_id(Some(StrBytes::from_static_str("protocol-test")));
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, api.request_header_version(version))
        .unwrap();
    request.encode(&mut buf, version).unwrap();
    // scripts/fuzz seeds its corpus with every request these tests send.
    if let Some(dir) = std::env::var_os("KEEL_FUZZ_SEEDS") {
        let name = format!("{api:?}-v{version}-{:08x}", crc32c::crc32c(&buf));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(std::path::Path::new(&dir).join(name), &buf).unwrap();
    }
    buf.freeze()
}

impl Harness {
    pub async fn raw(&self, frame: Bytes) -> Option<Bytes> {
        api::handle(&self.broker, frame, &self.connection)
            .await
            .unwrap()
            .map(|response| response.to_bytes().expect("the records are readable"))
    }

    pub async fn call<Req: Encodable, Resp: Decodable>(
        &self,
        api: ApiKey,
        version: i16,
        request: &Req,
    ) -> Resp {
        let mut response = self
            .raw(frame(api, version, request))
            .await
            .expect("a response");
        let len = response.get_i32() as usize;
        assert_eq!(len, response.len(), "{api:?} v{version}: frame length");
        let header =
            ResponseHeader::decode(&mut response, api.response_header_version(version)).unwrap();
        assert_eq!(header.correlation_id, 41);
        let decoded = Resp::decode(&mut response, version)
            .unwrap_or_else(|e| panic!("{api:?} v{version} response does not decode: {e}"));
        assert!(
            !response.has_remaining(),
            "{api:?} v{version}: trailing bytes"
        );
        decoded
    }

    pub async fn create_topic(&self, topic: &str, partitions: i32) {
        self.create_topic_with(topic, partitions, &[]).await;
    }

    /// Creates a topic with these config overrides.
    pub async fn create_topic_with(&self, topic: &str, partitions: i32, configs: &[(&str, &str)]) {
        let configs = configs
            .iter()
            .map(|(key, value)| {
                CreatableTopicConfig::default()
                    .with_name(StrBytes::from_string(key.to_string()))
                    .with_value(Some(StrBytes::from_string(value.to_string())))
            })
            .collect();
        let request = CreateTopicsRequest::default().with_topics(vec![
            CreatableTopic::default()
                .with_name(name(topic))
                .with_num_partitions(partitions)
                .with_replication_factor(1)
                .with_configs(configs),
        ]);
        let response: CreateTopicsResponse = self.call(ApiKey::CreateTopics, 7, &request).await;
        assert_eq!(response.topics[0].error_code, 0, "{:?}", response.topics[0]);
    }

    pub async fn produce(&self, topic: &str, version: i16, records: i32) -> ProduceResponse {
        let batch = build_batch(&BatchSpec {
            records,
            first_timestamp: 1_000,
            ..BatchSpec::default()
        });
        let mut request = produce_request(topic, -1, batch);
        request.topic_data[0].topic_id = self.topic_id_if_known(topic);
        self.call(ApiKey::Produce, version, &request).await
    }

    /// The id of `topic`, or the nil id (which names no topic).
    pub fn topic_id_if_known(&self, topic: &str) -> uuid::Uuid {
        self.broker
            .image()
            .topic(topic)
            .map_or(uuid::Uuid::nil(), |t| t.id)
    }

    pub fn topic_id(&self, topic: &str) -> uuid::Uuid {
        self.broker.image().topic(topic).unwrap().id
    }
}
