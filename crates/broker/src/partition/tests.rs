#![allow(clippy::unwrap_used)]

use std::time::Duration;

use keel_log::{LogConfig, testing::batch};
use keel_raft_metadata::PartitionInfo;
use tokio::time::Instant;

use super::*;
use crate::{error::PartitionError, replication::succession::Succession};

fn info(leader: i32, leader_epoch: i32, isr: &[i32]) -> PartitionInfo {
    PartitionInfo {
        partition: 0,
        replicas: vec![1, 2],
        leader,
        leader_epoch,
        isr: isr.to_vec(),
        partition_epoch: leader_epoch,
        elr: Vec::new(),
        predecessor_lease_ms: 0,
        adding_replicas: vec![],
        removing_replicas: vec![],
        previous_leader: None,
    }
}

/// Broker 1's replica of a partition on brokers 1 and 2.
fn replica(dir: &std::path::Path) -> Partition {
    let (log, _) = PartitionLog::open(dir, LogConfig::default(), 0).unwrap();
    Partition::new("t".into(), Uuid::nil(), 0, log, None, Arc::default())
}

#[test]
fn an_append_routed_by_an_older_leader_epoch_never_lands() {
    let dir = tempfile::tempdir().unwrap();
    let partition = replica(dir.path());
    let became = partition.apply_assignment(1, &info(1, 0, &[1, 2]), 1, Succession::default(), 0);
    assert_eq!(became.unwrap(), Transition::BecameLeader);
    partition
        .append_as_leader(&batch(1, 0), Some(0), 0)
        .unwrap();

    // Leadership moves to broker 2 at epoch 1 while a produce routed at
    // epoch 0 is on its way.
    let became = partition.apply_assignment(1, &info(2, 1, &[1, 2]), 1, Succession::default(), 0);
    assert_eq!(became.unwrap(), Transition::BecameFollower { leader: 2 });
    for expected in [Some(0), Some(1), None] {
        assert!(matches!(
            partition.append_as_leader(&batch(1, 0), expected, 0),
            Err(PartitionError::NotLeader)
        ));
    }
    assert_eq!(partition.log().log_end_offset(), 1, "nothing was appended");
}

#[test]
fn a_follower_write_from_an_earlier_leadership_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let partition = replica(dir.path());
    partition
        .apply_assignment(1, &info(2, 3, &[1, 2]), 1, Succession::default(), 0)
        .unwrap();
    let leader_dir = tempfile::tempdir().unwrap();
    let (mut leader_log, _) =
        PartitionLog::open(leader_dir.path(), LogConfig::default(), 0).unwrap();
    leader_log.append_as_leader(&batch(2, 0), 3, 0).unwrap();
    let slice = leader_log
        .read(0, 1 << 20, i64::MAX, true)
        .unwrap()
        .unwrap();
    let records = slice.read().unwrap();

    assert!(matches!(
        partition.append_as_follower(2, 0, &records, 2, 0),
        Err(PartitionError::NotFollowing(2))
    ));
    // An answer to a fetch from another offset than the log end would
    // leave a hole or overlap.
    assert!(partition.append_as_follower(3, 5, &records, 2, 0).is_err());
    let appended = partition.append_as_follower(3, 0, &records, 2, 0).unwrap();
    assert_eq!(appended.map(|a| a.log_end_offset), Some(2));
    assert_eq!(
        partition.high_watermark(),
        2,
        "the leader's, as far as the log reaches"
    );
    partition
        .apply_assignment(1, &info(2, 4, &[1, 2]), 1, Succession::default(), 0)
        .unwrap();
    assert!(matches!(
        partition.truncate_on_divergence(3, 3, 0, 0),
        Err(PartitionError::NotFollowing(3))
    ));
    assert_eq!(partition.log().log_end_offset(), 2);
}

#[test]
fn a_new_leader_answers_for_its_epoch_before_its_first_append() {
    let dir = tempfile::tempdir().unwrap();
    let partition = replica(dir.path());
    partition
        .apply_assignment(1, &info(2, 3, &[1, 2]), 1, Succession::default(), 0)
        .unwrap();
    partition
        .apply_assignment(1, &info(1, 4, &[1, 2]), 1, Succession::default(), 0)
        .unwrap();
    assert_eq!(partition.log().end_offset_for_epoch(4), (4, 0));
}

