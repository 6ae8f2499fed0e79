//! The controller: the node that leads the metadata quorum decides every metadata change
//! (topics, partitions, configs, broker registrations and fencing) and writes it as records.
//!
//! Any node can be asked: [`Broker::call_controller`] runs the request here when this node
//! leads, and otherwise forwards it over the controller listener to the leader (the Raft
//! transport's application RPC). Decisions are pure functions in [`decisions`]; this module
//! serializes them on the leader, writes their records, and runs the controller's duties
//! (fencing brokers whose heartbeats stopped). [`reassignment`] decides partition moves
//! (KIP-455). [`lifecycle`] is the broker side: registration, heartbeats, controlled
//! shutdown.

pub mod decisions;
pub mod lifecycle;
pub mod producer_ids;
pub mod reassignment;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use proto_kafka::ResponseError;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use karst_raft::{BrokerEndpoint, MetadataQuorum, WriteError};

use crate::broker::Broker;
use crate::error::ApiError;
use crate::metadata::{MetadataImage, MetadataRecord};

pub use decisions::{
    validate_topic_name, CreatedTopic, TopicRequest, PARTITIONS_PER_TOPIC_MAX, TOPIC_NAME_BYTES_MAX,
};

/// How long a controller call keeps retrying while there is no leader or it moves.
pub const CONTROLLER_CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// One forwarded call's limit.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between attempts while leadership settles.
const RETRY_BACKOFF: Duration = Duration::from_millis(100);
/// How often the leader looks for brokers to fence.
pub const FENCING_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// Why the controller fences a broker that is not shutting down.
#[derive(Clone, Copy, Debug)]
enum Silence {
    /// No heartbeat for `broker.session.timeout.ms`.
    SessionExpired,
    /// Its node has refused the controller's Raft connections for
    /// `broker.fencing.connection.refused.ms`, since after its last heartbeat.
    ConnectionRefused,
}

/// A request to the controller, as forwarded between nodes (JSON on the wire; our own type).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ControllerRequest {
    CreateTopic {
        request: TopicRequest,
        validate_only: bool,
    },
    DeleteTopic {
        name: String,
    },
    DeleteTopicById {
        topic_id: Uuid,
    },
    CreatePartitions {
        name: String,
        count: i32,
        assignments: Option<Vec<Vec<i32>>>,
        validate_only: bool,
    },
    AlterTopicConfigs {
        name: String,
        changes: Vec<(String, Option<String>)>,
        replace_all: bool,
        validate_only: bool,
    },
    RegisterBroker(Registration),
    Heartbeat {
        broker_id: i32,
        broker_epoch: i64,
        want_shut_down: bool,
    },
    /// A partition leader asks for a new ISR (Kafka's AlterPartition).
    AlterPartition(decisions::IsrChange),
    /// A broker's log of a partition went offline: its replica gives up leadership and the
    /// ISR ([`decisions::replica_offline`]; Kafka reports whole offline log directories).
    ReplicaOffline {
        broker_id: i32,
        broker_epoch: i64,
        topic_id: Uuid,
        partition: i32,
    },
    /// ElectLeaders: preferred (or, `unclean`, any live replica for leaderless partitions);
    /// `partitions` None means all.
    ElectLeaders {
        unclean: bool,
        partitions: Option<Vec<(String, i32)>>,
    },
    /// A broker's next block of producer ids ([`producer_ids`]).
    AllocateProducerIds {
        broker_id: i32,
        broker_epoch: i64,
    },
    /// AlterPartitionReassignments ([`reassignment`]).
    AlterReassignments {
        partitions: Vec<reassignment::ReassignmentRequest>,
        replication_factor_fixed: bool,
    },
    /// ListPartitionReassignments: `partitions` None means all.
    ListReassignments {
        partitions: Option<Vec<(String, i32)>>,
    },
}

