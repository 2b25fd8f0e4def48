//! Broker sessions on the active controller.
//!
//! Every broker heartbeats; a broker silent for longer than the session
//! timeout has lost its session and is to be fenced. A controller that has
//! just taken over knows nothing of when brokers last heartbeated to its
//! predecessor, so it starts every registered broker on a fresh session
//! ([`Liveness::start_term`]) before judging any.
//!
//! A broker that says in its heartbeats that it is stopping (Kafka's
//! controlled shutdown) keeps its session but is no candidate: it neither
//! takes a leadership nor stays in an ISR beside others, though it still
//! answers clients until it stops.
//!
//! Invariant: a session belongs to one broker incarnation; a heartbeat from
//! an older incarnation renews nothing.

use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Session {
    incarnation: u64,
    last_heartbeat_ms: i64,
    /// The latest heartbeat said the broker is stopping.
    stopping: bool,
    /// The broker's process is known to be gone: its session lapses now.
    gone: bool,
}

/// What a heartbeat did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heartbeat {
    /// The session is renewed.
    Renewed,
    /// A newer incarnation of the broker holds the session.
    StaleIncarnation { current: u64 },
}

#[derive(Debug, Clone)]
pub struct Liveness {
    session_timeout_ms: i64,
    sessions: BTreeMap<i32, Session>,
}

impl Liveness {
    pub fn new(session_timeout_ms: i64) -> Self {
        Self {
            session_timeout_ms,
            sessions: BTreeMap::new(),
        }
    }

    /// Gives every broker a fresh session starting `now`, forgetting the
    /// rest: a new controller's first act.
    pub fn start_term(&mut self, brokers: impl IntoIterator<Item = (i32, u64)>, now_ms: i64) {
        self.sessions = brokers
            .into_iter()
            .map(|(id, incarnation)| {
                let session = Session {
                    incarnation,
                    last_heartbeat_ms: now_ms,
                    stopping: false,
                    gone: false,
                };
                (id, session)
            })
            .collect();
    }

    /// Starts a session at `now` for every broker given that has none, or
    /// one only for an older incarnation: a broker that registered after
    /// this controller took over is judged from then, not at once.
    pub fn admit(&mut self, brokers: impl IntoIterator<Item = (i32, u64)>, now_ms: i64) {
        for (id, incarnation) in brokers {
            let fresh = Session {
                incarnation,
                last_heartbeat_ms: now_ms,
                stopping: false,
                gone: false,
            };
            let session = self.sessions.entry(id).or_insert(fresh);
            if session.incarnation < incarnation {
                *session = fresh;
            }
        }
    }

    /// A heartbeat from `broker` at `incarnation`, saying whether it is
    /// stopping. A newer incarnation replaces the session.
    pub fn heartbeat(
        &mut self,
        broker: i32,
        incarnation: u64,
        stopping: bool,
        now_ms: i64,
    ) -> Heartbeat {
        let session = self.sessions.entry(broker).or_insert(Session {
            incarnation,
            last_heartbeat_ms: now_ms,
            stopping,
            gone: false,
        });
        if incarnation < session.incarnation {
            return Heartbeat::StaleIncarnation {
                current: session.incarnation,
            };
        }
        session.incarnation = incarnation;
        session.last_heartbeat_ms = session.last_heartbeat_ms.max(now_ms);
        session.stopping = stopping;
        session.gone = false;
        Heartbeat::Renewed
    }

    /// `broker` at `incarnation` is stopping, as its controlled shutdown's
    /// leadership moves show before its next heartbeat can say so: from now
    /// on it is no candidate, so nothing moves leadership straight back.
    /// Its heartbeats remain the authority: the next one says so too.
    pub fn stopping(&mut self, broker: i32, incarnation: u64) {
        if let Some(session) = self
            .sessions
            .get_mut(&broker)
            .filter(|s| s.incarnation == incarnation)
        {
            session.stopping = true;
        }
    }

