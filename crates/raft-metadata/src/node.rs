//! The Raft node at runtime. The ready loop runs on a thread of its own
//! (with a single-threaded tokio runtime for its timers and channels), as
//! TiKV runs its raft loop: its fsyncs and snapshot writes block only that
//! thread, never the broker's async workers, and a slow request handler
//! never delays a tick. It wakes on a tick, on a message from a peer or on
//! a command, never on a polling timer. After every wake-up it handles the
//! Ready, completes proposals whose entries were applied here, answers read
//! barriers and publishes the new metadata image. The transport's tasks and
//! listener run on the caller's runtime.
//!
//! Proposals carry `(origin node, incarnation, request id)` in their
//! entry's context (see [`crate::proposals`]). A follower forwards a
//! proposal to the leader; whichever node proposed it, the origin completes
//! it when it applies the entry, as every node applies every entry. A
//! proposal fails promptly when the leadership changes under it (it may or
//! may not have been committed) and when its deadline passes.
//!
//! A read barrier ([`MetadataHandle::read_barrier`]) asks the leader for
//! its commit index through raft-rs's ReadIndex and resolves once this
//! node has applied up to it: the image then holds everything the quorum
//! had committed when the barrier was asked.
//!
//! A node not in the initial voters asks a voter to add it as a learner
//! until it finds itself in the configuration; it then receives the log or
//! a snapshot like any follower.

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use prost::Message as _;
use raft::StateRole;
use tokio::{
    net::TcpListener,
    sync::{mpsc, oneshot, watch},
    task::JoinHandle,
    time::Instant,
};

use crate::{
    core::{CoreConfig, CoreError, CoreEvent, CoreStatus, ProposeError, RaftCore, Role},
    image::{ApplyError, MetadataImage},
    proposals::{Proposals, Stage},
    records::MetadataRecord,
    transport::{self, Body, Forward, Join, Rejected, Transport, TransportEvent},
};

/// How often a node outside the configuration asks to join.
const JOIN_INTERVAL: Duration = Duration::from_millis(500);
/// How long a read barrier waits for the leader's answer before asking
/// again (the leader drops requests it cannot serve yet).
const READ_RETRY: Duration = Duration::from_millis(200);

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub id: u64,
    /// Address the Raft listener binds.
    pub listen: SocketAddr,
    /// Bind the listener even while this node is the only member. A node
    /// alone needs no peers' messages, so by default it binds only when the
    /// configuration names other members.
    pub listen_when_alone: bool,
    /// Address other nodes reach this one at.
    pub advertised: String,
    /// The initial voters of the cluster, with their Raft addresses.
    pub voters: Vec<(u64, String)>,
    pub dir: PathBuf,
    pub tick: Duration,
    pub election_tick: usize,
    pub heartbeat_tick: usize,
    pub snapshot_entries: u64,
    /// How long a proposal may wait for a leader and a commit.
    pub proposal_timeout: Duration,
}

impl NodeConfig {
    /// Defaults aimed at a controller failover under a second on a LAN:
    /// 50 ms ticks, heartbeats every 2 ticks, and a campaign after 9 to 15
    /// silent ticks (450 to 800 ms).
    pub fn new(
        id: u64,
        listen: SocketAddr,
        advertised: String,
        voters: Vec<(u64, String)>,
        dir: PathBuf,
    ) -> Self {
        Self {
            id,
            listen,
            listen_when_alone: true,
            advertised,
            voters,
            dir,
            tick: Duration::from_millis(50),
            election_tick: 8,
            heartbeat_tick: 2,
            snapshot_entries: 10_000,
            proposal_timeout: Duration::from_secs(10),
        }
    }
}

/// Why a proposal did not take effect.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposalError {
    /// The state machine rejected the record; nothing changed.
    #[error(transparent)]
    Rejected(#[from] ApplyError),
    /// No leader could commit it in time.
    #[error("timed out waiting for the metadata quorum")]
    Timeout,
    /// The leader changed while it was in flight; it may or may not have
    /// been applied.
    #[error("the metadata leader changed while the change was in flight")]
    LeadershipChanged,
    #[error("the metadata node is shutting down")]
    Stopped,
}

