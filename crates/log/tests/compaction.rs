//! Log compaction through the public API: which records a cleaning pass
//! keeps, that offsets and reads survive it, that crashes during it leave a
//! usable log, that the log goes on changing between the steps of a pass,
//! and that a compacted log refuses records without a key.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::BTreeMap,
    fs,
    path::Path,
    sync::{Arc, Mutex, mpsc},
    thread,
    time::Duration,
};

use bytes::Bytes;
use kafka_protocol::records::{Compression, RecordBatchDecoder};
use keel_log::{
    BatchError, CleanPlan, LogConfig, LogError, PartitionLog, PreparedClean,
    batch::{BatchHeader, split_batches, verify_crc},
    testing::{BatchSpec, ProducerIdentity, build_keyed_batch},
};

/// One record as read back: offset, key, value.
type Row = (i64, Option<String>, Option<String>);
type Kv<'a> = (Option<&'a str>, Option<&'a str>);

fn compact_config() -> LogConfig {
    LogConfig {
        compact: true,
        delete_retention_ms: 1_000,
        index_interval_bytes: 128,
        ..LogConfig::default()
    }
}

fn open(dir: &Path, config: LogConfig) -> PartitionLog {
    PartitionLog::open(dir, config, 0).unwrap().0
}

fn spec(first_timestamp: i64, compression: Compression) -> BatchSpec {
    BatchSpec {
        first_timestamp,
        compression,
        ..BatchSpec::default()
    }
}

/// Appends `(key, value)` pairs as one uncompressed batch at timestamp `ts`.
fn append(log: &mut PartitionLog, records: &[Kv<'_>], ts: i64) -> i64 {
    let batch = build_keyed_batch(&spec(ts, Compression::None), records);
    log.append_as_leader(&batch, 0, 0).unwrap().base_offset
}

/// Every stored batch from `from` on, each checked for framing and CRC.
fn read_batches(log: &PartitionLog, from: i64) -> Vec<Vec<u8>> {
    let mut batches = Vec::new();
    let mut offset = from;
    while let Some(slice) = log.read(offset, 1 << 20, i64::MAX, true).unwrap() {
        let bytes = slice.read().unwrap();
        for batch in split_batches(&bytes).unwrap() {
            let header = BatchHeader::parse(batch).unwrap();
            assert_eq!(header.total_len(), batch.len());
            verify_crc(&header, batch).unwrap();
            batches.push(batch.to_vec());
        }
        offset = slice.last_offset() + 1;
    }
    batches
}

fn text(bytes: Option<Bytes>) -> Option<String> {
    bytes.map(|b| String::from_utf8(b.to_vec()).unwrap())
}

fn read_rows(log: &PartitionLog, from: i64) -> Vec<Row> {
    let mut rows = Vec::new();
    for batch in read_batches(log, from) {
        let set = RecordBatchDecoder::decode(&mut Bytes::from(batch)).unwrap();
        for r in set.records {
            rows.push((r.offset, text(r.key), text(r.value)));
        }
    }
    rows
}

fn latest_by_key(rows: &[Row]) -> BTreeMap<Option<String>, (i64, Option<String>)> {
    rows.iter()
        .map(|(offset, key, value)| (key.clone(), (*offset, value.clone())))
        .collect()
}

fn row(offset: i64, key: &str, value: Option<&str>) -> Row {
    (offset, Some(key.to_owned()), value.map(str::to_owned))
}

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

fn build_cleaned_log(dir: &Path) -> PartitionLog {
    let mut log = open(
        dir,
        LogConfig {
            segment_bytes: 400,
            ..compact_config()
        },
    );
    // Keys k0..k3 are overwritten all the time, each u{round} never.
    for round in 0..20i64 {
        let key = format!("k{}", round % 4);
        let value = format!("v{round}");
        let unique = format!("u{round}");
        append(
            &mut log,
            &[(Some(&key), Some(&value)), (Some(&unique), Some(&value))],
            round,
        );
    }
    assert!(log.segment_count() > 3);
    let outcome = log.clean(0, log.log_end_offset()).unwrap();
    assert!(outcome.segments_rewritten > 2);
    log
}

#[test]
fn a_clean_and_an_unclean_reopen_read_the_same_records() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = build_cleaned_log(dir.path());
    let rows = read_rows(&log, 0);
    let end = log.log_end_offset();
    log.close().unwrap();
    drop(log);

    let (log, report) = PartitionLog::open(dir.path(), compact_config(), 0).unwrap();
    assert!(report.clean_shutdown);
    assert_eq!(read_rows(&log, 0), rows);
    assert_eq!(log.log_end_offset(), end);
    drop(log);

    // No close and no recovery point: every segment is re-read and
    // CRC-checked.
    fs::remove_file(dir.path().join("recovery-point")).unwrap();
    let (log, report) = PartitionLog::open(dir.path(), compact_config(), 0).unwrap();
    assert!(!report.clean_shutdown);
    assert_eq!(report.segments_recovered, report.segments);
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!(read_rows(&log, 0), rows);
    assert_eq!(log.log_end_offset(), end);
}

