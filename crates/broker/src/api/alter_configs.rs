//! AlterConfigs, the legacy whole-set form that aiokafka, kafka-python and
//! librdkafka's `alter_configs` still send: the configs a resource lists
//! become its complete set of overrides, and every override it does not
//! list returns to its default. Validated as a whole per resource and
//! committed as one metadata record, like IncrementalAlterConfigs. The
//! request checks (a resource named twice, a config named twice, a null
//! value) answer INVALID_REQUEST with Kafka's messages.

use std::collections::BTreeMap;

use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, alter_configs_request::AlterConfigsResource,
    alter_configs_response::AlterConfigsResourceResponse,
};

use super::{
    RequestContext,
    group_configs::{self, RESOURCE_GROUP},
    incremental_alter_configs::{commit, error_fields, named_once, target_topic},
};
use crate::{broker::Broker, error::AdminError, topic_config};

pub(super) async fn handle(
    ctx: &RequestContext<'_>,
    request: AlterConfigsRequest,
) -> AlterConfigsResponse {
    let resources = &request.resources;
    let checked = named_once(resources, |r| (r.resource_type, r.resource_name.as_str()));
    let mut responses = Vec::with_capacity(resources.len());
    for (resource, checked) in resources.iter().zip(checked) {
        let outcome = match checked {
            Ok(()) => replace(ctx.broker, resource, request.validate_only).await,
            Err(error) => Err(error),
        };
        let (error_code, error_message) = error_fields(outcome);
        responses.push(
            AlterConfigsResourceResponse::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone())
                .with_error_code(error_code)
                .with_error_message(error_message),
        );
    }
    AlterConfigsResponse::default().with_responses(responses)
}

async fn replace(
    broker: &Broker,
    resource: &AlterConfigsResource,
    validate_only: bool,
) -> Result<(), AdminError> {
    if resource.resource_type == RESOURCE_GROUP {
        return group_configs::replace(broker, resource, validate_only).await;
    }
    let name = resource.resource_name.to_string();
    let image = broker.image();
    let topic = target_topic(&image, resource.resource_type, &name)?;
    let nulls: Vec<&str> = resource
        .configs
        .iter()
        .filter(|c| c.value.is_none())
        .map(|c| c.name.as_str())
        .collect();
    if !nulls.is_empty() {
        return Err(AdminError::InvalidRequest(format!(
            "Null value not supported for : {}",
            nulls.join(", ")
        )));
    }
    let mut set = BTreeMap::new();
    for config in &resource.configs {
        let key = config.name.to_string();
        let value = config.value.as_deref().unwrap_or_default();
        let canonical = topic_config::validate(&key, value)?;
        if set.insert(key.clone(), canonical).is_some() {
            return Err(AdminError::InvalidRequest(format!(
                "Error due to duplicate config keys: '{key}' appears more than once"
            )));
        }
    }
    let delete = topic
        .configs
        .keys()
        .filter(|key| !set.contains_key(*key))
        .cloned()
        .collect();
    commit(broker, name, set, delete, validate_only).await
}
