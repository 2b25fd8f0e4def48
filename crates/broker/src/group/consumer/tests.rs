use super::*;

const TOPIC: Uuid = Uuid::from_u128(42);

fn shape(name: &str) -> Option<TopicShape> {
    (name == "t").then_some(TopicShape {
        id: TOPIC,
        partitions: 4,
    })
}

fn join(group: &mut ConsumerGroup, member: &str, now: i64) -> ConsumerOutcome {
    group
        .heartbeat(
            ConsumerHeartbeat {
                member_id: member.into(),
                member_epoch: 0,
                rebalance_timeout_ms: 10_000,
                subscribed_topics: Some(vec!["t".into()]),
                ..ConsumerHeartbeat::default()
            },
            &shape,
            now,
        )
        .unwrap()
}

/// A heartbeat of the static member of instance "i".
fn static_member(member: &str, epoch: i32) -> ConsumerHeartbeat {
    ConsumerHeartbeat {
        member_id: member.into(),
        instance_id: Some("i".into()),
        member_epoch: epoch,
        rebalance_timeout_ms: 10_000,
        subscribed_topics: Some(vec!["t".into()]),
        ..ConsumerHeartbeat::default()
    }
}

fn beat(
    group: &mut ConsumerGroup,
    member: &str,
    epoch: i32,
    owned: Option<&[i32]>,
    now: i64,
) -> Result<ConsumerOutcome, ResponseError> {
    group.heartbeat(
        ConsumerHeartbeat {
            member_id: member.into(),
            member_epoch: epoch,
            owned: owned.map(|o| Partitions::from([(TOPIC, o.iter().copied().collect())])),
            ..ConsumerHeartbeat::default()
        },
        &shape,
        now,
    )
}

fn partitions(outcome: &ConsumerOutcome) -> Vec<i32> {
    outcome
        .assignment
        .as_ref()
        .and_then(|a| a.get(&TOPIC))
        .map(|p| p.iter().copied().collect())
        .unwrap_or_default()
}

/// No partition is held by two members.
fn assert_exclusive(group: &ConsumerGroup) {
    let mut seen = BTreeSet::new();
    for member in group.members.values() {
        for source in [&member.assigned, &member.revoking] {
            for p in source.get(&TOPIC).into_iter().flatten() {
                assert!(seen.insert(*p), "partition {p} held twice");
            }
        }
    }
}

#[test]
fn a_partition_moves_only_after_its_owner_revoked_it() {
    let mut group = ConsumerGroup::default();
    let a = join(&mut group, "a", 0);
    assert_eq!(partitions(&a), vec![0, 1, 2, 3]);
    assert_eq!(group.state_name(), "Stable");
    let a_epoch = a.member_epoch;

    // b joins: the target gives it half, but a still holds everything.
    let b = join(&mut group, "b", 1);
    assert!(b.member_epoch > a_epoch);
    assert!(partitions(&b).is_empty(), "nothing is free yet");
    assert_eq!(group.state_name(), "Reconciling");
    assert_exclusive(&group);

    // a is told to keep half; its epoch stays until it has revoked.
    let a = beat(&mut group, "a", a_epoch, Some(&[0, 1, 2, 3]), 2).unwrap();
    let kept = partitions(&a);
    assert_eq!(kept.len(), 2);
    assert_eq!(a.member_epoch, a_epoch);
    assert_exclusive(&group);
    let b_again = beat(&mut group, "b", b.member_epoch, Some(&[]), 3).unwrap();
    assert_eq!(b_again.assignment, None, "still nothing to give b");

    // a reports the revocation done: it moves to the new epoch, and b gets
    // the released partitions at its next heartbeat.
    let a = beat(&mut group, "a", a_epoch, Some(&kept), 4).unwrap();
    assert_eq!(a.member_epoch, b.member_epoch);
    let b = beat(&mut group, "b", b.member_epoch, Some(&[]), 5).unwrap();
    let taken = partitions(&b);
    assert_eq!(taken.len(), 2);
    assert!(taken.iter().all(|p| !kept.contains(p)));
    assert_exclusive(&group);
    beat(&mut group, "a", a.member_epoch, Some(&kept), 6).unwrap();
    assert_eq!(group.state_name(), "Stable");
}

