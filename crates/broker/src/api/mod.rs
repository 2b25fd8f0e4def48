//! The Kafka APIs this broker implements, one module each, and the dispatch
//! from a request frame to its handler.
//!
//! [`SUPPORTED_APIS`] is the single list of what is implemented; ApiVersions
//! advertises exactly it and dispatch refuses anything outside it.

mod alter_configs;
mod alter_partition_reassignments;
mod alter_replica_log_dirs;
mod api_versions;
mod authorized_operations;
mod consumer_group_describe;
mod consumer_group_heartbeat;
mod create_partitions;
mod create_topics;
mod delete_groups;
mod delete_records;
mod delete_topics;
mod describe_cluster;
mod describe_configs;
mod describe_groups;
mod describe_log_dirs;
mod describe_quorum;
mod describe_topic_partitions;
mod elect_leaders;
mod encode;
mod fetch;
mod find_coordinator;
mod group_configs;
mod heartbeat;
mod incremental_alter_configs;
mod init_producer_id;
mod internal_topic;
mod join_group;
mod leader_hint;
mod leave_group;
mod list_config_resources;
mod list_groups;
mod list_offsets;
mod list_partition_reassignments;
mod metadata;
mod offset_commit;
mod offset_delete;
mod offset_fetch;
mod offset_for_leader_epoch;
mod produce;
mod sync_group;
mod topics;

use std::{
    future::Future,
    pin::Pin,
    sync::atomic::{AtomicBool, Ordering},
};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::{
    messages::{ApiKey, ProduceRequest, RequestHeader, RequestKind},
    protocol::{Decodable, Encodable},
};

use self::encode::encode_frame;
pub(crate) use self::encode::encode_response;
use crate::{
    broker::Broker,
    response::{FileRecords, ResponseFrame},
};

/// Every API implemented, with the versions implemented.
pub const SUPPORTED_APIS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 13),
    (ApiKey::Fetch, 4, 18),
    (ApiKey::ListOffsets, 1, 10),
    (ApiKey::Metadata, 0, 13),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::ElectLeaders, 0, 2),
    (ApiKey::AlterPartitionReassignments, 0, 1),
    (ApiKey::ListPartitionReassignments, 0, 0),
    (ApiKey::FindCoordinator, 0, 6),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DescribeGroups, 0, 6),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::ConsumerGroupHeartbeat, 0, 1),
    (ApiKey::ConsumerGroupDescribe, 0, 1),
    (ApiKey::DescribeTopicPartitions, 0, 0),
    (ApiKey::AlterReplicaLogDirs, 1, 2),
    (ApiKey::DescribeLogDirs, 1, 4),
    (ApiKey::DescribeQuorum, 0, 2),
    (ApiKey::ListConfigResources, 0, 1),
];

/// The error code clients get for an API or version outside the list.
const UNSUPPORTED_VERSION: i16 = 35;

/// A request that cannot be answered; the connection is closed.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("frame of {0} bytes is too short for a request header")]
    TooShort(usize),
    #[error("malformed {api:?} v{version} request: {reason}")]
    Malformed {
        api: ApiKey,
        version: i16,
        reason: String,
    },
    #[error("acks=0 produce failed for a partition; closing so the client refreshes metadata")]
    UnacknowledgedProduceFailed,
    #[error("cannot encode {api:?} v{version} response: {reason}")]
    Encode {
        api: ApiKey,
        version: i16,
        reason: String,
    },
}

/// What a client connection carries from one request to the next.
#[derive(Debug, Default)]
pub struct Connection {
    /// The client's address, as Kafka describes a group member's host
    /// ("/address").
    client_host: String,
    /// Idempotent batches refused without being appended (see `produce`).
    refused: produce::RefusedBatches,
    /// Set by a handler whose client is better off asking another broker:
    /// the connection closes once the response is sent.
    hang_up: AtomicBool,
}

impl Connection {
    pub fn new(client_host: String) -> Self {
        Self {
            client_host,
            refused: produce::RefusedBatches::default(),
            hang_up: AtomicBool::new(false),
        }
    }

    fn hang_up_after_response(&self) {
        self.hang_up.store(true, Ordering::Relaxed);
    }

    /// Whether the connection closes now that the response is sent.
    pub fn hangs_up(&self) -> bool {
        self.hang_up.load(Ordering::Relaxed)
    }
}

/// What a handler needs to know about the request it serves.
#[derive(Debug)]
pub(crate) struct RequestContext<'a> {
    pub(crate) broker: &'a Broker,
    pub(crate) api_key: ApiKey,
    pub(crate) version: i16,
    pub(crate) correlation_id: i32,
    /// The client id from the request header.
    pub(crate) client_id: String,
    /// The client's address, as group members are described.
    pub(crate) client_host: &'a str,
    /// The connection the request came on.
    pub(crate) connection: &'a Connection,
}

