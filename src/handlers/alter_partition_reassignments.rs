//! AlterPartitionReassignments (KIP-455): start, change or cancel (null replicas) the move of
//! partitions to new replicas. Decided by the controller (`controller::reassignment`); the
//! answer is per partition with Kafka's codes: UNKNOWN_TOPIC_OR_PARTITION,
//! INVALID_REPLICA_ASSIGNMENT (empty, repeated, unknown or fenced brokers),
//! NO_REASSIGNMENT_IN_PROGRESS (cancel of none), and in v1 INVALID_REPLICATION_FACTOR when
//! the request does not allow the replication factor to change. Success means the move has
//! started (or completed, when nothing needs to catch up); ListPartitionReassignments shows it
//! until it completes.

use proto_kafka::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use proto_kafka::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, TopicName,
};
use proto_kafka::protocol::StrBytes;
use proto_kafka::ResponseError;

use super::RequestContext;
use crate::broker::SharedBroker;
use crate::controller::reassignment::{ReassignmentOutcome, ReassignmentRequest};
use crate::controller::{ControllerReply, ControllerRequest};

pub async fn handle(
    broker: SharedBroker,
    _context: RequestContext,
    request: AlterPartitionReassignmentsRequest,
) -> AlterPartitionReassignmentsResponse {
    let allow_replication_factor_change = request.allow_replication_factor_change;
    let partitions: Vec<ReassignmentRequest> = request
        .topics
        .iter()
        .flat_map(|topic| {
            topic
                .partitions
                .iter()
                .map(|partition| ReassignmentRequest {
                    topic: topic.name.to_string(),
                    partition: partition.partition_index,
                    replicas: partition
                        .replicas
                        .as_ref()
                        .map(|replicas| replicas.iter().map(|id| id.0).collect()),
                })
        })
        .collect();
    let response = AlterPartitionReassignmentsResponse::default()
        .with_allow_replication_factor_change(allow_replication_factor_change);
    let call = ControllerRequest::AlterReassignments {
        partitions,
        replication_factor_fixed: !allow_replication_factor_change,
    };
    match broker.call_controller(call).await {
        Ok(ControllerReply::Reassigned(outcomes)) => {
            response.with_responses(group_by_topic(outcomes))
        }
        Ok(_) => response.with_error_code(ResponseError::UnknownServerError.code()),
        Err(error) => response
            .with_error_code(error.code())
            .with_error_message(Some(StrBytes::from_string(error.message))),
    }
}

/// Per-topic answers in request order.
fn group_by_topic(outcomes: Vec<ReassignmentOutcome>) -> Vec<ReassignableTopicResponse> {
    let mut topics: Vec<ReassignableTopicResponse> = Vec::new();
    for (topic, partition, code, message) in outcomes {
        let answer = ReassignablePartitionResponse::default()
            .with_partition_index(partition)
            .with_error_code(code)
            .with_error_message(message.map(StrBytes::from_string));
        match topics.iter_mut().find(|t| t.name.0.as_str() == topic) {
            Some(entry) => entry.partitions.push(answer),
            None => topics.push(
                ReassignableTopicResponse::default()
                    .with_name(TopicName(StrBytes::from_string(topic)))
                    .with_partitions(vec![answer]),
            ),
        }
    }
    topics
}
