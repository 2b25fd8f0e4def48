//! ListOffsets: the earliest offset, the latest offset (the high watermark:
//! the offset after the last committed record), the offset of the record
//! with the largest timestamp, or the first offset at or after a timestamp.

use kafka_protocol::messages::{
    ListOffsetsRequest, ListOffsetsResponse,
    list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse},
};

use super::{RequestContext, topics::leader_replica};
use crate::{error::PartitionError, partition::Partition};

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
/// The first offset of the local log (v8, KIP-405): without tiered
/// storage, the log start offset.
const EARLIEST_LOCAL: i64 = -4;
/// The last offset in tiered storage (v9, KIP-1005): none without it.
const LATEST_TIERED: i64 = -5;
/// The first version reporting the leader epoch of the offset.
const LEADER_EPOCH_VERSION: i16 = 4;

pub(super) async fn handle(
    ctx: &RequestContext<'_>,
    request: ListOffsetsRequest,
) -> ListOffsetsResponse {
    let image = ctx.broker.image();
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let result = leader_replica(
                        ctx.broker,
                        &image,
                        &topic.name,
                        p.partition_index,
                        p.current_leader_epoch,
                    )
                    .and_then(|replica| crate::blocking::run(|| lookup(&replica, p.timestamp)));
                    let response = ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index);
                    match result {
                        Ok((timestamp, offset, leader_epoch)) => response
                            .with_timestamp(timestamp)
                            .with_offset(offset)
                            .with_leader_epoch(if ctx.version >= LEADER_EPOCH_VERSION {
                                leader_epoch
                            } else {
                                -1
                            }),
                        Err(error) => response
                            .with_error_code(error.code().code())
                            .with_timestamp(-1)
                            .with_offset(-1)
                            .with_leader_epoch(-1),
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}

/// `(timestamp, offset, leader_epoch)` for one partition; -1s when no
/// record matches.
fn lookup(replica: &Partition, timestamp: i64) -> Result<(i64, i64, i32), PartitionError> {
    let high_watermark = replica.high_watermark();
    let log = replica.log();
    let epoch_of = |offset: i64| {
        log.epoch_entries()
            .iter()
            .rev()
            .find(|e| e.start_offset <= offset)
            .map_or(-1, |e| e.epoch)
    };
    let found = match timestamp {
        LATEST => return Ok((-1, high_watermark, log.latest_epoch().unwrap_or(-1))),
        EARLIEST | EARLIEST_LOCAL => {
            let start = log.log_start_offset();
            return Ok((-1, start, epoch_of(start)));
        }
        LATEST_TIERED => return Ok((-1, -1, -1)),
        MAX_TIMESTAMP => log.max_timestamp_offset()?,
        t if t >= 0 => log.offset_for_timestamp(t)?,
        _ => {
            return Err(PartitionError::InvalidOffset {
                offset: timestamp,
                reason: "unsupported special timestamp",
            });
        }
    };
    Ok(match found {
        Some((ts, offset)) if offset < high_watermark => (ts, offset, epoch_of(offset)),
        _ => (-1, -1, -1),
    })
}
