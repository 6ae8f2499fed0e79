//! [`MetadataQuorum`]: one node's member of the metadata quorum, and the crate's API.
//!
//! It wires the pieces (DESIGN §3): the `log_store` and `state_machine` in
//! the node's metadata directory, the `network` client and server on the controller
//! listener, and openraft's core. Callers see metadata records, images and plain status
//! values; no openraft type crosses this boundary.
//!
//! Lifecycle: [`MetadataQuorum::start`] opens storage and starts serving RPCs; a brand-new
//! voter then calls [`MetadataQuorum::bootstrap`] with the static voter set (KRaft's
//! `controller.quorum.voters`; calling it on every voter with the same set is safe, and on an
//! already formed quorum it does nothing). Broker-only nodes start the same way but are added
//! by the leader with [`MetadataQuorum::add_observer`] instead of bootstrapping.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::async_runtime::watch::WatchReceiver;
use openraft::errors::{ClientWriteError, InitializeError, RaftError};
use openraft::{Config, ServerState, SnapshotPolicy};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::image::MetadataImage;
use crate::log_store::{LogStore, SEGMENT_BYTES_DEFAULT};
use crate::network::client::{NetworkFactory, PeerRefusals};
use crate::network::server;
use crate::records::{MetadataBatch, MetadataRecord};
use crate::state_machine::{SnapshotCounters, SnapshotCounts, StateMachine};
use crate::type_config::{Applied, ControllerNode, Raft, TypeConfig};

/// Everything a node needs to take part in the metadata quorum.
#[derive(Clone, Debug)]
pub struct QuorumOptions {
    /// Kafka `node.id`.
    pub node_id: u64,
    pub cluster_id: String,
    /// Directory for the Raft log (`log/`) and snapshots (`state/`).
    pub data_dir: PathBuf,
    /// Where the controller listener binds (port 0 picks a free port).
    pub listen_address: SocketAddr,
    pub heartbeat_interval_ms: u64,
    /// A follower that hears no leader for a random time in this range starts an election.
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// A snapshot of the image is taken after this many committed log entries (an entry is
    /// one committed batch of records).
    pub snapshot_interval_entries: u64,
    /// Entries kept in the log behind the newest snapshot, so a briefly lagging follower
    /// catches up from the log instead of a whole snapshot.
    pub entries_kept_after_snapshot: u64,
    pub segment_bytes_max: u64,
}

impl QuorumOptions {
    /// Options with Karst's defaults: 100 ms heartbeats, 400-800 ms election timeouts, a
    /// snapshot every 10,000 entries keeping 1,000.
    ///
    /// Failover takes about two election timeouts, not one: openraft gives a leader a lease of
    /// `election_timeout_max` during which followers neither campaign nor grant votes, so the
    /// first timer that fires inside the lease is skipped. 400-800 ms puts failover at about
    /// 0.8-1.6 s, under the 2 s target, while a 100 ms heartbeat leaves four missed heartbeats
    /// of slack before a healthy leader is suspected.
    pub fn new(
        node_id: u64,
        cluster_id: impl Into<String>,
        data_dir: impl Into<PathBuf>,
        listen_address: SocketAddr,
    ) -> QuorumOptions {
        QuorumOptions {
            node_id,
            cluster_id: cluster_id.into(),
            data_dir: data_dir.into(),
            listen_address,
            heartbeat_interval_ms: 100,
            election_timeout_min_ms: 400,
            election_timeout_max_ms: 800,
            snapshot_interval_entries: 10_000,
            entries_kept_after_snapshot: 1_000,
            segment_bytes_max: SEGMENT_BYTES_DEFAULT,
        }
    }

