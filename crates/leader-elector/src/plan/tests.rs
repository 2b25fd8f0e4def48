#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use keel_raft_metadata::records::{CreateTopic, PartitionAssignment, RegisterBroker};

use super::*;

const INCARNATION: u64 = 7;

fn register(node_id: i32, incarnation: u64) -> MetadataRecord {
    Record::RegisterBroker(RegisterBroker {
        node_id,
        incarnation,
        ..Default::default()
    })
    .into()
}

/// Brokers 1 to 3 and topic `t` with one partition per `(leader, isr)`,
/// replicas 1, 2, 3 in the order that puts the leader first.
fn image(partitions: &[(i32, &[i32])], configs: &[(&str, &str)]) -> MetadataImage {
    let mut image = MetadataImage::default();
    for id in 1..=3 {
        image.apply(&register(id, INCARNATION), 1).unwrap();
    }
    let partitions = partitions
        .iter()
        .enumerate()
        .map(|(index, &(leader, isr))| {
            let mut replicas = vec![leader];
            replicas.extend((1..=3).filter(|id| *id != leader));
            PartitionAssignment {
                partition: index as i32,
                replicas,
                leader,
                isr: isr.to_vec(),
                ..Default::default()
            }
        })
        .collect();
    let create = Record::CreateTopic(CreateTopic {
        name: "t".into(),
        topic_id: vec![1; 16],
        partitions,
        configs: configs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        ..Default::default()
    });
    image.apply(&create.into(), 1).unwrap();
    image
}

/// Plans with sessions alive for `alive` (every broker reporting the same
/// log), applies the batch and returns the image after it (unchanged when
/// there was nothing to do).
fn plan_and_apply(image: &MetadataImage, lapsed: &[i32], alive: &[i32]) -> MetadataImage {
    let lapsed: Vec<(i32, u64)> = lapsed.iter().map(|id| (*id, INCARNATION)).collect();
    let session_alive = |id: i32| alive.contains(&id);
    let unclean = |t: &TopicInfo| {
        t.configs
            .get("unclean.leader.election.enable")
            .is_some_and(|v| v == "true")
    };
    let same_log = |_: &str, _: i32, _: i32| {
        Some(ReplicaProgress {
            leader_epoch: 0,
            log_end_offset: 100,
            high_watermark: 100,
        })
    };
    let judge = Judge {
        controller: 2,
        now_ms: 1_000,
        session_alive: &session_alive,
        unclean_allowed: &unclean,
        min_insync_replicas: &|_| 2,
        replica_progress: &same_log,
        lease_left_ms: &|_| 0,
    };
    let mut after = image.clone();
    if let Some(batch) = plan(image, &lapsed, &[], &judge) {
        after.apply(&batch, 3).unwrap();
    }
    after
}

fn state(image: &MetadataImage, partition: i32) -> (i32, i32, Vec<i32>) {
    let p = image.topic("t").unwrap().partition(partition).unwrap();
    (p.leader, p.leader_epoch, p.isr.clone())
}

#[test]
fn nothing_is_planned_while_every_leader_is_live() {
    let image = image(&[(1, &[1, 2, 3]), (2, &[2, 3])], &[]);
    let judge = Judge {
        controller: 1,
        now_ms: 0,
        session_alive: &|_| true,
        unclean_allowed: &|_| false,
        min_insync_replicas: &|_| 2,
        replica_progress: &|_, _, _| None,
        lease_left_ms: &|_| 0,
    };
    assert_eq!(plan(&image, &[], &[], &judge), None);
}

#[test]
fn a_lapsed_broker_is_fenced_and_loses_its_leaderships_and_memberships_in_one_batch() {
    let before = image(&[(1, &[1, 2, 3]), (2, &[2, 1, 3]), (3, &[3, 1])], &[]);
    let after = plan_and_apply(&before, &[1], &[2, 3]);
    assert!(after.broker(1).unwrap().fenced);
    // Led by 1: the preferred live ISR member (2 is listed second in the
    // replicas, after the failed leader) takes over at the next epoch.
    assert_eq!(state(&after, 0), (2, 1, vec![2, 3]));
    // Led by others: 1 leaves the ISR, the leader epoch stays.
    assert_eq!(state(&after, 1), (2, 0, vec![2, 3]));
    assert_eq!(state(&after, 2), (3, 0, vec![3]));
    let change = after.history().last().unwrap();
    assert_eq!(
        (
            change.previous_leader,
            change.new_leader,
            change.controller,
            change.reason
        ),
        (1, 2, 2, LeaderChangeReason::BrokerFailure as i32)
    );
    // Once committed, the next plan has nothing left to do.
    assert_eq!(plan_and_apply(&after, &[1], &[2, 3]), after);
}

