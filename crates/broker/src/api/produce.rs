//! Produce: append each partition's record batch to the leader's log.
//!
//! Every partition gets an honest answer: its base offset with error 0, or
//! an error code with base offset -1, never error 0 without an offset.
//! acks=0 is answered with nothing at all; acks=1 after the local append;
//! acks=all needs the ISR at min.insync.replicas before the append
//! (NOT_ENOUGH_REPLICAS) and waits until the high watermark covers the
//! batch: past the request's timeout it gets REQUEST_TIMED_OUT, or
//! NOT_ENOUGH_REPLICAS_AFTER_APPEND if the ISR fell below the minimum,
//! and NOT_LEADER_OR_FOLLOWER if leadership moved meanwhile. The append
//! names the leader epoch the request was routed by, so a produce that
//! raced a leader change never lands in a deposed leader's log. Without a
//! lease (see `lease`) nothing is appended (NOT_LEADER_OR_FOLLOWER), and an
//! acks=1 write whose answer comes after the lease lapsed is not
//! acknowledged (REQUEST_TIMED_OUT: it may or may not survive). An acks=all
//! write needs no second look: once the high watermark covers it, every
//! in-sync replica holds it, and a successor is one of them. Answering it
//! REQUEST_TIMED_OUT would be worse than useless: an idempotent librdkafka
//! producer takes that as "possibly written", bumps its epoch and writes
//! the batch again.
//!
//! From v13 topics are named by id (KIP-516); an id the image does not
//! know is answered UNKNOWN_TOPIC_ID.
//!
//! A broker whose lease lapsed a session timeout ago is presumed deposed
//! (see `Broker::presumed_deposed`): an acks=all write still waiting is
//! answered then (see `await_committed`), and a produce it refuses or
//! answers so for its lease closes the connection once answered. Cut off,
//! the broker cannot hear the controller, so its metadata may name it
//! leader long after a successor was elected; a client asks the broker it
//! is connected to for metadata and would be sent back here until the
//! partition heals. Disconnected, it asks another broker. (Kafka closes the
//! connection for the same reason after refusing an acks=0 produce.) A
//! shorter lapse, while the controller fails over, hangs up on nobody.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use kafka_protocol::{
    messages::{
        BrokerId, ProduceRequest, ProduceResponse,
        produce_response::{
            LeaderIdAndEpoch, NodeEndpoint, PartitionProduceResponse, TopicProduceResponse,
        },
    },
    protocol::StrBytes,
};
use keel_log::{AppendOutcome, BatchError, batch};
use tokio::time::Instant;

use super::{
    RequestContext,
    leader_hint::{Endpoints, current_leader},
    topics::{leader_replica, topic_name},
};
use crate::{
    broker::{Broker, now_ms},
    error::PartitionError,
    group::storage::OFFSETS_TOPIC,
    partition::Partition,
};
use keel_raft_metadata::MetadataImage;

mod record_errors;
mod refused;

pub(super) use self::refused::RefusedBatches;

/// Waits until the high watermark reaches `required`. A leader presumed
/// deposed (see `Broker::presumed_deposed`) was cut off from its
/// controller, and likely from its followers too, so its high watermark
/// may never move again; waiting out the request's timeout would keep the
/// client from a successor that may already take writes. The write is
/// answered then instead, its outcome unknown (REQUEST_TIMED_OUT) unless
/// it is committed by then.
async fn await_committed(
    broker: &Broker,
    partition: &Partition,
    leader_epoch: i32,
    required: i64,
    deadline: Instant,
) -> Result<(), PartitionError> {
    tokio::select! {
        biased;
        result = partition.await_high_watermark(leader_epoch, required, deadline) => result,
        () = broker.until_presumed_deposed() => {
            if partition.high_watermark() >= required {
                Ok(())
            } else {
                Err(PartitionError::LeaseLapsedAfterAppend)
            }
        }
    }
}

/// See the module's comment: a broker presumed deposed sends the client
/// to another broker for metadata.
fn hang_up_if_presumed_deposed(ctx: &RequestContext<'_>, error: &PartitionError) {
    if matches!(
        error,
        PartitionError::LeaseLapsed | PartitionError::LeaseLapsedAfterAppend
    ) && ctx.broker.presumed_deposed()
        && !ctx.connection.hangs_up()
    {
        ctx.connection.hang_up_after_response();
        ctx.broker.metrics.deposed_hang_ups.inc_by(1);
    }
}

