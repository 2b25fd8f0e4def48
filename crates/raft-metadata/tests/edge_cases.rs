//! Deterministic tests of the Raft edge cases the broker depends on: the
//! membership a runtime snapshot carries, conf changes raft-rs refuses,
//! when a leader counts as the controller, and read barriers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{BLOCK, Cluster, allocate};
use keel_raft_metadata::core::{CoreEvent, ProposeError};
use raft::eraftpb::{ConfChangeSingle, ConfChangeType, ConfChangeV2};

#[test]
fn a_snapshot_installed_at_runtime_names_the_members_it_carries() {
    let mut cluster = Cluster::new(3, 20);
    let leader = cluster.wait_for_leader(None);
    let lagging = (1..=3).find(|id| *id != leader).unwrap();
    cluster.crash(lagging);
    // A learner joins while the lagging node is away; the entry that added
    // it is compacted into a snapshot before the lagging node returns.
    cluster
        .node(leader)
        .propose_learner(4, "node-4:9093")
        .unwrap();
    cluster.settle();
    for i in 0..60 {
        cluster.propose(leader, &allocate(i * BLOCK)).unwrap();
        cluster.settle();
    }
    assert!(cluster.node(leader).status().snapshot_index > 20);

    cluster.start(lagging);
    cluster.events.remove(&lagging);
    cluster.tick(20);
    let events = &cluster.events[&lagging];
    let installed = events
        .iter()
        .position(|e| matches!(e, CoreEvent::SnapshotInstalled { .. }))
        .expect("the lagging node installed a snapshot");
    let peers = events[installed..]
        .iter()
        .find_map(|e| match e {
            CoreEvent::MembershipChanged { peers, .. } => Some(peers.clone()),
            _ => None,
        })
        .expect("the snapshot's membership was reported");
    assert_eq!(
        peers.get(&4).map(String::as_str),
        Some("node-4:9093"),
        "{peers:?}"
    );
    assert_eq!(cluster.node(lagging).status().learners, vec![4]);
}

#[test]
fn a_conf_change_raft_refuses_is_reported_and_every_node_keeps_going() {
    let mut cluster = Cluster::new(3, 1000);
    let leader = cluster.wait_for_leader(None);
    // Removing every voter passes raft-rs's proposal checks and fails when
    // applied, on every node alike.
    let mut change = ConfChangeV2::default();
    for id in 1..=3 {
        let mut single = ConfChangeSingle::default();
        single.set_change_type(ConfChangeType::RemoveNode);
        single.node_id = id;
        change.mut_changes().push(single);
    }
    cluster
        .node(leader)
        .propose_conf_change(change)
        .expect("raft-rs takes the proposal");
    cluster.tick(5);
    for id in 1..=3 {
        assert!(
            cluster.events[&id]
                .iter()
                .any(|e| matches!(e, CoreEvent::ConfChangeRejected { .. })),
            "node {id} did not report the refused change"
        );
        assert_eq!(cluster.node(id).status().voters, vec![1, 2, 3]);
    }
    // Every node is still running and the cluster still commits.
    let leader = cluster.wait_for_leader(None);
    cluster.propose(leader, &allocate(0)).unwrap();
    cluster.tick(3);
    for id in 1..=3 {
        assert_eq!(cluster.image(id).next_producer_id(), BLOCK, "node {id}");
    }
}

#[test]
fn a_join_that_reuses_a_voters_id_is_refused() {
    let mut cluster = Cluster::new(3, 1000);
    let leader = cluster.wait_for_leader(None);
    let voter = (1..=3).find(|id| *id != leader).unwrap();
    assert!(matches!(
        cluster.node(leader).propose_learner(voter, "elsewhere:1"),
        Err(ProposeError::Dropped(_))
    ));
    cluster.tick(3);
    assert_eq!(cluster.node(leader).status().voters, vec![1, 2, 3]);
}

