//! CreatePartitions: grows a topic to a new partition count, placing the
//! new partitions like CreateTopics does or as the request assigns them.

use std::time::Duration;

use kafka_protocol::{
    messages::{
        CreatePartitionsRequest, CreatePartitionsResponse,
        create_partitions_request::CreatePartitionsTopic,
        create_partitions_response::CreatePartitionsTopicResult,
    },
    protocol::StrBytes,
};

use super::{
    RequestContext,
    create_topics::{
        MAX_PARTITIONS_PER_REQUEST, assignment, check_capacity, check_replica_list, place_replicas,
    },
    internal_topic::refuse_client_change,
    topics::admin_timeout,
};
use crate::{broker::Broker, error::AdminError};
use keel_raft_metadata::{Record, records::CreatePartitions};

pub(super) async fn handle(
    ctx: &RequestContext<'_>,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let timeout = admin_timeout(request.timeout_ms);
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in &request.topics {
        let result = CreatePartitionsTopicResult::default().with_name(topic.name.clone());
        results.push(
            match grow(ctx.broker, topic, request.validate_only, timeout).await {
                Ok(()) => result,
                Err(error) => result
                    .with_error_code(error.code().code())
                    .with_error_message(Some(StrBytes::from_string(error.to_string()))),
            },
        );
    }
    CreatePartitionsResponse::default().with_results(results)
}

async fn grow(
    broker: &Broker,
    request: &CreatePartitionsTopic,
    validate_only: bool,
    timeout: Duration,
) -> Result<(), AdminError> {
    let name = request.name.0.to_string();
    refuse_client_change(&name, "add partitions to")?;
    let image = broker.image();
    let topic = image
        .topic(&name)
        .ok_or_else(|| AdminError::UnknownTopic(name.clone()))?;
    let existing = topic.partitions.len() as i32;
    if request.count <= existing {
        return Err(AdminError::InvalidPartitions(format!(
            "topic '{name}' has {existing} partitions; the new count {} must be larger",
            request.count
        )));
    }
    let added = request.count - existing;
    if added > MAX_PARTITIONS_PER_REQUEST {
        return Err(AdminError::PolicyViolation(format!(
            "adding {added} partitions in one request; the limit is {MAX_PARTITIONS_PER_REQUEST}"
        )));
    }
    let replication_factor = topic
        .partitions
        .first()
        .map_or(1, |p| p.replicas.len() as i16);
    let partitions = match request.assignments.as_ref().filter(|a| !a.is_empty()) {
        Some(assignments) => {
            if assignments.len() != added as usize {
                return Err(AdminError::InvalidReplicaAssignment(format!(
                    "{added} new partitions but {} assignments",
                    assignments.len()
                )));
            }
            assignments
                .iter()
                .enumerate()
                .map(|(i, a)| {
                    let replicas: Vec<i32> = a.broker_ids.iter().map(|b| b.0).collect();
                    check_replica_list(&image, &replicas)?;
                    if replicas.len() != replication_factor as usize {
                        return Err(AdminError::InvalidReplicaAssignment(format!(
                            "the topic has {replication_factor} replicas per partition, the assignment {}",
                            replicas.len()
                        )));
                    }
                    Ok(assignment(existing + i as i32, replicas))
                })
                .collect::<Result<Vec<_>, AdminError>>()?
        }
        None => place_replicas(&image, existing, added, replication_factor)?,
    };
    check_capacity(&image, &partitions)?;
    if validate_only {
        return Ok(());
    }
    broker
        .propose(
            Record::CreatePartitions(CreatePartitions {
                name: name.clone(),
                partitions,
            })
            .into(),
            timeout,
        )
        .await?;
    tracing::info!(topic = name, partitions = request.count, "added partitions");
    Ok(())
}
