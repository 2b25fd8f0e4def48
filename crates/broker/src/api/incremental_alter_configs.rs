//! IncrementalAlterConfigs for topics: SET, DELETE, APPEND and SUBTRACT,
//! validated as a whole per resource and committed as one metadata record.
//! Broker settings are static (flags and the config file) and refused here
//! and in the legacy AlterConfigs, which shares the target and the commit.

use std::collections::{BTreeMap, BTreeSet, HashMap};

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
    group_configs::{self, RESOURCE_GROUP},
    topics::admin_timeout,
};
use crate::{
    broker::Broker,
    error::AdminError,
    topic_config::{self, ConfigType, InvalidConfig},
};
use keel_raft_metadata::{MetadataImage, Record, TopicInfo, records::AlterTopicConfig};

const SET: i8 = 0;
const DELETE: i8 = 1;
const APPEND: i8 = 2;
const SUBTRACT: i8 = 3;

pub(super) async fn handle(
    ctx: &RequestContext<'_>,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let resources = &request.resources;
    let checked = named_once(resources, |r| (r.resource_type, r.resource_name.as_str()));
    let mut responses = Vec::with_capacity(resources.len());
    for (resource, checked) in resources.iter().zip(checked) {
        let outcome = match checked {
            Ok(()) => alter(ctx.broker, resource, request.validate_only).await,
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
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

/// Kafka refuses every copy of a resource (by `key`: type and name) that a
/// request names more than once; one outcome per resource.
pub(super) fn named_once<R>(
    resources: &[R],
    key: impl Fn(&R) -> (i8, &str),
) -> Vec<Result<(), AdminError>> {
    let mut copies: HashMap<(i8, &str), usize> = HashMap::new();
    for resource in resources {
        *copies.entry(key(resource)).or_default() += 1;
    }
    resources
        .iter()
        .map(|resource| {
            if copies.get(&key(resource)).copied().unwrap_or_default() > 1 {
                return Err(AdminError::InvalidRequest(
                    "Each resource must appear at most once.".into(),
                ));
            }
            Ok(())
        })
        .collect()
}

/// A resource's error code and message, null on success.
pub(super) fn error_fields(outcome: Result<(), AdminError>) -> (i16, Option<StrBytes>) {
    match outcome {
        Ok(()) => (0, None),
        Err(error) => (
            error.code().code(),
            Some(StrBytes::from_string(error.to_string())),
        ),
    }
}

async fn alter(
    broker: &Broker,
    resource: &AlterConfigsResource,
    validate_only: bool,
) -> Result<(), AdminError> {
    if resource.resource_type == RESOURCE_GROUP {
        return group_configs::alter(broker, resource, validate_only).await;
    }
    let name = resource.resource_name.to_string();
    let image = broker.image();
    let topic = target_topic(&image, resource.resource_type, &name)?;
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
    commit(broker, name, set, delete, validate_only).await
}

/// The topic a config change names; broker settings are static.
pub(super) fn target_topic<'a>(
    image: &'a MetadataImage,
    resource_type: i8,
    name: &str,
) -> Result<&'a TopicInfo, AdminError> {
    match resource_type {
        RESOURCE_TOPIC => image
            .topic(name)
            .map(|topic| &**topic)
            .ok_or_else(|| AdminError::UnknownTopic(name.to_string())),
        RESOURCE_BROKER => Err(AdminError::InvalidRequest(
            "broker settings are static; change the flag or config file and restart".into(),
        )),
        other => Err(AdminError::InvalidRequest(format!(
            "resource type {other} has no configs to alter"
        ))),
    }
}

/// Commits validated changes to a topic's configs as one metadata record,
/// or only checks them.
pub(super) async fn commit(
    broker: &Broker,
    name: String,
    set: BTreeMap<String, String>,
    delete: Vec<String>,
    validate_only: bool,
) -> Result<(), AdminError> {
    if let Some(topic) = broker.image().topic(&name) {
        let mut merged = topic.configs.clone();
        for key in &delete {
            merged.remove(key);
        }
        merged.extend(set.iter().map(|(k, v)| (k.clone(), v.clone())));
        topic_config::validate_together(&merged)?;
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
