//! DescribeCluster: cluster id, the active controller and the brokers.

use kafka_protocol::{
    messages::{
        BrokerId, DescribeClusterRequest, DescribeClusterResponse,
        describe_cluster_response::DescribeClusterBroker,
    },
    protocol::StrBytes,
};

use super::RequestContext;

pub(super) async fn handle(
    ctx: &RequestContext<'_>,
    _request: DescribeClusterRequest,
) -> DescribeClusterResponse {
    let image = ctx.broker.image();
    let brokers = image
        .brokers()
        .map(|b| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(b.node_id))
                .with_host(StrBytes::from_string(b.host.clone()))
                .with_port(b.port)
                .with_rack(b.rack.clone().map(StrBytes::from_string))
        })
        .collect();
    DescribeClusterResponse::default()
        .with_endpoint_type(1)
        .with_cluster_id(StrBytes::from_string(ctx.broker.cluster_id.clone()))
        .with_controller_id(BrokerId(ctx.broker.config.node_id))
        .with_brokers(brokers)
}
