//! The group coordinator's APIs at every advertised version, through the
//! request dispatch of an in-process broker: coordinator lookup, a group
//! forming, syncing, heartbeating, committing and leaving, offsets and their
//! survival across a restart, group deletion, and `__consumer_offsets`
//! being internal. The consumer protocol of KIP-848 is in
//! `consumer_groups.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{
    Harness,
    groups::{
        commit, coordinator_ready, fetch_committed, fetch_request, group, join_request, text,
    },
    harness, name, versions,
};
use kafka_protocol::messages::{
    ApiKey, CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest,
    CreateTopicsResponse, DeleteGroupsRequest, DeleteGroupsResponse, DeleteTopicsRequest,
    DeleteTopicsResponse, DescribeGroupsRequest, DescribeGroupsResponse, FindCoordinatorRequest,
    FindCoordinatorResponse, HeartbeatRequest, HeartbeatResponse, JoinGroupResponse,
    LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse, MetadataRequest,
    MetadataResponse, OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse,
    OffsetFetchResponse, SyncGroupRequest, SyncGroupResponse,
    create_partitions_request::CreatePartitionsTopic,
    create_topics_request::CreatableTopic,
    leave_group_request::MemberIdentity,
    metadata_request::MetadataRequestTopic,
    offset_delete_request::{OffsetDeleteRequestPartition, OffsetDeleteRequestTopic},
    sync_group_request::SyncGroupRequestAssignment,
};
use keel_broker::{broker::Broker, config::BrokerConfig};

const MEMBER_ID_REQUIRED: i16 = 79;
const INVALID_TOPIC_EXCEPTION: i16 = 17;
const ILLEGAL_GENERATION: i16 = 22;
const INVALID_REQUEST: i16 = 42;
const UNKNOWN_MEMBER_ID: i16 = 25;

#[tokio::test]
async fn find_coordinator_at_every_version() {
    let h = harness().await;
    coordinator_ready(&h, "warm-up").await;
    for version in versions(ApiKey::FindCoordinator) {
        let request = if version >= 4 {
            FindCoordinatorRequest::default().with_coordinator_keys(vec![text("a"), text("b")])
        } else {
            FindCoordinatorRequest::default().with_key(text("a"))
        };
        let response: FindCoordinatorResponse =
            h.call(ApiKey::FindCoordinator, version, &request).await;
        if version >= 4 {
            assert_eq!(response.coordinators.len(), 2);
            assert!(
                response
                    .coordinators
                    .iter()
                    .all(|c| c.error_code == 0 && c.node_id.0 == 1)
            );
        } else {
            assert_eq!(
                (response.error_code, response.node_id.0),
                (0, 1),
                "v{version}"
            );
        }
        if version >= 1 {
            let transaction = if version >= 4 {
                FindCoordinatorRequest::default()
                    .with_key_type(1)
                    .with_coordinator_keys(vec![text("tx")])
            } else {
                FindCoordinatorRequest::default()
                    .with_key_type(1)
                    .with_key(text("tx"))
            };
            let response: FindCoordinatorResponse =
                h.call(ApiKey::FindCoordinator, version, &transaction).await;
            let (code, message) = if version >= 4 {
                (
                    response.coordinators[0].error_code,
                    response.coordinators[0].error_message.clone(),
                )
            } else {
                (response.error_code, response.error_message.clone())
            };
            assert_eq!(code, 42, "INVALID_REQUEST for a transaction coordinator");
            assert!(message.unwrap().contains("transactions"));
        }
        if version >= 6 {
            let share = FindCoordinatorRequest::default()
                .with_key_type(2)
                .with_coordinator_keys(vec![text("g:topic-id:0")]);
            let response: FindCoordinatorResponse =
                h.call(ApiKey::FindCoordinator, version, &share).await;
            assert_eq!(response.coordinators[0].error_code, 42);
            let message = response.coordinators[0].error_message.clone().unwrap();
            assert!(message.contains("share groups"), "{message}");
        }
    }
}

