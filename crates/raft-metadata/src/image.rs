//! The metadata image: what the cluster looks like after applying the
//! metadata log up to some index. `apply` is a pure function of the image,
//! a record and the Raft term of the entry carrying it, so every node that
//! applies the same entries in the same order holds the same image, and a
//! record that does not fit (an unknown topic, a stale leader epoch, a stale
//! producer id block) is rejected identically everywhere. Leader and ISR
//! changes to existing partitions live in `partitions`, replica set changes
//! in `reassignment`.

mod capacity;
mod partitions;
pub mod reassignment;

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    sync::Arc,
};

use uuid::Uuid;

pub use self::partitions::PartitionInfo;
use self::partitions::{check_leader_and_isr, new_partition};
use crate::records::{
    AllocateProducerIds, AlterTopicConfig, CreatePartitions, CreateTopic, DeleteTopic,
    LeaderChangeReason, LeadershipChange, LeadershipChangesCommitted, MetadataRecord,
    PartitionAssignment, Record, RegisterBroker, SetClusterId, UnfenceBroker,
};

/// The leadership history keeps this many changes unless a
/// `SetHistoryRetention` says otherwise; older ones are dropped.
pub const HISTORY_RETENTION: usize = 10_000;
/// Deleted topics remembered by id; older deletions are forgotten.
pub const DELETED_TOPICS_RETENTION: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
    pub incarnation: u64,
    /// A fenced broker leads nothing and gets no new partitions.
    pub fenced: bool,
    /// How many partition replicas it can keep open (see
    /// `RegisterBroker::max_replicas`).
    pub max_replicas: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub id: Uuid,
    pub partitions: Vec<PartitionInfo>,
    /// Config overrides; anything absent takes the broker default.
    pub configs: BTreeMap<String, String>,
}

impl TopicInfo {
    pub fn partition(&self, index: i32) -> Option<&PartitionInfo> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.partitions.get(i))
    }
}

/// Why a record could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error("record carries no change")]
    Empty,
    #[error("record cannot be decoded")]
    Undecodable,
    #[error("topic '{0}' already exists")]
    TopicExists(String),
    #[error(
        "broker {broker} can keep {max} partition replicas open under its open file limit; it \
         hosts {hosting} and this would add {adding}: raise its limit (ulimit -n) or place the \
         partitions elsewhere"
    )]
    ReplicaCapacity {
        broker: i32,
        hosting: u64,
        adding: u64,
        max: u64,
    },
    #[error("topic id {0} is already in use")]
    TopicIdInUse(Uuid),
    #[error("topic id must be 16 bytes")]
    InvalidTopicId,
    #[error("topic '{0}' does not exist")]
    UnknownTopic(String),
    #[error("partition {partition} of '{topic}' does not exist")]
    UnknownPartition { topic: String, partition: i32 },
    #[error("partitions of '{topic}' must be numbered from {expected}, got {got}")]
    PartitionNumbering {
        topic: String,
        expected: i32,
        got: i32,
    },
    #[error("producer id block must start at {expected}, got {got}")]
    StaleProducerIdBlock { expected: i64, got: i64 },
    #[error("producer id block size must be positive, got {0}")]
    InvalidBlockSize(i64),
    #[error("broker {0} is not registered")]
    UnknownBroker(i32),
    #[error("broker {node_id} incarnation {got} is older than the registered {current}")]
    StaleIncarnation {
        node_id: i32,
        current: u64,
        got: u64,
    },
    #[error("leader epoch {got} is not the expected {expected}")]
    StaleLeaderEpoch { expected: i32, got: i32 },
    #[error("partition epoch {got} is not the current {expected}")]
    StalePartitionEpoch { expected: i32, got: i32 },
    #[error("broker {node_id} cannot join the ISR: {reason}")]
    IneligibleIsrMember { node_id: i32, reason: String },
    #[error("the ISR and its incarnations differ in length")]
    IsrIncarnations,
    #[error("the leader {0} must stay in the ISR")]
    LeaderNotInIsr(i32),
    #[error("broker {0} is listed twice in the ISR")]
    DuplicateIsrMember(i32),
    #[error("replica {0} is not in the partition's replica set")]
    NotAReplica(i32),
    #[error("a partition needs at least one replica")]
    NoReplicas,
    #[error("broker {0} is listed twice")]
    DuplicateReplica(i32),
    #[error("replica {0} cannot be both added and removed")]
    AddedAndRemoved(i32),
    #[error("the cluster already has an id")]
    ClusterIdSet,
    #[error("a batch cannot hold a batch")]
    NestedBatch,
    #[error("the leadership history must keep at least one change")]
    InvalidHistoryRetention,
    #[error("record {index} of the batch: {error}")]
    InBatch {
        index: usize,
        error: Box<ApplyError>,
    },
}

