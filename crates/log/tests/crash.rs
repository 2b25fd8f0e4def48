//! Crash tests: a real process appends to a log and is killed with SIGKILL
//! at a random moment; the log is reopened and every batch the process
//! acknowledged must be there, intact, at its offset. Then a torn write is
//! simulated by cutting the segment in the middle of a batch, and nothing
//! past the cut may be served.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use keel_log::{
    LogConfig, PartitionLog,
    batch::{split_batches, validate_client_batch},
};

/// Acknowledged batches by base offset: (last offset, crc).
type Acked = BTreeMap<i64, (i64, u32)>;

fn run_writer_and_kill(dir: &Path, flush_messages: Option<u64>, acks_before_kill: usize) -> Acked {
    let mut command = Command::new(env!("CARGO_BIN_EXE_log-crash-writer"));
    command.arg(dir);
    if let Some(n) = flush_messages {
        command.arg(n.to_string());
    }
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut acked = Acked::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        let fields: Vec<i64> = line.split(' ').map(|f| f.parse().unwrap()).collect();
        acked.insert(fields[0], (fields[1], fields[2] as u32));
        if acked.len() >= acks_before_kill || Instant::now() > deadline {
            sigkill(child.id());
            break;
        }
    }
    child.wait().unwrap();
    acked
}

fn sigkill(pid: u32) {
    let status = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn verify(dir: &Path, acked: &Acked) -> i64 {
    let (log, _) = PartitionLog::open(dir, LogConfig::default(), 0).unwrap();
    let last_acked = acked.values().map(|(last, _)| *last).max().unwrap_or(-1);
    assert!(
        log.log_end_offset() > last_acked,
        "log ends at {} but offset {last_acked} was acknowledged",
        log.log_end_offset()
    );
    for (&base, &(last, crc)) in acked {
        let slice = log.read(base, 1, i64::MAX, true).unwrap().unwrap();
        let bytes = slice.read().unwrap();
        let batches = split_batches(&bytes).unwrap();
        let header = validate_client_batch(batches[0]).unwrap();
        assert_eq!(header.base_offset, base);
        assert_eq!(header.last_offset(), last);
        assert_eq!(
            header.crc, crc,
            "batch at {base} differs from what was acknowledged"
        );
    }
    log.log_end_offset()
}

#[test]
fn every_acknowledged_batch_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut all = Acked::new();
    for (round, acks) in [300usize, 1_500, 40, 5_000, 700].into_iter().enumerate() {
        let flush = (round % 2 == 0).then_some(50);
        let acked = run_writer_and_kill(dir.path(), flush, acks);
        all.extend(acked);
        let end = verify(dir.path(), &all);
        // Batches past the acknowledged ones may exist (written, not yet
        // reported); the next round's writer continues after them.
        assert!(end > *all.keys().last().unwrap());
    }
}

#[test]
fn a_torn_write_after_a_crash_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let acked = run_writer_and_kill(dir.path(), None, 2_000);
    let end = verify(dir.path(), &acked);

    // Cut the newest non-empty segment (a roll may have left an empty one
    // after it) in the middle of its last batch, as a power
    // loss in the middle of a write would.
    let mut segments: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .filter(|p| std::fs::metadata(p).unwrap().len() > 0)
        .collect();
    segments.sort();
    let newest = segments.last().unwrap();
    let len = std::fs::metadata(newest).unwrap().len();
    let (log, _) = PartitionLog::open(dir.path(), LogConfig::default(), 0).unwrap();
    let last_batch = log.read(end - 1, 1, i64::MAX, true).unwrap().unwrap();
    let last_batch_len = last_batch.len() as u64;
    let last_batch_start = last_batch.first_offset();
    drop(log);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(newest)
        .unwrap();
    file.set_len(len - last_batch_len / 2).unwrap();
    // A stale marker would make the log trust the damaged segment.
    let _ = std::fs::remove_file(dir.path().join(".clean-shutdown"));

    let (log, report) = PartitionLog::open(dir.path(), LogConfig::default(), 0).unwrap();
    assert!(report.truncated_bytes > 0);
    assert_eq!(log.log_end_offset(), last_batch_start);
    assert!(
        log.read(last_batch_start, 1 << 20, i64::MAX, true)
            .unwrap()
            .is_none()
    );
    let survivors: Acked = acked
        .into_iter()
        .filter(|(b, _)| *b < last_batch_start)
        .collect();
    drop(log);
    verify(dir.path(), &survivors);
}
