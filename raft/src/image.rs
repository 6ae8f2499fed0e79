//! The metadata image: brokers, topics, partitions, topic configs and producer-id allocation,
//! rebuilt by applying [`MetadataRecord`]s in log order.
//!
//! The image is the replicated state machine's state (see `state_machine`); every
//! node applies the same records in the same order and so holds the same image. Applying is
//! deterministic and never panics on a record: a record that does not fit (a partition of an
//! unknown topic, a fence with a stale broker epoch) is rejected as a value and leaves the
//! image unchanged, so one bad decision cannot crash-loop every node of the quorum.
//!
//! Snapshots persist the image with rkyv (see [`crate::codec`]), so its types derive
//! `Archive`.

use std::collections::{BTreeMap, HashMap};

use rkyv::{Archive, Deserialize, Serialize};
use uuid::Uuid;

use crate::records::{BrokerEndpoint, MetadataRecord};

/// What KRaft calls the image's provenance: the last log entry the image includes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub struct Provenance {
    /// Raft log index of the last applied entry (KRaft's metadata offset); 0 before any.
    pub last_applied_index: u64,
    /// Raft term of that entry (KRaft's controller epoch when it was written).
    pub last_applied_term: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub struct BrokerRegistration {
    pub broker_id: i32,
    pub incarnation_id: Uuid,
    /// Log index of the `RegisterBroker` record that created this registration.
    pub broker_epoch: i64,
    pub listeners: Vec<BrokerEndpoint>,
    pub rack: Option<String>,
    pub fenced: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub struct PartitionImage {
    pub partition: i32,
    /// Every replica, in preference order. During a reassignment: the target replicas first,
    /// then those being removed (KIP-455), so the preferred leader is the target's first.
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    /// Replicas a reassignment in progress adds (not in the original assignment).
    pub adding_replicas: Vec<i32>,
    /// Replicas a reassignment in progress drops when it completes.
    pub removing_replicas: Vec<i32>,
}

impl PartitionImage {
    /// Whether a reassignment is in progress (KIP-455: adding or removing replicas named).
    pub fn is_reassigning(&self) -> bool {
        !self.adding_replicas.is_empty() || !self.removing_replicas.is_empty()
    }

    /// The replicas the partition ends with: all of them, less those being removed.
    pub fn target_replicas(&self) -> Vec<i32> {
        self.replicas
            .iter()
            .copied()
            .filter(|id| !self.removing_replicas.contains(id))
            .collect()
    }

    /// The replicas the partition had before its reassignment: all, less those being added.
    pub fn original_replicas(&self) -> Vec<i32> {
        self.replicas
            .iter()
            .copied()
            .filter(|id| !self.adding_replicas.contains(id))
            .collect()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub struct TopicImage {
    pub name: String,
    pub topic_id: Uuid,
    pub partitions: Vec<PartitionImage>,
    /// Topic-level config overrides (Kafka names).
    pub configs: BTreeMap<String, String>,
}

impl TopicImage {
    pub fn partition(&self, partition: i32) -> Option<&PartitionImage> {
        // Partitions are kept sorted and numbered 0..n, so the index usually is the number.
        match self.partitions.get(partition as usize) {
            Some(found) if found.partition == partition => Some(found),
            _ => self.partitions.iter().find(|p| p.partition == partition),
        }
    }

    fn partition_mut(&mut self, partition: i32) -> Option<&mut PartitionImage> {
        self.partitions
            .iter_mut()
            .find(|p| p.partition == partition)
    }
}

/// Why a record was not applied. The image is unchanged by a rejected record.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordRejected {
    #[error("unknown topic id {0}")]
    UnknownTopicId(Uuid),
    #[error("topic {topic_id} has no partition {partition}")]
    UnknownPartition { topic_id: Uuid, partition: i32 },
    #[error("topic name {0} is taken by another topic id")]
    TopicNameTaken(String),
    #[error("unknown broker {0}")]
    UnknownBroker(i32),
    #[error("broker {broker_id} is at epoch {current}, record names epoch {named}")]
    StaleBrokerEpoch {
        broker_id: i32,
        current: i64,
        named: i64,
    },
    #[error("producer id block would move backwards from {current} to {named}")]
    ProducerIdsBackwards { current: i64, named: i64 },
}

#[derive(Clone, Debug, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub struct MetadataImage {
    pub cluster_id: String,
    pub provenance: Provenance,
    pub brokers: BTreeMap<i32, BrokerRegistration>,
    pub topics: BTreeMap<String, TopicImage>,
    pub topic_names_by_id: HashMap<Uuid, String>,
    /// Every producer id below this one has been handed out.
    pub next_producer_id: i64,
}

/// Images of version 1 are read through [`crate::format_v1::decode_image`].
impl crate::codec::Layout for MetadataImage {
    const SINCE: u8 = 2;
}

impl MetadataImage {
    pub fn new(cluster_id: String) -> MetadataImage {
        MetadataImage {
            cluster_id,
            provenance: Provenance::default(),
            brokers: BTreeMap::new(),
            topics: BTreeMap::new(),
            topic_names_by_id: HashMap::new(),
            next_producer_id: 0,
        }
    }

    pub fn topic(&self, name: &str) -> Option<&TopicImage> {
        self.topics.get(name)
    }

    pub fn topic_by_id(&self, topic_id: &Uuid) -> Option<&TopicImage> {
        self.topic_names_by_id
            .get(topic_id)
            .and_then(|name| self.topics.get(name))
    }

    pub fn broker(&self, broker_id: i32) -> Option<&BrokerRegistration> {
        self.brokers.get(&broker_id)
    }

    fn topic_by_id_mut(&mut self, topic_id: &Uuid) -> Result<&mut TopicImage, RecordRejected> {
        self.topic_names_by_id
            .get(topic_id)
            .and_then(|name| self.topics.get_mut(name))
            .ok_or(RecordRejected::UnknownTopicId(*topic_id))
    }

    fn broker_at_epoch(
        &mut self,
        broker_id: i32,
        broker_epoch: i64,
    ) -> Result<&mut BrokerRegistration, RecordRejected> {
        let broker = self
            .brokers
            .get_mut(&broker_id)
            .ok_or(RecordRejected::UnknownBroker(broker_id))?;
        if broker.broker_epoch != broker_epoch {
            return Err(RecordRejected::StaleBrokerEpoch {
                broker_id,
                current: broker.broker_epoch,
                named: broker_epoch,
            });
        }
        Ok(broker)
    }

    /// Applies one record found at log index `offset`. A rejected record changes nothing.
    pub fn apply(&mut self, offset: u64, record: &MetadataRecord) -> Result<(), RecordRejected> {
        match record {
            MetadataRecord::RegisterBroker {
                broker_id,
                incarnation_id,
                listeners,
                rack,
                fenced,
            } => {
                self.brokers.insert(
                    *broker_id,
                    BrokerRegistration {
                        broker_id: *broker_id,
                        incarnation_id: *incarnation_id,
                        broker_epoch: offset as i64,
                        listeners: listeners.clone(),
                        rack: rack.clone(),
                        fenced: *fenced,
                    },
                );
            }
            MetadataRecord::FenceBroker {
                broker_id,
                broker_epoch,
            } => self.broker_at_epoch(*broker_id, *broker_epoch)?.fenced = true,
            MetadataRecord::UnfenceBroker {
                broker_id,
                broker_epoch,
            } => self.broker_at_epoch(*broker_id, *broker_epoch)?.fenced = false,
            MetadataRecord::Topic { name, topic_id } => self.apply_topic(name, *topic_id)?,
            MetadataRecord::Partition {
                topic_id,
                partition,
                replicas,
                isr,
                leader,
                leader_epoch,
                partition_epoch,
            } => {
                let topic = self.topic_by_id_mut(topic_id)?;
                let image = PartitionImage {
                    partition: *partition,
                    replicas: replicas.clone(),
                    isr: isr.clone(),
                    leader: *leader,
                    leader_epoch: *leader_epoch,
                    partition_epoch: *partition_epoch,
                    adding_replicas: Vec::new(),
                    removing_replicas: Vec::new(),
                };
                match topic.partition_mut(*partition) {
                    Some(existing) => *existing = image,
                    None => {
                        topic.partitions.push(image);
                        topic.partitions.sort_by_key(|p| p.partition);
                    }
                }
            }
            MetadataRecord::PartitionChange {
                topic_id,
                partition,
                leader,
                isr,
                replicas,
                adding_replicas,
                removing_replicas,
            } => {
                let existing = self
                    .topic_by_id_mut(topic_id)?
                    .partition_mut(*partition)
                    .ok_or(RecordRejected::UnknownPartition {
                        topic_id: *topic_id,
                        partition: *partition,
                    })?;
                if let Some(leader) = leader {
                    existing.leader = *leader;
                    existing.leader_epoch += 1;
                }
                if let Some(isr) = isr {
                    existing.isr = isr.clone();
                }
                if let Some(replicas) = replicas {
                    existing.replicas = replicas.clone();
                }
                if let Some(adding) = adding_replicas {
                    existing.adding_replicas = adding.clone();
                }
                if let Some(removing) = removing_replicas {
                    existing.removing_replicas = removing.clone();
                }
                existing.partition_epoch += 1;
            }
            MetadataRecord::Config { topic, name, value } => {
                if let Some(topic) = self.topics.get_mut(topic) {
                    match value {
                        Some(value) => topic.configs.insert(name.clone(), value.clone()),
                        None => topic.configs.remove(name),
                    };
                }
            }
            MetadataRecord::RemoveTopic { topic_id } => {
                if let Some(name) = self.topic_names_by_id.remove(topic_id) {
                    self.topics.remove(&name);
                }
            }
            MetadataRecord::ProducerIds {
                broker_id,
                broker_epoch,
                next_producer_id,
            } => {
                self.broker_at_epoch(*broker_id, *broker_epoch)?;
                if *next_producer_id < self.next_producer_id {
                    return Err(RecordRejected::ProducerIdsBackwards {
                        current: self.next_producer_id,
                        named: *next_producer_id,
                    });
                }
                self.next_producer_id = *next_producer_id;
            }
        }
        Ok(())
    }

    fn apply_topic(&mut self, name: &str, topic_id: Uuid) -> Result<(), RecordRejected> {
        if let Some(existing) = self.topics.get(name) {
            if existing.topic_id != topic_id {
                return Err(RecordRejected::TopicNameTaken(name.to_owned()));
            }
            // Re-applying the same topic record keeps its partitions and configs.
            return Ok(());
        }
        self.topic_names_by_id.insert(topic_id, name.to_owned());
        self.topics.insert(
            name.to_owned(),
            TopicImage {
                name: name.to_owned(),
                topic_id,
                partitions: Vec::new(),
                configs: BTreeMap::new(),
            },
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str) -> (Uuid, MetadataRecord) {
        let topic_id = Uuid::new_v4();
        let record = MetadataRecord::Topic {
            name: name.to_owned(),
            topic_id,
        };
        (topic_id, record)
    }

    fn partition(topic_id: Uuid, partition: i32, leader: i32) -> MetadataRecord {
        MetadataRecord::Partition {
            topic_id,
            partition,
            replicas: vec![1, 2, 3],
            isr: vec![1, 2, 3],
            leader,
            leader_epoch: 0,
            partition_epoch: 0,
        }
    }

    #[test]
    fn partition_change_bumps_epochs_like_kraft() {
        let mut image = MetadataImage::new("cluster".into());
        let (topic_id, record) = topic("orders");
        image.apply(1, &record).unwrap();
        image.apply(2, &partition(topic_id, 0, 1)).unwrap();

        // An ISR-only change bumps the partition epoch but keeps the leader epoch.
        let shrink = MetadataRecord::PartitionChange {
            topic_id,
            partition: 0,
            leader: None,
            isr: Some(vec![1, 2]),
            replicas: None,
            adding_replicas: None,
            removing_replicas: None,
        };
        image.apply(3, &shrink).unwrap();
        let state = image.topic("orders").unwrap().partition(0).unwrap();
        assert_eq!((state.leader_epoch, state.partition_epoch), (0, 1));
        assert_eq!(state.isr, vec![1, 2]);

        // A leader change bumps both.
        let elect = MetadataRecord::PartitionChange {
            topic_id,
            partition: 0,
            leader: Some(2),
            isr: None,
            replicas: None,
            adding_replicas: None,
            removing_replicas: None,
        };
        image.apply(4, &elect).unwrap();
        let state = image.topic("orders").unwrap().partition(0).unwrap();
        assert_eq!(
            (state.leader, state.leader_epoch, state.partition_epoch),
            (2, 1, 2)
        );
    }

    #[test]
    fn broker_epoch_is_the_registration_offset_and_fences_check_it() {
        let mut image = MetadataImage::new("cluster".into());
        let register = MetadataRecord::RegisterBroker {
            broker_id: 7,
            incarnation_id: Uuid::new_v4(),
            listeners: vec![],
            rack: Some("rack-a".into()),
            fenced: true,
        };
        image.apply(42, &register).unwrap();
        assert_eq!(image.broker(7).unwrap().broker_epoch, 42);

        let stale = MetadataRecord::UnfenceBroker {
            broker_id: 7,
            broker_epoch: 41,
        };
        assert!(matches!(
            image.apply(43, &stale),
            Err(RecordRejected::StaleBrokerEpoch { .. })
        ));
        assert!(image.broker(7).unwrap().fenced);

        let current = MetadataRecord::UnfenceBroker {
            broker_id: 7,
            broker_epoch: 42,
        };
        image.apply(44, &current).unwrap();
        assert!(!image.broker(7).unwrap().fenced);
    }

    #[test]
    fn records_that_do_not_fit_are_rejected_without_change() {
        let mut image = MetadataImage::new("cluster".into());
        let before = image.clone();
        let orphan = partition(Uuid::new_v4(), 0, 1);
        assert!(matches!(
            image.apply(1, &orphan),
            Err(RecordRejected::UnknownTopicId(_))
        ));
        assert_eq!(image, before);
    }
}
