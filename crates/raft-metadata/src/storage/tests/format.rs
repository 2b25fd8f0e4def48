//! Which files `DurableStorage::open` reads, migrates or refuses.

use super::*;

/// A record of the format before file headers and frames.
fn legacy_record(out: &mut Vec<u8>, kind: u8, payload: &[u8]) {
    out.extend((1 + payload.len() as u32).to_be_bytes());
    out.extend(crc32c::crc32c_append(crc32c::crc32c(&[kind]), payload).to_be_bytes());
    out.push(kind);
    out.extend(payload);
}

#[test]
fn a_log_of_the_earlier_format_is_rewritten_keeping_votes_and_entries() {
    let mut conf_state = ConfState::default();
    conf_state.set_voters(vec![1, 2, 3]);
    let mut old = Vec::new();
    legacy_record(
        &mut old,
        KIND_CONF_STATE,
        &conf_state.write_to_bytes().unwrap(),
    );
    for index in 1..=4 {
        legacy_record(
            &mut old,
            KIND_ENTRY,
            &entry(index, 1).write_to_bytes().unwrap(),
        );
    }
    legacy_record(&mut old, KIND_TRUNCATE, &4u64.to_be_bytes());
    legacy_record(&mut old, KIND_ENTRY, &entry(4, 2).write_to_bytes().unwrap());
    legacy_record(
        &mut old,
        KIND_HARD_STATE,
        &hard_state(2, 3, 3).write_to_bytes().unwrap(),
    );
    // A torn last record, as that format could leave it.
    old.extend(&[0, 0, 0, 40, 1, 2]);
    let dir = log_dir(&old);

    let check = |storage: &DurableStorage| {
        let state = storage.initial_state().unwrap();
        assert_eq!(state.conf_state.voters, vec![1, 2, 3]);
        assert_eq!(
            (
                state.hard_state.term,
                state.hard_state.vote,
                state.hard_state.commit
            ),
            (2, 3, 3)
        );
        assert_eq!(terms(storage), vec![(1, 1), (2, 1), (3, 1), (4, 2)]);
    };
    check(&DurableStorage::open(dir.path(), &[9]).unwrap());
    assert!(log_bytes(dir.path()).starts_with(&MAGIC), "rewritten");
    let storage = DurableStorage::open(dir.path(), &[9]).unwrap();
    check(&storage);
    storage.persist(&[entry(5, 2)], None).unwrap();
    drop(storage);
    let storage = DurableStorage::open(dir.path(), &[9]).unwrap();
    assert_eq!(storage.last_index().unwrap(), 5);
}

#[test]
fn an_unknown_version_a_cut_header_or_a_missing_log_is_refused() {
    let refused = |bytes: &[u8], expected: &str| {
        let dir = log_dir(bytes);
        let error = DurableStorage::open(dir.path(), &[1]).err().unwrap();
        let text = error.to_string();
        assert!(
            text.contains(&dir.path().join(LOG_FILE).display().to_string()),
            "{text}"
        );
        assert!(text.contains(expected), "{text}");
        assert_eq!(log_bytes(dir.path()), bytes);
    };
    refused(
        b"not a raft log at all",
        "not a Keel Raft log of a known format",
    );
    // A later version, with a valid header.
    let mut header = Vec::new();
    header.extend(MAGIC);
    header.extend(2u32.to_be_bytes());
    header.extend(7u64.to_be_bytes());
    header.extend(crc32c::crc32c(&header).to_be_bytes());
    refused(&header, "version 2");
    // An empty or cut file header.
    refused(&[], "at byte 0");
    refused(&encode_file_header(7)[..10], "at byte 0");

    // The log gone while a snapshot is there: the votes would be lost.
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = DurableStorage::open(dir.path(), &[1]).unwrap();
        storage
            .persist(&[entry(1, 1), entry(2, 1)], Some(&hard_state(1, 1, 2)))
            .unwrap();
        storage.create_snapshot(2, b"image".to_vec()).unwrap();
    }
    fs::remove_file(dir.path().join(LOG_FILE)).unwrap();
    let error = DurableStorage::open(dir.path(), &[1]).err().unwrap();
    assert!(error.to_string().contains("missing"), "{error}");
    assert!(!dir.path().join(LOG_FILE).exists());
}
