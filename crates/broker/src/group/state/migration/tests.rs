//! A classic group of consumers moved to the consumer protocol and back,
//! driven through both state machines with time passed in. The invariant
//! checked throughout: no partition is ever held by two members.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use kafka_protocol::{
    messages::{
        ConsumerProtocolSubscription, TopicName,
        consumer_protocol_subscription::TopicPartition as Owned,
    },
    protocol::{Encodable, StrBytes},
};
use tokio::sync::oneshot;
use uuid::Uuid;

use super::*;
use crate::group::{
    consumer::{ConsumerHeartbeat, Partitions, TopicShape},
    state::{JoinRequest, MemberClaim, ProtocolClaim},
};

const TOPIC: Uuid = Uuid::from_u128(7);

pub(crate) const SETTINGS: GroupSettings = GroupSettings {
    initial_rebalance_delay_ms: 0,
    min_session_timeout_ms: 1_000,
    max_session_timeout_ms: 60_000,
};

/// Topic "t" with four partitions.
pub(crate) struct Catalog;

impl TopicCatalog for Catalog {
    fn shape(&self, name: &str) -> Option<TopicShape> {
        (name == "t").then_some(TopicShape {
            id: TOPIC,
            partitions: 4,
        })
    }

    fn name_of(&self, id: &Uuid) -> Option<String> {
        (*id == TOPIC).then(|| "t".to_string())
    }
}

/// A subscription to "t" at version 1, owning `owned` of it.
fn subscription(owned: &[i32]) -> Bytes {
    let message = ConsumerProtocolSubscription::default()
        .with_topics(vec![StrBytes::from_static_str("t")])
        .with_owned_partitions(vec![
            Owned::default()
                .with_topic(TopicName(StrBytes::from_static_str("t")))
                .with_partitions(owned.to_vec()),
        ]);
    let mut out = bytes::BytesMut::new();
    bytes::BufMut::put_i16(&mut out, 1);
    message.encode(&mut out, 1).unwrap();
    out.freeze()
}

fn join_request(member_id: &str, owned: &[i32]) -> JoinRequest {
    JoinRequest {
        member_id: member_id.into(),
        instance_id: None,
        client_id: "client".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 30_000,
        protocol_type: CONSUMER_PROTOCOL_TYPE.into(),
        protocols: vec![("cooperative-sticky".into(), subscription(owned))],
        require_known_member_id: false,
    }
}

fn claim(member_id: &str, generation: i32) -> MemberClaim<'_> {
    MemberClaim {
        member_id,
        instance_id: None,
        generation,
    }
}

fn assignment(partitions: &[i32]) -> Bytes {
    embedded::encode_assignment(1, vec![("t".into(), partitions.to_vec())])
}

fn partitions(of: &[i32]) -> Partitions {
    Partitions::from([(TOPIC, of.iter().copied().collect())])
}

pub(crate) fn held(bytes: &Bytes) -> Vec<i32> {
    embedded::decode_assignment(bytes)
        .unwrap()
        .into_iter()
        .flat_map(|(_, partitions)| partitions)
        .collect()
}

/// A stable classic group of generation 1: static members "a" (instance
/// "a") holding 0-1 and "b" (instance "b") holding 2-3.
pub(crate) fn stable_classic_group() -> Group {
    let mut group = Group::new("g", 0);
    for (id, held) in [("a", [0, 1]), ("b", [2, 3])] {
        let request = join_request(id, &[]);
        group.members.insert(
            id.into(),
            Member {
                id: id.into(),
                instance_id: Some(id.into()),
                client_id: request.client_id,
                client_host: request.client_host,
                rebalance_timeout_ms: request.rebalance_timeout_ms,
                session_timeout_ms: request.session_timeout_ms,
                protocols: request.protocols,
                assignment: assignment(&held),
                last_heard_ms: 0,
                awaiting_join: None,
                awaiting_sync: None,
            },
        );
    }
    group.generation = 1;
    group.state = GroupState::Stable;
    group.protocol_type = Some(CONSUMER_PROTOCOL_TYPE.into());
    group.protocol_name = Some("cooperative-sticky".into());
    group.leader = Some("a".into());
    group
}

