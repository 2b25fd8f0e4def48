//! Behaviour of a partition log through its public API: appends, reads,
//! rolls, reopen, recovery, retention, DeleteRecords, idempotence, epochs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;

use kafka_protocol::records::{Compression, RecordBatchDecoder};
use keel_log::{
    LogConfig, LogError, PartitionLog, ReadMode,
    batch::BatchHeader,
    testing::{BatchSpec, ProducerIdentity, batch, build_batch},
};

fn small_segments() -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        index_interval_bytes: 128,
        ..LogConfig::default()
    }
}

fn open(dir: &std::path::Path, config: LogConfig) -> PartitionLog {
    PartitionLog::open(dir, config, 0).unwrap().0
}

fn read_all(log: &PartitionLog, from: i64) -> Vec<BatchHeader> {
    let mut headers = Vec::new();
    let mut offset = from;
    while let Some(slice) = log.read(offset, 1 << 20, i64::MAX, true).unwrap() {
        let bytes = slice.read().unwrap();
        for b in keel_log::batch::split_batches(&bytes).unwrap() {
            let header = keel_log::batch::validate_client_batch(b).unwrap();
            headers.push(header);
        }
        offset = slice.last_offset() + 1;
    }
    headers
}

#[test]
fn appends_get_consecutive_offsets_and_read_back_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), small_segments());
    for i in 0..50 {
        let b = batch(3, i * 10);
        let outcome = log.append_as_leader(&b, 0, 0).unwrap();
        assert_eq!(outcome.base_offset, i * 3);
        assert_eq!(outcome.last_offset, i * 3 + 2);
    }
    assert_eq!(log.log_end_offset(), 150);
    assert!(log.segment_count() > 3, "segments rolled by size");
    let headers = read_all(&log, 0);
    assert_eq!(headers.len(), 50);
    assert!(
        headers
            .windows(2)
            .all(|w| w[1].base_offset == w[0].next_offset())
    );
    // A read from the middle of a batch returns that whole batch.
    let slice = log.read(4, 1 << 20, i64::MAX, true).unwrap().unwrap();
    assert_eq!(slice.first_offset(), 3);
}

#[test]
fn a_read_that_may_not_wait_takes_only_open_files_and_cached_pages() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), small_segments());
    for i in 0..20 {
        log.append_as_leader(&batch(3, i * 10), 0, 0).unwrap();
    }
    let cached_read = |log: &PartitionLog, offset| {
        log.read_in(offset, 1 << 20, i64::MAX, true, ReadMode::CachedOnly)
    };

    // At the log end: the active segment is open, its pages cached.
    let tail = log.log_end_offset() - 3;
    let waited = log.read(tail, 1 << 20, i64::MAX, true).unwrap().unwrap();
    let cached = cached_read(&log, tail).unwrap().unwrap();
    assert_eq!(cached.first_offset(), waited.first_offset());
    assert_eq!(cached.read_cached().unwrap(), Some(waited.read().unwrap()));

    // Flushed, the first segment's file closes: opening it may wait.
    log.flush().unwrap();
    assert!(matches!(cached_read(&log, 0), Err(LogError::WouldWait)));
    let first = log.read(0, 1 << 20, i64::MAX, true).unwrap().unwrap();
    // While a reader holds it open, its cached pages are read.
    let again = cached_read(&log, 0).unwrap().unwrap();
    assert_eq!(again.read_cached().unwrap(), Some(first.read().unwrap()));

    // Pages dropped from the page cache are not read without waiting.
    let segment = fs::File::open(dir.path().join(format!("{:020}.log", 0))).unwrap();
    rustix::fs::fadvise(&segment, 0, None, rustix::fs::Advice::DontNeed).unwrap();
    assert_eq!(first.read_cached().unwrap(), None);
    assert!(matches!(cached_read(&log, 0), Err(LogError::WouldWait)));
    assert_eq!(first.read().unwrap().len(), first.len());
}

