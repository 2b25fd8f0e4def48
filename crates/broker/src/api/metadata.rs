//! Metadata: brokers, the controller, and topics with their partitions'
//! leaders, epochs, replicas and ISR, all from the metadata image so every
//! broker answers alike, but for one thing: a leader this broker has just
//! seen die leads nothing in its answers until the controller has decided
//! (see `lost_peers`). Unknown topics are created here when both the broker
//! and the request allow it.

use std::time::{Duration, Instant};

use kafka_protocol::{
    error::ResponseError,
    messages::{
        BrokerId, MetadataRequest, MetadataResponse, TopicName,
        metadata_response::{
            MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
        },
    },
    protocol::StrBytes,
};
use uuid::Uuid;

use super::{
    RequestContext, authorized_operations,
    create_topics::{TopicSpec, create_topic},
    internal_topic::ensure_offsets_topic,
    topics::{
        broker_ids, controller_for_clients, live_leader, offline_replicas, validate_topic_name,
    },
};
use crate::{error::AdminError, group::storage::OFFSETS_TOPIC, lost_peers::PresumedGone};
use keel_raft_metadata::{MetadataImage, TopicInfo};

/// How long a Metadata request waits for an auto-created topic to commit
/// before answering LEADER_NOT_AVAILABLE for it.
const AUTO_CREATE_TIMEOUT: Duration = Duration::from_secs(5);

/// Before this version `allow_auto_topic_creation` did not exist and was
/// implicitly true.
const AUTO_CREATE_FLAG_VERSION: i16 = 4;
/// Versions from which fields exist in the response.
const CONTROLLER_VERSION: i16 = 1;
const IS_INTERNAL_VERSION: i16 = 1;
const CLUSTER_ID_VERSION: i16 = 2;
const OFFLINE_REPLICAS_VERSION: i16 = 5;
const LEADER_EPOCH_VERSION: i16 = 7;
const TOPIC_ID_VERSION: i16 = 10;
/// The versions that may carry authorized operations (KIP-430): the
/// cluster's from 8 to 10, each topic's from 8.
const AUTHORIZED_OPERATIONS_VERSION: i16 = 8;
const LAST_CLUSTER_OPERATIONS_VERSION: i16 = 10;

enum Wanted {
    All,
    Some(Vec<(Option<String>, Uuid)>),
}

