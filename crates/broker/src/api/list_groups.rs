//! ListGroups: the groups this broker coordinates, optionally filtered by
//! state (v4+) and type (v5+: "classic" or "consumer", the protocol of
//! their members).

use kafka_protocol::{
    messages::{GroupId, ListGroupsRequest, ListGroupsResponse, list_groups_response::ListedGroup},
    protocol::StrBytes,
};

use super::RequestContext;

const STATE_VERSION: i16 = 4;
const TYPE_VERSION: i16 = 5;

pub(super) fn handle(ctx: &RequestContext<'_>, request: ListGroupsRequest) -> ListGroupsResponse {
    let version = ctx.version;
    let groups = ctx
        .broker
        .groups
        .list()
        .into_iter()
        .filter(|g| {
            passes(&request.types_filter, g.group_type) && passes(&request.states_filter, g.state)
        })
        .map(|g| {
            let listed = ListedGroup::default()
                .with_group_id(GroupId(StrBytes::from_string(g.group_id)))
                .with_protocol_type(StrBytes::from_string(g.protocol_type));
            let listed = if version >= STATE_VERSION {
                listed.with_group_state(StrBytes::from_static_str(g.state))
            } else {
                listed
            };
            if version >= TYPE_VERSION {
                listed.with_group_type(StrBytes::from_static_str(g.group_type))
            } else {
                listed
            }
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}

/// An empty filter lets everything through; names compare without case.
fn passes(filter: &[StrBytes], value: &str) -> bool {
    filter.is_empty() || filter.iter().any(|f| f.eq_ignore_ascii_case(value))
}
