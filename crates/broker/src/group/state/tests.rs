use super::*;

const SETTINGS: GroupSettings = GroupSettings {
    initial_rebalance_delay_ms: 0,
    min_session_timeout_ms: 1_000,
    max_session_timeout_ms: 60_000,
};

fn request(member_id: &str, protocols: &[&str]) -> JoinRequest {
    JoinRequest {
        member_id: member_id.to_string(),
        instance_id: None,
        client_id: "client".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 30_000,
        protocol_type: "consumer".into(),
        protocols: protocols
            .iter()
            .map(|p| (p.to_string(), Bytes::from(format!("meta-{p}"))))
            .collect(),
        require_known_member_id: true,
    }
}

fn claim(member_id: &str, generation: i32) -> MemberClaim<'_> {
    MemberClaim {
        member_id,
        instance_id: None,
        generation,
    }
}

/// Joins and returns the receiver for the answer.
fn join(group: &mut Group, request: JoinRequest, now: i64) -> oneshot::Receiver<JoinOutcome> {
    let (tx, rx) = oneshot::channel();
    group.join(request, tx, &SETTINGS, now).deliver();
    rx
}

fn sync(
    group: &mut Group,
    member: &str,
    generation: i32,
    assignments: Vec<(String, Bytes)>,
    now: i64,
) -> oneshot::Receiver<SyncOutcome> {
    let (tx, rx) = oneshot::channel();
    group
        .sync(
            claim(member, generation),
            ProtocolClaim::default(),
            assignments,
            tx,
            now,
        )
        .deliver();
    rx
}

/// The KIP-394 dance: the first join gets an id, the second joins with it.
fn member_id(group: &mut Group, now: i64) -> String {
    let outcome = join(group, request("", &["range"]), now)
        .try_recv()
        .unwrap();
    assert_eq!(outcome.error, Some(ResponseError::MemberIdRequired));
    outcome.member_id
}

#[test]
fn two_members_form_a_generation_and_get_their_assignments() {
    let mut group = Group::new("g", 0);
    let a = member_id(&mut group, 0);
    let mut a_join = join(&mut group, request(&a, &["range"]), 0);
    // Alone and all joined: the generation forms at once.
    let a_outcome = a_join.try_recv().unwrap();
    assert_eq!(
        (a_outcome.generation, a_outcome.leader.as_str()),
        (1, a.as_str())
    );
    assert_eq!(a_outcome.members.len(), 1);

    // A second member triggers a rebalance; the first must rejoin.
    let b = member_id(&mut group, 1);
    let mut b_join = join(&mut group, request(&b, &["range"]), 1);
    assert!(b_join.try_recv().is_err(), "b waits for a to rejoin");
    assert_eq!(
        group.heartbeat(claim(&a, 1), 2),
        Some(ResponseError::RebalanceInProgress)
    );
    let mut a_join = join(&mut group, request(&a, &["range"]), 3);
    let (a_outcome, b_outcome) = (a_join.try_recv().unwrap(), b_join.try_recv().unwrap());
    assert_eq!(a_outcome.generation, 2);
    assert_eq!(a_outcome.leader, a);
    assert_eq!(a_outcome.members.len(), 2, "the leader gets every member");
    assert!(b_outcome.members.is_empty());
    assert_eq!(b_outcome.protocol_name.as_deref(), Some("range"));

    // The follower's sync waits for the leader's assignment.
    let mut b_sync = sync(&mut group, &b, 2, vec![], 4);
    assert!(b_sync.try_recv().is_err());
    // Only the leader's assignment is a point to resume from after a
    // coordinator restart; the generation alone is not persisted.
    // A SyncGroup naming another protocol than the group's is refused.
    let (tx, mut wrong) = oneshot::channel();
    let other = ProtocolClaim {
        protocol_type: Some("consumer"),
        protocol_name: Some("roundrobin"),
    };
    group.sync(claim(&a, 2), other, vec![], tx, 5).deliver();
    assert_eq!(
        wrong.try_recv().unwrap().error,
        Some(ResponseError::InconsistentGroupProtocol)
    );
    let (tx, mut a_sync) = oneshot::channel();
    let ours = ProtocolClaim {
        protocol_type: Some("consumer"),
        protocol_name: Some("range"),
    };
    let deliveries = group.sync(
        claim(&a, 2),
        ours,
        vec![(a.clone(), Bytes::from_static(b"A"))],
        tx,
        5,
    );
    assert!(deliveries.persist_group);
    deliveries.deliver();
    assert_eq!(
        a_sync.try_recv().unwrap().assignment,
        Bytes::from_static(b"A")
    );
    // b got no partitions: an empty assignment, not an error.
    let b_outcome = b_sync.try_recv().unwrap();
    assert_eq!(b_outcome.error, None);
    assert!(b_outcome.assignment.is_empty());
    assert_eq!(group.state, GroupState::Stable);
    assert_eq!(group.heartbeat(claim(&b, 2), 6), None);
    assert_eq!(
        group.heartbeat(claim(&b, 1), 6),
        Some(ResponseError::IllegalGeneration)
    );
    assert_eq!(
        group.heartbeat(claim("nobody", 2), 6),
        Some(ResponseError::UnknownMemberId)
    );
}

