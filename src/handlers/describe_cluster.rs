//! DescribeCluster: the cluster id, the controller, and the live brokers.

use proto_kafka::messages::describe_cluster_response::DescribeClusterBroker;
use proto_kafka::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use proto_kafka::protocol::StrBytes;
use proto_kafka::ResponseError;

use super::RequestContext;
use crate::broker::SharedBroker;

/// Kafka's `EndpointType.BROKER`: the only endpoints Karst's listeners are.
const ENDPOINT_TYPE_BROKER: i8 = 1;

pub async fn handle(
    broker: SharedBroker,
    context: RequestContext,
    request: DescribeClusterRequest,
) -> DescribeClusterResponse {
    // v1 lets a client ask for controller endpoints; the CONTROLLER listener speaks Raft,
    // not the Kafka protocol, so this endpoint answers as a Kafka broker does.
    if context.api_version >= 1 && request.endpoint_type != ENDPOINT_TYPE_BROKER {
        return DescribeClusterResponse::default()
            .with_error_code(ResponseError::UnsupportedEndpointType.code())
            .with_error_message(Some(StrBytes::from_string(format!(
                "The request was sent to an endpoint of type BROKER, but we wanted an endpoint of type {}",
                request.endpoint_type
            ))));
    }
    let mut brokers: Vec<DescribeClusterBroker> = broker
        .live_brokers()
        .into_iter()
        .map(|live| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(live.id))
                .with_host(StrBytes::from_string(live.host))
                .with_port(i32::from(live.port))
                .with_rack(live.rack.map(StrBytes::from_string))
        })
        .collect();
    // v2 (KIP-1073) can also list fenced brokers, marked as such.
    if context.api_version >= 2 && request.include_fenced_brokers {
        let image = broker.metadata.image();
        for registration in image.brokers.values().filter(|b| b.fenced) {
            if let Some(endpoint) = registration
                .listeners
                .iter()
                .find(|l| l.name == "PLAINTEXT")
            {
                brokers.push(
                    DescribeClusterBroker::default()
                        .with_broker_id(BrokerId(registration.broker_id))
                        .with_host(StrBytes::from_string(endpoint.host.clone()))
                        .with_port(i32::from(endpoint.port))
                        .with_rack(registration.rack.clone().map(StrBytes::from_string))
                        .with_is_fenced(true),
                );
            }
        }
        brokers.sort_by_key(|b| b.broker_id.0);
    }
    DescribeClusterResponse::default()
        .with_error_code(0)
        .with_error_message(None)
        .with_cluster_id(StrBytes::from_string(broker.cluster_id()))
        .with_controller_id(BrokerId(broker.reported_controller_id()))
        .with_brokers(brokers)
        // Karst has no authorizer, so authorized operations are never reported.
        .with_cluster_authorized_operations(i32::MIN)
}
