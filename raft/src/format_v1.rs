//! Format version 1, frozen: the shapes log entries and image snapshots had before
//! partitions carried a reassignment (format 2), and their upgrade to today's types.
//!
//! A data directory written by an earlier build holds version-1 Raft log entries and a
//! version-1 snapshot. rkyv cannot read them as today's types (a field added inside a
//! partition changes every offset after it), so they are decoded with these copies and
//! converted: a partition of version 1 has no reassignment in progress, and a
//! `PartitionChange` of version 1 leaves adding and removing replicas as they were.
//!
//! These types must never change. Types that have kept their layout since version 1
//! (`BrokerEndpoint`, `BrokerRegistration`, `Provenance`, `StoredLogId`,
//! `StoredMembershipConfig`) are reused; a change to one of them needs its frozen copy here
//! first. Wire messages are not migrated: nodes of different formats cannot replicate to
//! each other, so a cluster is upgraded by restarting all its nodes on the new build.

use std::collections::{BTreeMap, HashMap};
use std::io;

use rkyv::{Archive, Deserialize, Serialize};
use uuid::Uuid;

use crate::codec::{self, decode_archive, split_version};
use crate::image::{BrokerRegistration, MetadataImage, PartitionImage, Provenance, TopicImage};
use crate::records::{BrokerEndpoint, MetadataBatch, MetadataRecord};
use crate::stored::{StoredEntry, StoredLogId, StoredMembershipConfig, StoredPayload};

/// The version these shapes belong to.
const VERSION: u8 = 1;

#[derive(Clone, Debug, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub(crate) enum MetadataRecordV1 {
    RegisterBroker {
        broker_id: i32,
        incarnation_id: Uuid,
        listeners: Vec<BrokerEndpoint>,
        rack: Option<String>,
        fenced: bool,
    },
    FenceBroker {
        broker_id: i32,
        broker_epoch: i64,
    },
    UnfenceBroker {
        broker_id: i32,
        broker_epoch: i64,
    },
    Topic {
        name: String,
        topic_id: Uuid,
    },
    Partition {
        topic_id: Uuid,
        partition: i32,
        replicas: Vec<i32>,
        isr: Vec<i32>,
        leader: i32,
        leader_epoch: i32,
        partition_epoch: i32,
    },
    PartitionChange {
        topic_id: Uuid,
        partition: i32,
        leader: Option<i32>,
        isr: Option<Vec<i32>>,
        replicas: Option<Vec<i32>>,
    },
    Config {
        topic: String,
        name: String,
        value: Option<String>,
    },
    RemoveTopic {
        topic_id: Uuid,
    },
    ProducerIds {
        broker_id: i32,
        broker_epoch: i64,
        next_producer_id: i64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub(crate) struct MetadataBatchV1 {
    pub records: Vec<MetadataRecordV1>,
}

#[derive(Clone, Debug, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub(crate) enum StoredPayloadV1 {
    Blank,
    Records(MetadataBatchV1),
    Membership(StoredMembershipConfig),
}

#[derive(Clone, Debug, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub(crate) struct StoredEntryV1 {
    pub log_id: StoredLogId,
    pub payload: StoredPayloadV1,
}

#[derive(Clone, Debug, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub(crate) struct PartitionImageV1 {
    pub partition: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
}

#[derive(Clone, Debug, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub(crate) struct TopicImageV1 {
    pub name: String,
    pub topic_id: Uuid,
    pub partitions: Vec<PartitionImageV1>,
    pub configs: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub(crate) struct MetadataImageV1 {
    pub cluster_id: String,
    pub provenance: Provenance,
    pub brokers: BTreeMap<i32, BrokerRegistration>,
    pub topics: BTreeMap<String, TopicImageV1>,
    pub topic_names_by_id: HashMap<Uuid, String>,
    pub next_producer_id: i64,
}

