//! The broker's shared state: configuration, the metadata Raft node and its
//! image, the hosted replicas and the producer id allocator. Every request
//! handler gets a `&Broker`.
//!
//! On start the broker opens its Raft node, waits until the node has
//! re-applied everything it had committed, opens the partition logs that
//! image names, then registers itself through Raft in the background: a
//! broker without a quorum still serves the metadata it last knew. The
//! image may still be stale (or empty, if the metadata directory was lost),
//! so nothing on disk is judged by it: only once a read barrier shows the
//! image caught up with the quorum's commit index are the directories it
//! does not name deleted (their topic was deleted) or moved aside (see
//! `replicas`).
//!
//! `meta.properties` records the node id and, once known, the cluster id;
//! a data directory of another node or another cluster is refused, at
//! start if the local metadata already names the cluster, or as soon as
//! the caught-up metadata does.
//!
//! How a broker ends (failing, stopping, leaving the cluster) is in
//! `lifecycle`.

use std::{
    sync::{
        Arc, Mutex, MutexGuard, PoisonError, Weak,
        atomic::{AtomicBool, AtomicI64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use keel_raft_metadata::{
    ApplyError, MetadataHandle, MetadataImage, MetadataRecord, NodeConfig, NodeError,
    ProposalError, Record, ids, records::AllocateProducerIds,
};
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
};

use uuid::Uuid;

mod identity;
mod lifecycle;
mod membership;

use crate::{
    config::BrokerConfig,
    controller::Controller,
    error::PartitionError,
    fetch_session::{self, SessionCache},
    group::GroupCoordinator,
    lease::Lease,
    lost_peers::LostPeers,
    metrics::Metrics,
    open_files::{self, OpenFileLimit},
    replicas::ReplicaManager,
    replication::fetcher::Fetchers,
};

const METADATA_DIR: &str = "__cluster_metadata";
const PRODUCER_ID_BLOCK: i64 = 1000;
/// Upper bound on any metadata change; requests usually give a shorter one.
const PROPOSAL_TIMEOUT: Duration = Duration::from_secs(30);
/// Heartbeats waiting for this node's controller: every broker's, from
/// the cluster listener, and this one's own.
const HEARTBEAT_QUEUE: usize = 1024;
/// Peers' connections opening and ending, seen by the Raft listener.
const PEER_CONNECTION_QUEUE: usize = 256;

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("data directory {dir}: {source}")]
    DataDir {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error("data directory {dir} belongs to node {found}, not node {configured}")]
    NodeIdMismatch {
        dir: String,
        found: i32,
        configured: i32,
    },
    #[error(
        "data directory {dir} belongs to cluster {recorded}, but the metadata names cluster \
         {current}; point --data-dir at this cluster's data, or --voters at the cluster {recorded}"
    )]
    ClusterIdMismatch {
        dir: String,
        recorded: String,
        current: String,
    },
    #[error("cannot listen on {address} (--{flag}): {source}")]
    Listen {
        flag: &'static str,
        address: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("metadata node: {0}")]
    Metadata(#[from] NodeError),
    #[error("opening partition logs: {0}")]
    Log(#[from] keel_log::LogError),
    #[error("{0}")]
    OpenFileLimit(String),
}

#[derive(Debug)]
pub struct Broker {
    pub config: BrokerConfig,
    pub metadata: MetadataHandle,
    pub replicas: ReplicaManager,
    /// Follower fetches, one task per leader this broker follows.
    fetchers: Fetchers,
    /// This broker, for the tasks it starts.
    this: Weak<Broker>,
    pub metrics: Metrics,
    /// Whether this broker may act as a leader (see `lease`).
    pub lease: Lease,
    /// Broker sessions and elections, while this node is the active
    /// controller.
    pub controller: Controller,
    pub groups: GroupCoordinator,
    /// The open-file limit this broker runs under.
    pub open_files: OpenFileLimit,
    /// Distinguishes this run of the broker from earlier ones.
    pub incarnation: u64,
    producer_ids: tokio::sync::Mutex<(i64, i64)>,
    /// The cluster id `meta.properties` records, once known.
    recorded_cluster_id: Mutex<Option<String>>,
    /// Why the broker must stop, once something makes it unsafe to go on.
    fatal: watch::Sender<Option<String>>,
    shutdown: watch::Sender<bool>,
    background: Mutex<Vec<JoinHandle<()>>>,
    /// When the last produce request arrived (milliseconds since the
    /// epoch): a stopping broker waits for the clients to move elsewhere.
    last_produce_ms: AtomicI64,
    /// Set when the broker begins to stop, before its leaderships move:
    /// its heartbeats then tell the controller not to elect it.
    stopping: AtomicBool,
    /// Incremental fetch sessions (KIP-227) of this broker's fetchers.
    fetch_sessions: Mutex<SessionCache>,
    /// Peers whose connections broke as a dying process's do, until the
    /// controller has judged them (see `lost_peers`).
    pub lost_peers: LostPeers,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Broker {
    /// Opens the data directory and the metadata node, recovers the
    /// partition logs this node hosts, and starts registering in the
    /// background. The returned task ends if the metadata node fails; the
    /// broker must stop then.
    pub async fn open(
        config: BrokerConfig,
    ) -> Result<(Arc<Self>, JoinHandle<Result<(), NodeError>>), StartError> {
        let data_dir = config.data_dir.clone();
        std::fs::create_dir_all(&data_dir).map_err(|source| StartError::DataDir {
            dir: data_dir.display().to_string(),
            source,
        })?;
        let open_files = open_files::raise();
        open_files::check_start(
            open_files,
            open_files::partition_logs_on_disk(&data_dir, METADATA_DIR),
        )
        .map_err(StartError::OpenFileLimit)?;
        let identity = identity::check(&data_dir, config.node_id)?;
        let recorded_cluster_id = identity.cluster_id;

        let mut node_config = NodeConfig::new(
            ids::raft_id(config.node_id),
            config.cluster_listen,
            config.cluster_advertise.clone(),
            config.voters.clone(),
            data_dir.join(METADATA_DIR),
        );
        node_config.tick = Duration::from_millis(config.raft_tick_ms);
        node_config.election_tick = config.raft_election_ticks;
        node_config.heartbeat_tick = config.raft_heartbeat_ticks;
        node_config.snapshot_entries = config.raft_snapshot_entries;
        node_config.proposal_timeout = PROPOSAL_TIMEOUT;
        node_config.apply_delay = config.test_faults.apply_metadata_late;
        // A data directory that ran before may have been a member: if its
        // Raft log is gone, the node rejoins rather than pose as that member.
        node_config.member_before = identity.existed;
        // A node alone needs no Raft listener, so a single-node broker
        // takes one port; it listens once it has peers or is asked to.
        node_config.listen_when_alone = ["cluster-listen", "cluster-advertise"]
            .iter()
            .any(|flag| config.explicit.contains(*flag));
        let (heartbeats, heartbeat_calls) = mpsc::channel(HEARTBEAT_QUEUE);
        node_config.heartbeats = Some(heartbeats.clone());
        let (peer_connections, peer_connection_events) = mpsc::channel(PEER_CONNECTION_QUEUE);
        node_config.peer_connections = Some(peer_connections);
        let (metadata, node_task) =
            keel_raft_metadata::node::start(node_config)
                .await
                .map_err(|e| match e {
                    NodeError::Listen { address, source } => StartError::Listen {
                        flag: "cluster-listen",
                        address,
                        source,
                    },
                    other => StartError::Metadata(other),
                })?;

        // The partition directories on disk reflect what this node applied
        // before; only an image at least that far may judge them.
        let mut status = metadata.watch_status();
        while !status.borrow_and_update().core.recovered {
            if status.changed().await.is_err() {
                break;
            }
        }

        if let (Some(recorded), Some(current)) =
            (&recorded_cluster_id, metadata.image().cluster_id())
        {
            if recorded != current {
                return Err(StartError::ClusterIdMismatch {
                    dir: data_dir.display().to_string(),
                    recorded: recorded.clone(),
                    current: current.to_string(),
                });
            }
        }

        let replicas = ReplicaManager::new(
            config.node_id,
            &data_dir,
            config.topic_defaults.clone(),
            config.liveness.succession_wait(),
        )
        .with_faults(config.test_faults.logs.clone());
        let (shutdown, _) = watch::channel(false);
        let (fatal, _) = watch::channel(None);
        let groups = GroupCoordinator::new(config.groups);
        let lease = Lease::new(config.liveness.lease(), std::time::Instant::now());
        let controller = Controller::new(config.liveness.session_timeout);
        let broker = Arc::new_cyclic(|this| Self {
            config,
            metadata,
            replicas,
            fetchers: Fetchers::default(),
            this: this.clone(),
            metrics: Metrics::default(),
            lease,
            controller,
            groups,
            open_files,
            incarnation: now_ms() as u64,
            producer_ids: tokio::sync::Mutex::new((0, 0)),
            recorded_cluster_id: Mutex::new(recorded_cluster_id),
            fatal,
            shutdown,
            last_produce_ms: AtomicI64::new(0),
            stopping: AtomicBool::new(false),
            fetch_sessions: Mutex::new(SessionCache::new(
                fetch_session::MAX_SESSIONS,
                Uuid::new_v4().as_u128() as u32,
            )),
            background: Mutex::new(Vec::new()),
            lost_peers: LostPeers::default(),
        });
        let opening = Arc::clone(&broker);
        tokio::task::spawn_blocking(move || {
            opening.replicas.remove_interrupted_deletions();
            opening
                .replicas
                .reconcile(|| opening.metadata.image(), now_ms())
        })
        .await
        .map_err(|e| StartError::DataDir {
            dir: data_dir.display().to_string(),
            source: std::io::Error::other(e),
        })??;

        broker.check_cluster_id(&broker.image());
        broker
            .metrics
            .leader_transitions
            .observe(&broker.image(), broker.config.node_id);
        broker.fetchers.update(&broker);
        let tasks = vec![
            tokio::spawn(membership::catch_up(Arc::clone(&broker))),
            tokio::spawn(membership::follow_metadata(Arc::clone(&broker))),
            tokio::spawn(membership::register(Arc::clone(&broker))),
            tokio::spawn(crate::group::run(Arc::clone(&broker))),
            tokio::spawn(crate::replication::isr::run(Arc::clone(&broker))),
            tokio::spawn(crate::heartbeat::run(Arc::clone(&broker), heartbeats)),
            tokio::spawn(crate::controller::serve_heartbeats(
                Arc::clone(&broker),
                heartbeat_calls,
            )),
            tokio::spawn(crate::controller::elect(Arc::clone(&broker))),
            tokio::spawn(crate::lost_peers::follow_peer_connections(
                Arc::clone(&broker),
                peer_connection_events,
            )),
        ];
        broker
            .background
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(tasks);
        Ok((broker, node_task))
    }

    /// Commits a metadata change through Raft, waiting at most `timeout`,
    /// and brings local replicas in line with the result before returning.
    pub async fn propose(
        &self,
        record: MetadataRecord,
        timeout: Duration,
    ) -> Result<Arc<MetadataImage>, ProposalError> {
        let started = std::time::Instant::now();
        let image = tokio::time::timeout(timeout, self.metadata.propose(record))
            .await
            .map_err(|_| ProposalError::Timeout)??;
        self.metrics.proposal_latency.observe(started.elapsed());
        self.reconcile_replicas().await;
        Ok(image)
    }

    async fn reconcile_replicas(&self) {
        if self.fatal.borrow().is_some() {
            // Whatever made the broker stop (another cluster's metadata)
            // must not reach the data directory.
            return;
        }
        let metadata = self.metadata.clone();
        let result =
            crate::blocking::run(|| self.replicas.reconcile(|| metadata.image(), now_ms()));
        match result {
            Ok(changes) if changes.is_empty() => {}
            Ok(changes) => {
                self.update_fetchers();
                self.groups.note_role_changes(&changes);
            }
            Err(e) => {
                tracing::error!(error = %e, "failed to apply metadata change to local partitions");
            }
        }
    }

    /// Fails unless this broker's lease holds: without it another broker
    /// may lead its partitions by now. A broker alone in its cluster (the
    /// only voter and the only registered broker) has no successor to
    /// fear, so a lapse there, which only a late heartbeat on a busy
    /// machine can cause, refuses nothing.
    pub fn check_lease(&self) -> Result<(), PartitionError> {
        if self.lease.holds(std::time::Instant::now()) || self.alone() {
            Ok(())
        } else {
            Err(PartitionError::LeaseLapsed)
        }
    }

    /// Whether this broker's lease lapsed at least a session timeout ago:
    /// a controller that could hear it would have renewed its lease by now
    /// (a new controller included), so it is cut off, and the controller
    /// may have elected successors for its partitions. A shorter lapse is
    /// common while the controller itself fails over.
    pub fn presumed_deposed(&self) -> bool {
        let cut_off = self.config.liveness.session_timeout;
        !self.alone()
            && self
                .lease
                .lapsed_for(std::time::Instant::now())
                .is_some_and(|lapsed| lapsed >= cut_off)
    }

    /// Resolves once [`Self::presumed_deposed`] holds.
    pub async fn until_presumed_deposed(&self) {
        let cut_off = self.config.liveness.session_timeout;
        loop {
            self.lease.lapsed_for_at_least(cut_off).await;
            if self.presumed_deposed() {
                return;
            }
            // Alone in its cluster: a lapse deposes nobody.
            self.lease.held().await;
        }
    }

    fn alone(&self) -> bool {
        let me = self.config.node_id;
        self.config
            .voters
            .iter()
            .all(|(id, _)| ids::node_id(*id) == me)
            && self.image().brokers().all(|b| b.node_id == me)
    }

    /// For a write appended while the lease held: fails unless it still
    /// holds now that the write is to be acknowledged.
    pub fn check_lease_after_append(&self) -> Result<(), PartitionError> {
        self.check_lease()
            .map_err(|_| PartitionError::LeaseLapsedAfterAppend)
    }

    /// Points the follower fetchers at the partitions this broker follows.
    fn update_fetchers(&self) {
        if let Some(broker) = self.this.upgrade() {
            self.fetchers.update(&broker);
        }
    }

    /// Waits until this broker is registered, the cluster has an id and
    /// the controller granted the lease: ready to lead partitions.
    pub async fn ready(&self) {
        self.image_satisfies(|image, node_id, incarnation| {
            image
                .broker(node_id)
                .is_some_and(|b| b.incarnation == incarnation)
                && image.cluster_id().is_some()
        })
        .await;
        self.lease.held().await;
    }

    /// Waits until this broker is in its metadata image with a cluster id:
    /// registered now, or by an earlier incarnation whose image it loaded
    /// from disk. Before that its Metadata answers name no broker and no
    /// controller.
    pub async fn known_to_cluster(&self) {
        self.image_satisfies(|image, node_id, _| {
            image.broker(node_id).is_some() && image.cluster_id().is_some()
        })
        .await;
    }

    async fn image_satisfies(&self, condition: impl Fn(&MetadataImage, i32, u64) -> bool) {
        let mut images = self.metadata.subscribe();
        loop {
            let satisfied = condition(
                &images.borrow_and_update(),
                self.config.node_id,
                self.incarnation,
            );
            if satisfied || images.changed().await.is_err() {
                return;
            }
        }
    }

    /// The last metadata image this node applied.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.metadata.image()
    }

    /// The cluster's id, once the cluster has one.
    pub fn cluster_id(&self) -> Option<String> {
        self.image().cluster_id().map(str::to_string)
    }

    /// The active controller: the node leading the metadata quorum, once
    /// this node has applied an entry of its term; -1 before that.
    pub fn controller_id(&self) -> i32 {
        self.metadata
            .status()
            .core
            .controller_id
            .map_or(-1, ids::node_id)
    }

    /// A producer id never handed out before, by this or any broker.
    pub async fn next_producer_id(&self) -> Result<i64, ProposalError> {
        let mut block = self.producer_ids.lock().await;
        if block.0 >= block.1 {
            let mut attempts = 0;
            loop {
                let start = self.image().next_producer_id();
                let record = Record::AllocateProducerIds(AllocateProducerIds {
                    node_id: self.config.node_id,
                    start,
                    size: PRODUCER_ID_BLOCK,
                });
                match self.propose(record.into(), PROPOSAL_TIMEOUT).await {
                    Ok(_) => {
                        *block = (start, start + PRODUCER_ID_BLOCK);
                        break;
                    }
                    Err(ProposalError::Rejected(ApplyError::StaleProducerIdBlock { .. }))
                        if attempts < 10 =>
                    {
                        attempts += 1;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        let id = block.0;
        block.0 += 1;
        Ok(id)
    }

    /// The incremental fetch sessions, locked. Held only to decide or
    /// record a session's step, never across a fetch's wait.
    pub fn fetch_sessions(&self) -> MutexGuard<'_, SessionCache> {
        self.fetch_sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A produce request arrived at `now_ms`.
    pub fn note_produce(&self, now_ms: i64) {
        self.last_produce_ms.store(now_ms, Ordering::Relaxed);
    }

    /// Whether a produce request arrived within `window` of `now_ms`.
    pub fn produced_within(&self, window: Duration, now_ms: i64) -> bool {
        let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
        now_ms - self.last_produce_ms.load(Ordering::Relaxed) < window_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn producer_ids_are_unique_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let config = BrokerConfig::for_tests(dir.path());
        let first = {
            let (broker, _) = Broker::open(config.clone()).await.unwrap();
            let mut max = 0;
            for _ in 0..1500 {
                max = max.max(broker.next_producer_id().await.unwrap());
            }
            broker.stop(Duration::from_secs(1)).await;
            max
        };
        let (broker, _) = Broker::open(config).await.unwrap();
        assert!(broker.next_producer_id().await.unwrap() > first);
    }
}