/// What a broker registers with.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Registration {
    pub broker_id: i32,
    pub incarnation_id: Uuid,
    /// (name, host, port) of each client listener.
    pub listeners: Vec<(String, String, u16)>,
    pub rack: Option<String>,
    /// The broker's controller listener, for nodes that must join the quorum as observers.
    pub controller_address: Option<String>,
    /// True for broker-only nodes: the controller adds them to the quorum as observers.
    pub observer: bool,
    /// The `directory.id` of the broker's data directory (stable across restarts).
    #[serde(default)]
    pub directory_id: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ControllerReply {
    CreatedTopic(CreatedTopic),
    DeletedTopic {
        topic_id: Uuid,
        name: String,
    },
    Done,
    Registered {
        broker_epoch: i64,
    },
    /// `registered: false` asks the broker to register again (unknown broker or stale epoch).
    HeartbeatAck {
        registered: bool,
        fenced: bool,
    },
    /// Per partition of an ElectLeaders request: (topic, partition, error code, message).
    Elected(Vec<decisions::ElectionOutcome>),
    /// The partition after an AlterPartition: what the leader should now hold.
    PartitionState {
        leader_epoch: i32,
        partition_epoch: i32,
        isr: Vec<i32>,
    },
    ProducerIds(producer_ids::ProducerIdBlock),
    /// Per partition of an AlterPartitionReassignments request.
    Reassigned(Vec<reassignment::ReassignmentOutcome>),
    /// The reassignments in progress.
    Reassignments(Vec<reassignment::OngoingReassignment>),
    Failed {
        code: i16,
        message: String,
    },
}

/// The leader's in-memory controller state (rebuilt on each node when it becomes leader).
#[derive(Default)]
pub struct ControllerState {
    /// Serializes decisions: each sees the image every earlier one produced.
    decisions: tokio::sync::Mutex<()>,
    /// Last heartbeat per broker, as seen by this node while leading (reset to the takeover
    /// time when this node becomes leader: every broker gets a full session).
    last_heartbeat: Mutex<HashMap<i32, Instant>>,
    /// Last registration or heartbeat actually received per broker (not reset on takeover):
    /// a connection refusal newer than it means the process is gone.
    heard_from: Mutex<HashMap<i32, Instant>>,
    /// The term this node last started leading in (0: not leading).
    leading_term: Mutex<u64>,
    /// Data directory id each broker registered with, to tell a restart from a duplicate.
    directories: Mutex<HashMap<i32, String>>,
    /// (broker, epoch) of brokers in controlled shutdown: a heartbeat of theirs racing the
    /// shutdown must not unfence them and hand their leaderships back.
    shutting_down: Mutex<std::collections::HashSet<(i32, i64)>>,
    /// When the automatic preferred-leader rebalance last ran.
    last_rebalance: Mutex<Option<Instant>>,
}

impl ControllerState {
    /// A registration or heartbeat from `broker` arrived now.
    fn heard(&self, broker: i32) {
        let now = Instant::now();
        self.last_heartbeat
            .lock()
            .expect("heartbeats lock poisoned")
            .insert(broker, now);
        self.heard_from
            .lock()
            .expect("heartbeats lock poisoned")
            .insert(broker, now);
    }
}

/// Not-the-leader, as an internal signal to forward.
enum Attempt {
    Done(Result<ControllerReply, ApiError>),
    NotLeader,
}

fn failed(error: ApiError) -> ControllerReply {
    ControllerReply::Failed {
        code: error.code(),
        message: error.message,
    }
}

