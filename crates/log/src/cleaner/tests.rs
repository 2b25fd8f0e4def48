//! Unit tests of the cleaner: re-encoding, the key map's budget, what an
//! unreadable batch protects, and reading and copying segments in chunks.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fs,
    io::IoSlice,
    path::Path,
};

use kafka_protocol::records::{Compression, Record};

use super::{
    files::COPY_CHUNK,
    offset_map::{MAP_ENTRY_OVERHEAD, OffsetMap},
    rules::{decode, reencode},
    snapshot::READ_CHUNK,
    *,
};
use crate::{
    batch::{
        BATCH_HEADER_LEN, BatchHeader, assign_offset_and_epoch, reseal, set_log_append_time,
        split_batches, verify_crc,
    },
    segment::Segment,
    testing::{BatchSpec, ProducerIdentity, build_keyed_batch},
};

type Kv<'a> = (Option<&'a str>, Option<&'a str>);

fn stored(spec: &BatchSpec, records: &[Kv<'_>], base_offset: i64) -> (Vec<u8>, BatchHeader) {
    let mut bytes = build_keyed_batch(spec, records);
    assign_offset_and_epoch(&mut bytes, base_offset, 3);
    let header = BatchHeader::parse(&bytes).unwrap();
    (bytes, header)
}

fn producer(base_sequence: i32) -> BatchSpec {
    BatchSpec {
        first_timestamp: 1_000,
        producer: Some(ProducerIdentity {
            producer_id: 42,
            producer_epoch: 1,
            base_sequence,
        }),
        ..BatchSpec::default()
    }
}

/// Re-encodes the records at the given offset deltas of a stored batch.
fn keep_deltas(bytes: &[u8], header: &BatchHeader, deltas: &[i64]) -> Vec<u8> {
    let set = decode(bytes).unwrap();
    let mut survivors: Vec<Record> = set
        .records
        .into_iter()
        .filter(|r| deltas.contains(&(r.offset - header.base_offset)))
        .collect();
    reencode(header, set.compression, &mut survivors).unwrap()
}

#[test]
fn reencoding_keeps_offsets_sequences_and_the_last_offset() {
    let records = [
        (Some("k0"), Some("a")),
        (Some("k1"), Some("b")),
        (Some("k2"), None),
        (Some("k3"), Some("d")),
        (Some("k4"), Some("e")),
    ];
    let (bytes, header) = stored(&producer(10), &records, 100);
    let cleaned = keep_deltas(&bytes, &header, &[1, 3]);
    let new = BatchHeader::parse(&cleaned).unwrap();
    verify_crc(&new, &cleaned).unwrap();
    assert_eq!((new.base_offset, new.last_offset()), (101, 104));
    assert_eq!((new.base_sequence, new.last_sequence()), (11, 14));
    assert_eq!(new.last_sequence(), header.last_sequence());
    assert_eq!(new.records_count, 2);
    assert_eq!(new.partition_leader_epoch, 3);
    assert_eq!((new.producer_id, new.producer_epoch), (42, 1));
    let records = decode(&cleaned).unwrap().records;
    let seen: Vec<_> = records
        .iter()
        .map(|r| {
            (
                r.offset,
                r.sequence,
                r.timestamp,
                r.key.clone(),
                r.value.clone(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            (101, 11, 1_001, Some("k1".into()), Some("b".into())),
            (103, 13, 1_003, Some("k3".into()), Some("d".into())),
        ]
    );
}

#[test]
fn sequences_that_wrap_stay_in_one_batch() {
    let records = [(Some("a"), Some("1")); 4];
    let (bytes, header) = stored(&producer(i32::MAX - 1), &records, 0);
    let cleaned = keep_deltas(&bytes, &header, &[2, 3]);
    let new = BatchHeader::parse(&cleaned).unwrap();
    assert_eq!(new.total_len(), cleaned.len());
    assert_eq!((new.base_sequence, new.last_sequence()), (0, 1));
    assert_eq!(new.last_sequence(), header.last_sequence());
}

#[test]
fn reencoding_restores_log_append_time_and_the_codec() {
    let spec = BatchSpec {
        compression: Compression::Snappy,
        ..BatchSpec::default()
    };
    let records = [(Some("a"), Some("1")), (Some("b"), Some("2"))];
    let (mut bytes, _) = stored(&spec, &records, 0);
    let (head, rest) = bytes.split_at_mut(BATCH_HEADER_LEN);
    set_log_append_time(head, rest, 999);
    let header = BatchHeader::parse(&bytes).unwrap();
    let cleaned = keep_deltas(&bytes, &header, &[1]);
    let new = BatchHeader::parse(&cleaned).unwrap();
    verify_crc(&new, &cleaned).unwrap();
    assert!(new.is_log_append_time());
    assert_eq!(new.max_timestamp, 999);
    assert_eq!(new.compression_codec(), Compression::Snappy as i16);
    assert_eq!(new.base_sequence, -1);
}

#[test]
fn the_map_stops_at_its_budget() {
    let mut map = OffsetMap {
        latest: HashMap::new(),
        last_batch_of_producer: HashMap::new(),
        complete_below: 100,
        budget_left: 2 * (MAP_ENTRY_OVERHEAD + 1),
    };
    assert!(map.insert(b"a", 1));
    assert!(map.insert(b"b", 2));
    assert!(map.insert(b"a", 3));
    assert!(!map.insert(b"c", 4));
    assert_eq!(map.latest.get(b"a".as_slice()), Some(&3));
}

/// A two-segment log in `dir`: `closed` then an active segment with `active`.
fn two_segments(dir: &Path, closed: &[Vec<u8>], active: &[Kv<'_>]) -> BTreeMap<i64, Segment> {
    let mut segments = BTreeMap::new();
    let mut offset = 0;
    let mut segment = Segment::create(dir, 0, 0).unwrap();
    for bytes in closed {
        let mut bytes = bytes.clone();
        assign_offset_and_epoch(&mut bytes, offset, 0);
        let header = BatchHeader::parse(&bytes).unwrap();
        segment
            .append(&[header], &mut [IoSlice::new(&bytes)], 4096)
            .unwrap();
        offset = header.next_offset();
    }
    segments.insert(0, segment);
    let mut segment = Segment::create(dir, offset, 0).unwrap();
    let (bytes, header) = stored(&BatchSpec::default(), active, offset);
    segment
        .append(&[header], &mut [IoSlice::new(&bytes)], 4096)
        .unwrap();
    segments.insert(offset, segment);
    segments
}

fn params(dir: &Path, high_watermark: i64, budget: usize) -> CleanParams {
    CleanParams {
        dir: dir.to_path_buf(),
        now_ms: 1_000_000,
        high_watermark,
        delete_retention_ms: 1_000,
        min_compaction_lag_ms: 0,
        index_interval_bytes: 4096,
        map_budget: budget,
        live_producers: HashSet::new(),
    }
}

fn run(segments: &mut BTreeMap<i64, Segment>, dir: &Path, budget: usize) -> CleanOutcome {
    let end = segments.values().map(Segment::next_offset).max().unwrap();
    let plan = begin(segments, params(dir, end, budget), true).unwrap();
    let prepared = plan.prepare().unwrap();
    complete(segments, prepared, 0, &dir.join("log-start-offset")).unwrap()
}

fn keyed(records: &[Kv<'_>]) -> Vec<u8> {
    build_keyed_batch(&BatchSpec::default(), records)
}

#[test]
fn past_a_spent_budget_nothing_is_removed() {
    let closed = [
        keyed(&[(Some("a"), Some("1"))]),
        keyed(&[(Some("b"), Some("1"))]),
    ];
    let active = [(Some("a"), Some("2")), (Some("b"), Some("2"))];
    let dir = tempfile::tempdir().unwrap();
    let mut segments = two_segments(dir.path(), &closed, &active);
    // Room for one key: the map covers offset 0 only and knows no later a.
    let outcome = run(&mut segments, dir.path(), MAP_ENTRY_OVERHEAD + 1);
    assert_eq!(outcome.records_removed, 0);
    let dir = tempfile::tempdir().unwrap();
    let mut segments = two_segments(dir.path(), &closed, &active);
    let outcome = run(&mut segments, dir.path(), OFFSET_MAP_BUDGET);
    assert_eq!(outcome.records_removed, 2);
    assert_eq!(outcome.segments_deleted, 1);
}

#[test]
fn an_unreadable_batch_is_kept_and_holds_back_tombstone_removal() {
    // A batch claiming gzip over plain records: its CRC is right, its
    // payload does not inflate.
    let mut unreadable = keyed(&[(Some("k"), Some("old"))]);
    unreadable[22] |= 1;
    let delta = BatchHeader::parse(&unreadable).unwrap().last_offset_delta;
    reseal(&mut unreadable, delta, None);
    let closed = [
        unreadable.clone(),
        keyed(&[(Some("k"), Some("v1"))]),
        keyed(&[(Some("k"), None)]),
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut segments = two_segments(dir.path(), &closed, &[(Some("x"), Some("x"))]);
    let outcome = run(&mut segments, dir.path(), OFFSET_MAP_BUDGET);
    // v1 goes; the expired tombstone stays, or "old" would come back.
    assert_eq!(outcome.records_removed, 1);
    let first = &segments[&0];
    let batch = first.find_batch(0).unwrap().unwrap();
    assert_eq!(
        first.read_bytes(0, unreadable.len()).unwrap()[21..],
        unreadable[21..]
    );
    let tombstone = first.next_batch(&batch).unwrap().unwrap();
    assert_eq!(tombstone.header.base_offset, 2);

    // Without the unreadable batch the tombstone expires normally.
    let dir = tempfile::tempdir().unwrap();
    let mut segments = two_segments(dir.path(), &closed[1..], &[(Some("x"), Some("x"))]);
    let outcome = run(&mut segments, dir.path(), OFFSET_MAP_BUDGET);
    assert_eq!(outcome.records_removed, 2);
}

#[test]
fn batches_straddling_read_and_copy_chunks_are_cleaned_whole() {
    // Unique keys first, so the replacement starts with a copied prefix
    // longer than a copy chunk; then keys written over, with values shorter
    // and longer than a read chunk.
    let mut closed = Vec::new();
    let mut keys = Vec::new();
    for i in 0..6 {
        let key = format!("u{i}");
        closed.push(keyed(&[(Some(&key), Some(&"p".repeat(40 + i * 7)))]));
        keys.push(key);
    }
    for i in 0..24 {
        let key = format!("k{}", i % 5);
        let value = "v".repeat(if i % 4 == 0 { 450 } else { 30 + i });
        closed.push(keyed(&[(Some(&key), Some(&value))]));
        keys.push(key);
    }
    assert!(closed.iter().take(6).map(Vec::len).sum::<usize>() > COPY_CHUNK as usize);
    assert!(closed.iter().any(|b| b.len() as u64 > READ_CHUNK));
    let dir = tempfile::tempdir().unwrap();
    let mut segments = two_segments(dir.path(), &closed, &[(Some("z"), Some("z"))]);
    let path = dir.path().join("00000000000000000000.log");
    let before = fs::read(&path).unwrap();
    let stored: Vec<Vec<u8>> = split_batches(&before)
        .unwrap()
        .into_iter()
        .map(<[u8]>::to_vec)
        .collect();
    assert_eq!(stored.len(), keys.len());

    let outcome = run(&mut segments, dir.path(), OFFSET_MAP_BUDGET);
    assert_eq!(outcome.segments_rewritten, 1);
    assert_eq!(outcome.records_removed, 19);
    // The replacement is the last batch of each key, byte for byte.
    let expected: Vec<u8> = stored
        .iter()
        .enumerate()
        .filter(|(i, _)| !keys[i + 1..].contains(&keys[*i]))
        .flat_map(|(_, batch)| batch.iter().copied())
        .collect();
    assert_eq!(fs::read(&path).unwrap(), expected);
    let segment = &segments[&0];
    assert_eq!(segment.size(), expected.len() as u64);
    assert_eq!(segment.next_offset(), 30);
    // Every kept batch is found through the new index.
    for batch in split_batches(&expected).unwrap() {
        let header = BatchHeader::parse(batch).unwrap();
        let found = segment.find_batch(header.base_offset).unwrap().unwrap();
        assert_eq!(found.header, header);
    }
}