#[tokio::test]
async fn a_group_forms_syncs_heartbeats_and_leaves_at_every_version() {
    let h = harness().await;
    for version in versions(ApiKey::JoinGroup) {
        let group_id = format!("g{version}");
        coordinator_ready(&h, &group_id).await;
        let mut response: JoinGroupResponse = h
            .call(
                ApiKey::JoinGroup,
                version,
                &join_request(version, &group_id, ""),
            )
            .await;
        if version >= 4 {
            assert_eq!(response.error_code, MEMBER_ID_REQUIRED, "v{version}");
            let member_id = response.member_id.to_string();
            response = h
                .call(
                    ApiKey::JoinGroup,
                    version,
                    &join_request(version, &group_id, &member_id),
                )
                .await;
        }
        assert_eq!(response.error_code, 0, "v{version}: {response:?}");
        let member_id = response.member_id.clone();
        assert_eq!(response.leader, member_id);
        assert_eq!(response.members.len(), 1);
        assert_eq!(response.protocol_name.as_deref(), Some("range"));
        let generation = response.generation_id;

        let sync_version = version.min(5);
        let mut sync = SyncGroupRequest::default()
            .with_group_id(group(&group_id))
            .with_generation_id(generation)
            .with_member_id(member_id.clone())
            .with_assignments(vec![
                SyncGroupRequestAssignment::default()
                    .with_member_id(member_id.clone())
                    .with_assignment(Bytes::from_static(b"assigned")),
            ]);
        if sync_version >= 5 {
            sync = sync
                .with_protocol_type(Some(text("consumer")))
                .with_protocol_name(Some(text("range")));
        }
        let synced: SyncGroupResponse = h.call(ApiKey::SyncGroup, sync_version, &sync).await;
        assert_eq!(synced.error_code, 0);
        assert_eq!(&synced.assignment[..], b"assigned");

        let heartbeat = HeartbeatRequest::default()
            .with_group_id(group(&group_id))
            .with_generation_id(generation)
            .with_member_id(member_id.clone());
        let beat: HeartbeatResponse = h.call(ApiKey::Heartbeat, version.min(4), &heartbeat).await;
        assert_eq!(beat.error_code, 0);
        let stale = heartbeat.clone().with_generation_id(generation + 7);
        let beat: HeartbeatResponse = h.call(ApiKey::Heartbeat, version.min(4), &stale).await;
        assert_eq!(beat.error_code, 22, "ILLEGAL_GENERATION");

        let leave_version = version.min(5);
        let leave = if leave_version >= 3 {
            LeaveGroupRequest::default()
                .with_group_id(group(&group_id))
                .with_members(vec![
                    MemberIdentity::default().with_member_id(member_id.clone()),
                ])
        } else {
            LeaveGroupRequest::default()
                .with_group_id(group(&group_id))
                .with_member_id(member_id.clone())
        };
        let left: LeaveGroupResponse = h.call(ApiKey::LeaveGroup, leave_version, &leave).await;
        assert_eq!(left.error_code, 0);
        let beat: HeartbeatResponse = h.call(ApiKey::Heartbeat, version.min(4), &heartbeat).await;
        assert_eq!(beat.error_code, 25, "UNKNOWN_MEMBER_ID after leaving");
    }
    for version in versions(ApiKey::DescribeGroups) {
        let request =
            DescribeGroupsRequest::default().with_groups(vec![group("g9"), group("never")]);
        let described: DescribeGroupsResponse =
            h.call(ApiKey::DescribeGroups, version, &request).await;
        assert_eq!(described.groups[0].group_state.as_str(), "Empty");
        assert_eq!(described.groups[1].group_state.as_str(), "Dead");
        // From version 6 an unknown group also says so (KIP-1043).
        let unknown = if version >= 6 { 69 } else { 0 };
        assert_eq!(
            described.groups[1].error_code, unknown,
            "v{version}: GROUP_ID_NOT_FOUND"
        );
        assert_eq!(described.groups[0].error_code, 0);
    }
    for version in versions(ApiKey::ListGroups) {
        let listed: ListGroupsResponse = h
            .call(ApiKey::ListGroups, version, &ListGroupsRequest::default())
            .await;
        assert_eq!(listed.groups.len(), 10, "v{version}");
        assert!(
            listed
                .groups
                .iter()
                .all(|g| g.protocol_type.as_str() == "consumer")
        );
    }
}

