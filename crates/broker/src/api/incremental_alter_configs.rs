//! IncrementalAlterConfigs for topics: SET, DELETE, APPEND and SUBTRACT,
//! validated as a whole per resource and committed as one metadata record.
//! Broker settings are static (flags and the config file) and refused here.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::{
    messages::{
        IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
        incremental_alter_configs_request::AlterConfigsResource,
        incremental_alter_configs_response::AlterConfigsResourceResponse,
    },
    protocol::StrBytes,
};

use super::{
    RequestContext,
    describe_configs::{RESOURCE_BROKER, RESOURCE_TOPIC},
    topics::admin_timeout,
};
use crate::{
    broker::Broker,
    error::AdminError,
    topic_config::{self, ConfigType, InvalidConfig},
};
use keel_raft_metadata::{Record, records::AlterTopicConfig};

const SET: i8 = 0;
const DELETE: i8 = 1;
const APPEND: i8 = 2;
const SUBTRACT: i8 = 3;

pub(super) async fn handle(
    ctx: &RequestContext<'_>,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut responses = Vec::with_capacity(request.resources.len());
    for resource in &request.resources {
        let response = AlterConfigsResourceResponse::default()
            .with_resource_type(resource.resource_type)
            .with_resource_name(resource.resource_name.clone());
        responses.push(
            match alter(ctx.broker, resource, request.validate_only).await {
                Ok(()) => response,
                Err(error) => response
                    .with_error_code(error.code().code())
                    .with_error_message(Some(StrBytes::from_string(error.to_string()))),
            },
        );
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

async fn alter(
    broker: &Broker,
    resource: &AlterConfigsResource,
    validate_only: bool,
) -> Result<(), AdminError> {
    match resource.resource_type {
        RESOURCE_TOPIC => {}
        RESOURCE_BROKER => {
            return Err(AdminError::InvalidRequest(
                "broker settings are static; change the flag or config file and restart".into(),
            ));
        }
        other => {
            return Err(AdminError::InvalidRequest(format!(
                "resource type {other} has no configs to alter"
            )));
        }
    }
    let name = resource.resource_name.to_string();
    let image = broker.image();
    let topic = image
        .topic(&name)
        .ok_or_else(|| AdminError::UnknownTopic(name.clone()))?;
    let defaults = broker.replicas.defaults();

    let mut seen = BTreeSet::new();
    let mut set = BTreeMap::new();
    let mut delete = Vec::new();
    for change in &resource.configs {
        let key = change.name.to_string();
        if !seen.insert(key.clone()) {
            return Err(AdminError::InvalidRequest(format!(
                "config '{key}' appears more than once"
            )));
        }
        let def = topic_config::definition(&key).ok_or_else(|| InvalidConfig {
            key: key.clone(),
            value: change.value.as_deref().unwrap_or_default().to_string(),
            reason: "unknown topic config".into(),
        })?;
        let value = match (&change.value, change.config_operation) {
            (Some(value), _) => value.as_str(),
            (None, DELETE) => "",
            (None, _) => {
                return Err(AdminError::InvalidRequest(format!(
                    "a null value for '{key}' is only allowed with DELETE"
                )));
            }
        };
        match change.config_operation {
            SET => {
                let canonical = topic_config::validate(&key, value)?;
                set.insert(key, canonical);
            }
            DELETE => delete.push(key),
            APPEND | SUBTRACT => {
                if def.config_type != ConfigType::List {
                    return Err(InvalidConfig {
                        key,
                        value: value.to_string(),
                        reason: "not a list; APPEND and SUBTRACT apply to list configs".into(),
                    }
                    .into());
                }
                let (current, _) = topic_config::effective_value(def, &topic.configs, defaults);
                let mut items: Vec<String> = current
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect();
                for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    if change.config_operation == APPEND {
                        if !items.iter().any(|i| i == item) {
                            items.push(item.to_string());
                        }
                    } else {
                        items.retain(|i| i != item);
                    }
                }
                let canonical = topic_config::validate(&key, &items.join(","))?;
                set.insert(key, canonical);
            }
            other => {
                return Err(AdminError::InvalidRequest(format!(
                    "unknown config operation {other} for '{key}'"
                )));
            }
        }
    }
    if validate_only {
        return Ok(());
    }
    broker
        .propose(
            Record::AlterTopicConfig(AlterTopicConfig {
                name: name.clone(),
                set,
                delete,
            })
            .into(),
            admin_timeout(0),
        )
        .await?;
    tracing::info!(topic = name, "altered topic configs");
    Ok(())
}
