//! Helpers shared by the compaction tests: a compacted log's configuration,
//! appending keyed records, reading them back as rows, the logs the tests
//! clean, and the `.cleaned` files a pass leaves.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::{collections::BTreeMap, fs, path::Path};

use bytes::Bytes;
use kafka_protocol::records::{Compression, RecordBatchDecoder};
use keel_log::{
    LogConfig, PartitionLog, PreparedClean,
    batch::{BatchHeader, split_batches, verify_crc},
    testing::{BatchSpec, build_keyed_batch},
};

/// One record as read back: offset, key, value.
pub type Row = (i64, Option<String>, Option<String>);

pub type Kv<'a> = (Option<&'a str>, Option<&'a str>);

pub fn compact_config() -> LogConfig {
    LogConfig {
        compact: true,
        delete_retention_ms: 1_000,
        index_interval_bytes: 128,
        ..LogConfig::default()
    }
}

pub fn open(dir: &Path, config: LogConfig) -> PartitionLog {
    PartitionLog::open(dir, config, 0).unwrap().0
}

pub fn spec(first_timestamp: i64, compression: Compression) -> BatchSpec {
    BatchSpec {
        first_timestamp,
        compression,
        ..BatchSpec::default()
    }
}

/// Appends `(key, value)` pairs as one uncompressed batch at timestamp `ts`.
pub fn append(log: &mut PartitionLog, records: &[Kv<'_>], ts: i64) -> i64 {
    let batch = build_keyed_batch(&spec(ts, Compression::None), records);
    log.append_as_leader(&batch, 0, 0).unwrap().base_offset
}

/// Every stored batch from `from` on, each checked for framing and CRC.
pub fn read_batches(log: &PartitionLog, from: i64) -> Vec<Vec<u8>> {
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

pub fn read_rows(log: &PartitionLog, from: i64) -> Vec<Row> {
    let mut rows = Vec::new();
    for batch in read_batches(log, from) {
        let set = RecordBatchDecoder::decode(&mut Bytes::from(batch)).unwrap();
        for r in set.records {
            rows.push((r.offset, text(r.key), text(r.value)));
        }
    }
    rows
}

pub fn latest_by_key(rows: &[Row]) -> BTreeMap<Option<String>, (i64, Option<String>)> {
    rows.iter()
        .map(|(offset, key, value)| (key.clone(), (*offset, value.clone())))
        .collect()
}

pub fn row(offset: i64, key: &str, value: Option<&str>) -> Row {
    (offset, Some(key.to_owned()), value.map(str::to_owned))
}

pub fn build_cleaned_log(dir: &Path) -> PartitionLog {
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

/// The names of the files a cleaning pass leaves beside the segments.
pub fn cleaned_files(dir: &Path) -> Vec<String> {
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
pub fn three_segments(dir: &Path) -> PartitionLog {
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

pub fn prepare(log: &PartitionLog) -> PreparedClean {
    let plan = log.begin_clean(0, log.log_end_offset()).unwrap();
    plan.prepare().unwrap()
}
