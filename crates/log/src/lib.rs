//! Keel's partition log.
//!
//! A partition's data lives in a directory of segments. Each segment is a
//! file of Kafka v2 RecordBatches stored exactly as producers sent them,
//! except that the log writes the base offset and the partition leader
//! epoch into the header (fields the CRC does not cover). Beside each
//! segment are a sparse offset index and a time index.
//!
//! - [`PartitionLog::append_as_leader`] validates a producer's batch (CRC-32C,
//!   framing, record count, idempotent sequence), assigns offsets, appends.
//! - [`PartitionLog::read`] picks whole batches under the lock and returns a
//!   [`ReadSlice`] that is read after the lock is released.
//! - [`PartitionLog::open`] recovers after a crash: segments past the last
//!   flushed offset are re-read batch by batch, a torn tail is cut off and
//!   the indexes are rebuilt.
//! - [`PartitionLog::append_as_follower`] copies a leader's batches as they
//!   are, offsets and leader epochs included; a replica becoming leader
//!   records its epoch with [`PartitionLog::assign_leader_epoch`].
//! - Retention by time and size, DeleteRecords and follower truncation move
//!   the log's ends; the leader epoch cache answers OffsetForLeaderEpoch,
//!   and [`truncation_point`] turns a leader's answer into the offset where
//!   a follower's log stops agreeing with the leader's.
//! - [`PartitionLog::begin_clean`], [`CleanPlan::prepare`] and
//!   [`PartitionLog::complete_clean`] compact a `cleanup.policy=compact` log,
//!   keeping the latest record of each key (module `cleaner`); only the
//!   first and last step need the log, the middle one does the reading and
//!   writing. [`PartitionLog::clean`] runs the three in a row.
//!
//! Nothing here does networking or knows about other replicas; the broker
//! decides what the high watermark is and passes it in.

pub mod batch;
mod checkpoint;
mod cleaner;
mod config;
mod divergence;
mod epoch_cache;
mod error;
mod index;
mod partition_log;
mod producer_state;
mod read;
mod recompress;
mod records;
mod segment;
pub mod testing;

pub use checkpoint::write_atomically;
pub use cleaner::{CleanOutcome, CleanPlan, PreparedClean};
pub use config::{FlushPolicy, LogConfig};
pub use divergence::{Truncation, truncation_point};
pub use epoch_cache::EpochEntry;
pub use error::{BatchError, LogError, MAX_NAMED_RECORDS, RecordFault, RejectedRecord, Result};
pub use partition_log::{
    AppendOutcome, Faults, FollowerAppend, PartitionLog, PendingFlush, RecoveryCheckpoint,
    RecoveryReport,
};
pub use producer_state::{MAX_CACHED_BATCHES, ProducerBatch, SequenceCheck};
pub use read::{ReadMode, ReadSlice};
pub use recompress::{Codec, TopicCompression};
