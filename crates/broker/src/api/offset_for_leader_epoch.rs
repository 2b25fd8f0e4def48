//! OffsetForLeaderEpoch: where a leader epoch ended in this replica's log,
//! so a consumer or follower can detect that its position diverged.

use kafka_protocol::messages::{
    OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse,
    offset_for_leader_epoch_response::{EpochEndOffset, OffsetForLeaderTopicResult},
};

use super::{RequestContext, topics::leader_replica};

pub(super) async fn handle(
    ctx: &RequestContext<'_>,
    request: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let image = ctx.broker.image();
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let response = EpochEndOffset::default().with_partition(p.partition);
                    match leader_replica(
                        ctx.broker,
                        &image,
                        &topic.topic,
                        p.partition,
                        p.current_leader_epoch,
                    ) {
                        Ok(replica) => {
                            let (epoch, end_offset) = crate::blocking::run(|| {
                                replica.log().end_offset_for_epoch(p.leader_epoch)
                            });
                            response
                                .with_leader_epoch(epoch)
                                .with_end_offset(end_offset)
                        }
                        Err(error) => response
                            .with_error_code(error.code().code())
                            .with_leader_epoch(-1)
                            .with_end_offset(-1),
                    }
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(topic.topic)
                .with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
