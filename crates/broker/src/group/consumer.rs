//! One group under the consumer protocol of KIP-848
//! (ConsumerGroupHeartbeat), as a state machine with time and topic
//! metadata passed in. The coordinator owns the assignment: whenever the
//! group epoch moves (a member joins, leaves or changes its subscription,
//! or a subscribed topic changes shape) a server-side assignor computes a
//! target assignment, and each member reconciles towards its target
//! through its own heartbeats: it first gives up what it must revoke, then
//! takes the member epoch of the target, then receives the partitions that
//! their previous owners have released.
//!
//! Invariants:
//! - A partition is held (assigned, or being revoked) by at most one member
//!   at a time: it reaches its new owner only after the previous one has
//!   reported it revoked (in a heartbeat, or for a classic member in a
//!   JoinGroup, that no longer lists it as owned), left, or been removed.
//! - `assignment_epoch <= epoch`, and every member's epoch is at most
//!   `assignment_epoch`.

mod assignor;
mod classic;
mod partitions;
mod snapshot;
mod subscription;
mod timers;

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::error::ResponseError;
use uuid::Uuid;

use self::partitions::{difference, intersection, intersects, is_subset, without_empty_topics};
pub(crate) use self::{
    assignor::Assignor,
    classic::{ClassicMember, ClassicProtocols, ClassicSeat, to_ids, to_names},
    partitions::Partitions,
    snapshot::{ConsumerSnapshot, MemberSnapshot},
    subscription::{Subscription, TopicCatalog},
};

/// A subscribed topic as the assignor sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TopicShape {
    pub(crate) id: Uuid,
    pub(crate) partitions: i32,
}

/// The member epoch a heartbeat sends to leave the group.
pub(crate) const LEAVE_EPOCH: i32 = -1;
/// The member epoch a static member sends to leave for a while.
pub(crate) const STATIC_LEAVE_EPOCH: i32 = -2;

#[derive(Debug)]
pub(crate) struct ConsumerMember {
    pub(crate) id: String,
    pub(crate) instance_id: Option<String>,
    pub(crate) client_id: String,
    pub(crate) client_host: String,
    /// Names and expression as the member gave them.
    pub(crate) subscription: Subscription,
    /// The topics that subscription comes to, as of the last epoch.
    pub(crate) subscribed_topics: BTreeSet<String>,
    pub(crate) server_assignor: Option<String>,
    pub(crate) rebalance_timeout_ms: i32,
    pub(crate) member_epoch: i32,
    previous_epoch: i32,
    /// What the member holds as far as the coordinator is concerned.
    pub(crate) assigned: Partitions,
    /// What it was asked to give up and has not yet reported given up.
    revoking: Partitions,
    revoke_deadline_ms: Option<i64>,
    /// A static member that left for a while (epoch -2): it keeps its
    /// partitions until its session runs out or its instance joins again.
    away: bool,
    last_heard_ms: i64,
    /// The assignment last sent, so that only changes are sent.
    sent: Option<Partitions>,
    /// Set while the member speaks the classic protocol.
    pub(crate) classic: Option<ClassicMember>,
}

impl ConsumerMember {
    /// A member that holds nothing yet, at epoch 0.
    fn new(
        id: String,
        instance_id: Option<String>,
        client_id: String,
        client_host: String,
        rebalance_timeout_ms: i32,
        now_ms: i64,
    ) -> Self {
        Self {
            id,
            instance_id,
            client_id,
            client_host,
            subscription: Subscription::default(),
            subscribed_topics: BTreeSet::new(),
            server_assignor: None,
            rebalance_timeout_ms,
            member_epoch: 0,
            previous_epoch: 0,
            assigned: Partitions::new(),
            revoking: Partitions::new(),
            revoke_deadline_ms: None,
            away: false,
            last_heard_ms: now_ms,
            sent: None,
            classic: None,
        }
    }

    /// When a rebalance step the member must take from `now_ms` on (give
    /// partitions up, rejoin, sync) runs out of time.
    fn rebalance_deadline_ms(&self, now_ms: i64) -> i64 {
        now_ms + i64::from(self.rebalance_timeout_ms.max(0))
    }