#[test]
fn reads_honour_max_bytes_and_the_upper_bound() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), LogConfig::default());
    let one = batch(1, 0).len();
    for _ in 0..10 {
        log.append_as_leader(&batch(1, 0), 0, 0).unwrap();
    }
    let slice = log.read(0, one * 3 + 1, i64::MAX, true).unwrap().unwrap();
    assert_eq!(slice.len(), one * 3);
    assert_eq!(slice.last_offset(), 2);
    // A first batch larger than max_bytes comes through only when allowed.
    assert!(log.read(0, 10, i64::MAX, false).unwrap().is_none());
    assert_eq!(log.read(0, 10, i64::MAX, true).unwrap().unwrap().len(), one);
    // Nothing at or past the upper bound (the high watermark) is returned.
    let slice = log.read(0, 1 << 20, 4, true).unwrap().unwrap();
    assert_eq!(slice.last_offset(), 3);
    assert!(log.read(4, 1 << 20, 4, true).unwrap().is_none());
    assert!(log.read(10, 1 << 20, i64::MAX, true).unwrap().is_none());
    assert!(matches!(
        log.read(11, 1, i64::MAX, true),
        Err(LogError::OffsetOutOfRange { .. })
    ));
}

#[test]
fn a_clean_reopen_keeps_data_producers_and_epochs() {
    let dir = tempfile::tempdir().unwrap();
    let producer = |seq| {
        build_batch(&BatchSpec {
            records: 2,
            producer: Some(ProducerIdentity {
                producer_id: 9,
                producer_epoch: 0,
                base_sequence: seq,
            }),
            ..BatchSpec::default()
        })
    };
    {
        let mut log = open(dir.path(), small_segments());
        for seq in (0..40).step_by(2) {
            log.append_as_leader(&producer(seq), 3, 0).unwrap();
        }
        log.close().unwrap();
    }
    let (mut log, report) = PartitionLog::open(dir.path(), small_segments(), 0).unwrap();
    assert!(report.clean_shutdown);
    assert_eq!(report.segments_recovered, 0);
    assert_eq!(log.log_end_offset(), 40);
    assert_eq!(read_all(&log, 0).len(), 20);
    assert_eq!(log.latest_epoch(), Some(3));
    let retry = log.append_as_leader(&producer(38), 3, 0).unwrap();
    assert!(retry.duplicate);
    assert_eq!(retry.base_offset, 38);
    assert_eq!(log.log_end_offset(), 40);
}

#[test]
fn an_unclean_reopen_rebuilds_producer_state_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let spec = BatchSpec {
        producer: Some(ProducerIdentity {
            producer_id: 1,
            producer_epoch: 0,
            base_sequence: 0,
        }),
        ..BatchSpec::default()
    };
    {
        let mut log = open(dir.path(), small_segments());
        log.append_as_leader(&build_batch(&spec), 0, 0).unwrap();
        // dropped without close: as after a crash
    }
    let (mut log, report) = PartitionLog::open(dir.path(), small_segments(), 0).unwrap();
    assert!(!report.clean_shutdown);
    assert!(
        log.append_as_leader(&build_batch(&spec), 0, 0)
            .unwrap()
            .duplicate
    );
}

#[test]
fn a_torn_tail_is_cut_and_nothing_past_it_is_served() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut log = open(dir.path(), LogConfig::default());
        for _ in 0..5 {
            log.append_as_leader(&batch(2, 0), 0, 0).unwrap();
        }
    }
    let segment = dir.path().join("00000000000000000000.log");
    let mut bytes = fs::read(&segment).unwrap();
    let whole = bytes.len();
    let last = batch(2, 0).len();
    bytes.truncate(whole - last / 2);
    bytes.extend([0xAB; 7]);
    fs::write(&segment, &bytes).unwrap();

    let (log, report) = PartitionLog::open(dir.path(), LogConfig::default(), 0).unwrap();
    assert!(report.truncated_bytes > 0);
    assert_eq!(log.log_end_offset(), 8);
    assert_eq!(fs::metadata(&segment).unwrap().len() as usize, whole - last);
    assert_eq!(read_all(&log, 0).len(), 4);
    assert!(log.read(8, 1 << 20, i64::MAX, true).unwrap().is_none());
}

