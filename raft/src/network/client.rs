//! The sending side of Raft RPCs: one TCP connection per (peer, purpose), reconnected on
//! demand.
//!
//! openraft asks for a separate client for replication, heartbeats and snapshots, and uses
//! each sequentially, so a connection carries one request at a time: write a frame, read the
//! answer. Any error drops the connection; the next RPC connects again. openraft's backoff
//! paces retries to an unreachable peer, so there is no retry loop here. Every RPC is bounded
//! by openraft's hard TTL for it; connecting is bounded by [`CONNECT_TIMEOUT`].

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RPCTypes, RaftNetworkFactory};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse};
use openraft::raft::{VoteRequest, VoteResponse};
use openraft::{OptionalSend, RaftNetworkV2};
use tokio::io::BufReader;
use tokio::net::TcpStream;

use super::frame::{read_frame, write_frame};
use super::messages::{self, Request, Response};
use crate::codec;
use crate::stored::{StoredSnapshotMeta, StoredVote};
use crate::type_config::{ControllerNode, Snapshot, SnapshotData, TypeConfig, Vote};

/// How long to wait for a peer to accept a connection. Short: a peer that does not accept
/// within this on a LAN is down, and openraft will try again after its backoff.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Since when each peer has refused this node's connections (nothing listens on its
/// controller listener: its process is gone), cleared by the peer's next answer. A refusal is
/// a definite sign of a dead process, unlike a timeout, which a slow or partitioned peer
/// also gives; the controller fences such a node without waiting out its whole session.
#[derive(Clone, Default)]
pub struct PeerRefusals(Arc<Mutex<HashMap<u64, Instant>>>);

impl PeerRefusals {
    /// When `peer` started refusing connections, if it still does.
    pub fn since(&self, peer: u64) -> Option<Instant> {
        self.0
            .lock()
            .expect("refusals lock poisoned")
            .get(&peer)
            .copied()
    }

    fn refused(&self, peer: u64) {
        self.0
            .lock()
            .expect("refusals lock poisoned")
            .entry(peer)
            .or_insert_with(Instant::now);
    }

    fn answered(&self, peer: u64) {
        self.0.lock().expect("refusals lock poisoned").remove(&peer);
    }
}

/// Creates [`PeerClient`]s for openraft.
pub struct NetworkFactory {
    node_id: u64,
    refusals: PeerRefusals,
}

impl NetworkFactory {
    pub fn new(node_id: u64, refusals: PeerRefusals) -> NetworkFactory {
        NetworkFactory { node_id, refusals }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &ControllerNode) -> PeerClient {
        PeerClient {
            node_id: self.node_id,
            target,
            address: node.address.clone(),
            connection: None,
            refusals: self.refusals.clone(),
        }
    }
}

type Connection = BufReader<TcpStream>;

pub struct PeerClient {
    node_id: u64,
    target: u64,
    address: String,
    connection: Option<Connection>,
    refusals: PeerRefusals,
}

/// Why an RPC failed, before it is mapped to openraft's error types.
enum CallError {
    /// Could not connect, or the peer refused the request: try later.
    Unreachable(io::Error),
    /// The connection broke mid-call.
    Network(io::Error),
    TimedOut,
}

