//! What the metadata quorum's leader knows of its replicas, as Kafka's
//! DescribeQuorum reports it: each voter's and observer's (learner's) log
//! end offset, when the leader last heard from it and when it last saw it
//! caught up.
//!
//! Offsets are Kafka's view of the Raft log: the entry at Raft index `i`
//! is offset `i - 1`, so a replica whose log ends at index `i` has log end
//! offset `i`, and the high watermark is the commit index.
//!
//! [`ReplicaContacts`] is kept by the leader and starts afresh when it
//! becomes leader: what it heard in an earlier term says nothing about
//! the replicas now.

use std::collections::HashMap;

/// The quorum as its leader describes it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct QuorumDescription {
    #[prost(uint64, tag = "1")]
    pub leader_id: u64,
    /// The Raft term (Kafka's leader epoch of the metadata log).
    #[prost(uint64, tag = "2")]
    pub term: u64,
    #[prost(uint64, tag = "3")]
    pub high_watermark: u64,
    #[prost(message, repeated, tag = "4")]
    pub voters: Vec<ReplicaDescription>,
    #[prost(message, repeated, tag = "5")]
    pub observers: Vec<ReplicaDescription>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ReplicaDescription {
    #[prost(uint64, tag = "1")]
    pub replica_id: u64,
    #[prost(uint64, tag = "2")]
    pub log_end_offset: u64,
    /// Milliseconds since the epoch, -1 if the leader has not heard from
    /// it in this term.
    #[prost(int64, tag = "3")]
    pub last_fetch_ms: i64,
    /// Milliseconds since the epoch, -1 if not seen caught up in this term.
    #[prost(int64, tag = "4")]
    pub last_caught_up_ms: i64,
}

/// When the leader last heard from each replica, and last knew it caught
/// up with the leader's log.
#[derive(Debug, Default)]
pub(crate) struct ReplicaContacts {
    by_replica: HashMap<u64, Contact>,
}

#[derive(Debug, Clone, Copy)]
struct Contact {
    last_fetch_ms: i64,
    last_caught_up_ms: i64,
    /// The leader's last index when it last heard from the replica.
    leader_last_index_then: u64,
}

impl ReplicaContacts {
    pub(crate) fn clear(&mut self) {
        self.by_replica.clear();
    }

    /// The replica answered an append or a heartbeat at `now_ms`, and the
    /// leader knows its log to match up to `matched`. A replica is caught
    /// up when it holds everything the leader has; under a steady stream
    /// of appends it rarely does at the very moment it answers, so, as
    /// Kafka does, it also counts as caught up as of the previous answer
    /// once it holds everything the leader had then.
    pub(crate) fn heard(
        &mut self,
        replica: u64,
        matched: u64,
        leader_last_index: u64,
        now_ms: i64,
    ) {
        let previous = self.by_replica.get(&replica).copied();
        let mut last_caught_up_ms = previous.map_or(-1, |c| c.last_caught_up_ms);
        if matched >= leader_last_index {
            last_caught_up_ms = now_ms;
        } else if let Some(previous) = previous {
            if matched >= previous.leader_last_index_then {
                last_caught_up_ms = last_caught_up_ms.max(previous.last_fetch_ms);
            }
        }
        self.by_replica.insert(
            replica,
            Contact {
                last_fetch_ms: now_ms,
                last_caught_up_ms,
                leader_last_index_then: leader_last_index,
            },
        );
    }

    /// The replica as the leader reports it; the leader itself is always
    /// current.
    pub(crate) fn describe(
        &self,
        replica: u64,
        leader: u64,
        log_end_offset: u64,
        now_ms: i64,
    ) -> ReplicaDescription {
        let (last_fetch_ms, last_caught_up_ms) = if replica == leader {
            (now_ms, now_ms)
        } else {
            self.by_replica
                .get(&replica)
                .map_or((-1, -1), |c| (c.last_fetch_ms, c.last_caught_up_ms))
        };
        ReplicaDescription {
            replica_id: replica,
            log_end_offset,
            last_fetch_ms,
            last_caught_up_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_never_heard_from_has_no_times() {
        let contacts = ReplicaContacts::default();
        let described = contacts.describe(2, 1, 0, 5_000);
        assert_eq!(
            (described.last_fetch_ms, described.last_caught_up_ms),
            (-1, -1)
        );
        let leader = contacts.describe(1, 1, 40, 5_000);
        assert_eq!(
            (leader.last_fetch_ms, leader.last_caught_up_ms),
            (5_000, 5_000)
        );
    }

    #[test]
    fn a_replica_holding_the_whole_log_is_caught_up_when_it_answers() {
        let mut contacts = ReplicaContacts::default();
        contacts.heard(2, 10, 10, 1_000);
        let described = contacts.describe(2, 1, 10, 1_500);
        assert_eq!(
            (described.last_fetch_ms, described.last_caught_up_ms),
            (1_000, 1_000)
        );
    }

    #[test]
    fn under_steady_appends_a_replica_is_caught_up_as_of_its_previous_answer() {
        let mut contacts = ReplicaContacts::default();
        contacts.heard(2, 8, 10, 1_000);
        assert_eq!(contacts.describe(2, 1, 8, 1_000).last_caught_up_ms, -1);
        // It now holds what the leader had at its previous answer.
        contacts.heard(2, 10, 14, 1_100);
        let described = contacts.describe(2, 1, 10, 1_100);
        assert_eq!(
            (described.last_fetch_ms, described.last_caught_up_ms),
            (1_100, 1_000)
        );
    }

    #[test]
    fn a_lagging_replica_keeps_its_last_caught_up_time() {
        let mut contacts = ReplicaContacts::default();
        contacts.heard(2, 10, 10, 1_000);
        contacts.heard(2, 10, 50, 2_000);
        contacts.heard(2, 12, 90, 3_000);
        let described = contacts.describe(2, 1, 12, 3_000);
        assert_eq!(
            (described.last_fetch_ms, described.last_caught_up_ms),
            (3_000, 1_000)
        );
        contacts.clear();
        assert_eq!(contacts.describe(2, 1, 12, 3_000).last_fetch_ms, -1);
    }
}
