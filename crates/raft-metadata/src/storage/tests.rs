use super::*;

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
    // The cut tears the HardState record at the end of the last write: the
    // complete entry record before it stays, the HardState falls back to the
    // previous one. Nothing of that write was acknowledged, as responses
    // are sent only after the fsync.
    assert_eq!(terms(&storage), vec![(1, 1), (2, 1)]);
    assert_eq!(storage.hard_state().commit, 1);
    storage.persist(&[entry(3, 1)], None).unwrap();
    drop(storage);
    let storage = DurableStorage::open(dir.path(), &[1]).unwrap();
    assert_eq!(storage.last_index().unwrap(), 3);
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
