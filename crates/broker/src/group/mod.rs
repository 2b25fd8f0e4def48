//! The group coordinator: consumer groups under the classic rebalance
//! protocol, their committed offsets, and their durable state in
//! `__consumer_offsets`.
//!
//! A group belongs to partition `hash(group) % partitions` of
//! `__consumer_offsets`, and its coordinator is that partition's leader.
//! A broker loads the groups of a partition when it becomes its leader (by
//! replaying the partition) and drops them when it stops leading it; until
//! a partition is loaded its groups answer COORDINATOR_LOAD_IN_PROGRESS, and
//! a broker that does not lead it answers NOT_COORDINATOR.
//!
//! Every change of membership, assignment or offsets is appended to the
//! partition before anyone is answered, under the coordinator's lock, so the
//! records land in the order the changes happened.

pub(crate) mod state;
pub(crate) mod storage;

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Mutex, PoisonError},
    time::Duration,
};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use tokio::sync::oneshot;

pub(crate) use self::state::MemberClaim;
use self::{
    state::{
        CommittedOffset, Deliveries, Group, GroupSettings, GroupState, JoinOutcome, JoinRequest,
        SyncOutcome,
    },
    storage::{Entry, Loaded, OFFSETS_TOPIC, partition_for},
};
use crate::{
    broker::{Broker, now_ms},
    partition::ReadLimit,
};

/// Extra time a JoinGroup or SyncGroup waits beyond the rebalance timeout
/// before giving up on an answer.
const WAIT_MARGIN: Duration = Duration::from_secs(5);
/// Largest offset metadata string accepted (Kafka's default).
const MAX_METADATA_BYTES: usize = 4096;
/// Bytes read from `__consumer_offsets` per step while loading.
const LOAD_READ_BYTES: usize = 1 << 20;

/// Settings of the coordinator, from the broker configuration.
#[derive(Debug, Clone, Copy)]
pub struct CoordinatorConfig {
    pub partitions: i32,
    pub offsets_retention_ms: i64,
    pub initial_rebalance_delay_ms: i64,
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PartitionLoad {
    Loading,
    Loaded,
}

#[derive(Debug, Default)]
struct Inner {
    groups: HashMap<String, Group>,
    partitions: HashMap<i32, PartitionLoad>,
}

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

#[derive(Debug)]
pub struct GroupCoordinator {
    config: CoordinatorConfig,
    settings: GroupSettings,
    inner: Mutex<Inner>,
}

impl GroupCoordinator {
    pub fn new(config: CoordinatorConfig) -> Self {
        Self {
            settings: GroupSettings {
                initial_rebalance_delay_ms: config.initial_rebalance_delay_ms,
                min_session_timeout_ms: config.min_session_timeout_ms,
                max_session_timeout_ms: config.max_session_timeout_ms,
            },
            config,
            inner: Mutex::new(Inner::default()),
        }
    }

    pub(crate) fn partitions(&self) -> i32 {
        self.config.partitions
    }

    pub(crate) fn partition_of(&self, group: &str) -> i32 {
        partition_for(group, self.config.partitions)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether this broker coordinates `group` right now.
    fn check(inner: &Inner, partition: i32) -> Result<(), ResponseError> {
        match inner.partitions.get(&partition) {
            Some(PartitionLoad::Loaded) => Ok(()),
            Some(PartitionLoad::Loading) => Err(ResponseError::CoordinatorLoadInProgress),
            None => Err(ResponseError::NotCoordinator),
        }
    }

    /// Appends changes to the group's partition. Called with the lock held.
    fn persist(broker: &Broker, partition: i32, entries: &[Entry]) -> Result<(), ResponseError> {
        if entries.is_empty() {
            return Ok(());
        }
        let replica = broker
            .replicas
            .get(OFFSETS_TOPIC, partition)
            .ok_or(ResponseError::NotCoordinator)?;
        let now = now_ms();
        replica
            .append_as_leader(&storage::encode_batch(entries, now), now)
            .map(drop)
            .map_err(|e| {
                tracing::warn!(partition, error = %e, "cannot write to __consumer_offsets");
                ResponseError::CoordinatorNotAvailable
            })
    }

    /// Persists what a state change requires, then answers the waiters.
    fn settle(broker: &Broker, partition: i32, group: &Group, deliveries: Deliveries) {
        if deliveries.group_changed {
            if let Err(error) =
                Self::persist(broker, partition, &[storage::group_entry(group, false)])
            {
                // The change is not durable: nobody may act on it.
                for (waiter, outcome) in deliveries.joins {
                    let _ = waiter.send(JoinOutcome::error(error, &outcome.member_id));
                }
                for (waiter, _) in deliveries.syncs {
                    let _ = waiter.send(SyncOutcome::error(error));
                }
                return;
            }
        }
        deliveries.deliver();
    }

    pub(crate) async fn join(
        &self,
        broker: &Broker,
        group_id: &str,
        request: JoinRequest,
    ) -> JoinOutcome {
        let partition = self.partition_of(group_id);
        let member_id = request.member_id.clone();
        let wait = Duration::from_millis(request.rebalance_timeout_ms.max(0) as u64) + WAIT_MARGIN;
        let (waiter, answer) = oneshot::channel();
        {
            let mut inner = self.lock();
            if let Err(error) = Self::check(&inner, partition) {
                return JoinOutcome::error(error, &member_id);
            }
            let now = now_ms();
            let group = inner
                .groups
                .entry(group_id.to_string())
                .or_insert_with(|| Group::new(group_id, now));
            let deliveries = group.join(request, waiter, &self.settings, now);
            Self::settle(broker, partition, group, deliveries);
        }
        match tokio::time::timeout(wait, answer).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => JoinOutcome::error(ResponseError::NotCoordinator, &member_id),
            Err(_) => JoinOutcome::error(ResponseError::RebalanceInProgress, &member_id),
        }
    }

