//! What of a consumer group a restarted coordinator needs, as plain data
//! the group record stores: the epochs, and each member with its
//! subscription, epochs, assignment, pending revocation and target.

use std::collections::BTreeMap;

use super::{
    ClassicMember, ClassicProtocols, ConsumerGroup, ConsumerMember, Partitions, Subscription,
    TopicShape,
};

/// What of a consumer group survives a coordinator restart: the epochs,
/// the members with their subscriptions, epochs and assignments, and the
/// target. Sessions, what members last reported owning and what was last
/// sent are not kept: a restored member gets a fresh session and its whole
/// assignment at its next heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ConsumerSnapshot {
    pub(crate) epoch: i32,
    pub(crate) assignment_epoch: i32,
    pub(crate) members: Vec<MemberSnapshot>,
    /// The subscribed topics as of the last epoch, so that a loaded group
    /// only moves its epoch if they changed meanwhile.
    pub(crate) topics: BTreeMap<String, TopicShape>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct MemberSnapshot {
    pub(crate) id: String,
    pub(crate) instance_id: Option<String>,
    pub(crate) client_id: String,
    pub(crate) client_host: String,
    /// The topics the subscription comes to.
    pub(crate) subscribed_topics: Vec<String>,
    /// The subscription as the member gave it.
    pub(crate) subscribed_names: Vec<String>,
    pub(crate) subscribed_regex: Option<String>,
    pub(crate) server_assignor: Option<String>,
    pub(crate) rebalance_timeout_ms: i32,
    pub(crate) member_epoch: i32,
    pub(crate) previous_epoch: i32,
    pub(crate) assigned: Partitions,
    pub(crate) revoking: Partitions,
    pub(crate) target: Partitions,
    pub(crate) away: bool,
    /// What a member under the classic protocol declared.
    pub(crate) classic: Option<ClassicProtocols>,
}

impl ConsumerGroup {
    /// The epochs and subscribed topics alone, as the group record keeps
    /// them (each member has a record of its own).
    pub(crate) fn header(&self) -> ConsumerSnapshot {
        ConsumerSnapshot {
            epoch: self.epoch,
            assignment_epoch: self.assignment_epoch,
            topics: self.topics.clone(),
            members: Vec::new(),
        }
    }

    pub(crate) fn snapshot(&self) -> ConsumerSnapshot {
        ConsumerSnapshot {
            members: self
                .members
                .values()
                .map(|m| MemberSnapshot {
                    id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    subscribed_topics: m.subscribed_topics.iter().cloned().collect(),
                    subscribed_names: m.subscription.names.iter().cloned().collect(),
                    subscribed_regex: m.subscription.regex().map(str::to_string),
                    server_assignor: m.server_assignor.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    member_epoch: m.member_epoch,
                    previous_epoch: m.previous_epoch,
                    assigned: m.assigned.clone(),
                    revoking: m.revoking.clone(),
                    target: self.target.get(&m.id).cloned().unwrap_or_default(),
                    away: m.away,
                    classic: m.classic.as_ref().map(|c| c.protocols.clone()),
                })
                .collect(),
            ..self.header()
        }
    }

    /// Takes the epochs and subscribed topics of a snapshot, keeping the
    /// members (the group record and the member records are separate).
    /// Restored members get fresh sessions, and revocation deadlines start
    /// over.
    pub(crate) fn restore_epochs(&mut self, snapshot: &ConsumerSnapshot) {
        self.epoch = snapshot.epoch;
        self.assignment_epoch = snapshot.assignment_epoch;
        self.topics = snapshot.topics.clone();
    }

    pub(crate) fn restore_member(&mut self, m: MemberSnapshot, now_ms: i64) {
        self.target.insert(m.id.clone(), m.target);
        // A classic member keeps to its rebalance timeout by rejoining.
        let revoking = !m.revoking.is_empty() && m.classic.is_none();
        let mut member = ConsumerMember {
            id: m.id,
            instance_id: m.instance_id,
            client_id: m.client_id,
            client_host: m.client_host,
            subscription: Subscription::restore(
                m.subscribed_names.into_iter().collect(),
                m.subscribed_regex,
                m.subscribed_topics.iter().cloned().collect(),
            ),
            subscribed_topics: m.subscribed_topics.into_iter().collect(),
            server_assignor: m.server_assignor,
            rebalance_timeout_ms: m.rebalance_timeout_ms,
            member_epoch: m.member_epoch,
            previous_epoch: m.previous_epoch,
            assigned: m.assigned,
            revoking: m.revoking,
            revoke_deadline_ms: None,
            away: m.away,
            last_heard_ms: now_ms,
            sent: None,
            classic: m.classic.map(ClassicMember::new),
        };
        if revoking {
            member.revoke_deadline_ms = Some(member.rebalance_deadline_ms(now_ms));
        }
        self.members.insert(member.id.clone(), member);
    }

    /// Drops a member whose record was deleted.
    pub(crate) fn forget_member(&mut self, member_id: &str) {
        self.members.remove(member_id);
        self.target.remove(member_id);
    }
}
