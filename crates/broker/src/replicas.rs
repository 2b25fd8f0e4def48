//! The partition replicas this broker hosts, kept in line with the metadata
//! image: a partition assigned to this node has an open log.
//!
//! Each replica lives in `<data-dir>/<topic>-<partition>/` with a
//! `partition.metadata` file naming the topic, its id and the partition, so
//! a directory is always judged by topic id, never by name.
//!
//! Nothing is deleted on a guess. A partition directory is removed only
//! when the image says its topic id was deleted (the image remembers
//! deletions), or when a replica this broker hosts is reassigned to other
//! brokers while its image has caught up with the quorum's commit index
//! ([`ReplicaManager::set_caught_up`]). Any other directory the image does
//! not name — the image may be stale, or built from a wiped or new
//! metadata log — is left where it is until this broker has caught up; it
//! is then moved aside as `<name>.<uuid>-stray` with a warning naming the
//! path, as Kafka marks stray replicas, and kept for the operator to
//! inspect or remove. A log that stops being hosted for another reason, or
//! a directory holding an earlier topic of a re-used name, goes aside the
//! same way.

mod directories;
mod high_watermarks;
mod leadership;

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, PoisonError, RwLock,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use keel_log::{LogError, PartitionLog, PendingFlush};
use uuid::Uuid;

use crate::{
    config::TopicDefaults,
    partition::{Activity, FlushCheck, Partition, Transition, Walk},
    topic_config,
};
use directories::{DirIdentity, delete, dispose, read_identity, write_identity};
use keel_raft_metadata::{MetadataImage, TopicInfo};

/// Threads closing logs at shutdown (see [`ReplicaManager::close_all`]).
const CLOSING_THREADS: usize = 8;

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
    /// Serialises reconciliations, and remembers what the last one did.
    reconcile: Mutex<Reconciled>,
    /// The high watermarks checkpointed by the previous run, taken by each
    /// log as it is opened.
    checkpointed: Mutex<HashMap<(String, i32), i64>>,
    /// What the checkpoint file holds now, so an idle broker does not
    /// rewrite and sync the same file every few seconds.
    last_checkpoint: Mutex<Option<Vec<(String, i32, i64)>>>,
    /// The longest a new leader waits for earlier leaders to stop.
    succession_wait_ms: i64,
    /// The next history sequence of the newest image whose leader epochs
    /// every partition has learnt: how many leadership changes this
    /// broker has taken.
    leadership_changes: AtomicU64,
    /// Every hosted replica's changes, counted for the walks over them.
    activity: Arc<Activity>,
    /// The flusher's walk (see `partition::activity`).
    flush_walk: Walk,
}

#[derive(Debug, Default)]
struct Reconciled {
    /// The directories the image does not name have been judged (after
    /// catching up with the quorum).
    caught_up: bool,
    /// The image last applied in full: a topic it shares with the next
    /// image (the same `Arc`) has not changed and is skipped.
    applied: Option<Arc<MetadataImage>>,
}

/// A partition the image assigns to this broker.
#[derive(Debug)]
struct WantedPartition<'a> {
    topic: &'a str,
    topic_id: Uuid,
    index: i32,
    config: keel_log::LogConfig,
}

/// A change of role a reconciliation made.
#[derive(Debug, Clone)]
pub struct RoleChange {
    pub partition: Arc<Partition>,
    pub transition: Transition,
}

impl ReplicaManager {
    pub fn new(
        node_id: i32,
        data_dir: &Path,
        defaults: TopicDefaults,
        succession_wait: Duration,
    ) -> Self {
        Self {
            node_id,
            data_dir: data_dir.to_path_buf(),
            defaults,
            topics: RwLock::new(HashMap::new()),
            faults: BTreeMap::new(),
            reconcile: Mutex::new(Reconciled::default()),
            checkpointed: Mutex::new(high_watermarks::read(data_dir)),
            last_checkpoint: Mutex::new(None),
            succession_wait_ms: i64::try_from(succession_wait.as_millis()).unwrap_or(i64::MAX),
            leadership_changes: AtomicU64::new(0),
            activity: Arc::default(),
            flush_walk: Walk::default(),
        }
    }

    /// The count of changes to hosted replicas (see `partition::activity`).
    pub fn activity(&self) -> &Activity {
        &self.activity
    }

    /// Whether every log was durable at the last look and no replica
    /// changed since: [`Self::begin_due_flushes`] would find nothing.
    /// Lock-free.
    pub fn nothing_to_flush(&self) -> bool {
        self.flush_walk.may_skip(self.activity.count())
    }

    /// Begins the flushes due at `now_ms` (see
    /// [`Partition::begin_flush_if_due`]), for the caller to complete off
    /// this thread. Once every log is durable, no log is looked at again
    /// until a replica changes (see `partition::activity`).
    pub fn begin_due_flushes(&self, now_ms: i64) -> Vec<(Arc<Partition>, PendingFlush)> {
        let began = self.activity.count();
        if self.flush_walk.may_skip(began) {
            return Vec::new();
        }
        let mut settled = true;
        let mut begun = Vec::new();
        self.for_each(|partition| match partition.begin_flush_if_due(now_ms) {
            FlushCheck::Durable => {}
            FlushCheck::NotYet => settled = false,
            // Completed off this walk: the next one finds the log durable
            // (or failed, with nothing more to flush).
            FlushCheck::Begun(pending) => {
                settled = false;
                begun.push((Arc::clone(partition), pending));
            }
        });
        self.flush_walk.walked(began, settled);
        begun
    }

