#![allow(clippy::unwrap_used)]

use super::*;

fn key(partition: i32) -> PartitionKey {
    PartitionKey {
        topic: TopicKey::Name("t".into()),
        partition,
    }
}

fn params(fetch_offset: i64) -> FetchParams {
    FetchParams {
        fetch_offset,
        last_fetched_epoch: 0,
        current_leader_epoch: 0,
        log_start_offset: 0,
        partition_max_bytes: 1024,
    }
}

fn quiet(high_watermark: i64) -> Answered {
    Answered {
        has_records: false,
        has_error: false,
        diverged: false,
        high_watermark,
        log_start_offset: 0,
    }
}

fn with_records(high_watermark: i64) -> Answered {
    Answered {
        has_records: true,
        ..quiet(high_watermark)
    }
}

fn ask(id: i32, epoch: i32, owner: Owner, uses_topic_ids: bool) -> SessionRequest {
    SessionRequest {
        id,
        epoch,
        owner,
        uses_topic_ids,
    }
}

const FOLLOWER: Owner = Some((2, 7));
const CONSUMER: Owner = None;

/// A session over partitions 0..n, created by a full fetch at offset 0
/// whose response told a high watermark of 10 for each.
fn session(cache: &mut SessionCache, n: i32, owner: Owner, now_ms: i64) -> i32 {
    assert_eq!(
        cache
            .context(ask(0, INITIAL_EPOCH, owner, false), &[], &[], now_ms)
            .unwrap(),
        FetchContext::NewSession
    );
    let answered = (0..n).map(|p| (key(p), params(0), quiet(10))).collect();
    cache.create(owner, false, answered, now_ms)
}

fn incremental(
    cache: &mut SessionCache,
    owner: Owner,
    id: i32,
    epoch: i32,
    requested: Vec<(PartitionKey, FetchParams)>,
    forgotten: &[PartitionKey],
) -> (i32, Vec<(PartitionKey, FetchParams)>) {
    match cache
        .context(ask(id, epoch, owner, false), &requested, forgotten, 0)
        .unwrap()
    {
        FetchContext::Incremental {
            id: got,
            epoch,
            partitions,
        } => {
            assert_eq!(got, id);
            (epoch, partitions)
        }
        other => panic!("not incremental: {other:?}"),
    }
}

#[test]
fn an_incremental_fetch_reads_every_partition_of_the_session_with_the_latest_offsets() {
    let mut cache = SessionCache::new(10, 7);
    let id = session(&mut cache, 3, FOLLOWER, 0);
    assert_ne!(id, 0);
    // Only partition 1 moved on; the others are fetched where they were.
    let (epoch, partitions) =
        incremental(&mut cache, FOLLOWER, id, 1, vec![(key(1), params(5))], &[]);
    assert_eq!(epoch, 2);
    assert_eq!(
        partitions,
        vec![
            (key(0), params(0)),
            (key(1), params(5)),
            (key(2), params(0))
        ]
    );
    // A new partition joins, one is forgotten.
    let (epoch, partitions) = incremental(
        &mut cache,
        FOLLOWER,
        id,
        2,
        vec![(key(3), params(0))],
        &[key(0)],
    );
    assert_eq!(epoch, 3);
    assert_eq!(
        partitions,
        vec![
            (key(1), params(5)),
            (key(2), params(0)),
            (key(3), params(0))
        ]
    );
    let stats = cache.stats();
    assert_eq!(
        (
            stats.sessions,
            stats.partitions,
            stats.evictions,
            stats.incremental_fetches
        ),
        (1, 3, 0, 2)
    );
}

#[test]
fn a_response_carries_only_partitions_with_news() {
    let mut cache = SessionCache::new(10, 7);
    let id = session(&mut cache, 4, FOLLOWER, 0);
    let (epoch, _) = incremental(&mut cache, FOLLOWER, id, 1, vec![], &[]);
    let keys: Vec<PartitionKey> = (0..4).map(key).collect();
    let answered = [
        (&keys[0], quiet(10)),
        (&keys[1], with_records(10)),
        (&keys[2], quiet(11)),
        (
            &keys[3],
            Answered {
                has_error: true,
                ..quiet(10)
            },
        ),
    ];
    assert_eq!(
        cache.answer_incremental(id, epoch, &answered).unwrap(),
        [false, true, true, true]
    );
    // Told once: the same high watermark is no news the next time, but a
    // partition whose error cleared is.
    let (epoch, partitions) = incremental(&mut cache, FOLLOWER, id, epoch, vec![], &[]);
    let order: Vec<i32> = partitions.iter().map(|(k, _)| k.partition).collect();
    assert_eq!(order, [0, 2, 3, 1], "partitions with records go last");
    let answered = [
        (&keys[0], quiet(10)),
        (&keys[2], quiet(11)),
        (&keys[3], quiet(10)),
        (&keys[1], quiet(10)),
    ];
    assert_eq!(
        cache.answer_incremental(id, epoch, &answered).unwrap(),
        [false, false, true, false]
    );
}

