//! Keel's cluster metadata.
pub mod core;
pub mod image;
mod logger;
pub mod records;
pub mod snapshot;
pub mod storage;

pub use image::{ApplyError, BrokerInfo, MetadataImage, PartitionInfo, TopicInfo};
pub use records::{MetadataRecord, PartitionAssignment, Record};
