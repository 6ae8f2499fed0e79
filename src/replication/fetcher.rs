//! Follower fetchers: one task per leader broker this node follows, fetching every
//! partition it follows from that leader in one Fetch request (replica_id set: the same
//! request, and on the leader the same read path, as a consumer's).
//!
//! A follower appends what it fetched with the leader's offsets and epochs, and only after
//! those records are durable here does its next fetch report them (its fetch offset is its
//! durable log end): the leader counts a record as replicated only once every ISR member
//! has synced it, so a simultaneous power loss of every replica loses nothing acknowledged.
//!
//! Before fetching from a new leader (or at a new epoch) a follower asks where its own
//! latest epoch ended on the leader (OffsetForLeaderEpoch) and truncates what lies beyond:
//! records an old leader appended but never committed. Truncating to the high watermark
//! instead would lose committed records in some leader-change sequences (KIP-101).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proto_kafka::messages::fetch_request::{FetchPartition, FetchTopic};
use proto_kafka::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use proto_kafka::messages::{BrokerId, FetchRequest, OffsetForLeaderEpochRequest, TopicName};
use proto_kafka::protocol::{StrBytes, VersionRange};
use proto_kafka::ResponseError;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use karst_storage::{validate_replicated, LeaderEpoch, LogError, Offset};

use super::partition::Partition;
use crate::broker::SharedBroker;
use crate::client::connection::{Connection, ConnectionOptions};

/// A leader and its followers learn a new leader epoch from the same metadata a moment apart;
/// a fetch or OffsetForLeaderEpoch refused for that reason (NOT_LEADER_OR_FOLLOWER,
/// FENCED_LEADER_EPOCH, UNKNOWN_LEADER_EPOCH, or a truncation still pending) is retried after
/// this, on the same connection, rather than after `replica.fetch.backoff.ms`: that backoff
/// would add up to a second to every failover.
const EPOCH_RACE_RETRY: Duration = Duration::from_millis(50);

/// Fetch versions followers use: by topic name (v13+ would need topic ids end to end).
const FOLLOWER_FETCH_VERSIONS: VersionRange = VersionRange { min: 4, max: 12 };

/// The running fetcher task per leader broker id.
#[derive(Default)]
pub struct Fetchers {
    tasks: Mutex<HashMap<i32, JoinHandle<()>>>,
}

impl Fetchers {
    /// Starts a fetcher for every leader in `leaders` that has none running. A fetcher
    /// stops by itself once this node follows nothing from its leader.
    pub fn reconcile(
        &self,
        broker: &SharedBroker,
        leaders: &BTreeSet<i32>,
        shutdown: &watch::Receiver<bool>,
    ) {
        let mut tasks = self.tasks.lock().expect("fetchers lock poisoned");
        tasks.retain(|_, task| !task.is_finished());
        for leader in leaders {
            if tasks.contains_key(leader) {
                continue;
            }
            tracing::info!(leader, "starting a follower fetcher");
            let task = tokio::spawn(run(Arc::clone(broker), *leader, shutdown.clone()));
            tasks.insert(*leader, task);
        }
    }
}

/// One leader's fetch loop.
async fn run(broker: SharedBroker, leader: i32, mut shutdown: watch::Receiver<bool>) {
    let backoff = Duration::from_millis(broker.config.replication.fetch_backoff_ms.max(10));
    let mut connection: Option<Connection> = None;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let partitions = broker.replicas.following(leader);
        if partitions.is_empty() {
            tracing::info!(
                leader,
                "follower fetcher stops: nothing to follow from this leader"
            );
            return;
        }
        let outcome = match connection.as_mut() {
            Some(open) => fetch_round(&broker, open, &partitions).await,
            None => match connect(&broker, leader).await {
                Ok(open) => {
                    connection = Some(open);
                    continue;
                }
                Err(problem) => Err(problem),
            },
        };
        if let Err(problem) = outcome {
            tracing::debug!(leader, problem, "follower fetch failed; backing off");
            connection = None;
            tokio::select! {
                _ = shutdown.changed() => return,
                () = tokio::time::sleep(backoff) => {}
            }
        }
    }
}

