//! What the active controller commits when brokers fail: one batch that
//! fences every broker whose session lapsed, elects a new leader for every
//! partition whose leader is gone or stalled, and takes fenced brokers out
//! of the ISRs they were in. The same pass gives a leader to partitions that lost
//! theirs some other way (a broker fenced itself as it stopped, a restart
//! took its leaderships away, a candidate came back to an offline
//! partition).
//!
//! Every record is applied to a copy of the image as the batch is built,
//! so each is computed from the state the ones before it leave, and the
//! batch applies whole on the image it was planned from.
//!
//! An unclean election (a replica from outside the ISR and ELR, where the
//! topic allows it) waits until every live candidate has reported its log
//! end offset, so the most caught-up one leads and the history can say how
//! many offsets may be lost.
//!
//! Invariants:
//! - a broker that is fenced, unregistered or without a live session never
//!   becomes leader and never stays in an ISR beside others;
//! - an ISR is never emptied: its last member stays (as Kafka keeps it), so
//!   a partition whose replicas all failed is led again by the first of
//!   them to come back, and by no replica that may miss committed records.

use keel_raft_metadata::{
    MetadataImage, MetadataRecord, PartitionInfo, Record, TopicInfo,
    records::{FenceBroker, LeaderChangeReason, RecordBatch, SetPartitionLeader, UpdateIsr},
};

use crate::policy::{self, Election, Source};

mod reassignments;

pub use reassignments::reassignments;

/// What the controller knows beside the image.
#[allow(missing_debug_implementations)]
pub struct Judge<'a> {
    /// This controller's id, recorded in the history.
    pub controller: i32,
    pub now_ms: i64,
    /// Whether a broker holds a session that has not lapsed.
    pub session_alive: &'a dyn Fn(i32) -> bool,
    /// The topic's `unclean.leader.election.enable`.
    pub unclean_allowed: &'a dyn Fn(&TopicInfo) -> bool,
    /// The topic's `min.insync.replicas`.
    pub min_insync_replicas: &'a dyn Fn(&TopicInfo) -> i32,
    /// What a broker last reported of its replica of a partition (topic,
    /// partition, broker): the election prefers the candidate whose log
    /// reaches furthest, and the history records the old leader's log and
    /// the new leader's log end offset.
    pub replica_progress: &'a dyn Fn(&str, i32, i32) -> Option<ReplicaProgress>,
    /// How long a broker may still hold a lease this controller renewed:
    /// a failed leader's successor takes no write before it ran out.
    pub lease_left_ms: &'a dyn Fn(i32) -> i64,
}

/// A replica's log as its broker last reported it in a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaProgress {
    /// The leader epoch the replica knew: a leader's report about an
    /// earlier leadership says nothing of the current one.
    pub leader_epoch: i32,
    pub log_end_offset: i64,
    pub high_watermark: i64,
}

impl Judge<'_> {
    /// What `broker` last reported of its log end offset for `partition`.
    fn log_end_offset(
        &self,
        topic: &TopicInfo,
        partition: &PartitionInfo,
        broker: i32,
    ) -> Option<i64> {
        (self.replica_progress)(&topic.name, partition.partition, broker).map(|p| p.log_end_offset)
    }
}

/// A partition whose leader reported produce requests waiting without
/// progress for longer than the stall timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stall {
    pub topic: String,
    pub partition: i32,
    /// Who reported it, leading in which epoch: a report about an earlier
    /// leadership moves nothing.
    pub leader: i32,
    pub leader_epoch: i32,
}

