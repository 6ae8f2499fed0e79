//! CreatePartitions: grows topics to the requested partition count (or only validates it)
//! and answers per topic. Explicit assignments are accepted when each new partition is
//! placed on this single node.

use proto_kafka::messages::create_partitions_request::{
    CreatePartitionsAssignment, CreatePartitionsTopic,
};
use proto_kafka::messages::create_partitions_response::CreatePartitionsTopicResult;
use proto_kafka::messages::{CreatePartitionsRequest, CreatePartitionsResponse, TopicName};
use proto_kafka::protocol::StrBytes;
use proto_kafka::ResponseError;

use super::create_topics::{duplicates, in_controller};
use super::RequestContext;
use crate::broker::SharedBroker;
use crate::error::ApiError;

pub async fn handle(
    broker: SharedBroker,
    _context: RequestContext,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let validate_only = request.validate_only;
    let repeated_names = duplicates(request.topics.iter().map(|topic| topic.name.to_string()));
    let mut results: Vec<CreatePartitionsTopicResult> = repeated_names
        .iter()
        .map(|name| {
            let error = ApiError::new(ResponseError::InvalidRequest, "Duplicate topic in request.");
            result(TopicName(StrBytes::from_string(name.clone())), Err(error))
        })
        .collect();
    for topic in request.topics {
        if repeated_names.contains(topic.name.as_str()) {
            continue;
        }
        let CreatePartitionsTopic {
            name,
            count,
            assignments,
            ..
        } = topic;
        let growing = name.to_string();
        let outcome = in_controller(&broker, move |broker| {
            if let Some(assignments) = &assignments {
                let current = broker
                    .metadata
                    .image()
                    .topic(&growing)
                    .map(|topic| topic.partitions.len() as i32);
                check_assignments(
                    assignments,
                    broker.config.node_id,
                    current.map(|current| count - current),
                )?;
            }
            broker.create_partitions(&growing, count, validate_only)
        })
        .await;
        results.push(result(name, outcome));
    }
    CreatePartitionsResponse::default().with_results(results)
}

/// Explicit assignments must place each new partition on exactly this node, and there must
/// be one per added partition (`added`, when the topic is known; the controller reports
/// an unknown topic or a shrinking count itself).
fn check_assignments(
    assignments: &[CreatePartitionsAssignment],
    node: i32,
    added: Option<i32>,
) -> Result<(), ApiError> {
    if let Some(added) = added.filter(|added| *added > 0 && *added != assignments.len() as i32) {
        return Err(ApiError::new(
            ResponseError::InvalidReplicaAssignment,
            format!(
                "Increasing the number of partitions by {added} but {} assignments provided.",
                assignments.len()
            ),
        ));
    }
    for assignment in assignments {
        let replicas: Vec<i32> = assignment.broker_ids.iter().map(|id| id.0).collect();
        if replicas != [node] {
            return Err(ApiError::new(
                ResponseError::InvalidReplicaAssignment,
                format!("replica assignment {replicas:?} names brokers other than the single broker {node}"),
            ));
        }
    }
    Ok(())
}

fn result(name: TopicName, outcome: Result<(), ApiError>) -> CreatePartitionsTopicResult {
    let result = CreatePartitionsTopicResult::default().with_name(name);
    match outcome {
        Ok(()) => result.with_error_code(0).with_error_message(None),
        Err(error) => result
            .with_error_code(error.code())
            .with_error_message(Some(StrBytes::from_string(error.message))),
    }
}

#[cfg(test)]
mod tests {
    use proto_kafka::messages::BrokerId;

    use super::*;

    fn on(brokers: &[i32]) -> CreatePartitionsAssignment {
        CreatePartitionsAssignment::default()
            .with_broker_ids(brokers.iter().copied().map(BrokerId).collect())
    }

    #[test]
    fn assignments_on_this_node_one_per_new_partition_are_accepted() {
        assert!(check_assignments(&[on(&[1]), on(&[1])], 1, Some(2)).is_ok());
        assert!(check_assignments(&[on(&[1])], 1, None).is_ok());
    }

    #[test]
    fn assignments_naming_other_brokers_or_of_the_wrong_count_are_refused() {
        for (assignments, added) in [
            (vec![on(&[2])], Some(1)),
            (vec![on(&[1, 2])], Some(1)),
            (vec![on(&[])], Some(1)),
            (vec![on(&[1])], Some(2)),
        ] {
            let error = check_assignments(&assignments, 1, added).unwrap_err();
            assert_eq!(
                error.code,
                ResponseError::InvalidReplicaAssignment,
                "{assignments:?}"
            );
        }
    }
}
