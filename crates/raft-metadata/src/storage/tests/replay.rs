//! Replay of a log a crash or damage left: a torn final write is cut,
//! anything else stops the node and changes nothing.

use super::*;

#[test]
fn a_torn_final_write_is_cut_at_any_byte_and_earlier_writes_are_kept() {
    let written = Written::new(false);
    let bytes = &written.bytes;
    let start = written.last_start();
    for end in start..bytes.len() {
        assert_torn_last_write_is_cut(&bytes[..end], start, &format!("cut at {end}"));
    }
    // The whole write is kept when it is all there.
    let dir = log_dir(bytes);
    let storage = DurableStorage::open(dir.path(), &[1, 2, 3]).unwrap();
    assert_eq!(terms(&storage).len(), 5);
    assert_eq!(storage.hard_state().vote, 3);
}

#[test]
fn a_torn_final_write_left_as_zeros_or_garbage_is_cut() {
    let written = Written::new(true);
    let start = written.last_start();
    let end = written.bytes.len();
    let page = |offset: usize| offset / 4096 * 4096;
    // The write spans several pages, the first shared with the writes
    // before it.
    assert!(page(end) > page(start) + 4096, "{start}..{end}");
    let with = |from: usize, to: usize, fill: &dyn Fn(usize) -> u8| {
        let mut bytes = written.bytes.clone();
        for (i, byte) in bytes.iter_mut().enumerate().take(to).skip(from) {
            *byte = fill(i);
        }
        bytes
    };
    let zero = |_| 0;
    let garbage = |i: usize| (i as u8).wrapping_mul(31).wrapping_add(7) | 1;
    let first_page_end = page(start) + 4096;
    let cases = [
        (
            "the file grew, nothing reached the disk",
            with(start, end, &zero),
        ),
        (
            "the first page was not written, later ones were",
            with(start, first_page_end, &zero),
        ),
        (
            "a middle page was not written",
            with(first_page_end, first_page_end + 4096, &zero),
        ),
        (
            "the last page was not written",
            with(page(end - 1), end, &zero),
        ),
        (
            "the last page holds garbage, the length reaches the end",
            with(page(end - 1), end, &garbage),
        ),
        (
            "only the pages up to the second were written, the size says so",
            written.bytes[..first_page_end + 4096].to_vec(),
        ),
    ];
    for (what, bytes) in cases {
        assert_torn_last_write_is_cut(&bytes, start, what);
    }
}

#[test]
fn a_multi_record_write_torn_in_its_middle_is_lost_whole() {
    let written = Written::new(false);
    let start = written.last_start();
    let body = start + FRAME_HEADER;
    // The records of the last write: entry 4, entry 5, the HardState.
    let record_len = |at: usize| {
        let b = &written.bytes[at + 1..at + RECORD_HEADER];
        RECORD_HEADER + u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize
    };
    let entry_5 = body + record_len(body);
    let hard_state_at = entry_5 + record_len(entry_5);
    assert_eq!(written.bytes[hard_state_at], KIND_HARD_STATE);
    // Entry 4 complete, entry 5 half written: under a record-per-frame
    // format entry 4 would survive.
    assert_torn_last_write_is_cut(
        &written.bytes[..entry_5 + 7],
        start,
        "cut in the second record",
    );
    // Entry 4 and the HardState written, entry 5 not (zeros): a bad record
    // followed by a good one, within the final write.
    let mut bytes = written.bytes.clone();
    bytes[entry_5..hard_state_at].fill(0);
    assert_torn_last_write_is_cut(&bytes, start, "a hole in the middle record");
    // Only the HardState missing: the entries do not survive without it.
    assert_torn_last_write_is_cut(
        &written.bytes[..hard_state_at + 3],
        start,
        "cut in the last record",
    );
}