#[test]
fn a_corrupt_batch_in_the_middle_drops_it_and_everything_after() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut log = open(dir.path(), LogConfig::default());
        for _ in 0..5 {
            log.append_as_leader(&batch(1, 0), 0, 0).unwrap();
        }
    }
    let segment = dir.path().join("00000000000000000000.log");
    let mut bytes = fs::read(&segment).unwrap();
    let one = batch(1, 0).len();
    bytes[2 * one + 70] ^= 0xFF;
    fs::write(&segment, &bytes).unwrap();
    let log = open(dir.path(), LogConfig::default());
    assert_eq!(log.log_end_offset(), 2);
}

#[test]
fn missing_or_damaged_indexes_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut log = open(dir.path(), small_segments());
        for _ in 0..30 {
            log.append_as_leader(&batch(1, 0), 0, 0).unwrap();
        }
        log.close().unwrap();
    }
    for entry in fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        match path.extension().and_then(|e| e.to_str()) {
            Some("index") => fs::write(&path, [0xFF; 24]).unwrap(),
            Some("timeindex") => fs::remove_file(&path).unwrap(),
            _ => {}
        }
    }
    let log = open(dir.path(), small_segments());
    assert_eq!(log.log_end_offset(), 30);
    for offset in 0..30 {
        let slice = log.read(offset, 1, i64::MAX, true).unwrap().unwrap();
        assert_eq!(slice.first_offset(), offset);
    }
}

#[test]
fn retention_by_size_and_time_moves_the_log_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention_bytes: 2048,
        ..small_segments()
    };
    let mut log = open(dir.path(), config);
    for i in 0..60 {
        log.append_as_leader(&batch(1, i), 0, 0).unwrap();
    }
    let before = log.size_in_bytes();
    let deleted = log.enforce_retention(0, log.log_end_offset()).unwrap();
    assert!(deleted > 0);
    assert!(log.size_in_bytes() < before);
    assert!(log.size_in_bytes() >= 2048 - 1024);
    assert!(log.log_start_offset() > 0);
    assert!(matches!(
        log.read(0, 1, i64::MAX, true),
        Err(LogError::OffsetOutOfRange { .. })
    ));

    let mut log = {
        let mut config = log.config().clone();
        config.retention_bytes = -1;
        config.retention_ms = 1_000;
        log.set_config(config);
        log
    };
    // Nothing is old yet; then everything is, even the active segment.
    assert_eq!(log.enforce_retention(500, log.log_end_offset()).unwrap(), 0);
    log.enforce_retention(10_000, log.log_end_offset()).unwrap();
    assert_eq!(log.log_start_offset(), 60);
    assert_eq!(log.log_end_offset(), 60);
    assert_eq!(
        log.append_as_leader(&batch(1, 0), 0, 0)
            .unwrap()
            .base_offset,
        60
    );
}

#[test]
fn retention_keeps_what_is_above_the_high_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention_ms: 0,
        ..small_segments()
    };
    let mut log = open(dir.path(), config);
    for _ in 0..60 {
        log.append_as_leader(&batch(1, 0), 0, 0).unwrap();
    }
    log.enforce_retention(1_000, 0).unwrap();
    assert_eq!(log.log_start_offset(), 0);
}

#[test]
fn delete_records_moves_the_start_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut log = open(dir.path(), small_segments());
        for _ in 0..40 {
            log.append_as_leader(&batch(1, 0), 0, 0).unwrap();
        }
        assert_eq!(log.delete_records_before(25, 0).unwrap(), 25);
        assert!(log.delete_records_before(41, 0).is_err());
        assert_eq!(read_all(&log, 25).first().unwrap().base_offset, 25);
    }
    let log = open(dir.path(), small_segments());
    assert_eq!(log.log_start_offset(), 25);
    assert!(log.read(24, 1, i64::MAX, true).is_err());
}

