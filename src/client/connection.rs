//! One TCP connection to one broker: framing, correlation ids, timeouts, version negotiation.
//!
//! Requests go out one at a time and each waits for its response (no pipelining): the CLI
//! never needs more, and it keeps the correlation check trivial. A timeout or socket error
//! leaves the stream in an unknown position, so the connection marks itself broken and
//! refuses further requests instead of reading some other request's response.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use proto_kafka::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use proto_kafka::protocol::{Decodable, Encodable, Message, Request, StrBytes, VersionRange};
use proto_kafka::ResponseError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::error::{ClientError, KafkaError};
use super::versions::{BrokerVersions, API_VERSIONS_FIRST_TRY};

/// The client id sent in every request header; brokers log it and quotas key on it.
pub const CLIENT_ID: &str = "karst-cli";

/// The largest response we read. A fetch is bounded by its own `max_bytes` (see
/// [`super::fetch::FETCH_BYTES_MAX`]); this limit sits well above that so legitimate answers
/// always fit, and exists so that a corrupt or hostile size prefix cannot make us allocate
/// gigabytes.
pub const RESPONSE_BYTES_MAX: usize = 128 * 1024 * 1024;

/// How long to wait for the TCP handshake.
pub const CONNECT_TIMEOUT_MS: u64 = 10_000;

/// How long to wait for a response, on top of any time the request itself asks the broker to
/// wait (a fetch's `max_wait_ms`, a produce's `timeout_ms`). Kafka's `request.timeout.ms`
/// defaults to 30 s as well.
pub const REQUEST_TIMEOUT_MS: u64 = 30_000;

/// Limits and identity of a connection.
#[derive(Debug, Clone)]
pub struct ConnectionOptions {
    /// See [`CONNECT_TIMEOUT_MS`].
    pub connect_timeout_ms: u64,
    /// See [`REQUEST_TIMEOUT_MS`].
    pub request_timeout_ms: u64,
    /// See [`RESPONSE_BYTES_MAX`].
    pub response_bytes_max: usize,
    /// See [`CLIENT_ID`].
    pub client_id: String,
}

impl Default for ConnectionOptions {
    fn default() -> Self {
        ConnectionOptions {
            connect_timeout_ms: CONNECT_TIMEOUT_MS,
            request_timeout_ms: REQUEST_TIMEOUT_MS,
            response_bytes_max: RESPONSE_BYTES_MAX,
            client_id: CLIENT_ID.to_owned(),
        }
    }
}

/// A negotiated connection to one broker.
#[derive(Debug)]
pub struct Connection {
    address: String,
    stream: TcpStream,
    options: ConnectionOptions,
    next_correlation_id: i32,
    versions: BrokerVersions,
    broken: bool,
}