/// Every partition is held by at most one member.
fn assert_exclusive(consumer: &ConsumerGroup) {
    let mut seen = BTreeSet::new();
    for snapshot in consumer.snapshot().members {
        for source in [&snapshot.assigned, &snapshot.revoking] {
            for partition in source.values().flatten() {
                assert!(seen.insert(*partition), "partition {partition} held twice");
            }
        }
    }
}

fn assigned(consumer: &ConsumerGroup, member: &str) -> Vec<i32> {
    consumer.members[member]
        .assigned
        .values()
        .flatten()
        .copied()
        .collect()
}

pub(crate) fn consumer_join(member: &str) -> ConsumerHeartbeat {
    ConsumerHeartbeat {
        member_id: member.into(),
        member_epoch: 0,
        rebalance_timeout_ms: 30_000,
        subscribed_topics: Some(vec!["t".into()]),
        ..ConsumerHeartbeat::default()
    }
}

#[test]
fn an_upgraded_group_keeps_what_its_classic_members_hold_at_the_generation() {
    let group = stable_classic_group();
    let consumer = group.to_consumer_group(&Catalog, 5).unwrap();
    assert_eq!((consumer.epoch, consumer.assignment_epoch), (1, 1));
    assert_eq!(assigned(&consumer, "a"), vec![0, 1]);
    assert_eq!(assigned(&consumer, "b"), vec![2, 3]);
    for member in consumer.members.values() {
        assert_eq!(member.member_epoch, 1);
        let classic = member.classic.as_ref().unwrap();
        assert_eq!(classic.protocols.session_timeout_ms, 10_000);
        assert_eq!(classic.protocols.protocols[0].0, "cooperative-sticky");
    }
    assert_eq!(consumer.state_name(), "Stable");
}

#[test]
fn partitions_move_to_a_consumer_protocol_member_only_once_classic_members_rejoin_without_them() {
    let mut group = stable_classic_group();
    let mut consumer = group.to_consumer_group(&Catalog, 5).unwrap();
    let joined = consumer.heartbeat(consumer_join("c"), &Catalog, 5).unwrap();
    group.upgrade(consumer).deliver();
    assert!(group.members.is_empty() && group.is_consumer_group());
    let consumer = group.consumer.as_mut().unwrap();
    assert_eq!(joined.member_epoch, 2);
    // Everything is still held by a and b: c waits.
    assert_eq!(joined.assignment, Some(Partitions::new()));
    assert_exclusive(consumer);

    // The classic members learn from their heartbeats that they must rejoin.
    for member in ["a", "b"] {
        assert_eq!(
            consumer.classic_heartbeat(claim(member, 1), 6),
            Some(ResponseError::RebalanceInProgress)
        );
    }
    // c's share comes from the member whose target is smaller than what
    // it holds; the other keeps what it has.
    let target_size = |consumer: &ConsumerGroup, member: &str| {
        consumer.target[member]
            .values()
            .map(BTreeSet::len)
            .sum::<usize>()
    };
    let (giver, keeper) = if target_size(consumer, "a") < 2 {
        ("a", "b")
    } else {
        ("b", "a")
    };
    let holding = assigned(consumer, giver);
    // A rejoin still owning everything keeps the old generation and syncs
    // to what it keeps; what it must give up stays its own meanwhile.
    let rejoin = consumer.classic_join(&join_request(giver, &holding), &Catalog, 7);
    assert_eq!(rejoin.error, None);
    assert_eq!(rejoin.generation, 1, "revoking first");
    assert_eq!(rejoin.leader, "");
    assert_eq!(rejoin.protocol_name.as_deref(), Some("cooperative-sticky"));
    let synced = consumer.classic_sync(claim(giver, 1), ProtocolClaim::default(), &Catalog, 7);
    assert_eq!(synced.error, None);
    let kept = held(&synced.assignment);
    assert_eq!(
        kept.len(),
        1,
        "{giver} keeps one of its two partitions: {kept:?}"
    );
    assert_exclusive(consumer);
    let given_up: i32 = holding.into_iter().find(|p| !kept.contains(p)).unwrap();
    assert!(!assigned(consumer, "c").contains(&given_up));
    // The keeper moves to the new epoch at once.
    let owned = assigned(consumer, keeper);
    let rejoin = consumer.classic_join(&join_request(keeper, &owned), &Catalog, 7);
    assert_eq!(rejoin.generation, 2);

    // Rejoining without it completes the revocation: the giver moves to
    // epoch 2, and c gets the partition at its next heartbeat.
    let rejoin = consumer.classic_join(&join_request(giver, &kept), &Catalog, 8);
    assert_eq!(rejoin.generation, 2);
    assert_eq!(consumer.classic_heartbeat(claim(giver, 2), 8), None, "done");
    let beat = ConsumerHeartbeat {
        member_id: "c".into(),
        member_epoch: 2,
        ..ConsumerHeartbeat::default()
    };
    let c = consumer.heartbeat(beat, &Catalog, 9).unwrap();
    assert!(c.assignment.unwrap()[&TOPIC].contains(&given_up));
    assert_exclusive(consumer);
    // An offset commit names the generation; a stale one is refused as
    // Kafka refuses a classic member's.
    assert_eq!(consumer.check_commit(giver, 2), None);
    assert_eq!(
        consumer.check_commit(giver, 1),
        Some(ResponseError::IllegalGeneration)
    );
}

