//! Log compaction through the public API: which records a cleaning pass
//! keeps, that offsets and reads survive it, that retention, DeleteRecords
//! and truncation work on a cleaned log, and that a compacted log refuses
//! records without a key. The log changing between the steps of a pass is
//! tested in `compaction_concurrency.rs`, reopening and crashes in
//! `compaction_recovery.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;

use bytes::Bytes;
use common::{
    Kv, Row, append, build_cleaned_log, compact_config, latest_by_key, open, read_batches,
    read_rows, row, spec,
};
use kafka_protocol::records::{Compression, RecordBatchDecoder};
use keel_log::{
    BatchError, LogConfig, LogError, RecordFault,
    batch::BatchHeader,
    testing::{BatchSpec, ProducerIdentity, build_keyed_batch},
};

#[test]
fn the_latest_value_of_each_key_survives_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(
        dir.path(),
        LogConfig {
            segment_bytes: 256,
            ..compact_config()
        },
    );
    let keys = ["k0", "k1", "k2", "k3", "k4", "k5", "k6"];
    for round in 0..12 {
        let values: Vec<String> = (0..3).map(|i| format!("r{round}-{i}")).collect();
        let records: Vec<Kv<'_>> = (0..3)
            .map(|i| {
                (
                    Some(keys[(round * 3 + i) % keys.len()]),
                    Some(values[i].as_str()),
                )
            })
            .collect();
        append(&mut log, &records, round as i64);
    }
    assert!(log.segment_count() > 3);
    let before = read_rows(&log, 0);
    let expected = latest_by_key(&before);

    let outcome = log.clean(0, log.log_end_offset()).unwrap();
    assert!(outcome.segments_rewritten + outcome.segments_deleted > 0);
    assert!(outcome.records_removed > 0);
    assert!(outcome.bytes_after < outcome.bytes_before);
    assert_eq!(outcome.bytes_after, log.size_in_bytes());

    let after = read_rows(&log, 0);
    assert_eq!(latest_by_key(&after), expected);
    assert_eq!(
        before.len() as u64 - outcome.records_removed,
        after.len() as u64
    );
    // Every surviving record kept its offset.
    assert!(after.iter().all(|r| before.contains(r)));
    assert_eq!(log.log_end_offset(), 36);
    // A second pass finds nothing more outside the active segment.
    let again = log.clean(0, log.log_end_offset()).unwrap();
    assert_eq!(again.records_removed, 0);
    assert_eq!(again.bytes_after, again.bytes_before);
}

#[test]
fn overwritten_records_are_gone_and_reads_skip_the_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), compact_config());
    append(
        &mut log,
        &[
            (Some("c"), Some("c1")),
            (Some("a"), Some("a1")),
            (Some("b"), Some("b1")),
        ],
        0,
    );
    append(&mut log, &[(Some("a"), Some("a2"))], 0);
    append(
        &mut log,
        &[(Some("a"), Some("a3")), (Some("d"), Some("d1"))],
        0,
    );
    let untouched = log
        .read(4, 1, i64::MAX, true)
        .unwrap()
        .unwrap()
        .read()
        .unwrap();
    log.roll(0).unwrap();
    append(&mut log, &[(Some("b"), Some("b2"))], 0);

    let outcome = log.clean(0, log.log_end_offset()).unwrap();
    assert_eq!(outcome.segments_rewritten, 1);
    assert_eq!(outcome.records_removed, 3);
    assert_eq!(
        read_rows(&log, 0),
        vec![
            row(0, "c", Some("c1")),
            row(4, "a", Some("a3")),
            row(5, "d", Some("d1")),
            row(6, "b", Some("b2")),
        ]
    );
    // The first batch was re-encoded with its survivor and still ends at its
    // old last offset; the third is stored byte for byte as before.
    let batches = read_batches(&log, 0);
    let first = BatchHeader::parse(&batches[0]).unwrap();
    assert_eq!((first.base_offset, first.last_offset()), (0, 2));
    assert_eq!(first.records_count, 1);
    assert_eq!(batches[1], untouched.to_vec());
    // Reading from removed offsets returns the batch covering them or the
    // next one.
    let slice = log.read(1, 1, i64::MAX, true).unwrap().unwrap();
    assert_eq!(slice.first_offset(), 0);
    let slice = log.read(3, 1, i64::MAX, true).unwrap().unwrap();
    assert_eq!(slice.first_offset(), 4);
    assert_eq!(read_rows(&log, 3)[0], row(4, "a", Some("a3")));
    assert_eq!(log.offset_for_timestamp(0).unwrap(), Some((0, 0)));
}

