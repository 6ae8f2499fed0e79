//! The admin HTTP listener, for operators, scrapers and the fault-injection harness:
//!
//! | path | answer |
//! |---|---|
//! | `GET /metrics` | Prometheus text format |
//! | `GET /health` | JSON: registered, fenced, metadata caught up, replicas outside their ISR; 200 when registered, unfenced and caught up, else 503 |
//! | `GET /v1/cluster` | JSON: cluster id, controller, this node's view of the quorum, registered brokers (with incarnation ids and epochs) |
//! | `GET /v1/partitions` | JSON: every partition hosted here: leader, epochs, ISR, replicas (adding, removing), HW, log start and end, producer count |
//!
//! A deliberately tiny HTTP/1.0 responder: one request per connection, bounded request
//! size and time, no keep-alive. It serves operators, not clients. The JSON views are read
//! from the current metadata image and logs on each request; nothing here changes state.

use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::broker::Broker;

/// Largest HTTP request head read.
const REQUEST_BYTES_MAX: usize = 8 * 1024;
/// Time a client gets to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Latency buckets (seconds) for request and append histograms: 100 µs to 10 s.
const LATENCY_BUCKETS_SECONDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Installs the process-wide Prometheus recorder.
pub fn install_recorder() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".to_owned()),
            LATENCY_BUCKETS_SECONDS,
        )?
        .install_recorder()?;
    Ok(handle)
}

/// Serves `/metrics` and `/health` only (no broker to describe).
pub async fn serve(
    listener: TcpListener,
    handle: PrometheusHandle,
    shutdown: watch::Receiver<bool>,
) {
    serve_views(listener, handle, None, shutdown).await
}

/// Serves every path, the JSON views of `broker` included.
pub async fn serve_broker(
    listener: TcpListener,
    handle: PrometheusHandle,
    broker: Arc<Broker>,
    shutdown: watch::Receiver<bool>,
) {
    serve_views(listener, handle, Some(broker), shutdown).await
}

async fn serve_views(
    listener: TcpListener,
    handle: PrometheusHandle,
    broker: Option<Arc<Broker>>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => return,
        };
        let Ok((stream, _)) = accepted else { continue };
        let handle = handle.clone();
        let broker = broker.clone();
        tokio::spawn(async move {
            if let Err(error) = answer(stream, &handle, broker.as_deref()).await {
                tracing::debug!(%error, "admin request failed");
            }
        });
    }
}

async fn answer(
    mut stream: TcpStream,
    handle: &PrometheusHandle,
    broker: Option<&Broker>,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    let read = tokio::time::timeout(REQUEST_TIMEOUT, async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < REQUEST_BYTES_MAX {
            let count = stream.read(&mut chunk).await?;
            if count == 0 {
                break;
            }
            head.extend_from_slice(&chunk[..count]);
        }
        std::io::Result::Ok(())
    })
    .await;
    if !matches!(read, Ok(Ok(()))) {
        return Ok(());
    }
    let line = String::from_utf8_lossy(head.split(|b| *b == b'\r').next().unwrap_or_default())
        .into_owned();
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or_default();
    let (status, content_type, body) = match (method, path) {
        ("GET", "/metrics") => ("200 OK", "text/plain; version=0.0.4", handle.render()),
        ("GET", "/health") => match broker {
            Some(broker) => {
                let (healthy, view) = health_view(broker);
                let status = if healthy {
                    "200 OK"
                } else {
                    "503 Service Unavailable"
                };
                (status, "application/json", format!("{view:#}\n"))
            }
            None => ("200 OK", "text/plain", "ok\n".to_owned()),
        },
        ("GET", "/v1/cluster" | "/v1/partitions") => match broker {
            Some(broker) => {
                let view = if path == "/v1/cluster" {
                    cluster_view(broker)
                } else {
                    partitions_view(broker)
                };
                ("200 OK", "application/json", format!("{view:#}\n"))
            }
            None => (
                "503 Service Unavailable",
                "text/plain",
                "this listener serves no broker\n".to_owned(),
            ),
        },
        ("GET", _) => ("404 Not Found", "text/plain", "not found\n".to_owned()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "only GET\n".to_owned(),
        ),
    };
    let response = format!(
        "HTTP/1.0 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

fn role_name(role: karst_raft::Role) -> &'static str {
    match role {
        karst_raft::Role::Leader => "leader",
        karst_raft::Role::Follower => "follower",
        karst_raft::Role::Candidate => "candidate",
        karst_raft::Role::Observer => "observer",
        karst_raft::Role::Stopped => "stopped",
    }
}

