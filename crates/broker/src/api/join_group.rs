//! JoinGroup: a member (re)joins; the answer comes when the group's join
//! phase completes. From v4 a member without an id first gets one with
//! MEMBER_ID_REQUIRED (KIP-394).

use kafka_protocol::{
    messages::{JoinGroupRequest, JoinGroupResponse, join_group_response::JoinGroupResponseMember},
    protocol::StrBytes,
};

use super::RequestContext;
use crate::group::state::JoinRequest;

const KNOWN_MEMBER_ID_VERSION: i16 = 4;
const STATIC_MEMBERSHIP_VERSION: i16 = 5;
/// From this version the protocol type is in the answer and the protocol
/// name may be null.
const PROTOCOL_TYPE_VERSION: i16 = 7;
/// Before v1 there was no separate rebalance timeout.
const REBALANCE_TIMEOUT_VERSION: i16 = 1;

pub(super) async fn handle(
    ctx: &RequestContext<'_>,
    request: JoinGroupRequest,
) -> JoinGroupResponse {
    let rebalance_timeout_ms = if ctx.version >= REBALANCE_TIMEOUT_VERSION {
        request.rebalance_timeout_ms
    } else {
        request.session_timeout_ms
    };
    let join = JoinRequest {
        member_id: request.member_id.to_string(),
        instance_id: request.group_instance_id.as_ref().map(ToString::to_string),
        client_id: ctx.client_id.clone(),
        client_host: ctx.client_host.to_string(),
        session_timeout_ms: request.session_timeout_ms,
        rebalance_timeout_ms,
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.clone()))
            .collect(),
        require_known_member_id: ctx.version >= KNOWN_MEMBER_ID_VERSION,
    };
    let outcome = ctx
        .broker
        .groups
        .join(ctx.broker, &request.group_id, join)
        .await;
    let version = ctx.version;
    let protocol_name = match outcome.protocol_name {
        Some(name) => Some(StrBytes::from_string(name)),
        None if version >= PROTOCOL_TYPE_VERSION => None,
        None => Some(StrBytes::default()),
    };
    let members = outcome
        .members
        .into_iter()
        .map(|(member_id, instance_id, metadata)| {
            JoinGroupResponseMember::default()
                .with_member_id(StrBytes::from_string(member_id))
                .with_group_instance_id(
                    instance_id
                        .filter(|_| version >= STATIC_MEMBERSHIP_VERSION)
                        .map(StrBytes::from_string),
                )
                .with_metadata(metadata)
        })
        .collect();
    JoinGroupResponse::default()
        .with_error_code(outcome.error.map_or(0, |e| e.code()))
        .with_generation_id(outcome.generation)
        .with_protocol_type(
            outcome
                .protocol_type
                .filter(|_| version >= PROTOCOL_TYPE_VERSION)
                .map(StrBytes::from_string),
        )
        .with_protocol_name(protocol_name)
        .with_leader(StrBytes::from_string(outcome.leader))
        .with_member_id(StrBytes::from_string(outcome.member_id))
        .with_members(members)
}
