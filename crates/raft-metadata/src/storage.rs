//! The Raft log on disk, and raft-rs's [`Storage`] over it.
//!
//! Two files in the node's directory:
//!
//! - `raft.log`: an append-only sequence of records, each framed as
//!   `length u32, crc32c u32, kind u8, payload` (big-endian; length and CRC
//!   cover kind and payload). Kinds: 1 an entry, 2 the HardState, 3 the
//!   ConfState, 4 "drop entries from index N" (a conflicting tail). Payloads
//!   are raft-rs's protobuf encodings. Replay applies records in order; the
//!   first incomplete or damaged record ends the log and is cut off.
//! - `raft.snapshot`: the latest snapshot (metadata and state machine data),
//!   `crc32c u32` then the protobuf `Snapshot`, replaced atomically.
//!
//! A Ready's entries and HardState go to the log in one write followed by
//! one fsync, so they become durable together or not at all. A conflicting
//! tail is dropped by appending a truncation record rather than by cutting
//! the file, which would risk losing an fsynced vote. After a snapshot the
//! log is rewritten (temporary file, fsync, rename) with only what follows
//! the snapshot.
//!
//! Invariants: `entries` are contiguous and start right after the
//! snapshot's index; `hard_state.commit` lies between the snapshot's index
//! and the last entry's.

use std::{
    fs::{self, File, OpenOptions},
    io::{Read, Write},
    path::{Path, PathBuf},
    sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard},
};

use protobuf::Message as _;
use raft::{
    Error as RaftError, GetEntriesContext, RaftState, Storage, StorageError as RaftStorageError,
    eraftpb::{ConfState, Entry, HardState, Snapshot},
    util::limit_size,
};

const LOG_FILE: &str = "raft.log";
const SNAPSHOT_FILE: &str = "raft.snapshot";
const FRAME_HEADER: usize = 8;

const KIND_ENTRY: u8 = 1;
const KIND_HARD_STATE: u8 = 2;
const KIND_CONF_STATE: u8 = 3;
const KIND_TRUNCATE: u8 = 4;

/// A failure of the Raft log's files. The node stops on any of these.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("raft storage {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("raft storage {path} is damaged: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

/// raft-rs's storage over the files described above. Clones share state.
#[derive(Debug, Clone)]
pub struct DurableStorage {
    core: Arc<RwLock<Core>>,
}

#[derive(Debug)]
struct Core {
    dir: PathBuf,
    log: File,
    hard_state: HardState,
    conf_state: ConfState,
    snapshot: Snapshot,
    entries: Vec<Entry>,
    snapshot_requested: bool,
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> StorageError + '_ {
    move |source| StorageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn encode_record(out: &mut Vec<u8>, kind: u8, payload: &[u8]) {
    let len = (1 + payload.len()) as u32;
    let crc = crc32c::crc32c_append(crc32c::crc32c(&[kind]), payload);
    out.extend(len.to_be_bytes());
    out.extend(crc.to_be_bytes());
    out.push(kind);
    out.extend(payload);
}

fn encode_message(out: &mut Vec<u8>, kind: u8, message: &impl protobuf::Message) {
    // Encoding a well-formed in-memory message into a Vec cannot fail.
    let payload = message.write_to_bytes().unwrap_or_default();
    encode_record(out, kind, &payload);
}

/// The next record of `bytes`: `(kind, payload, total length)`.
fn decode_record(bytes: &[u8]) -> Option<(u8, &[u8], usize)> {
    let header = bytes.get(..FRAME_HEADER)?;
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    let body = bytes.get(FRAME_HEADER..FRAME_HEADER.checked_add(len)?)?;
    if len == 0 || crc32c::crc32c(body) != crc {
        return None;
    }
    Some((body[0], &body[1..], FRAME_HEADER + len))
}

impl DurableStorage {
    /// Opens the Raft log in `dir`. A node starting for the first time gets
    /// `voters` as its initial configuration; every node of a new cluster
    /// must be given the same voters.
    pub fn open(dir: &Path, voters: &[u64]) -> Result<Self, StorageError> {
        fs::create_dir_all(dir).map_err(io_error(dir))?;
        let snapshot = read_snapshot(&dir.join(SNAPSHOT_FILE))?;
        let log_path = dir.join(LOG_FILE);
        let mut log = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&log_path)
            .map_err(io_error(&log_path))?;
        let mut raw = Vec::new();
        log.read_to_end(&mut raw).map_err(io_error(&log_path))?;

