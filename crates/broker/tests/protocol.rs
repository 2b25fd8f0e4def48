//! Every API at every version we advertise, through the request dispatch of
//! a real broker (in-process, on a temporary data directory): the request is
//! encoded as a client would, the response must decode at the same version
//! and say what Kafka would say.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::{
    messages::{
        ApiKey, ApiVersionsRequest, ApiVersionsResponse, BrokerId, CreatePartitionsRequest,
        CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse, DeleteRecordsRequest,
        DeleteRecordsResponse, DeleteTopicsRequest, DeleteTopicsResponse, DescribeClusterRequest,
        DescribeClusterResponse, DescribeConfigsRequest, DescribeConfigsResponse, FetchRequest,
        FetchResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
        InitProducerIdRequest, InitProducerIdResponse, ListOffsetsRequest, ListOffsetsResponse,
        MetadataRequest, MetadataResponse, OffsetForLeaderEpochRequest,
        OffsetForLeaderEpochResponse, ProduceRequest, ProduceResponse, RequestHeader,
        create_partitions_request::CreatePartitionsTopic,
        create_topics_request::{CreatableTopic, CreatableTopicConfig},
        delete_records_request::{DeleteRecordsPartition, DeleteRecordsTopic},
        delete_topics_request::DeleteTopicState,
        describe_configs_request::DescribeConfigsResource,
        fetch_request::{FetchPartition, FetchTopic},
        incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig},
        list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic},
        metadata_request::MetadataRequestTopic,
        offset_for_leader_epoch_request::{OffsetForLeaderPartition, OffsetForLeaderTopic},
        produce_request::{PartitionProduceData, TopicProduceData},
    },
    protocol::{Decodable, Encodable, StrBytes},
};
use keel_broker::api::SUPPORTED_APIS;
use keel_log::testing::{BatchSpec, build_batch};

use common::{frame, harness, name, versions};

#[tokio::test]
async fn produce_at_every_version_assigns_consecutive_offsets() {
    let h = harness().await;
    h.create_topic("p", 1).await;
    let mut expected = 0;
    for version in versions(ApiKey::Produce) {
        let response = h.produce("p", version, 3).await;
        let partition = &response.responses[0].partition_responses[0];
        assert_eq!(partition.error_code, 0, "v{version}: {partition:?}");
        assert_eq!(partition.base_offset, expected, "v{version}");
        if version >= 13 {
            assert_eq!(response.responses[0].topic_id, h.topic_id("p"));
        }
        expected += 3;
    }
}

#[tokio::test]
async fn produce_errors_are_never_reported_as_success() {
    let h = harness().await;
    h.create_topic("p", 1).await;
    for version in versions(ApiKey::Produce) {
        let response = h.produce("missing-topic", version, 1).await;
        let partition = &response.responses[0].partition_responses[0];
        // From v13 the topic is named by id: UNKNOWN_TOPIC_ID.
        let unknown = if version >= 13 { 100 } else { 3 };
        assert_eq!(partition.error_code, unknown, "v{version}");
        assert_eq!(partition.base_offset, -1);

        let mut corrupt = build_batch(&BatchSpec::default());
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0xff;
        let request = ProduceRequest::default()
            .with_acks(1)
            .with_timeout_ms(1_000)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(name("p"))
                    .with_topic_id(h.topic_id("p"))
                    .with_partition_data(vec![
                        PartitionProduceData::default()
                            .with_index(0)
                            .with_records(Some(Bytes::from(corrupt))),
                    ]),
            ]);
        let response: ProduceResponse = h.call(ApiKey::Produce, version, &request).await;
        let partition = &response.responses[0].partition_responses[0];
        assert_eq!(partition.error_code, 2, "v{version}: CORRUPT_MESSAGE");
        assert_eq!(partition.base_offset, -1);
    }
}

