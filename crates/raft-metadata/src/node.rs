//! The Raft node at runtime. The ready loop runs on a thread of its own
//! (with a single-threaded tokio runtime for its timers and channels), as
//! TiKV runs its raft loop: its fsyncs and snapshot writes block only that
//! thread, never the broker's async workers, and a slow request handler
//! never delays a tick. It wakes on a tick, on a message from a peer or on
//! a command, never on a polling timer. After every wake-up it handles the
//! Ready, completes proposals whose entries were applied here, answers read
//! barriers and publishes the new metadata image. The transport's tasks and
//! listener run on the caller's runtime (the broker's async workers), and
//! on purpose: the active controller's services run there too (answering
//! the heartbeats that renew every broker's lease, electing leaders), so a
//! node whose workers stall also stops hearing its peers and being heard,
//! and the leadership, with the controller's role, moves to a node whose
//! workers run. With the transport anywhere else, such a node would stay
//! the leader and every broker's lease would lapse for as long as the
//! stall lasted.
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
//! had committed when the barrier was asked. The leader remembers when a
//! quorum last confirmed it (see `confirmation`), and a caller content with
//! a slightly older confirmation ([`MetadataHandle::confirm_leadership`])
//! is answered from its own commit index without a new round.
//!
//! DescribeQuorum is answered by the leader, which alone knows its peers'
//! logs: another node passes the question on and waits for the answer.
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

use tokio::{
    net::TcpListener,
    sync::{mpsc, oneshot, watch},
    task::JoinHandle,
};

mod confirmation;
mod run;

use self::{confirmation::Confirmation, run::Node};
use crate::{
    core::{CoreConfig, CoreError, CoreStatus, RaftCore},
    heartbeat::HeartbeatCall,
    ids,
    image::{ApplyError, MetadataImage},
    proposals::Proposals,
    quorum::QuorumDescription,
    records::MetadataRecord,
    transport::{self, PeerConnection, Transport},
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
    /// The data directory shows this node was a cluster member before; if
    /// its Raft log is gone it rejoins (see `core::membership`).
    pub member_before: bool,
    /// Where the Raft listener hands the broker heartbeats it receives
    /// (see [`crate::heartbeat`]); without it, it answers NotController.
    pub heartbeats: Option<mpsc::Sender<HeartbeatCall>>,
    /// Where the Raft listener tells of peers' connections opening and
    /// ending (see [`PeerConnection`]); without it, nowhere.
    pub peer_connections: Option<mpsc::Sender<PeerConnection>>,
    /// For tests: how much later than it could this node applies what is
    /// committed (see [`CoreConfig::apply_delay`]).
    pub apply_delay: Duration,
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
            member_before: false,
            heartbeats: None,
            peer_connections: None,
            apply_delay: Duration::ZERO,
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
    /// The cluster (Raft) address of the active controller, once known.
    pub controller_address: Option<String>,
}

type Reply = oneshot::Sender<Result<Arc<MetadataImage>, ProposalError>>;
/// A read barrier's answer: when the round of heartbeats that confirmed
/// the leader began (see [`MetadataHandle::confirm_leadership`]).
type BarrierReply = oneshot::Sender<Result<tokio::time::Instant, ProposalError>>;
type QuorumReply = oneshot::Sender<Option<QuorumDescription>>;