#[test]
fn a_wrong_epoch_or_an_unknown_session_is_refused() {
    let mut cache = SessionCache::new(10, 7);
    let id = session(&mut cache, 1, CONSUMER, 0);
    assert_eq!(
        cache.context(ask(id, 2, CONSUMER, false), &[], &[], 0),
        Err(ResponseError::InvalidFetchSessionEpoch)
    );
    assert_eq!(
        cache.context(ask(id + 1, 1, CONSUMER, false), &[], &[], 0),
        Err(ResponseError::FetchSessionIdNotFound)
    );
    assert_eq!(
        cache.context(ask(id, 1, CONSUMER, true), &[], &[], 0),
        Err(ResponseError::FetchSessionTopicIdError)
    );
    // Two requests at the same epoch: the second is refused, and the first
    // cannot be answered once a later one moved the session on.
    let (epoch, _) = incremental(&mut cache, CONSUMER, id, 1, vec![], &[]);
    assert_eq!(
        cache.context(ask(id, 1, CONSUMER, false), &[], &[], 0),
        Err(ResponseError::InvalidFetchSessionEpoch)
    );
    incremental(&mut cache, CONSUMER, id, epoch, vec![], &[]);
    assert_eq!(
        cache.answer_incremental(id, epoch, &[(&key(0), quiet(10))]),
        Err(ResponseError::InvalidFetchSessionEpoch)
    );
    // A full fetch naming the session closes it.
    assert_eq!(
        cache.context(ask(id, FINAL_EPOCH, CONSUMER, false), &[], &[], 0),
        Ok(FetchContext::Sessionless)
    );
    assert_eq!(cache.stats().sessions, 0);
}

#[test]
fn a_session_serves_only_the_fetcher_that_created_it() {
    let mut cache = SessionCache::new(10, 7);
    let id = session(&mut cache, 1, FOLLOWER, 0);
    // Another broker, the same broker at another incarnation, a consumer:
    // none of them may fetch in a follower's session.
    for stranger in [Some((3, 7)), Some((2, 8)), CONSUMER] {
        assert_eq!(
            cache.context(ask(id, 1, stranger, false), &[], &[], 0),
            Err(ResponseError::FetchSessionIdNotFound),
            "{stranger:?}"
        );
    }
    // Nor a follower in a consumer's.
    let consumer = session(&mut cache, 1, CONSUMER, 0);
    assert_eq!(
        cache.context(ask(consumer, 1, FOLLOWER, false), &[], &[], 0),
        Err(ResponseError::FetchSessionIdNotFound)
    );
    incremental(&mut cache, FOLLOWER, id, 1, vec![], &[]);
    incremental(&mut cache, CONSUMER, consumer, 1, vec![], &[]);
}

#[test]
fn a_full_cache_evicts_an_idle_session_or_a_consumer_for_a_follower() {
    let mut cache = SessionCache::new(2, 7);
    let consumer = session(&mut cache, 1, CONSUMER, 0);
    let follower = session(&mut cache, 1, FOLLOWER, 1_000);
    // Full, nobody idle long enough: a consumer gets no session.
    assert_eq!(session(&mut cache, 1, CONSUMER, 2_000), 0);
    // A follower takes the consumer's place.
    let second_follower = session(&mut cache, 1, FOLLOWER, 2_000);
    assert_ne!(second_follower, 0);
    assert_eq!(
        cache.context(ask(consumer, 1, CONSUMER, false), &[], &[], 2_000),
        Err(ResponseError::FetchSessionIdNotFound)
    );
    // Followers only: no room until one has been idle long enough.
    assert_eq!(session(&mut cache, 1, FOLLOWER, 3_000), 0);
    let late = session(&mut cache, 1, CONSUMER, 1_000 + EVICTION_IDLE_MS);
    assert_ne!(late, 0);
    assert_eq!(
        cache.context(ask(follower, 1, FOLLOWER, false), &[], &[], 0),
        Err(ResponseError::FetchSessionIdNotFound)
    );
    let stats = cache.stats();
    assert_eq!(
        (stats.sessions, stats.partitions, stats.evictions),
        (2, 2, 2)
    );
}

#[test]
fn epochs_wrap_to_one_and_ids_are_never_zero_or_reused() {
    assert_eq!(next_epoch(i32::MAX), 1);
    let mut cache = SessionCache::new(10, u32::MAX);
    let first = session(&mut cache, 1, CONSUMER, 0);
    let second = session(&mut cache, 1, CONSUMER, 0);
    assert!(first > 0 && second > 0 && first != second);
}
