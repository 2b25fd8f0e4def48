use super::*;
use crate::{
    records::{
        AllocateProducerIds, FenceBroker, RecordBatch, RegisterBroker, SetHistoryRetention,
        SetPartitionLeader, UpdateIsr,
    },
    snapshot,
};

fn assignment(partition: i32) -> PartitionAssignment {
    PartitionAssignment {
        partition,
        replicas: vec![1, 2, 3],
        leader: 1,
        leader_epoch: 0,
        isr: vec![1, 2, 3],
        partition_epoch: 0,
        elr: vec![],
        predecessor_lease_ms: 0,
        adding_replicas: vec![],
        removing_replicas: vec![],
        previous_leader: None,
    }
}

fn create(name: &str, id: u128, partitions: i32) -> MetadataRecord {
    Record::CreateTopic(CreateTopic {
        name: name.into(),
        topic_id: Uuid::from_u128(id).as_bytes().to_vec(),
        partitions: (0..partitions).map(assignment).collect(),
        configs: BTreeMap::new(),
        timestamp_ms: 5,
        controller: 1,
    })
    .into()
}

fn register(node_id: i32, incarnation: u64) -> MetadataRecord {
    Record::RegisterBroker(RegisterBroker {
        node_id,
        host: "h".into(),
        port: 9092,
        rack: None,
        incarnation,
        timestamp_ms: 0,
        max_replicas: None,
    })
    .into()
}

fn set_leader(leader: i32, epoch: i32, isr: Vec<i32>) -> MetadataRecord {
    Record::SetPartitionLeader(SetPartitionLeader {
        topic: "t".into(),
        partition: 0,
        leader,
        leader_epoch: epoch,
        isr: isr.clone(),
        reason: LeaderChangeReason::BrokerFailure as i32,
        controller: 2,
        eligible: isr,
        log_end_offset: 10,
        high_watermark: 9,
        timestamp_ms: 77,
        min_insync_replicas: 3,
        new_leader_log_end_offset: Some(8),
        predecessor_lease_ms: 0,
        partition_epoch: None,
    })
    .into()
}

#[test]
fn topics_are_created_extended_altered_and_deleted() {
    let mut image = MetadataImage::default();
    image.apply(&create("orders", 1, 2), 1).unwrap();
    assert_eq!(image.topic("orders").unwrap().partitions.len(), 2);
    assert_eq!(
        image.topic_by_id(&Uuid::from_u128(1)).unwrap().name,
        "orders"
    );
    image
        .apply(
            &Record::CreatePartitions(CreatePartitions {
                name: "orders".into(),
                partitions: vec![assignment(2)],
            })
            .into(),
            1,
        )
        .unwrap();
    image
        .apply(
            &Record::AlterTopicConfig(AlterTopicConfig {
                name: "orders".into(),
                set: [("retention.ms".to_string(), "5".to_string())].into(),
                delete: vec![],
            })
            .into(),
            1,
        )
        .unwrap();
    let topic = image.topic("orders").unwrap();
    assert_eq!(topic.partitions.len(), 3);
    assert_eq!(topic.configs["retention.ms"], "5");
    image
        .apply(
            &Record::DeleteTopic(DeleteTopic {
                name: "orders".into(),
            })
            .into(),
            1,
        )
        .unwrap();
    assert!(image.topic("orders").is_none());
    assert!(image.topic_by_id(&Uuid::from_u128(1)).is_none());
}

#[test]
fn invalid_records_are_rejected_without_changing_the_image() {
    let mut image = MetadataImage::default();
    image.apply(&create("a", 1, 1), 1).unwrap();
    let before = image.clone();
    let rejected = [
        (create("a", 2, 1), ApplyError::TopicExists("a".into())),
        (
            create("b", 1, 1),
            ApplyError::TopicIdInUse(Uuid::from_u128(1)),
        ),
        (
            Record::DeleteTopic(DeleteTopic { name: "zz".into() }).into(),
            ApplyError::UnknownTopic("zz".into()),
        ),
        (MetadataRecord { record: None }, ApplyError::Empty),
    ];
    for (record, error) in rejected {
        assert_eq!(image.apply(&record, 1), Err(error));
    }
    assert!(matches!(
        image.apply(
            &Record::CreatePartitions(CreatePartitions {
                name: "a".into(),
                partitions: vec![assignment(5)],
            })
            .into(),
            1
        ),
        Err(ApplyError::PartitionNumbering { expected: 1, .. })
    ));
    assert_eq!(image, before);
}