#[test]
fn a_leftover_cleaned_file_is_removed_on_open_and_the_old_segment_is_used() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut log = open(dir.path(), compact_config());
        append(&mut log, &[(Some("k"), Some("1"))], 0);
        append(&mut log, &[(Some("k"), Some("2"))], 0);
        log.roll(0).unwrap();
        append(&mut log, &[(Some("k"), Some("3"))], 0);
        log.close().unwrap();
    }
    // A crash after the indexes were emptied but before the rename.
    let cleaned = dir.path().join("00000000000000000000.log.cleaned");
    fs::write(&cleaned, b"half a cleaned segment").unwrap();
    fs::write(dir.path().join("00000000000000000000.index"), b"").unwrap();
    fs::write(dir.path().join("00000000000000000000.timeindex"), b"").unwrap();
    fs::remove_file(dir.path().join(".clean-shutdown")).unwrap();

    let mut log = open(dir.path(), compact_config());
    assert!(!cleaned.exists());
    let all = vec![
        row(0, "k", Some("1")),
        row(1, "k", Some("2")),
        row(2, "k", Some("3")),
    ];
    assert_eq!(read_rows(&log, 0), all);
    assert_eq!(
        log.read(1, 1, i64::MAX, true)
            .unwrap()
            .unwrap()
            .first_offset(),
        1
    );
    // And a later pass works normally.
    log.clean(0, log.log_end_offset()).unwrap();
    assert_eq!(read_rows(&log, 0), all[2..]);
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
fn a_compacted_log_refuses_records_without_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), compact_config());
    let keyless = [(Some("k"), Some("v")), (None, Some("v"))];
    for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
        let batch = build_keyed_batch(&spec(0, compression), &keyless);
        assert!(matches!(
            log.append_as_leader(&batch, 0, 0),
            Err(LogError::Batch(BatchError::MissingKey))
        ));
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

/// The names of the files a cleaning pass leaves beside the segments.
fn cleaned_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".cleaned"))
        .collect();
    names.sort();
    names
}

/// Segments `[a=a1 k=k1]` (timestamps 0), `[a=a2 b=b1]` and the active
/// `[b=b2]` (timestamps 10 000) at offsets 0..5. A pass rewrites both closed
/// segments: the first keeps k1, the second a2.
fn three_segments(dir: &Path) -> PartitionLog {
    let mut log = open(dir, compact_config());
    append(&mut log, &[(Some("a"), Some("a1"))], 0);
    append(&mut log, &[(Some("k"), Some("k1"))], 0);
    log.roll(0).unwrap();
    append(&mut log, &[(Some("a"), Some("a2"))], 10_000);
    append(&mut log, &[(Some("b"), Some("b1"))], 10_000);
    log.roll(0).unwrap();
    append(&mut log, &[(Some("b"), Some("b2"))], 10_000);
    log
}