async fn connect(broker: &SharedBroker, leader: i32) -> Result<Connection, String> {
    let image = broker.metadata.image();
    let address = image
        .broker(leader)
        .and_then(|registration| {
            registration
                .listeners
                .iter()
                .find(|listener| listener.name == "PLAINTEXT")
                .map(|listener| format!("{}:{}", listener.host, listener.port))
        })
        .ok_or_else(|| format!("leader {leader} has no registered PLAINTEXT listener"))?;
    let options = ConnectionOptions {
        client_id: format!("karst-replica-fetcher-{}", broker.config.node_id),
        ..ConnectionOptions::default()
    };
    Connection::connect(&address, options)
        .await
        .map_err(|error| error.to_string())
}

/// One round: truncate the partitions that need it, then one fetch for the rest.
async fn fetch_round(
    broker: &SharedBroker,
    connection: &mut Connection,
    partitions: &[Arc<Partition>],
) -> Result<(), String> {
    // An offline log (a failed write, or a damaged batch) neither truncates nor fetches
    // until `super::offline` repairs it: a fetch position it cannot serve from must not
    // bring it back into the ISR.
    let partitions: Vec<Arc<Partition>> = partitions
        .iter()
        .filter(|p| p.log.is_online())
        .cloned()
        .collect();
    let partitions = &partitions[..];
    let diverged: Vec<&Arc<Partition>> =
        partitions.iter().filter(|p| p.needs_truncation()).collect();
    if !diverged.is_empty() {
        truncate_diverged(broker, connection, &diverged).await?;
    }
    let ready: Vec<(Arc<Partition>, i32, i64)> = partitions
        .iter()
        .filter(|p| !p.needs_truncation())
        .filter_map(|p| {
            p.follower_position()
                .map(|(_, epoch, end)| (Arc::clone(p), epoch, end))
        })
        .collect();
    if ready.is_empty() {
        // Truncation is pending: the new leader had not taken its epoch yet.
        tokio::time::sleep(EPOCH_RACE_RETRY).await;
        return Ok(());
    }
    let options = &broker.config.replication;
    let mut topics: Vec<FetchTopic> = Vec::new();
    for (partition, epoch, end) in &ready {
        let entry = FetchPartition::default()
            .with_partition(partition.topic_partition.partition)
            .with_current_leader_epoch(*epoch)
            .with_fetch_offset(*end)
            .with_last_fetched_epoch(-1)
            .with_log_start_offset(partition.log.offsets().log_start_offset.0)
            .with_partition_max_bytes(options.fetch_partition_bytes_max);
        let name = &partition.topic_partition.topic;
        match topics.iter_mut().find(|t| t.topic.0.as_str() == name) {
            Some(topic) => topic.partitions.push(entry),
            None => topics.push(
                FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(name.clone())))
                    .with_partitions(vec![entry]),
            ),
        }
    }
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(broker.config.node_id))
        .with_max_wait_ms(options.fetch_wait_max_ms)
        .with_min_bytes(1)
        .with_max_bytes(options.fetch_response_bytes_max)
        .with_isolation_level(0)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(topics);
    let version = connection
        .version_within::<FetchRequest>(FOLLOWER_FETCH_VERSIONS)
        .map_err(|error| error.to_string())?;
    let response = connection
        .send_waiting(request, version, options.fetch_wait_max_ms.max(0) as u64)
        .await
        .map_err(|error| error.to_string())?;
    if response.error_code != 0 {
        return Err(format!(
            "fetch failed with error code {}",
            response.error_code
        ));
    }
    // Queue every partition's append first, then wait for all: one group commit, not one
    // fsync per partition.
    let mut appends = Vec::new();
    let mut failed = false;
    let mut epoch_race = false;
    for topic in response.responses {
        for data in topic.partitions {
            let Some((partition, epoch, end)) = ready.iter().find(|(p, _, _)| {
                p.topic_partition.topic == topic.topic.0.as_str()
                    && p.topic_partition.partition == data.partition_index
            }) else {
                continue;
            };
            let guard = partition.follower_io.lock().await;
            // The leader, epoch or log may have changed while the fetch was out.
            if partition.follower_position().map(|(_, e, n)| (e, n)) != Some((*epoch, *end)) {
                continue;
            }
            match ResponseError::try_from_code(data.error_code) {
                None => {}
                Some(ResponseError::OffsetOutOfRange) => {
                    handle_out_of_range(broker, partition, data.log_start_offset);
                    continue;
                }
                Some(
                    error @ (ResponseError::NotLeaderOrFollower
                    | ResponseError::FencedLeaderEpoch
                    | ResponseError::UnknownLeaderEpoch),
                ) => {
                    tracing::debug!(partition = %partition.topic_partition, ?error, "leader and follower disagree on the epoch; retrying soon");
                    epoch_race = true;
                    continue;
                }
                Some(error) => {
                    tracing::debug!(partition = %partition.topic_partition, ?error, "leader refused a follower fetch");
                    failed = true;
                    continue;
                }
            }
            follow_log_start(partition, data.log_start_offset);
            let records = data.records.unwrap_or_default();
            let batches = match validate_replicated(&records) {
                Ok(batches) => batches,
                Err(error) => {
                    tracing::warn!(partition = %partition.topic_partition, %error, "corrupt records from the leader; refetching");
                    failed = true;
                    continue;
                }
            };
            if batches.is_empty() {
                partition.set_follower_high_watermark(data.high_watermark);
                continue;
            }
            // Followers take room in the commit queue like producers do, so replication
            // cannot flood it either; the room is released at the sync, never waits on it.
            let permit = broker
                .replicas
                .logs()
                .commit_budget()
                .acquire(records.len())
                .await;
            let receiver = broker
                .replicas
                .append_replicated(partition, batches, permit);
            appends.push((Arc::clone(partition), receiver, data.high_watermark, guard));
        }
    }
    for (partition, receiver, leader_high_watermark, guard) in appends {
        match receiver.await {
            Ok(Ok(_)) => partition.set_follower_high_watermark(leader_high_watermark),
            Ok(Err(LogError::OutOfOrder(reason))) => {
                tracing::warn!(partition = %partition.topic_partition, reason, "replicated records do not follow the log; truncating again");
                partition.mark_diverged();
            }
            Ok(Err(error)) => {
                tracing::warn!(partition = %partition.topic_partition, %error, "follower append failed");
                failed = true;
            }
            Err(_) => failed = true,
        }
        drop(guard);
    }
    if failed {
        return Err("some partitions failed; backing off".to_owned());
    }
    if epoch_race {
        tokio::time::sleep(EPOCH_RACE_RETRY).await;
    }
    Ok(())
}

