//! Appends batches to a partition log until it is killed, printing
//! `base_offset last_offset crc` for each batch once `append` has returned,
//! that is once the batch counts as acknowledged. The crash tests SIGKILL
//! this process at random moments and check every printed batch afterwards.
//!
//! Usage: `log-crash-writer DIR [FLUSH_MESSAGES]`

use std::io::Write;

use keel_log::{
    FlushPolicy, LogConfig, PartitionLog,
    batch::BatchHeader,
    testing::{BatchSpec, build_batch},
};

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next() else {
        eprintln!("usage: log-crash-writer DIR [FLUSH_MESSAGES]");
        std::process::exit(2);
    };
    let flush_messages = args.next().and_then(|n| n.parse().ok());
    let config = LogConfig {
        segment_bytes: 64 * 1024,
        flush: FlushPolicy {
            messages: flush_messages,
            interval_ms: None,
        },
        ..LogConfig::default()
    };
    let (mut log, _) = match PartitionLog::open(dir.as_ref(), config, 0) {
        Ok(opened) => opened,
        Err(e) => {
            eprintln!("open failed: {e}");
            std::process::exit(1);
        }
    };
    let mut stdout = std::io::stdout().lock();
    for i in 0u64.. {
        let batch = build_batch(&BatchSpec {
            records: 1 + (i % 7) as i32,
            value_len: 64 + (i % 300) as usize,
            fill: (i % 251) as u8,
            ..BatchSpec::default()
        });
        let outcome = match log.append_as_leader(&batch, 0, 0) {
            Ok(outcome) => outcome,
            Err(e) => {
                eprintln!("append failed: {e}");
                std::process::exit(1);
            }
        };
        if log.flush_before_ack() {
            if let Err(e) = log.flush() {
                eprintln!("flush failed: {e}");
                std::process::exit(1);
            }
        }
        let crc = BatchHeader::parse(&batch).map_or(0, |h| h.crc);
        if writeln!(
            stdout,
            "{} {} {crc}",
            outcome.base_offset, outcome.last_offset
        )
        .and_then(|()| stdout.flush())
        .is_err()
        {
            std::process::exit(0);
        }
    }
}
