//! The metadata image: topics, partitions and topic configs, rebuilt from records.

use std::collections::{BTreeMap, HashMap};

use uuid::Uuid;

use super::MetadataRecord;

#[derive(Clone, Debug)]
pub struct PartitionImage {
    pub partition: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
}

#[derive(Clone, Debug)]
pub struct TopicImage {
    pub name: String,
    pub topic_id: Uuid,
    pub partitions: Vec<PartitionImage>,
    /// Topic-level config overrides (Kafka names).
    pub configs: BTreeMap<String, String>,
}

#[derive(Clone, Debug)]
pub struct MetadataImage {
    pub cluster_id: String,
    pub topics: BTreeMap<String, TopicImage>,
    pub topic_names_by_id: HashMap<Uuid, String>,
}

impl MetadataImage {
    pub fn new(cluster_id: String) -> MetadataImage {
        MetadataImage {
            cluster_id,
            topics: BTreeMap::new(),
            topic_names_by_id: HashMap::new(),
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

    /// Applies one record. Records were validated before they were committed, so a record
    /// that does not fit the image is a bug, not an input error.
    pub fn apply(&mut self, record: &MetadataRecord) {
        match record {
            MetadataRecord::Topic { name, topic_id } => {
                self.topic_names_by_id.insert(*topic_id, name.clone());
                self.topics.insert(
                    name.clone(),
                    TopicImage {
                        name: name.clone(),
                        topic_id: *topic_id,
                        partitions: Vec::new(),
                        configs: BTreeMap::new(),
                    },
                );
            }
            MetadataRecord::Partition {
                topic_id,
                partition,
                replicas,
                isr,
                leader,
                leader_epoch,
                partition_epoch,
            } => {
                let name = self
                    .topic_names_by_id
                    .get(topic_id)
                    .expect("partition of a known topic");
                let topic = self.topics.get_mut(name).expect("topic of a known id");
                let image = PartitionImage {
                    partition: *partition,
                    replicas: replicas.clone(),
                    isr: isr.clone(),
                    leader: *leader,
                    leader_epoch: *leader_epoch,
                    partition_epoch: *partition_epoch,
                };
                match topic
                    .partitions
                    .iter_mut()
                    .find(|p| p.partition == *partition)
                {
                    Some(existing) => *existing = image,
                    None => {
                        topic.partitions.push(image);
                        topic.partitions.sort_by_key(|p| p.partition);
                    }
                }
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
        }
    }
}