#[test]
fn producer_id_blocks_never_overlap() {
    let mut image = MetadataImage::default();
    let block = |start| -> MetadataRecord {
        Record::AllocateProducerIds(AllocateProducerIds {
            node_id: 1,
            start,
            size: 1000,
        })
        .into()
    };
    image.apply(&block(0), 1).unwrap();
    assert_eq!(image.next_producer_id(), 1000);
    assert!(matches!(
        image.apply(&block(0), 1),
        Err(ApplyError::StaleProducerIdBlock { expected: 1000, .. })
    ));
    image.apply(&block(1000), 1).unwrap();
    assert_eq!(image.next_producer_id(), 2000);
}

#[test]
fn brokers_register_fence_and_unfence_by_incarnation() {
    let mut image = MetadataImage::default();
    image.apply(&register(1, 10), 1).unwrap();
    image.apply(&register(2, 10), 1).unwrap();
    let fence = |incarnation| -> MetadataRecord {
        Record::FenceBroker(FenceBroker {
            node_id: 1,
            incarnation,
        })
        .into()
    };
    assert!(matches!(
        image.apply(&fence(9), 1),
        Err(ApplyError::StaleIncarnation { .. })
    ));
    image.apply(&fence(10), 1).unwrap();
    assert_eq!(
        image.live_brokers().map(|b| b.node_id).collect::<Vec<_>>(),
        vec![2]
    );
    // A restarted broker registers a newer incarnation and is live again.
    image.apply(&register(1, 11), 1).unwrap();
    assert_eq!(image.live_brokers().count(), 2);
    assert!(matches!(
        image.apply(&register(1, 5), 1),
        Err(ApplyError::StaleIncarnation { .. })
    ));
    assert!(image.apply(&fence(99), 1).is_err());
}

#[test]
fn leader_changes_need_the_next_epoch_and_are_recorded() {
    let mut image = MetadataImage::default();
    image.apply(&create("t", 1, 1), 3).unwrap();
    assert_eq!(image.history().count(), 1);
    assert_eq!(
        image.apply(&set_leader(2, 2, vec![2, 3]), 4),
        Err(ApplyError::StaleLeaderEpoch {
            expected: 1,
            got: 2
        })
    );
    assert_eq!(
        image.apply(&set_leader(9, 1, vec![2]), 4),
        Err(ApplyError::NotAReplica(9))
    );
    image.apply(&set_leader(2, 1, vec![2, 3]), 4).unwrap();
    let partition = image.topic("t").unwrap().partition(0).unwrap().clone();
    assert_eq!((partition.leader, partition.leader_epoch), (2, 1));
    let change = image.history().last().unwrap();
    assert_eq!(change.previous_leader, 1);
    assert_eq!(change.new_leader, 2);
    assert_eq!(change.raft_term, 4);
    assert_eq!(change.sequence, 1);
    assert_eq!(change.reason, LeaderChangeReason::BrokerFailure as i32);
    // No candidate: the partition goes offline at the next epoch.
    image.apply(&set_leader(-1, 2, vec![]), 4).unwrap();
    assert_eq!(image.topic("t").unwrap().partition(0).unwrap().leader, -1);
}