impl Broker {
    /// Runs `request` on the controller (here or forwarded), retrying across leader changes
    /// for up to [`CONTROLLER_CALL_TIMEOUT`].
    pub async fn call_controller(
        &self,
        request: ControllerRequest,
    ) -> Result<ControllerReply, ApiError> {
        let deadline = Instant::now() + CONTROLLER_CALL_TIMEOUT;
        let payload = serde_json::to_vec(&request).expect("controller requests serialize");
        let mut attempt = 0usize;
        loop {
            attempt += 1;
            let status = self.quorum.status();
            let here = self.quorum.node_id();
            let target = match status.leader_id {
                Some(leader) if leader == here => match self.execute(request.clone()).await {
                    Attempt::Done(Ok(ControllerReply::Failed { code, message })) => {
                        return Err(api_error(code, message));
                    }
                    Attempt::Done(result) => return result,
                    Attempt::NotLeader => None,
                },
                Some(leader) => status
                    .voters
                    .get(&leader)
                    .or_else(|| status.observers.get(&leader))
                    .cloned(),
                // A node outside the quorum (a broker-only node before it is added as an
                // observer) knows no leader: ask the configured voters in turn; they pass
                // the request on to the leader.
                None if !self.config.voters.is_empty() => {
                    let voters: Vec<&String> = self.config.voters.values().collect();
                    Some(voters[attempt % voters.len()].clone())
                }
                None => None,
            };
            if let Some(address) = target {
                if let Some(answer) = forward(&address, &payload).await {
                    return answer;
                }
            }
            if Instant::now() >= deadline {
                return Err(ApiError::new(
                    ResponseError::NotController,
                    "no controller answered within the time limit (is a quorum of voters up?)",
                ));
            }
            tokio::time::sleep(RETRY_BACKOFF).await;
        }
    }

    /// Decides and writes `request` if this node leads.
    async fn execute(&self, request: ControllerRequest) -> Attempt {
        let _turn = self.controller.decisions.lock().await;
        let image = self.quorum.image();
        let decided = self.decide(&image, request);
        let (records, reply, after) = match decided {
            Ok(decided) => decided,
            Err(error) => return Attempt::Done(Err(error)),
        };
        if records.is_empty() {
            return Attempt::Done(Ok(reply));
        }
        match self.quorum.write(records).await {
            Ok(applied) if applied.rejected.is_empty() => {
                let reply = match (reply, after) {
                    (ControllerReply::Registered { .. }, AfterWrite::RegisteredAt) => ControllerReply::Registered {
                        broker_epoch: applied.log_index as i64,
                    },
                    (reply, _) => reply,
                };
                Attempt::Done(Ok(reply))
            }
            Ok(applied) => Attempt::Done(Err(ApiError::new(
                ResponseError::UnknownServerError,
                format!("metadata records rejected: {:?}", applied.rejected),
            ))),
            Err(WriteError::NotController { .. }) => Attempt::NotLeader,
            Err(WriteError::OutcomeUnknown { .. }) => Attempt::Done(Err(ApiError::new(
                ResponseError::NotController,
                "the controller changed before the change committed; it may or may not have been applied",
            ))),
            Err(error) => Attempt::Done(Err(ApiError::new(ResponseError::UnknownServerError, error.to_string()))),
        }
    }

    fn topic_defaults(&self) -> decisions::TopicDefaults {
        decisions::TopicDefaults {
            num_partitions: self.config.num_partitions,
            replication_factor: self.config.default_replication_factor,
            delete_topic_enable: self.config.delete_topic_enable,
        }
    }

