//! Fetch: whole record batches from each requested partition.
//!
//! Limits follow KIP-74: the response carries at most `max_bytes` and each
//! partition at most `partition_max_bytes`, except that the first batch of
//! the first partition with data is returned whole even if larger, so a
//! consumer can always make progress. A request that finds fewer than
//! `min_bytes` waits up to `max_wait_ms` for appends. A fetcher may keep an
//! incremental fetch session (KIP-227, see `session` and `fetch_session`): it then names
//! only the partitions whose fetch changed, every partition of the session
//! is read, and the response carries only those with something new.
//!
//! Record bytes are not read here: each partition's records stay in their
//! segment file and are sent from it (see `response`).
//!
//! Consumers read up to the high watermark. A follower replica (a request
//! with a replica id) reads up to the log end, and only as a registered
//! broker, at its registered incarnation, that is a replica of the
//! partition, from a leader whose lease holds; its fetch offset tells the leader how far its log reaches
//! (see `replication::leader`). A request whose LastFetchedEpoch does not
//! match the leader's log at the fetch offset gets the DivergingEpoch to
//! truncate to instead of records (KIP-320), consumer or follower.

mod session;

use std::{collections::HashMap, sync::Arc, time::Duration};

use kafka_protocol::{
    messages::{
        BrokerId, FetchRequest, FetchResponse, TopicName,
        fetch_response::{
            EpochEndOffset, FetchableTopicResponse, LeaderIdAndEpoch, NodeEndpoint, PartitionData,
        },
    },
    protocol::StrBytes,
};
use tokio::{sync::Notify, time::Instant};

use self::session::{Answer, Session, forgotten_partitions, requested_partitions, session_step};
use super::{
    RequestContext,
    leader_hint::{Endpoints, current_leader},
    topics::leader_replica,
};
use crate::{
    broker::now_ms,
    error::PartitionError,
    fetch_session::{FetchContext, FetchParams, PartitionKey, SessionRequest, TopicKey},
    partition::{Fetched, Partition, PartitionOffsets, ReadLimit},
    response::FileRecords,
};
use bytes::Bytes;
use keel_log::{LogError, ReadMode};
use keel_raft_metadata::MetadataImage;

/// From this version topics are named by id.
const TOPIC_ID_VERSION: i16 = 13;
/// From this version the replica id moved into `replica_state`.
const REPLICA_STATE_VERSION: i16 = 15;
/// The first version carrying KIP-951 leader hints.
const LEADER_HINT_VERSION: i16 = 16;
/// The first version reporting the log start offset.
const LOG_START_VERSION: i16 = 5;
const READ_COMMITTED: i8 = 1;

/// One partition to read, resolved once per request.
struct Target {
    /// Its topic's place in the response.
    topic: usize,
    name: String,
    key: PartitionKey,
    params: FetchParams,
    partition_max_bytes: usize,
    replica: Result<Arc<Partition>, PartitionError>,
}

/// The follower a replica fetch comes from.
#[derive(Debug, Clone, Copy)]
struct Follower {
    id: i32,
    incarnation: Option<u64>,
}