impl ApplyError {
    /// Whether the record (or a record of the batch) was decided from an
    /// older state of its partition, before a leader change or an ISR
    /// change that it did not see: decided again from the newer image, it
    /// may well apply.
    pub fn is_stale(&self) -> bool {
        match self {
            Self::StaleLeaderEpoch { .. } | Self::StalePartitionEpoch { .. } => true,
            Self::InBatch { error, .. } => error.is_stale(),
            _ => false,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataImage {
    cluster_id: Option<String>,
    brokers: BTreeMap<i32, BrokerInfo>,
    topics: BTreeMap<String, Arc<TopicInfo>>,
    topic_ids: HashMap<Uuid, String>,
    next_producer_id: i64,
    history: VecDeque<LeadershipChange>,
    next_history_sequence: u64,
    /// How many changes `history` keeps; `None` keeps
    /// [`HISTORY_RETENTION`].
    history_retention: Option<usize>,
    /// The ids of the latest deleted topics, oldest first, at most
    /// [`DELETED_TOPICS_RETENTION`]; `deleted_ids` indexes them. A broker
    /// removes a partition directory only if its topic id is here: a log
    /// the image merely does not name (it may be stale, or the metadata
    /// lost) is moved aside, never deleted.
    deleted_topics: VecDeque<Uuid>,
    deleted_ids: HashSet<Uuid>,
    /// Consumer groups' config overrides, by group; no empty entry.
    group_configs: BTreeMap<String, BTreeMap<String, String>>,
}

impl MetadataImage {
    /// Applies `record`, carried by an entry of Raft term `term`. On error
    /// the image is unchanged.
    pub fn apply(&mut self, record: &MetadataRecord, term: u64) -> Result<(), ApplyError> {
        match record.record.as_ref().ok_or(ApplyError::Empty)? {
            Record::RegisterBroker(r) => self.register_broker(r, term),
            Record::FenceBroker(r) => self.set_fenced(r.node_id, r.incarnation, true),
            Record::UnfenceBroker(UnfenceBroker {
                node_id,
                incarnation,
            }) => self.set_fenced(*node_id, *incarnation, false),
            Record::CreateTopic(r) => self.create_topic(r, term),
            Record::DeleteTopic(r) => self.delete_topic(r),
            Record::CreatePartitions(r) => self.create_partitions(r),
            Record::AlterTopicConfig(r) => self.alter_topic_config(r),
            Record::AllocateProducerIds(r) => self.allocate_producer_ids(r),
            Record::SetPartitionLeader(r) => self.set_partition_leader(r, term),
            Record::UpdateIsr(r) => self.update_isr(r),
            Record::ChangePartitionReplicas(r) => self.change_partition_replicas(r),
            Record::SetClusterId(SetClusterId { cluster_id }) => {
                if self.cluster_id.is_some() {
                    return Err(ApplyError::ClusterIdSet);
                }
                self.cluster_id = Some(cluster_id.clone());
                Ok(())
            }
            Record::Batch(batch) => self.apply_batch(&batch.records, term),
            Record::SetHistoryRetention(r) => {
                let entries = usize::try_from(r.entries).unwrap_or(usize::MAX);
                if entries == 0 {
                    return Err(ApplyError::InvalidHistoryRetention);
                }
                self.history_retention = Some(entries);
                let excess = self.history.len().saturating_sub(entries);
                self.history.drain(..excess);
                Ok(())
            }
            Record::LeadershipChangesCommitted(r) => {
                self.record_commit_time(r);
                Ok(())
            }
            Record::AlterGroupConfig(r) => {
                let configs = self.group_configs.entry(r.group.clone()).or_default();
                for key in &r.delete {
                    configs.remove(key);
                }
                configs.extend(r.set.iter().map(|(k, v)| (k.clone(), v.clone())));
                if configs.is_empty() {
                    self.group_configs.remove(&r.group);
                }
                Ok(())
            }
        }
    }

    /// A consumer group's config overrides, if it has any.
    pub fn group_configs(&self, group: &str) -> Option<&BTreeMap<String, String>> {
        self.group_configs.get(group)
    }

    /// Every group with config overrides, with them, by group name.
    pub fn all_group_configs(&self) -> &BTreeMap<String, BTreeMap<String, String>> {
        &self.group_configs
    }

    pub(crate) fn restore_group_configs(
        &mut self,
        configs: BTreeMap<String, BTreeMap<String, String>>,
    ) {
        self.group_configs = configs;
    }

    /// Stamps the commit time on the changes `r` names that are still kept
    /// and have none yet.
    fn record_commit_time(&mut self, r: &LeadershipChangesCommitted) {
        let end = r.first_sequence.saturating_add(u64::from(r.count));
        for change in self.history.iter_mut().rev() {
            if change.sequence < r.first_sequence {
                break;
            }
            if change.sequence < end && change.committed_at_ms == 0 {
                change.committed_at_ms = r.committed_at_ms;
            }
        }
    }

    /// Applies every record of a batch in order, or none: on the first
    /// failure the image is put back as it was.
    fn apply_batch(&mut self, records: &[MetadataRecord], term: u64) -> Result<(), ApplyError> {
        let before = self.clone();
        for (index, record) in records.iter().enumerate() {
            let result = match record.record {
                Some(Record::Batch(_)) => Err(ApplyError::NestedBatch),
                _ => self.apply(record, term),
            };
            if let Err(error) = result {
                *self = before;
                return Err(ApplyError::InBatch {
                    index,
                    error: Box::new(error),
                });
            }
        }
        Ok(())
    }

    pub fn cluster_id(&self) -> Option<&str> {
        self.cluster_id.as_deref()
    }

    fn register_broker(&mut self, r: &RegisterBroker, term: u64) -> Result<(), ApplyError> {
        if let Some(current) = self.brokers.get(&r.node_id) {
            if r.incarnation < current.incarnation {
                return Err(ApplyError::StaleIncarnation {
                    node_id: r.node_id,
                    current: current.incarnation,
                    got: r.incarnation,
                });
            }
            if r.incarnation > current.incarnation {
                self.forget_restarted_replica(r.node_id, r.timestamp_ms, term);
            }
        }
        self.brokers.insert(
            r.node_id,
            BrokerInfo {
                node_id: r.node_id,
                host: r.host.clone(),
                port: r.port,
                rack: r.rack.clone(),
                incarnation: r.incarnation,
                fenced: false,
                max_replicas: r.max_replicas,
            },
        );
        Ok(())
    }

    fn set_fenced(
        &mut self,
        node_id: i32,
        incarnation: u64,
        fenced: bool,
    ) -> Result<(), ApplyError> {
        let broker = self
            .brokers
            .get_mut(&node_id)
            .ok_or(ApplyError::UnknownBroker(node_id))?;
        if incarnation != broker.incarnation {
            return Err(ApplyError::StaleIncarnation {
                node_id,
                current: broker.incarnation,
                got: incarnation,
            });
        }
        broker.fenced = fenced;
        Ok(())
    }

    fn create_topic(&mut self, r: &CreateTopic, term: u64) -> Result<(), ApplyError> {
        let id = Uuid::from_slice(&r.topic_id).map_err(|_| ApplyError::InvalidTopicId)?;
        if self.topics.contains_key(&r.name) {
            return Err(ApplyError::TopicExists(r.name.clone()));
        }
        if id.is_nil() || self.topic_ids.contains_key(&id) {
            return Err(ApplyError::TopicIdInUse(id));
        }
        check_numbering(&r.name, &r.partitions, 0)?;
        for p in &r.partitions {
            check_leader_and_isr(&p.replicas, p.leader, &p.isr)?;
        }
        self.check_replica_capacity(&r.partitions)?;
        let topic = TopicInfo {
            name: r.name.clone(),
            id,
            partitions: r.partitions.iter().map(new_partition).collect(),
            configs: r.configs.clone(),
        };
        for p in &topic.partitions {
            self.record_change(LeadershipChange {
                topic: r.name.clone(),
                partition: p.partition,
                leader_epoch: p.leader_epoch,
                raft_term: term,
                previous_leader: -1,
                new_leader: p.leader,
                controller: r.controller,
                reason: LeaderChangeReason::TopicCreated as i32,
                isr: p.isr.clone(),
                eligible: p.isr.clone(),
                log_end_offset: -1,
                high_watermark: -1,
                timestamp_ms: r.timestamp_ms,
                committed_at_ms: 0,
                new_leader_log_end_offset: None,
                sequence: 0,
            });
        }
        self.topic_ids.insert(id, r.name.clone());
        self.topics.insert(r.name.clone(), Arc::new(topic));
        Ok(())
    }

    fn delete_topic(&mut self, r: &DeleteTopic) -> Result<(), ApplyError> {
        let topic = self
            .topics
            .remove(&r.name)
            .ok_or_else(|| ApplyError::UnknownTopic(r.name.clone()))?;
        self.topic_ids.remove(&topic.id);
        self.remember_deletion(topic.id);
        Ok(())
    }

    fn remember_deletion(&mut self, id: Uuid) {
        if self.deleted_topics.len() == DELETED_TOPICS_RETENTION {
            if let Some(oldest) = self.deleted_topics.pop_front() {
                self.deleted_ids.remove(&oldest);
            }
        }
        self.deleted_ids.insert(id);
        self.deleted_topics.push_back(id);
    }

    fn create_partitions(&mut self, r: &CreatePartitions) -> Result<(), ApplyError> {
        let topic = self
            .topic(&r.name)
            .ok_or_else(|| ApplyError::UnknownTopic(r.name.clone()))?;
        let existing = topic.partitions.len() as i32;
        check_numbering(&r.name, &r.partitions, existing)?;
        for p in &r.partitions {
            check_leader_and_isr(&p.replicas, p.leader, &p.isr)?;
        }
        self.check_replica_capacity(&r.partitions)?;
        self.topic_mut(&r.name)?
            .partitions
            .extend(r.partitions.iter().map(new_partition));
        Ok(())
    }

    fn alter_topic_config(&mut self, r: &AlterTopicConfig) -> Result<(), ApplyError> {
        let topic = self.topic_mut(&r.name)?;
        for key in &r.delete {
            topic.configs.remove(key);
        }
        topic
            .configs
            .extend(r.set.iter().map(|(k, v)| (k.clone(), v.clone())));
        Ok(())
    }

    fn allocate_producer_ids(&mut self, r: &AllocateProducerIds) -> Result<(), ApplyError> {
        if r.size <= 0 {
            return Err(ApplyError::InvalidBlockSize(r.size));
        }
        if r.start != self.next_producer_id {
            return Err(ApplyError::StaleProducerIdBlock {
                expected: self.next_producer_id,
                got: r.start,
            });
        }
        self.next_producer_id = r.start + r.size;
        Ok(())
    }

    fn record_change(&mut self, mut change: LeadershipChange) {
        change.sequence = self.next_history_sequence;
        self.next_history_sequence += 1;
        if self.history.len() >= self.history_retention() {
            self.history.pop_front();
        }
        self.history.push_back(change);
    }

    fn topic_mut(&mut self, name: &str) -> Result<&mut TopicInfo, ApplyError> {
        self.topics
            .get_mut(name)
            .map(Arc::make_mut)
            .ok_or_else(|| ApplyError::UnknownTopic(name.to_string()))
    }

    pub fn brokers(&self) -> impl Iterator<Item = &BrokerInfo> {
        self.brokers.values()
    }

    /// Registered brokers that are not fenced.
    pub fn live_brokers(&self) -> impl Iterator<Item = &BrokerInfo> {
        self.brokers.values().filter(|b| !b.fenced)
    }

    pub fn broker(&self, node_id: i32) -> Option<&BrokerInfo> {
        self.brokers.get(&node_id)
    }

    /// Whether `node_id` is registered and not fenced.
    pub fn is_unfenced(&self, node_id: i32) -> bool {
        self.broker(node_id).is_some_and(|b| !b.fenced)
    }

    pub fn topics(&self) -> impl Iterator<Item = &Arc<TopicInfo>> {
        self.topics.values()
    }

    pub fn topic(&self, name: &str) -> Option<&Arc<TopicInfo>> {
        self.topics.get(name)
    }

    pub fn topic_by_id(&self, id: &Uuid) -> Option<&Arc<TopicInfo>> {
        self.topic_ids
            .get(id)
            .and_then(|name| self.topics.get(name))
    }

    pub fn next_producer_id(&self) -> i64 {
        self.next_producer_id
    }

    /// Whether the topic with this id was deleted (within the last
    /// [`DELETED_TOPICS_RETENTION`] deletions).
    pub fn was_deleted(&self, id: &Uuid) -> bool {
        self.deleted_ids.contains(id)
    }

    /// The ids of the remembered deleted topics, oldest first.
    pub fn deleted_topics(&self) -> impl Iterator<Item = &Uuid> {
        self.deleted_topics.iter()
    }

    /// Leader changes, oldest first, at most [`Self::history_retention`].
    pub fn history(&self) -> impl DoubleEndedIterator<Item = &LeadershipChange> {
        self.history.iter()
    }

    /// How many leadership changes the history keeps.
    pub fn history_retention(&self) -> usize {
        self.history_retention.unwrap_or(HISTORY_RETENTION)
    }

    /// The retention a `SetHistoryRetention` set, if one did.
    pub(crate) fn configured_history_retention(&self) -> Option<usize> {
        self.history_retention
    }

    /// Restores the retention a snapshot recorded.
    pub(crate) fn restore_history_retention(&mut self, entries: Option<usize>) {
        self.history_retention = entries;
    }

    /// Rebuilds an image from its parts (snapshot restore).
    pub(crate) fn from_parts(
        cluster_id: Option<String>,
        brokers: Vec<BrokerInfo>,
        topics: Vec<TopicInfo>,
        next_producer_id: i64,
        history: Vec<LeadershipChange>,
        next_history_sequence: u64,
        deleted_topics: Vec<Uuid>,
    ) -> Self {
        let topic_ids = topics.iter().map(|t| (t.id, t.name.clone())).collect();
        let deleted_ids = deleted_topics.iter().copied().collect();
        Self {
            cluster_id,
            brokers: brokers.into_iter().map(|b| (b.node_id, b)).collect(),
            topics: topics
                .into_iter()
                .map(|t| (t.name.clone(), Arc::new(t)))
                .collect(),
            topic_ids,
            next_producer_id,
            history: history.into(),
            next_history_sequence,
            history_retention: None,
            deleted_topics: deleted_topics.into(),
            deleted_ids,
            group_configs: BTreeMap::new(),
        }
    }

    /// The sequence the next leadership change gets: how many changes
    /// have been applied, including those retention has dropped. It never
    /// decreases.
    pub fn next_history_sequence(&self) -> u64 {
        self.next_history_sequence
    }
}

fn check_numbering(
    topic: &str,
    partitions: &[PartitionAssignment],
    first: i32,
) -> Result<(), ApplyError> {
    for (i, p) in partitions.iter().enumerate() {
        let expected = first + i as i32;
        if p.partition != expected {
            return Err(ApplyError::PartitionNumbering {
                topic: topic.to_string(),
                expected,
                got: p.partition,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
