//! The replica manager: every partition replica this node hosts, leader or follower.
//!
//! Partition state changes only here, and only in response to a published metadata image
//! ([`ReplicaManager::apply_image`]) or the controller's answer to this node's own
//! AlterPartition: a replica assigned here gets its log created (or reconfigured) and
//! becomes leader or follower as the image says; a removed topic's logs, and those of
//! replicas moved away, are deleted. Handlers reach partitions only through it: appends
//! (leader), reads bounded by what the reader may see, follower fetch bookkeeping.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use proto_kafka::ResponseError;
use tokio::sync::oneshot;

use karst_storage::{
    checkpoint, validate_produced, AppendInfo, AppendOrigin, CommitPermit, LeaderEpoch, LogError,
    LogManager, Offset, TopicPartition,
};

use super::partition::{Assignment, NewPartition, NotLeader, Partition};
use crate::clock::{Clock, SystemClock};
use crate::config::{topic, BrokerConfig};
use crate::error::ApiError;
use crate::metadata::MetadataImage;

/// Kafka's name for the file of checkpointed high watermarks, in the data directory.
pub const HIGH_WATERMARK_CHECKPOINT: &str = "replication-offset-checkpoint";

pub struct ReplicaManager {
    node_id: i32,
    logs: Arc<LogManager>,
    partitions: RwLock<HashMap<TopicPartition, Arc<Partition>>>,
    /// High watermarks from the checkpoint at start-up, for replicas not yet created.
    checkpointed_high_watermarks: HashMap<TopicPartition, Offset>,
    /// A metadata image has been applied: replicas have their roles.
    applied: std::sync::atomic::AtomicBool,
    /// Bumped after every applied image: coordinators subscribe to load or unload the
    /// state of partitions whose leadership changed (this manager never depends on them).
    roles_applied: tokio::sync::watch::Sender<u64>,
    /// The time follower lag and ISR changes are measured by.
    clock: Arc<dyn Clock>,
}

impl ReplicaManager {
    pub fn new(node_id: i32, logs: Arc<LogManager>) -> ReplicaManager {
        ReplicaManager::with_clock(node_id, logs, Arc::new(SystemClock))
    }

    /// A replica manager measuring follower lag by `clock` (tests pass a manual one).
    pub fn with_clock(
        node_id: i32,
        logs: Arc<LogManager>,
        clock: Arc<dyn Clock>,
    ) -> ReplicaManager {
        let path = logs.dir().join(HIGH_WATERMARK_CHECKPOINT);
        let checkpointed_high_watermarks = checkpoint::read(&path).unwrap_or_else(|error| {
            tracing::warn!(%error, "ignoring an unreadable high watermark checkpoint");
            HashMap::new()
        });
        ReplicaManager {
            node_id,
            logs,
            partitions: RwLock::new(HashMap::new()),
            checkpointed_high_watermarks,
            applied: std::sync::atomic::AtomicBool::new(false),
            roles_applied: tokio::sync::watch::channel(0).0,
            clock,
        }
    }

    /// The clock of follower fetch times and ISR lag.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Led partitions whose ISR holds a follower that has not caught up for `lag_max_ms`
    /// (`replica.lag.time.max.ms`) by this manager's clock, each with the ISR to ask the
    /// controller for (marked pending on the partition).
    pub fn shrink_candidates(&self, lag_max_ms: u64) -> Vec<(Arc<Partition>, Vec<i32>)> {
        let now = self.clock.now_ms();
        self.partitions()
            .into_iter()
            .filter_map(|partition| {
                let isr = partition.shrink_candidate(now, lag_max_ms)?;
                Some((partition, isr))
            })
            .collect()
    }

    pub fn logs(&self) -> &Arc<LogManager> {
        &self.logs
    }

    pub fn node_id(&self) -> i32 {
        self.node_id
    }

    /// Changes after every applied metadata image (roles, epochs, replicas may have moved).
    pub fn subscribe_roles(&self) -> tokio::sync::watch::Receiver<u64> {
        self.roles_applied.subscribe()
    }