/// The first version carrying KIP-951 leader hints.
const LEADER_HINT_VERSION: i16 = 10;
/// The first version reporting the log start offset.
const LOG_START_VERSION: i16 = 5;
/// The first version carrying error messages.
const ERROR_MESSAGE_VERSION: i16 = 8;
/// The first version naming topics by id (KIP-516).
const TOPIC_ID_VERSION: i16 = 13;

/// A produce request whose batches are appended: each partition's answer
/// so far, and the acks=all writes whose answer waits for their followers.
/// It holds nothing of the request's frame, so the connection's buffer is
/// reused for the next request while this one waits.
pub(super) struct Appended {
    acks: i16,
    deadline: Instant,
    responses: Vec<TopicProduceResponse>,
    awaiting: Vec<AwaitingReplication>,
    endpoints: Endpoints,
}

/// An acks=all write appended to the leader's log, answered once the high
/// watermark covers it.
struct AwaitingReplication {
    /// Where its answer is among the response's topics and partitions.
    topic: usize,
    index: usize,
    partition: Arc<Partition>,
    leader_epoch: i32,
    outcome: AppendOutcome,
}

/// A produce request ready to append: its topics named, its partitions'
/// successions awaited.
pub(super) struct Prepared {
    request: ProduceRequest,
    deadline: Instant,
}

/// Makes a request ready to append: names its topics (by id from v13) and
/// waits until none of its partitions' leaderships is too fresh to write.
pub(super) async fn prepare(ctx: &RequestContext<'_>, mut request: ProduceRequest) -> Prepared {
    let deadline = Instant::now() + Duration::from_millis(request.timeout_ms.max(0) as u64);
    if ctx.version >= TOPIC_ID_VERSION {
        name_topics_by_id(&ctx.broker.image(), &mut request);
    }
    // A leadership just taken holds writes back for a moment, until no
    // earlier leader can take any (see `replication::succession`): they
    // wait here rather than be refused.
    for topic in &request.topic_data {
        for data in &topic.partition_data {
            if let Some(partition) = ctx.broker.replicas.get(topic.name.0.as_str(), data.index) {
                partition.await_succession(deadline, now_ms).await;
            }
        }
    }
    Prepared { request, deadline }
}

