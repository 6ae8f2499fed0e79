//! The group coordinator: consumer groups under Kafka's classic protocol, with their state
//! kept as records in `__consumer_offsets`.
//!
//! # Layout
//!
//! | module | owns |
//! |---|---|
//! | [`state`] | one group's state machine (members, generations, rebalances) and offsets, on an explicit clock |
//! | [`records`] | Kafka's key/value schemas of offset commits and group metadata |
//! | [`loader`] | replaying a `__consumer_offsets` partition into groups |
//! | [`operations`] | one operation per group API, called by the handlers |
//! | [`consumer_protocol`] | reading subscriptions and assignments where the coordinator must |
//! | this file | which groups live here (shards), writes that wait for the ISR, timers |
//!
//! Group G belongs to partition `abs(java_hash(G)) % partitions` of `__consumer_offsets`,
//! the same mapping as Kafka. This broker coordinates the groups of the partitions it
//! leads: a *shard* per led partition, loaded by replaying the partition when leadership
//! arrives (requests meanwhile get COORDINATOR_LOAD_IN_PROGRESS) and dropped when it leaves
//! (waiting members get NOT_COORDINATOR and find the new coordinator). The shard is bound to
//! the leader epoch it was loaded at, and every write checks that epoch, so a coordinator
//! that lost leadership can never acknowledge a commit.
//!
//! Writes (offset commits, group metadata after a rebalance, tombstones) are appended to
//! the partition through the replica manager and acknowledged only once the high watermark
//! passes them, exactly like acks=all; in-memory state changes only after that.

pub mod consumer_protocol;
pub mod loader;
pub mod operations;
pub mod records;
pub mod state;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use proto_kafka::records::Compression;
use proto_kafka::ResponseError;
use tokio::sync::watch;

use karst_storage::{Offset, TopicPartition};

use crate::broker::{Broker, LiveBroker};
use crate::client::records::{encode_batch, ProducerRecord};
use crate::config::groups::GroupOptions;
use crate::controller::decisions::TopicRequest;
use crate::error::ApiError;
use crate::replication::purgatory::wait_for_replication;
use crate::replication::{now_ms, Partition};
use state::{Group, GroupState, Persist};

pub use records::OffsetValue;

/// Kafka's internal topic of group state.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// How often timers run (session expiry, rebalance deadlines) and leadership of
/// `__consumer_offsets` partitions is reconciled with the shards. Session timeouts are
/// seconds long; 100 ms keeps a member's removal within a tenth of a second of its deadline.
const TICK_INTERVAL: Duration = Duration::from_millis(100);

/// Most `kafka_consumergroup_current_offset` series one broker exports (group × partition),
/// so a cluster with very many groups cannot blow up the metrics endpoint.
const OFFSET_SERIES_MAX: usize = 10_000;

/// How often committed offsets are exported as metrics.
const OFFSET_METRICS_INTERVAL: Duration = Duration::from_secs(1);

/// Bytes read per step while replaying a partition.
const LOAD_READ_BYTES: usize = 1 << 20;

/// How long FindCoordinator waits for a just-created `__consumer_offsets` to get a leader
/// before answering COORDINATOR_NOT_AVAILABLE (the client retries).
const OFFSETS_TOPIC_CREATION_WAIT: Duration = Duration::from_secs(3);

/// `Utils.abs(groupId.hashCode()) % partitions`, as Kafka computes it: Java's String hash
/// over UTF-16 code units, and abs mapping i32::MIN to 0.
pub fn partition_for(group_id: &str, partitions: i32) -> i32 {
    let hash = group_id.encode_utf16().fold(0i32, |hash, unit| {
        hash.wrapping_mul(31).wrapping_add(i32::from(unit))
    });
    let positive = if hash == i32::MIN { 0 } else { hash.abs() };
    positive % partitions.max(1)
}

