//! Moving a partition's leadership by hand: to its preferred replica
//! (ElectLeaders), to a named broker (the operator's move), or, for a
//! partition without a leader, to whoever the election policy picks
//! (ElectLeaders unclean: the ISR, then the ELR, then any live replica). The choice
//! is a pure function of the image; the move is one SetPartitionLeader
//! through the metadata log, at the next leader epoch, recorded in the
//! leadership history with its reason.
//!
//! Only a live member of the committed ISR may take over: every record the
//! old leader acknowledged is in its log, because the old leader's high
//! watermark waits for every ISR member.

use std::time::Duration;

use keel_leader_elector::policy::{self, Election, Source};
use keel_raft_metadata::{
    MetadataImage, PartitionInfo, ProposalError, Record,
    records::{LeaderChangeReason, SetPartitionLeader},
};

use crate::{
    broker::{Broker, now_ms},
    controller,
    error::ElectionError,
    topic_config,
};

/// Where leadership should go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The first replica of the assignment.
    Preferred,
    Broker(i32),
    /// A partition without a leader: whoever the election policy picks,
    /// from outside the ISR and ELR if it must (ElectLeaders unclean).
    Unclean,
}

/// Who takes over a partition, with which ISR, and whether from outside
/// the ISR and ELR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub leader: i32,
    pub isr: Vec<i32>,
    pub unclean: bool,
}

/// Who should lead `partition` of `topic`, if the move is needed and
/// allowed.
pub fn choose_leader(
    image: &MetadataImage,
    topic: &str,
    partition: i32,
    target: Target,
) -> Result<Choice, ElectionError> {
    let info = image
        .topic(topic)
        .and_then(|t| t.partition(partition))
        .ok_or(ElectionError::UnknownTopicOrPartition)?;
    let wanted = match target {
        Target::Preferred => *info
            .replicas
            .first()
            .ok_or(ElectionError::UnknownTopicOrPartition)?,
        Target::Broker(id) => id,
        Target::Unclean => return unclean_choice(image, info),
    };
    if info.leader == wanted {
        return Err(ElectionError::NotNeeded(wanted));
    }
    let live = image.is_unfenced(wanted);
    if !(live && info.isr.contains(&wanted)) {
        return Err(match target {
            Target::Preferred => ElectionError::PreferredNotAvailable(wanted),
            Target::Broker(_) | Target::Unclean => ElectionError::NotEligible(wanted),
        });
    }
    Ok(Choice {
        leader: wanted,
        isr: info.isr.clone(),
        unclean: false,
    })
}

/// An unclean election's choice for a partition without a leader.
fn unclean_choice(image: &MetadataImage, info: &PartitionInfo) -> Result<Choice, ElectionError> {
    if info.leader >= 0 {
        return Err(ElectionError::NotNeeded(info.leader));
    }
    let live = |id: i32| image.is_unfenced(id);
    match policy::elect(info, -1, live, |_| None, true) {
        Election::Leader {
            leader,
            isr,
            source,
            ..
        } => Ok(Choice {
            leader,
            isr,
            unclean: source == Source::Unclean,
        }),
        Election::Offline => Err(ElectionError::NoLiveReplica),
    }
}

/// Moves leadership of `partition` of `topic` to `target`, committing the
/// change through the metadata log; returns the new leader and epoch. A
/// choice from outside the ISR and ELR is recorded as `unclean`, whatever
/// `reason` says.
pub async fn move_leader(
    broker: &Broker,
    topic: &str,
    partition: i32,
    target: Target,
    reason: LeaderChangeReason,
    timeout: Duration,
) -> Result<(i32, i32), ElectionError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let (record, reason) = decide(broker, &broker.image(), topic, partition, target, reason)?;
        let (leader, leader_epoch) = (record.leader, record.leader_epoch);
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match broker
            .propose(Record::SetPartitionLeader(record).into(), left)
            .await
        {
            Ok(_) => {
                tracing::info!(
                    topic,
                    partition,
                    leader,
                    leader_epoch,
                    reason = reason.label(),
                    "moved partition leadership"
                );
                return Ok((leader, leader_epoch));
            }
            // The partition changed since the image the move was decided
            // on (an ISR update or another move, say): decided again from
            // the newer one.
            Err(ProposalError::Rejected(error))
                if error.is_stale() && tokio::time::Instant::now() < deadline => {}
            Err(error) => return Err(error.into()),
        }
    }
}

