//! OffsetFetch: a group's committed offsets; v8+ asks for several groups at once. A
//! partition without a committed offset answers offset -1, as Kafka's.

use proto_kafka::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use proto_kafka::messages::{OffsetFetchRequest, OffsetFetchResponse, TopicName};
use proto_kafka::protocol::StrBytes;
use proto_kafka::ResponseError;

use super::RequestContext;
use crate::broker::SharedBroker;
use crate::coordinator::group::OffsetValue;

type Fetched = Result<Vec<(String, i32, Option<OffsetValue>)>, ResponseError>;

pub async fn handle(
    broker: SharedBroker,
    context: RequestContext,
    request: OffsetFetchRequest,
) -> OffsetFetchResponse {
    if context.api_version >= 8 {
        let groups = request
            .groups
            .into_iter()
            .map(|group| {
                let wanted = group.topics.map(|topics| {
                    topics
                        .into_iter()
                        .map(|t| (t.name.0.to_string(), t.partition_indexes))
                        .collect()
                });
                let fetched = broker
                    .groups
                    .fetch_offsets(&broker, &group.group_id.0, wanted);
                batched_group(group.group_id, fetched)
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let wanted = request.topics.map(|topics| {
        topics
            .into_iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes))
            .collect()
    });
    match broker
        .groups
        .fetch_offsets(&broker, &request.group_id.0, wanted)
    {
        Err(error) => OffsetFetchResponse::default().with_error_code(error.code()),
        Ok(offsets) => {
            let mut topics: Vec<OffsetFetchResponseTopic> = Vec::new();
            for (topic, partition, value) in offsets {
                let entry = OffsetFetchResponsePartition::default()
                    .with_partition_index(partition)
                    .with_committed_offset(value.as_ref().map_or(-1, |v| v.offset))
                    .with_committed_leader_epoch(value.as_ref().map_or(-1, |v| v.leader_epoch))
                    .with_metadata(Some(StrBytes::from_string(
                        value.map(|v| v.metadata).unwrap_or_default(),
                    )));
                match topics.iter_mut().find(|t| t.name.0.as_str() == topic) {
                    Some(existing) => existing.partitions.push(entry),
                    None => topics.push(
                        OffsetFetchResponseTopic::default()
                            .with_name(TopicName(StrBytes::from_string(topic)))
                            .with_partitions(vec![entry]),
                    ),
                }
            }
            OffsetFetchResponse::default().with_topics(topics)
        }
    }
}

fn batched_group(
    group_id: proto_kafka::messages::GroupId,
    fetched: Fetched,
) -> OffsetFetchResponseGroup {
    let group = OffsetFetchResponseGroup::default().with_group_id(group_id);
    let offsets = match fetched {
        Err(error) => return group.with_error_code(error.code()),
        Ok(offsets) => offsets,
    };
    let mut topics: Vec<OffsetFetchResponseTopics> = Vec::new();
    for (topic, partition, value) in offsets {
        let entry = OffsetFetchResponsePartitions::default()
            .with_partition_index(partition)
            .with_committed_offset(value.as_ref().map_or(-1, |v| v.offset))
            .with_committed_leader_epoch(value.as_ref().map_or(-1, |v| v.leader_epoch))
            .with_metadata(Some(StrBytes::from_string(
                value.map(|v| v.metadata).unwrap_or_default(),
            )));
        match topics.iter_mut().find(|t| t.name.0.as_str() == topic) {
            Some(existing) => existing.partitions.push(entry),
            None => topics.push(
                OffsetFetchResponseTopics::default()
                    .with_name(TopicName(StrBytes::from_string(topic)))
                    .with_partitions(vec![entry]),
            ),
        }
    }
    group.with_topics(topics)
}