    /// `broker`'s process at `incarnation` is known to be gone (nothing
    /// listens where it served): its session lapses now rather than a
    /// session timeout after its last heartbeat. A heartbeat from it after
    /// all brings the session back.
    pub fn gone(&mut self, broker: i32, incarnation: u64) {
        if let Some(session) = self
            .sessions
            .get_mut(&broker)
            .filter(|s| s.incarnation == incarnation)
        {
            session.gone = true;
        }
    }

    /// Whether `broker`'s session lapsed because its process was seen gone
    /// ([`Self::gone`]) rather than by the session timeout.
    pub fn seen_gone(&self, broker: i32) -> bool {
        self.sessions.get(&broker).is_some_and(|s| s.gone)
    }

    /// How long `broker` may still hold a lease granted from a heartbeat
    /// this controller received, at `now`: a lease runs at most `lease_ms`
    /// from the heartbeat's sending, which came before its receipt. A
    /// broker without a session here (one a predecessor may have renewed
    /// just now) gets the whole lease.
    pub fn lease_left_ms(&self, broker: i32, lease_ms: i64, now_ms: i64) -> i64 {
        self.sessions.get(&broker).map_or(lease_ms, |s| {
            (s.last_heartbeat_ms.saturating_add(lease_ms) - now_ms).clamp(0, lease_ms)
        })
    }

    /// Whether `broker` holds a session that has not lapsed at `now`.
    pub fn is_alive(&self, broker: i32, now_ms: i64) -> bool {
        self.sessions
            .get(&broker)
            .is_some_and(|s| !self.lapsed(s, now_ms))
    }

    fn lapsed(&self, session: &Session, now_ms: i64) -> bool {
        session.gone || now_ms - session.last_heartbeat_ms > self.session_timeout_ms
    }

    /// Whether `broker` may lead or stay in an ISR at `now`: its session has
    /// not lapsed and it is not stopping.
    pub fn is_candidate(&self, broker: i32, now_ms: i64) -> bool {
        self.is_alive(broker, now_ms) && self.sessions.get(&broker).is_some_and(|s| !s.stopping)
    }

    /// The brokers, with their incarnations, whose sessions lapsed at `now`.
    pub fn expired(&self, now_ms: i64) -> Vec<(i32, u64)> {
        self.sessions
            .iter()
            .filter(|(_, s)| self.lapsed(s, now_ms))
            .map(|(&id, s)| (id, s.incarnation))
            .collect()
    }

