//! A simulated cluster for one partition: each replica a real
//! `PartitionLog` in its own directory, driven one step at a time. The
//! leader appends at its epoch; followers fetch the way a Fetch v12+
//! follower does (LastFetchedEpoch, then DivergingEpoch or
//! OFFSET_OUT_OF_RANGE from the leader); the test decides who crashes,
//! restarts and leads. Nothing runs concurrently, so every run is the same.
//!
//! Checked as it runs: an election picks an ISR member; no truncation of an
//! ISR member removes an offset below the committed high watermark (the
//! most any leader computed as the minimum log end offset over an ISR that
//! had all fetched), which producers were told is safe, and no truncation
//! of any replica removes a batch acknowledged that way; a divergence
//! settles in a few rounds.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::PathBuf,
};

use keel_log::{
    BatchError, LogConfig, LogError, PartitionLog, Truncation,
    batch::BatchHeader,
    testing::{BatchSpec, build_batch},
};
use tempfile::TempDir;

use crate::common::read_batches;

/// Small, so a catch-up takes several fetches and segments roll.
const MAX_FETCH_BYTES: usize = 300;
const MAX_FETCHES: usize = 200;
const MAX_DIVERGENCE_ROUNDS: usize = 10;

/// What one fetch did to the follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fetched {
    Records,
    UpToDate,
    Diverged,
    OutOfRange,
}

enum Response {
    Records {
        bytes: Vec<u8>,
        high_watermark: i64,
        log_start_offset: i64,
    },
    Diverging {
        epoch: i32,
        end_offset: i64,
    },
    OutOfRange,
}

pub(crate) struct Replica {
    dir: PathBuf,
    log: Option<PartitionLog>,
    /// The high watermark this replica knows, kept across restarts as the
    /// broker's checkpoint keeps it.
    high_watermark: i64,
    /// It has started following the current leader.
    following: bool,
    /// Every answer of `truncation_point` it acted on.
    pub(crate) truncations: Vec<Truncation>,
    /// Truncations that removed records.
    pub(crate) cuts: usize,
}

pub(crate) struct Cluster {
    _root: TempDir,
    replicas: Vec<Replica>,
    leader: Option<usize>,
    epoch: i32,
    isr: BTreeSet<usize>,
    /// Follower log end offsets the current leader learnt from fetches.
    follower_ends: BTreeMap<usize, i64>,
    committed: i64,
    /// Every batch below `committed`, as the leader that acknowledged it
    /// stored it, by base offset.
    acknowledged: BTreeMap<i64, Vec<u8>>,
    now_ms: i64,
    next_fill: u8,
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 700,
        index_interval_bytes: 128,
        ..LogConfig::default()
    }
}

impl Cluster {
    /// `n` replicas, all up and in the ISR, none leading yet (epoch -1).
    pub(crate) fn new(n: usize) -> Self {
        let root = tempfile::tempdir().unwrap();
        let replicas = (0..n)
            .map(|id| {
                let dir = root.path().join(id.to_string());
                Replica {
                    log: Some(PartitionLog::open(&dir, config(), 0).unwrap().0),
                    dir,
                    high_watermark: 0,
                    following: false,
                    truncations: Vec::new(),
                    cuts: 0,
                }
            })
            .collect();
        Self {
            _root: root,
            replicas,
            leader: None,
            epoch: -1,
            isr: (0..n).collect(),
            follower_ends: BTreeMap::new(),
            committed: 0,
            acknowledged: BTreeMap::new(),
            now_ms: 0,
            next_fill: b'a',
        }
    }

    fn tick(&mut self) -> i64 {
        self.now_ms += 1;
        self.now_ms
    }

    pub(crate) fn log(&self, id: usize) -> &PartitionLog {
        self.replicas[id].log.as_ref().expect("the replica is up")
    }

    fn log_mut(&mut self, id: usize) -> &mut PartitionLog {
        self.replicas[id].log.as_mut().expect("the replica is up")
    }

    pub(crate) fn replica(&self, id: usize) -> &Replica {
        &self.replicas[id]
    }

    pub(crate) fn committed(&self) -> i64 {
        self.committed
    }

    pub(crate) fn high_watermark(&self, id: usize) -> i64 {
        self.replicas[id].high_watermark
    }

