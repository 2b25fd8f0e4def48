//! Cluster metadata: the records that change it, the image they build, and
//! the durable log that orders them.

pub mod image;
pub mod records;
pub mod store;

pub use image::{ApplyError, BrokerInfo, MetadataImage, PartitionInfo, TopicInfo};
pub use records::{MetadataRecord, PartitionAssignment, Record};
pub use store::{MetadataStore, StoreError};
