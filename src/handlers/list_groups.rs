//! ListGroups: the groups this broker coordinates (clients ask every broker), filtered by
//! state (v4+) and type (v5+: all of Karst's groups are `classic`).

use proto_kafka::messages::list_groups_response::ListedGroup;
use proto_kafka::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};
use proto_kafka::protocol::StrBytes;

use super::RequestContext;
use crate::broker::SharedBroker;

/// The only group type Karst has: Kafka's classic protocol.
const GROUP_TYPE_CLASSIC: &str = "classic";

pub async fn handle(
    broker: SharedBroker,
    _context: RequestContext,
    request: ListGroupsRequest,
) -> ListGroupsResponse {
    let types: Vec<String> = request
        .types_filter
        .iter()
        .map(|t| t.to_lowercase())
        .collect();
    if !types.is_empty() && !types.iter().any(|t| t == GROUP_TYPE_CLASSIC) {
        return ListGroupsResponse::default();
    }
    let states: Vec<String> = request
        .states_filter
        .iter()
        .map(|s| s.to_string())
        .collect();
    let groups = broker
        .groups
        .list(&states)
        .into_iter()
        .map(|group| {
            ListedGroup::default()
                .with_group_id(GroupId(StrBytes::from_string(group.group_id)))
                .with_protocol_type(StrBytes::from_string(group.protocol_type))
                .with_group_state(StrBytes::from_static_str(group.state.name()))
                .with_group_type(StrBytes::from_static_str(GROUP_TYPE_CLASSIC))
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}