    pub(crate) async fn sync(
        &self,
        broker: &Broker,
        group_id: &str,
        claim: MemberClaim<'_>,
        assignments: Vec<(String, Bytes)>,
    ) -> SyncOutcome {
        let partition = self.partition_of(group_id);
        let (waiter, answer) = oneshot::channel();
        let wait;
        {
            let mut inner = self.lock();
            if let Err(error) = Self::check(&inner, partition) {
                return SyncOutcome::error(error);
            }
            let Some(group) = inner.groups.get_mut(group_id) else {
                return SyncOutcome::error(ResponseError::UnknownMemberId);
            };
            wait = group
                .members
                .get(claim.member_id)
                .map_or(Duration::ZERO, |m| {
                    Duration::from_millis(m.rebalance_timeout_ms.max(0) as u64)
                })
                + WAIT_MARGIN;
            let deliveries = group.sync(claim, assignments, waiter, now_ms());
            Self::settle(broker, partition, group, deliveries);
        }
        match tokio::time::timeout(wait, answer).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => SyncOutcome::error(ResponseError::NotCoordinator),
            Err(_) => SyncOutcome::error(ResponseError::RebalanceInProgress),
        }
    }

    pub(crate) fn heartbeat(
        &self,
        group_id: &str,
        claim: MemberClaim<'_>,
    ) -> Option<ResponseError> {
        let partition = self.partition_of(group_id);
        let mut inner = self.lock();
        if let Err(error) = Self::check(&inner, partition) {
            return Some(error);
        }
        match inner.groups.get_mut(group_id) {
            Some(group) => group.heartbeat(claim, now_ms()),
            None => Some(ResponseError::UnknownMemberId),
        }
    }

    /// LeaveGroup: per-member results, or an error for the whole group.
    pub(crate) fn leave(
        &self,
        broker: &Broker,
        group_id: &str,
        members: &[(String, Option<String>)],
    ) -> Result<Vec<Option<ResponseError>>, ResponseError> {
        let partition = self.partition_of(group_id);
        let mut inner = self.lock();
        Self::check(&inner, partition)?;
        let Some(group) = inner.groups.get_mut(group_id) else {
            return Ok(vec![Some(ResponseError::UnknownMemberId); members.len()]);
        };
        let (results, deliveries) = group.leave(members, &self.settings, now_ms());
        Self::settle(broker, partition, group, deliveries);
        Ok(results)
    }

