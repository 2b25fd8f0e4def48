//! DescribeCluster: cluster id, the controller (as Metadata names it) and
//! the brokers.

use kafka_protocol::{
    error::ResponseError,
    messages::{
        BrokerId, DescribeClusterRequest, DescribeClusterResponse,
        describe_cluster_response::DescribeClusterBroker,
    },
    protocol::StrBytes,
};

use super::{RequestContext, authorized_operations, topics::controller_for_clients};

/// Brokers; 2 would ask for controllers, which Keel does not list apart.
const ENDPOINT_TYPE_BROKERS: i8 = 1;

pub(super) async fn handle(
    ctx: &RequestContext<'_>,
    request: DescribeClusterRequest,
) -> DescribeClusterResponse {
    if request.endpoint_type != ENDPOINT_TYPE_BROKERS {
        return DescribeClusterResponse::default()
            .with_error_code(ResponseError::MismatchedEndpointType.code())
            .with_error_message(Some(StrBytes::from_static_str(
                "only broker endpoints (endpoint type 1) are served",
            )));
    }
    let image = ctx.broker.image();
    let brokers = image
        .live_brokers()
        .map(|b| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(b.node_id))
                .with_host(StrBytes::from_string(b.host.clone()))
                .with_port(b.port)
                .with_rack(b.rack.clone().map(StrBytes::from_string))
        })
        .collect();
    DescribeClusterResponse::default()
        .with_endpoint_type(ENDPOINT_TYPE_BROKERS)
        .with_cluster_id(StrBytes::from_string(
            ctx.broker.cluster_id().unwrap_or_default(),
        ))
        .with_controller_id(BrokerId(controller_for_clients(ctx.broker, &image)))
        .with_cluster_authorized_operations(authorized_operations::if_requested(
            request.include_cluster_authorized_operations,
            authorized_operations::CLUSTER,
        ))
        .with_brokers(brokers)
}
