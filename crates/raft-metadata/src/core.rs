//! The Raft node without IO at its edges: raft-rs's `RawNode`, the durable
//! log and the metadata state machine, driven by the caller with ticks,
//! inbound messages and proposals. It never sleeps, reads a socket or
//! spawns; messages to send are handed to a callback. The async node runs
//! it over real time and TCP; the tests run several over an in-memory
//! network.
//!
//! [`RaftCore::handle_ready`] processes one Ready in the order raft-rs
//! requires:
//!
//! 1. send the leader's messages at once (they do not depend on this
//!    node's log being durable);
//! 2. install a snapshot, if the Ready carries one;
//! 3. persist the new entries and the HardState in one fsynced write,
//!    dropping a conflicting tail;
//! 4. apply the committed entries, in order, to the state machine;
//! 5. only then send the messages that depend on the persisted state
//!    (votes, append acknowledgements);
//! 6. `advance`, then handle the light ready: record the commit index,
//!    send its messages, apply its committed entries; then `advance_apply`.
//!
//! Every storage error is returned and the caller stops the node.
//!
//! Invariants: `applied` only grows and every entry up to it was applied
//! exactly once in this process (or is covered by the snapshot the state
//! was restored from); nothing is applied beyond the durable commit index,
//! so a restarted node rebuilds its state at least as far as it ever was
//! (`recovered` says when it got there); `leader_ready` is true only while
//! this node leads and has applied an entry of its own term, the condition
//! for serving proposals.

mod apply;
mod membership;
mod quorum;

use std::{
    cmp::Reverse,
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use prost::Message as _;
use raft::{Config, RawNode, StateRole, eraftpb::Message};

use crate::{
    image::{ApplyError, MetadataImage},
    logger::logger,
    records::MetadataRecord,
    snapshot::{self, Members, SnapshotError},
    storage::{DurableStorage, StorageError},
};

/// Timing and snapshot settings of one node.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    pub id: u64,
    /// Ticks without a leader before a follower may campaign; it does after
    /// a random number of ticks in (election_tick, 2 * election_tick).
    pub election_tick: usize,
    pub heartbeat_tick: usize,
    /// Take a snapshot and compact the log after this many applied entries.
    pub snapshot_entries: u64,
    /// The node's data directory shows it was a member of the cluster
    /// before; without a Raft log it must rejoin (see `membership`).
    pub member_before: bool,
    /// For tests: committed records are applied this much later than they
    /// could be (a node slow to learn what the quorum decided).
    pub apply_delay: Duration,
}

impl CoreConfig {
    pub fn new(id: u64) -> Self {
        Self {
            id,
            election_tick: 8,
            heartbeat_tick: 2,
            snapshot_entries: 10_000,
            member_before: false,
            apply_delay: Duration::ZERO,
        }
    }
}

/// Carried in the context of a proposal's entry: who proposed it, so that
/// node can complete the proposal when it applies the entry.
///
/// `incarnation` is a nonce chosen each time a node starts. Request ids
/// restart with every run, and an entry proposed by an earlier run may
/// still be committed and applied after a restart; without the nonce it
/// would complete an unrelated proposal of the new run that happens to
/// carry the same request id.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct ProposalContext {
    #[prost(uint64, tag = "1")]
    pub origin: u64,
    #[prost(uint64, tag = "2")]
    pub request_id: u64,
    #[prost(uint64, tag = "3")]
    pub incarnation: u64,
}

/// Something the caller must act on after a Ready.
#[derive(Debug, Clone, PartialEq)]
pub enum CoreEvent {
    /// A metadata record was applied (or rejected by the state machine).
    Applied {
        index: u64,
        term: u64,
        origin: Option<ProposalContext>,
        result: Result<(), ApplyError>,
    },
    /// The Raft membership changed; `peers` maps every member to its
    /// cluster address.
    MembershipChanged {
        voters: Vec<u64>,
        learners: Vec<u64>,
        peers: BTreeMap<u64, String>,
    },
    /// The state machine was replaced by a snapshot from the leader. A
    /// `MembershipChanged` with the snapshot's members follows it.
    SnapshotInstalled { index: u64 },
    /// A committed conf change that raft-rs refused to apply (for example
    /// one that would remove every voter). Every node refuses it alike and
    /// the configuration stays as it was.
    ConfChangeRejected { index: u64, reason: String },
    /// The answer to [`RaftCore::read_index`]: once this node has applied
    /// `index`, it has applied everything the quorum had committed when
    /// the request `context` was made.
    ReadIndex { context: u64, index: u64 },
    /// This node's role or its view of the leader changed.
    RoleChanged {
        role: StateRole,
        leader_id: u64,
        term: u64,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}

/// Why a proposal was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    #[error("not the leader (leader: {leader_id:?})")]
    NotLeader { leader_id: Option<u64> },
    #[error("the leader has not yet applied an entry of its term")]
    NotReady,
    #[error("proposal dropped: {0}")]
    Dropped(String),
}

