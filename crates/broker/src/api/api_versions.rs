//! ApiVersions: the APIs and versions this broker implements.
//!
//! A client that asks with a version newer than ours gets the v0 layout
//! with UNSUPPORTED_VERSION and our ranges, as Apache Kafka answers; it then
//! retries with a version it finds there.

use bytes::BytesMut;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, api_versions_response::ApiVersion,
};

use super::{RequestContext, RequestError, SUPPORTED_APIS, UNSUPPORTED_VERSION, encode_frame};

fn supported() -> ApiVersionsResponse {
    let api_keys = SUPPORTED_APIS
        .iter()
        .map(|&(key, min, max)| {
            ApiVersion::default()
                .with_api_key(key as i16)
                .with_min_version(min)
                .with_max_version(max)
        })
        .collect();
    ApiVersionsResponse::default().with_api_keys(api_keys)
}

/// The v0 error answer for a version we do not implement, or `None` when
/// the version is fine.
pub(super) fn answer_unsupported_version(
    version: i16,
    correlation_id: i32,
) -> Result<Option<BytesMut>, RequestError> {
    let (min, max) = super::supported_range(ApiKey::ApiVersions).unwrap_or((0, 0));
    if (min..=max).contains(&version) {
        return Ok(None);
    }
    let response = supported().with_error_code(UNSUPPORTED_VERSION);
    encode_frame(ApiKey::ApiVersions, 0, correlation_id, &response).map(Some)
}

pub(super) async fn handle(
    _ctx: &RequestContext<'_>,
    _request: ApiVersionsRequest,
) -> ApiVersionsResponse {
    supported()
}
