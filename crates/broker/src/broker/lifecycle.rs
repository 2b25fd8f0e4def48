//! How a broker ends: it fails when going on is unsafe, stops being
//! elected anywhere once a controlled shutdown begins (stopping), and
//! leaves the cluster cleanly on `stop`: fenced if a quorum answers, its
//! background tasks and metadata node stopped, every log closed.

use std::{
    sync::{PoisonError, atomic::Ordering},
    time::Duration,
};

use keel_raft_metadata::{Record, records::FenceBroker};
use tokio::sync::watch;

use super::Broker;

impl Broker {
    /// Stops the broker: something makes it unsafe to go on.
    pub(super) fn fail(&self, reason: String) {
        tracing::error!(%reason, "stopping the broker");
        self.fatal.send_if_modified(|fatal| {
            let first = fatal.is_none();
            fatal.get_or_insert(reason);
            first
        });
    }

    /// Resolves with the reason once the broker must stop.
    pub async fn failed(&self) -> String {
        let mut fatal = self.fatal.subscribe();
        loop {
            if let Some(reason) = fatal.borrow_and_update().clone() {
                return reason;
            }
            if fatal.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Resolves when shutdown begins.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Begins a controlled shutdown: from the next heartbeat on the
    /// controller elects this broker nowhere and takes it out of the ISRs.
    pub fn begin_stopping(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Leaves the cluster cleanly: fences this broker (so Metadata stops
    /// listing it) if a quorum answers within `timeout`, stops the
    /// background tasks and the metadata node, and closes every log.
    pub async fn stop(&self, timeout: Duration) {
        self.begin_shutdown();
        for task in self
            .background
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            task.abort();
        }
        let fence = Record::FenceBroker(FenceBroker {
            node_id: self.config.node_id,
            incarnation: self.incarnation,
        });
        if let Err(e) = tokio::time::timeout(timeout, self.metadata.propose(fence.into())).await {
            tracing::info!(error = %e, "could not fence this broker before stopping");
        }
        self.fetchers.stop();
        self.metadata.shutdown().await;
        let replicas = &self.replicas;
        crate::blocking::run(|| replicas.close_all());
    }
}
