//! The Raft node at runtime: one tokio task owns the [`RaftCore`] and wakes
//! on a tick, on a message from a peer, or on a proposal, never on a polling
//! timer. After every wake-up it handles the Ready, completes proposals
//! whose entries were applied here, and publishes the new metadata image.
//!
//! Proposals carry `(origin node, request id)` in their entry's context.
//! A follower forwards a proposal to the leader; whichever node proposed it,
//! the origin completes it when it applies the entry, as every node applies
//! every entry. A proposal fails promptly when the leadership changes under
//! it (it may or may not have been committed) and when its deadline passes.
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
    core::{
        CoreConfig, CoreError, CoreEvent, CoreStatus, ProposalContext, ProposeError, RaftCore, Role,
    },
    image::{ApplyError, MetadataImage},
    records::MetadataRecord,
    transport::{self, Body, Forward, Join, Rejected, Transport, TransportEvent},
};

/// How often a node outside the configuration asks to join.
const JOIN_INTERVAL: Duration = Duration::from_millis(500);

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub id: u64,
    /// Address the Raft listener binds.
    pub listen: SocketAddr,
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
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Core(#[from] CoreError),
}

/// The node's state as others see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeStatus {
    pub core: CoreStatus,
    /// Times this node saw the leader change.
    pub leader_changes: u64,
}

type Reply = oneshot::Sender<Result<Arc<MetadataImage>, ProposalError>>;

enum Command {
    Propose {
        record: MetadataRecord,
        reply: Reply,
    },
    Shutdown,
}

/// A cheap handle on the running node.
#[derive(Debug, Clone)]
pub struct MetadataHandle {
    commands: mpsc::Sender<Command>,
    image: watch::Receiver<Arc<MetadataImage>>,
    status: watch::Receiver<NodeStatus>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Propose { .. } => f.write_str("Propose"),
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

    pub async fn shutdown(&self) {
        let _ = self.commands.send(Command::Shutdown).await;
    }
}

/// Opens the node's log, binds its listener and starts its task. The task
/// ends with an error if storage fails; the caller must stop then.
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
        .map_err(|e| {
            NodeError::Core(CoreError::Raft(raft::Error::ConfigInvalid(e.to_string())))
        })??;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| NodeError::Listen {
            address: config.listen,
            source,
        })?;

    let (commands_tx, commands) = mpsc::channel(1024);
    let (events_tx, events) = mpsc::channel(4096);
    let (image_tx, image) = watch::channel(Arc::new(core.image().clone()));
    let (status_tx, status) = watch::channel(NodeStatus {
        core: core.status(),
        leader_changes: 0,
    });
    let listener_task = tokio::spawn(transport::serve(listener, events_tx.clone()));
    let mut transport = Transport::new(config.id, events_tx);
    transport.set_peers(core.peers());

    let node = Node {
        config,
        core,
        transport,
        pending: HashMap::new(),
        next_request: 1,
        image_tx,
        status_tx,
        leader_changes: 0,
        last_leader: None,
        last_join: None,
    };
    let task = tokio::spawn(async move {
        let result = node.run(commands, events).await;
        listener_task.abort();
        result
    });
    Ok((
        MetadataHandle {
            commands: commands_tx,
            image,
            status,
        },
        task,
    ))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// No leader known yet, or it was not ready.
    Waiting,
    /// Proposed to raft-rs on this node as leader.
    Proposed,
    /// Sent to the leader.
    Forwarded(u64),
}

struct Pending {
    record: MetadataRecord,
    reply: Reply,
    deadline: Instant,
    stage: Stage,
}

struct Node {
    config: NodeConfig,
    core: RaftCore,
    transport: Transport,
    pending: HashMap<u64, Pending>,
    next_request: u64,
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
        if events.is_empty() {
            return Ok(());
        }
        let mut completed = Vec::new();
        let mut image_changed = false;
        for event in events {
            match event {
                CoreEvent::Applied { origin, result, .. } => {
                    image_changed |= result.is_ok();
                    if let Some(origin) = origin.filter(|o| o.origin == self.config.id) {
                        completed.push((origin.request_id, result));
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
        for (request_id, result) in completed {
            if let Some(pending) = self.pending.remove(&request_id) {
                let _ = pending.reply.send(
                    result
                        .map(|()| Arc::clone(&image))
                        .map_err(ProposalError::from),
                );
            }
        }
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
            let in_flight: Vec<u64> = self
                .pending
                .iter()
                .filter(|(_, p)| p.stage != Stage::Waiting)
                .map(|(id, _)| *id)
                .collect();
            for id in in_flight {
                if let Some(pending) = self.pending.remove(&id) {
                    let _ = pending.reply.send(Err(ProposalError::LeadershipChanged));
                }
            }
            self.last_leader = leader;
        }
    }

    fn submit(&mut self, record: MetadataRecord, reply: Reply) {
        let request_id = self.next_request;
        self.next_request += 1;
        self.pending.insert(
            request_id,
            Pending {
                record,
                reply,
                deadline: Instant::now() + self.config.proposal_timeout,
                stage: Stage::Waiting,
            },
        );
        self.advance(request_id);
    }

    /// Moves a waiting proposal on: propose it here if this node leads,
    /// else forward it to the leader.
    fn advance(&mut self, request_id: u64) {
        let Some(pending) = self.pending.get(&request_id) else {
            return;
        };
        if pending.stage != Stage::Waiting {
            return;
        }
        let context = ProposalContext {
            origin: self.config.id,
            request_id,
        };
        let stage = match self.core.propose(context, &pending.record) {
            Ok(()) => Stage::Proposed,
            Err(ProposeError::NotLeader {
                leader_id: Some(leader),
            }) => {
                let forward = Body::Forward(Forward {
                    request_id,
                    record: pending.record.encode_to_vec(),
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
        if let Some(pending) = self.pending.get_mut(&request_id) {
            pending.stage = stage;
        }
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(pending) = self.pending.remove(&id) {
                let _ = pending.reply.send(Err(ProposalError::Timeout));
            }
        }
        let waiting: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.stage == Stage::Waiting)
            .map(|(id, _)| *id)
            .collect();
        for id in waiting {
            self.advance(id);
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
                        let context = ProposalContext {
                            origin: from,
                            request_id: forward.request_id,
                        };
                        self.core.propose(context, &record)
                    });
                if accepted.is_err() {
                    let rejected = Rejected {
                        request_id: forward.request_id,
                        leader_id: self.core.leader_id().unwrap_or(0),
                    };
                    self.transport.send(from, Body::Rejected(rejected));
                }
            }
            Some(Body::Rejected(rejected)) => {
                if let Some(pending) = self.pending.get_mut(&rejected.request_id) {
                    pending.stage = Stage::Waiting;
                }
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
        for (_, pending) in self.pending.drain() {
            let _ = pending.reply.send(Err(error.clone()));
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