#[tokio::test]
async fn offsets_are_committed_and_fetched_at_every_version_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let h = {
        let (broker, _) = Broker::open(BrokerConfig::for_tests(dir.path()))
            .await
            .unwrap();
        broker.ready().await;
        common::Harness::from(broker)
    };
    h.create_topic("t", 2).await;
    coordinator_ready(&h, "offsets").await;
    for version in versions(ApiKey::OffsetCommit) {
        let committed: OffsetCommitResponse = h
            .call(
                ApiKey::OffsetCommit,
                version,
                &commit("offsets", 100 + i64::from(version)),
            )
            .await;
        let codes: Vec<i16> = committed.topics[0]
            .partitions
            .iter()
            .map(|p| p.error_code)
            .collect();
        assert_eq!(codes, vec![0, 3], "v{version}: partition 9 does not exist");
    }
    // The commit of the newest version came last.
    let last = 100 + i64::from(*versions(ApiKey::OffsetCommit).end());
    for version in versions(ApiKey::OffsetFetch) {
        let fetched: OffsetFetchResponse = h
            .call(
                ApiKey::OffsetFetch,
                version,
                &fetch_request(version, "offsets"),
            )
            .await;
        assert_eq!(fetch_committed(&fetched, version), (last, -1), "v{version}");
    }
    h.broker.stop(Duration::from_secs(1)).await;
    drop(h);

    let (broker, _) = Broker::open(BrokerConfig::for_tests(dir.path()))
        .await
        .unwrap();
    broker.ready().await;
    let h = common::Harness::from(broker);
    coordinator_ready(&h, "offsets").await;
    let fetched: OffsetFetchResponse = h
        .call(ApiKey::OffsetFetch, 5, &fetch_request(5, "offsets"))
        .await;
    assert_eq!(fetch_committed(&fetched, 5), (last, -1));
    drop(dir);
}

async fn open_with_retention(dir: &std::path::Path, retention_ms: i64) -> Harness {
    let mut config = BrokerConfig::for_tests(dir);
    config.groups.offsets_retention_ms = retention_ms;
    let (broker, _) = Broker::open(config).await.unwrap();
    broker.ready().await;
    Harness::from(broker)
}

async fn committed_offset(h: &Harness, group_id: &str) -> i64 {
    let fetched: OffsetFetchResponse = h
        .call(ApiKey::OffsetFetch, 7, &fetch_request(7, group_id))
        .await;
    assert_eq!(fetched.error_code, 0);
    fetch_committed(&fetched, 7).0
}

