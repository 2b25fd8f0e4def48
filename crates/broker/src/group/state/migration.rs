//! Online migration of a group between the classic protocol and the
//! consumer protocol (KIP-848), as Kafka 4 does it:
//!
//! - upgrade: a consumer-protocol member joining a classic group of
//!   consumers turns it into a consumer group. Every classic member keeps
//!   what it holds at a member epoch equal to the generation, and goes on
//!   speaking the classic protocol inside the consumer group (see
//!   `consumer::classic`);
//! - downgrade: when the last consumer-protocol member leaves a group whose
//!   other members all speak the classic protocol, it becomes a classic
//!   group again, at a generation equal to the group epoch, each member
//!   with its target as its assignment, and rebalances.
//!
//! `group.consumer.migration.policy` says which ways are allowed; an empty
//! group changes its protocol whatever the policy.

use std::{fmt, str::FromStr};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;

use super::{Deliveries, Group, GroupSettings, GroupState, Member};
use crate::group::{
    consumer::{ClassicProtocols, ClassicSeat, ConsumerGroup, TopicCatalog, to_ids, to_names},
    embedded,
    offsets::CONSUMER_PROTOCOL_TYPE,
};

/// Which ways a group with members may change its protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrationPolicy {
    Bidirectional,
    Upgrade,
    Downgrade,
    Disabled,
}

impl MigrationPolicy {
    pub(crate) fn upgrades(self) -> bool {
        matches!(self, Self::Bidirectional | Self::Upgrade)
    }

    pub(crate) fn downgrades(self) -> bool {
        matches!(self, Self::Bidirectional | Self::Downgrade)
    }
}

impl FromStr for MigrationPolicy {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.to_ascii_lowercase().as_str() {
            "bidirectional" => Ok(Self::Bidirectional),
            "upgrade" => Ok(Self::Upgrade),
            "downgrade" => Ok(Self::Downgrade),
            "disabled" => Ok(Self::Disabled),
            _ => Err(format!(
                "unknown migration policy {value:?}: expected bidirectional, upgrade, downgrade or disabled"
            )),
        }
    }
}

impl fmt::Display for MigrationPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Bidirectional => "bidirectional",
            Self::Upgrade => "upgrade",
            Self::Downgrade => "downgrade",
            Self::Disabled => "disabled",
        })
    }
}

impl Group {
    /// The consumer group this classic group of consumers becomes. Refused
    /// with GROUP_ID_NOT_FOUND, as Kafka refuses it, when the group is not
    /// one of consumers, or a member's subscription or assignment cannot be
    /// read or is not known yet (a generation is forming).
    pub(crate) fn to_consumer_group(
        &self,
        topics: &dyn TopicCatalog,
        now_ms: i64,
    ) -> Result<ConsumerGroup, ResponseError> {
        if self.protocol_type.as_deref() != Some(CONSUMER_PROTOCOL_TYPE) {
            return Err(ResponseError::GroupIdNotFound);
        }
        let protocol = self.protocol_name.clone().unwrap_or_default();
        let mut seats = Vec::with_capacity(self.members.len());
        for member in self.members.values() {
            let metadata = member.metadata_for(&protocol);
            let subscription = embedded::decode_subscription(&metadata);
            // No assignment bytes: the member joined a generation whose
            // assignment it has not received (the bytes are cleared when
            // a generation forms), while it may still consume what it
            // owned before. What it holds is unknown, so, as in Kafka,
            // the group is not upgraded until the generation settles.
            let assignment = embedded::decode_assignment(&member.assignment);
            let (Some(subscription), Some(assignment)) = (subscription, assignment) else {
                tracing::warn!(
                    group = self.id,
                    member = member.id,
                    "cannot move the group to the consumer protocol yet: a member's assignment is not settled or its embedded consumer protocol is malformed"
                );
                return Err(ResponseError::GroupIdNotFound);
            };
            seats.push(ClassicSeat {
                id: member.id.clone(),
                instance_id: member.instance_id.clone(),
                client_id: member.client_id.clone(),
                client_host: member.client_host.clone(),
                rebalance_timeout_ms: member.rebalance_timeout_ms,
                protocols: ClassicProtocols {
                    session_timeout_ms: member.session_timeout_ms,
                    protocols: member.protocols.clone(),
                },
                subscribed_topics: subscription.topics,
                partitions: to_ids(&assignment, topics),
            });
        }
        tracing::info!(
            group = self.id,
            generation = self.generation,
            members = seats.len(),
            "classic group moves to the consumer protocol"
        );
        Ok(ConsumerGroup::from_classic(
            self.generation,
            seats,
            topics,
            now_ms,
        ))
    }

