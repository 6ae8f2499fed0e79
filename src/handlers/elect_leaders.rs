//! ElectLeaders: move leadership to each partition's preferred replica (election type 0),
//! or give leaderless partitions any live replica (type 1, unclean: records only the old
//! ISR had may be lost). Decided by the controller; the answer is per partition, with
//! ELECTION_NOT_NEEDED where the preferred replica leads already and
//! PREFERRED_LEADER_NOT_AVAILABLE where it is not alive and in sync, as in Kafka.

use proto_kafka::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use proto_kafka::messages::{ElectLeadersRequest, ElectLeadersResponse, TopicName};
use proto_kafka::protocol::StrBytes;
use proto_kafka::ResponseError;

use super::RequestContext;
use crate::broker::SharedBroker;
use crate::controller::{ControllerReply, ControllerRequest};

const PREFERRED: i8 = 0;
const UNCLEAN: i8 = 1;

pub async fn handle(
    broker: SharedBroker,
    context: RequestContext,
    request: ElectLeadersRequest,
) -> ElectLeadersResponse {
    let election_type = if context.api_version >= 1 {
        request.election_type
    } else {
        PREFERRED
    };
    let partitions: Option<Vec<(String, i32)>> = request.topic_partitions.map(|topics| {
        topics
            .iter()
            .flat_map(|topic| {
                topic
                    .partitions
                    .iter()
                    .map(move |index| (topic.topic.to_string(), *index))
            })
            .collect()
    });
    if !matches!(election_type, PREFERRED | UNCLEAN) {
        return ElectLeadersResponse::default()
            .with_error_code(ResponseError::InvalidRequest.code());
    }
    let call = ControllerRequest::ElectLeaders {
        unclean: election_type == UNCLEAN,
        partitions,
    };
    let outcomes = match broker.call_controller(call).await {
        Ok(ControllerReply::Elected(outcomes)) => outcomes,
        Ok(_) => {
            return ElectLeadersResponse::default()
                .with_error_code(ResponseError::UnknownServerError.code())
        }
        Err(error) => return ElectLeadersResponse::default().with_error_code(error.code()),
    };
    let mut results: Vec<ReplicaElectionResult> = Vec::new();
    for (topic, partition, code, message) in outcomes {
        let result = PartitionResult::default()
            .with_partition_id(partition)
            .with_error_code(code)
            .with_error_message(message.map(StrBytes::from_string));
        match results.iter_mut().find(|r| r.topic.0.as_str() == topic) {
            Some(entry) => entry.partition_result.push(result),
            None => results.push(
                ReplicaElectionResult::default()
                    .with_topic(TopicName(StrBytes::from_string(topic)))
                    .with_partition_result(vec![result]),
            ),
        }
    }
    ElectLeadersResponse::default().with_replica_election_results(results)
}
