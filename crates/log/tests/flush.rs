//! Flushing without the log's lock: what asks for a flush, that an fsync in
//! progress holds up no append, and that checkpoints never go backwards.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    fs,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use keel_log::{Faults, FlushPolicy, LogConfig, PartitionLog, testing::batch};

fn config(flush: FlushPolicy) -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        flush,
        ..LogConfig::default()
    }
}

fn recovery_point(dir: &std::path::Path) -> i64 {
    fs::read_to_string(dir.join("recovery-point"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn a_roll_asks_for_a_flush_instead_of_syncing_under_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let no_policy = FlushPolicy {
        messages: None,
        interval_ms: None,
    };
    let (mut log, _) = PartitionLog::open(dir.path(), config(no_policy), 0).unwrap();
    log.append_as_leader(&batch(2, 0), 0, 0).unwrap();
    assert!(!log.flush_due(0), "nothing asks for a flush yet");
    while log.segment_count() == 1 {
        log.append_as_leader(&batch(2, 0), 0, 0).unwrap();
    }
    assert!(log.flush_due(0), "a roll asks for a flush");
    let pending = log.begin_flush().unwrap();
    pending.sync().unwrap();
    log.complete_flush(&pending).unwrap().write().unwrap();
    assert!(!log.flush_due(0));
    assert_eq!(recovery_point(dir.path()), log.log_end_offset());
}

#[test]
fn flush_messages_asks_for_a_flush_before_the_ack() {
    let dir = tempfile::tempdir().unwrap();
    let every_batch = FlushPolicy {
        messages: Some(1),
        interval_ms: None,
    };
    let (mut log, _) = PartitionLog::open(dir.path(), config(every_batch), 0).unwrap();
    assert!(!log.flush_before_ack());
    log.append_as_leader(&batch(1, 0), 0, 0).unwrap();
    assert!(log.flush_before_ack());
    log.flush().unwrap();
    assert!(!log.flush_before_ack());
    assert_eq!(recovery_point(dir.path()), 1);
}

#[test]
fn an_fsync_in_progress_holds_up_no_append() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = PartitionLog::open(dir.path(), LogConfig::default(), 0).unwrap();
    log.set_faults(Faults {
        fsync_stall: Duration::from_secs(2),
        ..Faults::default()
    });
    log.append_as_leader(&batch(1, 0), 0, 0).unwrap();
    let log = Arc::new(Mutex::new(log));

    let synced = Arc::new(AtomicBool::new(false));
    let (began, flush_began) = std::sync::mpsc::channel();
    let flusher = {
        let (log, synced) = (Arc::clone(&log), Arc::clone(&synced));
        std::thread::spawn(move || {
            let pending = log.lock().unwrap().begin_flush().unwrap();
            began.send(()).unwrap();
            pending.sync().unwrap();
            synced.store(true, Ordering::SeqCst);
            let checkpoint = log.lock().unwrap().complete_flush(&pending);
            checkpoint.unwrap().write().unwrap();
        })
    };
    // The flush has begun and its fsync is stalled for two seconds; the
    // log's lock is free, so appends go on meanwhile.
    flush_began.recv().unwrap();
    for i in 0..10 {
        log.lock()
            .unwrap()
            .append_as_leader(&batch(1, i), 0, 0)
            .unwrap();
    }
    assert!(
        !synced.load(Ordering::SeqCst),
        "the appends waited for the stalled fsync"
    );
    flusher.join().unwrap();
    // The flush covered what was appended before it began, not after.
    assert_eq!(recovery_point(dir.path()), 1);
    assert_eq!(log.lock().unwrap().log_end_offset(), 11);
}

#[test]
fn an_older_recovery_point_never_overwrites_a_newer_one() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = PartitionLog::open(dir.path(), LogConfig::default(), 0).unwrap();
    log.append_as_leader(&batch(1, 0), 0, 0).unwrap();
    let first = log.begin_flush().unwrap();
    log.append_as_leader(&batch(1, 0), 0, 0).unwrap();
    let second = log.begin_flush().unwrap();
    second.sync().unwrap();
    first.sync().unwrap();
    let newer = log.complete_flush(&second).unwrap();
    assert!(log.complete_flush(&first).is_none(), "already covered");
    newer.write().unwrap();
    assert_eq!(recovery_point(dir.path()), 2);
}

#[test]
fn a_flush_begun_before_a_truncation_does_not_move_the_recovery_point_past_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = PartitionLog::open(dir.path(), LogConfig::default(), 0).unwrap();
    for i in 0..10 {
        log.append_as_leader(&batch(1, i), 0, 0).unwrap();
    }
    log.flush().unwrap();
    assert_eq!(recovery_point(dir.path()), 10);
    for i in 0..5 {
        log.append_as_leader(&batch(1, i), 0, 0).unwrap();
    }
    let before = log.begin_flush().unwrap();
    // A new leader's log diverged from offset 4: everything from there is
    // cut, and other batches take those offsets.
    log.truncate_to(4, 0).unwrap();
    assert_eq!(recovery_point(dir.path()), 4, "lowered at once");
    for i in 0..3 {
        log.append_as_leader(&batch(1, i), 1, 0).unwrap();
    }
    before.sync().unwrap();
    assert!(
        log.complete_flush(&before).is_none(),
        "a flush of the old tail vouched for the new one"
    );
    assert_eq!(recovery_point(dir.path()), 4);
    log.flush().unwrap();
    assert_eq!(recovery_point(dir.path()), 7);
}

