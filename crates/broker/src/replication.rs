//! Replication, the Kafka way: followers fetch from the partition leader,
//! the leader tracks their progress, moves the high watermark and asks the
//! controller to change the ISR.
//!
//! - [`leader`] is the leader's view of its followers, a pure state
//!   machine with time passed in.
//! - [`fetcher`] runs this broker's follower fetches, one task per leader,
//!   over [`client`] connections, each in an incremental fetch [`session`].
//! - [`isr`] turns the leaders' ISR proposals into committed metadata.
//! - [`leadership`] moves leadership by hand (ElectLeaders, operators).
//! - [`succession`] holds a new leader's writes until no earlier leader
//!   can accept any.
//!
//! The partition's role (leader or follower at a leader epoch) and the
//! appends and truncations each role allows live with its log, in
//! `partition`.

pub mod client;
pub mod fetcher;
pub mod isr;
pub mod leader;
pub mod leadership;
pub mod session;
pub mod succession;