#[test]
fn a_leader_change_decided_before_the_isr_changed_is_refused() {
    let mut image = MetadataImage::default();
    for id in 1..=3 {
        image.apply(&register(id, 10), 1).unwrap();
    }
    image.apply(&create("t", 1, 1), 1).unwrap();
    // Decided while 3 was in the ISR; then the leader took 3 out, and
    // acknowledged writes 3 does not have.
    let mut decided = set_leader(3, 1, vec![1, 2, 3]);
    if let Some(Record::SetPartitionLeader(change)) = &mut decided.record {
        change.partition_epoch = Some(0);
    }
    image
        .apply(&update_isr(0, 0, &[(1, 10), (2, 10)], 2), 1)
        .unwrap();
    assert_eq!(
        image.apply(&decided, 1),
        Err(ApplyError::StalePartitionEpoch {
            expected: 1,
            got: 0
        })
    );
    assert_eq!(image.topic("t").unwrap().partition(0).unwrap().leader, 1);
}

#[test]
fn a_batch_decided_before_another_leader_change_may_be_decided_again() {
    let mut image = MetadataImage::default();
    image.apply(&create("t", 1, 1), 1).unwrap();
    let batch =
        |records: Vec<MetadataRecord>| MetadataRecord::from(Record::Batch(RecordBatch { records }));
    // Decided on the image before this move (a controlled shutdown racing
    // the rebalancer, say): stale, worth deciding again.
    image.apply(&set_leader(2, 1, vec![1, 2, 3]), 1).unwrap();
    let stale = image
        .apply(&batch(vec![set_leader(3, 1, vec![1, 2, 3])]), 1)
        .unwrap_err();
    assert!(stale.is_stale(), "{stale}");
    let not_a_replica = image
        .apply(&batch(vec![set_leader(9, 2, vec![1, 2, 3])]), 1)
        .unwrap_err();
    assert!(!not_a_replica.is_stale(), "{not_a_replica}");
}

#[test]
fn the_history_is_bounded() {
    let mut image = MetadataImage::default();
    image.apply(&create("t", 1, 1), 1).unwrap();
    for epoch in 1..=(HISTORY_RETENTION as i32 + 10) {
        image
            .apply(&set_leader(1 + epoch % 3, epoch, vec![1, 2, 3]), 1)
            .unwrap();
    }
    assert_eq!(image.history().count(), HISTORY_RETENTION);
    assert_eq!(
        image.history().last().unwrap().sequence,
        HISTORY_RETENTION as u64 + 10
    );
}

#[test]
fn the_history_keeps_what_the_controller_set() {
    let mut image = MetadataImage::default();
    image.apply(&create("t", 1, 1), 1).unwrap();
    for epoch in 1..=10 {
        image
            .apply(&set_leader(1 + epoch % 3, epoch, vec![1, 2, 3]), 1)
            .unwrap();
    }
    let retain = |entries| Record::SetHistoryRetention(SetHistoryRetention { entries }).into();
    assert_eq!(
        image.apply(&retain(0), 1),
        Err(ApplyError::InvalidHistoryRetention)
    );
    image.apply(&retain(4), 1).unwrap();
    assert_eq!(image.history_retention(), 4);
    let kept: Vec<u64> = image.history().map(|c| c.sequence).collect();
    assert_eq!(kept, vec![7, 8, 9, 10], "the newest changes are kept");
    image.apply(&set_leader(1, 11, vec![1, 2, 3]), 1).unwrap();
    let kept: Vec<u64> = image.history().map(|c| c.sequence).collect();
    assert_eq!(kept, vec![8, 9, 10, 11]);
    image.apply(&retain(100), 1).unwrap();
    image.apply(&set_leader(2, 12, vec![1, 2, 3]), 1).unwrap();
    assert_eq!(image.history().count(), 5, "a larger retention keeps more");
}

