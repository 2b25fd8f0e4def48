//! The metadata image: what the cluster looks like after applying the
//! metadata log up to some point. `apply` is a pure function of the image
//! and a record, so every node that applies the same records in the same
//! order holds the same image, and a record that does not fit (an unknown
//! topic, a stale producer id block) is rejected identically everywhere.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use uuid::Uuid;

use super::records::{
    AllocateProducerIds, AlterTopicConfig, CreatePartitions, CreateTopic, DeleteTopic,
    MetadataRecord, PartitionAssignment, Record, RegisterBroker,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
    pub incarnation: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    pub partition: i32,
    pub replicas: Vec<i32>,
    pub leader: i32,
    pub leader_epoch: i32,
    pub isr: Vec<i32>,
}

impl From<&PartitionAssignment> for PartitionInfo {
    fn from(a: &PartitionAssignment) -> Self {
        Self {
            partition: a.partition,
            replicas: a.replicas.clone(),
            leader: a.leader,
            leader_epoch: a.leader_epoch,
            isr: a.isr.clone(),
        }
    }
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
    #[error("topic '{0}' already exists")]
    TopicExists(String),
    #[error("topic id {0} is already in use")]
    TopicIdInUse(Uuid),
    #[error("topic id must be 16 bytes")]
    InvalidTopicId,
    #[error("topic '{0}' does not exist")]
    UnknownTopic(String),
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
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataImage {
    brokers: BTreeMap<i32, BrokerInfo>,
    topics: BTreeMap<String, Arc<TopicInfo>>,
    topic_ids: HashMap<Uuid, String>,
    next_producer_id: i64,
}

impl MetadataImage {
    pub fn apply(&mut self, record: &MetadataRecord) -> Result<(), ApplyError> {
        match record.record.as_ref().ok_or(ApplyError::Empty)? {
            Record::RegisterBroker(r) => self.register_broker(r),
            Record::CreateTopic(r) => self.create_topic(r),
            Record::DeleteTopic(r) => self.delete_topic(r),
            Record::CreatePartitions(r) => self.create_partitions(r),
            Record::AlterTopicConfig(r) => self.alter_topic_config(r),
            Record::AllocateProducerIds(r) => self.allocate_producer_ids(r),
        }
    }

    fn register_broker(&mut self, r: &RegisterBroker) -> Result<(), ApplyError> {
        self.brokers.insert(
            r.node_id,
            BrokerInfo {
                node_id: r.node_id,
                host: r.host.clone(),
                port: r.port,
                rack: r.rack.clone(),
                incarnation: r.incarnation,
            },
        );
        Ok(())
    }

    fn create_topic(&mut self, r: &CreateTopic) -> Result<(), ApplyError> {
        let id = Uuid::from_slice(&r.topic_id).map_err(|_| ApplyError::InvalidTopicId)?;
        if self.topics.contains_key(&r.name) {
            return Err(ApplyError::TopicExists(r.name.clone()));
        }
        if id.is_nil() || self.topic_ids.contains_key(&id) {
            return Err(ApplyError::TopicIdInUse(id));
        }
        check_numbering(&r.name, &r.partitions, 0)?;
        let topic = TopicInfo {
            name: r.name.clone(),
            id,
            partitions: r.partitions.iter().map(PartitionInfo::from).collect(),
            configs: r.configs.clone(),
        };
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
        Ok(())
    }