impl RequestContext<'_> {
    /// Frames a response: length, response header, body.
    fn encode<R: Encodable>(&self, response: &R) -> Result<ResponseFrame, RequestError> {
        self.encode_with_records(response, FileRecords::default())
    }

    /// Frames a response whose records fields stand in for `records`,
    /// which stay in their files until sent.
    fn encode_with_records<R: Encodable>(
        &self,
        response: &R,
        records: FileRecords,
    ) -> Result<ResponseFrame, RequestError> {
        encode_response(
            self.api_key,
            self.version,
            self.correlation_id,
            response,
            records,
        )
    }
}

fn supported_range(api_key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED_APIS
        .iter()
        .find(|(key, _, _)| *key == api_key)
        .map(|&(_, min, max)| (min, max))
}

/// The answer to an API key or version we do not implement: the
/// correlation id and UNSUPPORTED_VERSION, the only part of any response
/// layout that is common to all of them.
fn unsupported(correlation_id: i32) -> BytesMut {
    let mut frame = BytesMut::with_capacity(10);
    frame.put_i32(6);
    frame.put_i32(correlation_id);
    frame.put_i16(UNSUPPORTED_VERSION);
    frame
}

/// A request frame, decoded.
#[derive(Debug)]
pub enum Decoded {
    /// Answered without a handler: an unknown API or version, or the
    /// ApiVersions fallback.
    Immediate(BytesMut),
    Request {
        api_key: ApiKey,
        version: i16,
        correlation_id: i32,
        client_id: Option<String>,
        request: Box<RequestKind>,
    },
}

/// Decodes a request frame (everything after the length prefix). Any byte
/// sequence yields a value or an error, never a panic, and nothing is
/// allocated beyond what the frame's own bytes can fill.
pub fn decode(mut frame: Bytes) -> Result<Decoded, RequestError> {
    if frame.len() < 8 {
        return Err(RequestError::TooShort(frame.len()));
    }
    let raw_key = (&frame[0..2]).get_i16();
    let version = (&frame[2..4]).get_i16();
    let correlation_id = (&frame[4..8]).get_i32();
    let Ok(api_key) = ApiKey::try_from(raw_key) else {
        tracing::debug!(api_key = raw_key, "request for an unknown API");
        return Ok(Decoded::Immediate(unsupported(correlation_id)));
    };
    if api_key == ApiKey::ApiVersions {
        if let Some(reply) = api_versions::answer_unsupported_version(version, correlation_id)? {
            return Ok(Decoded::Immediate(reply));
        }
    }
    let supported =
        supported_range(api_key).is_some_and(|(min, max)| (min..=max).contains(&version));
    if !supported {
        tracing::debug!(
            ?api_key,
            version,
            "request for an unsupported API or version"
        );
        return Ok(Decoded::Immediate(unsupported(correlation_id)));
    }
    let malformed = |e: anyhow::Error| RequestError::Malformed {
        api: api_key,
        version,
        reason: e.to_string(),
    };
    let header = RequestHeader::decode(&mut frame, api_key.request_header_version(version))
        .map_err(malformed)?;
    let request = RequestKind::decode(api_key, &mut frame, version).map_err(malformed)?;
    Ok(Decoded::Request {
        api_key,
        version,
        correlation_id,
        client_id: header.client_id.map(|id| id.to_string()),
        request: Box::new(request),
    })
}

/// Whether a request frame (after its length) is a Produce request's, by
/// its API key alone.
pub fn is_produce_frame(frame: &[u8]) -> bool {
    frame.get(..2) == Some(&(ApiKey::Produce as i16).to_be_bytes()[..])
}

/// A decoded Produce request.
#[derive(Debug)]
pub struct ProduceCall {
    version: i16,
    correlation_id: i32,
    client_id: Option<String>,
    request: ProduceRequest,
}

impl Decoded {
    /// The Produce request this is, or itself when it is none.
    pub fn into_produce(self) -> Result<ProduceCall, Decoded> {
        match self {
            Decoded::Request {
                api_key: ApiKey::Produce,
                version,
                correlation_id,
                client_id,
                request,
            } => match *request {
                RequestKind::Produce(request) => Ok(ProduceCall {
                    version,
                    correlation_id,
                    client_id,
                    request,
                }),
                other => Err(Decoded::Request {
                    api_key: ApiKey::Produce,
                    version,
                    correlation_id,
                    client_id,
                    request: Box::new(other),
                }),
            },
            other => Err(other),
        }
    }
}

