//! One client connection: read length-prefixed frames, dispatch, write responses in
//! request order.
//!
//! The reader dispatches each request as soon as it is read (pipelining) and hands the
//! pending response to the writer over a bounded channel, so at most
//! [`REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX`] requests are in flight. Each request also holds
//! permits for its size from the global `queued.max.request.bytes` pool until its response
//! is written. A Produce request also takes room for its size in the storage commit queue
//! (`log.commit.queue.max.bytes`) before its body is read, held until its records are
//! synced: while that queue is full the connection reads nothing more, which is the back
//! pressure an acks=0 producer (whose request bytes are released at once) otherwise lacks.
//! Anything that makes a request unreadable (bad length, unknown API key,
//! unsupported version, malformed body) closes this connection only — Kafka does the same,
//! since a response cannot be trusted to be parsed by a client that sent garbage.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::{Bytes, BytesMut};
use proto_kafka::messages::{ApiKey, ApiVersionsResponse, RequestHeader};
use proto_kafka::protocol::Decodable;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use super::frame::ResponseFrame;
use super::{NON_PRODUCE_REQUEST_BYTES_MAX, REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX};
use crate::broker::SharedBroker;
use crate::handlers::{self, encode_response, DispatchError};

/// Smallest possible request: api key, version, correlation id, client id length.
const REQUEST_HEADER_BYTES_MIN: usize = 10;

struct InFlight {
    response: JoinHandle<Option<ResponseFrame>>,
    _bytes: OwnedSemaphorePermit,
    api: ApiKey,
    started: Instant,
}

pub async fn run(
    stream: TcpStream,
    broker: SharedBroker,
    request_bytes: Arc<Semaphore>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let client_host: Arc<str> = stream
        .peer_addr()
        .map(|address| format!("/{}", address.ip()))
        .unwrap_or_default()
        .into();
    let (mut reader, mut writer) = stream.into_split();
    let (sender, mut receiver) = mpsc::channel::<InFlight>(REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX);
    let writer_task = tokio::spawn(async move {
        while let Some(in_flight) = receiver.recv().await {
            let response = in_flight
                .response
                .await
                .context("request handler panicked")?;
            let name = api_name(in_flight.api);
            metrics::counter!("kafka_network_requestmetrics_requests_total", "request" => name)
                .increment(1);
            metrics::histogram!("kafka_network_requestmetrics_totaltime_seconds", "request" => name)
                .record(in_flight.started.elapsed().as_secs_f64());
            if let Some(frame) = response {
                metrics::counter!("kafka_server_brokertopicmetrics_responsebytes_total")
                    .increment(frame.len() as u64);
                frame
                    .write_to(&mut writer)
                    .await
                    .context("writing a response")?;
            }
        }
        anyhow::Ok(())
    });
    let idle = Duration::from_millis(broker.config.connections_idle_ms);
    let outcome = loop {
        let mut length_bytes = [0u8; 4];
        let read = tokio::select! {
            read = tokio::time::timeout(idle, reader.read_exact(&mut length_bytes)) => read,
            _ = shutdown.changed() => break Ok(()),
        };
        match read {
            Err(_) => {
                break Err(anyhow!(
                    "idle for connections.max.idle.ms ({} ms)",
                    idle.as_millis()
                ))
            }
            Ok(Err(error)) if error.kind() == std::io::ErrorKind::UnexpectedEof => break Ok(()),
            Ok(Err(error)) => break Err(error).context("reading a frame length"),
            Ok(Ok(_)) => {}
        }
        match read_request(
            &mut reader,
            i32::from_be_bytes(length_bytes),
            &broker,
            &request_bytes,
            &client_host,
        )
        .await
        {
            Ok(in_flight) => {
                if sender.send(in_flight).await.is_err() {
                    break Ok(());
                }
            }
            Err(error) => break Err(error),
        }
    };
    drop(sender);
    let written = writer_task.await.context("writer task panicked")?;
    outcome.and(written)
}