    /// OffsetCommit: every offset is written before the answer; the result
    /// is per offset, or an error for the whole request.
    pub(crate) fn commit(
        &self,
        broker: &Broker,
        group_id: &str,
        claim: MemberClaim<'_>,
        offsets: Vec<(String, i32, CommittedOffset)>,
    ) -> Result<Vec<Option<ResponseError>>, ResponseError> {
        let partition = self.partition_of(group_id);
        let mut inner = self.lock();
        Self::check(&inner, partition)?;
        let now = now_ms();
        let group = inner
            .groups
            .entry(group_id.to_string())
            .or_insert_with(|| Group::new(group_id, now));
        if let Some(error) = group.check_commit(claim, now) {
            return Err(error);
        }
        let mut results = Vec::with_capacity(offsets.len());
        let mut accepted = Vec::new();
        for (topic, index, committed) in offsets {
            if committed.metadata.len() > MAX_METADATA_BYTES {
                results.push(Some(ResponseError::OffsetMetadataTooLarge));
            } else {
                results.push(None);
                accepted.push((topic, index, committed));
            }
        }
        let entries: Vec<Entry> = accepted
            .iter()
            .map(|(topic, index, committed)| {
                storage::offset_entry(group_id, topic, *index, Some(committed))
            })
            .collect();
        Self::persist(broker, partition, &entries)?;
        for (topic, index, committed) in accepted {
            group.offsets.insert((topic, index), committed);
        }
        Ok(results)
    }

    /// OffsetFetch: the committed offsets of `wanted` (every one when
    /// `None`); partitions never committed come back as `None`.
    pub(crate) fn fetch(
        &self,
        group_id: &str,
        wanted: Option<Vec<(String, Vec<i32>)>>,
    ) -> Result<Vec<(String, i32, Option<CommittedOffset>)>, ResponseError> {
        let partition = self.partition_of(group_id);
        let inner = self.lock();
        Self::check(&inner, partition)?;
        let offsets = inner.groups.get(group_id).map(|g| &g.offsets);
        Ok(match wanted {
            None => offsets
                .into_iter()
                .flatten()
                .map(|((topic, index), committed)| (topic.clone(), *index, Some(committed.clone())))
                .collect(),
            Some(wanted) => wanted
                .into_iter()
                .flat_map(|(topic, indexes)| {
                    indexes.into_iter().map(move |index| {
                        let committed =
                            offsets.and_then(|o| o.get(&(topic.clone(), index)).cloned());
                        (topic.clone(), index, committed)
                    })
                })
                .collect(),
        })
    }

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

    /// OffsetDelete: drops committed offsets of partitions the group's
    /// members do not subscribe to.
    pub(crate) fn delete_offsets(
        &self,
        broker: &Broker,
        group_id: &str,
        partitions: Vec<(String, i32)>,
        subscribed: impl Fn(&Group) -> BTreeSet<String>,
    ) -> Result<Vec<Option<ResponseError>>, ResponseError> {
        let partition = self.partition_of(group_id);
        let mut inner = self.lock();
        Self::check(&inner, partition)?;
        let group = inner
            .groups
            .get_mut(group_id)
            .ok_or(ResponseError::GroupIdNotFound)?;
        let topics = subscribed(group);
        let mut results = Vec::with_capacity(partitions.len());
        let mut deleted = Vec::new();
        for (topic, index) in partitions {
            if topics.contains(&topic) {
                results.push(Some(ResponseError::GroupSubscribedToTopic));
            } else {
                results.push(None);
                deleted.push((topic, index));
            }
        }
        let entries: Vec<Entry> = deleted
            .iter()
            .map(|(topic, index)| storage::offset_entry(group_id, topic, *index, None))
            .collect();
        Self::persist(broker, partition, &entries)?;
        for key in deleted {
            group.offsets.remove(&key);
        }
        Ok(results)
    }

