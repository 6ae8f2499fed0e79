//! Reading: Fetch from given offsets (with long polling) and ListOffsets.
//!
//! Both go to each partition's leader; partitions led by the same broker share one request.
//! Fetch reports partition errors as values (`OFFSET_OUT_OF_RANGE` is a normal answer a
//! consumer acts on), while ListOffsets retries leadership errors itself and fails otherwise.

use std::collections::BTreeMap;

use proto_kafka::messages::fetch_request::{FetchPartition, FetchTopic};
use proto_kafka::messages::fetch_response::PartitionData;
use proto_kafka::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use proto_kafka::messages::{ApiKey, FetchRequest, ListOffsetsRequest, TopicName};
use proto_kafka::protocol::{StrBytes, VersionRange};
use proto_kafka::ResponseError;

use super::records::{decode_fetched, ConsumerRecord};
use super::{is_leadership_error, Client, ClientError, KafkaError};

/// The most bytes one fetch response may carry: Kafka's consumer default `fetch.max.bytes`
/// (50 MiB). It stays well under [`super::connection::RESPONSE_BYTES_MAX`].
pub const FETCH_BYTES_MAX: i32 = 50 * 1024 * 1024;

/// The most bytes per partition in one fetch: Kafka's `max.partition.fetch.bytes` (1 MiB).
/// A single batch larger than this is still returned whole (KIP-74), so it never blocks.
pub const PARTITION_FETCH_BYTES_MAX: i32 = 1024 * 1024;

// A full fetch response must fit under the response limit, and one partition under the fetch.
const _: () = assert!((FETCH_BYTES_MAX as usize) < super::connection::RESPONSE_BYTES_MAX);
const _: () = assert!(PARTITION_FETCH_BYTES_MAX <= FETCH_BYTES_MAX);

/// How long a fetch may wait on the broker for data: Kafka's `fetch.max.wait.ms` (500 ms).
pub const FETCH_WAIT_MS_MAX: i32 = 500;

/// Fetch versions that name topics; from version 13 topics are named by id instead.
const FETCH_BY_NAME_VERSIONS: VersionRange = VersionRange { min: 4, max: 12 };

/// Kafka's ListOffsets sentinel timestamps.
const LATEST_TIMESTAMP: i64 = -1;
const EARLIEST_TIMESTAMP: i64 = -2;

/// Which offset ListOffsets should return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The log start offset.
    Earliest,
    /// The log end offset (the high watermark, for a consumer).
    Latest,
    /// The first offset whose timestamp is at or after this many ms since the epoch.
    Timestamp(i64),
}

impl OffsetSpec {
    fn wire_timestamp(self) -> i64 {
        match self {
            OffsetSpec::Earliest => EARLIEST_TIMESTAMP,
            OffsetSpec::Latest => LATEST_TIMESTAMP,
            OffsetSpec::Timestamp(timestamp_ms) => timestamp_ms,
        }
    }
}

/// Limits of one fetch.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// See [`FETCH_WAIT_MS_MAX`].
    pub max_wait_ms: i32,
    /// The broker answers as soon as this many bytes are available (1: as soon as any are).
    pub min_bytes: i32,
    /// See [`FETCH_BYTES_MAX`].
    pub max_bytes: i32,
    /// See [`PARTITION_FETCH_BYTES_MAX`].
    pub partition_max_bytes: i32,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            max_wait_ms: FETCH_WAIT_MS_MAX,
            min_bytes: 1,
            max_bytes: FETCH_BYTES_MAX,
            partition_max_bytes: PARTITION_FETCH_BYTES_MAX,
        }
    }
}

/// What one fetch returned for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedPartition {
    /// The partition.
    pub partition: i32,
    /// `None`, or the partition's error (e.g. `OffsetOutOfRange`).
    pub error: Option<ResponseError>,
    /// The partition's high watermark.
    pub high_watermark: i64,
    /// The partition's log start offset.
    pub log_start_offset: i64,
    /// The records at or after the requested offset.
    pub records: Vec<ConsumerRecord>,
    /// Where the next fetch should start.
    pub next_offset: i64,
}

/// What ListOffsets returned for one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListedOffset {
    /// The partition.
    pub partition: i32,
    /// The offset, `None` when no record matches a timestamp query.
    pub offset: Option<i64>,
    /// The timestamp of that record (-1 for earliest/latest queries).
    pub timestamp_ms: i64,
}

impl Client {
    /// Fetches `topic` from `positions` (partition, offset), one request per leader.
    pub async fn fetch(
        &mut self,
        topic: &str,
        positions: &[(i32, i64)],
        options: &FetchOptions,
    ) -> Result<Vec<FetchedPartition>, ClientError> {
        let mut by_leader: BTreeMap<i32, Vec<(i32, i64)>> = BTreeMap::new();
        let mut fetched = Vec::new();
        for &(partition, offset) in positions {
            match self.leader_id(topic, partition).await {
                Ok(leader_id) => by_leader
                    .entry(leader_id)
                    .or_default()
                    .push((partition, offset)),
                Err(ClientError::NoLeader { .. }) => {
                    self.invalidate_topic(topic);
                    fetched.push(FetchedPartition {
                        partition,
                        error: Some(ResponseError::LeaderNotAvailable),
                        high_watermark: -1,
                        log_start_offset: -1,
                        records: Vec::new(),
                        next_offset: offset,
                    });
                }
                Err(error) => return Err(error),
            }
        }
        for (leader_id, positions) in by_leader {
            let outcome = self
                .fetch_from_leader(topic, leader_id, &positions, options)
                .await;
            match outcome {
                Ok(partitions) => fetched.extend(partitions),
                Err(error) => {
                    self.forget_connection(leader_id);
                    return Err(error);
                }
            }
        }
        if fetched
            .iter()
            .any(|partition| partition.error.is_some_and(is_leadership_error))
        {
            self.invalidate_topic(topic);
        }
        fetched.sort_by_key(|partition| partition.partition);
        Ok(fetched)
    }

