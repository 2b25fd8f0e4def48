use super::*;

const LAG_MAX: i64 = 10_000;

fn assignment(isr: &[i32], partition_epoch: i32) -> Assignment {
    Assignment {
        leader_epoch: 3,
        partition_epoch,
        replicas: vec![1, 2, 3],
        isr: isr.to_vec(),
    }
}

/// Broker 1 leads replicas 1, 2, 3 with all of them in sync and a log
/// ending at 100.
fn leader(min_isr: usize) -> LeaderView {
    LeaderView::new(1, &assignment(&[1, 2, 3], 0), 100, min_isr, 0)
}

#[test]
fn the_high_watermark_waits_for_the_slowest_isr_member() {
    let mut view = leader(2);
    assert_eq!(view.high_watermark(100), Some(-1), "nobody has fetched yet");
    view.record_fetch(2, 100, 100, Some(7), 10).unwrap();
    assert_eq!(view.high_watermark(100), Some(-1));
    view.record_fetch(3, 80, 100, Some(7), 10).unwrap();
    assert_eq!(view.high_watermark(100), Some(80));
    view.record_fetch(3, 100, 100, Some(7), 20).unwrap();
    assert_eq!(view.high_watermark(120), Some(100), "the leader ran ahead");
}

#[test]
fn a_fetch_tells_whether_the_follower_moved() {
    let mut view = leader(2);
    assert_eq!(view.record_fetch(2, 90, 100, Some(7), 10), Ok(true));
    assert_eq!(
        view.record_fetch(2, 90, 100, Some(7), 20),
        Ok(false),
        "idle"
    );
    assert_eq!(view.record_fetch(2, 90, 100, None, 30), Ok(false));
    assert_eq!(view.record_fetch(2, 100, 100, Some(7), 40), Ok(true));
    assert_eq!(
        view.record_fetch(2, 100, 100, Some(8), 50),
        Ok(true),
        "restarted"
    );
}

#[test]
fn a_fetch_from_a_non_replica_is_refused() {
    let mut view = leader(1);
    assert_eq!(view.record_fetch(9, 0, 100, None, 0), Err(NotAReplica(9)));
    assert_eq!(view.record_fetch(1, 0, 100, None, 0), Err(NotAReplica(1)));
}

#[test]
fn strict_min_isr_stops_the_high_watermark() {
    let mut view = LeaderView::new(1, &assignment(&[1], 1), 100, 2, 0);
    view.record_fetch(2, 100, 100, Some(7), 10).unwrap();
    assert_eq!(view.high_watermark(100), None, "ISR of one under min ISR 2");
    view.set_min_insync_replicas(1);
    assert_eq!(view.high_watermark(100), Some(100));
}

#[test]
fn a_lagging_member_is_proposed_out_only_after_the_lag_time() {
    let mut view = leader(2);
    view.record_fetch(2, 100, 100, Some(7), 1_000).unwrap();
    view.record_fetch(3, 100, 100, Some(7), 1_000).unwrap();
    // The leader appends; follower 2 keeps up, follower 3 goes silent.
    for now in (2_000..=11_000).step_by(1_000) {
        view.record_fetch(2, 100 + now, 100 + now, Some(7), now)
            .unwrap();
        assert_eq!(
            view.propose_isr_change(100 + now, 100, LAG_MAX, now, &any_joiner),
            None,
            "at {now} ms follower 3 has lagged {} ms",
            now - 1_000
        );
    }
    let proposal = view
        .propose_isr_change(12_000, 100, LAG_MAX, 11_001, &any_joiner)
        .unwrap();
    assert_eq!(proposal.isr, vec![1, 2]);
    assert_eq!(proposal.removed, vec![3]);
    assert_eq!(proposal.partition_epoch, 0);
    assert_eq!(proposal.leader_epoch, 3);
}

#[test]
fn a_shrink_counts_for_the_high_watermark_only_once_committed() {
    let mut view = leader(1);
    view.record_fetch(2, 200, 200, Some(7), 20_000).unwrap();
    view.record_fetch(3, 100, 100, Some(7), 0).unwrap();
    let proposal = view
        .propose_isr_change(200, 100, LAG_MAX, 20_000, &any_joiner)
        .unwrap();
    assert_eq!(proposal.removed, vec![3]);
    assert_eq!(
        view.high_watermark(200),
        Some(100),
        "follower 3 is still in the committed ISR"
    );
    view.apply_assignment(&assignment(&[1, 2], 1), 20_100);
    assert_eq!(view.high_watermark(200), Some(200));
}

#[test]
fn an_idle_follower_at_the_log_end_stays_in_sync() {
    let mut view = leader(2);
    view.record_fetch(2, 100, 100, Some(7), 0).unwrap();
    view.record_fetch(3, 100, 100, Some(7), 0).unwrap();
    assert_eq!(
        view.propose_isr_change(100, 100, LAG_MAX, 60_000, &any_joiner),
        None
    );
}