#[test]
fn commit_times_are_stamped_on_the_changes_named() {
    let mut image = MetadataImage::default();
    image.apply(&create("t", 1, 1), 1).unwrap();
    for epoch in 1..=4 {
        image
            .apply(&set_leader(1 + epoch % 3, epoch, vec![1, 2, 3]), 1)
            .unwrap();
    }
    let committed = |first_sequence, count, committed_at_ms| {
        Record::LeadershipChangesCommitted(LeadershipChangesCommitted {
            first_sequence,
            count,
            committed_at_ms,
        })
        .into()
    };
    image.apply(&committed(2, 2, 90), 1).unwrap();
    // A second word on the same change does not overwrite the first.
    image.apply(&committed(3, 1, 95), 1).unwrap();
    let times: Vec<i64> = image.history().map(|c| c.committed_at_ms).collect();
    assert_eq!(times, vec![0, 0, 90, 90, 0]);
    // Changes retention dropped, or not made yet, are skipped.
    image.apply(&committed(40, 3, 99), 1).unwrap();
    let times: Vec<i64> = image.history().map(|c| c.committed_at_ms).collect();
    assert_eq!(times, vec![0, 0, 90, 90, 0]);
}

#[test]
fn applying_the_same_records_gives_the_same_image() {
    let records = vec![
        register(1, 1),
        create("x", 9, 3),
        create("x", 10, 3),
        Record::DeleteTopic(DeleteTopic { name: "x".into() }).into(),
        create("x", 11, 1),
    ];
    let replay = |records: &[MetadataRecord]| {
        let mut image = MetadataImage::default();
        for r in records {
            let _ = image.apply(r, 1);
        }
        image
    };
    assert_eq!(replay(&records), replay(&records));
    assert_eq!(replay(&records).topic("x").unwrap().id, Uuid::from_u128(11));
}

#[test]
fn deletions_are_remembered_by_id_within_their_retention() {
    let mut image = MetadataImage::default();
    let delete = |name: &str| -> MetadataRecord {
        Record::DeleteTopic(DeleteTopic { name: name.into() }).into()
    };
    image.apply(&create("t", 1, 1), 1).unwrap();
    image.apply(&delete("t"), 1).unwrap();
    // A new topic of the same name is another topic: its id is not deleted.
    image.apply(&create("t", 2, 1), 1).unwrap();
    assert!(image.was_deleted(&Uuid::from_u128(1)));
    assert!(!image.was_deleted(&Uuid::from_u128(2)));

    for id in 3..3 + DELETED_TOPICS_RETENTION as u128 {
        image.apply(&create("churn", id, 1), 1).unwrap();
        image.apply(&delete("churn"), 1).unwrap();
    }
    assert_eq!(image.deleted_topics().count(), DELETED_TOPICS_RETENTION);
    assert!(
        !image.was_deleted(&Uuid::from_u128(1)),
        "the oldest is forgotten"
    );
    assert!(image.was_deleted(&Uuid::from_u128(3)));
}

/// Brokers 1, 2 and 3 registered at incarnation 10, and topic "t" with one
/// partition on all three, led by 1, everyone in sync.
fn three_brokers_one_partition() -> MetadataImage {
    let mut image = MetadataImage::default();
    for id in 1..=3 {
        image.apply(&register(id, 10), 1).unwrap();
    }
    image.apply(&create("t", 1, 1), 1).unwrap();
    image
}

/// An ISR update from leader epoch `leader_epoch` and partition epoch
/// `partition_epoch`; `isr` pairs each member with its incarnation.
fn update_isr(
    leader_epoch: i32,
    partition_epoch: i32,
    isr: &[(i32, u64)],
    min_insync_replicas: i32,
) -> MetadataRecord {
    Record::UpdateIsr(UpdateIsr {
        topic: "t".into(),
        partition: 0,
        leader_epoch,
        isr: isr.iter().map(|&(id, _)| id).collect(),
        partition_epoch,
        isr_incarnations: isr.iter().map(|&(_, incarnation)| incarnation).collect(),
        min_insync_replicas,
    })
    .into()
}

fn partition(image: &MetadataImage) -> PartitionInfo {
    image.topic("t").unwrap().partition(0).unwrap().clone()
}

fn fence(node_id: i32, incarnation: u64, fenced: bool) -> MetadataRecord {
    if fenced {
        Record::FenceBroker(FenceBroker {
            node_id,
            incarnation,
        })
        .into()
    } else {
        Record::UnfenceBroker(UnfenceBroker {
            node_id,
            incarnation,
        })
        .into()
    }
}