    fn decide(
        &self,
        image: &MetadataImage,
        request: ControllerRequest,
    ) -> Result<(Vec<MetadataRecord>, ControllerReply, AfterWrite), ApiError> {
        let defaults = self.topic_defaults();
        Ok(match request {
            ControllerRequest::CreateTopic {
                request,
                validate_only,
            } => {
                let (records, created) =
                    decisions::create_topic(image, &defaults, request, validate_only)?;
                (
                    records,
                    ControllerReply::CreatedTopic(created),
                    AfterWrite::Nothing,
                )
            }
            ControllerRequest::DeleteTopic { name } => {
                let (records, topic_id) = decisions::delete_topic(image, &defaults, &name)?;
                (
                    records,
                    ControllerReply::DeletedTopic { topic_id, name },
                    AfterWrite::Nothing,
                )
            }
            ControllerRequest::DeleteTopicById { topic_id } => {
                let name = image
                    .topic_by_id(&topic_id)
                    .map(|t| t.name.clone())
                    .ok_or_else(|| {
                        ApiError::new(
                            ResponseError::UnknownTopicId,
                            format!("no topic with id {topic_id}"),
                        )
                    })?;
                let (records, topic_id) = decisions::delete_topic(image, &defaults, &name)?;
                (
                    records,
                    ControllerReply::DeletedTopic { topic_id, name },
                    AfterWrite::Nothing,
                )
            }
            ControllerRequest::CreatePartitions {
                name,
                count,
                assignments,
                validate_only,
            } => {
                let records =
                    decisions::create_partitions(image, &name, count, assignments, validate_only)?;
                (records, ControllerReply::Done, AfterWrite::Nothing)
            }
            ControllerRequest::AlterTopicConfigs {
                name,
                changes,
                replace_all,
                validate_only,
            } => {
                let records = decisions::alter_topic_configs(
                    image,
                    &name,
                    changes,
                    replace_all,
                    validate_only,
                )?;
                (records, ControllerReply::Done, AfterWrite::Nothing)
            }
            ControllerRequest::RegisterBroker(registration) => {
                self.decide_registration(image, registration)?
            }
            ControllerRequest::Heartbeat {
                broker_id,
                broker_epoch,
                want_shut_down,
            } => self.decide_heartbeat(image, broker_id, broker_epoch, want_shut_down),
            ControllerRequest::AlterPartition(change) => {
                let (records, reply) = decisions::alter_partition(image, &change)?;
                (records, reply, AfterWrite::Nothing)
            }
            ControllerRequest::ReplicaOffline {
                broker_id,
                broker_epoch,
                topic_id,
                partition,
            } => {
                let records = decisions::replica_offline(
                    image,
                    broker_id,
                    broker_epoch,
                    topic_id,
                    partition,
                    &|configs| crate::config::topic::unclean_leader_election(configs, &self.config),
                )?;
                if !records.is_empty() {
                    tracing::warn!(
                        broker = broker_id,
                        %topic_id,
                        partition,
                        "a replica's log went offline: moving leadership and the ISR away from it"
                    );
                }
                (records, ControllerReply::Done, AfterWrite::Nothing)
            }
            ControllerRequest::ElectLeaders {
                unclean,
                partitions,
            } => {
                let (records, outcomes) =
                    decisions::elect_leaders(image, unclean, partitions.as_deref());
                (
                    records,
                    ControllerReply::Elected(outcomes),
                    AfterWrite::Nothing,
                )
            }
            ControllerRequest::AllocateProducerIds {
                broker_id,
                broker_epoch,
            } => {
                let (records, block) =
                    producer_ids::allocate_producer_ids(image, broker_id, broker_epoch)?;
                (
                    records,
                    ControllerReply::ProducerIds(block),
                    AfterWrite::Nothing,
                )
            }
            ControllerRequest::AlterReassignments {
                partitions,
                replication_factor_fixed,
            } => {
                let (records, outcomes) =
                    reassignment::alter_reassignments(image, &partitions, replication_factor_fixed);
                (
                    records,
                    ControllerReply::Reassigned(outcomes),
                    AfterWrite::Nothing,
                )
            }
            ControllerRequest::ListReassignments { partitions } => {
                let ongoing = reassignment::list_reassignments(image, partitions.as_deref());
                (
                    Vec::new(),
                    ControllerReply::Reassignments(ongoing),
                    AfterWrite::Nothing,
                )
            }
        })
    }

