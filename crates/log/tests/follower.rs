//! A follower's log through the public API: copying a leader's batches as
//! they are, what it refuses, and what a replica needs when it becomes
//! leader or starts over at the leader's log start.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{fs, path::Path};

use common::{build_cleaned_log, read_batches};
use keel_log::{
    BatchError, Faults, FlushPolicy, FollowerAppend, LogConfig, LogError, PartitionLog,
    batch::{BatchHeader, assign_offset_and_epoch},
    testing::{BatchSpec, ProducerIdentity, build_batch},
};

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 300,
        index_interval_bytes: 128,
        ..LogConfig::default()
    }
}

fn open(dir: &Path) -> PartitionLog {
    PartitionLog::open(dir, config(), 0).unwrap().0
}

/// A batch as a leader stored it: `records` records from `base`, written
/// in `epoch`.
fn stored(records: i32, base: i64, epoch: i32, fill: u8) -> Vec<u8> {
    let mut bytes = build_batch(&BatchSpec {
        records,
        fill,
        ..BatchSpec::default()
    });
    assign_offset_and_epoch(&mut bytes, base, epoch);
    bytes
}

fn offset_file(dir: &Path, name: &str) -> i64 {
    fs::read_to_string(dir.join(name))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// A leader with epoch 0 at [0, 6) and epoch 3 at [6, 10), two records a
/// batch.
fn leader(dir: &Path) -> PartitionLog {
    let mut log = open(dir);
    for (epoch, batches) in [(0, 3), (3, 2)] {
        log.assign_leader_epoch(epoch).unwrap();
        for _ in 0..batches {
            let batch = build_batch(&BatchSpec {
                records: 2,
                ..BatchSpec::default()
            });
            log.append_as_leader(&batch, epoch, 0).unwrap();
        }
    }
    log
}

#[test]
fn batches_keep_their_offsets_epochs_and_bytes() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let leader = leader(dirs[0].path());
    let mut follower = open(dirs[1].path());
    let fetched = read_batches(&leader, 0).concat();
    let appended = follower.append_as_follower(&fetched, 0).unwrap();
    assert_eq!(
        appended,
        Some(FollowerAppend {
            first_offset: 0,
            last_offset: 9,
            log_end_offset: 10,
            records: 10,
        })
    );
    assert_eq!(read_batches(&follower, 0), read_batches(&leader, 0));
    assert_eq!(follower.epoch_entries(), leader.epoch_entries());
    assert_eq!(follower.end_offset_for_epoch(0), (0, 6));
    assert!(follower.segment_count() > 1, "rolled as the leader did");

    // Past the log end is a gap, which compaction leaves.
    let after_gap = stored(1, 20, 4, b'g');
    let appended = follower.append_as_follower(&after_gap, 0).unwrap().unwrap();
    assert_eq!((appended.first_offset, appended.log_end_offset), (20, 21));
    assert_eq!(follower.end_offset_for_epoch(3), (3, 20));
    let slice = follower.read(12, 1 << 20, i64::MAX, true).unwrap().unwrap();
    assert_eq!(slice.first_offset(), 20);
}

/// Every file of a log directory, by name.
fn files(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            (name, fs::read(entry.path()).unwrap())
        })
        .collect()
}

#[test]
fn a_fetch_appended_at_once_leaves_the_files_of_one_batch_at_a_time() {
    let dirs = [(); 3].map(|()| tempfile::tempdir().unwrap());
    let mut leader = open(dirs[0].path());
    for (epoch, batches) in [(0, 4), (3, 7), (5, 3)] {
        leader.assign_leader_epoch(epoch).unwrap();
        for records in 1..=batches {
            let batch = build_batch(&BatchSpec {
                records,
                ..BatchSpec::default()
            });
            leader.append_as_leader(&batch, epoch, 0).unwrap();
        }
    }
    let batches = read_batches(&leader, 0);
    let mut at_once = open(dirs[1].path());
    at_once.append_as_follower(&batches.concat(), 0).unwrap();
    let mut one_by_one = open(dirs[2].path());
    for batch in &batches {
        one_by_one.append_as_follower(batch, 0).unwrap();
    }
    assert!(at_once.segment_count() > 2, "the fetch spans segments");
    assert_eq!(at_once.segment_count(), one_by_one.segment_count());
    assert_eq!(at_once.epoch_entries(), leader.epoch_entries());
    at_once.close().unwrap();
    one_by_one.close().unwrap();
    let (at_once, one_by_one) = (files(dirs[1].path()), files(dirs[2].path()));
    assert!(at_once.keys().any(|name| name.ends_with(".index")));
    assert_eq!(
        at_once, one_by_one,
        "segments, indexes and checkpoints alike"
    );
}

