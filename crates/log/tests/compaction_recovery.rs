//! Log compaction and reopening: a cleaned log reads the same after a clean
//! and an unclean reopen, the indexes a pass writes are those a rebuild
//! makes, and a crash before or in the middle of a swap leaves a usable
//! log.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{collections::BTreeMap, fs, path::Path};

use common::{
    append, build_cleaned_log, cleaned_files, compact_config, open, prepare, read_rows, row,
    three_segments,
};
use keel_log::PartitionLog;

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
