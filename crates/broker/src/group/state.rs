//! One consumer group under the classic rebalance protocol, as a state
//! machine with time passed in. It holds the members, the generation, the
//! chosen protocol, the assignments and the committed offsets; JoinGroup
//! and SyncGroup callers that must wait leave a channel in their member and
//! are answered when the phase completes.
//!
//! States, as Kafka names them:
//! - `Empty`: no members (committed offsets may remain);
//! - `PreparingRebalance`: waiting for every member to (re)join, until the
//!   rebalance timeout;
//! - `CompletingRebalance`: a generation is formed, waiting for the leader's
//!   assignment (SyncGroup);
//! - `Stable`: assignments handed out; heartbeats keep members in.
//!
//! Invariants: `generation` grows by one each time a join phase completes
//! with members; in `Stable` every member has an assignment (possibly
//! empty); the leader is a member whenever there are members.

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use tokio::sync::oneshot;

/// Kafka's names for the states, as DescribeGroups and ListGroups report them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl GroupState {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Empty => "Empty",
            Self::PreparingRebalance => "PreparingRebalance",
            Self::CompletingRebalance => "CompletingRebalance",
            Self::Stable => "Stable",
        }
    }
}

/// What JoinGroup answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JoinOutcome {
    pub(crate) error: Option<ResponseError>,
    pub(crate) generation: i32,
    pub(crate) protocol_type: Option<String>,
    pub(crate) protocol_name: Option<String>,
    pub(crate) leader: String,
    pub(crate) member_id: String,
    /// For the leader only: every member and its metadata for the chosen
    /// protocol.
    pub(crate) members: Vec<(String, Option<String>, Bytes)>,
}

impl JoinOutcome {
    pub(crate) fn error(error: ResponseError, member_id: &str) -> Self {
        Self {
            error: Some(error),
            generation: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            member_id: member_id.to_string(),
            members: Vec::new(),
        }
    }
}

/// What SyncGroup answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyncOutcome {
    pub(crate) error: Option<ResponseError>,
    pub(crate) protocol_type: Option<String>,
    pub(crate) protocol_name: Option<String>,
    pub(crate) assignment: Bytes,
}

impl SyncOutcome {
    pub(crate) fn error(error: ResponseError) -> Self {
        Self {
            error: Some(error),
            protocol_type: None,
            protocol_name: None,
            assignment: Bytes::new(),
        }
    }
}

pub(crate) type JoinWaiter = oneshot::Sender<JoinOutcome>;
pub(crate) type SyncWaiter = oneshot::Sender<SyncOutcome>;

#[derive(Debug)]
pub(crate) struct Member {
    pub(crate) id: String,
    pub(crate) instance_id: Option<String>,
    pub(crate) client_id: String,
    pub(crate) client_host: String,
    pub(crate) rebalance_timeout_ms: i32,
    pub(crate) session_timeout_ms: i32,
    /// Supported protocols in preference order, with their metadata.
    pub(crate) protocols: Vec<(String, Bytes)>,
    pub(crate) assignment: Bytes,
    pub(crate) last_heard_ms: i64,
    awaiting_join: Option<JoinWaiter>,
    awaiting_sync: Option<SyncWaiter>,
}

impl Member {
    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, metadata)| metadata.clone())
            .unwrap_or_default()
    }
}

/// A JoinGroup as the state machine sees it.
#[derive(Debug, Clone)]
pub(crate) struct JoinRequest {
    pub(crate) member_id: String,
    pub(crate) instance_id: Option<String>,
    pub(crate) client_id: String,
    pub(crate) client_host: String,
    pub(crate) session_timeout_ms: i32,
    pub(crate) rebalance_timeout_ms: i32,
    pub(crate) protocol_type: String,
    pub(crate) protocols: Vec<(String, Bytes)>,
    /// From JoinGroup v4 on, a new member is first given an id and must
    /// join again with it (KIP-394).
    pub(crate) require_known_member_id: bool,
}

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CommittedOffset {
    pub(crate) offset: i64,
    pub(crate) leader_epoch: i32,
    pub(crate) metadata: String,
    pub(crate) commit_timestamp_ms: i64,
}

/// Answers to deliver once the caller has persisted what changed.
#[derive(Debug, Default)]
pub(crate) struct Deliveries {
    pub(crate) joins: Vec<(JoinWaiter, JoinOutcome)>,
    pub(crate) syncs: Vec<(SyncWaiter, SyncOutcome)>,
    /// The group's membership or assignment changed and must be persisted.
    pub(crate) group_changed: bool,
}

