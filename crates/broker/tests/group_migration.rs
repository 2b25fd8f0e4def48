//! Online migration between the classic and the consumer group protocols
//! (KIP-848) through the request dispatch of an in-process broker: a
//! consumer-protocol member joining a classic group moves it over, its
//! classic member goes on with JoinGroup, SyncGroup, Heartbeat and
//! OffsetCommit while the coordinator assigns, and the group goes back to
//! the classic protocol when the consumer-protocol member leaves.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::{BufMut, Bytes, BytesMut};
use common::{
    groups::{commit, consumer_heartbeat, coordinator_ready, group, text},
    harness, harness_with, name,
};
use kafka_protocol::{
    messages::{
        ApiKey, ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse,
        ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse, ConsumerProtocolAssignment,
        ConsumerProtocolSubscription, DescribeGroupsRequest, DescribeGroupsResponse,
        HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse,
        ListGroupsRequest, ListGroupsResponse, OffsetCommitRequest, OffsetCommitResponse,
        SyncGroupRequest, SyncGroupResponse,
        consumer_protocol_assignment::TopicPartition as Assigned,
        consumer_protocol_subscription::TopicPartition as Owned,
        join_group_request::JoinGroupRequestProtocol,
        sync_group_request::SyncGroupRequestAssignment,
    },
    protocol::{Decodable, Encodable},
};
use keel_broker::group::MigrationPolicy;

const ILLEGAL_GENERATION: i16 = 22;
const REBALANCE_IN_PROGRESS: i16 = 27;
const GROUP_ID_NOT_FOUND: i16 = 69;
const CLASSIC_MEMBER: i8 = 0;
const CONSUMER_MEMBER: i8 = 1;
const PROTOCOL: &str = "cooperative-sticky";

fn versioned(message: &impl Encodable, version: i16) -> Bytes {
    let mut out = BytesMut::new();
    out.put_i16(version);
    message.encode(&mut out, version).unwrap();
    out.freeze()
}

/// A cooperative member's subscription to "t", owning `owned`.
fn subscription(owned: &[i32]) -> Bytes {
    let message = ConsumerProtocolSubscription::default()
        .with_topics(vec![text("t")])
        .with_owned_partitions(vec![
            Owned::default()
                .with_topic(name("t"))
                .with_partitions(owned.to_vec()),
        ]);
    versioned(&message, 1)
}

fn assignment(partitions: &[i32]) -> Bytes {
    let message = ConsumerProtocolAssignment::default().with_assigned_partitions(vec![
        Assigned::default()
            .with_topic(name("t"))
            .with_partitions(partitions.to_vec()),
    ]);
    versioned(&message, 1)
}

fn assigned(bytes: &Bytes) -> Vec<i32> {
    let mut bytes = bytes.clone();
    let version = bytes::Buf::get_i16(&mut bytes);
    let message = ConsumerProtocolAssignment::decode(&mut bytes, version).unwrap();
    message
        .assigned_partitions
        .into_iter()
        .flat_map(|t| t.partitions)
        .collect()
}

fn classic_join(group_id: &str, member_id: &str, owned: &[i32]) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(group(group_id))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(10_000)
        .with_member_id(text(member_id))
        .with_group_instance_id(Some(text("instance-a")))
        .with_protocol_type(text("consumer"))
        .with_protocols(vec![
            JoinGroupRequestProtocol::default()
                .with_name(text(PROTOCOL))
                .with_metadata(subscription(owned)),
        ])
}

fn classic_sync(group_id: &str, member_id: &str, generation: i32) -> SyncGroupRequest {
    SyncGroupRequest::default()
        .with_group_id(group(group_id))
        .with_member_id(text(member_id))
        .with_group_instance_id(Some(text("instance-a")))
        .with_generation_id(generation)
        .with_protocol_type(Some(text("consumer")))
        .with_protocol_name(Some(text(PROTOCOL)))
}

fn classic_heartbeat(group_id: &str, member_id: &str, generation: i32) -> HeartbeatRequest {
    HeartbeatRequest::default()
        .with_group_id(group(group_id))
        .with_member_id(text(member_id))
        .with_group_instance_id(Some(text("instance-a")))
        .with_generation_id(generation)
}