/// Appends every batch of the request, in the order the request names
/// them, and answers every partition that needs no follower. The appends
/// write to disk and take partition locks: call it in a blocking section
/// (see `blocking`).
pub(super) fn append(ctx: &RequestContext<'_>, prepared: Prepared) -> Appended {
    let Prepared { request, deadline } = prepared;
    let image = ctx.broker.image();
    let now = now_ms();
    ctx.broker.note_produce(now);
    let transactional = request.transactional_id.is_some();
    let mut endpoints = Endpoints::default();
    let mut responses = Vec::with_capacity(request.topic_data.len());
    let mut awaiting = Vec::new();

    for topic in request.topic_data {
        let name = topic.name.0.as_str();
        let mut partitions = Vec::with_capacity(topic.partition_data.len());
        for data in topic.partition_data {
            if name.is_empty() && ctx.version >= TOPIC_ID_VERSION {
                let error = PartitionError::UnknownTopicId;
                partitions.push(failure(
                    data.index,
                    error.code(),
                    Some(error.to_string()),
                    ctx.version,
                ));
                continue;
            }
            let idempotent = data
                .records
                .as_deref()
                .and_then(|r| batch::BatchHeader::parse(r).ok())
                .filter(batch::BatchHeader::has_producer_id);
            let result = if transactional {
                Err(PartitionError::TransactionsUnsupported)
            } else if !matches!(request.acks, -1..=1) {
                Err(PartitionError::InvalidRequiredAcks(request.acks))
            } else {
                append_batch(
                    ctx,
                    &image,
                    name,
                    data.index,
                    data.records,
                    request.acks,
                    now,
                )
            };
            // An acks=1 write appended before the lease lapsed, or
            // before leadership moved, but answered after: the
            // successor may not have it, so no success. (An acks=all
            // write is answered only once every in-sync replica, the
            // successor among them, holds it.)
            let result = result.and_then(|appended| {
                if request.acks == 1 {
                    ctx.broker.check_lease_after_append()?;
                    appended.0.check_still_leading(appended.1)?;
                }
                Ok(appended)
            });
            let result = match idempotent {
                Some(header) => keep_in_order(ctx, name, data.index, &header, result, now),
                None => result,
            };
            let response = match result {
                Ok((partition, leader_epoch, outcome)) => {
                    if request.acks == -1 {
                        awaiting.push(AwaitingReplication {
                            topic: responses.len(),
                            index: partitions.len(),
                            partition,
                            leader_epoch,
                            outcome,
                        });
                    }
                    success(data.index, &outcome, ctx.version)
                }
                Err(error) => {
                    tracing::debug!(topic = name, partition = data.index, %error, "produce failed");
                    hang_up_if_presumed_deposed(ctx, &error);
                    let mut response = match error.rejected_records() {
                        Some((records, total)) if ctx.version >= ERROR_MESSAGE_VERSION => {
                            record_errors::rejected(name, data.index, records, total, error.code())
                        }
                        _ => failure(
                            data.index,
                            error.code(),
                            Some(error.to_string()),
                            ctx.version,
                        ),
                    };
                    if matches!(error, PartitionError::NotLeader)
                        && ctx.version >= LEADER_HINT_VERSION
                    {
                        let (leader, epoch) = current_leader(&image, name, data.index);
                        endpoints.add(&image, leader);
                        response.current_leader = LeaderIdAndEpoch::default()
                            .with_leader_id(BrokerId(leader))
                            .with_leader_epoch(epoch);
                    }
                    response
                }
            };
            partitions.push(response);
        }
        // An owned copy: the decoded name shares the frame's buffer.
        let name = topic_name(name);
        responses.push(
            TopicProduceResponse::default()
                .with_name(name)
                .with_topic_id(topic.topic_id)
                .with_partition_responses(partitions),
        );
    }

    Appended {
        acks: request.acks,
        deadline,
        responses,
        awaiting,
        endpoints,
    }
}

impl Appended {
    /// The request's acks: 0 (no answer), 1 or -1 (all).
    pub(super) fn acks(&self) -> i16 {
        self.acks
    }

    /// Whether every partition is answered: no acks=all write waits.
    pub(super) fn is_answered(&self) -> bool {
        self.awaiting.is_empty()
    }

    /// Whether any partition's write failed.
    pub(super) fn any_failed(&self) -> bool {
        self.responses
            .iter()
            .flat_map(|t| &t.partition_responses)
            .any(|p| p.error_code != 0)
    }

    /// The response, once every acks=all write is acknowledged or failed.
    pub(super) async fn acknowledged(mut self, ctx: &RequestContext<'_>) -> ProduceResponse {
        for write in std::mem::take(&mut self.awaiting) {
            let committed = await_committed(
                ctx.broker,
                &write.partition,
                write.leader_epoch,
                write.outcome.last_offset + 1,
                self.deadline,
            )
            .await;
            if let Err(error) = committed {
                let partition = &write.partition;
                tracing::debug!(topic = partition.topic(), partition = partition.index(), %error, "acks=all produce not acknowledged");
                hang_up_if_presumed_deposed(ctx, &error);
                let response = &mut self.responses[write.topic].partition_responses[write.index];
                *response = failure(
                    response.index,
                    error.code(),
                    Some(error.to_string()),
                    ctx.version,
                );
            }
        }
        self.into_response()
    }

    /// The response as it stands, every write acknowledged or not.
    pub(super) fn into_response(self) -> ProduceResponse {
        ProduceResponse::default()
            .with_responses(self.responses)
            .with_node_endpoints(
                self.endpoints
                    .into_brokers()
                    .map(|b| {
                        NodeEndpoint::default()
                            .with_node_id(BrokerId(b.node_id))
                            .with_host(StrBytes::from_string(b.host))
                            .with_port(b.port)
                            .with_rack(b.rack.map(StrBytes::from_string))
                    })
                    .collect(),
            )
    }
}

