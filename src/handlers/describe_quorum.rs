//! DescribeQuorum (KIP-595; v2 from KIP-853): the metadata quorum as its leader sees it, what
//! `kafka-metadata-quorum.sh describe` and `karst cluster quorum` print.
//!
//! The quorum's log is presented as KRaft presents it, as partition 0 of `__cluster_metadata`:
//! Raft log index `i` is offset `i`, so a log end offset is the last index + 1 and the high
//! watermark is the committed index + 1 (Kafka's exclusive ends). The leader epoch is the Raft
//! term, which is also the controller epoch.
//!
//! Only the leader knows how far each member's log has come, so only the leader describes the
//! quorum, as in Kafka. Kafka brokers forward the request to the active controller; so does a
//! Karst node that is not the leader: it asks the leader's Kafka listener once (a forwarded
//! request is never forwarded again) and answers NOT_LEADER_OR_FOLLOWER when that is not
//! possible (no leader yet, or a controller-only leader without a Kafka listener); clients
//! retry after that error.

use std::time::Duration;

use proto_kafka::messages::describe_quorum_response::{
    Listener, Node, PartitionData, ReplicaState, TopicData,
};
use proto_kafka::messages::{BrokerId, DescribeQuorumRequest, DescribeQuorumResponse, TopicName};
use proto_kafka::protocol::StrBytes;
use proto_kafka::ResponseError;
use uuid::Uuid;

use karst_raft::{QuorumStatus, Role};

use super::RequestContext;
use crate::broker::SharedBroker;
use crate::client::cluster::{METADATA_PARTITION, METADATA_TOPIC};
use crate::client::{Connection, ConnectionOptions};
use crate::meta_properties::MetaProperties;

/// The client id of a request forwarded to the leader; a node receiving it never forwards.
const FORWARDED_CLIENT_ID: &str = "karst-describe-quorum-forwarded";
/// How long forwarding may take in all (connect, versions, request) before the node answers
/// NOT_LEADER_OR_FOLLOWER itself.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);
/// The listener name DescribeQuorum v2 reports when `controller.listener.names` is empty.
const CONTROLLER_LISTENER_DEFAULT: &str = "CONTROLLER";

pub async fn handle(
    broker: SharedBroker,
    context: RequestContext,
    request: DescribeQuorumRequest,
) -> DescribeQuorumResponse {
    if !asks_for_the_metadata_partition(&request) {
        return unknown_partitions(&request);
    }
    let status = broker.quorum.status();
    if status.role == Role::Leader {
        let local = LocalMember {
            directory_id: local_directory_id(&broker),
            controller_listener: controller_listener_name(&broker),
        };
        return describe(&status, &local);
    }
    let forwarded = context.client_id.as_deref() == Some(FORWARDED_CLIENT_ID);
    if !forwarded {
        if let Some(response) = forward_to_leader(&broker, &status, &context, request).await {
            return response;
        }
    }
    not_leader(&status)
}

/// What the leader knows about itself beyond the quorum status.
#[derive(Clone, Debug, Default)]
pub struct LocalMember {
    /// This node's `directory.id` from meta.properties.
    pub directory_id: Option<Uuid>,
    /// The name of the controller listener (`controller.listener.names`).
    pub controller_listener: String,
}

/// Kafka describes only the metadata partition: exactly one topic with exactly one partition.
fn asks_for_the_metadata_partition(request: &DescribeQuorumRequest) -> bool {
    match request.topics.as_slice() {
        [topic] => {
            topic.topic_name.0.as_str() == METADATA_TOPIC
                && matches!(topic.partitions.as_slice(), [p] if p.partition_index == METADATA_PARTITION)
        }
        _ => false,
    }
}

/// UNKNOWN_TOPIC_OR_PARTITION for every partition asked, as Kafka answers.
fn unknown_partitions(request: &DescribeQuorumRequest) -> DescribeQuorumResponse {
    let topics = request
        .topics
        .iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|partition| {
                    PartitionData::default()
                        .with_partition_index(partition.partition_index)
                        .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                        .with_leader_id(BrokerId(-1))
                        .with_leader_epoch(-1)
                        .with_high_watermark(-1)
                })
                .collect();
            TopicData::default()
                .with_topic_name(topic.topic_name.clone())
                .with_partitions(partitions)
        })
        .collect();
    DescribeQuorumResponse::default().with_topics(topics)
}

fn metadata_topic(partition: PartitionData) -> TopicData {
    TopicData::default()
        .with_topic_name(TopicName(StrBytes::from_static_str(METADATA_TOPIC)))
        .with_partitions(vec![partition.with_partition_index(METADATA_PARTITION)])
}

fn epoch(term: u64) -> i32 {
    i32::try_from(term).unwrap_or(i32::MAX)
}

fn leader_id(status: &QuorumStatus) -> i32 {
    status.leader_id.map_or(-1, |id| id as i32)
}

