//! The Raft log on disk, and raft-rs's [`Storage`] over it.
//!
//! Two files in the node's directory:
//!
//! - `raft.log`: a file header, then an append-only sequence of frames,
//!   one per write (big-endian throughout):
//!
//!   ```text
//!   file header, 24 bytes:
//!     0  magic      8 bytes "KEELRAFT"
//!     8  version    u32     1
//!    12  file id    u64     random, chosen whenever the file is written anew
//!    20  crc32c     u32     of bytes 0..20
//!   frame, at file offset p, one per write:
//!     0  length     u32     of the body, never 0
//!     4  body crc   u32     crc32c of the body
//!     8  header crc u32     crc32c of (file id u64, p u64, bytes 0..8)
//!    12  body       records back to back: kind u8, length u32, payload
//!   ```
//!
//!   Record kinds: 1 an entry, 2 the HardState, 3 the ConfState, 4 "drop
//!   entries from index N" (a conflicting tail; payload N as u64). Payloads
//!   are raft-rs's protobuf encodings. Replay applies the records of the
//!   frames in order. A log of the earlier format (one `length u32, crc32c
//!   u32, kind u8, payload` record after another, no header) is rewritten
//!   in this one on open, keeping its votes and entries; any other file
//!   without the magic, or of another version, is refused.
//! - `raft.snapshot`: the latest snapshot (metadata and state machine data),
//!   `crc32c u32` then the protobuf `Snapshot`, replaced atomically.
//!
//! Each write to the log is one frame, written by one `write_all` followed
//! by one fsync; the next write starts only after that fsync returned. A
//! Ready's entries and HardState go into one frame, so they become durable
//! together or not at all. A conflicting tail is dropped by appending a
//! truncation record rather than by cutting the file, which would risk
//! losing an fsynced vote. The log is created, and rewritten after a
//! snapshot with only what follows it, as a whole file (temporary file,
//! fsync, rename, directory fsync), so its header and first frame are never
//! torn, and a missing `raft.log` next to a `raft.snapshot` is damage.
//!
//! How a damaged frame is told apart from a torn final write is described
//! in [`frame`].
//!
//! A write whose `write_all` or fsync fails leaves the file in an unknown
//! state (and, on Linux, a later fsync may report success for lost pages),
//! so every later write is refused; the node stops and replays on restart.
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

mod files;
mod frame;

use self::files::{io_error, migrate_legacy, read_snapshot, write_log_file, write_snapshot};
use self::frame::{
    FILE_HEADER, FRAME_HEADER, Frame, KIND_CONF_STATE, KIND_ENTRY, KIND_HARD_STATE, KIND_TRUNCATE,
    RECORD_HEADER, encode_frame, encode_message, encode_record, read_file_header, read_frame,
    torn_or_damaged,
};

const LOG_FILE: &str = "raft.log";
const SNAPSHOT_FILE: &str = "raft.snapshot";

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
    /// Damage at a known place, which replay refuses to cut off.
    #[error("raft storage {path} is damaged at byte {offset}: {reason}")]
    Damaged {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
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
    /// The log's file id, which every frame's header checksum covers.
    file_id: u64,
    /// The log's length: where the next frame goes.
    log_len: u64,
    /// A write failed; the file's end is unknown, so no more writes.
    write_failed: bool,
    hard_state: HardState,
    conf_state: ConfState,
    snapshot: Snapshot,
    entries: Vec<Entry>,
    snapshot_requested: bool,
}

impl DurableStorage {
    /// Whether `dir` holds a Raft log (a node that ran before).
    pub fn exists(dir: &Path) -> bool {
        dir.join(LOG_FILE).exists() || dir.join(SNAPSHOT_FILE).exists()
    }