/// The leader change that moves `partition` of `topic` to `target` as
/// `image` stands, and its reason (`unclean` for a choice from outside the
/// ISR and ELR).
fn decide(
    broker: &Broker,
    image: &MetadataImage,
    topic: &str,
    partition: i32,
    target: Target,
    reason: LeaderChangeReason,
) -> Result<(SetPartitionLeader, LeaderChangeReason), ElectionError> {
    let Choice {
        leader,
        isr,
        unclean,
    } = choose_leader(image, topic, partition, target)?;
    let reason = if unclean {
        LeaderChangeReason::Unclean
    } else {
        reason
    };
    let info = image
        .topic(topic)
        .ok_or(ElectionError::UnknownTopicOrPartition)?;
    let current = info
        .partition(partition)
        .ok_or(ElectionError::UnknownTopicOrPartition)?;
    let old_leader = controller::replica_log(broker, topic, partition, current.leader)
        .filter(|p| p.leader_epoch == current.leader_epoch);
    let new_leader_log_end_offset =
        controller::replica_log(broker, topic, partition, leader).map(|p| p.log_end_offset);
    let min_insync_replicas =
        topic_config::min_insync_replicas(&info.configs, &broker.config.topic_defaults);
    let record = SetPartitionLeader {
        topic: topic.to_string(),
        partition,
        leader,
        leader_epoch: current.leader_epoch + 1,
        isr: isr.clone(),
        reason: reason as i32,
        controller: broker.controller_id(),
        eligible: isr,
        log_end_offset: old_leader.map_or(-1, |p| p.log_end_offset),
        high_watermark: old_leader.map_or(-1, |p| p.high_watermark),
        timestamp_ms: now_ms(),
        min_insync_replicas: i32::try_from(min_insync_replicas).unwrap_or(i32::MAX),
        new_leader_log_end_offset,
        predecessor_lease_ms: 0,
        partition_epoch: Some(current.partition_epoch),
    };
    Ok((record, reason))
}

#[cfg(test)]
mod tests {
    use keel_raft_metadata::records::FenceBroker;

    use super::*;
    use crate::test_image::{apply, create_topic, partition, register};

    fn image(isr: &[i32], leader: i32, fenced: &[i32]) -> MetadataImage {
        let mut image = MetadataImage::default();
        for id in 1..=3 {
            register(&mut image, id, 7);
        }
        for &id in fenced {
            let fence = FenceBroker {
                node_id: id,
                incarnation: 7,
            };
            apply(&mut image, Record::FenceBroker(fence));
        }
        let partitions = vec![partition(0, &[1, 2, 3], leader, isr)];
        create_topic(&mut image, "t", 1, partitions, 0);
        image
    }

    #[test]
    fn the_preferred_replica_takes_over_when_in_sync_and_live() {
        let image = image(&[1, 2, 3], 2, &[]);
        assert_eq!(
            choose_leader(&image, "t", 0, Target::Preferred).map(|c| c.leader),
            Ok(1)
        );
    }

    #[test]
    fn no_move_when_the_target_already_leads() {
        let image = image(&[1, 2, 3], 1, &[]);
        assert_eq!(
            choose_leader(&image, "t", 0, Target::Preferred),
            Err(ElectionError::NotNeeded(1))
        );
    }

    #[test]
    fn only_a_live_isr_member_may_take_over() {
        let out_of_sync = image(&[2, 3], 2, &[]);
        assert_eq!(
            choose_leader(&out_of_sync, "t", 0, Target::Preferred),
            Err(ElectionError::PreferredNotAvailable(1))
        );
        let fenced = image(&[1, 2, 3], 2, &[3]);
        assert_eq!(
            choose_leader(&fenced, "t", 0, Target::Broker(3)),
            Err(ElectionError::NotEligible(3))
        );
        assert_eq!(
            choose_leader(&fenced, "t", 0, Target::Broker(1)).map(|c| c.leader),
            Ok(1)
        );
        assert_eq!(
            choose_leader(&fenced, "t", 0, Target::Broker(9)),
            Err(ElectionError::NotEligible(9))
        );
        assert_eq!(
            choose_leader(&fenced, "u", 0, Target::Preferred),
            Err(ElectionError::UnknownTopicOrPartition)
        );
    }
}
