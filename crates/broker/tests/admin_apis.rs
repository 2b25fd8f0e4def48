//! The admin APIs clients call beyond topics and incremental configs,
//! through the dispatch of a real one-node broker at every advertised
//! version: legacy AlterConfigs, DescribeLogDirs, AlterReplicaLogDirs,
//! DescribeQuorum and ListConfigResources. The Python tests drive the same
//! APIs with the real clients; here every version's encoding is checked.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use kafka_protocol::{
    messages::{
        AlterConfigsRequest, AlterConfigsResponse, AlterReplicaLogDirsRequest,
        AlterReplicaLogDirsResponse, ApiKey, BrokerId, DescribeLogDirsRequest,
        DescribeLogDirsResponse, DescribeQuorumRequest, DescribeQuorumResponse,
        ListConfigResourcesRequest, ListConfigResourcesResponse,
        alter_configs_request::{AlterConfigsResource, AlterableConfig},
        alter_replica_log_dirs_request::{AlterReplicaLogDir, AlterReplicaLogDirTopic},
        describe_log_dirs_request::DescribableLogDirTopic,
        describe_quorum_request::{PartitionData, TopicData},
    },
    protocol::StrBytes,
};

use common::{harness, name, versions};

fn config(key: &str, value: Option<&str>) -> AlterableConfig {
    AlterableConfig::default()
        .with_name(StrBytes::from_string(key.to_string()))
        .with_value(value.map(|v| StrBytes::from_string(v.to_string())))
}

fn topic_resource(topic: &'static str, configs: Vec<AlterableConfig>) -> AlterConfigsResource {
    AlterConfigsResource::default()
        .with_resource_type(2)
        .with_resource_name(StrBytes::from_static_str(topic))
        .with_configs(configs)
}

#[tokio::test]
async fn legacy_alter_configs_replaces_the_whole_set_at_every_version() {
    let h = harness().await;
    h.create_topic("whole", 1).await;
    for version in versions(ApiKey::AlterConfigs) {
        let retention = format!("{}", 60_000 + i32::from(version));
        let set_both = AlterConfigsRequest::default().with_resources(vec![topic_resource(
            "whole",
            vec![
                config("retention.ms", Some(&retention)),
                config("segment.ms", Some("3600000")),
            ],
        )]);
        let response: AlterConfigsResponse = h.call(ApiKey::AlterConfigs, version, &set_both).await;
        assert_eq!(response.responses[0].error_code, 0, "v{version}");
        let overrides = h.broker.image().topic("whole").unwrap().configs.clone();
        assert_eq!(overrides.get("retention.ms"), Some(&retention));

        // Listing one config drops the other.
        let set_one = AlterConfigsRequest::default().with_resources(vec![topic_resource(
            "whole",
            vec![config("segment.ms", Some("7200000"))],
        )]);
        let response: AlterConfigsResponse = h.call(ApiKey::AlterConfigs, version, &set_one).await;
        assert_eq!(response.responses[0].error_code, 0, "v{version}");
        let overrides = h.broker.image().topic("whole").unwrap().configs.clone();
        assert_eq!(
            overrides.into_iter().collect::<Vec<_>>(),
            [("segment.ms".to_string(), "7200000".to_string())],
            "v{version}"
        );
    }

    let h = &h;
    let refused = |request: AlterConfigsRequest| async move {
        let response: AlterConfigsResponse = h.call(ApiKey::AlterConfigs, 2, &request).await;
        response
            .responses
            .iter()
            .map(|r| {
                (
                    r.error_code,
                    r.error_message.as_deref().unwrap_or("").to_string(),
                )
            })
            .collect::<Vec<_>>()
    };
    let null = refused(
        AlterConfigsRequest::default().with_resources(vec![topic_resource(
            "whole",
            vec![config("retention.ms", None)],
        )]),
    )
    .await;
    assert_eq!(null[0].0, 42, "INVALID_REQUEST: {null:?}");
    assert!(null[0].1.contains("retention.ms"), "{null:?}");
    let twice = refused(
        AlterConfigsRequest::default().with_resources(vec![topic_resource(
            "whole",
            vec![
                config("retention.ms", Some("1")),
                config("retention.ms", Some("2")),
            ],
        )]),
    )
    .await;
    assert_eq!(twice[0].0, 42, "{twice:?}");
    let same_resource = refused(AlterConfigsRequest::default().with_resources(vec![
        topic_resource("whole", vec![]),
        topic_resource("whole", vec![]),
    ]))
    .await;
    assert_eq!(
        same_resource.iter().map(|r| r.0).collect::<Vec<_>>(),
        [42, 42]
    );
    let unknown = refused(
        AlterConfigsRequest::default().with_resources(vec![topic_resource(
            "whole",
            vec![config("retention.msec", Some("1"))],
        )]),
    )
    .await;
    assert_eq!(unknown[0].0, 40, "INVALID_CONFIG: {unknown:?}");
    assert!(unknown[0].1.contains("retention.msec"), "{unknown:?}");
    // None of the refused requests changed anything.
    assert_eq!(
        h.broker
            .image()
            .topic("whole")
            .unwrap()
            .configs
            .get("segment.ms"),
        Some(&"7200000".to_string())
    );
}

