//! AlterConfigs (the legacy API): replaces a topic's whole set of config overrides with the
//! ones given; keys not mentioned return to their defaults. Broker configs are static in
//! Karst, so only topic resources can change.

use std::collections::BTreeMap;

use proto_kafka::messages::alter_configs_request::AlterableConfig;
use proto_kafka::messages::alter_configs_response::AlterConfigsResourceResponse;
use proto_kafka::messages::{AlterConfigsRequest, AlterConfigsResponse};
use proto_kafka::protocol::StrBytes;
use proto_kafka::ResponseError;

use super::create_topics::{duplicates, in_controller};
use super::describe_configs::{RESOURCE_TYPE_BROKER, RESOURCE_TYPE_TOPIC};
use super::RequestContext;
use crate::broker::SharedBroker;
use crate::error::ApiError;

pub async fn handle(
    broker: SharedBroker,
    _context: RequestContext,
    request: AlterConfigsRequest,
) -> AlterConfigsResponse {
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
            .and_then(|()| new_configs(resource.configs))
        {
            Ok(configs) => {
                let topic = name.clone();
                let changes = configs
                    .into_iter()
                    .map(|(key, value)| (key, Some(value)))
                    .collect();
                in_controller(&broker, move |broker| {
                    broker.alter_topic_configs(&topic, changes, true, validate_only)
                })
                .await
            }
            Err(error) => Err(error),
        };
        responses.push(response(resource.resource_type, name, outcome));
    }
    AlterConfigsResponse::default().with_responses(responses)
}

/// Only topic configs can change; a broker or any other resource is refused by itself.
pub(super) fn check_topic_resource(resource_type: i8) -> Result<(), ApiError> {
    match resource_type {
        RESOURCE_TYPE_TOPIC => Ok(()),
        RESOURCE_TYPE_BROKER => Err(ApiError::new(
            ResponseError::InvalidRequest,
            "broker configs are static in Karst",
        )),
        other => Err(ApiError::new(
            ResponseError::InvalidRequest,
            format!("Unsupported resource type {other} for altering configs"),
        )),
    }
}

pub(super) fn duplicate_resource() -> ApiError {
    ApiError::new(
        ResponseError::InvalidRequest,
        "Duplicate resource in request.",
    )
}

pub(super) fn duplicate_keys(keys: impl IntoIterator<Item = String>) -> Result<(), ApiError> {
    let repeated = duplicates(keys);
    if repeated.is_empty() {
        return Ok(());
    }
    let keys: Vec<String> = repeated.into_iter().collect();
    Err(ApiError::new(
        ResponseError::InvalidRequest,
        format!("Error due to duplicate config keys: {}", keys.join(",")),
    ))
}

/// The complete new set of overrides; every key needs a value and may appear once.
fn new_configs(configs: Vec<AlterableConfig>) -> Result<BTreeMap<String, String>, ApiError> {
    duplicate_keys(configs.iter().map(|config| config.name.to_string()))?;
    let missing: Vec<String> = configs
        .iter()
        .filter(|config| config.value.is_none())
        .map(|config| config.name.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(ApiError::new(
            ResponseError::InvalidRequest,
            format!("Null value not supported for : {}", missing.join(",")),
        ));
    }
    Ok(configs
        .into_iter()
        .filter_map(|config| Some((config.name.to_string(), config.value?.to_string())))
        .collect())
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

    fn config(name: &'static str, value: Option<&'static str>) -> AlterableConfig {
        AlterableConfig::default()
            .with_name(StrBytes::from_static_str(name))
            .with_value(value.map(StrBytes::from_static_str))
    }

    #[test]
    fn only_topic_resources_can_be_altered() {
        assert!(check_topic_resource(RESOURCE_TYPE_TOPIC).is_ok());
        let broker = check_topic_resource(RESOURCE_TYPE_BROKER).unwrap_err();
        assert_eq!(broker.code, ResponseError::InvalidRequest);
        assert!(broker.message.contains("static"));
        assert_eq!(
            check_topic_resource(8).unwrap_err().code,
            ResponseError::InvalidRequest
        );
    }

    #[test]
    fn the_new_config_set_needs_a_value_for_each_key_given_once() {
        let set = new_configs(vec![
            config("retention.ms", Some("10")),
            config("segment.ms", Some("20")),
        ])
        .unwrap();
        assert_eq!(set.len(), 2);

        let null = new_configs(vec![config("retention.ms", None)]).unwrap_err();
        assert_eq!(null.code, ResponseError::InvalidRequest);
        let twice = new_configs(vec![
            config("retention.ms", Some("1")),
            config("retention.ms", Some("2")),
        ])
        .unwrap_err();
        assert_eq!(twice.code, ResponseError::InvalidRequest);
    }
}
