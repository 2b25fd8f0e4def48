//! The broker's shared state: configuration, cluster identity, the metadata
//! store and image, the hosted replicas and the producer id allocator.
//! Every request handler gets a `&Broker`.

use std::{
    path::Path,
    sync::{Arc, Mutex, PoisonError},
    time::{SystemTime, UNIX_EPOCH},
};

use tokio::sync::watch;

use crate::{
    config::BrokerConfig,
    metadata::{
        ApplyError, MetadataImage, MetadataRecord, MetadataStore, Record, StoreError,
        records::{AllocateProducerIds, RegisterBroker},
    },
    replicas::ReplicaManager,
};

const META_PROPERTIES: &str = "meta.properties";
const METADATA_DIR: &str = "__cluster_metadata";
const PRODUCER_ID_BLOCK: i64 = 1000;

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("data directory {dir}: {source}")]
    DataDir {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error("data directory {dir} belongs to node {found}, not node {configured}")]
    NodeIdMismatch {
        dir: String,
        found: i32,
        configured: i32,
    },
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Metadata(#[from] StoreError),
    #[error("opening partition logs: {0}")]
    Log(#[from] keel_log::LogError),
}

#[derive(Debug)]
pub struct Broker {
    pub config: BrokerConfig,
    pub cluster_id: String,
    pub metadata: MetadataStore,
    pub replicas: ReplicaManager,
    producer_ids: Mutex<(i64, i64)>,
    shutdown: watch::Sender<bool>,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Broker {
    /// Opens the data directory, replays metadata, registers this node and
    /// opens every partition log it hosts (recovering them if needed).
    pub fn open(config: BrokerConfig) -> Result<Arc<Self>, StartError> {
        let data_dir = config.data_dir.clone();
        std::fs::create_dir_all(&data_dir).map_err(|source| StartError::DataDir {
            dir: data_dir.display().to_string(),
            source,
        })?;
        let cluster_id = load_or_create_identity(&data_dir, config.node_id)?;
        let metadata = MetadataStore::open(&data_dir.join(METADATA_DIR))?;
        let replicas =
            ReplicaManager::new(config.node_id, &data_dir, config.topic_defaults.clone());
        let (shutdown, _) = watch::channel(false);
        let broker = Arc::new(Self {
            config,
            cluster_id,
            metadata,
            replicas,
            producer_ids: Mutex::new((0, 0)),
            shutdown,
        });
        broker.register()?;
        broker
            .replicas
            .remove_stray_directories(&broker.metadata.image());
        broker
            .replicas
            .reconcile(|| broker.metadata.image(), now_ms())?;
        Ok(broker)
    }

    fn register(&self) -> Result<(), StoreError> {
        let config = &self.config;
        let registration = RegisterBroker {
            node_id: config.node_id,
            host: config.advertised_host.clone(),
            port: i32::from(config.advertised_port),
            rack: config.rack.clone(),
            incarnation: now_ms() as u64,
        };
        self.metadata
            .propose(Record::RegisterBroker(registration).into())
            .map(drop)
    }

    /// Commits a metadata change and brings local replicas in line with it.
    pub fn propose(&self, record: MetadataRecord) -> Result<Arc<MetadataImage>, StoreError> {
        let image = self.metadata.propose(record)?;
        if let Err(e) = self.replicas.reconcile(|| self.metadata.image(), now_ms()) {
            tracing::error!(error = %e, "failed to apply metadata change to local partitions");
        }
        Ok(image)
    }

    pub fn image(&self) -> Arc<MetadataImage> {
        self.metadata.image()
    }

    /// A producer id never handed out before, by this or any broker.
    pub fn next_producer_id(&self) -> Result<i64, StoreError> {
        let mut block = self
            .producer_ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if block.0 >= block.1 {
            let mut attempts = 0;
            loop {
                let start = self.image().next_producer_id();
                let record = Record::AllocateProducerIds(AllocateProducerIds {
                    node_id: self.config.node_id,
                    start,
                    size: PRODUCER_ID_BLOCK,
                });
                match self.metadata.propose(record.into()) {
                    Ok(_) => {
                        *block = (start, start + PRODUCER_ID_BLOCK);
                        break;
                    }
                    Err(StoreError::Rejected(ApplyError::StaleProducerIdBlock { .. }))
                        if attempts < 10 =>
                    {
                        attempts += 1;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        let id = block.0;
        block.0 += 1;
        Ok(id)
    }

    /// Resolves when shutdown begins.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }
}

/// Reads `meta.properties` (cluster id and node id), creating it on first
/// start. A data directory written by another node is refused.
fn load_or_create_identity(data_dir: &Path, node_id: i32) -> Result<String, StartError> {
    let path = data_dir.join(META_PROPERTIES);
    let io = |source| StartError::DataDir {
        dir: data_dir.display().to_string(),
        source,
    };
    if let Ok(text) = std::fs::read_to_string(&path) {
        let mut cluster_id = None;
        let mut found_node = None;
        for line in text.lines() {
            match line.split_once('=') {
                Some(("cluster.id", v)) => cluster_id = Some(v.trim().to_string()),
                Some(("node.id", v)) => found_node = v.trim().parse().ok(),
                _ => {}
            }
        }
        if let Some(found) = found_node {
            if found != node_id {
                return Err(StartError::NodeIdMismatch {
                    dir: data_dir.display().to_string(),
                    found,
                    configured: node_id,
                });
            }
        }
        if let Some(cluster_id) = cluster_id {
            return Ok(cluster_id);
        }
    }
    let cluster_id = base64_url(uuid::Uuid::new_v4().as_bytes());
    let text = format!("version=1\ncluster.id={cluster_id}\nnode.id={node_id}\n");
    keel_log::write_atomically(&path, text.as_bytes()).map_err(|e| io(std::io::Error::other(e)))?;
    Ok(cluster_id)
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

    #[test]
    fn a_data_dir_of_another_node_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create_identity(dir.path(), 1).unwrap();
        assert_eq!(load_or_create_identity(dir.path(), 1).unwrap(), first);
        assert!(matches!(
            load_or_create_identity(dir.path(), 2),
            Err(StartError::NodeIdMismatch { found: 1, .. })
        ));
    }

    #[test]
    fn producer_ids_are_unique_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let config = BrokerConfig::for_tests(dir.path());
        let first = {
            let broker = Broker::open(config.clone()).unwrap();
            (0..1500)
                .map(|_| broker.next_producer_id().unwrap())
                .max()
                .unwrap()
        };
        let broker = Broker::open(config).unwrap();
        assert!(broker.next_producer_id().unwrap() > first);
    }
}