#[test]
fn the_most_caught_up_candidate_leads_and_the_history_records_both_logs() {
    let before = image(&[(1, &[1, 2, 3]), (1, &[1, 2, 3])], &[]);
    // Broker 1's report on partition 0 is about its current leadership; on
    // partition 1 about an earlier one, which says nothing of its log (the
    // high watermark is then the highest any replica reported). Broker 3
    // has copied more than broker 2 on partition 0, less on 1.
    let progress = |_: &str, partition: i32, broker: i32| {
        let (leader_epoch, log_end_offset) = match (broker, partition) {
            (1, 0) => (0, 120),
            (1, _) => (-1, 120),
            (2, 0) => (0, 115),
            (3, 0) => (0, 119),
            (2, _) => (0, 90),
            _ => (0, 80),
        };
        Some(ReplicaProgress {
            leader_epoch,
            log_end_offset,
            high_watermark: 118,
        })
    };
    let session_alive = |id: i32| id != 1;
    let judge = Judge {
        controller: 2,
        now_ms: 1_000,
        session_alive: &session_alive,
        unclean_allowed: &|_| false,
        min_insync_replicas: &|_| 2,
        replica_progress: &progress,
        lease_left_ms: &|_| 0,
    };
    let batch = plan(&before, &[(1, INCARNATION)], &[], &judge).unwrap();
    let mut after = before.clone();
    after.apply(&batch, 3).unwrap();
    let logged: Vec<_> = after
        .history()
        .filter(|c| c.reason == LeaderChangeReason::BrokerFailure as i32)
        .map(|c| {
            (
                c.partition,
                c.new_leader,
                c.log_end_offset,
                c.high_watermark,
                c.new_leader_log_end_offset,
            )
        })
        .collect();
    assert_eq!(
        logged,
        vec![(0, 3, 120, 118, Some(119)), (1, 2, -1, 118, Some(90))]
    );
}

#[test]
fn a_failed_leader_s_successor_waits_out_what_is_left_of_its_lease() {
    let before = image(&[(1, &[1, 2, 3]), (2, &[2, 1, 3])], &[]);
    let lease_left = |id: i32| if id == 1 { 250 } else { 400 };
    let session_alive = |id: i32| id != 1;
    let judge = Judge {
        controller: 2,
        now_ms: 1_000,
        session_alive: &session_alive,
        unclean_allowed: &|_| false,
        min_insync_replicas: &|_| 2,
        replica_progress: &|_, _, _| None,
        lease_left_ms: &lease_left,
    };
    let batch = plan(&before, &[(1, INCARNATION)], &[], &judge).unwrap();
    let mut after = before.clone();
    after.apply(&batch, 3).unwrap();
    let led_by_one = after.topic("t").unwrap().partition(0).unwrap();
    assert_eq!(
        (led_by_one.leader, led_by_one.predecessor_lease_ms),
        (2, 250)
    );
    // A live leader moved away is waited for, not timed.
    let batch = move_leaderships_off(&after, 2, &judge).unwrap();
    let mut moved = after.clone();
    moved.apply(&batch, 3).unwrap();
    let p = moved.topic("t").unwrap().partition(1).unwrap();
    assert_eq!((p.leader, p.predecessor_lease_ms), (3, 0));
}

#[test]
fn two_brokers_lapsing_together_are_handled_in_one_batch() {
    let before = image(&[(1, &[1, 2, 3]), (2, &[2, 1, 3])], &[]);
    let after = plan_and_apply(&before, &[1, 2], &[3]);
    assert!(after.broker(1).unwrap().fenced && after.broker(2).unwrap().fenced);
    assert_eq!(state(&after, 0), (3, 1, vec![3]));
    assert_eq!(state(&after, 1), (3, 1, vec![3]));
}

#[test]
fn the_last_in_sync_replica_failing_leaves_the_partition_offline_until_it_returns() {
    let before = image(&[(1, &[1])], &[]);
    let offline = plan_and_apply(&before, &[1], &[2, 3]);
    // Nobody else holds what was committed: no leader, and the ISR keeps
    // its last member rather than go empty.
    assert_eq!(state(&offline, 0), (-1, 1, vec![1]));
    assert_eq!(plan_and_apply(&offline, &[], &[2, 3]), offline);
    // Broker 1 comes back as a new incarnation: it leads again.
    let mut back = offline.clone();
    back.apply(&register(1, INCARNATION + 1), 4).unwrap();
    let led = plan_and_apply(&back, &[], &[1, 2, 3]);
    assert_eq!(state(&led, 0), (1, 2, vec![1]));
}