impl ProposalError {
    /// Whether retrying can succeed.
    pub fn is_retriable(&self) -> bool {
        !matches!(self, Self::Rejected(_))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot listen for raft peers on {address}: {source}")]
    Listen {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Core(#[from] CoreError),
    #[error("the raft thread could not start: {0}")]
    Thread(std::io::Error),
    #[error("the raft thread ended abruptly")]
    Aborted,
}

/// The node's state as others see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeStatus {
    pub core: CoreStatus,
    /// Times this node saw the leader change.
    pub leader_changes: u64,
}

type Reply = oneshot::Sender<Result<Arc<MetadataImage>, ProposalError>>;
type BarrierReply = oneshot::Sender<Result<(), ProposalError>>;

enum Command {
    Propose {
        record: MetadataRecord,
        reply: Reply,
    },
    ReadBarrier {
        reply: BarrierReply,
    },
    Shutdown,
}

/// A cheap handle on the running node.
#[derive(Debug, Clone)]
pub struct MetadataHandle {
    commands: mpsc::Sender<Command>,
    image: watch::Receiver<Arc<MetadataImage>>,
    status: watch::Receiver<NodeStatus>,
    raft_address: Option<SocketAddr>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Propose { .. } => f.write_str("Propose"),
            Self::ReadBarrier { .. } => f.write_str("ReadBarrier"),
            Self::Shutdown => f.write_str("Shutdown"),
        }
    }
}

impl MetadataHandle {
    /// Commits a metadata change through Raft and returns the image right
    /// after it was applied on this node.
    pub async fn propose(
        &self,
        record: MetadataRecord,
    ) -> Result<Arc<MetadataImage>, ProposalError> {
        let (reply, response) = oneshot::channel();
        self.commands
            .send(Command::Propose { record, reply })
            .await
            .map_err(|_| ProposalError::Stopped)?;
        response.await.unwrap_or(Err(ProposalError::Stopped))
    }

    /// Resolves once this node's image holds everything the quorum had
    /// committed when it was called. It waits for as long as there is no
    /// leader to ask; only a stopping node makes it fail.
    pub async fn read_barrier(&self) -> Result<(), ProposalError> {
        let (reply, response) = oneshot::channel();
        self.commands
            .send(Command::ReadBarrier { reply })
            .await
            .map_err(|_| ProposalError::Stopped)?;
        response.await.unwrap_or(Err(ProposalError::Stopped))
    }

    /// The last image applied on this node, whether or not a quorum is up.
    pub fn image(&self) -> Arc<MetadataImage> {
        Arc::clone(&self.image.borrow())
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.image.clone()
    }

    pub fn status(&self) -> NodeStatus {
        self.status.borrow().clone()
    }

    pub fn watch_status(&self) -> watch::Receiver<NodeStatus> {
        self.status.clone()
    }

    /// The address the Raft listener is bound to, if it is bound.
    pub fn raft_address(&self) -> Option<SocketAddr> {
        self.raft_address
    }

    pub async fn shutdown(&self) {
        let _ = self.commands.send(Command::Shutdown).await;
    }
}

/// Opens the node's log, binds its listener if it has peers (or is told to)
/// and starts its thread. The returned task ends when the node stops, with
/// an error if storage failed; the caller must stop then.
pub async fn start(
    config: NodeConfig,
) -> Result<(MetadataHandle, JoinHandle<Result<(), NodeError>>), NodeError> {
    let mut core_config = CoreConfig::new(config.id);
    core_config.election_tick = config.election_tick;
    core_config.heartbeat_tick = config.heartbeat_tick;
    core_config.snapshot_entries = config.snapshot_entries;
    let voters = config.voters.clone();
    let dir = config.dir.clone();
    let core = tokio::task::spawn_blocking(move || RaftCore::open(core_config, &dir, &voters))
        .await
        .map_err(|_| NodeError::Aborted)??;
    let has_peers = core.peers().keys().any(|&id| id != config.id)
        || core
            .status()
            .voters
            .iter()
            .chain(&core.status().learners)
            .any(|&id| id != config.id);
    let listener = if config.listen_when_alone || has_peers {
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| NodeError::Listen {
                    address: config.listen,
                    source,
                })?;
        Some(listener)
    } else {
        None
    };
    let raft_address = listener.as_ref().and_then(|l| l.local_addr().ok());

    let (commands_tx, commands) = mpsc::channel(1024);
    let (events_tx, events) = mpsc::channel(4096);
    let (image_tx, image) = watch::channel(Arc::new(core.image().clone()));
    let (status_tx, status) = watch::channel(NodeStatus {
        core: core.status(),
        leader_changes: 0,
    });
    let runtime = tokio::runtime::Handle::current();
    let listener_task = listener.map(|l| runtime.spawn(transport::serve(l, events_tx.clone())));
    let mut transport = Transport::new(config.id, events_tx, runtime);
    transport.set_peers(core.peers());

    let incarnation = u64::from_le_bytes(
        uuid::Uuid::new_v4().as_bytes()[..8]
            .try_into()
            .unwrap_or_default(),
    );
    let node = Node {
        proposals: Proposals::new(config.id, incarnation),
        reads: HashMap::new(),
        next_read: incarnation,
        config,
        core,
        transport,
        image_tx,
        status_tx,
        leader_changes: 0,
        last_leader: None,
        last_join: None,
    };
    let (done_tx, done) = oneshot::channel();
    std::thread::Builder::new()
        .name("keel-raft".into())
        .spawn(move || {
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(NodeError::Thread)
                .and_then(|runtime| runtime.block_on(node.run(commands, events)));
            let _ = done_tx.send(result);
        })
        .map_err(NodeError::Thread)?;
    let task = tokio::spawn(async move {
        let result = done.await.unwrap_or(Err(NodeError::Aborted));
        if let Some(listener) = listener_task {
            listener.abort();
        }
        result
    });
    Ok((
        MetadataHandle {
            commands: commands_tx,
            image,
            status,
            raft_address,
        },
        task,
    ))
}

