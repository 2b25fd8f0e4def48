//! IncrementalAlterConfigs and the legacy AlterConfigs on GROUP resources
//! (type 32): the changes are checked with `group_config`'s rules, against
//! the group's whole set of overrides and the broker's defaults, and
//! committed as one AlterGroupConfig record. DescribeConfigs answers GROUP
//! resources in `describe_configs`.

use std::collections::BTreeMap;

use kafka_protocol::messages::{alter_configs_request, incremental_alter_configs_request};
use keel_raft_metadata::{Record, records::AlterGroupConfig};

use super::topics::admin_timeout;
use crate::{broker::Broker, error::AdminError, group_config, topic_config::InvalidConfig};

pub(crate) const RESOURCE_GROUP: i8 = 32;

const SET: i8 = 0;
const DELETE: i8 = 1;

/// IncrementalAlterConfigs: SET and DELETE; group configs are not lists.
pub(super) async fn alter(
    broker: &Broker,
    resource: &incremental_alter_configs_request::AlterConfigsResource,
    validate_only: bool,
) -> Result<(), AdminError> {
    let group = group_name(resource.resource_name.as_str())?;
    let mut set = BTreeMap::new();
    let mut delete = Vec::new();
    for change in &resource.configs {
        let key = change.name.to_string();
        let value = change.value.as_deref().unwrap_or_default();
        match change.config_operation {
            SET => {
                let limits = broker.groups.consumer_limits();
                set.insert(key.clone(), group_config::validate(&key, value, limits)?);
            }
            DELETE => delete.push(key),
            _ => {
                return Err(InvalidConfig {
                    key,
                    value: value.to_string(),
                    reason: "not a list; APPEND and SUBTRACT apply to list configs".into(),
                }
                .into());
            }
        }
    }
    commit(broker, group, set, delete, validate_only).await
}

/// AlterConfigs: the configs listed become the group's whole set.
pub(super) async fn replace(
    broker: &Broker,
    resource: &alter_configs_request::AlterConfigsResource,
    validate_only: bool,
) -> Result<(), AdminError> {
    let group = group_name(resource.resource_name.as_str())?;
    let mut set = BTreeMap::new();
    for config in &resource.configs {
        let key = config.name.to_string();
        let value = config.value.as_deref().ok_or_else(|| {
            AdminError::InvalidRequest(format!("Null value not supported for : {key}"))
        })?;
        let limits = broker.groups.consumer_limits();
        let canonical = group_config::validate(&key, value, limits)?;
        if set.insert(key.clone(), canonical).is_some() {
            return Err(AdminError::InvalidRequest(format!(
                "Error due to duplicate config keys: '{key}' appears more than once"
            )));
        }
    }
    let delete = broker
        .image()
        .group_configs(group)
        .into_iter()
        .flat_map(|configs| configs.keys())
        .filter(|key| !set.contains_key(*key))
        .cloned()
        .collect();
    commit(broker, group, set, delete, validate_only).await
}

fn group_name(name: &str) -> Result<&str, AdminError> {
    if name.is_empty() {
        return Err(AdminError::InvalidRequest(
            "a GROUP resource names a group".into(),
        ));
    }
    Ok(name)
}

async fn commit(
    broker: &Broker,
    group: &str,
    set: BTreeMap<String, String>,
    delete: Vec<String>,
    validate_only: bool,
) -> Result<(), AdminError> {
    let mut merged = broker
        .image()
        .group_configs(group)
        .cloned()
        .unwrap_or_default();
    for key in &delete {
        merged.remove(key);
    }
    merged.extend(set.iter().map(|(k, v)| (k.clone(), v.clone())));
    group_config::validate_together(&merged, broker.groups.consumer_defaults())?;
    if validate_only {
        return Ok(());
    }
    broker
        .propose(
            Record::AlterGroupConfig(AlterGroupConfig {
                group: group.to_string(),
                set,
                delete,
            })
            .into(),
            admin_timeout(0),
        )
        .await?;
    tracing::info!(group, "altered group configs");
    Ok(())
}
