//! Heartbeat: keeps a member's session alive and tells it when the group
//! is rebalancing.

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use super::RequestContext;
use crate::group::MemberClaim;

pub(super) fn handle(ctx: &RequestContext<'_>, request: HeartbeatRequest) -> HeartbeatResponse {
    let claim = MemberClaim {
        member_id: &request.member_id,
        instance_id: request.group_instance_id.as_deref(),
        generation: request.generation_id,
    };
    let error = ctx.broker.groups.heartbeat(&request.group_id, claim);
    HeartbeatResponse::default().with_error_code(error.map_or(0, |e| e.code()))
}