    async fn fetch_from_leader(
        &mut self,
        topic: &str,
        leader_id: i32,
        positions: &[(i32, i64)],
        options: &FetchOptions,
    ) -> Result<Vec<FetchedPartition>, ClientError> {
        let topic_id = self.cached_topic(topic).await?.topic_id;
        let connection = self.broker_connection(leader_id).await?;
        let version = if topic_id.is_nil() {
            connection.version_within::<FetchRequest>(FETCH_BY_NAME_VERSIONS)?
        } else {
            connection.version::<FetchRequest>()?
        };
        let partitions = positions
            .iter()
            .map(|&(partition, offset)| {
                FetchPartition::default()
                    .with_partition(partition)
                    .with_fetch_offset(offset)
                    .with_partition_max_bytes(options.partition_max_bytes)
            })
            .collect();
        let mut fetch_topic = FetchTopic::default().with_partitions(partitions);
        if version >= 13 {
            fetch_topic = fetch_topic.with_topic_id(topic_id);
        } else {
            fetch_topic =
                fetch_topic.with_topic(TopicName(StrBytes::from_string(topic.to_owned())));
        }
        let request = FetchRequest::default()
            .with_max_wait_ms(options.max_wait_ms)
            .with_min_bytes(options.min_bytes)
            .with_max_bytes(options.max_bytes)
            .with_topics(vec![fetch_topic]);
        let wait_ms = u64::try_from(options.max_wait_ms).unwrap_or(0);
        let response = connection.send_waiting(request, version, wait_ms).await?;
        KafkaError::check(|| format!("fetch from {topic}"), response.error_code, None)?;

        let wanted = |name: &str, id: uuid::Uuid| {
            if version >= 13 {
                id == topic_id
            } else {
                name == topic
            }
        };
        let partitions = response
            .responses
            .into_iter()
            .filter(|response| wanted(response.topic.0.as_str(), response.topic_id))
            .flat_map(|response| response.partitions);
        fetched_partitions(topic, positions, partitions)
    }

    /// Looks up offsets of `partitions` of `topic` by `spec`, one request per leader.
    pub async fn list_offsets(
        &mut self,
        topic: &str,
        partitions: &[i32],
        spec: OffsetSpec,
    ) -> Result<Vec<ListedOffset>, ClientError> {
        let mut attempt = 0;
        loop {
            let outcome = self.list_offsets_once(topic, partitions, spec).await;
            if !self
                .retry_after_leadership_failure(topic, &outcome, &mut attempt)
                .await
            {
                return outcome;
            }
        }
    }

    async fn list_offsets_once(
        &mut self,
        topic: &str,
        partitions: &[i32],
        spec: OffsetSpec,
    ) -> Result<Vec<ListedOffset>, ClientError> {
        let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        for &partition in partitions {
            let leader_id = self.leader_id(topic, partition).await?;
            by_leader.entry(leader_id).or_default().push(partition);
        }
        let mut listed = Vec::new();
        for (leader_id, partitions) in by_leader {
            let connection = self.broker_connection(leader_id).await?;
            let version = connection.version::<ListOffsetsRequest>()?;
            let request_partitions = partitions
                .iter()
                .map(|&partition| {
                    ListOffsetsPartition::default()
                        .with_partition_index(partition)
                        .with_timestamp(spec.wire_timestamp())
                })
                .collect();
            let request =
                ListOffsetsRequest::default().with_topics(vec![ListOffsetsTopic::default()
                    .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                    .with_partitions(request_partitions)]);
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
                        api: ApiKey::ListOffsets,
                        what: format!("{topic}-{partition}"),
                    })?;
                KafkaError::check(
                    || format!("list offsets of {topic}-{partition}"),
                    found.error_code,
                    None,
                )?;
                listed.push(ListedOffset {
                    partition,
                    offset: (found.offset >= 0).then_some(found.offset),
                    timestamp_ms: found.timestamp,
                });
            }
        }
        listed.sort_by_key(|listed| listed.partition);
        Ok(listed)
    }
}

/// Decodes the partitions of a fetch response that answer `positions`.
fn fetched_partitions(
    topic: &str,
    positions: &[(i32, i64)],
    partitions: impl Iterator<Item = PartitionData>,
) -> Result<Vec<FetchedPartition>, ClientError> {
    let mut fetched = Vec::new();
    for partition_data in partitions {
        let partition = partition_data.partition_index;
        let Some(&(_, fetch_offset)) = positions.iter().find(|(p, _)| *p == partition) else {
            continue; // a partition we did not ask for
        };
        let (records, next_offset) = match partition_data.records {
            Some(bytes) if partition_data.error_code == 0 => decode_fetched(bytes, fetch_offset)
                .map_err(|source| ClientError::Records {
                    topic: topic.to_owned(),
                    partition,
                    source,
                })?,
            _ => (Vec::new(), fetch_offset),
        };
        fetched.push(FetchedPartition {
            partition,
            error: ResponseError::try_from_code(partition_data.error_code),
            high_watermark: partition_data.high_watermark,
            log_start_offset: partition_data.log_start_offset,
            records,
            next_offset,
        });
    }
    Ok(fetched)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_specs_use_kafkas_sentinel_timestamps() {
        assert_eq!(OffsetSpec::Earliest.wire_timestamp(), -2);
        assert_eq!(OffsetSpec::Latest.wire_timestamp(), -1);
        assert_eq!(
            OffsetSpec::Timestamp(1_700_000_000_000).wire_timestamp(),
            1_700_000_000_000
        );
    }
}
