//! ListPartitionReassignments (KIP-455): the reassignments in progress, of the partitions
//! asked for or of all, with their replicas (target first, then those being removed) and the
//! replicas being added and removed. Answered from the controller's image, so a move
//! completed there is never listed from a lagging node's copy.

use proto_kafka::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use proto_kafka::messages::{
    BrokerId, ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, TopicName,
};
use proto_kafka::protocol::StrBytes;
use proto_kafka::ResponseError;

use super::RequestContext;
use crate::broker::SharedBroker;
use crate::controller::reassignment::OngoingReassignment;
use crate::controller::{ControllerReply, ControllerRequest};

pub async fn handle(
    broker: SharedBroker,
    _context: RequestContext,
    request: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    let partitions = request.topics.map(|topics| {
        topics
            .iter()
            .flat_map(|topic| {
                topic
                    .partition_indexes
                    .iter()
                    .map(move |index| (topic.name.to_string(), *index))
            })
            .collect()
    });
    let response = ListPartitionReassignmentsResponse::default();
    match broker
        .call_controller(ControllerRequest::ListReassignments { partitions })
        .await
    {
        Ok(ControllerReply::Reassignments(ongoing)) => {
            response.with_topics(group_by_topic(ongoing))
        }
        Ok(_) => response.with_error_code(ResponseError::UnknownServerError.code()),
        Err(error) => response
            .with_error_code(error.code())
            .with_error_message(Some(StrBytes::from_string(error.message))),
    }
}

fn broker_ids(ids: Vec<i32>) -> Vec<BrokerId> {
    ids.into_iter().map(BrokerId).collect()
}

fn group_by_topic(ongoing: Vec<OngoingReassignment>) -> Vec<OngoingTopicReassignment> {
    let mut topics: Vec<OngoingTopicReassignment> = Vec::new();
    for moving in ongoing {
        let partition = OngoingPartitionReassignment::default()
            .with_partition_index(moving.partition)
            .with_replicas(broker_ids(moving.replicas))
            .with_adding_replicas(broker_ids(moving.adding_replicas))
            .with_removing_replicas(broker_ids(moving.removing_replicas));
        match topics
            .iter_mut()
            .find(|t| t.name.0.as_str() == moving.topic)
        {
            Some(entry) => entry.partitions.push(partition),
            None => topics.push(
                OngoingTopicReassignment::default()
                    .with_name(TopicName(StrBytes::from_string(moving.topic)))
                    .with_partitions(vec![partition]),
            ),
        }
    }
    topics
}
