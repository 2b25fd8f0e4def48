//! Deterministic Raft tests over the in-memory network of `common`:
//! election, replication, partitions, snapshots and restarts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;

use common::{BLOCK, Cluster, allocate};
use keel_raft_metadata::{MetadataImage, core::ProposeError};
use raft::eraftpb::MessageType;

#[test]
fn three_nodes_elect_one_leader_and_agree_on_it() {
    let mut cluster = Cluster::new(3, 1000);
    let leader = cluster.wait_for_leader(None);
    cluster.tick(20);
    for id in 1..=3 {
        assert_eq!(cluster.node(id).leader_id(), Some(leader));
    }
    let terms: BTreeSet<u64> = (1..=3).map(|id| cluster.node(id).status().term).collect();
    assert_eq!(terms.len(), 1);
}

#[test]
fn followers_that_campaign_at_once_elect_one_of_them_in_the_first_round() {
    let mut cluster = Cluster::new(3, 1000);
    let leader = cluster.wait_for_leader(None);
    let term = cluster.node(leader).status().term;
    cluster.crash(leader);
    let survivors: Vec<u64> = (1..=3).filter(|&id| id != leader).collect();
    // Both survivors' election timeouts run out before either hears of
    // the other's campaign: nothing is delivered until both campaigned.
    let campaigned = |cluster: &Cluster, id: u64| {
        cluster
            .queue
            .iter()
            .any(|m| m.from == id && m.get_msg_type() == MessageType::MsgRequestPreVote)
    };
    for _ in 0..100 {
        for &id in &survivors {
            if !campaigned(&cluster, id) {
                cluster.node(id).tick();
            }
        }
        cluster.handle_readies();
        if survivors.iter().all(|&id| campaigned(&cluster, id)) {
            break;
        }
    }
    assert!(survivors.iter().all(|&id| campaigned(&cluster, id)));
    cluster.settle();
    let elected = cluster.ready_leader();
    assert!(
        elected.is_some_and(|l| survivors.contains(&l)),
        "a split vote: no leader after the first round ({elected:?})"
    );
    assert_eq!(cluster.node(elected.unwrap()).status().term, term + 1);
}

#[test]
fn a_leader_that_hands_over_elects_the_lowest_caught_up_voter_in_one_round() {
    let mut cluster = Cluster::new(3, 1000);
    let mut leader = cluster.wait_for_leader(None);
    // Every leader in turn, so that each hands over to a voter whose id is
    // below or above its own.
    for _ in 0..3 {
        cluster.propose(leader, &allocate(0)).unwrap();
        cluster.settle();
        let term = cluster.node(leader).status().term;
        let target = cluster.node(leader).transfer_leadership().unwrap();
        let lowest_other = (1..=3).find(|&id| id != leader).unwrap();
        assert_eq!(target, lowest_other, "every voter had caught up");
        cluster.settle();
        assert_eq!(cluster.ready_leader(), Some(target));
        assert_eq!(cluster.node(target).status().term, term + 1);
        cluster.tick(20);
        assert_eq!(cluster.ready_leader(), Some(target));
        leader = target;
    }
}