#[test]
fn a_flipped_bit_before_the_final_write_stops_the_node_and_cuts_nothing() {
    let written = Written::new(false);
    let starts = written.starts();
    let write_start = |i: usize| starts.iter().rev().find(|&&s| s <= i).copied().unwrap();
    let (mut in_header, mut in_body) = (0, 0);
    // Every byte of every write before the last one, the frame header
    // (length, body checksum, header checksum) and the records.
    for i in FILE_HEADER..written.last_start() {
        let mut bytes = written.bytes.clone();
        bytes[i] ^= 1 << (i % 8);
        let start = write_start(i);
        let text = assert_damage_refused(&bytes, start as u64, &format!("bit flipped at {i}"));
        assert!(text.contains("refusing to drop them"), "{text}");
        if i < start + FRAME_HEADER {
            in_header += 1;
            assert!(text.contains("frame header"), "{i}: {text}");
        } else {
            in_body += 1;
            assert!(text.contains("body"), "{i}: {text}");
        }
    }
    assert_eq!(in_header, 3 * FRAME_HEADER);
    assert!(in_body > 0);
}

#[test]
fn a_damaged_file_header_or_zeroed_earlier_write_stops_the_node() {
    let written = Written::new(false);
    // The file header: magic, version, file id, checksum.
    for i in 0..FILE_HEADER {
        let mut bytes = written.bytes.clone();
        bytes[i] ^= 0x10;
        let dir = log_dir(&bytes);
        let error = DurableStorage::open(dir.path(), &[1, 2, 3]).err();
        let text = error.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            text.contains(&dir.path().join(LOG_FILE).display().to_string()),
            "{i}: {text}"
        );
        assert_eq!(log_bytes(dir.path()), bytes, "{i}");
    }
    // Write 2 zeroed as a whole (a lost write) while write 3 is intact:
    // the zeros look like an unwritten sector, but a later write proves
    // write 2 had been fsynced.
    let mut bytes = written.bytes.clone();
    bytes[written.ends[1]..written.ends[2]].fill(0);
    let text = assert_damage_refused(&bytes, written.ends[1] as u64, "write 2 zeroed");
    assert!(
        text.contains(&format!(
            "a complete write follows at byte {}",
            written.ends[2]
        )),
        "{text}"
    );
}

#[test]
fn a_garbled_header_of_the_final_write_is_refused_not_guessed() {
    // The final write's frame header changed in place (not zeroed, as an
    // unwritten sector would be): its length cannot be trusted, so replay
    // cannot know the damage ends with this write.
    let written = Written::new(false);
    let start = written.last_start();
    assert_eq!(start / SECTOR, (start + FRAME_HEADER - 1) / SECTOR);
    for i in start..start + FRAME_HEADER {
        let mut bytes = written.bytes.clone();
        bytes[i] ^= 0x80;
        assert_damage_refused(&bytes, start as u64, &format!("bit flipped at {i}"));
    }
}

#[test]
fn a_verified_write_with_undecodable_records_stops_the_node() {
    let written = Written::new(false);
    let file_id = u64::from_be_bytes(written.bytes[12..20].try_into().unwrap());
    let append = |body: &[u8]| {
        let mut bytes = written.bytes.clone();
        encode_frame(&mut bytes, file_id, written.bytes.len() as u64, body).unwrap();
        bytes
    };
    let at = written.bytes.len() + FRAME_HEADER;
    let mut body = Vec::new();
    encode_message(&mut body, KIND_HARD_STATE, &hard_state(3, 3, 5));
    let second = body.len();
    encode_record(&mut body, 9, b"?");
    let text = assert_damage_refused(&append(&body), (at + second) as u64, "unknown kind");
    assert!(text.contains("unknown kind 9"), "{text}");

    let mut body = Vec::new();
    encode_message(&mut body, KIND_ENTRY, &entry(9, 3));
    let text = assert_damage_refused(&append(&body), at as u64, "a gap");
    assert!(text.contains("entry 9 follows 5"), "{text}");

    let mut body = Vec::new();
    encode_message(&mut body, KIND_ENTRY, &entry(6, 3));
    body.pop();
    assert_damage_refused(&append(&body), at as u64, "a record cut short");
}