    /// How long the member's session lasts without a word from it: its
    /// own classic session timeout, or the group's.
    fn session_timeout_ms(&self, settings: &ConsumerSettings) -> i64 {
        i64::from(
            self.classic
                .as_ref()
                .map_or(settings.session_timeout_ms, |c| {
                    c.protocols.session_timeout_ms
                }),
        )
    }
}

/// A ConsumerGroupHeartbeat as the state machine sees it; `None` fields
/// did not change since the member's previous heartbeat.
#[derive(Debug, Clone, Default)]
pub(crate) struct ConsumerHeartbeat {
    pub(crate) member_id: String,
    pub(crate) instance_id: Option<String>,
    pub(crate) member_epoch: i32,
    pub(crate) rebalance_timeout_ms: i32,
    pub(crate) subscribed_topics: Option<Vec<String>>,
    /// A regular expression over topic names; empty removes it.
    pub(crate) subscribed_regex: Option<String>,
    pub(crate) server_assignor: Option<String>,
    pub(crate) owned: Option<Partitions>,
    pub(crate) client_id: String,
    pub(crate) client_host: String,
}

/// What a ConsumerGroupHeartbeat answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConsumerOutcome {
    pub(crate) member_id: String,
    pub(crate) member_epoch: i32,
    /// The member's whole assignment, when it changed since last sent.
    pub(crate) assignment: Option<Partitions>,
}

/// A consumer-protocol group's timing: the broker's, or the group's own
/// config overrides.
#[derive(Debug, Clone, Copy)]
pub struct ConsumerSettings {
    pub session_timeout_ms: i32,
    pub heartbeat_interval_ms: i32,
}

/// The bounds, inclusive, within which a group's overrides must lie.
#[derive(Debug, Clone, Copy)]
pub struct ConsumerLimits {
    pub session_timeout_ms: (i32, i32),
    pub heartbeat_interval_ms: (i32, i32),
}

#[derive(Debug, Default)]
pub(crate) struct ConsumerGroup {
    /// Moves whenever what the assignment depends on changes.
    pub(crate) epoch: i32,
    /// The group epoch `target` was computed at.
    pub(crate) assignment_epoch: i32,
    pub(crate) members: BTreeMap<String, ConsumerMember>,
    pub(crate) target: BTreeMap<String, Partitions>,
    /// The subscribed topics as of the last epoch.
    topics: BTreeMap<String, TopicShape>,
}

impl ConsumerGroup {
    /// Kafka's names for a consumer group's state.
    pub(crate) fn state_name(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.assignment_epoch < self.epoch {
            "Assigning"
        } else if self
            .members
            .values()
            .any(|m| m.member_epoch != self.assignment_epoch || !m.revoking.is_empty())
        {
            "Reconciling"
        } else {
            "Stable"
        }
    }

    /// The assignor the group uses: the one most members ask for, uniform
    /// when none asks.
    pub(crate) fn assignor(&self) -> Assignor {
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for name in self
            .members
            .values()
            .filter_map(|m| m.server_assignor.as_deref())
        {
            *votes.entry(name).or_default() += 1;
        }
        votes
            .into_iter()
            .max_by_key(|(_, count)| *count)
            .and_then(|(name, _)| Assignor::named(name))
            .unwrap_or(Assignor::Uniform)
    }

