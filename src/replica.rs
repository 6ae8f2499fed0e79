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
        let removed: Vec<TopicPartition> = {
            let mut partitions = self.partitions.write().expect("partitions lock poisoned");
            let removed = partitions
                .keys()
                .filter(|k| !wanted.contains_key(*k))
                .cloned()
                .collect();
            *partitions = wanted;
            removed
        };
        for key in removed {
            tracing::info!(partition = %key, "deleting the log of a removed partition");
            self.logs.delete(&key)?;
        }
        for log in self.logs.all() {
            if self.partition(log.topic_partition()).is_none() {
                tracing::warn!(
                    partition = %log.topic_partition(),
                    "a log on disk belongs to no topic in the metadata; it is kept but not served"
                );
            }
        }
        Ok(())
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
