//! ConsumerGroupHeartbeat at the coordinator: the IO around the consumer
//! protocol's state machine. Topic shapes come from the metadata image;
//! every heartbeat that changes what a restarted coordinator would need
//! (members, epochs, assignments) writes the records of what changed
//! before the answer. A member joining a classic group of consumers moves
//! it to the consumer protocol, and the last consumer-protocol member
//! leaving a group of classic members moves it back, as the migration
//! policy allows (see `state::migration`).

use kafka_protocol::error::ResponseError;
use keel_raft_metadata::MetadataImage;

use super::{
    GroupCoordinator,
    consumer::{
        ConsumerGroup, ConsumerHeartbeat, ConsumerLimits, ConsumerOutcome, ConsumerSettings,
        TopicCatalog, TopicShape,
    },
    state::{Deliveries, Group},
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
        let policy = self.config.migration_policy;
        self.with_lock(|inner| {
            self.check(inner, partition)?;
            let now = now_ms();
            let group = inner
                .groups
                .entry(group_id.to_string())
                .or_insert_with(|| Group::new(group_id, now));
            let before = group
                .consumer
                .as_ref()
                .map(ConsumerGroup::snapshot)
                .unwrap_or_default();
            let mut deliveries = Deliveries::default();
            let upgrading = !group.members.is_empty();
            let had_members = group.is_consumer_group();
            let speaking_consumer = group
                .consumer
                .as_ref()
                .is_some_and(ConsumerGroup::has_consumer_protocol_members);
            let outcome = if upgrading {
                // Only a joining member moves a classic group over, and
                // only if it may join: a refused member changes nothing.
                if request.member_epoch != 0 || !policy.upgrades() {
                    return Err(ResponseError::GroupIdNotFound);
                }
                let mut consumer = group.to_consumer_group(&catalog, now)?;
                let outcome = consumer.heartbeat(request, &catalog, now)?;
                deliveries = group.upgrade(consumer);
                Ok(outcome)
            } else {
                group
                    .consumer
                    .get_or_insert_with(ConsumerGroup::default)
                    .heartbeat(request, &catalog, now)
            };
            let downgraded = group.downgrade_if_only_classic_left(
                speaking_consumer,
                policy,
                true,
                &catalog,
                &self.settings,
                now,
            );
            let downgrading = downgraded.is_some();
            deliveries.append(downgraded.unwrap_or_default());
            if had_members && group.is_empty() {
                group.empty_since_ms = now;
            }
            // What changed is durable before the member acts on it.
            let persisted = Self::persist(
                broker,
                partition,
                &storage::consumer_entries(group, &before, upgrading || downgrading),
            );
            // Classic members told to rejoin are told so either way: their
            // waiting requests belong to a state that is gone.
            deliveries.deliver();
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
pub(super) struct ImageCatalog<'a>(pub(super) &'a MetadataImage);

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

    fn name_of(&self, id: &uuid::Uuid) -> Option<String> {
        self.0.topic_by_id(id).map(|t| t.name.clone())
    }
}