#[tokio::test]
async fn produce_with_acks_zero_gets_no_response() {
    let h = harness().await;
    h.create_topic("p", 1).await;
    let request = ProduceRequest::default().with_acks(0).with_topic_data(vec![
        TopicProduceData::default()
            .with_name(name("p"))
            .with_partition_data(vec![
                PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(Bytes::from(build_batch(&BatchSpec::default())))),
            ]),
    ]);
    assert!(h.raw(frame(ApiKey::Produce, 9, &request)).await.is_none());
    assert_eq!(h.broker.replicas.get("p", 0).unwrap().high_watermark(), 1);
}

#[tokio::test]
async fn fetch_at_every_version_returns_the_batches() {
    let h = harness().await;
    h.create_topic("f", 1).await;
    h.produce("f", 9, 5).await;
    h.produce("f", 9, 5).await;
    let topic_id = h.topic_id("f");
    for version in versions(ApiKey::Fetch) {
        let request = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(0)
            .with_max_bytes(1 << 20)
            .with_topics(vec![
                FetchTopic::default()
                    .with_topic(if version < 13 { name("f") } else { name("") })
                    .with_topic_id(if version >= 13 {
                        topic_id
                    } else {
                        uuid::Uuid::nil()
                    })
                    .with_partitions(vec![
                        FetchPartition::default()
                            .with_partition(0)
                            .with_fetch_offset(7)
                            .with_partition_max_bytes(1 << 20),
                    ]),
            ]);
        let response: FetchResponse = h.call(ApiKey::Fetch, version, &request).await;
        let partition = &response.responses[0].partitions[0];
        assert_eq!(partition.error_code, 0, "v{version}");
        assert_eq!(partition.high_watermark, 10);
        let records = partition.records.clone().unwrap();
        let batches = keel_log::batch::split_batches(&records).unwrap();
        // Offset 7 is inside the second batch, which is returned whole.
        assert_eq!(batches.len(), 1, "v{version}");
        let header = keel_log::batch::BatchHeader::parse(batches[0]).unwrap();
        assert_eq!(header.base_offset, 5);
    }
}

#[tokio::test]
async fn fetch_limits_and_offset_out_of_range() {
    let h = harness().await;
    h.create_topic("f", 1).await;
    for _ in 0..10 {
        h.produce("f", 9, 1).await;
    }
    let one = build_batch(&BatchSpec::default()).len() as i32;
    let fetch = |offset: i64, max_bytes: i32, partition_max: i32| {
        FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(0)
            .with_max_bytes(max_bytes)
            .with_topics(vec![
                FetchTopic::default()
                    .with_topic(name("f"))
                    .with_partitions(vec![
                        FetchPartition::default()
                            .with_partition(0)
                            .with_fetch_offset(offset)
                            .with_partition_max_bytes(partition_max),
                    ]),
            ])
    };
    let response: FetchResponse = h
        .call(ApiKey::Fetch, 12, &fetch(0, one * 3 + 5, 1 << 20))
        .await;
    let records = response.responses[0].partitions[0].records.clone().unwrap();
    assert_eq!(records.len() as i32, one * 3, "max_bytes caps the response");

    let response: FetchResponse = h.call(ApiKey::Fetch, 12, &fetch(0, 1 << 20, 10)).await;
    let records = response.responses[0].partitions[0].records.clone().unwrap();
    assert_eq!(
        records.len() as i32,
        one,
        "one oversized first batch is returned"
    );

    let response: FetchResponse = h
        .call(ApiKey::Fetch, 12, &fetch(99, 1 << 20, 1 << 20))
        .await;
    assert_eq!(response.responses[0].partitions[0].error_code, 1);
}