/// A Raft log entry of this format or of version 1.
pub(crate) fn decode_entry(bytes: &[u8]) -> io::Result<StoredEntry> {
    match split_version(bytes)? {
        (VERSION, archive) => Ok(decode_archive::<StoredEntryV1>(archive)?.into()),
        _ => codec::decode::<StoredEntry>(bytes),
    }
}

/// A metadata image (snapshot) of this format or of version 1.
pub(crate) fn decode_image(bytes: &[u8]) -> io::Result<MetadataImage> {
    match split_version(bytes)? {
        (VERSION, archive) => Ok(decode_archive::<MetadataImageV1>(archive)?.into()),
        _ => codec::decode::<MetadataImage>(bytes),
    }
}

impl From<MetadataRecordV1> for MetadataRecord {
    fn from(record: MetadataRecordV1) -> MetadataRecord {
        use MetadataRecordV1 as V1;
        match record {
            V1::RegisterBroker {
                broker_id,
                incarnation_id,
                listeners,
                rack,
                fenced,
            } => MetadataRecord::RegisterBroker {
                broker_id,
                incarnation_id,
                listeners,
                rack,
                fenced,
            },
            V1::FenceBroker {
                broker_id,
                broker_epoch,
            } => MetadataRecord::FenceBroker {
                broker_id,
                broker_epoch,
            },
            V1::UnfenceBroker {
                broker_id,
                broker_epoch,
            } => MetadataRecord::UnfenceBroker {
                broker_id,
                broker_epoch,
            },
            V1::Topic { name, topic_id } => MetadataRecord::Topic { name, topic_id },
            V1::Partition {
                topic_id,
                partition,
                replicas,
                isr,
                leader,
                leader_epoch,
                partition_epoch,
            } => MetadataRecord::Partition {
                topic_id,
                partition,
                replicas,
                isr,
                leader,
                leader_epoch,
                partition_epoch,
            },
            V1::PartitionChange {
                topic_id,
                partition,
                leader,
                isr,
                replicas,
            } => MetadataRecord::PartitionChange {
                topic_id,
                partition,
                leader,
                isr,
                replicas,
                adding_replicas: None,
                removing_replicas: None,
            },
            V1::Config { topic, name, value } => MetadataRecord::Config { topic, name, value },
            V1::RemoveTopic { topic_id } => MetadataRecord::RemoveTopic { topic_id },
            V1::ProducerIds {
                broker_id,
                broker_epoch,
                next_producer_id,
            } => MetadataRecord::ProducerIds {
                broker_id,
                broker_epoch,
                next_producer_id,
            },
        }
    }
}

impl From<StoredEntryV1> for StoredEntry {
    fn from(entry: StoredEntryV1) -> StoredEntry {
        let payload = match entry.payload {
            StoredPayloadV1::Blank => StoredPayload::Blank,
            StoredPayloadV1::Records(batch) => StoredPayload::Records(MetadataBatch::new(
                batch
                    .records
                    .into_iter()
                    .map(MetadataRecord::from)
                    .collect(),
            )),
            StoredPayloadV1::Membership(config) => StoredPayload::Membership(config),
        };
        StoredEntry {
            log_id: entry.log_id,
            payload,
        }
    }
}

impl From<PartitionImageV1> for PartitionImage {
    fn from(partition: PartitionImageV1) -> PartitionImage {
        PartitionImage {
            partition: partition.partition,
            replicas: partition.replicas,
            isr: partition.isr,
            leader: partition.leader,
            leader_epoch: partition.leader_epoch,
            partition_epoch: partition.partition_epoch,
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
        }
    }
}

