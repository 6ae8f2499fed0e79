//! ListOffsets: earliest (-2, and -4 earliest-local), latest (-1), max timestamp (-3), or the
//! first offset whose record timestamp is at or after a given time.

use bytes::Bytes;
use proto_kafka::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use proto_kafka::messages::{ListOffsetsRequest, ListOffsetsResponse};
use proto_kafka::records::RecordBatchDecoder;
use proto_kafka::ResponseError;

use karst_storage::{BatchHeader, LogError, TopicPartition};

use super::RequestContext;
use crate::broker::SharedBroker;
use crate::error::ApiError;
use crate::replication::Partition;

pub const LATEST_TIMESTAMP: i64 = -1;
pub const EARLIEST_TIMESTAMP: i64 = -2;
pub const MAX_TIMESTAMP: i64 = -3;
pub const EARLIEST_LOCAL_TIMESTAMP: i64 = -4;

pub async fn handle(
    broker: SharedBroker,
    context: RequestContext,
    request: ListOffsetsRequest,
) -> ListOffsetsResponse {
    // Leader epochs are part of the response from v4 on.
    let epoch_for_version = |epoch: i32| if context.api_version >= 4 { epoch } else { -1 };
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for wanted in topic.partitions {
            let key = TopicPartition::new(topic.name.to_string(), wanted.partition_index);
            let response = ListOffsetsPartitionResponse::default()
                .with_partition_index(wanted.partition_index);
            let outcome = match broker
                .replicas
                .leader_partition(&key, &broker.metadata.image())
            {
                Err(error) => Err(error),
                Ok(partition) => {
                    let timestamp = wanted.timestamp;
                    tokio::task::spawn_blocking(move || lookup(&partition, timestamp))
                        .await
                        .unwrap_or_else(|_| {
                            Err(ApiError::new(
                                ResponseError::UnknownServerError,
                                "lookup panicked",
                            ))
                        })
                }
            };
            partitions.push(match outcome {
                Ok((offset, timestamp, epoch)) => response
                    .with_offset(offset)
                    .with_timestamp(timestamp)
                    .with_leader_epoch(epoch_for_version(epoch)),
                Err(error) => response
                    .with_error_code(error.code())
                    .with_offset(-1)
                    .with_timestamp(-1)
                    .with_leader_epoch(-1),
            });
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    ListOffsetsResponse::default().with_topics(topics)
}

/// (offset, timestamp, leader epoch) for one partition.
fn lookup(partition: &Partition, timestamp: i64) -> Result<(i64, i64, i32), ApiError> {
    let offsets = partition.log.offsets();
    let epoch = partition.leader_epoch().0;
    // Consumers see the log below the high watermark only.
    let high_watermark = partition.high_watermark();
    let to_api = |error: LogError| ApiError::from(&error);
    match timestamp {
        LATEST_TIMESTAMP => Ok((high_watermark.0, -1, epoch)),
        EARLIEST_TIMESTAMP | EARLIEST_LOCAL_TIMESTAMP => {
            Ok((offsets.log_start_offset.0, -1, epoch))
        }
        MAX_TIMESTAMP => match partition
            .log
            .batch_with_max_timestamp(high_watermark)
            .map_err(to_api)?
        {
            Some(batch) => record_with(&batch, |records| {
                let max = records.iter().map(|r| r.1).max()?;
                records.iter().find(|r| r.1 == max).copied()
            }),
            None => Ok((-1, -1, -1)),
        },
        target if target >= 0 => match partition
            .log
            .batch_for_timestamp(target, high_watermark)
            .map_err(to_api)?
        {
            Some(batch) => record_with(&batch, |records| {
                records.iter().find(|r| r.1 >= target).copied()
            }),
            None => Ok((-1, -1, -1)),
        },
        other => Err(ApiError::new(
            ResponseError::InvalidRequest,
            format!("unknown timestamp spec {other}"),
        )),
    }
}

/// Decodes `batch` (decompressing if needed) and picks a record as (offset, timestamp).
fn record_with(
    batch: &Bytes,
    pick: impl Fn(&[(i64, i64)]) -> Option<(i64, i64)>,
) -> Result<(i64, i64, i32), ApiError> {
    let header = BatchHeader::parse(batch)
        .ok_or_else(|| ApiError::new(ResponseError::CorruptMessage, "bad stored batch"))?;
    let mut bytes = batch.clone();
    let set = RecordBatchDecoder::decode(&mut bytes).map_err(|error| {
        ApiError::new(
            ResponseError::CorruptMessage,
            format!("stored batch does not decode: {error}"),
        )
    })?;
    let records: Vec<(i64, i64)> = set
        .records
        .iter()
        .map(|r| (r.offset, r.timestamp))
        .collect();
    let (offset, timestamp) =
        pick(&records).unwrap_or((header.base_offset.0, header.max_timestamp));
    let timestamp = if header.uses_log_append_time() {
        header.max_timestamp
    } else {
        timestamp
    };
    Ok((offset, timestamp, header.leader_epoch.0))
}
