//! The log of one partition replica: an ordered run of segments, the last of
//! which takes appends.
//!
//! Invariants:
//! - `log_start_offset <= log_end_offset`, and every offset in between that
//!   a batch holds is readable.
//! - Segments are contiguous and ordered by base offset; there is always at
//!   least one, and only the last one is written to.
//! - Everything below `recovery_point` has been fsynced; after an unclean
//!   stop only segments from the one holding the recovery point onwards are
//!   re-validated.
//! - With compaction, offsets inside and between segments may have gaps
//!   (see the `cleaner` module), and `log_start_offset` may lie below the first
//!   segment's base offset once the cleaner has emptied the first segment. A
//!   follower copies its leader's gaps, and may start a segment past the log
//!   end offset at a batch that follows one (see `follower`).
//!
//! Files in the partition directory besides the segments:
//! `log-start-offset`, `recovery-point`, `leader-epoch-checkpoint`,
//! `producer-state` (written on clean close) and `.clean-shutdown`.

mod clean;
mod flush;
mod follower;
mod lookup;
mod retention;

use std::{
    collections::BTreeMap,
    fs,
    io::IoSlice,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use crate::{
    batch::{
        BATCH_HEADER_LEN, BatchHeader, assign_offset_and_epoch, set_log_append_time,
        validate_client_batch,
    },
    checkpoint::{read_offset, sync_dir, write_atomically},
    config::LogConfig,
    epoch_cache::{EpochEntry, LeaderEpochCache},
    error::{LogError, Result},
    producer_state::{ProducerStateTable, SequenceCheck},
    recompress::recompress,
    records::{check_keys, check_records, check_timestamps},
    segment::{CLEANED_SUFFIX, LOG_SUFFIX, Segment},
};

use self::flush::CheckpointState;
pub use self::{
    flush::{Faults, PendingFlush, RecoveryCheckpoint},
    follower::FollowerAppend,
};

const CLEAN_SHUTDOWN_FILE: &str = ".clean-shutdown";
const LOG_START_OFFSET_FILE: &str = "log-start-offset";
const RECOVERY_POINT_FILE: &str = "recovery-point";
const PRODUCER_STATE_FILE: &str = "producer-state";

/// Where an appended batch landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    pub base_offset: i64,
    pub last_offset: i64,
    pub log_start_offset: i64,
    /// The batch was a retry of one already in the log and was not written.
    pub duplicate: bool,
    /// Records in the batch.
    pub records: i32,
    /// The broker time written into the batch, or -1 when the topic keeps
    /// producer timestamps.
    pub log_append_time_ms: i64,
}

/// What opening the log found and repaired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    pub clean_shutdown: bool,
    pub segments: usize,
    pub segments_recovered: usize,
    pub truncated_bytes: u64,
    pub segments_dropped: usize,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
}

#[derive(Debug)]
pub struct PartitionLog {
    dir: PathBuf,
    config: LogConfig,
    segments: BTreeMap<i64, Segment>,
    log_start_offset: i64,
    recovery_point: i64,
    /// Messages appended, and how many of those a finished flush covered.
    appended_messages: u64,
    flushed_messages: u64,
    /// Bumped by every truncation: a flush begun before one may not move
    /// the recovery point over the rewritten tail.
    truncations: u64,
    oldest_unflushed_ms: Option<i64>,
    /// Segments rolled so far, and how many of those rolls a finished
    /// flush covered; a roll asks for a flush instead of syncing inline.
    rolls: u64,
    flushed_rolls: u64,
    /// What the recovery point checkpoint holds.
    recovery_checkpoint: Arc<Mutex<CheckpointState>>,
    faults: Faults,
    /// A write or fsync failed; no more writes (see `LogError::Failed`).
    failed: bool,
    epochs: LeaderEpochCache,
    producers: ProducerStateTable,
    closed: bool,
}