/// The batch to commit now, or `None` when nothing needs to change.
/// `lapsed` lists the brokers whose sessions lapsed, at the incarnation the
/// session was for: a newer registration of the same broker is not fenced.
/// `stalled` partitions move to another in-sync replica if there is one
/// (reason `partition_stall`); their leader stays otherwise.
pub fn plan(
    image: &MetadataImage,
    lapsed: &[(i32, u64)],
    stalled: &[Stall],
    judge: &Judge,
) -> Option<MetadataRecord> {
    let fences: Vec<FenceBroker> = lapsed
        .iter()
        .filter(|(id, incarnation)| {
            image
                .broker(*id)
                .is_some_and(|b| b.incarnation == *incarnation && !b.fenced)
        })
        .map(|&(node_id, incarnation)| FenceBroker {
            node_id,
            incarnation,
        })
        .collect();
    let idle = fences.is_empty()
        && image.topics().all(|topic| {
            topic
                .partitions
                .iter()
                .all(|p| change_for(image, topic, p, stalled, judge).is_none())
        });
    if idle {
        return None;
    }
    let mut batch = Batch {
        scratch: image.clone(),
        records: Vec::new(),
    };
    for fence in fences {
        batch.push(Record::FenceBroker(fence));
    }
    let partitions: Vec<(String, i32)> = image
        .topics()
        .flat_map(|t| t.partitions.iter().map(|p| (t.name.clone(), p.partition)))
        .collect();
    for (topic, partition) in partitions {
        let change = {
            let scratch = &batch.scratch;
            let Some(topic) = scratch.topic(&topic) else {
                continue;
            };
            let Some(partition) = topic.partition(partition) else {
                continue;
            };
            change_for(scratch, topic, partition, stalled, judge)
        };
        if let Some(record) = change {
            batch.push(record);
        }
    }
    (!batch.records.is_empty()).then(|| {
        Record::Batch(RecordBatch {
            records: batch.records,
        })
        .into()
    })
}

/// The batch that moves every leadership of `broker` to another live
/// member of the partition's ISR (reason `controlled_shutdown`), or `None`
/// if none can move. A partition without another live in-sync replica
/// stays with `broker`: a controlled move never goes outside the ISR.
pub fn move_leaderships_off(
    image: &MetadataImage,
    broker: i32,
    judge: &Judge,
) -> Option<MetadataRecord> {
    let live = |id| id != broker && is_live(image, judge, id);
    let records: Vec<MetadataRecord> = image
        .topics()
        .flat_map(|topic| topic.partitions.iter().map(move |p| (topic, p)))
        .filter(|(_, p)| p.leader == broker)
        .filter_map(|(topic, partition)| {
            let Election::Leader {
                leader,
                isr,
                eligible,
                source: Source::Isr,
            } = policy::elect(
                partition,
                broker,
                live,
                |id| judge.log_end_offset(topic, partition, id),
                false,
            )
            else {
                return None;
            };
            // The leaving broker stays in the ISR: it is in sync until it
            // stops, and the controller takes it out once it is fenced.
            let mut isr = isr;
            isr.push(broker);
            let change = Change {
                leader,
                isr,
                eligible,
                reason: LeaderChangeReason::ControlledShutdown,
                predecessor_lease_ms: 0,
            };
            Some(change.record(topic, partition, judge).into())
        })
        .collect();
    (!records.is_empty()).then(|| Record::Batch(RecordBatch { records }).into())
}

/// Kafka's automatic leader rebalance: for each broker whose share of the
/// partitions it is the preferred replica of, but does not lead, is above
/// `threshold_percent`, every such partition whose preferred replica is
/// live and in sync moves back to it (reason `preferred_rebalance`), at the
/// next leader epoch with the ISR as it is. `None` when nothing moves.
pub fn rebalance(
    image: &MetadataImage,
    threshold_percent: u32,
    judge: &Judge,
) -> Option<MetadataRecord> {
    let preferred = |p: &PartitionInfo| p.replicas.first().copied();
    let mut preferred_count = std::collections::BTreeMap::<i32, (u32, u32)>::new();
    for partition in image.topics().flat_map(|t| &t.partitions) {
        if let Some(broker) = preferred(partition) {
            let counts = preferred_count.entry(broker).or_default();
            counts.0 += 1;
            counts.1 += u32::from(partition.leader != broker);
        }
    }
    let imbalanced = |broker: i32| {
        preferred_count
            .get(&broker)
            .is_some_and(|&(all, led_elsewhere)| {
                u64::from(led_elsewhere) * 100 > u64::from(threshold_percent) * u64::from(all)
            })
    };
    let records: Vec<MetadataRecord> = image
        .topics()
        .flat_map(|topic| topic.partitions.iter().map(move |p| (topic, p)))
        .filter_map(|(topic, partition)| {
            let to = preferred(partition)?;
            let movable = partition.leader != to
                && imbalanced(to)
                && partition.isr.contains(&to)
                && is_live(image, judge, to);
            movable.then(|| {
                let change = Change {
                    leader: to,
                    isr: partition.isr.clone(),
                    eligible: partition.isr.clone(),
                    reason: LeaderChangeReason::PreferredRebalance,
                    predecessor_lease_ms: 0,
                };
                change.record(topic, partition, judge).into()
            })
        })
        .collect();
    (!records.is_empty()).then(|| Record::Batch(RecordBatch { records }).into())
}