#[test]
fn a_compacted_log_is_copied_with_its_gaps_and_emptied_batches() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let leader = build_cleaned_log(dirs[0].path());
    let mut follower = PartitionLog::open(dirs[1].path(), common::compact_config(), 0)
        .unwrap()
        .0;
    let batches = read_batches(&leader, 0);
    let appended = follower
        .append_as_follower(&batches.concat(), 0)
        .unwrap()
        .unwrap();
    assert!(
        appended.records < appended.log_end_offset,
        "records are gone"
    );
    assert_eq!(appended.log_end_offset, leader.log_end_offset());
    assert_eq!(read_batches(&follower, 0), batches);
}

#[test]
fn a_corrupt_batch_is_refused_and_nothing_of_the_fetch_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut follower = open(dir.path());
    let batches = [
        stored(2, 0, 1, b'a'),
        stored(2, 2, 1, b'b'),
        stored(2, 4, 2, b'c'),
    ];
    let mut fetched = batches.concat();
    fetched[batches[0].len() + batches[1].len() - 1] ^= 0x40;
    let error = follower.append_as_follower(&fetched, 0).unwrap_err();
    assert!(matches!(
        error,
        LogError::Batch(BatchError::CrcMismatch { .. })
    ));
    // A length field no batch can have.
    let mut fetched = batches.concat();
    fetched[batches[0].len() + 8..batches[0].len() + 12].copy_from_slice(&(-5i32).to_be_bytes());
    assert!(matches!(
        follower.append_as_follower(&fetched, 0),
        Err(LogError::Batch(BatchError::InvalidLength(-5)))
    ));
    assert_eq!(follower.log_end_offset(), 0);
    assert_eq!(follower.latest_epoch(), None);
    assert!(read_batches(&follower, 0).is_empty());

    let appended = follower.append_as_follower(&batches.concat(), 0).unwrap();
    assert_eq!(appended.unwrap().log_end_offset, 6);
    assert_eq!(follower.latest_epoch(), Some(2));
}

#[test]
fn a_partial_trailing_batch_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let mut follower = open(dir.path());
    let (first, second) = (stored(2, 0, 0, b'a'), stored(3, 2, 0, b'b'));
    let fetched = [&first[..], &second[..second.len() - 1]].concat();
    let appended = follower.append_as_follower(&fetched, 0).unwrap().unwrap();
    assert_eq!((appended.last_offset, appended.records), (1, 2));
    for cut in [0, 5, 40, second.len() - 1] {
        assert_eq!(
            follower.append_as_follower(&second[..cut], 0).unwrap(),
            None
        );
    }
    assert_eq!(follower.log_end_offset(), 2);
    let appended = follower.append_as_follower(&second, 0).unwrap().unwrap();
    assert_eq!(appended.log_end_offset, 5);
}

#[test]
fn a_batch_below_the_log_end_is_refused_naming_the_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let mut follower = open(dir.path());
    let fetched = [stored(2, 0, 0, b'a'), stored(3, 2, 0, b'b')].concat();
    follower.append_as_follower(&fetched, 0).unwrap();
    let error = follower
        .append_as_follower(&stored(2, 3, 0, b'x'), 0)
        .unwrap_err();
    assert!(matches!(
        error,
        LogError::Batch(BatchError::UnexpectedOffsets {
            base_offset: 3,
            last_offset: 4,
            log_end_offset: 5,
        })
    ));
    assert!(error.to_string().contains("3..=4"), "{error}");
    // Within one fetch: the second batch starts inside the first.
    let overlapping = [stored(3, 5, 0, b'c'), stored(1, 6, 0, b'd')].concat();
    assert!(matches!(
        follower.append_as_follower(&overlapping, 0),
        Err(LogError::Batch(BatchError::UnexpectedOffsets {
            base_offset: 6,
            log_end_offset: 8,
            ..
        }))
    ));
    // Offsets that would run past the largest offset.
    assert!(matches!(
        follower.append_as_follower(&stored(3, i64::MAX - 1, 0, b'e'), 0),
        Err(LogError::Batch(BatchError::UnexpectedOffsets { .. }))
    ));
    assert_eq!(follower.log_end_offset(), 5);
}