#[test]
fn a_hand_over_succeeds_though_a_voter_with_a_lower_id_catches_up_meanwhile() {
    let mut cluster = Cluster::new(3, 1000);
    let mut leader = cluster.wait_for_leader(None);
    if leader == 3 {
        cluster.node(3).transfer_leadership().unwrap();
        cluster.settle();
        leader = cluster.ready_leader().unwrap();
    }
    // Every node ticks once in a term past 0, which gives it its priority.
    cluster.tick(1);
    // The leader and the other voter both have lower ids than the target,
    // node 3, which alone has caught up when the hand-over begins.
    let other = if leader == 1 { 2 } else { 1 };
    cluster.cut.insert((leader, other));
    cluster.cut.insert((other, leader));
    for i in 0..5 {
        cluster.propose(leader, &allocate(i * BLOCK)).unwrap();
    }
    cluster.settle();
    let term = cluster.node(leader).status().term;
    assert_eq!(cluster.node(leader).transfer_leadership(), Some(3));
    cluster.handle_readies();
    let (held, rest): (Vec<_>, Vec<_>) = cluster
        .queue
        .drain(..)
        .partition(|m| m.get_msg_type() == MessageType::MsgTimeoutNow);
    assert_eq!(held.len(), 1, "the target was told to campaign at once");
    cluster.queue.extend(rest);
    // The other voter catches up before the target campaigns.
    cluster.heal();
    let last = cluster.node(leader).status().commit_index;
    for _ in 0..10 {
        cluster.node(leader).tick();
        cluster.settle();
    }
    assert!(cluster.node(other).status().commit_index >= last);
    cluster.queue.extend(held);
    cluster.settle();
    assert_eq!(cluster.ready_leader(), Some(3));
    assert_eq!(cluster.node(3).status().term, term + 1);
}

#[test]
fn committed_records_are_applied_on_every_node_in_the_same_order() {
    let mut cluster = Cluster::new(3, 1000);
    let leader = cluster.wait_for_leader(None);
    for i in 0..100 {
        cluster.propose(leader, &allocate(i * BLOCK)).unwrap();
        if i % 10 == 0 {
            cluster.settle();
        }
    }
    cluster.tick(5);
    for id in 1..=3 {
        assert_eq!(
            cluster.image(id).next_producer_id(),
            100 * BLOCK,
            "node {id}"
        );
    }
    cluster.assert_applied_once_in_order();
}

#[test]
fn a_follower_does_not_take_proposals() {
    let mut cluster = Cluster::new(3, 1000);
    let leader = cluster.wait_for_leader(None);
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    assert_eq!(
        cluster.propose(follower, &allocate(0)),
        Err(ProposeError::NotLeader {
            leader_id: Some(leader)
        })
    );
}

#[test]
fn a_partitioned_minority_cannot_commit() {
    let mut cluster = Cluster::new(3, 1000);
    let old_leader = cluster.wait_for_leader(None);
    cluster.propose(old_leader, &allocate(0)).unwrap();
    cluster.tick(3);
    cluster.isolate(old_leader);
    // The isolated leader still accepts a proposal but can never commit it.
    cluster.propose(old_leader, &allocate(BLOCK)).unwrap();
    cluster.tick(5);
    assert_eq!(cluster.image(old_leader).next_producer_id(), BLOCK);

    let new_leader = cluster.wait_for_leader(Some(old_leader));
    cluster.propose(new_leader, &allocate(BLOCK)).unwrap();
    cluster.propose(new_leader, &allocate(2 * BLOCK)).unwrap();
    cluster.tick(5);
    // check_quorum made the isolated node step down.
    assert!(!cluster.node(old_leader).is_leader());
    assert_eq!(cluster.image(old_leader).next_producer_id(), BLOCK);

    cluster.heal();
    cluster.tick(30);
    for id in 1..=3 {
        assert_eq!(cluster.image(id).next_producer_id(), 3 * BLOCK, "node {id}");
    }
    cluster.assert_applied_once_in_order();
}

#[test]
fn proposals_in_flight_during_a_leader_change_commit_everywhere_or_nowhere() {
    let mut cluster = Cluster::new(3, 1000);
    let old_leader = cluster.wait_for_leader(None);
    for i in 0..5 {
        cluster.propose(old_leader, &allocate(i * BLOCK)).unwrap();
    }
    // Deliver only part of the traffic, then cut the leader off.
    cluster.settle();
    for i in 5..10 {
        cluster.propose(old_leader, &allocate(i * BLOCK)).unwrap();
    }
    cluster.isolate(old_leader);
    cluster.tick(2);
    let new_leader = cluster.wait_for_leader(Some(old_leader));
    let next = cluster.image(new_leader).next_producer_id();
    cluster.propose(new_leader, &allocate(next)).unwrap();
    cluster.heal();
    cluster.tick(40);
    let images: Vec<MetadataImage> = (1..=3).map(|id| cluster.image(id)).collect();
    assert!(images.windows(2).all(|w| w[0] == w[1]), "nodes disagree");
    assert_eq!(images[0].next_producer_id(), next + BLOCK);
    cluster.assert_applied_once_in_order();
}