/// A snapshot of the node's Raft state, for status reporting.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CoreStatus {
    pub id: u64,
    pub role: Role,
    pub leader_id: Option<u64>,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub snapshot_index: u64,
    pub leader_ready: bool,
    /// The leader, once this node has applied an entry of the leader's
    /// term: only then has the leader committed something in its term, so
    /// it can serve proposals (the active controller). `None` during an
    /// election and until the new leader's first entry is applied here.
    pub controller_id: Option<u64>,
    /// The state machine has caught up with everything this node had
    /// committed before it started.
    pub recovered: bool,
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    #[default]
    Follower,
    Candidate,
    Leader,
}

impl From<StateRole> for Role {
    fn from(role: StateRole) -> Self {
        match role {
            StateRole::Leader => Self::Leader,
            StateRole::Candidate | StateRole::PreCandidate => Self::Candidate,
            StateRole::Follower => Self::Follower,
        }
    }
}

pub struct RaftCore {
    raw: RawNode<DurableStorage>,
    storage: DurableStorage,
    image: MetadataImage,
    peers: BTreeMap<u64, String>,
    /// Nodes taken back after losing their Raft log, with the nonce of the
    /// run taken back; replicated in conf change contexts and snapshots.
    rejoined: BTreeMap<u64, u64>,
    applied: u64,
    /// The term of the entry at `applied` (or of the snapshot it came from).
    applied_term: u64,
    snapshot_index: u64,
    leader_ready: bool,
    /// The durable commit index found on start.
    recovered_commit: u64,
    /// Set while this node, having lost its Raft log, waits to be taken
    /// back: the nonce of this rejoining run.
    rejoin_nonce: Option<u64>,
    dir: PathBuf,
    config: CoreConfig,
}

impl std::fmt::Debug for RaftCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftCore")
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

/// The priority of a node that yields every tie: one about to stop.
const YIELDING_PRIORITY: i64 = i64::MIN;

/// Breaks ties between candidates whose logs are equal: the lower Raft id
/// wins. Two followers whose election timeouts run out within a message's
/// flight of each other would otherwise each grant the other's pre-vote,
/// both stand, and split the vote, and the cluster would wait a whole
/// election timeout more for its next leader. raft-rs refuses a (pre-)vote
/// to a candidate of lower priority whose log is no longer than its own,
/// so the higher id yields; a longer log still wins whatever the id.
///
/// Set only from term 1 on (see `RaftCore::tick`): raft-rs stops the
/// process if it refuses a vote at term 0, as a fresh cluster's first
/// election with priorities would.
fn election_priority(id: u64) -> i64 {
    i64::MAX.saturating_sub(i64::try_from(id).unwrap_or(i64::MAX))
}

impl RaftCore {
    /// Opens the node's log in `dir` and restores the state machine from
    /// the latest snapshot; the entries after it are applied again as
    /// raft-rs hands them back. `voters` (id and cluster address) is the
    /// initial configuration of a new cluster.
    pub fn open(
        config: CoreConfig,
        dir: &Path,
        voters: &[(u64, String)],
    ) -> Result<Self, CoreError> {
        let mut voter_ids: Vec<u64> = voters.iter().map(|(id, _)| *id).collect();
        let rejoin_nonce =
            membership::must_rejoin(dir, config.id, config.member_before, &voter_ids)?;
        if rejoin_nonce.is_some() {
            // Not a member in its own eyes until the leader takes it back.
            voter_ids.retain(|&id| id != config.id);
        }
        let storage = DurableStorage::open(dir, &voter_ids)?;
        let snapshot = storage.latest_snapshot();
        let snapshot_index = snapshot.get_metadata().index;
        let snapshot_term = snapshot.get_metadata().term;
        let (image, mut members) = if snapshot_index > 0 {
            snapshot::decode(&snapshot.data)?
        } else {
            (MetadataImage::default(), Members::default())
        };
        for (id, address) in voters {
            members.peers.insert(*id, address.clone());
        }
        let raft_config = Config {
            id: config.id,
            election_tick: config.election_tick,
            // A follower grants (pre-)votes only once it has not heard from
            // the leader for a full election_tick; campaigning at exactly
            // that tick would often find the other follower a tick behind
            // and lose a whole round. One tick of margin avoids it.
            min_election_tick: config.election_tick + 1,
            max_election_tick: config.election_tick * 2,
            heartbeat_tick: config.heartbeat_tick,
            // The state machine is durable only up to the snapshot; what
            // follows is re-applied, never skipped.
            applied: snapshot_index,
            pre_vote: true,
            check_quorum: true,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            ..Config::default()
        };
        raft_config.validate()?;
        let raw = RawNode::new(&raft_config, storage.clone(), &logger())?;
        let recovered_commit = storage.hard_state().commit;
        Ok(Self {
            recovered_commit,
            raw,
            storage,
            image,
            peers: members.peers,
            rejoined: members.rejoined,
            applied: snapshot_index,
            applied_term: snapshot_term,
            snapshot_index,
            leader_ready: false,
            rejoin_nonce,
            dir: dir.to_path_buf(),
            config,
        })
    }

