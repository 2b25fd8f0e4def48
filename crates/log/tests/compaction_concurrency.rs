//! Log compaction while the log goes on changing between the steps of a
//! pass (begin, prepare, complete): appends, retention, DeleteRecords, a
//! truncation and another pass; a prepared pass that is never completed;
//! and prepare running while another thread holds the log.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    sync::{Arc, Mutex, mpsc},
    thread,
    time::Duration,
};

use common::{
    Kv, append, cleaned_files, compact_config, latest_by_key, open, prepare, read_rows, row,
    three_segments,
};
use keel_log::{CleanPlan, LogConfig, LogError, PreparedClean};

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
