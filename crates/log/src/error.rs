//! Errors of the partition log. Which Kafka error code each one becomes is
//! decided by the broker, in one place.

use std::{io, path::PathBuf};

/// Why a RecordBatch was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("batch truncated: needs {needed} bytes, {available} available")]
    Truncated { needed: usize, available: usize },
    #[error("unsupported record batch magic {0}; only v2 is accepted")]
    UnsupportedMagic(i8),
    #[error("invalid batch length {0}")]
    InvalidLength(i32),
    #[error("batch declares {declared} bytes but {actual} were sent")]
    LengthMismatch { declared: usize, actual: usize },
    #[error("CRC-32C mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("records_count {records_count} disagrees with last_offset_delta {last_offset_delta}")]
    InvalidRecordCount {
        records_count: i32,
        last_offset_delta: i32,
    },
    #[error("a produce request must carry exactly one batch per partition, got {0}")]
    NotOneBatch(usize),
    /// Records the topic does not accept, the first [`MAX_NAMED_RECORDS`]
    /// of them by their index in the batch, and how many in all; the whole
    /// batch is refused, and the producer is told which records were at
    /// fault (Kafka's record errors, KIP-467). The names are capped so that
    /// a small compressed batch of millions of records cannot make a huge
    /// answer.
    #[error("{total} of the batch's records refused: {}", describe(named))]
    RejectedRecords {
        named: Vec<RejectedRecord>,
        total: usize,
    },
    #[error("the batch's records cannot be read within the decompression limit")]
    UndecodableRecords,
    /// Re-encoding a batch in the topic's `compression.type` failed.
    #[error("cannot recompress the batch as {0}")]
    Recompression(String),
    /// A batch copied from a leader that starts below the offset the log
    /// ends at (or the batch before it in the same fetch ends at), or whose
    /// offsets run past `i64::MAX`. A follower keeps the leader's offsets,
    /// so such a batch would overlap what the log holds.
    #[error(
        "batch with offsets {base_offset}..={last_offset} does not follow the log end offset {log_end_offset}"
    )]
    UnexpectedOffsets {
        base_offset: i64,
        last_offset: i64,
        log_end_offset: i64,
    },
}

/// One record a topic refused, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RejectedRecord {
    /// Its index in the batch, from 0.
    pub batch_index: i32,
    pub reason: RecordFault,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordFault {
    /// A compacted topic needs a key on every record.
    MissingKey,
    /// The record's timestamp is outside `[lowest, highest]`, the window
    /// the topic accepts around the broker's clock.
    TimestampOutOfRange {
        timestamp: i64,
        lowest: i64,
        highest: i64,
    },
}

/// How many refused records a batch's error names.
pub const MAX_NAMED_RECORDS: usize = 100;

/// The first three refused records, in words.
fn describe(records: &[RejectedRecord]) -> String {
    records
        .iter()
        .take(3)
        .map(|r| match r.reason {
            RecordFault::MissingKey => format!("record {} has no key", r.batch_index),
            RecordFault::TimestampOutOfRange {
                timestamp,
                lowest,
                highest,
            } => format!(
                "record {} has timestamp {timestamp}, outside [{lowest}, {highest}]",
                r.batch_index
            ),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Gathers the records a check refuses, naming at most
/// [`MAX_NAMED_RECORDS`] of them.
#[derive(Debug, Default)]
pub(crate) struct Rejections {
    named: Vec<RejectedRecord>,
    total: usize,
}

impl Rejections {
    pub(crate) fn add(&mut self, batch_index: i32, reason: RecordFault) {
        if self.named.len() < MAX_NAMED_RECORDS {
            self.named.push(RejectedRecord {
                batch_index,
                reason,
            });
        }
        self.total += 1;
    }

    /// The batch's refusal, if a record was refused.
    pub(crate) fn into_result(self) -> Result<(), BatchError> {
        if self.total == 0 {
            return Ok(());
        }
        Err(BatchError::RejectedRecords {
            named: self.named,
            total: self.total,
        })
    }
}

impl BatchError {
    /// A checksum or framing failure, as opposed to a well-formed batch with
    /// inconsistent contents.
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            Self::Truncated { .. }
                | Self::InvalidLength(_)
                | Self::LengthMismatch { .. }
                | Self::CrcMismatch { .. }
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{context} {path}: {source}")]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("invalid batch: {0}")]
    Batch(#[from] BatchError),
    #[error("offset {offset} is outside the log [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start_offset: i64,
        log_end_offset: i64,
    },
    #[error("batch of {size} bytes exceeds max.message.bytes {max}")]
    BatchTooLarge { size: usize, max: usize },
    #[error("producer {producer_id} epoch {received} is older than the current epoch {current}")]
    InvalidProducerEpoch {
        producer_id: i64,
        current: i16,
        received: i16,
    },
    #[error("producer {producer_id} sent sequence {received}, expected {expected}")]
    OutOfOrderSequence {
        producer_id: i64,
        expected: i32,
        received: i32,
    },
    #[error("log is closed")]
    Closed,
    /// A read that may not wait (`ReadMode::CachedOnly`) needed the disk:
    /// a file not open, or a page not in the page cache.
    #[error("the read needs the disk")]
    WouldWait,
    /// A write or fsync of this log failed: what is on disk past the last
    /// successful flush is unknown (and a later fsync may report success
    /// for pages that were lost), so the log takes no more writes until
    /// the broker restarts and recovers it.
    #[error(
        "log {dir} stopped taking writes after a failed write or fsync; restart the broker to recover it"
    )]
    Failed { dir: PathBuf },
}

impl LogError {
    pub(crate) fn io(context: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            context,
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = LogError> = std::result::Result<T, E>;
