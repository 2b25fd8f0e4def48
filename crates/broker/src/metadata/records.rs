//! The records of the metadata log. Every change to cluster metadata is one
//! of these, applied in order by every node; prost encodes them.

use std::collections::BTreeMap;

/// One entry of the metadata log.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetadataRecord {
    #[prost(oneof = "Record", tags = "1, 2, 3, 4, 5, 6")]
    pub record: Option<Record>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Record {
    #[prost(message, tag = "1")]
    RegisterBroker(RegisterBroker),
    #[prost(message, tag = "2")]
    CreateTopic(CreateTopic),
    #[prost(message, tag = "3")]
    DeleteTopic(DeleteTopic),
    #[prost(message, tag = "4")]
    CreatePartitions(CreatePartitions),
    #[prost(message, tag = "5")]
    AlterTopicConfig(AlterTopicConfig),
    #[prost(message, tag = "6")]
    AllocateProducerIds(AllocateProducerIds),
}

impl From<Record> for MetadataRecord {
    fn from(record: Record) -> Self {
        Self {
            record: Some(record),
        }
    }
}

/// A broker announcing itself; a newer incarnation replaces the old entry.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RegisterBroker {
    #[prost(int32, tag = "1")]
    pub node_id: i32,
    #[prost(string, tag = "2")]
    pub host: String,
    #[prost(int32, tag = "3")]
    pub port: i32,
    #[prost(string, optional, tag = "4")]
    pub rack: Option<String>,
    #[prost(uint64, tag = "5")]
    pub incarnation: u64,
}

/// Where a partition's replicas live and who leads it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PartitionAssignment {
    #[prost(int32, tag = "1")]
    pub partition: i32,
    #[prost(int32, repeated, tag = "2")]
    pub replicas: Vec<i32>,
    #[prost(int32, tag = "3")]
    pub leader: i32,
    #[prost(int32, tag = "4")]
    pub leader_epoch: i32,
    #[prost(int32, repeated, tag = "5")]
    pub isr: Vec<i32>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CreateTopic {
    #[prost(string, tag = "1")]
    pub name: String,
    /// 16 bytes.
    #[prost(bytes = "vec", tag = "2")]
    pub topic_id: Vec<u8>,
    #[prost(message, repeated, tag = "3")]
    pub partitions: Vec<PartitionAssignment>,
    /// Topic config overrides.
    #[prost(btree_map = "string, string", tag = "4")]
    pub configs: BTreeMap<String, String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct DeleteTopic {
    #[prost(string, tag = "1")]
    pub name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CreatePartitions {
    #[prost(string, tag = "1")]
    pub name: String,
    /// The new partitions, numbered from the current count upwards.
    #[prost(message, repeated, tag = "2")]
    pub partitions: Vec<PartitionAssignment>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AlterTopicConfig {
    #[prost(string, tag = "1")]
    pub name: String,
    /// Overrides to set.
    #[prost(btree_map = "string, string", tag = "2")]
    pub set: BTreeMap<String, String>,
    /// Overrides to remove (back to the broker default).
    #[prost(string, repeated, tag = "3")]
    pub delete: Vec<String>,
}

/// Hands the block `[start, start + size)` of producer ids to a broker.
/// Applies only if `start` is the next unallocated id, so two brokers asking
/// at once cannot get the same block.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AllocateProducerIds {
    #[prost(int32, tag = "1")]
    pub node_id: i32,
    #[prost(int64, tag = "2")]
    pub start: i64,
    #[prost(int64, tag = "3")]
    pub size: i64,
}