    pub(crate) fn set_isr(&mut self, isr: &[usize]) {
        self.isr = isr.iter().copied().collect();
        self.advance_high_watermark();
    }

    /// The controller makes `id` leader at the next epoch; everyone else
    /// becomes its follower.
    pub(crate) fn elect(&mut self, id: usize) {
        assert!(self.isr.contains(&id), "replica {id} is not in the ISR");
        self.epoch += 1;
        self.leader = Some(id);
        self.follower_ends.clear();
        for replica in &mut self.replicas {
            replica.following = false;
        }
        let epoch = self.epoch;
        self.log_mut(id).assign_leader_epoch(epoch).unwrap();
    }

    /// The leader appends `batches` batches of two records, each filled
    /// with its own byte so diverged copies differ.
    pub(crate) fn produce(&mut self, batches: usize) {
        let leader = self.leader.expect("a leader");
        for _ in 0..batches {
            let now_ms = self.tick();
            let fill = self.next_fill;
            self.next_fill = self.next_fill.wrapping_add(1);
            let batch = build_batch(&BatchSpec {
                records: 2,
                first_timestamp: now_ms,
                fill,
                ..BatchSpec::default()
            });
            let epoch = self.epoch;
            self.log_mut(leader)
                .append_as_leader(&batch, epoch, now_ms)
                .unwrap();
        }
        self.advance_high_watermark();
    }

    /// The process stops: nothing flushed, nothing lost from the page cache.
    pub(crate) fn crash(&mut self, id: usize) {
        self.replicas[id].log = None;
        self.replicas[id].following = false;
        if self.leader == Some(id) {
            self.leader = None;
        }
    }

    pub(crate) fn restart(&mut self, id: usize) {
        let replica = &mut self.replicas[id];
        assert!(replica.log.is_none(), "replica {id} is up");
        let (log, _) = PartitionLog::open(&replica.dir, config(), self.now_ms).unwrap();
        replica.log = Some(log);
    }

    /// Deletes a stopped replica's leader epoch checkpoint.
    pub(crate) fn lose_epoch_checkpoint(&mut self, id: usize) {
        assert!(self.replicas[id].log.is_none(), "replica {id} is up");
        fs::remove_file(self.replicas[id].dir.join("leader-epoch-checkpoint")).unwrap();
    }

    /// DeleteRecords on the leader.
    pub(crate) fn delete_records(&mut self, before: i64) {
        let leader = self.leader.expect("a leader");
        let now_ms = self.tick();
        self.log_mut(leader)
            .delete_records_before(before, now_ms)
            .unwrap();
    }

    /// Kafka's leader: the high watermark is the least log end offset over
    /// the ISR, once every member has fetched from this leader, and never
    /// goes back.
    fn advance_high_watermark(&mut self) {
        let Some(leader) = self.leader else { return };
        let mut least = self.log(leader).log_end_offset();
        for &member in self.isr.iter().filter(|&&m| m != leader) {
            match self.follower_ends.get(&member) {
                Some(&end) => least = least.min(end),
                None => return,
            }
        }
        let replica = &mut self.replicas[leader];
        replica.high_watermark = replica.high_watermark.max(least);
        let high_watermark = replica.high_watermark;
        if high_watermark <= self.committed {
            return;
        }
        let log = self.log(leader);
        let from = self.committed.max(log.log_start_offset());
        for batch in read_batches(log, from) {
            let header = BatchHeader::parse(&batch).unwrap();
            if header.last_offset() < high_watermark {
                self.acknowledged.insert(header.base_offset, batch);
            }
        }
        self.committed = high_watermark;
    }

