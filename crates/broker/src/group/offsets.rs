//! OffsetCommit, OffsetFetch and OffsetDelete at the coordinator: offsets
//! are written to the group's partition before they count.

use std::collections::BTreeSet;

use kafka_protocol::error::ResponseError;

use super::{
    GroupCoordinator,
    state::{CommittedOffset, Group, MemberClaim},
    storage::{self, Entry},
};
use crate::broker::{Broker, now_ms};

/// The protocol type of Kafka consumers.
pub(crate) const CONSUMER_PROTOCOL_TYPE: &str = "consumer";
/// Largest offset metadata string accepted (Kafka's default).
const MAX_METADATA_BYTES: usize = 4096;

impl GroupCoordinator {
    /// OffsetCommit: every offset is written before the answer; the result
    /// is per offset, or an error for the whole request.
    pub(crate) fn commit(
        &self,
        broker: &Broker,
        group_id: &str,
        claim: MemberClaim<'_>,
        offsets: Vec<(String, i32, CommittedOffset)>,
    ) -> Result<Vec<Option<ResponseError>>, ResponseError> {
        self.with_lock(|inner| {
            let partition = self.partition_of(group_id);
            self.check(inner, partition)?;
            let now = now_ms();
            if claim.generation >= 0 && !inner.groups.contains_key(group_id) {
                // A member of a generation of a group that no longer exists.
                return Err(ResponseError::IllegalGeneration);
            }
            let group = inner
                .groups
                .entry(group_id.to_string())
                .or_insert_with(|| Group::new(group_id, now));
            let refused = match &group.consumer {
                Some(consumer) if group.members.is_empty() => {
                    consumer.check_commit(claim.member_id, claim.generation)
                }
                _ => group.check_commit(claim, now),
            };
            if let Some(error) = refused {
                Self::drop_if_vacant(inner, group_id);
                return Err(error);
            }
            let mut results = Vec::with_capacity(offsets.len());
            let mut accepted = Vec::new();
            for (topic, index, committed) in offsets {
                if committed.metadata.len() > MAX_METADATA_BYTES {
                    results.push(Some(ResponseError::OffsetMetadataTooLarge));
                } else {
                    results.push(None);
                    accepted.push((topic, index, committed));
                }
            }
            let entries: Vec<Entry> = accepted
                .iter()
                .map(|(topic, index, committed)| {
                    storage::offset_entry(group_id, topic, *index, Some(committed))
                })
                .collect();
            Self::persist(broker, partition, &entries)?;
            for (topic, index, committed) in accepted {
                group.offsets.insert((topic, index), committed);
            }
            Ok(results)
        })
    }

    /// OffsetFetch: the committed offsets of `wanted` (every one when
    /// `None`); partitions never committed come back as `None`. `member`
    /// is who asks, when a consumer-protocol member says so (v9).
    pub(crate) fn fetch(
        &self,
        group_id: &str,
        member: Option<(&str, i32)>,
        wanted: Option<Vec<(String, Vec<i32>)>>,
    ) -> Result<Vec<(String, i32, Option<CommittedOffset>)>, ResponseError> {
        self.with_lock(|inner| {
            let partition = self.partition_of(group_id);
            self.check(inner, partition)?;
            let group = inner.groups.get(group_id);
            // A consumer-protocol member fetches with its current epoch, as it
            // commits.
            let consumer = group
                .filter(|g| g.is_consumer_group())
                .and_then(|g| g.consumer.as_ref());
            if let (Some(consumer), Some((member_id, epoch))) = (consumer, member) {
                if let Some(error) = consumer.check_commit(member_id, epoch) {
                    return Err(error);
                }
            }
            let offsets = group.map(|g| &g.offsets);
            Ok(match wanted {
                None => offsets
                    .into_iter()
                    .flatten()
                    .map(|((topic, index), committed)| {
                        (topic.clone(), *index, Some(committed.clone()))
                    })
                    .collect(),
                Some(wanted) => wanted
                    .into_iter()
                    .flat_map(|(topic, indexes)| {
                        indexes.into_iter().map(move |index| {
                            let committed =
                                offsets.and_then(|o| o.get(&(topic.clone(), index)).cloned());
                            (topic.clone(), index, committed)
                        })
                    })
                    .collect(),
            })
        })
    }

    /// OffsetDelete: drops committed offsets of partitions the group's
    /// members do not subscribe to (under either consumer protocol). A
    /// group with members that is not a consumer group keeps them all
    /// (NON_EMPTY_GROUP), as in Kafka: its subscriptions cannot be read.
    pub(crate) fn delete_offsets(
        &self,
        broker: &Broker,
        group_id: &str,
        partitions: Vec<(String, i32)>,
        subscribed: impl Fn(&Group) -> BTreeSet<String>,
    ) -> Result<Vec<Option<ResponseError>>, ResponseError> {
        self.with_lock(|inner| {
            let partition = self.partition_of(group_id);
            self.check(inner, partition)?;
            let group = inner
                .groups
                .get_mut(group_id)
                .ok_or(ResponseError::GroupIdNotFound)?;
            let topics = match &group.consumer {
                Some(consumer) if group.is_consumer_group() => consumer
                    .members
                    .values()
                    .flat_map(|m| m.subscribed_topics.iter().cloned())
                    .collect(),
                _ if group.is_empty() => BTreeSet::new(),
                _ if group.protocol_type.as_deref() == Some(CONSUMER_PROTOCOL_TYPE) => {
                    subscribed(group)
                }
                _ => return Err(ResponseError::NonEmptyGroup),
            };
            let mut results = Vec::with_capacity(partitions.len());
            let mut deleted = Vec::new();
            for (topic, index) in partitions {
                if topics.contains(&topic) {
                    results.push(Some(ResponseError::GroupSubscribedToTopic));
                } else {
                    results.push(None);
                    deleted.push((topic, index));
                }
            }
            let entries: Vec<Entry> = deleted
                .iter()
                .map(|(topic, index)| storage::offset_entry(group_id, topic, *index, None))
                .collect();
            Self::persist(broker, partition, &entries)?;
            for key in deleted {
                group.offsets.remove(&key);
            }
            Ok(results)
        })
    }
}
