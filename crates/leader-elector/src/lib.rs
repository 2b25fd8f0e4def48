//! Keel's leader elector: what the active controller decides when a
//! partition leader fails, as pure functions of state, input and time, so
//! that tests drive them with a hand-moved clock.
//!
//! - [`liveness`] tracks each broker's session from its heartbeats and
//!   says which sessions lapsed.
//! - [`policy`] chooses a partition's next leader and ISR from the in-sync
//!   replicas, then the eligible leader replicas (KIP-966), and only with
//!   unclean election allowed from any live replica.
//! - [`plan`] turns lapsed sessions and leaderless partitions into one
//!   batch of records: fences, elections and ISR removals.
//! - [`schedule`] says when to look for leaderships to move back to their
//!   preferred replicas.
//!
//! Nothing here does IO or proposes anything: the controller commits the
//! batches through Raft.

pub mod liveness;
pub mod plan;
pub mod policy;
pub mod schedule;
