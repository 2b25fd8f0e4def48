#![allow(clippy::unwrap_used)]

use keel_raft_metadata::{
    MetadataRecord, PartitionAssignment, Record,
    records::{CreateTopic, DeleteTopic},
};

use std::fs;

use keel_log::LogConfig;

use super::{
    directories::{DELETE_SUFFIX, STRAY_SUFFIX},
    *,
};
use crate::{config::BrokerConfig, error::PartitionError};

fn create(name: &str, id: u128) -> MetadataRecord {
    Record::CreateTopic(CreateTopic {
        name: name.into(),
        topic_id: Uuid::from_u128(id).as_bytes().to_vec(),
        partitions: vec![PartitionAssignment {
            partition: 0,
            replicas: vec![1],
            leader: 1,
            leader_epoch: 0,
            isr: vec![1],
            ..Default::default()
        }],
        ..Default::default()
    })
    .into()
}

fn delete(name: &str) -> MetadataRecord {
    Record::DeleteTopic(DeleteTopic { name: name.into() }).into()
}

fn image(records: &[MetadataRecord]) -> Arc<MetadataImage> {
    let mut image = MetadataImage::default();
    for record in records {
        image.apply(record, 1).unwrap();
    }
    Arc::new(image)
}

fn manager(dir: &Path) -> ReplicaManager {
    let defaults = BrokerConfig::for_tests(dir).topic_defaults;
    ReplicaManager::new(1, dir, defaults, Duration::ZERO)
}

/// A simple v2 batch of one record, as a producer sends it.
fn batch() -> Vec<u8> {
    keel_log::testing::batch(1, 0)
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "meta.properties" && n != "replication-offset-checkpoint")
        .collect();
    names.sort();
    names
}

#[test]
fn a_stale_image_deletes_nothing_and_the_caught_up_one_deletes_only_deleted_topics() {
    let dir = tempfile::tempdir().unwrap();
    let before = image(&[create("gone", 1), create("unknown", 2), create("kept", 3)]);
    {
        let replicas = manager(dir.path());
        replicas.reconcile(|| Arc::clone(&before), 0).unwrap();
        for partition in replicas.all() {
            partition.append_as_leader(&batch(), None, 0).unwrap();
        }
        replicas.close_all();
    }

    // Restarted with its metadata lost: an empty image judges nothing.
    let replicas = manager(dir.path());
    replicas.remove_interrupted_deletions();
    replicas.reconcile(|| image(&[]), 0).unwrap();
    assert_eq!(entries(dir.path()), ["gone-0", "kept-0", "unknown-0"]);
    assert!(replicas.all().is_empty());

    // Caught up: "gone" was deleted, "unknown" is not named, "kept" is.
    let caught_up = image(&[
        create("gone", 1),
        delete("gone"),
        create("kept", 3),
        create("unknown", 4),
    ]);
    replicas.set_caught_up(|| caught_up, 0).unwrap();
    let names = entries(dir.path());
    // The deleted topic's log is renamed for deletion at once and removed
    // in the background.
    assert!(
        names
            .iter()
            .filter(|n| n.starts_with("gone-0"))
            .all(|n| n.ends_with(DELETE_SUFFIX)),
        "{names:?}"
    );
    assert!(names.contains(&"kept-0".to_string()), "{names:?}");
    // The topic named "unknown" now has another id: the old log goes aside
    // with its records, and the new topic starts empty.
    let stray: Vec<&String> = names.iter().filter(|n| n.ends_with("-stray")).collect();
    assert_eq!(stray.len(), 1, "{names:?}");
    assert!(stray[0].starts_with("unknown-0."));
    let kept = replicas.get("kept", 0).unwrap();
    assert_eq!(kept.log().log_end_offset(), 1);
    assert_eq!(
        replicas.get("unknown", 0).unwrap().log().log_end_offset(),
        0
    );
    let (stray_log, _) =
        PartitionLog::open(&dir.path().join(stray[0]), LogConfig::default(), 0).unwrap();
    assert_eq!(
        stray_log.log_end_offset(),
        1,
        "the stray log keeps its record"
    );
}