    fn decide_registration(
        &self,
        image: &MetadataImage,
        registration: Registration,
    ) -> Result<(Vec<MetadataRecord>, ControllerReply, AfterWrite), ApiError> {
        let id = registration.broker_id;
        let voters = self.quorum.status().voters;
        if registration.observer && voters.contains_key(&(id as u64)) {
            // A broker-only node with a voter's id would replace that voter's address in
            // the quorum membership.
            return Err(ApiError::new(
                ResponseError::DuplicateBrokerRegistration,
                format!("node.id {id} belongs to a controller-quorum voter; each node needs its own node.id"),
            ));
        }
        if let Some(existing) = image.broker(id) {
            if existing.incarnation_id == registration.incarnation_id {
                // A retried registration that already committed.
                return Ok((
                    Vec::new(),
                    ControllerReply::Registered {
                        broker_epoch: existing.broker_epoch,
                    },
                    AfterWrite::Nothing,
                ));
            }
            // Another process holds this id and is still heartbeating. The same node
            // restarting (a SIGKILL leaves its old session open) comes back with the same
            // data directory id and replaces its registration; a different directory is a
            // second node with the same node.id, refused as KRaft does.
            let session = Duration::from_millis(self.config.broker_session_timeout_ms);
            let alive = !existing.fenced
                && self
                    .controller
                    .last_heartbeat
                    .lock()
                    .expect("heartbeats lock poisoned")
                    .get(&id)
                    .is_some_and(|at| at.elapsed() < session);
            let known_directory = self
                .controller
                .directories
                .lock()
                .expect("directories lock poisoned")
                .get(&id)
                .cloned();
            let same_directory = match (&known_directory, &registration.directory_id) {
                (Some(known), Some(claimed)) => known == claimed,
                // Nothing to compare (a new controller, or an old data dir): accept.
                _ => true,
            };
            if alive && !same_directory {
                return Err(ApiError::new(
                    ResponseError::DuplicateBrokerRegistration,
                    format!(
                        "node.id {id} is already registered by a live broker with another data directory (incarnation {}); each node needs its own node.id",
                        existing.incarnation_id
                    ),
                ));
            }
        }
        if let Some(directory) = &registration.directory_id {
            self.controller
                .directories
                .lock()
                .expect("directories lock poisoned")
                .insert(id, directory.clone());
        }
        if registration.observer {
            if let Some(address) = &registration.controller_address {
                let quorum = Arc::clone(&self.quorum);
                let address = address.clone();
                // Joining the quorum is its own Raft change; it must not hold up the record.
                tokio::spawn(async move {
                    if let Err(error) = quorum.add_observer(id as u64, address.clone(), false).await
                    {
                        tracing::warn!(broker = id, %address, %error, "could not add the broker as a quorum observer");
                    }
                });
            }
        }
        self.controller.heard(id);
        let mut records = vec![MetadataRecord::RegisterBroker {
            broker_id: id,
            incarnation_id: registration.incarnation_id,
            listeners: registration
                .listeners
                .iter()
                .map(|(name, host, port)| BrokerEndpoint {
                    name: name.clone(),
                    host: host.clone(),
                    port: *port,
                    security_protocol: 0,
                })
                .collect(),
            rack: registration.rack.clone(),
            fenced: false,
        }];
        records.extend(decisions::elect_leaderless(image, id));
        tracing::debug!(broker = id, incarnation = %registration.incarnation_id, "deciding a broker registration");
        Ok((
            records,
            ControllerReply::Registered { broker_epoch: -1 },
            AfterWrite::RegisteredAt,
        ))
    }

