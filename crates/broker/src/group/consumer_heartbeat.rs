//! ConsumerGroupHeartbeat at the coordinator: the IO around the consumer
//! protocol's state machine. Topic shapes come from the metadata image;
//! every heartbeat that changes what a restarted coordinator would need
//! (members, epochs, assignments) writes the records of what changed
//! before the answer. A group has members of one protocol at a time: a
//! consumer-protocol member cannot join a group whose members use the
//! classic protocol, and the other way round.

use kafka_protocol::error::ResponseError;
use keel_raft_metadata::MetadataImage;

use super::{
    GroupCoordinator,
    consumer::{
        ConsumerGroup, ConsumerHeartbeat, ConsumerLimits, ConsumerOutcome, ConsumerSettings,
        TopicCatalog, TopicShape,
    },
    state::Group,
    storage::{self, OFFSETS_TOPIC},
};
use crate::broker::{Broker, now_ms};

impl GroupCoordinator {
    pub(crate) fn consumer_heartbeat(
        &self,
        broker: &Broker,
        group_id: &str,
        request: ConsumerHeartbeat,
    ) -> Result<ConsumerOutcome, ResponseError> {
        let partition = self.partition_of(group_id);
        let image = broker.image();
        let catalog = ImageCatalog(&image);
        self.with_lock(|inner| {
            self.check(inner, partition)?;
            let now = now_ms();
            let group = inner
                .groups
                .entry(group_id.to_string())
                .or_insert_with(|| Group::new(group_id, now));
            if !group.members.is_empty() {
                return Err(ResponseError::GroupIdNotFound);
            }
            let had_members = group.is_consumer_group();
            let consumer = group.consumer.get_or_insert_with(ConsumerGroup::default);
            let before = consumer.snapshot();
            let outcome = consumer.heartbeat(request, &catalog, now);
            if had_members && !group.is_consumer_group() {
                group.empty_since_ms = now;
            }
            // What changed is durable before the member acts on it.
            let persisted = Self::persist(
                broker,
                partition,
                &storage::consumer_entries(group, &before),
            );
            Self::drop_if_vacant(inner, group_id);
            persisted.and(outcome)
        })
    }

    /// The heartbeat interval the group's consumer-protocol members are
    /// told: its own, or the broker's.
    pub(crate) fn consumer_heartbeat_interval_ms(&self, broker: &Broker, group_id: &str) -> i32 {
        self.consumer_settings(&broker.image(), group_id)
            .heartbeat_interval_ms
    }

    /// The consumer-protocol timing of a group: its config overrides over
    /// the broker's settings.
    pub(crate) fn consumer_settings(
        &self,
        image: &MetadataImage,
        group_id: &str,
    ) -> ConsumerSettings {
        crate::group_config::settings(image.group_configs(group_id), &self.config.consumer)
    }

    /// The broker's consumer-protocol timing, the groups' defaults.
    pub(crate) fn consumer_defaults(&self) -> &ConsumerSettings {
        &self.config.consumer
    }

    /// The bounds of a group's consumer-protocol timing.
    pub(crate) fn consumer_limits(&self) -> &ConsumerLimits {
        &self.config.consumer_limits
    }
}

/// The topics of the metadata image, for the consumer protocol.
struct ImageCatalog<'a>(&'a MetadataImage);

impl TopicCatalog for ImageCatalog<'_> {
    fn shape(&self, name: &str) -> Option<TopicShape> {
        self.0.topic(name).map(|t| TopicShape {
            id: t.id,
            partitions: i32::try_from(t.partitions.len()).unwrap_or(i32::MAX),
        })
    }

    fn names(&self) -> Vec<String> {
        self.0
            .topics()
            .filter(|t| t.name != OFFSETS_TOPIC)
            .map(|t| t.name.clone())
            .collect()
    }
}