#[test]
fn the_last_consumer_protocol_member_leaving_takes_the_group_back_to_the_classic_protocol() {
    let mut group = stable_classic_group();
    let mut consumer = group.to_consumer_group(&Catalog, 5).unwrap();
    consumer.heartbeat(consumer_join("c"), &Catalog, 5).unwrap();
    group.upgrade(consumer).deliver();
    let consumer = group.consumer.as_mut().unwrap();
    assert!(consumer.has_consumer_protocol_members());
    let targets: BTreeMap<String, Partitions> = consumer.target.clone();
    let leave = ConsumerHeartbeat {
        member_id: "c".into(),
        member_epoch: -1,
        ..ConsumerHeartbeat::default()
    };
    consumer.heartbeat(leave, &Catalog, 6).unwrap();
    assert!(consumer.all_classic());
    let epoch = consumer.epoch;

    group.downgrade(true, &Catalog, &SETTINGS, 6).deliver();
    assert!(group.consumer.is_none());
    assert_eq!(group.generation, epoch);
    assert_eq!(group.protocol_type.as_deref(), Some(CONSUMER_PROTOCOL_TYPE));
    assert_eq!(group.protocol_name.as_deref(), Some("cooperative-sticky"));
    assert_eq!(group.state, GroupState::PreparingRebalance);
    // Each member's assignment is its target after c left: a and b cover
    // the topic between them, and hold nothing twice.
    let mut all = Vec::new();
    for (id, member) in &group.members {
        let partitions = held(&member.assignment);
        assert!(targets.contains_key(id));
        all.extend(partitions);
    }
    all.sort_unstable();
    assert_eq!(all, vec![0, 1, 2, 3]);

    // The classic members hear of the rebalance and form the next
    // generation as a classic group.
    assert_eq!(
        group.heartbeat(claim("a", epoch), 7),
        Some(ResponseError::RebalanceInProgress)
    );
    let mut answers = Vec::new();
    for member in ["a", "b"] {
        let (tx, rx) = oneshot::channel();
        let mut request = join_request(member, &[]);
        request.instance_id = Some(member.into());
        group.join(request, tx, &SETTINGS, 8).deliver();
        answers.push(rx);
    }
    for mut rx in answers {
        assert_eq!(rx.try_recv().unwrap().generation, epoch + 1);
    }
}

