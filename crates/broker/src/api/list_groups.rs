//! ListGroups: the groups this broker coordinates, optionally filtered by
//! state (v4+) and type (v5+: Keel's groups are all "classic").

use kafka_protocol::{
    messages::{GroupId, ListGroupsRequest, ListGroupsResponse, list_groups_response::ListedGroup},
    protocol::StrBytes,
};

use super::RequestContext;

const STATE_VERSION: i16 = 4;
const TYPE_VERSION: i16 = 5;
const GROUP_TYPE: &str = "classic";

pub(super) fn handle(ctx: &RequestContext<'_>, request: ListGroupsRequest) -> ListGroupsResponse {
    let version = ctx.version;
    let wanted_state = |state: &str| {
        request.states_filter.is_empty()
            || request
                .states_filter
                .iter()
                .any(|s| s.eq_ignore_ascii_case(state))
    };
    let wanted_type = request.types_filter.is_empty()
        || request
            .types_filter
            .iter()
            .any(|t| t.eq_ignore_ascii_case(GROUP_TYPE));
    let groups = ctx
        .broker
        .groups
        .list()
        .into_iter()
        .filter(|(_, _, state)| wanted_type && wanted_state(state))
        .map(|(id, protocol_type, state)| {
            let group = ListedGroup::default()
                .with_group_id(GroupId(StrBytes::from_string(id)))
                .with_protocol_type(StrBytes::from_string(protocol_type));
            let group = if version >= STATE_VERSION {
                group.with_group_state(StrBytes::from_static_str(state))
            } else {
                group
            };
            if version >= TYPE_VERSION {
                group.with_group_type(StrBytes::from_static_str(GROUP_TYPE))
            } else {
                group
            }
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}
