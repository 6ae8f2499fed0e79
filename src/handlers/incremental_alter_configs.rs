//! IncrementalAlterConfigs: sets, deletes, appends to or subtracts from individual topic
//! config overrides, leaving the others as they are. Broker configs are static in Karst, so
//! only topic resources can change.
//!
//! APPEND and SUBTRACT work on list keys (`cleanup.policy`, ...): the new list is computed
//! from the topic's current value (its override, or else the resolved default) and written
//! as an ordinary override.

use std::collections::BTreeMap;

use proto_kafka::messages::incremental_alter_configs_request::AlterableConfig;
use proto_kafka::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use proto_kafka::messages::{IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse};
use proto_kafka::protocol::StrBytes;
use proto_kafka::ResponseError;

use super::alter_configs::{check_topic_resource, duplicate_keys, duplicate_resource};
use super::create_topics::{duplicates, in_controller};
use super::RequestContext;
use crate::broker::SharedBroker;
use crate::config::{topic, BrokerConfig, ConfigType};
use crate::error::ApiError;

/// Kafka's `AlterConfigOp.OpType` codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Operation {
    Set,
    Delete,
    Append,
    Subtract,
}

impl Operation {
    fn from_code(code: i8) -> Result<Operation, ApiError> {
        match code {
            0 => Ok(Operation::Set),
            1 => Ok(Operation::Delete),
            2 => Ok(Operation::Append),
            3 => Ok(Operation::Subtract),
            other => Err(ApiError::new(
                ResponseError::InvalidRequest,
                format!("Unknown operation type {other}"),
            )),
        }
    }

    /// Kafka's name of the operation, for messages.
    fn name(self) -> &'static str {
        match self {
            Operation::Set => "SET",
            Operation::Delete => "DELETE",
            Operation::Append => "APPEND",
            Operation::Subtract => "SUBTRACT",
        }
    }
}

/// One requested change, decoded and checked for shape (not yet against the topic).
#[derive(Debug)]
struct Change {
    key: String,
    operation: Operation,
    /// Present for every operation but DELETE.
    value: Option<String>,
}