#[test]
fn tombstones_are_kept_within_delete_retention_and_removed_after() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), compact_config());
    append(&mut log, &[(Some("k"), Some("v1"))], 0);
    append(&mut log, &[(Some("k"), None), (Some("j"), Some("v"))], 100);
    log.roll(0).unwrap();
    append(&mut log, &[(Some("gone"), None)], 0);

    let outcome = log.clean(500, log.log_end_offset()).unwrap();
    assert_eq!(outcome.records_removed, 1);
    assert_eq!(
        read_rows(&log, 0),
        vec![
            row(1, "k", None),
            row(2, "j", Some("v")),
            row(3, "gone", None)
        ]
    );
    // Still within delete.retention.ms of its timestamp (100).
    assert_eq!(
        log.clean(1_099, log.log_end_offset())
            .unwrap()
            .records_removed,
        0
    );
    // Past it the tombstone goes; the one in the active segment stays.
    assert_eq!(
        log.clean(1_100, log.log_end_offset())
            .unwrap()
            .records_removed,
        1
    );
    assert_eq!(
        read_rows(&log, 0),
        vec![row(2, "j", Some("v")), row(3, "gone", None)]
    );
}

#[test]
fn the_active_segment_and_data_at_or_above_the_high_watermark_are_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), compact_config());
    append(&mut log, &[(Some("k"), Some("1"))], 0);
    append(&mut log, &[(Some("k"), Some("2"))], 0);
    log.roll(0).unwrap();
    append(&mut log, &[(Some("k"), Some("3"))], 0);
    log.roll(0).unwrap();
    append(&mut log, &[(Some("k"), Some("4"))], 0);
    append(&mut log, &[(Some("k"), Some("5"))], 0);
    let active = dir.path().join("00000000000000000003.log");
    let active_bytes = fs::read(&active).unwrap();

    // Offsets 2.. are above the high watermark: they neither get cleaned nor
    // cost the records below it.
    let outcome = log.clean(0, 2).unwrap();
    assert_eq!(outcome.records_removed, 1);
    let offsets: Vec<i64> = read_rows(&log, 0).iter().map(|r| r.0).collect();
    assert_eq!(offsets, vec![1, 2, 3, 4]);

    // With everything committed, the two closed segments empty out and are
    // deleted; the active segment keeps both its records.
    let outcome = log.clean(0, log.log_end_offset()).unwrap();
    assert_eq!(outcome.segments_deleted, 2);
    assert_eq!(log.segment_count(), 1);
    assert_eq!(fs::read(&active).unwrap(), active_bytes);
    assert_eq!(
        read_rows(&log, 0),
        vec![row(3, "k", Some("4")), row(4, "k", Some("5"))]
    );
    // The log start offset stays, also across a reopen; reading from it
    // returns the first batch left.
    assert_eq!(log.log_start_offset(), 0);
    log.close().unwrap();
    drop(log);
    let log = open(dir.path(), compact_config());
    assert_eq!(log.log_start_offset(), 0);
    assert_eq!(
        log.read(0, 1, i64::MAX, true)
            .unwrap()
            .unwrap()
            .first_offset(),
        3
    );
}

