//! ISR changes, the KRaft way: each leader proposes the changes its
//! followers' progress calls for, and the controller commits them through
//! the metadata log (fenced by leader and partition epoch, KIP-903 checked
//! for members joining). The leader works with the new ISR only once the
//! committed change reaches it through the image.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use keel_raft_metadata::{MetadataImage, Record, records::UpdateIsr};

use crate::{
    broker::{Broker, now_ms},
    partition::Partition,
    replication::leader::IsrProposal,
};

/// How often leaders look for followers to take out of or into the ISR
/// while hosted replicas or the metadata change.
const CHECK_INTERVAL: Duration = Duration::from_millis(250);
/// How often they look while nothing changes. Then only time passes, which
/// only takes out followers that stopped fetching and retries proposals
/// left unanswered: a second late at most, or half of
/// replica.lag.time.max.ms if that is shorter (Kafka's own period).
const QUIET_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How long an ISR change may wait for the metadata quorum.
const PROPOSAL_TIMEOUT: Duration = Duration::from_secs(5);

/// Proposes ISR changes for the partitions this broker leads, for as long
/// as it runs.
pub async fn run(broker: Arc<Broker>) {
    let lag_max = broker.config.replica_lag_time_max_ms;
    let half_lag = Duration::from_millis(u64::try_from(lag_max / 2).unwrap_or(0));
    let quiet_interval = QUIET_CHECK_INTERVAL.min(half_lag).max(CHECK_INTERVAL);
    let mut tick = tokio::time::interval(CHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<LastCheck> = None;
    loop {
        tick.tick().await;
        let count = broker.replicas.activity().count();
        let image = broker.image();
        if last
            .as_ref()
            .is_some_and(|last| last.still_holds(count, &image, Instant::now(), quiet_interval))
        {
            continue;
        }
        let now = now_ms();
        // KIP-903 as the controller checks it: only a registered, unfenced
        // broker at the incarnation it fetched with may join.
        let eligible = |id: i32, incarnation: u64| {
            image
                .broker(id)
                .is_some_and(|b| !b.fenced && b.incarnation == incarnation)
        };
        broker.replicas.for_each(|partition| {
            if !partition.is_leader() {
                return;
            }
            if let Some(proposal) = partition.propose_isr_change(lag_max, now, &eligible) {
                tokio::spawn(propose(
                    Arc::clone(&broker),
                    Arc::clone(partition),
                    proposal,
                ));
            }
        });
        last = Some(LastCheck {
            activity: count,
            image,
            at: Instant::now(),
        });
    }
}

/// What the last check saw: the count of replica changes and the image
/// before it began, and when it ended.
struct LastCheck {
    activity: u64,
    image: Arc<MetadataImage>,
    at: Instant,
}

impl LastCheck {
    /// Whether a check now would find what the last one found: no replica
    /// changed (a follower moving counts, see `Partition::record_follower_fetch`),
    /// the image is the same, and less than `quiet_interval` passed.
    fn still_holds(
        &self,
        activity: u64,
        image: &Arc<MetadataImage>,
        now: Instant,
        quiet_interval: Duration,
    ) -> bool {
        self.activity == activity
            && Arc::ptr_eq(&self.image, image)
            && now.saturating_duration_since(self.at) < quiet_interval
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quiet_check_is_skipped_until_something_changes_or_time_passes() {
        let image = Arc::new(MetadataImage::default());
        let at = Instant::now();
        let last = LastCheck {
            activity: 5,
            image: Arc::clone(&image),
            at,
        };
        let soon = at + Duration::from_millis(300);
        assert!(last.still_holds(5, &image, soon, QUIET_CHECK_INTERVAL));
        assert!(
            !last.still_holds(6, &image, soon, QUIET_CHECK_INTERVAL),
            "a replica changed"
        );
        let newer = Arc::new(MetadataImage::default());
        assert!(
            !last.still_holds(5, &newer, soon, QUIET_CHECK_INTERVAL),
            "new metadata"
        );
        let later = at + QUIET_CHECK_INTERVAL;
        assert!(
            !last.still_holds(5, &image, later, QUIET_CHECK_INTERVAL),
            "time passed"
        );
    }
}
