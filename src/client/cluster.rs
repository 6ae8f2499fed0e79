//! The cluster as a whole: DescribeQuorum (the metadata quorum) and DescribeCluster (the
//! registered brokers), both sent to the bootstrap broker.
//!
//! These are what `karst cluster quorum` and `karst cluster brokers` print, and what
//! `kafka-metadata-quorum.sh describe --status/--replication` and `kafka-cluster.sh` ask.

use proto_kafka::messages::describe_quorum_request::{PartitionData, TopicData};
use proto_kafka::messages::{
    ApiKey, DescribeClusterRequest, DescribeQuorumRequest, DescribeQuorumResponse, TopicName,
};
use proto_kafka::protocol::StrBytes;
use uuid::Uuid;

use super::{Client, ClientError, KafkaError};

/// The metadata log, as KRaft names it: the only "partition" DescribeQuorum describes.
pub const METADATA_TOPIC: &str = "__cluster_metadata";
pub const METADATA_PARTITION: i32 = 0;

/// Kafka's `EndpointType.BROKER` in DescribeCluster v1+.
const ENDPOINT_TYPE_BROKER: i8 = 1;

/// The metadata quorum as its leader describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumDescription {
    /// The controller (Raft leader); -1 when there is none.
    pub leader_id: i32,
    /// The leader's epoch: the Raft term, which is also the controller epoch.
    pub leader_epoch: i32,
    /// The first metadata log offset not yet committed.
    pub high_watermark: i64,
    pub voters: Vec<QuorumReplica>,
    pub observers: Vec<QuorumReplica>,
    /// Controller endpoints per node (DescribeQuorum v2; empty before).
    pub nodes: Vec<QuorumNode>,
}

/// One member of the quorum and how far its log has come.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumReplica {
    pub replica_id: i32,
    /// v2; `None` when the leader does not know it.
    pub directory_id: Option<Uuid>,
    /// The offset after its last log entry; -1 when unknown.
    pub log_end_offset: i64,
    /// v1+; `None` when unknown (-1) or not reported.
    pub last_fetch_timestamp_ms: Option<i64>,
    pub last_caught_up_timestamp_ms: Option<i64>,
}

impl QuorumDescription {
    /// How many offsets `replica` is behind the leader, when both ends are known.
    pub fn lag(&self, replica: &QuorumReplica) -> Option<i64> {
        let leader = self
            .voters
            .iter()
            .find(|voter| voter.replica_id == self.leader_id)?;
        (leader.log_end_offset >= 0 && replica.log_end_offset >= 0)
            .then(|| (leader.log_end_offset - replica.log_end_offset).max(0))
    }

    /// The controller endpoints of `node_id`, as `NAME://host:port`.
    pub fn endpoints(&self, node_id: i32) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|node| node.node_id == node_id)
            .flat_map(|node| node.listeners.iter())
            .map(|(name, host, port)| format!("{name}://{host}:{port}"))
            .collect()
    }
}

/// A quorum member's controller listeners (name, host, port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumNode {
    pub node_id: i32,
    pub listeners: Vec<(String, String, u16)>,
}

/// The cluster as DescribeCluster reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDescription {
    pub cluster_id: String,
    /// -1 when the broker knows no controller.
    pub controller_id: i32,
    pub brokers: Vec<ClusterBroker>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterBroker {
    pub broker_id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
    /// DescribeCluster v2; `None` from brokers that only speak v0/v1 (which list unfenced
    /// brokers only).
    pub fenced: Option<bool>,
}

impl Client {
    /// DescribeQuorum for the metadata log, at the highest version both sides speak.
    pub async fn describe_quorum(&mut self) -> Result<QuorumDescription, ClientError> {
        let version = self.bootstrap.version::<DescribeQuorumRequest>()?;
        let partition = PartitionData::default().with_partition_index(METADATA_PARTITION);
        let topic = TopicData::default()
            .with_topic_name(TopicName(StrBytes::from_static_str(METADATA_TOPIC)))
            .with_partitions(vec![partition]);
        let request = DescribeQuorumRequest::default().with_topics(vec![topic]);
        let response = self.bootstrap.send(request, version).await?;
        quorum_description(response)
    }

