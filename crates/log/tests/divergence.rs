//! Leader changes and follower truncation on real logs, in a simulated
//! cluster (module `cluster`): the scenarios of KIP-101 and KIP-279, a
//! follower behind the leader's log start, followers without epochs, and
//! logs that already agree. Each ends with every replica holding the
//! leader's log byte for byte and every acknowledged batch in place; the
//! cluster checks as it goes that no truncation reached below the
//! committed high watermark.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster;
mod common;

use cluster::{Cluster, Fetched};
use keel_log::{Truncation, batch::BatchHeader, testing::epochs};

const A: usize = 0;
const B: usize = 1;
const C: usize = 2;

/// KIP-101, scenario 1: the follower has m2, and the leader counted it
/// committed, but the follower had not heard so when it restarted.
/// Truncating to its own high watermark, it would drop m2, then lead
/// without it once the old leader died. Asking by epoch it keeps m2.
#[test]
fn kip101_a_restarted_follower_keeps_what_its_high_watermark_missed() {
    let mut c = Cluster::new(2);
    c.elect(A);
    c.produce(1);
    assert_eq!(c.fetch(B), Fetched::Records);
    c.produce(1);
    assert_eq!(c.fetch(B), Fetched::Records);
    c.fetch_response_lost(B);
    assert_eq!(c.committed(), 4, "both batches acknowledged");
    assert_eq!(c.high_watermark(B), 2, "B never heard that the second was");

    c.crash(B);
    c.restart(B);
    c.catch_up(B);
    assert_eq!(c.log(B).log_end_offset(), 4);
    c.crash(A);
    c.elect(B);
    c.produce(2);
    c.restart(A);
    c.catch_up_all();
    c.assert_converged();
    assert_eq!((c.replica(A).cuts, c.replica(B).cuts), (0, 0));
}

/// KIP-101, scenario 2: both replicas go down at once; the follower, which
/// lacked m2, comes back first and leads, writing m3 at m2's offset. The
/// old leader returns with m2 there: by high watermark alone the two logs
/// would keep different records at one offset. By epoch, m2 goes.
#[test]
fn kip101_replicas_diverging_after_both_restart() {
    let mut c = Cluster::new(2);
    c.elect(A);
    c.produce(1);
    c.catch_up(B);
    c.produce(1);
    c.crash(A);
    c.crash(B);

    c.restart(B);
    c.elect(B);
    c.produce(1);
    c.restart(A);
    assert_eq!(c.log(A).log_end_offset(), c.log(B).log_end_offset());
    c.catch_up(A);
    assert_eq!(
        c.replica(A).truncations,
        [Truncation {
            offset: 2,
            complete: true
        }]
    );
    assert_eq!(c.replica(A).cuts, 1);
    c.produce(1);
    c.catch_up_all();
    c.assert_converged();
}

/// KIP-279: two leader changes in a row. A dies and B leads epoch 1, but
/// is replaced by C (epoch 2) before appending anything. B's cache says
/// epoch 1 starts at its log end, which no one else ever saw: truncating
/// there cuts no record, yet the epoch must go or B would ask about it
/// forever. (A restart would hide this: opening a log drops epochs that
/// start at its end.)
#[test]
fn kip279_two_leader_changes_in_a_row() {
    let mut c = Cluster::new(3);
    c.elect(A);
    c.produce(3);
    c.catch_up_all();
    c.crash(A);
    c.elect(B);
    c.elect(C);
    c.produce(2);

    assert_eq!(c.log(B).latest_epoch(), Some(1));
    c.catch_up(B);
    assert_eq!(
        c.replica(B).truncations,
        [Truncation {
            offset: 6,
            complete: true
        }]
    );
    assert_eq!(c.replica(B).cuts, 0);
    c.restart(A);
    c.produce(1);
    c.catch_up_all();
    c.assert_converged();
    for id in [A, B, C] {
        assert_eq!(c.log(id).epoch_entries(), epochs(&[(0, 0), (2, 6)]));
    }
}

/// KIP-279: B leads epoch 2 without ever having seen C's epoch 1, then C
/// leads again. Asked about epoch 2, C answers with epoch 1, which B does
/// not know: B cuts back to the end of its own older epoch and asks
/// again, and only the second answer settles where the logs part.
#[test]
fn kip279_a_replica_that_led_an_epoch_the_new_leader_never_saw() {
    let mut c = Cluster::new(3);
    c.elect(A);
    c.produce(3);
    c.catch_up_all();
    c.produce(1);
    c.catch_up(B);
    c.crash(A);
    c.set_isr(&[B, C]);
    // C lacks A's last batch [6, 8) and writes its own there; B never
    // fetches from it.
    c.elect(C);
    c.produce(2);
    c.crash(C);
    c.elect(B);
    c.produce(1);
    c.crash(B);
    c.restart(C);
    c.elect(C);
    c.produce(1);

    c.restart(B);
    c.catch_up(B);
    assert_eq!(
        c.replica(B).truncations,
        [
            Truncation {
                offset: 8,
                complete: false
            },
            Truncation {
                offset: 6,
                complete: true
            },
        ]
    );
    c.restart(A);
    c.catch_up(A);
    assert_eq!(c.log(A).log_end_offset(), c.log(C).log_end_offset());
    c.set_isr(&[A, B, C]);
    c.produce(1);
    c.catch_up_all();
    c.assert_converged();
    for id in [A, B, C] {
        assert_eq!(
            c.log(id).epoch_entries(),
            epochs(&[(0, 0), (1, 6), (3, 10)])
        );
    }
}

