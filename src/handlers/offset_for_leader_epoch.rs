//! OffsetForLeaderEpoch: where did a leader epoch end in this leader's log? Followers (and
//! clients checking for truncation, KIP-320) ask with the latest epoch they hold and cut
//! their log to the answer. The largest epoch at or below the requested one is answered,
//! with the first offset of the next epoch or the log end.

use proto_kafka::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use proto_kafka::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};
use proto_kafka::ResponseError;

use karst_storage::{LeaderEpoch, TopicPartition};

use super::RequestContext;
use crate::broker::SharedBroker;

pub async fn handle(
    broker: SharedBroker,
    _context: RequestContext,
    request: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let image = broker.metadata.image();
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for wanted in topic.partitions {
            let key = TopicPartition::new(topic.topic.to_string(), wanted.partition);
            let answer = EpochEndOffset::default().with_partition(wanted.partition);
            let outcome = broker
                .replicas
                .leader_partition(&key, &image)
                .map_err(|error| error.code)
                .and_then(|partition| {
                    let current = partition.leader_epoch().0;
                    if wanted.current_leader_epoch >= 0 && wanted.current_leader_epoch < current {
                        return Err(ResponseError::FencedLeaderEpoch);
                    }
                    if wanted.current_leader_epoch > current {
                        return Err(ResponseError::UnknownLeaderEpoch);
                    }
                    Ok(broker
                        .replicas
                        .end_for_epoch(&partition, LeaderEpoch(wanted.leader_epoch)))
                });
            partitions.push(match outcome {
                Ok(end) => answer
                    .with_leader_epoch(end.epoch.0)
                    .with_end_offset(end.end_offset.0),
                Err(code) => answer
                    .with_error_code(code.code())
                    .with_leader_epoch(-1)
                    .with_end_offset(-1),
            });
        }
        topics.push(
            OffsetForLeaderTopicResult::default()
                .with_topic(topic.topic)
                .with_partitions(partitions),
        );
    }
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
