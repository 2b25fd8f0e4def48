//! A formed generation: SyncGroup hands out the leader's assignment,
//! heartbeats and offset commits are checked against the member and its
//! generation, and members leave by request or by session expiry.

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;

use super::{
    Deliveries, Group, GroupSettings, GroupState, Member, MemberClaim, ProtocolClaim, SyncOutcome,
    SyncWaiter,
};

impl Group {
    /// Kafka's check of a request from a current member, which also keeps
    /// the member's session alive: a static instance must still belong to
    /// the claimed member id, the member must be in the group, and the
    /// generation must be the group's.
    fn validate(
        &mut self,
        claim: MemberClaim<'_>,
        now_ms: i64,
    ) -> Result<&mut Member, ResponseError> {
        let replaced = claim
            .instance_id
            .and_then(|instance| self.member_of_instance(instance))
            .is_some_and(|owner| owner != claim.member_id);
        if replaced {
            return Err(ResponseError::FencedInstanceId);
        }
        let generation = self.generation;
        let member = self
            .members
            .get_mut(claim.member_id)
            .ok_or(ResponseError::UnknownMemberId)?;
        member.last_heard_ms = now_ms;
        if claim.generation != generation {
            return Err(ResponseError::IllegalGeneration);
        }
        Ok(member)
    }

    /// Handles a SyncGroup.
    pub(crate) fn sync(
        &mut self,
        claim: MemberClaim<'_>,
        protocol: ProtocolClaim<'_>,
        assignments: Vec<(String, Bytes)>,
        waiter: SyncWaiter,
        now_ms: i64,
    ) -> Deliveries {
        let mut deliveries = Deliveries::default();
        let state = self.state;
        let mismatch = |claimed: Option<&str>, ours: &Option<String>| {
            claimed.is_some_and(|claimed| ours.as_deref() != Some(claimed))
        };
        let inconsistent = mismatch(protocol.protocol_type, &self.protocol_type)
            || mismatch(protocol.protocol_name, &self.protocol_name);
        let member = match self.validate(claim, now_ms) {
            Ok(_) if inconsistent => {
                deliveries.syncs.push((
                    waiter,
                    SyncOutcome::error(ResponseError::InconsistentGroupProtocol),
                ));
                return deliveries;
            }
            Ok(member) => member,
            Err(error) => {
                deliveries.syncs.push((waiter, SyncOutcome::error(error)));
                return deliveries;
            }
        };
        let member_id = claim.member_id;
        match state {
            GroupState::Empty | GroupState::PreparingRebalance => {
                deliveries.syncs.push((
                    waiter,
                    SyncOutcome::error(ResponseError::RebalanceInProgress),
                ));
            }
            GroupState::Stable => {
                let assignment = member.assignment.clone();
                deliveries
                    .syncs
                    .push((waiter, self.sync_outcome(&assignment)));
            }
            GroupState::CompletingRebalance => {
                if let Some(previous) = member.awaiting_sync.replace(waiter) {
                    let _ = previous.send(SyncOutcome::error(ResponseError::UnknownMemberId));
                }
                if self.leader.as_deref() == Some(member_id) {
                    let mut assignments: BTreeMap<String, Bytes> =
                        assignments.into_iter().collect();
                    for member in self.members.values_mut() {
                        member.assignment = assignments.remove(&member.id).unwrap_or_default();
                    }
                    self.state = GroupState::Stable;
                    tracing::info!(
                        group = self.id,
                        generation = self.generation,
                        leader = member_id,
                        "stabilized with the leader's assignment"
                    );
                    deliveries.persist_group = true;
                    let ids: Vec<String> = self.members.keys().cloned().collect();
                    for id in ids {
                        let assignment = self.members[&id].assignment.clone();
                        let outcome = self.sync_outcome(&assignment);
                        if let Some(waiter) = self
                            .members
                            .get_mut(&id)
                            .and_then(|m| m.awaiting_sync.take())
                        {
                            deliveries.syncs.push((waiter, outcome));
                        }
                    }
                }
            }
        }
        deliveries
    }

    fn sync_outcome(&self, assignment: &Bytes) -> SyncOutcome {
        SyncOutcome {
            error: None,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            assignment: assignment.clone(),
        }
    }

    /// Handles a Heartbeat: members of the current generation learn
    /// whether a rebalance has begun.
    pub(crate) fn heartbeat(
        &mut self,
        claim: MemberClaim<'_>,
        now_ms: i64,
    ) -> Option<ResponseError> {
        if let Err(error) = self.validate(claim, now_ms) {
            return Some(error);
        }
        match self.state {
            GroupState::PreparingRebalance => Some(ResponseError::RebalanceInProgress),
            GroupState::Empty => Some(ResponseError::UnknownMemberId),
            GroupState::CompletingRebalance | GroupState::Stable => None,
        }
    }

