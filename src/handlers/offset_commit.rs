//! OffsetCommit: a group member (or, with generation -1, a consumer outside any managed
//! group) stores its positions; acknowledged once replicated like acks=all.

use proto_kafka::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use proto_kafka::messages::{OffsetCommitRequest, OffsetCommitResponse};

use super::RequestContext;
use crate::broker::SharedBroker;
use crate::coordinator::group::operations::OffsetCommit;

pub async fn handle(
    broker: SharedBroker,
    _context: RequestContext,
    request: OffsetCommitRequest,
) -> OffsetCommitResponse {
    let commits: Vec<OffsetCommit> = request
        .topics
        .iter()
        .flat_map(|topic| {
            topic.partitions.iter().map(|p| OffsetCommit {
                topic: topic.name.0.to_string(),
                partition: p.partition_index,
                offset: p.committed_offset,
                leader_epoch: p.committed_leader_epoch,
                metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
            })
        })
        .collect();
    let mut answers = broker
        .groups
        .commit_offsets(
            &broker,
            &request.group_id.0,
            (
                &request.member_id,
                request.group_instance_id.as_deref(),
                request.generation_id_or_member_epoch,
            ),
            commits,
        )
        .await
        .into_iter();
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let error = answers.next().flatten();
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(error.map_or(0, |e| e.code()))
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(topic.name)
                .with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}
