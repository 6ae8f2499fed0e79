//! Producer-id blocks: the controller's AllocateProducerIds decision.
//!
//! Brokers hand out producer ids (InitProducerId) from blocks the controller allocates.
//! A block is one `ProducerIds` metadata record that moves the image's `next_producer_id`
//! past it; since the record is in the Raft log, a new controller after a failover
//! continues above every block ever handed out, and no id is given twice. A block whose
//! record committed but whose answer was lost is simply never used.

use proto_kafka::ResponseError;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::metadata::{MetadataImage, MetadataRecord};

/// Ids per block, as Kafka's controller allocates them: a broker asks the controller
/// about once per this many new producers.
pub const PRODUCER_ID_BLOCK_SIZE: i64 = 1000;

/// A range of producer ids `[first_producer_id, first_producer_id + count)` for one broker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerIdBlock {
    pub first_producer_id: i64,
    pub count: i64,
}

/// The record that allocates the next block to `broker_id` (at its current epoch), and the
/// block.
pub fn allocate_producer_ids(
    image: &MetadataImage,
    broker_id: i32,
    broker_epoch: i64,
) -> Result<(Vec<MetadataRecord>, ProducerIdBlock), ApiError> {
    match image.broker(broker_id) {
        Some(broker) if broker.broker_epoch == broker_epoch => {}
        Some(broker) => {
            return Err(ApiError::new(
                ResponseError::StaleBrokerEpoch,
                format!(
                    "broker {broker_id} asked for producer ids at epoch {broker_epoch}; its epoch is {}",
                    broker.broker_epoch
                ),
            ))
        }
        None => {
            return Err(ApiError::new(
                ResponseError::BrokerIdNotRegistered,
                format!("broker {broker_id} is not registered"),
            ))
        }
    }
    let first_producer_id = image.next_producer_id;
    let next_producer_id = first_producer_id
        .checked_add(PRODUCER_ID_BLOCK_SIZE)
        .ok_or_else(|| {
            ApiError::new(
                ResponseError::UnknownServerError,
                "the producer id space is exhausted",
            )
        })?;
    Ok((
        vec![MetadataRecord::ProducerIds {
            broker_id,
            broker_epoch,
            next_producer_id,
        }],
        ProducerIdBlock {
            first_producer_id,
            count: PRODUCER_ID_BLOCK_SIZE,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image_with_broker(epoch: i64) -> MetadataImage {
        let mut image = MetadataImage::new("cluster".into());
        image
            .apply(
                epoch as u64,
                &MetadataRecord::RegisterBroker {
                    broker_id: 1,
                    incarnation_id: uuid::Uuid::new_v4(),
                    listeners: Vec::new(),
                    rack: None,
                    fenced: false,
                },
            )
            .unwrap();
        image
    }

    #[test]
    fn consecutive_blocks_never_overlap() {
        let mut image = image_with_broker(5);
        let (records, first) = allocate_producer_ids(&image, 1, 5).unwrap();
        for record in &records {
            image.apply(6, record).unwrap();
        }
        let (_, second) = allocate_producer_ids(&image, 1, 5).unwrap();
        assert_eq!(first.first_producer_id, 0);
        assert_eq!(second.first_producer_id, PRODUCER_ID_BLOCK_SIZE);
        assert_eq!(image.next_producer_id, PRODUCER_ID_BLOCK_SIZE);
    }

    #[test]
    fn a_broker_at_a_stale_epoch_or_unregistered_gets_no_block() {
        let image = image_with_broker(5);
        let stale = allocate_producer_ids(&image, 1, 4).unwrap_err();
        assert_eq!(stale.code, ResponseError::StaleBrokerEpoch);
        let unknown = allocate_producer_ids(&image, 2, 5).unwrap_err();
        assert_eq!(unknown.code, ResponseError::BrokerIdNotRegistered);
    }
}
