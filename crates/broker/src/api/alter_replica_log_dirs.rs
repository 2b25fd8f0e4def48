//! AlterReplicaLogDirs, answered as Kafka answers a broker with a single
//! log directory: moving a replica to the directory it is already in
//! succeeds and changes nothing, any other directory is LOG_DIR_NOT_FOUND,
//! a partition this broker holds no replica of is REPLICA_NOT_AVAILABLE,
//! and one the cluster does not have is UNKNOWN_TOPIC_OR_PARTITION.

use kafka_protocol::{
    error::ResponseError,
    messages::{
        AlterReplicaLogDirsRequest, AlterReplicaLogDirsResponse,
        alter_replica_log_dirs_response::{
            AlterReplicaLogDirPartitionResult, AlterReplicaLogDirTopicResult,
        },
    },
};

use super::{RequestContext, describe_log_dirs::log_dir_name};

pub(super) fn handle(
    ctx: &RequestContext<'_>,
    request: AlterReplicaLogDirsRequest,
) -> AlterReplicaLogDirsResponse {
    let log_dir = log_dir_name(&ctx.broker.config.data_dir);
    let image = ctx.broker.image();
    let mut results = Vec::new();
    for dir in &request.dirs {
        let known_dir = log_dir_name(std::path::Path::new(dir.path.as_str())) == log_dir;
        for topic in &dir.topics {
            let partitions = topic
                .partitions
                .iter()
                .map(|&index| {
                    let error = if !known_dir {
                        Some(ResponseError::LogDirNotFound)
                    } else if ctx.broker.replicas.get(&topic.name, index).is_some() {
                        None
                    } else if image
                        .topic(&topic.name)
                        .is_some_and(|t| t.partition(index).is_some())
                    {
                        Some(ResponseError::ReplicaNotAvailable)
                    } else {
                        Some(ResponseError::UnknownTopicOrPartition)
                    };
                    AlterReplicaLogDirPartitionResult::default()
                        .with_partition_index(index)
                        .with_error_code(error.map_or(0, |e| e.code()))
                })
                .collect();
            results.push(
                AlterReplicaLogDirTopicResult::default()
                    .with_topic_name(topic.name.clone())
                    .with_partitions(partitions),
            );
        }
    }
    AlterReplicaLogDirsResponse::default().with_results(results)
}
