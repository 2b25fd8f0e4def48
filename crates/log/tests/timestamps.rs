//! Record timestamps a topic accepts (`message.timestamp.before.max.ms`
//! and `message.timestamp.after.max.ms`): a batch with a record outside
//! the window around the broker's clock is refused whole, naming each such
//! record, compressed or not; LogAppendTime topics are not checked.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{open, spec};
use kafka_protocol::records::Compression;
use keel_log::{
    BatchError, LogConfig, LogError, RecordFault,
    testing::{BatchSpec, build_batch},
};

const NOW: i64 = 1_000_000;

fn window(before: i64, after: i64) -> LogConfig {
    LogConfig {
        timestamp_before_max_ms: before,
        timestamp_after_max_ms: after,
        ..LogConfig::default()
    }
}

/// Four records stamped `first_timestamp` to `first_timestamp + 3`.
fn four(first_timestamp: i64, compression: Compression) -> Vec<u8> {
    build_batch(&BatchSpec {
        records: 4,
        ..spec(first_timestamp, compression)
    })
}

fn refused(outcome: Result<keel_log::AppendOutcome, LogError>) -> Vec<(i32, i64)> {
    match outcome {
        Err(LogError::Batch(BatchError::RejectedRecords { named: records, .. })) => records
            .iter()
            .map(|r| match r.reason {
                RecordFault::TimestampOutOfRange { timestamp, .. } => (r.batch_index, timestamp),
                other => panic!("{other:?}"),
            })
            .collect(),
        other => panic!("not refused for timestamps: {other:?}"),
    }
}

#[test]
fn records_outside_the_window_are_named_and_nothing_is_stored() {
    for compression in [Compression::None, Compression::Lz4, Compression::Zstd] {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path(), window(100, 2));
        // NOW - 101 is too old; NOW + 3 too new.
        assert_eq!(
            refused(log.append_as_leader(&four(NOW - 101, compression), 0, NOW)),
            [(0, NOW - 101)],
            "{compression:?}"
        );
        assert_eq!(
            refused(log.append_as_leader(&four(NOW, compression), 0, NOW)),
            [(3, NOW + 3)],
            "{compression:?}"
        );
        assert_eq!(log.log_end_offset(), 0);
        // The window's edges are inside it.
        log.append_as_leader(&four(NOW - 100, compression), 0, NOW)
            .unwrap();
        log.append_as_leader(&four(NOW - 1, compression), 0, NOW)
            .unwrap();
        assert_eq!(log.log_end_offset(), 8);
    }
}

#[test]
fn without_a_bound_behind_old_records_pass_and_new_ones_are_still_checked() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), window(i64::MAX, 3_600_000));
    log.append_as_leader(&four(0, Compression::Gzip), 0, NOW)
        .unwrap();
    assert_eq!(
        refused(log.append_as_leader(&four(NOW + 3_600_000, Compression::Gzip), 0, NOW)),
        [
            (1, NOW + 3_600_001),
            (2, NOW + 3_600_002),
            (3, NOW + 3_600_003)
        ]
    );
}

#[test]
fn a_log_append_time_topic_takes_any_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(
        dir.path(),
        LogConfig {
            log_append_time: true,
            ..window(0, 0)
        },
    );
    log.append_as_leader(&four(NOW * 5, Compression::None), 0, NOW)
        .unwrap();
    assert_eq!(log.log_end_offset(), 4);
}

#[test]
fn a_batch_of_many_bad_records_names_a_hundred_and_counts_them_all() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), window(0, 0));
    let many = build_batch(&BatchSpec {
        records: 5_000,
        ..spec(NOW + 10, Compression::Zstd)
    });
    match log.append_as_leader(&many, 0, NOW) {
        Err(LogError::Batch(BatchError::RejectedRecords { named, total })) => {
            assert_eq!(total, 5_000);
            assert_eq!(named.len(), keel_log::MAX_NAMED_RECORDS);
            assert_eq!(named[99].batch_index, 99);
        }
        other => panic!("{other:?}"),
    }
}