#[test]
fn a_directory_the_caught_up_image_does_not_name_is_moved_aside_not_deleted() {
    let dir = tempfile::tempdir().unwrap();
    {
        let replicas = manager(dir.path());
        replicas
            .reconcile(|| image(&[create("orphan", 9)]), 0)
            .unwrap();
        replicas.all()[0]
            .append_as_leader(&batch(), None, 0)
            .unwrap();
        replicas.close_all();
    }
    let replicas = manager(dir.path());
    replicas.set_caught_up(|| image(&[]), 0).unwrap();
    let names = entries(dir.path());
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(names[0].starts_with("orphan-0.") && names[0].ends_with("-stray"));
    // Judged once: a second call leaves the stray directory alone.
    replicas.set_caught_up(|| image(&[]), 0).unwrap();
    assert_eq!(entries(dir.path()), names);
}

#[test]
fn an_image_still_catching_up_never_moves_a_live_log_aside() {
    let dir = tempfile::tempdir().unwrap();
    // On disk: topic "x" as re-created (id 2) after an earlier "x" (id 1)
    // was deleted.
    let current = image(&[create("x", 1), delete("x"), create("x", 2)]);
    {
        let replicas = manager(dir.path());
        replicas.reconcile(|| Arc::clone(&current), 0).unwrap();
        replicas.all()[0]
            .append_as_leader(&batch(), None, 0)
            .unwrap();
        replicas.close_all();
    }
    // The metadata was lost; replaying the log, the broker first sees the
    // first "x" alone, then its deletion and the new "x".
    let replicas = manager(dir.path());
    replicas.reconcile(|| image(&[create("x", 1)]), 0).unwrap();
    assert!(replicas.all().is_empty(), "the stale image opened nothing");
    assert_eq!(entries(dir.path()), ["x-0"], "and moved nothing aside");
    replicas.reconcile(|| Arc::clone(&current), 0).unwrap();
    assert_eq!(replicas.get("x", 0).unwrap().log().log_end_offset(), 1);
    replicas.set_caught_up(|| current, 0).unwrap();
    assert_eq!(entries(dir.path()), ["x-0"]);
}

/// Brokers 1 and 2, and topic `r` on 2 and 1 led by 2; with `moved`, a
/// reassignment has moved it to 2 alone.
fn reassigned(moved: bool) -> Arc<MetadataImage> {
    let mut records: Vec<MetadataRecord> = (1..=2)
        .map(|node_id| {
            Record::RegisterBroker(keel_raft_metadata::records::RegisterBroker {
                node_id,
                incarnation: 1,
                ..Default::default()
            })
            .into()
        })
        .collect();
    records.push(
        Record::CreateTopic(CreateTopic {
            name: "r".into(),
            topic_id: Uuid::from_u128(5).as_bytes().to_vec(),
            partitions: vec![PartitionAssignment {
                replicas: vec![2, 1],
                leader: 2,
                isr: vec![2, 1],
                ..Default::default()
            }],
            ..Default::default()
        })
        .into(),
    );
    let mut image = image(&records);
    if moved {
        let partition = &image.topic("r").unwrap().partitions[0];
        let change = keel_raft_metadata::image::reassignment::start("r", partition, &[2])
            .unwrap()
            .unwrap();
        Arc::make_mut(&mut image)
            .apply(&Record::ChangePartitionReplicas(change).into(), 1)
            .unwrap();
    }
    image
}

#[test]
fn a_replica_reassigned_away_is_deleted_only_while_hosted_and_caught_up() {
    let dir = tempfile::tempdir().unwrap();
    let replicas = manager(dir.path());
    replicas.set_caught_up(|| reassigned(false), 0).unwrap();
    assert_eq!(entries(dir.path()), ["r-0"]);
    let changes = replicas.reconcile(|| reassigned(true), 0).unwrap();
    assert!(
        changes.iter().any(|c| c.transition == Transition::Removed),
        "the fetchers hear of it"
    );
    assert!(replicas.get("r", 0).is_none());
    let names = entries(dir.path());
    assert!(
        names.iter().all(|n| n.ends_with(DELETE_SUFFIX)),
        "{names:?}"
    );

    // Replaying the metadata after a restart, an image that shows the
    // removal leaves the log where it is: a later entry may have added the
    // replica back, with this log the one that counts. Once caught up, a
    // log the broker did not host in this run is only moved aside.
    let dir = tempfile::tempdir().unwrap();
    manager(dir.path())
        .reconcile(|| reassigned(false), 0)
        .unwrap();
    let replicas = manager(dir.path());
    replicas.reconcile(|| reassigned(false), 0).unwrap();
    replicas.reconcile(|| reassigned(true), 0).unwrap();
    assert_eq!(entries(dir.path()), ["r-0"]);
    replicas.set_caught_up(|| reassigned(true), 0).unwrap();
    let names = entries(dir.path());
    assert!(
        names.len() == 1 && names[0].ends_with(STRAY_SUFFIX),
        "{names:?}"
    );
}