    /// How many leadership changes this broker's partitions have taken
    /// (what its heartbeats tell the controller).
    pub fn leadership_changes(&self) -> u64 {
        self.leadership_changes.load(Ordering::Acquire)
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

    /// Calls `f` with every hosted replica, holding the replica map's
    /// read lock: for walks too frequent to copy the map each time.
    pub fn for_each(&self, mut f: impl FnMut(&Arc<Partition>)) {
        let topics = self.topics.read().unwrap_or_else(PoisonError::into_inner);
        for partition in topics.values().flat_map(|t| t.partitions.values()) {
            f(partition);
        }
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
        directories::remove_interrupted_deletions(&self.data_dir);
    }

    /// Called once this broker's image has caught up with the quorum's
    /// commit index: reconciles with `latest` and then judges every
    /// partition directory the image does not name, deleting those of
    /// deleted topics and moving the others aside.
    pub fn set_caught_up(
        &self,
        latest: impl FnOnce() -> Arc<MetadataImage>,
        now_ms: i64,
    ) -> Result<Vec<RoleChange>, LogError> {
        let mut reconciled = self
            .reconcile
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let first = !reconciled.caught_up;
        reconciled.caught_up = true;
        if first {
            // Partitions left unopened until now are opened in this pass.
            reconciled.applied = None;
        }
        let image = latest();
        let changes = self.reconcile_locked(&mut reconciled, &image, now_ms)?;
        if first {
            self.judge_unnamed_directories(&image);
        }
        Ok(changes)
    }

    /// Deletes or moves aside each partition directory that holds no
    /// partition this broker hosts.
    fn judge_unnamed_directories(&self, image: &MetadataImage) {
        for (path, identity) in directories::partition_directories(&self.data_dir) {
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

    /// Opens logs for partitions newly assigned to this broker, gives each
    /// local partition its role, config and ISR from the image, and
    /// deletes replicas that were removed. Returns the changes of role.
    ///
    /// `latest` is read only once the reconcile lock is held, so two
    /// callers racing with two metadata changes can never apply an older
    /// image after a newer one (which would delete a just-created topic).
    pub fn reconcile(
        &self,
        latest: impl FnOnce() -> Arc<MetadataImage>,
        now_ms: i64,
    ) -> Result<Vec<RoleChange>, LogError> {
        let mut reconciled = self
            .reconcile
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.reconcile_locked(&mut reconciled, &latest(), now_ms)
    }

    /// Brings the hosted replicas in line with `image`, looking only at the
    /// topics that changed since the last image applied. Until the broker
    /// has caught up with the quorum, a directory that is not the log the
    /// image names is left where it is, unless its topic was deleted: an
    /// image that is still catching up may predate what is on disk.
    fn reconcile_locked(
        &self,
        reconciled: &mut Reconciled,
        image: &Arc<MetadataImage>,
        now_ms: i64,
    ) -> Result<Vec<RoleChange>, LogError> {
        let caught_up = reconciled.caught_up;
        let mut changes = Vec::new();
        for partition in self.remove_unwanted(image) {
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
            // A reassignment completes only once every replica it keeps is
            // in the ISR, so the replica it removed holds nothing they
            // lack. An image still catching up may show a removal that a
            // later entry undid, with this log the one that counts.
            let reassigned_away = image
                .topic_by_id(&identity.topic_id)
                .and_then(|t| t.partition(identity.partition))
                .is_some_and(|p| !p.replicas.contains(&self.node_id));
            if caught_up && reassigned_away {
                delete(
                    &dir,
                    &identity,
                    "a reassignment moved the partition to other brokers",
                );
            } else {
                dispose(
                    &dir,
                    &identity,
                    image,
                    caught_up,
                    "this broker no longer hosts it",
                );
            }
            changes.push(RoleChange {
                partition,
                transition: Transition::Removed,
            });
        }

        let previous = reconciled.applied.take();
        // A broker fenced since may be a predecessor that a new leader
        // here waits for: its topic is looked at again, though unchanged.
        let brokers_changed = previous
            .as_ref()
            .is_none_or(|p| !p.brokers().eq(image.brokers()));
        let unchanged = |topic: &Arc<TopicInfo>| {
            previous
                .as_ref()
                .and_then(|p| p.topic(&topic.name))
                .is_some_and(|before| Arc::ptr_eq(before, topic))
                && !(brokers_changed && self.awaits_succession(&topic.name))
        };
        for topic in image.topics().filter(|t| !unchanged(t)) {
            self.apply_topic(image, topic, caught_up, now_ms, &mut changes)?;
        }
        // Every changed partition learnt its epoch as it was applied (the
        // metadata follower learns them sooner, see `learn_leader_epochs`);
        // this covers the images it has not seen, as on start.
        self.leadership_changes
            .fetch_max(image.next_history_sequence(), Ordering::AcqRel);
        reconciled.applied = Some(Arc::clone(image));
        Ok(changes)
    }

    /// Opens the local partitions of `topic` that are not open yet and
    /// applies the image's assignment to each.
    fn apply_topic(
        &self,
        image: &MetadataImage,
        topic: &TopicInfo,
        caught_up: bool,
        now_ms: i64,
        changes: &mut Vec<RoleChange>,
    ) -> Result<(), LogError> {
        let local = topic
            .partitions
            .iter()
            .filter(|p| p.replicas.contains(&self.node_id));
        let log_config = topic_config::log_config(&topic.configs, &self.defaults);
        let min_insync_replicas = topic_config::min_insync_replicas(&topic.configs, &self.defaults);
        for info in local {
            let partition = match self.get(&topic.name, info.partition) {
                Some(existing) => {
                    existing.set_config(&log_config);
                    existing
                }
                None => {
                    let wanted = WantedPartition {
                        topic: &topic.name,
                        topic_id: topic.id,
                        index: info.partition,
                        config: log_config.clone(),
                    };
                    let Some(partition) = self.open_partition(image, &wanted, caught_up, now_ms)?
                    else {
                        continue;
                    };
                    let partition = Arc::new(partition);
                    let mut topics = self.topics.write().unwrap_or_else(PoisonError::into_inner);
                    topics
                        .entry(topic.name.clone())
                        .or_insert_with(|| TopicReplicas {
                            id: topic.id,
                            partitions: BTreeMap::new(),
                        })
                        .partitions
                        .insert(info.partition, Arc::clone(&partition));
                    partition
                }
            };
            let succession = self.succession(image, info, &partition, now_ms);
            let transition = partition.apply_assignment(
                self.node_id,
                info,
                min_insync_replicas,
                succession,
                now_ms,
            )?;
            if transition != Transition::Unchanged {
                tracing::debug!(
                    topic = topic.name,
                    partition = info.partition,
                    leader_epoch = info.leader_epoch,
                    ?transition,
                    "partition changed role"
                );
                changes.push(RoleChange {
                    partition,
                    transition,
                });
            }
        }
        Ok(())
    }

    /// Takes out of the map every replica the image no longer assigns to
    /// this broker, or whose topic was re-created under a new id.
    fn remove_unwanted(&self, image: &MetadataImage) -> Vec<Arc<Partition>> {
        let mut topics = self.topics.write().unwrap_or_else(PoisonError::into_inner);
        let mut removed = Vec::new();
        topics.retain(|name, replicas| match image.topic(name) {
            Some(topic) if topic.id == replicas.id => {
                replicas.partitions.retain(|index, partition| {
                    let keep = topic
                        .partition(*index)
                        .is_some_and(|p| p.replicas.contains(&self.node_id));
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
        let high_watermark = self
            .checkpointed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(topic.to_string(), index));
        Ok(Some(Partition::new(
            Arc::from(topic),
            wanted.topic_id,
            index,
            log,
            high_watermark,
            Arc::clone(&self.activity),
        )))
    }

    /// Writes every hosted partition's high watermark to the data
    /// directory's checkpoint.
    pub fn checkpoint_high_watermarks(&self) -> Result<(), LogError> {
        let mut entries: Vec<(String, i32, i64)> = self
            .all()
            .iter()
            .map(|p| (p.topic().to_string(), p.index(), p.high_watermark()))
            .collect();
        entries.sort_unstable();
        let mut last = self
            .last_checkpoint
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if last.as_ref() == Some(&entries) {
            return Ok(());
        }
        high_watermarks::write(&self.data_dir, &entries)?;
        *last = Some(entries);
        Ok(())
    }

    /// Checkpoints the high watermarks, flushes every log and marks it
    /// cleanly closed. Logs close on several threads at once: closing is
    /// mostly waiting for fsyncs, which the disk serves together (10,000
    /// partitions closed in 8 s rather than 13 s), and whoever stops a
    /// broker may not wait long (`docker stop` waits 10 s).
    pub fn close_all(&self) {
        if let Err(e) = self.checkpoint_high_watermarks() {
            tracing::error!(error = %e, "failed to checkpoint high watermarks");
        }
        let partitions = self.all();
        let started = std::time::Instant::now();
        let next = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..CLOSING_THREADS.min(partitions.len()) {
                scope.spawn(|| {
                    while let Some(partition) = partitions.get(next.fetch_add(1, Ordering::Relaxed))
                    {
                        if let Err(e) = partition.log().close() {
                            tracing::error!(topic = partition.topic(), partition = partition.index(), error = %e, "failed to close partition log");
                        }
                    }
                });
            }
        });
        tracing::info!(
            partitions = partitions.len(),
            elapsed_ms = started.elapsed().as_millis(),
            "closed every partition log"
        );
    }
}

#[cfg(test)]
mod tests;
