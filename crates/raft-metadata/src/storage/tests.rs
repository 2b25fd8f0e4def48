use super::{
    frame::{MAGIC, SECTOR, encode_file_header},
    *,
};

use std::path::Path;

use tempfile::TempDir;

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        data: format!("e{index}t{term}").into_bytes().into(),
        ..Default::default()
    }
}

fn hard_state(term: u64, vote: u64, commit: u64) -> HardState {
    HardState {
        term,
        vote,
        commit,
        ..Default::default()
    }
}

fn terms(storage: &DurableStorage) -> Vec<(u64, u64)> {
    let first = storage.first_index().unwrap();
    let last = storage.last_index().unwrap();
    storage
        .entries(first, last + 1, None, GetEntriesContext::empty(false))
        .unwrap()
        .iter()
        .map(|e| (e.index, e.term))
        .collect()
}

#[test]
fn a_new_node_starts_with_the_given_voters() {
    let dir = tempfile::tempdir().unwrap();
    let storage = DurableStorage::open(dir.path(), &[1, 2, 3]).unwrap();
    let state = storage.initial_state().unwrap();
    assert_eq!(state.conf_state.voters, vec![1, 2, 3]);
    assert_eq!(storage.last_index().unwrap(), 0);
    drop(storage);
    // Reopening with other voters does not change an existing node.
    let storage = DurableStorage::open(dir.path(), &[9]).unwrap();
    assert_eq!(
        storage.initial_state().unwrap().conf_state.voters,
        vec![1, 2, 3]
    );
}

#[test]
fn entries_and_hard_state_survive_reopen_and_conflicts_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = DurableStorage::open(dir.path(), &[1]).unwrap();
        storage
            .persist(
                &[entry(1, 1), entry(2, 1), entry(3, 1)],
                Some(&hard_state(1, 1, 2)),
            )
            .unwrap();
        // A new leader overwrites index 3 onwards.
        storage
            .persist(&[entry(3, 2), entry(4, 2)], Some(&hard_state(2, 2, 3)))
            .unwrap();
        assert_eq!(terms(&storage), vec![(1, 1), (2, 1), (3, 2), (4, 2)]);
    }
    let storage = DurableStorage::open(dir.path(), &[1]).unwrap();
    assert_eq!(terms(&storage), vec![(1, 1), (2, 1), (3, 2), (4, 2)]);
    let state = storage.initial_state().unwrap();
    assert_eq!(
        (
            state.hard_state.term,
            state.hard_state.vote,
            state.hard_state.commit
        ),
        (2, 2, 3)
    );
}

#[test]
fn a_torn_tail_loses_only_the_unfinished_write() {
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = DurableStorage::open(dir.path(), &[1]).unwrap();
        storage
            .persist(&[entry(1, 1)], Some(&hard_state(1, 1, 1)))
            .unwrap();
        storage
            .persist(&[entry(2, 1)], Some(&hard_state(1, 1, 2)))
            .unwrap();
    }
    let path = dir.path().join(LOG_FILE);
    let len = fs::metadata(&path).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    let storage = DurableStorage::open(dir.path(), &[1]).unwrap();
    // The cut tears the last write, which is one frame: its entry goes with
    // its HardState, and both fall back to the previous write. Nothing of
    // that write was acknowledged, as responses are sent only after the
    // fsync.
    assert_eq!(terms(&storage), vec![(1, 1)]);
    assert_eq!(storage.hard_state().commit, 1);
    storage.persist(&[entry(2, 1)], None).unwrap();
    drop(storage);
    let storage = DurableStorage::open(dir.path(), &[1]).unwrap();
    assert_eq!(storage.last_index().unwrap(), 2);
}