#[tokio::test]
async fn offsets_of_groups_left_empty_expire_after_the_retention() {
    let dir = tempfile::tempdir().unwrap();
    let h = open_with_retention(dir.path(), 300).await;
    h.create_topic("t", 2).await;
    coordinator_ready(&h, "fleeting").await;
    coordinator_ready(&h, "busy").await;
    for group_id in ["fleeting", "busy"] {
        let _: OffsetCommitResponse = h.call(ApiKey::OffsetCommit, 8, &commit(group_id, 7)).await;
        assert_eq!(committed_offset(&h, group_id).await, 7);
    }
    // A group with a member is not empty, so its offsets stay.
    let joined: JoinGroupResponse = h
        .call(ApiKey::JoinGroup, 3, &join_request(3, "busy", ""))
        .await;
    assert_eq!(joined.error_code, 0);

    let mut expired = false;
    for _ in 0..100 {
        if committed_offset(&h, "fleeting").await == -1 {
            expired = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(expired, "the offsets of an empty group never expired");
    assert_eq!(committed_offset(&h, "busy").await, 7);
    h.broker.stop(Duration::from_secs(1)).await;
    drop(h);

    // The expiry was written to __consumer_offsets: it holds after a
    // restart, even with a retention that would keep the offsets.
    let h = open_with_retention(dir.path(), 3_600_000).await;
    coordinator_ready(&h, "fleeting").await;
    assert_eq!(committed_offset(&h, "fleeting").await, -1);
    assert_eq!(committed_offset(&h, "busy").await, 7);
}

#[tokio::test]
async fn groups_and_offsets_are_deleted() {
    let h = harness().await;
    h.create_topic("t", 2).await;
    coordinator_ready(&h, "doomed").await;
    let _: OffsetCommitResponse = h.call(ApiKey::OffsetCommit, 8, &commit("doomed", 5)).await;
    let request = OffsetDeleteRequest::default()
        .with_group_id(group("doomed"))
        .with_topics(vec![
            OffsetDeleteRequestTopic::default()
                .with_name(name("t"))
                .with_partitions(vec![
                    OffsetDeleteRequestPartition::default().with_partition_index(0),
                ]),
        ]);
    let deleted: OffsetDeleteResponse = h.call(ApiKey::OffsetDelete, 0, &request).await;
    assert_eq!(deleted.error_code, 0);
    assert_eq!(deleted.topics[0].partitions[0].error_code, 0);
    let fetched: OffsetFetchResponse = h
        .call(ApiKey::OffsetFetch, 7, &fetch_request(7, "doomed"))
        .await;
    assert_eq!(fetch_committed(&fetched, 7).0, -1);

    for version in versions(ApiKey::DeleteGroups) {
        let _: OffsetCommitResponse = h.call(ApiKey::OffsetCommit, 8, &commit("doomed", 5)).await;
        let request = DeleteGroupsRequest::default()
            .with_groups_names(vec![group("doomed"), group("missing")]);
        let response: DeleteGroupsResponse = h.call(ApiKey::DeleteGroups, version, &request).await;
        let codes: Vec<i16> = response.results.iter().map(|r| r.error_code).collect();
        assert_eq!(
            codes,
            vec![0, 69],
            "v{version}: GROUP_ID_NOT_FOUND for the missing one"
        );
    }

    // Requests refused for a group that does not exist leave nothing behind.
    let ghost: JoinGroupResponse = h
        .call(
            ApiKey::JoinGroup,
            5,
            &join_request(5, "ghost", "no-such-member"),
        )
        .await;
    assert_eq!(ghost.error_code, UNKNOWN_MEMBER_ID);
    let mut stale = commit("ghost", 1);
    stale.generation_id_or_member_epoch = 4;
    stale.member_id = text("no-such-member");
    let refused: OffsetCommitResponse = h.call(ApiKey::OffsetCommit, 8, &stale).await;
    assert_eq!(
        refused.topics[0].partitions[0].error_code, ILLEGAL_GENERATION,
        "a commit in a generation of a group that does not exist"
    );
    let listed: ListGroupsResponse = h
        .call(ApiKey::ListGroups, 4, &ListGroupsRequest::default())
        .await;
    assert!(
        listed
            .groups
            .iter()
            .all(|g| g.group_id.0.as_str() != "ghost")
    );

    // A group with members cannot be deleted.
    let join: JoinGroupResponse = h
        .call(ApiKey::JoinGroup, 3, &join_request(3, "busy", ""))
        .await;
    assert_eq!(join.error_code, 0);
    let request = DeleteGroupsRequest::default().with_groups_names(vec![group("busy")]);
    let response: DeleteGroupsResponse = h.call(ApiKey::DeleteGroups, 2, &request).await;
    assert_eq!(response.results[0].error_code, 68, "NON_EMPTY_GROUP");

    // Offsets of a group with members that is not a consumer group (its
    // subscriptions cannot be read) are not deleted either.
    let _: OffsetCommitResponse = h.call(ApiKey::OffsetCommit, 8, &commit("workers", 5)).await;
    let mut connect = join_request(3, "workers", "");
    connect.protocol_type = text("connect");
    let joined: JoinGroupResponse = h.call(ApiKey::JoinGroup, 3, &connect).await;
    assert_eq!(joined.error_code, 0);
    let request = OffsetDeleteRequest::default()
        .with_group_id(group("workers"))
        .with_topics(vec![
            OffsetDeleteRequestTopic::default()
                .with_name(name("t"))
                .with_partitions(vec![
                    OffsetDeleteRequestPartition::default().with_partition_index(0),
                ]),
        ]);
    let refused: OffsetDeleteResponse = h.call(ApiKey::OffsetDelete, 0, &request).await;
    assert_eq!(refused.error_code, 68, "NON_EMPTY_GROUP");
}

#[tokio::test]
async fn the_offsets_topic_is_internal_and_refuses_client_writes() {
    let h = harness().await;
    coordinator_ready(&h, "any").await;
    for version in versions(ApiKey::Metadata) {
        let request = MetadataRequest::default().with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(name("__consumer_offsets"))),
        ]));
        let response: MetadataResponse = h.call(ApiKey::Metadata, version, &request).await;
        assert_eq!(response.topics[0].error_code, 0, "v{version}");
        assert_eq!(response.topics[0].is_internal, version >= 1, "v{version}");
    }
    let produced = h.produce("__consumer_offsets", 9, 1).await;
    let partition = &produced.responses[0].partition_responses[0];
    assert_eq!(partition.error_code, INVALID_TOPIC_EXCEPTION);
    assert!(
        partition
            .error_message
            .as_deref()
            .is_some_and(|m| m.contains("__consumer_offsets is internal")),
        "{partition:?}"
    );
}