    /// Handles a heartbeat. `topic` describes a topic by name, as the
    /// metadata knows it now.
    pub(crate) fn heartbeat(
        &mut self,
        mut request: ConsumerHeartbeat,
        topics: &dyn TopicCatalog,
        now_ms: i64,
    ) -> Result<ConsumerOutcome, ResponseError> {
        request.owned = request.owned.map(without_empty_topics);
        if let Some(name) = request.server_assignor.as_deref() {
            if Assignor::named(name).is_none() {
                return Err(ResponseError::UnsupportedAssignor);
            }
        }
        let static_leave_without_instance =
            request.member_epoch == STATIC_LEAVE_EPOCH && request.instance_id.is_none();
        if request.member_epoch < STATIC_LEAVE_EPOCH || static_leave_without_instance {
            return Err(ResponseError::InvalidRequest);
        }
        if request.member_epoch == LEAVE_EPOCH || request.member_epoch == STATIC_LEAVE_EPOCH {
            return self.leave(&request);
        }
        let member_id = if request.member_epoch == 0 {
            self.join(&request, now_ms)?
        } else {
            self.check_epoch(&request)?;
            request.member_id.clone()
        };
        let Some(member) = self.members.get_mut(&member_id) else {
            return Err(ResponseError::UnknownMemberId);
        };
        member.last_heard_ms = now_ms;
        member.away = false;
        // Whoever heartbeats speaks the consumer protocol from now on.
        member.classic = None;
        if request.rebalance_timeout_ms > 0 {
            member.rebalance_timeout_ms = request.rebalance_timeout_ms;
        }
        if let Some(names) = &request.subscribed_topics {
            member.subscription.names = names.iter().cloned().collect();
        }
        if let Some(regex) = &request.subscribed_regex {
            member.subscription.set_regex(regex)?;
        }
        if request.server_assignor.is_some() && request.server_assignor != member.server_assignor {
            member.server_assignor = request.server_assignor.clone();
            self.epoch += 1;
        }
        self.refresh_topics(topics);
        self.compute_target();
        self.reconcile(&member_id, request.owned.as_ref(), now_ms);

        let Some(member) = self.members.get_mut(&member_id) else {
            return Err(ResponseError::UnknownMemberId);
        };
        // As in Kafka, the whole assignment goes to a joining member and to
        // a full request (what a client sends after an error: every field
        // that may otherwise be left out is there), and otherwise only
        // when it changed.
        let full_request = request.rebalance_timeout_ms > 0
            && (request.subscribed_topics.is_some() || request.subscribed_regex.is_some())
            && request.owned.is_some();
        let send = request.member_epoch == 0
            || full_request
            || member.sent.as_ref() != Some(&member.assigned);
        let assignment = send.then(|| member.assigned.clone());
        if send {
            member.sent = Some(member.assigned.clone());
        }
        Ok(ConsumerOutcome {
            member_id,
            member_epoch: member.member_epoch,
            assignment,
        })
    }

    /// A member (re)joining owns nothing: a member that still owned
    /// partitions could end up sharing them.
    fn join(&mut self, request: &ConsumerHeartbeat, now_ms: i64) -> Result<String, ResponseError> {
        if request.subscribed_topics.is_none() && request.subscribed_regex.is_none() {
            return Err(ResponseError::InvalidRequest);
        }
        let mut subscription = Subscription::default();
        subscription.names = request
            .subscribed_topics
            .iter()
            .flatten()
            .cloned()
            .collect();
        if let Some(regex) = &request.subscribed_regex {
            subscription.set_regex(regex)?;
        }
        let owns_something = request.owned.as_ref().is_some_and(|o| !o.is_empty());
        if request.rebalance_timeout_ms <= 0 || owns_something {
            return Err(ResponseError::InvalidRequest);
        }
        let member_id = if request.member_id.is_empty() {
            Uuid::new_v4().to_string()
        } else {
            request.member_id.clone()
        };
        if let Some(instance) = request.instance_id.as_deref() {
            // A classic member never says it is leaving for a while: its
            // instance joining under the consumer protocol replaces it, as
            // in Kafka.
            let holder = self
                .members
                .values()
                .find(|m| m.instance_id.as_deref() == Some(instance) && m.id != member_id)
                .map(|m| (m.id.clone(), m.away || m.classic.is_some()));
            match holder {
                Some((old_id, true)) => {
                    self.take_over(&old_id, &member_id, now_ms);
                    return Ok(member_id);
                }
                Some((_, false)) => return Err(ResponseError::UnreleasedInstanceId),
                None => {}
            }
        }
        // A member joining again with its id has given up what it held.
        self.target.remove(&member_id);
        let mut member = ConsumerMember::new(
            member_id.clone(),
            request.instance_id.clone(),
            request.client_id.clone(),
            request.client_host.clone(),
            request.rebalance_timeout_ms,
            now_ms,
        );
        member.subscribed_topics = subscription.topics();
        member.subscription = subscription;
        member.server_assignor = request.server_assignor.clone();
        self.members.insert(member_id.clone(), member);
        self.epoch += 1;
        tracing::info!(
            member = member_id,
            epoch = self.epoch,
            "consumer group member joined"
        );
        Ok(member_id)
    }