#[test]
fn an_isr_update_from_a_stale_partition_epoch_is_rejected() {
    let mut image = three_brokers_one_partition();
    let shrink = update_isr(0, 0, &[(1, 10), (2, 10)], 1);
    image.apply(&shrink, 1).unwrap();
    assert_eq!(partition(&image).partition_epoch, 1);
    let before = image.clone();
    // The same update again, or another one computed before it, is stale.
    for record in [shrink, update_isr(0, 0, &[(1, 10), (2, 10), (3, 10)], 1)] {
        assert_eq!(
            image.apply(&record, 1),
            Err(ApplyError::StalePartitionEpoch {
                expected: 1,
                got: 0
            })
        );
    }
    assert_eq!(
        image.apply(&update_isr(0, 2, &[(1, 10)], 1), 1),
        Err(ApplyError::StalePartitionEpoch {
            expected: 1,
            got: 2
        })
    );
    assert_eq!(image, before);
}

#[test]
fn an_isr_update_is_still_fenced_by_leader_epoch() {
    let mut image = three_brokers_one_partition();
    let before = image.clone();
    for epoch in [-1, 1] {
        assert_eq!(
            image.apply(&update_isr(epoch, 0, &[(1, 10), (2, 10)], 1), 1),
            Err(ApplyError::StaleLeaderEpoch {
                expected: 0,
                got: epoch
            })
        );
    }
    assert_eq!(image, before);
}

#[test]
fn a_member_joins_the_isr_only_at_its_registered_incarnation() {
    let mut image = three_brokers_one_partition();
    image
        .apply(&update_isr(0, 0, &[(1, 10), (2, 10)], 1), 1)
        .unwrap();
    // Broker 3 restarts: the leader still knows it at incarnation 10.
    image.apply(&register(3, 11), 1).unwrap();
    let before = image.clone();
    assert!(matches!(
        image.apply(&update_isr(0, 1, &[(1, 10), (2, 10), (3, 10)], 1), 1),
        Err(ApplyError::IneligibleIsrMember { node_id: 3, .. })
    ));
    assert_eq!(image, before);
    image
        .apply(&update_isr(0, 1, &[(1, 10), (2, 10), (3, 11)], 1), 1)
        .unwrap();
    assert_eq!(partition(&image).isr, vec![1, 2, 3]);
}

#[test]
fn a_fenced_broker_cannot_join_the_isr() {
    let mut image = three_brokers_one_partition();
    image
        .apply(&update_isr(0, 0, &[(1, 10), (2, 10)], 1), 1)
        .unwrap();
    image.apply(&fence(3, 10, true), 1).unwrap();
    let expand = update_isr(0, 1, &[(1, 10), (2, 10), (3, 10)], 1);
    assert!(matches!(
        image.apply(&expand, 1),
        Err(ApplyError::IneligibleIsrMember { node_id: 3, .. })
    ));
    image.apply(&fence(3, 10, false), 1).unwrap();
    image.apply(&expand, 1).unwrap();
}

#[test]
fn an_unregistered_broker_cannot_join_the_isr() {
    let mut image = MetadataImage::default();
    image.apply(&register(1, 10), 1).unwrap();
    image.apply(&register(2, 10), 1).unwrap();
    image.apply(&create("t", 1, 1), 1).unwrap();
    image
        .apply(&update_isr(0, 0, &[(1, 10), (2, 10)], 1), 1)
        .unwrap();
    assert!(matches!(
        image.apply(&update_isr(0, 1, &[(1, 10), (2, 10), (3, 0)], 1), 1),
        Err(ApplyError::IneligibleIsrMember { node_id: 3, .. })
    ));
}

