//! DeleteTopics, by name or (v6+) by topic id. The partitions' logs are
//! removed as the deletion is applied.

use std::time::Duration;

use kafka_protocol::{
    messages::{
        DeleteTopicsRequest, DeleteTopicsResponse, TopicName,
        delete_topics_response::DeletableTopicResult,
    },
    protocol::StrBytes,
};
use uuid::Uuid;

use super::{RequestContext, internal_topic::refuse_client_change, topics::admin_timeout};
use crate::{broker::Broker, error::AdminError};
use keel_raft_metadata::{Record, records::DeleteTopic};

/// From this version topics may be named by id.
const TOPIC_STATE_VERSION: i16 = 6;
/// The first version carrying error messages.
const ERROR_MESSAGE_VERSION: i16 = 5;

pub(super) async fn handle(
    ctx: &RequestContext<'_>,
    request: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    let targets: Vec<(Option<String>, Uuid)> = if ctx.version >= TOPIC_STATE_VERSION {
        request
            .topics
            .into_iter()
            .map(|t| (t.name.map(|n| n.0.to_string()), t.topic_id))
            .collect()
    } else {
        request
            .topic_names
            .into_iter()
            .map(|n| (Some(n.0.to_string()), Uuid::nil()))
            .collect()
    };
    let timeout = admin_timeout(request.timeout_ms);
    let mut responses = Vec::with_capacity(targets.len());
    for (name, id) in targets {
        responses.push({
            let result = delete(ctx.broker, name.as_deref(), id, timeout).await;
            let (name, id) = match &result {
                Ok((name, id)) => (Some(name.clone()), *id),
                Err(_) => (name, id),
            };
            let id = if ctx.version >= TOPIC_STATE_VERSION {
                id
            } else {
                Uuid::nil()
            };
            let response = DeletableTopicResult::default()
                .with_name(name.map(|n| TopicName(StrBytes::from_string(n))))
                .with_topic_id(id);
            match result {
                Ok(_) => response,
                Err(error) => response
                    .with_error_code(error.code().code())
                    .with_error_message(
                        (ctx.version >= ERROR_MESSAGE_VERSION)
                            .then(|| StrBytes::from_string(error.to_string())),
                    ),
            }
        });
    }
    DeleteTopicsResponse::default().with_responses(responses)
}

async fn delete(
    broker: &Broker,
    name: Option<&str>,
    id: Uuid,
    timeout: Duration,
) -> Result<(String, Uuid), AdminError> {
    let image = broker.image();
    let topic = match name {
        Some(name) => image
            .topic(name)
            .ok_or_else(|| AdminError::UnknownTopic(name.to_string()))?,
        None => image.topic_by_id(&id).ok_or(AdminError::UnknownTopicId)?,
    };
    refuse_client_change(&topic.name, "delete")?;
    broker
        .propose(
            Record::DeleteTopic(DeleteTopic {
                name: topic.name.clone(),
            })
            .into(),
            timeout,
        )
        .await?;
    tracing::info!(topic = topic.name, "deleted topic");
    Ok((topic.name.clone(), topic.id))
}