#[tokio::test]
async fn clients_cannot_create_delete_or_grow_the_offsets_topic() {
    let h = harness().await;
    let offsets_topic = || {
        MetadataRequest::default().with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(name("__consumer_offsets"))),
        ]))
    };
    // Named in Metadata with auto-creation on, it is created as the
    // coordinator needs it, not as an ordinary topic.
    let create = CreateTopicsRequest::default().with_topics(vec![
        CreatableTopic::default()
            .with_name(name("__consumer_offsets"))
            .with_num_partitions(1)
            .with_replication_factor(1),
    ]);
    let refused: CreateTopicsResponse = h.call(ApiKey::CreateTopics, 7, &create).await;
    assert_eq!(refused.topics[0].error_code, INVALID_REQUEST);
    let _: MetadataResponse = h.call(ApiKey::Metadata, 12, &offsets_topic()).await;
    let image = h.broker.image();
    let topic = image.topic("__consumer_offsets").unwrap();
    assert_eq!(topic.partitions.len(), 3, "--offsets-topic-partitions");
    assert_eq!(topic.configs["cleanup.policy"], "compact");

    let deleted: DeleteTopicsResponse = h
        .call(
            ApiKey::DeleteTopics,
            5,
            &DeleteTopicsRequest::default().with_topic_names(vec![name("__consumer_offsets")]),
        )
        .await;
    assert_eq!(deleted.responses[0].error_code, INVALID_REQUEST);
    let grow = CreatePartitionsRequest::default().with_topics(vec![
        CreatePartitionsTopic::default()
            .with_name(name("__consumer_offsets"))
            .with_count(10),
    ]);
    let grown: CreatePartitionsResponse = h.call(ApiKey::CreatePartitions, 3, &grow).await;
    assert_eq!(grown.results[0].error_code, INVALID_REQUEST);
    assert!(
        grown.results[0]
            .error_message
            .as_deref()
            .is_some_and(|m| m.contains("internal to the group coordinator"))
    );
    assert_eq!(
        h.broker
            .image()
            .topic("__consumer_offsets")
            .unwrap()
            .partitions
            .len(),
        3
    );
}
