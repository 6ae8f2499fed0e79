//! The Kafka listener: accepts connections (bounded), and runs one [`connection`] task each.

pub mod connection;
pub mod frame;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::broker::SharedBroker;

/// Bytes of a non-Produce request frame accepted. Produce is bounded by
/// `socket.request.max.bytes`; everything else is metadata-sized, and a small limit stops a
/// hostile length prefix from reserving a large buffer. 8 MiB fits a CreateTopics of
/// tens of thousands of partitions with explicit assignments.
pub const NON_PRODUCE_REQUEST_BYTES_MAX: usize = 8 * 1024 * 1024;

/// Requests one connection may have in flight (read, not yet answered). librdkafka keeps
/// up to 1,000,000 by default but is happy to be slowed down by TCP back-pressure.
pub const REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX: usize = 128;

/// Accepts connections until `shutdown` flips, each under the connection limit.
pub async fn serve(
    listener: TcpListener,
    broker: SharedBroker,
    mut shutdown: watch::Receiver<bool>,
) {
    let connections = Arc::new(Semaphore::new(broker.config.connections_max));
    let request_bytes = Arc::new(Semaphore::new(broker.config.queued_request_bytes_max));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
            tracing::warn!(%peer, limit = broker.config.connections_max, "max.connections reached: refusing a connection");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let broker = SharedBroker::clone(&broker);
        let request_bytes = Arc::clone(&request_bytes);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            metrics::gauge!("kafka_server_socketservermetrics_connection_count").increment(1.0);
            if let Err(error) = connection::run(stream, broker, request_bytes, shutdown).await {
                tracing::info!(%peer, error = %format!("{error:#}"), "connection closed");
            }
            metrics::gauge!("kafka_server_socketservermetrics_connection_count").decrement(1.0);
            drop(permit);
        });
    }
}