#[test]
fn snapshots_compact_the_log_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = DurableStorage::open(dir.path(), &[1, 2]).unwrap();
        let entries: Vec<Entry> = (1..=10).map(|i| entry(i, 1)).collect();
        storage
            .persist(&entries, Some(&hard_state(1, 1, 10)))
            .unwrap();
        storage.create_snapshot(7, b"state at 7".to_vec()).unwrap();
        assert_eq!(storage.first_index().unwrap(), 8);
        assert_eq!(storage.term(7).unwrap(), 1);
        assert!(matches!(
            storage.term(6),
            Err(RaftError::Store(RaftStorageError::Compacted))
        ));
        assert_eq!(storage.entry_count(), 3);
    }
    let storage = DurableStorage::open(dir.path(), &[1, 2]).unwrap();
    assert_eq!(terms(&storage), vec![(8, 1), (9, 1), (10, 1)]);
    let snapshot = storage.snapshot(0, 2).unwrap();
    assert_eq!(snapshot.get_metadata().index, 7);
    assert_eq!(&snapshot.data[..], b"state at 7");
    assert_eq!(snapshot.get_metadata().get_conf_state().voters, vec![1, 2]);
}

#[test]
fn an_installed_snapshot_replaces_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let storage = DurableStorage::open(dir.path(), &[1, 2, 3]).unwrap();
    storage
        .persist(&[entry(1, 1), entry(2, 1)], Some(&hard_state(1, 0, 1)))
        .unwrap();
    let mut snapshot = Snapshot::default();
    snapshot.set_data(b"leader state".to_vec().into());
    snapshot.mut_metadata().index = 50;
    snapshot.mut_metadata().term = 4;
    let mut conf_state = ConfState::default();
    conf_state.set_voters(vec![1, 2, 3]);
    conf_state.set_learners(vec![4]);
    snapshot.mut_metadata().set_conf_state(conf_state);
    storage.apply_snapshot(&snapshot).unwrap();
    drop(storage);
    let storage = DurableStorage::open(dir.path(), &[1, 2, 3]).unwrap();
    assert_eq!(storage.first_index().unwrap(), 51);
    assert_eq!(storage.last_index().unwrap(), 50);
    let state = storage.initial_state().unwrap();
    assert_eq!(state.hard_state.commit, 50);
    assert_eq!(state.hard_state.term, 4);
    assert_eq!(state.conf_state.learners, vec![4]);
}

#[test]
fn a_missing_snapshot_is_requested_not_invented() {
    let dir = tempfile::tempdir().unwrap();
    let storage = DurableStorage::open(dir.path(), &[1]).unwrap();
    assert!(matches!(
        storage.snapshot(0, 2),
        Err(RaftError::Store(
            RaftStorageError::SnapshotTemporarilyUnavailable
        ))
    ));
    assert!(storage.snapshot_requested());
}

// ---------------------------------------------------------------------------
// Crash and damage: files built as a crash (or a bad disk) would leave them.

/// An entry whose data makes a write span several disk pages.
fn big_entry(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        data: vec![index as u8 ^ 0x5a; 5000].into(),
        ..Default::default()
    }
}

