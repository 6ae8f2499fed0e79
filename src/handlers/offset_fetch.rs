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
            let topics = by_topic(offsets)
                .into_iter()
                .map(|(topic, partitions)| {
                    let partitions = partitions
                        .into_iter()
                        .map(|(partition, offset, leader_epoch, metadata)| {
                            OffsetFetchResponsePartition::default()
                                .with_partition_index(partition)
                                .with_committed_offset(offset)
                                .with_committed_leader_epoch(leader_epoch)
                                .with_metadata(Some(StrBytes::from_string(metadata)))
                        })
                        .collect();
                    OffsetFetchResponseTopic::default()
                        .with_name(TopicName(StrBytes::from_string(topic)))
                        .with_partitions(partitions)
                })
                .collect();
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
    let topics = by_topic(offsets)
        .into_iter()
        .map(|(topic, partitions)| {
            let partitions = partitions
                .into_iter()
                .map(|(partition, offset, leader_epoch, metadata)| {
                    OffsetFetchResponsePartitions::default()
                        .with_partition_index(partition)
                        .with_committed_offset(offset)
                        .with_committed_leader_epoch(leader_epoch)
                        .with_metadata(Some(StrBytes::from_string(metadata)))
                })
                .collect();
            OffsetFetchResponseTopics::default()
                .with_name(TopicName(StrBytes::from_string(topic)))
                .with_partitions(partitions)
        })
        .collect();
    group.with_topics(topics)
}

/// The answer's partitions grouped by topic, in first-seen order: (partition, offset,
/// leader epoch, metadata), -1 where nothing is committed. Both response layouts (one
/// group, v1-7; batched groups, v8+) are built from it.
type PartitionAnswer = (i32, i64, i32, String);

fn by_topic(
    offsets: Vec<(String, i32, Option<OffsetValue>)>,
) -> Vec<(String, Vec<PartitionAnswer>)> {
    let mut topics: Vec<(String, Vec<PartitionAnswer>)> = Vec::new();
    for (topic, partition, value) in offsets {
        let answer = match value {
            Some(v) => (partition, v.offset, v.leader_epoch, v.metadata),
            None => (partition, -1, -1, String::new()),
        };
        match topics.iter_mut().find(|(name, _)| *name == topic) {
            Some((_, partitions)) => partitions.push(answer),
            None => topics.push((topic, vec![answer])),
        }
    }
    topics
}