#[test]
fn members_already_in_the_isr_are_not_checked_again() {
    let mut image = three_brokers_one_partition();
    // Broker 2 is fenced, and the leader names a wrong incarnation for
    // it; it is not joining, so the leader can still change the ISR around
    // it. (A restarted broker is out of the ISR already: see
    // a_restarted_broker_leaves_the_isr_and_elr_of_partitions_it_does_not_lead.)
    image.apply(&fence(2, 10, true), 1).unwrap();
    image
        .apply(&update_isr(0, 0, &[(1, 10), (2, 0), (3, 10)], 1), 1)
        .unwrap();
    image
        .apply(&update_isr(0, 1, &[(1, 10), (3, 10)], 1), 1)
        .unwrap();
    assert_eq!(partition(&image).isr, vec![1, 3]);
}

#[test]
fn an_isr_update_keeps_the_leader_and_a_well_formed_isr() {
    let mut image = three_brokers_one_partition();
    let before = image.clone();
    let rejected = [
        (
            update_isr(0, 0, &[(2, 10), (3, 10)], 1),
            ApplyError::LeaderNotInIsr(1),
        ),
        (update_isr(0, 0, &[], 1), ApplyError::LeaderNotInIsr(1)),
        (
            update_isr(0, 0, &[(1, 10), (2, 10), (2, 10)], 1),
            ApplyError::DuplicateIsrMember(2),
        ),
        (
            update_isr(0, 0, &[(1, 10), (7, 10)], 1),
            ApplyError::NotAReplica(7),
        ),
    ];
    for (record, error) in rejected {
        assert_eq!(image.apply(&record, 1), Err(error));
    }
    let mut short = UpdateIsr {
        topic: "t".into(),
        partition: 0,
        isr: vec![1, 2],
        isr_incarnations: vec![10],
        ..Default::default()
    };
    assert_eq!(
        image.apply(&Record::UpdateIsr(short.clone()).into(), 1),
        Err(ApplyError::IsrIncarnations)
    );
    assert_eq!(image, before);
    // With no leader, nobody may change the ISR.
    image.apply(&set_leader(-1, 1, vec![]), 1).unwrap();
    short.leader_epoch = 1;
    short.partition_epoch = 1;
    short.isr_incarnations = vec![10, 10];
    assert_eq!(
        image.apply(&Record::UpdateIsr(short).into(), 1),
        Err(ApplyError::LeaderNotInIsr(-1))
    );
}

#[test]
fn every_isr_or_leader_change_bumps_the_partition_epoch() {
    let mut image = three_brokers_one_partition();
    assert_eq!(partition(&image).partition_epoch, 0);
    image
        .apply(&update_isr(0, 0, &[(1, 10), (2, 10)], 1), 1)
        .unwrap();
    assert_eq!(partition(&image).partition_epoch, 1);
    image.apply(&set_leader(2, 1, vec![2]), 1).unwrap();
    let after_election = partition(&image);
    assert_eq!(
        (after_election.leader_epoch, after_election.partition_epoch),
        (1, 2)
    );
    // The new leader's update names the epoch the election left.
    image
        .apply(&update_isr(1, 2, &[(2, 10), (3, 10)], 1), 1)
        .unwrap();
    assert_eq!(partition(&image).partition_epoch, 3);
}

#[test]
fn members_leaving_an_isr_below_min_become_eligible_leaders() {
    let mut image = three_brokers_one_partition();
    let elr = |image: &MetadataImage| partition(image).elr;
    // Down to min ISR 2: nobody is needed outside the ISR.
    image
        .apply(&update_isr(0, 0, &[(1, 10), (2, 10)], 2), 1)
        .unwrap();
    assert_eq!(elr(&image), Vec::<i32>::new());
    // Below min: the high watermark stops, so 2 holds all that is committed.
    image.apply(&update_isr(0, 1, &[(1, 10)], 2), 1).unwrap();
    assert_eq!(elr(&image), vec![2]);
    // 3 joins but the ISR is still below min: 2 stays eligible, 3 is not
    // both in the ISR and in the ELR.
    image
        .apply(&update_isr(0, 2, &[(1, 10), (3, 10)], 3), 1)
        .unwrap();
    assert_eq!(elr(&image), vec![2]);
    image.apply(&update_isr(0, 3, &[(1, 10)], 3), 1).unwrap();
    assert_eq!(elr(&image), vec![2, 3]);
    // Back at min ISR: the ELR is cleared.
    image
        .apply(&update_isr(0, 4, &[(1, 10), (3, 10)], 2), 1)
        .unwrap();
    assert_eq!(elr(&image), Vec::<i32>::new());
}

