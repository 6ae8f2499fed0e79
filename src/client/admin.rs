//! Topic and configuration administration: CreateTopics, DeleteTopics, CreatePartitions,
//! DescribeConfigs and IncrementalAlterConfigs, all sent to the bootstrap broker.
//!
//! Each helper checks both the top-level and the per-resource error codes and turns them into
//! [`KafkaError`]s that name the operation, so a caller can print them as they are.

use proto_kafka::messages::create_partitions_request::CreatePartitionsTopic;
use proto_kafka::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use proto_kafka::messages::delete_topics_request::DeleteTopicState;
use proto_kafka::messages::describe_configs_request::DescribeConfigsResource;
use proto_kafka::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use proto_kafka::messages::{
    ApiKey, CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest,
    DescribeConfigsRequest, IncrementalAlterConfigsRequest, TopicName,
};
use proto_kafka::protocol::{StrBytes, VersionRange};
use uuid::Uuid;

use super::{Client, ClientError, KafkaError};

/// How long the broker may take to carry out a topic change before answering
/// `REQUEST_TIMED_OUT` (the `timeout_ms` of CreateTopics, DeleteTopics, CreatePartitions).
/// Kafka's admin tools use 30 s as well.
pub const ADMIN_TIMEOUT_MS: i32 = 30_000;

/// CreateTopics from version 4, where -1 partitions / replication factor mean "the broker's
/// default" (`num.partitions`, `default.replication.factor`).
const CREATE_TOPICS_VERSIONS: VersionRange = VersionRange { min: 4, max: 7 };

/// Kafka's config resource type for topics (`ConfigResource.Type.TOPIC`).
pub const RESOURCE_TYPE_TOPIC: i8 = 2;

/// A topic to create.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewTopic {
    /// The name.
    pub name: String,
    /// Partition count; `None` for the broker's `num.partitions`.
    pub partitions: Option<i32>,
    /// Replication factor; `None` for the broker's `default.replication.factor`.
    pub replication_factor: Option<i16>,
    /// Topic configs, e.g. `("retention.ms", "60000")`.
    pub configs: Vec<(String, String)>,
}

/// Where a config value comes from (Kafka's `ConfigSource`, as DescribeConfigs v1+ reports it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    /// Source not reported.
    Unknown,
    /// Set on this topic.
    DynamicTopic,
    /// Set dynamically for this broker.
    DynamicBroker,
    /// Set dynamically as the cluster-wide broker default.
    DynamicDefaultBroker,
    /// Set in the broker's static configuration.
    StaticBroker,
    /// Kafka's built-in default.
    Default,
    /// Any other code a newer broker may send.
    Other(i8),
}

impl ConfigSource {
    /// Decodes Kafka's numeric config source.
    pub fn from_code(code: i8) -> ConfigSource {
        match code {
            0 => ConfigSource::Unknown,
            1 => ConfigSource::DynamicTopic,
            2 => ConfigSource::DynamicBroker,
            3 => ConfigSource::DynamicDefaultBroker,
            4 => ConfigSource::StaticBroker,
            5 => ConfigSource::Default,
            other => ConfigSource::Other(other),
        }
    }
}

/// One described config entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    /// The config name.
    pub name: String,
    /// Its value; `None` when null or sensitive.
    pub value: Option<String>,
    /// Where the value comes from.
    pub source: ConfigSource,
    /// Whether it can be altered.
    pub read_only: bool,
    /// Whether the value is hidden.
    pub sensitive: bool,
}

impl ConfigEntry {
    /// Whether the value differs from Kafka's built-in default (what `kafka-topics --describe`
    /// lists: every entry whose source is not `DEFAULT_CONFIG`).
    pub fn is_default(&self) -> bool {
        self.source == ConfigSource::Default
    }
}

/// One change for IncrementalAlterConfigs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigChange {
    /// Set `name` to `value`.
    Set {
        /// The config name.
        name: String,
        /// The new value.
        value: String,
    },
    /// Remove the topic-level value of `name`, returning it to the default.
    Delete {
        /// The config name.
        name: String,
    },
}

impl Client {
    /// Creates one topic and returns its id (nil if the broker does not report ids).
    pub async fn create_topic(&mut self, topic: &NewTopic) -> Result<Uuid, ClientError> {
        let version = self
            .bootstrap
            .version_within::<CreateTopicsRequest>(CREATE_TOPICS_VERSIONS)?;
        let configs = topic
            .configs
            .iter()
            .map(|(name, value)| {
                CreatableTopicConfig::default()
                    .with_name(StrBytes::from_string(name.clone()))
                    .with_value(Some(StrBytes::from_string(value.clone())))
            })
            .collect();
        let creatable = CreatableTopic::default()
            .with_name(topic_name(&topic.name))
            .with_num_partitions(topic.partitions.unwrap_or(-1))
            .with_replication_factor(topic.replication_factor.unwrap_or(-1))
            .with_configs(configs);
        let request = CreateTopicsRequest::default()
            .with_topics(vec![creatable])
            .with_timeout_ms(ADMIN_TIMEOUT_MS);
        let response = self
            .bootstrap
            .send_waiting(request, version, ADMIN_TIMEOUT_MS as u64)
            .await?;
        let result = response
            .topics
            .into_iter()
            .find(|result| result.name.0.as_str() == topic.name)
            .ok_or_else(|| missing(ApiKey::CreateTopics, &topic.name))?;
        KafkaError::check(
            || format!("create topic {:?}", topic.name),
            result.error_code,
            result.error_message.as_deref(),
        )?;
        self.invalidate_topic(&topic.name);
        Ok(result.topic_id)
    }

