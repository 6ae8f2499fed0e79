//! DescribeProducers: the idempotent producers each partition leader knows (producer id,
//! epoch, last sequence), one request per leader.

use std::collections::BTreeMap;

use proto_kafka::messages::describe_producers_request::TopicRequest;
use proto_kafka::messages::{ApiKey, DescribeProducersRequest, TopicName};
use proto_kafka::protocol::StrBytes;

use super::{Client, ClientError, KafkaError};

/// One producer's state in one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerDescription {
    pub partition: i32,
    pub producer_id: i64,
    pub producer_epoch: i32,
    pub last_sequence: i32,
    pub last_timestamp_ms: i64,
    pub coordinator_epoch: i32,
    /// -1 when the producer has no open transaction.
    pub current_txn_start_offset: i64,
}

impl Client {
    /// The producers of `partitions` of `topic` (all partitions when empty), by partition
    /// then producer id.
    pub async fn describe_producers(
        &mut self,
        topic: &str,
        partitions: &[i32],
    ) -> Result<Vec<ProducerDescription>, ClientError> {
        let mut attempt = 0;
        loop {
            let outcome = self.describe_producers_once(topic, partitions).await;
            if !self
                .retry_after_leadership_failure(topic, &outcome, &mut attempt)
                .await
            {
                return outcome;
            }
        }
    }

    async fn describe_producers_once(
        &mut self,
        topic: &str,
        partitions: &[i32],
    ) -> Result<Vec<ProducerDescription>, ClientError> {
        let metadata = self.cached_topic(topic).await?;
        let wanted: Vec<i32> = if partitions.is_empty() {
            (0..metadata.partition_count()).collect()
        } else {
            partitions.to_vec()
        };
        let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        for &partition in &wanted {
            let leader_id = self.leader_id(topic, partition).await?;
            by_leader.entry(leader_id).or_default().push(partition);
        }
        let mut described = Vec::new();
        for (leader_id, partitions) in by_leader {
            let connection = self.broker_connection(leader_id).await?;
            let version = connection.version::<DescribeProducersRequest>()?;
            let request =
                DescribeProducersRequest::default().with_topics(vec![TopicRequest::default()
                    .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                    .with_partition_indexes(partitions.clone())]);
            let response = match connection.send(request, version).await {
                Ok(response) => response,
                Err(error) => {
                    self.forget_connection(leader_id);
                    return Err(error);
                }
            };
            for &partition in &partitions {
                let found = response
                    .topics
                    .iter()
                    .filter(|response_topic| response_topic.name.0.as_str() == topic)
                    .flat_map(|response_topic| response_topic.partitions.iter())
                    .find(|response_partition| response_partition.partition_index == partition)
                    .ok_or_else(|| ClientError::MissingResult {
                        api: ApiKey::DescribeProducers,
                        what: format!("{topic}-{partition}"),
                    })?;
                KafkaError::check(
                    || format!("describe producers of {topic}-{partition}"),
                    found.error_code,
                    found.error_message.as_deref(),
                )?;
                described.extend(found.active_producers.iter().map(|producer| {
                    ProducerDescription {
                        partition,
                        producer_id: producer.producer_id.0,
                        producer_epoch: producer.producer_epoch,
                        last_sequence: producer.last_sequence,
                        last_timestamp_ms: producer.last_timestamp,
                        coordinator_epoch: producer.coordinator_epoch,
                        current_txn_start_offset: producer.current_txn_start_offset,
                    }
                }));
            }
        }
        described.sort_by_key(|producer| (producer.partition, producer.producer_id));
        Ok(described)
    }
}
