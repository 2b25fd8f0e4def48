//! The partition replicas this broker hosts, kept in line with the metadata
//! image: a partition assigned to this node has an open log, one that is no
//! longer assigned (its topic deleted) has its directory removed.
//!
//! Each replica lives in `<data-dir>/<topic>-<partition>/` with a
//! `partition.metadata` file naming the topic, its id and the partition, so
//! a directory left behind by a topic deleted and re-created under the same
//! name is recognised and wiped rather than reused.

use std::{
    collections::{BTreeMap, HashMap},
    fs,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError, RwLock},
};

use keel_log::{LogError, PartitionLog, write_atomically};
use uuid::Uuid;

use crate::{config::TopicDefaults, partition::Partition, topic_config};
use keel_raft_metadata::MetadataImage;

const PARTITION_METADATA: &str = "partition.metadata";
const DELETE_SUFFIX: &str = "-delete";

#[derive(Debug)]
struct TopicReplicas {
    id: Uuid,
    partitions: BTreeMap<i32, Arc<Partition>>,
}

#[derive(Debug)]
pub struct ReplicaManager {
    node_id: i32,
    data_dir: PathBuf,
    defaults: TopicDefaults,
    topics: RwLock<HashMap<String, TopicReplicas>>,
    reconcile: Mutex<()>,
}

/// A topic with partitions assigned to this broker, as the image says.
#[derive(Debug)]
struct WantedTopic {
    id: Uuid,
    /// `(partition, leader_epoch)` of each local partition.
    partitions: Vec<(i32, i32)>,
    configs: BTreeMap<String, String>,
}

/// What a partition directory says it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DirIdentity {
    topic: String,
    topic_id: Uuid,
    partition: i32,
}

impl ReplicaManager {
    pub fn new(node_id: i32, data_dir: &Path, defaults: TopicDefaults) -> Self {
        Self {
            node_id,
            data_dir: data_dir.to_path_buf(),
            defaults,
            topics: RwLock::new(HashMap::new()),
            reconcile: Mutex::new(()),
        }
    }

    pub fn defaults(&self) -> &TopicDefaults {
        &self.defaults
    }

    pub fn get(&self, topic: &str, partition: i32) -> Option<Arc<Partition>> {
        let topics = self.topics.read().unwrap_or_else(PoisonError::into_inner);
        topics.get(topic)?.partitions.get(&partition).cloned()
    }

    pub fn all(&self) -> Vec<Arc<Partition>> {
        let topics = self.topics.read().unwrap_or_else(PoisonError::into_inner);
        topics
            .values()
            .flat_map(|t| t.partitions.values().cloned())
            .collect()
    }

    /// Removes directories on disk that no partition in `image` owns:
    /// leftovers of topics deleted while this broker was down, and
    /// deletions interrupted by a crash.
    pub fn remove_stray_directories(&self, image: &MetadataImage) {
        let Ok(entries) = fs::read_dir(&self.data_dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(DELETE_SUFFIX) {
                remove_in_background(path);
                continue;
            }
            let Some(identity) = read_identity(&path) else {
                continue;
            };
            let wanted = image.topic(&identity.topic).is_some_and(|t| {
                t.id == identity.topic_id
                    && t.partition(identity.partition)
                        .is_some_and(|p| p.replicas.contains(&self.node_id))
            });
            if !wanted {
                tracing::info!(dir = %path.display(), "removing the log of a partition this broker no longer hosts");
                delete_partition_dir(&path);
            }
        }
    }

    /// Opens logs for partitions newly assigned to this broker, applies
    /// config and epoch changes, and deletes replicas that were removed.
    ///
    /// `latest` is read only once the reconcile lock is held, so two
    /// callers racing with two metadata changes can never apply an older
    /// image after a newer one (which would delete a just-created topic).
    pub fn reconcile(
        &self,
        latest: impl FnOnce() -> Arc<MetadataImage>,
        now_ms: i64,
    ) -> Result<(), LogError> {
        let _serialised = self
            .reconcile
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let image = latest();
        let mut wanted: HashMap<&str, WantedTopic> = HashMap::new();
        for topic in image.topics() {
            let local: Vec<(i32, i32)> = topic
                .partitions
                .iter()
                .filter(|p| p.replicas.contains(&self.node_id))
                .map(|p| (p.partition, p.leader_epoch))
                .collect();
            if !local.is_empty() {
                wanted.insert(
                    &topic.name,
                    WantedTopic {
                        id: topic.id,
                        partitions: local,
                        configs: topic.configs.clone(),
                    },
                );
            }
        }

        let removed = self.remove_unwanted(&wanted);
        for partition in removed {
            let dir = partition.log().dir().to_path_buf();
            tracing::info!(
                topic = partition.topic(),
                partition = partition.index(),
                "deleting partition"
            );
            delete_partition_dir(&dir);
        }

        for (name, topic) in wanted {
            let topic_id = topic.id;
            let log_config = topic_config::log_config(&topic.configs, &self.defaults);
            for (index, leader_epoch) in topic.partitions {
                if let Some(existing) = self.get(name, index) {
                    existing.set_leader_epoch(leader_epoch);
                    let mut log = existing.log();
                    if log.config() != &log_config {
                        log.set_config(log_config.clone());
                    }
                    continue;
                }
                let partition = self.open_partition(
                    name,
                    topic_id,
                    index,
                    leader_epoch,
                    log_config.clone(),
                    now_ms,
                )?;
                let mut topics = self.topics.write().unwrap_or_else(PoisonError::into_inner);
                topics
                    .entry(name.to_string())
                    .or_insert_with(|| TopicReplicas {
                        id: topic_id,
                        partitions: BTreeMap::new(),
                    })
                    .partitions
                    .insert(index, Arc::new(partition));
            }
        }
        Ok(())
    }