/// The groups of one `__consumer_offsets` partition this broker leads.
pub struct Shard {
    pub partition: i32,
    pub leader_epoch: i32,
    loaded: std::sync::atomic::AtomicBool,
    groups: Mutex<HashMap<String, Arc<Mutex<Group>>>>,
}

impl Shard {
    fn is_loaded(&self) -> bool {
        self.loaded.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn group(&self, group_id: &str) -> Option<Arc<Mutex<Group>>> {
        self.groups
            .lock()
            .expect("groups lock")
            .get(group_id)
            .cloned()
    }

    pub fn groups(&self) -> Vec<Arc<Mutex<Group>>> {
        self.groups
            .lock()
            .expect("groups lock")
            .values()
            .cloned()
            .collect()
    }
}

pub struct GroupCoordinator {
    pub options: GroupOptions,
    shards: RwLock<HashMap<i32, Arc<Shard>>>,
    /// Serializes creating `__consumer_offsets`.
    creating_topic: tokio::sync::Mutex<()>,
}

/// The error of a write to `__consumer_offsets`, as Kafka maps it for group clients.
fn coordinator_error(error: &ApiError) -> ResponseError {
    match error.code {
        ResponseError::NotEnoughReplicas
        | ResponseError::NotEnoughReplicasAfterAppend
        | ResponseError::RequestTimedOut
        | ResponseError::UnknownTopicOrPartition => ResponseError::CoordinatorNotAvailable,
        ResponseError::NotLeaderOrFollower
        | ResponseError::KafkaStorageError
        | ResponseError::NotCoordinator => ResponseError::NotCoordinator,
        ResponseError::MessageTooLarge
        | ResponseError::RecordListTooLarge
        | ResponseError::InvalidFetchSize => ResponseError::InvalidCommitOffsetSize,
        _ => ResponseError::UnknownServerError,
    }
}

fn lock(group: &Mutex<Group>) -> std::sync::MutexGuard<'_, Group> {
    group.lock().expect("group lock poisoned")
}

impl GroupCoordinator {
    pub fn new(options: GroupOptions) -> GroupCoordinator {
        GroupCoordinator {
            options,
            shards: RwLock::new(HashMap::new()),
            creating_topic: tokio::sync::Mutex::new(()),
        }
    }

    pub fn shards(&self) -> Vec<Arc<Shard>> {
        self.shards
            .read()
            .expect("shards lock")
            .values()
            .cloned()
            .collect()
    }

    /// The shard that owns `group_id`, if this broker coordinates it now.
    pub fn shard_for(&self, broker: &Broker, group_id: &str) -> Result<Arc<Shard>, ResponseError> {
        if group_id.is_empty() {
            return Err(ResponseError::InvalidGroupId);
        }
        let image = broker.metadata.image();
        let Some(topic) = image.topic(OFFSETS_TOPIC) else {
            return Err(ResponseError::CoordinatorNotAvailable);
        };
        let partition = partition_for(group_id, topic.partitions.len() as i32);
        let key = TopicPartition::new(OFFSETS_TOPIC, partition);
        let led_at = broker
            .replicas
            .partition(&key)
            .filter(|p| p.is_leader())
            .map(|p| p.leader_epoch().0);
        let shard = self
            .shards
            .read()
            .expect("shards lock")
            .get(&partition)
            .cloned();
        let image_leader = topic.partition(partition).map_or(-1, |p| p.leader);
        match (led_at, shard) {
            // The image already names this broker, the replica has not taken the role yet.
            (None, _) if image_leader == broker.config.node_id => {
                Err(ResponseError::CoordinatorLoadInProgress)
            }
            (None, _) => Err(ResponseError::NotCoordinator),
            // Led here, but the shard for this epoch is not created or not loaded yet.
            (Some(_), None) => Err(ResponseError::CoordinatorLoadInProgress),
            (Some(epoch), Some(shard)) if epoch != shard.leader_epoch || !shard.is_loaded() => {
                Err(ResponseError::CoordinatorLoadInProgress)
            }
            (Some(_), Some(shard)) => Ok(shard),
        }
    }