#[test]
fn timestamp_lookup_finds_the_first_record_at_or_after() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), small_segments());
    for i in 0..20 {
        // records at timestamps 100*i .. 100*i + 4
        log.append_as_leader(&batch(5, 100 * i), 0, 0).unwrap();
    }
    assert_eq!(log.offset_for_timestamp(0).unwrap(), Some((0, 0)));
    assert_eq!(log.offset_for_timestamp(702).unwrap(), Some((702, 37)));
    assert_eq!(log.offset_for_timestamp(705).unwrap(), Some((800, 40)));
    assert_eq!(log.offset_for_timestamp(10_000).unwrap(), None);
    assert_eq!(log.max_timestamp_offset().unwrap(), Some((1_904, 99)));
}

#[test]
fn compressed_batches_are_stored_as_received() {
    for compression in [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path(), LogConfig::default());
        let original = build_batch(&BatchSpec {
            records: 50,
            first_timestamp: 1_000,
            value_len: 100,
            compression,
            ..BatchSpec::default()
        });
        let sent = original.clone();
        log.append_as_leader(&sent, 0, 0).unwrap();
        let stored = log
            .read(0, 1 << 20, i64::MAX, true)
            .unwrap()
            .unwrap()
            .read()
            .unwrap();
        // Identical but for the leader epoch the log wrote in.
        assert_eq!(stored[16..], original[16..]);
        let records = RecordBatchDecoder::decode(&mut stored.clone())
            .unwrap()
            .records;
        assert_eq!(records.len(), 50);
        assert_eq!(log.offset_for_timestamp(1_020).unwrap(), Some((1_020, 20)));
    }
}

#[test]
fn idempotent_producers_are_deduplicated_and_fenced() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), LogConfig::default());
    let spec = |epoch, seq| BatchSpec {
        records: 2,
        producer: Some(ProducerIdentity {
            producer_id: 5,
            producer_epoch: epoch,
            base_sequence: seq,
        }),
        ..BatchSpec::default()
    };
    log.append_as_leader(&build_batch(&spec(0, 0)), 0, 0)
        .unwrap();
    log.append_as_leader(&build_batch(&spec(0, 2)), 0, 0)
        .unwrap();
    let dup = log
        .append_as_leader(&build_batch(&spec(0, 0)), 0, 0)
        .unwrap();
    assert!(dup.duplicate);
    assert_eq!((dup.base_offset, dup.last_offset), (0, 1));
    assert!(matches!(
        log.append_as_leader(&build_batch(&spec(0, 8)), 0, 0),
        Err(LogError::OutOfOrderSequence { expected: 4, .. })
    ));
    log.append_as_leader(&build_batch(&spec(1, 0)), 0, 0)
        .unwrap();
    assert!(matches!(
        log.append_as_leader(&build_batch(&spec(0, 4)), 0, 0),
        Err(LogError::InvalidProducerEpoch { .. })
    ));
    assert_eq!(log.log_end_offset(), 6);
}

#[test]
fn corrupt_and_oversized_batches_are_refused_and_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(
        dir.path(),
        LogConfig {
            max_message_bytes: 200,
            ..LogConfig::default()
        },
    );
    let mut corrupt = batch(1, 0);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 1;
    assert!(matches!(
        log.append_as_leader(&corrupt, 0, 0),
        Err(LogError::Batch(e)) if e.is_corruption()
    ));
    let big = build_batch(&BatchSpec {
        value_len: 500,
        ..BatchSpec::default()
    });
    assert!(matches!(
        log.append_as_leader(&big, 0, 0),
        Err(LogError::BatchTooLarge { .. })
    ));
    assert_eq!(log.log_end_offset(), 0);
    assert_eq!(log.size_in_bytes(), 0);
}