    fn decide_heartbeat(
        &self,
        image: &MetadataImage,
        broker_id: i32,
        broker_epoch: i64,
        want_shut_down: bool,
    ) -> (Vec<MetadataRecord>, ControllerReply, AfterWrite) {
        let Some(registration) = image
            .broker(broker_id)
            .filter(|b| b.broker_epoch == broker_epoch)
        else {
            return (
                Vec::new(),
                ControllerReply::HeartbeatAck {
                    registered: false,
                    fenced: true,
                },
                AfterWrite::Nothing,
            );
        };
        self.controller.heard(broker_id);
        if want_shut_down {
            // Controlled shutdown: fence now and move its leaderships before it goes.
            self.controller
                .shutting_down
                .lock()
                .expect("shutdown set lock poisoned")
                .insert((broker_id, broker_epoch));
            let mut records = Vec::new();
            if !registration.fenced {
                records.push(MetadataRecord::FenceBroker {
                    broker_id,
                    broker_epoch,
                });
                records.extend(decisions::move_leadership_away(
                    image,
                    broker_id,
                    &|configs| crate::config::topic::unclean_leader_election(configs, &self.config),
                ));
                tracing::info!(
                    broker = broker_id,
                    "controlled shutdown: fencing and moving leaderships"
                );
            }
            return (
                records,
                ControllerReply::HeartbeatAck {
                    registered: true,
                    fenced: true,
                },
                AfterWrite::Nothing,
            );
        }
        let stopping = self
            .controller
            .shutting_down
            .lock()
            .expect("shutdown set lock poisoned")
            .contains(&(broker_id, broker_epoch));
        if registration.fenced && stopping {
            return (
                Vec::new(),
                ControllerReply::HeartbeatAck {
                    registered: true,
                    fenced: true,
                },
                AfterWrite::Nothing,
            );
        }
        if registration.fenced {
            let mut records = vec![MetadataRecord::UnfenceBroker {
                broker_id,
                broker_epoch,
            }];
            records.extend(decisions::elect_leaderless(image, broker_id));
            tracing::info!(broker = broker_id, "unfencing broker after a heartbeat");
            return (
                records,
                ControllerReply::HeartbeatAck {
                    registered: true,
                    fenced: false,
                },
                AfterWrite::Nothing,
            );
        }
        (
            Vec::new(),
            ControllerReply::HeartbeatAck {
                registered: true,
                fenced: false,
            },
            AfterWrite::Nothing,
        )
    }

    /// The leader's periodic duty: fence brokers whose last heartbeat is older than
    /// `broker.session.timeout.ms`, moving their leaderships. A node that just became leader
    /// gives every broker a full session first (it has seen no heartbeats yet).
    async fn fence_silent_brokers(&self) {
        let status = self.quorum.status();
        let leading = status.leader_id == Some(self.quorum.node_id());
        {
            let mut term = self
                .controller
                .leading_term
                .lock()
                .expect("term lock poisoned");
            if !leading {
                *term = 0;
                return;
            }
            if *term != status.term {
                *term = status.term;
                tracing::info!(
                    controller_epoch = status.term,
                    "this node is now the controller"
                );
                let now = Instant::now();
                let mut seen = self
                    .controller
                    .last_heartbeat
                    .lock()
                    .expect("heartbeats lock poisoned");
                for id in self.quorum.image().brokers.keys() {
                    seen.insert(*id, now);
                }
                // As Kafka's controller: the first preferred-leader check comes one
                // leader.imbalance.check.interval.seconds after taking over, not at once
                // (moving every leadership during a failover widens the window in which
                // clients re-send batches the old leader appended but did not commit).
                *self
                    .controller
                    .last_rebalance
                    .lock()
                    .expect("rebalance lock poisoned") = Some(now);
            }
        }
        let session = Duration::from_millis(self.config.broker_session_timeout_ms);
        let refused_for = Duration::from_millis(self.config.broker_fencing_connection_refused_ms);
        let image = self.quorum.image();
        let silent: Vec<(i32, i64, Silence)> = {
            let seen = self
                .controller
                .last_heartbeat
                .lock()
                .expect("heartbeats lock poisoned");
            let heard_from = self
                .controller
                .heard_from
                .lock()
                .expect("heartbeats lock poisoned");
            image
                .brokers
                .values()
                .filter(|b| !b.fenced)
                .filter_map(|b| {
                    let last_heard = seen.get(&b.broker_id).copied();
                    let silence = if last_heard.is_none_or(|at| at.elapsed() > session) {
                        Silence::SessionExpired
                    } else if !refused_for.is_zero()
                        && self
                            .quorum
                            .connection_refused_since(b.broker_id as u64)
                            // A refusal older than its last heartbeat or registration came
                            // before a process that has since answered.
                            .is_some_and(|since| {
                                heard_from.get(&b.broker_id).is_none_or(|at| since > *at)
                                    && since.elapsed() >= refused_for
                            })
                    {
                        Silence::ConnectionRefused
                    } else {
                        return None;
                    };
                    Some((b.broker_id, b.broker_epoch, silence))
                })
                .collect()
        };
        for (broker_id, broker_epoch, silence) in silent {
            let _turn = self.controller.decisions.lock().await;
            let image = self.quorum.image();
            if image
                .broker(broker_id)
                .is_none_or(|b| b.fenced || b.broker_epoch != broker_epoch)
            {
                continue;
            }
            let mut records = vec![MetadataRecord::FenceBroker {
                broker_id,
                broker_epoch,
            }];
            records.extend(decisions::move_leadership_away(
                &image,
                broker_id,
                &|configs| crate::config::topic::unclean_leader_election(configs, &self.config),
            ));
            match silence {
                Silence::SessionExpired => tracing::warn!(
                    broker = broker_id,
                    session_timeout_ms = self.config.broker_session_timeout_ms,
                    "fencing a broker that stopped heartbeating"
                ),
                Silence::ConnectionRefused => tracing::warn!(
                    broker = broker_id,
                    refused_ms = self.config.broker_fencing_connection_refused_ms,
                    "fencing a broker whose node refuses connections (its process is gone)"
                ),
            }
            if let Err(error) = self.quorum.write(records).await {
                tracing::warn!(broker = broker_id, %error, "fencing did not commit");
            }
        }
    }

