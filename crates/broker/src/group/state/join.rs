//! The join phase of a rebalance: JoinGroup, waiting for every member to
//! (re)join, forming the next generation and choosing its protocol.

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;

use super::{
    Deliveries, Group, GroupSettings, GroupState, JoinOutcome, JoinRequest, JoinWaiter, Member,
    SyncOutcome,
};

impl Group {
    /// Handles a JoinGroup. The outcome is either immediate (`Err`) or the
    /// caller waits on `waiter`, which `deliveries` may already answer.
    pub(crate) fn join(
        &mut self,
        request: JoinRequest,
        waiter: JoinWaiter,
        settings: &GroupSettings,
        now_ms: i64,
    ) -> Deliveries {
        let mut deliveries = Deliveries::default();
        if !settings.allows_session_timeout(request.session_timeout_ms) {
            deliveries.joins.push((
                waiter,
                JoinOutcome::error(ResponseError::InvalidSessionTimeout, &request.member_id),
            ));
            return deliveries;
        }
        let compatible = match &self.protocol_type {
            Some(protocol_type) if !self.members.is_empty() => {
                *protocol_type == request.protocol_type
                    && request
                        .protocols
                        .iter()
                        .any(|(name, _)| self.all_support(name))
            }
            _ => !request.protocols.is_empty() && !request.protocol_type.is_empty(),
        };
        if !compatible {
            deliveries.joins.push((
                waiter,
                JoinOutcome::error(ResponseError::InconsistentGroupProtocol, &request.member_id),
            ));
            return deliveries;
        }

        // The id a restarted static member had before it took over its entry.
        let mut replaced_static = None;
        let member_id = if request.member_id.is_empty() {
            let static_member = request
                .instance_id
                .as_ref()
                .and_then(|instance| self.member_of_instance(instance));
            match static_member {
                Some(old_id) => {
                    // A static member restarted: it takes over its old
                    // entry under a new id; the old id is fenced.
                    let new_id =
                        Self::new_member_id(request.instance_id.as_deref().unwrap_or("member"));
                    if let Some(mut member) = self.members.remove(&old_id) {
                        member.fail_waiters(ResponseError::FencedInstanceId, &mut deliveries);
                        member.id = new_id.clone();
                        self.members.insert(new_id.clone(), member);
                    }
                    if self.leader.as_deref() == Some(old_id.as_str()) {
                        self.leader = Some(new_id.clone());
                    }
                    replaced_static = Some(old_id);
                    new_id
                }
                None => {
                    let prefix = request
                        .instance_id
                        .clone()
                        .unwrap_or_else(|| request.client_id.clone());
                    let new_id =
                        Self::new_member_id(if prefix.is_empty() { "member" } else { &prefix });
                    if request.require_known_member_id && request.instance_id.is_none() {
                        self.pending.insert(
                            new_id.clone(),
                            now_ms + i64::from(request.session_timeout_ms),
                        );
                        deliveries.joins.push((
                            waiter,
                            JoinOutcome::error(ResponseError::MemberIdRequired, &new_id),
                        ));
                        return deliveries;
                    }
                    new_id
                }
            }
        } else {
            let known = self.members.contains_key(&request.member_id)
                || self.pending.contains_key(&request.member_id);
            let replaced = request
                .instance_id
                .as_deref()
                .and_then(|instance| self.member_of_instance(instance))
                .is_some_and(|current| current != request.member_id);
            if replaced {
                // A newer incarnation of this static member took over.
                deliveries.joins.push((
                    waiter,
                    JoinOutcome::error(ResponseError::FencedInstanceId, &request.member_id),
                ));
                return deliveries;
            }
            if !known {
                deliveries.joins.push((
                    waiter,
                    JoinOutcome::error(ResponseError::UnknownMemberId, &request.member_id),
                ));
                return deliveries;
            }
            if let (Some(instance), Some(member)) =
                (&request.instance_id, self.members.get(&request.member_id))
            {
                if member.instance_id.as_ref() != Some(instance) {
                    deliveries.joins.push((
                        waiter,
                        JoinOutcome::error(ResponseError::FencedInstanceId, &request.member_id),
                    ));
                    return deliveries;
                }
            }
            request.member_id.clone()
        };
        self.pending.remove(&member_id);

        if let Some(old_id) = &replaced_static {
            if let Some(outcome) = self.rejoin_stable_static(old_id, &member_id, &request, now_ms) {
                // The new member id must survive a coordinator restart.
                deliveries.persist_group = true;
                deliveries.joins.push((waiter, outcome));
                return deliveries;
            }
        }

        // A known member rejoining a stable group with nothing changed
        // gets the current generation back without a rebalance.
        let unchanged = self
            .members
            .get(&member_id)
            .is_some_and(|m| m.protocols == request.protocols);
        let is_leader = self.leader.as_deref() == Some(member_id.as_str());
        if unchanged
            && !is_leader
            && matches!(
                self.state,
                GroupState::Stable | GroupState::CompletingRebalance
            )
        {
            if let Some(member) = self.members.get_mut(&member_id) {
                member.last_heard_ms = now_ms;
            }
            deliveries
                .joins
                .push((waiter, self.join_outcome_for(&member_id, false)));
            return deliveries;
        }

        let member = self
            .members
            .entry(member_id.clone())
            .or_insert_with(|| Member {
                id: member_id.clone(),
                instance_id: request.instance_id.clone(),
                client_id: request.client_id.clone(),
                client_host: request.client_host.clone(),
                rebalance_timeout_ms: request.rebalance_timeout_ms,
                session_timeout_ms: request.session_timeout_ms,
                protocols: Vec::new(),
                assignment: Bytes::new(),
                last_heard_ms: now_ms,
                awaiting_join: None,
                awaiting_sync: None,
            });
        member.protocols = request.protocols;
        member.rebalance_timeout_ms = request.rebalance_timeout_ms;
        member.session_timeout_ms = request.session_timeout_ms;
        member.last_heard_ms = now_ms;
        if let Some(previous) = member.awaiting_join.replace(waiter) {
            let _ = previous.send(JoinOutcome::error(
                ResponseError::UnknownMemberId,
                &member_id,
            ));
        }
        if self.protocol_type.is_none() || self.members.len() == 1 {
            self.protocol_type = Some(request.protocol_type);
        }
        if self.state != GroupState::PreparingRebalance {
            let reason = format!("member {member_id} joined or changed its subscription");
            deliveries.append(self.prepare_rebalance(&reason, settings, now_ms));
        } else if let Some(until) = self.initial_delay_until_ms {
            // Every new member of a forming group extends the wait a little,
            // up to the rebalance timeout.
            let extended =
                (now_ms + settings.initial_rebalance_delay_ms).min(self.join_deadline_ms);
            self.initial_delay_until_ms = Some(until.max(extended));
        }
        deliveries.append(self.maybe_complete_join(now_ms));
        deliveries
    }

