//! Keel's broker: the Kafka protocol front, the partitions it hosts and the
//! metadata they are described by.
//!
//! - [`server`] owns the listener and the broker's lifecycle; [`connection`]
//!   serves one client, one request at a time but for produce requests'
//!   waits for their followers, which overlap.
//! - [`api`] has one module per Kafka API: decode, handle, encode, with the
//!   codecs of the `kafka-protocol` crate.
//! - The cluster metadata lives in the Raft group of `keel-raft-metadata`;
//!   [`replicas`] keeps the hosted partition logs in line with its image.
//! - [`replication`] is follower fetching, the leader's view of its
//!   followers and ISR changes; [`partition`] holds a replica's log and role.
//! - [`heartbeat`] keeps this broker's session at the active controller and
//!   its [`lease`] on its leaderships; [`controller`] is the active
//!   controller's side: sessions, fencing and automatic leader election;
//!   [`history`] serves the leadership history and is `keel history`.
//! - [`group`] is the group coordinator: consumer groups and committed
//!   offsets, kept in `__consumer_offsets`.
//! - [`error`] is the one place internal errors become Kafka error codes.
//! - [`blocking`] is where work that may wait on a disk runs.
//! - [`lost_peers`] are brokers seen to die that the controller has not
//!   judged yet: Metadata names them leader of nothing.

pub mod api;
pub mod blocking;
pub mod broker;
pub mod config;
pub mod connection;
pub mod controller;
pub mod error;
pub mod fetch_session;
pub mod group;
pub mod group_config;
pub mod heartbeat;
pub mod history;
pub mod lease;
pub mod log_cleaner;
pub mod lost_peers;
pub mod metrics;
pub mod open_files;
pub mod partition;
pub mod replicas;
pub mod replication;
pub mod response;
pub mod server;
#[cfg(test)]
mod test_image;
pub mod topic_config;