/// Answers a fetch. The response's records fields stand in for the
/// returned file records, which stay in their segment files until sent.
pub(super) async fn handle(
    ctx: &RequestContext<'_>,
    request: FetchRequest,
) -> (FetchResponse, FileRecords) {
    let image = ctx.broker.image();
    let (replica_id, replica_epoch) = if ctx.version >= REPLICA_STATE_VERSION {
        (
            request.replica_state.replica_id.0,
            request.replica_state.replica_epoch,
        )
    } else {
        (request.replica_id.0, -1)
    };
    let follower = (replica_id >= 0).then_some(Follower {
        id: replica_id,
        incarnation: u64::try_from(replica_epoch).ok(),
    });
    let read_limit = if follower.is_some() {
        ReadLimit::LogEnd
    } else {
        ReadLimit::HighWatermark
    };
    let read_committed = request.isolation_level == READ_COMMITTED;

    let uses_topic_ids = ctx.version >= TOPIC_ID_VERSION;
    let requested = requested_partitions(&request, uses_topic_ids);
    let forgotten = forgotten_partitions(&request, uses_topic_ids);
    let owner = follower.map(|f| (f.id, replica_epoch));
    let session = SessionRequest {
        id: request.session_id,
        epoch: request.session_epoch,
        owner,
        uses_topic_ids,
    };
    let context = if session.is_sessionless() {
        Ok(FetchContext::Sessionless)
    } else {
        ctx.broker
            .fetch_sessions()
            .context(session, &requested, &forgotten, now_ms())
    };
    let (context, partitions) = match context {
        Ok(FetchContext::Incremental {
            id,
            epoch,
            partitions,
        }) => (Session::Incremental { id, epoch }, partitions),
        Ok(FetchContext::NewSession) => (Session::New, requested),
        Ok(FetchContext::Sessionless) => (Session::None, requested),
        Err(error) => {
            let response = FetchResponse::default().with_error_code(error.code());
            return (response, FileRecords::default());
        }
    };

    let (topics, targets) = resolve(ctx, &image, follower, partitions);

    let limits = Limits {
        report_log_start: ctx.version >= LOG_START_VERSION,
        max_bytes: request
            .max_bytes
            .clamp(0, ctx.broker.config.fetch_max_bytes) as usize,
        read_limit,
        read_committed,
        follower,
    };
    let min_bytes = request.min_bytes.max(0) as usize;
    let deadline = Instant::now() + Duration::from_millis(request.max_wait_ms.max(0) as u64);
    let mut shutdown = ctx.broker.shutdown_signal();
    let notify = Arc::new(Notify::new());
    let gathered = loop {
        // Register before reading, so an append in between still wakes us;
        // a look once the wait is over is the last, and needs no waking.
        if Instant::now() < deadline {
            for replica in targets.iter().filter_map(|t| t.replica.as_ref().ok()) {
                replica.register_waiter(&notify, read_limit);
            }
        }
        // A look on this worker first: at the log end, where followers
        // and caught-up consumers read, everything is in memory, and a
        // hand-off to a blocking thread would cost more than the look.
        let mut gathered = gather(ctx, &image, &targets, &limits, ReadMode::CachedOnly);
        if gathered.would_wait {
            gathered =
                crate::blocking::run(|| gather(ctx, &image, &targets, &limits, ReadMode::MayWait));
        }
        let done = gathered.bytes >= min_bytes
            || gathered.has_error
            || Instant::now() >= deadline
            || ctx.broker.is_shutting_down();
        if done {
            break gathered;
        }
        tokio::select! {
            () = notify.notified() => {}
            () = tokio::time::sleep_until(deadline) => {}
            _ = shutdown.changed() => {}
        }
    };

    let Gathered {
        partitions,
        endpoints,
        records,
        ..
    } = gathered;
    let answered = Answer {
        owner,
        uses_topic_ids,
        targets: &targets,
        partitions: &partitions,
    };
    let (session_id, carried) = match session_step(ctx, context, answered) {
        Ok(step) => step,
        Err(error) => {
            let response = FetchResponse::default().with_error_code(error.code());
            return (response, FileRecords::default());
        }
    };

    let mut responses: Vec<FetchableTopicResponse> = topics
        .into_iter()
        .map(|topic| match topic {
            TopicKey::Id(id) => FetchableTopicResponse::default().with_topic_id(id),
            TopicKey::Name(name) => {
                FetchableTopicResponse::default().with_topic(TopicName(StrBytes::from_string(name)))
            }
        })
        .collect();
    for (index, (target, data)) in targets.iter().zip(partitions).enumerate() {
        if carried.as_ref().is_none_or(|carried| carried[index]) {
            responses[target.topic].partitions.push(data);
        }
    }
    responses.retain(|topic| !topic.partitions.is_empty() || carried.is_none());
    let response = FetchResponse::default()
        .with_session_id(session_id)
        .with_responses(responses)
        .with_node_endpoints(if ctx.version >= LEADER_HINT_VERSION {
            node_endpoints(endpoints)
        } else {
            Vec::new()
        });
    (response, records)
}

