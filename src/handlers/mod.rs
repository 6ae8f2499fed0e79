//! Kafka API handlers: one file per API, registered in one table.
//!
//! [`registry!`] maps each API key to its handler and supported version range. Dispatch
//! and the ApiVersions response are both generated from that table, so an API is
//! advertised exactly when it is served.
//!
//! Every handler has the same shape: decode (done here, generically) -> validate -> act ->
//! encode (done here). Most handlers are `async fn handle(broker, context, request) ->
//! Response`. Produce is *eager*: its `handle` validates and queues the append before
//! returning the future that awaits durability, so appends from one connection reach the
//! log in request order even though responses are awaited concurrently.

use std::future::Future;
use std::pin::Pin;

use bytes::{Bytes, BytesMut};
use proto_kafka::messages::{ApiKey, RequestHeader, ResponseHeader};
use proto_kafka::protocol::{Decodable, Encodable, Request};

use crate::broker::SharedBroker;
use crate::network::frame::ResponseFrame;

pub mod alter_configs;
pub mod alter_partition_reassignments;
pub mod api_versions;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_groups;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_cluster;
pub mod describe_configs;
pub mod describe_groups;
pub mod describe_log_dirs;
pub mod describe_producers;
pub mod describe_quorum;
pub mod elect_leaders;
pub mod fetch;
pub mod find_coordinator;
pub mod heartbeat;
pub mod incremental_alter_configs;
pub mod init_producer_id;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod list_partition_reassignments;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod offset_for_leader_epoch;
pub mod produce;
pub mod sync_group;

/// A response still being computed; `None` means "send nothing" (acks=0 produce).
pub type Reply<T> = Pin<Box<dyn Future<Output = Option<T>> + Send>>;

/// What dispatch hands the connection: the encoded response frame, or nothing.
pub type PendingFrame = Pin<Box<dyn Future<Output = Option<ResponseFrame>> + Send>>;

/// The request's identity, for handlers that need more than the body.
#[derive(Clone, Debug)]
pub struct RequestContext {
    pub api_version: i16,
    pub correlation_id: i32,
    pub client_id: Option<String>,
    /// The client's address as Kafka reports it in group descriptions (`/127.0.0.1`).
    pub client_host: std::sync::Arc<str>,
    /// Produce only: room in the storage commit queue for the request's records, taken by
    /// the connection before it read the body (see `karst_storage::commit_budget`).
    pub commit_permit: Option<karst_storage::CommitPermit>,
}

/// A served API and its version range.
#[derive(Clone, Copy, Debug)]
pub struct ApiSpec {
    pub key: ApiKey,
    pub min_version: i16,
    pub max_version: i16,
}

/// Why a request could not be handled at all (the connection is closed).
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("unknown api key {0}")]
    UnknownApiKey(i16),
    #[error("{api:?} v{version} is not supported (supported: v{min}..=v{max})")]
    UnsupportedVersion {
        api: ApiKey,
        version: i16,
        min: i16,
        max: i16,
    },
    #[error("malformed {api:?} v{version} request: {source}")]
    Malformed {
        api: ApiKey,
        version: i16,
        #[source]
        source: proto_kafka::ProtoError,
    },
}

/// Encodes a complete response frame (length prefix, header, body).
pub fn encode_response<T: Encodable>(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &T,
) -> Bytes {
    let mut buffer = BytesMut::with_capacity(256);
    buffer.extend_from_slice(&[0, 0, 0, 0]);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    header
        .encode(&mut buffer, api.response_header_version(version))
        .expect("a response header always encodes");
    body.encode(&mut buffer, version)
        .expect("responses built by handlers fit their version");
    let length = (buffer.len() - 4) as u32;
    buffer[..4].copy_from_slice(&length.to_be_bytes());
    buffer.freeze()
}

