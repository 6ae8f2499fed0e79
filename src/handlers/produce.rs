//! Produce: validate each partition's batches, queue them for a durable append, and answer
//! once every append completed (acks=1/all) — or at once with no response (acks=0).
//!
//! This handler is eager (see the module docs of `handlers`): validation and queueing happen
//! inside `handle`, before the connection reads its next request. Record-level checks run
//! later, on the log's storage thread; a batch refused there answers INVALID_RECORD or
//! INVALID_TIMESTAMP with the records named in `record_errors` (KIP-467, v8+).

use std::time::Duration;

use proto_kafka::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use proto_kafka::messages::{ProduceRequest, ProduceResponse};
use proto_kafka::protocol::StrBytes;
use proto_kafka::ResponseError;

use karst_storage::{AppendInfo, CommitPermit, LogError, Offset, TopicPartition};
use tokio::sync::oneshot;

use std::sync::Arc;

use super::{Reply, RequestContext};
use crate::broker::SharedBroker;
use crate::error::ApiError;
use crate::replication::purgatory::wait_for_replication;
use crate::replication::Partition;

enum Pending {
    /// Refused before anything was queued; the partition, when this node leads it.
    Failed {
        error: ApiError,
        partition: Option<Arc<Partition>>,
    },
    Appending {
        partition: Arc<Partition>,
        receiver: oneshot::Receiver<Result<AppendInfo, LogError>>,
    },
}

pub fn handle(
    broker: SharedBroker,
    context: RequestContext,
    request: ProduceRequest,
) -> Reply<ProduceResponse> {
    let acks = request.acks;
    // The connection took room in the commit queue for the whole request; every partition's
    // append shares it, so it is released once the last of them is synced (or at once when
    // nothing was queued). Only a Produce dispatched without a connection has none.
    let permit = context
        .commit_permit
        .unwrap_or_else(CommitPermit::unbudgeted);
    let mut topics = Vec::with_capacity(request.topic_data.len());
    for topic in request.topic_data {
        let mut partitions = Vec::with_capacity(topic.partition_data.len());
        for data in topic.partition_data {
            let pending = start_append(
                &broker,
                &topic.name,
                data.index,
                data.records.as_ref(),
                acks,
                &request.transactional_id,
                &permit,
            );
            partitions.push((data.index, pending));
        }
        topics.push((topic.name, partitions));
    }
    if acks == 0 {
        return Box::pin(async { None });
    }
    let timeout = Duration::from_millis(request.timeout_ms.max(0) as u64);
    let version = context.api_version;
    Box::pin(async move {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut responses = Vec::with_capacity(topics.len());
        for (name, partitions) in topics {
            let mut partition_responses = Vec::with_capacity(partitions.len());
            for (index, pending) in partitions {
                let (outcome, hosted) = match pending {
                    Pending::Failed { error, partition } => (Err(error), partition),
                    Pending::Appending {
                        partition,
                        receiver,
                    } => (
                        await_append(&partition, receiver, acks, deadline).await,
                        Some(partition),
                    ),
                };
                let log_start_offset = hosted.map(|p| p.log.offsets().log_start_offset);
                partition_responses.push(partition_response(
                    index,
                    outcome,
                    version,
                    log_start_offset,
                ));
            }
            responses.push(
                TopicProduceResponse::default()
                    .with_name(name)
                    .with_partition_responses(partition_responses),
            );
        }
        Some(ProduceResponse::default().with_responses(responses))
    })
}

/// The outcome of a queued append: durable here, and for acks=all replicated to the ISR,
/// by `deadline`.
async fn await_append(
    partition: &Arc<Partition>,
    receiver: oneshot::Receiver<Result<AppendInfo, LogError>>,
    acks: i16,
    deadline: tokio::time::Instant,
) -> Result<AppendInfo, ApiError> {
    match tokio::time::timeout_at(deadline, receiver).await {
        // Durable here; acks=all also waits for the ISR (the high watermark).
        Ok(Ok(Ok(info))) if acks == -1 => {
            wait_for_replication(partition, info.last_offset.plus(1), deadline)
                .await
                .map(|()| info)
        }
        Ok(Ok(Ok(info))) => Ok(info),
        Ok(Ok(Err(error))) => Err(ApiError::from(&error)),
        Ok(Err(_)) => Err(ApiError::new(
            ResponseError::UnknownServerError,
            "append was dropped",
        )),
        Err(_) => Err(ApiError::new(
            ResponseError::RequestTimedOut,
            "append did not complete within timeout_ms",
        )),
    }
}

