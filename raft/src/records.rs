//! Metadata records: the only way the metadata image changes.
//!
//! Named and shaped after KRaft's records (`RegisterBrokerRecord`, `FenceBrokerRecord`,
//! `TopicRecord`, `PartitionRecord`, `PartitionChangeRecord`, `ConfigRecord`,
//! `RemoveTopicRecord`, `ProducerIdsRecord`). `Topic`, `Partition`, `Config` and `RemoveTopic`
//! have the same fields as the broker's single-node `src/metadata/records.rs`, so the broker
//! can switch to these types without touching its decisions.
//!
//! A committed entry of the Raft log carries one [`MetadataBatch`]: records the controller
//! decided together. They are persisted with rkyv (see [`crate::codec`]); adding a variant or
//! a field is a format change: it needs a new format version, and the previous version's
//! shapes frozen in [`crate::format_v1`] (or its successor) so existing logs still load.

use std::fmt;

use rkyv::{Archive, Deserialize, Serialize};
use uuid::Uuid;

/// A listener a broker advertises, as in KRaft's `BrokerEndpoint`.
#[derive(Clone, Debug, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub struct BrokerEndpoint {
    /// Listener name (`PLAINTEXT`, `SSL`, ...).
    pub name: String,
    pub host: String,
    pub port: u16,
    /// Kafka's security protocol id (0 = PLAINTEXT, 1 = SSL, 2 = SASL_PLAINTEXT, 3 = SASL_SSL).
    pub security_protocol: i16,
}

#[derive(Clone, Debug, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub enum MetadataRecord {
    /// A broker (re)registers. Its broker epoch becomes the log index of this record, as in
    /// KRaft, so every node derives the same epoch without the record naming it.
    RegisterBroker {
        broker_id: i32,
        /// Random per broker process start; a new incarnation replaces the old registration.
        incarnation_id: Uuid,
        listeners: Vec<BrokerEndpoint>,
        rack: Option<String>,
        /// Newly registered brokers start fenced until their first heartbeat is accepted.
        fenced: bool,
    },
    /// The controller fences a broker (missed heartbeats, or shut down). Ignored unless
    /// `broker_epoch` is the broker's current epoch.
    FenceBroker {
        broker_id: i32,
        broker_epoch: i64,
    },
    /// The controller unfences a broker after a heartbeat. Ignored unless `broker_epoch` is the
    /// broker's current epoch.
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
    /// A change to an existing partition. `None` fields are unchanged. As in KRaft, applying it
    /// bumps `partition_epoch`, and bumps `leader_epoch` when `leader` is given.
    PartitionChange {
        topic_id: Uuid,
        partition: i32,
        /// `Some(-1)` means no leader.
        leader: Option<i32>,
        isr: Option<Vec<i32>>,
        replicas: Option<Vec<i32>>,
        /// Replicas a reassignment is adding (KRaft's `AddingReplicas`); `Some(vec![])` ends
        /// the reassignment's adding side.
        adding_replicas: Option<Vec<i32>>,
        /// Replicas a reassignment will drop once it completes (KRaft's `RemovingReplicas`).
        removing_replicas: Option<Vec<i32>>,
    },
    /// A topic config set (`value: Some`) or removed (`None`).
    Config {
        topic: String,
        name: String,
        value: Option<String>,
    },
    RemoveTopic {
        topic_id: Uuid,
    },
    /// The controller hands a block of producer ids to a broker: every id below
    /// `next_producer_id` is allocated.
    ProducerIds {
        broker_id: i32,
        broker_epoch: i64,
        next_producer_id: i64,
    },
}

/// The records one log entry carries: committed and applied together, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub struct MetadataBatch {
    pub records: Vec<MetadataRecord>,
}

impl crate::codec::Layout for MetadataBatch {
    const SINCE: u8 = 2;
}

impl MetadataBatch {
    pub fn new(records: Vec<MetadataRecord>) -> MetadataBatch {
        MetadataBatch { records }
    }
}

impl From<Vec<MetadataRecord>> for MetadataBatch {
    fn from(records: Vec<MetadataRecord>) -> MetadataBatch {
        MetadataBatch { records }
    }
}

impl fmt::Display for MetadataBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MetadataBatch({} records)", self.records.len())
    }
}