    fn raft_config(&self) -> Result<Config, QuorumError> {
        let config = Config {
            cluster_name: self.cluster_id.clone(),
            heartbeat_interval: self.heartbeat_interval_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_interval_entries),
            max_in_snapshot_log_to_keep: self.entries_kept_after_snapshot,
            ..Config::default()
        };
        config
            .validate()
            .map_err(|error| QuorumError::Config(error.to_string()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QuorumError {
    #[error("invalid quorum options: {0}")]
    Config(String),
    #[error("metadata storage in {path}: {source}")]
    Storage { path: PathBuf, source: io::Error },
    #[error("controller listener {address}: {source}")]
    Listener {
        address: SocketAddr,
        source: io::Error,
    },
    #[error("metadata quorum: {0}")]
    Raft(String),
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, String),
}

/// Why a write did not commit. The first two are expected during leader changes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    #[error("this node is not the controller (leader: {leader_id:?} at {leader_address:?})")]
    NotController {
        leader_id: Option<u64>,
        leader_address: Option<String>,
    },
    /// The entry was appended but leadership changed before it committed: it may still
    /// commit. Retrying needs the decision to be idempotent.
    #[error("leadership changed before the write committed; it may or may not commit (leader: {leader_id:?})")]
    OutcomeUnknown {
        leader_id: Option<u64>,
        leader_address: Option<String>,
    },
    #[error("metadata quorum stopped: {0}")]
    Stopped(String),
    #[error("write refused: {0}")]
    Refused(String),
}

/// This node's part in the quorum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Leader,
    Follower,
    Candidate,
    /// A non-voting member (KRaft observer); also the state of a node not yet in any quorum.
    Observer,
    Stopped,
}

/// The quorum as this node sees it: what DescribeQuorum and `karst cluster quorum` report.
#[derive(Clone, Debug)]
pub struct QuorumStatus {
    pub node_id: u64,
    pub role: Role,
    pub leader_id: Option<u64>,
    /// Raft term = KRaft controller epoch.
    pub term: u64,
    /// Voter ids and controller addresses.
    pub voters: BTreeMap<u64, String>,
    /// Observer (learner) ids and controller addresses.
    pub observers: BTreeMap<u64, String>,
    pub last_log_index: Option<u64>,
    pub committed_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
    /// On the leader only: for every other member, the last index known replicated to it.
    pub replicated_index: BTreeMap<u64, Option<u64>>,
    pub snapshots: SnapshotCounts,
}

pub struct MetadataQuorum {
    node_id: u64,
    raft: Raft,
    local_address: SocketAddr,
    images: watch::Receiver<Arc<MetadataImage>>,
    snapshot_counters: SnapshotCounters,
    server_stop: watch::Sender<bool>,
    server: Mutex<Option<JoinHandle<()>>>,
    application: server::HandlerSlot,
    refusals: PeerRefusals,
}

fn storage_error(path: &std::path::Path) -> impl FnOnce(io::Error) -> QuorumError + '_ {
    move |source| QuorumError::Storage {
        path: path.to_owned(),
        source,
    }
}

impl MetadataQuorum {
    /// Opens this node's metadata storage, binds the controller listener and starts Raft.
    pub async fn start(options: QuorumOptions) -> Result<MetadataQuorum, QuorumError> {
        let config = Arc::new(options.raft_config()?);
        let log_dir = options.data_dir.join("log");
        let state_dir = options.data_dir.join("state");
        let log =
            LogStore::open(&log_dir, options.segment_bytes_max).map_err(storage_error(&log_dir))?;
        let state_machine = StateMachine::open(&state_dir, options.cluster_id.clone())
            .map_err(storage_error(&state_dir))?;
        let images = state_machine.subscribe();
        let snapshot_counters = state_machine.snapshot_counters();

        let listener = TcpListener::bind(options.listen_address)
            .await
            .map_err(|source| QuorumError::Listener {
                address: options.listen_address,
                source,
            })?;
        let local_address = listener
            .local_addr()
            .map_err(|source| QuorumError::Listener {
                address: options.listen_address,
                source,
            })?;

        let refusals = PeerRefusals::default();
        let network = NetworkFactory::new(options.node_id, refusals.clone());
        let raft = Raft::new(options.node_id, config, network, log, state_machine)
            .await
            .map_err(|error| QuorumError::Raft(error.to_string()))?;
        let (server_stop, stop) = watch::channel(false);
        let application: server::HandlerSlot = Arc::default();
        let server = tokio::spawn(server::serve(
            listener,
            raft.clone(),
            Arc::clone(&application),
            stop,
        ));
        tracing::info!(node_id = options.node_id, %local_address, "metadata quorum member started");
        Ok(MetadataQuorum {
            node_id: options.node_id,
            raft,
            local_address,
            images,
            snapshot_counters,
            server_stop,
            application,
            server: Mutex::new(Some(server)),
            refusals,
        })
    }

    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// The bound controller listener address.
    pub fn local_address(&self) -> SocketAddr {
        self.local_address
    }