    /// Deletes one topic by name.
    pub async fn delete_topic(&mut self, name: &str) -> Result<(), ClientError> {
        let version = self.bootstrap.version::<DeleteTopicsRequest>()?;
        // Version 6 names topics in `topics` (name or id); earlier versions in `topic_names`.
        let request = if version >= 6 {
            let state = DeleteTopicState::default().with_name(Some(topic_name(name)));
            DeleteTopicsRequest::default().with_topics(vec![state])
        } else {
            DeleteTopicsRequest::default().with_topic_names(vec![topic_name(name)])
        }
        .with_timeout_ms(ADMIN_TIMEOUT_MS);
        let response = self
            .bootstrap
            .send_waiting(request, version, ADMIN_TIMEOUT_MS as u64)
            .await?;
        let result = response
            .responses
            .into_iter()
            .find(|result| {
                result
                    .name
                    .as_ref()
                    .is_some_and(|found| found.0.as_str() == name)
            })
            .ok_or_else(|| missing(ApiKey::DeleteTopics, name))?;
        KafkaError::check(
            || format!("delete topic {name:?}"),
            result.error_code,
            result.error_message.as_deref(),
        )?;
        self.invalidate_topic(name);
        Ok(())
    }

    /// Grows `topic` to `partition_count` partitions in total.
    pub async fn create_partitions(
        &mut self,
        topic: &str,
        partition_count: i32,
    ) -> Result<(), ClientError> {
        let version = self.bootstrap.version::<CreatePartitionsRequest>()?;
        let request = CreatePartitionsRequest::default()
            .with_topics(vec![CreatePartitionsTopic::default()
                .with_name(topic_name(topic))
                .with_count(partition_count)
                .with_assignments(None)])
            .with_timeout_ms(ADMIN_TIMEOUT_MS);
        let response = self
            .bootstrap
            .send_waiting(request, version, ADMIN_TIMEOUT_MS as u64)
            .await?;
        let result = response
            .results
            .into_iter()
            .find(|result| result.name.0.as_str() == topic)
            .ok_or_else(|| missing(ApiKey::CreatePartitions, topic))?;
        KafkaError::check(
            || format!("create partitions of {topic:?} (to {partition_count})"),
            result.error_code,
            result.error_message.as_deref(),
        )?;
        self.invalidate_topic(topic);
        Ok(())
    }

    /// All configs of `topic`, as DescribeConfigs reports them.
    pub async fn describe_topic_configs(
        &mut self,
        topic: &str,
    ) -> Result<Vec<ConfigEntry>, ClientError> {
        let version = self.bootstrap.version::<DescribeConfigsRequest>()?;
        let resource = DescribeConfigsResource::default()
            .with_resource_type(RESOURCE_TYPE_TOPIC)
            .with_resource_name(StrBytes::from_string(topic.to_owned()))
            .with_configuration_keys(None);
        let request = DescribeConfigsRequest::default().with_resources(vec![resource]);
        let response = self.bootstrap.send(request, version).await?;
        let result = response
            .results
            .into_iter()
            .find(|result| result.resource_name.as_str() == topic)
            .ok_or_else(|| missing(ApiKey::DescribeConfigs, topic))?;
        KafkaError::check(
            || format!("describe configs of {topic:?}"),
            result.error_code,
            result.error_message.as_deref(),
        )?;
        let entries = result
            .configs
            .into_iter()
            .map(|config| ConfigEntry {
                name: config.name.to_string(),
                value: config.value.map(|value| value.to_string()),
                source: ConfigSource::from_code(config.config_source),
                read_only: config.read_only,
                sensitive: config.is_sensitive,
            })
            .collect();
        Ok(entries)
    }

    /// Applies `changes` to the configs of `topic` with IncrementalAlterConfigs.
    pub async fn alter_topic_configs(
        &mut self,
        topic: &str,
        changes: &[ConfigChange],
    ) -> Result<(), ClientError> {
        /// Kafka's `AlterConfigOp.OpType` codes.
        const OPERATION_SET: i8 = 0;
        const OPERATION_DELETE: i8 = 1;

        let version = self.bootstrap.version::<IncrementalAlterConfigsRequest>()?;
        let configs = changes
            .iter()
            .map(|change| match change {
                ConfigChange::Set { name, value } => AlterableConfig::default()
                    .with_name(StrBytes::from_string(name.clone()))
                    .with_config_operation(OPERATION_SET)
                    .with_value(Some(StrBytes::from_string(value.clone()))),
                ConfigChange::Delete { name } => AlterableConfig::default()
                    .with_name(StrBytes::from_string(name.clone()))
                    .with_config_operation(OPERATION_DELETE)
                    .with_value(None),
            })
            .collect();
        let resource = AlterConfigsResource::default()
            .with_resource_type(RESOURCE_TYPE_TOPIC)
            .with_resource_name(StrBytes::from_string(topic.to_owned()))
            .with_configs(configs);
        let request = IncrementalAlterConfigsRequest::default().with_resources(vec![resource]);
        let response = self.bootstrap.send(request, version).await?;
        let result = response
            .responses
            .into_iter()
            .find(|result| result.resource_name.as_str() == topic)
            .ok_or_else(|| missing(ApiKey::IncrementalAlterConfigs, topic))?;
        KafkaError::check(
            || format!("alter configs of {topic:?}"),
            result.error_code,
            result.error_message.as_deref(),
        )?;
        Ok(())
    }
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_owned()))
}

fn missing(api: ApiKey, what: &str) -> ClientError {
    ClientError::MissingResult {
        api,
        what: format!("{what:?}"),
    }
}