    /// A static member's instance is back under a new member id: the new
    /// member takes over the old one's epoch, partitions and target, so the
    /// group does not rebalance.
    fn take_over(&mut self, old_id: &str, member_id: &str, now_ms: i64) {
        let Some(mut member) = self.members.remove(old_id) else {
            return;
        };
        member.id = member_id.to_string();
        member.away = false;
        member.last_heard_ms = now_ms;
        member.sent = None;
        if let Some(target) = self.target.remove(old_id) {
            self.target.insert(member_id.to_string(), target);
        }
        self.members.insert(member_id.to_string(), member);
        tracing::info!(
            member = member_id,
            replaced = old_id,
            "static member came back and took over its partitions"
        );
    }

    /// A heartbeat from a member of an older epoch is fenced, unless it
    /// carries the epoch just before the current one and owns nothing it
    /// should not (its previous answer was lost).
    fn check_epoch(&self, request: &ConsumerHeartbeat) -> Result<(), ResponseError> {
        let member = self
            .members
            .get(&request.member_id)
            .ok_or(ResponseError::UnknownMemberId)?;
        if request.member_epoch == member.member_epoch {
            return Ok(());
        }
        let owns_only_assigned = request
            .owned
            .as_ref()
            .is_some_and(|owned| is_subset(owned, &member.assigned));
        if request.member_epoch == member.previous_epoch && owns_only_assigned {
            return Ok(());
        }
        Err(ResponseError::FencedMemberEpoch)
    }

    fn leave(&mut self, request: &ConsumerHeartbeat) -> Result<ConsumerOutcome, ResponseError> {
        let by_instance = request
            .instance_id
            .as_deref()
            .and_then(|instance| self.member_of_instance(instance));
        let member_id = match by_instance {
            // The instance now belongs to another member.
            Some(owner) if !request.member_id.is_empty() && owner != request.member_id => {
                return Err(ResponseError::FencedInstanceId);
            }
            Some(owner) => owner,
            None if request.member_id.is_empty() => return Err(ResponseError::UnknownMemberId),
            None => request.member_id.clone(),
        };
        let Some(member) = self.members.get_mut(&member_id) else {
            return Err(ResponseError::UnknownMemberId);
        };
        if request.member_epoch == STATIC_LEAVE_EPOCH {
            // Its instance is expected back: nothing moves meanwhile.
            member.away = true;
            tracing::info!(member = member_id, "static member left for a while");
        } else {
            self.remove(&member_id, "left the group");
        }
        Ok(ConsumerOutcome {
            member_id,
            member_epoch: request.member_epoch,
            assignment: None,
        })
    }

    /// The member of a static instance.
    fn member_of_instance(&self, instance: &str) -> Option<String> {
        self.members
            .values()
            .find(|m| m.instance_id.as_deref() == Some(instance))
            .map(|m| m.id.clone())
    }

    /// Removes a member; what it held is free for the others at once.
    fn remove(&mut self, member_id: &str, why: &str) {
        self.members.remove(member_id);
        self.target.remove(member_id);
        self.epoch += 1;
        tracing::info!(
            member = member_id,
            epoch = self.epoch,
            reason = why,
            "consumer group member removed"
        );
    }

    /// Notices subscriptions that changed, expressions that match other
    /// topics now, and subscribed topics that appeared, vanished or grew.
    fn refresh_topics(&mut self, catalog: &dyn TopicCatalog) {
        let any_regex = self
            .members
            .values()
            .any(|m| m.subscription.regex().is_some());
        let all_names = if any_regex {
            catalog.names()
        } else {
            Vec::new()
        };
        let mut changed = false;
        for member in self.members.values_mut() {
            member.subscription.refresh(&all_names);
            let topics = member.subscription.topics();
            if topics != member.subscribed_topics {
                member.subscribed_topics = topics;
                changed = true;
            }
        }
        if changed {
            self.epoch += 1;
        }
        let names: BTreeSet<&String> = self
            .members
            .values()
            .flat_map(|m| m.subscribed_topics.iter())
            .collect();
        let topics: BTreeMap<String, TopicShape> = names
            .into_iter()
            .filter_map(|name| catalog.shape(name).map(|shape| (name.clone(), shape)))
            .collect();
        if topics != self.topics {
            self.topics = topics;
            self.epoch += 1;
        }
    }

