//! The listener and the broker's lifecycle: open the data directory, accept
//! connections, run the background flusher, retention and log cleaner, and
//! on shutdown stop accepting, let in-flight requests finish, then close
//! every log.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use keel_raft_metadata::{NodeError, ids};
use tokio::{
    net::TcpListener,
    task::{JoinHandle, JoinSet},
};

use crate::{
    broker::{Broker, StartError, now_ms},
    config::BrokerConfig,
    connection, log_cleaner, metrics,
};

/// How often the flusher looks for logs whose `flush.ms` has passed.
const FLUSH_TICK: Duration = Duration::from_millis(100);
/// How often high watermarks are checkpointed (Kafka's
/// replica.high.watermark.checkpoint.interval.ms).
const HIGH_WATERMARK_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(5);
/// How long connections get to finish their current request on shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a stopping broker tries to fence itself through the quorum.
const FENCE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a stopping broker waits for its leaderships to move; without a
/// quorum it stops anyway.
const CONTROLLED_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(3);
/// Once its leaderships have moved, a stopping broker goes on answering
/// until no produce request has come for this long...
const CLIENTS_GONE_QUIET: Duration = Duration::from_millis(200);
/// ...or for this long at most.
const CLIENTS_GONE_TIMEOUT: Duration = Duration::from_secs(1);

pub struct Server {
    broker: Arc<Broker>,
    listener: TcpListener,
    metadata_node: JoinHandle<Result<(), NodeError>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("broker", &self.broker)
            .finish_non_exhaustive()
    }
}

/// Why the broker stopped other than by a shutdown request.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("the metadata node failed: {0}")]
    Metadata(#[from] NodeError),
    #[error("the metadata node stopped unexpectedly")]
    MetadataStopped,
    #[error("{0}")]
    Unsafe(String),
}

impl Server {
    /// Opens the broker's state (the metadata node, then the partition logs,
    /// recovering them as needed) and binds the Kafka listener.
    pub async fn bind(config: BrokerConfig) -> Result<Self, StartError> {
        let listen = config.listen;
        let (broker, metadata_node) = Broker::open(config).await?;
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| StartError::Listen {
                flag: "listen",
                address: listen,
                source,
            })?;
        Ok(Self {
            broker,
            listener,
            metadata_node,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// Serves until `shutdown` resolves, then shuts down gracefully: no new
    /// connections, in-flight requests finish, this broker is fenced if a
    /// quorum answers, the metadata node stops and every log is closed. An
    /// error means the metadata node failed (a storage error) and the
    /// broker stopped because of it.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
        let Self {
            broker,
            listener,
            mut metadata_node,
        } = self;
        let config = &broker.config;
        tracing::info!(
            node_id = config.node_id,
            listen = %listener.local_addr().map_or(config.listen, |a| a),
            advertised = %format!("{}:{}", config.advertised_host, config.advertised_port),
            cluster_listen = %broker
                .metadata
                .raft_address()
                .map_or_else(|| "none (single node)".to_string(), |a| a.to_string()),
            voters = ?config.voters.iter().map(|(id, _)| ids::node_id(*id)).collect::<Vec<_>>(),
            "keel is ready"
        );
        let mut background = JoinSet::new();
        background.spawn(every(
            Arc::clone(&broker),
            FLUSH_TICK,
            "flusher",
            start_flushes,
            |broker| broker.replicas.nothing_to_flush(),
        ));
        let retention_period = Duration::from_millis(config.retention_check_interval_ms);
        background.spawn(every(
            Arc::clone(&broker),
            retention_period,
            "retention",
            enforce_retention,
            |_| false,
        ));
        background.spawn(every(
            Arc::clone(&broker),
            HIGH_WATERMARK_CHECKPOINT_INTERVAL,
            "high watermark checkpoint",
            checkpoint_high_watermarks,
            |_| false,
        ));
        background.spawn(log_cleaner::run(Arc::clone(&broker)));
        if let Some(address) = config.metrics_listen {
            match TcpListener::bind(address).await {
                Ok(metrics_listener) => {
                    background.spawn(metrics::serve(metrics_listener, Arc::clone(&broker)));
                }
                Err(e) => tracing::error!(
                    %address,
                    error = %e,
                    "cannot serve metrics; set --metrics-listen to a free address"
                ),
            }
        }

        let mut failure = None;
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                ended = &mut metadata_node => {
                    let error = match ended {
                        Ok(Err(e)) => ServerError::Metadata(e),
                        _ => ServerError::MetadataStopped,
                    };
                    tracing::error!(error = %error, "stopping: the metadata node is gone");
                    failure = Some(error);
                    break;
                }
                reason = broker.failed() => {
                    failure = Some(ServerError::Unsafe(reason));
                    break;
                }
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        connections.spawn(connection::serve(Arc::clone(&broker), stream, peer));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }

        if failure.is_none() {
            tracing::info!("shutting down: moving leaderships to other in-sync replicas");
            broker.begin_stopping();
            let moved =
                crate::controller::move_leaderships_off(&broker, CONTROLLED_SHUTDOWN_TIMEOUT).await;
            broker
                .metadata
                .transfer_leadership(CONTROLLED_SHUTDOWN_TIMEOUT)
                .await;
            if moved > 0 {
                wait_for_producers_to_move(&broker).await;
            }
            tokio::time::sleep(broker.config.test_faults.linger_on_stop).await;
        }
        tracing::info!("shutting down: no new connections, finishing in-flight requests");
        drop(listener);
        broker.begin_shutdown();
        let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("connections did not finish in time; closing them");
            connections.shutdown().await;
        }
        background.shutdown().await;
        broker.stop(FENCE_TIMEOUT).await;
        tracing::info!("keel stopped");
        failure.map_or(Ok(()), Err)
    }
}

