//! ListConfigResources: the resources that have configs, by type, in
//! Kafka's order (groups, client metrics, brokers, topics). Keel has
//! configs for topics (every topic, internal ones too), for brokers (each
//! live broker) and for groups (those with overrides); it has no client metrics
//! subscriptions, so that type lists nothing. Broker loggers have no
//! configs here, and asking for them is refused as Kafka refuses a type it
//! does not support: UNSUPPORTED_VERSION for the whole request.

use kafka_protocol::{
    error::ResponseError,
    messages::{
        ListConfigResourcesRequest, ListConfigResourcesResponse,
        list_config_resources_response::ConfigResource,
    },
    protocol::StrBytes,
};

use super::{
    RequestContext,
    describe_configs::{RESOURCE_BROKER, RESOURCE_TOPIC},
    group_configs::RESOURCE_GROUP,
};

const RESOURCE_CLIENT_METRICS: i8 = 16;
/// Every type listed when the request names none, in the order listed.
const SUPPORTED: [i8; 4] = [
    RESOURCE_GROUP,
    RESOURCE_CLIENT_METRICS,
    RESOURCE_BROKER,
    RESOURCE_TOPIC,
];
/// Version 0 knew client metrics alone.
const CLIENT_METRICS_ONLY: [i8; 1] = [RESOURCE_CLIENT_METRICS];

pub(super) fn handle(
    ctx: &RequestContext<'_>,
    request: ListConfigResourcesRequest,
) -> ListConfigResourcesResponse {
    let asked: &[i8] = if ctx.version == 0 {
        &CLIENT_METRICS_ONLY
    } else if request.resource_types.is_empty() {
        &SUPPORTED
    } else {
        &request.resource_types
    };
    if asked.iter().any(|t| !SUPPORTED.contains(t)) {
        return ListConfigResourcesResponse::default()
            .with_error_code(ResponseError::UnsupportedVersion.code());
    }
    let image = ctx.broker.image();
    let mut listed = Vec::new();
    for resource_type in SUPPORTED.into_iter().filter(|t| asked.contains(t)) {
        let names: Vec<String> = match resource_type {
            RESOURCE_BROKER => image
                .live_brokers()
                .map(|b| b.node_id.to_string())
                .collect(),
            RESOURCE_TOPIC => image.topics().map(|t| t.name.clone()).collect(),
            RESOURCE_GROUP => image.all_group_configs().keys().cloned().collect(),
            _ => Vec::new(),
        };
        listed.extend(names.into_iter().map(|name| {
            ConfigResource::default()
                .with_resource_name(StrBytes::from_string(name))
                .with_resource_type(resource_type)
        }));
    }
    ListConfigResourcesResponse::default().with_config_resources(listed)
}
