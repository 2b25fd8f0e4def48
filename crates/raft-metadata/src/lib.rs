//! Keel's cluster metadata.
pub mod image;
pub mod records;
pub mod snapshot;

pub use image::{ApplyError, BrokerInfo, MetadataImage, PartitionInfo, TopicInfo};
pub use records::{MetadataRecord, PartitionAssignment, Record};
pub mod storage;
