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

use super::consumer::ConsumerGroup;

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
    /// The member's metadata (for a consumer, its subscription) under
    /// `protocol`; empty if it does not support it.
    pub(crate) fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, metadata)| metadata.clone())
            .unwrap_or_default()
    }

    /// Answers a JoinGroup or SyncGroup the member waits on with `error`.
    pub(super) fn fail_waiters(&mut self, error: ResponseError, deliveries: &mut Deliveries) {
        if let Some(waiter) = self.awaiting_join.take() {
            deliveries
                .joins
                .push((waiter, JoinOutcome::error(error, &self.id)));
        }
        if let Some(waiter) = self.awaiting_sync.take() {
            deliveries.syncs.push((waiter, SyncOutcome::error(error)));
        }
    }

    /// When the member's session ends unless it is heard from again; it
    /// ends at this very millisecond, as Kafka's heartbeat timer fires.
    pub(crate) fn session_deadline_ms(&self) -> i64 {
        self.last_heard_ms + i64::from(self.session_timeout_ms)
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

/// Who a SyncGroup, Heartbeat or OffsetCommit says it is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MemberClaim<'a> {
    pub(crate) member_id: &'a str,
    pub(crate) instance_id: Option<&'a str>,
    pub(crate) generation: i32,
}

/// The protocol a SyncGroup (v5+) names; each part is checked when given.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ProtocolClaim<'a> {
    pub(crate) protocol_type: Option<&'a str>,
    pub(crate) protocol_name: Option<&'a str>,
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
    /// The group reached a point a restarted coordinator must resume from
    /// (a generation's assignment handed out, the group emptied, a static
    /// member replaced in a stable group); it is persisted before anyone is
    /// answered. In between, as in Kafka, nothing is written: a coordinator
    /// that restarts mid-rebalance resumes from the last stable generation,
    /// and members of a newer one are told to rejoin.
    pub(crate) persist_group: bool,
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

    pub(crate) fn append(&mut self, other: Deliveries) {
        self.joins.extend(other.joins);
        self.syncs.extend(other.syncs);
        self.persist_group |= other.persist_group;
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

impl GroupSettings {
    /// Whether a JoinGroup's session timeout lies within the bounds
    /// (INVALID_SESSION_TIMEOUT otherwise).
    pub(crate) fn allows_session_timeout(&self, session_timeout_ms: i32) -> bool {
        (self.min_session_timeout_ms..=self.max_session_timeout_ms).contains(&session_timeout_ms)
    }
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
    /// Members under the consumer protocol (KIP-848), if the group has
    /// any; a group has members of one protocol at a time.
    pub(crate) consumer: Option<ConsumerGroup>,
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
            consumer: None,
        }
    }

    pub(super) fn new_member_id(prefix: &str) -> String {
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

    pub(super) fn member_of_instance(&self, instance: &str) -> Option<String> {
        self.members
            .values()
            .find(|m| m.instance_id.as_deref() == Some(instance))
            .map(|m| m.id.clone())
    }

    pub(super) fn all_support(&self, protocol: &str) -> bool {
        self.members
            .values()
            .all(|m| m.protocols.iter().any(|(name, _)| name == protocol))
    }

    /// No members under either protocol.
    pub(crate) fn is_empty(&self) -> bool {
        self.members.is_empty() && !self.is_consumer_group()
    }

    /// Whether the group has members under the consumer protocol.
    pub(crate) fn is_consumer_group(&self) -> bool {
        self.consumer
            .as_ref()
            .is_some_and(|c| !c.members.is_empty())
    }

    /// Never formed and holding nothing: what a rejected request leaves
    /// behind. Such a group is dropped rather than listed.
    pub(crate) fn is_vacant(&self) -> bool {
        self.generation == 0
            && self.is_empty()
            && self.pending.is_empty()
            && self.offsets.is_empty()
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

mod join;
pub(crate) mod migration;
mod session;

pub use self::migration::MigrationPolicy;
#[cfg(test)]
mod tests;
