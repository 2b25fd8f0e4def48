//! AlterPartitionReassignments: starts moving partitions to new replica
//! sets, or cancels a move in progress (a null replica list), as a KRaft
//! controller does. The request's changes are decided against one image,
//! each from the state the ones before it leave (a partition named twice
//! ends where the last names it), and committed as one batch, all or
//! nothing. What follows is the controller's (see
//! `keel_leader_elector::plan::reassignments`): new replicas catch up into
//! the ISR, a leaving leader hands over, the reassignment completes.

use kafka_protocol::{
    messages::{
        AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse,
        alter_partition_reassignments_request::ReassignablePartition,
        alter_partition_reassignments_response::{
            ReassignablePartitionResponse, ReassignableTopicResponse,
        },
    },
    protocol::StrBytes,
};
use keel_raft_metadata::{
    MetadataImage, MetadataRecord, ProposalError, Record,
    image::reassignment,
    records::{ChangePartitionReplicas, LeaderChangeReason, RecordBatch},
};

use super::{RequestContext, topics::admin_timeout};
use crate::{
    broker::Broker,
    error::ReassignError,
    replication::leadership::{Target, move_leader},
};

pub(super) async fn handle(
    ctx: &RequestContext<'_>,
    request: AlterPartitionReassignmentsRequest,
) -> AlterPartitionReassignmentsResponse {
    let timeout = admin_timeout(request.timeout_ms);
    let deadline = tokio::time::Instant::now() + timeout;
    // A partition that changed between deciding and committing (an ISR
    // update, say) makes the batch stale: decided again, until the
    // request's timeout, after which the client is told to retry.
    let outcomes = loop {
        hand_over_from_leaders_that_leave(ctx.broker, &request, deadline).await;
        let (outcomes, records) = decide(&ctx.broker.image(), &request);
        if records.is_empty() {
            break outcomes;
        }
        let batch = Record::Batch(RecordBatch { records }).into();
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match ctx.broker.propose(batch, left).await {
            Ok(_) => break outcomes,
            Err(ProposalError::Rejected(error)) if error.is_stale() => {
                if tokio::time::Instant::now() >= deadline {
                    break fail_changes(outcomes, &ProposalError::Timeout);
                }
            }
            Err(error) => break fail_changes(outcomes, &error),
        }
    };
    let responses = request
        .topics
        .iter()
        .zip(outcomes)
        .map(|(topic, partitions)| {
            let partitions = topic
                .partitions
                .iter()
                .zip(partitions)
                .map(|(p, outcome)| {
                    let response = ReassignablePartitionResponse::default()
                        .with_partition_index(p.partition_index);
                    match outcome {
                        Outcome::Done | Outcome::Changed => response,
                        Outcome::Failed(error) => response
                            .with_error_code(error.code().code())
                            .with_error_message(Some(StrBytes::from_string(error.to_string()))),
                    }
                })
                .collect();
            ReassignableTopicResponse::default()
                .with_name(topic.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    AlterPartitionReassignmentsResponse::default()
        .with_allow_replication_factor_change(request.allow_replication_factor_change)
        .with_responses(responses)
}

/// A leader that is one of the replicas being added, and that the change
/// asked for drops (a cancel, or a new target without it), first hands
/// over to the first live replica in the ISR that stays, in a leader change
/// of its own (reason `reassignment`): the change then removes a replica
/// that no longer leads, and its successor waits for it to follow. A
/// partition none can take over is left to `reassignment` to refuse.
async fn hand_over_from_leaders_that_leave(
    broker: &Broker,
    request: &AlterPartitionReassignmentsRequest,
    deadline: tokio::time::Instant,
) {
    let mut asked = Vec::new();
    for topic in &request.topics {
        for p in &topic.partitions {
            asked.push((topic.name.0.to_string(), p.partition_index, target(p)));
        }
    }
    for (topic, index, target) in asked {
        let topic = topic.as_str();
        let image = broker.image();
        let Some(info) = image.topic(topic).and_then(|t| t.partition(index)) else {
            continue;
        };
        let staying = target.unwrap_or_else(|| info.original_replicas());
        if !info.adding_replicas.contains(&info.leader) || staying.contains(&info.leader) {
            continue;
        }
        let Some(successor) = staying
            .into_iter()
            .find(|&id| info.isr.contains(&id) && image.is_unfenced(id))
        else {
            continue;
        };
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let reason = LeaderChangeReason::Reassignment;
        let moved = move_leader(
            broker,
            topic,
            index,
            Target::Broker(successor),
            reason,
            left,
        );
        if let Err(error) = moved.await {
            tracing::info!(topic, partition = index, %error, "the leader being added did not hand over");
        }
    }
}

/// What became of one partition of the request.
#[derive(Debug)]
enum Outcome {
    /// Nothing to change: the replicas are already the target.
    Done,
    /// A change is in the batch.
    Changed,
    Failed(ReassignError),
}

/// Every partition's outcome, by topic and partition as the request lists
/// them, and the records of the changes.
fn decide(
    image: &MetadataImage,
    request: &AlterPartitionReassignmentsRequest,
) -> (Vec<Vec<Outcome>>, Vec<MetadataRecord>) {
    let mut scratch = image.clone();
    let mut records = Vec::new();
    let outcomes = request
        .topics
        .iter()
        .map(|topic| {
            topic
                .partitions
                .iter()
                .map(|p| {
                    let decided = change_for(
                        &scratch,
                        &topic.name.0,
                        p.partition_index,
                        target(p).as_deref(),
                        request.allow_replication_factor_change,
                    );
                    match decided {
                        Ok(None) => Outcome::Done,
                        Ok(Some(change)) => {
                            let record: MetadataRecord =
                                Record::ChangePartitionReplicas(change).into();
                            match scratch.apply(&record, 0) {
                                Ok(()) => {
                                    records.push(record);
                                    Outcome::Changed
                                }
                                Err(error) => {
                                    Outcome::Failed(ProposalError::Rejected(error).into())
                                }
                            }
                        }
                        Err(error) => Outcome::Failed(error),
                    }
                })
                .collect()
        })
        .collect();
    (outcomes, records)
}

/// The replicas a partition of the request is to move to; `None` cancels.
fn target(partition: &ReassignablePartition) -> Option<Vec<i32>> {
    partition
        .replicas
        .as_ref()
        .map(|ids| ids.iter().map(|id| id.0).collect())
}

/// The change one partition asks for: to `target`, or a cancel (`None`).
fn change_for(
    image: &MetadataImage,
    topic: &str,
    partition: i32,
    target: Option<&[i32]>,
    allow_replication_factor_change: bool,
) -> Result<Option<ChangePartitionReplicas>, ReassignError> {
    let info = image
        .topic(topic)
        .ok_or_else(|| ReassignError::UnknownTopic(topic.to_string()))?
        .partition(partition)
        .ok_or_else(|| ReassignError::UnknownPartition {
            topic: topic.to_string(),
            partition,
        })?;
    match target {
        None => Ok(Some(reassignment::cancel(topic, info)?)),
        Some(target) => {
            image.check_reassignment_target(info, target, allow_replication_factor_change)?;
            Ok(reassignment::start(topic, info, target)?)
        }
    }
}

/// The outcomes once the batch of changes failed to commit: every change
/// fails with the batch's error.
fn fail_changes(outcomes: Vec<Vec<Outcome>>, error: &ProposalError) -> Vec<Vec<Outcome>> {
    outcomes
        .into_iter()
        .map(|partitions| {
            partitions
                .into_iter()
                .map(|outcome| match outcome {
                    Outcome::Changed => Outcome::Failed(error.clone().into()),
                    other => other,
                })
                .collect()
        })
        .collect()
}
