//! Keel's broker: the Kafka protocol front, the partitions it hosts and the
//! metadata they are described by.
//!
//! - [`server`] owns the listener and the broker's lifecycle; [`connection`]
//!   serves one client, one request at a time.
//! - [`api`] has one module per Kafka API: decode, handle, encode, with the
//!   codecs of the `kafka-protocol` crate.
//! - [`metadata`] holds the records that change the cluster, the image they
//!   build and their durable log; [`replicas`] keeps the hosted partition
//!   logs in line with the image.
//! - [`error`] is the one place internal errors become Kafka error codes.

pub mod api;
pub mod broker;
pub mod config;
pub mod connection;
pub mod error;
pub mod metadata;
pub mod partition;
pub mod replicas;
pub mod server;
pub mod topic_config;