#[test]
fn a_follower_rejoins_only_holding_everything_this_leader_wrote() {
    // Broker 3 is out of the ISR; this leadership began at offset 100.
    let mut view = LeaderView::new(1, &assignment(&[1, 2], 4), 100, 2, 0);
    view.record_fetch(2, 150, 150, Some(7), 10).unwrap();
    view.record_fetch(3, 90, 150, Some(8), 10).unwrap();
    assert_eq!(
        view.propose_isr_change(150, 150, LAG_MAX, 10, &any_joiner),
        None
    );
    view.record_fetch(3, 149, 150, Some(8), 20).unwrap();
    assert_eq!(
        view.propose_isr_change(150, 150, LAG_MAX, 20, &any_joiner),
        None,
        "below the high watermark"
    );
    view.record_fetch(3, 150, 150, Some(8), 30).unwrap();
    let proposal = view
        .propose_isr_change(150, 150, LAG_MAX, 30, &any_joiner)
        .unwrap();
    assert_eq!(proposal.isr, vec![1, 2, 3]);
    assert_eq!(proposal.added, vec![3]);
    assert_eq!(proposal.incarnations, vec![0, 7, 8]);
    assert_eq!(proposal.partition_epoch, 4);
}

#[test]
fn a_follower_below_the_start_of_this_epoch_does_not_rejoin() {
    // A high watermark left behind by the previous leader can be below
    // what this leader wrote before its first follower fetch.
    let mut view = LeaderView::new(1, &assignment(&[1], 0), 100, 1, 0);
    view.record_fetch(3, 95, 100, Some(8), 10).unwrap();
    assert_eq!(
        view.propose_isr_change(100, 90, LAG_MAX, 10, &any_joiner),
        None
    );
}

#[test]
fn a_follower_that_never_said_its_incarnation_does_not_rejoin() {
    let mut view = LeaderView::new(1, &assignment(&[1, 2], 0), 100, 1, 0);
    view.record_fetch(3, 100, 100, None, 10).unwrap();
    assert_eq!(
        view.propose_isr_change(100, 100, LAG_MAX, 10, &any_joiner),
        None
    );
}

#[test]
fn a_follower_whose_broker_may_not_join_is_not_proposed() {
    // Broker 3 fetched up to the log end and then was fenced (it died, or
    // restarted as another incarnation): the controller would refuse it.
    let mut view = LeaderView::new(1, &assignment(&[1, 2], 0), 100, 1, 0);
    view.record_fetch(3, 100, 100, Some(8), 10).unwrap();
    let fenced = |id: i32, _: u64| id != 3;
    assert_eq!(
        view.propose_isr_change(100, 100, LAG_MAX, 10, &fenced),
        None
    );
    let other_run = |id: i32, incarnation: u64| id != 3 || incarnation == 9;
    assert_eq!(
        view.propose_isr_change(100, 100, LAG_MAX, 10, &other_run),
        None
    );
    let proposal = view.propose_isr_change(100, 100, LAG_MAX, 10, &any_joiner);
    assert_eq!(proposal.map(|p| p.added), Some(vec![3]));
}

#[test]
fn an_addition_in_flight_holds_the_high_watermark_back() {
    let mut view = LeaderView::new(1, &assignment(&[1], 0), 100, 1, 0);
    view.record_fetch(2, 100, 100, Some(7), 10).unwrap();
    assert!(
        view.propose_isr_change(100, 100, LAG_MAX, 10, &any_joiner)
            .is_some()
    );
    assert_eq!(
        view.high_watermark(150),
        Some(100),
        "follower 2 may count as in sync already"
    );
}

#[test]
fn one_change_at_a_time_and_a_lost_one_is_proposed_again() {
    let mut view = LeaderView::new(1, &assignment(&[1], 0), 100, 1, 0);
    view.record_fetch(2, 100, 100, Some(7), 10).unwrap();
    assert!(
        view.propose_isr_change(100, 100, LAG_MAX, 10, &any_joiner)
            .is_some()
    );
    view.record_fetch(3, 100, 100, Some(7), 20).unwrap();
    assert_eq!(
        view.propose_isr_change(100, 100, LAG_MAX, 20, &any_joiner),
        None
    );
    let again = view
        .propose_isr_change(100, 100, LAG_MAX, 10 + PENDING_RETRY_MS, &any_joiner)
        .unwrap();
    assert_eq!(again.isr, vec![1, 2, 3]);
    view.proposal_failed();
    assert!(
        view.propose_isr_change(100, 100, LAG_MAX, 10 + PENDING_RETRY_MS, &any_joiner)
            .is_some()
    );
}

#[test]
fn a_committed_change_settles_the_proposal_and_its_members_count_as_caught_up() {
    let mut view = LeaderView::new(1, &assignment(&[1], 0), 100, 1, 0);
    view.record_fetch(2, 100, 100, Some(7), 10).unwrap();
    assert!(
        view.propose_isr_change(100, 100, LAG_MAX, 10, &any_joiner)
            .is_some()
    );
    view.apply_assignment(&assignment(&[1, 2], 1), 50_000);
    assert_eq!(view.isr(), &[1, 2]);
    assert_eq!(
        view.propose_isr_change(100, 100, LAG_MAX, 50_000 + LAG_MAX, &any_joiner),
        None,
        "follower 2 is not shrunk right after joining"
    );
    // An older assignment arriving late changes nothing.
    view.apply_assignment(&assignment(&[1], 0), 50_001);
    assert_eq!(view.isr(), &[1, 2]);
}

/// Every follower's broker may join the ISR.
fn any_joiner(_: i32, _: u64) -> bool {
    true
}