fn prepare(log: &PartitionLog) -> PreparedClean {
    let plan = log.begin_clean(0, log.log_end_offset()).unwrap();
    plan.prepare().unwrap()
}

#[test]
fn appends_between_the_steps_of_a_pass_survive_with_their_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = three_segments(dir.path());
    let plan = log.begin_clean(0, log.log_end_offset()).unwrap();
    assert_eq!(append(&mut log, &[(Some("a"), Some("a3"))], 0), 5);
    assert_eq!(append(&mut log, &[(Some("c"), Some("c1"))], 0), 6);
    let prepared = plan.prepare().unwrap();
    assert_eq!(prepared.segments_prepared(), 2);
    assert_eq!(append(&mut log, &[(Some("b"), Some("b3"))], 0), 7);
    log.roll(0).unwrap();
    assert_eq!(append(&mut log, &[(Some("d"), Some("d1"))], 0), 8);

    let outcome = log.complete_clean(prepared).unwrap();
    assert_eq!(outcome.segments_rewritten, 2);
    assert_eq!(outcome.segments_skipped, 0);
    assert_eq!(outcome.records_removed, 2);
    assert_eq!(outcome.bytes_after, log.size_in_bytes());
    assert!(outcome.bytes_appended > 0);
    assert!(outcome.bytes_after - outcome.bytes_appended < outcome.bytes_before);
    assert!(cleaned_files(dir.path()).is_empty());
    // The cleaned segments keep the latest value of each key the pass saw
    // (a2, not yet superseded when it began); everything appended since is
    // there at its offset.
    let all = vec![
        row(1, "k", Some("k1")),
        row(2, "a", Some("a2")),
        row(4, "b", Some("b2")),
        row(5, "a", Some("a3")),
        row(6, "c", Some("c1")),
        row(7, "b", Some("b3")),
        row(8, "d", Some("d1")),
    ];
    assert_eq!(read_rows(&log, 0), all);
    for (offset, first) in [(0, 1), (3, 4), (5, 5), (7, 7), (8, 8)] {
        let slice = log.read(offset, 1, i64::MAX, true).unwrap().unwrap();
        assert_eq!(slice.first_offset(), first, "read from {offset}");
    }
    assert_eq!(log.log_end_offset(), 9);
    assert_eq!(append(&mut log, &[(Some("e"), Some("e1"))], 0), 9);

    // A second pass sees the appended records: a2 and b2 go, and so does
    // the second segment, now empty.
    let outcome = log.clean(0, log.log_end_offset()).unwrap();
    assert_eq!(outcome.records_removed, 2);
    assert_eq!(outcome.segments_deleted, 1);
    assert_eq!(
        read_rows(&log, 0),
        vec![
            row(1, "k", Some("k1")),
            row(5, "a", Some("a3")),
            row(6, "c", Some("c1")),
            row(7, "b", Some("b3")),
            row(8, "d", Some("d1")),
            row(9, "e", Some("e1")),
        ]
    );
}

#[test]
fn a_segment_deleted_by_retention_during_a_pass_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = three_segments(dir.path());
    let prepared = prepare(&log);
    assert_eq!(cleaned_files(dir.path()).len(), 6);

    let mut config = log.config().clone();
    config.retention_ms = 5_000;
    log.set_config(config);
    assert_eq!(
        log.enforce_retention(10_000, log.log_end_offset()).unwrap(),
        1
    );
    assert_eq!(log.log_start_offset(), 2);

    let outcome = log.complete_clean(prepared).unwrap();
    assert_eq!(outcome.segments_skipped, 1);
    assert_eq!(outcome.segments_rewritten, 1);
    assert_eq!(outcome.records_removed, 1);
    assert!(cleaned_files(dir.path()).is_empty());
    assert!(!dir.path().join("00000000000000000000.log").exists());
    assert_eq!(
        read_rows(&log, 2),
        vec![row(2, "a", Some("a2")), row(4, "b", Some("b2"))]
    );

    // A second pass works on what is left.
    append(&mut log, &[(Some("a"), Some("a3"))], 10_000);
    let outcome = log.clean(0, log.log_end_offset()).unwrap();
    assert_eq!((outcome.segments_deleted, outcome.records_removed), (1, 1));
    assert_eq!(
        read_rows(&log, 2),
        vec![row(4, "b", Some("b2")), row(5, "a", Some("a3"))]
    );
    assert_eq!(log.log_start_offset(), 2);
}

