//! Heartbeat: keeps a member's session alive and tells it when the group
//! is rebalancing.

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use super::RequestContext;

pub(super) fn handle(ctx: &RequestContext<'_>, request: HeartbeatRequest) -> HeartbeatResponse {
    let error =
        ctx.broker
            .groups
            .heartbeat(&request.group_id, &request.member_id, request.generation_id);
    HeartbeatResponse::default().with_error_code(error.map_or(0, |e| e.code()))
}