#[test]
fn a_member_that_does_not_rejoin_in_time_is_removed() {
    let mut group = Group::new("g", 0);
    let a = member_id(&mut group, 0);
    join(&mut group, request(&a, &["range"]), 0)
        .try_recv()
        .unwrap();
    sync(&mut group, &a, 1, vec![], 0).try_recv().unwrap();
    let b = member_id(&mut group, 10);
    let mut b_join = join(&mut group, request(&b, &["range"]), 10);
    group.tick(&SETTINGS, 9_999).deliver();
    assert!(b_join.try_recv().is_err());
    // a never rejoins; at the rebalance timeout it is dropped.
    group.tick(&SETTINGS, 30_011).deliver();
    let outcome = b_join.try_recv().unwrap();
    assert_eq!(outcome.leader, b);
    assert_eq!(group.members.len(), 1);
}

/// Two members in one generation: a joins alone, b joins, a rejoins.
fn two_member_generation(
    group: &mut Group,
    a_protocols: &[&str],
    b_protocols: &[&str],
) -> (String, String, JoinOutcome, JoinOutcome) {
    let a = member_id(group, 0);
    join(group, request(&a, a_protocols), 0).try_recv().unwrap();
    let b = member_id(group, 0);
    let mut b_join = join(group, request(&b, b_protocols), 0);
    let a_outcome = join(group, request(&a, a_protocols), 0).try_recv().unwrap();
    let b_outcome = b_join.try_recv().unwrap();
    (a, b, a_outcome, b_outcome)
}

#[test]
fn silent_members_expire_and_the_group_rebalances() {
    let mut group = Group::new("g", 0);
    let (a, b, a_outcome, _) = two_member_generation(&mut group, &["range"], &["range"]);
    let generation = a_outcome.generation;
    sync(&mut group, &b, generation, vec![], 0);
    sync(&mut group, &a, generation, vec![], 0)
        .try_recv()
        .unwrap();
    assert_eq!(group.state, GroupState::Stable);
    // b keeps heartbeating, a goes silent past its session timeout.
    for now in (1_000..=11_000).step_by(1_000) {
        group.heartbeat(claim(&b, generation), now);
        group.tick(&SETTINGS, now).deliver();
    }
    assert!(!group.members.contains_key(&a));
    assert_eq!(group.state, GroupState::PreparingRebalance);
    assert_eq!(
        group.heartbeat(claim(&b, generation), 11_500),
        Some(ResponseError::RebalanceInProgress)
    );
}

#[test]
fn a_session_ends_at_its_deadline_and_the_group_says_when_that_is() {
    let mut group = Group::new("g", 0);
    let a = member_id(&mut group, 0);
    let generation = join(&mut group, request(&a, &["range"]), 0)
        .try_recv()
        .unwrap()
        .generation;
    sync(&mut group, &a, generation, vec![], 0)
        .try_recv()
        .unwrap();
    group.heartbeat(claim(&a, generation), 2_000);
    // Its session of 10 s, counted from the last heartbeat.
    assert_eq!(group.next_deadline_ms(), Some(12_000));
    group.tick(&SETTINGS, 11_999).deliver();
    assert!(group.members.contains_key(&a));
    group.tick(&SETTINGS, 12_000).deliver();
    assert!(group.members.is_empty());
    assert_eq!(group.state, GroupState::Empty);
    assert_eq!(group.next_deadline_ms(), None);
}

