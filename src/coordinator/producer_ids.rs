//! Producer ids for InitProducerId: this broker hands them out from a block the controller
//! allocated to it ([`crate::controller::producer_ids`]), and asks for the next block when
//! the current one is used up. Ids are never handed out twice: each block is a committed
//! metadata record, and a block is only ever used by the broker process that asked for it
//! (a restart starts with no block and asks for a fresh one).

use std::sync::atomic::Ordering;

use proto_kafka::ResponseError;
use tokio::sync::Mutex;

use karst_storage::ProducerId;

use crate::broker::Broker;
use crate::controller::producer_ids::ProducerIdBlock;
use crate::controller::{ControllerReply, ControllerRequest};
use crate::error::ApiError;

/// The unused rest of this broker's current block.
#[derive(Default)]
pub struct ProducerIdManager {
    /// `(next, end)`: ids `next..end` are this broker's to hand out. Held across the
    /// controller call so concurrent callers wait for one new block instead of each
    /// asking for their own.
    block: Mutex<Option<(i64, i64)>>,
}

impl ProducerIdManager {
    /// A producer id no one else has or will have.
    ///
    /// Fails with a retriable error while this broker is not registered or the controller
    /// cannot be reached (COORDINATOR_LOAD_IN_PROGRESS, as Kafka answers while its block
    /// request is pending), so clients retry InitProducerId.
    pub async fn next_id(&self, broker: &Broker) -> Result<ProducerId, ApiError> {
        let mut block = self.block.lock().await;
        if let Some((next, end)) = block.as_mut() {
            if *next < *end {
                let id = *next;
                *next += 1;
                return Ok(ProducerId(id));
            }
        }
        let fresh = allocate_block(broker).await?;
        let id = fresh.first_producer_id;
        *block = Some((id + 1, id + fresh.count));
        Ok(ProducerId(id))
    }
}

async fn allocate_block(broker: &Broker) -> Result<ProducerIdBlock, ApiError> {
    let broker_epoch = broker.broker_epoch.load(Ordering::Acquire);
    if broker_epoch < 0 {
        return Err(ApiError::new(
            ResponseError::CoordinatorLoadInProgress,
            "this broker has not registered with the controller yet",
        ));
    }
    let request = ControllerRequest::AllocateProducerIds {
        broker_id: broker.config.node_id,
        broker_epoch,
    };
    match broker.call_controller(request).await {
        Ok(ControllerReply::ProducerIds(block)) => {
            tracing::info!(
                first_producer_id = block.first_producer_id,
                count = block.count,
                "allocated a block of producer ids"
            );
            Ok(block)
        }
        Ok(other) => Err(ApiError::new(
            ResponseError::UnknownServerError,
            format!("unexpected controller answer {other:?}"),
        )),
        Err(error) => {
            tracing::warn!(%error, "could not allocate producer ids");
            Err(ApiError::new(
                ResponseError::CoordinatorLoadInProgress,
                format!("no producer id block available yet: {}", error.message),
            ))
        }
    }
}
