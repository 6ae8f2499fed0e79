//! Fetch: read whole batches from each requested partition, long-polling until `min_bytes`
//! are available or `max_wait_ms` passes, within `max_bytes` and `partition_max_bytes`, in
//! full or incremental fetch sessions.
//!
//! Responses are encoded by [`encode`], so that with `fetch.zero.copy.enable` (off by
//! default) record bytes in a segment's verified prefix go out with `sendfile` instead of
//! being read into memory, CRC-checked and copied into the frame. By default every batch
//! served is checked: a bit flipped on disk after this process wrote or checked it is then
//! caught (the log goes offline, and the replica hands its partitions to healthy copies:
//! `crate::replication::offline`).

pub mod encode;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use proto_kafka::messages::FetchRequest;
use proto_kafka::ResponseError;
use tokio::sync::watch;

use karst_storage::{LogError, Offset, ReadData, TopicPartition};

use super::{PendingFrame, RequestContext};
use crate::broker::SharedBroker;
use crate::fetch_session::{PartitionKey, SessionPartition, SessionUse};
use crate::replication::{isr, Partition};

/// Longest a fetch may wait, whatever the client asks: bounds parked requests.
pub const FETCH_WAIT_MS_MAX: i32 = 30_000;

/// One partition's read outcome.
struct PartitionRead {
    key: PartitionKey,
    error: Option<ResponseError>,
    high_watermark: i64,
    log_start_offset: i64,
    records: ReadData,
}

pub fn handle(
    broker: SharedBroker,
    context: RequestContext,
    request: FetchRequest,
) -> PendingFrame {
    Box::pin(async move {
        let version = context.api_version;
        let correlation_id = context.correlation_id;
        let body = respond(broker, version, request).await;
        Some(encode::encode(version, correlation_id, body))
    })
}

