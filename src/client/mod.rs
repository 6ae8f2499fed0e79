//! Small async Kafka client on proto-kafka, used by the CLI and the tests.
//!
//! It speaks the Kafka protocol to any Kafka-compatible broker (Karst or Kafka itself), so the
//! CLI doubles as a protocol check of the broker.
//!
//! # Layout
//!
//! | module | what it owns |
//! | --- | --- |
//! | [`connection`] | one TCP connection: framing, correlation ids, timeouts, ApiVersions |
//! | [`versions`] | the broker's advertised version ranges and the choice per request |
//! | [`metadata`] | Metadata responses as plain values (brokers, topics, partitions, leaders) |
//! | [`admin`] | topics and configs: create, delete, create partitions, describe, alter |
//! | [`cluster`] | DescribeQuorum and DescribeCluster: the metadata quorum and the brokers |
//! | [`produce`] | producing a batch of records to one partition |
//! | [`fetch`] | fetching from offsets, and ListOffsets (earliest, latest, by timestamp) |
//! | [`producers`] | DescribeProducers: idempotent producers' state per partition |
//! | [`reassignment`] | AlterPartitionReassignments and ListPartitionReassignments |
//! | [`records`] | record batches: encoding for produce, decoding fetched bytes |
//! | [`partitioner`] | Kafka's murmur2 partitioner for keyed records |
//! | [`error`] | [`ClientError`] and readable Kafka error codes |
//!
//! A [`Client`] holds one connection to the bootstrap broker, used for metadata and admin
//! requests (Karst forwards those to its controller), and opens one connection per partition
//! leader for produce, fetch and ListOffsets, which Kafka only serves on the leader.

pub mod admin;
pub mod cluster;
pub mod connection;
pub mod error;
pub mod fetch;
pub mod groups;
pub mod metadata;
pub mod partitioner;
pub mod produce;
pub mod producers;
pub mod reassignment;
pub mod records;
pub mod versions;

use std::collections::HashMap;
use std::time::Duration;

use proto_kafka::messages::MetadataRequest;
use proto_kafka::protocol::Request;
use proto_kafka::ResponseError;

pub use connection::{Connection, ConnectionOptions};
pub use error::{ClientError, KafkaError};
pub use metadata::{BrokerMetadata, ClusterMetadata, PartitionMetadata, TopicMetadata};
pub use records::{ConsumerRecord, ProducerRecord};

/// How many times a request that hit a leadership change (`NOT_LEADER_OR_FOLLOWER`,
/// `LEADER_NOT_AVAILABLE`, a topic not yet known to the broker just after creation) is retried
/// after refreshing metadata. Those errors mean the broker did not act on the request, so a
/// retry cannot duplicate anything.
pub const LEADER_RETRIES_MAX: u32 = 6;

/// The wait before the first such retry; it doubles each time (6.3 s over all retries).
pub const LEADER_RETRY_BACKOFF_MS: u64 = 100;

/// A Kafka client bound to one bootstrap broker.
#[derive(Debug)]
pub struct Client {
    bootstrap: Connection,
    options: ConnectionOptions,
    /// Broker id → `host:port`, from the latest Metadata response.
    brokers: HashMap<i32, String>,
    /// Open connections to partition leaders, by broker id.
    leaders: HashMap<i32, Connection>,
    /// Topics from the latest Metadata responses, by name.
    topics: HashMap<String, TopicMetadata>,
}

impl Client {
    /// Connects to the broker at `address` (`host:port`) with default limits.
    pub async fn connect(address: &str) -> Result<Client, ClientError> {
        Self::connect_with(address, ConnectionOptions::default()).await
    }

    /// Connects to the broker at `address` with `options`.
    pub async fn connect_with(
        address: &str,
        options: ConnectionOptions,
    ) -> Result<Client, ClientError> {
        let bootstrap = Connection::connect(address, options.clone()).await?;
        Ok(Client {
            bootstrap,
            options,
            brokers: HashMap::new(),
            leaders: HashMap::new(),
            topics: HashMap::new(),
        })
    }

    /// The bootstrap connection (for version queries and raw requests).
    pub fn bootstrap(&self) -> &Connection {
        &self.bootstrap
    }

    /// Sends `request` at `version` to the bootstrap broker and returns its response.
    pub async fn send<R: Request>(
        &mut self,
        request: R,
        version: i16,
    ) -> Result<R::Response, ClientError> {
        self.bootstrap.send(request, version).await
    }

    /// Fetches metadata for `topics` (`None`: all topics) and refreshes the routing caches.
    pub async fn metadata(
        &mut self,
        topics: Option<&[&str]>,
    ) -> Result<ClusterMetadata, ClientError> {
        let version = self
            .bootstrap
            .version_within::<MetadataRequest>(metadata::METADATA_VERSIONS)?;
        let request = metadata::metadata_request(topics, version);
        let response = self.bootstrap.send(request, version).await?;
        let cluster = metadata::cluster_metadata(response);
        for broker in &cluster.brokers {
            let address = broker.address();
            if self.brokers.get(&broker.id) != Some(&address) {
                // The broker moved: a cached connection points at the old address.
                self.leaders.remove(&broker.id);
                self.brokers.insert(broker.id, address);
            }
        }
        for topic in &cluster.topics {
            if topic.error.is_none() {
                self.topics.insert(topic.name.clone(), topic.clone());
            } else {
                self.topics.remove(&topic.name);
            }
        }
        Ok(cluster)
    }