#[test]
fn leader_epochs_answer_offset_for_leader_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), LogConfig::default());
    for (epoch, count) in [(0, 3), (2, 4), (5, 1)] {
        for _ in 0..count {
            log.append_as_leader(&batch(1, 0), epoch, 0).unwrap();
        }
    }
    assert_eq!(log.end_offset_for_epoch(0), (0, 3));
    assert_eq!(log.end_offset_for_epoch(1), (0, 3));
    assert_eq!(log.end_offset_for_epoch(2), (2, 7));
    assert_eq!(log.end_offset_for_epoch(5), (5, 8));
    assert_eq!(log.end_offset_for_epoch(6), (-1, -1));
}

#[test]
fn truncation_removes_the_tail_and_its_epochs() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), small_segments());
    for i in 0..40 {
        log.append_as_leader(&batch(1, 0), i / 10, 0).unwrap();
    }
    log.truncate_to(15, 0).unwrap();
    assert_eq!(log.log_end_offset(), 15);
    assert_eq!(log.latest_epoch(), Some(1));
    assert_eq!(read_all(&log, 0).len(), 15);
    assert_eq!(
        log.append_as_leader(&batch(1, 0), 7, 0)
            .unwrap()
            .base_offset,
        15
    );
    drop(log);
    let log = open(dir.path(), small_segments());
    assert_eq!(log.log_end_offset(), 16);
    assert_eq!(log.end_offset_for_epoch(1), (1, 15));
}

#[test]
fn segments_roll_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(
        dir.path(),
        LogConfig {
            segment_ms: 100,
            ..LogConfig::default()
        },
    );
    log.append_as_leader(&batch(1, 0), 0, 0).unwrap();
    log.append_as_leader(&batch(1, 0), 0, 50).unwrap();
    assert_eq!(log.segment_count(), 1);
    log.append_as_leader(&batch(1, 0), 0, 150).unwrap();
    assert_eq!(log.segment_count(), 2);
}

#[test]
fn log_append_time_stamps_the_stored_batch_and_keeps_it_valid() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(
        dir.path(),
        LogConfig {
            log_append_time: true,
            ..LogConfig::default()
        },
    );
    let sent = batch(3, 5);
    let outcome = log.append_as_leader(&sent, 0, 777).unwrap();
    assert_eq!(outcome.log_append_time_ms, 777);
    let headers = read_all(&log, 0);
    assert!(headers[0].is_log_append_time());
    assert_eq!(headers[0].max_timestamp, 777);
    // The producer's buffer is not touched.
    assert_eq!(BatchHeader::parse(&sent).unwrap().max_timestamp, 7);
}

/// The age at which the first segment of a fresh log in `dir` rolls.
fn roll_age(dir: &std::path::Path, config: &LogConfig) -> i64 {
    let (mut log, _) = PartitionLog::open(dir, config.clone(), 0).unwrap();
    log.append_as_leader(&batch(1, 0), 0, 0).unwrap();
    for now in 1..=config.segment_ms {
        log.append_as_leader(&batch(1, now), 0, now).unwrap();
        if log.segment_count() > 1 {
            return now;
        }
    }
    panic!("no roll within segment.ms");
}

#[test]
fn segment_jitter_spreads_rolls_before_segment_ms_alike_for_the_same_partition() {
    let steady = LogConfig {
        segment_ms: 100,
        ..LogConfig::default()
    };
    let root = tempfile::tempdir().unwrap();
    assert_eq!(roll_age(&root.path().join("steady"), &steady), 100);
    let jittered = LogConfig {
        segment_jitter_ms: 1_000,
        ..steady
    };
    let ages: Vec<i64> = (0..16)
        .map(|i| roll_age(&root.path().join(format!("t-{i}")), &jittered))
        .collect();
    assert!(ages.iter().all(|age| (1..=100).contains(age)), "{ages:?}");
    let distinct: std::collections::BTreeSet<_> = ages.iter().collect();
    assert!(distinct.len() > 4, "rolls not spread: {ages:?}");
    // A partition in the same directory gets the same share again.
    let again = root.path().join("t-again");
    let first = roll_age(&again, &jittered);
    std::fs::remove_dir_all(&again).unwrap();
    assert_eq!(roll_age(&again, &jittered), first);
}
