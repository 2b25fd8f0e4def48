//! Follower fetching: one fetcher per leader this broker follows
//! partitions of, batching all of them into one Fetch request at a time,
//! as a Kafka follower does.
//!
//! Each request names this broker as the replica (ReplicaState with its
//! incarnation), and per partition the fetch offset (the log end), the
//! epoch of the last batch (so the leader can say where the logs diverge,
//! KIP-320) and the leader epoch it follows. The leader parks the request
//! until it has new records or `replica.fetch.wait.max.ms` passes, so an
//! idle follower costs one request per wait. Batches are appended exactly
//! as the leader sent them; a DivergingEpoch truncates the log to where it
//! agrees with the leader before the next fetch.
//!
//! Each fetcher keeps an incremental fetch session with its leader (see
//! `session`), so a request names only the partitions whose fetch changed
//! and an answer carries only those with something new.
//!
//! Fetching never blocks client traffic: each fetcher runs on a thread of
//! its own (Kafka's ReplicaFetcherThread), with a single-threaded runtime
//! for its connection and timers, and sends its requests on a connection
//! of its own. Its appends block that thread only, so they run where they
//! are, without the hand-off to another thread that an append on the
//! shared runtime costs (`blocking::run`): at a few records per fetch,
//! those hand-offs were most of a follower's work.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use kafka_protocol::{
    error::ResponseError,
    messages::{
        BrokerId, FetchRequest, FetchResponse,
        fetch_request::{FetchPartition, FetchTopic, ForgottenTopic, ReplicaState},
        fetch_response::PartitionData,
    },
};
use tokio::sync::{Notify, watch};
use uuid::Uuid;

use super::{
    client::{ClientError, LeaderConnection},
    session::{FollowerSession, NextRequest},
};
use crate::{
    broker::{Broker, now_ms},
    fetch_session::FetchParams,
    partition::{FollowerState, Partition},
};

/// Backoff after a failed fetch, doubling up to the maximum.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How long a connection attempt, or a response beyond the fetch's own
/// wait, may take.
const NETWORK_TIMEOUT: Duration = Duration::from_secs(10);

/// The partitions one fetcher fetches, shared with its thread.
#[derive(Debug)]
struct Followed {
    partitions: Mutex<Vec<Arc<Partition>>>,
    /// Every metadata update: an idle fetcher looks again.
    changed: Notify,
    /// A count of the changes to `partitions` themselves: a fetch waiting
    /// at the leader is given up for the new set (see `run`).
    reshaped: watch::Sender<u64>,
}

impl Default for Followed {
    fn default() -> Self {
        Self {
            partitions: Mutex::default(),
            changed: Notify::new(),
            reshaped: watch::Sender::new(0),
        }
    }
}

#[derive(Debug)]
struct Fetcher {
    followed: Arc<Followed>,
    /// Stops the fetcher at its next wait (a permit: it need not be
    /// waiting yet).
    stop: Arc<Notify>,
}

impl Fetcher {
    /// Starts fetching from `leader` on a thread of its own; on the shared
    /// runtime if no thread or runtime can be had, so that replication
    /// goes on either way.
    fn start(broker: &Arc<Broker>, leader: i32) -> Self {
        let followed = Arc::new(Followed::default());
        let stop = Arc::new(Notify::new());
        let fetch = || {
            fetch_until_stopped(
                Arc::clone(broker),
                leader,
                Arc::clone(&followed),
                Arc::clone(&stop),
            )
        };
        let on_thread = fetch();
        let shared = tokio::runtime::Handle::current();
        let thread = std::thread::Builder::new()
            .name(format!("keel-fetch-{leader}"))
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime.block_on(on_thread),
                    Err(error) => {
                        tracing::warn!(leader, %error, "no runtime for a fetcher thread; fetching on the shared runtime");
                        shared.spawn(on_thread);
                    }
                }
            });
        if let Err(error) = thread {
            tracing::warn!(leader, %error, "no thread for a fetcher; fetching on the shared runtime");
            tokio::spawn(fetch());
        }
        Self { followed, stop }
    }

    fn stop(&self) {
        self.stop.notify_one();
    }
}

/// The fetchers of this broker, one per leader it follows.
#[derive(Debug, Default)]
pub struct Fetchers {
    by_leader: Mutex<HashMap<i32, Fetcher>>,
}

impl Fetchers {
    /// Points each fetcher at the partitions that now follow its leader,
    /// starting fetchers for new leaders and stopping idle ones.
    pub fn update(&self, broker: &Arc<Broker>) {
        let mut wanted: HashMap<i32, Vec<Arc<Partition>>> = HashMap::new();
        for partition in broker.replicas.all() {
            if let Some(leader) = partition.following() {
                wanted.entry(leader).or_default().push(partition);
            }
        }
        let mut fetchers = self
            .by_leader
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        fetchers.retain(|leader, fetcher| {
            let keep = wanted.contains_key(leader);
            if !keep {
                fetcher.stop();
            }
            keep
        });
        for (leader, partitions) in wanted {
            let fetcher = fetchers
                .entry(leader)
                .or_insert_with(|| Fetcher::start(broker, leader));
            let mut followed = fetcher
                .followed
                .partitions
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if !same_partitions(&followed, &partitions) {
                *followed = partitions;
                fetcher.followed.reshaped.send_modify(|count| *count += 1);
            }
            drop(followed);
            fetcher.followed.changed.notify_one();
        }
    }