#[test]
fn a_group_that_is_not_one_of_consumers_or_cannot_be_read_is_not_upgraded() {
    let mut group = stable_classic_group();
    group.protocol_type = Some("connect".into());
    assert_eq!(
        group.to_consumer_group(&Catalog, 5).err(),
        Some(ResponseError::GroupIdNotFound)
    );

    let mut group = stable_classic_group();
    group.members.get_mut("b").unwrap().assignment = Bytes::from_static(&[0, 0, 0xff]);
    assert_eq!(
        group.to_consumer_group(&Catalog, 5).err(),
        Some(ResponseError::GroupIdNotFound)
    );

    // A generation is forming: the members' assignments are not known (a
    // cooperative member still consumes what it owned), so nothing could
    // be handed out safely yet.
    let mut group = stable_classic_group();
    group.state = GroupState::CompletingRebalance;
    group.generation = 2;
    for member in group.members.values_mut() {
        member.assignment = Bytes::new();
    }
    assert_eq!(
        group.to_consumer_group(&Catalog, 5).err(),
        Some(ResponseError::GroupIdNotFound)
    );
}

#[test]
fn a_static_member_restarted_under_the_consumer_protocol_replaces_its_classic_self() {
    let mut group = stable_classic_group();
    let mut consumer = group.to_consumer_group(&Catalog, 5).unwrap();
    let mut restarted = consumer_join("a-again");
    restarted.instance_id = Some("a".into());
    let joined = consumer.heartbeat(restarted, &Catalog, 5).unwrap();
    group.upgrade(consumer).deliver();
    let consumer = group.consumer.as_ref().unwrap();
    assert!(!consumer.members.contains_key("a"));
    let member = &consumer.members["a-again"];
    assert!(member.classic.is_none());
    // It keeps what its instance held; nothing moved.
    assert_eq!(assigned(consumer, "a-again"), vec![0, 1]);
    assert_eq!(joined.member_epoch, 1);
    assert_exclusive(consumer);
}

#[test]
fn a_downgrade_hands_out_no_partition_another_member_still_holds() {
    let group = stable_classic_group();
    let mut consumer = group.to_consumer_group(&Catalog, 5).unwrap();
    // a is to take partition 2 from b, which has not given it up yet.
    consumer.target.insert("a".into(), partitions(&[0, 1, 2]));
    consumer.target.insert("b".into(), partitions(&[3]));
    let seats = consumer.into_classic_seats();
    let held: BTreeMap<String, Vec<i32>> = seats
        .into_iter()
        .map(|s| (s.id, s.partitions.values().flatten().copied().collect()))
        .collect();
    assert_eq!(held["a"], vec![0, 1]);
    assert_eq!(held["b"], vec![3]);
}

#[test]
fn classic_members_inside_a_consumer_group_are_held_to_their_own_timeouts() {
    let group = stable_classic_group();
    let mut consumer = group.to_consumer_group(&Catalog, 0).unwrap();
    consumer.heartbeat(consumer_join("c"), &Catalog, 0).unwrap();
    let settings = crate::group::ConsumerSettings {
        session_timeout_ms: 45_000,
        heartbeat_interval_ms: 5_000,
    };
    // Told to rejoin at 1000, a must within its rebalance timeout (30 s),
    // however it heartbeats meanwhile.
    assert_eq!(
        consumer.classic_heartbeat(claim("a", 1), 1_000),
        Some(ResponseError::RebalanceInProgress)
    );
    for now in [5_000, 10_000, 15_000, 20_000, 25_000] {
        consumer.classic_heartbeat(claim("a", 1), now);
        consumer.classic_heartbeat(claim("b", 1), now);
        let beat = ConsumerHeartbeat {
            member_id: "c".into(),
            member_epoch: 2,
            ..ConsumerHeartbeat::default()
        };
        consumer.heartbeat(beat, &Catalog, now).unwrap();
    }
    assert!(!consumer.tick(&settings, 30_999));
    assert!(consumer.tick(&settings, 31_000));
    assert!(
        !consumer.members.contains_key("a"),
        "a did not rejoin in time"
    );
    // b was told at its first heartbeat, at 5000.
    assert!(!consumer.tick(&settings, 34_999));
    assert!(consumer.tick(&settings, 35_000));
    assert!(!consumer.members.contains_key("b"), "b did not either");

    // A classic member's session is its JoinGroup session timeout (10 s),
    // not the group's 45 s; and once joined it must sync in time.
    let joined = consumer.classic_join(&join_request("d", &[]), &Catalog, 40_000);
    assert_eq!(joined.error, None);
    assert_eq!(
        consumer.next_deadline_ms(&settings),
        Some(50_000),
        "d's session ends first"
    );
    consumer.classic_sync(
        claim("d", joined.generation),
        ProtocolClaim::default(),
        &Catalog,
        49_000,
    );
    assert!(!consumer.tick(&settings, 58_999));
    assert!(consumer.tick(&settings, 59_000));
    assert!(!consumer.members.contains_key("d"), "d's session expired");
}