/// Decodes a request body of the header's version, with the context handlers see.
fn decode<R: Decodable>(
    api: ApiKey,
    header: &RequestHeader,
    mut body: Bytes,
    client_host: &std::sync::Arc<str>,
    commit_permit: Option<karst_storage::CommitPermit>,
) -> Result<(R, RequestContext), DispatchError> {
    let version = header.request_api_version;
    let request = R::decode(&mut body, version).map_err(|source| DispatchError::Malformed {
        api,
        version,
        source,
    })?;
    let context = RequestContext {
        api_version: version,
        correlation_id: header.correlation_id,
        client_id: header.client_id.as_ref().map(|c| c.to_string()),
        client_host: std::sync::Arc::clone(client_host),
        commit_permit,
    };
    Ok((request, context))
}

/// Decodes `body` as `R`, runs `handler`, and encodes what it answers.
fn serve<R, F>(
    broker: &SharedBroker,
    api: ApiKey,
    header: &RequestHeader,
    body: Bytes,
    client_host: &std::sync::Arc<str>,
    commit_permit: Option<karst_storage::CommitPermit>,
    handler: F,
) -> Result<PendingFrame, DispatchError>
where
    R: Request + Decodable,
    R::Response: Encodable + Send + 'static,
    F: FnOnce(SharedBroker, RequestContext, R) -> Reply<R::Response>,
{
    let (request, context) = decode::<R>(api, header, body, client_host, commit_permit)?;
    let version = context.api_version;
    let reply = handler(SharedBroker::clone(broker), context, request);
    let correlation_id = header.correlation_id;
    Ok(Box::pin(async move {
        let response = reply.await?;
        Some(ResponseFrame::from(encode_response(
            api,
            version,
            correlation_id,
            &response,
        )))
    }))
}

/// Decodes `body` as `R` for a handler that encodes its own response frame (Fetch, whose
/// records may be file regions sent with sendfile).
fn serve_raw<R>(
    broker: &SharedBroker,
    api: ApiKey,
    header: &RequestHeader,
    body: Bytes,
    client_host: &std::sync::Arc<str>,
    commit_permit: Option<karst_storage::CommitPermit>,
    handler: fn(SharedBroker, RequestContext, R) -> PendingFrame,
) -> Result<PendingFrame, DispatchError>
where
    R: Request + Decodable,
{
    let (request, context) = decode::<R>(api, header, body, client_host, commit_permit)?;
    Ok(handler(SharedBroker::clone(broker), context, request))
}

/// Wraps an `async fn` handler into a [`Reply`].
fn lazy<R, Fut>(
    handler: fn(SharedBroker, RequestContext, R) -> Fut,
) -> impl FnOnce(SharedBroker, RequestContext, R) -> Reply<Fut::Output>
where
    Fut: Future + Send + 'static,
    R: 'static,
{
    move |broker, context, request| {
        let future = handler(broker, context, request);
        Box::pin(async move { Some(future.await) })
    }
}

macro_rules! registry {
    ($( $key:ident => $module:ident :: $request:ident, $min:literal ..= $max:literal, $style:ident; )*) => {
        /// Every API this broker serves, with its version range.
        pub const APIS: &[ApiSpec] = &[
            $( ApiSpec { key: ApiKey::$key, min_version: $min, max_version: $max }, )*
        ];

        /// Routes a request to its handler. The future yields the encoded response frame.
        /// `commit_permit` is the room a Produce request took in the storage commit queue.
        pub fn dispatch(
            broker: &SharedBroker,
            header: &RequestHeader,
            body: Bytes,
            client_host: &std::sync::Arc<str>,
            commit_permit: Option<karst_storage::CommitPermit>,
        ) -> Result<PendingFrame, DispatchError> {
            let api = ApiKey::try_from(header.request_api_key)
                .map_err(|()| DispatchError::UnknownApiKey(header.request_api_key))?;
            let spec = find(api).ok_or(DispatchError::UnknownApiKey(header.request_api_key))?;
            let version = header.request_api_version;
            if version < spec.min_version || version > spec.max_version {
                return Err(DispatchError::UnsupportedVersion {
                    api, version, min: spec.min_version, max: spec.max_version,
                });
            }
            match api {
                $( ApiKey::$key => registry!(@serve $style, $request, broker, api, header, body, client_host, commit_permit, $module), )*
                _ => Err(DispatchError::UnknownApiKey(header.request_api_key)),
            }
        }
    };
    (@serve raw, $request:ident, $broker:expr, $api:expr, $header:expr, $body:expr, $host:expr, $permit:expr, $module:ident) => {
        serve_raw::<proto_kafka::messages::$request>($broker, $api, $header, $body, $host, $permit, $module::handle)
    };
    (@serve $style:ident, $request:ident, $broker:expr, $api:expr, $header:expr, $body:expr, $host:expr, $permit:expr, $module:ident) => {
        serve::<proto_kafka::messages::$request, _>($broker, $api, $header, $body, $host, $permit, registry!(@style $style, $module))
    };
    (@style lazy, $module:ident) => { lazy($module::handle) };
    (@style eager, $module:ident) => { $module::handle };
}