    /// Metadata of one topic; a missing topic is [`ResponseError::UnknownTopicOrPartition`].
    pub async fn topic(&mut self, name: &str) -> Result<TopicMetadata, ClientError> {
        let cluster = self.metadata(Some(&[name])).await?;
        let topic = cluster.topics.into_iter().find(|topic| topic.name == name);
        let Some(topic) = topic else {
            return Err(KafkaError {
                operation: format!("describe topic {name:?}"),
                code: ResponseError::UnknownTopicOrPartition,
                message: None,
            }
            .into());
        };
        if let Some(code) = topic.error {
            return Err(KafkaError {
                operation: format!("describe topic {name:?}"),
                code,
                message: None,
            }
            .into());
        }
        Ok(topic)
    }

    /// The cached metadata of `topic`, fetching it if it is not cached yet.
    pub async fn cached_topic(&mut self, name: &str) -> Result<TopicMetadata, ClientError> {
        match self.topics.get(name) {
            Some(topic) => Ok(topic.clone()),
            None => self.topic(name).await,
        }
    }

    /// Forgets cached metadata of `topic` so the next routing decision asks the broker again.
    pub fn invalidate_topic(&mut self, name: &str) {
        self.topics.remove(name);
    }

    /// The broker id of the leader of `topic`-`partition` (from cached metadata).
    pub(crate) async fn leader_id(
        &mut self,
        topic: &str,
        partition: i32,
    ) -> Result<i32, ClientError> {
        let metadata = self.cached_topic(topic).await?;
        match metadata.partition(partition) {
            Some(partition_metadata) if partition_metadata.leader_id >= 0 => {
                Ok(partition_metadata.leader_id)
            }
            _ => Err(ClientError::NoLeader {
                topic: topic.to_owned(),
                partition,
            }),
        }
    }

    /// The connection to broker `broker_id`, reusing the bootstrap connection when the broker
    /// advertises the address we bootstrapped from.
    pub(crate) async fn broker_connection(
        &mut self,
        broker_id: i32,
    ) -> Result<&mut Connection, ClientError> {
        let Some(address) = self.brokers.get(&broker_id).cloned() else {
            return Err(ClientError::UnknownBroker { broker_id });
        };
        if address == self.bootstrap.address() {
            return Ok(&mut self.bootstrap);
        }
        if !self.leaders.contains_key(&broker_id) {
            let connection = Connection::connect(&address, self.options.clone()).await?;
            self.leaders.insert(broker_id, connection);
        }
        Ok(self.leaders.get_mut(&broker_id).expect("inserted above"))
    }

    /// Drops the connection to `broker_id` after it failed, so the next use reconnects.
    pub(crate) fn forget_connection(&mut self, broker_id: i32) {
        self.leaders.remove(&broker_id);
    }

    /// Waits before retry number `attempt` (0-based) of a leadership-related failure.
    pub(crate) async fn leader_retry_backoff(attempt: u32) {
        let backoff_ms = LEADER_RETRY_BACKOFF_MS << attempt.min(10);
        tokio::time::sleep(Duration::from_millis(backoff_ms)).await;
    }

    /// After one attempt at a partition-leader request on `topic`: when `outcome` is a
    /// leadership failure with retries left, forgets the topic's metadata, waits, counts the
    /// attempt and returns true (try again); otherwise false (answer with `outcome`).
    pub(crate) async fn retry_after_leadership_failure<T>(
        &mut self,
        topic: &str,
        outcome: &Result<T, ClientError>,
        attempt: &mut u32,
    ) -> bool {
        let retriable = match outcome {
            Err(ClientError::Kafka(error)) => is_leadership_error(error.code),
            Err(ClientError::NoLeader { .. }) => true,
            _ => false,
        };
        if !retriable || *attempt >= LEADER_RETRIES_MAX {
            return false;
        }
        self.invalidate_topic(topic);
        Client::leader_retry_backoff(*attempt).await;
        *attempt += 1;
        true
    }
}

/// Whether `code` means "ask again after refreshing metadata": the request was not acted on.
pub(crate) fn is_leadership_error(code: ResponseError) -> bool {
    matches!(
        code,
        ResponseError::NotLeaderOrFollower
            | ResponseError::LeaderNotAvailable
            | ResponseError::UnknownTopicOrPartition
            | ResponseError::UnknownTopicId
            | ResponseError::FencedLeaderEpoch
            | ResponseError::UnknownLeaderEpoch
            | ResponseError::NotController
    )
}
