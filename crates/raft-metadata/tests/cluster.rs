//! Several Raft nodes, each with its real on-disk log in a temporary
//! directory, connected by an in-memory network the test controls: it
//! delivers, drops, partitions, crashes and restarts. Time is a tick count.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use keel_raft_metadata::{
    MetadataImage, MetadataRecord, Record,
    core::{CoreConfig, CoreEvent, ProposalContext, ProposeError, RaftCore},
    records::AllocateProducerIds,
};
use raft::eraftpb::{Message, MessageType};

const BLOCK: i64 = 10;

/// The entries one run of a node applied: index and the state machine's verdict.
type Lifetime = Vec<(u64, Result<(), keel_raft_metadata::ApplyError>)>;

struct Cluster {
    dir: tempfile::TempDir,
    config: CoreConfig,
    voters: Vec<(u64, String)>,
    nodes: BTreeMap<u64, Option<RaftCore>>,
    queue: VecDeque<Message>,
    /// Links that drop everything, as (from, to).
    cut: BTreeSet<(u64, u64)>,
    /// Every Applied event, per node and per lifetime of the node.
    applied: BTreeMap<u64, Vec<Lifetime>>,
    next_request: u64,
}

fn allocate(start: i64) -> MetadataRecord {
    Record::AllocateProducerIds(AllocateProducerIds {
        node_id: 1,
        start,
        size: BLOCK,
    })
    .into()
}

impl Cluster {
    fn new(size: u64, snapshot_entries: u64) -> Self {
        let voters: Vec<(u64, String)> = (1..=size).map(|id| (id, format!("node-{id}"))).collect();
        let mut config = CoreConfig::new(0);
        config.snapshot_entries = snapshot_entries;
        let mut cluster = Self {
            dir: tempfile::tempdir().unwrap(),
            config,
            voters,
            nodes: BTreeMap::new(),
            queue: VecDeque::new(),
            cut: BTreeSet::new(),
            applied: BTreeMap::new(),
            next_request: 1,
        };
        for id in 1..=size {
            cluster.start(id);
        }
        cluster
    }

    fn start(&mut self, id: u64) {
        let mut config = self.config.clone();
        config.id = id;
        let core =
            RaftCore::open(config, &self.dir.path().join(id.to_string()), &self.voters).unwrap();
        self.nodes.insert(id, Some(core));
        self.applied.entry(id).or_default().push(Vec::new());
    }

    fn crash(&mut self, id: u64) {
        self.nodes.insert(id, None);
        self.queue.retain(|m| m.to != id && m.from != id);
    }

    fn node(&mut self, id: u64) -> &mut RaftCore {
        self.nodes
            .get_mut(&id)
            .unwrap()
            .as_mut()
            .expect("node is running")
    }

    fn isolate(&mut self, id: u64) {
        for other in self.nodes.keys().copied().collect::<Vec<_>>() {
            if other != id {
                self.cut.insert((id, other));
                self.cut.insert((other, id));
            }
        }
    }

    fn heal(&mut self) {
        self.cut.clear();
    }

    /// Handles every node's Ready and delivers messages until the network
    /// is quiet.
    fn settle(&mut self) {
        for _ in 0..1000 {
            let mut progressed = false;
            let ids: Vec<u64> = self.nodes.keys().copied().collect();
            for id in ids {
                let Some(core) = self.nodes.get_mut(&id).unwrap().as_mut() else {
                    continue;
                };
                if !core.has_ready() {
                    continue;
                }
                progressed = true;
                let mut outgoing = Vec::new();
                let events = core
                    .handle_ready(&mut |messages| outgoing.extend(messages))
                    .unwrap();
                self.queue.extend(outgoing);
                let lifetime = self.applied.get_mut(&id).unwrap().last_mut().unwrap();
                for event in events {
                    if let CoreEvent::Applied { index, result, .. } = event {
                        lifetime.push((index, result));
                    }
                }
            }
            while let Some(message) = self.queue.pop_front() {
                progressed = true;
                let (from, to) = (message.from, message.to);
                let delivered = !self.cut.contains(&(from, to))
                    && self.nodes.get(&to).is_some_and(Option::is_some);
                let is_snapshot = message.get_msg_type() == MessageType::MsgSnapshot;
                if delivered {
                    let _ = self.node(to).step(message);
                }
                if is_snapshot {
                    if let Some(Some(sender)) = self.nodes.get_mut(&from) {
                        sender.report_snapshot(to, delivered);
                    }
                }
            }
            if !progressed {
                return;
            }
        }
        panic!("the cluster did not settle");
    }

    fn tick(&mut self, ticks: usize) {
        for _ in 0..ticks {
            for core in self.nodes.values_mut().flatten() {
                core.tick();
            }
            self.settle();
        }
    }

    /// The node that leads and may take proposals, once there is exactly one.
    fn ready_leader(&self) -> Option<u64> {
        let leaders: Vec<u64> = self
            .nodes
            .iter()
            .filter_map(|(id, core)| core.as_ref().filter(|c| c.leader_ready()).map(|_| *id))
            .collect();
        (leaders.len() == 1).then(|| leaders[0])
    }

    fn wait_for_leader(&mut self, excluding: Option<u64>) -> u64 {
        for _ in 0..200 {
            self.tick(1);
            if let Some(leader) = self.ready_leader().filter(|l| Some(*l) != excluding) {
                return leader;
            }
        }
        panic!("no leader elected");
    }

    fn propose(&mut self, id: u64, record: &MetadataRecord) -> Result<(), ProposeError> {
        let context = ProposalContext {
            origin: id,
            request_id: self.next_request,
        };
        self.next_request += 1;
        self.node(id).propose(context, record)
    }

    fn image(&mut self, id: u64) -> MetadataImage {
        self.node(id).image().clone()
    }

    /// Every lifetime of every node applied a contiguous run of indices,
    /// each once, and the state machine accepted every record.
    fn assert_applied_once_in_order(&self) {
        for (id, lifetimes) in &self.applied {
            for lifetime in lifetimes {
                for pair in lifetime.windows(2) {
                    assert!(
                        pair[1].0 > pair[0].0,
                        "node {id} applied {} after {}",
                        pair[1].0,
                        pair[0].0
                    );
                }
                for (index, result) in lifetime {
                    assert_eq!(result, &Ok(()), "node {id} entry {index}");
                }
            }
        }
    }
}

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
