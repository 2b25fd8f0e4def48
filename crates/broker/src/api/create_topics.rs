//! CreateTopics, and the topic creation that Metadata's auto-creation
//! shares: validation, replica placement and the metadata record.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use kafka_protocol::{
    messages::{
        CreateTopicsRequest, CreateTopicsResponse,
        create_topics_request::CreatableTopic,
        create_topics_response::{CreatableTopicConfigs, CreatableTopicResult},
    },
    protocol::StrBytes,
};
use uuid::Uuid;

use super::{
    RequestContext,
    internal_topic::refuse_client_change,
    topics::{admin_timeout, colliding_topic, validate_topic_name},
};
use crate::{
    broker::{Broker, now_ms},
    error::AdminError,
    topic_config::{self, InvalidConfig, TOPIC_CONFIGS},
};
use keel_raft_metadata::{
    MetadataImage, PartitionAssignment, Record, TopicInfo, records::CreateTopic,
};

/// Kafka's cap on partitions created by one request.
pub(crate) const MAX_PARTITIONS_PER_REQUEST: i32 = 10_000;

/// What a caller asks for; -1 counts take the broker defaults.
#[derive(Debug, Default)]
pub(crate) struct TopicSpec {
    pub(crate) name: String,
    pub(crate) num_partitions: i32,
    pub(crate) replication_factor: i16,
    /// Explicit replica lists, by partition index.
    pub(crate) assignments: BTreeMap<i32, Vec<i32>>,
    pub(crate) configs: BTreeMap<String, String>,
}

/// Validates a topic and, unless `validate_only`, commits it through the
/// metadata quorum within `timeout`. Returns the topic as it is (or would
/// be) created.
pub(crate) async fn create_topic(
    broker: &Broker,
    spec: TopicSpec,
    validate_only: bool,
    timeout: Duration,
) -> Result<Arc<TopicInfo>, AdminError> {
    let image = broker.image();
    validate_topic_name(&spec.name).map_err(AdminError::InvalidTopic)?;
    if image.topic(&spec.name).is_some() {
        return Err(AdminError::TopicExists(spec.name));
    }
    if let Some(existing) = colliding_topic(&image, &spec.name) {
        return Err(AdminError::InvalidTopic(format!(
            "topic '{}' collides with existing topic '{existing}' ('.' and '_' are interchangeable in metric names)",
            spec.name
        )));
    }
    let configs = topic_config::validate_all(&spec.configs)?;
    let partitions = if spec.assignments.is_empty() {
        let count = if spec.num_partitions == -1 {
            broker.config.num_partitions
        } else {
            spec.num_partitions
        };
        let replication_factor = if spec.replication_factor == -1 {
            broker.config.default_replication_factor
        } else {
            spec.replication_factor
        };
        place_replicas(&image, 0, count, replication_factor)?
    } else {
        explicit_assignments(&image, &spec)?
    };
    check_capacity(&image, &partitions)?;
    let record = CreateTopic {
        name: spec.name.clone(),
        topic_id: Uuid::new_v4().as_bytes().to_vec(),
        partitions,
        configs,
        timestamp_ms: now_ms(),
        controller: broker.controller_id(),
    };
    if validate_only {
        let mut preview = MetadataImage::clone(&image);
        preview
            .apply(&Record::CreateTopic(record).into(), 0)
            .map_err(|e| AdminError::InvalidRequest(e.to_string()))?;
        return preview
            .topic(&spec.name)
            .cloned()
            .ok_or(AdminError::UnknownTopic(spec.name));
    }
    let image = broker
        .propose(Record::CreateTopic(record).into(), timeout)
        .await?;
    tracing::info!(topic = spec.name, "created topic");
    image
        .topic(&spec.name)
        .cloned()
        .ok_or(AdminError::UnknownTopic(spec.name))
}