#[test]
fn leaving_empties_the_group_but_keeps_offsets() {
    let mut group = Group::new("g", 0);
    let a = member_id(&mut group, 0);
    join(&mut group, request(&a, &["range"]), 0)
        .try_recv()
        .unwrap();
    group.offsets.insert(
        ("t".into(), 0),
        CommittedOffset {
            offset: 5,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp_ms: 0,
        },
    );
    let (results, deliveries) = group.leave(&[(a.clone(), None)], &SETTINGS, 100);
    assert_eq!(results, vec![None]);
    assert!(deliveries.persist_group);
    assert_eq!(group.state, GroupState::Empty);
    assert_eq!(group.offsets.len(), 1);
    let (results, _) = group.leave(&[(a, None)], &SETTINGS, 100);
    assert_eq!(results, vec![Some(ResponseError::UnknownMemberId)]);
}

#[test]
fn protocols_must_be_shared_and_the_vote_picks_one() {
    let mut group = Group::new("g", 0);
    let (_, _, a_outcome, b_outcome) = two_member_generation(
        &mut group,
        &["roundrobin", "range"],
        &["range", "roundrobin"],
    );
    // One vote each: the tie goes to the leader's first choice.
    assert_eq!(a_outcome.protocol_name.as_deref(), Some("roundrobin"));
    assert_eq!(b_outcome.protocol_name.as_deref(), Some("roundrobin"));
    let c = member_id(&mut group, 1);
    let refused = join(&mut group, request(&c, &["sticky"]), 1)
        .try_recv()
        .unwrap();
    assert_eq!(
        refused.error,
        Some(ResponseError::InconsistentGroupProtocol)
    );
}

#[test]
fn a_static_member_that_restarts_takes_over_and_fences_its_old_id() {
    let mut group = Group::new("g", 0);
    let mut first = request("", &["range"]);
    first.instance_id = Some("worker-1".into());
    let outcome = join(&mut group, first.clone(), 0).try_recv().unwrap();
    let old_id = outcome.member_id;
    assert!(old_id.starts_with("worker-1-"));
    sync(&mut group, &old_id, outcome.generation, vec![], 0)
        .try_recv()
        .unwrap();

    let restarted = join(&mut group, first, 5).try_recv().unwrap();
    assert_ne!(restarted.member_id, old_id);
    assert_eq!(group.members.len(), 1);
    let mut stale = request(&old_id, &["range"]);
    stale.instance_id = Some("worker-1".into());
    let fenced = join(&mut group, stale, 6).try_recv().unwrap();
    assert_eq!(fenced.error, Some(ResponseError::FencedInstanceId));
}