pub async fn handle(
    broker: SharedBroker,
    _context: RequestContext,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let validate_only = request.validate_only;
    let repeated = duplicates(
        request
            .resources
            .iter()
            .map(|resource| (resource.resource_type, resource.resource_name.to_string())),
    );
    let mut responses: Vec<AlterConfigsResourceResponse> = repeated
        .iter()
        .map(|(resource_type, name)| {
            response(*resource_type, name.clone(), Err(duplicate_resource()))
        })
        .collect();
    for resource in request.resources {
        let name = resource.resource_name.to_string();
        if repeated.contains(&(resource.resource_type, name.clone())) {
            continue;
        }
        let outcome = match check_topic_resource(resource.resource_type)
            .and_then(|()| decode(resource.configs))
        {
            Ok(requested) => {
                let topic = name.clone();
                in_controller(&broker, move |broker| {
                    // Read the current overrides next to the decision, so APPEND/SUBTRACT
                    // start from the value they change.
                    let image = broker.metadata.image();
                    let current = image
                        .topic(&topic)
                        .ok_or_else(|| ApiError::unknown_topic(&topic))?;
                    let changes = apply(&requested, &current.configs, &broker.config)?;
                    broker.alter_topic_configs(&topic, changes, false, validate_only)
                })
                .await
            }
            Err(error) => Err(error),
        };
        responses.push(response(resource.resource_type, name, outcome));
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

/// Decodes the operations of one resource: known operation codes, each key once, and a
/// value for everything but DELETE.
fn decode(configs: Vec<AlterableConfig>) -> Result<Vec<Change>, ApiError> {
    duplicate_keys(configs.iter().map(|config| config.name.to_string()))?;
    configs
        .into_iter()
        .map(|config| {
            let key = config.name.to_string();
            let operation = Operation::from_code(config.config_operation)?;
            let value = config.value.map(|value| value.to_string());
            if operation != Operation::Delete && value.is_none() {
                return Err(ApiError::new(
                    ResponseError::InvalidRequest,
                    format!("Null value not supported for : {key}"),
                ));
            }
            Ok(Change {
                key,
                operation,
                value,
            })
        })
        .collect()
}

/// The controller changes (`Some` sets, `None` removes) that `requested` makes to a topic
/// with `overrides`. Values are validated by the controller; list arithmetic happens here.
fn apply(
    requested: &[Change],
    overrides: &BTreeMap<String, String>,
    broker: &BrokerConfig,
) -> Result<Vec<(String, Option<String>)>, ApiError> {
    requested
        .iter()
        .map(|change| {
            let value = change.value.clone().unwrap_or_default();
            let new_value = match change.operation {
                Operation::Set => Some(value),
                Operation::Delete => None,
                Operation::Append | Operation::Subtract => {
                    let def = topic::key(&change.key).ok_or_else(|| {
                        ApiError::new(
                            ResponseError::InvalidConfig,
                            format!("Unknown topic config name: {}", change.key),
                        )
                    })?;
                    if def.kind != ConfigType::List {
                        return Err(ApiError::new(
                            ResponseError::InvalidConfig,
                            format!(
                                "Can't {} to key {} because its type is not LIST.",
                                change.operation.name(),
                                change.key
                            ),
                        ));
                    }
                    let current = topic::resolve(def, overrides, broker).value;
                    Some(combine_lists(
                        &current,
                        &value,
                        change.operation == Operation::Append,
                    ))
                }
            };
            Ok((change.key.clone(), new_value))
        })
        .collect()
}

/// APPEND adds the items of `operand` not already in `current`, in order; SUBTRACT removes
/// every item of `operand`. Lists are comma-separated; blanks around items are ignored.
fn combine_lists(current: &str, operand: &str, append: bool) -> String {
    let items = |list: &str| -> Vec<String> {
        list.split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let mut list = items(current);
    let operand = items(operand);
    if append {
        for item in operand {
            if !list.contains(&item) {
                list.push(item);
            }
        }
    } else {
        list.retain(|item| !operand.contains(item));
    }
    list.join(",")
}

fn response(
    resource_type: i8,
    name: String,
    outcome: Result<(), ApiError>,
) -> AlterConfigsResourceResponse {
    let response = AlterConfigsResourceResponse::default()
        .with_resource_type(resource_type)
        .with_resource_name(StrBytes::from_string(name));
    match outcome {
        Ok(()) => response.with_error_code(0).with_error_message(None),
        Err(error) => response
            .with_error_code(error.code())
            .with_error_message(Some(StrBytes::from_string(error.message))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(key: &str, operation: Operation, value: Option<&str>) -> Change {
        Change {
            key: key.to_owned(),
            operation,
            value: value.map(str::to_owned),
        }
    }

    fn broker_config() -> BrokerConfig {
        BrokerConfig::load(None, &[]).expect("default config")
    }

    #[test]
    fn append_adds_only_missing_items_in_order() {
        assert_eq!(
            combine_lists("delete", "compact,delete", true),
            "delete,compact"
        );
        assert_eq!(combine_lists("", "a, b", true), "a,b");
        assert_eq!(combine_lists("a,b", "", true), "a,b");
    }

    #[test]
    fn subtract_removes_every_listed_item() {
        assert_eq!(combine_lists("a,b,c", "b, c", false), "a");
        assert_eq!(combine_lists("a", "a", false), "");
        assert_eq!(combine_lists("a,b", "x", false), "a,b");
    }

    #[test]
    fn append_and_subtract_start_from_the_override_or_else_the_default() {
        let broker = broker_config();
        let mut overrides = BTreeMap::new();

        let from_default = apply(
            &[change("cleanup.policy", Operation::Append, Some("compact"))],
            &overrides,
            &broker,
        );
        assert_eq!(
            from_default.unwrap(),
            [(
                "cleanup.policy".to_owned(),
                Some("delete,compact".to_owned())
            )]
        );

        overrides.insert(
            "leader.replication.throttled.replicas".to_owned(),
            "0:1,1:1".to_owned(),
        );
        let from_override = apply(
            &[change(
                "leader.replication.throttled.replicas",
                Operation::Subtract,
                Some("0:1"),
            )],
            &overrides,
            &broker,
        );
        assert_eq!(from_override.unwrap()[0].1.as_deref(), Some("1:1"));
    }

    #[test]
    fn set_and_delete_pass_through_and_list_operations_need_a_list_key() {
        let broker = broker_config();
        let overrides = BTreeMap::new();

        let changes = apply(
            &[
                change("retention.ms", Operation::Set, Some("10")),
                change("segment.ms", Operation::Delete, None),
            ],
            &overrides,
            &broker,
        )
        .unwrap();
        assert_eq!(
            changes,
            [
                ("retention.ms".to_owned(), Some("10".to_owned())),
                ("segment.ms".to_owned(), None)
            ]
        );

        for key in ["retention.ms", "no.such.key"] {
            let error = apply(
                &[change(key, Operation::Append, Some("1"))],
                &overrides,
                &broker,
            )
            .unwrap_err();
            assert_eq!(error.code, ResponseError::InvalidConfig, "{key}");
        }
    }

    #[test]
    fn unknown_operations_null_values_and_repeated_keys_are_invalid_requests() {
        let config = |name: &'static str, operation: i8, value: Option<&'static str>| {
            AlterableConfig::default()
                .with_name(StrBytes::from_static_str(name))
                .with_config_operation(operation)
                .with_value(value.map(StrBytes::from_static_str))
        };

        assert!(decode(vec![config("retention.ms", 1, None)]).is_ok());
        for configs in [
            vec![config("retention.ms", 7, Some("1"))],
            vec![config("retention.ms", 0, None)],
            vec![
                config("retention.ms", 0, Some("1")),
                config("retention.ms", 1, None),
            ],
        ] {
            assert_eq!(
                decode(configs).unwrap_err().code,
                ResponseError::InvalidRequest
            );
        }
    }
}
