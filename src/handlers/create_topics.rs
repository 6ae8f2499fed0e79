//! CreateTopics: turns each requested topic into a controller `TopicRequest`, creates it (or
//! only validates it), and answers per topic; from v5 a created topic's partition count,
//! replication factor and resolved configs are returned too.
//!
//! Also home of [`in_controller`], the one way admin handlers run controller decisions,
//! which fsync and therefore must not run on the async workers.

use std::collections::{BTreeMap, BTreeSet};

use proto_kafka::messages::create_topics_request::CreatableTopic;
use proto_kafka::messages::create_topics_response::{CreatableTopicConfigs, CreatableTopicResult};
use proto_kafka::messages::{CreateTopicsRequest, CreateTopicsResponse, TopicName};
use proto_kafka::protocol::StrBytes;
use proto_kafka::ResponseError;

use super::describe_configs::topic_configs;
use super::RequestContext;
use crate::broker::{Broker, SharedBroker};
use crate::controller::{CreatedTopic, TopicRequest};
use crate::error::ApiError;

pub async fn handle(
    broker: SharedBroker,
    context: RequestContext,
    request: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let version = context.api_version;
    let validate_only = request.validate_only;
    let repeated_names = duplicates(request.topics.iter().map(|topic| topic.name.to_string()));
    let mut results = Vec::with_capacity(request.topics.len());
    // Kafka answers a name given twice once, with INVALID_REQUEST, and creates neither.
    for name in &repeated_names {
        let error = ApiError::new(ResponseError::InvalidRequest, "Duplicate topic name.");
        results.push(failed(
            TopicName(StrBytes::from_string(name.clone())),
            error,
        ));
    }
    for topic in request.topics {
        if repeated_names.contains(topic.name.as_str()) {
            continue;
        }
        let name = topic.name.clone();
        let outcome = match topic_request(topic) {
            Ok(topic_request) => {
                let configs = topic_request.configs.clone();
                in_controller(&broker, move |broker| {
                    broker.create_topic(topic_request, validate_only)
                })
                .await
                .map(|created| (created, configs))
            }
            Err(error) => Err(error),
        };
        results.push(match outcome {
            Ok((created, configs)) => succeeded(&broker, version, name, created, &configs),
            Err(error) => failed(name, error),
        });
    }
    CreateTopicsResponse::default().with_topics(results)
}

/// Runs a controller decision on the blocking pool: decisions fsync the metadata log.
pub(super) async fn in_controller<T: Send + 'static>(
    broker: &SharedBroker,
    decide: impl FnOnce(&Broker) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let broker = SharedBroker::clone(broker);
    tokio::task::spawn_blocking(move || decide(&broker))
        .await
        .unwrap_or_else(|failure| {
            tracing::error!(error = %failure, "controller task failed");
            Err(ApiError::new(
                ResponseError::UnknownServerError,
                format!("controller task failed: {failure}"),
            ))
        })
}

/// Items (topic names, ids) that appear more than once, each once.
pub(super) fn duplicates<T: Ord + Clone>(items: impl IntoIterator<Item = T>) -> BTreeSet<T> {
    let mut seen = BTreeSet::new();
    let mut repeated = BTreeSet::new();
    for item in items {
        if !seen.insert(item.clone()) {
            repeated.insert(item);
        }
    }
    repeated
}

/// The controller's view of one requested topic; a config without a value is refused here.
fn topic_request(topic: CreatableTopic) -> Result<TopicRequest, ApiError> {
    let mut configs = BTreeMap::new();
    for config in topic.configs {
        let Some(value) = config.value else {
            return Err(ApiError::new(
                ResponseError::InvalidConfig,
                format!(
                    "Null value not supported for topic configs: {}",
                    config.name.as_str()
                ),
            ));
        };
        configs.insert(config.name.to_string(), value.to_string());
    }
    // Partition order in the request is free; the controller checks they are 0..n.
    let mut assignments: Vec<(i32, Vec<i32>)> = topic
        .assignments
        .into_iter()
        .map(|assignment| {
            (
                assignment.partition_index,
                assignment.broker_ids.into_iter().map(|id| id.0).collect(),
            )
        })
        .collect();
    assignments.sort_by_key(|(partition, _)| *partition);
    Ok(TopicRequest {
        name: topic.name.to_string(),
        partitions: topic.num_partitions,
        replication_factor: topic.replication_factor,
        assignments,
        configs,
    })
}

