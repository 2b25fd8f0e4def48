//! How the background walks over every hosted replica (the heartbeat's
//! progress report, the flusher, the ISR check) tell that a walk would find
//! nothing new.
//!
//! Every hosted replica counts, on one counter its broker shares, each
//! change such a walk looks for: an append, a truncation, a move of the
//! high watermark, a change of role or leader epoch, a produce append
//! beginning; and, for a leader, a follower's fetch that moves it, an ISR
//! change applied or refused. A walk reads the count before it starts; if
//! it then left nothing pending (every report heard, every log durable,
//! nobody waiting), the next walk at the same count would find the same
//! and is skipped. A change made during a walk moves the count past what the
//! walk read, so the next walk runs. An idle broker with a thousand
//! replicas thus walks none of them ten times a second.

use std::sync::atomic::{AtomicU64, Ordering};

/// The broker-wide count of replica changes.
#[derive(Debug, Default)]
pub struct Activity(AtomicU64);

impl Activity {
    /// A replica changed in a way some walk looks for. Release, after the
    /// change: a walk that reads the new count sees the change.
    pub fn note(&self) {
        self.0.fetch_add(1, Ordering::Release);
    }

    /// The count, read before a walk begins.
    pub fn count(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}

/// What one kind of walk remembers: the count at which its last walk left
/// nothing pending, if it did.
#[derive(Debug)]
pub struct Walk(AtomicU64);

/// No count: the last walk left something pending, or there was none.
const UNSETTLED: u64 = u64::MAX;

impl Default for Walk {
    fn default() -> Self {
        Self(AtomicU64::new(UNSETTLED))
    }
}

impl Walk {
    /// Whether a walk at `count` would find what the last one found:
    /// nothing to do.
    pub fn may_skip(&self, count: u64) -> bool {
        count != UNSETTLED && self.0.load(Ordering::Acquire) == count
    }

    /// A walk that began at `count` ended; `settled` says it left nothing
    /// pending.
    pub fn walked(&self, count: u64, settled: bool) {
        self.0
            .store(if settled { count } else { UNSETTLED }, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_walk_is_skipped_only_after_a_settled_walk_and_no_change_since() {
        let activity = Activity::default();
        let walk = Walk::default();
        assert!(!walk.may_skip(activity.count()), "never walked");

        let began = activity.count();
        walk.walked(began, false);
        assert!(!walk.may_skip(activity.count()), "something was pending");

        let began = activity.count();
        walk.walked(began, true);
        assert!(walk.may_skip(activity.count()));

        activity.note();
        assert!(!walk.may_skip(activity.count()), "a replica changed");
    }

    #[test]
    fn a_change_during_a_walk_makes_the_next_one_run() {
        let activity = Activity::default();
        let walk = Walk::default();
        let began = activity.count();
        // The walk had passed this replica when it changed.
        activity.note();
        walk.walked(began, true);
        assert!(!walk.may_skip(activity.count()));
    }
}
