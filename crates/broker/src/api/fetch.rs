//! Fetch: whole record batches from each requested partition.
//!
//! Limits follow KIP-74: the response carries at most `max_bytes` and each
//! partition at most `partition_max_bytes`, except that the first batch of
//! the first partition with data is returned whole even if larger, so a
//! consumer can always make progress. A request that finds fewer than
//! `min_bytes` waits up to `max_wait_ms` for appends. Incremental fetch
//! sessions are declined: every response is full and has session id 0.
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

use std::{sync::Arc, time::Duration};

use kafka_protocol::{
    error::ResponseError,
    messages::{
        BrokerId, FetchRequest, FetchResponse,
        fetch_response::{
            EpochEndOffset, FetchableTopicResponse, LeaderIdAndEpoch, NodeEndpoint, PartitionData,
        },
    },
    protocol::StrBytes,
};
use tokio::{sync::Notify, time::Instant};

use super::{
    RequestContext,
    leader_hint::{Endpoints, current_leader},
    topics::leader_replica,
};
use crate::{
    broker::now_ms,
    error::PartitionError,
    partition::{Fetched, Partition, PartitionOffsets, ReadLimit},
    response::FileRecords,
};
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
const INITIAL_EPOCH: i32 = 0;
const FINAL_EPOCH: i32 = -1;

/// One requested partition, resolved once per request.
struct Target {
    topic: usize,
    name: String,
    index: i32,
    fetch_offset: i64,
    last_fetched_epoch: i32,
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
    if request.session_id != 0 {
        let response =
            FetchResponse::default().with_error_code(ResponseError::FetchSessionIdNotFound.code());
        return (response, FileRecords::default());
    }
    if request.session_epoch != INITIAL_EPOCH && request.session_epoch != FINAL_EPOCH {
        let response = FetchResponse::default()
            .with_error_code(ResponseError::InvalidFetchSessionEpoch.code());
        return (response, FileRecords::default());
    }
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

    let mut topics = Vec::with_capacity(request.topics.len());
    let mut targets = Vec::new();
    for (topic_index, topic) in request.topics.into_iter().enumerate() {
        let name = if ctx.version >= TOPIC_ID_VERSION {
            image.topic_by_id(&topic.topic_id).map(|t| t.name.clone())
        } else {
            Some(topic.topic.0.to_string())
        };
        for partition in topic.partitions {
            let replica = match &name {
                None => Err(PartitionError::UnknownTopicId),
                Some(name) => follower
                    .map_or(Ok(()), |f| {
                        check_follower(&image, f)?;
                        // A leader without a lease serves no follower: its
                        // successor may be elected, and what it would hand
                        // out could diverge from the successor's log.
                        ctx.broker.check_lease()
                    })
                    .and_then(|()| {
                        leader_replica(
                            ctx.broker,
                            &image,
                            name,
                            partition.partition,
                            partition.current_leader_epoch,
                        )
                    }),
            };
            targets.push(Target {
                topic: topic_index,
                name: name.clone().unwrap_or_default(),
                index: partition.partition,
                fetch_offset: partition.fetch_offset,
                last_fetched_epoch: partition.last_fetched_epoch,
                partition_max_bytes: partition
                    .partition_max_bytes
                    .clamp(0, ctx.broker.config.fetch_max_bytes)
                    as usize,
                replica,
            });
        }
        topics.push((topic.topic, topic.topic_id));
    }

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
        // Register before reading, so an append in between still wakes us.
        for replica in targets.iter().filter_map(|t| t.replica.as_ref().ok()) {
            replica.register_waiter(&notify, read_limit);
        }
        let gathered = crate::blocking::run(|| gather(ctx, &image, &targets, &limits));
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

    let mut responses: Vec<FetchableTopicResponse> = topics
        .into_iter()
        .map(|(topic, topic_id)| {
            FetchableTopicResponse::default()
                .with_topic(topic)
                .with_topic_id(topic_id)
        })
        .collect();
    for (target, data) in targets.iter().zip(gathered.partitions) {
        responses[target.topic].partitions.push(data);
    }
    let response = FetchResponse::default()
        .with_responses(responses)
        .with_node_endpoints(if ctx.version >= LEADER_HINT_VERSION {
            node_endpoints(gathered.endpoints)
        } else {
            Vec::new()
        });
    (response, gathered.records)
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
}

fn gather(
    ctx: &RequestContext<'_>,
    image: &MetadataImage,
    targets: &[Target],
    limits: &Limits,
) -> Gathered {
    let mut gathered = Gathered {
        partitions: Vec::with_capacity(targets.len()),
        endpoints: Endpoints::default(),
        records: FileRecords::default(),
        bytes: 0,
        has_error: false,
    };
    for target in targets {
        let data = match &target.replica {
            Ok(replica) => read_partition(target, replica, limits, &mut gathered),
            Err(error) => {
                gathered.has_error = true;
                let mut data = empty(target.index, limits).with_error_code(error.code().code());
                if matches!(error, PartitionError::NotLeader) && ctx.version >= LEADER_HINT_VERSION
                {
                    let (leader, epoch) = current_leader(image, &target.name, target.index);
                    gathered.endpoints.add(image, leader);
                    data.current_leader = LeaderIdAndEpoch::default()
                        .with_leader_id(BrokerId(leader))
                        .with_leader_epoch(epoch);
                }
                data
            }
        };
        gathered.partitions.push(data);
    }
    gathered
}

fn read_partition(
    target: &Target,
    replica: &Partition,
    limits: &Limits,
    gathered: &mut Gathered,
) -> PartitionData {
    let remaining = limits.max_bytes.saturating_sub(gathered.bytes);
    let max_bytes = target.partition_max_bytes.min(remaining);
    let first_data = gathered.bytes == 0;
    let result = replica
        .read(
            target.fetch_offset,
            target.last_fetched_epoch,
            max_bytes,
            limits.read_limit,
            first_data,
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
                        target.fetch_offset,
                        follower.incarnation,
                        now_ms(),
                    )?;
                }
                let records = slice
                    .map(|s| gathered.records.field(s))
                    .transpose()
                    .map_err(PartitionError::Storage)?;
                Ok((Read::Records(records.unwrap_or_default()), offsets))
            }
        });
    match result {
        Ok((Read::Records(records), offsets)) => {
            gathered.bytes += records.len();
            with_offsets(empty(target.index, limits), offsets, limits).with_records(Some(records))
        }
        Ok((Read::Diverged(diverging), offsets)) => {
            // Nothing to wait for: the fetcher must truncate first.
            gathered.has_error = true;
            with_offsets(empty(target.index, limits), offsets, limits)
                .with_diverging_epoch(diverging)
        }
        Err(error) => {
            tracing::debug!(topic = replica.topic(), partition = target.index, %error, "fetch failed");
            gathered.has_error = true;
            with_offsets(empty(target.index, limits), replica.offsets(), limits)
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
