//! Cluster metadata as plain values: brokers, topics, partitions and who leads them.
//!
//! [`super::Client::metadata`] turns a Metadata response into these types (per-topic and
//! per-partition error codes become [`ResponseError`] values, since "this topic does not
//! exist" is an expected answer, not a failure of the request) and caches leaders for routing.

use proto_kafka::messages::metadata_request::MetadataRequestTopic;
use proto_kafka::messages::{MetadataRequest, MetadataResponse};
use proto_kafka::protocol::{StrBytes, VersionRange};
use proto_kafka::ResponseError;
use uuid::Uuid;

/// Metadata versions this client implements: from version 1 a null topic list means "all
/// topics" (version 0 used an empty list for that, which we never need).
pub const METADATA_VERSIONS: VersionRange = VersionRange { min: 1, max: 13 };

/// The cluster as one Metadata response described it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterMetadata {
    /// The cluster id, when the broker sent one.
    pub cluster_id: Option<String>,
    /// The controller's broker id (-1 if unknown).
    pub controller_id: i32,
    /// The live brokers.
    pub brokers: Vec<BrokerMetadata>,
    /// The topics asked for (or all topics).
    pub topics: Vec<TopicMetadata>,
}

/// One broker and where to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerMetadata {
    /// The broker's node id.
    pub id: i32,
    /// Advertised host.
    pub host: String,
    /// Advertised port.
    pub port: i32,
    /// Rack, if configured.
    pub rack: Option<String>,
}

impl BrokerMetadata {
    /// `host:port`, bracketing IPv6 literals.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// One topic.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicMetadata {
    /// The topic name.
    pub name: String,
    /// The topic id; nil when the broker does not report one.
    pub topic_id: Uuid,
    /// `None`, or why the topic could not be described (e.g. `UnknownTopicOrPartition`).
    pub error: Option<ResponseError>,
    /// Whether this is an internal topic such as `__consumer_offsets`.
    pub is_internal: bool,
    /// The partitions, sorted by index.
    pub partitions: Vec<PartitionMetadata>,
}

impl TopicMetadata {
    /// The partition with `index`, if it exists.
    pub fn partition(&self, index: i32) -> Option<&PartitionMetadata> {
        self.partitions
            .iter()
            .find(|partition| partition.index == index)
    }

    /// The number of partitions.
    pub fn partition_count(&self) -> i32 {
        i32::try_from(self.partitions.len()).unwrap_or(i32::MAX)
    }
}

/// One partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionMetadata {
    /// The partition index.
    pub index: i32,
    /// `None`, or a partition-level error (e.g. `LeaderNotAvailable`).
    pub error: Option<ResponseError>,
    /// The leader's broker id, -1 when there is none.
    pub leader_id: i32,
    /// The leader epoch, -1 if unknown.
    pub leader_epoch: i32,
    /// The replica set.
    pub replicas: Vec<i32>,
    /// The in-sync replicas.
    pub isr: Vec<i32>,
    /// Replicas that are offline.
    pub offline_replicas: Vec<i32>,
}

/// Builds the Metadata request for `topics` (`None` = all topics) at `version`.
pub fn metadata_request(topics: Option<&[&str]>, version: i16) -> MetadataRequest {
    let topics = topics.map(|names| {
        names
            .iter()
            .map(|name| {
                MetadataRequestTopic::default()
                    .with_name(Some(StrBytes::from_string((*name).to_owned()).into()))
            })
            .collect()
    });
    // The CLI must never create a topic as a side effect of looking at it. Before version 4
    // the field does not exist (and must keep its default to encode).
    MetadataRequest::default()
        .with_topics(topics)
        .with_allow_auto_topic_creation(version < 4)
}

/// Converts a Metadata response into [`ClusterMetadata`].
pub fn cluster_metadata(response: MetadataResponse) -> ClusterMetadata {
    let brokers = response
        .brokers
        .into_iter()
        .map(|broker| BrokerMetadata {
            id: broker.node_id.0,
            host: broker.host.to_string(),
            port: broker.port,
            rack: broker.rack.map(|rack| rack.to_string()),
        })
        .collect();
    let topics = response
        .topics
        .into_iter()
        .map(|topic| {
            let mut partitions: Vec<PartitionMetadata> = topic
                .partitions
                .into_iter()
                .map(|partition| PartitionMetadata {
                    index: partition.partition_index,
                    error: ResponseError::try_from_code(partition.error_code),
                    leader_id: partition.leader_id.0,
                    leader_epoch: partition.leader_epoch,
                    replicas: partition.replica_nodes.iter().map(|id| id.0).collect(),
                    isr: partition.isr_nodes.iter().map(|id| id.0).collect(),
                    offline_replicas: partition.offline_replicas.iter().map(|id| id.0).collect(),
                })
                .collect();
            partitions.sort_by_key(|partition| partition.index);
            TopicMetadata {
                name: topic
                    .name
                    .map(|name| name.0.to_string())
                    .unwrap_or_default(),
                topic_id: topic.topic_id,
                error: ResponseError::try_from_code(topic.error_code),
                is_internal: topic.is_internal,
                partitions,
            }
        })
        .collect();
    ClusterMetadata {
        cluster_id: response.cluster_id.map(|id| id.to_string()),
        controller_id: response.controller_id.0,
        brokers,
        topics,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto_kafka::messages::metadata_response::{
        MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
    };
    use proto_kafka::messages::BrokerId;
    use proto_kafka::protocol::Encodable;

    #[test]
    fn requests_never_auto_create_topics_where_the_field_exists() {
        let request = metadata_request(Some(&["orders"]), 12);
        assert!(!request.allow_auto_topic_creation);
        let old = metadata_request(Some(&["orders"]), 3);
        let mut buffer = bytes::BytesMut::new();
        old.encode(&mut buffer, 3)
            .expect("version 3 has no auto-create field to set");
    }

    #[test]
    fn a_null_topic_list_asks_for_all_topics() {
        assert_eq!(metadata_request(None, 12).topics, None);
    }

    #[test]
    fn responses_become_sorted_plain_values_with_typed_errors() {
        let mut response = MetadataResponse::default();
        response.brokers = vec![MetadataResponseBroker::default()
            .with_node_id(BrokerId(1))
            .with_host(StrBytes::from_static_str("::1"))
            .with_port(9092)];
        response.topics = vec![
            MetadataResponseTopic::default()
                .with_name(Some(StrBytes::from_static_str("orders").into()))
                .with_partitions(vec![
                    MetadataResponsePartition::default()
                        .with_partition_index(1)
                        .with_leader_id(BrokerId(1)),
                    MetadataResponsePartition::default()
                        .with_partition_index(0)
                        .with_error_code(5)
                        .with_leader_id(BrokerId(-1)),
                ]),
            MetadataResponseTopic::default()
                .with_name(Some(StrBytes::from_static_str("missing").into()))
                .with_error_code(3),
        ];
        let metadata = cluster_metadata(response);
        assert_eq!(metadata.brokers[0].address(), "[::1]:9092");
        let orders = &metadata.topics[0];
        assert_eq!(
            orders
                .partitions
                .iter()
                .map(|p| p.index)
                .collect::<Vec<_>>(),
            vec![0, 1]
        );
        assert_eq!(
            orders.partition(0).unwrap().error,
            Some(ResponseError::LeaderNotAvailable)
        );
        assert_eq!(
            metadata.topics[1].error,
            Some(ResponseError::UnknownTopicOrPartition)
        );
    }
}