/// A proposal's record and the caller waiting for its outcome.
struct Proposal {
    record: MetadataRecord,
    reply: Reply,
}

/// A read barrier waiting for the leader's commit index, then for this
/// node to apply up to it.
struct PendingRead {
    reply: BarrierReply,
    index: Option<u64>,
    asked: Instant,
}

struct Node {
    config: NodeConfig,
    core: RaftCore,
    transport: Transport,
    proposals: Proposals<Proposal>,
    reads: HashMap<u64, PendingRead>,
    next_read: u64,
    image_tx: watch::Sender<Arc<MetadataImage>>,
    status_tx: watch::Sender<NodeStatus>,
    leader_changes: u64,
    last_leader: Option<u64>,
    last_join: Option<Instant>,
}

impl Node {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut events: mpsc::Receiver<TransportEvent>,
    ) -> Result<(), NodeError> {
        let mut ticker = tokio::time::interval(self.config.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.core.campaign_if_sole_voter()?;
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    self.core.tick();
                    self.on_tick();
                }
                command = commands.recv() => match command {
                    Some(Command::Propose { record, reply }) => self.submit(record, reply),
                    Some(Command::ReadBarrier { reply }) => self.read_barrier(reply),
                    Some(Command::Shutdown) | None => break,
                },
                Some(event) = events.recv() => self.on_transport_event(event),
            }
            // Take whatever else arrived meanwhile before the next Ready, so
            // one fsync covers many messages.
            while let Ok(event) = events.try_recv() {
                self.on_transport_event(event);
            }
            self.process_ready()?;
        }
        self.fail_all(ProposalError::Stopped);
        Ok(())
    }

    fn process_ready(&mut self) -> Result<(), NodeError> {
        let transport = &self.transport;
        let mut failed = Vec::new();
        let events = self
            .core
            .handle_ready(&mut |messages| failed.extend(transport.send_raft(messages)))?;
        for (peer, snapshot) in failed {
            self.core.report_unreachable(peer);
            if snapshot {
                self.core.report_snapshot(peer, false);
            }
        }
        let mut completed = Vec::new();
        let mut image_changed = false;
        for event in events {
            match event {
                CoreEvent::Applied { origin, result, .. } => {
                    image_changed |= result.is_ok();
                    if let Some(pending) = origin.and_then(|o| self.proposals.complete(&o)) {
                        completed.push((pending.payload.reply, result));
                    }
                }
                CoreEvent::SnapshotInstalled { index } => {
                    tracing::info!(index, "installed a metadata snapshot from the leader");
                    image_changed = true;
                }
                CoreEvent::MembershipChanged {
                    voters,
                    learners,
                    peers,
                } => {
                    tracing::info!(?voters, ?learners, "raft membership changed");
                    self.transport.set_peers(&peers);
                }
                CoreEvent::ConfChangeRejected { .. } => {}
                CoreEvent::ReadIndex { context, index } => {
                    if let Some(read) = self.reads.get_mut(&context) {
                        read.index.get_or_insert(index);
                    }
                }
                CoreEvent::RoleChanged {
                    role,
                    leader_id,
                    term,
                } => self.on_role_change(role, leader_id, term),
            }
        }
        let image = Arc::new(self.core.image().clone());
        if image_changed {
            self.image_tx.send_replace(Arc::clone(&image));
        }
        for (reply, result) in completed {
            let _ = reply.send(
                result
                    .map(|()| Arc::clone(&image))
                    .map_err(ProposalError::from),
            );
        }
        self.complete_reads();
        self.publish_status();
        Ok(())
    }

    fn on_role_change(&mut self, role: StateRole, leader_id: u64, term: u64) {
        let leader = (leader_id != raft::INVALID_ID).then_some(leader_id);
        if leader != self.last_leader {
            self.leader_changes += 1;
            tracing::info!(?leader, term, role = ?Role::from(role), "metadata leader changed");
            // Whatever was in flight under the old leader may or may not
            // commit; tell the callers now rather than at their deadline.
            for pending in self.proposals.take(|p| p.stage != Stage::Waiting) {
                let _ = pending
                    .payload
                    .reply
                    .send(Err(ProposalError::LeadershipChanged));
            }
            self.last_leader = leader;
        }
    }

    fn submit(&mut self, record: MetadataRecord, reply: Reply) {
        let deadline = Instant::now() + self.config.proposal_timeout;
        let context = self.proposals.insert(Proposal { record, reply }, deadline);
        self.advance(context.request_id);
    }

    /// Moves a waiting proposal on: propose it here if this node leads,
    /// else forward it to the leader.
    fn advance(&mut self, request_id: u64) {
        let Some(pending) = self.proposals.get(request_id) else {
            return;
        };
        if pending.stage != Stage::Waiting {
            return;
        }
        let context = self.proposals.context(request_id);
        let record = &pending.payload.record;
        let stage = match self.core.propose(context, record) {
            Ok(()) => Stage::Proposed,
            Err(ProposeError::NotLeader {
                leader_id: Some(leader),
            }) => {
                let forward = Body::Forward(Forward {
                    request_id,
                    record: record.encode_to_vec(),
                    incarnation: context.incarnation,
                });
                if self.transport.send(leader, forward) {
                    Stage::Forwarded(leader)
                } else {
                    Stage::Waiting
                }
            }
            Err(ProposeError::NotLeader { leader_id: None } | ProposeError::NotReady) => {
                Stage::Waiting
            }
            Err(ProposeError::Dropped(reason)) => {
                tracing::debug!(%reason, "proposal dropped by raft; retrying");
                Stage::Waiting
            }
        };
        self.proposals.set_stage(request_id, stage);
    }

    fn read_barrier(&mut self, reply: BarrierReply) {
        let context = self.next_read;
        self.next_read = self.next_read.wrapping_add(1);
        self.core.read_index(context);
        self.reads.insert(
            context,
            PendingRead {
                reply,
                index: None,
                asked: Instant::now(),
            },
        );
    }

    /// Answers the read barriers this node has applied far enough for,
    /// and forgets those whose caller went away.
    fn complete_reads(&mut self) {
        let applied = self.core.status().applied_index;
        self.reads.retain(|_, read| !read.reply.is_closed());
        let done: Vec<u64> = self
            .reads
            .iter()
            .filter(|(_, read)| read.index.is_some_and(|index| index <= applied))
            .map(|(context, _)| *context)
            .collect();
        for context in done {
            if let Some(read) = self.reads.remove(&context) {
                let _ = read.reply.send(Ok(()));
            }
        }
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        for pending in self.proposals.take(|p| p.deadline <= now) {
            let _ = pending.payload.reply.send(Err(ProposalError::Timeout));
        }
        for request_id in self.proposals.waiting() {
            self.advance(request_id);
        }
        let unanswered: Vec<u64> = self
            .reads
            .iter()
            .filter(|(_, read)| read.index.is_none() && now - read.asked >= READ_RETRY)
            .map(|(context, _)| *context)
            .collect();
        for context in unanswered {
            self.core.read_index(context);
            if let Some(read) = self.reads.get_mut(&context) {
                read.asked = now;
            }
        }
        self.maybe_join(now);
        self.publish_status();
    }

    /// Asks to be added as a learner while this node is not a member.
    fn maybe_join(&mut self, now: Instant) {
        let status = self.core.status();
        let id = self.config.id;
        if status.voters.contains(&id) || status.learners.contains(&id) {
            return;
        }
        if self.last_join.is_some_and(|at| now - at < JOIN_INTERVAL) {
            return;
        }
        self.last_join = Some(now);
        let join = Join {
            node_id: id,
            address: self.config.advertised.clone(),
        };
        for voter in status.voters {
            self.transport.send(voter, Body::Join(join.clone()));
        }
    }

    fn on_transport_event(&mut self, event: TransportEvent) {
        match event {
            TransportEvent::Unreachable(peer) => self.core.report_unreachable(peer),
            TransportEvent::SnapshotSent { to, delivered } => {
                self.core.report_snapshot(to, delivered)
            }
            TransportEvent::Received(envelope) => self.on_envelope(envelope.from, envelope.body),
        }
    }

    fn on_envelope(&mut self, from: u64, body: Option<Body>) {
        match body {
            Some(Body::Raft(bytes)) => match transport::decode_raft(&bytes) {
                Some(message) => {
                    if let Err(e) = self.core.step(message) {
                        tracing::debug!(from, error = %e, "ignored a raft message");
                    }
                }
                None => tracing::warn!(from, "undecodable raft message"),
            },
            Some(Body::Forward(forward)) => {
                let accepted = MetadataRecord::decode(forward.record.as_slice())
                    .map_err(|_| ProposeError::Dropped("undecodable record".into()))
                    .and_then(|record| {
                        let context = crate::core::ProposalContext {
                            origin: from,
                            request_id: forward.request_id,
                            incarnation: forward.incarnation,
                        };
                        self.core.propose(context, &record)
                    });
                if accepted.is_err() {
                    let rejected = Rejected {
                        request_id: forward.request_id,
                        leader_id: self.core.leader_id().unwrap_or(0),
                        incarnation: forward.incarnation,
                    };
                    self.transport.send(from, Body::Rejected(rejected));
                }
            }
            Some(Body::Rejected(rejected)) => {
                self.proposals
                    .rejected(rejected.request_id, rejected.incarnation);
            }
            Some(Body::Join(join)) => {
                if self.core.is_leader() {
                    if let Err(e) = self.core.propose_learner(join.node_id, &join.address) {
                        tracing::debug!(node = join.node_id, error = %e, "cannot add learner yet");
                    }
                } else if let Some(leader) = self.core.leader_id() {
                    self.transport.send(leader, Body::Join(join));
                }
            }
            None => {}
        }
    }

    fn publish_status(&self) {
        let status = NodeStatus {
            core: self.core.status(),
            leader_changes: self.leader_changes,
        };
        self.status_tx.send_if_modified(|current| {
            let changed = *current != status;
            if changed {
                *current = status;
            }
            changed
        });
    }

    fn fail_all(&mut self, error: ProposalError) {
        for pending in self.proposals.drain() {
            let _ = pending.payload.reply.send(Err(error.clone()));
        }
        for (_, read) in self.reads.drain() {
            let _ = read.reply.send(Err(error.clone()));
        }
    }
}