/// KIP-279: C led, wrote a batch nobody fetched, and stayed down while
/// three other leaderships came and went. Its tail is cut at the end of
/// its epoch on the leader, and it copies the epochs it missed.
#[test]
fn kip279_a_replica_down_for_several_epochs() {
    let mut c = Cluster::new(3);
    c.elect(C);
    c.produce(2);
    c.catch_up_all();
    c.produce(1);
    c.crash(C);
    c.set_isr(&[A, B]);
    for leader in [A, B, A] {
        c.elect(leader);
        c.produce(2);
        c.catch_up_all();
    }

    c.restart(C);
    c.catch_up(C);
    assert_eq!(
        c.replica(C).truncations,
        [Truncation {
            offset: 4,
            complete: true
        }]
    );
    c.set_isr(&[A, B, C]);
    c.produce(1);
    c.catch_up_all();
    c.assert_converged();
    assert_eq!(
        c.log(C).epoch_entries(),
        epochs(&[(0, 0), (1, 4), (2, 8), (3, 12)])
    );
}

/// DeleteRecords moved the leader's log start, inside a batch, past a
/// stopped follower's log end: the follower starts over at the leader's
/// log start (then at the batch holding it) and copies from there.
#[test]
fn a_follower_behind_the_leaders_log_start_starts_over_there() {
    let mut c = Cluster::new(2);
    c.elect(A);
    c.produce(2);
    c.catch_up(B);
    c.crash(B);
    c.set_isr(&[A]);
    c.produce(4);
    c.delete_records(7);

    c.restart(B);
    c.catch_up(B);
    assert_eq!(c.log(B).log_start_offset(), 7);
    let first = &common::read_batches(c.log(B), 7)[0];
    assert_eq!(BatchHeader::parse(first).unwrap().base_offset, 6);
    c.set_isr(&[A, B]);
    c.produce(1);
    c.catch_up_all();
    c.assert_converged();
    assert_eq!(c.log(B).epoch_entries(), c.log(A).epoch_entries());
}

/// A replica added later has an empty log and no epochs: it sends no
/// last fetched epoch, so there is nothing to check, and it copies all.
#[test]
fn a_new_replica_without_epochs_copies_everything() {
    let mut c = Cluster::new(3);
    c.set_isr(&[A, B]);
    c.elect(A);
    c.produce(3);
    c.catch_up(B);
    c.elect(B);
    c.produce(2);
    c.catch_up(A);

    c.catch_up(C);
    assert_eq!(c.replica(C).cuts, 0);
    c.set_isr(&[A, B, C]);
    c.produce(1);
    c.catch_up_all();
    c.assert_converged();
    assert_eq!(c.log(C).epoch_entries(), c.log(B).epoch_entries());
}

/// A replica that lost its epoch checkpoint cannot ask where it diverges;
/// it truncates to its high watermark, as Kafka does, which drops the
/// batch it wrote as a short-lived leader.
#[test]
fn a_follower_that_lost_its_epochs_truncates_to_its_high_watermark() {
    let mut c = Cluster::new(2);
    c.elect(A);
    c.produce(2);
    c.catch_up_all();
    c.elect(B);
    c.produce(1);
    c.crash(B);
    c.elect(A);
    c.produce(2);
    c.lose_epoch_checkpoint(B);

    c.restart(B);
    assert_eq!(c.log(B).latest_epoch(), None);
    c.catch_up(B);
    assert_eq!(c.replica(B).cuts, 1);
    assert!(c.replica(B).truncations.is_empty());
    c.produce(1);
    c.catch_up_all();
    c.assert_converged();
}

/// Leadership moves around replicas whose logs agree: nobody truncates.
#[test]
fn identical_logs_are_not_truncated() {
    let mut c = Cluster::new(3);
    c.elect(A);
    c.produce(3);
    c.catch_up_all();
    for leader in [B, C, A] {
        c.elect(leader);
        c.catch_up_all();
        c.produce(2);
        c.catch_up_all();
    }
    c.assert_converged();
    for id in [A, B, C] {
        assert_eq!(c.replica(id).cuts, 0);
        assert!(c.replica(id).truncations.is_empty());
        assert_eq!(
            c.log(id).epoch_entries(),
            epochs(&[(0, 0), (1, 6), (2, 10), (3, 14)])
        );
    }
}
