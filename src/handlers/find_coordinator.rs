//! FindCoordinator: which broker coordinates a group (key type 0). v4+ asks for many keys
//! at once. Transaction coordinators (key type 1) do not exist yet: COORDINATOR_NOT_AVAILABLE.

use proto_kafka::messages::find_coordinator_response::Coordinator;
use proto_kafka::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use proto_kafka::protocol::StrBytes;
use proto_kafka::ResponseError;

use super::RequestContext;
use crate::broker::SharedBroker;
use crate::error::ApiError;

/// FindCoordinator's key type of consumer groups.
const KEY_TYPE_GROUP: i8 = 0;

pub async fn handle(
    broker: SharedBroker,
    context: RequestContext,
    request: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let keys: Vec<String> = if context.api_version >= 4 {
        request
            .coordinator_keys
            .iter()
            .map(|k| k.to_string())
            .collect()
    } else {
        vec![request.key.to_string()]
    };
    let mut coordinators = Vec::with_capacity(keys.len());
    for key in keys {
        let found = if request.key_type != KEY_TYPE_GROUP {
            Err(ApiError::new(
                ResponseError::CoordinatorNotAvailable,
                "transaction coordinators are not supported by Karst yet",
            ))
        } else if key.is_empty() {
            Err(ApiError::new(
                ResponseError::InvalidRequest,
                "the group id is empty",
            ))
        } else {
            broker.groups.find_coordinator(&broker, &key).await
        };
        let coordinator = Coordinator::default().with_key(StrBytes::from_string(key));
        coordinators.push(match found {
            Ok(live) => coordinator
                .with_node_id(BrokerId(live.id))
                .with_host(StrBytes::from_string(live.host))
                .with_port(i32::from(live.port)),
            Err(error) => coordinator
                .with_node_id(BrokerId(-1))
                .with_host(StrBytes::from_static_str(""))
                .with_port(-1)
                .with_error_code(error.code())
                .with_error_message(Some(StrBytes::from_string(error.message))),
        });
    }
    if context.api_version >= 4 {
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let single = coordinators.pop().expect("one key below v4");
    FindCoordinatorResponse::default()
        .with_error_code(single.error_code)
        .with_error_message(single.error_message)
        .with_node_id(single.node_id)
        .with_host(single.host)
        .with_port(single.port)
}
