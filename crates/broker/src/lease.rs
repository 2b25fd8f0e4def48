//! The broker's lease on its leaderships.
//!
//! Each heartbeat the controller answers `Renewed` extends the lease to the
//! moment the heartbeat was sent plus the lease duration (less how long
//! before it arrived the controller was last confirmed), which is shorter
//! than the controller's session timeout: by the time the controller could
//! fence this broker and elect a successor, the lease has lapsed and the
//! broker has stopped taking writes and serving its followers as leader.
//! A deposed leader, paused or cut off, therefore never acknowledges a
//! write once its successor may have accepted one.
//!
//! Time is the process's monotonic clock, passed in, so tests move it by
//! hand.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use tokio::sync::Notify;

/// Until when the broker may act as a leader. Lock-free: every produce
/// checks it.
#[derive(Debug)]
pub struct Lease {
    origin: Instant,
    duration: Duration,
    /// Nanoseconds after `origin` at which the lease lapses; 0 = none yet.
    until_nanos: AtomicU64,
    renewed: Notify,
}

impl Lease {
    pub fn new(duration: Duration, origin: Instant) -> Self {
        Self {
            origin,
            duration,
            until_nanos: AtomicU64::new(0),
            renewed: Notify::new(),
        }
    }

    /// A heartbeat was answered `Renewed`: the lease runs from `since`, the
    /// moment it was sent or, if the controller's leadership was confirmed
    /// before the heartbeat reached it, that much earlier. A late answer to
    /// an older heartbeat never shortens the lease.
    pub fn renew(&self, since: Instant) {
        let until = self.nanos(since + self.duration);
        self.until_nanos.fetch_max(until, Ordering::AcqRel);
        self.renewed.notify_waiters();
    }

    /// Resolves once the lease holds.
    pub async fn held(&self) {
        self.wait_until(|| self.holds(Instant::now())).await;
    }

    /// Resolves once the lease was granted at least once, whether or not
    /// it still holds.
    pub async fn granted(&self) {
        self.wait_until(|| self.until_nanos.load(Ordering::Acquire) > 0)
            .await;
    }

    /// How long ago the lease lapsed, if it does not hold at `now` (a lease
    /// never granted lapsed at the origin).
    pub fn lapsed_for(&self, now: Instant) -> Option<Duration> {
        let until = self.until_nanos.load(Ordering::Acquire);
        (self.nanos(now) >= until).then(|| Duration::from_nanos(self.nanos(now) - until))
    }

    /// Resolves once the lease has not held for at least `age`.
    pub async fn lapsed_for_at_least(&self, age: Duration) {
        loop {
            let now = Instant::now();
            let wait = match self.lapsed_for(now) {
                Some(lapsed) if lapsed >= age => return,
                Some(lapsed) => age - lapsed,
                None => {
                    let until = self.until_nanos.load(Ordering::Acquire);
                    Duration::from_nanos(until.saturating_sub(self.nanos(now))) + age
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    async fn wait_until(&self, condition: impl Fn() -> bool) {
        loop {
            let renewed = self.renewed.notified();
            if condition() {
                return;
            }
            renewed.await;
        }
    }

    /// Whether the lease holds at `now`.
    pub fn holds(&self, now: Instant) -> bool {
        self.nanos(now) < self.until_nanos.load(Ordering::Acquire)
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.origin).as_nanos())
            .unwrap_or(u64::MAX)
            .max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_runs_from_the_heartbeat_s_sending_and_lapses() {
        let origin = Instant::now();
        let lease = Lease::new(Duration::from_millis(400), origin);
        let at = |ms| origin + Duration::from_millis(ms);
        assert!(!lease.holds(at(0)), "no lease before the first answer");
        lease.renew(at(100));
        assert!(lease.holds(at(499)));
        assert!(!lease.holds(at(500)));
        // An answer to an older heartbeat arriving late shortens nothing.
        lease.renew(at(300));
        lease.renew(at(200));
        assert!(lease.holds(at(699)));
        assert!(!lease.holds(at(700)));
    }

    #[test]
    fn a_lapsed_lease_tells_how_long_ago_it_lapsed() {
        let origin = Instant::now();
        let lease = Lease::new(Duration::from_millis(400), origin);
        let at = |ms| origin + Duration::from_millis(ms);
        assert!(lease.lapsed_for(at(0)).is_some(), "a lease never granted");
        lease.renew(at(100));
        assert_eq!(lease.lapsed_for(at(499)), None);
        assert_eq!(lease.lapsed_for(at(500)), Some(Duration::ZERO));
        assert_eq!(lease.lapsed_for(at(750)), Some(Duration::from_millis(250)));
    }

    #[tokio::test]
    async fn lapsed_for_at_least_waits_out_the_lease_and_then_the_age() {
        let lease = Lease::new(Duration::from_millis(100), Instant::now());
        lease.lapsed_for_at_least(Duration::ZERO).await;
        let renewed_at = Instant::now();
        lease.renew(renewed_at);
        tokio::select! {
            () = lease.lapsed_for_at_least(Duration::from_millis(50)) => {}
            () = tokio::time::sleep(Duration::from_secs(5)) => panic!("never resolved"),
        }
        assert!(renewed_at.elapsed() >= Duration::from_millis(150));
        assert!(lease.lapsed_for(Instant::now()) >= Some(Duration::from_millis(50)));
    }
}