#[test]
fn a_closed_log_writes_no_more_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = PartitionLog::open(dir.path(), LogConfig::default(), 0).unwrap();
    log.append_as_leader(&batch(1, 0), 0, 0).unwrap();
    let pending = log.begin_flush().unwrap();
    pending.sync().unwrap();
    let late = log.complete_flush(&pending).unwrap();
    log.close().unwrap();
    assert!(!dir.path().join("recovery-point").exists());
    late.write().unwrap();
    assert!(
        !dir.path().join("recovery-point").exists(),
        "a checkpoint was written into a closed log's directory"
    );
}

#[test]
fn a_failed_fsync_stops_the_log_taking_writes() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = PartitionLog::open(dir.path(), LogConfig::default(), 0).unwrap();
    log.append_as_leader(&batch(1, 0), 0, 0).unwrap();
    log.flush().unwrap();
    log.set_faults(Faults {
        fsync_fails: true,
        ..Faults::default()
    });
    log.append_as_leader(&batch(1, 0), 0, 0).unwrap();
    assert!(log.flush().is_err());
    // What the failed fsync covered may be lost; a later fsync could
    // report success for it, so the log takes nothing more.
    log.set_faults(Faults::default());
    assert!(matches!(
        log.append_as_leader(&batch(1, 0), 0, 0),
        Err(keel_log::LogError::Failed { .. })
    ));
    assert!(log.begin_flush().is_none());
    assert_eq!(recovery_point(dir.path()), 1);
}

#[test]
fn a_checkpoint_taken_before_a_truncation_is_not_written_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = PartitionLog::open(dir.path(), LogConfig::default(), 0).unwrap();
    for i in 0..10 {
        log.append_as_leader(&batch(1, i), 0, 0).unwrap();
    }
    let pending = log.begin_flush().unwrap();
    pending.sync().unwrap();
    let checkpoint = log.complete_flush(&pending).unwrap();
    // The log's lock is released before the checkpoint is written; a
    // follower's truncation gets in between.
    log.truncate_to(4, 0).unwrap();
    checkpoint.write().unwrap();
    assert_eq!(recovery_point(dir.path()), 4);
}

/// Descriptors this process holds on files under `dir`.
fn open_files_under(dir: &std::path::Path) -> usize {
    fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter_map(|fd| fs::read_link(fd.path()).ok())
        .filter(|target| target.starts_with(dir))
        .count()
}

/// A log keeps its active segment's file open, and the files of segments
/// that hold data not yet flushed; older segments open theirs while read.
/// A crash leaves the same behind once the log is open again.
#[test]
fn only_the_active_and_unflushed_segments_keep_their_files_open() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().canonicalize().unwrap();
    let policy = FlushPolicy {
        messages: None,
        interval_ms: None,
    };
    let (mut log, _) = PartitionLog::open(&dir, config(policy), 0).unwrap();
    while log.segment_count() < 20 {
        log.append_as_leader(&batch(2, 0), 0, 0).unwrap();
    }
    assert_eq!(open_files_under(&dir), 20, "nothing flushed yet");
    log.flush().unwrap();
    assert_eq!(open_files_under(&dir), 1);

    let slice = log
        .read(0, 100, log.log_end_offset(), true)
        .unwrap()
        .unwrap();
    let again = log
        .read(1, 100, log.log_end_offset(), true)
        .unwrap()
        .unwrap();
    assert_eq!(open_files_under(&dir), 2, "readers of one segment share");
    assert_eq!(slice.read().unwrap(), again.read().unwrap());
    drop((slice, again));
    assert_eq!(open_files_under(&dir), 1);

    log.append_as_leader(&batch(2, 0), 0, 0).unwrap();
    let end = log.log_end_offset();
    drop(log);
    let (mut log, report) = PartitionLog::open(&dir, config(policy), 0).unwrap();
    assert!(!report.clean_shutdown);
    assert_eq!(log.log_end_offset(), end);
    assert_eq!(open_files_under(&dir), 1);
    log.close().unwrap();
    drop(log);
    let (mut log, report) = PartitionLog::open(&dir, config(policy), 0).unwrap();
    assert!(report.clean_shutdown);
    assert_eq!(log.log_end_offset(), end);
    assert_eq!(open_files_under(&dir), 1);

    // A truncation into an older segment makes it the active one.
    log.truncate_to(5, 0).unwrap();
    assert!(log.segment_count() < 20);
    assert_eq!(open_files_under(&dir), 1);
    log.append_as_leader(&batch(2, 0), 0, 0).unwrap();
    assert_eq!(open_files_under(&dir), 1);
}