#[test]
fn a_leaving_member_frees_its_partitions_at_once() {
    let mut group = ConsumerGroup::default();
    let a = join(&mut group, "a", 0);
    let b = join(&mut group, "b", 1);
    let a = beat(&mut group, "a", a.member_epoch, Some(&[0, 1, 2, 3]), 2).unwrap();
    let kept = partitions(&a);
    beat(&mut group, "a", a.member_epoch, Some(&kept), 3).unwrap();
    let b = beat(&mut group, "b", b.member_epoch, Some(&[]), 4).unwrap();
    assert_eq!(partitions(&b).len(), 2);

    let left = beat(&mut group, "b", LEAVE_EPOCH, None, 5).unwrap();
    assert_eq!(left.member_epoch, LEAVE_EPOCH);
    let a = beat(&mut group, "a", a.member_epoch, Some(&kept), 6).unwrap();
    assert_eq!(partitions(&a), vec![0, 1, 2, 3]);
}

#[test]
fn silent_members_expire_and_stale_epochs_are_fenced() {
    let settings = ConsumerSettings {
        session_timeout_ms: 1_000,
        heartbeat_interval_ms: 100,
    };
    let mut group = ConsumerGroup::default();
    let a = join(&mut group, "a", 0);
    let b = join(&mut group, "b", 0);
    assert_eq!(
        beat(&mut group, "a", a.member_epoch + 7, None, 1),
        Err(ResponseError::FencedMemberEpoch)
    );
    assert_eq!(
        beat(&mut group, "nobody", 3, None, 1),
        Err(ResponseError::UnknownMemberId)
    );
    // a keeps beating, b falls silent.
    beat(&mut group, "a", a.member_epoch, Some(&[0, 1, 2, 3]), 900).unwrap();
    // b's session ends at the very millisecond its deadline comes.
    assert_eq!(group.next_deadline_ms(&settings), Some(1_000));
    assert!(!group.tick(&settings, 999));
    assert!(group.tick(&settings, 1_000));
    assert!(!group.members.contains_key("b"));
    assert_eq!(group.next_deadline_ms(&settings), Some(1_900));
    assert_eq!(
        beat(&mut group, "b", b.member_epoch, None, 1_600),
        Err(ResponseError::UnknownMemberId)
    );
}

#[test]
fn a_member_that_does_not_revoke_in_time_is_removed() {
    let settings = ConsumerSettings {
        session_timeout_ms: 60_000,
        heartbeat_interval_ms: 100,
    };
    let mut group = ConsumerGroup::default();
    let a = join(&mut group, "a", 0);
    join(&mut group, "b", 0);
    // a is asked to revoke (rebalance timeout 10 s) and never does.
    beat(&mut group, "a", a.member_epoch, Some(&[0, 1, 2, 3]), 1).unwrap();
    assert!(!group.tick(&settings, 10_000));
    assert!(group.tick(&settings, 10_002));
    assert!(!group.members.contains_key("a"));
}

#[test]
fn commits_need_the_current_member_epoch() {
    let mut group = ConsumerGroup::default();
    assert_eq!(group.check_commit("", -1), None);
    // A consumer assigning partitions by hand names its own member id.
    assert_eq!(group.check_commit("manual", -1), None);
    let a = join(&mut group, "a", 0);
    assert_eq!(group.check_commit("a", a.member_epoch), None);
    assert_eq!(
        group.check_commit("a", a.member_epoch - 1),
        Some(ResponseError::StaleMemberEpoch)
    );
    assert_eq!(
        group.check_commit("x", 1),
        Some(ResponseError::UnknownMemberId)
    );
    assert_eq!(
        group.check_commit("", -1),
        Some(ResponseError::UnknownMemberId)
    );
    assert_eq!(
        group.check_commit("manual", -1),
        Some(ResponseError::UnknownMemberId)
    );
}

#[test]
fn unknown_assignors_and_held_instance_ids_are_refused() {
    let mut group = ConsumerGroup::default();
    let request = |member: &str| static_member(member, 0);
    let mut odd = request("a");
    odd.server_assignor = Some("sticky-ish".into());
    assert_eq!(
        group.heartbeat(odd, &shape, 0),
        Err(ResponseError::UnsupportedAssignor)
    );
    group.heartbeat(request("a"), &shape, 0).unwrap();
    assert_eq!(
        group.heartbeat(request("b"), &shape, 0),
        Err(ResponseError::UnreleasedInstanceId)
    );
}