#[tokio::test]
async fn fetch_long_poll_wakes_on_append() {
    let h = Arc::new(harness().await);
    h.create_topic("w", 1).await;
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(10_000)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(name("w"))
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(0)
                        .with_partition_max_bytes(1 << 20),
                ]),
        ]);
    let waiting = {
        let h = Arc::clone(&h);
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let response: FetchResponse = h.call(ApiKey::Fetch, 12, &request).await;
            (started.elapsed(), response)
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(!waiting.is_finished(), "fetch returned before any data");
    h.produce("w", 9, 2).await;
    let (elapsed, response) = waiting.await.unwrap();
    assert!(elapsed < std::time::Duration::from_secs(5));
    assert!(
        !response.responses[0].partitions[0]
            .records
            .as_ref()
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn list_offsets_at_every_version() {
    let h = harness().await;
    h.create_topic("l", 1).await;
    h.produce("l", 9, 4).await;
    h.produce("l", 9, 2).await;
    let deleted = DeleteRecordsRequest::default().with_topics(vec![
        DeleteRecordsTopic::default()
            .with_name(name("l"))
            .with_partitions(vec![
                DeleteRecordsPartition::default()
                    .with_partition_index(0)
                    .with_offset(1),
            ]),
    ]);
    let deleted: DeleteRecordsResponse = h.call(ApiKey::DeleteRecords, 2, &deleted).await;
    assert_eq!(deleted.topics[0].partitions[0].low_watermark, 1);
    for version in versions(ApiKey::ListOffsets) {
        // -4, the local log's start (v8), is the log start without tiered
        // storage; -5, the last tiered offset (v9), is none.
        let mut cases = vec![(-2, 1), (-1, 6), (1_002, 2), (5_000, -1)];
        if version >= 8 {
            cases.push((-4, 1));
        }
        if version >= 9 {
            cases.push((-5, -1));
        }
        for (timestamp, offset) in cases {
            let request = ListOffsetsRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_topics(vec![
                    ListOffsetsTopic::default()
                        .with_name(name("l"))
                        .with_partitions(vec![
                            ListOffsetsPartition::default()
                                .with_partition_index(0)
                                .with_timestamp(timestamp),
                        ]),
                ]);
            let response: ListOffsetsResponse =
                h.call(ApiKey::ListOffsets, version, &request).await;
            let partition = &response.topics[0].partitions[0];
            assert_eq!(partition.error_code, 0);
            assert_eq!(partition.offset, offset, "v{version} timestamp {timestamp}");
        }
    }
}

#[tokio::test]
async fn metadata_at_every_version() {
    let h = harness().await;
    h.create_topic("m", 3).await;
    for version in versions(ApiKey::Metadata) {
        let all = if version == 0 {
            MetadataRequest::default().with_topics(Some(vec![]))
        } else {
            MetadataRequest::default().with_topics(None)
        };
        let response: MetadataResponse = h.call(ApiKey::Metadata, version, &all).await;
        assert_eq!(response.brokers.len(), 1);
        let topic = response
            .topics
            .iter()
            .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == "m"))
            .unwrap();
        assert_eq!(topic.partitions.len(), 3, "v{version}");
        assert!(topic.partitions.iter().all(|p| p.leader_id == BrokerId(1)));

        let unknown = MetadataRequest::default()
            .with_topics(Some(vec![
                MetadataRequestTopic::default()
                    .with_name(Some(name(&format!("unknown-v{version}")))),
                MetadataRequestTopic::default().with_name(Some(name("bad name!"))),
            ]))
            .with_allow_auto_topic_creation(version < 4);
        let response: MetadataResponse = h.call(ApiKey::Metadata, version, &unknown).await;
        // Before v4 auto-creation cannot be turned off by the request.
        let expected = if version >= 4 { 3 } else { 0 };
        assert_eq!(response.topics[0].error_code, expected, "v{version}");
        assert_eq!(response.topics[1].error_code, 17, "v{version}");
    }
}

#[tokio::test]
async fn metadata_auto_creates_topics_with_the_default_partition_count() {
    let h = harness().await;
    let request = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(name("auto"))),
        ]))
        .with_allow_auto_topic_creation(true);
    let response: MetadataResponse = h.call(ApiKey::Metadata, 9, &request).await;
    assert_eq!(response.topics[0].error_code, 0);
    assert_eq!(response.topics[0].partitions.len(), 1);
}

