//! What the admin APIs see of groups: ListGroups, DescribeGroups and
//! DeleteGroups.

use bytes::Bytes;
use kafka_protocol::error::ResponseError;

use super::{
    GroupCoordinator,
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

/// A group as DescribeGroups shows it.
#[derive(Debug, Clone)]
pub(crate) struct GroupDescription {
    pub(crate) state: &'static str,
    pub(crate) protocol_type: String,
    pub(crate) protocol: String,
    pub(crate) members: Vec<MemberDescription>,
}

impl GroupCoordinator {
    /// ListGroups: `(group id, protocol type, state)` of every group this
    /// broker coordinates.
    pub(crate) fn list(&self) -> Vec<(String, String, &'static str)> {
        let inner = self.lock();
        let mut groups: Vec<_> = inner
            .groups
            .values()
            .map(|g| {
                (
                    g.id.clone(),
                    g.protocol_type.clone().unwrap_or_default(),
                    g.state.name(),
                )
            })
            .collect();
        groups.sort();
        groups
    }

    /// DescribeGroups for one group; an unknown group is `Dead`, as in Kafka.
    pub(crate) fn describe(&self, group_id: &str) -> Result<GroupDescription, ResponseError> {
        let partition = self.partition_of(group_id);
        let inner = self.lock();
        Self::check(&inner, partition)?;
        let Some(group) = inner.groups.get(group_id) else {
            return Ok(GroupDescription {
                state: "Dead",
                protocol_type: String::new(),
                protocol: String::new(),
                members: Vec::new(),
            });
        };
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
                    metadata: m
                        .protocols
                        .iter()
                        .find(|(name, _)| *name == protocol)
                        .map(|(_, metadata)| metadata.clone())
                        .unwrap_or_default(),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        })
    }

    /// DeleteGroups for one group: only a group without members.
    pub(crate) fn delete(&self, broker: &Broker, group_id: &str) -> Option<ResponseError> {
        let partition = self.partition_of(group_id);
        let mut inner = self.lock();
        if let Err(error) = Self::check(&inner, partition) {
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
    }
}