    /// Whether an offset commit is allowed. A member of the current
    /// generation may commit while the group prepares a rebalance (that is
    /// when consumers commit what they are about to give up), but not
    /// between JoinGroup and its assignment. Generation -1 with no member
    /// id is a commit outside group management (a consumer that assigns
    /// partitions itself), allowed only while the group has no members.
    pub(crate) fn check_commit(
        &mut self,
        claim: MemberClaim<'_>,
        now_ms: i64,
    ) -> Option<ResponseError> {
        // Without a generation the commit comes from an admin client or a
        // consumer that assigns its partitions itself, whatever member id
        // it names (librdkafka sends its own): Kafka takes it while the
        // group has no members.
        if claim.generation < 0 {
            if self.members.is_empty() {
                return None;
            }
            if claim.member_id.is_empty() && claim.instance_id.is_none() {
                return Some(ResponseError::UnknownMemberId);
            }
        }
        if let Err(error) = self.validate(claim, now_ms) {
            return Some(error);
        }
        (self.state == GroupState::CompletingRebalance)
            .then_some(ResponseError::RebalanceInProgress)
    }

    /// Removes members (LeaveGroup); unknown ones are reported per member.
    pub(crate) fn leave(
        &mut self,
        members: &[(String, Option<String>)],
        settings: &GroupSettings,
        now_ms: i64,
    ) -> (Vec<Option<ResponseError>>, Deliveries) {
        self.remove(members, "members left the group", settings, now_ms)
    }

    fn remove(
        &mut self,
        members: &[(String, Option<String>)],
        reason: &str,
        settings: &GroupSettings,
        now_ms: i64,
    ) -> (Vec<Option<ResponseError>>, Deliveries) {
        let mut deliveries = Deliveries::default();
        let mut results = Vec::with_capacity(members.len());
        let mut removed = false;
        for (member_id, instance_id) in members {
            let id = if member_id.is_empty() {
                instance_id
                    .as_deref()
                    .and_then(|i| self.member_of_instance(i))
            } else {
                Some(member_id.clone())
            };
            match id.and_then(|id| self.members.remove(&id)) {
                Some(mut member) => {
                    member.fail_waiters(ResponseError::UnknownMemberId, &mut deliveries);
                    removed = true;
                    results.push(None);
                }
                None => results.push(Some(ResponseError::UnknownMemberId)),
            }
        }
        if removed {
            deliveries.append(self.membership_shrank(reason, settings, now_ms));
        }
        (results, deliveries)
    }

    fn membership_shrank(
        &mut self,
        reason: &str,
        settings: &GroupSettings,
        now_ms: i64,
    ) -> Deliveries {
        let mut deliveries = Deliveries::default();
        if self.members.is_empty() {
            if self.state != GroupState::Empty {
                self.become_empty(now_ms);
            }
            deliveries.persist_group = true;
            return deliveries;
        }
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                deliveries.append(self.prepare_rebalance(reason, settings, now_ms));
            }
            GroupState::PreparingRebalance => deliveries.append(self.maybe_complete_join(now_ms)),
            GroupState::Empty => {}
        }
        deliveries
    }

    pub(super) fn become_empty(&mut self, now_ms: i64) {
        self.state = GroupState::Empty;
        self.leader = None;
        self.protocol_name = None;
        self.generation += 1;
        self.empty_since_ms = now_ms;
    }

    /// Expires silent members and pending member ids, and ends a join phase
    /// whose time is up.
    pub(crate) fn tick(&mut self, settings: &GroupSettings, now_ms: i64) -> Deliveries {
        let mut deliveries = Deliveries::default();
        self.pending.retain(|_, deadline| *deadline > now_ms);
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| {
                m.awaiting_join.is_none()
                    && m.awaiting_sync.is_none()
                    && now_ms >= m.session_deadline_ms()
            })
            .map(|m| m.id.clone())
            .collect();
        if !expired.is_empty() {
            tracing::info!(group = self.id, members = ?expired, "members' sessions expired");
            let leaving: Vec<(String, Option<String>)> =
                expired.into_iter().map(|id| (id, None)).collect();
            let (_, left) = self.remove(&leaving, "session timeout", settings, now_ms);
            deliveries.append(left);
        }
        deliveries.append(self.maybe_complete_join(now_ms));
        deliveries
    }

    /// The earliest time at which [`Self::tick`] has something to do: a
    /// session or a pending member id that expires, or a join phase that
    /// ends. A member waiting on a join or a sync has no session deadline
    /// while it waits.
    pub(crate) fn next_deadline_ms(&self) -> Option<i64> {
        let sessions = self
            .members
            .values()
            .filter(|m| m.awaiting_join.is_none() && m.awaiting_sync.is_none())
            .map(Member::session_deadline_ms);
        let joining = (self.state == GroupState::PreparingRebalance)
            .then_some([Some(self.join_deadline_ms), self.initial_delay_until_ms])
            .into_iter()
            .flatten()
            .flatten();
        sessions
            .chain(self.pending.values().copied())
            .chain(joining)
            .min()
    }
}
