//! When a quorum last confirmed that this node leads.
//!
//! A read barrier on the leader sends a round of Raft heartbeats and is
//! answered once a quorum acknowledges one sent after it was asked: no
//! leader of a later term can have been elected before that round began.
//! The leader remembers the latest such round, per term, so that a caller
//! content with a confirmation a little older than its call (a controller
//! renewing broker leases many times a second) can share one round with
//! others.
//!
//! A confirmation counts only in the term it was recorded in, and only a
//! leader that has applied an entry of its term answers from one (see
//! `Node::read_barrier`): it then knows every entry committed before its
//! term, so its commit index is as good as the one a new round would
//! return.
//!
//! Pure: time is passed in.

use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Confirmation {
    /// The term and the start of the latest round a quorum answered.
    latest: Option<(u64, Instant)>,
}

impl Confirmation {
    /// A quorum answered, in `term`, a round begun no earlier than
    /// `began`.
    pub(super) fn confirmed(&mut self, term: u64, began: Instant) {
        if self.latest.is_none_or(|latest| (term, began) > latest) {
            self.latest = Some((term, began));
        }
    }

    /// The start of the latest confirmed round if it was in `term` and
    /// began at most `max_age` before `now`.
    pub(super) fn since(&self, term: u64, now: Instant, max_age: Duration) -> Option<Instant> {
        let (confirmed_term, began) = self.latest?;
        (confirmed_term == term && now.saturating_duration_since(began) <= max_age).then_some(began)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX_AGE: Duration = Duration::from_millis(50);

    #[test]
    fn a_recent_confirmation_in_the_same_term_stands_in_for_a_round() {
        let start = Instant::now();
        let mut confirmation = Confirmation::default();
        assert_eq!(
            confirmation.since(3, start, MAX_AGE),
            None,
            "never confirmed"
        );

        confirmation.confirmed(3, start);
        let soon = start + Duration::from_millis(30);
        assert_eq!(confirmation.since(3, soon, MAX_AGE), Some(start));
        assert_eq!(
            confirmation.since(3, start + MAX_AGE + Duration::from_millis(1), MAX_AGE),
            None,
            "too old"
        );
        assert_eq!(confirmation.since(4, soon, MAX_AGE), None, "another term");
        assert_eq!(
            confirmation.since(3, soon, Duration::ZERO),
            None,
            "a caller that wants a round begun after its call gets one"
        );
    }

    #[test]
    fn a_late_answer_to_an_older_round_does_not_age_the_confirmation() {
        let start = Instant::now();
        let later = start + Duration::from_millis(40);
        let mut confirmation = Confirmation::default();
        confirmation.confirmed(3, later);
        confirmation.confirmed(3, start);
        assert_eq!(confirmation.since(3, later, MAX_AGE), Some(later));

        confirmation.confirmed(4, start);
        assert_eq!(confirmation.since(3, later, MAX_AGE), None);
        assert_eq!(confirmation.since(4, later, MAX_AGE), Some(start));
    }
}