fn consumer_join(group_id: &str, member_id: &str) -> ConsumerGroupHeartbeatRequest {
    consumer_heartbeat(group_id, member_id, 0)
        .with_subscribed_topic_names(Some(vec![name("t")]))
        .with_topic_partitions(Some(vec![]))
}

/// A classic group of one static member, "instance-a", holding all four
/// partitions of "t" at generation 1; returns its member id.
async fn stable_classic_group(h: &common::Harness, group_id: &str) -> String {
    coordinator_ready(h, group_id).await;
    let joined: JoinGroupResponse = h
        .call(ApiKey::JoinGroup, 9, &classic_join(group_id, "", &[]))
        .await;
    assert_eq!(
        (joined.error_code, joined.generation_id),
        (0, 1),
        "{joined:?}"
    );
    let member_id = joined.member_id.to_string();
    let sync = classic_sync(group_id, &member_id, 1).with_assignments(vec![
        SyncGroupRequestAssignment::default()
            .with_member_id(text(&member_id))
            .with_assignment(assignment(&[0, 1, 2, 3])),
    ]);
    let synced: SyncGroupResponse = h.call(ApiKey::SyncGroup, 5, &sync).await;
    assert_eq!(synced.error_code, 0);
    member_id
}

async fn group_type(h: &common::Harness, group_id: &str) -> String {
    let listed: ListGroupsResponse = h
        .call(ApiKey::ListGroups, 5, &ListGroupsRequest::default())
        .await;
    listed
        .groups
        .iter()
        .find(|g| g.group_id.as_str() == group_id)
        .map(|g| g.group_type.to_string())
        .unwrap()
}

/// An offset commit from `member_id` at `generation`.
fn commit_as(group_id: &str, member_id: &str, generation: i32) -> OffsetCommitRequest {
    let mut request = commit(group_id, 1);
    request.generation_id_or_member_epoch = generation;
    request.member_id = text(member_id);
    request
}

/// A classic member's rejoin, which must be accepted.
async fn rejoin(
    h: &common::Harness,
    group_id: &str,
    member_id: &str,
    owned: &[i32],
) -> JoinGroupResponse {
    let rejoined: JoinGroupResponse = h
        .call(
            ApiKey::JoinGroup,
            9,
            &classic_join(group_id, member_id, owned),
        )
        .await;
    assert_eq!(rejoined.error_code, 0, "{rejoined:?}");
    rejoined
}

