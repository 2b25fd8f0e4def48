//! The partition replicas this broker hosts, kept in line with the metadata
//! image: a partition assigned to this node has an open log.
//!
//! Each replica lives in `<data-dir>/<topic>-<partition>/` with a
//! `partition.metadata` file naming the topic, its id and the partition, so
//! a directory is always judged by topic id, never by name.
//!
//! Nothing is deleted on a guess. A partition directory is removed only
//! when the image says its topic id was deleted (the image remembers
//! deletions). Any other directory the image does not name — the image may
//! be stale, or built from a wiped or new metadata log — is left where it
//! is until this broker has caught up with the quorum's commit index
//! ([`ReplicaManager::set_caught_up`]); it is then moved aside as
//! `<name>.<uuid>-stray` with a warning naming the path, as Kafka marks
//! stray replicas, and kept for the operator to inspect or remove. A log
//! that stops being hosted for another reason than a deletion, or a
//! directory holding an earlier topic of a re-used name, goes aside the
//! same way.

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
const STRAY_SUFFIX: &str = "-stray";

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
    /// Test-only slow disks, applied to the logs they name when opened.
    faults: BTreeMap<(String, i32), keel_log::Faults>,
    /// Serialises reconciliations; true once the directories the image
    /// does not name have been judged (after catching up with the quorum).
    reconcile: Mutex<bool>,
}

/// A topic with partitions assigned to this broker, as the image says.
#[derive(Debug)]
struct WantedTopic {
    id: Uuid,
    /// `(partition, leader_epoch)` of each local partition.
    partitions: Vec<(i32, i32)>,
    configs: BTreeMap<String, String>,
}

