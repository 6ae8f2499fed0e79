//! The broker side of the controller: register (with a fresh incarnation id per process
//! start), heartbeat every `broker.heartbeat.interval.ms`, re-register when the controller no
//! longer knows this broker's epoch, and ask for a controlled shutdown on the way out.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use uuid::Uuid;

use proto_kafka::ResponseError;

use super::{ControllerReply, ControllerRequest, Registration};
use crate::broker::Broker;
use crate::error::ApiError;

/// Pause before retrying a failed registration.
const REGISTRATION_RETRY: Duration = Duration::from_millis(500);
/// How long a controlled shutdown waits for the controller before going anyway.
pub const CONTROLLED_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

fn registration(broker: &Broker, incarnation_id: Uuid) -> Registration {
    let config = &broker.config;
    Registration {
        broker_id: config.node_id,
        incarnation_id,
        listeners: vec![(
            "PLAINTEXT".to_owned(),
            config.advertised_host.clone(),
            config.advertised_port,
        )],
        rack: config.rack.clone(),
        controller_address: config.controller_advertised.clone(),
        observer: !config.roles_controller,
        directory_id: broker.directory_id.clone(),
    }
}

/// Registers and heartbeats until `shutdown`. Returns an error only when the controller
/// refuses this broker for good (another live broker has its node.id).
pub async fn run(broker: Arc<Broker>, mut shutdown: watch::Receiver<bool>) -> Result<(), ApiError> {
    let incarnation_id = Uuid::new_v4();
    let interval = Duration::from_millis(broker.config.broker_heartbeat_interval_ms);
    'register: loop {
        let request = ControllerRequest::RegisterBroker(registration(&broker, incarnation_id));
        let epoch = tokio::select! {
            _ = shutdown.changed() => return Ok(()),
            reply = broker.call_controller(request) => match reply {
                Ok(ControllerReply::Registered { broker_epoch }) => broker_epoch,
                Ok(other) => {
                    tracing::warn!(?other, "unexpected answer to a broker registration");
                    tokio::time::sleep(REGISTRATION_RETRY).await;
                    continue;
                }
                Err(error) if error.code == ResponseError::DuplicateBrokerRegistration => return Err(error),
                Err(error) => {
                    tracing::info!(%error, "broker registration failed; retrying");
                    tokio::time::sleep(REGISTRATION_RETRY).await;
                    continue;
                }
            }
        };
        broker.broker_epoch.store(epoch, Ordering::SeqCst);
        tracing::info!(broker = broker.config.node_id, broker_epoch = epoch, %incarnation_id, "registered with the controller");
        loop {
            tokio::select! {
                _ = shutdown.changed() => return Ok(()),
                _ = tokio::time::sleep(interval) => {}
            }
            let heartbeat = ControllerRequest::Heartbeat {
                broker_id: broker.config.node_id,
                broker_epoch: epoch,
                want_shut_down: false,
            };
            match broker.call_controller(heartbeat).await {
                Ok(ControllerReply::HeartbeatAck {
                    registered: false, ..
                }) => {
                    tracing::warn!(
                        "the controller no longer knows this broker's epoch; registering again"
                    );
                    continue 'register;
                }
                Ok(_) => {}
                Err(error) => tracing::debug!(%error, "heartbeat failed"),
            }
        }
    }
}

/// Asks the controller to fence this broker and move its leaderships before it stops.
pub async fn controlled_shutdown(broker: &Broker) {
    let epoch = broker.broker_epoch.load(Ordering::SeqCst);
    if epoch < 0 {
        return;
    }
    let request = ControllerRequest::Heartbeat {
        broker_id: broker.config.node_id,
        broker_epoch: epoch,
        want_shut_down: true,
    };
    match tokio::time::timeout(CONTROLLED_SHUTDOWN_TIMEOUT, broker.call_controller(request)).await {
        Ok(Ok(_)) => {
            tracing::info!("controlled shutdown: the controller moved this broker's leaderships")
        }
        Ok(Err(error)) => tracing::warn!(%error, "controlled shutdown refused; stopping anyway"),
        Err(_) => tracing::warn!("controlled shutdown timed out; stopping anyway"),
    }
}