#[tokio::test]
async fn a_classic_group_moves_to_the_consumer_protocol_and_back() {
    let h = harness().await;
    h.create_topic("t", 4).await;
    let group_id = "migrating";
    let a = stable_classic_group(&h, group_id).await;
    assert_eq!(group_type(&h, group_id).await, "classic");

    // A consumer-protocol member joins: the group moves over at the
    // classic generation, and the new member waits for what a holds.
    let joined: ConsumerGroupHeartbeatResponse = h
        .call(
            ApiKey::ConsumerGroupHeartbeat,
            1,
            &consumer_join(group_id, "c"),
        )
        .await;
    assert_eq!(
        (joined.error_code, joined.member_epoch),
        (0, 2),
        "{joined:?}"
    );
    assert!(joined.assignment.unwrap().topic_partitions.is_empty());
    assert_eq!(group_type(&h, group_id).await, "consumer");
    let describe = ConsumerGroupDescribeRequest::default().with_group_ids(vec![group(group_id)]);
    let described: ConsumerGroupDescribeResponse =
        h.call(ApiKey::ConsumerGroupDescribe, 1, &describe).await;
    let mut types: Vec<(String, i8, i32)> = described.groups[0]
        .members
        .iter()
        .map(|m| (m.member_id.to_string(), m.member_type, m.member_epoch))
        .collect();
    types.sort();
    assert_eq!(
        types,
        vec![
            ("c".into(), CONSUMER_MEMBER, 2),
            (a.clone(), CLASSIC_MEMBER, 1)
        ]
    );

    // The classic member is told to rejoin; rejoining still owning every
    // partition keeps its generation and syncs to what it keeps.
    let beat: HeartbeatResponse = h
        .call(ApiKey::Heartbeat, 4, &classic_heartbeat(group_id, &a, 1))
        .await;
    assert_eq!(beat.error_code, REBALANCE_IN_PROGRESS);
    let rejoined = rejoin(&h, group_id, &a, &[0, 1, 2, 3]).await;
    assert_eq!(
        rejoined.generation_id, 1,
        "it has partitions to give up first"
    );
    assert_eq!(rejoined.protocol_name.as_deref(), Some(PROTOCOL));
    assert_eq!(rejoined.protocol_type.as_deref(), Some("consumer"));
    assert!(rejoined.leader.is_empty() && rejoined.members.is_empty());
    let synced: SyncGroupResponse = h
        .call(ApiKey::SyncGroup, 5, &classic_sync(group_id, &a, 1))
        .await;
    assert_eq!(synced.error_code, 0);
    let kept = assigned(&synced.assignment);
    assert_eq!(kept.len(), 2, "{kept:?}");
    // Its commits carry its generation, checked against its member epoch.
    let stale: OffsetCommitResponse = h
        .call(ApiKey::OffsetCommit, 8, &commit_as(group_id, &a, 5))
        .await;
    assert_eq!(stale.topics[0].partitions[0].error_code, ILLEGAL_GENERATION);
    let committed: OffsetCommitResponse = h
        .call(ApiKey::OffsetCommit, 8, &commit_as(group_id, &a, 1))
        .await;
    assert_eq!(committed.topics[0].partitions[0].error_code, 0);

    // Rejoining without the others hands them to c.
    let rejoined = rejoin(&h, group_id, &a, &kept).await;
    assert_eq!(rejoined.generation_id, 2);
    let beat: HeartbeatResponse = h
        .call(ApiKey::Heartbeat, 4, &classic_heartbeat(group_id, &a, 2))
        .await;
    assert_eq!(beat.error_code, 0);
    let c: ConsumerGroupHeartbeatResponse = h
        .call(
            ApiKey::ConsumerGroupHeartbeat,
            1,
            &consumer_heartbeat(group_id, "c", 2),
        )
        .await;
    let mut given: Vec<i32> = c.assignment.unwrap().topic_partitions[0].partitions.clone();
    given.sort_unstable();
    let mut all: Vec<i32> = kept.iter().copied().chain(given).collect();
    all.sort_unstable();
    assert_eq!(all, vec![0, 1, 2, 3], "every partition held once");

    // c leaves: the group is classic again and rebalances; a rejoins and
    // forms the next generation as the classic protocol does.
    let left: ConsumerGroupHeartbeatResponse = h
        .call(
            ApiKey::ConsumerGroupHeartbeat,
            1,
            &consumer_heartbeat(group_id, "c", -1),
        )
        .await;
    assert_eq!(left.error_code, 0);
    assert_eq!(group_type(&h, group_id).await, "classic");
    let describe = DescribeGroupsRequest::default().with_groups(vec![group(group_id)]);
    let described: DescribeGroupsResponse = h.call(ApiKey::DescribeGroups, 5, &describe).await;
    let classic = &described.groups[0];
    assert_eq!(
        (classic.group_state.as_str(), classic.protocol_type.as_str()),
        ("PreparingRebalance", "consumer")
    );
    assert_eq!(
        assigned(&classic.members[0].member_assignment),
        vec![0, 1, 2, 3]
    );
    let rejoined = rejoin(&h, group_id, &a, &[0, 1, 2, 3]).await;
    assert_eq!(
        rejoined.leader.as_str(),
        a,
        "a classic group has a leader again"
    );
    assert!(rejoined.generation_id > 2);
}

#[tokio::test]
async fn with_migration_disabled_a_classic_group_keeps_consumer_protocol_members_out() {
    let h = harness_with(|config| config.groups.migration_policy = MigrationPolicy::Disabled).await;
    h.create_topic("t", 4).await;
    let group_id = "classic-only";
    stable_classic_group(&h, group_id).await;
    let refused: ConsumerGroupHeartbeatResponse = h
        .call(
            ApiKey::ConsumerGroupHeartbeat,
            1,
            &consumer_join(group_id, "c"),
        )
        .await;
    assert_eq!(refused.error_code, GROUP_ID_NOT_FOUND);
    assert_eq!(group_type(&h, group_id).await, "classic");
}