#[tokio::test]
async fn log_dirs_are_described_and_moves_answered_at_every_version() {
    let h = harness().await;
    h.create_topic("sized", 2).await;
    h.produce("sized", 9, 10).await;
    let data_dir = std::path::absolute(&h.broker.config.data_dir).unwrap();
    for version in versions(ApiKey::DescribeLogDirs) {
        let all: DescribeLogDirsResponse = h
            .call(
                ApiKey::DescribeLogDirs,
                version,
                &DescribeLogDirsRequest::default().with_topics(None),
            )
            .await;
        let [dir] = all.results.as_slice() else {
            panic!("v{version}: one log dir, got {:?}", all.results);
        };
        assert_eq!(dir.log_dir.as_str(), data_dir.to_str().unwrap());
        let sized = dir
            .topics
            .iter()
            .find(|t| t.name.as_str() == "sized")
            .unwrap();
        let sizes: Vec<_> = sized
            .partitions
            .iter()
            .map(|p| (p.partition_index, p.partition_size > 0))
            .collect();
        assert_eq!(sizes, [(0, true), (1, false)], "v{version}");
        if version >= 4 {
            assert!(0 < dir.usable_bytes && dir.usable_bytes <= dir.total_bytes);
        }
        let some = DescribeLogDirsRequest::default().with_topics(Some(vec![
            DescribableLogDirTopic::default()
                .with_topic(name("sized"))
                .with_partitions(vec![1, 5]),
        ]));
        let some: DescribeLogDirsResponse = h.call(ApiKey::DescribeLogDirs, version, &some).await;
        let listed: Vec<_> = some.results[0]
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(|p| (t.name.to_string(), p.partition_index))
            })
            .collect();
        assert_eq!(listed, [("sized".to_string(), 1)], "v{version}");
    }
    for version in versions(ApiKey::AlterReplicaLogDirs) {
        let request = |path: &str| {
            AlterReplicaLogDir::default()
                .with_path(StrBytes::from_string(path.to_string()))
                .with_topics(vec![
                    AlterReplicaLogDirTopic::default()
                        .with_name(name("sized"))
                        .with_partitions(vec![0, 9]),
                ])
        };
        let moves = AlterReplicaLogDirsRequest::default().with_dirs(vec![
            request(data_dir.to_str().unwrap()),
            request("/elsewhere"),
        ]);
        let response: AlterReplicaLogDirsResponse =
            h.call(ApiKey::AlterReplicaLogDirs, version, &moves).await;
        let codes: Vec<_> = response
            .results
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(|p| (p.partition_index, p.error_code))
            })
            .collect();
        // The same dir: done; a partition the cluster lacks: 3; another
        // dir: LOG_DIR_NOT_FOUND.
        assert_eq!(codes, [(0, 0), (9, 3), (0, 57), (9, 57)], "v{version}");
    }
}