#[test]
fn delete_records_during_a_pass_skips_the_deleted_segments_and_keeps_the_new_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = three_segments(dir.path());
    let prepared = prepare(&log);
    // The first segment goes; the log now starts inside the second.
    assert_eq!(log.delete_records_before(3, 0).unwrap(), 3);
    let outcome = log.complete_clean(prepared).unwrap();
    assert_eq!(
        (outcome.segments_skipped, outcome.segments_rewritten),
        (1, 1)
    );
    assert!(cleaned_files(dir.path()).is_empty());
    assert_eq!(log.log_start_offset(), 3);
    assert_eq!(read_rows(&log, 3), vec![row(4, "b", Some("b2"))]);

    // A segment the pass empties while DeleteRecords moved the start into
    // it: the start checkpointed before it is deleted is the current one.
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), compact_config());
    append(&mut log, &[(Some("a"), Some("a1"))], 0);
    append(&mut log, &[(Some("b"), Some("b1"))], 0);
    log.roll(0).unwrap();
    append(
        &mut log,
        &[(Some("a"), Some("a2")), (Some("b"), Some("b2"))],
        0,
    );
    let prepared = prepare(&log);
    assert_eq!(log.delete_records_before(1, 0).unwrap(), 1);
    let outcome = log.complete_clean(prepared).unwrap();
    assert_eq!(outcome.segments_deleted, 1);
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log.log_start_offset(), 1);
    log.close().unwrap();
    drop(log);
    let mut log = open(dir.path(), compact_config());
    assert_eq!(log.log_start_offset(), 1);
    assert_eq!(
        read_rows(&log, 1),
        vec![row(2, "a", Some("a2")), row(3, "b", Some("b2"))]
    );
    log.clean(0, log.log_end_offset()).unwrap();
}

#[test]
fn a_truncation_during_a_pass_drops_the_pass() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = three_segments(dir.path());
    let prepared = prepare(&log);
    // b2, which made b1 removable, is truncated away; a new segment at the
    // same base offset takes other records.
    log.truncate_to(4, 0).unwrap();
    log.roll(0).unwrap();
    append(&mut log, &[(Some("c"), Some("c1"))], 0);
    let outcome = log.complete_clean(prepared).unwrap();
    assert_eq!(outcome.segments_skipped, 2);
    assert_eq!(outcome.segments_rewritten + outcome.segments_deleted, 0);
    assert_eq!(outcome.records_removed, 0);
    assert!(cleaned_files(dir.path()).is_empty());
    let all = vec![
        row(0, "a", Some("a1")),
        row(1, "k", Some("k1")),
        row(2, "a", Some("a2")),
        row(3, "b", Some("b1")),
        row(4, "c", Some("c1")),
    ];
    assert_eq!(read_rows(&log, 0), all);

    // The next pass cleans the log as it now is.
    let outcome = log.clean(0, log.log_end_offset()).unwrap();
    assert_eq!(outcome.records_removed, 1);
    assert_eq!(read_rows(&log, 0), all[1..]);
}

