//! FindCoordinator: the broker coordinating a group is the leader of its
//! `__consumer_offsets` partition; the topic is created the first time a
//! group needs it. Transaction coordinators do not exist in Keel.

use std::time::Duration;

use kafka_protocol::{
    error::ResponseError,
    messages::{
        BrokerId, FindCoordinatorRequest, FindCoordinatorResponse,
        find_coordinator_response::Coordinator,
    },
    protocol::StrBytes,
};

use super::{RequestContext, internal_topic::ensure_offsets_topic};
use crate::group::storage::OFFSETS_TOPIC;

const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;
const KEY_TYPE_SHARE: i8 = 2;
/// From this version keys come in a list and answers per key.
const BATCHED_VERSION: i16 = 4;
/// The first version carrying an error message.
const ERROR_MESSAGE_VERSION: i16 = 1;
/// How long a FindCoordinator waits for `__consumer_offsets` to be created.
const CREATE_TIMEOUT: Duration = Duration::from_secs(5);

struct Found {
    node_id: i32,
    host: String,
    port: i32,
}

pub(super) async fn handle(
    ctx: &RequestContext<'_>,
    request: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    if ctx.version >= BATCHED_VERSION {
        let mut coordinators = Vec::with_capacity(request.coordinator_keys.len());
        for key in &request.coordinator_keys {
            let coordinator = Coordinator::default().with_key(key.clone());
            coordinators.push(match find(ctx, request.key_type, key).await {
                Ok(found) => coordinator
                    .with_node_id(BrokerId(found.node_id))
                    .with_host(StrBytes::from_string(found.host))
                    .with_port(found.port)
                    .with_error_message(None),
                Err((error, message)) => coordinator
                    .with_node_id(BrokerId(-1))
                    .with_port(-1)
                    .with_error_code(error.code())
                    .with_error_message(Some(StrBytes::from_string(message))),
            });
        }
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let response = FindCoordinatorResponse::default();
    match find(ctx, request.key_type, &request.key).await {
        Ok(found) => {
            let response = response
                .with_node_id(BrokerId(found.node_id))
                .with_host(StrBytes::from_string(found.host))
                .with_port(found.port);
            if ctx.version >= ERROR_MESSAGE_VERSION {
                response.with_error_message(None)
            } else {
                response
            }
        }
        Err((error, message)) => {
            let response = response
                .with_error_code(error.code())
                .with_node_id(BrokerId(-1))
                .with_port(-1);
            if ctx.version >= ERROR_MESSAGE_VERSION {
                response.with_error_message(Some(StrBytes::from_string(message)))
            } else {
                response
            }
        }
    }
}

async fn find(
    ctx: &RequestContext<'_>,
    key_type: i8,
    key: &str,
) -> Result<Found, (ResponseError, String)> {
    match key_type {
        KEY_TYPE_GROUP => {}
        KEY_TYPE_TRANSACTION => {
            return Err((
                ResponseError::InvalidRequest,
                "Keel does not support transactions; there is no transaction coordinator".into(),
            ));
        }
        KEY_TYPE_SHARE => {
            return Err((
                ResponseError::InvalidRequest,
                "Keel does not support share groups; there is no share coordinator".into(),
            ));
        }
        other => {
            return Err((
                ResponseError::InvalidRequest,
                format!("unknown coordinator key type {other}"),
            ));
        }
    }
    let broker = ctx.broker;
    if let Err(error) = ensure_offsets_topic(broker, CREATE_TIMEOUT).await {
        return Err((
            ResponseError::CoordinatorNotAvailable,
            format!("creating {OFFSETS_TOPIC}: {error}"),
        ));
    }
    let image = broker.image();
    let partition = broker.groups.partition_of(key);
    let leader = image
        .topic(OFFSETS_TOPIC)
        .and_then(|t| t.partition(partition))
        .map_or(-1, |p| p.leader);
    match image.broker(leader).filter(|b| !b.fenced) {
        Some(coordinator) => Ok(Found {
            node_id: coordinator.node_id,
            host: coordinator.host.clone(),
            port: coordinator.port,
        }),
        None => Err((
            ResponseError::CoordinatorNotAvailable,
            format!("partition {partition} of {OFFSETS_TOPIC} has no leader"),
        )),
    }
}