struct Batch {
    scratch: MetadataImage,
    records: Vec<MetadataRecord>,
}

impl Batch {
    /// Keeps `record` if it applies; one that does not (it cannot, given
    /// how they are computed) is left out rather than sink the batch.
    fn push(&mut self, record: Record) {
        let record = MetadataRecord::from(record);
        if self.scratch.apply(&record, 0).is_ok() {
            self.records.push(record);
        }
    }
}

/// A broker that may lead or stay in an ISR.
fn is_live(image: &MetadataImage, judge: &Judge, id: i32) -> bool {
    image.is_unfenced(id) && (judge.session_alive)(id)
}

/// Registered and not fenced, session or not.
fn registered(image: &MetadataImage, id: i32) -> bool {
    image.is_unfenced(id)
}

/// The change one partition needs, if any.
fn change_for(
    image: &MetadataImage,
    topic: &TopicInfo,
    partition: &PartitionInfo,
    stalled: &[Stall],
    judge: &Judge,
) -> Option<Record> {
    if is_live(image, judge, partition.leader) {
        let stalls = |s: &Stall| {
            s.topic == topic.name
                && s.partition == partition.partition
                && s.leader == partition.leader
                && s.leader_epoch == partition.leader_epoch
        };
        if stalled.iter().any(stalls) {
            return move_off_stalled_leader(image, topic, partition, judge);
        }
        return drop_fenced_members(image, topic, partition, judge);
    }
    let live = |id| is_live(image, judge, id);
    let election = policy::elect(
        partition,
        partition.leader,
        live,
        |id| judge.log_end_offset(topic, partition, id),
        (judge.unclean_allowed)(topic),
    );
    let (leader, isr, eligible, reason) = match election {
        Election::Leader {
            leader,
            isr,
            eligible,
            source: Source::Unclean,
        } => {
            // Only replicas whose logs are known compete: the most caught-up
            // leads, and the history can say what may be lost. A replica
            // reports with its first heartbeat.
            if eligible
                .iter()
                .any(|&id| judge.log_end_offset(topic, partition, id).is_none())
            {
                return None;
            }
            (leader, isr, eligible, LeaderChangeReason::Unclean)
        }
        Election::Leader {
            leader,
            isr,
            eligible,
            ..
        } => (leader, isr, eligible, LeaderChangeReason::BrokerFailure),
        // Already offline: nothing to add until a candidate is back.
        Election::Offline if partition.leader < 0 => return None,
        Election::Offline => (
            -1,
            keep_last_member(partition, |id| registered(image, id)),
            Vec::new(),
            LeaderChangeReason::BrokerFailure,
        ),
    };
    // The old leader is not live: fenced, or its session lapsed, or its
    // process was seen gone before its lease ran out.
    let predecessor_lease_ms = if partition.leader >= 0 {
        (judge.lease_left_ms)(partition.leader)
    } else {
        0
    };
    let change = Change {
        leader,
        isr,
        eligible,
        reason,
        predecessor_lease_ms,
    };
    Some(change.record(topic, partition, judge))
}

