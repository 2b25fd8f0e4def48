//! LeaveGroup: one member (v0-2) or several, by member id or, for static
//! members, by instance id (v3+).

use kafka_protocol::{
    messages::{LeaveGroupRequest, LeaveGroupResponse, leave_group_response::MemberResponse},
    protocol::StrBytes,
};

use super::RequestContext;

const BATCHED_VERSION: i16 = 3;

pub(super) fn handle(ctx: &RequestContext<'_>, request: LeaveGroupRequest) -> LeaveGroupResponse {
    let members: Vec<(String, Option<String>)> = if ctx.version >= BATCHED_VERSION {
        request
            .members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(ToString::to_string),
                )
            })
            .collect()
    } else {
        vec![(request.member_id.to_string(), None)]
    };
    match ctx
        .broker
        .groups
        .leave(ctx.broker, &request.group_id, &members)
    {
        Err(error) => LeaveGroupResponse::default().with_error_code(error.code()),
        Ok(results) if ctx.version >= BATCHED_VERSION => LeaveGroupResponse::default()
            .with_members(
                members
                    .into_iter()
                    .zip(results)
                    .map(|((member_id, instance_id), error)| {
                        MemberResponse::default()
                            .with_member_id(StrBytes::from_string(member_id))
                            .with_group_instance_id(instance_id.map(StrBytes::from_string))
                            .with_error_code(error.map_or(0, |e| e.code()))
                    })
                    .collect(),
            ),
        Ok(results) => LeaveGroupResponse::default()
            .with_error_code(results.first().copied().flatten().map_or(0, |e| e.code())),
    }
}
