//! ISR changes, the KRaft way: each leader proposes the changes its
//! followers' progress calls for, and the controller commits them through
//! the metadata log (fenced by leader and partition epoch, KIP-903 checked
//! for members joining). The leader works with the new ISR only once the
//! committed change reaches it through the image.

use std::{sync::Arc, time::Duration};

use keel_raft_metadata::{Record, records::UpdateIsr};

use crate::{
    broker::{Broker, now_ms},
    partition::Partition,
    replication::leader::IsrProposal,
};

/// How often leaders look for followers to take out of or into the ISR.
const CHECK_INTERVAL: Duration = Duration::from_millis(250);
/// How long an ISR change may wait for the metadata quorum.
const PROPOSAL_TIMEOUT: Duration = Duration::from_secs(5);

/// Proposes ISR changes for the partitions this broker leads, for as long
/// as it runs.
pub async fn run(broker: Arc<Broker>) {
    let mut tick = tokio::time::interval(CHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = now_ms();
        let lag_max = broker.config.replica_lag_time_max_ms;
        let image = broker.image();
        // KIP-903 as the controller checks it: only a registered, unfenced
        // broker at the incarnation it fetched with may join.
        let eligible = |id: i32, incarnation: u64| {
            image
                .broker(id)
                .is_some_and(|b| !b.fenced && b.incarnation == incarnation)
        };
        for partition in broker.replicas.all() {
            if !partition.is_leader() {
                continue;
            }
            if let Some(proposal) = partition.propose_isr_change(lag_max, now, &eligible) {
                tokio::spawn(propose(Arc::clone(&broker), partition, proposal));
            }
        }
    }
}

async fn propose(broker: Arc<Broker>, partition: Arc<Partition>, proposal: IsrProposal) {
    tracing::info!(
        topic = partition.topic(),
        partition = partition.index(),
        leader_epoch = proposal.leader_epoch,
        partition_epoch = proposal.partition_epoch,
        isr = ?proposal.isr,
        removed = ?proposal.removed,
        added = ?proposal.added,
        "asking the controller to change the ISR"
    );
    let record = Record::UpdateIsr(UpdateIsr {
        topic: partition.topic().to_string(),
        partition: partition.index(),
        leader_epoch: proposal.leader_epoch,
        isr: proposal.isr.clone(),
        partition_epoch: proposal.partition_epoch,
        isr_incarnations: proposal.incarnations.clone(),
        min_insync_replicas: i32::try_from(proposal.min_insync_replicas).unwrap_or(i32::MAX),
    });
    match broker.propose(record.into(), PROPOSAL_TIMEOUT).await {
        Ok(_) => {
            broker
                .metrics
                .isr_shrinks
                .inc_by(proposal.removed.len() as u64);
            broker
                .metrics
                .isr_expands
                .inc_by(proposal.added.len() as u64);
        }
        Err(error) => {
            tracing::warn!(
                topic = partition.topic(),
                partition = partition.index(),
                %error,
                "the controller did not commit the ISR change"
            );
            partition.isr_proposal_failed(proposal.leader_epoch);
        }
    }
}