/// A log made by a node's writes, with `ends[i]`, the file offset where
/// write `i` ended: write 0 creates the log (the voters), write 1 holds
/// entries 1-2 and term 1's vote, write 2 entry 3 and term 2's vote, and
/// write 3, the last, entries 4-5 (big ones if `big_last`) and term 3's
/// vote.
struct Written {
    _dir: TempDir,
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Written {
    fn new(big_last: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let storage = DurableStorage::open(dir.path(), &[1, 2, 3]).unwrap();
        let len = || fs::metadata(dir.path().join(LOG_FILE)).unwrap().len() as usize;
        let mut ends = vec![len()];
        storage
            .persist(&[entry(1, 1), entry(2, 1)], Some(&hard_state(1, 1, 1)))
            .unwrap();
        ends.push(len());
        storage
            .persist(&[entry(3, 2)], Some(&hard_state(2, 2, 2)))
            .unwrap();
        ends.push(len());
        let last = if big_last {
            [big_entry(4, 3), big_entry(5, 3)]
        } else {
            [entry(4, 3), entry(5, 3)]
        };
        storage.persist(&last, Some(&hard_state(3, 3, 4))).unwrap();
        ends.push(len());
        drop(storage);
        let bytes = fs::read(dir.path().join(LOG_FILE)).unwrap();
        Self {
            _dir: dir,
            bytes,
            ends,
        }
    }

    /// Where each write starts.
    fn starts(&self) -> Vec<usize> {
        let mut starts = vec![FILE_HEADER];
        starts.extend(&self.ends[..self.ends.len() - 1]);
        starts
    }

    /// Where the last write starts.
    fn last_start(&self) -> usize {
        self.ends[2]
    }
}

/// Entries, (term, vote, commit) and voters.
type Summary = (Vec<(u64, u64)>, (u64, u64, u64), Vec<u64>);

fn summary(storage: &DurableStorage) -> Summary {
    let hs = storage.hard_state();
    (
        terms(storage),
        (hs.term, hs.vote, hs.commit),
        storage.conf_state().voters,
    )
}

/// What the writes before the last one leave.
fn without_last_write() -> Summary {
    (vec![(1, 1), (2, 1), (3, 2)], (2, 2, 2), vec![1, 2, 3])
}

/// A node directory whose log holds `bytes`.
fn log_dir(bytes: &[u8]) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join(LOG_FILE), bytes).unwrap();
    dir
}

fn log_bytes(dir: &Path) -> Vec<u8> {
    fs::read(dir.join(LOG_FILE)).unwrap()
}

/// Opens a log left as `bytes`, expects the last write (starting at
/// `cut`) to be cut off and the rest kept, and checks that reopening and
/// writing on are stable.
fn assert_torn_last_write_is_cut(bytes: &[u8], cut: usize, what: &str) {
    let dir = log_dir(bytes);
    let storage = DurableStorage::open(dir.path(), &[1, 2, 3])
        .unwrap_or_else(|e| panic!("{what}: open failed: {e}"));
    assert_eq!(summary(&storage), without_last_write(), "{what}");
    assert_eq!(log_bytes(dir.path()), bytes[..cut], "{what}: cut at {cut}");
    drop(storage);
    let storage = DurableStorage::open(dir.path(), &[1, 2, 3]).unwrap();
    assert_eq!(summary(&storage), without_last_write(), "{what}: reopened");
    assert_eq!(log_bytes(dir.path()).len(), cut, "{what}: reopened");
    storage
        .persist(&[entry(4, 4)], Some(&hard_state(4, 1, 4)))
        .unwrap();
    drop(storage);
    let storage = DurableStorage::open(dir.path(), &[1, 2, 3]).unwrap();
    assert_eq!(
        terms(&storage),
        vec![(1, 1), (2, 1), (3, 2), (4, 4)],
        "{what}: written on"
    );
    assert_eq!(storage.hard_state().vote, 1, "{what}: written on");
}

/// Opens a log left as `bytes`, expects it to be refused with an error
/// naming the file and `offset`, and the file to stay as it was.
fn assert_damage_refused(bytes: &[u8], offset: u64, what: &str) -> String {
    let dir = log_dir(bytes);
    let error = DurableStorage::open(dir.path(), &[1, 2, 3])
        .err()
        .unwrap_or_else(|| panic!("{what}: opened despite damage at {offset}"));
    let text = error.to_string();
    let path = dir.path().join(LOG_FILE);
    assert!(
        matches!(&error, StorageError::Damaged { offset: o, path: p, .. } if *o == offset && *p == path),
        "{what}: {text}"
    );
    assert!(
        text.contains(&format!("{} is damaged at byte {offset}:", path.display())),
        "{what}: {text}"
    );
    assert_eq!(log_bytes(dir.path()), bytes, "{what}: the file was changed");
    text
}

mod format;
mod replay;
