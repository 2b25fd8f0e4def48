use std::collections::BTreeMap;

use uuid::Uuid;

use super::*;
use crate::records::{
    CreateTopic, MetadataRecord, PartitionAssignment, Record, RegisterBroker, UpdateIsr,
};

/// Brokers 1 to 5 and topic `t` with one partition on 1, 2, 3 led by 1.
fn image() -> MetadataImage {
    let mut image = MetadataImage::default();
    for node_id in 1..=5 {
        let register = Record::RegisterBroker(RegisterBroker {
            node_id,
            host: "h".into(),
            port: 9092,
            rack: None,
            incarnation: 1,
            timestamp_ms: 0,
            max_replicas: None,
        });
        image.apply(&register.into(), 1).unwrap();
    }
    let create = Record::CreateTopic(CreateTopic {
        name: "t".into(),
        topic_id: Uuid::from_u128(1).as_bytes().to_vec(),
        partitions: vec![PartitionAssignment {
            partition: 0,
            replicas: vec![1, 2, 3],
            leader: 1,
            isr: vec![1, 2, 3],
            ..PartitionAssignment::default()
        }],
        configs: BTreeMap::new(),
        timestamp_ms: 0,
        controller: 1,
    });
    image.apply(&create.into(), 1).unwrap();
    image
}

fn partition(image: &MetadataImage) -> PartitionInfo {
    image.topic("t").unwrap().partitions[0].clone()
}

fn apply(image: &mut MetadataImage, change: ChangePartitionReplicas) {
    let record: MetadataRecord = Record::ChangePartitionReplicas(change).into();
    image.apply(&record, 1).unwrap();
}

fn join_isr(image: &mut MetadataImage, isr: &[i32]) {
    let p = partition(image);
    let update = Record::UpdateIsr(UpdateIsr {
        topic: "t".into(),
        partition: 0,
        leader_epoch: p.leader_epoch,
        isr: isr.to_vec(),
        partition_epoch: p.partition_epoch,
        isr_incarnations: vec![1; isr.len()],
        min_insync_replicas: 1,
    });
    image.apply(&update.into(), 1).unwrap();
}

#[test]
fn a_reassignment_adds_the_target_then_completes_once_it_is_in_sync() {
    let mut image = image();
    let start = start("t", &partition(&image), &[1, 2, 4]).unwrap().unwrap();
    apply(&mut image, start);
    let p = partition(&image);
    assert_eq!(p.replicas, vec![1, 2, 4, 3]);
    assert_eq!(p.adding_replicas, vec![4]);
    assert_eq!(p.removing_replicas, vec![3]);
    assert_eq!(
        p.isr,
        vec![1, 2, 3],
        "nobody leaves the ISR before completion"
    );
    assert_eq!(p.original_replicas(), vec![1, 2, 3]);
    assert_eq!(p.target_replicas(), vec![1, 2, 4]);
    assert_eq!(complete("t", &p), None, "4 is not in sync yet");

    join_isr(&mut image, &[1, 2, 3, 4]);
    let done = complete("t", &partition(&image)).unwrap();
    apply(&mut image, done);
    let p = partition(&image);
    assert_eq!(p.replicas, vec![1, 2, 4]);
    assert_eq!(p.isr, vec![1, 2, 4]);
    assert!(!p.is_reassigning());
    assert_eq!((p.leader, p.leader_epoch), (1, 0), "the leader stays");
}

#[test]
fn a_leaving_leader_blocks_completion_until_it_is_moved() {
    let mut image = image();
    let change = start("t", &partition(&image), &[2, 3, 4]).unwrap().unwrap();
    apply(&mut image, change);
    join_isr(&mut image, &[1, 2, 3, 4]);
    assert_eq!(complete("t", &partition(&image)), None);
}

#[test]
fn a_target_the_isr_already_covers_completes_at_once() {
    let image = image();
    let shrink = start("t", &partition(&image), &[2, 1]).unwrap().unwrap();
    assert_eq!(shrink.replicas, vec![2, 1]);
    assert_eq!(shrink.isr, vec![1, 2]);
    assert!(shrink.adding_replicas.is_empty() && shrink.removing_replicas.is_empty());
    assert_eq!(
        start("t", &partition(&image), &[1, 2, 3]),
        Ok(None),
        "nothing to do"
    );
    let tail = start("t", &partition(&image), &[1, 2]).unwrap().unwrap();
    assert_eq!((tail.replicas, tail.isr), (vec![1, 2], vec![1, 2]));
}

