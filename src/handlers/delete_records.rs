//! DeleteRecords: moves partitions' log start offsets forward (`kafka-delete-records`,
//! `AdminClient.deleteRecords`). Records below the new start are no longer served, and whole
//! segments below it are deleted.
//!
//! The answer waits until the new log start offsets are in the log-start checkpoint on disk:
//! a client told "deleted up to N" must not see records below N reappear after a crash.

use proto_kafka::messages::delete_records_request::DeleteRecordsTopic;
use proto_kafka::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use proto_kafka::messages::{DeleteRecordsRequest, DeleteRecordsResponse};
use proto_kafka::ResponseError;

use karst_storage::{Offset, TopicPartition};

use super::RequestContext;
use crate::broker::{Broker, SharedBroker};
use crate::error::ApiError;

/// The requested `offset` meaning "up to the high watermark" (delete everything readable).
pub const HIGH_WATERMARK: i64 = -1;

pub async fn handle(
    broker: SharedBroker,
    _context: RequestContext,
    request: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    // Segment deletion and the checkpoint's fsyncs are blocking file I/O.
    let requested = request.topics.clone();
    let outcomes =
        tokio::task::spawn_blocking(move || delete_and_checkpoint(&broker, &request.topics))
            .await
            .unwrap_or_else(|panic| {
                let error = ApiError::new(
                    ResponseError::UnknownServerError,
                    format!("DeleteRecords panicked: {panic}"),
                );
                requested
                    .iter()
                    .map(|topic| {
                        topic
                            .partitions
                            .iter()
                            .map(|_| Err(error.clone()))
                            .collect()
                    })
                    .collect()
            });
    let results = requested
        .into_iter()
        .zip(outcomes)
        .map(|(topic, outcomes)| {
            let partitions = topic
                .partitions
                .iter()
                .zip(outcomes)
                .map(|(wanted, outcome)| partition_result(wanted.partition_index, outcome))
                .collect();
            DeleteRecordsTopicResult::default()
                .with_name(topic.name)
                .with_partitions(partitions)
        })
        .collect();
    DeleteRecordsResponse::default().with_topics(results)
}

fn partition_result(
    partition_index: i32,
    outcome: Result<Offset, ApiError>,
) -> DeleteRecordsPartitionResult {
    let result = DeleteRecordsPartitionResult::default().with_partition_index(partition_index);
    match outcome {
        Ok(low_watermark) => result.with_low_watermark(low_watermark.0),
        Err(error) => {
            tracing::debug!(partition_index, %error, "DeleteRecords refused");
            result.with_low_watermark(-1).with_error_code(error.code())
        }
    }
}

/// Moves every requested log start offset, then checkpoints them all at once. Outcomes are
/// per topic, per partition, in request order.
fn delete_and_checkpoint(
    broker: &Broker,
    topics: &[DeleteRecordsTopic],
) -> Vec<Vec<Result<Offset, ApiError>>> {
    let mut outcomes: Vec<Vec<Result<Offset, ApiError>>> = topics
        .iter()
        .map(|topic| {
            topic
                .partitions
                .iter()
                .map(|wanted| {
                    let key = TopicPartition::new(topic.name.to_string(), wanted.partition_index);
                    delete_before(broker, &key, wanted.offset)
                })
                .collect()
        })
        .collect();
    let moved = outcomes.iter().flatten().any(Result::is_ok);
    if moved {
        if let Err(error) = broker.replicas.logs().checkpoint() {
            // The new start offsets hold in memory but would not survive a crash: the
            // client must not be told they are done.
            let error = ApiError::new(
                ResponseError::KafkaStorageError,
                format!("writing the log-start checkpoint failed: {error}"),
            );
            tracing::error!(%error, "DeleteRecords could not make its new log start offsets durable");
            for outcome in outcomes.iter_mut().flatten() {
                if outcome.is_ok() {
                    *outcome = Err(error.clone());
                }
            }
        }
    }
    outcomes
}

/// Deletes the records of one partition below `offset` (or below the high watermark);
/// returns the new log start offset.
fn delete_before(broker: &Broker, key: &TopicPartition, offset: i64) -> Result<Offset, ApiError> {
    let partition = broker
        .replicas
        .leader_partition(key, &broker.metadata.image())?;
    let log = &partition.log;
    let high_watermark = partition.high_watermark();
    let offset = match offset {
        HIGH_WATERMARK => high_watermark,
        offset => Offset(offset),
    };
    // Only replicated records may go: followers follow the leader's log start.
    if offset > high_watermark {
        return Err(ApiError::new(
            ResponseError::OffsetOutOfRange,
            format!(
                "{key}: offset {} is past the high watermark {}",
                offset.0, high_watermark.0
            ),
        ));
    }
    let log_start_offset = log
        .delete_records_before(offset)
        .map_err(|error| ApiError::from(&error))?;
    tracing::info!(partition = %key, log_start_offset = log_start_offset.0, "deleted records");
    Ok(log_start_offset)
}
