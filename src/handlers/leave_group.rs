//! LeaveGroup: members leave their group (v3+: several at once, static ones by
//! group.instance.id), which starts a rebalance of the rest.

use proto_kafka::messages::leave_group_response::MemberResponse;
use proto_kafka::messages::{LeaveGroupRequest, LeaveGroupResponse};

use super::RequestContext;
use crate::broker::SharedBroker;

pub async fn handle(
    broker: SharedBroker,
    context: RequestContext,
    request: LeaveGroupRequest,
) -> LeaveGroupResponse {
    let batched = context.api_version >= 3;
    let members: Vec<(String, Option<String>)> = if batched {
        request
            .members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|i| i.to_string()),
                )
            })
            .collect()
    } else {
        vec![(request.member_id.to_string(), None)]
    };
    match broker.groups.leave(&broker, &request.group_id.0, &members) {
        Err(error) => LeaveGroupResponse::default().with_error_code(error.code()),
        Ok(answers) if !batched => {
            LeaveGroupResponse::default().with_error_code(answers[0].map_or(0, |e| e.code()))
        }
        Ok(answers) => LeaveGroupResponse::default().with_members(
            request
                .members
                .into_iter()
                .zip(answers)
                .map(|(member, error)| {
                    MemberResponse::default()
                        .with_member_id(member.member_id)
                        .with_group_instance_id(member.group_instance_id)
                        .with_error_code(error.map_or(0, |e| e.code()))
                })
                .collect(),
        ),
    }
}
