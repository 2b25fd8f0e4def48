//! Requests parked until a partition changes: each registers a `Notify`,
//! and a change wakes every one registered so far.

use std::sync::{Arc, Mutex, PoisonError, Weak};

use tokio::sync::Notify;

#[derive(Debug, Default)]
pub(super) struct Waiters(Mutex<Vec<Weak<Notify>>>);

impl Waiters {
    /// Dead registrations are pruned here, so an idle partition polled by
    /// many fetches does not accumulate them.
    pub(super) fn register(&self, notify: &Arc<Notify>) {
        let mut waiters = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        waiters.retain(|w| w.strong_count() > 0);
        waiters.push(Arc::downgrade(notify));
    }

    pub(super) fn wake_all(&self) {
        let waiters = std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner));
        for waiter in waiters.iter().filter_map(Weak::upgrade) {
            waiter.notify_one();
        }
    }
}