/// From the version naming topics by id, gives each topic of `request` its
/// name; a topic whose id `image` does not know keeps an empty name, which
/// names no topic (its partitions are answered UNKNOWN_TOPIC_ID).
fn name_topics_by_id(image: &MetadataImage, request: &mut ProduceRequest) {
    for topic in &mut request.topic_data {
        topic.name = image
            .topic_by_id(&topic.topic_id)
            .map(|t| topic_name(&t.name))
            .unwrap_or_default();
    }
}

/// Appends one partition's batch; returns the replica, the leader epoch it
/// was appended at and where it landed.
fn append_batch(
    ctx: &RequestContext<'_>,
    image: &MetadataImage,
    topic: &str,
    index: i32,
    records: Option<Bytes>,
    acks: i16,
    now: i64,
) -> Result<(Arc<Partition>, i32, AppendOutcome), PartitionError> {
    if topic == OFFSETS_TOPIC {
        return Err(PartitionError::InternalTopic(topic.to_string()));
    }
    let partition = leader_replica(ctx.broker, image, topic, index, -1)?;
    ctx.broker.check_lease()?;
    // The epoch the image names: if the replica has moved on meanwhile,
    // the append fails rather than land under another leadership.
    let leader_epoch = current_leader(image, topic, index).1;
    let records = records.unwrap_or_default();
    let batches = batch::split_batches(&records).map_err(keel_log::LogError::from)?;
    if batches.len() != 1 {
        return Err(keel_log::LogError::from(BatchError::NotOneBatch(batches.len())).into());
    }
    let header = batch::BatchHeader::parse(&records).map_err(keel_log::LogError::from)?;
    if header.is_transactional() || header.is_control() {
        return Err(PartitionError::TransactionsUnsupported);
    }
    if acks == -1 {
        partition.check_min_isr()?;
    }
    let outcome = {
        let watched = ctx.broker.config.liveness.partition_stall_timeout.is_some();
        let _waiting = watched.then(|| partition.begin_produce(now, now_ms));
        partition.append_as_leader(&records, Some(leader_epoch), now)?
    };
    Ok((partition, leader_epoch, outcome))
}

/// An idempotent producer's batches stay in order across refusals: after
/// this connection refused one of its batches without appending it, a
/// pipelined later batch that finds the gap is refused the same retriable
/// way rather than with OUT_OF_ORDER_SEQUENCE_NUMBER (see `refused`).
fn keep_in_order<T>(
    ctx: &RequestContext<'_>,
    topic: &str,
    partition: i32,
    header: &batch::BatchHeader,
    result: Result<T, PartitionError>,
    now_ms: i64,
) -> Result<T, PartitionError> {
    let refused = &ctx.connection.refused;
    match result {
        Ok(appended) => {
            refused.appended(topic, partition, header);
            Ok(appended)
        }
        Err(PartitionError::Log(keel_log::LogError::OutOfOrderSequence { .. }))
            if refused.explain_gap(topic, partition, header, now_ms) =>
        {
            Err(PartitionError::EarlierBatchRefused)
        }
        Err(error) => {
            if error.refused_before_append() {
                refused.refused(topic, partition, header, now_ms);
            }
            Err(error)
        }
    }
}

fn success(index: i32, outcome: &AppendOutcome, version: i16) -> PartitionProduceResponse {
    let log_start_offset = if version >= LOG_START_VERSION {
        outcome.log_start_offset
    } else {
        -1
    };
    PartitionProduceResponse::default()
        .with_index(index)
        .with_base_offset(outcome.base_offset)
        .with_log_append_time_ms(outcome.log_append_time_ms)
        .with_log_start_offset(log_start_offset)
}

pub(super) fn failure(
    index: i32,
    error: kafka_protocol::error::ResponseError,
    message: Option<String>,
    version: i16,
) -> PartitionProduceResponse {
    let message = message.filter(|_| version >= ERROR_MESSAGE_VERSION);
    PartitionProduceResponse::default()
        .with_index(index)
        .with_error_code(error.code())
        .with_base_offset(-1)
        .with_log_append_time_ms(-1)
        .with_log_start_offset(-1)
        .with_error_message(message.map(StrBytes::from_string))
}