#[tokio::test]
async fn api_versions_lists_exactly_what_is_implemented() {
    let h = harness().await;
    for version in versions(ApiKey::ApiVersions) {
        let response: ApiVersionsResponse = h
            .call(ApiKey::ApiVersions, version, &ApiVersionsRequest::default())
            .await;
        assert_eq!(response.error_code, 0);
        assert_eq!(response.api_keys.len(), SUPPORTED_APIS.len());
    }
}

#[tokio::test]
async fn a_too_new_api_versions_request_gets_the_v0_fallback() {
    let h = harness().await;
    let mut request = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(ApiKey::ApiVersions as i16)
        .with_request_api_version(99)
        .with_correlation_id(5)
        .encode(&mut request, 2)
        .unwrap();
    let mut response = h.raw(request.freeze()).await.unwrap();
    response.advance(4);
    assert_eq!(response.get_i32(), 5);
    let decoded = ApiVersionsResponse::decode(&mut response, 0).unwrap();
    assert_eq!(decoded.error_code, 35);
    assert_eq!(decoded.api_keys.len(), SUPPORTED_APIS.len());
}

#[tokio::test]
async fn unknown_apis_and_versions_get_unsupported_version() {
    let h = harness().await;
    for (key, version) in [
        (9999i16, 0i16),
        (ApiKey::Produce as i16, 99),
        (ApiKey::EndTxn as i16, 0),
    ] {
        let mut request = BytesMut::new();
        request.extend_from_slice(&key.to_be_bytes());
        request.extend_from_slice(&version.to_be_bytes());
        request.extend_from_slice(&77i32.to_be_bytes());
        request.extend_from_slice(&[0, 0]);
        let mut response = h.raw(request.freeze()).await.unwrap();
        assert_eq!(response.get_i32(), 6);
        assert_eq!(response.get_i32(), 77);
        assert_eq!(response.get_i16(), 35);
    }
}

#[tokio::test]
async fn create_and_delete_topics_at_every_version() {
    let h = harness().await;
    for version in versions(ApiKey::CreateTopics) {
        let topic = format!("c{version}");
        let request = CreateTopicsRequest::default().with_topics(vec![
            CreatableTopic::default()
                .with_name(name(&topic))
                .with_num_partitions(2)
                .with_replication_factor(-1)
                .with_configs(vec![
                    CreatableTopicConfig::default()
                        .with_name(StrBytes::from_static_str("retention.ms"))
                        .with_value(Some(StrBytes::from_static_str("60000"))),
                ]),
        ]);
        let response: CreateTopicsResponse = h.call(ApiKey::CreateTopics, version, &request).await;
        assert_eq!(
            response.topics[0].error_code, 0,
            "v{version}: {:?}",
            response.topics[0]
        );
        let again: CreateTopicsResponse = h.call(ApiKey::CreateTopics, version, &request).await;
        assert_eq!(again.topics[0].error_code, 36, "TOPIC_ALREADY_EXISTS");
    }
    let bad = CreateTopicsRequest::default().with_topics(vec![
        CreatableTopic::default()
            .with_name(name("bad-config"))
            .with_num_partitions(1)
            .with_replication_factor(1)
            .with_configs(vec![
                CreatableTopicConfig::default()
                    .with_name(StrBytes::from_static_str("retention.ms"))
                    .with_value(Some(StrBytes::from_static_str("soon"))),
            ]),
        CreatableTopic::default()
            .with_name(name("too-many-replicas"))
            .with_num_partitions(1)
            .with_replication_factor(3),
        CreatableTopic::default()
            .with_name(name("zero"))
            .with_num_partitions(0)
            .with_replication_factor(1),
    ]);
    let response: CreateTopicsResponse = h.call(ApiKey::CreateTopics, 7, &bad).await;
    let codes: Vec<i16> = response.topics.iter().map(|t| t.error_code).collect();
    assert_eq!(codes, vec![40, 38, 37]);
    assert!(
        response.topics[0]
            .error_message
            .as_ref()
            .unwrap()
            .contains("retention.ms")
    );

    for version in versions(ApiKey::DeleteTopics) {
        let topic = format!("c{}", version + 1);
        let request = if version >= 6 {
            DeleteTopicsRequest::default().with_topics(vec![
                DeleteTopicState::default().with_name(Some(name(&topic))),
            ])
        } else {
            DeleteTopicsRequest::default().with_topic_names(vec![name(&topic)])
        };
        let response: DeleteTopicsResponse = h.call(ApiKey::DeleteTopics, version, &request).await;
        assert_eq!(response.responses[0].error_code, 0, "v{version}");
        let again: DeleteTopicsResponse = h.call(ApiKey::DeleteTopics, version, &request).await;
        assert_eq!(again.responses[0].error_code, 3, "v{version}");
        assert!(h.broker.image().topic(&topic).is_none());
    }
}