impl Deliveries {
    pub(crate) fn deliver(self) {
        for (waiter, outcome) in self.joins {
            let _ = waiter.send(outcome);
        }
        for (waiter, outcome) in self.syncs {
            let _ = waiter.send(outcome);
        }
    }

    fn append(&mut self, other: Deliveries) {
        self.joins.extend(other.joins);
        self.syncs.extend(other.syncs);
        self.group_changed |= other.group_changed;
    }
}

/// Timing settings shared by every group.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GroupSettings {
    /// How long the first rebalance of an empty group waits for more
    /// members (`group.initial.rebalance.delay.ms`).
    pub(crate) initial_rebalance_delay_ms: i64,
    pub(crate) min_session_timeout_ms: i32,
    pub(crate) max_session_timeout_ms: i32,
}

#[derive(Debug)]
pub(crate) struct Group {
    pub(crate) id: String,
    pub(crate) state: GroupState,
    pub(crate) protocol_type: Option<String>,
    pub(crate) protocol_name: Option<String>,
    pub(crate) generation: i32,
    pub(crate) leader: Option<String>,
    pub(crate) members: BTreeMap<String, Member>,
    /// Member ids handed out by MEMBER_ID_REQUIRED, with their deadline.
    pending: BTreeMap<String, i64>,
    /// When the join phase ends even if members are missing.
    join_deadline_ms: i64,
    /// While an empty group's first rebalance waits for more members.
    initial_delay_until_ms: Option<i64>,
    pub(crate) offsets: BTreeMap<(String, i32), CommittedOffset>,
    /// When the group last became empty, for offset expiration.
    pub(crate) empty_since_ms: i64,
}

impl Group {
    pub(crate) fn new(id: &str, now_ms: i64) -> Self {
        Self {
            id: id.to_string(),
            state: GroupState::Empty,
            protocol_type: None,
            protocol_name: None,
            generation: 0,
            leader: None,
            members: BTreeMap::new(),
            pending: BTreeMap::new(),
            join_deadline_ms: 0,
            initial_delay_until_ms: None,
            offsets: BTreeMap::new(),
            empty_since_ms: now_ms,
        }
    }

    fn new_member_id(prefix: &str) -> String {
        format!("{prefix}-{}", uuid::Uuid::new_v4())
    }

    /// Restores a member from persisted group metadata.
    pub(crate) fn restore_member(&mut self, member: RestoredMember, now_ms: i64) {
        self.members.insert(
            member.id.clone(),
            Member {
                id: member.id,
                instance_id: member.instance_id,
                client_id: member.client_id,
                client_host: member.client_host,
                rebalance_timeout_ms: member.rebalance_timeout_ms,
                session_timeout_ms: member.session_timeout_ms,
                protocols: member.protocols,
                assignment: member.assignment,
                last_heard_ms: now_ms,
                awaiting_join: None,
                awaiting_sync: None,
            },
        );
    }

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
        if request.session_timeout_ms < settings.min_session_timeout_ms
            || request.session_timeout_ms > settings.max_session_timeout_ms
        {
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
                        member.id = new_id.clone();
                        if let Some(waiter) = member.awaiting_join.take() {
                            deliveries.joins.push((
                                waiter,
                                JoinOutcome::error(ResponseError::FencedInstanceId, &old_id),
                            ));
                        }
                        if let Some(waiter) = member.awaiting_sync.take() {
                            deliveries.syncs.push((
                                waiter,
                                SyncOutcome::error(ResponseError::FencedInstanceId),
                            ));
                        }
                        self.members.insert(new_id.clone(), member);
                    }
                    if self.leader.as_deref() == Some(old_id.as_str()) {
                        self.leader = Some(new_id.clone());
                    }
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
            deliveries.append(self.prepare_rebalance(settings, now_ms));
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

    fn member_of_instance(&self, instance: &str) -> Option<String> {
        self.members
            .values()
            .find(|m| m.instance_id.as_deref() == Some(instance))
            .map(|m| m.id.clone())
    }

    fn all_support(&self, protocol: &str) -> bool {
        self.members
            .values()
            .all(|m| m.protocols.iter().any(|(name, _)| name == protocol))
    }