pub(super) async fn handle(ctx: &RequestContext<'_>, request: MetadataRequest) -> MetadataResponse {
    let broker = ctx.broker;
    let wanted = match request.topics {
        None => Wanted::All,
        Some(topics) if topics.is_empty() && ctx.version == 0 => Wanted::All,
        Some(topics) => Wanted::Some(
            topics
                .into_iter()
                .map(|t| (t.name.map(|n| n.0.to_string()), t.topic_id))
                .collect(),
        ),
    };
    let allow_create = broker.config.auto_create_topics
        && (ctx.version < AUTO_CREATE_FLAG_VERSION || request.allow_auto_topic_creation);

    let mut image = broker.image();
    let mut creation_errors = Vec::new();
    if let (Wanted::Some(topics), true) = (&wanted, allow_create) {
        for name in topics.iter().filter_map(|(name, _)| name.as_deref()) {
            if image.topic(name).is_some() || validate_topic_name(name).is_err() {
                continue;
            }
            let created = if name == OFFSETS_TOPIC {
                ensure_offsets_topic(broker, AUTO_CREATE_TIMEOUT).await
            } else {
                let spec = TopicSpec {
                    name: name.to_string(),
                    num_partitions: -1,
                    replication_factor: -1,
                    ..TopicSpec::default()
                };
                create_topic(broker, spec, false, AUTO_CREATE_TIMEOUT)
                    .await
                    .map(drop)
            };
            match created {
                Ok(_) => {}
                Err(AdminError::TopicExists(_)) => {}
                Err(AdminError::Metadata(error)) if error.is_retriable() => {
                    // Kafka answers LEADER_NOT_AVAILABLE while a topic is being
                    // created; the client asks again.
                    tracing::debug!(topic = name, %error, "auto-creation not committed yet");
                    creation_errors.push((name.to_string(), ResponseError::LeaderNotAvailable));
                }
                Err(error) => {
                    tracing::warn!(topic = name, %error, "auto-creating topic failed");
                    creation_errors.push((name.to_string(), error.code()));
                }
            }
        }
        image = broker.image();
    }

    let gone = broker
        .lost_peers
        .presumed_gone(Instant::now(), broker.config.liveness.session_timeout);
    let topics: Vec<MetadataResponseTopic> = match wanted {
        Wanted::All => image
            .topics()
            .map(|t| describe(&image, &gone, t, ctx.version))
            .collect(),
        Wanted::Some(topics) => topics
            .into_iter()
            .map(|(name, id)| {
                let found = match &name {
                    Some(name) => image.topic(name),
                    None => image.topic_by_id(&id),
                };
                match (found, name) {
                    (Some(topic), _) => describe(&image, &gone, topic, ctx.version),
                    (None, Some(name)) => {
                        let error = creation_errors
                            .iter()
                            .find(|(n, _)| *n == name)
                            .map(|(_, e)| *e)
                            .unwrap_or_else(|| match validate_topic_name(&name) {
                                Ok(()) => ResponseError::UnknownTopicOrPartition,
                                Err(_) => ResponseError::InvalidTopicException,
                            });
                        missing(Some(name), id, error)
                    }
                    (None, None) => missing(None, id, ResponseError::UnknownTopicId),
                }
            })
            .collect(),
    };

    let carries_operations = ctx.version >= AUTHORIZED_OPERATIONS_VERSION;
    let topic_operations = authorized_operations::if_requested(
        carries_operations && request.include_topic_authorized_operations,
        authorized_operations::TOPIC,
    );
    let topics = topics
        .into_iter()
        .map(|t| t.with_topic_authorized_operations(topic_operations))
        .collect();
    let cluster_operations = authorized_operations::if_requested(
        carries_operations
            && ctx.version <= LAST_CLUSTER_OPERATIONS_VERSION
            && request.include_cluster_authorized_operations,
        authorized_operations::CLUSTER,
    );
    MetadataResponse::default()
        .with_cluster_authorized_operations(cluster_operations)
        .with_brokers(
            image
                .live_brokers()
                .map(|b| {
                    MetadataResponseBroker::default()
                        .with_node_id(BrokerId(b.node_id))
                        .with_host(StrBytes::from_string(b.host.clone()))
                        .with_port(b.port)
                        .with_rack(
                            b.rack
                                .clone()
                                .filter(|_| ctx.version >= CONTROLLER_VERSION)
                                .map(StrBytes::from_string),
                        )
                })
                .collect(),
        )
        .with_cluster_id(
            broker
                .cluster_id()
                .filter(|_| ctx.version >= CLUSTER_ID_VERSION)
                .map(StrBytes::from_string),
        )
        .with_controller_id(BrokerId(if ctx.version >= CONTROLLER_VERSION {
            controller_for_clients(broker, &image)
        } else {
            -1
        }))
        .with_topics(topics)
}

fn missing(name: Option<String>, id: Uuid, error: ResponseError) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_error_code(error.code())
        .with_name(name.map(|n| TopicName(StrBytes::from_string(n))))
        .with_topic_id(id)
}

/// Describes `topic`, naming no leader for partitions whose leader this
/// broker has seen die (see `lost_peers`).
fn describe(
    image: &MetadataImage,
    gone: &PresumedGone,
    topic: &TopicInfo,
    version: i16,
) -> MetadataResponseTopic {
    let partitions = topic
        .partitions
        .iter()
        .map(|p| {
            let offline = if version >= OFFLINE_REPLICAS_VERSION {
                offline_replicas(image, p)
            } else {
                Vec::new()
            };
            let live_leader = live_leader(image, p).filter(|&leader| !gone.names(image, leader));
            let error = match live_leader {
                Some(_) => 0,
                None => ResponseError::LeaderNotAvailable.code(),
            };
            MetadataResponsePartition::default()
                .with_error_code(error)
                .with_partition_index(p.partition)
                .with_leader_id(BrokerId(live_leader.unwrap_or(-1)))
                .with_leader_epoch(if version >= LEADER_EPOCH_VERSION {
                    p.leader_epoch
                } else {
                    -1
                })
                .with_replica_nodes(broker_ids(&p.replicas))
                .with_isr_nodes(broker_ids(&p.isr))
                .with_offline_replicas(offline)
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(topic.name.clone()))))
        .with_topic_id(if version >= TOPIC_ID_VERSION {
            topic.id
        } else {
            Uuid::nil()
        })
        .with_is_internal(version >= IS_INTERNAL_VERSION && topic.name == OFFSETS_TOPIC)
        .with_partitions(partitions)
}