impl PartitionLog {
    /// Opens (or creates) the log in `dir`, recovering from an unclean stop.
    pub fn open(dir: &Path, config: LogConfig, now_ms: i64) -> Result<(Self, RecoveryReport)> {
        fs::create_dir_all(dir).map_err(|e| LogError::io("creating", dir, e))?;
        let clean_marker = dir.join(CLEAN_SHUTDOWN_FILE);
        let clean_shutdown = clean_marker.exists();
        if clean_shutdown {
            fs::remove_file(&clean_marker)
                .map_err(|e| LogError::io("removing", &clean_marker, e))?;
            sync_dir(dir)?;
        }
        let recovery_point = if clean_shutdown {
            i64::MAX
        } else {
            read_offset(&dir.join(RECOVERY_POINT_FILE)).unwrap_or(0)
        };
        let base_offsets = list_segment_base_offsets(dir)?;
        let first_to_recover = base_offsets
            .iter()
            .copied()
            .take_while(|&base| base <= recovery_point)
            .last()
            .unwrap_or(0);

        let mut report = RecoveryReport {
            clean_shutdown,
            segments: 0,
            segments_recovered: 0,
            truncated_bytes: 0,
            segments_dropped: 0,
            log_start_offset: 0,
            log_end_offset: 0,
        };
        let mut segments = BTreeMap::new();
        let mut expected_base: Option<i64> = None;
        let mut broken = false;
        for base in base_offsets {
            let contiguous = expected_base.is_none_or(|expected| base >= expected);
            if broken || !contiguous {
                Segment::delete_files(dir, base)?;
                report.segments_dropped += 1;
                continue;
            }
            let recover = !clean_shutdown && base >= first_to_recover;
            let (segment, outcome) =
                Segment::open(dir, base, recover, config.index_interval_bytes, now_ms)?;
            report.segments_recovered += usize::from(recover);
            if outcome.truncated_bytes > 0 {
                report.truncated_bytes += outcome.truncated_bytes;
                broken = true;
            }
            expected_base = Some(segment.next_offset());
            segments.insert(base, segment);
        }
        // An empty segment left behind anywhere but at the end holds nothing.
        let empty: Vec<i64> = segments
            .iter()
            .filter(|(_, s)| s.is_empty())
            .map(|(&base, _)| base)
            .collect();
        for base in empty.iter().take(empty.len().saturating_sub(1)) {
            if let Some(segment) = segments.remove(base) {
                segment.delete()?;
            }
        }

        let stored_start = read_offset(&dir.join(LOG_START_OFFSET_FILE));
        if segments.is_empty() {
            let base = stored_start.unwrap_or(0).max(0);
            segments.insert(base, Segment::create(dir, base, now_ms)?);
        }
        let first_base = segments.keys().next().copied().unwrap_or(0);
        let mut log = Self {
            dir: dir.to_path_buf(),
            config,
            segments,
            log_start_offset: first_base,
            recovery_point: 0,
            appended_messages: 0,
            flushed_messages: 0,
            truncations: 0,
            oldest_unflushed_ms: None,
            rolls: 0,
            flushed_rolls: 0,
            recovery_checkpoint: Arc::new(Mutex::new(CheckpointState::new())),
            faults: Faults::default(),
            failed: false,
            epochs: LeaderEpochCache::open(dir),
            producers: ProducerStateTable::default(),
            closed: false,
        };
        let log_end_offset = log.log_end_offset();
        // The checkpoint may lie below the first segment once the cleaner
        // has deleted an emptied first segment; reads there find the next
        // batch, as in any gap.
        log.log_start_offset = match stored_start {
            Some(start) if start >= 0 => start.min(log_end_offset),
            _ => first_base,
        };
        log.epochs.truncate_from_end(log_end_offset)?;
        log.epochs.truncate_from_start(log.log_start_offset)?;
        log.load_producer_state(clean_shutdown, now_ms)?;
        if !clean_shutdown {
            // Whatever survived is now made durable, so the next recovery
            // starts from here. What lies below the first segment recovered
            // was fsynced before the checkpoint that says so.
            log.recovery_point = first_to_recover;
            log.flush()?;
        }
        log.recovery_point = log_end_offset;
        log.pin_unflushed()?;
        log.unpin_flushed();

        report.segments = log.segments.len();
        report.log_start_offset = log.log_start_offset;
        report.log_end_offset = log_end_offset;
        Ok((log, report))
    }