async fn respond(
    broker: SharedBroker,
    version: i16,
    request: FetchRequest,
) -> encode::FetchResponseBody {
    let requested: Vec<(PartitionKey, SessionPartition)> = request
        .topics
        .iter()
        .flat_map(|topic| {
            topic.partitions.iter().map(move |p| {
                (
                    (topic.topic.to_string(), p.partition),
                    SessionPartition {
                        fetch_offset: p.fetch_offset,
                        partition_max_bytes: p.partition_max_bytes,
                        current_leader_epoch: p.current_leader_epoch,
                        ..SessionPartition::default()
                    },
                )
            })
        })
        .collect();
    let forgotten: Vec<PartitionKey> = request
        .forgotten_topics_data
        .iter()
        .flat_map(|t| t.partitions.iter().map(move |p| (t.topic.to_string(), *p)))
        .collect();
    let (session_epoch, session_id) = if version >= 7 {
        (request.session_epoch, request.session_id)
    } else {
        (-1, 0)
    };
    let session = match broker.fetch_sessions.begin(
        session_id,
        session_epoch,
        requested.clone(),
        forgotten,
        request.replica_id.0 >= 0,
    ) {
        Ok(session) => session,
        Err(error) => {
            return encode::FetchResponseBody {
                throttle_time_ms: 0,
                error_code: error.code(),
                session_id: 0,
                topics: Vec::new(),
            };
        }
    };
    let (response_session_id, wanted, incremental) = match session {
        SessionUse::Sessionless => (0, requested, None),
        SessionUse::New(id) => (id, requested, None),
        SessionUse::Incremental(id, partitions) => {
            let previous = partitions.clone();
            (id, partitions.into_iter().collect(), Some(previous))
        }
    };
    let image = broker.metadata.image();
    let follower = (request.replica_id.0 >= 0).then_some(request.replica_id.0);
    let now = broker.replicas.clock().now_ms();
    let hosted: Vec<Result<Arc<Partition>, ResponseError>> = wanted
        .iter()
        .map(|((topic, index), position)| {
            let partition = broker
                .replicas
                .leader_partition(&TopicPartition::new(topic.clone(), *index), &image)
                .map_err(|error| error.code)?;
            check_leader_epoch(&partition, position.current_leader_epoch)?;
            if let Some(follower) = follower {
                // The follower holds everything below its fetch offset, synced.
                if let Some(isr) =
                    partition.record_follower_fetch(follower, position.fetch_offset, now)
                {
                    isr::request_expansion(&broker, Arc::clone(&partition), isr);
                }
            }
            Ok(partition)
        })
        .collect();
    let max_wait = Duration::from_millis(request.max_wait_ms.clamp(0, FETCH_WAIT_MS_MAX) as u64);
    let deadline = tokio::time::Instant::now() + max_wait;
    let min_bytes = request.min_bytes.max(0) as usize;
    let max_bytes = if request.max_bytes <= 0 {
        i32::MAX as usize
    } else {
        request.max_bytes as usize
    };
    let reads = loop {
        // Subscribe before reading, so a change between the read and the wait still
        // wakes us.
        let mut changes: Vec<watch::Receiver<u64>> =
            hosted.iter().flatten().map(|p| p.subscribe()).collect();
        let reads = read_all(
            &wanted,
            &hosted,
            max_bytes,
            broker.config.fetch_zero_copy,
            follower.is_some(),
        );
        let bytes: usize = reads.iter().map(|r| r.records.len()).sum();
        let failed = reads.iter().any(|r| r.error.is_some());
        if bytes >= min_bytes.max(1)
            || failed
            || tokio::time::Instant::now() >= deadline
            || min_bytes == 0 && bytes > 0
        {
            break reads;
        }
        if min_bytes == 0 {
            break reads;
        }
        if changes.is_empty() {
            tokio::time::sleep_until(deadline).await;
        } else {
            let waiting = changes
                .iter_mut()
                .map(|receiver| Box::pin(receiver.changed()));
            tokio::select! {
                _ = futures_util::future::select_all(waiting) => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    };
    if response_session_id != 0 {
        let reported: Vec<_> = reads
            .iter()
            .map(|r| (r.key.clone(), r.high_watermark, r.log_start_offset))
            .collect();
        broker.fetch_sessions.record(response_session_id, &reported);
    }
    let mut topics: Vec<encode::TopicResponse> = Vec::new();
    for read in reads {
        if let Some(previous) = &incremental {
            let before = &previous[&read.key];
            let changed = !read.records.is_empty()
                || read.error.is_some()
                || read.high_watermark != before.last_high_watermark
                || read.log_start_offset != before.last_log_start_offset;
            if !changed {
                continue;
            }
        }
        let topic = read.key.0.clone();
        metrics::counter!("kafka_server_brokertopicmetrics_bytesout_total", "topic" => topic.clone())
            .increment(read.records.len() as u64);
        let partition = encode::PartitionResponse {
            partition_index: read.key.1,
            error_code: read.error.map_or(0, |e| e.code()),
            high_watermark: read.high_watermark,
            last_stable_offset: read.high_watermark,
            log_start_offset: read.log_start_offset,
            aborted_transactions: (request.isolation_level == 1).then(Vec::new),
            preferred_read_replica: -1,
            records: read.records,
        };
        match topics.last_mut() {
            Some(last) if last.name == topic => last.partitions.push(partition),
            _ => topics.push(encode::TopicResponse {
                name: topic,
                partitions: vec![partition],
            }),
        }
    }
    encode::FetchResponseBody {
        throttle_time_ms: 0,
        error_code: 0,
        session_id: response_session_id,
        topics,
    }
}

/// A client that names a leader epoch must name the current one: an older epoch means its
/// metadata is stale (FENCED_LEADER_EPOCH), a newer one that ours is (UNKNOWN_LEADER_EPOCH).
fn check_leader_epoch(partition: &Partition, claimed: i32) -> Result<(), ResponseError> {
    if claimed < 0 {
        return Ok(());
    }
    let current = partition.leader_epoch().0;
    match claimed.cmp(&current) {
        std::cmp::Ordering::Less => Err(ResponseError::FencedLeaderEpoch),
        std::cmp::Ordering::Greater => Err(ResponseError::UnknownLeaderEpoch),
        std::cmp::Ordering::Equal => Ok(()),
    }
}

/// Reads every wanted partition, within the response's `max_bytes` overall: a consumer up
/// to the high watermark, a follower up to the leader's durable end.
fn read_all(
    wanted: &[(PartitionKey, SessionPartition)],
    hosted: &[Result<Arc<Partition>, ResponseError>],
    max_bytes: usize,
    zero_copy: bool,
    for_follower: bool,
) -> Vec<PartitionRead> {
    let mut remaining = max_bytes;
    let mut reads = Vec::with_capacity(wanted.len());
    for ((key, position), partition) in wanted.iter().zip(hosted) {
        let partition = match partition {
            Ok(partition) => partition,
            Err(code) => {
                reads.push(PartitionRead {
                    key: key.clone(),
                    error: Some(*code),
                    high_watermark: -1,
                    log_start_offset: -1,
                    records: ReadData::Bytes(Bytes::new()),
                });
                continue;
            }
        };
        let high_watermark = partition.high_watermark();
        let log_start_offset = partition.log.offsets().log_start_offset;
        let bound = if for_follower {
            Offset::MAX
        } else {
            high_watermark
        };
        let limit = (position.partition_max_bytes.max(0) as usize).min(remaining);
        let offset = Offset(position.fetch_offset);
        let read = if limit == 0 && remaining == 0 {
            Ok(ReadData::Bytes(Bytes::new()))
        } else if zero_copy {
            partition.log.read_for_send(offset, limit.max(1), bound)
        } else {
            partition
                .log
                .read(offset, limit.max(1), bound)
                .map(ReadData::Bytes)
        };
        let (error, records) = match read {
            Ok(records) => (None, records),
            Err(error) => {
                if !matches!(error, LogError::OffsetOutOfRange { .. }) {
                    tracing::warn!(partition = %partition.topic_partition, %error, "fetch read failed");
                }
                let code = crate::error::ApiError::from(&error).code;
                (Some(code), ReadData::Bytes(Bytes::new()))
            }
        };
        remaining = remaining.saturating_sub(records.len());
        reads.push(PartitionRead {
            key: key.clone(),
            error,
            high_watermark: high_watermark.0,
            log_start_offset: log_start_offset.0,
            records,
        });
    }
    reads
}
