//! The elector loop of the active controller: every tick it commits, as
//! one batch, what lapsed sessions, stalls and leaderless partitions call
//! for (see `keel_leader_elector::plan`); when that is nothing, the next
//! steps of partition reassignments; when that is nothing either, the
//! moves back to preferred replicas. Also a stopping broker's own
//! controlled shutdown, judged the same way.

use std::{
    collections::BTreeMap,
    sync::{Arc, PoisonError},
    time::{Duration, Instant},
};

use keel_leader_elector::{
    plan::{self, Judge, ReplicaProgress, Stall, plan},
    schedule::RebalanceSchedule,
};
use keel_raft_metadata::{
    MetadataImage, MetadataRecord, ProposalError, Record, TopicInfo,
    heartbeat::StalledPartition,
    records::{LeaderChangeReason, LeadershipChangesCommitted, SetHistoryRetention},
};

use super::{BATCH_TIMEOUT, State, active_term, probe::probe_everyone, replica_log, unfenced};
use crate::{
    broker::{Broker, now_ms},
    metrics::FenceCause,
    topic_config,
};

/// The elector: every half heartbeat interval, while this node controls,
/// commits what lapsed sessions, stalls and leaderless partitions call
/// for; when that is nothing, the next step of each partition
/// reassignment; every leader imbalance check interval, when that is
/// nothing either, the moves back to preferred replicas (never within a session of taking
/// over, see `RebalanceSchedule`). It also keeps the history's retention
/// at this node's setting, and records when each batch committed.
pub async fn elect(broker: Arc<Broker>) {
    let liveness = broker.config.liveness;
    let mut tick = tokio::time::interval(liveness.heartbeat_interval / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let millis = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    let mut rebalances = broker.config.leader_rebalance.map(|r| {
        let now = broker.controller.now_ms();
        RebalanceSchedule::new(
            millis(r.check_interval),
            millis(liveness.session_timeout),
            now,
        )
    });
    let mut probed_term = None;
    let mut reports_checked_against = None;
    let mut history_seen = 0;
    loop {
        tick.tick().await;
        let Some(term) = active_term(&broker) else {
            until_controlling(&broker).await;
            continue;
        };
        let image = broker.image();
        if reports_checked_against
            .as_ref()
            .is_none_or(|checked| !Arc::ptr_eq(checked, &image))
        {
            broker.controller.forget_stale_reports(&image);
            reports_checked_against = Some(Arc::clone(&image));
        }
        if probed_term != Some(term) {
            probed_term = Some(term);
            probe_everyone(&broker, &image);
            // Controlled shutdowns before this term are the heartbeats'
            // to report.
            history_seen = image.next_history_sequence();
        }
        history_seen = broker
            .controller
            .note_controlled_shutdowns(term, &image, history_seen);
        if image.history_retention() != broker.config.history_retention as usize {
            set_history_retention(&broker).await;
            continue;
        }
        let now = broker.controller.now_ms();
        let due = rebalances
            .as_mut()
            .is_some_and(|schedule| schedule.due(term, now));
        let batch = match plan_now(&broker, term, &image) {
            Some(batch) => Some(batch),
            None => match reassign_now(&broker, term, &image) {
                Some(batch) => Some(batch),
                None if due => {
                    if let Some(schedule) = rebalances.as_mut() {
                        schedule.checked(now);
                    }
                    rebalance_now(&broker, term, &image)
                }
                None => None,
            },
        };
        let Some(batch) = batch else {
            continue;
        };
        let started = Instant::now();
        match broker.propose(batch.clone(), BATCH_TIMEOUT).await {
            Ok(applied) => {
                broker.metrics.election_latency.observe(started.elapsed());
                broker.controller.fenced(&fenced_by(Some(&batch)));
                report(&broker, &image, &batch);
                record_commit_time(&broker, &applied, &batch).await;
            }
            Err(error) => {
                tracing::warn!(%error, "leader election batch not committed; planning again");
            }
        }
    }
}

/// Resolves once this node is the active controller: until then the
/// elector has nothing to decide, and an idle broker is not woken twenty
/// times a second for it.
async fn until_controlling(broker: &Broker) {
    let mut status = broker.metadata.watch_status();
    while active_term(broker).is_none() {
        if status.changed().await.is_err() {
            // The metadata node stopped: so does the broker.
            std::future::pending::<()>().await;
        }
    }
}

async fn set_history_retention(broker: &Broker) {
    let entries = broker.config.history_retention;
    let record = Record::SetHistoryRetention(SetHistoryRetention { entries });
    match broker.propose(record.into(), BATCH_TIMEOUT).await {
        Ok(_) => tracing::info!(entries, "leadership history retention set"),
        Err(error) => tracing::warn!(%error, entries, "leadership history retention not set"),
    }
}

/// Records in the history when the leadership changes of `batch`
/// committed. They are consecutive in the history of `applied`, an image
/// holding the batch; the first is found by its partition and leader
/// epoch. Best effort: a controller that fails first leaves them without a
/// commit time.
async fn record_commit_time(broker: &Broker, applied: &MetadataImage, batch: &MetadataRecord) {
    let committed_at_ms = now_ms();
    let Some(Record::Batch(records)) = &batch.record else {
        return;
    };
    let mut changes = records.records.iter().filter_map(|r| match &r.record {
        Some(Record::SetPartitionLeader(change)) => Some(change),
        _ => None,
    });
    let Some(first) = changes.next() else {
        return;
    };
    let count = u32::try_from(changes.count() + 1).unwrap_or(u32::MAX);
    let Some(first_sequence) = applied
        .history()
        .rev()
        .find(|c| {
            c.topic == first.topic
                && c.partition == first.partition
                && c.leader_epoch == first.leader_epoch
        })
        .map(|c| c.sequence)
    else {
        return;
    };
    let record = Record::LeadershipChangesCommitted(LeadershipChangesCommitted {
        first_sequence,
        count,
        committed_at_ms,
    });
    if let Err(error) = broker.propose(record.into(), BATCH_TIMEOUT).await {
        tracing::debug!(%error, "commit time of leadership changes not recorded");
    }
}

/// The batch to commit now, if anything needs to change.
fn plan_now(broker: &Broker, term: u64, image: &MetadataImage) -> Option<MetadataRecord> {
    with_sessions(broker, term, image, |lapsed, stalled, judge| {
        plan(image, lapsed, stalled, judge)
    })
}

/// The next step of every partition reassignment that can take one.
fn reassign_now(broker: &Broker, term: u64, image: &MetadataImage) -> Option<MetadataRecord> {
    with_sessions(broker, term, image, |_, _, judge| {
        plan::reassignments(image, judge)
    })
}

/// Leaderships back to live, in-sync preferred replicas of brokers that
/// lead too few of their own, if any.
fn rebalance_now(broker: &Broker, term: u64, image: &MetadataImage) -> Option<MetadataRecord> {
    let rebalance = broker.config.leader_rebalance?;
    with_sessions(broker, term, image, |_, _, judge| {
        plan::rebalance(image, rebalance.imbalance_percent, judge)
    })
}

/// Runs `decide` with the sessions as they stand in `term` (brokers
/// registered since admitted): the lapsed ones, the stalls reported past
/// the timeout, and the judge that knows who is alive. The brokers the
/// batch fences are marked as being fenced before the state is let go.
fn with_sessions(
    broker: &Broker,
    term: u64,
    image: &MetadataImage,
    decide: impl FnOnce(&[(i32, u64)], &[Stall], &Judge) -> Option<MetadataRecord>,
) -> Option<MetadataRecord> {
    let controller = &broker.controller;
    let now = controller.now_ms();
    let lease_ms = i64::try_from(broker.config.liveness.lease().as_millis()).unwrap_or(i64::MAX);
    let mut state = controller.state_for(term, image, now);
    state.liveness.admit(unfenced(image), now);
    let lapsed = state.liveness.expired(now);
    let stalled = stalls_past_timeout(broker, &state.stalls);
    let State {
        liveness, reports, ..
    } = &mut *state;
    let session_alive = |id: i32| liveness.is_candidate(id, now);
    let replica_progress =
        |topic: &str, partition: i32, replica: i32| reports.get(image, topic, partition, replica);
    let lease_left = |id: i32| liveness.lease_left_ms(id, lease_ms, now);
    let batch = judging(
        broker,
        &session_alive,
        &replica_progress,
        &lease_left,
        |judge| decide(&lapsed, &stalled, judge),
    );
    state.decided_fences(&fenced_by(batch.as_ref()), now);
    batch
}

/// The brokers a batch fences.
fn fenced_by(batch: Option<&MetadataRecord>) -> Vec<i32> {
    let Some(Record::Batch(batch)) = batch.and_then(|b| b.record.as_ref()) else {
        return Vec::new();
    };
    batch
        .records
        .iter()
        .filter_map(|r| match &r.record {
            Some(Record::FenceBroker(fence)) => Some(fence.node_id),
            _ => None,
        })
        .collect()
}

/// The reported stalls that lasted longer than the stall timeout.
fn stalls_past_timeout(
    broker: &Broker,
    reports: &BTreeMap<i32, Vec<StalledPartition>>,
) -> Vec<Stall> {
    let Some(timeout) = broker.config.liveness.partition_stall_timeout else {
        return Vec::new();
    };
    let timeout_ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
    reports
        .iter()
        .flat_map(|(leader, stalls)| stalls.iter().map(move |s| (*leader, s)))
        .filter(|(_, s)| s.waited_ms > timeout_ms)
        .map(|(leader, s)| Stall {
            topic: s.topic.clone(),
            partition: s.partition,
            leader,
            leader_epoch: s.leader_epoch,
        })
        .collect()
}

/// Runs `decide` with what the leader elector needs to know beside the
/// image: topic configs from the broker's defaults, sessions from
/// `session_alive`, replicas' logs from `replica_progress`, leases from
/// `lease_left`.
fn judging<R>(
    broker: &Broker,
    session_alive: &dyn Fn(i32) -> bool,
    replica_progress: &dyn Fn(&str, i32, i32) -> Option<ReplicaProgress>,
    lease_left: &dyn Fn(i32) -> i64,
    decide: impl FnOnce(&Judge) -> R,
) -> R {
    let defaults = &broker.config.topic_defaults;
    let min_insync_replicas = |topic: &TopicInfo| {
        i32::try_from(topic_config::min_insync_replicas(&topic.configs, defaults))
            .unwrap_or(i32::MAX)
    };
    let unclean_allowed = |topic: &TopicInfo| topic_config::unclean_leader_election(&topic.configs);
    decide(&Judge {
        controller: broker.controller_id(),
        now_ms: now_ms(),
        session_alive,
        unclean_allowed: &unclean_allowed,
        min_insync_replicas: &min_insync_replicas,
        replica_progress,
        lease_left_ms: lease_left,
    })
}

/// Kafka's controlled shutdown: before this broker stops, every partition
/// it leads moves to another live in-sync replica (reason
/// `controlled_shutdown`) in one batch, so clients are redirected at once
/// instead of after its session lapses. Sessions are the controller's to
/// judge; registered and unfenced is what any broker knows; the logs
/// moved off are this broker's own. Returns how many leaderships moved.
pub async fn move_leaderships_off(broker: &Broker, timeout: Duration) -> usize {
    let node_id = broker.config.node_id;
    let replica_progress =
        |topic: &str, partition: i32, replica: i32| replica_log(broker, topic, partition, replica);
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let image = broker.image();
        // Every leadership moved here is to a live replica, waited for in
        // the succession rather than timed.
        let Some(batch) = judging(broker, &|_| true, &replica_progress, &|_| 0, |judge| {
            plan::move_leaderships_off(&image, node_id, judge)
        }) else {
            return 0;
        };
        let moves = match &batch.record {
            Some(Record::Batch(batch)) => batch.records.len(),
            _ => 0,
        };
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match broker.propose(batch, left).await {
            Ok(_) => {
                tracing::info!(
                    partitions = moves,
                    elapsed_ms = started.elapsed().as_millis(),
                    "moved leaderships to other in-sync replicas before stopping"
                );
                return moves;
            }
            // A partition changed since the image the moves were decided
            // on (a restarted broker rejoining an ISR, or the rebalancer
            // handing it a leadership back): decided again.
            Err(ProposalError::Rejected(error))
                if error.is_stale() && tokio::time::Instant::now() < deadline => {}
            Err(error) => {
                tracing::warn!(
                    %error,
                    "could not move leaderships before stopping; the controller will once this broker is fenced"
                );
                return 0;
            }
        }
    }
}