#[test]
fn a_revocation_completes_only_when_a_heartbeat_says_so() {
    let mut group = ConsumerGroup::default();
    let a = join(&mut group, "a", 0);
    // a reports owning only part of what it holds, then must revoke.
    beat(&mut group, "a", a.member_epoch, Some(&[0, 1]), 1).unwrap();
    let b = join(&mut group, "b", 2);
    let told = beat(&mut group, "a", a.member_epoch, Some(&[0, 1, 2, 3]), 3).unwrap();
    let kept = partitions(&told);
    // Heartbeats that do not say what a owns leave the revocation open,
    // whatever a said before: b gets nothing.
    for now in 4..7 {
        beat(&mut group, "a", a.member_epoch, None, now).unwrap();
        let waiting = beat(&mut group, "b", b.member_epoch, None, now).unwrap();
        assert!(partitions(&waiting).is_empty());
        assert_exclusive(&group);
    }
    beat(&mut group, "a", a.member_epoch, Some(&kept), 7).unwrap();
    let b = beat(&mut group, "b", b.member_epoch, None, 8).unwrap();
    assert_eq!(partitions(&b).len(), 2);
    assert_exclusive(&group);
}

#[test]
fn malformed_joins_and_leaves_are_refused() {
    let mut group = ConsumerGroup::default();
    let owning = ConsumerHeartbeat {
        member_id: "a".into(),
        member_epoch: 0,
        rebalance_timeout_ms: 10_000,
        subscribed_topics: Some(vec!["t".into()]),
        owned: Some(Partitions::from([(TOPIC, BTreeSet::from([1]))])),
        ..ConsumerHeartbeat::default()
    };
    assert_eq!(
        group.heartbeat(owning, &shape, 0),
        Err(ResponseError::InvalidRequest),
        "a joining member owns nothing"
    );
    join(&mut group, "a", 0);
    for (epoch, instance) in [(STATIC_LEAVE_EPOCH, None), (-3, Some("i"))] {
        let request = ConsumerHeartbeat {
            member_id: "a".into(),
            member_epoch: epoch,
            instance_id: instance.map(Into::into),
            ..ConsumerHeartbeat::default()
        };
        assert_eq!(
            group.heartbeat(request, &shape, 1),
            Err(ResponseError::InvalidRequest)
        );
    }
}

#[test]
fn a_leave_naming_an_instance_another_member_holds_is_fenced() {
    let mut group = ConsumerGroup::default();
    let request = ConsumerHeartbeat {
        member_id: "new".into(),
        instance_id: Some("i".into()),
        member_epoch: 0,
        rebalance_timeout_ms: 10_000,
        subscribed_topics: Some(vec!["t".into()]),
        ..ConsumerHeartbeat::default()
    };
    group.heartbeat(request, &shape, 0).unwrap();
    let stale = ConsumerHeartbeat {
        member_id: "old".into(),
        instance_id: Some("i".into()),
        member_epoch: STATIC_LEAVE_EPOCH,
        ..ConsumerHeartbeat::default()
    };
    assert_eq!(
        group.heartbeat(stale, &shape, 1),
        Err(ResponseError::FencedInstanceId)
    );
    assert!(group.members.contains_key("new"));
}