    // The blocking forms the admin handlers call from the blocking pool.

    fn call_controller_blocking(
        &self,
        request: ControllerRequest,
    ) -> Result<ControllerReply, ApiError> {
        tokio::runtime::Handle::current().block_on(self.call_controller(request))
    }

    pub fn create_topic(
        &self,
        request: TopicRequest,
        validate_only: bool,
    ) -> Result<CreatedTopic, ApiError> {
        match self.call_controller_blocking(ControllerRequest::CreateTopic {
            request,
            validate_only,
        })? {
            ControllerReply::CreatedTopic(created) => Ok(created),
            other => Err(unexpected(other)),
        }
    }

    pub fn delete_topic(&self, name: &str) -> Result<Uuid, ApiError> {
        match self.call_controller_blocking(ControllerRequest::DeleteTopic {
            name: name.to_owned(),
        })? {
            ControllerReply::DeletedTopic { topic_id, .. } => Ok(topic_id),
            other => Err(unexpected(other)),
        }
    }

    /// Deletes by id, checking the id inside the decision (no window for a recreated name).
    pub fn delete_topic_by_id(&self, topic_id: Uuid) -> Result<String, ApiError> {
        match self.call_controller_blocking(ControllerRequest::DeleteTopicById { topic_id })? {
            ControllerReply::DeletedTopic { name, .. } => Ok(name),
            other => Err(unexpected(other)),
        }
    }

    pub fn create_partitions(
        &self,
        name: &str,
        count: i32,
        validate_only: bool,
    ) -> Result<(), ApiError> {
        self.create_partitions_assigned(name, count, None, validate_only)
    }

    pub fn create_partitions_assigned(
        &self,
        name: &str,
        count: i32,
        assignments: Option<Vec<Vec<i32>>>,
        validate_only: bool,
    ) -> Result<(), ApiError> {
        self.call_controller_blocking(ControllerRequest::CreatePartitions {
            name: name.to_owned(),
            count,
            assignments,
            validate_only,
        })
        .map(drop)
    }

    pub fn alter_topic_configs(
        &self,
        name: &str,
        changes: Vec<(String, Option<String>)>,
        replace_all: bool,
        validate_only: bool,
    ) -> Result<(), ApiError> {
        self.call_controller_blocking(ControllerRequest::AlterTopicConfigs {
            name: name.to_owned(),
            changes,
            replace_all,
            validate_only,
        })
        .map(drop)
    }
}