#[test]
fn compressed_batches_are_cleaned_and_keep_their_codec() {
    for compression in [Compression::Gzip, Compression::Zstd] {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path(), compact_config());
        let keys: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
        let old: Vec<String> = (0..20).map(|i| format!("old{i}")).collect();
        let records: Vec<Kv<'_>> = (0..20)
            .map(|i| (Some(keys[i].as_str()), Some(old[i].as_str())))
            .collect();
        let first = build_keyed_batch(&spec(1_000, compression), &records);
        log.append_as_leader(&first, 0, 0).unwrap();
        let even: Vec<Kv<'_>> = (0..20)
            .step_by(2)
            .map(|i| (Some(keys[i].as_str()), Some("new")))
            .collect();
        log.append_as_leader(&build_keyed_batch(&spec(2_000, compression), &even), 0, 0)
            .unwrap();
        log.roll(0).unwrap();
        append(&mut log, &[(Some("x"), Some("x"))], 0);

        let outcome = log.clean(0, log.log_end_offset()).unwrap();
        assert_eq!(outcome.records_removed, 10, "{compression:?}");
        let batches = read_batches(&log, 0);
        let cleaned = BatchHeader::parse(&batches[0]).unwrap();
        assert_eq!(cleaned.compression_codec(), compression as i16);
        assert_eq!((cleaned.base_offset, cleaned.last_offset()), (1, 19));
        assert_eq!(cleaned.records_count, 10);
        assert_eq!(cleaned.base_sequence, -1);
        assert_eq!(cleaned.max_timestamp, 1_019);
        let rows = read_rows(&log, 0);
        let odd: Vec<Row> = (1..20)
            .step_by(2)
            .map(|i| row(i, &keys[i as usize], Some(&old[i as usize])))
            .collect();
        assert_eq!(rows[..10], odd[..], "{compression:?}");
        assert_eq!(rows.len(), 21);
        let timestamps: Vec<i64> = RecordBatchDecoder::decode(&mut Bytes::from(batches[0].clone()))
            .unwrap()
            .records
            .iter()
            .map(|r| r.timestamp)
            .collect();
        assert_eq!(
            timestamps,
            (1..20).step_by(2).map(|i| 1_000 + i).collect::<Vec<_>>()
        );
    }
}

#[test]
fn an_idempotent_producer_is_still_known_after_cleaning_and_an_unclean_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let producer = |seq| BatchSpec {
        producer: Some(ProducerIdentity {
            producer_id: 7,
            producer_epoch: 0,
            base_sequence: seq,
        }),
        ..BatchSpec::default()
    };
    let abc = [
        (Some("a"), Some("1")),
        (Some("b"), Some("1")),
        (Some("c"), Some("1")),
    ];
    {
        let mut log = open(dir.path(), compact_config());
        log.append_as_leader(&build_keyed_batch(&producer(0), &abc), 0, 0)
            .unwrap();
        log.append_as_leader(&build_keyed_batch(&producer(3), &abc), 0, 0)
            .unwrap();
        log.roll(0).unwrap();
        append(&mut log, &abc, 0);
        let outcome = log.clean(0, log.log_end_offset()).unwrap();
        assert_eq!(outcome.records_removed, 6);
        // The producer's last batch stays as an empty batch.
        let batches = read_batches(&log, 0);
        let kept = BatchHeader::parse(&batches[0]).unwrap();
        assert_eq!((kept.base_offset, kept.last_offset()), (3, 5));
        assert_eq!((kept.records_count, kept.base_sequence), (0, 3));
        assert_eq!(read_rows(&log, 0).len(), 3);
    }
    let mut log = open(dir.path(), compact_config());
    let retry = log
        .append_as_leader(&build_keyed_batch(&producer(3), &abc), 0, 0)
        .unwrap();
    assert!(retry.duplicate);
    assert_eq!((retry.base_offset, retry.last_offset), (3, 5));
    let next = log
        .append_as_leader(&build_keyed_batch(&producer(6), &abc), 0, 0)
        .unwrap();
    assert_eq!(next.base_offset, 9);
}

