//! DescribeGroups: state, protocol and members (with metadata and assignment once Stable).
//! An unknown group is described as Dead (v6+: with GROUP_ID_NOT_FOUND), as Kafka does.

use proto_kafka::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use proto_kafka::messages::{DescribeGroupsRequest, DescribeGroupsResponse};
use proto_kafka::protocol::StrBytes;
use proto_kafka::ResponseError;

use super::RequestContext;
use crate::broker::SharedBroker;
use crate::coordinator::group::state::GroupState;

/// authorized_operations when the client did not ask for them.
const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;

pub async fn handle(
    broker: SharedBroker,
    context: RequestContext,
    request: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let groups = request
        .groups
        .into_iter()
        .map(|group_id| {
            let described = DescribedGroup::default()
                .with_group_id(group_id.clone())
                .with_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED);
            match broker.groups.describe(&broker, &group_id.0) {
                Err(error) => described
                    .with_error_code(error.code())
                    .with_group_state(StrBytes::from_static_str("")),
                Ok(description) => {
                    let unknown = description.state == GroupState::Dead && context.api_version >= 6;
                    let described = if unknown {
                        described
                            .with_error_code(ResponseError::GroupIdNotFound.code())
                            .with_error_message(Some(StrBytes::from_string(format!(
                                "Group {} not found.",
                                group_id.0
                            ))))
                    } else {
                        described
                    };
                    described
                        .with_group_state(StrBytes::from_static_str(description.state.name()))
                        .with_protocol_type(StrBytes::from_string(description.protocol_type))
                        .with_protocol_data(StrBytes::from_string(description.protocol_name))
                        .with_members(
                            description
                                .members
                                .into_iter()
                                .map(
                                    |(
                                        member_id,
                                        instance,
                                        client_id,
                                        host,
                                        metadata,
                                        assignment,
                                    )| {
                                        DescribedGroupMember::default()
                                            .with_member_id(StrBytes::from_string(member_id))
                                            .with_group_instance_id(
                                                instance.map(StrBytes::from_string),
                                            )
                                            .with_client_id(StrBytes::from_string(client_id))
                                            .with_client_host(StrBytes::from_string(host))
                                            .with_member_metadata(metadata)
                                            .with_member_assignment(assignment)
                                    },
                                )
                                .collect(),
                        )
                }
            }
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}