/// Finds each partition's local replica, or why it cannot be read, and
/// the topics of the response in the order they first appear.
fn resolve(
    ctx: &RequestContext<'_>,
    image: &MetadataImage,
    follower: Option<Follower>,
    partitions: Vec<(PartitionKey, FetchParams)>,
) -> (Vec<TopicKey>, Vec<Target>) {
    let mut topics: Vec<TopicKey> = Vec::new();
    let mut topic_places: HashMap<TopicKey, usize> = HashMap::new();
    let mut targets = Vec::with_capacity(partitions.len());
    for (key, params) in partitions {
        let topic = match topic_places.get(&key.topic) {
            Some(&place) => place,
            None => {
                topics.push(key.topic.clone());
                topic_places.insert(key.topic.clone(), topics.len() - 1);
                topics.len() - 1
            }
        };
        let name = match &key.topic {
            TopicKey::Id(id) => image.topic_by_id(id).map(|t| t.name.clone()),
            TopicKey::Name(name) => Some(name.clone()),
        };
        let replica = match &name {
            None => Err(PartitionError::UnknownTopicId),
            Some(name) => follower
                .map_or(Ok(()), |f| {
                    check_follower(image, f)?;
                    // A leader without a lease serves no follower: its
                    // successor may be elected, and what it would hand
                    // out could diverge from the successor's log.
                    ctx.broker.check_lease()
                })
                .and_then(|()| {
                    leader_replica(
                        ctx.broker,
                        image,
                        name,
                        key.partition,
                        params.current_leader_epoch,
                    )
                }),
        };
        targets.push(Target {
            topic,
            name: name.unwrap_or_default(),
            key,
            params,
            partition_max_bytes: params
                .partition_max_bytes
                .clamp(0, ctx.broker.config.fetch_max_bytes)
                as usize,
            replica,
        });
    }
    (topics, targets)
}

struct Limits {
    report_log_start: bool,
    max_bytes: usize,
    read_limit: ReadLimit,
    read_committed: bool,
    follower: Option<Follower>,
}

/// A replica fetch must come from a registered broker, at its registered
/// incarnation when it names one. That it is a replica of the partition is
/// the leader's view's to check (`Partition::record_follower_fetch`),
/// before any record is read.
fn check_follower(image: &MetadataImage, follower: Follower) -> Result<(), PartitionError> {
    let broker = image
        .broker(follower.id)
        .ok_or(PartitionError::NotAReplica(follower.id))?;
    match follower.incarnation {
        Some(got) if got != broker.incarnation => Err(PartitionError::StaleReplica {
            node_id: follower.id,
            got,
            current: broker.incarnation,
        }),
        _ => Ok(()),
    }
}

struct Gathered {
    partitions: Vec<PartitionData>,
    endpoints: Endpoints,
    records: FileRecords,
    bytes: usize,
    has_error: bool,
    /// A look that may not wait stopped where it would have: nothing of it
    /// is to be answered.
    would_wait: bool,
}

/// Most record bytes a look that may not wait copies from the page cache
/// into the response. More go out with `sendfile` from a blocking thread,
/// where the hand-off costs less than the copy.
const CACHED_COPY_MAX_BYTES: usize = 256 * 1024;

/// Reads every target's records, waiting on the disk only if `mode` allows
/// it; with [`ReadMode::CachedOnly`] it stops at the first read that would
/// wait and says so (`would_wait`).
fn gather(
    ctx: &RequestContext<'_>,
    image: &MetadataImage,
    targets: &[Target],
    limits: &Limits,
    mode: ReadMode,
) -> Gathered {
    let mut gathered = Gathered {
        partitions: Vec::with_capacity(targets.len()),
        endpoints: Endpoints::default(),
        records: FileRecords::default(),
        bytes: 0,
        has_error: false,
        would_wait: false,
    };
    for target in targets {
        let data = match &target.replica {
            Ok(replica) => read_partition(target, replica, limits, mode, &mut gathered),
            Err(error) => {
                gathered.has_error = true;
                let mut data =
                    empty(target.key.partition, limits).with_error_code(error.code().code());
                if matches!(error, PartitionError::NotLeader) && ctx.version >= LEADER_HINT_VERSION
                {
                    let (leader, epoch) = current_leader(image, &target.name, target.key.partition);
                    gathered.endpoints.add(image, leader);
                    data.current_leader = LeaderIdAndEpoch::default()
                        .with_leader_id(BrokerId(leader))
                        .with_leader_epoch(epoch);
                }
                data
            }
        };
        if gathered.would_wait {
            break;
        }
        gathered.partitions.push(data);
    }
    gathered
}