#[test]
fn retention_delete_records_and_truncation_work_on_a_cleaned_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = build_cleaned_log(dir.path());
    let rows = read_rows(&log, 0);
    let offsets: Vec<i64> = rows.iter().map(|r| r.0).collect();
    // A removed offset inside the log: DeleteRecords there starts the log at
    // it, and a read from it returns what follows.
    let gap = (offsets[0]..log.log_end_offset())
        .find(|o| !offsets.contains(o))
        .unwrap();
    assert_eq!(log.delete_records_before(gap, 0).unwrap(), gap);
    let next = *offsets.iter().find(|&&o| o > gap).unwrap();
    let first_visible = read_rows(&log, gap).into_iter().find(|r| r.0 >= gap);
    assert_eq!(first_visible.unwrap().0, next);

    // Truncation to a removed offset cuts the batch covering it and all after.
    let end = log.log_end_offset();
    let last_gap = (gap..end).rev().find(|o| !offsets.contains(o)).unwrap();
    log.truncate_to(last_gap, 0).unwrap();
    assert!(log.log_end_offset() <= last_gap);
    let left = read_rows(&log, log.log_start_offset());
    assert!(left.iter().all(|r| r.0 < log.log_end_offset()));
    let appended = append(&mut log, &[(Some("z"), Some("z"))], 0);
    assert_eq!(appended, log.log_end_offset() - 1);

    // Retention by size deletes whole cleaned segments from the front.
    let mut config = log.config().clone();
    config.retention_bytes = 0;
    log.set_config(config);
    assert!(log.enforce_retention(0, log.log_end_offset()).unwrap() > 0);
    assert_eq!(log.log_start_offset(), log.log_end_offset());
}

#[test]
fn segments_younger_than_the_minimum_compaction_lag_wait_for_a_later_pass() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(
        dir.path(),
        LogConfig {
            segment_bytes: 200,
            min_compaction_lag_ms: 1_000,
            ..compact_config()
        },
    );
    // The same key over and over: old records at 0, young ones at 5_000.
    for round in 0..20 {
        let at = if round < 10 { 0 } else { 5_000 };
        let value = format!("v{round}");
        append(&mut log, &[(Some("k"), Some(value.as_str()))], at);
    }
    assert!(log.segment_count() > 4);
    let count = |log: &keel_log::PartitionLog| read_rows(log, 0).len();
    let before = count(&log);
    // At 5_500 the young records are 500 ms old: only the old segments are
    // cleaned, and the young ones keep every record.
    let first = log.clean(5_500, log.log_end_offset()).unwrap();
    assert!(
        first.bytes_held_back > 0,
        "the young segments are still dirty"
    );
    let after_young = count(&log);
    assert!(after_young < before, "the old segments were cleaned");
    let young: Vec<_> = read_rows(&log, 0)
        .into_iter()
        .filter(|(_, _, v)| v.as_deref().is_some_and(|v| v >= "v10"))
        .collect();
    assert_eq!(young.len(), 10, "{young:?}");
    // Once they are old enough, a pass cleans them too (the active segment,
    // holding the last record, is never cleaned).
    let second = log.clean(6_000, log.log_end_offset()).unwrap();
    assert_eq!(second.bytes_held_back, 0);
    assert!(count(&log) < after_young);
}

#[test]
fn a_compacted_log_refuses_records_without_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), compact_config());
    let keyless = [
        (Some("k"), Some("v")),
        (None, Some("v")),
        (Some("k"), None),
        (None, None),
    ];
    for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
        let batch = build_keyed_batch(&spec(0, compression), &keyless);
        let refused = log.append_as_leader(&batch, 0, 0);
        // Each record without a key is named by its index in the batch.
        let Err(LogError::Batch(BatchError::RejectedRecords {
            named: records,
            total: 2,
        })) = refused
        else {
            panic!("{compression:?}: {refused:?}");
        };
        let named: Vec<_> = records.iter().map(|r| (r.batch_index, r.reason)).collect();
        assert_eq!(
            named,
            [(1, RecordFault::MissingKey), (3, RecordFault::MissingKey)]
        );
    }
    // A batch too large to inflate cannot be checked and is refused too.
    let zeros = "\0".repeat(65 << 20);
    let bomb = build_keyed_batch(&spec(0, Compression::Zstd), &[(Some("k"), Some(&zeros))]);
    assert!(bomb.len() < 1 << 20);
    assert!(matches!(
        log.append_as_leader(&bomb, 0, 0),
        Err(LogError::Batch(BatchError::UndecodableRecords))
    ));
    assert_eq!(log.log_end_offset(), 0);
    append(&mut log, &[(Some("k"), None)], 0);

    // Without compaction the same batch is accepted.
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), LogConfig::default());
    let batch = build_keyed_batch(&spec(0, Compression::None), &keyless);
    log.append_as_leader(&batch, 0, 0).unwrap();
}