    /// Drops `broker`'s session (it was fenced; its next incarnation starts
    /// a new one by heartbeating).
    pub fn forget(&mut self, broker: i32) {
        self.sessions.remove(&broker);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: i64 = 600;

    #[test]
    fn a_broker_silent_past_the_session_timeout_expires() {
        let mut liveness = Liveness::new(TIMEOUT);
        liveness.start_term([(1, 7), (2, 7)], 0);
        assert_eq!(liveness.heartbeat(1, 7, false, 500), Heartbeat::Renewed);
        assert!(
            liveness.expired(600).is_empty(),
            "exactly the timeout is not past it"
        );
        assert_eq!(liveness.expired(601), vec![(2, 7)]);
        assert!(liveness.is_alive(1, 1_100));
        assert!(!liveness.is_alive(1, 1_101));
        assert!(!liveness.is_alive(2, 601));
    }

    #[test]
    fn a_new_controller_judges_nobody_before_a_fresh_session() {
        let mut liveness = Liveness::new(TIMEOUT);
        liveness.start_term([(1, 7)], 0);
        // The predecessor's sessions are unknown here; a new term starts
        // everyone over at its own start.
        liveness.start_term([(1, 7), (2, 7)], 10_000);
        assert!(liveness.expired(10_600).is_empty());
        assert_eq!(liveness.expired(10_601).len(), 2);
    }

    #[test]
    fn an_older_incarnation_renews_nothing() {
        let mut liveness = Liveness::new(TIMEOUT);
        liveness.start_term([(1, 7)], 0);
        assert_eq!(liveness.heartbeat(1, 8, false, 100), Heartbeat::Renewed);
        assert_eq!(
            liveness.heartbeat(1, 7, false, 650),
            Heartbeat::StaleIncarnation { current: 8 }
        );
        assert_eq!(liveness.expired(701), vec![(1, 8)]);
        liveness.forget(1);
        assert!(liveness.expired(10_000).is_empty());
    }

    #[test]
    fn a_broker_registered_later_is_judged_from_its_admission() {
        let mut liveness = Liveness::new(TIMEOUT);
        liveness.start_term([(1, 7)], 0);
        liveness.admit([(1, 7), (2, 7)], 500);
        assert_eq!(liveness.expired(601), vec![(1, 7)]);
        assert!(liveness.is_alive(2, 1_100));
        // A newer incarnation replaces a lapsing session; the same one
        // does not renew it.
        liveness.admit([(1, 8), (2, 7)], 1_000);
        assert!(liveness.is_alive(1, 1_600));
        assert_eq!(liveness.expired(1_101), vec![(2, 7)]);
    }

    #[test]
    fn a_stopping_broker_keeps_its_session_but_is_no_candidate() {
        let mut liveness = Liveness::new(TIMEOUT);
        liveness.start_term([(1, 7), (2, 7)], 0);
        assert!(liveness.is_candidate(1, 100));
        liveness.heartbeat(1, 7, true, 100);
        assert!(liveness.is_alive(1, 200) && !liveness.is_candidate(1, 200));
        assert!(liveness.expired(700).iter().all(|(id, _)| *id != 1));
        // A stale incarnation's word counts for nothing.
        liveness.heartbeat(1, 6, false, 150);
        assert!(!liveness.is_candidate(1, 200));
        // A broker that stopped stopping (its shutdown was called off, or
        // a new controller took over) is a candidate again.
        liveness.heartbeat(1, 7, false, 300);
        assert!(liveness.is_candidate(1, 300));
        liveness.heartbeat(1, 7, true, 400);
        liveness.start_term([(1, 7)], 500);
        assert!(liveness.is_candidate(1, 500));
        assert!(!liveness.is_candidate(2, 500), "no session, no candidate");
    }

    #[test]
    fn a_broker_known_gone_lapses_at_once_and_its_lease_is_what_is_left() {
        let mut liveness = Liveness::new(TIMEOUT);
        liveness.start_term([(1, 7), (2, 7)], 0);
        liveness.heartbeat(1, 7, false, 100);
        liveness.gone(1, 6);
        assert!(liveness.is_alive(1, 150), "an older incarnation's death");
        assert!(!liveness.seen_gone(1));
        liveness.gone(1, 7);
        assert!(!liveness.is_alive(1, 150));
        assert_eq!(liveness.expired(150), vec![(1, 7)]);
        assert!(liveness.seen_gone(1) && !liveness.seen_gone(2));
        // A lease of 400 ms from a heartbeat received at 100 runs out by
        // 500 at the latest.
        assert_eq!(liveness.lease_left_ms(1, 400, 150), 350);
        assert_eq!(liveness.lease_left_ms(1, 400, 600), 0);
        assert_eq!(
            liveness.lease_left_ms(9, 400, 600),
            400,
            "unknown: all of it"
        );
        // It heartbeats after all: alive again.
        liveness.heartbeat(1, 7, false, 200);
        assert!(liveness.is_alive(1, 250));
        assert!(!liveness.seen_gone(1));
    }

    #[test]
    fn time_going_backwards_does_not_shorten_a_session() {
        let mut liveness = Liveness::new(TIMEOUT);
        liveness.start_term([(1, 7)], 1_000);
        liveness.heartbeat(1, 7, false, 900);
        assert!(liveness.is_alive(1, 1_600));
    }

    #[test]
    fn a_broker_seen_moving_its_leaderships_off_is_no_candidate() {
        let mut liveness = Liveness::new(TIMEOUT);
        liveness.start_term([(1, 7)], 0);
        liveness.stopping(1, 6);
        assert!(liveness.is_candidate(1, 10), "an older incarnation's stop");
        liveness.stopping(1, 7);
        assert!(liveness.is_alive(1, 10) && !liveness.is_candidate(1, 10));
        liveness.heartbeat(1, 8, false, 40);
        assert!(liveness.is_candidate(1, 50), "restarted");
    }
}
