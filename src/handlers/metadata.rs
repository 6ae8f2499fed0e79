//! Metadata: brokers, cluster id, controller, and topics with their partitions, from the
//! metadata image. Unknown topics are created when auto-creation is on and the client
//! allows it.

use proto_kafka::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use proto_kafka::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use proto_kafka::protocol::StrBytes;
use proto_kafka::ResponseError;

use super::RequestContext;
use crate::broker::SharedBroker;
use crate::controller::{validate_topic_name, TopicRequest};
use crate::metadata::TopicImage;

/// `topic_authorized_operations` when the client did not ask for them.
const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;

pub async fn handle(
    broker: SharedBroker,
    context: RequestContext,
    request: MetadataRequest,
) -> MetadataResponse {
    let version = context.api_version;
    let wanted: Option<Vec<(Option<String>, uuid::Uuid)>> = match &request.topics {
        None => None,
        Some(topics) if topics.is_empty() && version == 0 => None,
        Some(topics) => Some(
            topics
                .iter()
                .map(|t| (t.name.as_ref().map(|n| n.to_string()), t.topic_id))
                .collect(),
        ),
    };
    let may_create =
        broker.config.auto_create_topics && (version < 4 || request.allow_auto_topic_creation);
    let mut topics = Vec::new();
    match wanted {
        None => {
            let image = broker.metadata.image();
            topics.extend(image.topics.values().map(|topic| describe(topic, version)));
        }
        Some(wanted) => {
            for (name, topic_id) in wanted {
                topics.push(resolve_topic(&broker, name, topic_id, may_create, version).await);
            }
        }
    }
    let brokers = broker
        .live_brokers()
        .into_iter()
        .map(|live| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(live.id))
                .with_host(StrBytes::from_string(live.host))
                .with_port(i32::from(live.port))
                .with_rack(live.rack.map(StrBytes::from_string))
        })
        .collect();
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(StrBytes::from_string(broker.cluster_id())))
        .with_controller_id(BrokerId(broker.reported_controller_id()))
        .with_topics(topics)
        .with_cluster_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED)
}

async fn resolve_topic(
    broker: &SharedBroker,
    name: Option<String>,
    topic_id: uuid::Uuid,
    may_create: bool,
    version: i16,
) -> MetadataResponseTopic {
    let image = broker.metadata.image();
    let Some(name) = name else {
        return match image.topic_by_id(&topic_id) {
            Some(topic) => describe(topic, version),
            None => error_topic(None, topic_id, ResponseError::UnknownTopicId),
        };
    };
    if let Some(topic) = image.topic(&name) {
        return describe(topic, version);
    }
    if let Err(error) = validate_topic_name(&name) {
        return error_topic(Some(name), topic_id, error.code);
    }
    if !may_create {
        return error_topic(Some(name), topic_id, ResponseError::UnknownTopicOrPartition);
    }
    let creator = SharedBroker::clone(broker);
    let topic_name = name.clone();
    let created = tokio::task::spawn_blocking(move || {
        creator.create_topic(
            TopicRequest {
                name: topic_name,
                partitions: -1,
                replication_factor: -1,
                assignments: Vec::new(),
                configs: Default::default(),
            },
            false,
        )
    })
    .await;
    match created {
        Ok(Ok(_)) | Ok(Err(_)) => match broker.metadata.image().topic(&name) {
            // Created now, or by a concurrent request: either way it exists.
            Some(topic) => describe(topic, version),
            None => error_topic(Some(name), topic_id, ResponseError::UnknownTopicOrPartition),
        },
        Err(_) => error_topic(Some(name), topic_id, ResponseError::UnknownServerError),
    }
}

fn error_topic(
    name: Option<String>,
    topic_id: uuid::Uuid,
    code: ResponseError,
) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_error_code(code.code())
        .with_name(name.map(|n| TopicName(StrBytes::from_string(n))))
        .with_topic_id(topic_id)
        .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED)
}

fn describe(topic: &TopicImage, _version: i16) -> MetadataResponseTopic {
    let partitions = topic
        .partitions
        .iter()
        .map(|p| {
            MetadataResponsePartition::default()
                .with_error_code(if p.leader == -1 {
                    ResponseError::LeaderNotAvailable.code()
                } else {
                    0
                })
                .with_partition_index(p.partition)
                .with_leader_id(BrokerId(p.leader))
                .with_leader_epoch(p.leader_epoch)
                .with_replica_nodes(p.replicas.iter().copied().map(BrokerId).collect())
                .with_isr_nodes(p.isr.iter().copied().map(BrokerId).collect())
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(topic.name.clone()))))
        .with_topic_id(topic.topic_id)
        .with_is_internal(topic.name.starts_with("__"))
        .with_partitions(partitions)
        .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED)
}
