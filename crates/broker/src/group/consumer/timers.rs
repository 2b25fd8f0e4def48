//! A consumer group's timers: each member's session, the rebalance timeout
//! within which it must revoke, and a classic member's rejoin and sync
//! deadlines. The coordinator asks for the next deadline to sleep until it,
//! and removes the members whose timers ran out.

use super::{ClassicMember, ConsumerGroup, ConsumerMember, ConsumerSettings};

impl ConsumerGroup {
    /// Members whose session expired or who did not revoke in time, with
    /// the reason.
    fn expired(&self, settings: &ConsumerSettings, now_ms: i64) -> Vec<(String, &'static str)> {
        self.members
            .values()
            .filter_map(|m| {
                let why = Self::deadlines(m, settings)
                    .into_iter()
                    .flatten()
                    .find(|(deadline, _)| now_ms >= *deadline)?
                    .1;
                Some((m.id.clone(), why))
            })
            .collect()
    }

    /// When each of a member's timers runs out, and what it means then.
    fn deadlines(
        member: &ConsumerMember,
        settings: &ConsumerSettings,
    ) -> [Option<(i64, &'static str)>; 4] {
        let [rejoin, sync] = member
            .classic
            .as_ref()
            .map_or([None, None], ClassicMember::deadlines);
        [
            Some((
                member.last_heard_ms + member.session_timeout_ms(settings),
                "session timeout",
            )),
            member
                .revoke_deadline_ms
                .map(|d| (d, "did not revoke within the rebalance timeout")),
            rejoin,
            sync,
        ]
    }

    /// The earliest time a member's session ends or one of its other
    /// timers runs out.
    pub(crate) fn next_deadline_ms(&self, settings: &ConsumerSettings) -> Option<i64> {
        self.members
            .values()
            .flat_map(|m| Self::deadlines(m, settings))
            .flatten()
            .map(|(deadline, _)| deadline)
            .min()
    }

    pub(crate) fn has_expired_members(&self, settings: &ConsumerSettings, now_ms: i64) -> bool {
        !self.expired(settings, now_ms).is_empty()
    }

    /// Removes the members `expired` names; returns whether any was removed.
    pub(crate) fn tick(&mut self, settings: &ConsumerSettings, now_ms: i64) -> bool {
        let expired = self.expired(settings, now_ms);
        for (member_id, why) in &expired {
            self.remove(member_id, why);
        }
        !expired.is_empty()
    }
}
