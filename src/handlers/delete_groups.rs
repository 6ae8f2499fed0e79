//! DeleteGroups: deletes empty groups with their committed offsets (NON_EMPTY_GROUP for
//! a group with members, GROUP_ID_NOT_FOUND for an unknown one).

use proto_kafka::messages::delete_groups_response::DeletableGroupResult;
use proto_kafka::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use super::RequestContext;
use crate::broker::SharedBroker;

pub async fn handle(
    broker: SharedBroker,
    _context: RequestContext,
    request: DeleteGroupsRequest,
) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(request.groups_names.len());
    for group_id in request.groups_names {
        let error = broker.groups.delete_group(&broker, &group_id.0).await;
        results.push(
            DeletableGroupResult::default()
                .with_group_id(group_id)
                .with_error_code(error.map_or(0, |e| e.code())),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}
