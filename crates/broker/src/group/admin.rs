//! What the admin APIs see of groups: ListGroups, DescribeGroups and
//! DeleteGroups.

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use keel_raft_metadata::MetadataImage;

use super::{
    GroupCoordinator,
    consumer::{Assignor, ConsumerGroup, ConsumerMember, MemberSnapshot, to_names},
    consumer_heartbeat::ImageCatalog,
    embedded,
    offsets::CONSUMER_PROTOCOL_TYPE,
    storage::{self, Entry},
};
use crate::broker::Broker;

/// A member as DescribeGroups shows it.
#[derive(Debug, Clone)]
pub(crate) struct MemberDescription {
    pub(crate) member_id: String,
    pub(crate) instance_id: Option<String>,
    pub(crate) client_id: String,
    pub(crate) client_host: String,
    pub(crate) metadata: Bytes,
    pub(crate) assignment: Bytes,
}

/// A group as ListGroups shows it.
#[derive(Debug, Clone)]
pub(crate) struct ListedGroup {
    pub(crate) group_id: String,
    pub(crate) protocol_type: String,
    pub(crate) state: &'static str,
    /// `classic` or `consumer`, the protocol its members use.
    pub(crate) group_type: &'static str,
}

/// A group as DescribeGroups shows it.
#[derive(Debug, Clone)]
pub(crate) struct GroupDescription {
    pub(crate) state: &'static str,
    pub(crate) protocol_type: String,
    pub(crate) protocol: String,
    pub(crate) members: Vec<MemberDescription>,
}

impl GroupCoordinator {
    /// ListGroups: every group this broker coordinates.
    pub(crate) fn list(&self) -> Vec<ListedGroup> {
        self.with_lock(|inner| {
            let mut groups: Vec<ListedGroup> = inner
                .groups
                .values()
                .map(|g| match &g.consumer {
                    Some(consumer) if g.members.is_empty() => ListedGroup {
                        group_id: g.id.clone(),
                        protocol_type: CONSUMER_PROTOCOL_TYPE.to_string(),
                        state: consumer.state_name(),
                        group_type: "consumer",
                    },
                    _ => ListedGroup {
                        group_id: g.id.clone(),
                        protocol_type: g.protocol_type.clone().unwrap_or_default(),
                        state: g.state.name(),
                        group_type: "classic",
                    },
                })
                .collect();
            groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
            groups
        })
    }

    /// DescribeGroups for one group; an unknown group is `Dead`, as in Kafka.
    /// A group under the consumer protocol is shown the way the classic
    /// protocol would show it: its assignor as the protocol, each member's
    /// subscription and assignment in the consumer protocol's encoding.
    pub(crate) fn describe(
        &self,
        broker: &Broker,
        group_id: &str,
    ) -> Result<GroupDescription, ResponseError> {
        self.with_lock(|inner| {
            let partition = self.partition_of(group_id);
            self.check(inner, partition)?;
            let Some(group) = inner.groups.get(group_id) else {
                return Err(ResponseError::GroupIdNotFound);
            };
            if let Some(consumer) = group.consumer.as_ref().filter(|_| group.members.is_empty()) {
                return Ok(describe_consumer_group(consumer, &broker.image()));
            }
            let protocol = group.protocol_name.clone().unwrap_or_default();
            Ok(GroupDescription {
                state: group.state.name(),
                protocol_type: group.protocol_type.clone().unwrap_or_default(),
                protocol: protocol.clone(),
                members: group
                    .members
                    .values()
                    .map(|m| MemberDescription {
                        member_id: m.id.clone(),
                        instance_id: m.instance_id.clone(),
                        client_id: m.client_id.clone(),
                        client_host: m.client_host.clone(),
                        metadata: m.metadata_for(&protocol),
                        assignment: m.assignment.clone(),
                    })
                    .collect(),
            })
        })
    }

    /// DeleteGroups for one group: only a group without members.
    pub(crate) fn delete(&self, broker: &Broker, group_id: &str) -> Option<ResponseError> {
        self.with_lock(|inner| {
            let partition = self.partition_of(group_id);
            if let Err(error) = self.check(inner, partition) {
                return Some(error);
            }
            let Some(group) = inner.groups.get(group_id) else {
                return Some(ResponseError::GroupIdNotFound);
            };
            if !group.is_empty() {
                return Some(ResponseError::NonEmptyGroup);
            }
            let mut entries: Vec<Entry> = group
                .offsets
                .keys()
                .map(|(topic, index)| storage::offset_entry(group_id, topic, *index, None))
                .collect();
            entries.push(storage::group_entry(group, true));
            if let Err(error) = Self::persist(broker, partition, &entries) {
                return Some(error);
            }
            inner.groups.remove(group_id);
            None
        })
    }
}

/// A group under the consumer protocol as ConsumerGroupDescribe shows it.
#[derive(Debug, Clone)]
pub(crate) struct ConsumerGroupView {
    pub(crate) state: &'static str,
    pub(crate) epoch: i32,
    pub(crate) assignment_epoch: i32,
    pub(crate) assignor: &'static str,
    pub(crate) members: Vec<MemberSnapshot>,
}

impl GroupCoordinator {
    /// ConsumerGroupDescribe for one group: GROUP_ID_NOT_FOUND for a group
    /// that does not exist or whose members use the classic protocol, as
    /// in Kafka.
    pub(crate) fn describe_consumer(
        &self,
        group_id: &str,
    ) -> Result<ConsumerGroupView, ResponseError> {
        self.with_lock(|inner| {
            let partition = self.partition_of(group_id);
            self.check(inner, partition)?;
            let consumer = inner
                .groups
                .get(group_id)
                .filter(|g| g.members.is_empty())
                .and_then(|g| g.consumer.as_ref())
                .ok_or(ResponseError::GroupIdNotFound)?;
            let snapshot = consumer.snapshot();
            Ok(ConsumerGroupView {
                state: consumer.state_name(),
                epoch: snapshot.epoch,
                assignment_epoch: snapshot.assignment_epoch,
                assignor: assignor_name(consumer.assignor()),
                members: snapshot.members,
            })
        })
    }
}

fn assignor_name(assignor: Assignor) -> &'static str {
    match assignor {
        Assignor::Uniform => "uniform",
        Assignor::Range => "range",
    }
}

fn describe_consumer_group(group: &ConsumerGroup, image: &MetadataImage) -> GroupDescription {
    let assignor = assignor_name(group.assignor());
    GroupDescription {
        state: group.state_name(),
        protocol_type: CONSUMER_PROTOCOL_TYPE.to_string(),
        protocol: assignor.to_string(),
        members: group
            .members
            .values()
            .map(|m| describe_consumer_member(m, image))
            .collect(),
    }
}

/// The member's subscription and assignment as the classic consumer
/// protocol encodes them (version 0, topics by name).
fn describe_consumer_member(member: &ConsumerMember, image: &MetadataImage) -> MemberDescription {
    let assigned = to_names(&member.assigned, &ImageCatalog(image));
    MemberDescription {
        member_id: member.id.clone(),
        instance_id: member.instance_id.clone(),
        client_id: member.client_id.clone(),
        client_host: member.client_host.clone(),
        metadata: embedded::encode_subscription(member.subscribed_topics.iter().cloned().collect()),
        assignment: embedded::encode_assignment(0, assigned),
    }
}
