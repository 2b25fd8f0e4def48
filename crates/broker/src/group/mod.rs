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

mod admin;
mod background;
mod classic_members;
pub(crate) mod consumer;
mod consumer_heartbeat;
pub(crate) mod embedded;
mod offsets;
pub(crate) mod state;
pub(crate) mod storage;

use std::{
    collections::{BTreeSet, HashMap},
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicI32, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use tokio::sync::{Notify, oneshot};

pub(crate) use self::{
    background::run,
    state::{MemberClaim, ProtocolClaim},
};
pub use self::{
    consumer::{ConsumerLimits, ConsumerSettings},
    state::MigrationPolicy,
};
use self::{
    consumer_heartbeat::ImageCatalog,
    state::{Deliveries, Group, GroupSettings, JoinOutcome, JoinRequest, SyncOutcome},
    storage::{Entry, OFFSETS_TOPIC, partition_for},
};
use crate::{
    broker::{Broker, now_ms},
    error::PartitionError,
    partition::Transition,
    replicas::RoleChange,
};

/// How long a write to `__consumer_offsets` may wait for the ISR to hold
/// it before the change fails.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(5);
/// Extra time a JoinGroup or SyncGroup waits beyond the rebalance timeout
/// before giving up on an answer.
const WAIT_MARGIN: Duration = Duration::from_secs(5);

/// Settings of the coordinator, from the broker configuration.
#[derive(Debug, Clone, Copy)]
pub struct CoordinatorConfig {
    pub partitions: i32,
    pub offsets_retention_ms: i64,
    pub initial_rebalance_delay_ms: i64,
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    pub consumer: ConsumerSettings,
    pub consumer_limits: ConsumerLimits,
    /// Which ways a group with members may move between the classic and
    /// the consumer protocol (`group.consumer.migration.policy`).
    pub migration_policy: MigrationPolicy,
}

/// Where a SyncGroup stands once the group has seen it.
enum SyncStep {
    /// Answered at once (an error, or a classic member of a consumer
    /// group, whose assignment the coordinator made).
    Answered(SyncOutcome),
    /// The answer comes on the waiter, within this time.
    Waiting(Duration),
}

/// Where a led partition of `__consumer_offsets` stands. Until it is
/// loaded, requests for its groups answer COORDINATOR_LOAD_IN_PROGRESS
/// (retriable), not NOT_COORDINATOR: the client is at the right broker.
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

#[derive(Debug)]
pub struct GroupCoordinator {
    config: CoordinatorConfig,
    /// Partitions of `__consumer_offsets`: the topic's own count once it
    /// exists (it may predate a change of the flag), the configured one
    /// until then.
    partition_count: AtomicI32,
    settings: GroupSettings,
    inner: Mutex<Inner>,
    /// Partitions whose leadership this broker took since the coordinator's
    /// last tick: their groups are loading from that moment (see
    /// [`Self::check`]) until the tick loads them. Kept apart from `inner`,
    /// whose lock may be held across a write, so that applying metadata
    /// never waits for it.
    taken: Mutex<BTreeSet<i32>>,
    /// Wakes the coordinator's tick (see `background::run`) before its
    /// time, when there is a partition to load.
    wake: Notify,
}

impl GroupCoordinator {
    pub fn new(config: CoordinatorConfig) -> Self {
        Self {
            settings: GroupSettings {
                initial_rebalance_delay_ms: config.initial_rebalance_delay_ms,
                min_session_timeout_ms: config.min_session_timeout_ms,
                max_session_timeout_ms: config.max_session_timeout_ms,
            },
            partition_count: AtomicI32::new(config.partitions),
            config,
            inner: Mutex::new(Inner::default()),
            taken: Mutex::new(BTreeSet::new()),
            wake: Notify::new(),
        }
    }

    /// Partitions of `__consumer_offsets` this broker just took leadership
    /// of are loading from now on, and the coordinator starts loading them
    /// at once.
    pub(crate) fn note_role_changes(&self, changes: &[RoleChange]) {
        let partitions: Vec<i32> = changes
            .iter()
            .filter(|c| {
                c.transition == Transition::BecameLeader && c.partition.topic() == OFFSETS_TOPIC
            })
            .map(|c| c.partition.index())
            .collect();
        if !partitions.is_empty() {
            self.taken_partitions().extend(partitions);
            self.wake.notify_one();
        }
    }

    fn taken_partitions(&self) -> std::sync::MutexGuard<'_, BTreeSet<i32>> {
        self.taken.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn partitions(&self) -> i32 {
        self.partition_count.load(Ordering::Relaxed)
    }

    pub(crate) fn partition_of(&self, group: &str) -> i32 {
        partition_for(group, self.partitions())
    }

    /// Runs `work` with every group, off the async workers (see
    /// `blocking`): the lock is held while a change's records are appended
    /// to `__consumer_offsets`, so waiting for it may mean waiting on a
    /// disk.
    fn with_lock<T>(&self, work: impl FnOnce(&mut Inner) -> T) -> T {
        crate::blocking::run(|| work(&mut self.lock()))
    }

    /// Locks every group; callers are on a blocking thread already (the
    /// coordinator's tick) or go through [`Self::with_lock`].
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether this broker coordinates `group` right now.
    fn check(&self, inner: &Inner, partition: i32) -> Result<(), ResponseError> {
        match inner.partitions.get(&partition) {
            Some(PartitionLoad::Loaded) => Ok(()),
            Some(PartitionLoad::Loading) => Err(ResponseError::CoordinatorLoadInProgress),
            None if self.taken_partitions().contains(&partition) => {
                Err(ResponseError::CoordinatorLoadInProgress)
            }
            None => Err(ResponseError::NotCoordinator),
        }
    }

    /// Appends changes to the group's partition and waits until they are
    /// committed (the high watermark covers them: about one round trip to
    /// the followers). Called with the lock held, so changes land and
    /// commit in the order they happened.
    fn persist(broker: &Broker, partition: i32, entries: &[Entry]) -> Result<(), ResponseError> {
        if entries.is_empty() {
            return Ok(());
        }
        let replica = broker
            .replicas
            .get(OFFSETS_TOPIC, partition)
            .ok_or(ResponseError::NotCoordinator)?;
        // As for produce: a leadership just taken first waits for earlier
        // leaders to stop (see `replication::succession`).
        replica.wait_for_succession(COMMIT_TIMEOUT, now_ms);
        let now = now_ms();
        let leader_epoch = replica.leader_epoch();
        // As for produce: nothing is written without the lease; once the
        // high watermark covers the write, every in-sync replica holds it.
        let written = broker
            .check_lease()
            .and_then(|()| {
                replica.append_as_leader(
                    &storage::encode_batch(entries, now),
                    Some(leader_epoch),
                    now,
                )
            })
            .and_then(|outcome| {
                // Committed, not merely appended: a change the ISR does not
                // hold yet could be lost with this broker.
                replica.wait_for_high_watermark(
                    leader_epoch,
                    outcome.last_offset + 1,
                    COMMIT_TIMEOUT,
                )
            });
        written.map_err(|e| {
            tracing::warn!(partition, error = %e, "cannot write to __consumer_offsets");
            match e {
                PartitionError::NotLeader
                | PartitionError::LeaseLapsed
                | PartitionError::AwaitingSuccession(_) => ResponseError::NotCoordinator,
                _ => ResponseError::CoordinatorNotAvailable,
            }
        })
    }

    fn drop_if_vacant(inner: &mut Inner, group_id: &str) {
        if inner.groups.get(group_id).is_some_and(Group::is_vacant) {
            inner.groups.remove(group_id);
        }
    }

    /// Persists what a state change requires, then answers the waiters.
    fn settle(broker: &Broker, partition: i32, group: &Group, deliveries: Deliveries) {
        if deliveries.persist_group {
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
        let refused = self.with_lock(|inner| {
            if let Err(error) = self.check(inner, partition) {
                return Some(JoinOutcome::error(error, &member_id));
            }
            let now = now_ms();
            let group = inner
                .groups
                .entry(group_id.to_string())
                .or_insert_with(|| Group::new(group_id, now));
            if group.is_consumer_group() {
                return Some(
                    self.classic_join_to_consumer_group(broker, partition, group, &request, now),
                );
            }
            let deliveries = group.join(request, waiter, &self.settings, now);
            Self::settle(broker, partition, group, deliveries);
            Self::drop_if_vacant(inner, group_id);
            None
        });
        if let Some(outcome) = refused {
            return outcome;
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
        protocol: ProtocolClaim<'_>,
        assignments: Vec<(String, Bytes)>,
    ) -> SyncOutcome {
        let partition = self.partition_of(group_id);
        let (waiter, answer) = oneshot::channel();
        let step = self.with_lock(|inner| {
            if let Err(error) = self.check(inner, partition) {
                return SyncStep::Answered(SyncOutcome::error(error));
            }
            let Some(group) = inner.groups.get_mut(group_id) else {
                return SyncStep::Answered(SyncOutcome::error(ResponseError::UnknownMemberId));
            };
            if group.is_consumer_group() {
                if let Some(consumer) = group.consumer.as_mut() {
                    let image = broker.image();
                    let catalog = ImageCatalog(&image);
                    let outcome = consumer.classic_sync(claim, protocol, &catalog, now_ms());
                    return SyncStep::Answered(outcome);
                }
            }
            let wait = group
                .members
                .get(claim.member_id)
                .map_or(Duration::ZERO, |m| {
                    Duration::from_millis(m.rebalance_timeout_ms.max(0) as u64)
                })
                + WAIT_MARGIN;
            let deliveries = group.sync(claim, protocol, assignments, waiter, now_ms());
            Self::settle(broker, partition, group, deliveries);
            SyncStep::Waiting(wait)
        });
        let wait = match step {
            SyncStep::Waiting(wait) => wait,
            SyncStep::Answered(outcome) => return outcome,
        };
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
        self.with_lock(|inner| {
            let partition = self.partition_of(group_id);
            if let Err(error) = self.check(inner, partition) {
                return Some(error);
            }
            match inner.groups.get_mut(group_id) {
                Some(group) if group.is_consumer_group() => group
                    .consumer
                    .as_mut()
                    .and_then(|consumer| consumer.classic_heartbeat(claim, now_ms())),
                Some(group) => group.heartbeat(claim, now_ms()),
                None => Some(ResponseError::UnknownMemberId),
            }
        })
    }

    /// LeaveGroup: per-member results, or an error for the whole group.
    pub(crate) fn leave(
        &self,
        broker: &Broker,
        group_id: &str,
        members: &[(String, Option<String>)],
    ) -> Result<Vec<Option<ResponseError>>, ResponseError> {
        self.with_lock(|inner| {
            let partition = self.partition_of(group_id);
            self.check(inner, partition)?;
            let Some(group) = inner.groups.get_mut(group_id) else {
                return Ok(vec![Some(ResponseError::UnknownMemberId); members.len()]);
            };
            if group.is_consumer_group() {
                return self.classic_leave_consumer_group(broker, partition, group, members);
            }
            let (results, deliveries) = group.leave(members, &self.settings, now_ms());
            Self::settle(broker, partition, group, deliveries);
            Ok(results)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::consumer::{ConsumerLimits, ConsumerSettings};

    fn coordinator() -> GroupCoordinator {
        GroupCoordinator::new(CoordinatorConfig {
            partitions: 4,
            offsets_retention_ms: 1,
            initial_rebalance_delay_ms: 0,
            min_session_timeout_ms: 1,
            max_session_timeout_ms: 1,
            consumer: ConsumerSettings {
                session_timeout_ms: 2,
                heartbeat_interval_ms: 1,
            },
            consumer_limits: ConsumerLimits {
                session_timeout_ms: (1, 2),
                heartbeat_interval_ms: (1, 2),
            },
            migration_policy: MigrationPolicy::Bidirectional,
        })
    }

    #[test]
    fn a_partition_led_but_not_yet_loaded_answers_load_in_progress() {
        let coordinator = coordinator();
        coordinator.taken_partitions().insert(2);
        let mut inner = Inner::default();
        assert_eq!(
            coordinator.check(&inner, 2),
            Err(ResponseError::CoordinatorLoadInProgress)
        );
        assert_eq!(
            coordinator.check(&inner, 3),
            Err(ResponseError::NotCoordinator)
        );
        // Loaded, it is served.
        inner.partitions.insert(2, PartitionLoad::Loaded);
        assert_eq!(coordinator.check(&inner, 2), Ok(()));
    }
}
