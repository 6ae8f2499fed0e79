//! Produce: validate each partition's batches, queue them for a durable append, and answer
//! once every append completed (acks=1/all) — or at once with no response (acks=0).
//!
//! This handler is eager (see the module docs of `handlers`): validation and queueing happen
//! inside `handle`, before the connection reads its next request.

use std::time::Duration;

use proto_kafka::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use proto_kafka::messages::{ProduceRequest, ProduceResponse};
use proto_kafka::protocol::StrBytes;
use proto_kafka::ResponseError;

use karst_storage::{AppendInfo, LogError, TopicPartition};
use tokio::sync::oneshot;

use std::sync::Arc;

use super::{Reply, RequestContext};
use crate::broker::SharedBroker;
use crate::error::ApiError;
use crate::replication::purgatory::wait_for_replication;
use crate::replication::Partition;

enum Pending {
    Failed(ApiError),
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
                let outcome = match pending {
                    Pending::Failed(error) => Err(error),
                    Pending::Appending {
                        partition,
                        receiver,
                    } => match tokio::time::timeout_at(deadline, receiver).await {
                        // Durable here; acks=all also waits for the ISR (the high watermark).
                        Ok(Ok(Ok(info))) if acks == -1 => {
                            wait_for_replication(&partition, info.last_offset.plus(1), deadline)
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
                    },
                };
                partition_responses.push(partition_response(index, outcome, version));
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

fn start_append(
    broker: &SharedBroker,
    topic: &str,
    partition: i32,
    records: Option<&bytes::Bytes>,
    acks: i16,
    transactional_id: &Option<proto_kafka::messages::TransactionalId>,
) -> Pending {
    if !matches!(acks, -1..=1) {
        return Pending::Failed(ApiError::new(
            ResponseError::InvalidRequiredAcks,
            format!("acks must be -1, 0 or 1, got {acks}"),
        ));
    }
    if transactional_id.is_some() {
        return Pending::Failed(ApiError::new(
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
        Err(error) => return Pending::Failed(error),
    };
    let Some(records) = records else {
        return Pending::Failed(ApiError::new(
            ResponseError::InvalidRecord,
            "records are null",
        ));
    };
    match broker.replicas.append(&hosted, records, acks) {
        Ok(receiver) => Pending::Appending {
            partition: hosted,
            receiver,
        },
        Err(error) => {
            tracing::debug!(partition = %key, %error, "produce refused");
            Pending::Failed(error)
        }
    }
}

fn partition_response(
    index: i32,
    outcome: Result<AppendInfo, ApiError>,
    version: i16,
) -> PartitionProduceResponse {
    let response = PartitionProduceResponse::default().with_index(index);
    match outcome {
        Ok(info) => response
            .with_base_offset(info.base_offset.0)
            .with_log_append_time_ms(info.log_append_time_ms)
            .with_log_start_offset(info.log_start_offset.0),
        Err(error) => {
            let response = response
                .with_error_code(error.code())
                .with_base_offset(-1)
                .with_log_append_time_ms(-1)
                .with_log_start_offset(-1);
            if version >= 8 {
                response.with_error_message(Some(StrBytes::from_string(error.message)))
            } else {
                response
            }
        }
    }
}