registry! {
    Produce => produce::ProduceRequest, 3..=12, eager;
    Fetch => fetch::FetchRequest, 4..=12, raw;
    ListOffsets => list_offsets::ListOffsetsRequest, 1..=8, lazy;
    Metadata => metadata::MetadataRequest, 0..=12, lazy;
    ApiVersions => api_versions::ApiVersionsRequest, 0..=4, lazy;
    CreateTopics => create_topics::CreateTopicsRequest, 2..=7, lazy;
    DeleteTopics => delete_topics::DeleteTopicsRequest, 1..=6, lazy;
    DescribeConfigs => describe_configs::DescribeConfigsRequest, 1..=4, lazy;
    AlterConfigs => alter_configs::AlterConfigsRequest, 0..=2, lazy;
    CreatePartitions => create_partitions::CreatePartitionsRequest, 0..=3, lazy;
    IncrementalAlterConfigs => incremental_alter_configs::IncrementalAlterConfigsRequest, 0..=1, lazy;
    DescribeCluster => describe_cluster::DescribeClusterRequest, 0..=2, lazy;
    DeleteRecords => delete_records::DeleteRecordsRequest, 0..=2, lazy;
    DescribeLogDirs => describe_log_dirs::DescribeLogDirsRequest, 1..=4, lazy;
    DescribeQuorum => describe_quorum::DescribeQuorumRequest, 0..=2, lazy;
    OffsetForLeaderEpoch => offset_for_leader_epoch::OffsetForLeaderEpochRequest, 0..=4, lazy;
    ElectLeaders => elect_leaders::ElectLeadersRequest, 0..=2, lazy;
    InitProducerId => init_producer_id::InitProducerIdRequest, 0..=5, lazy;
    DescribeProducers => describe_producers::DescribeProducersRequest, 0..=0, lazy;
    FindCoordinator => find_coordinator::FindCoordinatorRequest, 0..=6, lazy;
    JoinGroup => join_group::JoinGroupRequest, 0..=9, lazy;
    SyncGroup => sync_group::SyncGroupRequest, 0..=5, lazy;
    Heartbeat => heartbeat::HeartbeatRequest, 0..=4, lazy;
    LeaveGroup => leave_group::LeaveGroupRequest, 0..=5, lazy;
    OffsetCommit => offset_commit::OffsetCommitRequest, 2..=9, lazy;
    OffsetFetch => offset_fetch::OffsetFetchRequest, 1..=9, lazy;
    DescribeGroups => describe_groups::DescribeGroupsRequest, 0..=6, lazy;
    ListGroups => list_groups::ListGroupsRequest, 0..=5, lazy;
    DeleteGroups => delete_groups::DeleteGroupsRequest, 0..=2, lazy;
    OffsetDelete => offset_delete::OffsetDeleteRequest, 0..=0, lazy;
    AlterPartitionReassignments => alter_partition_reassignments::AlterPartitionReassignmentsRequest, 0..=1, lazy;
    ListPartitionReassignments => list_partition_reassignments::ListPartitionReassignmentsRequest, 0..=0, lazy;
}

/// The registry entry of `api`, if served.
pub fn find(api: ApiKey) -> Option<&'static ApiSpec> {
    APIS.iter().find(|spec| spec.key == api)
}