/// Sends a serialized request to the controller listener at `address`. `None` means "try
/// again": the node was unreachable or is not (any longer) the controller.
async fn forward(address: &str, payload: &[u8]) -> Option<Result<ControllerReply, ApiError>> {
    let answer =
        match MetadataQuorum::call_application(address, payload.to_vec(), FORWARD_TIMEOUT).await {
            Ok(answer) => answer,
            Err(error) => {
                tracing::debug!(%error, address, "forwarding to the controller failed");
                return None;
            }
        };
    match serde_json::from_slice::<ControllerReply>(&answer) {
        Ok(ControllerReply::Failed { code, message })
            if code == ResponseError::NotController.code() =>
        {
            tracing::debug!(
                message,
                address,
                "that node could not act as or reach the controller"
            );
            None
        }
        Ok(ControllerReply::Failed { code, message }) => Some(Err(api_error(code, message))),
        Ok(reply) => Some(Ok(reply)),
        Err(error) => Some(Err(ApiError::new(
            ResponseError::UnknownServerError,
            format!("undecodable controller answer: {error}"),
        ))),
    }
}

/// What to fill in once the records committed.
enum AfterWrite {
    Nothing,
    /// The broker epoch is the log index of the registration record.
    RegisteredAt,
}

fn api_error(code: i16, message: String) -> ApiError {
    ApiError::new(
        ResponseError::try_from_code(code).unwrap_or(ResponseError::UnknownServerError),
        message,
    )
}

fn unexpected(reply: ControllerReply) -> ApiError {
    ApiError::new(
        ResponseError::UnknownServerError,
        format!("unexpected controller answer {reply:?}"),
    )
}

/// Answers forwarded controller requests arriving on this node's controller listener.
pub struct ForwardedRequests(pub Weak<Broker>);

impl karst_raft::ApplicationHandler for ForwardedRequests {
    fn handle(&self, request: Vec<u8>) -> BoxFuture<'static, Vec<u8>> {
        let broker = self.0.clone();
        Box::pin(async move {
            let reply = match (
                broker.upgrade(),
                serde_json::from_slice::<ControllerRequest>(&request),
            ) {
                (None, _) => failed(ApiError::new(
                    ResponseError::NotController,
                    "this node is shutting down",
                )),
                (_, Err(error)) => failed(ApiError::new(
                    ResponseError::InvalidRequest,
                    format!("bad controller request: {error}"),
                )),
                (Some(broker), Ok(request)) => match broker.execute(request).await {
                    Attempt::Done(Ok(reply)) => reply,
                    Attempt::Done(Err(error)) => failed(error),
                    Attempt::NotLeader => failed(ApiError::new(
                        ResponseError::NotController,
                        "this node is not the controller",
                    )),
                },
            };
            serde_json::to_vec(&reply).expect("controller replies serialize")
        })
    }
}

/// Runs the controller's duties on this node (they act only while it leads) until shutdown.
pub async fn run_duties(broker: Arc<Broker>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(FENCING_CHECK_INTERVAL);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {
                broker.fence_silent_brokers().await;
                broker.rebalance_leaders_if_due().await;
            }
        }
    }
}

impl Broker {
    /// `auto.leader.rebalance.enable`: every `leader.imbalance.check.interval.seconds` the
    /// controller moves leadership back to each partition's preferred replica where that
    /// replica is alive and in sync (after restarts, leaderships pile up on the survivors).
    async fn rebalance_leaders_if_due(&self) {
        if !self.config.auto_leader_rebalance {
            return;
        }
        let status = self.quorum.status();
        if status.leader_id != Some(self.quorum.node_id()) {
            return;
        }
        let interval = Duration::from_millis(self.config.leader_imbalance_check_interval_ms);
        {
            let mut last = self
                .controller
                .last_rebalance
                .lock()
                .expect("rebalance lock poisoned");
            if last.is_some_and(|at| at.elapsed() < interval) {
                return;
            }
            *last = Some(Instant::now());
        }
        let request = ControllerRequest::ElectLeaders {
            unclean: false,
            partitions: None,
        };
        match self.execute(request).await {
            Attempt::Done(Ok(ControllerReply::Elected(outcomes))) if !outcomes.is_empty() => {
                tracing::info!(
                    partitions = outcomes.len(),
                    "preferred leader election moved leaderships back"
                );
            }
            Attempt::Done(Err(error)) => {
                tracing::warn!(%error, "preferred leader election failed")
            }
            _ => {}
        }
    }
}