/// A stalled leader's partition to another live in-sync (or eligible)
/// replica; never outside them, and nowhere if there is nobody: a slow
/// leader beats none.
fn move_off_stalled_leader(
    image: &MetadataImage,
    topic: &TopicInfo,
    partition: &PartitionInfo,
    judge: &Judge,
) -> Option<Record> {
    let live = |id| is_live(image, judge, id);
    let log_end_offset = |id| judge.log_end_offset(topic, partition, id);
    match policy::elect(partition, partition.leader, live, log_end_offset, false) {
        Election::Leader {
            leader,
            isr,
            eligible,
            ..
        } => {
            let change = Change {
                leader,
                isr,
                eligible,
                reason: LeaderChangeReason::PartitionStall,
                predecessor_lease_ms: 0,
            };
            Some(change.record(topic, partition, judge))
        }
        Election::Offline => None,
    }
}

/// A leader change decided for one partition.
struct Change {
    leader: i32,
    isr: Vec<i32>,
    eligible: Vec<i32>,
    reason: LeaderChangeReason,
    /// How long the old leader may still hold a lease; 0 when it is live
    /// and moved away (the new leader waits for it to follow instead).
    predecessor_lease_ms: i64,
}

impl Change {
    /// The change at the partition's next leader epoch, with what the
    /// outgoing leader last reported of its log in its epoch (the high
    /// watermark, failing that, the highest any replica reported: for a
    /// partition that was offline, what its last leader had committed), and
    /// the new leader's log end.
    fn record(self, topic: &TopicInfo, partition: &PartitionInfo, judge: &Judge) -> Record {
        let reported = |id| (judge.replica_progress)(&topic.name, partition.partition, id);
        let progress =
            reported(partition.leader).filter(|p| p.leader_epoch == partition.leader_epoch);
        let high_watermark = progress.map(|p| p.high_watermark).or_else(|| {
            partition
                .replicas
                .iter()
                .filter_map(|&id| reported(id))
                .map(|p| p.high_watermark)
                .max()
        });
        let new_leader_log_end_offset = judge.log_end_offset(topic, partition, self.leader);
        Record::SetPartitionLeader(SetPartitionLeader {
            topic: topic.name.clone(),
            partition: partition.partition,
            leader: self.leader,
            leader_epoch: partition.leader_epoch + 1,
            isr: self.isr,
            reason: self.reason as i32,
            controller: judge.controller,
            eligible: self.eligible,
            log_end_offset: progress.map_or(-1, |p| p.log_end_offset),
            high_watermark: high_watermark.unwrap_or(-1),
            timestamp_ms: judge.now_ms,
            min_insync_replicas: (judge.min_insync_replicas)(topic),
            new_leader_log_end_offset,
            predecessor_lease_ms: self.predecessor_lease_ms,
            partition_epoch: Some(partition.partition_epoch),
        })
    }
}

/// A live leader's ISR without its fenced or unregistered members (they
/// answer for no data), as the leader would shrink it after its lag time,
/// only at once.
fn drop_fenced_members(
    image: &MetadataImage,
    topic: &TopicInfo,
    partition: &PartitionInfo,
    judge: &Judge,
) -> Option<Record> {
    if partition.isr.iter().all(|&id| registered(image, id)) {
        return None;
    }
    let isr = keep_last_member(partition, |id| registered(image, id));
    let isr_incarnations = isr
        .iter()
        .map(|&id| image.broker(id).map_or(0, |b| b.incarnation))
        .collect();
    Some(Record::UpdateIsr(UpdateIsr {
        topic: topic.name.clone(),
        partition: partition.partition,
        leader_epoch: partition.leader_epoch,
        isr,
        partition_epoch: partition.partition_epoch,
        isr_incarnations,
        min_insync_replicas: (judge.min_insync_replicas)(topic),
    }))
}

/// The ISR members `keep` accepts; if it accepts none, the ISR as it is
/// when it has one member, else its first member: an ISR is never emptied.
fn keep_last_member(partition: &PartitionInfo, keep: impl Fn(i32) -> bool) -> Vec<i32> {
    let kept: Vec<i32> = partition
        .isr
        .iter()
        .copied()
        .filter(|&id| keep(id))
        .collect();
    if kept.is_empty() {
        partition.isr.iter().copied().take(1).collect()
    } else {
        kept
    }
}

#[cfg(test)]
mod tests;