/// The leader's log start moved (DeleteRecords, retention): the follower's follows, as far as
/// its own log reaches.
fn follow_log_start(partition: &Partition, leader_log_start: i64) {
    let offsets = partition.log.offsets();
    let target = Offset(leader_log_start).min(offsets.durable_end_offset);
    if target > offsets.log_start_offset {
        if let Err(error) = partition.log.delete_records_before(target) {
            tracing::warn!(partition = %partition.topic_partition, %error, "could not follow the leader's log start");
        }
    }
}

/// The leader no longer has the follower's fetch offset: below its log start (retention
/// or DeleteRecords removed it) the follower starts over at the leader's log start; above
/// its end the logs diverged and the follower truncates by epoch again.
fn handle_out_of_range(broker: &SharedBroker, partition: &Arc<Partition>, leader_log_start: i64) {
    let end = partition.log.offsets().durable_end_offset.0;
    if leader_log_start >= 0 && end < leader_log_start {
        tracing::info!(partition = %partition.topic_partition, end, leader_log_start, "follower is behind the leader's log start: starting over there");
        if let Err(error) = broker
            .replicas
            .logs()
            .reset_to(&partition.log, Offset(leader_log_start))
        {
            tracing::warn!(partition = %partition.topic_partition, %error, "could not reset the follower log");
        }
        partition.clamp_high_watermark();
    } else {
        partition.mark_diverged();
    }
}