    /// Makes `consumer` (see [`Self::to_consumer_group`]) this group's
    /// members. Classic members waiting on a JoinGroup or SyncGroup are
    /// told to rejoin.
    pub(crate) fn upgrade(&mut self, consumer: ConsumerGroup) -> Deliveries {
        let mut deliveries = Deliveries::default();
        for member in self.members.values_mut() {
            member.fail_waiters(ResponseError::RebalanceInProgress, &mut deliveries);
        }
        self.consumer = Some(consumer);
        self.members.clear();
        self.pending.clear();
        self.state = GroupState::Empty;
        self.leader = None;
        self.protocol_name = None;
        self.initial_delay_until_ms = None;
        deliveries
    }

    /// Turns this consumer group back into a classic group when a change
    /// took its last consumer-protocol member (`spoke_consumer`: it had
    /// one before) and left only classic members, as `policy` allows; says
    /// whether it did. With `rebalance` (a member left) the classic group
    /// prepares a rebalance at once; a static member that replaced the
    /// last consumer-protocol member leaves it stable.
    pub(crate) fn downgrade_if_only_classic_left(
        &mut self,
        spoke_consumer: bool,
        policy: MigrationPolicy,
        rebalance: bool,
        topics: &dyn TopicCatalog,
        settings: &GroupSettings,
        now_ms: i64,
    ) -> Option<Deliveries> {
        let only_classic = self
            .consumer
            .as_ref()
            .is_some_and(ConsumerGroup::all_classic);
        (spoke_consumer && only_classic && policy.downgrades())
            .then(|| self.downgrade(rebalance, topics, settings, now_ms))
    }

    /// Turns this consumer group, whose members all speak the classic
    /// protocol, back into a classic group (see
    /// [`Self::downgrade_if_only_classic_left`]).
    pub(crate) fn downgrade(
        &mut self,
        rebalance: bool,
        topics: &dyn TopicCatalog,
        settings: &GroupSettings,
        now_ms: i64,
    ) -> Deliveries {
        let Some(consumer) = self.consumer.take() else {
            return Deliveries::default();
        };
        let generation = consumer.epoch;
        let seats = consumer.into_classic_seats();
        let targets: Vec<(String, embedded::NamedPartitions)> = seats
            .iter()
            .map(|s| (s.id.clone(), to_names(&s.partitions, topics)))
            .collect();
        self.members = seats
            .into_iter()
            .map(|seat| {
                let member = Member {
                    id: seat.id.clone(),
                    instance_id: seat.instance_id,
                    client_id: seat.client_id,
                    client_host: seat.client_host,
                    rebalance_timeout_ms: seat.rebalance_timeout_ms,
                    session_timeout_ms: seat.protocols.session_timeout_ms,
                    protocols: seat.protocols.protocols,
                    assignment: Bytes::new(),
                    last_heard_ms: now_ms,
                    awaiting_join: None,
                    awaiting_sync: None,
                };
                (seat.id, member)
            })
            .collect();
        self.pending.clear();
        self.generation = generation;
        self.protocol_type = Some(CONSUMER_PROTOCOL_TYPE.to_string());
        self.protocol_name = self.select_protocol();
        let protocol = self.protocol_name.clone().unwrap_or_default();
        for (member_id, target) in targets {
            if let Some(member) = self.members.get_mut(&member_id) {
                let version = embedded::subscription_version(&member.metadata_for(&protocol));
                member.assignment = embedded::encode_assignment(version, target);
            }
        }
        self.leader = self.members.keys().next().cloned();
        self.state = GroupState::Stable;
        tracing::info!(
            group = self.id,
            generation,
            members = self.members.len(),
            "consumer group moves back to the classic protocol"
        );
        if rebalance {
            self.prepare_rebalance(
                "the group moved back to the classic protocol",
                settings,
                now_ms,
            )
        } else {
            Deliveries::default()
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