#[test]
fn a_leader_change_takes_new_isr_members_out_of_the_elr() {
    let mut image = three_brokers_one_partition();
    image.apply(&update_isr(0, 0, &[(1, 10)], 3), 1).unwrap();
    assert_eq!(partition(&image).elr, vec![2, 3]);
    // The leader dies; 2 is elected from the ELR, 3 stays eligible, and
    // so does 1: it left an ISR below min ISR, whose high watermark could
    // not move without it.
    image.apply(&set_leader(2, 1, vec![2]), 1).unwrap();
    assert_eq!(partition(&image).elr, vec![3, 1]);
    // Offline: the ELR survives for a later election.
    image.apply(&set_leader(-1, 2, vec![]), 1).unwrap();
    assert_eq!(partition(&image).elr, vec![3, 1, 2]);
}

#[test]
fn a_leader_change_at_or_above_min_isr_clears_the_elr() {
    let mut image = three_brokers_one_partition();
    image.apply(&update_isr(0, 0, &[(1, 10)], 3), 1).unwrap();
    let mut record = set_leader(2, 1, vec![2, 3]);
    if let Some(Record::SetPartitionLeader(r)) = &mut record.record {
        r.min_insync_replicas = 2;
    }
    image.apply(&record, 1).unwrap();
    assert_eq!(partition(&image).elr, Vec::<i32>::new());
}

#[test]
fn a_new_leader_must_be_in_its_isr_once() {
    let mut image = three_brokers_one_partition();
    for (leader, isr) in [(2, vec![3]), (2, vec![2, 2])] {
        let before = image.clone();
        assert!(image.apply(&set_leader(leader, 1, isr), 1).is_err());
        assert_eq!(image, before);
    }
}

#[test]
fn a_batch_applies_whole_or_not_at_all() {
    let mut image = three_brokers_one_partition();
    let fence = |node_id| {
        MetadataRecord::from(Record::FenceBroker(FenceBroker {
            node_id,
            incarnation: 10,
        }))
    };
    let batch =
        |records: Vec<MetadataRecord>| MetadataRecord::from(Record::Batch(RecordBatch { records }));
    // The second record is stale (epoch 5 is not next): nothing applies.
    let before = image.clone();
    let failed = image.apply(&batch(vec![fence(1), set_leader(2, 5, vec![2])]), 1);
    assert!(
        matches!(failed, Err(ApplyError::InBatch { index: 1, .. })),
        "{failed:?}"
    );
    assert_eq!(image, before);
    assert!(image.apply(&batch(vec![batch(vec![fence(1)])]), 1).is_err());
    assert_eq!(image, before);
    image
        .apply(&batch(vec![fence(1), set_leader(2, 1, vec![2, 3])]), 1)
        .unwrap();
    assert!(image.broker(1).unwrap().fenced);
    assert_eq!(partition(&image).leader, 2);
    assert_eq!(image.history().count(), before.history().count() + 1);
}

#[test]
fn new_partitions_start_at_partition_epoch_zero_without_an_elr() {
    let mut image = MetadataImage::default();
    let carried = PartitionAssignment {
        partition_epoch: 5,
        elr: vec![2],
        ..assignment(0)
    };
    let record = Record::CreateTopic(CreateTopic {
        name: "t".into(),
        topic_id: Uuid::from_u128(1).as_bytes().to_vec(),
        partitions: vec![carried.clone()],
        ..Default::default()
    });
    image.apply(&record.into(), 1).unwrap();
    let more = Record::CreatePartitions(CreatePartitions {
        name: "t".into(),
        partitions: vec![PartitionAssignment {
            partition: 1,
            ..carried
        }],
    });
    image.apply(&more.into(), 1).unwrap();
    for p in &image.topic("t").unwrap().partitions {
        assert_eq!((p.partition_epoch, p.elr.as_slice()), (0, &[][..]));
    }
}