/// NOT_LEADER_OR_FOLLOWER, with the leader and epoch this node knows of.
pub fn not_leader(status: &QuorumStatus) -> DescribeQuorumResponse {
    let partition = PartitionData::default()
        .with_error_code(ResponseError::NotLeaderOrFollower.code())
        .with_error_message(Some(StrBytes::from_string(format!(
            "node {} is not the leader of the metadata quorum (leader: {})",
            status.node_id,
            status
                .leader_id
                .map_or_else(|| "none yet".to_owned(), |id| id.to_string())
        ))))
        .with_leader_id(BrokerId(leader_id(status)))
        .with_leader_epoch(epoch(status.term))
        .with_high_watermark(-1);
    DescribeQuorumResponse::default().with_topics(vec![metadata_topic(partition)])
}

/// The leader's answer: every voter and observer with its log end offset.
pub fn describe(status: &QuorumStatus, local: &LocalMember) -> DescribeQuorumResponse {
    let replica = |node_id: u64| {
        let log_end_offset = if node_id == status.node_id {
            status.last_log_index.map_or(0, |index| index as i64 + 1)
        } else {
            // -1, Kafka's "unknown": nothing confirmed replicated to it yet.
            match status.replicated_index.get(&node_id) {
                Some(Some(index)) => *index as i64 + 1,
                Some(None) | None => -1,
            }
        };
        let directory_id = if node_id == status.node_id {
            local.directory_id.unwrap_or_default()
        } else {
            // Karst does not track other nodes' directory ids; Kafka's "unknown".
            Uuid::nil()
        };
        ReplicaState::default()
            .with_replica_id(BrokerId(node_id as i32))
            .with_replica_directory_id(directory_id)
            .with_log_end_offset(log_end_offset)
            // openraft does not expose fetch times; -1 is Kafka's "unknown".
            .with_last_fetch_timestamp(-1)
            .with_last_caught_up_timestamp(-1)
    };
    let high_watermark = status.committed_index.map_or(0, |index| index as i64 + 1);
    let partition = PartitionData::default()
        .with_error_code(0)
        .with_leader_id(BrokerId(leader_id(status)))
        .with_leader_epoch(epoch(status.term))
        .with_high_watermark(high_watermark)
        .with_current_voters(status.voters.keys().map(|id| replica(*id)).collect())
        .with_observers(status.observers.keys().map(|id| replica(*id)).collect());
    let nodes = status
        .voters
        .iter()
        .chain(&status.observers)
        .map(|(id, address)| node(*id, address, &local.controller_listener))
        .collect();
    DescribeQuorumResponse::default()
        .with_error_code(0)
        .with_topics(vec![metadata_topic(partition)])
        .with_nodes(nodes)
}

/// A v2 node entry: the member's controller listener (`host:port` from the quorum).
fn node(id: u64, address: &str, listener_name: &str) -> Node {
    let listeners = match address.rsplit_once(':') {
        Some((host, port)) => match port.parse::<u16>() {
            Ok(port) => vec![Listener::default()
                .with_name(StrBytes::from_string(listener_name.to_owned()))
                .with_host(StrBytes::from_string(
                    host.trim_start_matches('[')
                        .trim_end_matches(']')
                        .to_owned(),
                ))
                .with_port(port)],
            Err(_) => Vec::new(),
        },
        None => Vec::new(),
    };
    Node::default()
        .with_node_id(BrokerId(id as i32))
        .with_listeners(listeners)
}

fn controller_listener_name(broker: &SharedBroker) -> String {
    broker
        .config
        .value("controller.listener.names")
        .split(',')
        .map(str::trim)
        .find(|name| !name.is_empty())
        .unwrap_or(CONTROLLER_LISTENER_DEFAULT)
        .to_owned()
}

/// This node's `directory.id` (a small file read; DescribeQuorum is an operator's request).
fn local_directory_id(broker: &SharedBroker) -> Option<Uuid> {
    let properties = MetaProperties::read(&broker.config.log_dir).ok()??;
    crate::cluster_id::parse_cluster_id(properties.directory_id.as_deref()?).ok()
}