#[test]
fn producer_state_lets_the_replica_spot_a_retry_once_it_leads() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let produce = |base_sequence| {
        build_batch(&BatchSpec {
            records: 2,
            producer: Some(ProducerIdentity {
                producer_id: 7,
                producer_epoch: 0,
                base_sequence,
            }),
            ..BatchSpec::default()
        })
    };
    let mut leader = open(dirs[0].path());
    leader.assign_leader_epoch(0).unwrap();
    for sequence in [0, 2, 4] {
        leader.append_as_leader(&produce(sequence), 0, 0).unwrap();
    }
    let mut replica = open(dirs[1].path());
    replica
        .append_as_follower(&read_batches(&leader, 0).concat(), 0)
        .unwrap();
    assert_eq!(replica.producer_count(), 1);

    replica.assign_leader_epoch(1).unwrap();
    let retry = replica.append_as_leader(&produce(4), 1, 0).unwrap();
    assert!(retry.duplicate);
    assert_eq!(retry.base_offset, 4);
    assert!(matches!(
        replica.append_as_leader(&produce(8), 1, 0),
        Err(LogError::OutOfOrderSequence { expected: 6, .. })
    ));
    let next = replica.append_as_leader(&produce(6), 1, 0).unwrap();
    assert_eq!((next.base_offset, next.duplicate), (6, false));
}

#[test]
fn follower_data_survives_a_crash_and_a_clean_close() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let leader = leader(dirs[0].path());
    let mut follower = open(dirs[1].path());
    let mut offset = 0;
    while let Some(slice) = leader.read(offset, 250, i64::MAX, true).unwrap() {
        follower
            .append_as_follower(&slice.read().unwrap(), 0)
            .unwrap();
        offset = slice.last_offset() + 1;
    }
    let batches = read_batches(&follower, 0);
    assert_eq!(batches, read_batches(&leader, 0));
    drop(follower);

    let (mut follower, report) = PartitionLog::open(dirs[1].path(), config(), 0).unwrap();
    assert!(!report.clean_shutdown);
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!(read_batches(&follower, 0), batches);
    assert_eq!(follower.epoch_entries(), leader.epoch_entries());
    follower.close().unwrap();
    let (follower, report) = PartitionLog::open(dirs[1].path(), config(), 0).unwrap();
    assert!(report.clean_shutdown);
    assert_eq!(read_batches(&follower, 0), batches);
    assert_eq!(follower.log_end_offset(), 10);
}

#[test]
fn follower_appends_count_for_flushing_and_stop_when_the_log_does() {
    let dir = tempfile::tempdir().unwrap();
    let every_four = LogConfig {
        flush: FlushPolicy {
            messages: Some(4),
            interval_ms: None,
        },
        ..config()
    };
    let mut follower = PartitionLog::open(dir.path(), every_four, 0).unwrap().0;
    follower
        .append_as_follower(&stored(3, 0, 0, b'a'), 5)
        .unwrap();
    assert!(!follower.flush_before_ack());
    follower
        .append_as_follower(&stored(1, 3, 0, b'b'), 6)
        .unwrap();
    assert!(follower.flush_before_ack());
    follower.flush().unwrap();
    assert_eq!(offset_file(dir.path(), "recovery-point"), 4);

    follower.set_faults(Faults {
        fsync_fails: true,
        ..Faults::default()
    });
    follower
        .append_as_follower(&stored(1, 4, 0, b'c'), 7)
        .unwrap();
    assert!(follower.flush().is_err());
    assert!(matches!(
        follower.append_as_follower(&stored(1, 5, 0, b'd'), 8),
        Err(LogError::Failed { .. })
    ));

    let other = tempfile::tempdir().unwrap();
    let mut closed = open(other.path());
    closed.close().unwrap();
    assert!(matches!(
        closed.append_as_follower(&stored(1, 0, 0, b'e'), 0),
        Err(LogError::Closed)
    ));
}

