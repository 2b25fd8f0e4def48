//! When the active controller next looks for leaderships to move back to
//! their preferred replicas (Kafka's leader.imbalance.check.interval).
//!
//! A controller that has just taken over has not heard every broker yet,
//! and one of them may be stopping: moving a leadership back to it would
//! hand its clients to a broker about to go. So the first check of a term
//! waits at least one session after the controller took over, by which
//! time every live broker has heartbeated and said whether it is stopping.

/// The rebalance checks of one controller, in milliseconds of its clock.
#[derive(Debug, Clone)]
pub struct RebalanceSchedule {
    interval_ms: i64,
    session_timeout_ms: i64,
    next_ms: i64,
    /// The Raft term the schedule was last asked about.
    term: Option<u64>,
}

impl RebalanceSchedule {
    /// Checks every `interval_ms`, the first one `interval_ms` after
    /// `now_ms`.
    pub fn new(interval_ms: i64, session_timeout_ms: i64, now_ms: i64) -> Self {
        Self {
            interval_ms,
            session_timeout_ms,
            next_ms: now_ms.saturating_add(interval_ms),
            term: None,
        }
    }

    /// Whether a check is due at `now_ms` for a controller of `term`. The
    /// first call in a term it was not asked about defers the check to a
    /// session from now, if it was due sooner.
    pub fn due(&mut self, term: u64, now_ms: i64) -> bool {
        if self.term != Some(term) {
            self.term = Some(term);
            self.next_ms = self
                .next_ms
                .max(now_ms.saturating_add(self.session_timeout_ms));
        }
        now_ms >= self.next_ms
    }

    /// A check ran at `now_ms`; the next is an interval later.
    pub fn checked(&mut self, now_ms: i64) {
        self.next_ms = now_ms.saturating_add(self.interval_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_come_an_interval_apart() {
        let mut schedule = RebalanceSchedule::new(1_000, 500, 0);
        assert!(!schedule.due(1, 0));
        assert!(!schedule.due(1, 999));
        assert!(schedule.due(1, 1_000));
        schedule.checked(1_000);
        assert!(!schedule.due(1, 1_999));
        assert!(schedule.due(1, 2_000));
    }

    #[test]
    fn a_new_term_waits_a_session_before_its_first_check() {
        let mut schedule = RebalanceSchedule::new(1_000, 500, 0);
        assert!(!schedule.due(1, 10));
        // Taking over at 1,800, past when the check was due: it waits until
        // every broker had a session's time to say it is stopping.
        assert!(!schedule.due(2, 1_800));
        assert!(!schedule.due(2, 2_299));
        assert!(schedule.due(2, 2_300));
        // A due check that is later than a session is not brought forward.
        schedule.checked(2_300);
        assert!(!schedule.due(3, 2_400));
        assert!(!schedule.due(3, 3_299));
        assert!(schedule.due(3, 3_300));
    }
}