#[test]
fn a_restarted_static_leader_keeps_its_assignment_without_a_rebalance() {
    let mut group = Group::new("g", 0);
    let mut one = request("", &["range"]);
    one.instance_id = Some("worker-1".into());
    let mut two = request("", &["range"]);
    two.instance_id = Some("worker-2".into());
    let first = join(&mut group, one.clone(), 0).try_recv().unwrap();
    let mut two_join = join(&mut group, two, 0);
    let mut one_again = one.clone();
    one_again.member_id = first.member_id.clone();
    let one_joined = join(&mut group, one_again, 0).try_recv().unwrap();
    let two_joined = two_join.try_recv().unwrap();
    let generation = one_joined.generation;
    let leader = one_joined.leader.clone();
    assert_eq!(
        leader, first.member_id,
        "the leader stays while it is a member"
    );
    let assignments = vec![
        (leader.clone(), Bytes::from_static(b"one")),
        (two_joined.member_id.clone(), Bytes::from_static(b"two")),
    ];
    let mut leader_sync = sync(&mut group, &leader, generation, assignments, 0);
    assert_eq!(leader_sync.try_recv().unwrap().error, None);
    assert_eq!(group.state, GroupState::Stable);

    // The leader's instance restarts; its subscription metadata differs
    // (it owns nothing yet) but the protocol stays the same.
    let restarting = one;
    let mut changed = restarting.clone();
    changed.protocols = vec![("range".into(), Bytes::from_static(b"fresh"))];
    let (tx, mut rx) = oneshot::channel();
    let deliveries = group.join(changed, tx, &SETTINGS, 1);
    assert!(deliveries.persist_group, "the new member id is persisted");
    deliveries.deliver();
    let rejoined = rx.try_recv().unwrap();
    assert_eq!(rejoined.error, None);
    assert_eq!(rejoined.generation, generation, "no rebalance");
    assert_eq!(group.state, GroupState::Stable);
    assert_eq!(
        rejoined.leader, leader,
        "the answer names the old leader id"
    );
    assert!(rejoined.members.is_empty());
    let assignment = sync(&mut group, &rejoined.member_id, generation, vec![], 2)
        .try_recv()
        .unwrap();
    assert_eq!(assignment.assignment, Bytes::from_static(b"one"));

    // A restart that would change the group's protocol rebalances.
    let mut other = restarting;
    other.protocols = vec![("roundrobin".into(), Bytes::new())];
    let refused = join(&mut group, other, 3).try_recv().unwrap();
    assert_eq!(
        refused.error,
        Some(ResponseError::InconsistentGroupProtocol)
    );
}

#[test]
fn a_restarted_static_member_whose_protocols_change_the_vote_rebalances() {
    let mut group = Group::new("g", 0);
    let static_request = |instance: &str, protocols: &[&str]| {
        let mut r = request("", protocols);
        r.instance_id = Some(instance.into());
        r
    };
    // Three static members; "range" wins the vote two to one.
    let first = join(&mut group, static_request("l", &["range", "roundrobin"]), 0)
        .try_recv()
        .unwrap();
    let mut joins = [
        join(&mut group, static_request("x", &["roundrobin", "range"]), 0),
        join(&mut group, static_request("y", &["range", "roundrobin"]), 0),
    ];
    let mut rejoin = static_request("l", &["range", "roundrobin"]);
    rejoin.member_id = first.member_id.clone();
    let leader = join(&mut group, rejoin, 0).try_recv().unwrap();
    let outcomes: Vec<JoinOutcome> = joins.iter_mut().map(|j| j.try_recv().unwrap()).collect();
    assert_eq!(leader.protocol_name.as_deref(), Some("range"));
    let generation = leader.generation;
    let mut leader_sync = sync(&mut group, &leader.member_id, generation, vec![], 0);
    for outcome in &outcomes {
        sync(&mut group, &outcome.member_id, generation, vec![], 0)
            .try_recv()
            .unwrap();
    }
    leader_sync.try_recv().unwrap();
    assert_eq!(group.state, GroupState::Stable);

    // "y" restarts preferring roundrobin: the vote would now pick it, so
    // the group must rebalance rather than hand back the old generation.
    let (tx, mut rx) = oneshot::channel();
    let deliveries = group.join(
        static_request("y", &["roundrobin", "range"]),
        tx,
        &SETTINGS,
        1,
    );
    assert!(
        !deliveries.persist_group,
        "nothing to persist mid-rebalance"
    );
    deliveries.deliver();
    assert!(rx.try_recv().is_err(), "y waits for the others to rejoin");
    assert_eq!(group.state, GroupState::PreparingRebalance);
}