fn read_partition(
    target: &Target,
    replica: &Partition,
    limits: &Limits,
    mode: ReadMode,
    gathered: &mut Gathered,
) -> PartitionData {
    let remaining = limits.max_bytes.saturating_sub(gathered.bytes);
    let max_bytes = target.partition_max_bytes.min(remaining);
    let first_data = gathered.bytes == 0;
    let result = replica
        .read(
            target.params.fetch_offset,
            target.params.last_fetched_epoch,
            max_bytes,
            limits.read_limit,
            first_data,
            mode,
        )
        .map_err(PartitionError::from)
        .and_then(|(fetched, offsets)| match fetched {
            Fetched::Diverged { epoch, end_offset } => {
                let diverging = EpochEndOffset::default()
                    .with_epoch(epoch)
                    .with_end_offset(end_offset);
                Ok((Read::Diverged(diverging), offsets))
            }
            Fetched::Records(slice) => {
                // The fetch offset is within the log (a read past its end
                // fails): it is how far the follower's log reaches.
                if let Some(follower) = limits.follower {
                    replica.record_follower_fetch(
                        follower.id,
                        target.params.current_leader_epoch,
                        target.params.fetch_offset,
                        follower.incarnation,
                        now_ms(),
                    )?;
                }
                let records = match (slice, mode) {
                    (None, _) => Bytes::new(),
                    (Some(slice), ReadMode::MayWait) => gathered
                        .records
                        .field(slice)
                        .map_err(PartitionError::Storage)?,
                    (Some(slice), ReadMode::CachedOnly) => {
                        let cached = if gathered.bytes + slice.len() <= CACHED_COPY_MAX_BYTES {
                            slice.read_cached().map_err(PartitionError::Storage)?
                        } else {
                            None
                        };
                        cached.ok_or(PartitionError::Log(LogError::WouldWait))?
                    }
                };
                Ok((Read::Records(records), offsets))
            }
        });
    match result {
        Ok((Read::Records(records), offsets)) => {
            gathered.bytes += records.len();
            with_offsets(empty(target.key.partition, limits), offsets, limits)
                .with_records(Some(records))
        }
        Ok((Read::Diverged(diverging), offsets)) => {
            // Nothing to wait for: the fetcher must truncate first.
            gathered.has_error = true;
            with_offsets(empty(target.key.partition, limits), offsets, limits)
                .with_diverging_epoch(diverging)
        }
        // Answering an error reads the log's offsets under its lock: the
        // look that may wait does it.
        Err(_) if mode == ReadMode::CachedOnly => {
            gathered.would_wait = true;
            empty(target.key.partition, limits)
        }
        Err(error) => {
            tracing::debug!(topic = replica.topic(), partition = target.key.partition, %error, "fetch failed");
            gathered.has_error = true;
            with_offsets(
                empty(target.key.partition, limits),
                replica.offsets(),
                limits,
            )
            .with_error_code(error.code().code())
        }
    }
}

enum Read {
    Records(bytes::Bytes),
    Diverged(EpochEndOffset),
}

fn with_offsets(data: PartitionData, offsets: PartitionOffsets, limits: &Limits) -> PartitionData {
    data.with_high_watermark(offsets.high_watermark)
        .with_last_stable_offset(offsets.high_watermark)
        .with_log_start_offset(log_start(offsets.log_start_offset, limits))
}

fn log_start(offset: i64, limits: &Limits) -> i64 {
    if limits.report_log_start { offset } else { -1 }
}

fn empty(index: i32, limits: &Limits) -> PartitionData {
    PartitionData::default()
        .with_partition_index(index)
        .with_high_watermark(-1)
        .with_last_stable_offset(-1)
        .with_log_start_offset(-1)
        .with_preferred_read_replica(BrokerId(-1))
        .with_aborted_transactions(limits.read_committed.then(Vec::new))
}

fn node_endpoints(endpoints: Endpoints) -> Vec<NodeEndpoint> {
    endpoints
        .into_brokers()
        .map(|b| {
            NodeEndpoint::default()
                .with_node_id(BrokerId(b.node_id))
                .with_host(StrBytes::from_string(b.host))
                .with_port(b.port)
                .with_rack(b.rack.map(StrBytes::from_string))
        })
        .collect()
}
