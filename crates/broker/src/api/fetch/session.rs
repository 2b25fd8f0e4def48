//! A fetch's incremental session (KIP-227) as the request handler sees
//! it: which partitions a request names or forgets, which session it is
//! served in, and what the session records of the answer. The sessions
//! themselves are kept in `fetch_session`.

use kafka_protocol::{
    error::ResponseError,
    messages::{FetchRequest, TopicName, fetch_response::PartitionData},
};
use uuid::Uuid;

use super::Target;
use crate::{
    api::RequestContext,
    broker::now_ms,
    fetch_session::{Answered, FetchParams, Owner, PartitionKey, TopicKey},
};

/// Which session, if any, a fetch is served in.
pub(super) enum Session {
    None,
    New,
    Incremental { id: i32, epoch: i32 },
}

/// What a fetch read, for its session.
pub(super) struct Answer<'a> {
    pub(super) owner: Owner,
    pub(super) uses_topic_ids: bool,
    pub(super) targets: &'a [Target],
    pub(super) partitions: &'a [PartitionData],
}

/// Records what a fetch answered in its session: the session id the
/// response carries, and for an incremental fetch which partitions it
/// carries (all of them otherwise).
pub(super) fn session_step(
    ctx: &RequestContext<'_>,
    session: Session,
    answer: Answer<'_>,
) -> Result<(i32, Option<Vec<bool>>), ResponseError> {
    let answered = answer.targets.iter().zip(answer.partitions);
    match session {
        Session::None => Ok((0, None)),
        Session::New => {
            let answered = answered
                .map(|(t, data)| (t.key.clone(), t.params, answer_of(data)))
                .collect();
            let id = ctx.broker.fetch_sessions().create(
                answer.owner,
                answer.uses_topic_ids,
                answered,
                now_ms(),
            );
            Ok((id, None))
        }
        Session::Incremental { id, epoch } => {
            let answered: Vec<_> = answered
                .map(|(t, data)| (&t.key, answer_of(data)))
                .collect();
            let carried = ctx
                .broker
                .fetch_sessions()
                .answer_incremental(id, epoch, &answered)?;
            Ok((id, Some(carried)))
        }
    }
}

pub(super) fn requested_partitions(
    request: &FetchRequest,
    uses_topic_ids: bool,
) -> Vec<(PartitionKey, FetchParams)> {
    request
        .topics
        .iter()
        .flat_map(|topic| {
            let key = topic_key(uses_topic_ids, topic.topic_id, &topic.topic);
            topic.partitions.iter().map(move |p| {
                let params = FetchParams {
                    fetch_offset: p.fetch_offset,
                    last_fetched_epoch: p.last_fetched_epoch,
                    current_leader_epoch: p.current_leader_epoch,
                    log_start_offset: p.log_start_offset,
                    partition_max_bytes: p.partition_max_bytes,
                };
                let key = PartitionKey {
                    topic: key.clone(),
                    partition: p.partition,
                };
                (key, params)
            })
        })
        .collect()
}

pub(super) fn forgotten_partitions(
    request: &FetchRequest,
    uses_topic_ids: bool,
) -> Vec<PartitionKey> {
    request
        .forgotten_topics_data
        .iter()
        .flat_map(|topic| {
            let key = topic_key(uses_topic_ids, topic.topic_id, &topic.topic);
            topic.partitions.iter().map(move |&partition| PartitionKey {
                topic: key.clone(),
                partition,
            })
        })
        .collect()
}

fn topic_key(uses_topic_ids: bool, id: Uuid, name: &TopicName) -> TopicKey {
    if uses_topic_ids {
        TopicKey::Id(id)
    } else {
        TopicKey::Name(name.0.to_string())
    }
}

/// What a session needs to know of a partition's answer.
fn answer_of(data: &PartitionData) -> Answered {
    Answered {
        has_records: data.records.as_ref().is_some_and(|r| !r.is_empty()),
        has_error: data.error_code != 0,
        diverged: data.diverging_epoch.epoch >= 0 || data.diverging_epoch.end_offset >= 0,
        high_watermark: data.high_watermark,
        log_start_offset: data.log_start_offset,
    }
}
