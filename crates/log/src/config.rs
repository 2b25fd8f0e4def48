//! Per-partition settings: the topic's configuration resolved against the
//! broker's defaults.

use crate::recompress::TopicCompression;

/// When appended data is forced to disk with fsync.
///
/// Data written by `append` is in the operating system's page cache at once,
/// so it survives a crash of the process whatever this says. Only a power
/// loss or kernel crash loses what was not yet flushed; the policy bounds
/// that window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushPolicy {
    /// Flush after this many messages since the last flush (`flush.messages`);
    /// 1 flushes every batch before it is acknowledged.
    pub messages: Option<u64>,
    /// Flush when the oldest unflushed data is this old (`flush.ms`), checked
    /// by the broker's background flusher.
    pub interval_ms: Option<u64>,
}

impl Default for FlushPolicy {
    fn default() -> Self {
        Self {
            messages: None,
            interval_ms: Some(1_000),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Roll to a new segment once the active one reaches this size.
    pub segment_bytes: u64,
    /// Roll to a new segment once the active one is this old.
    pub segment_ms: i64,
    /// Delete segments whose newest record is older than this; -1 keeps all.
    pub retention_ms: i64,
    /// Delete the oldest segments while the log is larger than this; -1 keeps all.
    pub retention_bytes: i64,
    /// Bytes of data between two index entries.
    pub index_interval_bytes: u64,
    /// Largest batch accepted (`max.message.bytes`).
    pub max_message_bytes: usize,
    /// Stamp batches with the broker's clock on append
    /// (`message.timestamp.type=LogAppendTime`) instead of keeping the
    /// producer's timestamps.
    pub log_append_time: bool,
    /// Forget an idle idempotent producer after this long.
    pub producer_expiration_ms: i64,
    pub flush: FlushPolicy,
    /// `cleanup.policy` includes `compact`: every record needs a key, and
    /// [`crate::PartitionLog::clean`] keeps only the latest record per key.
    pub compact: bool,
    /// How long the cleaner keeps a tombstone (a record with a null value)
    /// after its timestamp (`delete.retention.ms`).
    pub delete_retention_ms: i64,
    /// Under CreateTime, records whose timestamp is more than this behind
    /// (`message.timestamp.before.max.ms`) or ahead of
    /// (`message.timestamp.after.max.ms`) the broker's clock are refused.
    pub timestamp_before_max_ms: i64,
    pub timestamp_after_max_ms: i64,
    /// The cleaner leaves segments holding records younger than this
    /// (`min.compaction.lag.ms`).
    pub min_compaction_lag_ms: i64,
    /// Each segment rolls up to this much before `segment_ms`, by a share
    /// of its own (`segment.jitter.ms`), so that partitions created
    /// together do not all roll at once.
    pub segment_jitter_ms: i64,
    /// The codec batches are stored in (`compression.type`); `None` keeps
    /// each as the producer compressed it.
    pub compression: Option<TopicCompression>,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3_600_000,
            retention_ms: 7 * 24 * 3_600_000,
            retention_bytes: -1,
            index_interval_bytes: 4096,
            max_message_bytes: 1_048_588,
            log_append_time: false,
            producer_expiration_ms: 24 * 3_600_000,
            flush: FlushPolicy::default(),
            compact: false,
            delete_retention_ms: 24 * 3_600_000,
            timestamp_before_max_ms: i64::MAX,
            timestamp_after_max_ms: i64::MAX,
            min_compaction_lag_ms: 0,
            segment_jitter_ms: 0,
            compression: None,
        }
    }
}