/// A produce request's response, once its acks=all writes are acknowledged.
pub type AwaitingReplication<'a> =
    Pin<Box<dyn Future<Output = Result<ResponseFrame, RequestError>> + Send + 'a>>;

/// How far a request got when [`begin`] returned.
pub enum Begun<'a> {
    /// Answered; `None` when no response is sent (Produce with acks=0).
    Answered(Option<ResponseFrame>),
    /// A produce request whose batches are all appended and whose answer
    /// waits for followers. Requests read after it append after it.
    Appended(AwaitingReplication<'a>),
}

impl std::fmt::Debug for Begun<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Begun::Answered(response) => f.debug_tuple("Answered").field(response).finish(),
            Begun::Appended(_) => f.write_str("Appended"),
        }
    }
}

/// Decodes and answers one request frame that came on `connection`.
/// `Ok(None)` means no response is sent (Produce with acks=0).
pub async fn handle(
    broker: &Broker,
    frame: Bytes,
    connection: &Connection,
) -> Result<Option<ResponseFrame>, RequestError> {
    match begin(broker, decode(frame)?, connection).await? {
        Begun::Answered(response) => Ok(response),
        Begun::Appended(awaiting) => awaiting.await.map(Some),
    }
}

/// Handles a decoded request that came on `connection` as far as it goes
/// without waiting for followers: every request but an acks=all Produce is
/// answered, and a Produce's batches are appended.
pub async fn begin<'a>(
    broker: &'a Broker,
    decoded: Decoded,
    connection: &'a Connection,
) -> Result<Begun<'a>, RequestError> {
    let decoded = match decoded.into_produce() {
        Ok(call) => {
            let mut begun = begin_produces(broker, vec![call], connection).await;
            return begun
                .pop()
                .unwrap_or_else(|| unreachable!("one answer per call"));
        }
        Err(decoded) => decoded,
    };
    let (api_key, version, correlation_id, client_id, request) = match decoded {
        Decoded::Immediate(reply) => return Ok(Begun::Answered(Some(reply.into()))),
        Decoded::Request {
            api_key,
            version,
            correlation_id,
            client_id,
            request,
        } => (api_key, version, correlation_id, client_id, request),
    };
    let ctx = RequestContext {
        broker,
        api_key,
        version,
        correlation_id,
        client_id: client_id.unwrap_or_default(),
        client_host: &connection.client_host,
        connection,
    };
    let response = match *request {
        RequestKind::Fetch(r) => {
            let (response, records) = fetch::handle(&ctx, r).await;
            ctx.encode_with_records(&response, records)
        }
        RequestKind::ListOffsets(r) => ctx.encode(&list_offsets::handle(&ctx, r).await),
        RequestKind::Metadata(r) => ctx.encode(&metadata::handle(&ctx, r).await),
        RequestKind::ApiVersions(r) => ctx.encode(&api_versions::handle(&ctx, r).await),
        RequestKind::CreateTopics(r) => ctx.encode(&create_topics::handle(&ctx, r).await),
        RequestKind::DeleteTopics(r) => ctx.encode(&delete_topics::handle(&ctx, r).await),
        RequestKind::DeleteRecords(r) => ctx.encode(&delete_records::handle(&ctx, r).await),
        RequestKind::InitProducerId(r) => ctx.encode(&init_producer_id::handle(&ctx, r).await),
        RequestKind::OffsetForLeaderEpoch(r) => {
            ctx.encode(&offset_for_leader_epoch::handle(&ctx, r).await)
        }
        RequestKind::DescribeConfigs(r) => ctx.encode(&describe_configs::handle(&ctx, r).await),
        RequestKind::AlterConfigs(r) => ctx.encode(&alter_configs::handle(&ctx, r).await),
        RequestKind::CreatePartitions(r) => ctx.encode(&create_partitions::handle(&ctx, r).await),
        RequestKind::IncrementalAlterConfigs(r) => {
            ctx.encode(&incremental_alter_configs::handle(&ctx, r).await)
        }
        RequestKind::DescribeCluster(r) => ctx.encode(&describe_cluster::handle(&ctx, r).await),
        RequestKind::ElectLeaders(r) => ctx.encode(&elect_leaders::handle(&ctx, r).await),
        RequestKind::AlterPartitionReassignments(r) => {
            ctx.encode(&alter_partition_reassignments::handle(&ctx, r).await)
        }
        RequestKind::ListPartitionReassignments(r) => {
            ctx.encode(&list_partition_reassignments::handle(&ctx, r))
        }
        RequestKind::FindCoordinator(r) => ctx.encode(&find_coordinator::handle(&ctx, r).await),
        RequestKind::JoinGroup(r) => ctx.encode(&join_group::handle(&ctx, r).await),
        RequestKind::SyncGroup(r) => ctx.encode(&sync_group::handle(&ctx, r).await),
        RequestKind::Heartbeat(r) => ctx.encode(&heartbeat::handle(&ctx, r)),
        RequestKind::LeaveGroup(r) => ctx.encode(&leave_group::handle(&ctx, r)),
        RequestKind::OffsetCommit(r) => ctx.encode(&offset_commit::handle(&ctx, r)),
        RequestKind::OffsetFetch(r) => ctx.encode(&offset_fetch::handle(&ctx, r)),
        RequestKind::ListGroups(r) => ctx.encode(&list_groups::handle(&ctx, r)),
        RequestKind::DescribeGroups(r) => ctx.encode(&describe_groups::handle(&ctx, r)),
        RequestKind::DeleteGroups(r) => ctx.encode(&delete_groups::handle(&ctx, r)),
        RequestKind::OffsetDelete(r) => ctx.encode(&offset_delete::handle(&ctx, r)),
        RequestKind::ConsumerGroupHeartbeat(r) => {
            ctx.encode(&consumer_group_heartbeat::handle(&ctx, r))
        }
        RequestKind::ConsumerGroupDescribe(r) => {
            ctx.encode(&consumer_group_describe::handle(&ctx, r))
        }
        RequestKind::DescribeTopicPartitions(r) => {
            ctx.encode(&describe_topic_partitions::handle(&ctx, r))
        }
        RequestKind::AlterReplicaLogDirs(r) => ctx.encode(&alter_replica_log_dirs::handle(&ctx, r)),
        RequestKind::DescribeLogDirs(r) => ctx.encode(&describe_log_dirs::handle(&ctx, r)),
        RequestKind::DescribeQuorum(r) => ctx.encode(&describe_quorum::handle(&ctx, r).await),
        RequestKind::ListConfigResources(r) => ctx.encode(&list_config_resources::handle(&ctx, r)),
        _ => Ok(unsupported(correlation_id).into()),
    };
    response.map(|response| Begun::Answered(Some(response)))
}