    /// The leader's side of a fetch, as Kafka's `Partition.readRecords`.
    fn serve(&mut self, follower: usize, fetch_offset: i64, last_fetched_epoch: i32) -> Response {
        let leader = self.leader.expect("a leader");
        let log = self.log(leader);
        let (start, end) = (log.log_start_offset(), log.log_end_offset());
        if last_fetched_epoch >= 0 {
            let (epoch, end_offset) = log.end_offset_for_epoch(last_fetched_epoch);
            if epoch < 0 || end_offset < 0 || fetch_offset < start {
                return Response::OutOfRange;
            }
            if epoch < last_fetched_epoch || end_offset < fetch_offset {
                return Response::Diverging { epoch, end_offset };
            }
        }
        if fetch_offset < start || fetch_offset > end {
            return Response::OutOfRange;
        }
        let mut bytes = Vec::new();
        if let Some(slice) = log.read(fetch_offset, MAX_FETCH_BYTES, end, true).unwrap() {
            bytes.extend_from_slice(&slice.read().unwrap());
            // A size limit may cut the next batch short.
            if let Some(next) = log.read(slice.last_offset() + 1, 1, end, true).unwrap() {
                let next = next.read().unwrap();
                bytes.extend_from_slice(&next[..next.len() - 1]);
            }
        }
        self.follower_ends.insert(follower, fetch_offset);
        self.advance_high_watermark();
        Response::Records {
            bytes,
            high_watermark: self.replicas[leader].high_watermark,
            log_start_offset: start,
        }
    }

    /// A follower that tracks no epochs cannot ask where its log diverges:
    /// as Kafka does, it truncates to its high watermark first.
    fn start_following(&mut self, id: usize) {
        if self.replicas[id].following {
            return;
        }
        self.replicas[id].following = true;
        if self.log(id).latest_epoch().is_none() {
            let high_watermark = self.replicas[id].high_watermark;
            self.cut(id, high_watermark);
        }
    }

    /// One fetch by follower `id`, handled as Kafka's fetcher does.
    pub(crate) fn fetch(&mut self, id: usize) -> Fetched {
        assert_ne!(self.leader, Some(id), "the leader does not fetch");
        self.start_following(id);
        let log = self.log(id);
        let (fetch_offset, last_fetched_epoch) =
            (log.log_end_offset(), log.latest_epoch().unwrap_or(-1));
        match self.serve(id, fetch_offset, last_fetched_epoch) {
            Response::Records {
                bytes,
                high_watermark,
                log_start_offset,
            } => {
                let appended = self.append(id, &bytes);
                let now_ms = self.tick();
                let replica = &mut self.replicas[id];
                let log = replica.log.as_mut().unwrap();
                replica.high_watermark = high_watermark.min(log.log_end_offset());
                if log_start_offset > log.log_start_offset() {
                    log.delete_records_before(log_start_offset, now_ms).unwrap();
                }
                if appended {
                    Fetched::Records
                } else {
                    Fetched::UpToDate
                }
            }
            Response::Diverging { epoch, end_offset } => {
                let truncation = self.log(id).truncation_point(epoch, end_offset);
                self.replicas[id].truncations.push(truncation);
                self.cut(id, truncation.offset);
                Fetched::Diverged
            }
            Response::OutOfRange => {
                let leader = self.log(self.leader.unwrap());
                let (start, end) = (leader.log_start_offset(), leader.log_end_offset());
                let own_end = self.log(id).log_end_offset();
                if end < own_end {
                    self.cut(id, end);
                } else if start > own_end {
                    self.start_over(id, start);
                }
                Fetched::OutOfRange
            }
        }
    }

    /// A fetch whose response is lost: the leader learns the follower's
    /// position, the follower learns nothing.
    pub(crate) fn fetch_response_lost(&mut self, id: usize) {
        let log = self.log(id);
        let (offset, epoch) = (log.log_end_offset(), log.latest_epoch().unwrap_or(-1));
        self.serve(id, offset, epoch);
    }

    fn append(&mut self, id: usize, bytes: &[u8]) -> bool {
        let now_ms = self.tick();
        let log = self.log_mut(id);
        let result = log.append_as_follower(bytes, now_ms);
        let empty = log.log_end_offset() == log.log_start_offset();
        match result {
            Ok(appended) => appended.is_some(),
            // The leader's log start lies inside its first batch (after
            // DeleteRecords): an empty follower starts at that batch, as
            // Kafka's Partition does.
            Err(LogError::Batch(BatchError::UnexpectedOffsets {
                base_offset,
                last_offset,
                log_end_offset,
            })) if empty && last_offset >= log_end_offset => {
                self.start_over(id, base_offset);
                let log = self.log_mut(id);
                log.append_as_follower(bytes, now_ms).unwrap().is_some()
            }
            Err(e) => panic!("replica {id} refused the leader's batches: {e}"),
        }
    }