#[test]
fn a_static_member_that_comes_back_takes_over_its_partitions() {
    let settings = ConsumerSettings {
        session_timeout_ms: 1_000,
        heartbeat_interval_ms: 100,
    };
    let static_join = |member: &str| static_member(member, 0);
    let mut group = ConsumerGroup::default();
    let first = group.heartbeat(static_join("first"), &shape, 0).unwrap();
    assert_eq!(partitions(&first), vec![0, 1, 2, 3]);
    let epoch = group.epoch;

    // It leaves for a while: nothing moves, its partitions stay held.
    let away = ConsumerHeartbeat {
        member_id: "first".into(),
        instance_id: Some("i".into()),
        member_epoch: STATIC_LEAVE_EPOCH,
        ..ConsumerHeartbeat::default()
    };
    let left = group.heartbeat(away, &shape, 100).unwrap();
    assert_eq!(left.member_epoch, STATIC_LEAVE_EPOCH);
    assert_eq!(group.epoch, epoch);
    let other = join(&mut group, "other", 200);
    assert!(
        partitions(&other).is_empty(),
        "the away member's partitions stay put"
    );

    // Its next incarnation takes its place under a new id: it keeps its
    // share of the new target and gives the rest up to the member that
    // joined meanwhile, which gets it once the newcomer says it owns none.
    let back = group.heartbeat(static_join("second"), &shape, 300).unwrap();
    assert_eq!(back.member_id, "second");
    let kept = partitions(&back);
    assert_eq!(kept.len(), 2);
    assert!(!group.members.contains_key("first"));
    assert_exclusive(&group);
    let back = beat(&mut group, "second", back.member_epoch, Some(&[]), 310).unwrap();
    let other = beat(&mut group, "other", other.member_epoch, Some(&[]), 320).unwrap();
    let taken = partitions(&other);
    assert_eq!(taken.len(), 2);
    assert!(taken.iter().all(|p| !kept.contains(p)));
    assert_exclusive(&group);

    // An instance that does not come back in time is removed.
    let gone = ConsumerHeartbeat {
        member_id: "second".into(),
        instance_id: Some("i".into()),
        member_epoch: STATIC_LEAVE_EPOCH,
        ..ConsumerHeartbeat::default()
    };
    group.heartbeat(gone, &shape, 400).unwrap();
    assert!(back.member_epoch > first.member_epoch);
    beat(&mut group, "other", other.member_epoch, None, 1_000).unwrap();
    assert!(group.tick(&settings, 1_401));
    assert!(!group.members.contains_key("second"));
}

#[test]
fn a_static_restart_with_nothing_else_changed_moves_nothing() {
    let request = static_member;
    let mut group = ConsumerGroup::default();
    let first = group.heartbeat(request("first", 0), &shape, 0).unwrap();
    let epoch = group.epoch;
    group
        .heartbeat(request("first", STATIC_LEAVE_EPOCH), &shape, 1)
        .unwrap();
    let back = group.heartbeat(request("second", 0), &shape, 2).unwrap();
    assert_eq!(back.member_epoch, first.member_epoch);
    assert_eq!(partitions(&back), partitions(&first));
    assert_eq!(group.epoch, epoch, "no rebalance");
}

/// Topics "t" (4 partitions) and, once created, "t2" (2 partitions), with
/// the internal topic a regular expression must never match.
struct Catalog {
    with_t2: bool,
}

impl TopicCatalog for Catalog {
    fn shape(&self, name: &str) -> Option<TopicShape> {
        match name {
            "t2" if self.with_t2 => Some(TopicShape {
                id: Uuid::from_u128(43),
                partitions: 2,
            }),
            _ => shape(name),
        }
    }

    fn names(&self) -> Vec<String> {
        let mut names = vec!["t".to_string()];
        if self.with_t2 {
            names.push("t2".to_string());
        }
        names
    }
}

#[test]
fn a_regular_expression_subscribes_to_topics_as_they_appear() {
    let mut group = ConsumerGroup::default();
    let joining = ConsumerHeartbeat {
        member_id: "a".into(),
        member_epoch: 0,
        rebalance_timeout_ms: 10_000,
        subscribed_regex: Some("t.*".into()),
        ..ConsumerHeartbeat::default()
    };
    let joined = group
        .heartbeat(joining, &Catalog { with_t2: false }, 0)
        .unwrap();
    assert_eq!(partitions(&joined), vec![0, 1, 2, 3]);

    // t2 is created: the next heartbeat subscribes to it too.
    let request = ConsumerHeartbeat {
        member_id: "a".into(),
        member_epoch: joined.member_epoch,
        ..ConsumerHeartbeat::default()
    };
    let grown = group
        .heartbeat(request, &Catalog { with_t2: true }, 1)
        .unwrap();
    assert!(grown.member_epoch > joined.member_epoch);
    let assignment = grown.assignment.unwrap();
    assert_eq!(assignment[&Uuid::from_u128(43)], BTreeSet::from([0, 1]));

    let bad = ConsumerHeartbeat {
        member_id: "b".into(),
        member_epoch: 0,
        rebalance_timeout_ms: 10_000,
        subscribed_regex: Some("t.(".into()),
        ..ConsumerHeartbeat::default()
    };
    assert_eq!(
        group.heartbeat(bad, &Catalog { with_t2: true }, 2),
        Err(ResponseError::InvalidRegularExpression)
    );
}