/// Spreads `count` partitions numbered from `first` over the live
/// (registered, unfenced) brokers, round robin from a random start; the
/// first replica leads. With racks, the brokers are ordered so that racks
/// alternate, which puts a partition's replicas on different racks
/// whenever there are enough of them.
pub(crate) fn place_replicas(
    image: &MetadataImage,
    first: i32,
    count: i32,
    replication_factor: i16,
) -> Result<Vec<PartitionAssignment>, AdminError> {
    if count <= 0 {
        return Err(AdminError::InvalidPartitions(format!(
            "number of partitions must be positive, got {count}"
        )));
    }
    if count > MAX_PARTITIONS_PER_REQUEST {
        return Err(AdminError::PolicyViolation(format!(
            "{count} partitions in one request; the limit is {MAX_PARTITIONS_PER_REQUEST}"
        )));
    }
    let brokers = rack_alternating(image);
    if replication_factor <= 0 {
        return Err(AdminError::InvalidReplicationFactor(format!(
            "replication factor must be positive, got {replication_factor}"
        )));
    }
    if replication_factor as usize > brokers.len() {
        return Err(AdminError::InvalidReplicationFactor(format!(
            "replication factor {replication_factor} is larger than the {} available brokers",
            brokers.len()
        )));
    }
    let start = (Uuid::new_v4().as_u128() % brokers.len() as u128) as usize;
    Ok((0..count)
        .map(|i| {
            let replicas: Vec<i32> = (0..replication_factor as usize)
                .map(|r| brokers[(start + i as usize + r) % brokers.len()])
                .collect();
            assignment(first + i, replicas)
        })
        .collect())
}

/// Live broker ids, ordered by interleaving racks: the first broker of each
/// rack, then the second of each, and so on. Brokers without a rack form
/// one group of their own.
fn rack_alternating(image: &MetadataImage) -> Vec<i32> {
    let mut by_rack: BTreeMap<Option<&str>, Vec<i32>> = BTreeMap::new();
    for broker in image.live_brokers() {
        by_rack
            .entry(broker.rack.as_deref())
            .or_default()
            .push(broker.node_id);
    }
    let longest = by_rack.values().map(Vec::len).max().unwrap_or(0);
    (0..longest)
        .flat_map(|i| by_rack.values().filter_map(move |ids| ids.get(i).copied()))
        .collect()
}

/// Refuses partitions that would give a broker more replicas than its
/// open-file limit lets it keep open (also checked when the record is
/// applied, against requests racing this one).
pub(crate) fn check_capacity(
    image: &MetadataImage,
    partitions: &[PartitionAssignment],
) -> Result<(), AdminError> {
    image
        .check_replica_capacity(partitions)
        .map_err(|e| AdminError::PolicyViolation(e.to_string()))
}

/// A new partition on `replicas`, led by the first.
pub(super) fn assignment(partition: i32, replicas: Vec<i32>) -> PartitionAssignment {
    PartitionAssignment {
        partition,
        leader: replicas[0],
        isr: replicas.clone(),
        replicas,
        ..PartitionAssignment::default()
    }
}

/// Checks explicit replica lists: contiguous partitions from 0, the same
/// replication factor everywhere, registered brokers, no duplicates.
pub(crate) fn check_replica_list(
    image: &MetadataImage,
    replicas: &[i32],
) -> Result<(), AdminError> {
    if replicas.is_empty() {
        return Err(AdminError::InvalidReplicaAssignment(
            "empty replica list".into(),
        ));
    }
    for (i, id) in replicas.iter().enumerate() {
        if image.broker(*id).is_none() {
            return Err(AdminError::InvalidReplicaAssignment(format!(
                "broker {id} is not registered"
            )));
        }
        if replicas[..i].contains(id) {
            return Err(AdminError::InvalidReplicaAssignment(format!(
                "broker {id} appears twice in one replica list"
            )));
        }
    }
    Ok(())
}