enum Command {
    Propose {
        record: MetadataRecord,
        reply: Reply,
    },
    ReadBarrier {
        reply: BarrierReply,
        /// How old a confirmation of the leader may be; `None`: a round
        /// begun after the barrier was asked.
        max_age: Option<Duration>,
    },
    DescribeQuorum {
        reply: QuorumReply,
    },
    TransferLeadership,
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
            Self::DescribeQuorum { .. } => f.write_str("DescribeQuorum"),
            Self::TransferLeadership => f.write_str("TransferLeadership"),
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
        self.barrier(None).await.map(|_| ())
    }

    /// A read barrier that a leader may answer without a new round of
    /// heartbeats if a quorum confirmed its leadership in a round begun at
    /// most `max_age` before the call. Resolves once this node's image
    /// holds everything committed when it was called, with the moment the
    /// confirming round began: no leader of a later term was elected
    /// before it. A node that does not lead (or has not applied an entry of
    /// its term yet), or has no recent enough confirmation, asks for a new
    /// round, and the moment is that of the call.
    pub async fn confirm_leadership(
        &self,
        max_age: Duration,
    ) -> Result<std::time::Instant, ProposalError> {
        self.barrier(Some(max_age))
            .await
            .map(tokio::time::Instant::into_std)
    }

    async fn barrier(
        &self,
        max_age: Option<Duration>,
    ) -> Result<tokio::time::Instant, ProposalError> {
        let (reply, response) = oneshot::channel();
        self.commands
            .send(Command::ReadBarrier { reply, max_age })
            .await
            .map_err(|_| ProposalError::Stopped)?;
        response.await.unwrap_or(Err(ProposalError::Stopped))
    }

    /// The quorum as its leader describes it, asked of the leader if this
    /// node does not lead. `None` when no leader answers within `timeout`.
    pub async fn describe_quorum(&self, timeout: Duration) -> Option<QuorumDescription> {
        let (reply, response) = oneshot::channel();
        self.commands
            .send(Command::DescribeQuorum { reply })
            .await
            .ok()?;
        tokio::time::timeout(timeout, response)
            .await
            .ok()
            .and_then(Result::ok)
            .flatten()
    }

    /// If this node leads the quorum, hands leadership to the most
    /// caught-up other voter and waits, at most `timeout`, until another
    /// node leads: a controller about to stop spares the cluster an
    /// election timeout without a controller.
    pub async fn transfer_leadership(&self, timeout: Duration) {
        let core = self.status().core;
        let me = core.id;
        // A voter alone has nobody to hand over to.
        let others = core.voters.iter().any(|voter| *voter != me);
        if core.leader_id != Some(me) || !others {
            return;
        }
        if self
            .commands
            .send(Command::TransferLeadership)
            .await
            .is_err()
        {
            return;
        }
        let mut status = self.watch_status();
        let moved = async {
            loop {
                let leader = status.borrow_and_update().core.leader_id;
                if leader.is_some_and(|l| l != me) {
                    return;
                }
                if status.changed().await.is_err() {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(timeout, moved).await;
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
    core_config.member_before = config.member_before;
    core_config.apply_delay = config.apply_delay;
    let voters = config.voters.clone();
    let dir = config.dir.clone();
    let core = tokio::task::spawn_blocking(move || RaftCore::open(core_config, &dir, &voters))
        .await
        .map_err(|_| NodeError::Aborted)??;
    // Every member has an address in `peers`: the configured voters, and
    // whoever a conf change or snapshot added.
    let has_peers = core.peers().keys().any(|&id| id != config.id);
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
        ..NodeStatus::default()
    });
    let runtime = tokio::runtime::Handle::current();
    let listener_task = listener.map(|l| {
        runtime.spawn(transport::serve(
            l,
            events_tx.clone(),
            transport::Listeners {
                heartbeats: config.heartbeats.clone(),
                peer_connections: config.peer_connections.clone(),
            },
        ))
    });
    let mut transport = Transport::new(config.id, events_tx, runtime);
    transport.set_peers(core.peers());

    let incarnation = uuid::Uuid::new_v4().as_u64_pair().0;
    let node = Node {
        voter_ids: config.voters.iter().map(|(id, _)| *id).collect(),
        proposals: Proposals::new(config.id, incarnation),
        reads: HashMap::new(),
        confirmation: Confirmation::default(),
        next_read: incarnation,
        contacts: Default::default(),
        quorum_questions: HashMap::new(),
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

/// Parses `--voters`: `ID@HOST:PORT` separated by commas.
pub fn parse_voters(spec: &str) -> Result<Vec<(u64, String)>, String> {
    let mut voters = BTreeMap::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (id, address) = item
            .split_once('@')
            .ok_or_else(|| format!("'{item}' is not ID@HOST:PORT"))?;
        let node: i32 = id
            .parse()
            .ok()
            .filter(|id| *id >= 0)
            .ok_or_else(|| format!("'{id}' in '{item}' is not a node id (0 or more)"))?;
        if !address.contains(':') {
            return Err(format!("'{address}' in '{item}' is not HOST:PORT"));
        }
        if voters
            .insert(ids::raft_id(node), address.to_string())
            .is_some()
        {
            return Err(format!("node {node} appears twice"));
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
        // Node 0 is a voter like any other, under its Raft id.
        assert_eq!(
            parse_voters("0@a:1,1@b:2").unwrap(),
            vec![
                (1, "b:2".to_string()),
                (ids::NODE_ZERO_RAFT_ID, "a:1".to_string())
            ]
        );
        for bad in ["", "1", "x@a:1", "1@a", "-1@a:1", "1@a:1,1@b:2"] {
            assert!(parse_voters(bad).is_err(), "{bad:?} accepted");
        }
    }
}