/// Asks the leader where each partition's latest local epoch ended there and truncates the
/// local log to that point (never past its own end for that epoch).
async fn truncate_diverged(
    broker: &SharedBroker,
    connection: &mut Connection,
    partitions: &[&Arc<Partition>],
) -> Result<(), String> {
    let mut asked: Vec<(&Arc<Partition>, i32, LeaderEpoch)> = Vec::new();
    let mut topics: Vec<OffsetForLeaderTopic> = Vec::new();
    for partition in partitions {
        let Some((_, epoch, _)) = partition.follower_position() else {
            continue;
        };
        let Some(latest) = partition.log.latest_epoch() else {
            // Nothing here was written by any leader: nothing can diverge.
            partition.truncation_done(epoch);
            continue;
        };
        asked.push((partition, epoch, latest));
        let entry = OffsetForLeaderPartition::default()
            .with_partition(partition.topic_partition.partition)
            .with_current_leader_epoch(epoch)
            .with_leader_epoch(latest.0);
        let name = &partition.topic_partition.topic;
        match topics.iter_mut().find(|t| t.topic.0.as_str() == name) {
            Some(topic) => topic.partitions.push(entry),
            None => topics.push(
                OffsetForLeaderTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(name.clone())))
                    .with_partitions(vec![entry]),
            ),
        }
    }
    if asked.is_empty() {
        return Ok(());
    }
    let request = OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(broker.config.node_id))
        .with_topics(topics);
    let version = connection
        .version::<OffsetForLeaderEpochRequest>()
        .map_err(|error| error.to_string())?;
    let response = connection
        .send(request, version)
        .await
        .map_err(|error| error.to_string())?;
    for topic in response.topics {
        for answer in topic.partitions {
            let Some((partition, epoch, _latest)) = asked.iter().find(|(p, _, _)| {
                p.topic_partition.topic == topic.topic.0.as_str()
                    && p.topic_partition.partition == answer.partition
            }) else {
                continue;
            };
            if answer.error_code != 0 {
                tracing::debug!(partition = %partition.topic_partition, code = answer.error_code, "OffsetForLeaderEpoch refused; retrying");
                continue;
            }
            let _guard = partition.follower_io.lock().await;
            if partition.follower_position().map(|(_, e, _)| e) != Some(*epoch) {
                continue;
            }
            let target = truncation_target(partition, answer.leader_epoch, answer.end_offset);
            if let Err(error) = broker.replicas.truncate(partition, target) {
                tracing::warn!(partition = %partition.topic_partition, %error, "truncation failed");
                continue;
            }
            partition.truncation_done(*epoch);
        }
    }
    Ok(())
}

/// Where to cut: the leader's end of the largest epoch both know (KIP-279), but never past
/// this log's own end for that epoch; the high watermark when the leader knows no epoch.
fn truncation_target(partition: &Partition, leader_epoch: i32, leader_end: i64) -> Offset {
    let log_end = partition.log.offsets().durable_end_offset;
    if leader_epoch < 0 || leader_end < 0 {
        return partition.high_watermark().min(log_end);
    }
    let local = partition.log.end_for_epoch(LeaderEpoch(leader_epoch));
    let mut target = Offset(leader_end);
    if local.epoch == LeaderEpoch(leader_epoch) {
        target = target.min(local.end_offset);
    }
    target.min(log_end)
}