/// Like Kafka's controlled shutdown, goes on answering once the
/// leaderships have moved, until producers stop sending here: each request
/// gets NOT_LEADER_OR_FOLLOWER naming the new leader (KIP-951) and the
/// client moves at once, where a closed connection would send it through a
/// metadata refresh and reconnections (librdkafka, losing every connection
/// of a rolling restart at once, starts over from its bootstrap servers).
async fn wait_for_producers_to_move(broker: &Broker) {
    let deadline = tokio::time::Instant::now() + CLIENTS_GONE_TIMEOUT;
    while tokio::time::Instant::now() < deadline
        && broker.produced_within(CLIENTS_GONE_QUIET, now_ms())
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `pass` every `period` on a blocking thread, for as long as the
/// broker runs, unless `nothing_to_do` (asked on the async worker, so it
/// must not block) says it would find nothing: passes over the logs take
/// their locks (which a slow append may hold) and do disk IO, so they stay
/// off the async workers.
async fn every(
    broker: Arc<Broker>,
    period: Duration,
    what: &'static str,
    pass: fn(&Broker),
    nothing_to_do: fn(&Broker) -> bool,
) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if nothing_to_do(&broker) {
            continue;
        }
        let running = Arc::clone(&broker);
        if let Err(e) = tokio::task::spawn_blocking(move || pass(&running)).await {
            tracing::error!(error = %e, task = what, "background task failed");
        }
    }
}

/// Begins the flushes that are due (logs whose oldest unflushed data is
/// older than their `flush.ms`, or that rolled a segment since their last
/// flush) and runs each on a blocking thread of its own, so a slow disk
/// under one partition delays no other's flush.
fn start_flushes(broker: &Broker) {
    for (partition, pending) in broker.replicas.begin_due_flushes(now_ms()) {
        tokio::task::spawn_blocking(move || {
            if let Err(e) = partition.complete_background_flush(pending) {
                tracing::error!(topic = partition.topic(), partition = partition.index(), error = %e, "flush failed");
            }
        });
    }
}

fn checkpoint_high_watermarks(broker: &Broker) {
    if let Err(e) = broker.replicas.checkpoint_high_watermarks() {
        tracing::error!(error = %e, "failed to checkpoint high watermarks");
    }
}

/// Applies retention.ms and retention.bytes.
fn enforce_retention(broker: &Broker) {
    let now = now_ms();
    for partition in broker.replicas.all() {
        match partition.enforce_retention(now) {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(
                topic = partition.topic(),
                partition = partition.index(),
                segments = deleted,
                "deleted segments past retention"
            ),
            Err(e) => {
                tracing::error!(topic = partition.topic(), partition = partition.index(), error = %e, "retention failed")
            }
        }
    }
}