    /// Stops every fetcher.
    pub fn stop(&self) {
        let mut fetchers = self
            .by_leader
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for (_, fetcher) in fetchers.drain() {
            fetcher.stop();
        }
    }
}

/// Whether `a` and `b` hold the same partitions, in any order.
fn same_partitions(a: &[Arc<Partition>], b: &[Arc<Partition>]) -> bool {
    let a: HashSet<*const Partition> = a.iter().map(Arc::as_ptr).collect();
    a.len() == b.len() && b.iter().all(|p| a.contains(&Arc::as_ptr(p)))
}

/// Fetches from `leader` until the fetcher is stopped (`Fetcher::stop`).
async fn fetch_until_stopped(
    broker: Arc<Broker>,
    leader: i32,
    followed: Arc<Followed>,
    stop: Arc<Notify>,
) {
    tokio::select! {
        () = run(broker, leader, followed) => {}
        () = stop.notified() => {}
    }
}

/// Fetches from `leader` for as long as this broker follows partitions of
/// it.
async fn run(broker: Arc<Broker>, leader: i32, followed: Arc<Followed>) {
    let mut connection: Option<LeaderConnection> = None;
    let mut session = FollowerSession::default();
    let mut backoff = BACKOFF_MIN;
    let mut reshaped = followed.reshaped.subscribe();
    loop {
        let changed = followed.changed.notified();
        reshaped.borrow_and_update();
        let partitions = followed
            .partitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let states = crate::blocking::run(|| following(&partitions, leader));
        if states.is_empty() {
            connection = None;
            session.reset();
            changed.await;
            continue;
        }
        let fetched = tokio::select! {
            fetched = fetch_once(&broker, leader, &mut connection, &mut session, &states) => fetched,
            _ = reshaped.changed() => {
                // A partition that just came to follow this leader must not
                // wait out the fetch parked at the leader for the others: a
                // new leader takes no write until every replica has fetched
                // in its epoch (`succession`), and its producers may be what
                // the parked fetch waits for. The abandoned fetch's answer
                // would come on this connection, so the connection goes.
                connection = None;
                session.reset();
                continue;
            }
        };
        match fetched {
            Ok(response) => {
                broker.lost_peers.answered(leader);
                let now = now_ms();
                let all_well = crate::blocking::run(|| apply_response(&states, &response, now));
                if all_well {
                    backoff = BACKOFF_MIN;
                    continue;
                }
            }
            Err(error) => {
                tracing::debug!(leader, %error, "fetch from leader failed");
                if error.looks_like_a_dead_process() {
                    crate::lost_peers::note_lost(
                        &broker,
                        leader,
                        &format!("fetching from it failed: {error}"),
                    );
                }
                connection = None;
                session.reset();
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// What each of `partitions` that follows `leader` fetches next.
fn following(partitions: &[Arc<Partition>], leader: i32) -> Vec<(Arc<Partition>, FollowerState)> {
    partitions
        .iter()
        .filter_map(|partition| {
            let state = partition.follower_state().filter(|s| s.leader == leader)?;
            Some((Arc::clone(partition), state))
        })
        .collect()
}

async fn fetch_once(
    broker: &Broker,
    leader: i32,
    connection: &mut Option<LeaderConnection>,
    session: &mut FollowerSession,
    states: &[(Arc<Partition>, FollowerState)],
) -> Result<FetchResponse, ClientError> {
    let config = &broker.config;
    if connection.is_none() {
        let image = broker.image();
        let Some(info) = image.broker(leader) else {
            return Err(ClientError::Connect {
                address: format!("broker {leader}"),
                source: std::io::Error::other("the leader is not registered"),
            });
        };
        let address = format!("{}:{}", info.host, info.port);
        let client_id = format!("keel-replica-{}", config.node_id);
        *connection = Some(LeaderConnection::connect(&address, client_id, NETWORK_TIMEOUT).await?);
    }
    let Some(leader_connection) = connection.as_mut() else {
        unreachable!("connected above");
    };
    let wait = Duration::from_millis(config.replica_fetch_wait_max_ms.max(0) as u64);
    let wanted = states
        .iter()
        .map(|(partition, state)| {
            let params = FetchParams {
                fetch_offset: state.fetch_offset,
                last_fetched_epoch: state.last_fetched_epoch,
                current_leader_epoch: state.leader_epoch,
                log_start_offset: state.log_start_offset,
                partition_max_bytes: config.replica_fetch_max_bytes,
            };
            ((partition.topic_id(), partition.index()), params)
        })
        .collect();
    let next = session.next_request(wanted);
    let request = request(broker, &next);
    let response = leader_connection
        .fetch(&request, wait + NETWORK_TIMEOUT)
        .await?;
    if response.error_code == 0 {
        session.answered(next, response.session_id);
    } else {
        session.reset();
    }
    Ok(response)
}

fn request(broker: &Broker, next: &NextRequest) -> FetchRequest {
    let mut topics: Vec<FetchTopic> = Vec::new();
    let mut places: HashMap<Uuid, usize> = HashMap::new();
    for &((topic_id, partition), params) in &next.partitions {
        let fetch = FetchPartition::default()
            .with_partition(partition)
            .with_current_leader_epoch(params.current_leader_epoch)
            .with_fetch_offset(params.fetch_offset)
            .with_last_fetched_epoch(params.last_fetched_epoch)
            .with_log_start_offset(params.log_start_offset)
            .with_partition_max_bytes(params.partition_max_bytes);
        let place = *places.entry(topic_id).or_insert_with(|| {
            topics.push(FetchTopic::default().with_topic_id(topic_id));
            topics.len() - 1
        });
        topics[place].partitions.push(fetch);
    }
    let mut forgotten: Vec<ForgottenTopic> = Vec::new();
    for &(topic_id, partition) in &next.forgotten {
        match forgotten.iter_mut().find(|t| t.topic_id == topic_id) {
            Some(topic) => topic.partitions.push(partition),
            None => forgotten.push(
                ForgottenTopic::default()
                    .with_topic_id(topic_id)
                    .with_partitions(vec![partition]),
            ),
        }
    }
    FetchRequest::default()
        .with_replica_state(
            ReplicaState::default()
                .with_replica_id(BrokerId(broker.config.node_id))
                .with_replica_epoch(broker.incarnation as i64),
        )
        .with_max_wait_ms(broker.config.replica_fetch_wait_max_ms)
        .with_min_bytes(1)
        .with_max_bytes(broker.config.replica_fetch_response_max_bytes)
        .with_session_id(next.session_id)
        .with_session_epoch(next.epoch)
        .with_topics(topics)
        .with_forgotten_topics_data(forgotten)
}

/// Appends what the leader sent, or truncates where it says the logs
/// diverge. Returns false if any partition needs the fetcher to back off
/// (an error from the leader or the local log).
fn apply_response(
    states: &[(Arc<Partition>, FollowerState)],
    response: &FetchResponse,
    now: i64,
) -> bool {
    if response.error_code != 0 {
        tracing::debug!(
            error = ?ResponseError::try_from_code(response.error_code),
            "the leader refused the fetch"
        );
        return false;
    }
    let mut answered: HashMap<(Uuid, i32), &PartitionData> = HashMap::new();
    for topic in &response.responses {
        for data in &topic.partitions {
            answered.insert((topic.topic_id, data.partition_index), data);
        }
    }
    let mut all_well = true;
    for (partition, state) in states {
        let Some(data) = answered.get(&(partition.topic_id(), partition.index())) else {
            continue;
        };
        if let Err(error) = apply_partition(partition, state, data, now) {
            tracing::debug!(
                topic = partition.topic(),
                partition = partition.index(),
                %error,
                "follower fetch did not apply"
            );
            all_well = false;
        }
    }
    all_well
}

#[derive(Debug, thiserror::Error)]
enum ApplyError {
    #[error("the leader answered {0:?}")]
    Leader(Option<ResponseError>),
    #[error(transparent)]
    Local(#[from] crate::error::PartitionError),
}

fn apply_partition(
    partition: &Partition,
    state: &FollowerState,
    data: &PartitionData,
    now: i64,
) -> Result<(), ApplyError> {
    let epoch = state.leader_epoch;
    match ResponseError::try_from_code(data.error_code) {
        None if data.diverging_epoch.epoch >= 0 || data.diverging_epoch.end_offset >= 0 => {
            let diverging = &data.diverging_epoch;
            let (log_end_offset, agreed) = partition.truncate_on_divergence(
                epoch,
                diverging.epoch,
                diverging.end_offset,
                now,
            )?;
            tracing::info!(
                topic = partition.topic(),
                partition = partition.index(),
                leader_epoch = epoch,
                diverging_epoch = diverging.epoch,
                diverging_end_offset = diverging.end_offset,
                log_end_offset,
                agreed,
                "truncated where this replica's log diverged from the leader's"
            );
            Ok(())
        }
        None => {
            match data.records.as_deref() {
                Some(records) if !records.is_empty() => {
                    partition.append_as_follower(
                        epoch,
                        state.fetch_offset,
                        records,
                        data.high_watermark,
                        now,
                    )?;
                }
                _ => partition.follow_high_watermark(data.high_watermark),
            }
            if data.log_start_offset > state.log_start_offset {
                partition.follow_log_start(epoch, data.log_start_offset, now)?;
            }
            Ok(())
        }
        Some(ResponseError::OffsetOutOfRange) if state.fetch_offset < data.log_start_offset => {
            tracing::info!(
                topic = partition.topic(),
                partition = partition.index(),
                fetch_offset = state.fetch_offset,
                leader_log_start_offset = data.log_start_offset,
                "this replica fell below the leader's log start; starting over from it"
            );
            partition.restart_at(epoch, data.log_start_offset, now)?;
            Ok(())
        }
        Some(error) => Err(ApplyError::Leader(Some(error))),
    }
}