        let mut core = Core {
            dir: dir.to_path_buf(),
            log,
            hard_state: HardState::default(),
            conf_state: snapshot.get_metadata().get_conf_state().clone(),
            snapshot,
            entries: Vec::new(),
            snapshot_requested: false,
        };
        let mut position = 0;
        let mut saw_conf_state = false;
        while let Some((kind, payload, len)) = decode_record(&raw[position..]) {
            let corrupt = |reason: String| StorageError::Corrupt {
                path: log_path.clone(),
                reason,
            };
            match kind {
                KIND_ENTRY => {
                    let entry = Entry::parse_from_bytes(payload)
                        .map_err(|e| corrupt(format!("entry: {e}")))?;
                    core.replay_entry(entry).map_err(corrupt)?;
                }
                KIND_HARD_STATE => {
                    core.hard_state = HardState::parse_from_bytes(payload)
                        .map_err(|e| corrupt(format!("hard state: {e}")))?;
                }
                KIND_CONF_STATE => {
                    core.conf_state = ConfState::parse_from_bytes(payload)
                        .map_err(|e| corrupt(format!("conf state: {e}")))?;
                    saw_conf_state = true;
                }
                KIND_TRUNCATE => {
                    let index = payload
                        .try_into()
                        .map(u64::from_be_bytes)
                        .map_err(|_| corrupt("truncation record".into()))?;
                    core.entries.retain(|e| e.index < index);
                }
                other => return Err(corrupt(format!("unknown record kind {other}"))),
            }
            position += len;
        }
        if position < raw.len() {
            tracing::warn!(
                path = %log_path.display(),
                torn_bytes = raw.len() - position,
                "cutting a torn tail off the raft log"
            );
            core.log
                .set_len(position as u64)
                .and_then(|()| core.log.sync_all())
                .map_err(io_error(&log_path))?;
        }
        let fresh = !saw_conf_state && core.snapshot.get_metadata().index == 0;
        if fresh && core.entries.is_empty() {
            core.conf_state = ConfState::default();
            core.conf_state.set_voters(voters.to_vec());
            let mut buf = Vec::new();
            encode_message(&mut buf, KIND_CONF_STATE, &core.conf_state);
            core.append_durably(&buf)?;
        }
        let snapshot_index = core.snapshot.get_metadata().index;
        let commit = core
            .hard_state
            .commit
            .max(snapshot_index)
            .min(core.last_index());
        core.hard_state.set_commit(commit);
        Ok(Self {
            core: Arc::new(RwLock::new(core)),
        })
    }

