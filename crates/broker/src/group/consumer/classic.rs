//! Members under the classic protocol inside a consumer group (KIP-848
//! online migration). Such a member speaks JoinGroup, SyncGroup, Heartbeat
//! and LeaveGroup, but the coordinator assigns its partitions, as it does
//! for every member of a consumer group:
//!
//! - JoinGroup carries its subscription and, from the cooperative
//!   protocol's subscription version 1 on, what it still owns; the answer's
//!   generation is the member epoch it reached, and nobody is leader.
//! - SyncGroup hands it the partitions it holds, without those it must
//!   give up; they reach their next owner only once it rejoins without
//!   them, as for a consumer-protocol member.
//! - Heartbeat answers REBALANCE_IN_PROGRESS while the group epoch is
//!   ahead of its member epoch, while it has partitions to give up, or once
//!   every partition it waits for has been released.
//!
//! Its session runs on its own JoinGroup session timeout; told to rejoin
//! it must do so, and once joined sync, within its rebalance timeout.

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use uuid::Uuid;

use super::{
    ConsumerGroup, ConsumerMember, Partitions, TopicCatalog,
    partitions::{difference, intersects},
};
use crate::group::{
    embedded::{self, NamedPartitions},
    offsets::CONSUMER_PROTOCOL_TYPE,
    state::{JoinOutcome, JoinRequest, MemberClaim, ProtocolClaim, SyncOutcome},
};

/// What a classic member declared when it last joined, kept with it (and
/// stored) so the group can become a classic group again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ClassicProtocols {
    pub(crate) session_timeout_ms: i32,
    /// Supported protocols in preference order, with their metadata.
    pub(crate) protocols: Vec<(String, Bytes)>,
}

impl ClassicProtocols {
    /// The protocol its answers name: its first.
    fn protocol_name(&self) -> String {
        self.protocols
            .first()
            .map(|(name, _)| name.clone())
            .unwrap_or_default()
    }

    fn supports(&self, protocol: &str) -> bool {
        self.protocols.iter().any(|(name, _)| name == protocol)
    }
}

/// A member's classic side: what it declared and its timers.
#[derive(Debug, Clone)]
pub(crate) struct ClassicMember {
    pub(crate) protocols: ClassicProtocols,
    /// Told to rejoin: it must by then.
    rejoin_deadline_ms: Option<i64>,
    /// Joined: it must sync by then.
    sync_deadline_ms: Option<i64>,
}

impl ClassicMember {
    pub(crate) fn new(protocols: ClassicProtocols) -> Self {
        Self {
            protocols,
            rejoin_deadline_ms: None,
            sync_deadline_ms: None,
        }
    }

    pub(super) fn deadlines(&self) -> [Option<(i64, &'static str)>; 2] {
        [
            self.rejoin_deadline_ms
                .map(|d| (d, "did not rejoin within the rebalance timeout")),
            self.sync_deadline_ms
                .map(|d| (d, "did not sync within the rebalance timeout")),
        ]
    }
}

/// A classic member as it crosses from one protocol to the other.
#[derive(Debug, Clone)]
pub(crate) struct ClassicSeat {
    pub(crate) id: String,
    pub(crate) instance_id: Option<String>,
    pub(crate) client_id: String,
    pub(crate) client_host: String,
    pub(crate) rebalance_timeout_ms: i32,
    pub(crate) protocols: ClassicProtocols,
    pub(crate) subscribed_topics: Vec<String>,
    /// Going to the consumer protocol, what it holds; going back, its
    /// target.
    pub(crate) partitions: Partitions,
}

impl ConsumerGroup {
    /// The consumer group a classic group of consumers becomes: its epochs
    /// are the generation, and every member keeps what it holds as its
    /// target, so nothing moves until the group epoch does.
    pub(crate) fn from_classic(
        generation: i32,
        seats: Vec<ClassicSeat>,
        topics: &dyn TopicCatalog,
        now_ms: i64,
    ) -> Self {
        let mut group = Self {
            epoch: generation,
            assignment_epoch: generation,
            ..Self::default()
        };
        for seat in seats {
            group
                .target
                .insert(seat.id.clone(), seat.partitions.clone());
            let mut member = ConsumerMember::new(
                seat.id,
                seat.instance_id,
                seat.client_id,
                seat.client_host,
                seat.rebalance_timeout_ms,
                now_ms,
            );
            member.subscription.names = seat.subscribed_topics.into_iter().collect();
            member.subscribed_topics = member.subscription.topics();
            member.member_epoch = generation;
            member.previous_epoch = generation;
            member.assigned = seat.partitions;
            member.classic = Some(ClassicMember::new(seat.protocols));
            group.members.insert(member.id.clone(), member);
        }
        // The topics as of this epoch, so that only a later change of
        // theirs moves it.
        group.topics = group
            .members
            .values()
            .flat_map(|m| m.subscribed_topics.iter())
            .filter_map(|name| topics.shape(name).map(|shape| (name.clone(), shape)))
            .collect();
        group
    }

