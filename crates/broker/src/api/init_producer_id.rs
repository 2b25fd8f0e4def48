//! InitProducerId for idempotent producers: a producer id never used
//! before, at epoch 0. Transactional producers are refused: Keel has no
//! transaction coordinator.

use kafka_protocol::{
    error::ResponseError,
    messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId},
};

use super::RequestContext;

pub(super) async fn handle(
    ctx: &RequestContext<'_>,
    request: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let failed = |error: ResponseError| {
        InitProducerIdResponse::default()
            .with_error_code(error.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    };
    if let Some(transactional_id) = &request.transactional_id {
        tracing::warn!(
            transactional_id = transactional_id.0.as_str(),
            "refusing a transactional producer: transactions are not supported"
        );
        return failed(ResponseError::InvalidRequest);
    }
    match ctx.broker.next_producer_id().await {
        Ok(id) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        Err(error) => {
            tracing::warn!(%error, "cannot allocate a producer id");
            failed(ResponseError::CoordinatorNotAvailable)
        }
    }
}