async fn read_request(
    reader: &mut tokio::net::tcp::OwnedReadHalf,
    length: i32,
    broker: &SharedBroker,
    request_bytes: &Arc<Semaphore>,
    client_host: &Arc<str>,
) -> anyhow::Result<InFlight> {
    let started = Instant::now();
    let limit = broker.config.socket_request_bytes_max;
    if length < REQUEST_HEADER_BYTES_MIN as i32 || length as usize > limit {
        bail!("frame length {length} outside [{REQUEST_HEADER_BYTES_MIN}, socket.request.max.bytes {limit}]");
    }
    let length = length as usize;
    let mut prefix = [0u8; 8];
    reader
        .read_exact(&mut prefix)
        .await
        .context("reading a request header")?;
    let api_key = i16::from_be_bytes([prefix[0], prefix[1]]);
    let api_version = i16::from_be_bytes([prefix[2], prefix[3]]);
    let correlation_id = i32::from_be_bytes([prefix[4], prefix[5], prefix[6], prefix[7]]);
    if api_key != ApiKey::Produce as i16 && length > NON_PRODUCE_REQUEST_BYTES_MAX {
        bail!("api key {api_key} request of {length} bytes exceeds the {NON_PRODUCE_REQUEST_BYTES_MAX}-byte limit for non-produce requests");
    }
    let permits = (length.min(broker.config.queued_request_bytes_max)) as u32;
    let permit = Arc::clone(request_bytes)
        .acquire_many_owned(permits.max(1))
        .await
        .expect("the request-bytes semaphore is never closed");
    // Taken before the body is read (nothing is buffered while the queue is full) and after
    // the request-bytes permit (always the same order, so the two cannot deadlock).
    let commit_permit = if api_key == ApiKey::Produce as i16 {
        Some(broker.replicas.logs().commit_budget().acquire(length).await)
    } else {
        None
    };
    let mut frame = BytesMut::zeroed(length);
    frame[..8].copy_from_slice(&prefix);
    reader
        .read_exact(&mut frame[8..])
        .await
        .context("reading a request body")?;
    let mut frame = frame.freeze();
    let api = ApiKey::try_from(api_key).map_err(|()| anyhow!("unknown api key {api_key}"))?;
    if api == ApiKey::ApiVersions
        && handlers::find(api).is_some_and(|s| api_version > s.max_version)
    {
        // KIP-511: answer an ApiVersions of a version we do not know with a v0 response
        // that says UNSUPPORTED_VERSION and lists what we do support.
        let body = handlers::api_versions::unsupported_version_response();
        let frame = encode_response::<ApiVersionsResponse>(api, 0, correlation_id, &body);
        return Ok(ready(frame, permit, api, started));
    }
    let header_version = api.request_header_version(api_version);
    let header = RequestHeader::decode(&mut frame, header_version).map_err(|error| {
        anyhow!("malformed request header (api key {api_key} v{api_version}): {error}")
    })?;
    match handlers::dispatch(broker, &header, frame, client_host, commit_permit) {
        Ok(reply) => Ok(InFlight {
            response: tokio::spawn(reply),
            _bytes: permit,
            api,
            started,
        }),
        Err(error @ DispatchError::UnknownApiKey(_)) => Err(error.into()),
        Err(error) => {
            Err(anyhow::Error::new(error)
                .context(format!("closing after request {correlation_id}")))
        }
    }
}

fn ready(frame: Bytes, permit: OwnedSemaphorePermit, api: ApiKey, started: Instant) -> InFlight {
    InFlight {
        response: tokio::spawn(async move { Some(ResponseFrame::from(frame)) }),
        _bytes: permit,
        api,
        started,
    }
}

/// A static label per API for metrics (`Produce`, `Fetch`, ...).
fn api_name(api: ApiKey) -> &'static str {
    match api {
        ApiKey::Produce => "Produce",
        ApiKey::Fetch => "Fetch",
        ApiKey::ListOffsets => "ListOffsets",
        ApiKey::Metadata => "Metadata",
        ApiKey::ApiVersions => "ApiVersions",
        ApiKey::CreateTopics => "CreateTopics",
        ApiKey::DeleteTopics => "DeleteTopics",
        ApiKey::DescribeConfigs => "DescribeConfigs",
        ApiKey::AlterConfigs => "AlterConfigs",
        ApiKey::CreatePartitions => "CreatePartitions",
        ApiKey::IncrementalAlterConfigs => "IncrementalAlterConfigs",
        ApiKey::DescribeCluster => "DescribeCluster",
        _ => "Other",
    }
}