#[test]
fn a_new_target_is_measured_from_the_original_replicas() {
    let mut image = image();
    let change = start("t", &partition(&image), &[4, 5, 1]).unwrap().unwrap();
    apply(&mut image, change);
    join_isr(&mut image, &[1, 2, 3, 5]);
    let again = start("t", &partition(&image), &[1, 2, 4]).unwrap().unwrap();
    // 5 was being added and is not wanted any more: it goes at once.
    assert_eq!(again.replicas, vec![1, 2, 4, 3]);
    assert_eq!(again.adding_replicas, vec![4]);
    assert_eq!(again.removing_replicas, vec![3]);
    assert_eq!(again.isr, vec![1, 2, 3]);
    apply(&mut image, again);
    // A cancel now goes back to the replicas before either.
    let reverted = cancel("t", &partition(&image)).unwrap();
    assert_eq!(reverted.replicas, vec![1, 2, 3]);
    // KIP-860 counts the replicas the partition is heading for.
    let p = partition(&image);
    assert_eq!(
        image.check_reassignment_target(&p, &[1, 2, 5], false),
        Ok(())
    );
    assert_eq!(
        image.check_reassignment_target(&p, &[1, 2], false),
        Err(ReassignmentError::ReplicationFactorChanged { from: 3, to: 2 })
    );
}

#[test]
fn a_new_target_that_drops_a_leader_being_added_waits_for_it_to_hand_over() {
    let mut p = partition(&image());
    p.replicas = vec![4, 5, 1, 2, 3];
    p.adding_replicas = vec![4, 5];
    p.removing_replicas = vec![2, 3];
    p.isr = vec![1, 2, 3, 4];
    p.leader = 4;
    // Kept as a replica to remove, 4 would pass for an original replica,
    // and a later cancel would keep it.
    assert!(matches!(
        start("t", &p, &[1, 2, 3]),
        Err(ReassignmentError::LeaderBeingAdded { leader: 4, .. })
    ));
    p.leader = 1;
    let again = start("t", &p, &[1, 2, 3]).unwrap().unwrap();
    assert_eq!(again.replicas, vec![1, 2, 3]);
    assert_eq!(again.isr, vec![1, 2, 3]);
    assert!(again.adding_replicas.is_empty() && again.removing_replicas.is_empty());
}

#[test]
fn a_cancel_reverts_to_the_original_replicas_and_drops_the_added_from_the_isr() {
    let mut image = image();
    let change = start("t", &partition(&image), &[1, 4, 5]).unwrap().unwrap();
    apply(&mut image, change);
    join_isr(&mut image, &[1, 2, 3, 4]);
    let change = cancel("t", &partition(&image)).unwrap();
    apply(&mut image, change);
    let p = partition(&image);
    assert_eq!(p.replicas, vec![1, 2, 3]);
    assert_eq!(p.isr, vec![1, 2, 3]);
    assert!(!p.is_reassigning());
    assert_eq!(
        cancel("t", &p),
        Err(ReassignmentError::NotInProgress),
        "nothing left to cancel"
    );
}

#[test]
fn a_cancel_that_would_leave_the_isr_without_an_original_replica_is_refused() {
    let mut p = partition(&image());
    p.replicas = vec![4, 1];
    p.adding_replicas = vec![4];
    p.removing_replicas = vec![1];
    p.isr = vec![4];
    p.leader = -1;
    assert!(matches!(
        cancel("t", &p),
        Err(ReassignmentError::RevertNeedsUncleanElection { .. })
    ));
}