    /// The members, every one classic, as a classic group takes them back,
    /// each with its target as of the current group epoch (a member that
    /// just left no longer has a share).
    pub(crate) fn into_classic_seats(mut self) -> Vec<ClassicSeat> {
        self.compute_target();
        // A partition another member still holds is not handed out: its
        // owner gives it up through the classic rebalance first.
        let mut free_targets: BTreeMap<String, Partitions> = self
            .members
            .keys()
            .map(|id| {
                let target = self.target.get(id).cloned().unwrap_or_default();
                (id.clone(), difference(&target, &self.held_by_others(id)))
            })
            .collect();
        let members = std::mem::take(&mut self.members);
        members
            .into_values()
            .map(|m| ClassicSeat {
                partitions: free_targets.remove(&m.id).unwrap_or_default(),
                protocols: m.classic.map(|c| c.protocols).unwrap_or_default(),
                subscribed_topics: m.subscribed_topics.into_iter().collect(),
                id: m.id,
                instance_id: m.instance_id,
                client_id: m.client_id,
                client_host: m.client_host,
                rebalance_timeout_ms: m.rebalance_timeout_ms,
            })
            .collect()
    }

    /// Whether any member speaks the consumer protocol.
    pub(crate) fn has_consumer_protocol_members(&self) -> bool {
        self.members.values().any(|m| m.classic.is_none())
    }

    /// Whether the group has members and every one speaks the classic
    /// protocol.
    pub(crate) fn all_classic(&self) -> bool {
        !self.members.is_empty() && !self.has_consumer_protocol_members()
    }

    /// A JoinGroup from a classic member.
    pub(crate) fn classic_join(
        &mut self,
        request: &JoinRequest,
        topics: &dyn TopicCatalog,
        now_ms: i64,
    ) -> JoinOutcome {
        let requested_id = if request.member_id.is_empty() {
            Uuid::new_v4().to_string()
        } else {
            request.member_id.clone()
        };
        let refuse = |error| JoinOutcome::error(error, &requested_id);
        if !self.supports_classic(request) {
            return refuse(ResponseError::InconsistentGroupProtocol);
        }
        if request.member_id.is_empty()
            && request.instance_id.is_none()
            && request.require_known_member_id
        {
            return refuse(ResponseError::MemberIdRequired);
        }
        let Some((protocol_name, metadata)) = request.protocols.first() else {
            return refuse(ResponseError::InconsistentGroupProtocol);
        };
        let Some(subscription) = embedded::decode_subscription(metadata) else {
            return refuse(ResponseError::InconsistentGroupProtocol);
        };
        let member_id = match self.classic_member_id(request, &requested_id, now_ms) {
            Ok(member_id) => member_id,
            Err(error) => return refuse(error),
        };
        let Some(member) = self.members.get_mut(&member_id) else {
            return refuse(ResponseError::UnknownMemberId);
        };
        member.last_heard_ms = now_ms;
        member.away = false;
        // Rejoining is how a classic member keeps to its rebalance timeout.
        member.revoke_deadline_ms = None;
        member.client_id.clone_from(&request.client_id);
        member.client_host.clone_from(&request.client_host);
        if request.rebalance_timeout_ms > 0 {
            member.rebalance_timeout_ms = request.rebalance_timeout_ms;
        }
        member.subscription.names = subscription.topics.iter().cloned().collect();
        let mut classic = ClassicMember::new(ClassicProtocols {
            session_timeout_ms: request.session_timeout_ms,
            protocols: request.protocols.clone(),
        });
        classic.sync_deadline_ms = Some(member.rebalance_deadline_ms(now_ms));
        member.classic = Some(classic);
        let owned = to_ids(&subscription.owned, topics);
        self.refresh_topics(topics);
        self.compute_target();
        self.reconcile(&member_id, Some(&owned), now_ms);
        let generation = self.members.get(&member_id).map_or(-1, |m| m.member_epoch);
        JoinOutcome {
            error: None,
            generation,
            protocol_type: Some(CONSUMER_PROTOCOL_TYPE.to_string()),
            protocol_name: Some(protocol_name.clone()),
            leader: String::new(),
            member_id,
            members: Vec::new(),
        }
    }