impl Connection {
    /// Opens a connection to `address` (`host:port`) and negotiates API versions.
    pub async fn connect(
        address: &str,
        options: ConnectionOptions,
    ) -> Result<Connection, ClientError> {
        let timeout = Duration::from_millis(options.connect_timeout_ms);
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(source)) => {
                return Err(ClientError::Connect {
                    address: address.to_owned(),
                    source,
                })
            }
            Err(_elapsed) => {
                return Err(ClientError::ConnectTimeout {
                    address: address.to_owned(),
                    timeout_ms: options.connect_timeout_ms,
                })
            }
        };
        // Requests are small and we wait for each answer: Nagle would only add latency.
        stream
            .set_nodelay(true)
            .map_err(|source| ClientError::Connect {
                address: address.to_owned(),
                source,
            })?;
        let mut connection = Connection {
            address: address.to_owned(),
            stream,
            options,
            next_correlation_id: 0,
            versions: BrokerVersions::default(),
            broken: false,
        };
        connection.negotiate_versions().await?;
        Ok(connection)
    }

    /// The broker's `host:port` as we dialled it.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The version ranges the broker advertised.
    pub fn broker_versions(&self) -> &BrokerVersions {
        &self.versions
    }

    /// The highest version of `R` that both this client and the broker speak.
    pub fn version<R: Request>(&self) -> Result<i16, ClientError> {
        self.version_within::<R>(R::VERSIONS)
    }

    /// Like [`Self::version`], but with the client side narrowed to `client` (for helpers that
    /// only implement some versions' semantics, e.g. fetch by name rather than topic id).
    pub fn version_within<R: Request>(&self, client: VersionRange) -> Result<i16, ClientError> {
        let api = api_key::<R>()?;
        let client = client.intersect(&R::VERSIONS);
        self.versions
            .highest_common(api, client)
            .ok_or_else(|| ClientError::UnsupportedVersion {
                address: self.address.clone(),
                api,
                client,
                broker: self.versions.range(api),
            })
    }

    /// Sends `request` at `version` and waits for its response.
    pub async fn send<R: Request>(
        &mut self,
        request: R,
        version: i16,
    ) -> Result<R::Response, ClientError> {
        self.send_waiting::<R>(request, version, 0).await
    }

    /// Like [`Self::send`], for requests that ask the broker to hold the response for up to
    /// `broker_wait_ms` (long-poll fetch, produce with acks): the client waits that much longer.
    pub async fn send_waiting<R: Request>(
        &mut self,
        request: R,
        version: i16,
        broker_wait_ms: u64,
    ) -> Result<R::Response, ClientError> {
        let api = api_key::<R>()?;
        let frame = self.encode_frame(&request, version)?;
        let timeout_ms = self.options.request_timeout_ms + broker_wait_ms;
        let mut body = self.exchange(api, frame, timeout_ms).await?;
        R::Response::decode(&mut body, version).map_err(|source| ClientError::Decode {
            address: self.address.clone(),
            api,
            version,
            source,
        })
    }

    /// Sends `request` without reading a response: for produce with `acks=0`, which the broker
    /// never answers.
    pub async fn send_without_response<R: Request>(
        &mut self,
        request: R,
        version: i16,
    ) -> Result<(), ClientError> {
        let api = api_key::<R>()?;
        let frame = self.encode_frame(&request, version)?;
        let timeout_ms = self.options.request_timeout_ms;
        self.guarded(api, timeout_ms, |stream| async move {
            stream.write_all(&frame).await?;
            stream.flush().await
        })
        .await
    }

    fn encode_frame<R: Request>(
        &mut self,
        request: &R,
        version: i16,
    ) -> Result<Bytes, ClientError> {
        let api = api_key::<R>()?;
        if version < R::VERSIONS.min || version > R::VERSIONS.max {
            return Err(ClientError::UnsupportedVersion {
                address: self.address.clone(),
                api,
                client: R::VERSIONS,
                broker: self.versions.range(api),
            });
        }
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_string(self.options.client_id.clone())));
        let encode_error = |source| ClientError::Encode {
            api,
            version,
            source,
        };
        let mut frame = BytesMut::new();
        frame.put_i32(0); // size, filled in below
        header
            .encode(&mut frame, api.request_header_version(version))
            .map_err(encode_error)?;
        request.encode(&mut frame, version).map_err(encode_error)?;
        let size = i32::try_from(frame.len() - 4).map_err(|_| ClientError::Encode {
            api,
            version,
            source: proto_kafka::ProtoError::FieldTooLarge {
                field: "request",
                size: frame.len(),
            },
        })?;
        frame[..4].copy_from_slice(&size.to_be_bytes());
        Ok(frame.freeze())
    }

    /// Writes one request frame and reads one response, returning the body after the header.
    async fn exchange(
        &mut self,
        api: ApiKey,
        frame: Bytes,
        timeout_ms: u64,
    ) -> Result<Bytes, ClientError> {
        // The frame is size (4), api key (2), api version (2), correlation id (4), ...
        let version = i16::from_be_bytes([frame[6], frame[7]]);
        let expected_correlation_id =
            i32::from_be_bytes([frame[8], frame[9], frame[10], frame[11]]);
        let response_bytes_max = self.options.response_bytes_max;
        let address = self.address.clone();
        let read = self
            .guarded(api, timeout_ms, |stream| async move {
                stream.write_all(&frame).await?;
                stream.flush().await?;
                let size = stream.read_i32().await?;
                if size < 0 || size as usize > response_bytes_max {
                    return Ok(Err(size));
                }
                let mut body = vec![0; size as usize];
                stream.read_exact(&mut body).await?;
                Ok(Ok(Bytes::from(body)))
            })
            .await?;
        let mut body = match read {
            Ok(body) => body,
            Err(size) => {
                self.broken = true;
                return Err(ClientError::ResponseTooLarge {
                    address,
                    api,
                    size_bytes: i64::from(size),
                    limit_bytes: response_bytes_max,
                });
            }
        };
        let header = ResponseHeader::decode(&mut body, api.response_header_version(version))
            .map_err(|source| ClientError::Decode {
                address: address.clone(),
                api,
                version,
                source,
            })?;
        if header.correlation_id != expected_correlation_id {
            self.broken = true;
            return Err(ClientError::CorrelationMismatch {
                address,
                expected: expected_correlation_id,
                received: header.correlation_id,
            });
        }
        Ok(body)
    }

    /// Runs one socket operation under a timeout; any failure marks the connection broken.
    async fn guarded<'a, T, F, Fut>(
        &'a mut self,
        api: ApiKey,
        timeout_ms: u64,
        operation: F,
    ) -> Result<T, ClientError>
    where
        F: FnOnce(&'a mut TcpStream) -> Fut,
        Fut: std::future::Future<Output = std::io::Result<T>> + 'a,
    {
        if self.broken {
            return Err(ClientError::ConnectionBroken {
                address: self.address.clone(),
            });
        }
        let outcome = tokio::time::timeout(
            Duration::from_millis(timeout_ms),
            operation(&mut self.stream),
        )
        .await;
        match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(source)) => {
                self.broken = true;
                Err(ClientError::Io {
                    address: self.address.clone(),
                    api,
                    source,
                })
            }
            Err(_elapsed) => {
                self.broken = true;
                Err(ClientError::RequestTimeout {
                    address: self.address.clone(),
                    api,
                    timeout_ms,
                })
            }
        }
    }

    /// Sends ApiVersions and records the broker's ranges.
    ///
    /// A broker that does not know our ApiVersions version answers `UNSUPPORTED_VERSION` in the
    /// version-0 layout, listing the ApiVersions range it does speak; we retry once at the
    /// highest version we share (Kafka's KIP-511 fallback).
    async fn negotiate_versions(&mut self) -> Result<(), ClientError> {
        let first = self.api_versions(API_VERSIONS_FIRST_TRY).await?;
        let response = if first.error_code == ResponseError::UnsupportedVersion.code() {
            let broker = BrokerVersions::from_response(&first);
            let retry_version = broker
                .highest_common(ApiKey::ApiVersions, ApiVersionsRequest::VERSIONS)
                .unwrap_or(0);
            self.api_versions(retry_version).await?
        } else {
            first
        };
        KafkaError::check(
            || format!("ApiVersions to {}", self.address),
            response.error_code,
            None,
        )?;
        self.versions = BrokerVersions::from_response(&response);
        Ok(())
    }

    /// One ApiVersions round trip, decoding the answer as version 0 if the requested layout
    /// does not fit (the broker answers an unknown version in the version-0 layout).
    async fn api_versions(&mut self, version: i16) -> Result<ApiVersionsResponse, ClientError> {
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("karst"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let frame = self.encode_frame(&request, version)?;
        let timeout_ms = self.options.request_timeout_ms;
        let body = self
            .exchange(ApiKey::ApiVersions, frame, timeout_ms)
            .await?;
        match ApiVersionsResponse::decode(&mut body.clone(), version) {
            Ok(response) => Ok(response),
            Err(source) => match ApiVersionsResponse::decode(&mut body.clone(), 0) {
                Ok(response) if response.error_code != 0 => Ok(response),
                _ => Err(ClientError::Decode {
                    address: self.address.clone(),
                    api: ApiKey::ApiVersions,
                    version,
                    source,
                }),
            },
        }
    }
}

