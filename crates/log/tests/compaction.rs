//! Log compaction through the public API: which records a cleaning pass
//! keeps, that offsets and reads survive it, that crashes during it leave a
//! usable log, and that a compacted log refuses records without a key.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::BTreeMap, fs, path::Path};

use bytes::Bytes;
use kafka_protocol::records::{Compression, RecordBatchDecoder};
use keel_log::{
    BatchError, LogConfig, LogError, PartitionLog,
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