    fn read(&self) -> RwLockReadGuard<'_, Core> {
        self.core.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Core> {
        self.core.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes a Ready's entries and HardState durable together: one write,
    /// one fsync. Entries that overwrite a conflicting tail drop it.
    pub fn persist(
        &self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
    ) -> Result<(), StorageError> {
        let mut core = self.write();
        let mut buf = Vec::new();
        if let Some(first) = entries.first() {
            if first.index <= core.last_index() {
                encode_record(&mut buf, KIND_TRUNCATE, &first.index.to_be_bytes());
            }
            for entry in entries {
                encode_message(&mut buf, KIND_ENTRY, entry);
            }
        }
        if let Some(hard_state) = hard_state {
            encode_message(&mut buf, KIND_HARD_STATE, hard_state);
        }
        if buf.is_empty() {
            return Ok(());
        }
        core.append_durably(&buf)?;
        if let Some(first) = entries.first() {
            let first_index = first.index;
            core.entries.retain(|e| e.index < first_index);
            core.entries.extend_from_slice(entries);
        }
        if let Some(hard_state) = hard_state {
            core.hard_state = hard_state.clone();
        }
        Ok(())
    }

    /// Makes a commit index learnt from a light ready durable before the
    /// entries up to it are applied, so that after a restart the state
    /// machine is rebuilt at least as far as it ever was (never behind what
    /// its side effects, such as partition directories, reflect).
    pub fn persist_commit(&self, commit: u64) -> Result<(), StorageError> {
        let mut core = self.write();
        let commit = commit.min(core.last_index());
        if commit <= core.hard_state.commit {
            return Ok(());
        }
        let mut hard_state = core.hard_state.clone();
        hard_state.set_commit(commit);
        let mut buf = Vec::new();
        encode_message(&mut buf, KIND_HARD_STATE, &hard_state);
        core.append_durably(&buf)?;
        core.hard_state = hard_state;
        Ok(())
    }

    /// Makes the configuration produced by an applied conf change durable.
    pub fn set_conf_state(&self, conf_state: &ConfState) -> Result<(), StorageError> {
        let mut core = self.write();
        let mut buf = Vec::new();
        encode_message(&mut buf, KIND_CONF_STATE, conf_state);
        core.append_durably(&buf)?;
        core.conf_state = conf_state.clone();
        Ok(())
    }

    /// Installs a snapshot received from the leader: it replaces the log.
    pub fn apply_snapshot(&self, snapshot: &Snapshot) -> Result<(), StorageError> {
        let mut core = self.write();
        let metadata = snapshot.get_metadata();
        if metadata.index <= core.snapshot.get_metadata().index {
            return Ok(());
        }
        write_snapshot(&core.dir, snapshot)?;
        let term = core.hard_state.term.max(metadata.term);
        core.hard_state.set_term(term);
        core.hard_state.set_commit(metadata.index);
        core.conf_state = metadata.get_conf_state().clone();
        core.snapshot = snapshot.clone();
        core.entries.clear();
        core.rewrite_log()
    }

    /// Stores a snapshot of the state machine at `applied_index` (which the
    /// caller has applied) and drops the log up to it.
    pub fn create_snapshot(&self, applied_index: u64, data: Vec<u8>) -> Result<(), StorageError> {
        let mut core = self.write();
        if applied_index <= core.snapshot.get_metadata().index {
            return Ok(());
        }
        let term = core
            .term(applied_index)
            .ok_or_else(|| StorageError::Corrupt {
                path: core.dir.join(LOG_FILE),
                reason: format!("no entry at applied index {applied_index}"),
            })?;
        let mut snapshot = Snapshot::default();
        snapshot.set_data(data.into());
        let metadata = snapshot.mut_metadata();
        metadata.index = applied_index;
        metadata.term = term;
        metadata.set_conf_state(core.conf_state.clone());
        write_snapshot(&core.dir, &snapshot)?;
        core.snapshot = snapshot;
        core.entries.retain(|e| e.index > applied_index);
        core.snapshot_requested = false;
        core.rewrite_log()
    }

    /// Whether a follower needs a newer snapshot than the one stored.
    pub fn snapshot_requested(&self) -> bool {
        self.read().snapshot_requested
    }

    /// The latest snapshot (empty metadata index 0 if none).
    pub fn latest_snapshot(&self) -> Snapshot {
        self.read().snapshot.clone()
    }

    pub fn hard_state(&self) -> HardState {
        self.read().hard_state.clone()
    }

    pub fn conf_state(&self) -> ConfState {
        self.read().conf_state.clone()
    }

    /// Number of entries kept after the latest snapshot.
    pub fn entry_count(&self) -> usize {
        self.read().entries.len()
    }
}

impl Core {
    fn replay_entry(&mut self, entry: Entry) -> Result<(), String> {
        if entry.index <= self.snapshot.get_metadata().index {
            return Ok(());
        }
        self.entries.retain(|e| e.index < entry.index);
        let expected = self.last_index() + 1;
        if entry.index != expected {
            return Err(format!("entry {} follows {}", entry.index, expected - 1));
        }
        self.entries.push(entry);
        Ok(())
    }

    fn first_index(&self) -> u64 {
        self.snapshot.get_metadata().index + 1
    }

    fn last_index(&self) -> u64 {
        self.entries
            .last()
            .map_or(self.snapshot.get_metadata().index, |e| e.index)
    }