    fn prepare_rebalance(&mut self, settings: &GroupSettings, now_ms: i64) -> Deliveries {
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
    fn maybe_complete_join(&mut self, now_ms: i64) -> Deliveries {
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
            deliveries.group_changed = true;
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
        deliveries.group_changed = true;
        deliveries
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
    fn select_protocol(&self) -> Option<String> {
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

    /// Handles a SyncGroup.
    pub(crate) fn sync(
        &mut self,
        member_id: &str,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
        waiter: SyncWaiter,
        now_ms: i64,
    ) -> Deliveries {
        let mut deliveries = Deliveries::default();
        let Some(member) = self.members.get_mut(member_id) else {
            deliveries
                .syncs
                .push((waiter, SyncOutcome::error(ResponseError::UnknownMemberId)));
            return deliveries;
        };
        member.last_heard_ms = now_ms;
        if generation != self.generation {
            deliveries
                .syncs
                .push((waiter, SyncOutcome::error(ResponseError::IllegalGeneration)));
            return deliveries;
        }
        match self.state {
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
                    deliveries.group_changed = true;
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

    /// Checks a member and generation (Heartbeat, OffsetCommit) and keeps
    /// the member's session alive.
    pub(crate) fn heartbeat(
        &mut self,
        member_id: &str,
        generation: i32,
        now_ms: i64,
    ) -> Option<ResponseError> {
        let Some(member) = self.members.get_mut(member_id) else {
            return Some(ResponseError::UnknownMemberId);
        };
        member.last_heard_ms = now_ms;
        if generation != self.generation {
            return Some(ResponseError::IllegalGeneration);
        }
        match self.state {
            GroupState::PreparingRebalance => Some(ResponseError::RebalanceInProgress),
            GroupState::Empty => Some(ResponseError::UnknownMemberId),
            GroupState::CompletingRebalance | GroupState::Stable => None,
        }
    }

    /// Whether an offset commit from this member and generation is allowed.
    /// Generation -1 with no member id is a commit outside group management
    /// (a consumer that assigns partitions itself), allowed while the group
    /// has no members.
    pub(crate) fn check_commit(
        &mut self,
        member_id: &str,
        generation: i32,
        now_ms: i64,
    ) -> Option<ResponseError> {
        if generation < 0 && member_id.is_empty() {
            return (!self.members.is_empty()).then_some(ResponseError::IllegalGeneration);
        }
        if !self.members.contains_key(member_id) {
            return Some(ResponseError::UnknownMemberId);
        }
        match self.heartbeat(member_id, generation, now_ms) {
            None if self.state == GroupState::CompletingRebalance => {
                Some(ResponseError::RebalanceInProgress)
            }
            other => other,
        }
    }

    /// Removes members (LeaveGroup); unknown ones are reported per member.
    pub(crate) fn leave(
        &mut self,
        members: &[(String, Option<String>)],
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
                    if let Some(waiter) = member.awaiting_join.take() {
                        deliveries.joins.push((
                            waiter,
                            JoinOutcome::error(ResponseError::UnknownMemberId, &member.id),
                        ));
                    }
                    if let Some(waiter) = member.awaiting_sync.take() {
                        deliveries
                            .syncs
                            .push((waiter, SyncOutcome::error(ResponseError::UnknownMemberId)));
                    }
                    removed = true;
                    results.push(None);
                }
                None => results.push(Some(ResponseError::UnknownMemberId)),
            }
        }
        if removed {
            deliveries.append(self.membership_shrank(settings, now_ms));
        }
        (results, deliveries)
    }

    fn membership_shrank(&mut self, settings: &GroupSettings, now_ms: i64) -> Deliveries {
        let mut deliveries = Deliveries::default();
        if self.members.is_empty() {
            if self.state != GroupState::Empty {
                self.become_empty(now_ms);
            }
            deliveries.group_changed = true;
            return deliveries;
        }
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                deliveries.append(self.prepare_rebalance(settings, now_ms));
            }
            GroupState::PreparingRebalance => deliveries.append(self.maybe_complete_join(now_ms)),
            GroupState::Empty => {}
        }
        deliveries.group_changed = true;
        deliveries
    }

    fn become_empty(&mut self, now_ms: i64) {
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
                    && now_ms - m.last_heard_ms > i64::from(m.session_timeout_ms)
            })
            .map(|m| m.id.clone())
            .collect();
        if !expired.is_empty() {
            tracing::info!(group = self.id, members = ?expired, "members' sessions expired");
            let leaving: Vec<(String, Option<String>)> =
                expired.into_iter().map(|id| (id, None)).collect();
            let (_, left) = self.leave(&leaving, settings, now_ms);
            deliveries.append(left);
        }
        deliveries.append(self.maybe_complete_join(now_ms));
        deliveries
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

/// A member as persisted in the group's metadata record.
#[derive(Debug, Clone)]
pub(crate) struct RestoredMember {
    pub(crate) id: String,
    pub(crate) instance_id: Option<String>,
    pub(crate) client_id: String,
    pub(crate) client_host: String,
    pub(crate) rebalance_timeout_ms: i32,
    pub(crate) session_timeout_ms: i32,
    pub(crate) protocols: Vec<(String, Bytes)>,
    pub(crate) assignment: Bytes,
}

#[cfg(test)]
mod tests;
