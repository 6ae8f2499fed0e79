//! The replica manager: the partitions this node hosts, their logs, appends and reads.
//!
//! Partition state changes only here, and only in response to a published metadata image
//! ([`ReplicaManager::apply_image`]): a partition this node leads gets its log created (or
//! reconfigured), a removed topic's logs are deleted. Handlers ask it for a partition and
//! append to or read from it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use proto_kafka::ResponseError;
use tokio::sync::{oneshot, Notify};
use uuid::Uuid;

use karst_storage::{
    validate_produced, AppendInfo, LeaderEpoch, Log, LogError, LogManager, TopicPartition,
};

use crate::config::{topic, BrokerConfig};
use crate::error::ApiError;
use crate::metadata::MetadataImage;

/// A partition hosted (and, on a single node, led) by this node.
pub struct Partition {
    pub topic_partition: TopicPartition,
    pub topic_id: Uuid,
    pub log: Arc<Log>,
    pub leader_epoch: i32,
    pub min_insync_replicas: i32,
    pub isr_count: i32,
    /// Woken after every append becomes visible: long-polling fetches wait on it.
    pub appended: Notify,
}

pub struct ReplicaManager {
    node_id: i32,
    logs: Arc<LogManager>,
    partitions: RwLock<HashMap<TopicPartition, Arc<Partition>>>,
}

impl ReplicaManager {
    pub fn new(node_id: i32, logs: Arc<LogManager>) -> ReplicaManager {
        ReplicaManager {
            node_id,
            logs,
            partitions: RwLock::new(HashMap::new()),
        }
    }

    pub fn logs(&self) -> &Arc<LogManager> {
        &self.logs
    }

    /// Brings local partitions in line with `image`: creates or reconfigures the logs of
    /// partitions this node leads, deletes those of topics that are gone.
    pub fn apply_image(&self, image: &MetadataImage, broker: &BrokerConfig) -> anyhow::Result<()> {
        let mut wanted = HashMap::new();
        for topic in image.topics.values() {
            let config = topic::log_config(&topic.configs, broker);
            let min_insync = topic::min_insync_replicas(&topic.configs, broker);
            for partition in &topic.partitions {
                if partition.leader != self.node_id {
                    continue;
                }
                let key = TopicPartition::new(topic.name.clone(), partition.partition);
                let current = self.partition(&key);
                let unchanged = current.as_ref().is_some_and(|p| {
                    p.topic_id == topic.topic_id
                        && p.leader_epoch == partition.leader_epoch
                        && p.min_insync_replicas == min_insync
                        && *p.log.config() == config
                });
                let entry = match current {
                    Some(current) if unchanged => current,
                    _ => {
                        let log = self.logs.get_or_create(&key, config.clone())?;
                        Arc::new(Partition {
                            topic_partition: key.clone(),
                            topic_id: topic.topic_id,
                            log,
                            leader_epoch: partition.leader_epoch,
                            min_insync_replicas: min_insync,
                            isr_count: partition.isr.len() as i32,
                            appended: Notify::new(),
                        })
                    }
                };
                wanted.insert(key, entry);
            }
        }
        // A partition no longer led here keeps its log while this node is still one of its
        // replicas; the log goes only when the topic is gone or the replica moved away.
        let removed: Vec<TopicPartition> = {
            let mut partitions = self.partitions.write().expect("partitions lock poisoned");
            let removed = partitions
                .iter()
                .filter(|(key, _)| !wanted.contains_key(*key))
                .filter(|(key, hosted)| {
                    let still_replica = image.topic_by_id(&hosted.topic_id).is_some_and(|topic| {
                        topic
                            .partition(key.partition)
                            .is_some_and(|p| p.replicas.contains(&self.node_id))
                    });
                    !still_replica
                })
                .map(|(key, _)| key.clone())
                .collect();
            *partitions = wanted;
            removed
        };
        for key in removed {
            tracing::info!(partition = %key, "deleting the log of a removed partition");
            self.logs.delete(&key)?;
        }
        Ok(())
    }

    /// The partition for a client request, or the Kafka error a client expects: led by
    /// another broker (NOT_LEADER_OR_FOLLOWER, so it refreshes metadata), without a leader
    /// (LEADER_NOT_AVAILABLE), or unknown (UNKNOWN_TOPIC_OR_PARTITION).
    pub fn leader_partition(
        &self,
        key: &TopicPartition,
        image: &MetadataImage,
    ) -> Result<Arc<Partition>, ApiError> {
        if let Some(partition) = self.partition(key) {
            return Ok(partition);
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

    /// Validates `records` and queues them; the receiver yields once they are durable.
    /// Nothing of a request with an invalid batch is stored.
    pub fn append(
        &self,
        partition: &Arc<Partition>,
        records: &Bytes,
        acks: i16,
    ) -> Result<oneshot::Receiver<Result<AppendInfo, LogError>>, ApiError> {
        if acks == -1 && partition.isr_count < partition.min_insync_replicas {
            return Err(ApiError::new(
                ResponseError::NotEnoughReplicas,
                format!(
                    "{}: {} in-sync replica(s), min.insync.replicas is {}",
                    partition.topic_partition, partition.isr_count, partition.min_insync_replicas
                ),
            ));
        }
        let config = partition.log.config();
        let batches =
            validate_produced(records, config.max_message_bytes).map_err(|e| ApiError::from(&e))?;
        if config.cleanup_compact {
            for batch in &batches {
                batch.check_every_record_keyed().map_err(|error| {
                    let mut refused = ApiError::from(&error);
                    refused.message = format!("{}: {}", partition.topic_partition, refused.message);
                    refused
                })?;
            }
        }
        let messages: i64 = batches.iter().map(|b| b.records_count()).sum();
        let (sender, receiver) = oneshot::channel();
        let waker = Arc::clone(partition);
        let bytes = records.len() as u64;
        self.logs.append(
            Arc::clone(&partition.log),
            batches,
            LeaderEpoch(partition.leader_epoch),
            Box::new(move |outcome| {
                if outcome.is_ok() {
                    let topic = waker.topic_partition.topic.clone();
                    metrics::counter!("kafka_server_brokertopicmetrics_messagesin_total", "topic" => topic.clone())
                        .increment(messages as u64);
                    metrics::counter!("kafka_server_brokertopicmetrics_bytesin_total", "topic" => topic).increment(bytes);
                }
                waker.appended.notify_waiters();
                let _ = sender.send(outcome);
            }),
        );
        Ok(receiver)
    }
}