fn explicit_assignments(
    image: &MetadataImage,
    spec: &TopicSpec,
) -> Result<Vec<PartitionAssignment>, AdminError> {
    if spec.num_partitions != -1 || spec.replication_factor != -1 {
        return Err(AdminError::InvalidRequest(
            "give either replica assignments or partition count and replication factor".into(),
        ));
    }
    if spec.assignments.len() > MAX_PARTITIONS_PER_REQUEST as usize {
        return Err(AdminError::PolicyViolation(format!(
            "{} partitions in one request; the limit is {MAX_PARTITIONS_PER_REQUEST}",
            spec.assignments.len()
        )));
    }
    let width = spec.assignments.values().next().map_or(0, Vec::len);
    let mut partitions = Vec::with_capacity(spec.assignments.len());
    for (expected, (&partition, replicas)) in spec.assignments.iter().enumerate() {
        if partition != expected as i32 {
            return Err(AdminError::InvalidReplicaAssignment(format!(
                "partitions must be numbered from 0 without gaps; missing {expected}"
            )));
        }
        if replicas.len() != width {
            return Err(AdminError::InvalidReplicaAssignment(
                "every partition needs the same number of replicas".into(),
            ));
        }
        check_replica_list(image, replicas)?;
        partitions.push(assignment(partition, replicas.clone()));
    }
    Ok(partitions)
}

fn spec_from(topic: &CreatableTopic) -> Result<TopicSpec, AdminError> {
    let mut configs = BTreeMap::new();
    for config in &topic.configs {
        let Some(value) = &config.value else {
            return Err(InvalidConfig {
                key: config.name.to_string(),
                value: "null".into(),
                reason: "a config value cannot be null".into(),
            }
            .into());
        };
        configs.insert(config.name.to_string(), value.to_string());
    }
    Ok(TopicSpec {
        name: topic.name.0.to_string(),
        num_partitions: topic.num_partitions,
        replication_factor: topic.replication_factor,
        assignments: topic
            .assignments
            .iter()
            .map(|a| {
                (
                    a.partition_index,
                    a.broker_ids.iter().map(|b| b.0).collect(),
                )
            })
            .collect(),
        configs,
    })
}

pub(super) async fn handle(
    ctx: &RequestContext<'_>,
    request: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let broker = ctx.broker;
    let mut seen = BTreeMap::new();
    for topic in &request.topics {
        *seen.entry(topic.name.0.to_string()).or_insert(0) += 1;
    }
    let timeout = admin_timeout(request.timeout_ms);
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in &request.topics {
        let result = TopicResultBuilder::new(topic, ctx.version);
        let name = topic.name.0.to_string();
        if seen.get(&name).copied().unwrap_or(0) > 1 {
            results.push(result.failed(&AdminError::InvalidRequest(format!(
                "topic '{name}' appears more than once in the request"
            ))));
            continue;
        }
        let created = match refuse_client_change(&name, "create").and_then(|()| spec_from(topic)) {
            Ok(spec) => create_topic(broker, spec, request.validate_only, timeout).await,
            Err(error) => Err(error),
        };
        results.push(match created {
            Ok(created) => result.created(&created, broker),
            Err(error) => {
                tracing::debug!(topic = name, %error, "create topic refused");
                result.failed(&error)
            }
        });
    }
    CreateTopicsResponse::default().with_topics(results)
}

/// The first version describing the created topic's layout and configs.
const DETAILS_VERSION: i16 = 5;
/// The first version carrying the topic id.
const TOPIC_ID_VERSION: i16 = 7;

struct TopicResultBuilder(CreatableTopicResult, i16);

impl TopicResultBuilder {
    fn new(topic: &CreatableTopic, version: i16) -> Self {
        Self(
            CreatableTopicResult::default().with_name(topic.name.clone()),
            version,
        )
    }