    fn term(&self, index: u64) -> Option<u64> {
        let metadata = self.snapshot.get_metadata();
        if index == metadata.index {
            return Some(metadata.term);
        }
        let first = self.first_index();
        if index < first {
            return None;
        }
        self.entries.get((index - first) as usize).map(|e| e.term)
    }

    fn append_durably(&mut self, buf: &[u8]) -> Result<(), StorageError> {
        let path = self.dir.join(LOG_FILE);
        self.log
            .write_all(buf)
            .and_then(|()| self.log.sync_data())
            .map_err(io_error(&path))
    }

    /// Replaces the log file with one holding only the HardState, the
    /// ConfState and the entries after the snapshot.
    fn rewrite_log(&mut self) -> Result<(), StorageError> {
        let path = self.dir.join(LOG_FILE);
        let tmp = self.dir.join(format!("{LOG_FILE}.tmp"));
        let mut buf = Vec::new();
        encode_message(&mut buf, KIND_HARD_STATE, &self.hard_state);
        encode_message(&mut buf, KIND_CONF_STATE, &self.conf_state);
        for entry in &self.entries {
            encode_message(&mut buf, KIND_ENTRY, entry);
        }
        let mut file = File::create(&tmp).map_err(io_error(&tmp))?;
        file.write_all(&buf)
            .and_then(|()| file.sync_all())
            .map_err(io_error(&tmp))?;
        fs::rename(&tmp, &path).map_err(io_error(&path))?;
        sync_dir(&self.dir)?;
        self.log = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io_error(&path))?;
        Ok(())
    }
}

fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}

fn read_snapshot(path: &Path) -> Result<Snapshot, StorageError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Snapshot::default()),
        Err(e) => return Err(io_error(path)(e)),
    };
    let corrupt = |reason: &str| StorageError::Corrupt {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let (crc, payload) = bytes
        .split_at_checked(4)
        .ok_or_else(|| corrupt("too short"))?;
    if crc32c::crc32c(payload).to_be_bytes() != crc {
        return Err(corrupt("checksum mismatch"));
    }
    Snapshot::parse_from_bytes(payload).map_err(|e| corrupt(&e.to_string()))
}

fn write_snapshot(dir: &Path, snapshot: &Snapshot) -> Result<(), StorageError> {
    let path = dir.join(SNAPSHOT_FILE);
    let tmp = dir.join(format!("{SNAPSHOT_FILE}.tmp"));
    let payload = snapshot
        .write_to_bytes()
        .map_err(|e| StorageError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    let mut file = File::create(&tmp).map_err(io_error(&tmp))?;
    file.write_all(&crc32c::crc32c(&payload).to_be_bytes())
        .and_then(|()| file.write_all(&payload))
        .and_then(|()| file.sync_all())
        .map_err(io_error(&tmp))?;
    fs::rename(&tmp, &path).map_err(io_error(&path))?;
    sync_dir(dir)
}

impl Storage for DurableStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let core = self.read();
        Ok(RaftState::new(
            core.hard_state.clone(),
            core.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let core = self.read();
        if low < core.first_index() {
            return Err(RaftError::Store(RaftStorageError::Compacted));
        }
        if high > core.last_index() + 1 || low > high {
            return Err(RaftError::Store(RaftStorageError::Unavailable));
        }
        let first = core.first_index();
        let mut entries = core.entries[(low - first) as usize..(high - first) as usize].to_vec();
        limit_size(&mut entries, max_size.into());
        Ok(entries)
    }

    fn term(&self, index: u64) -> raft::Result<u64> {
        let core = self.read();
        if index < core.snapshot.get_metadata().index {
            return Err(RaftError::Store(RaftStorageError::Compacted));
        }
        core.term(index)
            .ok_or(RaftError::Store(RaftStorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.read().first_index())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.read().last_index())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let mut core = self.write();
        let index = core.snapshot.get_metadata().index;
        if index == 0 || index < request_index {
            core.snapshot_requested = true;
            return Err(RaftError::Store(
                RaftStorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        Ok(core.snapshot.clone())
    }
}

#[cfg(test)]
mod tests;