impl From<MetadataImageV1> for MetadataImage {
    fn from(image: MetadataImageV1) -> MetadataImage {
        let topics = image
            .topics
            .into_iter()
            .map(|(name, topic)| {
                let upgraded = TopicImage {
                    name: topic.name,
                    topic_id: topic.topic_id,
                    partitions: topic.partitions.into_iter().map(Into::into).collect(),
                    configs: topic.configs,
                };
                (name, upgraded)
            })
            .collect();
        MetadataImage {
            cluster_id: image.cluster_id,
            provenance: image.provenance,
            brokers: image.brokers,
            topics,
            topic_names_by_id: image.topic_names_by_id,
            next_producer_id: image.next_producer_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a build of format 1 wrote: the version byte, then the archive.
    fn written_by_version_1<T>(value: &T) -> Vec<u8>
    where
        T: for<'a> rkyv::Serialize<
            rkyv::api::high::HighSerializer<
                rkyv::util::AlignedVec,
                rkyv::ser::allocator::ArenaHandle<'a>,
                rkyv::rancor::Error,
            >,
        >,
    {
        let mut bytes = vec![VERSION];
        bytes.extend_from_slice(&rkyv::to_bytes::<rkyv::rancor::Error>(value).unwrap());
        bytes
    }

    #[test]
    fn version_1_log_entries_load_as_changes_without_reassignment() {
        let topic_id = Uuid::new_v4();
        let old = StoredEntryV1 {
            log_id: StoredLogId { term: 2, index: 7 },
            payload: StoredPayloadV1::Records(MetadataBatchV1 {
                records: vec![
                    MetadataRecordV1::Topic {
                        name: "orders".into(),
                        topic_id,
                    },
                    MetadataRecordV1::PartitionChange {
                        topic_id,
                        partition: 0,
                        leader: Some(2),
                        isr: Some(vec![2, 3]),
                        replicas: None,
                    },
                ],
            }),
        };
        let entry = decode_entry(&written_by_version_1(&old)).unwrap();
        let StoredPayload::Records(batch) = entry.payload else {
            panic!("records expected");
        };
        assert_eq!(entry.log_id, StoredLogId { term: 2, index: 7 });
        assert_eq!(
            batch.records[1],
            MetadataRecord::PartitionChange {
                topic_id,
                partition: 0,
                leader: Some(2),
                isr: Some(vec![2, 3]),
                replicas: None,
                adding_replicas: None,
                removing_replicas: None,
            }
        );
        // Today's entries still decode through the same reader.
        let current = codec::encode(&entry_with(batch.clone())).unwrap();
        assert_eq!(decode_entry(&current).unwrap(), entry_with(batch));
    }

    fn entry_with(batch: MetadataBatch) -> StoredEntry {
        StoredEntry {
            log_id: StoredLogId { term: 2, index: 7 },
            payload: StoredPayload::Records(batch),
        }
    }

    #[test]
    fn version_1_snapshots_load_with_no_reassignment_in_progress() {
        let topic_id = Uuid::new_v4();
        let partition = PartitionImageV1 {
            partition: 0,
            replicas: vec![1, 2, 3],
            isr: vec![1, 2],
            leader: 1,
            leader_epoch: 4,
            partition_epoch: 9,
        };
        let old = MetadataImageV1 {
            cluster_id: "cluster".into(),
            provenance: Provenance {
                last_applied_index: 40,
                last_applied_term: 3,
            },
            brokers: BTreeMap::new(),
            topics: BTreeMap::from([(
                "orders".to_owned(),
                TopicImageV1 {
                    name: "orders".into(),
                    topic_id,
                    partitions: vec![partition],
                    configs: BTreeMap::from([("retention.ms".into(), "1000".into())]),
                },
            )]),
            topic_names_by_id: HashMap::from([(topic_id, "orders".to_owned())]),
            next_producer_id: 3000,
        };
        let image = decode_image(&written_by_version_1(&old)).unwrap();
        let upgraded = image.topic("orders").unwrap().partition(0).unwrap();
        assert_eq!((upgraded.leader, upgraded.partition_epoch), (1, 9));
        assert_eq!(upgraded.isr, vec![1, 2]);
        assert!(!upgraded.is_reassigning());
        assert_eq!(image.next_producer_id, 3000);
        assert_eq!(image.provenance.last_applied_index, 40);
        assert_eq!(
            decode_image(&codec::encode(&image).unwrap()).unwrap(),
            image
        );
    }
}