    /// The end of the longest run of acknowledged batches, as they were
    /// acknowledged, from the start of a replica's log.
    fn acknowledged_prefix_end(&self, log: &PartitionLog) -> i64 {
        let mut end = log.log_start_offset();
        for batch in read_batches(log, end) {
            let header = BatchHeader::parse(&batch).unwrap();
            if self.acknowledged.get(&header.base_offset) != Some(&batch) {
                break;
            }
            end = header.next_offset();
        }
        end
    }

    /// Truncates a follower, checking nothing committed goes: an ISR
    /// member keeps everything below the committed high watermark, and any
    /// replica keeps the acknowledged batches it holds (one that left the
    /// ISR may hold a diverged tail below that high watermark).
    fn cut(&mut self, id: usize, offset: i64) {
        let committed = self.committed;
        let in_isr = self.isr.contains(&id);
        let acknowledged_end = self.acknowledged_prefix_end(self.log(id));
        let now_ms = self.tick();
        let replica = &mut self.replicas[id];
        let log = replica.log.as_mut().unwrap();
        let before = log.log_end_offset();
        log.truncate_to(offset, now_ms).unwrap();
        let after = log.log_end_offset();
        assert!(
            !in_isr || after >= before.min(committed),
            "replica {id} truncated from {before} to {after}, below the committed high watermark {committed}"
        );
        assert!(
            after >= before.min(acknowledged_end),
            "replica {id} truncated from {before} to {after}, cutting acknowledged batches up to {acknowledged_end}"
        );
        if after < before {
            replica.cuts += 1;
        }
        replica.high_watermark = replica.high_watermark.min(after);
    }

    /// Starts a follower over at `offset`; all it drops lies below the
    /// leader's log start offset, deleted there too, or it held nothing.
    fn start_over(&mut self, id: usize, offset: i64) {
        let now_ms = self.tick();
        let replica = &mut self.replicas[id];
        let log = replica.log.as_mut().unwrap();
        let end = log.log_end_offset();
        assert!(
            end < offset || end == log.log_start_offset(),
            "replica {id} would drop [{}, {end}) starting over at {offset}",
            log.log_start_offset()
        );
        log.truncate_fully_and_start_at(offset, now_ms).unwrap();
        replica.high_watermark = offset;
    }

    /// Fetches until the follower has everything the leader has.
    pub(crate) fn catch_up(&mut self, id: usize) {
        let mut divergence_rounds = 0;
        for _ in 0..MAX_FETCHES {
            match self.fetch(id) {
                Fetched::UpToDate => return,
                Fetched::Diverged => {
                    divergence_rounds += 1;
                    assert!(
                        divergence_rounds <= MAX_DIVERGENCE_ROUNDS,
                        "replica {id} keeps diverging: {:?}",
                        self.replicas[id].truncations
                    );
                }
                Fetched::Records | Fetched::OutOfRange => {}
            }
        }
        panic!("replica {id} did not catch up in {MAX_FETCHES} fetches");
    }

    pub(crate) fn catch_up_all(&mut self) {
        let followers: Vec<usize> = (0..self.replicas.len())
            .filter(|&id| Some(id) != self.leader && self.replicas[id].log.is_some())
            .collect();
        for id in followers {
            self.catch_up(id);
        }
    }

    /// Every replica is up and holds the leader's log byte for byte, from
    /// the same log start offset; every batch acknowledged is there as the
    /// leader first stored it; the ISR has acknowledged everything.
    pub(crate) fn assert_converged(&self) {
        let leader = self.leader.expect("a leader");
        let reference = self.log(leader);
        let (start, end) = (reference.log_start_offset(), reference.log_end_offset());
        let batches = read_batches(reference, start);
        assert!(!batches.is_empty());
        for id in 0..self.replicas.len() {
            let log = self.log(id);
            assert_eq!(
                (log.log_start_offset(), log.log_end_offset()),
                (start, end),
                "replica {id}'s log bounds"
            );
            assert!(
                read_batches(log, start) == batches,
                "replica {id}'s batches differ from the leader's"
            );
        }
        assert_eq!(self.committed, end, "the ISR acknowledged everything");
        for (base, stored) in self.acknowledged.range(start..) {
            let found = read_batches(reference, *base).remove(0);
            assert!(
                &found == stored,
                "the acknowledged batch at {base} was lost or rewritten"
            );
        }
    }
}
