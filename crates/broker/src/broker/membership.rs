//! How a broker joins and follows the cluster, in the background once it
//! has opened: it registers (a new incarnation unfences it) and names the
//! cluster if nobody has; it applies every new image to its replicas; and
//! only once a read barrier shows its image caught up with the quorum does
//! it judge the partition directories that image does not name. Every
//! image's cluster id is checked against the one `meta.properties`
//! records: a data directory of another cluster stops the broker.

use std::{
    sync::{Arc, PoisonError},
    time::Duration,
};

use keel_raft_metadata::{
    MetadataImage, ProposalError, Record,
    records::{RegisterBroker, SetClusterId},
};
use tokio::sync::Notify;

use super::{Broker, StartError, identity, now_ms};

const REGISTRATION_RETRY: Duration = Duration::from_millis(500);

impl Broker {
    /// Compares the cluster id in `image` with the one `meta.properties`
    /// records: records it when first known, and stops the broker if they
    /// differ (this data directory belongs to another cluster).
    ///
    /// Returns false once the broker must stop.
    pub(super) fn check_cluster_id(&self, image: &MetadataImage) -> bool {
        let Some(current) = image.cluster_id() else {
            return true;
        };
        let mut recorded = self
            .recorded_cluster_id
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match recorded.as_deref() {
            Some(id) if id == current => true,
            Some(id) => {
                let error = StartError::ClusterIdMismatch {
                    dir: self.config.data_dir.display().to_string(),
                    recorded: id.to_string(),
                    current: current.to_string(),
                };
                self.fail(error.to_string());
                false
            }
            None => {
                let (dir, node_id) = (&self.config.data_dir, self.config.node_id);
                let written =
                    crate::blocking::run(|| identity::record_cluster_id(dir, node_id, current));
                match written {
                    Ok(()) => {
                        *recorded = Some(current.to_string());
                        true
                    }
                    Err(e) => {
                        self.fail(e.to_string());
                        false
                    }
                }
            }
        }
    }
}

/// Keeps local replicas in line with every new image, including changes
/// made through other brokers. Each image's leader epochs are learnt at
/// once, even while a reconciliation waits for a slow log; the
/// reconciliations themselves run one after another, the latest image
/// each time.
pub(super) async fn follow_metadata(broker: Arc<Broker>) {
    let mut images = broker.metadata.subscribe();
    let wanted = Arc::new(Notify::new());
    let reconciler = tokio::spawn(reconcile_when(Arc::clone(&broker), Arc::clone(&wanted)));
    while images.changed().await.is_ok() {
        let image = Arc::clone(&images.borrow_and_update());
        if !broker.check_cluster_id(&image) {
            break;
        }
        broker
            .metrics
            .leader_transitions
            .observe(&image, broker.config.node_id);
        broker.replicas.learn_leader_epochs(&image);
        wanted.notify_one();
    }
    reconciler.abort();
}

async fn reconcile_when(broker: Arc<Broker>, wanted: Arc<Notify>) {
    loop {
        wanted.notified().await;
        broker.reconcile_replicas().await;
    }
}

/// Waits until this broker's image holds everything the quorum has
/// committed (a read barrier), then lets the replica manager judge the
/// partition directories that image does not name.
pub(super) async fn catch_up(broker: Arc<Broker>) {
    if broker.metadata.read_barrier().await.is_err() {
        return;
    }
    if !broker.check_cluster_id(&broker.image()) {
        return;
    }
    tracing::info!(
        applied_index = broker.metadata.status().core.applied_index,
        "caught up with the metadata quorum"
    );
    let metadata = broker.metadata.clone();
    let result =
        crate::blocking::run(|| broker.replicas.set_caught_up(|| metadata.image(), now_ms()));
    match result {
        Ok(_) => broker.update_fetchers(),
        Err(e) => {
            tracing::error!(error = %e, "failed to apply the caught-up metadata to local partitions");
        }
    }
}

/// Registers this broker (a new incarnation unfences it) and names the
/// cluster if nobody has yet, retrying until a quorum answers.
pub(super) async fn register(broker: Arc<Broker>) {
    let config = &broker.config;
    let registration = RegisterBroker {
        node_id: config.node_id,
        host: config.advertised_host.clone(),
        port: i32::from(config.advertised_port),
        rack: config.rack.clone(),
        incarnation: broker.incarnation,
        timestamp_ms: now_ms(),
        max_replicas: broker.open_files.max_replicas(),
    };
    loop {
        let record = Record::RegisterBroker(registration.clone());
        match broker.metadata.propose(record.into()).await {
            Ok(_) => break,
            Err(ProposalError::Rejected(e)) => {
                tracing::error!(error = %e, "the cluster refused this broker's registration");
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, "registration not committed yet; retrying");
                tokio::time::sleep(REGISTRATION_RETRY).await;
            }
        }
    }
    tracing::info!(
        node_id = config.node_id,
        incarnation = broker.incarnation,
        "registered with the cluster"
    );
    while broker.image().cluster_id().is_none() {
        // A broker whose data directory already belongs to a cluster (its
        // metadata was lost and rebuilt alone) keeps that cluster's id.
        let recorded = broker
            .recorded_cluster_id
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let cluster_id = recorded.unwrap_or_else(|| base64_url(uuid::Uuid::new_v4().as_bytes()));
        let record = Record::SetClusterId(SetClusterId { cluster_id });
        match broker.metadata.propose(record.into()).await {
            Ok(_) | Err(ProposalError::Rejected(_)) => break,
            Err(_) => tokio::time::sleep(REGISTRATION_RETRY).await,
        }
    }
}

/// URL-safe base64 without padding, the form of Kafka cluster ids.
fn base64_url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | (u32::from(b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 0x3f) as usize]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_ids_look_like_kafkas() {
        assert_eq!(base64_url(&[0xff; 16]).len(), 22);
        assert_eq!(base64_url(b"Man"), "TWFu");
    }
}
