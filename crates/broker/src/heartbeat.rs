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
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Instant,
};

use keel_raft_metadata::heartbeat::{
    BrokerHeartbeat, ControllerConnection, HeartbeatCall, HeartbeatReply, HeartbeatStatus,
    PartitionProgress, StalledPartition,
};
use keel_raft_metadata::ids;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::{
    broker::{Broker, now_ms},
    partition::Partition,
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
        let answer = send(&broker, &local, &mut connection, &mut reports)
            .await
            .map(|reply| reply.status());
        if answer == Some(HeartbeatStatus::Renewed) {
            broker.lease.renew(sent_at);
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

/// The produce heartbeat: the partitions this broker leads whose produce
/// requests have waited without progress for a heartbeat interval or more
/// (the controller judges them against the stall timeout). A broker whose
/// stall timeout is off neither tracks nor reports them.
fn stalled_partitions(broker: &Broker, hosted: &[Arc<Partition>]) -> Vec<StalledPartition> {
    if broker.config.liveness.partition_stall_timeout.is_none() {
        return Vec::new();
    }
    let now = now_ms();
    let worth_telling =
        i64::try_from(broker.config.liveness.heartbeat_interval.as_millis()).unwrap_or(i64::MAX);
    hosted
        .iter()
        .filter(|p| p.is_leader())
        .filter_map(|p| {
            let waited_ms = p.progress().stalled_for(now)?;
            (waited_ms >= worth_telling).then(|| StalledPartition {
                topic: p.topic().to_string(),
                partition: p.index(),
                leader_epoch: p.leader_epoch(),
                waited_ms,
            })
        })
        .collect()
}

/// The hosted replicas' logs as the active controller has heard of them.
/// A heartbeat carries only what changed since the controller last
/// answered one as the controller; a new controller (another node, or the
/// same in a new term: it starts afresh too) hears everything.
#[derive(Debug, Default)]
struct ProgressReports {
    /// The controller and its Raft term that acknowledged `heard`.
    controller: Option<(u64, u64)>,
    heard: Progress,
}

/// Each hosted replica's (leader epoch, log end offset, high watermark),
/// by topic id and partition.
type Progress = HashMap<ReplicaKey, ReplicaProgress>;
type ReplicaKey = (Uuid, i32);
/// (leader epoch, log end offset, high watermark).
type ReplicaProgress = (i32, i64, i64);

/// What changed since the controller last heard: the entries a heartbeat
/// carries, and what the controller will have heard once it acknowledges
/// it.
type Updates = Vec<(ReplicaKey, ReplicaProgress)>;

impl ProgressReports {
    /// The hosted replicas whose log `controller` has not heard as it is
    /// now (every one, for a controller or term that heard nothing yet).
    /// Ten heartbeats a second walk every hosted replica, so only what
    /// changed is built.
    fn changes(
        &self,
        hosted: &[Arc<Partition>],
        controller: (u64, u64),
    ) -> (Updates, Vec<PartitionProgress>) {
        let same_controller = self.controller == Some(controller);
        let mut updates = Vec::new();
        let mut changed = Vec::new();
        for replica in hosted {
            let key = (replica.topic_id(), replica.index());
            let state = (
                replica.leader_epoch(),
                replica.log_end_offset(),
                replica.high_watermark(),
            );
            if !same_controller || self.heard.get(&key) != Some(&state) {
                updates.push((key, state));
                changed.push(PartitionProgress {
                    topic: replica.topic().to_string(),
                    partition: replica.index(),
                    leader_epoch: state.0,
                    log_end_offset: state.1,
                    high_watermark: state.2,
                });
            }
        }
        (updates, changed)
    }

    /// `controller` answered a heartbeat that carried `updates` while
    /// `hosted` were the hosted replicas.
    fn heard(&mut self, controller: (u64, u64), updates: Updates, hosted: &[Arc<Partition>]) {
        if self.controller != Some(controller) {
            self.heard.clear();
        }
        self.controller = Some(controller);
        self.heard.extend(updates);
        // Every hosted replica is heard now (one the controller had not
        // heard of was an update), so more entries than replicas are
        // replicas no longer hosted here.
        if self.heard.len() > hosted.len() {
            let hosted: HashSet<ReplicaKey> = hosted
                .iter()
                .map(|replica| (replica.topic_id(), replica.index()))
                .collect();
            self.heard.retain(|key, _| hosted.contains(key));
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
    let hosted = broker.replicas.all();
    let (updates, changed) = reports.changes(&hosted, controller);
    let heartbeat = BrokerHeartbeat {
        node_id: broker.config.node_id,
        incarnation: broker.incarnation,
        stalled: stalled_partitions(broker, &hosted),
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
    if !matches!(
        reply.status(),
        HeartbeatStatus::NotController | HeartbeatStatus::UnknownIncarnation
    ) {
        reports.heard(controller, updates, &hosted);
    }
    Some(reply)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use keel_log::{LogConfig, PartitionLog};
    use keel_raft_metadata::PartitionInfo;

    use super::*;
    use crate::{replication::succession::Succession, test_image};

    fn replica(dir: &std::path::Path, index: i32) -> Arc<Partition> {
        let (log, _) =
            PartitionLog::open(&dir.join(index.to_string()), LogConfig::default(), 0).unwrap();
        Arc::new(Partition::new("t".into(), Uuid::nil(), index, log, None))
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
        let (updates, changed) = reports.changes(hosted, controller);
        reports.heard(controller, updates, hosted);
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
}
