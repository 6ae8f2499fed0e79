//! JoinGroup: a member joins (or rejoins) its group and waits for the rebalance to complete;
//! the leader's answer lists every member's metadata so it can assign.

use proto_kafka::messages::join_group_response::JoinGroupResponseMember;
use proto_kafka::messages::{JoinGroupRequest, JoinGroupResponse};
use proto_kafka::protocol::StrBytes;

use super::RequestContext;
use crate::broker::SharedBroker;
use crate::coordinator::group::state::JoinRequest;

pub async fn handle(
    broker: SharedBroker,
    context: RequestContext,
    request: JoinGroupRequest,
) -> JoinGroupResponse {
    let version = context.api_version;
    let rebalance_timeout_ms = if version == 0 {
        request.session_timeout_ms
    } else {
        request.rebalance_timeout_ms
    };
    let join = JoinRequest {
        member_id: request.member_id.to_string(),
        group_instance_id: request.group_instance_id.as_ref().map(|i| i.to_string()),
        client_id: context.client_id.clone().unwrap_or_default(),
        client_host: context.client_host.to_string(),
        rebalance_timeout_ms,
        session_timeout_ms: request.session_timeout_ms,
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.clone()))
            .collect(),
        require_known_member_id: version >= 4,
        supports_skip_assignment: version >= 9,
    };
    let outcome = broker.groups.join(&broker, &request.group_id.0, join).await;
    JoinGroupResponse::default()
        .with_error_code(outcome.error.map_or(0, |e| e.code()))
        .with_generation_id(outcome.generation_id)
        .with_protocol_type(outcome.protocol_type.map(StrBytes::from_string))
        .with_protocol_name(match (outcome.protocol_name, version) {
            (Some(name), _) => Some(StrBytes::from_string(name)),
            // Before v7 the field is not nullable.
            (None, 0..=6) => Some(StrBytes::from_static_str("")),
            (None, _) => None,
        })
        .with_leader(StrBytes::from_string(outcome.leader_id))
        .with_skip_assignment(outcome.skip_assignment)
        .with_member_id(StrBytes::from_string(outcome.member_id))
        .with_members(
            outcome
                .members
                .into_iter()
                .map(|(member_id, instance, metadata)| {
                    JoinGroupResponseMember::default()
                        .with_member_id(StrBytes::from_string(member_id))
                        .with_group_instance_id(instance.map(StrBytes::from_string))
                        .with_metadata(metadata)
                })
                .collect(),
        )
}
