//! Heartbeat: keeps a member's session alive and tells it when a rebalance started.

use proto_kafka::messages::{HeartbeatRequest, HeartbeatResponse};

use super::RequestContext;
use crate::broker::SharedBroker;

pub async fn handle(
    broker: SharedBroker,
    _context: RequestContext,
    request: HeartbeatRequest,
) -> HeartbeatResponse {
    let error = broker.groups.heartbeat(
        &broker,
        &request.group_id.0,
        &request.member_id,
        request.group_instance_id.as_deref(),
        request.generation_id,
    );
    HeartbeatResponse::default().with_error_code(error.map_or(0, |e| e.code()))
}