    fn load_producer_state(&mut self, clean_shutdown: bool, now_ms: i64) -> Result<()> {
        let snapshot_path = self.dir.join(PRODUCER_STATE_FILE);
        let snapshot = clean_shutdown
            .then(|| fs::read(&snapshot_path).ok())
            .flatten()
            .and_then(|bytes| ProducerStateTable::decode_snapshot(&bytes))
            .filter(|(offset, _)| *offset == self.log_end_offset());
        match snapshot {
            Some((_, table)) => self.producers = table,
            None => self.rebuild_producer_state()?,
        }
        self.producers
            .expire(now_ms, self.config.producer_expiration_ms);
        Ok(())
    }

    fn rebuild_producer_state(&mut self) -> Result<()> {
        self.producers.clear();
        for segment in self.segments.values() {
            // Held across the walk: an older segment's file opens once.
            let _file = segment.file()?;
            let mut located = segment.find_batch(segment.base_offset())?;
            while let Some(batch) = located {
                // The write time is unknown; the batch timestamp stands in.
                self.producers
                    .record(&batch.header, batch.header.max_timestamp);
                located = segment.next_batch(&batch)?;
            }
        }
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Applies a new configuration; it governs the next append, roll and
    /// retention pass.
    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }

    /// The offset the next appended record gets.
    pub fn log_end_offset(&self) -> i64 {
        self.active_segment().next_offset()
    }

    pub fn size_in_bytes(&self) -> u64 {
        self.segments.values().map(Segment::size).sum()
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    pub fn latest_epoch(&self) -> Option<i32> {
        self.epochs.latest_epoch()
    }

    pub fn epoch_entries(&self) -> &[EpochEntry] {
        self.epochs.entries()
    }

    /// OffsetForLeaderEpoch: `(epoch, end_offset)` per Kafka's rules.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> (i32, i64) {
        self.epochs.end_offset_for(epoch, self.log_end_offset())
    }

    pub fn producer_count(&self) -> usize {
        self.producers.len()
    }

    fn active_segment(&self) -> &Segment {
        // The map is never empty: open creates a segment and nothing
        // removes the last one.
        self.segments
            .values()
            .next_back()
            .unwrap_or_else(|| unreachable!("a partition log always has a segment"))
    }

    fn active_segment_mut(&mut self) -> &mut Segment {
        self.segments
            .values_mut()
            .next_back()
            .unwrap_or_else(|| unreachable!("a partition log always has a segment"))
    }

