//! This broker's heartbeats to the active controller, which keep its
//! session alive there and its lease here (see `lease`).
//!
//! One heartbeat at a time, every heartbeat interval: to the controller's
//! cluster listener, or straight to this node's own controller when it is
//! the active one. An answer slower than the lease is as good as none.
//! Each heartbeat also carries the produce heartbeat: the led partitions
//! whose produce requests wait without progress (see
//! `partition::Progress`), for the controller to fail over once they have
//! waited past the stall timeout.

use std::{sync::Arc, time::Instant};

use keel_raft_metadata::heartbeat::{
    BrokerHeartbeat, ControllerConnection, HeartbeatCall, HeartbeatReply, HeartbeatStatus,
    StalledPartition,
};
use tokio::sync::{mpsc, oneshot};

use crate::broker::{Broker, now_ms};

pub async fn run(broker: Arc<Broker>, local: mpsc::Sender<HeartbeatCall>) {
    let liveness = broker.config.liveness;
    let mut tick = tokio::time::interval(liveness.heartbeat_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut connection = ControllerConnection::default();
    let mut held = false;
    loop {
        tick.tick().await;
        let sent_at = Instant::now();
        let answer = send(&broker, &local, &mut connection)
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
fn stalled_partitions(broker: &Broker) -> Vec<StalledPartition> {
    if broker.config.liveness.partition_stall_timeout.is_none() {
        return Vec::new();
    }
    let now = now_ms();
    let worth_telling =
        i64::try_from(broker.config.liveness.heartbeat_interval.as_millis()).unwrap_or(i64::MAX);
    broker
        .replicas
        .all()
        .into_iter()
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

/// One heartbeat and its answer, if the controller answered in time.
async fn send(
    broker: &Broker,
    local: &mpsc::Sender<HeartbeatCall>,
    connection: &mut ControllerConnection,
) -> Option<HeartbeatReply> {
    let heartbeat = BrokerHeartbeat {
        node_id: broker.config.node_id,
        incarnation: broker.incarnation,
        stalled: stalled_partitions(broker),
        leadership_changes: broker.replicas.leadership_changes(),
        shutting_down: broker.is_stopping(),
    };
    let timeout = broker.config.liveness.lease();
    let status = broker.metadata.status();
    let controller = i32::try_from(status.core.controller_id?).ok()?;
    if controller == broker.config.node_id {
        let (reply, answer) = oneshot::channel();
        local.send(HeartbeatCall { heartbeat, reply }).await.ok()?;
        return tokio::time::timeout(timeout, answer).await.ok()?.ok();
    }
    let address = status.controller_address?;
    match connection.heartbeat(&address, heartbeat, timeout).await {
        Ok(reply) => Some(reply),
        Err(error) => {
            tracing::debug!(controller, %address, %error, "heartbeat not answered");
            None
        }
    }
}
