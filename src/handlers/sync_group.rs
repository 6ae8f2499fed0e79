//! SyncGroup: the leader hands in the assignment; every member waits for its share.

use proto_kafka::messages::{SyncGroupRequest, SyncGroupResponse};
use proto_kafka::protocol::StrBytes;

use super::RequestContext;
use crate::broker::SharedBroker;
use crate::coordinator::group::state::SyncRequest;

pub async fn handle(
    broker: SharedBroker,
    _context: RequestContext,
    request: SyncGroupRequest,
) -> SyncGroupResponse {
    let sync = SyncRequest {
        member_id: request.member_id.to_string(),
        group_instance_id: request.group_instance_id.as_ref().map(|i| i.to_string()),
        generation_id: request.generation_id,
        protocol_type: request.protocol_type.as_ref().map(|t| t.to_string()),
        protocol_name: request.protocol_name.as_ref().map(|n| n.to_string()),
        assignments: request
            .assignments
            .iter()
            .map(|a| (a.member_id.to_string(), a.assignment.clone()))
            .collect(),
    };
    let outcome = broker.groups.sync(&broker, &request.group_id.0, sync).await;
    SyncGroupResponse::default()
        .with_error_code(outcome.error.map_or(0, |e| e.code()))
        .with_protocol_type(outcome.protocol_type.map(StrBytes::from_string))
        .with_protocol_name(outcome.protocol_name.map(StrBytes::from_string))
        .with_assignment(outcome.assignment)
}