    /// The consumer protocol, with a protocol every classic member
    /// supports.
    fn supports_classic(&self, request: &JoinRequest) -> bool {
        request.protocol_type == CONSUMER_PROTOCOL_TYPE
            && request.protocols.iter().any(|(name, _)| {
                self.members
                    .values()
                    .filter_map(|m| m.classic.as_ref())
                    .all(|c| c.protocols.supports(name))
            })
    }

    /// The member a classic JoinGroup is about, created if new. A static
    /// member joining without a member id replaces the instance's current
    /// member; with one, the id must be the instance's.
    fn classic_member_id(
        &mut self,
        request: &JoinRequest,
        requested_id: &str,
        now_ms: i64,
    ) -> Result<String, ResponseError> {
        if let Some(instance) = request.instance_id.as_deref() {
            let holder = self.member_of_instance(instance);
            match (request.member_id.is_empty(), holder) {
                (true, Some(holder)) => {
                    self.take_over(&holder, requested_id, now_ms);
                    return Ok(requested_id.to_string());
                }
                (false, None) => return Err(ResponseError::UnknownMemberId),
                (false, Some(holder)) if holder != request.member_id => {
                    return Err(ResponseError::FencedInstanceId);
                }
                _ => {}
            }
        }
        if !self.members.contains_key(requested_id) {
            self.target.remove(requested_id);
            self.members.insert(
                requested_id.to_string(),
                ConsumerMember::new(
                    requested_id.to_string(),
                    request.instance_id.clone(),
                    request.client_id.clone(),
                    request.client_host.clone(),
                    request.rebalance_timeout_ms,
                    now_ms,
                ),
            );
            self.epoch += 1;
            tracing::info!(
                member = requested_id,
                epoch = self.epoch,
                "classic member joined a consumer group"
            );
        }
        Ok(requested_id.to_string())
    }

    /// A SyncGroup from a classic member: the partitions it holds, as the
    /// consumer protocol encodes an assignment.
    pub(crate) fn classic_sync(
        &mut self,
        claim: MemberClaim<'_>,
        protocol: ProtocolClaim<'_>,
        topics: &dyn TopicCatalog,
        now_ms: i64,
    ) -> SyncOutcome {
        let epoch = self.epoch;
        let member = match self.classic_member(claim) {
            Ok(member) => member,
            Err(error) => return SyncOutcome::error(error),
        };
        let Some(classic) = member.classic.as_ref() else {
            return SyncOutcome::error(ResponseError::UnknownMemberId);
        };
        let protocol_name = classic.protocols.protocol_name();
        let type_differs = protocol
            .protocol_type
            .is_some_and(|t| t != CONSUMER_PROTOCOL_TYPE);
        let name_differs = protocol.protocol_name.is_some_and(|n| n != protocol_name);
        if type_differs || name_differs {
            return SyncOutcome::error(ResponseError::InconsistentGroupProtocol);
        }
        let version = classic
            .protocols
            .protocols
            .first()
            .map_or(0, |(_, metadata)| embedded::subscription_version(metadata));
        member.last_heard_ms = now_ms;
        if epoch > member.member_epoch && member.revoking.is_empty() {
            return SyncOutcome::error(member.ask_to_rejoin(now_ms));
        }
        if let Some(classic) = member.classic.as_mut() {
            classic.sync_deadline_ms = None;
        }
        SyncOutcome {
            error: None,
            protocol_type: Some(CONSUMER_PROTOCOL_TYPE.to_string()),
            protocol_name: Some(protocol_name),
            assignment: embedded::encode_assignment(version, to_names(&member.assigned, topics)),
        }
    }

