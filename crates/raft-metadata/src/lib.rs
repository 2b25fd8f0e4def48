//! Keel's cluster metadata: a Raft group (TiKV's raft-rs) whose log carries
//! [`MetadataRecord`]s, applied in order to a [`MetadataImage`] on every
//! node. Controllers are the group's voters; every other broker joins as a
//! learner, so all of them hold the same image and answer Metadata alike.
//!
//! - [`image`]: the state machine, a pure function of records and terms.
//! - [`storage`]: the durable Raft log and snapshot files behind raft-rs's
//!   `Storage`.
//! - [`core`]: raft-rs's ready loop over storage and state machine, without
//!   IO, so tests can run many nodes deterministically.
//! - [`node`]: the runtime: a tokio task per node, proposals with request
//!   ids, forwarding to the leader, learners joining, and [`transport`]
//!   over TCP.
//! - [`ids`]: node ids as Raft ids (raft-rs reserves 0).
//! - [`quorum`]: the quorum as DescribeQuorum reports it.
//! - [`heartbeat`]: broker heartbeats to the active controller over the
//!   same transport.

pub mod core;
pub mod heartbeat;
pub mod ids;
pub mod image;
mod logger;
pub mod node;
mod proposals;
pub mod quorum;
pub mod records;
pub mod snapshot;
pub mod storage;
pub mod testing;
mod transport;

pub use image::{ApplyError, BrokerInfo, MetadataImage, PartitionInfo, TopicInfo};
pub use node::{MetadataHandle, NodeConfig, NodeError, NodeStatus, ProposalError};
pub use records::{MetadataRecord, PartitionAssignment, Record};
pub use transport::PeerConnection;