    pub(super) fn prepare_rebalance(
        &mut self,
        reason: &str,
        settings: &GroupSettings,
        now_ms: i64,
    ) -> Deliveries {
        tracing::info!(
            group = self.id,
            state = self.state.name(),
            generation = self.generation,
            reason,
            "preparing to rebalance"
        );
        let mut deliveries = Deliveries::default();
        // Members waiting on a sync of the old generation must rejoin.
        for member in self.members.values_mut() {
            if let Some(waiter) = member.awaiting_sync.take() {
                deliveries.syncs.push((
                    waiter,
                    SyncOutcome::error(ResponseError::RebalanceInProgress),
                ));
            }
        }
        let timeout = self
            .members
            .values()
            .map(|m| i64::from(m.rebalance_timeout_ms))
            .max()
            .unwrap_or(0);
        self.join_deadline_ms = now_ms + timeout;
        self.initial_delay_until_ms = (self.state == GroupState::Empty)
            .then(|| (now_ms + settings.initial_rebalance_delay_ms).min(self.join_deadline_ms));
        self.state = GroupState::PreparingRebalance;
        deliveries
    }

    /// Ends the join phase once every member has rejoined (and an empty
    /// group's initial delay is over), or at the deadline.
    pub(super) fn maybe_complete_join(&mut self, now_ms: i64) -> Deliveries {
        if self.state != GroupState::PreparingRebalance {
            return Deliveries::default();
        }
        let all_joined = self.members.values().all(|m| m.awaiting_join.is_some());
        let delay_over = self
            .initial_delay_until_ms
            .is_none_or(|until| now_ms >= until);
        if (all_joined && delay_over) || now_ms >= self.join_deadline_ms {
            self.complete_join(now_ms)
        } else {
            Deliveries::default()
        }
    }