#[tokio::test]
async fn create_partitions_at_every_version() {
    let h = harness().await;
    h.create_topic("cp", 1).await;
    for version in versions(ApiKey::CreatePartitions) {
        let count = 2 + i32::from(version);
        let request = CreatePartitionsRequest::default()
            .with_timeout_ms(1_000)
            .with_topics(vec![
                CreatePartitionsTopic::default()
                    .with_name(name("cp"))
                    .with_count(count),
            ]);
        let response: CreatePartitionsResponse =
            h.call(ApiKey::CreatePartitions, version, &request).await;
        assert_eq!(response.results[0].error_code, 0, "v{version}");
        assert_eq!(
            h.broker.image().topic("cp").unwrap().partitions.len() as i32,
            count
        );
        assert!(h.broker.replicas.get("cp", count - 1).is_some());
        let shrink: CreatePartitionsResponse =
            h.call(ApiKey::CreatePartitions, version, &request).await;
        assert_eq!(shrink.results[0].error_code, 37, "INVALID_PARTITIONS");
    }
}

#[tokio::test]
async fn configs_are_described_and_altered_at_every_version() {
    let h = harness().await;
    h.create_topic("cfg", 1).await;
    for version in versions(ApiKey::IncrementalAlterConfigs) {
        let value = format!("{}", 1000 + i32::from(version));
        let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str("cfg"))
                .with_configs(vec![
                    AlterableConfig::default()
                        .with_name(StrBytes::from_static_str("retention.ms"))
                        .with_config_operation(0)
                        .with_value(Some(StrBytes::from_string(value.clone()))),
                ]),
        ]);
        let response: IncrementalAlterConfigsResponse = h
            .call(ApiKey::IncrementalAlterConfigs, version, &request)
            .await;
        assert_eq!(response.responses[0].error_code, 0, "v{version}");
        let log_config = h
            .broker
            .replicas
            .get("cfg", 0)
            .unwrap()
            .log()
            .config()
            .clone();
        assert_eq!(log_config.retention_ms.to_string(), value);
    }
    let bad = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str("cfg"))
            .with_configs(vec![
                AlterableConfig::default()
                    .with_name(StrBytes::from_static_str("no.such.config"))
                    .with_value(Some(StrBytes::from_static_str("1"))),
            ]),
    ]);
    let response: IncrementalAlterConfigsResponse =
        h.call(ApiKey::IncrementalAlterConfigs, 1, &bad).await;
    assert_eq!(response.responses[0].error_code, 40);

    for version in versions(ApiKey::DescribeConfigs) {
        let request = DescribeConfigsRequest::default()
            .with_include_synonyms(true)
            .with_include_documentation(version >= 3)
            .with_resources(vec![
                DescribeConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(StrBytes::from_static_str("cfg")),
                DescribeConfigsResource::default()
                    .with_resource_type(4)
                    .with_resource_name(StrBytes::from_static_str("1")),
                DescribeConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(StrBytes::from_static_str("missing")),
            ]);
        let response: DescribeConfigsResponse =
            h.call(ApiKey::DescribeConfigs, version, &request).await;
        let retention = response.results[0]
            .configs
            .iter()
            .find(|c| c.name.as_str() == "retention.ms")
            .unwrap();
        assert_eq!(retention.value.as_deref(), Some("1001"));
        assert_eq!(retention.config_source, 1, "DYNAMIC_TOPIC_CONFIG");
        assert!(
            response.results[1]
                .configs
                .iter()
                .any(|c| c.name.as_str() == "num.partitions")
        );
        assert_eq!(response.results[2].error_code, 3);
    }
}