#[test]
fn a_lagging_node_catches_up_by_snapshot() {
    let mut cluster = Cluster::new(3, 20);
    let leader = cluster.wait_for_leader(None);
    let lagging = (1..=3).find(|id| *id != leader).unwrap();
    cluster.crash(lagging);
    for i in 0..100 {
        cluster.propose(leader, &allocate(i * BLOCK)).unwrap();
        cluster.settle();
    }
    let status = cluster.node(leader).status();
    assert!(status.snapshot_index >= 80, "leader compacted: {status:?}");

    cluster.start(lagging);
    let mut installed = false;
    for _ in 0..50 {
        cluster.tick(1);
        if cluster.node(lagging).status().snapshot_index > 0 {
            installed = true;
            break;
        }
    }
    assert!(installed, "the lagging node never installed a snapshot");
    cluster.tick(10);
    assert_eq!(cluster.image(lagging).next_producer_id(), 100 * BLOCK);
    assert_eq!(cluster.image(lagging), cluster.image(leader));
}

#[test]
fn restarting_every_node_from_disk_applies_nothing_twice_and_skips_nothing() {
    let mut cluster = Cluster::new(3, 25);
    let leader = cluster.wait_for_leader(None);
    for i in 0..60 {
        cluster.propose(leader, &allocate(i * BLOCK)).unwrap();
        cluster.settle();
    }
    cluster.tick(3);
    for id in 1..=3 {
        cluster.crash(id);
    }
    for id in 1..=3 {
        cluster.start(id);
    }
    let leader = cluster.wait_for_leader(None);
    for i in 60..80 {
        cluster.propose(leader, &allocate(i * BLOCK)).unwrap();
        cluster.settle();
    }
    cluster.tick(5);
    for id in 1..=3 {
        assert_eq!(
            cluster.image(id).next_producer_id(),
            80 * BLOCK,
            "node {id}"
        );
    }
    // Each restarted node re-applied only what followed its snapshot, every
    // record once and in order: AllocateProducerIds rejects a repeat or a gap.
    cluster.assert_applied_once_in_order();
    assert!(
        cluster.applied[&1][1]
            .first()
            .is_some_and(|(index, _)| *index > 1)
    );
}

#[test]
fn a_single_node_cluster_leads_at_once() {
    let mut cluster = Cluster::new(1, 1000);
    cluster.node(1).campaign_if_sole_voter().unwrap();
    cluster.settle();
    assert_eq!(cluster.ready_leader(), Some(1));
    cluster.propose(1, &allocate(0)).unwrap();
    cluster.settle();
    assert_eq!(cluster.image(1).next_producer_id(), BLOCK);
}

#[test]
fn a_node_restarted_alone_rebuilds_everything_it_had_applied() {
    let mut cluster = Cluster::new(3, 1000);
    let leader = cluster.wait_for_leader(None);
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    for i in 0..30 {
        cluster.propose(leader, &allocate(i * BLOCK)).unwrap();
        cluster.settle();
    }
    cluster.tick(3);
    let before = cluster.image(follower);
    assert_eq!(before.next_producer_id(), 30 * BLOCK);
    for id in 1..=3 {
        cluster.crash(id);
    }
    // No quorum: the follower learns nothing new, yet its state machine
    // must come back to where it was, from its own disk.
    cluster.start(follower);
    cluster.tick(3);
    assert!(cluster.node(follower).status().recovered);
    assert_eq!(cluster.image(follower), before);
}