#[test]
fn a_segment_replaced_by_another_pass_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), compact_config());
    append(&mut log, &[(Some("a"), Some("a1"))], 0);
    append(&mut log, &[(Some("k"), Some("k1"))], 0);
    append(&mut log, &[(Some("x"), Some("x1"))], 0);
    log.roll(0).unwrap();
    append(&mut log, &[(Some("a"), Some("a2"))], 0);
    let plan = log.begin_clean(0, log.log_end_offset()).unwrap();
    // k2 comes after this pass began, and another pass that sees it runs
    // whole before this one prepares: it removes a1 and k1.
    append(&mut log, &[(Some("k"), Some("k2"))], 0);
    let outcome = log.clean(0, log.log_end_offset()).unwrap();
    assert_eq!(
        (outcome.segments_rewritten, outcome.records_removed),
        (1, 2)
    );
    let rows = vec![
        row(2, "x", Some("x1")),
        row(3, "a", Some("a2")),
        row(4, "k", Some("k2")),
    ];
    assert_eq!(read_rows(&log, 0), rows);
    let size = log.size_in_bytes();

    // This pass read the first segment as it was and, not knowing k2,
    // keeps k1: its copy must not replace the other pass's.
    let prepared = plan.prepare().unwrap();
    assert_eq!(prepared.segments_prepared(), 1);
    let outcome = log.complete_clean(prepared).unwrap();
    assert_eq!(outcome.segments_skipped, 1);
    assert_eq!(outcome.segments_rewritten, 0);
    assert_eq!(outcome.records_removed, 0);
    assert!(cleaned_files(dir.path()).is_empty());
    assert_eq!(read_rows(&log, 0), rows);
    assert_eq!(log.size_in_bytes(), size);
}

#[test]
fn a_prepared_pass_that_is_not_completed_leaves_no_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = three_segments(dir.path());
    let rows = read_rows(&log, 0);
    let prepared = prepare(&log);
    assert_eq!(
        cleaned_files(dir.path()),
        [
            "00000000000000000000.index.cleaned",
            "00000000000000000000.log.cleaned",
            "00000000000000000000.timeindex.cleaned",
            "00000000000000000002.index.cleaned",
            "00000000000000000002.log.cleaned",
            "00000000000000000002.timeindex.cleaned",
        ]
    );
    drop(prepared);
    assert!(cleaned_files(dir.path()).is_empty());

    let prepared = prepare(&log);
    log.close().unwrap();
    assert!(matches!(
        log.complete_clean(prepared),
        Err(LogError::Closed)
    ));
    assert!(cleaned_files(dir.path()).is_empty());
    drop(log);
    let log = open(dir.path(), compact_config());
    assert_eq!(read_rows(&log, 0), rows);
}

#[test]
fn prepare_runs_while_another_thread_holds_the_log() {
    fn sendable<T: Send + 'static>() {}
    sendable::<CleanPlan>();
    sendable::<PreparedClean>();

    let dir = tempfile::tempdir().unwrap();
    let mut log = open(
        dir.path(),
        LogConfig {
            segment_bytes: 4096,
            ..compact_config()
        },
    );
    let keys: Vec<String> = (0..50).map(|i| format!("k{i}")).collect();
    for round in 0..40 {
        let value = format!("v{round}");
        let records: Vec<Kv<'_>> = keys
            .iter()
            .map(|k| (Some(k.as_str()), Some(value.as_str())))
            .collect();
        append(&mut log, &records, 0);
    }
    let end = log.log_end_offset();
    let log = Arc::new(Mutex::new(log));
    let plan = log.lock().unwrap().begin_clean(0, end).unwrap();

    // This thread holds the log for as long as prepare runs and appends
    // through it meanwhile; prepare must finish without it.
    let mut guard = log.lock().unwrap();
    let (done, finished) = mpsc::channel();
    let worker = thread::spawn(move || done.send(plan.prepare()).unwrap());
    let mut appended = Vec::new();
    for i in 0..20 {
        let value = format!("during{i}");
        appended.push(append(&mut guard, &[(Some("k0"), Some(&value))], 0));
    }
    let prepared = finished
        .recv_timeout(Duration::from_secs(60))
        .expect("prepare finished while the log was locked")
        .unwrap();
    worker.join().unwrap();
    assert!(prepared.segments_prepared() > 0);
    assert_eq!(appended, (end..end + 20).collect::<Vec<_>>());
    let outcome = guard.complete_clean(prepared).unwrap();
    assert!(outcome.records_removed > 0);
    assert_eq!(outcome.segments_skipped, 0);

    let rows = read_rows(&guard, 0);
    let latest = latest_by_key(&rows);
    assert_eq!(latest.len(), 50);
    assert_eq!(
        latest[&Some("k0".to_owned())],
        (end + 19, Some("during19".to_owned()))
    );
    assert_eq!(
        latest[&Some("k1".to_owned())],
        (end - 49, Some("v39".to_owned()))
    );
    for (offset, value) in appended.iter().zip(0..) {
        assert!(rows.contains(&row(*offset, "k0", Some(&format!("during{value}")))));
    }
}

