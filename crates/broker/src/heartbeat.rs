//! This broker's heartbeats to the active controller, which keep its
//! session alive there and its lease here (see `lease`).
//!
//! One heartbeat at a time, every heartbeat interval: to the controller's
//! cluster listener, or straight to this node's own controller when it is
//! the active one. An answer slower than the lease is as good as none.
//! Each heartbeat also carries the produce heartbeat: the led partitions
//! whose produce requests wait without progress (see
//! `partition::Progress`), for the controller to fail over once they have
//! waited past the stall timeout, and the hosted replicas' log end offsets
//! and high watermarks that changed since the controller last heard them
//! (see `ProgressReports`): the controller elects the most caught-up
//! candidate with them, and the leadership history records them.

use std::{
    sync::{Arc, PoisonError},
    time::Instant,
};

use keel_raft_metadata::heartbeat::{
    BrokerHeartbeat, ControllerConnection, HeartbeatCall, HeartbeatReply, HeartbeatStatus,
    PartitionProgress, StalledPartition,
};
use keel_raft_metadata::ids;
use tokio::sync::{mpsc, oneshot};

use crate::{
    broker::{Broker, now_ms},
    partition::{Partition, Walk},
};

pub async fn run(broker: Arc<Broker>, local: mpsc::Sender<HeartbeatCall>) {
    let liveness = broker.config.liveness;
    let mut tick = tokio::time::interval(liveness.heartbeat_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut connection = ControllerConnection::default();
    let mut reports = ProgressReports::default();
    let mut held = false;
    loop {
        tick.tick().await;
        let sent_at = Instant::now();
        let reply = send(&broker, &local, &mut connection, &mut reports).await;
        let answer = reply.as_ref().map(HeartbeatReply::status);
        if let Some(since) = reply.as_ref().and_then(|r| renewed_since(sent_at, r)) {
            broker.lease.renew(since);
        }
        let holds = broker.lease.holds(Instant::now());
        if held && !holds {
            broker.metrics.lease_expiries.inc_by(1);
            tracing::warn!(
                lease_ms = liveness.lease().as_millis(),
                ?answer,
                "lease lapsed: refusing produce and follower fetches until the controller answers"
            );
        } else if !held && holds {
            tracing::info!("lease granted by the controller");
        }
        held = holds;
    }
}

/// From when `reply`, to a heartbeat sent at `sent_at`, renews the lease:
/// the controller may have been confirmed a little before the heartbeat
/// reached it, and the lease starts no later than that. `None` if it does
/// not renew.
fn renewed_since(sent_at: Instant, reply: &HeartbeatReply) -> Option<Instant> {
    (reply.status() == HeartbeatStatus::Renewed)
        .then(|| sent_at.checked_sub(reply.confirmed_earlier()))
        .flatten()
}

/// The produce heartbeat: how long produce requests must have waited
/// without progress to be worth telling the controller (a heartbeat
/// interval; the controller judges them against the stall timeout), or
/// `None` when the stall timeout is off: then nothing is reported.
fn worth_telling_ms(broker: &Broker) -> Option<i64> {
    broker.config.liveness.partition_stall_timeout?;
    Some(i64::try_from(broker.config.liveness.heartbeat_interval.as_millis()).unwrap_or(i64::MAX))
}

/// The stall report of `replica`, whose produce requests have waited
/// `waited_ms` without progress, if it leads and that is `worth_telling`.
fn stalled(replica: &Partition, waited_ms: i64, worth_telling: i64) -> Option<StalledPartition> {
    (replica.is_leader() && waited_ms >= worth_telling).then(|| StalledPartition {
        topic: replica.topic().to_string(),
        partition: replica.index(),
        leader_epoch: replica.leader_epoch(),
        waited_ms,
    })
}

/// What the active controller has heard of the hosted replicas' logs. A
/// heartbeat carries only the replicas that changed since the controller
/// last answered one as the controller; a new controller (another node,
/// or the same in a new term: it starts afresh too) hears everything.
/// What was heard of each replica is kept with it
/// (`Partition::heard_progress`): a heartbeat that walks every hosted
/// replica pays a comparison for an unchanged one, no lookup. It walks
/// none while no replica changed since a walk that left every report
/// heard and no produce waiting (see `partition::activity`).
#[derive(Debug, Default)]
struct ProgressReports {
    /// The controller and its Raft term that acknowledged the last report.
    controller: Option<(u64, u64)>,
    walk: Walk,
}

/// (leader epoch, log end offset, high watermark).
type ReplicaProgress = (i32, i64, i64);

/// The replicas a heartbeat reports, with what it reports of them: what
/// the controller will have heard once it acknowledges it.
type Updates = Vec<(Arc<Partition>, ReplicaProgress)>;

impl ProgressReports {
    /// Adds `replica` to the report for `controller` if that controller
    /// has not heard its log as it is now.
    fn add_if_unheard(
        &self,
        replica: &Arc<Partition>,
        controller: (u64, u64),
        updates: &mut Updates,
        changed: &mut Vec<PartitionProgress>,
    ) {
        let state = replica.replication_progress();
        let heard = *replica
            .heard_progress()
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if self.controller == Some(controller) && heard == Some(state) {
            return;
        }
        updates.push((Arc::clone(replica), state));
        changed.push(PartitionProgress {
            topic: replica.topic().to_string(),
            partition: replica.index(),
            leader_epoch: state.0,
            log_end_offset: state.1,
            high_watermark: state.2,
        });
    }

    /// `controller` answered a heartbeat that carried `updates`.
    fn heard(&mut self, controller: (u64, u64), updates: Updates) {
        self.controller = Some(controller);
        for (replica, state) in updates {
            *replica
                .heard_progress()
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(state);
        }
    }
}

/// One heartbeat and its answer, if the controller answered in time.
async fn send(
    broker: &Broker,
    local: &mpsc::Sender<HeartbeatCall>,
    connection: &mut ControllerConnection,
    reports: &mut ProgressReports,
) -> Option<HeartbeatReply> {
    let status = broker.metadata.status();
    let controller_id = status.core.controller_id?;
    let controller = (controller_id, status.core.term);
    // One walk over the hosted replicas serves both reports.
    let (mut updates, mut changed, mut stalled_partitions) = (Vec::new(), Vec::new(), Vec::new());
    let now = now_ms();
    let worth_telling = worth_telling_ms(broker);
    let began = broker.replicas.activity().count();
    let walks = reports.controller != Some(controller) || !reports.walk.may_skip(began);
    let mut produce_waiting = false;
    if walks {
        broker.replicas.for_each(|replica| {
            reports.add_if_unheard(replica, controller, &mut updates, &mut changed);
            if let Some(waited_ms) = replica.progress().stalled_for(now) {
                produce_waiting = true;
                stalled_partitions
                    .extend(worth_telling.and_then(|w| stalled(replica, waited_ms, w)));
            }
        });
    }
    let heartbeat = BrokerHeartbeat {
        node_id: broker.config.node_id,
        incarnation: broker.incarnation,
        stalled: stalled_partitions,
        leadership_changes: broker.replicas.leadership_changes(),
        shutting_down: broker.is_stopping(),
        progress: changed,
    };
    let timeout = broker.config.liveness.lease();
    let reply = if ids::node_id(controller_id) == broker.config.node_id {
        let (reply, answer) = oneshot::channel();
        local
            .send(HeartbeatCall::Beat { heartbeat, reply })
            .await
            .ok()?;
        tokio::time::timeout(timeout, answer).await.ok()?.ok()?
    } else {
        let address = status.controller_address?;
        match connection.heartbeat(&address, heartbeat, timeout).await {
            Ok(reply) => reply,
            Err(error) => {
                tracing::debug!(controller_id, %address, %error, "heartbeat not answered");
                return None;
            }
        }
    };
    // A controller that did not know this incarnation yet may drop what it
    // reported: sent again with the next heartbeat.
    let heard = !matches!(
        reply.status(),
        HeartbeatStatus::NotController | HeartbeatStatus::UnknownIncarnation
    );
    if heard {
        reports.heard(controller, updates);
    }
    if walks {
        reports.walk.walked(began, heard && !produce_waiting);
    }
    Some(reply)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use keel_log::{LogConfig, PartitionLog};
    use keel_raft_metadata::PartitionInfo;
    use uuid::Uuid;

    use super::*;
    use crate::{replication::succession::Succession, test_image};

    fn replica(dir: &std::path::Path, index: i32) -> Arc<Partition> {
        let (log, _) =
            PartitionLog::open(&dir.join(index.to_string()), LogConfig::default(), 0).unwrap();
        Arc::new(Partition::new(
            "t".into(),
            Uuid::nil(),
            index,
            log,
            None,
            Arc::default(),
        ))
    }

    /// Makes this broker (1) the replica's leader at `leader_epoch`.
    fn lead(replica: &Partition, leader_epoch: i32) {
        let info = PartitionInfo {
            leader_epoch,
            partition_epoch: leader_epoch,
            ..PartitionInfo::from(&test_image::partition(replica.index(), &[1], 1, &[1]))
        };
        replica
            .apply_assignment(1, &info, 1, Succession::default(), 0)
            .unwrap();
    }

    fn beat(
        reports: &mut ProgressReports,
        hosted: &[Arc<Partition>],
        controller: (u64, u64),
    ) -> Vec<(i32, i32)> {
        let (mut updates, mut changed) = (Vec::new(), Vec::new());
        for replica in hosted {
            reports.add_if_unheard(replica, controller, &mut updates, &mut changed);
        }
        reports.heard(controller, updates);
        changed
            .iter()
            .map(|p| (p.partition, p.leader_epoch))
            .collect()
    }

    #[test]
    fn a_heartbeat_reports_what_the_controller_has_not_heard_and_only_that() {
        let dir = tempfile::tempdir().unwrap();
        let mut hosted = vec![replica(dir.path(), 0), replica(dir.path(), 1)];
        for replica in &hosted {
            lead(replica, 0);
        }
        let mut reports = ProgressReports::default();
        let controller = (1, 1);
        assert_eq!(beat(&mut reports, &hosted, controller), [(0, 0), (1, 0)]);
        assert!(beat(&mut reports, &hosted, controller).is_empty());

        // One replica moves on: it alone is reported, and once heard, not
        // again.
        lead(&hosted[1], 3);
        assert_eq!(beat(&mut reports, &hosted, controller), [(1, 3)]);
        assert!(beat(&mut reports, &hosted, controller).is_empty());

        // A replica comes: it is reported, the others stand.
        hosted.push(replica(dir.path(), 2));
        lead(&hosted[2], 5);
        assert_eq!(beat(&mut reports, &hosted, controller), [(2, 5)]);
        assert!(beat(&mut reports, &hosted, controller).is_empty());

        // Another controller, or a new term, has heard nothing.
        assert_eq!(
            beat(&mut reports, &hosted, (1, 2)),
            [(0, 0), (1, 3), (2, 5)]
        );
        // A replica goes and another with the same count comes: the new
        // one is reported.
        hosted.remove(0);
        hosted.push(replica(dir.path(), 3));
        lead(&hosted[2], 1);
        assert_eq!(beat(&mut reports, &hosted, (1, 2)), [(3, 1)]);
    }

    #[test]
    fn a_renewed_lease_starts_as_much_before_the_heartbeat_as_the_confirmation_was() {
        let sent_at = Instant::now() + Duration::from_secs(1);
        let earlier = Duration::from_millis(30);
        let renewed = HeartbeatReply::renewed(earlier);
        assert_eq!(renewed_since(sent_at, &renewed), Some(sent_at - earlier));
        let behind = HeartbeatReply::new(HeartbeatStatus::Behind);
        assert_eq!(renewed_since(sent_at, &behind), None);
    }
}
