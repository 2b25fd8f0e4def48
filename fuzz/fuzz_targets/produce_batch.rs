//! Any byte sequence as the records of a produce request: the log must
//! refuse it or store it, never panic, and a stored batch must read back
//! whole and answer timestamp lookups without blowing up.
#![no_main]

use std::{path::PathBuf, sync::OnceLock};

use keel_log::{LogConfig, PartitionLog};

/// On tmpfs when there is one, so the log's fsyncs cost nothing.
fn scratch_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        base.join(format!("keel-fuzz-{}", std::process::id()))
    })
}

libfuzzer_sys::fuzz_target!(|records: &[u8]| {
    let Ok(batches) = keel_log::batch::split_batches(records) else {
        return;
    };
    let [batch] = batches.as_slice() else {
        return;
    };
    let mut batch = batch.to_vec();
    // A random mutation almost never keeps the CRC valid, which would stop
    // the fuzzer at the checksum; inputs with an even first byte get their
    // CRC recomputed so the checks behind it are explored too.
    if batch.len() >= 61 && batch[0] % 2 == 0 {
        let crc = crc32c::crc32c(&batch[21..]);
        batch[17..21].copy_from_slice(&crc.to_be_bytes());
    }
    let dir = scratch_dir();
    let _ = std::fs::remove_dir_all(dir);
    let (mut log, _) = PartitionLog::open(dir, LogConfig::default(), 0).expect("open");
    if let Ok(outcome) = log.append_as_leader(&batch, 0, 0) {
        let slice = log
            .read(outcome.base_offset, usize::MAX, i64::MAX, true)
            .expect("read")
            .expect("an appended batch reads back");
        assert_eq!(slice.read().expect("readable").len(), batch.len());
        let _ = log.offset_for_timestamp(0);
        let _ = log.max_timestamp_offset();
    }
});
