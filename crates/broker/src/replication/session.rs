//! A follower's side of an incremental fetch session (KIP-227) with one
//! leader: what the leader's session holds of each partition, so that a
//! request names only the partitions whose fetch changed and forgets
//! those no longer followed from that leader.
//!
//! The first request is a full fetch asking for a session. Once the leader
//! answered with one, each request is incremental, at the next epoch.
//! Any error, or an answer that did not arrive, starts over with a full
//! fetch: the leader may have evicted the session, restarted, or taken a
//! request whose answer was lost, and only a full fetch resets what both
//! sides hold. A leader answers an incremental fetch with the partitions
//! that have something new only; the others have nothing to apply.

use std::collections::HashMap;

use uuid::Uuid;

use crate::fetch_session::{FetchParams, INITIAL_EPOCH, next_epoch};

/// A partition as the follower names it in requests.
pub type Key = (Uuid, i32);

#[derive(Debug, Default)]
pub struct FollowerSession {
    /// The leader's session id and the epoch of the next request, once the
    /// leader gave one.
    session: Option<(i32, i32)>,
    /// What the leader's session holds.
    held: HashMap<Key, FetchParams>,
}

/// One request of the session, and what the leader's session holds once
/// it is answered.
#[derive(Debug)]
pub struct NextRequest {
    pub session_id: i32,
    pub epoch: i32,
    /// The partitions to name: all of them in a full fetch, the changed
    /// ones in an incremental one.
    pub partitions: Vec<(Key, FetchParams)>,
    pub forgotten: Vec<Key>,
    holds: HashMap<Key, FetchParams>,
}

impl FollowerSession {
    /// The request that fetches `wanted`, every partition followed from
    /// the leader with what to ask of it.
    pub fn next_request(&self, wanted: Vec<(Key, FetchParams)>) -> NextRequest {
        let holds: HashMap<Key, FetchParams> = wanted.iter().copied().collect();
        let Some((session_id, epoch)) = self.session else {
            return NextRequest {
                session_id: 0,
                epoch: INITIAL_EPOCH,
                partitions: wanted,
                forgotten: Vec::new(),
                holds,
            };
        };
        let partitions = wanted
            .into_iter()
            .filter(|(key, params)| self.held.get(key) != Some(params))
            .collect();
        let forgotten = self
            .held
            .keys()
            .filter(|key| !holds.contains_key(key))
            .copied()
            .collect();
        NextRequest {
            session_id,
            epoch,
            partitions,
            forgotten,
            holds,
        }
    }

    /// The leader answered `request` without a top-level error, giving
    /// `session_id` (0: no session).
    pub fn answered(&mut self, request: NextRequest, session_id: i32) {
        self.session = if request.epoch == INITIAL_EPOCH {
            (session_id != 0).then_some((session_id, next_epoch(INITIAL_EPOCH)))
        } else {
            Some((request.session_id, next_epoch(request.epoch)))
        };
        self.held = request.holds;
        if self.session.is_none() {
            self.held.clear();
        }
    }

    /// The request failed, or the leader refused it: the next one is full.
    pub fn reset(&mut self) {
        self.session = None;
        self.held.clear();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn wanted(offsets: &[(i32, i64)]) -> Vec<(Key, FetchParams)> {
        offsets
            .iter()
            .map(|&(partition, fetch_offset)| {
                let params = FetchParams {
                    fetch_offset,
                    last_fetched_epoch: 0,
                    current_leader_epoch: 1,
                    log_start_offset: 0,
                    partition_max_bytes: 1024,
                };
                ((Uuid::nil(), partition), params)
            })
            .collect()
    }

    fn named(request: &NextRequest) -> Vec<(i32, i64)> {
        let mut named: Vec<_> = request
            .partitions
            .iter()
            .map(|((_, p), params)| (*p, params.fetch_offset))
            .collect();
        named.sort_unstable();
        named
    }

    #[test]
    fn requests_name_only_what_changed_once_the_leader_gave_a_session() {
        let mut session = FollowerSession::default();
        let full = session.next_request(wanted(&[(0, 0), (1, 0)]));
        assert_eq!((full.session_id, full.epoch), (0, 0));
        assert_eq!(named(&full), [(0, 0), (1, 0)]);
        session.answered(full, 42);

        let nothing_new = session.next_request(wanted(&[(0, 0), (1, 0)]));
        assert_eq!((nothing_new.session_id, nothing_new.epoch), (42, 1));
        assert!(nothing_new.partitions.is_empty() && nothing_new.forgotten.is_empty());
        session.answered(nothing_new, 42);

        // Partition 1 moved on, 0 is no longer followed, 2 is new.
        let changed = session.next_request(wanted(&[(1, 7), (2, 0)]));
        assert_eq!(changed.epoch, 2);
        assert_eq!(named(&changed), [(1, 7), (2, 0)]);
        assert_eq!(changed.forgotten, [(Uuid::nil(), 0)]);
        session.answered(changed, 42);
        let next = session.next_request(wanted(&[(1, 7), (2, 0)]));
        assert_eq!(next.epoch, 3);
        assert!(next.partitions.is_empty() && next.forgotten.is_empty());
    }

    #[test]
    fn a_failure_or_a_leader_without_room_means_a_full_fetch_next() {
        let mut session = FollowerSession::default();
        let full = session.next_request(wanted(&[(0, 0)]));
        session.answered(full, 0);
        let again = session.next_request(wanted(&[(0, 0)]));
        assert_eq!((again.session_id, again.epoch), (0, 0));
        assert_eq!(named(&again), [(0, 0)]);
        session.answered(again, 9);

        let incremental = session.next_request(wanted(&[(0, 3)]));
        assert_eq!(incremental.epoch, 1);
        session.reset();
        let full = session.next_request(wanted(&[(0, 3)]));
        assert_eq!((full.session_id, full.epoch), (0, 0));
        assert_eq!(named(&full), [(0, 3)]);
    }
}