    /// DescribeCluster, asking v2 brokers to include fenced brokers.
    pub async fn describe_cluster(&mut self) -> Result<ClusterDescription, ClientError> {
        let version = self.bootstrap.version::<DescribeClusterRequest>()?;
        let request = DescribeClusterRequest::default()
            .with_include_cluster_authorized_operations(false)
            .with_endpoint_type(ENDPOINT_TYPE_BROKER)
            .with_include_fenced_brokers(version >= 2);
        let response = self.bootstrap.send(request, version).await?;
        KafkaError::check(
            || "describe cluster".to_owned(),
            response.error_code,
            response.error_message.as_deref(),
        )?;
        let brokers = response
            .brokers
            .into_iter()
            .map(|broker| ClusterBroker {
                broker_id: broker.broker_id.0,
                host: broker.host.to_string(),
                port: broker.port,
                rack: broker.rack.map(|rack| rack.to_string()),
                fenced: (version >= 2).then_some(broker.is_fenced),
            })
            .collect();
        Ok(ClusterDescription {
            cluster_id: response.cluster_id.to_string(),
            controller_id: response.controller_id.0,
            brokers,
        })
    }
}

fn quorum_description(response: DescribeQuorumResponse) -> Result<QuorumDescription, ClientError> {
    let operation = || format!("describe quorum of {METADATA_TOPIC}-{METADATA_PARTITION}");
    KafkaError::check(
        operation,
        response.error_code,
        response.error_message.as_deref(),
    )?;
    let partition = response
        .topics
        .into_iter()
        .filter(|topic| topic.topic_name.0.as_str() == METADATA_TOPIC)
        .flat_map(|topic| topic.partitions)
        .find(|partition| partition.partition_index == METADATA_PARTITION)
        .ok_or_else(|| ClientError::MissingResult {
            api: ApiKey::DescribeQuorum,
            what: format!("{METADATA_TOPIC}-{METADATA_PARTITION}"),
        })?;
    KafkaError::check(
        operation,
        partition.error_code,
        partition.error_message.as_deref(),
    )?;
    let known = |timestamp: i64| (timestamp >= 0).then_some(timestamp);
    let replica =
        |state: proto_kafka::messages::describe_quorum_response::ReplicaState| QuorumReplica {
            replica_id: state.replica_id.0,
            directory_id: Some(state.replica_directory_id).filter(|id| !id.is_nil()),
            log_end_offset: state.log_end_offset,
            last_fetch_timestamp_ms: known(state.last_fetch_timestamp),
            last_caught_up_timestamp_ms: known(state.last_caught_up_timestamp),
        };
    let nodes = response
        .nodes
        .into_iter()
        .map(|node| QuorumNode {
            node_id: node.node_id.0,
            listeners: node
                .listeners
                .into_iter()
                .map(|listener| {
                    (
                        listener.name.to_string(),
                        listener.host.to_string(),
                        listener.port,
                    )
                })
                .collect(),
        })
        .collect();
    Ok(QuorumDescription {
        leader_id: partition.leader_id.0,
        leader_epoch: partition.leader_epoch,
        high_watermark: partition.high_watermark,
        voters: partition.current_voters.into_iter().map(replica).collect(),
        observers: partition.observers.into_iter().map(replica).collect(),
        nodes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto_kafka::messages::describe_quorum_response::{self as response, ReplicaState};
    use proto_kafka::messages::BrokerId;

    fn state(id: i32, log_end_offset: i64) -> ReplicaState {
        ReplicaState::default()
            .with_replica_id(BrokerId(id))
            .with_log_end_offset(log_end_offset)
            .with_last_fetch_timestamp(-1)
            .with_last_caught_up_timestamp(-1)
    }

    fn answer(error_code: i16) -> DescribeQuorumResponse {
        let partition = response::PartitionData::default()
            .with_partition_index(0)
            .with_error_code(error_code)
            .with_leader_id(BrokerId(2))
            .with_leader_epoch(7)
            .with_high_watermark(120)
            .with_current_voters(vec![state(1, 100), state(2, 120), state(3, -1)])
            .with_observers(vec![state(4, 119)]);
        let topic = response::TopicData::default()
            .with_topic_name(TopicName(StrBytes::from_static_str(METADATA_TOPIC)))
            .with_partitions(vec![partition]);
        DescribeQuorumResponse::default().with_topics(vec![topic])
    }

    #[test]
    fn lag_is_measured_from_the_leader_s_log_end_offset() {
        let quorum = quorum_description(answer(0)).unwrap();
        assert_eq!((quorum.leader_id, quorum.leader_epoch), (2, 7));
        let lags: Vec<Option<i64>> = quorum
            .voters
            .iter()
            .chain(&quorum.observers)
            .map(|replica| quorum.lag(replica))
            .collect();
        assert_eq!(lags, vec![Some(20), Some(0), None, Some(1)]);
        assert_eq!(quorum.voters[0].last_fetch_timestamp_ms, None);
    }

    #[test]
    fn a_partition_error_is_a_kafka_error() {
        let error = quorum_description(answer(6)).unwrap_err();
        assert_eq!(
            error.kafka_code(),
            Some(proto_kafka::ResponseError::NotLeaderOrFollower)
        );
    }
}