    /// A Heartbeat from a classic member: whether it must rejoin.
    pub(crate) fn classic_heartbeat(
        &mut self,
        claim: MemberClaim<'_>,
        now_ms: i64,
    ) -> Option<ResponseError> {
        let epoch = self.epoch;
        let waiting = match self.members.get(claim.member_id) {
            Some(member) => difference(
                &self.target.get(&member.id).cloned().unwrap_or_default(),
                &member.assigned,
            ),
            None => Partitions::new(),
        };
        let released = !waiting.is_empty() && {
            let held = self.held_by_others(claim.member_id);
            !intersects(&waiting, &held)
        };
        let member = match self.classic_member(claim) {
            Ok(member) => member,
            Err(error) => return Some(error),
        };
        member.last_heard_ms = now_ms;
        let rejoin = member.member_epoch < epoch || !member.revoking.is_empty() || released;
        rejoin.then(|| member.ask_to_rejoin(now_ms))
    }

    /// LeaveGroup for classic members, by member id or instance id; the
    /// answer is per member.
    pub(crate) fn classic_leave(
        &mut self,
        members: &[(String, Option<String>)],
    ) -> Vec<Option<ResponseError>> {
        members
            .iter()
            .map(|(member_id, instance_id)| {
                let id = match instance_id.as_deref() {
                    Some(instance) => match self.member_of_instance(instance) {
                        None => return Some(ResponseError::UnknownMemberId),
                        Some(holder) if !member_id.is_empty() && holder != *member_id => {
                            return Some(ResponseError::FencedInstanceId);
                        }
                        Some(holder) => holder,
                    },
                    None => member_id.clone(),
                };
                let classic = self.members.get(&id).map(|m| m.classic.is_some());
                if classic != Some(true) {
                    return Some(ResponseError::UnknownMemberId);
                }
                self.remove(&id, "left the group");
                None
            })
            .collect()
    }

    /// The classic member a SyncGroup or Heartbeat claims to be, checked
    /// as Kafka checks it: the instance's member, classic, of its epoch.
    fn classic_member(
        &mut self,
        claim: MemberClaim<'_>,
    ) -> Result<&mut ConsumerMember, ResponseError> {
        if let Some(instance) = claim.instance_id {
            match self.member_of_instance(instance) {
                None => return Err(ResponseError::UnknownMemberId),
                Some(holder) if holder != claim.member_id => {
                    return Err(ResponseError::FencedInstanceId);
                }
                Some(_) => {}
            }
        }
        let member = self
            .members
            .get_mut(claim.member_id)
            .filter(|m| m.classic.is_some())
            .ok_or(ResponseError::UnknownMemberId)?;
        if claim.generation != member.member_epoch {
            return Err(ResponseError::IllegalGeneration);
        }
        Ok(member)
    }
}

impl ConsumerMember {
    /// Tells a classic member to rejoin: REBALANCE_IN_PROGRESS, and it must
    /// within its rebalance timeout from the first time it was told.
    fn ask_to_rejoin(&mut self, now_ms: i64) -> ResponseError {
        let deadline = self.rebalance_deadline_ms(now_ms);
        if let Some(classic) = self.classic.as_mut() {
            classic.rejoin_deadline_ms.get_or_insert(deadline);
        }
        ResponseError::RebalanceInProgress
    }
}

/// Partitions named in embedded bytes, by topic id; topics the metadata
/// does not know are left out.
pub(crate) fn to_ids(named: &NamedPartitions, topics: &dyn TopicCatalog) -> Partitions {
    let mut partitions = Partitions::new();
    for (name, indexes) in named {
        if let Some(shape) = topics.shape(name) {
            partitions
                .entry(shape.id)
                .or_default()
                .extend(indexes.iter().copied());
        }
    }
    partitions
}

/// Partitions by topic name, for embedded bytes.
pub(crate) fn to_names(partitions: &Partitions, topics: &dyn TopicCatalog) -> NamedPartitions {
    partitions
        .iter()
        .filter_map(|(id, indexes)| {
            let name = topics.name_of(id)?;
            Some((name, indexes.iter().copied().collect()))
        })
        .collect()
}