/// Parses `--voters`: `ID@HOST:PORT` separated by commas.
pub fn parse_voters(spec: &str) -> Result<Vec<(u64, String)>, String> {
    let mut voters = BTreeMap::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (id, address) = item
            .split_once('@')
            .ok_or_else(|| format!("'{item}' is not ID@HOST:PORT"))?;
        let id: u64 = id
            .parse()
            .map_err(|_| format!("'{id}' in '{item}' is not a node id"))?;
        if id == 0 {
            return Err(format!("node id 0 in '{item}' is reserved"));
        }
        if !address.contains(':') {
            return Err(format!("'{address}' in '{item}' is not HOST:PORT"));
        }
        if voters.insert(id, address.to_string()).is_some() {
            return Err(format!("node {id} appears twice"));
        }
    }
    if voters.is_empty() {
        return Err("no voters given".into());
    }
    Ok(voters.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voters_parse_and_bad_lists_are_named() {
        assert_eq!(
            parse_voters("1@a:1, 2@b:2").unwrap(),
            vec![(1, "a:1".to_string()), (2, "b:2".to_string())]
        );
        for bad in ["", "1", "x@a:1", "1@a", "0@a:1", "1@a:1,1@b:2"] {
            assert!(parse_voters(bad).is_err(), "{bad:?} accepted");
        }
    }
}
