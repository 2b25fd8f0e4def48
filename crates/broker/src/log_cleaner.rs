//! Schedules compaction of the partitions of compacted topics
//! (`cleanup.policy` with `compact`).
//!
//! Every `--log-cleaner-backoff-ms` the cleaner looks at each local replica
//! of a compacted topic and cleans it when it is due ([`due`]): never cleaned
//! since the broker started, or its dirty ratio (the share of its bytes
//! written since the last cleaning) has reached the topic's
//! `min.cleanable.dirty.ratio`, or it has been written to and its
//! `max.compaction.lag.ms` has passed since the last cleaning (whatever the
//! ratio), or `delete.retention.ms` has passed since the last cleaning so
//! that expired tombstones go. Without a dirty-offset checkpoint in the log,
//! the bytes written since are estimated as the growth of the log since it
//! was last cleaned. The active segment rolls by the maximum compaction lag
//! (see `topic_config::log_config`), so a record is cleaned within about
//! that lag after its segment rolled; segments holding records younger than
//! `min.compaction.lag.ms` are left for a later pass.
//!
//! A pass runs on a blocking thread, so the async workers keep serving other
//! partitions, and holds the partition's log lock only for its two short
//! ends: `begin_clean` (a snapshot of segment handles and settings) and
//! `complete_clean` (renaming the cleaned segments in). Building the key map
//! and writing the cleaned segments, the part that reads and writes the
//! partition's data, runs in between without the lock, so produce, fetch
//! and replication on the partition go on meanwhile.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use uuid::Uuid;

use crate::{
    broker::{Broker, now_ms},
    partition::Partition,
    topic_config,
};

/// What a partition looked like after its last cleaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastClean {
    pub size_after: u64,
    pub at_ms: i64,
}

/// Whether a partition of `size` bytes should be cleaned now.
pub fn due(last: Option<LastClean>, size: u64, now_ms: i64, rules: &CleaningRules) -> bool {
    let Some(last) = last else {
        return size > 0;
    };
    if size == 0 {
        return false;
    }
    let dirty = size.saturating_sub(last.size_after);
    let ratio = dirty as f64 / size as f64;
    let since_last = now_ms - last.at_ms;
    (dirty > 0 && (ratio >= rules.min_dirty_ratio || since_last >= rules.max_compaction_lag_ms))
        || since_last >= rules.delete_retention_ms
}

/// A compacted topic's settings that decide when its partitions are due.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CleaningRules {
    pub min_dirty_ratio: f64,
    pub max_compaction_lag_ms: i64,
    pub delete_retention_ms: i64,
}

/// Runs until the broker stops, cleaning compacted partitions as they
/// become due.
pub async fn run(broker: Arc<Broker>) {
    let period = Duration::from_millis(broker.config.cleaner_backoff_ms);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut history: HashMap<(Uuid, i32), LastClean> = HashMap::new();
    loop {
        tick.tick().await;
        let image = broker.image();
        let mut seen = Vec::new();
        for partition in broker.replicas.all() {
            let Some(topic) = image.topic(partition.topic()) else {
                continue;
            };
            let log_config = topic_config::log_config(&topic.configs, broker.replicas.defaults());
            if !log_config.compact {
                continue;
            }
            let key = (partition.topic_id(), partition.index());
            seen.push(key);
            let size = crate::blocking::run(|| partition.log().size_in_bytes());
            let now = now_ms();
            let rules = CleaningRules {
                min_dirty_ratio: topic_config::min_cleanable_dirty_ratio(&topic.configs),
                max_compaction_lag_ms: topic_config::max_compaction_lag_ms(&topic.configs),
                delete_retention_ms: log_config.delete_retention_ms,
            };
            if !due(history.get(&key).copied(), size, now, &rules) {
                continue;
            }
            if let Some(size_after) = clean(Arc::clone(&partition), now).await {
                history.insert(
                    key,
                    LastClean {
                        size_after,
                        at_ms: now,
                    },
                );
            }
        }
        history.retain(|key, _| seen.contains(key));
    }
}