impl ProduceCall {
    /// The request and the context it is handled in.
    fn into_parts<'a>(
        self,
        broker: &'a Broker,
        connection: &'a Connection,
    ) -> (RequestContext<'a>, ProduceRequest) {
        let ctx = RequestContext {
            broker,
            api_key: ApiKey::Produce,
            version: self.version,
            correlation_id: self.correlation_id,
            client_id: self.client_id.unwrap_or_default(),
            client_host: &connection.client_host,
            connection,
        };
        (ctx, self.request)
    }
}

/// Handles produce requests that came one after another on `connection` as
/// far as they go without waiting for followers, like [`begin`] each, but
/// with every append of them in one blocking section: a producer that
/// pipelines small requests pays one hand-off of its worker for them all
/// rather than one each (see `blocking`). Their batches are appended in
/// request order.
pub async fn begin_produces<'a>(
    broker: &'a Broker,
    calls: Vec<ProduceCall>,
    connection: &'a Connection,
) -> Vec<Result<Begun<'a>, RequestError>> {
    let mut prepared = Vec::with_capacity(calls.len());
    for call in calls {
        let (ctx, request) = call.into_parts(broker, connection);
        let request = produce::prepare(&ctx, request).await;
        prepared.push((ctx, request));
    }
    let appended: Vec<_> = crate::blocking::run(|| {
        prepared
            .into_iter()
            .map(|(ctx, request)| {
                let appended = produce::append(&ctx, request);
                (ctx, appended)
            })
            .collect()
    });
    appended
        .into_iter()
        .map(|(ctx, appended)| answer_produce(ctx, appended))
        .collect()
}

/// A produce request's answer once its batches are appended: none for
/// acks=0 (a failure closes the connection, as in Kafka, since the client
/// learns nothing else of it), the answer now when no write waits for its
/// followers, else the answer to come.
fn answer_produce(
    ctx: RequestContext<'_>,
    appended: produce::Appended,
) -> Result<Begun<'_>, RequestError> {
    if appended.acks() == 0 {
        if appended.any_failed() {
            return Err(RequestError::UnacknowledgedProduceFailed);
        }
        return Ok(Begun::Answered(None));
    }
    if appended.is_answered() {
        return ctx
            .encode(&appended.into_response())
            .map(|frame| Begun::Answered(Some(frame)));
    }
    Ok(Begun::Appended(Box::pin(async move {
        let response = appended.acknowledged(&ctx).await;
        ctx.encode(&response)
    })))
}