    fn failed(self, error: &AdminError) -> CreatableTopicResult {
        let result = self
            .0
            .with_error_code(error.code().code())
            .with_error_message(Some(StrBytes::from_string(error.to_string())));
        if self.1 >= DETAILS_VERSION {
            result.with_configs(None)
        } else {
            result
        }
    }

    fn created(self, topic: &TopicInfo, broker: &Broker) -> CreatableTopicResult {
        let version = self.1;
        let result =
            self.0
                .with_error_message(None)
                .with_topic_id(if version >= TOPIC_ID_VERSION {
                    topic.id
                } else {
                    Uuid::nil()
                });
        if version < DETAILS_VERSION {
            return result;
        }
        let replication_factor = topic
            .partitions
            .first()
            .map_or(0, |p| p.replicas.len() as i16);
        let defaults = broker.replicas.defaults();
        let configs = TOPIC_CONFIGS
            .iter()
            .map(|def| {
                let (value, source) = topic_config::effective_value(def, &topic.configs, defaults);
                CreatableTopicConfigs::default()
                    .with_name(StrBytes::from_static_str(def.name))
                    .with_value(Some(StrBytes::from_string(value)))
                    .with_config_source(source as i8)
            })
            .collect();
        result
            .with_num_partitions(topic.partitions.len() as i32)
            .with_replication_factor(replication_factor)
            .with_configs(Some(configs))
    }
}

#[cfg(test)]
mod tests {
    use keel_raft_metadata::records::RegisterBroker;

    use super::*;

    fn image_with(brokers: &[(i32, Option<&str>)]) -> MetadataImage {
        let mut image = MetadataImage::default();
        for (id, rack) in brokers {
            let record = Record::RegisterBroker(RegisterBroker {
                node_id: *id,
                host: "h".into(),
                port: 9092,
                rack: rack.map(str::to_string),
                incarnation: 1,
                timestamp_ms: 0,
                max_replicas: None,
            });
            image.apply(&record.into(), 1).unwrap();
        }
        image
    }

    #[test]
    fn racks_alternate_in_the_placement_order() {
        let image = image_with(&[
            (1, Some("a")),
            (2, Some("a")),
            (3, Some("b")),
            (4, Some("b")),
            (5, Some("c")),
        ]);
        assert_eq!(rack_alternating(&image), vec![1, 3, 5, 2, 4]);
    }

    #[test]
    fn partitions_spread_over_every_live_broker() {
        let image = image_with(&[(1, None), (2, None), (3, None)]);
        let partitions = place_replicas(&image, 0, 6, 1).unwrap();
        let mut leaders: Vec<i32> = partitions.iter().map(|p| p.leader).collect();
        leaders.sort_unstable();
        assert_eq!(leaders, vec![1, 1, 2, 2, 3, 3]);
        assert!(
            partitions
                .iter()
                .all(|p| p.isr == p.replicas && p.leader_epoch == 0)
        );
    }

    #[test]
    fn replicas_are_spread_and_never_more_than_the_live_brokers() {
        let image = image_with(&[(1, None), (2, None), (3, None)]);
        let partitions = place_replicas(&image, 0, 6, 3).unwrap();
        for p in &partitions {
            let mut replicas = p.replicas.clone();
            replicas.sort_unstable();
            assert_eq!(replicas, vec![1, 2, 3], "{p:?}");
            assert_eq!(p.leader, p.replicas[0], "the preferred replica leads");
        }
        let mut leaders: Vec<i32> = partitions.iter().map(|p| p.leader).collect();
        leaders.sort_unstable();
        assert_eq!(leaders, vec![1, 1, 2, 2, 3, 3]);
        match place_replicas(&image, 0, 1, 4) {
            Err(AdminError::InvalidReplicationFactor(message)) => {
                assert!(message.contains('4') && message.contains('3'), "{message}");
            }
            other => panic!("expected INVALID_REPLICATION_FACTOR, got {other:?}"),
        }
    }
}
