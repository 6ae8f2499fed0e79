//! DescribeConfigs: a topic's configs resolved over the broker's defaults, and the broker's
//! own (static) configs, each with where its value comes from.
//!
//! The config tables in `crate::config` are the single source of keys, types and defaults;
//! this handler only chooses which keys a resource asks for and renders them for the
//! request's version. CreateTopics v5+ reuses [`topic_configs`] to report a new topic's
//! configs.

use std::collections::BTreeMap;

use proto_kafka::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use proto_kafka::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use proto_kafka::protocol::StrBytes;
use proto_kafka::ResponseError;

use super::RequestContext;
use crate::broker::SharedBroker;
use crate::config::broker::BROKER_KEYS;
use crate::config::topic::{self, TOPIC_KEYS};
use crate::config::{BrokerConfig, ConfigSource, ConfigType};
use crate::error::ApiError;
use crate::metadata::MetadataImage;

/// Kafka's `ConfigResource.Type` code for a topic.
pub(super) const RESOURCE_TYPE_TOPIC: i8 = 2;
/// Kafka's `ConfigResource.Type` code for a broker.
pub(super) const RESOURCE_TYPE_BROKER: i8 = 4;

/// One config as described, independent of the response version.
#[derive(Debug)]
pub(super) struct DescribedConfig {
    pub name: &'static str,
    pub value: String,
    pub source: ConfigSource,
    pub kind: ConfigType,
    pub read_only: bool,
    /// Lower-precedence values of the same setting, most specific first.
    pub synonyms: Vec<(String, String, ConfigSource)>,
    pub documentation: Option<&'static str>,
}

impl DescribedConfig {
    /// Password values are never sent back, as in Kafka.
    pub fn is_sensitive(&self) -> bool {
        self.kind == ConfigType::Password
    }
}

/// What the request asked to include, fixed for all its resources.
#[derive(Clone, Copy)]
struct Rendering {
    version: i16,
    include_synonyms: bool,
    include_documentation: bool,
}

