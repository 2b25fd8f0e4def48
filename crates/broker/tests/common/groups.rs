//! Requests and checks shared by the group coordinator's tests.

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::{
    messages::{
        ApiKey, ConsumerGroupHeartbeatRequest, FindCoordinatorRequest, FindCoordinatorResponse,
        GroupId, JoinGroupRequest, OffsetCommitRequest, OffsetFetchRequest, OffsetFetchResponse,
        join_group_request::JoinGroupRequestProtocol,
        offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic},
        offset_fetch_request::{
            OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
        },
    },
    protocol::StrBytes,
};

use super::{Harness, name};

pub const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
pub const NOT_COORDINATOR: i16 = 16;
pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;

pub fn group(s: &str) -> GroupId {
    GroupId(StrBytes::from_string(s.to_string()))
}

pub fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// Asks for the coordinator until `__consumer_offsets` exists and the
/// group's partition is loaded.
pub async fn coordinator_ready(h: &Harness, group_id: &str) {
    for _ in 0..100 {
        let request = FindCoordinatorRequest::default().with_key(text(group_id));
        let response: FindCoordinatorResponse = h.call(ApiKey::FindCoordinator, 3, &request).await;
        if response.error_code == 0 {
            let fetch = OffsetFetchRequest::default()
                .with_group_id(group(group_id))
                .with_topics(None);
            let fetched: OffsetFetchResponse = h.call(ApiKey::OffsetFetch, 7, &fetch).await;
            if fetched.error_code == 0 {
                return;
            }
            assert!(
                [COORDINATOR_LOAD_IN_PROGRESS, NOT_COORDINATOR].contains(&fetched.error_code),
                "{fetched:?}"
            );
        } else {
            assert_eq!(
                response.error_code, COORDINATOR_NOT_AVAILABLE,
                "{response:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the coordinator of {group_id} never became ready");
}

/// A ConsumerGroupHeartbeat of `member_id` at `epoch`.
pub fn consumer_heartbeat(
    group_id: &str,
    member_id: &str,
    epoch: i32,
) -> ConsumerGroupHeartbeatRequest {
    ConsumerGroupHeartbeatRequest::default()
        .with_group_id(group(group_id))
        .with_member_id(text(member_id))
        .with_member_epoch(epoch)
        .with_rebalance_timeout_ms(10_000)
}

pub fn join_request(version: i16, group_id: &str, member_id: &str) -> JoinGroupRequest {
    let request = JoinGroupRequest::default()
        .with_group_id(group(group_id))
        .with_session_timeout_ms(10_000)
        .with_member_id(text(member_id))
        .with_protocol_type(text("consumer"))
        .with_protocols(vec![
            JoinGroupRequestProtocol::default()
                .with_name(text("range"))
                .with_metadata(Bytes::from_static(b"subscription")),
        ]);
    if version >= 1 {
        request.with_rebalance_timeout_ms(10_000)
    } else {
        request
    }
}

pub fn commit(group_id: &str, offset: i64) -> OffsetCommitRequest {
    OffsetCommitRequest::default()
        .with_group_id(group(group_id))
        .with_generation_id_or_member_epoch(-1)
        .with_member_id(text(""))
        .with_topics(vec![
            OffsetCommitRequestTopic::default()
                .with_name(name("t"))
                .with_partitions(vec![
                    OffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(offset)
                        .with_committed_metadata(Some(text("meta"))),
                    OffsetCommitRequestPartition::default()
                        .with_partition_index(9)
                        .with_committed_offset(offset),
                ]),
        ])
}

pub fn fetch_committed(response: &OffsetFetchResponse, version: i16) -> (i64, i64) {
    if version >= 8 {
        let partitions = &response.groups[0].topics[0].partitions;
        (
            partitions[0].committed_offset,
            partitions[1].committed_offset,
        )
    } else {
        let partitions = &response.topics[0].partitions;
        (
            partitions[0].committed_offset,
            partitions[1].committed_offset,
        )
    }
}

pub fn fetch_request(version: i16, group_id: &str) -> OffsetFetchRequest {
    if version >= 8 {
        OffsetFetchRequest::default().with_groups(vec![
            OffsetFetchRequestGroup::default()
                .with_group_id(group(group_id))
                .with_topics(Some(vec![
                    OffsetFetchRequestTopics::default()
                        .with_name(name("t"))
                        .with_partition_indexes(vec![0, 1]),
                ])),
        ])
    } else {
        OffsetFetchRequest::default()
            .with_group_id(group(group_id))
            .with_topics(Some(vec![
                OffsetFetchRequestTopic::default()
                    .with_name(name("t"))
                    .with_partition_indexes(vec![0, 1]),
            ]))
    }
}