    /// Whether replicas have taken their roles from a metadata image yet.
    pub fn applied(&self) -> bool {
        self.applied.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Brings local replicas in line with `image`: creates or reconfigures the logs of
    /// partitions assigned here, applies leader/follower roles, epochs and ISRs in place, and
    /// deletes the logs of topics that are gone or replicas moved away. Returns the leaders
    /// this node now follows, for the fetchers.
    pub fn apply_image(
        &self,
        image: &MetadataImage,
        broker: &BrokerConfig,
    ) -> anyhow::Result<BTreeSet<i32>> {
        let now = self.clock.now_ms();
        let mut wanted = HashMap::new();
        for topic in image.topics.values() {
            let config = topic::log_config(&topic.configs, broker);
            let min_insync = topic::min_insync_replicas(&topic.configs, broker);
            for partition in &topic.partitions {
                if !partition.replicas.contains(&self.node_id) {
                    continue;
                }
                let key = TopicPartition::new(topic.name.clone(), partition.partition);
                let assignment = Assignment {
                    replicas: partition.replicas.clone(),
                    isr: partition.isr.clone(),
                    leader: partition.leader,
                    leader_epoch: partition.leader_epoch,
                    partition_epoch: partition.partition_epoch,
                    adding_replicas: partition.adding_replicas.clone(),
                    removing_replicas: partition.removing_replicas.clone(),
                };
                let entry = match self.partition(&key) {
                    Some(current) if current.topic_id == topic.topic_id => {
                        if *current.log.config() != config {
                            current.log.set_config(config.clone());
                        }
                        current.apply_assignment(assignment, min_insync, now);
                        current
                    }
                    _ => {
                        let log = self.logs.get_or_create(&key, config.clone())?;
                        let high_watermark = self
                            .checkpointed_high_watermarks
                            .get(&key)
                            .copied()
                            .unwrap_or(Offset(0));
                        Arc::new(Partition::new(NewPartition {
                            topic_partition: key.clone(),
                            topic_id: topic.topic_id,
                            log,
                            node_id: self.node_id,
                            assignment,
                            min_insync_replicas: min_insync,
                            high_watermark,
                            now_ms: now,
                        }))
                    }
                };
                wanted.insert(key, entry);
            }
        }
        let removed: Vec<TopicPartition> = {
            let mut partitions = self.partitions.write().expect("partitions lock poisoned");
            let removed = partitions
                .keys()
                .filter(|key| !wanted.contains_key(*key))
                .cloned()
                .collect();
            *partitions = wanted;
            removed
        };
        for key in removed {
            tracing::info!(partition = %key, "deleting the log of a replica no longer hosted here");
            self.logs.delete(&key)?;
        }
        self.applied
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.roles_applied.send_modify(|count| *count += 1);
        Ok(self.followed_leaders())
    }

    /// The brokers this node fetches from: leaders of the partitions it follows.
    pub fn followed_leaders(&self) -> BTreeSet<i32> {
        self.partitions()
            .iter()
            .filter_map(|p| p.follower_position().map(|(leader, _, _)| leader))
            .collect()
    }

    /// The replicas this node follows from `leader`.
    pub fn following(&self, leader: i32) -> Vec<Arc<Partition>> {
        self.partitions()
            .into_iter()
            .filter(|p| p.follower_position().is_some_and(|(l, _, _)| l == leader))
            .collect()
    }

    /// The partition for a client request that needs its leader, or the Kafka error a
    /// client expects: led by another broker (NOT_LEADER_OR_FOLLOWER, so it refreshes
    /// metadata), without a leader (LEADER_NOT_AVAILABLE), or unknown
    /// (UNKNOWN_TOPIC_OR_PARTITION).
    pub fn leader_partition(
        &self,
        key: &TopicPartition,
        image: &MetadataImage,
    ) -> Result<Arc<Partition>, ApiError> {
        if let Some(partition) = self.partition(key) {
            return match partition.check_leader() {
                Ok(()) => Ok(partition),
                Err(NotLeader::LedBy(-1)) => Err(ApiError::new(
                    ResponseError::LeaderNotAvailable,
                    format!("{key} has no leader"),
                )),
                Err(NotLeader::LedBy(leader)) => Err(ApiError::new(
                    ResponseError::NotLeaderOrFollower,
                    format!("{key} is led by broker {leader}"),
                )),
            };
        }
        let known = image
            .topic(&key.topic)
            .and_then(|topic| topic.partition(key.partition));
        Err(match known {
            Some(partition) if partition.leader == -1 => ApiError::new(
                ResponseError::LeaderNotAvailable,
                format!("{key} has no leader"),
            ),
            Some(partition) => ApiError::new(
                ResponseError::NotLeaderOrFollower,
                format!("{key} is led by broker {}", partition.leader),
            ),
            None => ApiError::new(
                ResponseError::UnknownTopicOrPartition,
                format!("This server does not host {key}."),
            ),
        })
    }

    pub fn partition(&self, key: &TopicPartition) -> Option<Arc<Partition>> {
        self.partitions
            .read()
            .expect("partitions lock poisoned")
            .get(key)
            .cloned()
    }

    pub fn partitions(&self) -> Vec<Arc<Partition>> {
        self.partitions
            .read()
            .expect("partitions lock poisoned")
            .values()
            .cloned()
            .collect()
    }

    /// Validates `records` and queues them as the leader's append; the receiver yields once
    /// they are durable here (acks=all then waits for the high watermark, see
    /// [`super::purgatory`]), or with the storage thread's refusal (record errors, KIP-467).
    /// Nothing of a request with an invalid batch or record is stored. `permit` is the
    /// records' room in the commit queue, held until they are synced.
    pub fn append(
        &self,
        partition: &Arc<Partition>,
        records: &Bytes,
        acks: i16,
        permit: CommitPermit,
    ) -> Result<oneshot::Receiver<Result<AppendInfo, LogError>>, ApiError> {
        let leader_epoch = match partition.check_leader() {
            Ok(()) => partition.leader_epoch(),
            Err(NotLeader::LedBy(leader)) => {
                return Err(ApiError::new(
                    ResponseError::NotLeaderOrFollower,
                    format!("{} is led by broker {leader}", partition.topic_partition),
                ))
            }
        };
        let (isr_count, min_insync) = partition.insync_counts();
        if acks == -1 && (isr_count as i32) < min_insync {
            return Err(ApiError::new(
                ResponseError::NotEnoughReplicas,
                format!(
                    "{}: {isr_count} in-sync replica(s), min.insync.replicas is {min_insync}",
                    partition.topic_partition
                ),
            ));
        }
        // Framing and CRC are checked here; record-level checks and recompression run on the
        // log's storage thread (karst_storage::validator), off the network threads.
        let config = partition.log.config();
        let batches =
            validate_produced(records, config.max_message_bytes).map_err(|e| ApiError::from(&e))?;
        let messages: i64 = batches.iter().map(|b| b.records_count()).sum();
        let (sender, receiver) = oneshot::channel();
        let waker = Arc::clone(partition);
        let bytes = records.len() as u64;
        self.logs.append(
            Arc::clone(&partition.log),
            batches,
            AppendOrigin::Leader(leader_epoch),
            permit,
            Box::new(move |outcome| {
                if outcome.is_ok() {
                    let topic = waker.topic_partition.topic.clone();
                    metrics::counter!("kafka_server_brokertopicmetrics_messagesin_total", "topic" => topic.clone())
                        .increment(messages as u64);
                    metrics::counter!("kafka_server_brokertopicmetrics_bytesin_total", "topic" => topic).increment(bytes);
                }
                waker.on_local_append();
                let _ = sender.send(outcome);
            }),
        );
        Ok(receiver)
    }

    /// Queues a follower's append of batches fetched from its leader, with the leader's
    /// offsets and epochs; the receiver yields once they are durable here. `permit` as for
    /// [`Self::append`].
    pub fn append_replicated(
        &self,
        partition: &Arc<Partition>,
        batches: Vec<karst_storage::ValidBatch>,
        permit: CommitPermit,
    ) -> oneshot::Receiver<Result<AppendInfo, LogError>> {
        let (sender, receiver) = oneshot::channel();
        let waker = Arc::clone(partition);
        self.logs.append(
            Arc::clone(&partition.log),
            batches,
            AppendOrigin::Replica,
            permit,
            Box::new(move |outcome| {
                waker.on_local_append();
                let _ = sender.send(outcome);
            }),
        );
        receiver
    }

    /// Truncates a follower's log to `offset` (after OffsetForLeaderEpoch).
    pub fn truncate(&self, partition: &Partition, offset: Offset) -> Result<(), LogError> {
        let end = partition.log.offsets().durable_end_offset;
        if offset < end {
            tracing::info!(
                partition = %partition.topic_partition,
                from = end.0,
                to = offset.0,
                "truncating a diverged follower log"
            );
            metrics::counter!("karst_replica_truncations_total").increment(1);
        }
        self.logs.truncate_to(&partition.log, offset)?;
        partition.clamp_high_watermark();
        Ok(())
    }

    /// Where epoch `epoch` ended in a log this node leads, for OffsetForLeaderEpoch.
    pub fn end_for_epoch(
        &self,
        partition: &Partition,
        epoch: LeaderEpoch,
    ) -> karst_storage::EpochEnd {
        partition.log.end_for_epoch(epoch)
    }

    /// Applies retention to every hosted replica's log, never past its high watermark: only
    /// segments wholly below it are deleted, so the log start cannot pass it (as Kafka's
    /// retention; on a leader with lagging followers that keeps unreplicated segments). A
    /// follower's high watermark is its leader's, capped by its own end. Logs without a
    /// replica here (before the first metadata image) are left alone. Returns the number of
    /// segments deleted.
    pub fn apply_retention(&self) -> usize {
        self.logs.apply_retention(|key| {
            self.partition(key)
                .map(|partition| partition.high_watermark())
        })
    }

    /// Writes every hosted replica's high watermark to the checkpoint file.
    pub fn checkpoint_high_watermarks(&self) -> Result<(), LogError> {
        let entries: HashMap<TopicPartition, Offset> = self
            .partitions()
            .iter()
            .map(|p| (p.topic_partition.clone(), p.high_watermark()))
            .collect();
        let path: PathBuf = self.logs.dir().join(HIGH_WATERMARK_CHECKPOINT);
        checkpoint::write(&path, &entries).map_err(|source| LogError::Io {
            operation: "write checkpoint",
            path,
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use karst_storage::{LogConfig, LogManagerOptions, PortableBackend};

    use super::*;
    use crate::clock::ManualClock;

    /// A manager on node 1 whose clock is `clock`, leading `key` with `replicas` (all in
    /// the ISR), over a log of `batches` batches of 5 records in 4 KiB segments that
    /// retention by size wants gone.
    fn leader(
        dir: &std::path::Path,
        clock: Arc<dyn Clock>,
        key: &TopicPartition,
        replicas: Vec<i32>,
        batches: usize,
    ) -> (ReplicaManager, Arc<Partition>) {
        let logs = Arc::new(
            LogManager::open(
                LogManagerOptions {
                    dir: dir.to_path_buf(),
                    storage_threads: 1,
                    backend: Arc::new(PortableBackend),
                    min_free_bytes: 0,
                    commit_queue_bytes_max: 1 << 20,
                },
                &LogConfig::default(),
            )
            .unwrap(),
        );
        let config = LogConfig {
            segment_bytes: 4 * 1024,
            retention_bytes: 0,
            retention_ms: -1,
            ..LogConfig::default()
        };
        let log = logs.get_or_create(key, config).unwrap();
        let values: Vec<crate::client::records::ProducerRecord> = (0..5)
            .map(|_| crate::client::records::ProducerRecord {
                value: Some(Bytes::from(vec![7u8; 200])),
                ..Default::default()
            })
            .collect();
        let records = crate::client::records::encode_batch(
            &values,
            proto_kafka::records::Compression::None,
            clock.now_ms(),
        )
        .unwrap();
        for _ in 0..batches {
            let produced = validate_produced(&records, 1 << 20).unwrap();
            let (sender, receiver) = mpsc::channel();
            logs.append(
                Arc::clone(&log),
                produced,
                AppendOrigin::Leader(LeaderEpoch(0)),
                logs.commit_budget().try_acquire(records.len()).unwrap(),
                Box::new(move |outcome| sender.send(outcome).unwrap()),
            );
            receiver.recv().unwrap().unwrap();
        }
        let assignment = Assignment {
            isr: replicas.clone(),
            replicas,
            leader: 1,
            leader_epoch: 0,
            partition_epoch: 0,
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
        };
        let replicas = ReplicaManager::with_clock(1, logs, Arc::clone(&clock));
        let partition = Arc::new(Partition::new(NewPartition {
            topic_partition: key.clone(),
            topic_id: uuid::Uuid::nil(),
            log,
            node_id: 1,
            assignment,
            min_insync_replicas: 1,
            high_watermark: Offset(0),
            now_ms: clock.now_ms(),
        }));
        replicas
            .partitions
            .write()
            .unwrap()
            .insert(key.clone(), Arc::clone(&partition));
        (replicas, partition)
    }

    #[test]
    fn retention_on_a_leader_never_moves_the_log_start_past_the_high_watermark() {
        let dir = tempfile::tempdir().unwrap();
        let key = TopicPartition::new("lagging", 0);
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let (replicas, partition) = leader(dir.path(), clock, &key, vec![1, 2], 60);
        // The follower has fetched up to offset 123 only: that is the high watermark.
        partition.record_follower_fetch(2, 123, replicas.clock().now_ms());
        assert_eq!(partition.high_watermark(), Offset(123));
        assert!(partition.log.offsets().durable_end_offset > Offset(250));
        assert!(replicas.apply_retention() > 0);
        let start = partition.log.offsets().log_start_offset;
        assert!(
            start > Offset(0) && start <= Offset(123),
            "log start {start}"
        );
        // The follower catches up: retention takes the rest.
        let end = partition.log.offsets().durable_end_offset;
        partition.record_follower_fetch(2, end.0, replicas.clock().now_ms());
        assert_eq!(partition.high_watermark(), end);
        replicas.apply_retention();
        assert!(partition.log.offsets().log_start_offset > Offset(123));
    }

    #[test]
    fn a_follower_leaves_the_isr_only_after_lagging_longer_than_replica_lag_time_max_ms() {
        const LAG_MAX_MS: u64 = 30_000;
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(1_700_000_000_000));
        let key = TopicPartition::new("isr", 0);
        let (replicas, partition) = leader(dir.path(), clock.clone(), &key, vec![1, 2, 3], 4);
        let end = partition.log.offsets().durable_end_offset.0;
        // 1. Both followers fetch up to the leader's end: caught up now.
        partition.record_follower_fetch(2, end, clock.now_ms());
        partition.record_follower_fetch(3, end, clock.now_ms());
        assert_eq!(partition.high_watermark(), Offset(end));
        // 2. Just under the limit later, nobody lags; follower 2 fetches again, 3 is silent.
        clock.advance_ms(LAG_MAX_MS as i64 - 1_000);
        assert!(replicas.shrink_candidates(LAG_MAX_MS).is_empty());
        partition.record_follower_fetch(2, end, clock.now_ms());
        // 3. Past the limit for follower 3 only: ask for ISR [1, 2], once (it is pending).
        clock.advance_ms(2_000);
        let candidates = replicas.shrink_candidates(LAG_MAX_MS);
        assert_eq!(candidates.len(), 1);
        assert_eq!(candidates[0].1, vec![1, 2]);
        assert!(
            replicas.shrink_candidates(LAG_MAX_MS).is_empty(),
            "one request in flight"
        );
        // 4. The controller agrees; follower 2 stays in as long as it keeps catching up...
        partition.apply_isr_answer(0, 1, vec![1, 2]);
        clock.advance_ms(LAG_MAX_MS as i64);
        partition.record_follower_fetch(2, end, clock.now_ms());
        clock.advance_ms(LAG_MAX_MS as i64);
        assert!(replicas.shrink_candidates(LAG_MAX_MS).is_empty());
        // 5. ...and leaves once it has been silent for longer than the limit.
        clock.advance_ms(1);
        let candidates = replicas.shrink_candidates(LAG_MAX_MS);
        assert_eq!(candidates.len(), 1);
        assert_eq!(candidates[0].1, vec![1]);
    }
}
