//! The harness of the deterministic Raft tests: several [`RaftCore`]s, each
//! with its real on-disk log in a temporary directory, connected by an
//! in-memory network the test controls: it delivers (all at once or one
//! message at a time), drops, partitions, crashes and restarts. Time is a
//! tick count.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use keel_raft_metadata::{
    MetadataImage, MetadataRecord, Record,
    core::{CoreConfig, CoreEvent, ProposalContext, ProposeError, RaftCore},
    records::AllocateProducerIds,
};
use raft::eraftpb::{Message, MessageType};

pub const BLOCK: i64 = 10;

/// The entries one run of a node applied: index and the state machine's verdict.
pub type Lifetime = Vec<(u64, Result<(), keel_raft_metadata::ApplyError>)>;

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub config: CoreConfig,
    pub voters: Vec<(u64, String)>,
    pub nodes: BTreeMap<u64, Option<RaftCore>>,
    pub queue: VecDeque<Message>,
    /// Links that drop everything, as (from, to).
    pub cut: BTreeSet<(u64, u64)>,
    /// Every Applied event, per node and per lifetime of the node.
    pub applied: BTreeMap<u64, Vec<Lifetime>>,
    /// Every event each node reported, across its lifetimes.
    pub events: BTreeMap<u64, Vec<CoreEvent>>,
    pub next_request: u64,
}

pub fn allocate(start: i64) -> MetadataRecord {
    Record::AllocateProducerIds(AllocateProducerIds {
        node_id: 1,
        start,
        size: BLOCK,
    })
    .into()
}

impl Cluster {
    pub fn new(size: u64, snapshot_entries: u64) -> Self {
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
            events: BTreeMap::new(),
            next_request: 1,
        };
        for id in 1..=size {
            cluster.start(id);
        }
        cluster
    }

    pub fn start(&mut self, id: u64) {
        let mut config = self.config.clone();
        config.id = id;
        let core =
            RaftCore::open(config, &self.dir.path().join(id.to_string()), &self.voters).unwrap();
        self.nodes.insert(id, Some(core));
        self.applied.entry(id).or_default().push(Vec::new());
    }

    /// Crashes a node, wipes its Raft log, and starts it again on a data
    /// directory that shows it was a member (so it must rejoin).
    pub fn restart_without_its_log(&mut self, id: u64) {
        self.crash(id);
        let dir = self.dir.path().join(id.to_string());
        if dir.exists() {
            std::fs::remove_dir_all(dir).unwrap();
        }
        self.config.member_before = true;
        self.start(id);
        self.config.member_before = false;
    }

    /// What the runtime does for a node that lost its log, one step: the
    /// node asks `leader` to take it back if it wants to join, and `leader`
    /// promotes a learner that caught up with the configured voters 1..=3.
    pub fn rejoin_step(&mut self, lost: u64, leader: u64) {
        if let Some(nonce) = self.node(lost).join_request() {
            let _ = self
                .node(leader)
                .handle_join(lost, &format!("node-{lost}"), nonce);
        }
        self.node(leader).promote_caught_up_learner(&[1, 2, 3]);
    }

    /// Whether every node has voters 1..=3 and `lost` is back.
    pub fn whole_again(&mut self, lost: u64) -> bool {
        (1..=3).all(|id| self.node(id).status().voters == vec![1, 2, 3])
            && !self.node(lost).is_rejoining()
    }

    pub fn crash(&mut self, id: u64) {
        self.nodes.insert(id, None);
        self.queue.retain(|m| m.to != id && m.from != id);
    }

    pub fn node(&mut self, id: u64) -> &mut RaftCore {
        self.nodes
            .get_mut(&id)
            .unwrap()
            .as_mut()
            .expect("node is running")
    }

    pub fn isolate(&mut self, id: u64) {
        for other in self.nodes.keys().copied().collect::<Vec<_>>() {
            if other != id {
                self.cut.insert((id, other));
                self.cut.insert((other, id));
            }
        }
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Handles every node's pending Ready, queueing what it sends and
    /// recording its events; whether any node had one.
    pub fn handle_readies(&mut self) -> bool {
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
            for event in &events {
                if let CoreEvent::Applied { index, result, .. } = event {
                    lifetime.push((*index, result.clone()));
                }
            }
            self.events.entry(id).or_default().extend(events);
        }
        progressed
    }

    /// Delivers (or drops, across a cut link or to a crashed node) the
    /// oldest queued message; false when the queue is empty.
    pub fn deliver_one(&mut self) -> bool {
        let Some(message) = self.queue.pop_front() else {
            return false;
        };
        let (from, to) = (message.from, message.to);
        let delivered =
            !self.cut.contains(&(from, to)) && self.nodes.get(&to).is_some_and(Option::is_some);
        let is_snapshot = message.get_msg_type() == MessageType::MsgSnapshot;
        if delivered {
            let _ = self.node(to).step(message);
        }
        if is_snapshot {
            if let Some(Some(sender)) = self.nodes.get_mut(&from) {
                sender.report_snapshot(to, delivered);
            }
        }
        true
    }

    /// One small step: every pending Ready, then one message.
    pub fn step(&mut self) -> bool {
        let readies = self.handle_readies();
        self.deliver_one() || readies
    }

    /// Handles every node's Ready and delivers messages until the network
    /// is quiet.
    pub fn settle(&mut self) {
        for _ in 0..1000 {
            let mut progressed = self.handle_readies();
            while self.deliver_one() {
                progressed = true;
            }
            if !progressed {
                return;
            }
        }
        panic!("the cluster did not settle");
    }

    pub fn tick(&mut self, ticks: usize) {
        for _ in 0..ticks {
            for core in self.nodes.values_mut().flatten() {
                core.tick();
            }
            self.settle();
        }
    }

    /// The node that leads and may take proposals, once there is exactly one.
    pub fn ready_leader(&self) -> Option<u64> {
        let leaders: Vec<u64> = self
            .nodes
            .iter()
            .filter_map(|(id, core)| core.as_ref().filter(|c| c.leader_ready()).map(|_| *id))
            .collect();
        (leaders.len() == 1).then(|| leaders[0])
    }

    pub fn wait_for_leader(&mut self, excluding: Option<u64>) -> u64 {
        for _ in 0..200 {
            self.tick(1);
            if let Some(leader) = self.ready_leader().filter(|l| Some(*l) != excluding) {
                return leader;
            }
        }
        panic!("no leader elected");
    }

    pub fn propose(&mut self, id: u64, record: &MetadataRecord) -> Result<(), ProposeError> {
        let context = ProposalContext {
            origin: id,
            request_id: self.next_request,
            incarnation: 1,
        };
        self.next_request += 1;
        self.node(id).propose(context, record)
    }

    pub fn image(&mut self, id: u64) -> MetadataImage {
        self.node(id).image().clone()
    }

    /// Every lifetime of every node applied a contiguous run of indices,
    /// each once, and the state machine accepted every record.
    pub fn assert_applied_once_in_order(&self) {
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
