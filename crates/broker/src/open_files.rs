//! The open-file limit a broker runs under, and the partition replicas it
//! can therefore keep.
//!
//! Every hosted partition keeps one file open, its active segment's log;
//! its other segments open theirs only while they are read or hold data not
//! yet flushed, and no index stays open (see `keel_log::segment::file` and
//! `keel_log::index`). Connections, the Raft log and short-lived files
//! (reads of older segments, index writes, checkpoints, directory syncs)
//! need the rest. A broker that accepted more partitions than it can open
//! again would not come back after a restart, so:
//!
//! - at start the soft limit is raised to the hard limit;
//! - a data directory holding more partition logs than the limit allows is
//!   refused at start, with the numbers and how to raise the limit;
//! - a broker registers how many partition replicas it can keep
//!   ([`max_replicas`]), and CreateTopics and CreatePartitions refuse to
//!   place more on it (see `api::create_topics::check_capacity`).

use std::path::Path;

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Descriptors kept for everything but the partitions' active segments:
/// client and cluster connections, the Raft log, and files opened for a
/// moment.
pub const RESERVED: u64 = 256;

/// The limits before and after [`raise`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFileLimit {
    /// The soft limit in force; `None` when unlimited.
    pub soft: Option<u64>,
    pub hard: Option<u64>,
}

impl OpenFileLimit {
    /// Partition replicas (one open segment each) a broker under this limit
    /// can keep; `None` when unlimited.
    pub fn max_replicas(self) -> Option<u64> {
        self.soft.map(|soft| soft.saturating_sub(RESERVED))
    }
}

/// Raises the soft limit on open files to the hard limit, as far as the
/// process may, and returns what is in force.
pub fn raise() -> OpenFileLimit {
    let Rlimit { current, maximum } = getrlimit(Resource::Nofile);
    if current != maximum {
        let raised = Rlimit {
            current: maximum,
            maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => tracing::info!(
                from = current.map_or("unlimited".into(), |n| n.to_string()),
                to = maximum.map_or("unlimited".into(), |n| n.to_string()),
                "raised the open file limit to its hard limit"
            ),
            Err(error) => tracing::warn!(%error, "cannot raise the open file limit"),
        }
    }
    let Rlimit { current, maximum } = getrlimit(Resource::Nofile);
    OpenFileLimit {
        soft: current,
        hard: maximum,
    }
}

/// Partition logs (directories holding a segment) under `data_dir`, not
/// counting the metadata directory, `metadata_dir`, whose log is part of
/// what [`RESERVED`] covers: one open file each.
pub fn partition_logs_on_disk(data_dir: &Path, metadata_dir: &str) -> u64 {
    let Ok(entries) = std::fs::read_dir(data_dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
        .filter(|entry| entry.file_name() != metadata_dir)
        .filter_map(|entry| std::fs::read_dir(entry.path()).ok())
        .map(|files| {
            files
                .flatten()
                .any(|file| file.file_name().to_string_lossy().ends_with(".log"))
        })
        .filter(|&holds_a_segment| holds_a_segment)
        .count() as u64
}

/// Refuses to start when the partition logs on disk need more descriptors
/// than the limit leaves for them: the broker would fail part way through
/// opening them.
pub fn check_start(limit: OpenFileLimit, logs: u64) -> Result<(), String> {
    match limit.soft {
        Some(soft) if logs + RESERVED > soft => Err(format!(
            "the data directory holds {logs} partition logs, which need about {} open files \
             with what the broker keeps for connections, but the open file limit is {soft} \
             (hard limit {}); raise it (ulimit -n, LimitNOFILE= in systemd, --ulimit nofile= \
             in Docker) to at least {}",
            logs + RESERVED,
            limit.hard.map_or("unlimited".into(), |n| n.to_string()),
            logs + RESERVED,
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_leaves_room_for_connections() {
        let limit = OpenFileLimit {
            soft: Some(1_024),
            hard: Some(4_096),
        };
        assert_eq!(limit.max_replicas(), Some(768));
        assert_eq!(
            OpenFileLimit {
                soft: None,
                hard: None
            }
            .max_replicas(),
            None
        );
        assert_eq!(
            OpenFileLimit {
                soft: Some(100),
                hard: Some(100)
            }
            .max_replicas(),
            Some(0)
        );
    }

    #[test]
    fn a_start_that_could_not_open_every_partition_is_refused_with_the_numbers() {
        let limit = OpenFileLimit {
            soft: Some(1_024),
            hard: Some(1_024),
        };
        assert!(check_start(limit, 768).is_ok());
        let refused = check_start(limit, 769).unwrap_err();
        assert!(refused.contains("769 partition logs"), "{refused}");
        assert!(refused.contains("limit is 1024"), "{refused}");
        assert!(refused.contains("at least 1025"), "{refused}");
        let unlimited = OpenFileLimit {
            soft: None,
            hard: None,
        };
        assert!(check_start(unlimited, 1_000_000).is_ok());
    }

    #[test]
    fn partition_logs_are_counted_once_whatever_their_segments() {
        let dir = tempfile::tempdir().unwrap();
        for (partition, segments) in [("t-0", 2), ("t-1", 1)] {
            let path = dir.path().join(partition);
            std::fs::create_dir(&path).unwrap();
            for i in 0..segments {
                std::fs::write(path.join(format!("{i:020}.log")), b"").unwrap();
                std::fs::write(path.join(format!("{i:020}.index")), b"").unwrap();
            }
        }
        std::fs::write(dir.path().join("stray.log"), b"").unwrap();
        std::fs::create_dir(dir.path().join("meta")).unwrap();
        std::fs::write(dir.path().join("meta").join("raft.log"), b"").unwrap();
        std::fs::create_dir(dir.path().join("empty")).unwrap();
        assert_eq!(partition_logs_on_disk(dir.path(), "meta"), 2);
    }
}