fn start_append(
    broker: &SharedBroker,
    topic: &str,
    partition: i32,
    records: Option<&bytes::Bytes>,
    acks: i16,
    transactional_id: &Option<proto_kafka::messages::TransactionalId>,
    permit: &CommitPermit,
) -> Pending {
    let failed = |error| Pending::Failed {
        error,
        partition: None,
    };
    if !matches!(acks, -1..=1) {
        return failed(ApiError::new(
            ResponseError::InvalidRequiredAcks,
            format!("acks must be -1, 0 or 1, got {acks}"),
        ));
    }
    if transactional_id.is_some() {
        return failed(ApiError::new(
            ResponseError::TransactionalIdAuthorizationFailed,
            "transactions are not supported by Karst yet",
        ));
    }
    let key = TopicPartition::new(topic, partition);
    let hosted = match broker
        .replicas
        .leader_partition(&key, &broker.metadata.image())
    {
        Ok(hosted) => hosted,
        Err(error) => return failed(error),
    };
    let Some(records) = records else {
        return Pending::Failed {
            error: ApiError::new(ResponseError::InvalidRecord, "records are null"),
            partition: Some(hosted),
        };
    };
    match broker
        .replicas
        .append(&hosted, records, acks, permit.clone())
    {
        Ok(receiver) => Pending::Appending {
            partition: hosted,
            receiver,
        },
        Err(error) => {
            tracing::debug!(partition = %key, %error, "produce refused");
            Pending::Failed {
                error,
                partition: Some(hosted),
            }
        }
    }
}

/// One partition's answer. A refusal of its records (INVALID_RECORD, INVALID_TIMESTAMP)
/// carries the partition's log start offset and, from v8, the records at fault, as Kafka's;
/// other errors answer -1 offsets.
fn partition_response(
    index: i32,
    outcome: Result<AppendInfo, ApiError>,
    version: i16,
    log_start_offset: Option<Offset>,
) -> PartitionProduceResponse {
    let response = PartitionProduceResponse::default().with_index(index);
    let error = match outcome {
        Ok(info) => {
            return response
                .with_base_offset(info.base_offset.0)
                .with_log_append_time_ms(info.log_append_time_ms)
                .with_log_start_offset(info.log_start_offset.0)
        }
        Err(error) => error,
    };
    let records_refused = matches!(
        error.code,
        ResponseError::InvalidRecord | ResponseError::InvalidTimestamp
    );
    let log_start_offset = log_start_offset
        .filter(|_| records_refused)
        .map_or(-1, |offset| offset.0);
    let response = response
        .with_error_code(error.code())
        .with_base_offset(-1)
        .with_log_append_time_ms(-1)
        .with_log_start_offset(log_start_offset);
    if version < 8 {
        return response;
    }
    let record_errors = error
        .record_errors
        .iter()
        .map(|record| {
            BatchIndexAndErrorMessage::default()
                .with_batch_index(record.batch_index)
                .with_batch_index_error_message(Some(StrBytes::from_string(record.message.clone())))
        })
        .collect();
    response
        .with_record_errors(record_errors)
        .with_error_message(Some(StrBytes::from_string(error.message)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused_records() -> ApiError {
        let mut error = ApiError::new(
            ResponseError::InvalidRecord,
            "One or more records have been rejected",
        );
        error.record_errors = vec![
            karst_storage::RecordError {
                batch_index: 3,
                message: "Compacted topic cannot accept message without key".into(),
            },
            karst_storage::RecordError {
                batch_index: 7,
                message: "Compacted topic cannot accept message without key".into(),
            },
        ];
        error
    }

    #[test]
    fn refused_records_are_named_from_version_8_with_the_log_start_offset() {
        let answer = partition_response(0, Err(refused_records()), 9, Some(Offset(5)));
        assert_eq!(answer.error_code, ResponseError::InvalidRecord.code());
        let indexes: Vec<i32> = answer.record_errors.iter().map(|e| e.batch_index).collect();
        assert_eq!(indexes, vec![3, 7]);
        assert!(answer.error_message.is_some());
        assert_eq!((answer.base_offset, answer.log_start_offset), (-1, 5));

        // Version 7 has neither field: the error code alone.
        let old = partition_response(0, Err(refused_records()), 7, Some(Offset(5)));
        assert!(old.record_errors.is_empty() && old.error_message.is_none());
    }

    #[test]
    fn other_refusals_answer_no_log_start_offset() {
        let not_leader = ApiError::new(ResponseError::NotLeaderOrFollower, "led elsewhere");
        let answer = partition_response(0, Err(not_leader), 9, Some(Offset(5)));
        assert_eq!(answer.log_start_offset, -1);
        assert!(answer.record_errors.is_empty());
    }
}