/// Cleans one partition; returns its size afterwards, or `None` if the
/// pass failed (logged).
async fn clean(partition: Arc<Partition>, now: i64) -> Option<u64> {
    let started = Instant::now();
    let worker = Arc::clone(&partition);
    let outcome = tokio::task::spawn_blocking(move || {
        let high_watermark = worker.high_watermark();
        let plan = worker.log().begin_clean(now, high_watermark)?;
        let prepared = plan.prepare()?;
        worker.log().complete_clean(prepared)
    })
    .await;
    match outcome {
        Ok(Ok(outcome)) => {
            if outcome.records_removed > 0
                || outcome.segments_deleted > 0
                || outcome.segments_skipped > 0
            {
                tracing::info!(
                    topic = partition.topic(),
                    partition = partition.index(),
                    records_removed = outcome.records_removed,
                    segments_rewritten = outcome.segments_rewritten,
                    segments_deleted = outcome.segments_deleted,
                    segments_skipped = outcome.segments_skipped,
                    bytes_before = outcome.bytes_before,
                    bytes_after = outcome.bytes_after,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "cleaned compacted partition"
                );
            }
            // What was appended during the pass, and what it left for being
            // younger than the minimum compaction lag, is still dirty.
            Some(
                outcome
                    .bytes_after
                    .saturating_sub(outcome.bytes_appended + outcome.bytes_held_back),
            )
        }
        Ok(Err(e)) => {
            tracing::error!(topic = partition.topic(), partition = partition.index(), error = %e, "log cleaning failed");
            None
        }
        Err(e) => {
            tracing::error!(topic = partition.topic(), partition = partition.index(), error = %e, "log cleaning task failed");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use keel_log::{
        LogConfig, PartitionLog,
        testing::{BatchSpec, build_keyed_batch},
    };

    use super::*;

    const DAY: i64 = 86_400_000;

    fn rules(min_dirty_ratio: f64) -> CleaningRules {
        CleaningRules {
            min_dirty_ratio,
            max_compaction_lag_ms: i64::MAX,
            delete_retention_ms: DAY,
        }
    }

    #[test]
    fn a_partition_is_cleaned_once_after_start_then_by_dirty_ratio() {
        assert!(due(None, 100, 0, &rules(0.5)));
        assert!(
            !due(None, 0, 0, &rules(0.5)),
            "nothing to clean in an empty log"
        );
        let last = Some(LastClean {
            size_after: 100,
            at_ms: 0,
        });
        assert!(!due(last, 100, 1_000, &rules(0.5)), "nothing written since");
        assert!(!due(last, 150, 1_000, &rules(0.5)), "a third dirty");
        assert!(due(last, 200, 1_000, &rules(0.5)), "half dirty");
        assert!(
            due(last, 101, 1_000, &rules(0.0)),
            "ratio 0 cleans any growth"
        );
        assert!(!due(last, 80, 1_000, &rules(0.5)), "shrunk by retention");
    }

    #[test]
    fn tombstones_get_a_pass_after_delete_retention() {
        let last = Some(LastClean {
            size_after: 100,
            at_ms: 0,
        });
        assert!(!due(last, 100, DAY - 1, &rules(0.5)));
        assert!(due(last, 100, DAY, &rules(0.5)));
    }

    #[test]
    fn a_written_partition_is_cleaned_by_its_maximum_compaction_lag_whatever_its_ratio() {
        let last = Some(LastClean {
            size_after: 1_000,
            at_ms: 0,
        });
        let lagging = CleaningRules {
            max_compaction_lag_ms: 5_000,
            ..rules(0.5)
        };
        assert!(
            !due(last, 1_010, 4_999, &lagging),
            "a little dirty, lag not reached"
        );
        assert!(due(last, 1_010, 5_000, &lagging), "lag reached");
        assert!(!due(last, 1_000, 9_000, &lagging), "nothing written since");
    }

    #[tokio::test]
    async fn a_pass_compacts_a_partition_and_reports_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            compact: true,
            ..LogConfig::default()
        };
        let (log, _) = PartitionLog::open(dir.path(), config, 0).unwrap();
        let partition = Partition::leading_alone(log);
        let append = |value: &str| {
            let batch = build_keyed_batch(&BatchSpec::default(), &[(Some("k"), Some(value))]);
            partition
                .append_as_leader(&batch, None, 0)
                .unwrap()
                .base_offset
        };
        for value in ["1", "2", "3"] {
            append(value);
        }
        partition.log().roll(0).unwrap();
        assert_eq!(append("4"), 3);
        let before = partition.log().size_in_bytes();

        let size_after = clean(Arc::clone(&partition), now_ms()).await.unwrap();
        assert!(size_after < before);
        assert_eq!(size_after, partition.log().size_in_bytes());
        let log = partition.log();
        assert_eq!(log.segment_count(), 1, "the emptied segment is deleted");
        let slice = log.read(0, 1 << 20, i64::MAX, true).unwrap().unwrap();
        assert_eq!((slice.first_offset(), slice.last_offset()), (3, 3));
    }
}