    /// Takes out of the map every replica that is not wanted, or whose
    /// topic was re-created under a new id.
    fn remove_unwanted(&self, wanted: &HashMap<&str, WantedTopic>) -> Vec<Arc<Partition>> {
        let mut topics = self.topics.write().unwrap_or_else(PoisonError::into_inner);
        let mut removed = Vec::new();
        topics.retain(|name, replicas| match wanted.get(name.as_str()) {
            Some(topic) if topic.id == replicas.id => {
                replicas.partitions.retain(|index, partition| {
                    let keep = topic.partitions.iter().any(|(i, _)| i == index);
                    if !keep {
                        removed.push(Arc::clone(partition));
                    }
                    keep
                });
                true
            }
            _ => {
                removed.extend(replicas.partitions.values().cloned());
                false
            }
        });
        removed
    }

    fn open_partition(
        &self,
        topic: &str,
        topic_id: Uuid,
        index: i32,
        leader_epoch: i32,
        config: keel_log::LogConfig,
        now_ms: i64,
    ) -> Result<Partition, LogError> {
        let dir = self.data_dir.join(format!("{topic}-{index}"));
        let identity = DirIdentity {
            topic: topic.to_string(),
            topic_id,
            partition: index,
        };
        match read_identity(&dir) {
            Some(found) if found == identity => {}
            Some(_) => {
                tracing::info!(dir = %dir.display(), "wiping the log of an earlier topic with the same name");
                delete_partition_dir(&dir);
            }
            None => {}
        }
        let (log, report) = PartitionLog::open(&dir, config, now_ms)?;
        write_identity(&dir, &identity)?;
        if !report.clean_shutdown && report.log_end_offset > 0 {
            tracing::info!(
                topic,
                partition = index,
                segments = report.segments,
                recovered = report.segments_recovered,
                truncated_bytes = report.truncated_bytes,
                log_end_offset = report.log_end_offset,
                "recovered partition log after an unclean shutdown"
            );
        }
        Ok(Partition::new(
            Arc::from(topic),
            topic_id,
            index,
            log,
            leader_epoch,
        ))
    }

    /// Flushes every log and marks it cleanly closed.
    pub fn close_all(&self) {
        for partition in self.all() {
            if let Err(e) = partition.log().close() {
                tracing::error!(topic = partition.topic(), partition = partition.index(), error = %e, "failed to close partition log");
            }
        }
    }
}

fn read_identity(dir: &Path) -> Option<DirIdentity> {
    let text = fs::read_to_string(dir.join(PARTITION_METADATA)).ok()?;
    let mut topic = None;
    let mut topic_id = None;
    let mut partition = None;
    for line in text.lines() {
        match line.split_once(": ") {
            Some(("topic", v)) => topic = Some(v.to_string()),
            Some(("topic_id", v)) => topic_id = Uuid::parse_str(v).ok(),
            Some(("partition", v)) => partition = v.parse().ok(),
            _ => {}
        }
    }
    Some(DirIdentity {
        topic: topic?,
        topic_id: topic_id?,
        partition: partition?,
    })
}

fn write_identity(dir: &Path, identity: &DirIdentity) -> Result<(), LogError> {
    if read_identity(dir).as_ref() == Some(identity) {
        return Ok(());
    }
    let text = format!(
        "version: 0\ntopic: {}\ntopic_id: {}\npartition: {}\n",
        identity.topic, identity.topic_id, identity.partition
    );
    write_atomically(&dir.join(PARTITION_METADATA), text.as_bytes())
}

/// Renames the directory out of the way at once (so a new partition of the
/// same name can be created immediately), then removes it in the background.
fn delete_partition_dir(dir: &Path) {
    let Some(name) = dir.file_name() else {
        return;
    };
    let doomed = dir.with_file_name(format!(
        "{}.{}{DELETE_SUFFIX}",
        name.to_string_lossy(),
        Uuid::new_v4().simple()
    ));
    match fs::rename(dir, &doomed) {
        Ok(()) => remove_in_background(doomed),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::error!(dir = %dir.display(), error = %e, "failed to delete partition directory")
        }
    }
}

fn remove_in_background(dir: PathBuf) {
    std::thread::spawn(move || {
        if let Err(e) = fs::remove_dir_all(&dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "failed to remove deleted partition");
        }
    });
}