#[test]
fn a_cancel_waits_for_a_leader_being_added_to_hand_over() {
    let mut p = partition(&image());
    p.replicas = vec![4, 1, 2];
    p.adding_replicas = vec![4];
    p.removing_replicas = vec![2];
    p.isr = vec![4, 1, 2];
    p.leader = 4;
    assert!(matches!(
        cancel("t", &p),
        Err(ReassignmentError::LeaderBeingAdded { leader: 4, .. })
    ));
    p.leader = 1;
    let change = cancel("t", &p).unwrap();
    assert_eq!((change.replicas, change.isr), (vec![1, 2], vec![1, 2]));
}

#[test]
fn targets_are_checked_as_kafka_checks_them() {
    let image = image();
    let p = partition(&image);
    let check = |target: &[i32], allow| image.check_reassignment_target(&p, target, allow);
    assert_eq!(check(&[], true), Err(ReassignmentError::EmptyReplicas));
    assert_eq!(
        check(&[1, 9], true),
        Err(ReassignmentError::UnknownBroker(9))
    );
    assert_eq!(
        check(&[2, 1, 2], true),
        Err(ReassignmentError::DuplicateReplica(2))
    );
    assert_eq!(
        check(&[2, 2, 9], true),
        Err(ReassignmentError::DuplicateReplica(2)),
        "in id order, as Kafka checks"
    );
    assert_eq!(
        check(&[], false),
        Err(ReassignmentError::ReplicationFactorChanged { from: 3, to: 0 }),
        "the replication factor first"
    );
    assert_eq!(
        check(&[1, 2], false),
        Err(ReassignmentError::ReplicationFactorChanged { from: 3, to: 2 })
    );
    assert_eq!(
        ReassignmentError::ReplicationFactorChanged { from: 3, to: 2 }.to_string(),
        "The replication factor is changed from 3 to 2"
    );
    assert_eq!(check(&[1, 2], true), Ok(()));
    assert_eq!(check(&[4, 5, 1], false), Ok(()));
}

#[test]
fn a_change_computed_from_an_older_partition_epoch_is_refused() {
    let mut image = image();
    let stale = start("t", &partition(&image), &[1, 2, 4]).unwrap().unwrap();
    join_isr(&mut image, &[1, 2]);
    let record: MetadataRecord = Record::ChangePartitionReplicas(stale).into();
    assert!(matches!(
        image.apply(&record, 1),
        Err(ApplyError::StalePartitionEpoch { .. })
    ));
}

#[test]
fn a_change_that_breaks_an_invariant_is_refused() {
    let image = image();
    let p = partition(&image);
    let base = ChangePartitionReplicas {
        topic: "t".into(),
        partition: 0,
        partition_epoch: p.partition_epoch,
        replicas: vec![1, 2, 3],
        adding_replicas: vec![],
        removing_replicas: vec![],
        isr: vec![1, 2, 3],
    };
    let refused = |change: ChangePartitionReplicas| {
        let mut image = image.clone();
        let record: MetadataRecord = Record::ChangePartitionReplicas(change).into();
        image.apply(&record, 1).unwrap_err()
    };
    assert_eq!(
        refused(ChangePartitionReplicas {
            replicas: vec![2, 3],
            isr: vec![2, 3],
            ..base.clone()
        }),
        ApplyError::NotAReplica(1),
        "the leader stays a replica"
    );
    assert_eq!(
        refused(ChangePartitionReplicas {
            replicas: vec![1, 2, 3, 9],
            ..base.clone()
        }),
        ApplyError::UnknownBroker(9)
    );
    assert_eq!(
        refused(ChangePartitionReplicas {
            replicas: vec![1, 2, 3, 4],
            isr: vec![1, 2, 3, 4],
            ..base.clone()
        }),
        ApplyError::IneligibleIsrMember {
            node_id: 4,
            reason: "a replica change does not add to the ISR".into()
        }
    );
    assert_eq!(
        refused(ChangePartitionReplicas {
            adding_replicas: vec![2],
            removing_replicas: vec![2],
            ..base.clone()
        }),
        ApplyError::AddedAndRemoved(2)
    );
    assert_eq!(
        refused(ChangePartitionReplicas {
            isr: vec![2, 3],
            ..base.clone()
        }),
        ApplyError::LeaderNotInIsr(1)
    );
    assert_eq!(
        refused(ChangePartitionReplicas {
            replicas: vec![],
            ..base
        }),
        ApplyError::NoReplicas
    );
}
