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
        alter_partition_reassignments_response::{
            ReassignablePartitionResponse, ReassignableTopicResponse,
        },
    },
    protocol::StrBytes,
};
use keel_raft_metadata::{
    ApplyError, MetadataImage, MetadataRecord, ProposalError, Record,
    image::reassignment,
    records::{ChangePartitionReplicas, RecordBatch},
};

use super::{RequestContext, topics::admin_timeout};
use crate::error::ReassignError;

/// How many times the changes are decided again when a partition changed
/// between deciding and committing (an ISR update, say).
const ATTEMPTS: usize = 3;

pub(super) async fn handle(
    ctx: &RequestContext<'_>,
    request: AlterPartitionReassignmentsRequest,
) -> AlterPartitionReassignmentsResponse {
    let timeout = admin_timeout(request.timeout_ms);
    let mut attempt = 1;
    let outcomes = loop {
        let (outcomes, records) = decide(&ctx.broker.image(), &request);
        if records.is_empty() {
            break outcomes;
        }
        let batch = Record::Batch(RecordBatch { records }).into();
        match ctx.broker.propose(batch, timeout).await {
            Ok(_) => break outcomes,
            Err(ProposalError::Rejected(ApplyError::InBatch { error, .. }))
                if matches!(*error, ApplyError::StalePartitionEpoch { .. })
                    && attempt < ATTEMPTS =>
            {
                attempt += 1;
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
                    let target = p
                        .replicas
                        .as_ref()
                        .map(|ids| ids.iter().map(|id| id.0).collect::<Vec<i32>>());
                    let decided = change_for(
                        &scratch,
                        &topic.name.0,
                        p.partition_index,
                        target.as_deref(),
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
            Ok(reassignment::start(topic, info, target))
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
