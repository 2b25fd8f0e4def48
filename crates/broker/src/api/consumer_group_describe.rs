//! ConsumerGroupDescribe (KIP-848): a group under the consumer protocol
//! with its epochs, assignor and members, each with its subscription,
//! current assignment and target, and (v1) whether it speaks the classic
//! or the consumer protocol. A group that does not exist, or whose members
//! all use the classic protocol, gets GROUP_ID_NOT_FOUND (clients then ask
//! DescribeGroups).

use kafka_protocol::{
    ResponseError,
    messages::{
        ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, TopicName,
        consumer_group_describe_response::{Assignment, DescribedGroup, Member, TopicPartitions},
    },
    protocol::StrBytes,
};
use keel_raft_metadata::MetadataImage;

use super::{RequestContext, authorized_operations};
use crate::group::consumer::{MemberSnapshot, Partitions};

/// The first version telling the member's protocol.
const MEMBER_TYPE_VERSION: i16 = 1;
/// `member_type` of a member under the classic protocol.
const CLASSIC_MEMBER: i8 = 0;
/// `member_type` of a consumer-protocol member.
const CONSUMER_MEMBER: i8 = 1;

pub(super) fn handle(
    ctx: &RequestContext<'_>,
    request: ConsumerGroupDescribeRequest,
) -> ConsumerGroupDescribeResponse {
    let image = ctx.broker.image();
    let groups = request
        .group_ids
        .iter()
        .map(|group_id| {
            let described = DescribedGroup::default().with_group_id(group_id.clone());
            match ctx.broker.groups.describe_consumer(group_id) {
                Err(error) => {
                    let message = if error == ResponseError::GroupIdNotFound {
                        format!("group {} is not a consumer group", group_id.as_str())
                    } else {
                        error.to_string()
                    };
                    described
                        .with_error_code(error.code())
                        .with_error_message(Some(StrBytes::from_string(message)))
                }
                Ok(group) => described
                    .with_authorized_operations(authorized_operations::if_requested(
                        request.include_authorized_operations,
                        authorized_operations::GROUP,
                    ))
                    .with_group_state(StrBytes::from_static_str(group.state))
                    .with_group_epoch(group.epoch)
                    .with_assignment_epoch(group.assignment_epoch)
                    .with_assignor_name(StrBytes::from_static_str(group.assignor))
                    .with_members(
                        group
                            .members
                            .iter()
                            .map(|m| member(m, &image, ctx.version))
                            .collect(),
                    ),
            }
        })
        .collect();
    ConsumerGroupDescribeResponse::default().with_groups(groups)
}

fn member(member: &MemberSnapshot, image: &MetadataImage, version: i16) -> Member {
    let described = Member::default()
        .with_member_id(StrBytes::from_string(member.id.clone()))
        .with_instance_id(member.instance_id.clone().map(StrBytes::from_string))
        .with_member_epoch(member.member_epoch)
        .with_client_id(StrBytes::from_string(member.client_id.clone()))
        .with_client_host(StrBytes::from_string(member.client_host.clone()))
        .with_subscribed_topic_names(
            member
                .subscribed_names
                .iter()
                .map(|name| TopicName(StrBytes::from_string(name.clone())))
                .collect(),
        )
        .with_subscribed_topic_regex(member.subscribed_regex.clone().map(StrBytes::from_string))
        .with_assignment(assignment(&member.assigned, image))
        .with_target_assignment(assignment(&member.target, image));
    if version >= MEMBER_TYPE_VERSION {
        described.with_member_type(if member.classic.is_some() {
            CLASSIC_MEMBER
        } else {
            CONSUMER_MEMBER
        })
    } else {
        described
    }
}

/// Partitions by topic, with the names the metadata has for the ids.
fn assignment(partitions: &Partitions, image: &MetadataImage) -> Assignment {
    Assignment::default().with_topic_partitions(
        partitions
            .iter()
            .map(|(topic_id, partitions)| {
                let name = image
                    .topic_by_id(topic_id)
                    .map(|t| t.name.clone())
                    .unwrap_or_default();
                TopicPartitions::default()
                    .with_topic_id(*topic_id)
                    .with_topic_name(TopicName(StrBytes::from_string(name)))
                    .with_partitions(partitions.iter().copied().collect())
            })
            .collect(),
    )
}