#[test]
fn stale_frames_of_a_replaced_log_file_do_not_count() {
    // Log A, long; then a snapshot rewrites it as log B, short. A crash
    // while appending to B may expose blocks that once held A (some file
    // systems do): after an unwritten first sector, A's bytes at A's
    // offsets. Frames of A there must not pass for complete later writes.
    let dir = tempfile::tempdir().unwrap();
    let storage = DurableStorage::open(dir.path(), &[1, 2, 3]).unwrap();
    for index in 1..=20 {
        storage
            .persist(&[big_entry(index, 1)], Some(&hard_state(1, 1, index)))
            .unwrap();
    }
    let a = log_bytes(dir.path());
    let a_id = u64::from_be_bytes(a[12..20].try_into().unwrap());
    storage.create_snapshot(20, b"image".to_vec()).unwrap();
    storage
        .persist(&[entry(21, 2)], Some(&hard_state(2, 2, 20)))
        .unwrap();
    drop(storage);
    let b = log_bytes(dir.path());
    let sector_end = (b.len() / SECTOR + 1) * SECTOR;
    let mut crashed = b.clone();
    crashed.resize(sector_end, 0);
    crashed.extend(&a[sector_end..]);
    assert!(
        (sector_end..a.len()).any(|at| matches!(read_frame(&a, a_id, at), Frame::Valid { .. })),
        "A has frames past B's end"
    );
    let crashed_dir = log_dir(&crashed);
    fs::copy(
        dir.path().join(SNAPSHOT_FILE),
        crashed_dir.path().join(SNAPSHOT_FILE),
    )
    .unwrap();
    let dir = crashed_dir;
    let storage = DurableStorage::open(dir.path(), &[1, 2, 3]).unwrap();
    assert_eq!(terms(&storage), vec![(21, 2)]);
    assert_eq!(storage.hard_state().vote, 2);
    assert_eq!(log_bytes(dir.path()), b);
}

#[test]
fn writes_after_a_snapshot_rewrite_replay_and_damage_in_the_rewrite_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = DurableStorage::open(dir.path(), &[1, 2]).unwrap();
        let entries: Vec<Entry> = (1..=5).map(|i| entry(i, 1)).collect();
        storage
            .persist(&entries, Some(&hard_state(1, 1, 5)))
            .unwrap();
        storage.create_snapshot(3, b"state at 3".to_vec()).unwrap();
        storage
            .persist(&[entry(6, 2)], Some(&hard_state(2, 2, 6)))
            .unwrap();
    }
    let bytes = log_bytes(dir.path());
    {
        let storage = DurableStorage::open(dir.path(), &[1, 2]).unwrap();
        assert_eq!(terms(&storage), vec![(4, 1), (5, 1), (6, 2)]);
        assert_eq!(storage.hard_state().vote, 2);
    }
    // The rewritten log is one frame right after the file header.
    let Frame::Valid { end, .. } = read_frame(
        &bytes,
        u64::from_be_bytes(bytes[12..20].try_into().unwrap()),
        FILE_HEADER,
    ) else {
        panic!("no frame after the file header");
    };
    let mut damaged = bytes.clone();
    damaged[end - 1] ^= 4;
    let damaged_dir = log_dir(&damaged);
    fs::copy(
        dir.path().join(SNAPSHOT_FILE),
        damaged_dir.path().join(SNAPSHOT_FILE),
    )
    .unwrap();
    let error = DurableStorage::open(damaged_dir.path(), &[1, 2])
        .err()
        .unwrap();
    assert!(
        error
            .to_string()
            .contains(&format!("is damaged at byte {FILE_HEADER}:")),
        "{error}"
    );
    assert_eq!(log_bytes(damaged_dir.path()), damaged);
}
