//! ApiVersions: the served APIs and version ranges, straight from the handler registry.

use proto_kafka::messages::api_versions_response::ApiVersion;
use proto_kafka::messages::{ApiVersionsRequest, ApiVersionsResponse};
use proto_kafka::ResponseError;

use super::{RequestContext, APIS};
use crate::broker::SharedBroker;

fn api_keys() -> Vec<ApiVersion> {
    APIS.iter()
        .map(|spec| {
            ApiVersion::default()
                .with_api_key(spec.key as i16)
                .with_min_version(spec.min_version)
                .with_max_version(spec.max_version)
        })
        .collect()
}

pub async fn handle(
    _broker: SharedBroker,
    _context: RequestContext,
    _request: ApiVersionsRequest,
) -> ApiVersionsResponse {
    ApiVersionsResponse::default()
        .with_api_keys(api_keys())
        .with_finalized_features_epoch(-1)
}

/// The v0 answer to an ApiVersions request of a version this broker does not know (KIP-511):
/// UNSUPPORTED_VERSION, with the supported ranges so the client can retry with one.
pub fn unsupported_version_response() -> ApiVersionsResponse {
    ApiVersionsResponse::default()
        .with_error_code(ResponseError::UnsupportedVersion.code())
        .with_api_keys(api_keys())
}
