//! SyncGroup: the leader hands in the assignment and every member gets its
//! own, as the leader encoded it (an empty one when the leader gave it no
//! partitions; empty bytes, as in Kafka, when the leader left it out).

use kafka_protocol::{
    messages::{SyncGroupRequest, SyncGroupResponse},
    protocol::StrBytes,
};

use super::RequestContext;
use crate::group::{MemberClaim, ProtocolClaim};

/// The first version naming the protocol in request and answer.
const PROTOCOL_VERSION: i16 = 5;

pub(super) async fn handle(
    ctx: &RequestContext<'_>,
    request: SyncGroupRequest,
) -> SyncGroupResponse {
    let assignments = request
        .assignments
        .into_iter()
        .map(|a| (a.member_id.to_string(), a.assignment))
        .collect();
    let claim = MemberClaim {
        member_id: &request.member_id,
        instance_id: request.group_instance_id.as_deref(),
        generation: request.generation_id,
    };
    let protocol = ProtocolClaim {
        protocol_type: request.protocol_type.as_deref(),
        protocol_name: request.protocol_name.as_deref(),
    };
    let outcome = ctx
        .broker
        .groups
        .sync(ctx.broker, &request.group_id, claim, protocol, assignments)
        .await;
    let response = SyncGroupResponse::default()
        .with_error_code(outcome.error.map_or(0, |e| e.code()))
        .with_assignment(outcome.assignment);
    if ctx.version >= PROTOCOL_VERSION {
        response
            .with_protocol_type(outcome.protocol_type.map(StrBytes::from_string))
            .with_protocol_name(outcome.protocol_name.map(StrBytes::from_string))
    } else {
        response
    }
}