#[tokio::test]
async fn acks_all_waits_for_the_follower_and_fails_when_leadership_moves() {
    let dir = tempfile::tempdir().unwrap();
    let partition = Arc::new(replica(dir.path()));
    partition
        .apply_assignment(1, &info(1, 0, &[1, 2]), 2, Succession::default(), 0)
        .unwrap();
    let outcome = partition
        .append_as_leader(&batch(3, 0), Some(0), 0)
        .unwrap();
    assert_eq!(partition.high_watermark(), 0, "follower 2 has not fetched");
    let deadline = Instant::now() + Duration::from_secs(5);

    partition
        .record_follower_fetch(2, 0, 3, Some(9), 1)
        .unwrap();
    assert_eq!(partition.high_watermark(), 3);
    partition
        .await_high_watermark(0, outcome.last_offset + 1, deadline)
        .await
        .unwrap();

    let outcome = partition
        .append_as_leader(&batch(1, 0), Some(0), 0)
        .unwrap();
    let waiting = {
        let partition = Arc::clone(&partition);
        tokio::spawn(async move {
            partition
                .await_high_watermark(0, outcome.last_offset + 1, deadline)
                .await
        })
    };
    tokio::task::yield_now().await;
    partition
        .apply_assignment(1, &info(2, 1, &[1, 2]), 2, Succession::default(), 0)
        .unwrap();
    assert!(matches!(
        waiting.await.unwrap(),
        Err(PartitionError::NotLeader)
    ));
}

#[tokio::test]
async fn acks_all_past_its_timeout_says_whether_the_isr_fell_below_the_minimum() {
    let dir = tempfile::tempdir().unwrap();
    let partition = replica(dir.path());
    partition
        .apply_assignment(1, &info(1, 0, &[1, 2]), 2, Succession::default(), 0)
        .unwrap();
    let soon = || Instant::now() + Duration::from_millis(20);
    partition
        .append_as_leader(&batch(1, 0), Some(0), 0)
        .unwrap();
    assert!(matches!(
        partition.await_high_watermark(0, 1, soon()).await,
        Err(PartitionError::RequestTimedOut)
    ));
    // The controller committed a shrink to the leader alone.
    let mut shrunk = info(1, 0, &[1]);
    shrunk.partition_epoch = 1;
    partition
        .apply_assignment(1, &shrunk, 2, Succession::default(), 0)
        .unwrap();
    assert!(matches!(
        partition.await_high_watermark(0, 1, soon()).await,
        Err(PartitionError::NotEnoughReplicasAfterAppend {
            isr: 1,
            required: 2
        })
    ));
    assert!(matches!(
        partition.check_min_isr(),
        Err(PartitionError::NotEnoughReplicas {
            isr: 1,
            required: 2
        })
    ));
}

#[tokio::test]
async fn a_new_leader_takes_writes_only_once_the_old_one_follows_it() {
    let dir = tempfile::tempdir().unwrap();
    let partition = replica(dir.path());
    // Broker 2 led at epoch 1 and is alive: broker 1 takes over at epoch 2
    // and must hear from it first.
    partition
        .apply_assignment(1, &info(2, 1, &[1, 2]), 1, Succession::default(), 0)
        .unwrap();
    let succession = Succession::new([2], 1_000, 500, 0);
    partition
        .apply_assignment(1, &info(1, 2, &[1, 2]), 1, succession, 1_000)
        .unwrap();
    assert!(matches!(
        partition.append_as_leader(&batch(1, 0), Some(2), 1_100),
        Err(PartitionError::AwaitingSuccession(400))
    ));

    // A fetch naming the old epoch (parameters a fetch session kept, say)
    // is refused and ends nothing.
    assert!(matches!(
        partition.record_follower_fetch(2, 1, 0, None, 1_150),
        Err(PartitionError::FencedLeaderEpoch { .. })
    ));
    assert!(matches!(
        partition.append_as_leader(&batch(1, 0), Some(2), 1_150),
        Err(PartitionError::AwaitingSuccession(350))
    ));

    // A produce parked meanwhile is let through by the old leader's fetch
    // in the new epoch.
    fn clock() -> i64 {
        1_200
    }
    let parked = partition.await_succession(Instant::now() + Duration::from_secs(30), clock);
    let fetched = async {
        tokio::task::yield_now().await;
        partition
            .record_follower_fetch(2, 2, 0, None, 1_200)
            .unwrap();
    };
    tokio::time::timeout(Duration::from_secs(5), async {
        tokio::join!(parked, fetched)
    })
    .await
    .expect("the fetch ended the wait");
    let appended = partition.append_as_leader(&batch(1, 0), Some(2), 1_200);
    assert_eq!(appended.unwrap().base_offset, 0);
}

