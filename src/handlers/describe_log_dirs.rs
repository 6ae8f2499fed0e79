//! DescribeLogDirs: the broker's one log directory and the size of every partition in it
//! (`kafka-log-dirs --describe`). From v4 it also reports the volume's total and usable
//! bytes.
//!
//! A single node has no replica catching up and no future (moving) replica, so every
//! partition's `offset_lag` is 0 and `is_future_key` is false.

use std::collections::BTreeMap;
use std::path::Path;

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
    match volume_bytes(&dir) {
        Ok((total, usable)) => result.with_total_bytes(total).with_usable_bytes(usable),
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
        let described = DescribeLogDirsPartition::default()
            .with_partition_index(key.partition)
            .with_partition_size(partition.log.size_bytes() as i64)
            .with_offset_lag(0)
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

/// (total, usable) bytes of the filesystem holding `dir`. Usable is what an unprivileged
/// writer can still use (`f_bavail`), as Java's `FileStore.getUsableSpace` reports.
fn volume_bytes(dir: &Path) -> std::io::Result<(i64, i64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidInput, error))?;
    // SAFETY: `path` is a NUL-terminated string that outlives the call, and `stats` is a
    // plain C struct that statvfs fills in (all-zero bytes are a valid value for it).
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    let status = unsafe { libc::statvfs(path.as_ptr(), &mut stats) };
    if status != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fragment_bytes = stats.f_frsize as u64;
    let total = stats.f_blocks as u64 * fragment_bytes;
    let usable = stats.f_bavail as u64 * fragment_bytes;
    Ok((
        i64::try_from(total).unwrap_or(i64::MAX),
        i64::try_from(usable).unwrap_or(i64::MAX),
    ))
}