/// A partition the image assigns to this broker.
#[derive(Debug)]
struct WantedPartition<'a> {
    topic: &'a str,
    topic_id: Uuid,
    index: i32,
    leader_epoch: i32,
    config: keel_log::LogConfig,
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
            faults: BTreeMap::new(),
            reconcile: Mutex::new(false),
        }
    }

    /// Makes the disks of the named partitions slow, for tests.
    pub fn with_faults(mut self, faults: BTreeMap<(String, i32), keel_log::Faults>) -> Self {
        self.faults = faults;
        self
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

    /// Removes what deletions interrupted by a crash left behind. Safe at
    /// any time: such a directory was already renamed for deletion.
    pub fn remove_interrupted_deletions(&self) {
        let Ok(entries) = fs::read_dir(&self.data_dir) else {
            return;
        };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().ends_with(DELETE_SUFFIX) {
                remove_in_background(entry.path());
            }
        }
    }

    /// Called once this broker's image has caught up with the quorum's
    /// commit index: reconciles with `latest` and then judges every
    /// partition directory the image does not name, deleting those of
    /// deleted topics and moving the others aside.
    pub fn set_caught_up(
        &self,
        latest: impl FnOnce() -> Arc<MetadataImage>,
        now_ms: i64,
    ) -> Result<(), LogError> {
        let mut judged = self
            .reconcile
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let image = latest();
        self.reconcile_locked(&image, now_ms, true)?;
        if !*judged {
            self.judge_unnamed_directories(&image);
            *judged = true;
        }
        Ok(())
    }

    /// Deletes or moves aside each partition directory that holds no
    /// partition this broker hosts.
    fn judge_unnamed_directories(&self, image: &MetadataImage) {
        let Ok(entries) = fs::read_dir(&self.data_dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(DELETE_SUFFIX) || name.ends_with(STRAY_SUFFIX) {
                continue;
            }
            let Some(identity) = read_identity(&path) else {
                continue;
            };
            let home = self
                .data_dir
                .join(format!("{}-{}", identity.topic, identity.partition));
            let hosted = path == home
                && self
                    .get(&identity.topic, identity.partition)
                    .is_some_and(|p| p.topic_id() == identity.topic_id);
            if !hosted {
                let why = "the caught-up metadata does not name it";
                dispose(&path, &identity, image, true, why);
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
        let caught_up = self
            .reconcile
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.reconcile_locked(&latest(), now_ms, *caught_up)
    }

    /// Brings the hosted replicas in line with `image`. Until the broker
    /// has caught up with the quorum (`caught_up`), a directory that is
    /// not the log the image names is left where it is, unless its topic
    /// was deleted: an image that is still catching up may predate what is
    /// on disk.
    fn reconcile_locked(
        &self,
        image: &MetadataImage,
        now_ms: i64,
        caught_up: bool,
    ) -> Result<(), LogError> {
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
            // Closed first, so nothing in flight writes into the directory
            // once it is renamed (or into a new one of the same name).
            let dir = {
                let mut log = partition.log();
                if let Err(e) = log.close() {
                    tracing::warn!(dir = %log.dir().display(), error = %e, "failed to close a removed partition log");
                }
                log.dir().to_path_buf()
            };
            let identity = DirIdentity {
                topic: partition.topic().to_string(),
                topic_id: partition.topic_id(),
                partition: partition.index(),
            };
            dispose(
                &dir,
                &identity,
                image,
                caught_up,
                "this broker no longer hosts it",
            );
        }

        for (name, topic) in wanted {
            let topic_id = topic.id;
            let log_config = topic_config::log_config(&topic.configs, &self.defaults);
            for (index, leader_epoch) in topic.partitions {
                if let Some(existing) = self.get(name, index) {
                    existing.set_leader_epoch(leader_epoch);
                    existing.set_config(&log_config);
                    continue;
                }
                let wanted = WantedPartition {
                    topic: name,
                    topic_id,
                    index,
                    leader_epoch,
                    config: log_config.clone(),
                };
                let Some(partition) = self.open_partition(image, &wanted, caught_up, now_ms)?
                else {
                    continue;
                };
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

    /// Opens (or creates) the log of `wanted`; `None` when its directory
    /// holds another topic that cannot be judged yet (see
    /// `reconcile_locked`).
    fn open_partition(
        &self,
        image: &MetadataImage,
        wanted: &WantedPartition<'_>,
        caught_up: bool,
        now_ms: i64,
    ) -> Result<Option<Partition>, LogError> {
        let (topic, index) = (wanted.topic, wanted.index);
        let dir = self.data_dir.join(format!("{topic}-{index}"));
        let identity = DirIdentity {
            topic: topic.to_string(),
            topic_id: wanted.topic_id,
            partition: index,
        };
        match read_identity(&dir) {
            Some(found) if found == identity => {}
            Some(found) => {
                let why = "a topic of the same name replaced it";
                if !dispose(&dir, &found, image, caught_up, why) {
                    tracing::info!(
                        dir = %dir.display(),
                        found = %found.topic_id,
                        wanted = %wanted.topic_id,
                        "not opening a partition whose directory holds another topic until the \
                         metadata has caught up"
                    );
                    return Ok(None);
                }
            }
            None => {}
        }
        let (mut log, report) = PartitionLog::open(&dir, wanted.config.clone(), now_ms)?;
        if let Some(faults) = self.faults.get(&(topic.to_string(), index)) {
            tracing::warn!(
                topic,
                partition = index,
                ?faults,
                "test faults make this partition's disk slow"
            );
            log.set_faults(*faults);
        }
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
        Ok(Some(Partition::new(
            Arc::from(topic),
            wanted.topic_id,
            index,
            log,
            wanted.leader_epoch,
        )))
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

/// Gets a directory this broker does not host out of the way, if it may be
/// judged: deleted if the image says its topic id was deleted; otherwise,
/// once the broker has caught up with the quorum (`caught_up`), moved aside
/// as stray and reported with `why` it is not hosted; otherwise left where
/// it is. Returns whether it was judged (and so moved).
fn dispose(
    dir: &Path,
    identity: &DirIdentity,
    image: &MetadataImage,
    caught_up: bool,
    why: &str,
) -> bool {
    if image.was_deleted(&identity.topic_id) {
        tracing::info!(
            dir = %dir.display(),
            topic = identity.topic,
            partition = identity.partition,
            "deleting the log of a deleted topic"
        );
        if let Some(doomed) = rename_aside(dir, DELETE_SUFFIX) {
            remove_in_background(doomed);
        }
        return true;
    }
    if !caught_up {
        return false;
    }
    if let Some(stray) = rename_aside(dir, STRAY_SUFFIX) {
        tracing::warn!(
            dir = %dir.display(),
            kept_at = %stray.display(),
            topic = identity.topic,
            topic_id = %identity.topic_id,
            partition = identity.partition,
            reason = why,
            "moved aside a partition log this broker does not host; its records are kept \
             there until an operator removes the directory"
        );
    }
    true
}

/// Renames `dir` to `<dir>.<uuid><suffix>`, at once, so that a partition
/// of the same name can be created right away.
fn rename_aside(dir: &Path, suffix: &str) -> Option<PathBuf> {
    let name = dir.file_name()?;
    let aside = dir.with_file_name(format!(
        "{}.{}{suffix}",
        name.to_string_lossy(),
        Uuid::new_v4().simple()
    ));
    match fs::rename(dir, &aside) {
        Ok(()) => Some(aside),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            tracing::error!(dir = %dir.display(), error = %e, "failed to move a partition directory aside");
            None
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

#[cfg(test)]
mod tests;