    fn compute_target(&mut self) {
        if self.assignment_epoch == self.epoch {
            return;
        }
        let subscriptions: BTreeMap<&str, &BTreeSet<String>> = self
            .members
            .values()
            .map(|m| (m.id.as_str(), &m.subscribed_topics))
            .collect();
        self.target = self
            .assignor()
            .assign(&subscriptions, &self.topics, &self.target);
        self.assignment_epoch = self.epoch;
    }

    /// Moves one member towards its target: revoke first, then take the
    /// target's epoch, then the partitions nobody else holds any more.
    /// `owned` is what this heartbeat says the member owns (`None`: not
    /// said); a revocation is complete only when a heartbeat says so.
    fn reconcile(&mut self, member_id: &str, owned: Option<&Partitions>, now_ms: i64) {
        let target = self.target.get(member_id).cloned().unwrap_or_default();
        let held_by_others = self.held_by_others(member_id);
        let assignment_epoch = self.assignment_epoch;
        let Some(member) = self.members.get_mut(member_id) else {
            return;
        };
        // A revocation is over once the member says it owns none of it.
        let released =
            |revoking: &Partitions| owned.is_some_and(|owned| !intersects(owned, revoking));
        if !member.revoking.is_empty() {
            if !released(&member.revoking) {
                return;
            }
            member.revoking.clear();
            member.revoke_deadline_ms = None;
        }
        if member.member_epoch < assignment_epoch {
            let revoke = difference(&member.assigned, &target);
            if !revoke.is_empty() {
                member.assigned = intersection(&member.assigned, &target);
                if !released(&revoke) {
                    // A classic member is held to its rebalance timeout by
                    // having to rejoin instead.
                    if member.classic.is_none() {
                        member.revoke_deadline_ms = Some(member.rebalance_deadline_ms(now_ms));
                    }
                    member.revoking = revoke;
                    return;
                }
            }
            member.previous_epoch = member.member_epoch;
            member.member_epoch = assignment_epoch;
        }
        for (topic_id, partitions) in &target {
            for partition in partitions {
                let free = !held_by_others
                    .get(topic_id)
                    .is_some_and(|held| held.contains(partition));
                if free {
                    member
                        .assigned
                        .entry(*topic_id)
                        .or_default()
                        .insert(*partition);
                }
            }
        }
    }

    fn held_by_others(&self, member_id: &str) -> Partitions {
        let mut held = Partitions::new();
        for member in self.members.values().filter(|m| m.id != member_id) {
            for source in [&member.assigned, &member.revoking] {
                for (topic_id, partitions) in source {
                    held.entry(*topic_id)
                        .or_default()
                        .extend(partitions.iter().copied());
                }
            }
        }
        held
    }

    /// Whether a member may commit offsets with this epoch. Epoch -1 is a
    /// commit outside group management (an admin client, or a consumer
    /// that assigns its partitions itself and names its own member id),
    /// allowed while the group has no members.
    pub(crate) fn check_commit(&self, member_id: &str, member_epoch: i32) -> Option<ResponseError> {
        if member_epoch < 0 && self.members.is_empty() {
            return None;
        }
        let Some(member) = self.members.get(member_id) else {
            return Some(ResponseError::UnknownMemberId);
        };
        // A classic member commits with its generation, which is its
        // member epoch.
        let stale = if member.classic.is_some() {
            ResponseError::IllegalGeneration
        } else {
            ResponseError::StaleMemberEpoch
        };
        (member_epoch != member.member_epoch).then_some(stale)
    }
}

#[cfg(test)]
mod tests;