/// One log line per fenced broker and per leadership change, and the
/// fenced brokers' sessions forgotten: their next heartbeat starts anew.
fn report(broker: &Broker, before: &MetadataImage, batch: &MetadataRecord) {
    let Some(Record::Batch(batch)) = &batch.record else {
        return;
    };
    let timeout_ms = broker.config.liveness.session_timeout.as_millis();
    let mut state = broker
        .controller
        .state
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    for record in &batch.records {
        match &record.record {
            Some(Record::FenceBroker(fence)) => {
                let cause = if state.liveness.seen_gone(fence.node_id) {
                    FenceCause::ProcessGone
                } else {
                    FenceCause::SessionTimeout
                };
                broker.metrics.fences.count(cause);
                state.liveness.forget(fence.node_id);
                tracing::warn!(
                    node_id = fence.node_id,
                    incarnation = fence.incarnation,
                    session_timeout_ms = timeout_ms,
                    cause = cause.label(),
                    "fenced broker: its session lapsed"
                );
            }
            Some(Record::SetPartitionLeader(change)) => {
                let previous = before
                    .topic(&change.topic)
                    .and_then(|t| t.partition(change.partition))
                    .map_or(-1, |p| p.leader);
                let reason = LeaderChangeReason::label_of(change.reason);
                tracing::info!(
                    topic = change.topic,
                    partition = change.partition,
                    previous_leader = previous,
                    leader = change.leader,
                    leader_epoch = change.leader_epoch,
                    isr = ?change.isr,
                    reason,
                    "partition leader elected"
                );
            }
            Some(Record::ChangePartitionReplicas(change)) => tracing::info!(
                topic = change.topic,
                partition = change.partition,
                replicas = ?change.replicas,
                isr = ?change.isr,
                "partition reassignment completed"
            ),
            Some(Record::UpdateIsr(update)) => tracing::debug!(
                topic = update.topic,
                partition = update.partition,
                isr = ?update.isr,
                "fenced brokers removed from the ISR"
            ),
            _ => {}
        }
    }
}