#[test]
fn a_snapshot_keeps_partition_epoch_and_elr() {
    let mut image = three_brokers_one_partition();
    image.apply(&update_isr(0, 0, &[(1, 10)], 2), 1).unwrap();
    let members = snapshot::Members::default();
    let (restored, _) = snapshot::decode(&snapshot::encode(&image, &members)).unwrap();
    let p = partition(&restored);
    assert_eq!((p.partition_epoch, p.elr), (1, vec![2, 3]));
    assert_eq!(restored, image);
}

#[test]
fn a_restarted_broker_leaves_the_isr_and_elr_of_partitions_it_does_not_lead() {
    let mut image = three_brokers_one_partition();
    // 3 left the ISR below min ISR: it is eligible; 2 is still in sync.
    image
        .apply(&update_isr(0, 0, &[(1, 10), (2, 10)], 3), 1)
        .unwrap();
    assert_eq!(partition(&image).elr, vec![3]);
    let epoch = partition(&image).partition_epoch;

    // The same incarnation registering again changes nothing.
    image.apply(&register(2, 10), 1).unwrap();
    assert_eq!(partition(&image).isr, vec![1, 2]);
    // Broker 2 and broker 3 come back as new incarnations: what their logs
    // held is no longer trusted.
    image.apply(&register(2, 11), 1).unwrap();
    image.apply(&register(3, 11), 1).unwrap();
    let after = partition(&image);
    assert_eq!(after.isr, vec![1]);
    assert!(after.elr.is_empty(), "{:?}", after.elr);
    assert_eq!(after.partition_epoch, epoch + 2);
    // The leader restarting as the last ISR member keeps leading: nobody
    // holds more.
    image.apply(&register(1, 11), 1).unwrap();
    assert_eq!(
        (partition(&image).leader, partition(&image).isr.clone()),
        (1, vec![1])
    );
}

#[test]
fn a_restarted_leader_with_others_in_sync_stops_leading() {
    let mut image = three_brokers_one_partition();
    let history = image.history().count();
    image.apply(&register(1, 11), 4).unwrap();
    let after = partition(&image);
    assert_eq!(
        (after.leader, after.leader_epoch, after.isr.clone()),
        (-1, 1, vec![2, 3])
    );
    let change = image.history().last().unwrap().clone();
    assert_eq!(image.history().count(), history + 1);
    assert_eq!(
        (
            change.previous_leader,
            change.new_leader,
            change.raft_term,
            change.reason
        ),
        (1, -1, 4, LeaderChangeReason::BrokerFailure as i32)
    );
}

#[test]
fn group_configs_are_set_and_removed_and_an_emptied_group_has_none() {
    let mut image = MetadataImage::default();
    let alter = |set: &[(&str, &str)], delete: &[&str]| -> MetadataRecord {
        Record::AlterGroupConfig(crate::records::AlterGroupConfig {
            group: "g".into(),
            set: set
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            delete: delete.iter().map(|k| k.to_string()).collect(),
        })
        .into()
    };
    image
        .apply(
            &alter(
                &[
                    ("consumer.session.timeout.ms", "50000"),
                    ("consumer.heartbeat.interval.ms", "6000"),
                ],
                &[],
            ),
            1,
        )
        .unwrap();
    image
        .apply(&alter(&[], &["consumer.heartbeat.interval.ms"]), 1)
        .unwrap();
    let configs = image.group_configs("g").unwrap();
    assert_eq!(
        configs.keys().collect::<Vec<_>>(),
        ["consumer.session.timeout.ms"]
    );
    image
        .apply(&alter(&[], &["consumer.session.timeout.ms"]), 1)
        .unwrap();
    assert!(image.group_configs("g").is_none());
    assert!(image.all_group_configs().is_empty());
}