#[test]
fn a_new_leader_takes_writes_after_the_longest_lease_even_unheard() {
    let dir = tempfile::tempdir().unwrap();
    let partition = replica(dir.path());
    let succession = Succession::new([2], 1_000, 500, 0);
    partition
        .apply_assignment(1, &info(1, 2, &[1, 2]), 1, succession, 1_000)
        .unwrap();
    assert!(
        partition
            .append_as_leader(&batch(1, 0), Some(2), 1_499)
            .is_err()
    );
    assert!(
        partition
            .append_as_leader(&batch(1, 0), Some(2), 1_500)
            .is_ok()
    );
}

#[test]
fn epochs_are_fenced_in_both_directions() {
    assert!(check_leader_epoch(-1, 5).is_ok());
    assert!(check_leader_epoch(5, 5).is_ok());
    assert!(matches!(
        check_leader_epoch(4, 5),
        Err(PartitionError::FencedLeaderEpoch { .. })
    ));
    assert!(matches!(
        check_leader_epoch(6, 5),
        Err(PartitionError::UnknownLeaderEpoch { .. })
    ));
}

#[test]
fn every_change_a_background_walk_looks_for_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = PartitionLog::open(dir.path(), LogConfig::default(), 0).unwrap();
    let activity = Arc::new(Activity::default());
    let partition = Partition::new("t".into(), Uuid::nil(), 0, log, None, Arc::clone(&activity));
    let mut seen = activity.count();
    let mut counted = |what: &str| {
        let now = activity.count();
        assert!(now > seen, "{what} was not counted");
        seen = now;
    };

    partition
        .apply_assignment(1, &info(1, 0, &[1, 2]), 1, Succession::default(), 0)
        .unwrap();
    counted("becoming leader");
    drop(partition.begin_produce(0, || 0));
    counted("a produce append beginning");
    partition
        .append_as_leader(&batch(2, 0), Some(0), 0)
        .unwrap();
    counted("an append as leader");
    partition.record_follower_fetch(2, 0, 2, None, 1).unwrap();
    counted("the high watermark moving");
    partition
        .apply_assignment(1, &info(1, 0, &[1]), 1, Succession::default(), 1)
        .unwrap();
    counted("an ISR change committed");

    partition
        .apply_assignment(1, &info(2, 1, &[1, 2]), 1, Succession::default(), 2)
        .unwrap();
    counted("becoming a follower");
    // The new leader's log: the same two records, then one of its own.
    let leader_dir = tempfile::tempdir().unwrap();
    let (mut leader_log, _) =
        PartitionLog::open(leader_dir.path(), LogConfig::default(), 0).unwrap();
    leader_log.append_as_leader(&batch(2, 0), 0, 0).unwrap();
    leader_log.append_as_leader(&batch(1, 0), 1, 0).unwrap();
    let slice = leader_log
        .read(2, 1 << 20, i64::MAX, true)
        .unwrap()
        .unwrap();
    partition
        .append_as_follower(1, 2, &slice.read().unwrap(), 2, 3)
        .unwrap();
    counted("an append as follower");
    partition.follow_high_watermark(3);
    counted("the leader's high watermark reaching the follower");
    partition.truncate_on_divergence(1, 0, 2, 4).unwrap();
    counted("a truncation");
}

#[test]
fn a_read_that_may_not_wait_declines_while_the_log_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let partition = replica(dir.path());
    partition
        .apply_assignment(1, &info(1, 0, &[1]), 1, Succession::default(), 0)
        .unwrap();
    partition
        .append_as_leader(&batch(3, 0), Some(0), 0)
        .unwrap();
    let read = |mode| partition.read(0, -1, 1 << 20, ReadLimit::LogEnd, true, mode);

    // An append (or a flush) holding the lock may be waiting on the disk.
    // The holder lets go when told, or after a while should a read wait
    // for it after all.
    let (done, told) = std::sync::mpsc::channel::<()>();
    let (locked, holding) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|scope| {
        let partition = &partition;
        scope.spawn(move || {
            let _held = partition.log();
            locked.send(()).unwrap();
            let _ = told.recv_timeout(Duration::from_secs(2));
        });
        holding.recv().unwrap();
        let declined = matches!(read(ReadMode::CachedOnly), Err(LogError::WouldWait));
        done.send(()).unwrap();
        assert!(declined, "a read that may not wait waited for the lock");
    });

    let Ok((Fetched::Records(Some(cached)), _)) = read(ReadMode::CachedOnly) else {
        panic!("the lock is free and the records are cached");
    };
    let Ok((Fetched::Records(Some(waited)), _)) = read(ReadMode::MayWait) else {
        panic!("records to read");
    };
    assert_eq!(cached.read_cached().unwrap(), Some(waited.read().unwrap()));
}
