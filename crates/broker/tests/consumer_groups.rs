//! The consumer group protocol of KIP-848 (ConsumerGroupHeartbeat) at every
//! advertised version, through the request dispatch of an in-process
//! broker: joining, the coordinator's assignment by topic id, fencing,
//! member epochs on commits and fetches, and leaving.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{
    groups::{
        commit, consumer_heartbeat, coordinator_ready, fetch_committed, fetch_request, group,
        join_request, text,
    },
    harness, name, versions,
};
use kafka_protocol::messages::{
    ApiKey, ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse,
    ConsumerGroupHeartbeatResponse, JoinGroupResponse, ListGroupsRequest, ListGroupsResponse,
    OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse, OffsetFetchResponse,
    offset_delete_request::{OffsetDeleteRequestPartition, OffsetDeleteRequestTopic},
};

const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
const GROUP_ID_NOT_FOUND: i16 = 69;
const GROUP_SUBSCRIBED_TO_TOPIC: i16 = 86;
const FENCED_MEMBER_EPOCH: i16 = 110;
const UNSUPPORTED_ASSIGNOR: i16 = 112;
const STALE_MEMBER_EPOCH: i16 = 113;
const INVALID_REGULAR_EXPRESSION: i16 = 128;

#[tokio::test]
async fn the_consumer_protocol_assigns_fences_and_lets_members_leave_at_every_version() {
    let h = harness().await;
    h.create_topic("t", 2).await;
    let topic_id = h.topic_id("t");
    for version in versions(ApiKey::ConsumerGroupHeartbeat) {
        let group_id = format!("kip848-v{version}");
        coordinator_ready(&h, &group_id).await;
        // From v1 the member names itself; before, the coordinator does.
        let proposed = if version >= 1 { "member-a" } else { "" };
        let join = consumer_heartbeat(&group_id, proposed, 0)
            .with_subscribed_topic_names(Some(vec![name("t")]))
            .with_topic_partitions(Some(vec![]));
        let joined: ConsumerGroupHeartbeatResponse =
            h.call(ApiKey::ConsumerGroupHeartbeat, version, &join).await;
        assert_eq!(joined.error_code, 0, "v{version}: {joined:?}");
        let member_id = joined.member_id.clone().unwrap().to_string();
        if version >= 1 {
            assert_eq!(member_id, "member-a");
        }
        assert!(joined.member_epoch > 0 && joined.heartbeat_interval_ms > 0);
        let assignment = joined.assignment.clone().unwrap();
        assert_eq!(assignment.topic_partitions.len(), 1);
        assert_eq!(assignment.topic_partitions[0].topic_id, topic_id);
        assert_eq!(assignment.topic_partitions[0].partitions, vec![0, 1]);

        // Nothing changed: no assignment in the answer.
        let again: ConsumerGroupHeartbeatResponse = h
            .call(
                ApiKey::ConsumerGroupHeartbeat,
                version,
                &consumer_heartbeat(&group_id, &member_id, joined.member_epoch),
            )
            .await;
        assert_eq!((again.error_code, again.assignment), (0, None));
        let fenced: ConsumerGroupHeartbeatResponse = h
            .call(
                ApiKey::ConsumerGroupHeartbeat,
                version,
                &consumer_heartbeat(&group_id, &member_id, joined.member_epoch + 5),
            )
            .await;
        assert_eq!(fenced.error_code, FENCED_MEMBER_EPOCH);

        // Commits carry the member epoch; a classic member cannot join.
        let mut stale = commit(&group_id, 3);
        stale.member_id = text(&member_id);
        stale.generation_id_or_member_epoch = joined.member_epoch - 1;
        let refused: OffsetCommitResponse = h.call(ApiKey::OffsetCommit, 9, &stale).await;
        assert_eq!(
            refused.topics[0].partitions[0].error_code,
            STALE_MEMBER_EPOCH
        );
        stale.generation_id_or_member_epoch = joined.member_epoch;
        let accepted: OffsetCommitResponse = h.call(ApiKey::OffsetCommit, 9, &stale).await;
        assert_eq!(accepted.topics[0].partitions[0].error_code, 0);
        let mut fetch = fetch_request(9, &group_id);
        fetch.groups[0].member_id = Some(text(&member_id));
        fetch.groups[0].member_epoch = joined.member_epoch - 1;
        let stale: OffsetFetchResponse = h.call(ApiKey::OffsetFetch, 9, &fetch).await;
        assert_eq!(stale.groups[0].error_code, STALE_MEMBER_EPOCH);
        fetch.groups[0].member_epoch = joined.member_epoch;
        let fetched: OffsetFetchResponse = h.call(ApiKey::OffsetFetch, 9, &fetch).await;
        assert_eq!(fetch_committed(&fetched, 9), (3, -1));
        // A classic member may join a consumer group (see group_migration.rs),
        // but only with a consumer subscription the coordinator can read.
        let classic: JoinGroupResponse = h
            .call(ApiKey::JoinGroup, 9, &join_request(9, &group_id, "c"))
            .await;
        assert_eq!(classic.error_code, INCONSISTENT_GROUP_PROTOCOL);
        let listed: ListGroupsResponse = h
            .call(ApiKey::ListGroups, 5, &ListGroupsRequest::default())
            .await;
        let listed = listed
            .groups
            .iter()
            .find(|g| g.group_id.0.as_str() == group_id)
            .unwrap();
        assert_eq!(
            (listed.group_type.as_str(), listed.group_state.as_str()),
            ("consumer", "Stable")
        );

        let request = OffsetDeleteRequest::default()
            .with_group_id(group(&group_id))
            .with_topics(vec![
                OffsetDeleteRequestTopic::default()
                    .with_name(name("t"))
                    .with_partitions(vec![
                        OffsetDeleteRequestPartition::default().with_partition_index(0),
                    ]),
            ]);
        let kept: OffsetDeleteResponse = h.call(ApiKey::OffsetDelete, 0, &request).await;
        assert_eq!(
            kept.topics[0].partitions[0].error_code, GROUP_SUBSCRIBED_TO_TOPIC,
            "a member subscribes to t"
        );

        for describe_version in versions(ApiKey::ConsumerGroupDescribe) {
            let request = ConsumerGroupDescribeRequest::default()
                .with_group_ids(vec![group(&group_id), group("no-such-group")]);
            let described: ConsumerGroupDescribeResponse = h
                .call(ApiKey::ConsumerGroupDescribe, describe_version, &request)
                .await;
            let (ours, unknown) = (&described.groups[0], &described.groups[1]);
            assert_eq!(ours.error_code, 0);
            assert_eq!(
                (ours.group_state.as_str(), ours.assignor_name.as_str()),
                ("Stable", "uniform")
            );
            let member = &ours.members[0];
            assert_eq!(member.member_id.as_str(), member_id);
            assert_eq!(member.member_epoch, joined.member_epoch);
            let owned = &member.assignment.topic_partitions[0];
            assert_eq!((owned.topic_name.as_str(), owned.topic_id), ("t", topic_id));
            assert_eq!(owned.partitions, vec![0, 1]);
            assert_eq!(unknown.error_code, GROUP_ID_NOT_FOUND);
        }

        let left: ConsumerGroupHeartbeatResponse = h
            .call(
                ApiKey::ConsumerGroupHeartbeat,
                version,
                &consumer_heartbeat(&group_id, &member_id, -1),
            )
            .await;
        assert_eq!((left.error_code, left.member_epoch), (0, -1));
    }

    let odd = consumer_heartbeat("kip848-odd", "", 0)
        .with_subscribed_topic_names(Some(vec![name("t")]))
        .with_server_assignor(Some(text("sticky-ish")));
    let refused: ConsumerGroupHeartbeatResponse =
        h.call(ApiKey::ConsumerGroupHeartbeat, 0, &odd).await;
    assert_eq!(refused.error_code, UNSUPPORTED_ASSIGNOR);
    // From v1 a member may subscribe by regular expression (whole names).
    let by_regex =
        consumer_heartbeat("kip848-regex", "m", 0).with_subscribed_topic_regex(Some(text("t|u.*")));
    let joined: ConsumerGroupHeartbeatResponse =
        h.call(ApiKey::ConsumerGroupHeartbeat, 1, &by_regex).await;
    assert_eq!(joined.error_code, 0);
    let assigned = joined.assignment.unwrap().topic_partitions;
    assert_eq!(assigned.len(), 1);
    assert_eq!(assigned[0].partitions, vec![0, 1]);
    let broken =
        consumer_heartbeat("kip848-regex", "n", 0).with_subscribed_topic_regex(Some(text("t.(")));
    let refused: ConsumerGroupHeartbeatResponse =
        h.call(ApiKey::ConsumerGroupHeartbeat, 1, &broken).await;
    assert_eq!(refused.error_code, INVALID_REGULAR_EXPRESSION);
}