    /// The group, created (Empty) if `create` and unknown.
    pub fn group(&self, shard: &Shard, group_id: &str, create: bool) -> Option<Arc<Mutex<Group>>> {
        let mut groups = shard.groups.lock().expect("groups lock");
        if let Some(group) = groups.get(group_id) {
            return Some(Arc::clone(group));
        }
        if !create {
            return None;
        }
        let group = Arc::new(Mutex::new(Group::new(
            group_id,
            self.options.initial_rebalance_delay_ms,
            now_ms(),
        )));
        groups.insert(group_id.to_owned(), Arc::clone(&group));
        Some(group)
    }

    /// Appends `records` to the shard's partition as its leader at the shard's epoch; the
    /// future resolves once they are replicated to the ISR (or fail).
    pub fn write(
        &self,
        broker: &Broker,
        shard: &Shard,
        records: Vec<ProducerRecord>,
    ) -> impl Future<Output = Result<(), ApiError>> + Send + 'static {
        let started = self.start_write(broker, shard, records);
        let timeout = Duration::from_millis(self.options.commit_timeout_ms);
        async move {
            let (partition, receiver) = started?;
            let info = receiver
                .await
                .map_err(|_| {
                    ApiError::new(ResponseError::NotCoordinator, "the append was dropped")
                })?
                .map_err(|error| ApiError::from(&error))?;
            let deadline = tokio::time::Instant::now() + timeout;
            wait_for_replication(&partition, Offset(info.last_offset.0 + 1), deadline).await
        }
    }

    #[allow(clippy::type_complexity)]
    fn start_write(
        &self,
        broker: &Broker,
        shard: &Shard,
        records: Vec<ProducerRecord>,
    ) -> Result<
        (
            Arc<Partition>,
            tokio::sync::oneshot::Receiver<
                Result<karst_storage::AppendInfo, karst_storage::LogError>,
            >,
        ),
        ApiError,
    > {
        let key = TopicPartition::new(OFFSETS_TOPIC, shard.partition);
        let partition = broker
            .replicas
            .partition(&key)
            .filter(|p| p.is_leader() && p.leader_epoch().0 == shard.leader_epoch)
            .ok_or_else(|| {
                ApiError::new(
                    ResponseError::NotCoordinator,
                    format!("{key} is no longer led here"),
                )
            })?;
        let batch = encode_batch(&records, Compression::None, now_ms())
            .map_err(|error| ApiError::new(ResponseError::UnknownServerError, error.to_string()))?;
        // Outside the commit budget: this write cannot wait here, and each is made for a
        // request that holds its `queued.max.request.bytes` until the record is replicated.
        let permit = karst_storage::CommitPermit::unbudgeted();
        let receiver = broker.replicas.append(&partition, &batch, -1, permit)?;
        Ok((partition, receiver))
    }

    /// Writes what `group` asked to persist (its metadata record), and reports the outcome
    /// back to it: a completing rebalance becomes Stable only once its record is replicated.
    pub fn persist(&self, broker: &Arc<Broker>, shard: &Arc<Shard>, group: &Arc<Mutex<Group>>) {
        let (requests, record, group_id) = {
            let mut locked = lock(group);
            (
                locked.take_persist(),
                locked.to_record(),
                locked.group_id.clone(),
            )
        };
        for request in requests {
            let Persist::Group { generation_id } = request;
            let write = self.write(
                broker,
                shard,
                vec![ProducerRecord {
                    key: Some(records::group_key(&group_id)),
                    value: Some(records::group_value(&record)),
                    ..ProducerRecord::default()
                }],
            );
            let group = Arc::clone(group);
            let group_id = group_id.clone();
            tokio::spawn(async move {
                let outcome = write.await;
                if let Err(error) = &outcome {
                    tracing::warn!(group = %group_id, %error, "writing group metadata failed");
                }
                let mut locked = lock(&group);
                let error = outcome.err().map(|e| coordinator_error(&e));
                let before = locked.rebalances_completed.len();
                locked.complete_sync(generation_id, error, now_ms());
                record_rebalances(&locked.rebalances_completed[before..]);
            });
        }
    }

    /// Answers FindCoordinator for a group: the leader of its partition, creating
    /// `__consumer_offsets` on first use.
    pub async fn find_coordinator(
        &self,
        broker: &Arc<Broker>,
        group_id: &str,
    ) -> Result<LiveBroker, ApiError> {
        if broker.metadata.image().topic(OFFSETS_TOPIC).is_none() {
            self.create_offsets_topic(broker).await?;
        }
        let deadline = tokio::time::Instant::now() + OFFSETS_TOPIC_CREATION_WAIT;
        let mut images = broker.quorum.subscribe();
        loop {
            let image = broker.metadata.image();
            if let Some(topic) = image.topic(OFFSETS_TOPIC) {
                let partition = partition_for(group_id, topic.partitions.len() as i32);
                let leader = topic.partition(partition).map_or(-1, |p| p.leader);
                if let Some(live) = broker.live_brokers().into_iter().find(|b| b.id == leader) {
                    return Ok(live);
                }
            }
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() {
                return Err(ApiError::new(
                    ResponseError::CoordinatorNotAvailable,
                    format!("the {OFFSETS_TOPIC} partition of group {group_id} has no live leader"),
                ));
            }
            let _ =
                tokio::time::timeout(remaining.min(Duration::from_millis(50)), images.changed())
                    .await;
        }
    }

    async fn create_offsets_topic(&self, broker: &Arc<Broker>) -> Result<(), ApiError> {
        let _creating = self.creating_topic.lock().await;
        if broker.metadata.image().topic(OFFSETS_TOPIC).is_some() {
            return Ok(());
        }
        let live = broker.live_brokers().len().max(1) as i16;
        let mut replication_factor = self.options.offsets_topic_replication_factor;
        if replication_factor > live {
            tracing::warn!(
                wanted = replication_factor,
                live,
                "offsets.topic.replication.factor is above the live brokers: creating {OFFSETS_TOPIC} with replication factor {live}"
            );
            replication_factor = live;
        }
        let request = TopicRequest {
            name: OFFSETS_TOPIC.to_owned(),
            partitions: self.options.offsets_topic_partitions,
            replication_factor,
            assignments: Vec::new(),
            configs: [
                ("cleanup.policy", "compact".to_owned()),
                ("compression.type", "producer".to_owned()),
                (
                    "segment.bytes",
                    self.options.offsets_topic_segment_bytes.to_string(),
                ),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
        };
        let creator = Arc::clone(broker);
        let created = tokio::task::spawn_blocking(move || creator.create_topic(request, false))
            .await
            .map_err(|e| ApiError::new(ResponseError::UnknownServerError, e.to_string()))?;
        match created {
            Ok(_) => {
                tracing::info!(replication_factor, "created {OFFSETS_TOPIC}");
                Ok(())
            }
            Err(error) if error.code == ResponseError::TopicAlreadyExists => Ok(()),
            Err(error) => Err(ApiError::new(
                ResponseError::CoordinatorNotAvailable,
                error.message,
            )),
        }
    }

    /// Brings the shards in line with the `__consumer_offsets` partitions led here: loads
    /// newly led ones (replaying them), drops ones led elsewhere now.
    fn reconcile(&self, broker: &Arc<Broker>) {
        let image = broker.metadata.image();
        let mut led: HashMap<i32, i32> = HashMap::new();
        if let Some(topic) = image.topic(OFFSETS_TOPIC) {
            for partition in &topic.partitions {
                let key = TopicPartition::new(OFFSETS_TOPIC, partition.partition);
                if let Some(hosted) = broker.replicas.partition(&key) {
                    if hosted.is_leader() {
                        led.insert(partition.partition, hosted.leader_epoch().0);
                    }
                }
            }
        }
        let mut shards = self.shards.write().expect("shards lock");
        let stale: Vec<i32> = shards
            .iter()
            .filter(|(partition, shard)| led.get(partition) != Some(&shard.leader_epoch))
            .map(|(partition, _)| *partition)
            .collect();
        for partition in stale {
            let shard = shards.remove(&partition).expect("listed");
            tracing::info!(
                partition,
                epoch = shard.leader_epoch,
                "unloading the groups of {OFFSETS_TOPIC}-{partition}"
            );
            for group in shard.groups() {
                lock(&group).fail_waiters(ResponseError::NotCoordinator);
            }
        }
        for (partition, leader_epoch) in led {
            if shards.contains_key(&partition) {
                continue;
            }
            let shard = Arc::new(Shard {
                partition,
                leader_epoch,
                loaded: std::sync::atomic::AtomicBool::new(false),
                groups: Mutex::new(HashMap::new()),
            });
            shards.insert(partition, Arc::clone(&shard));
            let broker = Arc::clone(broker);
            tokio::spawn(async move { loader::load(broker, shard).await });
        }
    }

    /// Exports each coordinated group's committed offsets (kafka_exporter's names), up to
    /// [`OFFSET_SERIES_MAX`] series; with `kafka_topic_partition_current_offset` of the
    /// partition leaders they give consumer lag.
    fn export_offsets(&self) {
        let mut exported = 0usize;
        for shard in self.shards() {
            for group in shard.groups() {
                let locked = lock(&group);
                for ((topic, partition), value) in &locked.offsets {
                    if exported == OFFSET_SERIES_MAX {
                        return;
                    }
                    exported += 1;
                    metrics::gauge!(
                        "kafka_consumergroup_current_offset",
                        "consumergroup" => locked.group_id.clone(),
                        "topic" => topic.clone(),
                        "partition" => partition.to_string()
                    )
                    .set(value.offset as f64);
                }
            }
        }
    }

    /// One pass of the timers over every loaded group.
    fn tick(&self, broker: &Arc<Broker>, expire_offsets: bool) {
        let now = now_ms();
        let mut states: HashMap<GroupState, usize> = HashMap::new();
        for shard in self.shards() {
            if !shard.is_loaded() {
                continue;
            }
            for group in shard.groups() {
                let (state, forgettable) = {
                    let mut locked = lock(&group);
                    let before = locked.rebalances_completed.len();
                    locked.tick(now);
                    record_rebalances(&locked.rebalances_completed[before..]);
                    (locked.state, locked.is_forgettable())
                };
                self.persist(broker, &shard, &group);
                if expire_offsets {
                    self.expire_offsets(broker, &shard, &group, now);
                }
                if forgettable {
                    // Under the map lock, then the group's: a request that found this group
                    // just before sees it Dead (a retriable COORDINATOR_NOT_AVAILABLE) and
                    // its retry creates a fresh one.
                    let mut groups = shard.groups.lock().expect("groups lock");
                    let mut locked = lock(&group);
                    let id = locked.group_id.clone();
                    let current = groups.get(&id).is_some_and(|g| Arc::ptr_eq(g, &group));
                    if current && locked.is_forgettable() {
                        locked.mark_dead(now);
                        groups.remove(&id);
                    }
                } else {
                    *states.entry(state).or_default() += 1;
                }
            }
        }
        for state in GroupState::ALL {
            metrics::gauge!("kafka_coordinator_group_groupmetadatamanager_numgroups", "state" => state.name())
                .set(states.get(&state).copied().unwrap_or(0) as f64);
        }
    }

    /// Deletes (tombstones) the offsets of empty groups older than offsets.retention.minutes.
    fn expire_offsets(
        &self,
        broker: &Arc<Broker>,
        shard: &Arc<Shard>,
        group: &Arc<Mutex<Group>>,
        now: i64,
    ) {
        let (group_id, expired) = {
            let locked = lock(group);
            (
                locked.group_id.clone(),
                locked.expired_offsets(self.options.offsets_retention_ms, now),
            )
        };
        if expired.is_empty() {
            return;
        }
        let tombstones = expired
            .iter()
            .map(|(topic, partition)| ProducerRecord {
                key: Some(records::offset_key(&group_id, topic, *partition)),
                value: None,
                ..ProducerRecord::default()
            })
            .collect();
        let write = self.write(broker, shard, tombstones);
        let group = Arc::clone(group);
        tokio::spawn(async move {
            match write.await {
                Ok(()) => {
                    let mut locked = lock(&group);
                    for key in &expired {
                        locked.offsets.remove(key);
                    }
                    tracing::info!(group = %group_id, count = expired.len(), "expired committed offsets");
                }
                Err(error) => tracing::warn!(group = %group_id, %error, "expiring offsets failed"),
            }
        });
    }

    /// A record value for each offset of a commit.
    pub fn offset_record(
        group_id: &str,
        topic: &str,
        partition: i32,
        value: &OffsetValue,
    ) -> ProducerRecord {
        ProducerRecord {
            key: Some(records::offset_key(group_id, topic, partition)),
            value: Some(records::offset_value(value)),
            ..ProducerRecord::default()
        }
    }

    pub fn tombstone(key: Bytes) -> ProducerRecord {
        ProducerRecord {
            key: Some(key),
            value: None,
            ..ProducerRecord::default()
        }
    }
}

