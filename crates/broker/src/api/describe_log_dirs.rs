//! DescribeLogDirs: this broker's one log directory (its data directory),
//! every partition replica it holds there with its size and offset lag,
//! and the directory's total and usable bytes.
//!
//! The offset lag is Kafka's: how far the replica's log end offset trails
//! its own high watermark, so zero for every replica not being moved.

use std::{
    collections::{BTreeMap, HashSet},
    path::Path,
};

use kafka_protocol::{
    messages::{
        DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName,
        describe_log_dirs_response::{
            DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
        },
    },
    protocol::StrBytes,
};

use super::RequestContext;
use crate::partition::Partition;

pub(super) fn handle(
    ctx: &RequestContext<'_>,
    request: DescribeLogDirsRequest,
) -> DescribeLogDirsResponse {
    let asked: Option<HashSet<(&str, i32)>> = request.topics.as_ref().map(|topics| {
        topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| (t.topic.as_str(), *p)))
            .collect()
    });
    let wanted = |partition: &Partition| {
        asked
            .as_ref()
            .is_none_or(|asked| asked.contains(&(partition.topic(), partition.index())))
    };
    let data_dir = &ctx.broker.config.data_dir;
    let replicas: Vec<_> = ctx
        .broker
        .replicas
        .all()
        .into_iter()
        .filter(|p| wanted(p))
        .collect();
    let (topics, space) = crate::blocking::run(|| (describe(&replicas), disk_space(data_dir)));
    let mut result = DescribeLogDirsResult::default()
        .with_log_dir(StrBytes::from_string(log_dir_name(data_dir)))
        .with_topics(topics);
    match space {
        Ok((total_bytes, usable_bytes)) => {
            result = result
                .with_total_bytes(total_bytes)
                .with_usable_bytes(usable_bytes);
        }
        Err(error) => {
            tracing::warn!(%error, dir = %data_dir.display(), "cannot read the log directory's space");
            result = result.with_total_bytes(-1).with_usable_bytes(-1);
        }
    }
    DescribeLogDirsResponse::default().with_results(vec![result])
}

/// Kafka names a log directory by its absolute path.
pub(super) fn log_dir_name(data_dir: &Path) -> String {
    std::path::absolute(data_dir)
        .unwrap_or_else(|_| data_dir.to_path_buf())
        .display()
        .to_string()
}

/// Takes each log's lock, so it runs off the async workers.
fn describe(replicas: &[std::sync::Arc<Partition>]) -> Vec<DescribeLogDirsTopic> {
    let mut topics: BTreeMap<&str, Vec<DescribeLogDirsPartition>> = BTreeMap::new();
    for replica in replicas {
        let (size, log_end_offset) = {
            let log = replica.log();
            (log.size_in_bytes(), log.log_end_offset())
        };
        topics.entry(replica.topic()).or_default().push(
            DescribeLogDirsPartition::default()
                .with_partition_index(replica.index())
                .with_partition_size(i64::try_from(size).unwrap_or(i64::MAX))
                .with_offset_lag((replica.high_watermark() - log_end_offset).max(0)),
        );
    }
    topics
        .into_iter()
        .map(|(name, mut partitions)| {
            partitions.sort_by_key(|p| p.partition_index);
            DescribeLogDirsTopic::default()
                .with_name(TopicName(StrBytes::from_string(name.to_string())))
                .with_partitions(partitions)
        })
        .collect()
}

/// The directory's file system size and the bytes an unprivileged user may
/// still write, as Kafka reports them.
fn disk_space(dir: &Path) -> std::io::Result<(i64, i64)> {
    let stat = rustix::fs::statvfs(dir)?;
    let bytes =
        |blocks: u64| i64::try_from(blocks.saturating_mul(stat.f_frsize)).unwrap_or(i64::MAX);
    Ok((bytes(stat.f_blocks), bytes(stat.f_bavail)))
}
