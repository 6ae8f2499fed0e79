//! OffsetDelete: removes a group's committed offsets for partitions it does not consume
//! (GROUP_SUBSCRIBED_TO_TOPIC for a topic its members subscribe to).

use proto_kafka::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use proto_kafka::messages::{OffsetDeleteRequest, OffsetDeleteResponse};

use super::RequestContext;
use crate::broker::SharedBroker;

pub async fn handle(
    broker: SharedBroker,
    _context: RequestContext,
    request: OffsetDeleteRequest,
) -> OffsetDeleteResponse {
    let partitions: Vec<(String, i32)> = request
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (t.name.0.to_string(), p.partition_index))
        })
        .collect();
    let answers = match broker
        .groups
        .delete_offsets(&broker, &request.group_id.0, partitions)
        .await
    {
        Ok(answers) => answers,
        Err(error) => return OffsetDeleteResponse::default().with_error_code(error.code()),
    };
    let mut answers = answers.into_iter();
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    OffsetDeleteResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(answers.next().flatten().map_or(0, |e| e.code()))
                })
                .collect();
            OffsetDeleteResponseTopic::default()
                .with_name(topic.name)
                .with_partitions(partitions)
        })
        .collect();
    OffsetDeleteResponse::default().with_topics(topics)
}