#[test]
fn a_gap_wider_than_a_segment_can_index_starts_a_segment_at_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut follower = open(dir.path());
    let far = 5_000_000_000;
    follower
        .append_as_follower(&stored(1, far, 0, b'a'), 0)
        .unwrap();
    assert_eq!(
        follower.segment_count(),
        1,
        "the empty segment was replaced"
    );
    follower
        .append_as_follower(&stored(1, 2 * far, 0, b'b'), 0)
        .unwrap();
    assert_eq!(follower.segment_count(), 2);
    let batches = read_batches(&follower, 0);
    assert_eq!(batches.len(), 2);
    drop(follower);
    let follower = open(dir.path());
    assert_eq!(follower.log_end_offset(), 2 * far + 1);
    assert_eq!(read_batches(&follower, far), batches);
}

#[test]
fn a_new_leader_answers_for_its_epoch_before_its_first_append() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    log.append_as_follower(&stored(5, 0, 0, b'a'), 0).unwrap();
    log.assign_leader_epoch(2).unwrap();
    assert_eq!(log.end_offset_for_epoch(2), (2, 5));
    assert_eq!(log.end_offset_for_epoch(1), (0, 5));
    log.assign_leader_epoch(2).unwrap();
    log.assign_leader_epoch(1).unwrap();
    assert_eq!(log.latest_epoch(), Some(2));
    // Nothing was appended in epoch 2: epoch 3 replaces it at the same
    // offset.
    log.assign_leader_epoch(3).unwrap();
    let entries: Vec<(i32, i64)> = log
        .epoch_entries()
        .iter()
        .map(|e| (e.epoch, e.start_offset))
        .collect();
    assert_eq!(entries, [(0, 0), (3, 5)]);
    log.append_as_leader(&build_batch(&BatchSpec::default()), 3, 0)
        .unwrap();
    assert_eq!(log.end_offset_for_epoch(3), (3, 6));
    let last = &read_batches(&log, 5)[0];
    assert_eq!(BatchHeader::parse(last).unwrap().partition_leader_epoch, 3);
}

#[test]
fn truncating_at_the_log_end_drops_an_epoch_with_nothing_in_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    log.append_as_follower(&stored(5, 0, 0, b'a'), 0).unwrap();
    log.assign_leader_epoch(1).unwrap();
    log.truncate_to(5, 0).unwrap();
    assert_eq!(log.log_end_offset(), 5);
    assert_eq!(log.latest_epoch(), Some(0));
}

#[test]
fn truncating_fully_starts_an_empty_log_at_the_offset() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let leader = leader(dirs[0].path());
    let dir = dirs[1].path();
    let mut follower = open(dir);
    follower
        .append_as_follower(&read_batches(&leader, 0).concat(), 0)
        .unwrap();
    let producer = build_batch(&BatchSpec {
        producer: Some(ProducerIdentity {
            producer_id: 3,
            producer_epoch: 0,
            base_sequence: 0,
        }),
        ..BatchSpec::default()
    });
    follower.append_as_leader(&producer, 3, 0).unwrap();
    assert!(follower.segment_count() > 1);

    follower.truncate_fully_and_start_at(50, 0).unwrap();
    assert_eq!(
        (follower.log_start_offset(), follower.log_end_offset()),
        (50, 50)
    );
    assert_eq!(follower.segment_count(), 1);
    assert!(follower.epoch_entries().is_empty());
    assert_eq!(follower.producer_count(), 0);
    assert!(!follower.flush_due(0), "nothing is left to flush");
    assert_eq!(offset_file(dir, "recovery-point"), 50);
    assert_eq!(offset_file(dir, "log-start-offset"), 50);
    assert!(matches!(
        follower.read(10, 1 << 20, i64::MAX, true),
        Err(LogError::OffsetOutOfRange { .. })
    ));

    follower
        .append_as_follower(&stored(2, 50, 4, b'z'), 0)
        .unwrap();
    drop(follower);
    let (mut follower, _) = PartitionLog::open(dir, config(), 0).unwrap();
    assert_eq!(
        (follower.log_start_offset(), follower.log_end_offset()),
        (50, 52)
    );
    assert_eq!(follower.end_offset_for_epoch(4), (4, 52));

    // Starting over where the only segment starts empties that segment.
    follower.truncate_fully_and_start_at(50, 0).unwrap();
    assert_eq!(follower.log_end_offset(), 50);
    assert!(read_batches(&follower, 50).is_empty());
}
