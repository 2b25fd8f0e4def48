//! DescribeConfigs for topics (every topic config with its effective value
//! and source) and for this broker (its static settings, under Kafka's
//! names).

use kafka_protocol::{
    error::ResponseError,
    messages::{
        DescribeConfigsRequest, DescribeConfigsResponse,
        describe_configs_request::DescribeConfigsResource,
        describe_configs_response::{
            DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
        },
    },
    protocol::StrBytes,
};

use super::{RequestContext, group_configs::RESOURCE_GROUP};
use crate::{
    broker::Broker,
    config::BrokerConfig,
    group_config::{self, GROUP_CONFIGS},
    topic_config::{self, ConfigSource, ConfigType, TOPIC_CONFIGS},
};

pub(crate) const RESOURCE_TOPIC: i8 = 2;
pub(crate) const RESOURCE_BROKER: i8 = 4;
/// The first version carrying config types and documentation.
const DOCUMENTATION_VERSION: i16 = 3;

/// One reported config entry.
struct Entry {
    name: &'static str,
    value: String,
    source: ConfigSource,
    config_type: ConfigType,
    read_only: bool,
    doc: &'static str,
    synonyms: Vec<(String, String, ConfigSource)>,
}

pub(super) async fn handle(
    ctx: &RequestContext<'_>,
    request: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let results = request
        .resources
        .iter()
        .map(|resource| {
            let result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            match entries(ctx.broker, resource) {
                Ok(entries) => result.with_configs(
                    entries
                        .into_iter()
                        .filter(|e| wanted(resource, e.name))
                        .map(|e| render(e, &request, ctx.version))
                        .collect(),
                ),
                Err((error, message)) => result
                    .with_error_code(error.code())
                    .with_error_message(Some(StrBytes::from_string(message))),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

/// Null or empty `configuration_keys` asks for every config.
fn wanted(resource: &DescribeConfigsResource, name: &str) -> bool {
    match &resource.configuration_keys {
        Some(keys) if !keys.is_empty() => keys.iter().any(|k| k.as_str() == name),
        _ => true,
    }
}

fn render(
    entry: Entry,
    request: &DescribeConfigsRequest,
    version: i16,
) -> DescribeConfigsResourceResult {
    let synonyms = if request.include_synonyms {
        entry
            .synonyms
            .into_iter()
            .map(|(name, value, source)| {
                DescribeConfigsSynonym::default()
                    .with_name(StrBytes::from_string(name))
                    .with_value(Some(StrBytes::from_string(value)))
                    .with_source(source as i8)
            })
            .collect()
    } else {
        Vec::new()
    };
    let result = DescribeConfigsResourceResult::default()
        .with_name(StrBytes::from_static_str(entry.name))
        .with_value(Some(StrBytes::from_string(entry.value)))
        .with_read_only(entry.read_only)
        .with_config_source(entry.source as i8)
        .with_synonyms(synonyms);
    if version < DOCUMENTATION_VERSION {
        return result;
    }
    result
        .with_config_type(entry.config_type as i8)
        .with_documentation(
            request
                .include_documentation
                .then(|| StrBytes::from_static_str(entry.doc)),
        )
}

fn entries(
    broker: &Broker,
    resource: &DescribeConfigsResource,
) -> Result<Vec<Entry>, (ResponseError, String)> {
    match resource.resource_type {
        RESOURCE_TOPIC => topic_entries(broker, resource.resource_name.as_str()),
        RESOURCE_GROUP => group_entries(broker, resource.resource_name.as_str()),
        RESOURCE_BROKER => {
            let name = resource.resource_name.as_str();
            if !name.is_empty() && name != broker.config.node_id.to_string() {
                return Err((
                    ResponseError::InvalidRequest,
                    format!("this is broker {}, not '{name}'", broker.config.node_id),
                ));
            }
            Ok(broker_entries(&broker.config))
        }
        other => Err((
            ResponseError::InvalidRequest,
            format!(
                "resource type {other} cannot be described; use 2 (topic), 4 (broker) or 32 \
                 (group)"
            ),
        )),
    }
}

fn topic_entries(broker: &Broker, name: &str) -> Result<Vec<Entry>, (ResponseError, String)> {
    let image = broker.image();
    let topic = image.topic(name).ok_or_else(|| {
        (
            ResponseError::UnknownTopicOrPartition,
            format!("topic '{name}' does not exist"),
        )
    })?;
    let defaults = broker.replicas.defaults();
    Ok(TOPIC_CONFIGS
        .iter()
        .map(|def| {
            overridable(
                (def.name, def.config_type, def.doc),
                topic_config::effective_value(def, &topic.configs, defaults),
                def.broker_synonym.map(|synonym| {
                    (
                        synonym,
                        topic_config::effective_value(def, &Default::default(), defaults),
                    )
                }),
            )
        })
        .collect())
}

/// An entry a resource may override: its override is reported as a
/// synonym of its own when it has one, then the broker setting it would
/// otherwise take (`broker_default`, if it has one).
fn overridable(
    (name, config_type, doc): (&'static str, ConfigType, &'static str),
    (value, source): (String, ConfigSource),
    broker_default: Option<(&str, (String, ConfigSource))>,
) -> Entry {
    let mut synonyms = Vec::with_capacity(2);
    if matches!(
        source,
        ConfigSource::DynamicTopic | ConfigSource::DynamicGroup
    ) {
        synonyms.push((name.to_string(), value.clone(), source));
    }
    if let Some((synonym, (default, default_source))) = broker_default {
        synonyms.push((synonym.to_string(), default, default_source));
    }
    Entry {
        name,
        value,
        source,
        config_type,
        read_only: false,
        doc,
        synonyms,
    }
}

/// A group's configs: its overrides, else the broker's settings. Any group
/// name may be described, as in Kafka: configs do not need the group.
fn group_entries(broker: &Broker, name: &str) -> Result<Vec<Entry>, (ResponseError, String)> {
    if name.is_empty() {
        return Err((
            ResponseError::InvalidRequest,
            "a GROUP resource names a group".into(),
        ));
    }
    let image = broker.image();
    let overrides = image.group_configs(name);
    let defaults = broker.groups.consumer_defaults();
    Ok(GROUP_CONFIGS
        .iter()
        .map(|def| {
            let explicit = broker.config.explicit.contains(def.broker_flag);
            overridable(
                (def.name, ConfigType::Int, def.doc),
                group_config::effective_value(def, overrides, defaults, explicit),
                Some((
                    def.broker_synonym,
                    group_config::effective_value(def, None, defaults, explicit),
                )),
            )
        })
        .collect())
}

fn broker_entries(config: &BrokerConfig) -> Vec<Entry> {
    let log = &config.topic_defaults.log;
    let advertised = format!(
        "PLAINTEXT://{}:{}",
        config.advertised_host, config.advertised_port
    );
    let settings: Vec<(&'static str, &'static str, String, ConfigType)> = vec![
        (
            "node.id",
            "node-id",
            config.node_id.to_string(),
            ConfigType::Int,
        ),
        (
            "listeners",
            "listen",
            format!("PLAINTEXT://{}", config.listen),
            ConfigType::List,
        ),
        (
            "advertised.listeners",
            "advertise",
            advertised,
            ConfigType::List,
        ),
        (
            "log.dirs",
            "data-dir",
            config.data_dir.display().to_string(),
            ConfigType::List,
        ),
        (
            "num.partitions",
            "num-partitions",
            config.num_partitions.to_string(),
            ConfigType::Int,
        ),
        (
            "default.replication.factor",
            "default-replication-factor",
            config.default_replication_factor.to_string(),
            ConfigType::Int,
        ),
        (
            "auto.create.topics.enable",
            "auto-create-topics",
            config.auto_create_topics.to_string(),
            ConfigType::Boolean,
        ),
        (
            "log.segment.bytes",
            "log-segment-bytes",
            log.segment_bytes.to_string(),
            ConfigType::Int,
        ),
        (
            "log.roll.ms",
            "log-segment-ms",
            log.segment_ms.to_string(),
            ConfigType::Long,
        ),
        (
            "log.retention.ms",
            "log-retention-ms",
            log.retention_ms.to_string(),
            ConfigType::Long,
        ),
        (
            "log.retention.bytes",
            "log-retention-bytes",
            log.retention_bytes.to_string(),
            ConfigType::Long,
        ),
        (
            "log.retention.check.interval.ms",
            "log-retention-check-interval-ms",
            config.retention_check_interval_ms.to_string(),
            ConfigType::Long,
        ),
        (
            "log.flush.interval.messages",
            "log-flush-messages",
            log.flush.messages.unwrap_or(i64::MAX as u64).to_string(),
            ConfigType::Long,
        ),
        (
            "log.flush.interval.ms",
            "log-flush-ms",
            log.flush.interval_ms.unwrap_or(i64::MAX as u64).to_string(),
            ConfigType::Long,
        ),
        (
            "message.max.bytes",
            "message-max-bytes",
            log.max_message_bytes.to_string(),
            ConfigType::Int,
        ),
        (
            "fetch.max.bytes",
            "fetch-max-bytes",
            config.fetch_max_bytes.to_string(),
            ConfigType::Int,
        ),
        (
            "socket.request.max.bytes",
            "max-frame-bytes",
            config.max_frame_bytes.to_string(),
            ConfigType::Int,
        ),
    ];
    settings
        .into_iter()
        .map(|(name, flag, value, config_type)| {
            let source = if config.explicit.contains(flag) {
                ConfigSource::StaticBroker
            } else {
                ConfigSource::Default
            };
            Entry {
                name,
                synonyms: vec![(name.to_string(), value.clone(), source)],
                value,
                source,
                config_type,
                read_only: true,
                doc: "A static broker setting; see `keel --help`.",
            }
        })
        .collect()
}