#[test]
fn the_indexes_written_by_a_pass_are_those_a_rebuild_makes() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = build_cleaned_log(dir.path());
    let rows = read_rows(&log, 0);
    log.flush().unwrap();
    let indexes = |dir: &Path| -> BTreeMap<String, Vec<u8>> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| {
                let name = e.file_name().into_string().unwrap();
                name.ends_with(".index") || name.ends_with(".timeindex")
            })
            .map(|e| {
                (
                    e.file_name().into_string().unwrap(),
                    fs::read(e.path()).unwrap(),
                )
            })
            .collect()
    };
    let written = indexes(dir.path());
    assert!(written.values().any(|entries| entries.len() > 8));
    drop(log);

    // Without a recovery point every segment is scanned and its indexes
    // rebuilt.
    fs::remove_file(dir.path().join("recovery-point")).unwrap();
    let (log, report) = PartitionLog::open(dir.path(), compact_config(), 0).unwrap();
    assert_eq!(report.segments_recovered, report.segments);
    assert_eq!(indexes(dir.path()), written);
    assert_eq!(read_rows(&log, 0), rows);
}

#[test]
fn a_crash_in_the_middle_of_a_swap_leaves_a_readable_log() {
    // How far the swap of the first segment got: its log file renamed in,
    // then its time index, then its offset index.
    for renamed in 1..=3 {
        let dir = tempfile::tempdir().unwrap();
        let mut log = three_segments(dir.path());
        let prepared = prepare(&log);
        log.flush().unwrap();
        std::mem::forget(prepared);
        drop(log);
        let path = |name: &str| dir.path().join(format!("00000000000000000000.{name}"));
        fs::write(path("index"), b"").unwrap();
        fs::write(path("timeindex"), b"").unwrap();
        let steps = [
            ("log.cleaned", "log"),
            ("timeindex.cleaned", "timeindex"),
            ("index.cleaned", "index"),
        ];
        for (from, to) in &steps[..renamed] {
            fs::rename(path(from), path(to)).unwrap();
        }

        let (mut log, report) = PartitionLog::open(dir.path(), compact_config(), 0).unwrap();
        assert!(!report.clean_shutdown);
        assert!(cleaned_files(dir.path()).is_empty(), "{renamed}");
        let rows = vec![
            row(1, "k", Some("k1")),
            row(2, "a", Some("a2")),
            row(3, "b", Some("b1")),
            row(4, "b", Some("b2")),
        ];
        assert_eq!(read_rows(&log, 0), rows, "{renamed}");
        assert_eq!(
            log.read(0, 1, i64::MAX, true)
                .unwrap()
                .unwrap()
                .first_offset(),
            1
        );
        assert_eq!(log.offset_for_timestamp(0).unwrap(), Some((0, 1)));
        let outcome = log.clean(0, log.log_end_offset()).unwrap();
        assert_eq!(outcome.records_removed, 1);
        assert_eq!(read_rows(&log, 0), [&rows[..2], &rows[3..]].concat());
    }
}