/// A manager for broker 1 whose new leaderships wait up to a minute for
/// their predecessors.
fn patient_manager(dir: &Path) -> ReplicaManager {
    let defaults = BrokerConfig::for_tests(dir).topic_defaults;
    ReplicaManager::new(1, dir, defaults, Duration::from_secs(60))
}

/// Topic `r` on 2 and 1, whose leadership moved from 2 to 1.
fn moved_from_2_to_1() -> MetadataImage {
    let mut image = Arc::unwrap_or_clone(reassigned(false));
    let moved = Record::SetPartitionLeader(keel_raft_metadata::records::SetPartitionLeader {
        topic: "r".into(),
        partition: 0,
        leader: 1,
        leader_epoch: 1,
        isr: vec![2, 1],
        ..Default::default()
    });
    image.apply(&moved.into(), 1).unwrap();
    image
}

/// Reassigns `r` to broker 1 alone (it completes at once).
fn reassign_to_1(image: &mut MetadataImage) {
    let info = image.topic("r").unwrap().partitions[0].clone();
    let change = keel_raft_metadata::image::reassignment::start("r", &info, &[1])
        .unwrap()
        .unwrap();
    image
        .apply(&Record::ChangePartitionReplicas(change).into(), 1)
        .unwrap();
}

/// Broker 1's replica of `r` once `replicas` has applied `image`: it leads
/// and takes no write yet.
fn awaiting_leader(replicas: &ReplicaManager, image: &MetadataImage) -> Arc<Partition> {
    replicas
        .set_caught_up(|| Arc::new(image.clone()), 0)
        .unwrap();
    let partition = replicas.get("r", 0).unwrap();
    assert!(matches!(
        partition.append_as_leader(&batch(), None, 0),
        Err(PartitionError::AwaitingSuccession(_))
    ));
    partition
}

#[test]
fn a_new_leader_waits_for_its_predecessor_even_once_a_reassignment_removed_it() {
    let dir = tempfile::tempdir().unwrap();
    let replicas = patient_manager(dir.path());
    // Broker 2 led; leadership moved to this broker (1), which takes no
    // write until 2 has fetched in the new epoch.
    let mut image = moved_from_2_to_1();
    let partition = awaiting_leader(&replicas, &image);
    // The reassignment to this broker alone completes at once, and 2 is
    // no longer a replica; it may still think it leads.
    reassign_to_1(&mut image);
    assert_eq!(image.topic("r").unwrap().partitions[0].replicas, vec![1]);
    replicas.reconcile(|| Arc::new(image), 0).unwrap();
    assert!(matches!(
        partition.append_as_leader(&batch(), None, 0),
        Err(PartitionError::AwaitingSuccession(_))
    ));
}

#[test]
fn a_new_leader_stops_waiting_for_a_predecessor_fenced_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let replicas = patient_manager(dir.path());
    let mut image = moved_from_2_to_1();
    let partition = awaiting_leader(&replicas, &image);
    // Fenced, broker 2 holds no lease: nothing is left to wait for. The
    // controller fences a broker and takes it out of the ISRs together.
    let partition_epoch = image.topic("r").unwrap().partitions[0].partition_epoch;
    let fence = Record::Batch(keel_raft_metadata::records::RecordBatch {
        records: vec![
            Record::FenceBroker(keel_raft_metadata::records::FenceBroker {
                node_id: 2,
                incarnation: 1,
            })
            .into(),
            Record::UpdateIsr(keel_raft_metadata::records::UpdateIsr {
                topic: "r".into(),
                partition: 0,
                leader_epoch: 1,
                isr: vec![1],
                partition_epoch,
                isr_incarnations: vec![1],
                min_insync_replicas: 1,
            })
            .into(),
        ],
    });
    image.apply(&fence.into(), 1).unwrap();
    replicas.reconcile(|| Arc::new(image), 0).unwrap();
    partition.append_as_leader(&batch(), None, 0).unwrap();
}