#[test]
fn commits_are_checked_against_member_and_generation() {
    let mut group = Group::new("g", 0);
    assert_eq!(
        group.check_commit(claim("", -1), 0),
        None,
        "no members: simple commits allowed"
    );
    assert_eq!(
        group.check_commit(claim("manual-assigner", -1), 0),
        None,
        "whatever member id a simple commit names"
    );
    let a = member_id(&mut group, 0);
    let generation = join(&mut group, request(&a, &["range"]), 0)
        .try_recv()
        .unwrap()
        .generation;
    assert_eq!(
        group.check_commit(claim("", -1), 0),
        Some(ResponseError::UnknownMemberId),
        "members present: only members commit"
    );
    assert_eq!(
        group.check_commit(claim(&a, generation), 0),
        Some(ResponseError::RebalanceInProgress),
        "before SyncGroup the assignment is not known yet"
    );
    sync(&mut group, &a, generation, vec![], 0)
        .try_recv()
        .unwrap();
    assert_eq!(group.check_commit(claim(&a, generation), 1), None);
    assert_eq!(
        group.check_commit(claim(&a, generation + 1), 1),
        Some(ResponseError::IllegalGeneration)
    );
    assert_eq!(
        group.check_commit(claim("x", generation), 1),
        Some(ResponseError::UnknownMemberId)
    );

    // A second member starts a rebalance: the first may still commit what
    // it is about to give up, in the generation it has.
    let b = member_id(&mut group, 2);
    let _b_join = join(&mut group, request(&b, &["range"]), 2);
    assert_eq!(group.state, GroupState::PreparingRebalance);
    assert_eq!(group.check_commit(claim(&a, generation), 2), None);
    assert_eq!(
        group.heartbeat(claim(&a, generation), 2),
        Some(ResponseError::RebalanceInProgress)
    );
}

#[test]
fn a_replaced_static_member_is_fenced_on_every_request() {
    let mut group = Group::new("g", 0);
    let mut first = request("", &["range"]);
    first.instance_id = Some("worker-1".into());
    let old = join(&mut group, first.clone(), 0).try_recv().unwrap();
    assert_eq!(old.error, None);
    sync(&mut group, &old.member_id, old.generation, vec![], 0)
        .try_recv()
        .unwrap();
    // The instance restarts and joins again without its member id.
    let new = join(&mut group, first, 1).try_recv().unwrap();
    assert_ne!(new.member_id, old.member_id);

    let stale = MemberClaim {
        member_id: &old.member_id,
        instance_id: Some("worker-1"),
        generation: old.generation,
    };
    assert_eq!(
        group.heartbeat(stale, 2),
        Some(ResponseError::FencedInstanceId)
    );
    assert_eq!(
        group.check_commit(stale, 2),
        Some(ResponseError::FencedInstanceId)
    );
    let (tx, mut rx) = oneshot::channel();
    group
        .sync(stale, ProtocolClaim::default(), vec![], tx, 2)
        .deliver();
    assert_eq!(
        rx.try_recv().unwrap().error,
        Some(ResponseError::FencedInstanceId)
    );
}

#[test]
fn a_group_only_rejected_requests_touched_is_vacant() {
    let mut group = Group::new("g", 0);
    let ghost = join(&mut group, request("ghost", &["range"]), 0)
        .try_recv()
        .unwrap();
    assert_eq!(ghost.error, Some(ResponseError::UnknownMemberId));
    assert_eq!(
        group.check_commit(claim("ghost", 1), 0),
        Some(ResponseError::UnknownMemberId)
    );
    assert!(group.is_vacant());
    // A member id handed out under KIP-394 is a pending member.
    member_id(&mut group, 0);
    assert!(!group.is_vacant());
}

#[test]
fn session_timeouts_outside_the_allowed_range_are_refused() {
    let mut group = Group::new("g", 0);
    let mut short = request("", &["range"]);
    short.session_timeout_ms = 10;
    let outcome = join(&mut group, short, 0).try_recv().unwrap();
    assert_eq!(outcome.error, Some(ResponseError::InvalidSessionTimeout));
}

#[test]
fn an_empty_group_waits_the_initial_delay_for_more_members() {
    let settings = GroupSettings {
        initial_rebalance_delay_ms: 3_000,
        ..SETTINGS
    };
    let mut group = Group::new("g", 0);
    let a = member_id(&mut group, 0);
    let (tx, mut a_join) = oneshot::channel();
    group
        .join(request(&a, &["range"]), tx, &settings, 0)
        .deliver();
    group.tick(&settings, 1_000).deliver();
    assert!(a_join.try_recv().is_err());
    group.tick(&settings, 3_001).deliver();
    assert_eq!(a_join.try_recv().unwrap().generation, 1);
}
