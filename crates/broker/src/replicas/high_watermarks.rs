//! The high watermark checkpoint of a data directory,
//! `replication-offset-checkpoint`, in Kafka's text format: a version line,
//! a count line, then one `topic partition offset` line per partition.
//!
//! A replica restarts with the high watermark it last checkpointed (never
//! beyond its log), so a restarted leader does not show consumers less
//! than it did, and a follower does not start from zero.

use std::{collections::HashMap, path::Path};

use keel_log::{LogError, write_atomically};

const FILE_NAME: &str = "replication-offset-checkpoint";

/// The checkpointed high watermarks; empty when there is none. Lines that
/// do not parse are skipped: a missing entry only makes a replica start
/// from its log start offset.
pub(super) fn read(data_dir: &Path) -> HashMap<(String, i32), i64> {
    let Ok(text) = std::fs::read_to_string(data_dir.join(FILE_NAME)) else {
        return HashMap::new();
    };
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let mut fields = line.rsplitn(3, ' ');
            let offset = fields.next()?.parse().ok()?;
            let partition = fields.next()?.parse().ok()?;
            let topic = fields.next()?.to_string();
            Some(((topic, partition), offset))
        })
        .collect()
}

pub(super) fn write(data_dir: &Path, entries: &[(String, i32, i64)]) -> Result<(), LogError> {
    let mut text = format!("0\n{}\n", entries.len());
    for (topic, partition, offset) in entries {
        text.push_str(&format!("{topic} {partition} {offset}\n"));
    }
    write_atomically(&data_dir.join(FILE_NAME), text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn high_watermarks_survive_a_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(dir.path()).is_empty());
        let entries = vec![("orders".to_string(), 0, 42), ("a.b-c_d".to_string(), 7, 0)];
        write(dir.path(), &entries).unwrap();
        let read = read(dir.path());
        assert_eq!(read.len(), 2);
        assert_eq!(read[&("orders".to_string(), 0)], 42);
        assert_eq!(read[&("a.b-c_d".to_string(), 7)], 0);
    }
}