impl PeerClient {
    async fn connect(&self) -> io::Result<Connection> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.address))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        stream.set_nodelay(true)?;
        Ok(BufReader::new(stream))
    }

    async fn exchange(&mut self, payload: &[u8]) -> Result<Response, CallError> {
        if self.connection.is_none() {
            match self.connect().await {
                Ok(connection) => self.connection = Some(connection),
                Err(error) => {
                    if error.kind() == io::ErrorKind::ConnectionRefused {
                        self.refusals.refused(self.target);
                    }
                    return Err(CallError::Unreachable(error));
                }
            }
        }
        let connection = self.connection.as_mut().expect("connected above");
        write_frame(connection.get_mut(), payload)
            .await
            .map_err(CallError::Network)?;
        let frame = read_frame(connection)
            .await
            .map_err(CallError::Network)?
            .ok_or_else(|| {
                CallError::Network(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "peer closed the connection",
                ))
            })?;
        let response = codec::decode::<Response>(&frame).map_err(CallError::Network)?;
        self.refusals.answered(self.target);
        if let Response::Refused(reason) = response {
            return Err(CallError::Unreachable(io::Error::other(format!(
                "node {} refused: {reason}",
                self.target
            ))));
        }
        Ok(response)
    }

    /// Sends `request` and waits for its answer, at most `timeout`.
    async fn call(&mut self, request: &Request, timeout: Duration) -> Result<Response, CallError> {
        let payload = codec::encode(request).map_err(CallError::Network)?;
        let result = match tokio::time::timeout(timeout, self.exchange(&payload)).await {
            Ok(result) => result,
            Err(_) => Err(CallError::TimedOut),
        };
        if let Err(error) = &result {
            // A half-finished exchange leaves the stream at an unknown position.
            self.connection = None;
            if let CallError::Network(error) | CallError::Unreachable(error) = error {
                tracing::debug!(target_node = self.target, kind = request.kind(), %error, "raft rpc failed");
            }
        }
        result
    }

    fn rpc_error(
        &self,
        error: CallError,
        action: RPCTypes,
        timeout: Duration,
    ) -> RPCError<TypeConfig> {
        match error {
            CallError::Unreachable(error) => RPCError::Unreachable(Unreachable::new(&error)),
            CallError::Network(error) => RPCError::Network(NetworkError::new(&error)),
            CallError::TimedOut => RPCError::Timeout(openraft::errors::Timeout {
                action,
                id: self.node_id,
                target: self.target,
                timeout,
            }),
        }
    }

    fn unexpected(&self, response: &Response) -> RPCError<TypeConfig> {
        let error = io::Error::new(
            io::ErrorKind::InvalidData,
            format!("node {} answered with {response:?}", self.target),
        );
        RPCError::Network(NetworkError::new(&error))
    }

    async fn vote_call(
        &mut self,
        request: Request,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let timeout = option.hard_ttl();
        match self.call(&request, timeout).await {
            Ok(Response::Vote {
                vote,
                vote_granted,
                last_log_id,
            }) => Ok(messages::into_vote_response(
                vote,
                vote_granted,
                last_log_id,
            )),
            Ok(other) => Err(self.unexpected(&other)),
            Err(error) => Err(self.rpc_error(error, RPCTypes::Vote, timeout)),
        }
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let timeout = option.hard_ttl();
        match self.call(&Request::append_entries(&rpc), timeout).await {
            Ok(Response::AppendEntries(outcome)) => Ok(AppendEntriesResponse::from(outcome)),
            Ok(other) => Err(self.unexpected(&other)),
            Err(error) => Err(self.rpc_error(error, RPCTypes::AppendEntries, timeout)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.vote_call(Request::Vote(Request::vote(&rpc)), option)
            .await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.vote_call(Request::PreVote(Request::vote(&rpc)), option)
            .await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let timeout = option.hard_ttl();
        let request = Request::FullSnapshot {
            vote: StoredVote::from(&vote),
            meta: StoredSnapshotMeta::from(&snapshot.meta),
            image: snapshot.snapshot,
        };
        tracing::info!(
            target_node = self.target,
            bytes = request_bytes(&request),
            "sending metadata snapshot"
        );
        let result = tokio::select! {
            result = self.call(&request, timeout) => result,
            closed = cancel => {
                self.connection = None;
                return Err(StreamingError::Closed(closed));
            }
        };
        match result {
            Ok(Response::Snapshot { vote }) => Ok(SnapshotResponse::new(Vote::from(vote))),
            Ok(other) => Err(StreamingError::from(self.unexpected(&other))),
            Err(error) => Err(StreamingError::from(self.rpc_error(
                error,
                RPCTypes::InstallSnapshot,
                timeout,
            ))),
        }
    }
}

fn request_bytes(request: &Request) -> usize {
    match request {
        Request::FullSnapshot { image, .. } => image.len(),
        _ => 0,
    }
}
