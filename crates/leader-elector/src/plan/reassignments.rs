//! Reassignments the active controller carries forward (see
//! `keel_raft_metadata::image::reassignment`): once every target replica of
//! a partition is in its ISR, a leader that is leaving hands over to a live
//! target replica in the ISR (reason `reassignment`), and a partition whose
//! leader stays completes. Everything it needs is in the image and the
//! replicas' reports, so a controller that takes over mid-reassignment goes
//! on where its predecessor stopped.
//!
//! A reassignment completes only once every live replica it removes has
//! reported the current leader epoch: the leader it moved away from has
//! then stopped leading. A successor that applies the leader move and the
//! completion at once (a broker behind on the metadata) no longer sees the
//! old leader among the replicas to wait for, and need not.

use keel_raft_metadata::{
    MetadataImage, MetadataRecord, PartitionInfo, Record, TopicInfo,
    image::reassignment,
    records::{LeaderChangeReason, RecordBatch},
};

use super::{Batch, Change, Judge, is_live};

/// The batch that moves every reassignment that can move now one step on,
/// or `None` when none can.
pub fn reassignments(image: &MetadataImage, judge: &Judge) -> Option<MetadataRecord> {
    let any = image
        .topics()
        .any(|t| t.partitions.iter().any(PartitionInfo::is_reassigning));
    if !any {
        return None;
    }
    let mut batch = Batch {
        scratch: image.clone(),
        records: Vec::new(),
    };
    let reassigning = image
        .topics()
        .flat_map(|t| t.partitions.iter().map(move |p| (t.as_ref(), p)))
        .filter(|(_, p)| p.is_reassigning());
    for (topic, partition) in reassigning {
        if let Some(record) = step(image, topic, partition, judge) {
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

/// The next step of one partition's reassignment, if it can take one.
fn step(
    image: &MetadataImage,
    topic: &TopicInfo,
    partition: &PartitionInfo,
    judge: &Judge,
) -> Option<Record> {
    if let Some(complete) = reassignment::complete(&topic.name, partition) {
        let learnt = |id: i32| {
            !is_live(image, judge, id)
                || (judge.replica_progress)(&topic.name, partition.partition, id)
                    .is_some_and(|p| p.leader_epoch >= partition.leader_epoch)
        };
        let leaving_learnt = partition.removing_replicas.iter().all(|&id| learnt(id));
        return leaving_learnt.then_some(Record::ChangePartitionReplicas(complete));
    }
    let target = partition.target_replicas();
    let leaving = partition.leader >= 0 && !target.contains(&partition.leader);
    let in_sync = target.iter().all(|id| partition.isr.contains(id));
    if !(leaving && in_sync) {
        return None;
    }
    let eligible: Vec<i32> = target
        .into_iter()
        .filter(|&id| is_live(image, judge, id))
        .collect();
    let successor = *eligible.first()?;
    // The leaving leader stays a replica and in the ISR until the
    // reassignment completes: its successor waits for it to follow.
    let change = Change {
        leader: successor,
        isr: partition.isr.clone(),
        eligible,
        reason: LeaderChangeReason::Reassignment,
        predecessor_lease_ms: 0,
    };
    Some(change.record(topic, partition, judge))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use keel_raft_metadata::records::{
        CreateTopic, PartitionAssignment, RegisterBroker, UpdateIsr,
    };

    use super::*;
    use crate::plan::ReplicaProgress;

    /// Brokers 1 to 4, topic `t` with one partition on 1, 2, 3 led by 1,
    /// being reassigned to `target`.
    fn reassigning(target: &[i32]) -> MetadataImage {
        let mut image = MetadataImage::default();
        for node_id in 1..=4 {
            let register = Record::RegisterBroker(RegisterBroker {
                node_id,
                incarnation: 1,
                ..Default::default()
            });
            image.apply(&register.into(), 1).unwrap();
        }
        let create = Record::CreateTopic(CreateTopic {
            name: "t".into(),
            topic_id: vec![1; 16],
            partitions: vec![PartitionAssignment {
                replicas: vec![1, 2, 3],
                leader: 1,
                isr: vec![1, 2, 3],
                ..Default::default()
            }],
            ..Default::default()
        });
        image.apply(&create.into(), 1).unwrap();
        let start = reassignment::start("t", partition(&image), target)
            .unwrap()
            .unwrap();
        image
            .apply(&Record::ChangePartitionReplicas(start).into(), 1)
            .unwrap();
        image
    }

    fn partition(image: &MetadataImage) -> &PartitionInfo {
        &image.topic("t").unwrap().partitions[0]
    }

    fn join_isr(image: &mut MetadataImage, isr: &[i32]) {
        let p = partition(image).clone();
        let update = Record::UpdateIsr(UpdateIsr {
            topic: "t".into(),
            partition: 0,
            leader_epoch: p.leader_epoch,
            isr: isr.to_vec(),
            partition_epoch: p.partition_epoch,
            isr_incarnations: vec![1; isr.len()],
            min_insync_replicas: 2,
        });
        image.apply(&update.into(), 1).unwrap();
    }

    /// One step with brokers `alive`, each reporting leader epoch `learnt`
    /// (`None`: no report), applied.
    fn step_having_learnt(image: &mut MetadataImage, alive: &[i32], learnt: Option<i32>) -> bool {
        let session_alive = |id: i32| alive.contains(&id);
        let reported = |_: &str, _: i32, _: i32| {
            learnt.map(|leader_epoch| ReplicaProgress {
                leader_epoch,
                log_end_offset: 0,
                high_watermark: 0,
            })
        };
        let judge = Judge {
            controller: 1,
            now_ms: 0,
            session_alive: &session_alive,
            unclean_allowed: &|_| false,
            min_insync_replicas: &|_| 2,
            replica_progress: &reported,
            lease_left_ms: &|_| 0,
        };
        match reassignments(image, &judge) {
            Some(batch) => {
                image.apply(&batch, 2).unwrap();
                true
            }
            None => false,
        }
    }

    /// One step with brokers `alive`, every replica knowing the current
    /// leader epoch.
    fn step(image: &mut MetadataImage, alive: &[i32]) -> bool {
        let epoch = partition(image).leader_epoch;
        step_having_learnt(image, alive, Some(epoch))
    }

    #[test]
    fn a_reassignment_waits_for_its_target_to_be_in_sync_then_completes() {
        let mut image = reassigning(&[1, 2, 4]);
        assert!(!step(&mut image, &[1, 2, 3, 4]), "4 is not in sync yet");
        join_isr(&mut image, &[1, 2, 3, 4]);
        assert!(step(&mut image, &[1, 2, 3, 4]));
        let p = partition(&image);
        assert_eq!(
            (p.replicas.clone(), p.isr.clone()),
            (vec![1, 2, 4], vec![1, 2, 4])
        );
        assert_eq!((p.leader, p.leader_epoch), (1, 0));
        assert!(!step(&mut image, &[1, 2, 3, 4]), "done");
    }

    #[test]
    fn a_leaving_leader_hands_over_to_a_live_target_replica_before_it_leaves() {
        let mut image = reassigning(&[4, 2, 3]);
        join_isr(&mut image, &[1, 2, 3, 4]);
        // 4 comes first in the target, but its session lapsed.
        assert!(step(&mut image, &[1, 2, 3]));
        let p = partition(&image);
        assert_eq!((p.leader, p.leader_epoch), (2, 1));
        assert_eq!(p.replicas, vec![4, 2, 3, 1], "1 is still a replica");
        assert_eq!(p.isr, vec![1, 2, 3, 4], "and in the ISR");
        let change = image.history().last().unwrap();
        assert_eq!(
            change.reason,
            LeaderChangeReason::Reassignment as i32,
            "recorded with its reason"
        );
        assert!(
            !step_having_learnt(&mut image, &[1, 2, 3], Some(0)),
            "1 has not learnt that it no longer leads"
        );
        assert!(!step_having_learnt(&mut image, &[1, 2, 3], None));
        assert!(step(&mut image, &[1, 2, 3]));
        let p = partition(&image);
        assert_eq!(p.replicas, vec![4, 2, 3]);
        assert_eq!(p.isr, vec![2, 3, 4]);
        assert!(!p.is_reassigning());
    }

    #[test]
    fn without_a_live_target_replica_the_leader_stays() {
        let mut image = reassigning(&[4]);
        join_isr(&mut image, &[1, 2, 3, 4]);
        assert!(!step(&mut image, &[1, 2, 3]));
        assert_eq!(partition(&image).leader, 1);
    }
}