/// `/v1/cluster`: the cluster as this node sees it. The quorum part is this node's own Raft
/// state (only the leader knows the other members' progress, in `replicated_index`).
pub fn cluster_view(broker: &Broker) -> Value {
    let status = broker.quorum.status();
    let image = broker.quorum.image();
    let members = |members: &std::collections::BTreeMap<u64, String>| -> Vec<Value> {
        members
            .iter()
            .map(|(id, address)| json!({"id": id, "address": address}))
            .collect()
    };
    let replicated: Vec<Value> = status
        .replicated_index
        .iter()
        .map(|(id, index)| json!({"id": id, "index": index}))
        .collect();
    let quorum = json!({
        "node_id": status.node_id,
        "role": role_name(status.role),
        "leader_id": status.leader_id,
        "term": status.term,
        "voters": members(&status.voters),
        "observers": members(&status.observers),
        "last_log_index": status.last_log_index,
        "committed_index": status.committed_index,
        "applied_index": status.applied_index,
        "snapshot_index": status.snapshot_index,
        "purged_index": status.purged_index,
        "replicated_index": replicated,
        "snapshots": {
            "built": status.snapshots.built,
            "installed": status.snapshots.installed,
        },
    });
    let brokers: Vec<Value> = image
        .brokers
        .values()
        .map(|registration| {
            let listeners: Vec<Value> = registration
                .listeners
                .iter()
                .map(|listener| {
                    json!({
                        "name": listener.name,
                        "host": listener.host,
                        "port": listener.port,
                        "security_protocol": listener.security_protocol,
                    })
                })
                .collect();
            json!({
                "id": registration.broker_id,
                "incarnation": registration.incarnation_id.to_string(),
                "listeners": listeners,
                "rack": registration.rack,
                "fenced": registration.fenced,
                "epoch": registration.broker_epoch,
            })
        })
        .collect();
    json!({
        "cluster_id": image.cluster_id,
        "node_id": broker.config.node_id,
        "controller": status.leader_id,
        "quorum": quorum,
        "brokers": brokers,
    })
}

/// `/health`: is this node registered with the controller, unfenced, and acting on
/// metadata that holds its own registration (caught up)? Those three make it healthy. It
/// also counts the replicas it hosts that are not in their partition's ISR (catching up
/// after a restart, or lagging), which an operator rolling a cluster waits to see at 0.
pub fn health_view(broker: &Broker) -> (bool, Value) {
    if !broker.config.roles_broker {
        return (
            true,
            json!({"status": "ok", "node_id": broker.config.node_id, "roles": "controller"}),
        );
    }
    let image = broker.quorum.image();
    let epoch = broker
        .broker_epoch
        .load(std::sync::atomic::Ordering::SeqCst);
    let registration = image.broker(broker.config.node_id);
    let registered = epoch >= 0 && registration.is_some();
    let fenced = registration.is_none_or(|r| r.fenced);
    let caught_up = broker.holds_own_registration(&image);
    let outside_isr = broker
        .replicas
        .partitions()
        .iter()
        .filter(|p| !p.view().assignment.isr.contains(&broker.config.node_id))
        .count();
    let healthy = registered && !fenced && caught_up;
    (
        healthy,
        json!({
            "status": if healthy { "ok" } else { "unavailable" },
            "node_id": broker.config.node_id,
            "registered": registered,
            "fenced": fenced,
            "metadata_caught_up": caught_up,
            "replicas_not_in_isr": outside_isr,
        }),
    )
}

/// `/v1/partitions`: every replica hosted on this node: its role, the controller's view as
/// applied here (leader, epochs, replicas, ISR), its high watermark and log offsets, and as
/// leader each follower's last fetched end.
pub fn partitions_view(broker: &Broker) -> Value {
    let mut hosted = broker.replicas.partitions();
    hosted.sort_by(|a, b| {
        let (a, b) = (&a.topic_partition, &b.topic_partition);
        (&a.topic, a.partition).cmp(&(&b.topic, b.partition))
    });
    let partitions: Vec<Value> = hosted
        .iter()
        .map(|hosted| {
            let key = &hosted.topic_partition;
            let view = hosted.view();
            let offsets = hosted.log.offsets();
            let followers: Vec<Value> = view
                .followers
                .iter()
                .map(|(id, end)| json!({"broker": id, "log_end_offset": end}))
                .collect();
            json!({
                "topic": key.topic,
                "partition": key.partition,
                "topic_id": hosted.topic_id.to_string(),
                "role": match view.role {
                    crate::replication::Role::Leader => "leader",
                    crate::replication::Role::Follower { .. } => "follower",
                },
                "leader": view.assignment.leader,
                "leader_epoch": view.assignment.leader_epoch,
                "partition_epoch": view.assignment.partition_epoch,
                "isr": view.assignment.isr,
                "replicas": view.assignment.replicas,
                "adding_replicas": view.assignment.adding_replicas,
                "removing_replicas": view.assignment.removing_replicas,
                "pending_isr": view.pending_isr,
                "followers": followers,
                "high_watermark": view.high_watermark.0,
                // No transactions yet: every record below the high watermark is stable.
                "last_stable_offset": view.high_watermark.0,
                "log_start_offset": offsets.log_start_offset.0,
                "log_end_offset": offsets.durable_end_offset.0,
                "size_bytes": hosted.log.size_bytes(),
                // Idempotent producers with state here (DescribeProducers has the details).
                "producers": hosted.log.producer_count(),
                // Why the log stopped serving (a damaged batch, a failed write), or null.
                "offline": hosted.log.offline_reason(),
            })
        })
        .collect();
    json!({
        "node_id": broker.config.node_id,
        "partitions": partitions,
    })
}
