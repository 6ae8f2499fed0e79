//! DescribeProducers: the producer state of partitions this broker leads (what
//! `kafka-transactions.sh describe-producers` and `karst producers describe` show).
//! Partitions led elsewhere answer NOT_LEADER_OR_FOLLOWER, unknown ones
//! UNKNOWN_TOPIC_OR_PARTITION, as Kafka's.

use proto_kafka::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use proto_kafka::messages::{DescribeProducersRequest, DescribeProducersResponse, ProducerId};
use proto_kafka::protocol::StrBytes;

use karst_storage::TopicPartition;

use super::RequestContext;
use crate::broker::SharedBroker;

pub async fn handle(
    broker: SharedBroker,
    _context: RequestContext,
    request: DescribeProducersRequest,
) -> DescribeProducersResponse {
    let image = broker.metadata.image();
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partition_indexes
                .iter()
                .map(|&index| {
                    let key = TopicPartition::new(topic.name.as_str(), index);
                    let response = PartitionResponse::default().with_partition_index(index);
                    match broker.replicas.leader_partition(&key, &image) {
                        Ok(partition) => response.with_active_producers(
                            partition
                                .log
                                .producer_entries()
                                .into_iter()
                                .map(|(id, entry)| {
                                    ProducerState::default()
                                        .with_producer_id(ProducerId(id.0))
                                        .with_producer_epoch(i32::from(entry.epoch.0))
                                        .with_last_sequence(entry.last_sequence().unwrap_or(-1))
                                        .with_last_timestamp(entry.last_timestamp_ms)
                                        .with_coordinator_epoch(-1)
                                        .with_current_txn_start_offset(
                                            entry.current_txn_first_offset.map_or(-1, |o| o.0),
                                        )
                                })
                                .collect(),
                        ),
                        Err(error) => response
                            .with_error_code(error.code())
                            .with_error_message(Some(StrBytes::from_string(error.message))),
                    }
                })
                .collect();
            TopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions)
        })
        .collect();
    DescribeProducersResponse::default().with_topics(topics)
}
