//! The Kafka APIs this broker implements, one module each, and the dispatch
//! from a request frame to its handler.
//!
//! [`SUPPORTED_APIS`] is the single list of what is implemented; ApiVersions
//! advertises exactly it and dispatch refuses anything outside it.

mod api_versions;
mod create_partitions;
mod create_topics;
mod delete_records;
mod delete_topics;
mod describe_cluster;
mod describe_configs;
mod fetch;
mod incremental_alter_configs;
mod init_producer_id;
mod leader_hint;
mod list_offsets;
mod metadata;
mod offset_for_leader_epoch;
mod produce;
mod topics;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::{
    messages::{
        ApiKey, ApiVersionsRequest, CreatePartitionsRequest, CreateTopicsRequest,
        DeleteRecordsRequest, DeleteTopicsRequest, DescribeClusterRequest, DescribeConfigsRequest,
        FetchRequest, IncrementalAlterConfigsRequest, InitProducerIdRequest, ListOffsetsRequest,
        MetadataRequest, OffsetForLeaderEpochRequest, ProduceRequest, RequestHeader,
        ResponseHeader,
    },
    protocol::{Decodable, Encodable},
};

use crate::broker::Broker;

/// Every API implemented, with the versions implemented.
pub const SUPPORTED_APIS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 11),
    (ApiKey::Fetch, 4, 16),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 1),
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

/// What a handler needs to know about the request it serves.
#[derive(Debug)]
pub(crate) struct RequestContext<'a> {
    pub(crate) broker: &'a Broker,
    pub(crate) api_key: ApiKey,
    pub(crate) version: i16,
    pub(crate) correlation_id: i32,
}

impl RequestContext<'_> {
    /// Frames a response: length, response header, body.
    fn encode<R: Encodable>(&self, response: &R) -> Result<BytesMut, RequestError> {
        encode_frame(self.api_key, self.version, self.correlation_id, response)
    }
}

fn encode_frame<R: Encodable>(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    response: &R,
) -> Result<BytesMut, RequestError> {
    let encode_error = |e: anyhow::Error| RequestError::Encode {
        api: api_key,
        version,
        reason: e.to_string(),
    };
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let header_version = api_key.response_header_version(version);
    let size = header
        .compute_size(header_version)
        .and_then(|h| Ok(h + response.compute_size(version)?))
        .map_err(encode_error)?;
    let size = i32::try_from(size).map_err(|_| RequestError::Encode {
        api: api_key,
        version,
        reason: format!("a {size}-byte response does not fit a frame"),
    })?;
    let mut frame = BytesMut::with_capacity(4 + size as usize);
    frame.put_i32(size);
    header
        .encode(&mut frame, header_version)
        .and_then(|()| response.encode(&mut frame, version))
        .map_err(encode_error)?;
    Ok(frame)
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

/// Decodes and answers one request frame. `Ok(None)` means no response is
/// sent (Produce with acks=0).
pub async fn handle(broker: &Broker, mut frame: Bytes) -> Result<Option<BytesMut>, RequestError> {
    if frame.len() < 8 {
        return Err(RequestError::TooShort(frame.len()));
    }
    let raw_key = (&frame[0..2]).get_i16();
    let version = (&frame[2..4]).get_i16();
    let correlation_id = (&frame[4..8]).get_i32();
    let Ok(api_key) = ApiKey::try_from(raw_key) else {
        tracing::debug!(api_key = raw_key, "request for an unknown API");
        return Ok(Some(unsupported(correlation_id)));
    };
    if api_key == ApiKey::ApiVersions {
        if let Some(reply) = api_versions::answer_unsupported_version(version, correlation_id)? {
            return Ok(Some(reply));
        }
    }
    let Some((min, max)) = supported_range(api_key) else {
        tracing::debug!(
            ?api_key,
            version,
            "request for an API that is not implemented"
        );
        return Ok(Some(unsupported(correlation_id)));
    };
    if version < min || version > max {
        tracing::debug!(?api_key, version, "request for an unsupported version");
        return Ok(Some(unsupported(correlation_id)));
    }
    let malformed = |e: anyhow::Error| RequestError::Malformed {
        api: api_key,
        version,
        reason: e.to_string(),
    };
    RequestHeader::decode(&mut frame, api_key.request_header_version(version))
        .map_err(malformed)?;
    let ctx = RequestContext {
        broker,
        api_key,
        version,
        correlation_id,
    };
    let mut body = frame;

    macro_rules! call {
        ($request:ty => $module:ident) => {{
            let request = <$request>::decode(&mut body, version).map_err(malformed)?;
            let response = $module::handle(&ctx, request).await;
            ctx.encode(&response).map(Some)
        }};
    }

    match api_key {
        ApiKey::Produce => {
            let request = ProduceRequest::decode(&mut body, version).map_err(malformed)?;
            let acks = request.acks;
            let response = produce::handle(&ctx, request).await;
            let failed = response
                .responses
                .iter()
                .flat_map(|t| &t.partition_responses)
                .any(|p| p.error_code != 0);
            if acks == 0 {
                // Kafka closes the connection: the client learns nothing
                // else about an unacknowledged failure.
                if failed {
                    return Err(RequestError::UnacknowledgedProduceFailed);
                }
                Ok(None)
            } else {
                ctx.encode(&response).map(Some)
            }
        }
        ApiKey::Fetch => call!(FetchRequest => fetch),
        ApiKey::ListOffsets => call!(ListOffsetsRequest => list_offsets),
        ApiKey::Metadata => call!(MetadataRequest => metadata),
        ApiKey::ApiVersions => call!(ApiVersionsRequest => api_versions),
        ApiKey::CreateTopics => call!(CreateTopicsRequest => create_topics),
        ApiKey::DeleteTopics => call!(DeleteTopicsRequest => delete_topics),
        ApiKey::DeleteRecords => call!(DeleteRecordsRequest => delete_records),
        ApiKey::InitProducerId => call!(InitProducerIdRequest => init_producer_id),
        ApiKey::OffsetForLeaderEpoch => {
            call!(OffsetForLeaderEpochRequest => offset_for_leader_epoch)
        }
        ApiKey::DescribeConfigs => call!(DescribeConfigsRequest => describe_configs),
        ApiKey::CreatePartitions => call!(CreatePartitionsRequest => create_partitions),
        ApiKey::IncrementalAlterConfigs => {
            call!(IncrementalAlterConfigsRequest => incremental_alter_configs)
        }
        ApiKey::DescribeCluster => call!(DescribeClusterRequest => describe_cluster),
        _ => Ok(Some(unsupported(correlation_id))),
    }
}