/// The [`ApiKey`] of a request type.
fn api_key<R: Request>() -> Result<ApiKey, ClientError> {
    ApiKey::try_from(R::KEY).map_err(|()| ClientError::UnknownApiKey { api_key: R::KEY })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Buf;
    use proto_kafka::messages::api_versions_response::ApiVersion;
    use proto_kafka::messages::{MetadataRequest, MetadataResponse};
    use tokio::net::TcpListener;

    /// A scripted broker: answers ApiVersions with `advertised`, then answers each later
    /// request with whatever `respond` returns (given the request's header and body).
    async fn scripted_broker<F>(advertised: Vec<(ApiKey, i16, i16)>, respond: F) -> String
    where
        F: Fn(RequestHeader, Bytes) -> Option<Bytes> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            loop {
                let Ok(size) = stream.read_i32().await else {
                    return;
                };
                let mut body = vec![0; size as usize];
                stream.read_exact(&mut body).await.unwrap();
                let mut body = Bytes::from(body);
                let header =
                    proto_kafka::protocol::decode_request_header_from_buffer(&mut body).unwrap();
                let reply = if header.request_api_key == ApiKey::ApiVersions as i16 {
                    let mut response = ApiVersionsResponse::default();
                    response.api_keys = advertised
                        .iter()
                        .map(|(api, min, max)| {
                            ApiVersion::default()
                                .with_api_key(*api as i16)
                                .with_min_version(*min)
                                .with_max_version(*max)
                        })
                        .collect();
                    // Like Kafka: an ApiVersions version we do not speak is answered with
                    // UNSUPPORTED_VERSION in the version-0 layout.
                    let (_, _, api_versions_max) = advertised
                        .iter()
                        .find(|(api, _, _)| *api == ApiKey::ApiVersions)
                        .copied()
                        .unwrap_or((ApiKey::ApiVersions, 0, 0));
                    let mut answer_version = header.request_api_version;
                    if answer_version > api_versions_max {
                        response.error_code = ResponseError::UnsupportedVersion.code();
                        answer_version = 0;
                    }
                    let mut encoded = BytesMut::new();
                    response.encode(&mut encoded, answer_version).unwrap();
                    Some(encoded.freeze())
                } else {
                    respond(header.clone(), body)
                };
                let Some(reply) = reply else {
                    // Hold the connection open and never answer.
                    std::future::pending::<()>().await;
                    return;
                };
                let api = ApiKey::try_from(header.request_api_key).unwrap();
                let mut frame = BytesMut::new();
                frame.put_i32(0);
                ResponseHeader::default()
                    .with_correlation_id(header.correlation_id)
                    .encode(
                        &mut frame,
                        api.response_header_version(header.request_api_version),
                    )
                    .unwrap();
                frame.extend_from_slice(&reply);
                let size = (frame.len() - 4) as i32;
                frame[..4].copy_from_slice(&size.to_be_bytes());
                stream.write_all(&frame).await.unwrap();
            }
        });
        address
    }

    #[tokio::test]
    async fn negotiates_the_highest_common_version_per_api() {
        let address = scripted_broker(
            vec![
                (ApiKey::ApiVersions, 0, 3),
                (ApiKey::Metadata, 0, 9),
                (ApiKey::Fetch, 4, 30),
            ],
            |_, _| None,
        )
        .await;
        let connection = Connection::connect(&address, ConnectionOptions::default())
            .await
            .unwrap();
        assert_eq!(connection.version::<MetadataRequest>().unwrap(), 9);
        assert_eq!(
            connection
                .version::<proto_kafka::messages::FetchRequest>()
                .unwrap(),
            18
        );
    }

    #[tokio::test]
    async fn an_older_broker_gets_api_versions_again_at_a_version_it_speaks() {
        // The broker only speaks ApiVersions v0..v2, so our v3 is answered in the v0 layout
        // with UNSUPPORTED_VERSION; the client must retry at v2 and then see every API.
        let address = scripted_broker(
            vec![(ApiKey::ApiVersions, 0, 2), (ApiKey::Metadata, 0, 8)],
            |_, _| None,
        )
        .await;
        let connection = Connection::connect(&address, ConnectionOptions::default())
            .await
            .unwrap();
        assert_eq!(connection.version::<MetadataRequest>().unwrap(), 8);
    }

    #[tokio::test]
    async fn an_api_without_a_common_version_is_a_clear_error() {
        let address = scripted_broker(
            vec![(ApiKey::ApiVersions, 0, 3), (ApiKey::Produce, 0, 2)],
            |_, _| None,
        )
        .await;
        let connection = Connection::connect(&address, ConnectionOptions::default())
            .await
            .unwrap();
        let error = connection
            .version::<proto_kafka::messages::ProduceRequest>()
            .unwrap_err();
        assert!(
            matches!(error, ClientError::UnsupportedVersion { .. }),
            "{error:?}"
        );
        assert!(
            error.to_string().contains("client: 3..13, broker: 0..2"),
            "{error}"
        );
        let missing = connection.version::<MetadataRequest>().unwrap_err();
        assert!(missing.to_string().contains("broker: none"), "{missing}");
    }

    #[tokio::test]
    async fn send_decodes_the_response_of_the_request_it_sent() {
        let address = scripted_broker(
            vec![(ApiKey::ApiVersions, 0, 3), (ApiKey::Metadata, 0, 12)],
            |header, _body| {
                let mut response = MetadataResponse::default();
                response.controller_id = proto_kafka::messages::BrokerId(7);
                let mut encoded = BytesMut::new();
                response
                    .encode(&mut encoded, header.request_api_version)
                    .unwrap();
                Some(encoded.freeze())
            },
        )
        .await;
        let mut connection = Connection::connect(&address, ConnectionOptions::default())
            .await
            .unwrap();
        let version = connection.version::<MetadataRequest>().unwrap();
        let response = connection
            .send(MetadataRequest::default(), version)
            .await
            .unwrap();
        assert_eq!(response.controller_id.0, 7);
        // A second request on the same connection still lines up.
        let response = connection
            .send(MetadataRequest::default(), version)
            .await
            .unwrap();
        assert_eq!(response.controller_id.0, 7);
    }

    #[tokio::test]
    async fn a_silent_broker_times_out_and_breaks_the_connection() {
        let address = scripted_broker(
            vec![(ApiKey::ApiVersions, 0, 3), (ApiKey::Metadata, 0, 12)],
            |_, _| None,
        )
        .await;
        let options = ConnectionOptions {
            request_timeout_ms: 100,
            ..ConnectionOptions::default()
        };
        let mut connection = Connection::connect(&address, options).await.unwrap();
        let error = connection
            .send(MetadataRequest::default(), 12)
            .await
            .unwrap_err();
        assert!(
            matches!(error, ClientError::RequestTimeout { .. }),
            "{error:?}"
        );
        let error = connection
            .send(MetadataRequest::default(), 12)
            .await
            .unwrap_err();
        assert!(
            matches!(error, ClientError::ConnectionBroken { .. }),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn an_oversized_response_is_refused_before_it_is_read() {
        let address = scripted_broker(
            vec![(ApiKey::ApiVersions, 0, 3), (ApiKey::Metadata, 0, 12)],
            |_, _| Some(Bytes::from(vec![0; 4096])),
        )
        .await;
        let options = ConnectionOptions {
            response_bytes_max: 1024,
            ..ConnectionOptions::default()
        };
        let mut connection = Connection::connect(&address, options).await.unwrap();
        let error = connection
            .send(MetadataRequest::default(), 12)
            .await
            .unwrap_err();
        assert!(
            matches!(error, ClientError::ResponseTooLarge { .. }),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn frames_carry_their_size_and_increasing_correlation_ids() {
        let address = scripted_broker(vec![(ApiKey::ApiVersions, 0, 3)], |_, _| None).await;
        let mut connection = Connection::connect(&address, ConnectionOptions::default())
            .await
            .unwrap();
        let first = connection
            .encode_frame(&MetadataRequest::default(), 12)
            .unwrap();
        let second = connection
            .encode_frame(&MetadataRequest::default(), 12)
            .unwrap();
        let size = first.slice(0..4).get_i32() as usize;
        assert_eq!(size, first.len() - 4);
        let first_id = first.slice(8..12).get_i32();
        let second_id = second.slice(8..12).get_i32();
        assert_eq!(second_id, first_id + 1);
    }
}