    pub fn id(&self) -> u64 {
        self.config.id
    }

    /// Campaigns at once if this node is the only voter, so a one-node
    /// cluster does not wait out an election timeout on start.
    pub fn campaign_if_sole_voter(&mut self) -> Result<(), CoreError> {
        let voters = self.storage.conf_state().voters;
        if voters == [self.config.id] && self.raw.raft.state != StateRole::Leader {
            self.raw.campaign()?;
        }
        Ok(())
    }

    /// Advances logical time. A node waiting to be taken back after
    /// losing its log does not tick: it must not campaign with a log that
    /// may lack entries it had acknowledged.
    pub fn tick(&mut self) -> bool {
        if self.rejoin_nonce.is_some() {
            return false;
        }
        if self.raw.raft.priority == 0 && self.raw.raft.term > 0 {
            self.raw
                .raft
                .set_priority(election_priority(self.config.id));
        }
        self.raw.tick()
    }

    /// Steps a message from a peer. Messages from unknown or stale senders
    /// are dropped by raft-rs; the error is only worth a debug line. A
    /// rejoining node drops what assumes it is the member it was.
    pub fn step(&mut self, message: Message) -> Result<(), raft::Error> {
        if self.refuses(&message) {
            return Ok(());
        }
        self.raw.step(message)
    }

    /// Proposes a metadata record; only a leader that has applied an entry
    /// of its own term accepts.
    pub fn propose(
        &mut self,
        context: ProposalContext,
        record: &MetadataRecord,
    ) -> Result<(), ProposeError> {
        self.check_can_propose()?;
        self.raw
            .propose(context.encode_to_vec(), record.encode_to_vec())
            .map_err(|e| ProposeError::Dropped(e.to_string()))
    }

    /// Hands leadership to the voter whose log matches the most of this
    /// leader's, the lowest id among equals (raft-rs's leader transfer: it
    /// campaigns at once, without an election timeout), as a leader does
    /// before it stops; the new leader's id, or `None` if this node does
    /// not lead or has no other voter.
    ///
    /// The target's log then equals this leader's, so a voter that caught
    /// up as far would refuse it a tie were its id lower (see
    /// `election_priority`): hence the lowest id, and this node yielding
    /// every tie from now on, for a voter may still catch up meanwhile.
    pub fn transfer_leadership(&mut self) -> Option<u64> {
        if self.raw.raft.state != StateRole::Leader {
            return None;
        }
        let me = self.config.id;
        let voters = self.storage.conf_state().voters;
        let progress = self.raw.raft.prs();
        let target = voters
            .iter()
            .copied()
            .filter(|id| *id != me)
            .min_by_key(|id| (Reverse(progress.get(*id).map_or(0, |p| p.matched)), *id))?;
        self.raw.raft.set_priority(YIELDING_PRIORITY);
        self.raw.transfer_leader(target);
        Some(target)
    }

    /// Asks the leader for its commit index, confirmed by a quorum
    /// heartbeat (raft-rs's ReadIndex). The answer comes as
    /// [`CoreEvent::ReadIndex`] with the same `context`; no answer comes if
    /// there is no leader or it has not yet committed an entry of its term,
    /// so callers retry.
    pub fn read_index(&mut self, context: u64) {
        self.raw.read_index(context.to_be_bytes().to_vec());
    }

    fn check_can_propose(&self) -> Result<(), ProposeError> {
        if self.raw.raft.state != StateRole::Leader {
            let leader = self.raw.raft.leader_id;
            return Err(ProposeError::NotLeader {
                leader_id: (leader != raft::INVALID_ID).then_some(leader),
            });
        }
        if !self.leader_ready {
            return Err(ProposeError::NotReady);
        }
        Ok(())
    }

