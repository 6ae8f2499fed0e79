//! DescribeLogDirs: the broker's one log directory and the size of every partition in it
//! (`kafka-log-dirs --describe`). From v4 it also reports the volume's total and usable
//! bytes.
//!
//! A single node has no replica catching up and no future (moving) replica, so every
//! partition's `offset_lag` is 0 and `is_future_key` is false.

use std::collections::BTreeMap;

use proto_kafka::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use proto_kafka::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName};
use proto_kafka::protocol::StrBytes;
use proto_kafka::ResponseError;

use karst_storage::TopicPartition;

use super::RequestContext;
use crate::broker::{Broker, SharedBroker};

/// First version whose results carry the volume's total and usable bytes.
const VOLUME_BYTES_VERSION: i16 = 4;

pub async fn handle(
    broker: SharedBroker,
    context: RequestContext,
    request: DescribeLogDirsRequest,
) -> DescribeLogDirsResponse {
    // statvfs and the per-log size sums are cheap, but statvfs is a filesystem call that
    // can stall on a sick disk: keep it off the network threads.
    let version = context.api_version;
    let result = tokio::task::spawn_blocking(move || describe(&broker, version, request))
        .await
        .unwrap_or_else(|panic| {
            tracing::error!(%panic, "DescribeLogDirs panicked");
            DescribeLogDirsResult::default()
                .with_error_code(ResponseError::UnknownServerError.code())
        });
    DescribeLogDirsResponse::default().with_results(vec![result])
}

fn describe(
    broker: &Broker,
    version: i16,
    request: DescribeLogDirsRequest,
) -> DescribeLogDirsResult {
    // Kafka reports the directory as an absolute path (without resolving symlinks).
    let dir = std::path::absolute(&broker.config.log_dir)
        .unwrap_or_else(|_| broker.config.log_dir.clone());
    let result = DescribeLogDirsResult::default()
        .with_log_dir(StrBytes::from_string(dir.display().to_string()))
        .with_topics(topics(broker, request));
    if version < VOLUME_BYTES_VERSION {
        return result;
    }
    let as_i64 = |bytes: u64| i64::try_from(bytes).unwrap_or(i64::MAX);
    match karst_storage::space::volume_bytes(&dir) {
        Ok(volume) => result
            .with_total_bytes(as_i64(volume.total))
            .with_usable_bytes(as_i64(volume.usable)),
        Err(error) => {
            tracing::error!(dir = %dir.display(), %error, "statvfs of the log directory failed");
            result.with_error_code(ResponseError::KafkaStorageError.code())
        }
    }
}

/// The hosted partitions asked about (all when the request's `topics` is null), grouped
/// by topic in name order. Partitions this node does not host are left out, as Kafka does.
fn topics(broker: &Broker, request: DescribeLogDirsRequest) -> Vec<DescribeLogDirsTopic> {
    let wanted: Vec<TopicPartition> = match request.topics {
        None => broker
            .replicas
            .partitions()
            .iter()
            .map(|p| p.topic_partition.clone())
            .collect(),
        Some(topics) => topics
            .iter()
            .flat_map(|topic| {
                let name = topic.topic.to_string();
                topic
                    .partitions
                    .iter()
                    .map(move |&index| TopicPartition::new(name.clone(), index))
            })
            .collect(),
    };
    let mut by_topic: BTreeMap<String, BTreeMap<i32, DescribeLogDirsPartition>> = BTreeMap::new();
    for key in wanted {
        let Some(partition) = broker.replicas.partition(&key) else {
            continue;
        };
        // Kafka's lag of a replica: how far its log end trails the high watermark it knows.
        let view = partition.view();
        let offset_lag = (view.high_watermark.0 - view.log_end_offset.0).max(0);
        let described = DescribeLogDirsPartition::default()
            .with_partition_index(key.partition)
            .with_partition_size(partition.log.size_bytes() as i64)
            .with_offset_lag(offset_lag)
            .with_is_future_key(false);
        by_topic
            .entry(key.topic)
            .or_default()
            .insert(key.partition, described);
    }
    by_topic
        .into_iter()
        .map(|(name, partitions)| {
            DescribeLogDirsTopic::default()
                .with_name(TopicName(StrBytes::from_string(name)))
                .with_partitions(partitions.into_values().collect())
        })
        .collect()
}