    fn create_partitions(&mut self, r: &CreatePartitions) -> Result<(), ApplyError> {
        let topic = self.topic_mut(&r.name)?;
        let existing = topic.partitions.len() as i32;
        check_numbering(&r.name, &r.partitions, existing)?;
        topic
            .partitions
            .extend(r.partitions.iter().map(PartitionInfo::from));
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

    fn topic_mut(&mut self, name: &str) -> Result<&mut TopicInfo, ApplyError> {
        self.topics
            .get_mut(name)
            .map(Arc::make_mut)
            .ok_or_else(|| ApplyError::UnknownTopic(name.to_string()))
    }

    pub fn brokers(&self) -> impl Iterator<Item = &BrokerInfo> {
        self.brokers.values()
    }

    pub fn broker(&self, node_id: i32) -> Option<&BrokerInfo> {
        self.brokers.get(&node_id)
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
mod tests {
    use super::*;

    fn assignment(partition: i32) -> PartitionAssignment {
        PartitionAssignment {
            partition,
            replicas: vec![1],
            leader: 1,
            leader_epoch: 0,
            isr: vec![1],
        }
    }

    fn create(name: &str, id: u128, partitions: i32) -> MetadataRecord {
        Record::CreateTopic(CreateTopic {
            name: name.into(),
            topic_id: Uuid::from_u128(id).as_bytes().to_vec(),
            partitions: (0..partitions).map(assignment).collect(),
            configs: BTreeMap::new(),
        })
        .into()
    }

    #[test]
    fn topics_are_created_extended_altered_and_deleted() {
        let mut image = MetadataImage::default();
        image.apply(&create("orders", 1, 2)).unwrap();
        assert_eq!(image.topic("orders").unwrap().partitions.len(), 2);
        assert_eq!(
            image.topic_by_id(&Uuid::from_u128(1)).unwrap().name,
            "orders"
        );
        image
            .apply(
                &Record::CreatePartitions(CreatePartitions {
                    name: "orders".into(),
                    partitions: vec![assignment(2)],
                })
                .into(),
            )
            .unwrap();
        image
            .apply(
                &Record::AlterTopicConfig(AlterTopicConfig {
                    name: "orders".into(),
                    set: [("retention.ms".to_string(), "5".to_string())].into(),
                    delete: vec![],
                })
                .into(),
            )
            .unwrap();
        let topic = image.topic("orders").unwrap();
        assert_eq!(topic.partitions.len(), 3);
        assert_eq!(topic.configs["retention.ms"], "5");
        image
            .apply(
                &Record::DeleteTopic(DeleteTopic {
                    name: "orders".into(),
                })
                .into(),
            )
            .unwrap();
        assert!(image.topic("orders").is_none());
        assert!(image.topic_by_id(&Uuid::from_u128(1)).is_none());
    }

    #[test]
    fn invalid_records_are_rejected_without_changing_the_image() {
        let mut image = MetadataImage::default();
        image.apply(&create("a", 1, 1)).unwrap();
        let before = image.clone();
        assert_eq!(
            image.apply(&create("a", 2, 1)),
            Err(ApplyError::TopicExists("a".into()))
        );
        assert_eq!(
            image.apply(&create("b", 1, 1)),
            Err(ApplyError::TopicIdInUse(Uuid::from_u128(1)))
        );
        assert!(matches!(
            image.apply(
                &Record::CreatePartitions(CreatePartitions {
                    name: "a".into(),
                    partitions: vec![assignment(5)],
                })
                .into()
            ),
            Err(ApplyError::PartitionNumbering { expected: 1, .. })
        ));
        assert_eq!(
            image.apply(&Record::DeleteTopic(DeleteTopic { name: "zz".into() }).into()),
            Err(ApplyError::UnknownTopic("zz".into()))
        );
        assert_eq!(
            image.apply(&MetadataRecord { record: None }),
            Err(ApplyError::Empty)
        );
        assert_eq!(image, before);
    }

    #[test]
    fn producer_id_blocks_never_overlap() {
        let mut image = MetadataImage::default();
        let block = |start| -> MetadataRecord {
            Record::AllocateProducerIds(AllocateProducerIds {
                node_id: 1,
                start,
                size: 1000,
            })
            .into()
        };
        image.apply(&block(0)).unwrap();
        assert_eq!(image.next_producer_id(), 1000);
        assert!(matches!(
            image.apply(&block(0)),
            Err(ApplyError::StaleProducerIdBlock { expected: 1000, .. })
        ));
        image.apply(&block(1000)).unwrap();
        assert_eq!(image.next_producer_id(), 2000);
    }

    #[test]
    fn applying_the_same_records_gives_the_same_image() {
        let records = vec![
            Record::RegisterBroker(RegisterBroker {
                node_id: 1,
                host: "h".into(),
                port: 1,
                rack: None,
                incarnation: 1,
            })
            .into(),
            create("x", 9, 3),
            create("x", 10, 3),
            Record::DeleteTopic(DeleteTopic { name: "x".into() }).into(),
            create("x", 11, 1),
        ];
        let replay = |records: &[MetadataRecord]| {
            let mut image = MetadataImage::default();
            for r in records {
                let _ = image.apply(r);
            }
            image
        };
        assert_eq!(replay(&records), replay(&records));
        assert_eq!(replay(&records).topic("x").unwrap().id, Uuid::from_u128(11));
    }
}
