//! InitProducerId: gives an idempotent producer its producer id and epoch.
//!
//! Without a transactional id the answer is always a fresh id at epoch 0, as Kafka's: the
//! producer id and epoch a KIP-360 client sends along are not trusted (nothing on the broker
//! ties an id to a client), and an idempotent client bumps its epoch itself, starting the
//! new epoch at sequence 0, asking for a new id only when the epoch would overflow. With a
//! transactional id the request belongs to a transaction coordinator, which Karst does not
//! have yet; it is refused the way Produce refuses transactional batches.

use proto_kafka::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use proto_kafka::ResponseError;

use super::RequestContext;
use crate::broker::SharedBroker;
use crate::error::ApiError;

pub async fn handle(
    broker: SharedBroker,
    _context: RequestContext,
    request: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let outcome = match &request.transactional_id {
        None => broker.producer_ids.next_id(&broker).await,
        Some(transactional_id) => Err(transactional(transactional_id.as_str())),
    };
    match outcome {
        Ok(producer_id) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(producer_id.0))
            .with_producer_epoch(0),
        Err(error) => {
            tracing::debug!(%error, "InitProducerId refused");
            InitProducerIdResponse::default()
                .with_error_code(error.code())
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1)
        }
    }
}

/// The answer to a transactional InitProducerId: Kafka refuses an empty transactional id
/// as an invalid request; any other needs the transaction coordinator (the transactions
/// issue), which will take over here.
fn transactional(transactional_id: &str) -> ApiError {
    if transactional_id.is_empty() {
        return ApiError::new(
            ResponseError::InvalidRequest,
            "the transactional id is empty",
        );
    }
    ApiError::new(
        ResponseError::TransactionalIdAuthorizationFailed,
        "transactions are not supported by Karst yet",
    )
}
