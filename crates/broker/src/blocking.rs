//! Where work that may wait on a disk runs.
//!
//! The async workers never wait on a disk or on a lock that is held across
//! disk IO: a slow fsync, a stalled write or a partition's log lock held by
//! either would otherwise freeze every connection, timer and heartbeat on
//! that worker. Work that reads or writes a partition log, takes its lock,
//! or takes the group coordinator's lock (held while it appends to
//! `__consumer_offsets`) goes through [`run`], or through `spawn_blocking`
//! where it can own its data. The Raft ready loop has a thread of its own.
//!
//! [`run`] hands the worker's other tasks to another thread for as long as
//! the work lasts (tokio's `block_in_place`), so it costs a thread hand-off
//! only when called, and nothing is copied to move the work.

/// Runs `work`, which may block on a disk or a lock, without stalling the
/// other tasks of a multi-threaded runtime. On a current-thread runtime
/// (unit tests) or outside one, it simply runs `work`.
pub fn run<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}