#[test]
fn the_controller_is_named_only_once_an_entry_of_its_term_is_applied() {
    let mut cluster = Cluster::new(3, 1000);
    let old_leader = cluster.wait_for_leader(None);
    cluster.tick(3);
    for id in 1..=3 {
        assert_eq!(cluster.node(id).controller_id(), Some(old_leader));
    }
    cluster.isolate(old_leader);
    let others: Vec<u64> = (1..=3).filter(|id| *id != old_leader).collect();

    // Move one message at a time and look at every node after each one.
    let mut window_seen = false;
    for _ in 0..400 {
        for &id in &others {
            cluster.node(id).tick();
        }
        while cluster.step() {
            for &id in &others {
                let node = cluster.node(id);
                let status = node.status();
                if let Some(controller) = status.controller_id {
                    let term = status.term;
                    let leader = cluster.node(controller);
                    assert!(
                        leader.leader_ready() && leader.status().term == term,
                        "node {id} named {controller} before it committed in term {term}"
                    );
                } else if status.leader_id.is_some_and(|l| l != old_leader) {
                    window_seen = true;
                }
            }
        }
        let new_leader = others
            .iter()
            .copied()
            .find(|&id| cluster.node(id).leader_ready());
        if let Some(new_leader) = new_leader {
            if others
                .iter()
                .all(|&id| cluster.node(id).controller_id() == Some(new_leader))
            {
                assert!(
                    window_seen,
                    "a follower knew the new leader before applying an entry of its term"
                );
                return;
            }
        }
    }
    panic!("no new controller emerged");
}

#[test]
fn a_read_index_covers_everything_the_quorum_committed_before_it() {
    let mut cluster = Cluster::new(3, 1000);
    let leader = cluster.wait_for_leader(None);
    let lagging = (1..=3).find(|id| *id != leader).unwrap();
    cluster.isolate(lagging);
    for i in 0..20 {
        cluster.propose(leader, &allocate(i * BLOCK)).unwrap();
        cluster.settle();
    }
    let committed = cluster.node(leader).status().commit_index;
    let behind = cluster.node(lagging).status().applied_index;
    assert!(behind < committed);

    cluster.heal();
    cluster.node(lagging).read_index(7);
    let mut answer = None;
    for _ in 0..50 {
        cluster.tick(1);
        answer = cluster.events[&lagging].iter().find_map(|e| match e {
            CoreEvent::ReadIndex { context: 7, index } => Some(*index),
            _ => None,
        });
        if answer.is_some() {
            break;
        }
    }
    let index = answer.expect("the leader answered the read index");
    assert!(
        index >= committed,
        "read index {index} < commit {committed}"
    );
    assert!(cluster.node(lagging).status().applied_index >= index);
    assert_eq!(cluster.image(lagging).next_producer_id(), 20 * BLOCK);
}

#[test]
fn a_read_index_without_a_leader_gets_no_answer() {
    let mut cluster = Cluster::new(3, 1000);
    let leader = cluster.wait_for_leader(None);
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    cluster.crash(leader);
    let other = (1..=3).find(|id| *id != leader && *id != follower).unwrap();
    cluster.crash(other);
    cluster.node(follower).read_index(9);
    cluster.tick(30);
    assert!(
        !cluster.events[&follower]
            .iter()
            .any(|e| matches!(e, CoreEvent::ReadIndex { context: 9, .. })),
        "a node without a quorum must not claim to be caught up"
    );
}

#[test]
fn a_voter_that_lost_its_log_is_taken_out_and_back_in_safely() {
    let mut cluster = Cluster::new(3, 20);
    let leader = cluster.wait_for_leader(None);
    let lost = (1..=3).find(|id| *id != leader).unwrap();
    for i in 0..50 {
        cluster.propose(leader, &allocate(i * BLOCK)).unwrap();
        cluster.settle();
    }
    cluster.restart_without_its_log(lost);
    assert!(cluster.node(lost).is_rejoining());
    assert!(
        cluster
            .node(lost)
            .status()
            .voters
            .iter()
            .all(|id| *id != lost)
    );

    // The leader commits a little more while the node rejoins, then goes
    // quiet, so only heartbeats bring the node back; the node asks to join
    // on every tick, as the runtime does every few ticks.
    let mut next = 50;
    let mut removed_seen = false;
    for _ in 0..300 {
        cluster.tick(1);
        let Some(leader) = cluster.ready_leader() else {
            continue;
        };
        if next < 55 {
            cluster.propose(leader, &allocate(next * BLOCK)).unwrap();
            next += 1;
        }
        cluster.rejoin_step(lost, leader);
        let status = cluster.node(leader).status();
        removed_seen |= !status.voters.contains(&lost) && !status.learners.contains(&lost);
        if next == 55 && cluster.whole_again(lost) {
            break;
        }
    }
    assert!(
        removed_seen,
        "the leader never dropped its stale view of the node"
    );
    assert!(!cluster.node(lost).is_rejoining());
    for id in 1..=3 {
        assert_eq!(cluster.node(id).status().voters, vec![1, 2, 3], "node {id}");
    }
    cluster.tick(5);
    assert_eq!(cluster.image(lost).next_producer_id(), 55 * BLOCK);
    assert_eq!(cluster.image(lost), cluster.image(leader));
}