fn record_rebalances(completed: &[(i64, i64)]) {
    for (started, finished) in completed {
        metrics::counter!("kafka_coordinator_group_rebalances_total").increment(1);
        metrics::histogram!("kafka_coordinator_group_rebalance_seconds")
            .record((finished - started).max(0) as f64 / 1000.0);
    }
}

/// The coordinator's background work until shutdown: shard reconciliation with the
/// partitions led here, group timers, offset expiry.
pub async fn run(broker: Arc<Broker>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(TICK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let retention_interval =
        Duration::from_millis(broker.groups.options.offsets_retention_check_interval_ms);
    let mut last_expiry = tokio::time::Instant::now();
    let mut last_export = tokio::time::Instant::now();
    metrics::counter!("kafka_coordinator_group_rebalances_total").increment(0);
    metrics::counter!("kafka_coordinator_group_offset_commits_total").increment(0);
    let mut roles = broker.replicas.subscribe_roles();
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {}
            changed = roles.changed() => {
                if changed.is_err() {
                    return;
                }
                // Leadership may have moved: load or unload now, timers on the next tick.
                broker.groups.reconcile(&broker);
                continue;
            }
        }
        broker.groups.reconcile(&broker);
        let expire = last_expiry.elapsed() >= retention_interval;
        if expire {
            last_expiry = tokio::time::Instant::now();
        }
        broker.groups.tick(&broker, expire);
        if last_export.elapsed() >= OFFSET_METRICS_INTERVAL {
            last_export = tokio::time::Instant::now();
            broker.groups.export_offsets();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_map_to_partitions_as_kafka_does() {
        // Java: "my-group".hashCode() = -1906497762.
        assert_eq!(partition_for("my-group", 50), 1906497762 % 50);
        assert_eq!(partition_for("", 50), 0);
        // "polygenelubricants".hashCode() is Integer.MIN_VALUE: Utils.abs makes it 0.
        assert_eq!(partition_for("polygenelubricants", 50), 0);
        // Non-ASCII: Java hashes UTF-16 code units.
        assert_eq!(partition_for("é", 50), 0xe9 % 50);
    }
}