    fn complete_join(&mut self, now_ms: i64) -> Deliveries {
        let mut deliveries = Deliveries::default();
        // Whoever did not rejoin in time is out.
        self.members.retain(|_, m| m.awaiting_join.is_some());
        self.initial_delay_until_ms = None;
        if self.members.is_empty() {
            self.become_empty(now_ms);
            deliveries.persist_group = true;
            return deliveries;
        }
        self.generation += 1;
        if !self
            .leader
            .as_ref()
            .is_some_and(|leader| self.members.contains_key(leader))
        {
            self.leader = self.members.keys().next().cloned();
        }
        self.protocol_name = self.select_protocol();
        self.state = GroupState::CompletingRebalance;
        tracing::info!(
            group = self.id,
            generation = self.generation,
            members = self.members.len(),
            protocol = self.protocol_name.as_deref().unwrap_or_default(),
            "formed a generation, waiting for the leader's assignment"
        );
        for member in self.members.values_mut() {
            member.assignment = Bytes::new();
        }
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let outcome = self.join_outcome_for(&id, true);
            if let Some(waiter) = self
                .members
                .get_mut(&id)
                .and_then(|m| m.awaiting_join.take())
            {
                deliveries.joins.push((waiter, outcome));
            }
        }
        deliveries
    }

    /// A static member that restarts while the group is stable keeps its
    /// assignment without a rebalance, unless its protocols would change the
    /// group's. As in Kafka, the answer names the leader as it was before
    /// the takeover, so a restarted leader does not compute an assignment
    /// that a stable group would never hand out.
    fn rejoin_stable_static(
        &mut self,
        old_id: &str,
        member_id: &str,
        request: &JoinRequest,
        now_ms: i64,
    ) -> Option<JoinOutcome> {
        if self.state != GroupState::Stable {
            return None;
        }
        let member = self.members.get_mut(member_id)?;
        let previous = std::mem::replace(&mut member.protocols, request.protocols.clone());
        if self.select_protocol() != self.protocol_name {
            // The group must rebalance; the join goes on with the member's
            // protocols as they were, so it sees them change.
            if let Some(member) = self.members.get_mut(member_id) {
                member.protocols = previous;
            }
            return None;
        }
        let member = self.members.get_mut(member_id)?;
        member.session_timeout_ms = request.session_timeout_ms;
        member.rebalance_timeout_ms = request.rebalance_timeout_ms;
        member.client_id = request.client_id.clone();
        member.client_host = request.client_host.clone();
        member.last_heard_ms = now_ms;
        tracing::info!(
            group = self.id,
            instance = request.instance_id.as_deref().unwrap_or_default(),
            member = member_id,
            "static member rejoined without a rebalance"
        );
        let mut outcome = self.join_outcome_for(member_id, false);
        if outcome.leader == member_id {
            outcome.leader = old_id.to_string();
        }
        Some(outcome)
    }

    fn join_outcome_for(&self, member_id: &str, with_members: bool) -> JoinOutcome {
        let protocol = self.protocol_name.clone().unwrap_or_default();
        let is_leader = self.leader.as_deref() == Some(member_id);
        let members = if is_leader && with_members {
            self.members
                .values()
                .map(|m| {
                    (
                        m.id.clone(),
                        m.instance_id.clone(),
                        m.metadata_for(&protocol),
                    )
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinOutcome {
            error: None,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
            members,
        }
    }

    /// Kafka's vote: among protocols every member supports, each member
    /// votes for the first in its own preference order; the most votes win,
    /// ties going to the first candidate in the leader's order.
    pub(super) fn select_protocol(&self) -> Option<String> {
        let first = self
            .leader
            .as_ref()
            .and_then(|leader| self.members.get(leader))
            .or_else(|| self.members.values().next())?;
        let candidates: Vec<&String> = first
            .protocols
            .iter()
            .map(|(name, _)| name)
            .filter(|name| self.all_support(name))
            .collect();
        let mut votes: BTreeMap<&String, usize> = BTreeMap::new();
        for member in self.members.values() {
            if let Some((name, _)) = member
                .protocols
                .iter()
                .find(|(name, _)| candidates.contains(&name))
            {
                *votes.entry(name).or_default() += 1;
            }
        }
        candidates
            .iter()
            .max_by_key(|name| {
                (
                    votes.get(*name).copied().unwrap_or(0),
                    std::cmp::Reverse(candidates.iter().position(|c| c == *name)),
                )
            })
            .map(|name| (*name).clone())
    }
}