    /// Validates a batch sent by a producer, assigns its offsets and leader
    /// epoch in a copy of its header, and appends header and records. A
    /// retried batch of an idempotent producer is answered with its
    /// original offsets and not written again.
    pub fn append_as_leader(
        &mut self,
        batch: &[u8],
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendOutcome> {
        self.begin_append()?;
        let header = validate_client_batch(batch)?;
        check_records(batch, &header)?;
        if self.config.compact {
            check_keys(batch, &header)?;
        }
        if !self.config.log_append_time {
            check_timestamps(
                batch,
                &header,
                now_ms,
                self.config.timestamp_before_max_ms,
                self.config.timestamp_after_max_ms,
            )?;
        }
        if batch.len() > self.config.max_message_bytes {
            return Err(LogError::BatchTooLarge {
                size: batch.len(),
                max: self.config.max_message_bytes,
            });
        }
        if let SequenceCheck::Duplicate(original) = self.producers.check(&header)? {
            return Ok(AppendOutcome {
                base_offset: original.base_offset,
                last_offset: original.last_offset,
                log_start_offset: self.log_start_offset,
                duplicate: true,
                records: header.records_count,
                log_append_time_ms: if self.config.log_append_time {
                    original.max_timestamp
                } else {
                    -1
                },
            });
        }
        let recompressed = match self.config.compression {
            Some(target) => recompress(batch, &header, target)?,
            None => None,
        };
        let batch = match &recompressed {
            Some(recompressed) if recompressed.len() > self.config.max_message_bytes => {
                return Err(LogError::BatchTooLarge {
                    size: recompressed.len(),
                    max: self.config.max_message_bytes,
                });
            }
            Some(recompressed) => recompressed.as_slice(),
            None => batch,
        };
        let base_offset = self.log_end_offset();
        let (client_head, records) = batch.split_at(BATCH_HEADER_LEN);
        let mut head = [0u8; BATCH_HEADER_LEN];
        head.copy_from_slice(client_head);
        assign_offset_and_epoch(&mut head, base_offset, leader_epoch);
        let mut log_append_time_ms = -1;
        if self.config.log_append_time {
            set_log_append_time(&mut head, records, now_ms);
            log_append_time_ms = now_ms;
        }
        let header = BatchHeader::parse(&head)?;
        self.maybe_roll(header.total_len(), &header, now_ms)?;
        let parts = &mut [IoSlice::new(&head), IoSlice::new(records)];
        self.append_assigned(std::slice::from_ref(&header), parts, now_ms)?;
        Ok(AppendOutcome {
            base_offset,
            last_offset: header.last_offset(),
            log_start_offset: self.log_start_offset,
            duplicate: false,
            records: header.records_count,
            log_append_time_ms,
        })
    }

    /// Refuses writes to a closed or failed log.
    fn check_writable(&self) -> Result<()> {
        if self.closed {
            return Err(LogError::Closed);
        }
        if self.failed {
            return Err(LogError::Failed {
                dir: self.dir.clone(),
            });
        }
        Ok(())
    }

    /// What every append does first: refuse writes to a closed or failed
    /// log, and stall if a test asked for it.
    fn begin_append(&self) -> Result<()> {
        self.check_writable()?;
        if !self.faults.append_stall.is_zero() {
            std::thread::sleep(self.faults.append_stall);
        }
        Ok(())
    }

    /// Appends whole batches, offsets and epochs already in their headers,
    /// that all go to the active segment (the caller rolled it where
    /// needed), `parts` holding their bytes one after another.
    fn append_assigned(
        &mut self,
        headers: &[BatchHeader],
        parts: &mut [IoSlice<'_>],
        now_ms: i64,
    ) -> Result<()> {
        for header in headers {
            self.epochs
                .assign(header.partition_leader_epoch, header.base_offset)?;
        }
        let interval = self.config.index_interval_bytes;
        if let Err(e) = self.active_segment_mut().append(headers, parts, interval) {
            self.mark_failed();
            return Err(e);
        }
        for header in headers {
            self.producers.record(header, now_ms);
            self.appended_messages += header.records_count.max(0) as u64;
        }
        self.oldest_unflushed_ms.get_or_insert(now_ms);
        Ok(())
    }

    /// Rolls before `header`'s batch if the active segment is full, old, or
    /// could not index its offsets or positions. The new segment starts at
    /// the batch's base offset: the log end offset on a leader, possibly
    /// past it on a follower copying a compacted log's gap.
    fn maybe_roll(&mut self, incoming: usize, header: &BatchHeader, now_ms: i64) -> Result<()> {
        if self.needs_roll(0, incoming, header, now_ms) {
            self.roll_at(header.base_offset, now_ms)?;
        }
        Ok(())
    }

    /// Whether `header`'s batch of `incoming` bytes starts a new segment,
    /// were it to come after `pending` bytes not yet written to the active
    /// segment.
    fn needs_roll(&self, pending: u64, incoming: usize, header: &BatchHeader, now_ms: i64) -> bool {
        let active = self.active_segment();
        let offsets_overflow = header.last_offset() - active.base_offset() > i64::from(u32::MAX);
        let size = active.size() + pending;
        if size == 0 {
            return offsets_overflow;
        }
        let too_big = size + incoming as u64 > self.config.segment_bytes;
        let too_old = now_ms - active.created_at_ms()
            >= self.config.segment_ms - self.roll_jitter_ms(active.base_offset());
        let positions_overflow = size + incoming as u64 > u64::from(u32::MAX);
        too_big || too_old || offsets_overflow || positions_overflow
    }

    /// How much before `segment_ms` the segment at `base_offset` rolls: a
    /// share of `segment_jitter_ms` (at most `segment_ms`) that differs
    /// from partition to partition and segment to segment. It is derived
    /// from the log's directory and the segment, so it is the same after a
    /// restart.
    fn roll_jitter_ms(&self, base_offset: i64) -> i64 {
        let bound = self.config.segment_jitter_ms.min(self.config.segment_ms);
        if bound <= 0 {
            return 0;
        }
        let mut hasher = std::hash::DefaultHasher::new();
        std::hash::Hash::hash(&(&self.dir, base_offset), &mut hasher);
        let share = std::hash::Hasher::finish(&hasher) % bound.unsigned_abs();
        i64::try_from(share).unwrap_or(0)
    }

    /// Starts a new active segment at the log end offset. The closed
    /// segment and the directory are fsynced by the next flush, which the
    /// roll asks for (`flush_due`), not here under the log's lock.
    pub fn roll(&mut self, now_ms: i64) -> Result<()> {
        if self.active_segment().is_empty() {
            return Ok(());
        }
        self.roll_at(self.log_end_offset(), now_ms)
    }

    /// Starts a new active segment at `base`, at or past the log end
    /// offset. An empty active segment is replaced rather than left behind.
    fn roll_at(&mut self, base: i64, now_ms: i64) -> Result<()> {
        let replaced = self.active_segment().base_offset();
        let replace = self.active_segment().is_empty();
        let segment = Segment::create(&self.dir, base, now_ms)?;
        self.segments.insert(base, segment);
        if replace && replaced != base {
            if let Some(empty) = self.segments.remove(&replaced) {
                empty.delete()?;
            }
        }
        self.rolls += 1;
        Ok(())
    }

    /// Flushes everything and marks the directory cleanly closed, so the
    /// next open trusts the indexes and the producer snapshot. Appends fail
    /// from then on.
    pub fn close(&mut self) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        self.flush()?;
        // A checkpoint still in flight finishes before this returns, and
        // none is written after: the directory may be renamed next.
        self.stop_checkpoints();
        // The flush made every segment durable up to the log end, and the
        // indexes of every closed segment with it; what is left is the
        // indexes a restart will trust without reading the segments: the
        // active segment's, and any with entries still in memory.
        let active = self.active_segment().base_offset();
        for (&base, segment) in &self.segments {
            if base == active || segment.has_pending_index_entries() {
                segment.sync_indexes()?;
            }
        }
        let snapshot = self.producers.encode_snapshot(self.log_end_offset());
        write_atomically(&self.dir.join(PRODUCER_STATE_FILE), &snapshot)?;
        write_atomically(&self.dir.join(CLEAN_SHUTDOWN_FILE), b"")
    }
}

fn list_segment_base_offsets(dir: &Path) -> Result<Vec<i64>> {
    let mut bases = Vec::new();
    let entries = fs::read_dir(dir).map_err(|e| LogError::io("listing", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| LogError::io("listing", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(stem) = name.strip_suffix(&format!(".{LOG_SUFFIX}")) {
            if let Ok(base) = stem.parse::<i64>() {
                bases.push(base);
            }
        } else if name.ends_with(".tmp") || name.ends_with(&format!(".{CLEANED_SUFFIX}")) {
            // An unfinished atomic write or cleaner rewrite: the original
            // file is still in place.
            let _ = fs::remove_file(entry.path());
        }
    }
    bases.sort_unstable();
    Ok(bases)
}