#[test]
fn an_unclean_election_needs_the_topic_to_allow_it_and_is_recorded_so() {
    let clean = image(&[(1, &[1])], &[]);
    assert_eq!(state(&plan_and_apply(&clean, &[1], &[2, 3]), 0).0, -1);
    let unclean = image(&[(1, &[1])], &[("unclean.leader.election.enable", "true")]);
    let after = plan_and_apply(&unclean, &[1], &[2, 3]);
    assert_eq!(state(&after, 0), (2, 1, vec![2]));
    assert_eq!(
        after.history().last().unwrap().reason,
        LeaderChangeReason::Unclean as i32
    );
}

#[test]
fn an_unclean_election_waits_for_the_candidates_logs_and_records_what_may_be_lost() {
    let before = image(&[(1, &[1])], &[("unclean.leader.election.enable", "true")]);
    let reported = |brokers: &'static [i32]| {
        move |_: &str, _: i32, broker: i32| {
            let log_end_offset = match broker {
                1 => 120,
                2 => 90,
                _ => 95,
            };
            brokers.contains(&broker).then_some(ReplicaProgress {
                leader_epoch: 0,
                log_end_offset,
                high_watermark: 118,
            })
        }
    };
    let session_alive = |id: i32| id != 1;
    let plan_with = |progress: &dyn Fn(&str, i32, i32) -> Option<ReplicaProgress>| {
        let judge = Judge {
            controller: 2,
            now_ms: 1_000,
            session_alive: &session_alive,
            unclean_allowed: &|_| true,
            min_insync_replicas: &|_| 2,
            replica_progress: progress,
            lease_left_ms: &|_| 0,
        };
        plan(&before, &[], &[], &judge)
    };
    // Broker 3 has not reported yet: no election until it has.
    assert_eq!(plan_with(&reported(&[1, 2])), None);
    let batch = plan_with(&reported(&[1, 2, 3])).unwrap();
    let mut after = before.clone();
    after.apply(&batch, 3).unwrap();
    assert_eq!(state(&after, 0), (3, 1, vec![3]), "the most caught-up");
    let change = after.history().last().unwrap();
    assert_eq!(change.reason, LeaderChangeReason::Unclean as i32);
    assert_eq!(
        (change.high_watermark, change.new_leader_log_end_offset),
        (118, Some(95))
    );
}

#[test]
fn a_newer_registration_is_not_fenced_for_its_predecessor_s_lapse() {
    let mut before = image(&[(2, &[2, 3])], &[]);
    before.apply(&register(1, INCARNATION + 1), 1).unwrap();
    let after = plan_and_apply(&before, &[1], &[1, 2, 3]);
    assert!(!after.broker(1).unwrap().fenced);
    assert_eq!(after, before);
}

#[test]
fn a_leader_that_fenced_itself_is_replaced_without_waiting_for_its_session() {
    let mut before = image(&[(1, &[1, 2, 3])], &[]);
    let fence = Record::FenceBroker(FenceBroker {
        node_id: 1,
        incarnation: INCARNATION,
    });
    before.apply(&fence.into(), 1).unwrap();
    let after = plan_and_apply(&before, &[], &[1, 2, 3]);
    assert_eq!(state(&after, 0), (2, 1, vec![2, 3]));
}

#[test]
fn a_live_leader_under_min_isr_keeps_the_fenced_member_eligible() {
    let before = image(&[(1, &[1, 2])], &[]);
    let after = plan_and_apply(&before, &[2], &[1, 3]);
    let p = after.topic("t").unwrap().partition(0).unwrap().clone();
    assert_eq!((p.leader, p.isr, p.elr), (1, vec![1], vec![2]));
}

#[test]
fn a_controlled_shutdown_moves_every_leadership_it_can_to_another_in_sync_replica() {
    let before = image(
        &[(1, &[1, 2, 3]), (1, &[1]), (2, &[2, 1, 3]), (1, &[1, 3])],
        &[],
    );
    let judge = Judge {
        controller: 2,
        now_ms: 5,
        session_alive: &|_| true,
        unclean_allowed: &|_| true,
        min_insync_replicas: &|_| 2,
        replica_progress: &|_, _, _| None,
        lease_left_ms: &|_| 0,
    };
    let batch = move_leaderships_off(&before, 1, &judge).unwrap();
    let mut after = before.clone();
    after.apply(&batch, 3).unwrap();
    // Broker 1 stays in the ISRs: it is in sync until it stops.
    assert_eq!(state(&after, 0), (2, 1, vec![2, 3, 1]));
    // Alone in its ISR: it keeps leading, even with unclean election on.
    assert_eq!(state(&after, 1), (1, 0, vec![1]));
    assert_eq!(state(&after, 2), (2, 0, vec![2, 1, 3]));
    assert_eq!(state(&after, 3), (3, 1, vec![3, 1]));
    assert_eq!(
        after.history().last().unwrap().reason,
        LeaderChangeReason::ControlledShutdown as i32
    );
    assert_eq!(move_leaderships_off(&after, 1, &judge), None);
}

