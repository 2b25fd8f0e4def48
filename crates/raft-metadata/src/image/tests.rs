use super::*;
use crate::records::{AllocateProducerIds, FenceBroker, RegisterBroker};

fn assignment(partition: i32) -> PartitionAssignment {
    PartitionAssignment {
        partition,
        replicas: vec![1, 2, 3],
        leader: 1,
        leader_epoch: 0,
        isr: vec![1, 2, 3],
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
fn isr_updates_are_fenced_by_leader_epoch() {
    let mut image = MetadataImage::default();
    image.apply(&create("t", 1, 1), 1).unwrap();
    let update = |epoch, isr: Vec<i32>| -> MetadataRecord {
        Record::UpdateIsr(UpdateIsr {
            topic: "t".into(),
            partition: 0,
            leader_epoch: epoch,
            isr,
        })
        .into()
    };
    image.apply(&update(0, vec![1, 2]), 1).unwrap();
    assert_eq!(
        image.topic("t").unwrap().partition(0).unwrap().isr,
        vec![1, 2]
    );
    assert!(matches!(
        image.apply(&update(3, vec![1]), 1),
        Err(ApplyError::StaleLeaderEpoch { .. })
    ));
    assert!(image.apply(&update(0, vec![1, 7]), 1).is_err());
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