#[tokio::test]
async fn the_quorum_of_one_is_described_at_every_version() {
    let h = harness().await;
    h.create_topic("t", 1).await;
    let request = |topic: &'static str| {
        DescribeQuorumRequest::default().with_topics(vec![
            TopicData::default()
                .with_topic_name(name(topic))
                .with_partitions(vec![PartitionData::default().with_partition_index(0)]),
        ])
    };
    for version in versions(ApiKey::DescribeQuorum) {
        let response: DescribeQuorumResponse = h
            .call(
                ApiKey::DescribeQuorum,
                version,
                &request("__cluster_metadata"),
            )
            .await;
        assert_eq!(response.error_code, 0);
        let partition = &response.topics[0].partitions[0];
        assert_eq!(partition.error_code, 0, "v{version}: {partition:?}");
        assert_eq!(partition.leader_id, BrokerId(1));
        assert!(partition.leader_epoch >= 1);
        let [voter] = partition.current_voters.as_slice() else {
            panic!("v{version}: one voter, got {partition:?}");
        };
        assert_eq!(voter.replica_id, BrokerId(1));
        assert!(partition.high_watermark > 0);
        assert_eq!(voter.log_end_offset, partition.high_watermark);
        assert!(partition.observers.is_empty());
        if version >= 1 {
            assert!(voter.last_fetch_timestamp > 0 && voter.last_caught_up_timestamp > 0);
        }
        if version >= 2 {
            assert_eq!(response.nodes.len(), 1, "v{version}");
        }
        let other: DescribeQuorumResponse =
            h.call(ApiKey::DescribeQuorum, version, &request("t")).await;
        assert_eq!(other.topics[0].partitions[0].error_code, 3, "v{version}");
    }
}

#[tokio::test]
async fn config_resources_are_listed_at_every_version() {
    let h = harness().await;
    h.create_topic("listed", 1).await;
    for version in versions(ApiKey::ListConfigResources) {
        let response: ListConfigResourcesResponse = h
            .call(
                ApiKey::ListConfigResources,
                version,
                &ListConfigResourcesRequest::default(),
            )
            .await;
        assert_eq!(response.error_code, 0);
        let listed: Vec<_> = response
            .config_resources
            .iter()
            .map(|r| (r.resource_type, r.resource_name.to_string()))
            .collect();
        if version == 0 {
            // Version 0 lists client metrics subscriptions alone.
            assert!(listed.is_empty(), "{listed:?}");
        } else {
            assert_eq!(listed, [(4, "1".to_string()), (2, "listed".to_string())]);
        }
    }
    let loggers: ListConfigResourcesResponse = h
        .call(
            ApiKey::ListConfigResources,
            1,
            &ListConfigResourcesRequest::default().with_resource_types(vec![8]),
        )
        .await;
    assert_eq!(loggers.error_code, 35, "UNSUPPORTED_VERSION");
}

#[tokio::test]
async fn the_incremental_form_also_refuses_a_resource_named_twice() {
    use kafka_protocol::messages::{
        IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
        incremental_alter_configs_request as incremental,
    };
    let h = harness().await;
    h.create_topic("twice", 1).await;
    let resource = incremental::AlterConfigsResource::default()
        .with_resource_type(2)
        .with_resource_name(StrBytes::from_static_str("twice"))
        .with_configs(vec![
            incremental::AlterableConfig::default()
                .with_name(StrBytes::from_static_str("retention.ms"))
                .with_value(Some(StrBytes::from_static_str("1000"))),
        ]);
    let request =
        IncrementalAlterConfigsRequest::default().with_resources(vec![resource.clone(), resource]);
    let response: IncrementalAlterConfigsResponse =
        h.call(ApiKey::IncrementalAlterConfigs, 1, &request).await;
    let codes: Vec<_> = response.responses.iter().map(|r| r.error_code).collect();
    assert_eq!(codes, [42, 42], "INVALID_REQUEST for both copies");
    assert!(h.broker.image().topic("twice").unwrap().configs.is_empty());
}

#[tokio::test]
async fn metadata_carries_every_operation_when_asked_at_every_version() {
    use kafka_protocol::messages::{MetadataRequest, MetadataResponse};
    let h = harness().await;
    h.create_topic("ops", 1).await;
    for version in versions(ApiKey::Metadata) {
        for asked in [false, true] {
            let request = MetadataRequest::default()
                .with_topics(None)
                .with_include_cluster_authorized_operations(asked && (8..=10).contains(&version))
                .with_include_topic_authorized_operations(asked && version >= 8);
            let response: MetadataResponse = h.call(ApiKey::Metadata, version, &request).await;
            let topic_operations = if asked && version >= 8 {
                3576
            } else {
                i32::MIN
            };
            let cluster_operations = if asked && (8..=10).contains(&version) {
                8096
            } else {
                i32::MIN
            };
            assert_eq!(
                response.topics[0].topic_authorized_operations, topic_operations,
                "v{version} asked {asked}"
            );
            assert_eq!(
                response.cluster_authorized_operations, cluster_operations,
                "v{version} asked {asked}"
            );
        }
    }
}