#[test]
fn classic_requests_are_checked_as_kafka_checks_them() {
    let group = stable_classic_group();
    let mut consumer = group.to_consumer_group(&Catalog, 0).unwrap();
    consumer.heartbeat(consumer_join("c"), &Catalog, 0).unwrap();
    assert_eq!(
        consumer.classic_heartbeat(claim("a", 7), 1),
        Some(ResponseError::IllegalGeneration)
    );
    assert_eq!(
        consumer.classic_heartbeat(claim("nobody", 1), 1),
        Some(ResponseError::UnknownMemberId)
    );
    // A consumer-protocol member cannot use the classic requests.
    assert_eq!(
        consumer.classic_heartbeat(claim("c", 2), 1),
        Some(ResponseError::UnknownMemberId)
    );
    let fenced = MemberClaim {
        member_id: "b",
        instance_id: Some("a"),
        generation: 1,
    };
    assert_eq!(
        consumer.classic_heartbeat(fenced, 1),
        Some(ResponseError::FencedInstanceId)
    );
    // Another protocol type, or protocols the classic members do not all
    // support, are inconsistent.
    let mut other = join_request("", &[]);
    other.protocols = vec![("range".into(), subscription(&[]))];
    assert_eq!(
        consumer.classic_join(&other, &Catalog, 1).error,
        Some(ResponseError::InconsistentGroupProtocol)
    );
    let mut connect = join_request("", &[]);
    connect.protocol_type = "connect".into();
    assert_eq!(
        consumer.classic_join(&connect, &Catalog, 1).error,
        Some(ResponseError::InconsistentGroupProtocol)
    );
    // KIP-394: a new dynamic member first gets its id.
    let mut new = join_request("", &[]);
    new.require_known_member_id = true;
    let first = consumer.classic_join(&new, &Catalog, 1);
    assert_eq!(first.error, Some(ResponseError::MemberIdRequired));
    assert!(!consumer.members.contains_key(&first.member_id));
    // A sync naming another protocol is inconsistent.
    let protocol = ProtocolClaim {
        protocol_type: Some(CONSUMER_PROTOCOL_TYPE),
        protocol_name: Some("range"),
    };
    let sync = consumer.classic_sync(claim("a", 1), protocol, &Catalog, 1);
    assert_eq!(sync.error, Some(ResponseError::InconsistentGroupProtocol));
    // Leaving by instance id, and a consumer-protocol member named in a
    // LeaveGroup is unknown to the classic protocol.
    let results = consumer.classic_leave(&[
        (String::new(), Some("b".into())),
        ("c".into(), None),
        ("a".into(), Some("b".into())),
    ]);
    assert_eq!(
        results,
        vec![
            None,
            Some(ResponseError::UnknownMemberId),
            Some(ResponseError::UnknownMemberId)
        ]
    );
    assert!(!consumer.members.contains_key("b"));
    assert_exclusive(&consumer);
}