    /// Loads and unloads partitions as leadership of `__consumer_offsets`
    /// moves, advances every group's timers, and expires the offsets of
    /// groups that have been empty for the retention time.
    pub(crate) fn tick(&self, broker: &Broker) {
        let image = broker.image();
        let node = broker.config.node_id;
        let led: BTreeSet<i32> = image
            .topic(OFFSETS_TOPIC)
            .map(|t| {
                t.partitions
                    .iter()
                    .filter(|p| p.leader == node)
                    .map(|p| p.partition)
                    .filter(|p| broker.replicas.get(OFFSETS_TOPIC, *p).is_some())
                    .collect()
            })
            .unwrap_or_default();
        let (to_load, to_unload) = {
            let mut inner = self.lock();
            let loaded: BTreeSet<i32> = inner.partitions.keys().copied().collect();
            let to_load: Vec<i32> = led.difference(&loaded).copied().collect();
            for partition in &to_load {
                inner.partitions.insert(*partition, PartitionLoad::Loading);
            }
            (
                to_load,
                loaded.difference(&led).copied().collect::<Vec<i32>>(),
            )
        };
        for partition in to_unload {
            let mut inner = self.lock();
            inner.partitions.remove(&partition);
            let partitions = self.config.partitions;
            // Dropping the groups drops their waiters, whose requests then
            // answer NOT_COORDINATOR.
            inner
                .groups
                .retain(|id, _| partition_for(id, partitions) != partition);
            tracing::info!(
                partition,
                "no longer coordinating the groups of this partition"
            );
        }
        for partition in to_load {
            let groups = self.load(broker, partition);
            let count = groups.len();
            let mut inner = self.lock();
            inner.groups.extend(groups);
            inner.partitions.insert(partition, PartitionLoad::Loaded);
            tracing::debug!(
                partition,
                groups = count,
                "loaded the groups of this partition"
            );
        }

        let now = now_ms();
        let partitions = self.config.partitions;
        let mut inner = self.lock();
        let mut expired = Vec::new();
        for group in inner.groups.values_mut() {
            let partition = partition_for(&group.id, partitions);
            let deliveries = group.tick(&self.settings, now);
            Self::settle(broker, partition, group, deliveries);
            let retention = self.config.offsets_retention_ms;
            if group.state == GroupState::Empty && now - group.empty_since_ms > retention {
                let stale: Vec<(String, i32)> = group
                    .offsets
                    .iter()
                    .filter(|(_, o)| now - o.commit_timestamp_ms > retention)
                    .map(|(key, _)| key.clone())
                    .collect();
                let mut entries: Vec<Entry> = stale
                    .iter()
                    .map(|(topic, index)| storage::offset_entry(&group.id, topic, *index, None))
                    .collect();
                let emptied = stale.len() == group.offsets.len();
                if emptied {
                    entries.push(storage::group_entry(group, true));
                }
                if Self::persist(broker, partition, &entries).is_ok() {
                    for key in &stale {
                        group.offsets.remove(key);
                    }
                    if emptied {
                        expired.push(group.id.clone());
                    }
                }
            }
        }
        for id in expired {
            tracing::info!(group = id, "expired the offsets of an empty group");
            inner.groups.remove(&id);
        }
    }

    /// Replays a partition of `__consumer_offsets` into groups.
    fn load(&self, broker: &Broker, partition: i32) -> HashMap<String, Group> {
        let mut groups: HashMap<String, Group> = HashMap::new();
        let Some(replica) = broker.replicas.get(OFFSETS_TOPIC, partition) else {
            return groups;
        };
        let now = now_ms();
        let mut offset = replica.offsets().log_start_offset;
        loop {
            let slice = match replica.read(offset, LOAD_READ_BYTES, ReadLimit::HighWatermark, true)
            {
                Ok((Some(slice), _)) => slice,
                Ok((None, _)) => break,
                Err(e) => {
                    tracing::error!(partition, error = %e, "cannot read __consumer_offsets");
                    break;
                }
            };
            offset = slice.last_offset() + 1;
            let Ok(bytes) = slice.read() else {
                break;
            };
            for record in storage::decode_batches(bytes) {
                apply_loaded(&mut groups, record, now);
            }
        }
        groups
    }
}

fn apply_loaded(groups: &mut HashMap<String, Group>, record: Loaded, now: i64) {
    match record {
        Loaded::Offset {
            group,
            topic,
            partition,
            value,
        } => {
            let entry = groups
                .entry(group.clone())
                .or_insert_with(|| Group::new(&group, now));
            match value {
                Some(committed) => {
                    entry.offsets.insert((topic, partition), committed);
                }
                None => {
                    entry.offsets.remove(&(topic, partition));
                }
            }
        }
        Loaded::Group { group, value: None } => {
            groups.remove(&group);
        }
        Loaded::Group {
            group,
            value: Some(loaded),
        } => {
            let entry = groups
                .entry(group.clone())
                .or_insert_with(|| Group::new(&group, now));
            entry.members.clear();
            entry.protocol_type = loaded.protocol_type;
            entry.protocol_name = loaded.protocol_name;
            entry.generation = loaded.generation;
            entry.leader = loaded.leader;
            for member in loaded.members {
                entry.restore_member(member, now);
            }
            // Members get a session timeout to show up again.
            entry.state = if entry.members.is_empty() {
                GroupState::Empty
            } else {
                GroupState::Stable
            };
            entry.empty_since_ms = now;
        }
    }
}

/// Advances group timers and follows `__consumer_offsets` leadership.
pub(crate) async fn run(broker: std::sync::Arc<Broker>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        broker.groups.tick(&broker);
    }
}