#[tokio::test]
async fn delete_records_moves_the_low_watermark() {
    let h = harness().await;
    h.create_topic("d", 1).await;
    h.produce("d", 9, 10).await;
    for version in versions(ApiKey::DeleteRecords) {
        let offset = 2 + i64::from(version);
        let request = DeleteRecordsRequest::default()
            .with_timeout_ms(1_000)
            .with_topics(vec![
                DeleteRecordsTopic::default()
                    .with_name(name("d"))
                    .with_partitions(vec![
                        DeleteRecordsPartition::default()
                            .with_partition_index(0)
                            .with_offset(offset),
                    ]),
            ]);
        let response: DeleteRecordsResponse =
            h.call(ApiKey::DeleteRecords, version, &request).await;
        let partition = &response.topics[0].partitions[0];
        assert_eq!(partition.error_code, 0);
        assert_eq!(partition.low_watermark, offset);
    }
    let beyond = DeleteRecordsRequest::default().with_topics(vec![
        DeleteRecordsTopic::default()
            .with_name(name("d"))
            .with_partitions(vec![
                DeleteRecordsPartition::default()
                    .with_partition_index(0)
                    .with_offset(11),
            ]),
    ]);
    let response: DeleteRecordsResponse = h.call(ApiKey::DeleteRecords, 2, &beyond).await;
    assert_eq!(response.topics[0].partitions[0].error_code, 1);
}

#[tokio::test]
async fn init_producer_id_hands_out_distinct_ids() {
    let h = harness().await;
    let mut ids = Vec::new();
    for version in versions(ApiKey::InitProducerId) {
        let request = InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60_000)
            .with_producer_id((-1).into())
            .with_producer_epoch(-1);
        let response: InitProducerIdResponse =
            h.call(ApiKey::InitProducerId, version, &request).await;
        assert_eq!(response.error_code, 0);
        assert_eq!(response.producer_epoch, 0);
        ids.push(response.producer_id.0);
    }
    ids.dedup();
    assert_eq!(ids.len(), versions(ApiKey::InitProducerId).count());
}

#[tokio::test]
async fn offset_for_leader_epoch_and_describe_cluster() {
    let h = harness().await;
    h.create_topic("e", 1).await;
    h.produce("e", 9, 3).await;
    for version in versions(ApiKey::OffsetForLeaderEpoch) {
        let request = OffsetForLeaderEpochRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![
                OffsetForLeaderTopic::default()
                    .with_topic(name("e"))
                    .with_partitions(vec![
                        OffsetForLeaderPartition::default()
                            .with_partition(0)
                            .with_current_leader_epoch(0)
                            .with_leader_epoch(0),
                    ]),
            ]);
        let response: OffsetForLeaderEpochResponse = h
            .call(ApiKey::OffsetForLeaderEpoch, version, &request)
            .await;
        let partition = &response.topics[0].partitions[0];
        assert_eq!(
            (
                partition.error_code,
                partition.leader_epoch,
                partition.end_offset
            ),
            (0, 0, 3)
        );
    }
    for version in versions(ApiKey::DescribeCluster) {
        let response: DescribeClusterResponse = h
            .call(
                ApiKey::DescribeCluster,
                version,
                &DescribeClusterRequest::default(),
            )
            .await;
        assert_eq!(response.controller_id, BrokerId(1));
        assert_eq!(response.brokers.len(), 1);
        assert_eq!(Some(response.cluster_id.to_string()), h.broker.cluster_id());
    }
}
