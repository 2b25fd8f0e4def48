//! DescribeGroups: state, protocol and members with their subscription and
//! assignment. A group this broker coordinates but does not know is
//! reported as Dead, as Kafka does, with GROUP_ID_NOT_FOUND from version 6
//! (KIP-1043).

use kafka_protocol::{
    error::ResponseError,
    messages::{
        DescribeGroupsRequest, DescribeGroupsResponse,
        describe_groups_response::{DescribedGroup, DescribedGroupMember},
    },
    protocol::StrBytes,
};

use super::{RequestContext, authorized_operations};

const STATIC_MEMBERSHIP_VERSION: i16 = 4;
/// The first version that may carry authorized operations (KIP-430).
const AUTHORIZED_OPERATIONS_VERSION: i16 = 3;
/// The first version telling an unknown group with an error.
const NOT_FOUND_VERSION: i16 = 6;

pub(super) fn handle(
    ctx: &RequestContext<'_>,
    request: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let groups = request
        .groups
        .iter()
        .map(|group_id| {
            let described = DescribedGroup::default().with_group_id(group_id.clone());
            match ctx.broker.groups.describe(ctx.broker, group_id) {
                Err(ResponseError::GroupIdNotFound) => {
                    let dead = described.with_group_state(StrBytes::from_static_str("Dead"));
                    if ctx.version < NOT_FOUND_VERSION {
                        dead
                    } else {
                        dead.with_error_code(ResponseError::GroupIdNotFound.code())
                            .with_error_message(Some(StrBytes::from_string(format!(
                                "Group {} not found.",
                                group_id.as_str()
                            ))))
                    }
                }
                Err(error) => described.with_error_code(error.code()),
                Ok(group) => described
                    .with_authorized_operations(authorized_operations::if_requested(
                        ctx.version >= AUTHORIZED_OPERATIONS_VERSION
                            && request.include_authorized_operations,
                        authorized_operations::GROUP,
                    ))
                    .with_group_state(StrBytes::from_static_str(group.state))
                    .with_protocol_type(StrBytes::from_string(group.protocol_type))
                    .with_protocol_data(StrBytes::from_string(group.protocol))
                    .with_members(
                        group
                            .members
                            .into_iter()
                            .map(|m| {
                                DescribedGroupMember::default()
                                    .with_member_id(StrBytes::from_string(m.member_id))
                                    .with_group_instance_id(
                                        m.instance_id
                                            .filter(|_| ctx.version >= STATIC_MEMBERSHIP_VERSION)
                                            .map(StrBytes::from_string),
                                    )
                                    .with_client_id(StrBytes::from_string(m.client_id))
                                    .with_client_host(StrBytes::from_string(m.client_host))
                                    .with_member_metadata(m.metadata)
                                    .with_member_assignment(m.assignment)
                            })
                            .collect(),
                    ),
            }
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}
