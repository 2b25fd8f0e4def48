//! What the coordinator does on its own: it follows leadership of the
//! `__consumer_offsets` partitions (loading a partition's groups by
//! replaying it, dropping them when leadership moves away), advances every
//! group's timers, and expires the offsets of groups that stayed empty for
//! the retention time.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use super::{
    GroupCoordinator, PartitionLoad,
    consumer::ConsumerGroup,
    consumer_heartbeat::ImageCatalog,
    state::{Group, GroupState},
    storage::{self, Entry, Loaded, OFFSETS_TOPIC, partition_for},
};
use crate::{
    broker::{Broker, now_ms},
    partition::{Fetched, ReadLimit},
};
use keel_log::ReadMode;

/// How often the coordinator looks at its groups when no timer is due.
const TICK: Duration = Duration::from_millis(100);
/// Bytes read from `__consumer_offsets` per step while loading.
const LOAD_READ_BYTES: usize = 1 << 20;

impl GroupCoordinator {
    /// Loads and unloads partitions as leadership of `__consumer_offsets`
    /// moves, advances every group's timers, and expires the offsets of
    /// groups that have been empty for the retention time. Returns the
    /// earliest time (milliseconds since the epoch) a group's timer is due.
    pub(crate) fn tick(&self, broker: &Broker) -> Option<i64> {
        let image = broker.image();
        if let Some(topic) = image.topic(OFFSETS_TOPIC) {
            let count = i32::try_from(topic.partitions.len()).unwrap_or(i32::MAX);
            self.partition_count.store(count, Ordering::Relaxed);
        }
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
            let known: BTreeSet<i32> = inner.partitions.keys().copied().collect();
            let to_load: Vec<i32> = led.difference(&known).copied().collect();
            for partition in &to_load {
                inner.partitions.insert(*partition, PartitionLoad::Loading);
            }
            // Whatever leadership was taken is led and loading or loaded by
            // now, or was given up again: the marks have served.
            self.taken_partitions().clear();
            (
                to_load,
                known.difference(&led).copied().collect::<Vec<i32>>(),
            )
        };
        for partition in to_unload {
            let mut inner = self.lock();
            inner.partitions.remove(&partition);
            let partitions = self.partitions();
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
        let partitions = self.partitions();
        let mut inner = self.lock();
        let mut expired = Vec::new();
        for group in inner.groups.values_mut() {
            let partition = partition_for(&group.id, partitions);
            let deliveries = group.tick(&self.settings, now);
            Self::settle(broker, partition, group, deliveries);
            let settings = &self.consumer_settings(&image, &group.id);
            if let Some(consumer) = group.consumer.as_mut() {
                if consumer.has_expired_members(settings, now) {
                    let before = consumer.snapshot();
                    let speaking_consumer = consumer.has_consumer_protocol_members();
                    consumer.tick(settings, now);
                    // Nobody waits on a group that was a consumer group.
                    let downgraded = group.downgrade_if_only_classic_left(
                        speaking_consumer,
                        self.config.migration_policy,
                        true,
                        &ImageCatalog(&image),
                        &self.settings,
                        now,
                    );
                    let downgrading = downgraded.is_some();
                    if group.is_empty() {
                        group.empty_since_ms = now;
                    }
                    // A failed write is logged; the members are gone from
                    // memory either way and a later change of theirs is
                    // never written.
                    let entries = storage::consumer_entries(group, &before, downgrading);
                    let _ = Self::persist(broker, partition, &entries);
                }
            }
            let retention = self.config.offsets_retention_ms;
            let empty = group.state == GroupState::Empty && group.is_empty();
            if empty && now - group.empty_since_ms > retention {
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
        // Member ids handed out to joins that never came back expire too.
        inner.groups.retain(|_, group| !group.is_vacant());
        inner
            .groups
            .values()
            .flat_map(|group| {
                let consumer = group.consumer.as_ref();
                let settings = self.consumer_settings(&image, &group.id);
                [
                    group.next_deadline_ms(),
                    consumer.and_then(|c| c.next_deadline_ms(&settings)),
                ]
            })
            .flatten()
            // A deadline already passed may wait on something else (a join
            // phase waits for its members after its initial delay); the
            // regular tick looks again.
            .filter(|due| *due > now)
            .min()
    }

    /// Replays a partition of `__consumer_offsets` into groups, to its log
    /// end: a replica that just became leader may not know its
    /// predecessor's last high watermark yet, and what its log holds past
    /// its own (the group changes and offsets the old coordinator had
    /// acknowledged among them) is committed by this leadership as soon as
    /// its followers fetch. Reading only to the high watermark loaded a
    /// group from before its last change: a group that had emptied came
    /// back with its departed member, whose session then had to expire.
    fn load(&self, broker: &Broker, partition: i32) -> HashMap<String, Group> {
        let mut groups: HashMap<String, Group> = HashMap::new();
        let Some(replica) = broker.replicas.get(OFFSETS_TOPIC, partition) else {
            return groups;
        };
        let now = now_ms();
        let mut offset = replica.offsets().log_start_offset;
        loop {
            let read = replica.read(
                offset,
                -1,
                LOAD_READ_BYTES,
                ReadLimit::LogEnd,
                true,
                ReadMode::MayWait,
            );
            let slice = match read {
                Ok((Fetched::Records(Some(slice)), _)) => slice,
                Ok(_) => break,
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
        Loaded::ConsumerMember {
            group,
            member_id,
            value,
        } => {
            let entry = groups
                .entry(group.clone())
                .or_insert_with(|| Group::new(&group, 0));
            let consumer = entry.consumer.get_or_insert_with(ConsumerGroup::default);
            match value {
                Some(member) => consumer.restore_member(member, now),
                None => consumer.forget_member(&member_id),
            }
        }
        Loaded::Offset {
            group,
            topic,
            partition,
            value,
        } => {
            // A group known only by its offsets has never had members: its
            // offsets expire by their commit times alone.
            let entry = groups
                .entry(group.clone())
                .or_insert_with(|| Group::new(&group, 0));
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
                .or_insert_with(|| Group::new(&group, loaded.empty_since_ms));
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
            entry.empty_since_ms = loaded.empty_since_ms;
            match loaded.consumer {
                Some(snapshot) => entry
                    .consumer
                    .get_or_insert_with(ConsumerGroup::default)
                    .restore_epochs(&snapshot),
                // A classic group record is the whole group: member
                // records before it belong to a consumer group it
                // replaced.
                None => entry.consumer = None,
            }
        }
    }
}

/// Advances group timers and follows `__consumer_offsets` leadership. A
/// tick reads and writes logs (replaying a partition may read a lot), so
/// it runs on a blocking thread, not on the runtime serving requests.
///
/// It ticks every [`TICK`], at once when this broker takes leadership of a
/// partition to load, and also at the very millisecond a group's
/// timer is due: a session ends at its deadline, not up to a tick later (a
/// client that waits out a member's session and then deletes the group
/// finds it empty, as with Kafka). Every deadline is at least the minimum
/// session timeout away when it is set, so the next regular tick always
/// learns of it in time.
pub(crate) async fn run(broker: Arc<Broker>) {
    loop {
        let ticking = Arc::clone(&broker);
        let due = match tokio::task::spawn_blocking(move || ticking.groups.tick(&ticking)).await {
            Ok(due) => due,
            // The runtime is shutting down.
            Err(e) if e.is_cancelled() => return,
            Err(e) => {
                tracing::error!(error = %e, "the group coordinator's tick failed");
                None
            }
        };
        let until_due = due.map(|due_ms| {
            Duration::from_millis(u64::try_from(due_ms - now_ms()).unwrap_or_default())
        });
        tokio::select! {
            () = tokio::time::sleep(until_due.map_or(TICK, |wait| wait.min(TICK))) => {}
            () = broker.groups.wake.notified() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::group::state::CommittedOffset;

    fn replay(entries: &[Entry], now: i64) -> HashMap<String, Group> {
        let mut groups = HashMap::new();
        let batch = storage::encode_batch(entries, now);
        for record in storage::decode_batches(Bytes::from(batch)) {
            apply_loaded(&mut groups, record, now);
        }
        groups
    }

    #[test]
    fn a_loaded_group_keeps_the_time_it_became_empty() {
        let committed = CommittedOffset {
            offset: 5,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp_ms: 900,
        };
        let emptied = Group::new("emptied", 1_000);
        let entries = [
            storage::offset_entry("emptied", "t", 0, Some(&committed)),
            storage::group_entry(&emptied, false),
            storage::offset_entry("simple", "t", 0, Some(&committed)),
        ];
        let groups = replay(&entries, 50_000);

        let emptied = &groups["emptied"];
        assert_eq!(emptied.state, GroupState::Empty);
        assert_eq!(emptied.empty_since_ms, 1_000, "not the load time");
        assert_eq!(emptied.offsets.len(), 1);
        // Offsets committed without ever joining expire by commit time.
        assert_eq!(groups["simple"].empty_since_ms, 0);
    }

    #[test]
    fn a_consumer_protocol_group_comes_back_with_its_members_and_assignments() {
        use uuid::Uuid;

        use crate::group::consumer::{ConsumerHeartbeat, ConsumerSnapshot, TopicShape};

        let topic = |name: &str| {
            (name == "t").then_some(TopicShape {
                id: Uuid::from_u128(9),
                partitions: 3,
            })
        };
        let mut consumer = ConsumerGroup::default();
        for member in ["a", "b"] {
            let join = ConsumerHeartbeat {
                member_id: member.into(),
                member_epoch: 0,
                rebalance_timeout_ms: 5_000,
                subscribed_topics: Some(vec!["t".into()]),
                ..ConsumerHeartbeat::default()
            };
            consumer.heartbeat(join, &topic, 10).unwrap();
        }
        let before = consumer.snapshot();
        assert!(before.members.iter().any(|m| !m.assigned.is_empty()));
        let mut group = Group::new("kip", 0);
        group.consumer = Some(consumer);

        // Each member is a record of its own beside the group record.
        let entries = storage::consumer_entries(&group, &ConsumerSnapshot::default(), false);
        assert_eq!(entries.len(), 3);
        let mut groups = replay(&entries, 50_000);
        assert!(groups["kip"].is_consumer_group());
        let restored = groups.get_mut("kip").unwrap().consumer.as_mut().unwrap();
        assert_eq!(restored.snapshot(), before);

        // The members go on in their epoch: loading moved nothing.
        let member = &before.members[0];
        let heartbeat = ConsumerHeartbeat {
            member_id: member.id.clone(),
            member_epoch: member.member_epoch,
            ..ConsumerHeartbeat::default()
        };
        let outcome = restored.heartbeat(heartbeat, &topic, 50_001).unwrap();
        assert_eq!(outcome.member_epoch, member.member_epoch);
        assert_eq!(restored.epoch, before.epoch);

        // A member that leaves is deleted by a tombstone of its own.
        let consumer = group.consumer.as_mut().unwrap();
        let leave = ConsumerHeartbeat {
            member_id: "b".into(),
            member_epoch: -1,
            ..ConsumerHeartbeat::default()
        };
        consumer.heartbeat(leave, &topic, 60).unwrap();
        let later = storage::consumer_entries(&group, &before, false);
        let all: Vec<Entry> = entries.iter().chain(&later).cloned().collect();
        let groups = replay(&all, 70_000);
        let members: Vec<&String> = groups["kip"]
            .consumer
            .as_ref()
            .unwrap()
            .members
            .keys()
            .collect();
        assert_eq!(members, ["a"]);
    }

    #[test]
    fn a_group_moved_between_the_protocols_loads_as_it_was_left() {
        use crate::group::{
            consumer::{ConsumerHeartbeat, ConsumerSnapshot},
            state::migration::tests::{
                Catalog, SETTINGS, consumer_join, held, stable_classic_group,
            },
        };

        let mut group = stable_classic_group();
        let mut consumer = group.to_consumer_group(&Catalog, 5).unwrap();
        consumer.heartbeat(consumer_join("c"), &Catalog, 5).unwrap();
        group.upgrade(consumer).deliver();
        let upgraded = group.consumer.as_ref().unwrap().snapshot();
        assert_eq!(
            upgraded
                .members
                .iter()
                .filter(|m| m.classic.is_some())
                .count(),
            2
        );
        let entries = storage::consumer_entries(&group, &ConsumerSnapshot::default(), true);
        let groups = replay(&entries, 50_000);
        let loaded = &groups["g"];
        assert!(
            loaded.members.is_empty(),
            "no classic members are left behind"
        );
        assert_eq!(loaded.consumer.as_ref().unwrap().snapshot(), upgraded);

        // c leaves and the group goes back to the classic protocol.
        let consumer = group.consumer.as_mut().unwrap();
        let leave = ConsumerHeartbeat {
            member_id: "c".into(),
            member_epoch: -1,
            ..ConsumerHeartbeat::default()
        };
        consumer.heartbeat(leave, &Catalog, 6).unwrap();
        group.downgrade(true, &Catalog, &SETTINGS, 6).deliver();
        // Say the tombstone of one member was never written (a failed
        // write): the classic group record still replaces the consumer
        // group whole.
        let mut missing_one = upgraded.clone();
        missing_one.members.retain(|m| m.id != "a");
        let later = storage::consumer_entries(&group, &missing_one, true);
        let all: Vec<Entry> = entries.iter().chain(&later).cloned().collect();
        let groups = replay(&all, 70_000);
        let loaded = &groups["g"];
        assert!(!loaded.is_consumer_group());
        assert!(loaded.consumer.is_none(), "as it was left");
        assert_eq!(loaded.generation, group.generation);
        assert_eq!(loaded.state, GroupState::Stable);
        let assignments: Vec<(String, Vec<i32>)> = loaded
            .members
            .values()
            .map(|m| (m.id.clone(), held(&m.assignment)))
            .collect();
        let expected: Vec<(String, Vec<i32>)> = group
            .members
            .values()
            .map(|m| (m.id.clone(), held(&m.assignment)))
            .collect();
        assert_eq!(assignments, expected);
        assert_eq!(assignments.len(), 2);
    }
}