/// Asks the leader's Kafka listener, as a Kafka broker forwards DescribeQuorum to the active
/// controller. `None` when there is no leader with a Kafka listener or it does not answer.
async fn forward_to_leader(
    broker: &SharedBroker,
    status: &QuorumStatus,
    context: &RequestContext,
    request: DescribeQuorumRequest,
) -> Option<DescribeQuorumResponse> {
    let leader = i32::try_from(status.leader_id?).ok()?;
    let image = broker.quorum.image();
    let endpoint = image
        .brokers
        .get(&leader)?
        .listeners
        .iter()
        .find(|listener| listener.name == "PLAINTEXT")?;
    let address = format!("{}:{}", endpoint.host, endpoint.port);
    let options = ConnectionOptions {
        connect_timeout_ms: FORWARD_TIMEOUT.as_millis() as u64,
        request_timeout_ms: FORWARD_TIMEOUT.as_millis() as u64,
        client_id: FORWARDED_CLIENT_ID.to_owned(),
        ..ConnectionOptions::default()
    };
    let exchange = async {
        let mut connection = Connection::connect(&address, options).await?;
        connection.send(request, context.api_version).await
    };
    match tokio::time::timeout(FORWARD_TIMEOUT, exchange).await {
        Ok(Ok(response)) => Some(response),
        Ok(Err(error)) => {
            tracing::debug!(%error, leader, %address, "forwarding DescribeQuorum to the leader failed");
            None
        }
        Err(_) => {
            tracing::debug!(leader, %address, "forwarding DescribeQuorum to the leader timed out");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use proto_kafka::messages::describe_quorum_request;

    fn status(role: Role, node_id: u64) -> QuorumStatus {
        QuorumStatus {
            node_id,
            role,
            leader_id: Some(1),
            term: 4,
            voters: BTreeMap::from([
                (1, "127.0.0.1:9093".to_owned()),
                (2, "127.0.0.1:9193".to_owned()),
                (3, "127.0.0.1:9293".to_owned()),
            ]),
            observers: BTreeMap::from([(4, "127.0.0.1:9393".to_owned())]),
            last_log_index: Some(41),
            committed_index: Some(40),
            applied_index: Some(40),
            snapshot_index: None,
            purged_index: None,
            replicated_index: BTreeMap::from([(2, Some(41)), (3, Some(30)), (4, None)]),
            snapshots: Default::default(),
        }
    }

    fn partition(response: &DescribeQuorumResponse) -> &PartitionData {
        assert_eq!(response.topics.len(), 1);
        assert_eq!(response.topics[0].topic_name.0.as_str(), METADATA_TOPIC);
        &response.topics[0].partitions[0]
    }

    #[test]
    fn the_leader_reports_each_member_s_log_end_offset_as_kafka_offsets() {
        let local = LocalMember {
            directory_id: Some(Uuid::from_u128(7)),
            controller_listener: "CONTROLLER".into(),
        };
        let response = describe(&status(Role::Leader, 1), &local);
        let partition = partition(&response);

        assert_eq!(partition.error_code, 0);
        assert_eq!((partition.leader_id.0, partition.leader_epoch), (1, 4));
        assert_eq!(partition.high_watermark, 41, "committed index 40 + 1");
        let ends: Vec<(i32, i64)> = partition
            .current_voters
            .iter()
            .map(|r| (r.replica_id.0, r.log_end_offset))
            .collect();
        assert_eq!(ends, vec![(1, 42), (2, 42), (3, 31)]);
        assert_eq!(partition.observers[0].log_end_offset, -1);
        assert_eq!(
            partition.current_voters[0].replica_directory_id,
            Uuid::from_u128(7)
        );
        assert!(partition.current_voters[1].replica_directory_id.is_nil());
        assert_eq!(partition.current_voters[0].last_fetch_timestamp, -1);

        let node_3 = &response.nodes[2];
        assert_eq!(node_3.node_id.0, 3);
        assert_eq!(node_3.listeners[0].name.as_str(), "CONTROLLER");
        assert_eq!(node_3.listeners[0].host.as_str(), "127.0.0.1");
        assert_eq!(node_3.listeners[0].port, 9293);
        assert_eq!(response.nodes.len(), 4, "voters and observers");
    }

    #[test]
    fn a_follower_answers_not_leader_or_follower_naming_the_leader() {
        let response = not_leader(&status(Role::Follower, 2));
        let partition = partition(&response);
        assert_eq!(
            partition.error_code,
            ResponseError::NotLeaderOrFollower.code()
        );
        assert_eq!((partition.leader_id.0, partition.leader_epoch), (1, 4));
    }

    #[test]
    fn only_partition_0_of_the_metadata_topic_is_described() {
        let ask = |topic: &str, partitions: &[i32]| {
            let partitions = partitions
                .iter()
                .map(|p| describe_quorum_request::PartitionData::default().with_partition_index(*p))
                .collect();
            DescribeQuorumRequest::default().with_topics(vec![
                describe_quorum_request::TopicData::default()
                    .with_topic_name(TopicName(StrBytes::from_string(topic.to_owned())))
                    .with_partitions(partitions),
            ])
        };
        assert!(asks_for_the_metadata_partition(&ask(METADATA_TOPIC, &[0])));
        assert!(!asks_for_the_metadata_partition(&ask(METADATA_TOPIC, &[1])));
        assert!(!asks_for_the_metadata_partition(&ask("orders", &[0])));
        assert!(!asks_for_the_metadata_partition(&ask(
            METADATA_TOPIC,
            &[0, 0]
        )));

        let refused = unknown_partitions(&ask("orders", &[0, 1]));
        let codes: Vec<i16> = refused.topics[0]
            .partitions
            .iter()
            .map(|p| p.error_code)
            .collect();
        let unknown = ResponseError::UnknownTopicOrPartition.code();
        assert_eq!(codes, vec![unknown, unknown]);
    }
}