fn succeeded(
    broker: &Broker,
    version: i16,
    name: TopicName,
    created: CreatedTopic,
    overrides: &BTreeMap<String, String>,
) -> CreatableTopicResult {
    let mut result = CreatableTopicResult::default()
        .with_name(name)
        .with_error_code(0)
        .with_error_message(None);
    if version >= 7 {
        result = result.with_topic_id(created.topic_id);
    }
    if version >= 5 {
        let configs = topic_configs(overrides, &broker.config, |_| true)
            .into_iter()
            .map(|config| {
                let sensitive = config.is_sensitive();
                CreatableTopicConfigs::default()
                    .with_name(StrBytes::from_static_str(config.name))
                    .with_value((!sensitive).then(|| StrBytes::from_string(config.value)))
                    .with_read_only(false)
                    .with_config_source(config.source as i8)
                    .with_is_sensitive(sensitive)
            })
            .collect();
        result = result
            .with_num_partitions(created.partitions)
            .with_replication_factor(created.replication_factor)
            .with_configs(Some(configs));
    }
    result
}

/// A refused topic: partition count and replication factor stay -1, as in Kafka.
fn failed(name: TopicName, error: ApiError) -> CreatableTopicResult {
    CreatableTopicResult::default()
        .with_name(name)
        .with_error_code(error.code())
        .with_error_message(Some(StrBytes::from_string(error.message)))
}

#[cfg(test)]
mod tests {
    use proto_kafka::messages::create_topics_request::{
        CreatableReplicaAssignment, CreatableTopicConfig,
    };
    use proto_kafka::messages::BrokerId;

    use super::*;

    fn creatable(name: &'static str) -> CreatableTopic {
        CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_static_str(name)))
            .with_num_partitions(-1)
            .with_replication_factor(-1)
    }

    #[test]
    fn names_given_twice_are_reported_once() {
        let repeated = duplicates(["a", "b", "a", "c", "a", "b"]);
        assert_eq!(repeated.into_iter().collect::<Vec<_>>(), ["a", "b"]);
    }

    #[test]
    fn request_configs_and_assignments_map_to_the_controller_request() {
        let topic = creatable("orders")
            .with_configs(vec![CreatableTopicConfig::default()
                .with_name(StrBytes::from_static_str("retention.ms"))
                .with_value(Some(StrBytes::from_static_str("1000")))])
            .with_assignments(vec![
                CreatableReplicaAssignment::default()
                    .with_partition_index(1)
                    .with_broker_ids(vec![BrokerId(1)]),
                CreatableReplicaAssignment::default()
                    .with_partition_index(0)
                    .with_broker_ids(vec![BrokerId(1)]),
            ]);

        let request = topic_request(topic).unwrap();

        assert_eq!(
            request.configs.get("retention.ms").map(String::as_str),
            Some("1000")
        );
        assert_eq!(request.assignments, vec![(0, vec![1]), (1, vec![1])]);
        assert_eq!((request.partitions, request.replication_factor), (-1, -1));
    }

    #[test]
    fn a_config_without_a_value_is_an_invalid_config() {
        let topic = creatable("orders").with_configs(vec![CreatableTopicConfig::default()
            .with_name(StrBytes::from_static_str("retention.ms"))
            .with_value(None)]);

        let error = topic_request(topic).err().unwrap();

        assert_eq!(error.code, ResponseError::InvalidConfig);
    }
}