#[test]
fn a_stalled_leader_hands_over_to_an_in_sync_replica_and_an_old_report_moves_nothing() {
    let before = image(&[(1, &[1, 2, 3]), (1, &[1])], &[]);
    let stall = |partition, leader_epoch| Stall {
        topic: "t".into(),
        partition,
        leader: 1,
        leader_epoch,
    };
    let judge = Judge {
        controller: 2,
        now_ms: 5,
        session_alive: &|_| true,
        unclean_allowed: &|_| true,
        min_insync_replicas: &|_| 2,
        replica_progress: &|_, _, _| None,
        lease_left_ms: &|_| 0,
    };
    let batch = plan(&before, &[], &[stall(0, 0), stall(1, 0)], &judge).unwrap();
    let mut after = before.clone();
    after.apply(&batch, 3).unwrap();
    assert_eq!(state(&after, 0), (2, 1, vec![2, 3]));
    assert_eq!(
        after.history().last().unwrap().reason,
        LeaderChangeReason::PartitionStall as i32
    );
    // Alone in its ISR the stalled leader stays, even with unclean
    // election allowed: a slow leader beats none.
    assert_eq!(state(&after, 1), (1, 0, vec![1]));
    // The same report, about leader epoch 0, moves nothing any more.
    assert_eq!(plan(&after, &[], &[stall(0, 0)], &judge), None);
}

#[test]
fn the_rebalance_moves_leadership_back_to_preferred_replicas_past_the_threshold() {
    // Broker 2 is preferred for partitions 1 and 2 but leads neither;
    // broker 3 is preferred for 3 and 4 and leads one of them (50%).
    let mut before = image(
        &[
            (1, &[1, 2, 3]),
            (2, &[2, 1, 3]),
            (2, &[2, 3]),
            (3, &[3, 1]),
            (3, &[3, 1, 2]),
        ],
        &[],
    );
    let moves = [
        (1, 1, vec![1, 2, 3]),
        (2, 3, vec![2, 3]),
        (4, 1, vec![3, 1, 2]),
    ];
    for (partition, leader, isr) in moves {
        let record = Record::SetPartitionLeader(SetPartitionLeader {
            topic: "t".into(),
            partition,
            leader,
            leader_epoch: 1,
            isr,
            ..Default::default()
        });
        before.apply(&record.into(), 1).unwrap();
    }
    fn judge(session_alive: &dyn Fn(i32) -> bool) -> Judge<'_> {
        Judge {
            controller: 1,
            now_ms: 5,
            session_alive,
            unclean_allowed: &|_| false,
            min_insync_replicas: &|_| 2,
            replica_progress: &|_, _, _| None,
            lease_left_ms: &|_| 0,
        }
    }
    let everyone = |_: i32| true;
    let all = judge(&everyone);
    let two_dead = |id: i32| id != 2;
    let batch = rebalance(&before, 10, &all).unwrap();
    let mut after = before.clone();
    after.apply(&batch, 3).unwrap();
    assert_eq!(state(&after, 1), (2, 2, vec![1, 2, 3]));
    assert_eq!(state(&after, 2), (2, 2, vec![2, 3]));
    assert_eq!(state(&after, 4), (3, 2, vec![3, 1, 2]));
    assert_eq!(
        after.history().last().unwrap().reason,
        LeaderChangeReason::PreferredRebalance as i32
    );
    assert_eq!(rebalance(&after, 10, &all), None);
    // At 50% broker 3 is not above a 50% threshold; a dead preferred
    // replica gets nothing back.
    let batch = rebalance(&before, 50, &all).unwrap();
    let mut after = before.clone();
    after.apply(&batch, 3).unwrap();
    assert_eq!(state(&after, 4), (1, 1, vec![3, 1, 2]));
    let mut without_two = before.clone();
    let batch = rebalance(&before, 10, &judge(&two_dead)).unwrap();
    without_two.apply(&batch, 3).unwrap();
    assert_eq!(state(&without_two, 1).0, 1);
    assert_eq!(state(&without_two, 4).0, 3);
}