    pub fn report_unreachable(&mut self, peer: u64) {
        self.raw.report_unreachable(peer);
    }

    pub fn report_snapshot(&mut self, peer: u64, delivered: bool) {
        let status = if delivered {
            raft::SnapshotStatus::Finish
        } else {
            raft::SnapshotStatus::Failure
        };
        self.raw.report_snapshot(peer, status);
    }

    pub fn has_ready(&self) -> bool {
        self.raw.has_ready()
    }

    /// Processes one Ready (see the module documentation for the order);
    /// `send` receives each batch of outgoing messages as soon as it may go.
    pub fn handle_ready(
        &mut self,
        send: &mut impl FnMut(Vec<Message>),
    ) -> Result<Vec<CoreEvent>, CoreError> {
        let mut events = Vec::new();
        if !self.raw.has_ready() {
            self.maybe_snapshot()?;
            return Ok(events);
        }
        let mut ready = self.raw.ready();
        if let Some(soft_state) = ready.ss() {
            if soft_state.raft_state != StateRole::Leader {
                self.leader_ready = false;
            }
            events.push(CoreEvent::RoleChanged {
                role: soft_state.raft_state,
                leader_id: soft_state.leader_id,
                term: self.raw.raft.term,
            });
        }
        for state in ready.take_read_states() {
            if let Ok(context) = <[u8; 8]>::try_from(state.request_ctx.as_slice()) {
                events.push(CoreEvent::ReadIndex {
                    context: u64::from_be_bytes(context),
                    index: state.index,
                });
            }
        }
        // 1. The leader's own messages do not wait for its disk.
        let messages = ready.take_messages();
        if !messages.is_empty() {
            send(messages);
        }
        // 2. A snapshot from the leader replaces log and state machine.
        if !ready.snapshot().is_empty() {
            let snapshot = ready.snapshot().clone();
            self.storage.apply_snapshot(&snapshot)?;
            self.restore(&snapshot)?;
            events.push(CoreEvent::SnapshotInstalled {
                index: snapshot.get_metadata().index,
            });
            let conf_state = snapshot.get_metadata().get_conf_state();
            events.push(CoreEvent::MembershipChanged {
                voters: conf_state.voters.clone(),
                learners: conf_state.learners.clone(),
                peers: self.peers.clone(),
            });
        }
        // 3. Entries and HardState: one write, one fsync.
        self.storage.persist(ready.entries(), ready.hs())?;
        // 4. Committed entries, in order.
        let committed = ready.take_committed_entries();
        self.apply_entries(committed, &mut events)?;
        // 5. Messages that acknowledge what was just persisted.
        let persisted = ready.take_persisted_messages();
        if !persisted.is_empty() {
            send(persisted);
        }
        // 6. The light ready.
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.storage.persist_commit(commit)?;
        }
        let messages = light.take_messages();
        if !messages.is_empty() {
            send(messages);
        }
        let committed = light.take_committed_entries();
        self.apply_entries(committed, &mut events)?;
        self.raw.advance_apply();
        self.maybe_snapshot()?;
        self.check_rejoined()?;
        Ok(events)
    }

    pub fn image(&self) -> &MetadataImage {
        &self.image
    }

    pub fn peers(&self) -> &BTreeMap<u64, String> {
        &self.peers
    }

    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    pub fn leader_ready(&self) -> bool {
        self.leader_ready
    }

    pub fn leader_id(&self) -> Option<u64> {
        let leader = self.raw.raft.leader_id;
        (leader != raft::INVALID_ID).then_some(leader)
    }

    /// The leader once this node has applied an entry of its term; see
    /// [`CoreStatus::controller_id`].
    pub fn controller_id(&self) -> Option<u64> {
        self.leader_id()
            .filter(|_| self.applied_term == self.raw.raft.term)
    }

    pub fn applied_index(&self) -> u64 {
        self.applied
    }

    pub fn commit_index(&self) -> u64 {
        self.raw.raft.raft_log.committed
    }

    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }

    pub fn status(&self) -> CoreStatus {
        let conf_state = self.storage.conf_state();
        CoreStatus {
            id: self.config.id,
            role: self.raw.raft.state.into(),
            leader_id: self.leader_id(),
            term: self.raw.raft.term,
            commit_index: self.raw.raft.raft_log.committed,
            applied_index: self.applied,
            snapshot_index: self.snapshot_index,
            leader_ready: self.leader_ready,
            controller_id: self.controller_id(),
            recovered: self.applied >= self.recovered_commit,
            voters: conf_state.voters,
            learners: conf_state.learners,
        }
    }
}