#[test]
fn a_new_node_or_a_lone_voter_does_not_rejoin() {
    // A node that never was a member starts as configured.
    let mut cluster = Cluster::new(3, 1000);
    cluster.wait_for_leader(None);
    assert!((1..=3).all(|id| !cluster.node(id).is_rejoining()));

    // A single voter that lost its log has nobody to rejoin: it starts a
    // group of its own again.
    let mut alone = Cluster::new(1, 1000);
    alone.restart_without_its_log(1);
    assert!(!alone.node(1).is_rejoining());
    alone.node(1).campaign_if_sole_voter().unwrap();
    alone.settle();
    assert_eq!(alone.ready_leader(), Some(1));
}

#[test]
fn a_node_that_lost_its_log_stays_out_until_taken_back_even_across_a_leader_change() {
    let mut cluster = Cluster::new(3, 10);
    let leader = cluster.wait_for_leader(None);
    let lost = (1..=3).find(|id| *id != leader).unwrap();
    for i in 0..40 {
        cluster.propose(leader, &allocate(i * BLOCK)).unwrap();
        cluster.settle();
    }
    cluster.restart_without_its_log(lost);
    // Only what the node does from now on counts: before losing its log it
    // was an ordinary voter, which may have campaigned in the first election.
    let since_restart = cluster.events.get(&lost).map_or(0, Vec::len);
    let nonce = cluster.node(lost).rejoin_nonce();
    assert_ne!(nonce, 0);

    // The leader restarts before the node asks to come back: the new
    // leader's progress credits the node with nothing, and it sends its
    // compacted log, a snapshot that still lists the node as a voter.
    cluster.crash(leader);
    cluster.start(leader);
    let mut leader = cluster.wait_for_leader(None);
    cluster.tick(30);
    let installed = cluster.events[&lost][since_restart..]
        .iter()
        .any(|e| matches!(e, CoreEvent::SnapshotInstalled { .. }));
    assert!(installed, "the node received the leader's snapshot");
    assert!(
        cluster.node(lost).is_rejoining(),
        "a snapshot naming the node as a voter is not its return"
    );
    // Cut off from the leader, a voter would campaign; this node must not.
    cluster.isolate(lost);
    cluster.tick(40);
    cluster.heal();
    let campaigned = cluster.events[&lost][since_restart..].iter().any(|e| {
        matches!(
            e,
            CoreEvent::RoleChanged {
                role: raft::StateRole::Candidate | raft::StateRole::PreCandidate,
                ..
            }
        )
    });
    assert!(!campaigned, "a node that lost its log campaigned");

    // Now it asks; it is taken out and back in, then promoted.
    for _ in 0..300 {
        cluster.tick(1);
        if let Some(ready) = cluster.ready_leader() {
            leader = ready;
        }
        cluster.rejoin_step(lost, leader);
        if cluster.whole_again(lost) {
            break;
        }
    }
    assert!(!cluster.node(lost).is_rejoining());
    // Asking again with the same nonce changes nothing.
    cluster
        .node(leader)
        .handle_join(lost, &format!("node-{lost}"), nonce)
        .unwrap();
    cluster.tick(5);
    for id in 1..=3 {
        assert_eq!(cluster.node(id).status().voters, vec![1, 2, 3], "node {id}");
    }
    assert_eq!(cluster.image(lost), cluster.image(leader));
}
