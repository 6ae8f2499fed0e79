//! Producing: one record batch to one partition's leader, with Kafka's acks semantics.
//!
//! The client is not idempotent (no producer id), so it retries only when the broker says it
//! did not act on the request (a leadership error); a timeout or broken connection is
//! reported, because the batch may or may not have been appended.

use std::time::{SystemTime, UNIX_EPOCH};

use proto_kafka::messages::produce_request::{PartitionProduceData, TopicProduceData};
use proto_kafka::messages::{ApiKey, ProduceRequest, TopicName};
use proto_kafka::protocol::{StrBytes, VersionRange};
use proto_kafka::records::Compression;

use super::records::{encode_batch, ProducerRecord};
use super::{Client, ClientError, KafkaError};

/// How long the leader may wait for replication (`acks=all`) before answering
/// `REQUEST_TIMED_OUT`; Kafka's producer default `request.timeout.ms` is 30 s too.
pub const PRODUCE_TIMEOUT_MS: i32 = 30_000;

/// Produce versions that name topics; version 13 names them by topic id instead.
const PRODUCE_BY_NAME_VERSIONS: VersionRange = VersionRange { min: 3, max: 12 };

/// How many replicas must have the batch before the leader answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// `acks=0`: the broker sends no response at all.
    None,
    /// `acks=1`: the leader has appended it.
    Leader,
    /// `acks=all` (`-1`): every in-sync replica has it.
    All,
}

impl Acks {
    /// The wire value.
    pub fn code(self) -> i16 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }
}

/// How to produce.
#[derive(Debug, Clone)]
pub struct ProduceOptions {
    /// See [`Acks`].
    pub acks: Acks,
    /// Batch compression.
    pub compression: Compression,
    /// See [`PRODUCE_TIMEOUT_MS`].
    pub timeout_ms: i32,
}

impl Default for ProduceOptions {
    fn default() -> Self {
        ProduceOptions {
            acks: Acks::All,
            compression: Compression::None,
            timeout_ms: PRODUCE_TIMEOUT_MS,
        }
    }
}

impl Client {
    /// Produces `records` as one batch to `topic`-`partition`.
    ///
    /// Returns the offset of the first record, or `None` with `acks=0` (no response).
    pub async fn produce(
        &mut self,
        topic: &str,
        partition: i32,
        records: &[ProducerRecord],
        options: &ProduceOptions,
    ) -> Result<Option<i64>, ClientError> {
        let batch = encode_batch(records, options.compression, now_ms()).map_err(|source| {
            ClientError::EncodeRecords {
                topic: topic.to_owned(),
                partition,
                source,
            }
        })?;
        let mut attempt = 0;
        loop {
            let outcome = self
                .produce_once(topic, partition, batch.clone(), options)
                .await;
            if !self
                .retry_after_leadership_failure(topic, &outcome, &mut attempt)
                .await
            {
                return outcome;
            }
        }
    }

    async fn produce_once(
        &mut self,
        topic: &str,
        partition: i32,
        batch: bytes::Bytes,
        options: &ProduceOptions,
    ) -> Result<Option<i64>, ClientError> {
        let metadata = self.cached_topic(topic).await?;
        let leader_id = self.leader_id(topic, partition).await?;
        let connection = self.broker_connection(leader_id).await?;
        // Version 13 identifies the topic by id; use it only when metadata gave us one.
        let version = if metadata.topic_id.is_nil() {
            connection.version_within::<ProduceRequest>(PRODUCE_BY_NAME_VERSIONS)?
        } else {
            connection.version::<ProduceRequest>()?
        };
        let mut topic_data =
            TopicProduceData::default().with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(batch))]);
        if version >= 13 {
            topic_data = topic_data.with_topic_id(metadata.topic_id);
        } else {
            topic_data = topic_data.with_name(TopicName(StrBytes::from_string(topic.to_owned())));
        }
        let request = ProduceRequest::default()
            .with_acks(options.acks.code())
            .with_timeout_ms(options.timeout_ms)
            .with_topic_data(vec![topic_data]);

        if options.acks == Acks::None {
            let sent = connection.send_without_response(request, version).await;
            if sent.is_err() {
                self.forget_connection(leader_id);
            }
            return sent.map(|()| None);
        }
        let wait_ms = u64::try_from(options.timeout_ms).unwrap_or(0);
        let response = match connection.send_waiting(request, version, wait_ms).await {
            Ok(response) => response,
            Err(error) => {
                self.forget_connection(leader_id);
                return Err(error);
            }
        };
        let partition_response = response
            .responses
            .into_iter()
            .filter(|response| {
                response.name.0.as_str() == topic || response.topic_id == metadata.topic_id
            })
            .flat_map(|response| response.partition_responses)
            .find(|response| response.index == partition)
            .ok_or_else(|| ClientError::MissingResult {
                api: ApiKey::Produce,
                what: format!("{topic}-{partition}"),
            })?;
        KafkaError::check(
            || format!("produce to {topic}-{partition}"),
            partition_response.error_code,
            partition_response.error_message.as_deref(),
        )?;
        Ok(Some(partition_response.base_offset))
    }
}

/// Milliseconds since the Unix epoch, the unit of Kafka record timestamps.
pub fn now_ms() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_use_kafkas_wire_values() {
        assert_eq!(Acks::None.code(), 0);
        assert_eq!(Acks::Leader.code(), 1);
        assert_eq!(Acks::All.code(), -1);
    }
}