pub async fn handle(
    broker: SharedBroker,
    context: RequestContext,
    request: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let rendering = Rendering {
        version: context.api_version,
        include_synonyms: request.include_synonyms,
        include_documentation: context.api_version >= 3 && request.include_documentation,
    };
    let image = broker.metadata.image();
    let results = request
        .resources
        .into_iter()
        .map(|resource| {
            let outcome = describe(
                &broker.config,
                &image,
                resource.resource_type,
                resource.resource_name.as_str(),
                resource.configuration_keys.as_deref(),
            );
            let result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name);
            match outcome {
                Ok(configs) => result
                    .with_error_code(0)
                    .with_error_message(None)
                    .with_configs(
                        configs
                            .iter()
                            .map(|config| render(config, rendering))
                            .collect(),
                    ),
                Err(error) => result
                    .with_error_code(error.code())
                    .with_error_message(Some(StrBytes::from_string(error.message))),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

/// The configs of one resource, filtered to `keys` (`None` = all keys).
fn describe(
    config: &BrokerConfig,
    image: &MetadataImage,
    resource_type: i8,
    resource_name: &str,
    keys: Option<&[StrBytes]>,
) -> Result<Vec<DescribedConfig>, ApiError> {
    let wanted = |name: &str| keys.is_none_or(|keys| keys.iter().any(|key| key.as_str() == name));
    match resource_type {
        RESOURCE_TYPE_TOPIC => {
            let topic = image
                .topic(resource_name)
                .ok_or_else(|| ApiError::unknown_topic(resource_name))?;
            Ok(topic_configs(&topic.configs, config, wanted))
        }
        RESOURCE_TYPE_BROKER => {
            check_broker_name(config, resource_name)?;
            Ok(broker_configs(config, wanted))
        }
        other => Err(ApiError::new(
            ResponseError::InvalidRequest,
            format!("Unsupported resource type {other} for DescribeConfigs"),
        )),
    }
}

/// A broker resource names this node by id, or is `""` for the cluster default. Karst has
/// no dynamic configs, so both describe the same static configuration.
pub(super) fn check_broker_name(
    config: &BrokerConfig,
    resource_name: &str,
) -> Result<(), ApiError> {
    if resource_name.is_empty() || resource_name.parse::<i32>().ok() == Some(config.node_id) {
        return Ok(());
    }
    Err(ApiError::new(
        ResponseError::InvalidRequest,
        format!(
            "Unexpected broker id, expected {} or empty string, but received {resource_name}",
            config.node_id
        ),
    ))
}

/// Every topic key chosen by `wanted`, resolved from `overrides` over the broker defaults.
pub(super) fn topic_configs(
    overrides: &BTreeMap<String, String>,
    config: &BrokerConfig,
    wanted: impl Fn(&str) -> bool,
) -> Vec<DescribedConfig> {
    TOPIC_KEYS
        .iter()
        .filter(|key| wanted(key.name))
        .map(|key| {
            let resolved = topic::resolve(key, overrides, config);
            DescribedConfig {
                name: key.name,
                value: resolved.value,
                source: resolved.source,
                kind: key.kind,
                read_only: false,
                synonyms: resolved.synonyms,
                documentation: None,
            }
        })
        .collect()
}

/// Every broker key chosen by `wanted`. Broker configs are static: set in the config file or
/// with `--set` (STATIC_BROKER_CONFIG), or left at Karst's default (DEFAULT_CONFIG).
fn broker_configs(config: &BrokerConfig, wanted: impl Fn(&str) -> bool) -> Vec<DescribedConfig> {
    BROKER_KEYS
        .iter()
        .filter(|key| wanted(key.name))
        .map(|key| {
            let default = (
                key.name.to_owned(),
                key.default.to_owned(),
                ConfigSource::DefaultConfig,
            );
            let (value, source, synonyms) = match config.explicit.get(key.name) {
                Some(value) => (
                    value.clone(),
                    ConfigSource::StaticBrokerConfig,
                    vec![
                        (
                            key.name.to_owned(),
                            value.clone(),
                            ConfigSource::StaticBrokerConfig,
                        ),
                        default,
                    ],
                ),
                None => (
                    key.default.to_owned(),
                    ConfigSource::DefaultConfig,
                    vec![default],
                ),
            };
            DescribedConfig {
                name: key.name,
                value,
                source,
                kind: key.kind,
                read_only: true,
                synonyms,
                documentation: Some(key.doc),
            }
        })
        .collect()
}

fn render(config: &DescribedConfig, rendering: Rendering) -> DescribeConfigsResourceResult {
    let sensitive = config.is_sensitive();
    let shown = |value: &str| (!sensitive).then(|| StrBytes::from_string(value.to_owned()));
    let mut result = DescribeConfigsResourceResult::default()
        .with_name(StrBytes::from_static_str(config.name))
        .with_value(shown(&config.value))
        .with_read_only(config.read_only)
        .with_config_source(config.source as i8)
        .with_is_sensitive(sensitive);
    if rendering.include_synonyms {
        result = result.with_synonyms(
            config
                .synonyms
                .iter()
                .map(|(name, value, source)| {
                    DescribeConfigsSynonym::default()
                        .with_name(StrBytes::from_string(name.clone()))
                        .with_value(shown(value))
                        .with_source(*source as i8)
                })
                .collect(),
        );
    }
    if rendering.version >= 3 {
        let documentation = config
            .documentation
            .filter(|_| rendering.include_documentation)
            .map(StrBytes::from_static_str);
        result = result
            .with_config_type(config.kind.code())
            .with_documentation(documentation);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::MetadataRecord;

    fn broker_config(sets: &[&str]) -> BrokerConfig {
        let sets: Vec<String> = sets.iter().map(|set| (*set).to_owned()).collect();
        BrokerConfig::load(None, &sets).expect("valid test config")
    }

    fn image_with_topic(name: &str, configs: &[(&str, &str)]) -> MetadataImage {
        let mut image = MetadataImage::new("test-cluster".to_owned());
        let topic_id = uuid::Uuid::new_v4();
        let _ = image.apply(
            0,
            &MetadataRecord::Topic {
                name: name.to_owned(),
                topic_id,
            },
        );
        for (key, value) in configs {
            let _ = image.apply(
                0,
                &MetadataRecord::Config {
                    topic: name.to_owned(),
                    name: (*key).to_owned(),
                    value: Some((*value).to_owned()),
                },
            );
        }
        image
    }

    fn keys(names: &[&'static str]) -> Vec<StrBytes> {
        names
            .iter()
            .map(|name| StrBytes::from_static_str(name))
            .collect()
    }

    #[test]
    fn topic_describes_every_key_with_overrides_and_broker_defaults_marked() {
        let config = broker_config(&["log.retention.ms=5000"]);
        let image = image_with_topic("orders", &[("segment.bytes", "1048576")]);

        let configs = describe(&config, &image, RESOURCE_TYPE_TOPIC, "orders", None).unwrap();

        assert_eq!(configs.len(), TOPIC_KEYS.len());
        let find = |name: &str| configs.iter().find(|c| c.name == name).unwrap();
        assert_eq!(
            (
                find("segment.bytes").value.as_str(),
                find("segment.bytes").source
            ),
            ("1048576", ConfigSource::TopicConfig)
        );
        assert_eq!(
            (
                find("retention.ms").value.as_str(),
                find("retention.ms").source
            ),
            ("5000", ConfigSource::StaticBrokerConfig)
        );
        assert_eq!(find("cleanup.policy").source, ConfigSource::DefaultConfig);
        assert!(configs.iter().all(|c| !c.read_only));
    }

    #[test]
    fn configuration_keys_choose_which_keys_are_described_and_unknown_keys_are_skipped() {
        let config = broker_config(&[]);
        let image = image_with_topic("orders", &[]);
        let wanted = keys(&["retention.ms", "no.such.key"]);

        let configs = describe(
            &config,
            &image,
            RESOURCE_TYPE_TOPIC,
            "orders",
            Some(&wanted),
        )
        .unwrap();

        assert_eq!(
            configs.iter().map(|c| c.name).collect::<Vec<_>>(),
            ["retention.ms"]
        );
    }

    #[test]
    fn unknown_topic_and_unsupported_resource_types_are_errors_of_that_resource() {
        let config = broker_config(&[]);
        let image = image_with_topic("orders", &[]);

        let unknown = describe(&config, &image, RESOURCE_TYPE_TOPIC, "missing", None).unwrap_err();
        assert_eq!(unknown.code, ResponseError::UnknownTopicOrPartition);
        let logger = describe(&config, &image, 8, "1", None).unwrap_err();
        assert_eq!(logger.code, ResponseError::InvalidRequest);
    }

    #[test]
    fn broker_keys_are_read_only_and_sourced_from_the_static_config_or_default() {
        let config = broker_config(&["node.id=3", "num.partitions=4"]);
        let image = image_with_topic("orders", &[]);

        let configs = describe(&config, &image, RESOURCE_TYPE_BROKER, "3", None).unwrap();

        assert_eq!(configs.len(), BROKER_KEYS.len());
        let find = |name: &str| configs.iter().find(|c| c.name == name).unwrap();
        assert_eq!(
            (
                find("num.partitions").value.as_str(),
                find("num.partitions").source
            ),
            ("4", ConfigSource::StaticBrokerConfig)
        );
        assert_eq!(find("num.partitions").synonyms.len(), 2);
        assert_eq!(
            (
                find("log.retention.ms").value.as_str(),
                find("log.retention.ms").source
            ),
            ("604800000", ConfigSource::DefaultConfig)
        );
        assert!(configs.iter().all(|c| c.read_only));
        assert!(describe(&config, &image, RESOURCE_TYPE_BROKER, "", None).is_ok());
        let other_node = describe(&config, &image, RESOURCE_TYPE_BROKER, "1", None).unwrap_err();
        assert_eq!(other_node.code, ResponseError::InvalidRequest);
    }

    #[test]
    fn version_three_adds_type_and_requested_documentation() {
        let config = broker_config(&[]);
        let described = &broker_configs(&config, |name| name == "num.partitions")[0];
        let rendering = Rendering {
            version: 3,
            include_synonyms: false,
            include_documentation: true,
        };

        let rendered = render(described, rendering);

        assert_eq!(rendered.config_type, ConfigType::Int.code());
        assert!(rendered.documentation.is_some());
        assert!(rendered.synonyms.is_empty());
        let older = render(
            described,
            Rendering {
                version: 1,
                ..rendering
            },
        );
        assert_eq!(older.config_type, 0);
    }
}
