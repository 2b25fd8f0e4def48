//! DeleteGroups: removes groups without members, with their offsets.

use kafka_protocol::messages::{
    DeleteGroupsRequest, DeleteGroupsResponse, delete_groups_response::DeletableGroupResult,
};

use super::RequestContext;

pub(super) fn handle(
    ctx: &RequestContext<'_>,
    request: DeleteGroupsRequest,
) -> DeleteGroupsResponse {
    let results = request
        .groups_names
        .iter()
        .map(|group_id| {
            let error = ctx.broker.groups.delete(ctx.broker, group_id);
            DeletableGroupResult::default()
                .with_group_id(group_id.clone())
                .with_error_code(error.map_or(0, |e| e.code()))
        })
        .collect();
    DeleteGroupsResponse::default().with_results(results)
}
