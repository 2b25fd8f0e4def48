//! Succession: a new leader accepts writes only once no earlier leader can.
//!
//! A leader moved away while alive (controlled shutdown, a preferred
//! replica rebalance, a stall, an operator's move) goes on accepting
//! writes until it applies the change. Were its successor to accept writes
//! meanwhile, both would acknowledge, and what the old one acknowledged
//! would be truncated away when it follows. So a new leader takes no write
//! until every live replica has fetched from it in its epoch (a replica
//! fetches from a leader only once it has applied that leadership, and
//! then it leads no more), or until any replica that has not must have
//! lost its lease: the controller renews no broker's lease while that
//! broker is behind the leadership changes committed (see
//! `HeartbeatStatus::Behind`), so a broker that has not applied this change
//! holds a lease no longer than one lease past the commit, and this leader
//! applied the change after the commit.
//!
//! Replicas that are fenced hold no lease already, with one exception the
//! controller accounts for: a leader whose process it saw gone is fenced
//! before its lease ran out, and the change then carries what was left of
//! that lease; the new leader takes no write before that long after it
//! applied the change, whoever has fetched. A partition's first leader
//! (leader epoch 0) has no predecessor.
//!
//! Pure: time is passed in.

use std::collections::BTreeSet;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Succession {
    /// Live replicas that have not fetched in this leader's epoch yet.
    awaiting: BTreeSet<i32>,
    /// From when any of them has surely lost its lease.
    until_ms: i64,
    /// Before this, no write at all: the previous leader, fenced, may
    /// still hold a lease.
    not_before_ms: i64,
}

impl Succession {
    /// The succession of a leader that took over at `now_ms`, waiting for
    /// `awaiting` (the other live replicas) for at most `wait_ms`, and in
    /// any case for `predecessor_lease_ms`.
    pub fn new(
        awaiting: impl IntoIterator<Item = i32>,
        now_ms: i64,
        wait_ms: i64,
        predecessor_lease_ms: i64,
    ) -> Self {
        Self {
            awaiting: awaiting.into_iter().collect(),
            until_ms: now_ms.saturating_add(wait_ms),
            not_before_ms: now_ms.saturating_add(predecessor_lease_ms.max(0)),
        }
    }

    /// `replica` fetched in this leader's epoch: it no longer leads.
    /// Returns whether that completed the succession.
    pub fn fetched(&mut self, replica: i32) -> bool {
        self.awaiting.remove(&replica) && self.awaiting.is_empty()
    }

    /// Stops waiting for replicas `current` does not wait for (fenced
    /// since this succession began).
    pub fn retain_awaited(&mut self, current: &Succession) {
        self.awaiting.retain(|r| current.awaiting.contains(r));
    }

    /// How much longer writes must wait at `now_ms`, or `None` when they
    /// may be accepted.
    pub fn wait_ms(&self, now_ms: i64) -> Option<i64> {
        let awaited =
            (!self.awaiting.is_empty() && now_ms < self.until_ms).then_some(self.until_ms);
        let leased = (now_ms < self.not_before_ms).then_some(self.not_before_ms);
        awaited.max(leased).map(|until| until - now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_wait_until_every_live_replica_has_fetched() {
        let mut succession = Succession::new([2, 3], 1_000, 500, 0);
        assert_eq!(succession.wait_ms(1_000), Some(500));
        assert!(!succession.fetched(2));
        assert_eq!(succession.wait_ms(1_100), Some(400));
        assert!(
            !succession.fetched(2),
            "the same replica twice is no progress"
        );
        assert!(succession.fetched(3));
        assert_eq!(succession.wait_ms(1_100), None);
    }

    #[test]
    fn writes_wait_no_longer_than_a_lease_past_the_change() {
        let succession = Succession::new([2], 1_000, 500, 0);
        assert_eq!(succession.wait_ms(1_499), Some(1));
        assert_eq!(succession.wait_ms(1_500), None);
    }

    #[test]
    fn a_replica_fenced_meanwhile_is_waited_for_no_more() {
        let mut succession = Succession::new([2, 3], 1_000, 500, 0);
        succession.fetched(2);
        succession.retain_awaited(&Succession::new([2], 1_100, 500, 0));
        assert_eq!(succession.wait_ms(1_100), None);
    }

    #[test]
    fn a_fenced_predecessor_s_lease_is_waited_out_whoever_fetched() {
        let mut succession = Succession::new([2], 1_000, 500, 300);
        assert!(succession.fetched(2));
        assert_eq!(succession.wait_ms(1_100), Some(200));
        assert_eq!(succession.wait_ms(1_300), None);
        let alone = Succession::new([], 1_000, 500, 300);
        assert_eq!(alone.wait_ms(1_000), Some(300));
        // The longer of the two waits.
        let both = Succession::new([3], 1_000, 500, 300);
        assert_eq!(both.wait_ms(1_000), Some(500));
    }

    #[test]
    fn nothing_to_wait_for_without_live_replicas() {
        assert_eq!(Succession::new([], 1_000, 500, 0).wait_ms(1_000), None);
        assert_eq!(Succession::default().wait_ms(0), None);
    }
}
