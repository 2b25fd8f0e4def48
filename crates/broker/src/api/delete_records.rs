//! DeleteRecords: moves a partition's log start offset forward; segments
//! wholly below it are deleted.

use kafka_protocol::messages::{
    DeleteRecordsRequest, DeleteRecordsResponse,
    delete_records_response::{DeleteRecordsPartitionResult, DeleteRecordsTopicResult},
};

use super::{RequestContext, topics::leader_replica};
use crate::{broker::now_ms, error::PartitionError, partition::Partition};

/// Asks to delete everything below the high watermark.
const HIGH_WATERMARK: i64 = -1;

pub(super) async fn handle(
    ctx: &RequestContext<'_>,
    request: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    let image = ctx.broker.image();
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let result =
                        leader_replica(ctx.broker, &image, &topic.name, p.partition_index, -1)
                            .and_then(|replica| {
                                crate::blocking::run(|| delete_before(&replica, p.offset))
                            });
                    let response = DeleteRecordsPartitionResult::default()
                        .with_partition_index(p.partition_index);
                    match result {
                        Ok(low_watermark) => response.with_low_watermark(low_watermark),
                        Err(error) => response
                            .with_low_watermark(-1)
                            .with_error_code(error.code().code()),
                    }
                })
                .collect();
            DeleteRecordsTopicResult::default()
                .with_name(topic.name)
                .with_partitions(partitions)
        })
        .collect();
    DeleteRecordsResponse::default().with_topics(topics)
}

fn delete_before(replica: &Partition, offset: i64) -> Result<i64, PartitionError> {
    let high_watermark = replica.high_watermark();
    let offset = if offset == HIGH_WATERMARK {
        high_watermark
    } else {
        offset
    };
    if offset < 0 || offset > high_watermark {
        return Err(PartitionError::InvalidOffset {
            offset,
            reason: "beyond the high watermark",
        });
    }
    let low_watermark = replica.log().delete_records_before(offset, now_ms())?;
    Ok(low_watermark)
}