    /// Opens the Raft log in `dir`. A node starting for the first time gets
    /// `voters` as its initial configuration; every node of a new cluster
    /// must be given the same voters.
    ///
    /// Fails, changing nothing, if the log is damaged anywhere but in its
    /// final write (see the module docs).
    pub fn open(dir: &Path, voters: &[u64]) -> Result<Self, StorageError> {
        fs::create_dir_all(dir).map_err(io_error(dir))?;
        let snapshot = read_snapshot(&dir.join(SNAPSHOT_FILE))?;
        let log_path = dir.join(LOG_FILE);
        let (log, raw) = match OpenOptions::new().read(true).append(true).open(&log_path) {
            Ok(mut log) => {
                let mut raw = Vec::new();
                log.read_to_end(&mut raw).map_err(io_error(&log_path))?;
                (log, raw)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if snapshot.get_metadata().index > 0 {
                    return Err(StorageError::Corrupt {
                        path: log_path,
                        reason: format!(
                            "missing, while {SNAPSHOT_FILE} exists: the HardState (the \
                             node's votes) is lost"
                        ),
                    });
                }
                // A new node: its log starts with the initial voters.
                let mut conf_state = ConfState::default();
                conf_state.set_voters(voters.to_vec());
                let mut body = Vec::new();
                encode_message(&mut body, KIND_CONF_STATE, &conf_state);
                let (log, _, _) = write_log_file(dir, &body)?;
                let mut raw = Vec::new();
                (&log).read_to_end(&mut raw).map_err(io_error(&log_path))?;
                (log, raw)
            }
            Err(e) => return Err(io_error(&log_path)(e)),
        };
        let (log, raw) = match migrate_legacy(dir, &raw)? {
            Some(migrated) => migrated,
            None => (log, raw),
        };
        let file_id = read_file_header(&raw, &log_path)?;

        let mut core = Core {
            dir: dir.to_path_buf(),
            log,
            file_id,
            log_len: raw.len() as u64,
            write_failed: false,
            hard_state: HardState::default(),
            conf_state: snapshot.get_metadata().get_conf_state().clone(),
            snapshot,
            entries: Vec::new(),
            snapshot_requested: false,
        };
        let mut position = FILE_HEADER;
        let mut saw_conf_state = false;
        while position < raw.len() {
            if let Frame::Valid { body, end } = read_frame(&raw, file_id, position) {
                saw_conf_state |= core.replay_write(body, position + FRAME_HEADER).map_err(
                    |(offset, reason)| StorageError::Damaged {
                        path: log_path.clone(),
                        offset: offset as u64,
                        reason: format!("a write whose checksums hold has {reason}"),
                    },
                )?;
                position = end;
                continue;
            }
            let torn = torn_or_damaged(&raw, file_id, position).map_err(|reason| {
                StorageError::Damaged {
                    path: log_path.clone(),
                    offset: position as u64,
                    reason,
                }
            })?;
            tracing::warn!(
                path = %log_path.display(),
                offset = position,
                torn_bytes = raw.len() - position,
                "cutting a torn final write off the raft log: {torn}"
            );
            core.log
                .set_len(position as u64)
                .and_then(|()| core.log.sync_all())
                .map_err(io_error(&log_path))?;
            core.log_len = position as u64;
            break;
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
    /// Applies the records of a verified write whose body starts at file
    /// offset `base`. Returns whether it held a ConfState, or the offset
    /// and description of a record that does not decode or fit.
    fn replay_write(&mut self, body: &[u8], base: usize) -> Result<bool, (usize, String)> {
        let mut saw_conf_state = false;
        let mut at = 0;
        while at < body.len() {
            let offset = base + at;
            let Some(header) = body.get(at..at + RECORD_HEADER) else {
                return Err((
                    offset,
                    "a record header cut short by the write's end".into(),
                ));
            };
            let kind = header[0];
            let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
            let start = at + RECORD_HEADER;
            let Some(payload) = body.get(start..start + len) else {
                return Err((offset, "a record longer than the rest of its write".into()));
            };
            let bad = |what: &str, e: &dyn std::fmt::Display| {
                (offset, format!("a bad {what} record: {e}"))
            };
            match kind {
                KIND_ENTRY => {
                    let entry = Entry::parse_from_bytes(payload).map_err(|e| bad("entry", &e))?;
                    self.replay_entry(entry).map_err(|e| bad("entry", &e))?;
                }
                KIND_HARD_STATE => {
                    self.hard_state =
                        HardState::parse_from_bytes(payload).map_err(|e| bad("hard state", &e))?;
                }
                KIND_CONF_STATE => {
                    self.conf_state =
                        ConfState::parse_from_bytes(payload).map_err(|e| bad("conf state", &e))?;
                    saw_conf_state = true;
                }
                KIND_TRUNCATE => {
                    let index = payload
                        .try_into()
                        .map(u64::from_be_bytes)
                        .map_err(|_| bad("truncation", &format!("{len}-byte payload")))?;
                    self.entries.retain(|e| e.index < index);
                }
                other => return Err((offset, format!("a record of unknown kind {other}"))),
            }
            at = start + len;
        }
        Ok(saw_conf_state)
    }

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

    /// Appends `body` (records) to the log as one frame: one write, one
    /// fsync.
    fn append_durably(&mut self, body: &[u8]) -> Result<(), StorageError> {
        let path = self.dir.join(LOG_FILE);
        if self.write_failed {
            return Err(io_error(&path)(std::io::Error::other(
                "an earlier write to the log failed; the node must restart and replay it",
            )));
        }
        let mut frame = Vec::with_capacity(FRAME_HEADER + body.len());
        encode_frame(&mut frame, self.file_id, self.log_len, body).map_err(io_error(&path))?;
        self.write_failed = true;
        self.log
            .write_all(&frame)
            .and_then(|()| self.log.sync_data())
            .map_err(io_error(&path))?;
        self.write_failed = false;
        self.log_len += frame.len() as u64;
        Ok(())
    }

    /// Replaces the log file with one holding only the HardState, the
    /// ConfState and the entries after the snapshot, in one frame.
    fn rewrite_log(&mut self) -> Result<(), StorageError> {
        let mut body = Vec::new();
        encode_message(&mut body, KIND_HARD_STATE, &self.hard_state);
        encode_message(&mut body, KIND_CONF_STATE, &self.conf_state);
        for entry in &self.entries {
            encode_message(&mut body, KIND_ENTRY, entry);
        }
        let (log, file_id, log_len) = write_log_file(&self.dir, &body)?;
        self.log = log;
        self.file_id = file_id;
        self.log_len = log_len;
        self.write_failed = false;
        Ok(())
    }
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