    /// Forms a new quorum of `voters` (node id → controller address) if this node has never
    /// been part of one; does nothing on a node that already has.
    pub async fn bootstrap(&self, voters: BTreeMap<u64, String>) -> Result<(), QuorumError> {
        let members: BTreeMap<u64, ControllerNode> = voters
            .into_iter()
            .map(|(id, address)| (id, ControllerNode::new(address)))
            .collect();
        match self.raft.initialize(members).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
            Err(error) => Err(QuorumError::Raft(error.to_string())),
        }
    }

    /// Commits `records` as one batch through this node, which must be the controller
    /// (Raft leader). Returns once the batch is applied here and published.
    pub async fn write(&self, records: Vec<MetadataRecord>) -> Result<Applied, WriteError> {
        match self.raft.client_write(MetadataBatch::new(records)).await {
            Ok(response) => Ok(response.data),
            Err(error) => Err(write_error(error)),
        }
    }

    /// The current image.
    pub fn image(&self) -> Arc<MetadataImage> {
        Arc::clone(&self.images.borrow())
    }

    /// Every image published from now on (and the current one).
    pub fn subscribe(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.images.clone()
    }

    /// Since when `peer` (another member) has refused this node's Raft connections, if it
    /// still does: nothing listens on its controller listener, so its process is gone. Known
    /// for the peers this node sends to, i.e. on the leader for every member.
    pub fn connection_refused_since(&self, peer: u64) -> Option<std::time::Instant> {
        self.refusals.since(peer)
    }

    pub fn status(&self) -> QuorumStatus {
        let metrics = self.raft.metrics().borrow_watched().clone();
        let membership = metrics.membership_config.membership();
        let address = |id: &u64| {
            membership
                .get_node(id)
                .map(|node| node.address.clone())
                .unwrap_or_default()
        };
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let role = match metrics.state {
            ServerState::Leader => Role::Leader,
            ServerState::Follower => Role::Follower,
            ServerState::Candidate => Role::Candidate,
            ServerState::Learner => Role::Observer,
            ServerState::Shutdown => Role::Stopped,
        };
        QuorumStatus {
            node_id: self.node_id,
            role,
            leader_id: metrics.current_leader,
            term: metrics.current_term,
            voters: voters.iter().map(|id| (*id, address(id))).collect(),
            observers: membership
                .learner_ids()
                .map(|id| (id, address(&id)))
                .collect(),
            last_log_index: metrics.last_log_index,
            committed_index: metrics.local_committed.map(|log_id| log_id.index),
            applied_index: metrics.last_applied.map(|log_id| log_id.index),
            snapshot_index: metrics.snapshot.map(|log_id| log_id.index),
            purged_index: metrics.purged.map(|log_id| log_id.index),
            replicated_index: metrics
                .replication
                .iter()
                .flatten()
                .map(|(id, matched)| (*id, matched.map(|log_id| log_id.index)))
                .collect(),
            snapshots: self.snapshot_counters.get(),
        }
    }

    /// Adds a non-voting member (a broker-only node). Must run on the leader. With
    /// `wait_caught_up`, returns once the observer has received the log.
    pub async fn add_observer(
        &self,
        node_id: u64,
        address: String,
        wait_caught_up: bool,
    ) -> Result<(), WriteError> {
        self.raft
            .add_learner(node_id, ControllerNode::new(address), wait_caught_up)
            .await
            .map(|_| ())
            .map_err(write_error)
    }

    /// Replaces the voter set (joint consensus). Must run on the leader; new voters must
    /// already be members (observers).
    pub async fn change_voters(&self, voters: BTreeSet<u64>) -> Result<(), WriteError> {
        self.raft
            .change_membership(voters, false)
            .await
            .map(|_| ())
            .map_err(write_error)
    }

    /// Waits until some node is known as leader; returns its id.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<u64, QuorumError> {
        let metrics = self
            .raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader.is_some(), "a leader")
            .await
            .map_err(|_| QuorumError::Timeout(timeout, "a leader".into()))?;
        Ok(metrics.current_leader.expect("waited for a leader"))
    }

    /// Waits until this node has applied the log up to `index`.
    pub async fn wait_for_applied(&self, index: u64, timeout: Duration) -> Result<(), QuorumError> {
        let what = format!("applied index {index} on node {}", self.node_id);
        self.raft
            .wait(Some(timeout))
            .applied_index_at_least(Some(index), &what)
            .await
            .map(|_| ())
            .map_err(|_| QuorumError::Timeout(timeout, what))
    }

    /// Builds a snapshot now (in the background) instead of waiting for the interval.
    pub async fn trigger_snapshot(&self) -> Result<(), QuorumError> {
        self.raft
            .trigger()
            .snapshot()
            .await
            .map_err(|error| QuorumError::Raft(error.to_string()))
    }

    /// Stops Raft and the controller listener; peers see this node as down.
    /// Sets what answers application requests ([`MetadataQuorum::call_application`]) that
    /// reach this node's controller listener.
    pub fn set_application_handler(&self, handler: Arc<dyn server::ApplicationHandler>) {
        *self.application.write().expect("handler lock poisoned") = Some(handler);
    }

    /// Sends an application request to the controller listener at `address` and waits at
    /// most `timeout` for the answer. One connection per call: these calls are rare
    /// (registrations, heartbeats every few seconds, forwarded admin requests).
    pub async fn call_application(
        address: &str,
        request: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, QuorumError> {
        let exchange = async {
            let mut stream = tokio::net::TcpStream::connect(address).await?;
            stream.set_nodelay(true)?;
            let payload =
                crate::codec::encode(&crate::network::messages::Request::Application(request))?;
            crate::network::frame::write_frame(&mut stream, &payload).await?;
            let frame = crate::network::frame::read_frame(&mut stream)
                .await?
                .ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "controller closed the connection",
                    )
                })?;
            match crate::codec::decode::<crate::network::messages::Response>(&frame)? {
                crate::network::messages::Response::Application(answer) => Ok(answer),
                crate::network::messages::Response::Refused(reason) => {
                    Err(io::Error::other(reason))
                }
                other => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unexpected answer {other:?}"),
                )),
            }
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(error)) => Err(QuorumError::Raft(format!(
                "call to controller {address}: {error}"
            ))),
            Err(_) => Err(QuorumError::Timeout(
                timeout,
                format!("controller {address}"),
            )),
        }
    }

    /// Resolves, with the reason, once the Raft core has stopped on its own: openraft stops
    /// for good when it cannot write its log or vote (a full or failed disk) rather than go
    /// on with state it could not persist. Pending until then; after [`shutdown`] it
    /// resolves too.
    ///
    /// [`shutdown`]: MetadataQuorum::shutdown
    pub async fn stopped(&self) -> String {
        let mut metrics = self.raft.metrics();
        loop {
            if let Err(fatal) = &metrics.borrow_watched().running_state {
                return fatal.to_string();
            }
            if metrics.changed().await.is_err() {
                return "the Raft core ended".to_owned();
            }
        }
    }

    pub async fn shutdown(&self) {
        if let Err(error) = self.raft.shutdown().await {
            tracing::warn!(%error, "raft core ended with an error");
        }
        self.server_stop.send_replace(true);
        let server = self
            .server
            .lock()
            .expect("server handle lock poisoned")
            .take();
        if let Some(server) = server {
            if let Err(error) = server.await {
                tracing::warn!(%error, "controller listener task failed");
            }
        }
        tracing::info!(node_id = self.node_id, "metadata quorum member stopped");
    }
}

fn write_error(error: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> WriteError {
    match error {
        RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => {
            WriteError::NotController {
                leader_id: forward.leader_id,
                leader_address: forward.leader_node.map(|node| node.address),
            }
        }
        RaftError::APIError(ClientWriteError::LogEntryDiscarded(forward)) => {
            WriteError::OutcomeUnknown {
                leader_id: forward.leader_id,
                leader_address: forward.leader_node.map(|node| node.address),
            }
        }
        RaftError::APIError(other) => WriteError::Refused(other.to_string()),
        RaftError::Fatal(fatal) => WriteError::Stopped(fatal.to_string()),
    }
}
