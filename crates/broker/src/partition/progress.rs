//! The produce heartbeat of a partition this broker leads: whether the
//! writes waiting for it make progress. A produce request waits from the
//! moment it asks to append until its append returns; the partition has
//! stalled for as long as some request has been waiting and no append has
//! completed. An idle partition, with nobody waiting, never stalls.
//!
//! Lock-free, so a stalled log (whose lock an append holds) cannot hide
//! that it stalled.

use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};

#[derive(Debug, Default)]
pub struct Progress {
    /// Produce appends begun and not yet returned.
    waiting: AtomicU32,
    /// Since when nothing progressed: the last append's return, or the
    /// moment a request started waiting on a partition nobody waited on.
    since_ms: AtomicI64,
}

impl Progress {
    /// A produce append begins at `now_ms`; it ends when the guard drops,
    /// at the time its clock then gives.
    pub fn begin(&self, now_ms: i64, clock: fn() -> i64) -> Waiting<'_> {
        if self.waiting.fetch_add(1, Ordering::AcqRel) == 0 {
            self.since_ms.fetch_max(now_ms, Ordering::AcqRel);
        }
        Waiting {
            progress: self,
            clock,
        }
    }

    /// How long produce requests have waited without progress at
    /// `now_ms`, if any is waiting.
    pub fn stalled_for(&self, now_ms: i64) -> Option<i64> {
        (self.waiting.load(Ordering::Acquire) > 0)
            .then(|| (now_ms - self.since_ms.load(Ordering::Acquire)).max(0))
    }
}

/// A produce append in progress.
#[derive(Debug)]
pub struct Waiting<'a> {
    progress: &'a Progress,
    clock: fn() -> i64,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let now_ms = (self.clock)();
        self.progress.since_ms.fetch_max(now_ms, Ordering::AcqRel);
        self.progress.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicI64;

    use super::*;

    static NOW: AtomicI64 = AtomicI64::new(0);

    fn clock() -> i64 {
        NOW.load(Ordering::SeqCst)
    }

    #[test]
    fn only_waiting_without_progress_is_a_stall() {
        let progress = Progress::default();
        assert_eq!(progress.stalled_for(10_000), None, "idle is no stall");
        NOW.store(1_000, Ordering::SeqCst);
        let first = progress.begin(1_000, clock);
        assert_eq!(progress.stalled_for(1_500), Some(500));
        // A second request waiting changes nothing; an append returning
        // is progress.
        let second = progress.begin(1_600, clock);
        NOW.store(2_000, Ordering::SeqCst);
        drop(first);
        assert_eq!(progress.stalled_for(2_300), Some(300));
        drop(second);
        assert_eq!(progress.stalled_for(9_000), None);
        // Waiting again after a long idle time counts from then.
        let _third = progress.begin(9_000, clock);
        assert_eq!(progress.stalled_for(9_100), Some(100));
    }
}