#[test]
fn a_leader_that_learns_of_its_leadership_and_the_removal_at_once_still_waits() {
    let dir = tempfile::tempdir().unwrap();
    let replicas = patient_manager(dir.path());
    // Broker 2 led; leadership moved to this broker (1) and a reassignment
    // removed 2, before this broker applied either.
    let mut image = moved_from_2_to_1();
    reassign_to_1(&mut image);
    assert_eq!(
        image.topic("r").unwrap().partitions[0].previous_leader,
        Some(2)
    );
    replicas.set_caught_up(|| Arc::new(image), 0).unwrap();
    assert!(matches!(
        replicas
            .get("r", 0)
            .unwrap()
            .append_as_leader(&batch(), None, 0),
        Err(PartitionError::AwaitingSuccession(_))
    ));
}

#[test]
fn a_new_leader_stops_waiting_for_a_predecessor_fenced_outside_the_isr() {
    let dir = tempfile::tempdir().unwrap();
    let replicas = patient_manager(dir.path());
    // Broker 2 led, and left the ISR before its fence: the fence changes
    // no partition.
    let mut image = moved_from_2_to_1();
    let partition_epoch = image.topic("r").unwrap().partitions[0].partition_epoch;
    let shrink = Record::UpdateIsr(keel_raft_metadata::records::UpdateIsr {
        topic: "r".into(),
        partition: 0,
        leader_epoch: 1,
        isr: vec![1],
        partition_epoch,
        isr_incarnations: vec![1],
        min_insync_replicas: 1,
    });
    image.apply(&shrink.into(), 1).unwrap();
    let partition = awaiting_leader(&replicas, &image);
    let fence = Record::FenceBroker(keel_raft_metadata::records::FenceBroker {
        node_id: 2,
        incarnation: 1,
    });
    image.apply(&fence.into(), 1).unwrap();
    replicas.reconcile(|| Arc::new(image), 0).unwrap();
    partition.append_as_leader(&batch(), None, 0).unwrap();
}

#[test]
fn the_flusher_looks_again_only_once_a_replica_changed() {
    let dir = tempfile::tempdir().unwrap();
    let replicas = manager(dir.path());
    // Two replicas: an append alone (no high watermark move) must count.
    let mut topic = create("t", 1);
    if let Some(Record::CreateTopic(create)) = &mut topic.record {
        create.partitions[0].replicas = vec![1, 2];
        create.partitions[0].isr = vec![1, 2];
    }
    replicas.reconcile(|| image(&[topic.clone()]), 0).unwrap();
    let partition = replicas.get("t", 0).unwrap();
    let flush_ms = partition.log().config().flush.interval_ms.unwrap() as i64;
    let flush_all = |now_ms: i64| {
        let begun = replicas.begin_due_flushes(now_ms);
        let count = begun.len();
        for (partition, pending) in begun {
            partition.complete_background_flush(pending).unwrap();
        }
        count
    };

    partition.append_as_leader(&batch(), None, 0).unwrap();
    assert_eq!(flush_all(0), 0, "not due yet");
    assert_eq!(flush_all(flush_ms), 1);
    assert_eq!(flush_all(flush_ms), 0, "durable");
    assert_eq!(
        flush_all(flush_ms),
        0,
        "nothing changed: not even looked at"
    );
    assert!(replicas.nothing_to_flush());

    // Appended after a walk that found every log durable: looked at again.
    partition
        .append_as_leader(&batch(), None, flush_ms)
        .unwrap();
    assert!(!replicas.nothing_to_flush());
    assert_eq!(flush_all(3 * flush_ms), 1);
    assert!(!partition.log().has_unflushed());
}
