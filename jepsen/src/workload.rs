//! The workload: client processes that send unique values to, and poll, a rotating pool of keys,
//! each key a partition of one topic (RF=3, min.insync.replicas=2, acks=all), through
//! librdkafka (the `rdkafka` crate) — a client that does not share Karst's code or bugs.
//!
//! * **Keys** rotate with time: at `t` the active keys are `r..r+active` with
//!   `r = t / key_rotation`, so every key gets a bounded history and new partitions join.
//! * **Sends** go to an explicit partition with `acks=all`, either without idempotence and
//!   with `retries=0`, or with `enable.idempotence=true` (`--idempotent`). `retries=0` does not
//!   stop every re-send: librdkafka re-sends a batch answered NOT_LEADER_OR_FOLLOWER without
//!   counting it, and a leader that lost leadership after appending answers just that, so a
//!   non-idempotent run may store a value twice (the checker's `resend-duplicate`). A send that
//!   could not be queued, or that the broker refused before appending (no such partition, not
//!   enough replicas, …: [`send_error_outcome`]), `fail`s; any other error or timeout is `info`
//!   and the worker's clients are rebuilt under a new process number.
//! * **Polls** use `assign`: each process keeps its position per key and re-assigns (an
//!   `assign` operation) when the active keys change. Each poll records the leader epoch of
//!   the batches it read, which tells a client re-send from a broker's duplicate.
//! * **Groups** (`--workload groups`, [`groups`]): instead of `assign`, every process's consumer
//!   is a member of one consumer group subscribed to the topic; it commits what each poll read
//!   and records every new assignment it gets (`rebalance`).
//! * **Final reads** after the last heal: a fresh consumer reads every key from offset 0 up to the
//!   high watermark it finds then; those polls are marked `final_read`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset as KafkaOffset, TopicPartitionList};

use crate::history::{
    Function, HistoryWriter, Key, LeaderEpoch, Offset, Op, OpType, Process, Value, WorkloadKind,
    WorkloadSettings,
};
use crate::random::Random;

pub mod groups;

/// Records one poll may return before it completes (a poll also ends after `poll_window`).
const POLL_RECORDS_MAX: usize = 2_000;
/// Broker-side bound on one send (librdkafka `message.timeout.ms`).
const MESSAGE_TIMEOUT_MS: u32 = 5_000;
/// Our own bound on a send, in case librdkafka never reports.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long topic creation and the final reads may take at most.
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);
pub const FINAL_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Length of one final-read poll.
const FINAL_POLL_WINDOW: Duration = Duration::from_secs(1);
/// The `process` of the history's settings line.
const WORKLOAD_PROCESS: &str = "workload";
/// A consumer group id librdkafka insists on; the workload never joins or commits.
const CONSUMER_GROUP_ID_UNUSED: &str = "karst-jepsen-never-joined";

#[derive(Debug, Clone)]
pub struct WorkloadOptions {
    pub bootstrap_servers: String,
    pub topic: String,
    /// Worker tasks (each one process at a time).
    pub concurrency: u32,
    /// Operations per second, all workers together.
    pub rate: f64,
    /// Keys written and polled at any one time.
    pub active_keys: u32,
    pub key_rotation: Duration,
    /// Partitions of the topic: every key the run can reach.
    pub key_count: u32,
    /// How long one (non-final) poll listens.
    pub poll_window: Duration,
    pub seed: u64,
    /// Producers with `enable.idempotence=true` (else `retries=0`, no idempotence).
    pub idempotent: bool,
    /// How consumers read: `assign` or as members of one group.
    pub kind: WorkloadKind,
}

impl WorkloadOptions {
    /// The keys in use `elapsed` after the workload started.
    pub fn active_keys_at(&self, elapsed: Duration) -> Vec<Key> {
        let rotations = (elapsed.as_millis() / self.key_rotation.as_millis().max(1)) as u32;
        let first = rotations.min(self.key_count.saturating_sub(self.active_keys));
        (first..(first + self.active_keys).min(self.key_count)).collect()
    }
}

/// What every worker shares: the history, the value and process counters, the stop flag.
pub struct Shared {
    pub history: Mutex<HistoryWriter>,
    pub started: Instant,
    pub stop: AtomicBool,
    next_value: AtomicU64,
    next_process: AtomicU64,
}

impl Shared {
    pub fn new(history: HistoryWriter, started: Instant) -> Shared {
        Shared {
            history: Mutex::new(history),
            started,
            stop: AtomicBool::new(false),
            next_value: AtomicU64::new(0),
            next_process: AtomicU64::new(0),
        }
    }

    /// Appends `op` to the history. A history that cannot be written makes the run worthless,
    /// so that is fatal.
    pub fn record(&self, op: Op) {
        let mut history = self.history.lock().expect("history lock poisoned");
        history.record(op).expect("write history.jsonl");
    }

    fn new_process(&self) -> u64 {
        self.next_process.fetch_add(1, Ordering::Relaxed)
    }
}

fn base_config(options: &WorkloadOptions) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &options.bootstrap_servers)
        .set("socket.connection.setup.timeout.ms", "3000")
        .set("reconnect.backoff.max.ms", "1000")
        .set("topic.metadata.refresh.interval.ms", "2000")
        .set("request.timeout.ms", "4000");
    config
}

/// Creates the workload topic (one partition per key) and waits until every partition has a
/// leader in the metadata.
pub async fn create_topic(options: &WorkloadOptions) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> =
        base_config(options).create().context("admin client")?;
    let topic = NewTopic::new(
        &options.topic,
        options.key_count as i32,
        TopicReplication::Fixed(3),
    )
    .set("min.insync.replicas", "2");
    let admin_options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let deadline = Instant::now() + SETUP_TIMEOUT;
    loop {
        let outcome = admin.create_topics([&topic], &admin_options).await;
        match outcome.as_ref().map(|results| results.first()) {
            Ok(Some(Ok(_))) => break,
            Ok(Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists)))) => break,
            _ if Instant::now() >= deadline => bail!("create topic: {outcome:?}"),
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
    let consumer: StreamConsumer = consumer_config(options).create()?;
    while Instant::now() < deadline {
        let topic_name = options.topic.clone();
        let metadata = tokio::task::block_in_place(|| {
            consumer.fetch_metadata(Some(&topic_name), Duration::from_secs(2))
        });
        if let Ok(metadata) = metadata {
            let ready = metadata.topics().iter().any(|t| {
                t.name() == options.topic
                    && t.partitions().len() == options.key_count as usize
                    && t.partitions().iter().all(|p| p.leader() >= 0)
            });
            if ready {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("topic {} has no leader for every partition", options.topic)
}

fn consumer_config(options: &WorkloadOptions) -> ClientConfig {
    let mut config = base_config(options);
    config
        .set("group.id", CONSUMER_GROUP_ID_UNUSED)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "100")
        // librdkafka does not check batch CRCs by default; a batch the broker serves with a
        // bad CRC (the bitflip nemesis) must be an error that leaves its values unread, not
        // records that look fine because only a field the client ignores changed.
        .set("check.crcs", "true");
    config
}

fn producer_config(options: &WorkloadOptions) -> ClientConfig {
    let mut config = base_config(options);
    config
        .set("acks", "all")
        .set("linger.ms", "0")
        .set("message.timeout.ms", MESSAGE_TIMEOUT_MS.to_string());
    if options.idempotent {
        // librdkafka needs retries > 0 with idempotence (its default); message.timeout.ms
        // bounds them.
        config.set("enable.idempotence", "true");
    } else {
        config
            .set("enable.idempotence", "false")
            .set("retries", "0");
    }
    config
}

/// Records the workload's settings as the history's first operation.
pub fn record_settings(shared: &Shared, options: &WorkloadOptions) {
    let mut op = Op::new(
        Process::Named(WORKLOAD_PROCESS.into()),
        OpType::Info,
        Function::Workload,
    );
    op.workload = Some(WorkloadSettings {
        idempotent: options.idempotent,
        kind: options.kind,
    });
    shared.record(op);
}

/// The leader epoch of the batch `message` came from, if the broker sent one (-1 otherwise).
fn leader_epoch(message: &rdkafka::message::BorrowedMessage<'_>) -> Option<LeaderEpoch> {
    // SAFETY: the pointer is the live message `message` borrows; librdkafka only reads it.
    let epoch = unsafe { rdkafka::bindings::rd_kafka_message_leader_epoch(message.ptr()) };
    (epoch >= 0).then_some(epoch)
}

/// One client process: a producer, a consumer and the consumer's positions.
struct Client {
    process: u64,
    producer: FutureProducer,
    consumer: StreamConsumer,
    assigned: Vec<Key>,
    positions: BTreeMap<Key, Offset>,
}

impl Client {
    fn create(
        shared: &Shared,
        options: &WorkloadOptions,
        positions: BTreeMap<Key, Offset>,
    ) -> anyhow::Result<Client> {
        Ok(Client {
            process: shared.new_process(),
            producer: producer_config(options).create().context("producer")?,
            consumer: consumer_config(options).create().context("consumer")?,
            assigned: Vec::new(),
            positions,
        })
    }

    fn op(&self, op_type: OpType, f: Function) -> Op {
        Op::new(Process::Client(self.process), op_type, f)
    }

    /// Assigns `keys` at this process's positions (0 for keys it has not read).
    fn assign(
        &mut self,
        shared: &Shared,
        topic: &str,
        keys: &[Key],
        high_watermarks: Option<BTreeMap<Key, Offset>>,
    ) -> anyhow::Result<()> {
        let mut list = TopicPartitionList::new();
        let mut positions = BTreeMap::new();
        for key in keys {
            let position = *self.positions.entry(*key).or_insert(0);
            list.add_partition_offset(topic, *key as i32, KafkaOffset::Offset(position))?;
            positions.insert(*key, position);
        }
        self.consumer.assign(&list).context("assign")?;
        self.assigned = keys.to_vec();
        let mut op = self.op(OpType::Ok, Function::Assign);
        op.positions = Some(positions);
        op.high_watermarks = high_watermarks;
        shared.record(op);
        Ok(())
    }

    /// One send; returns false when its outcome is unknown (the client must be rebuilt).
    async fn send(&mut self, shared: &Shared, topic: &str, key: Key) -> bool {
        send(shared, &self.producer, self.process, topic, key).await
    }

    /// One poll of the assigned keys for up to `window`; records the poll and returns what it
    /// read.
    async fn poll(
        &mut self,
        shared: &Shared,
        window: Duration,
        final_read: bool,
    ) -> BTreeMap<Key, Vec<(Offset, Value)>> {
        shared.record(self.op(OpType::Invoke, Function::Poll));
        let deadline = tokio::time::Instant::now() + window;
        let mut poll = PollReads::default();
        while poll.count < POLL_RECORDS_MAX {
            let message = match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                Err(_) => break,
                Ok(Err(consume_error)) => {
                    poll.error = Some(consume_error.to_string());
                    break;
                }
                Ok(Ok(message)) => message,
            };
            if !self.assigned.contains(&(message.partition() as Key)) {
                continue;
            }
            if let Some((key, offset)) = poll.add(&message) {
                self.positions.insert(key, offset + 1);
            }
        }
        let reads = poll.reads.clone();
        shared.record(poll.completion(self.op(OpType::Ok, Function::Poll), final_read));
        reads
    }
}

/// What one poll read, in the history's terms, while it runs.
#[derive(Default)]
struct PollReads {
    reads: BTreeMap<Key, Vec<(Offset, Value)>>,
    epochs: BTreeMap<Key, Vec<(Offset, LeaderEpoch)>>,
    last_epoch: BTreeMap<Key, LeaderEpoch>,
    count: usize,
    error: Option<String>,
}

impl PollReads {
    /// Records `message`; returns its key and offset, or None (and notes an error) when its
    /// value is not one of ours.
    fn add(&mut self, message: &rdkafka::message::BorrowedMessage<'_>) -> Option<(Key, Offset)> {
        let key = message.partition() as Key;
        let value = message
            .payload()
            .and_then(|bytes| std::str::from_utf8(bytes).ok())
            .and_then(|text| text.parse::<Value>().ok());
        let Some(value) = value else {
            self.error = Some(format!("unparsable value at {key}/{}", message.offset()));
            return None;
        };
        let offset = message.offset();
        self.reads.entry(key).or_default().push((offset, value));
        if let Some(epoch) = leader_epoch(message) {
            if self.last_epoch.insert(key, epoch) != Some(epoch) {
                self.epochs.entry(key).or_default().push((offset, epoch));
            }
        }
        self.count += 1;
        Some((key, offset))
    }

    /// The poll's completion: `op` with the reads, epochs and error filled in.
    fn completion(self, mut op: Op, final_read: bool) -> Op {
        op.reads = Some(self.reads);
        op.leader_epochs = (!self.epochs.is_empty()).then_some(self.epochs);
        op.final_read = final_read;
        op.error = self.error;
        op
    }
}

/// One send of a fresh value to `key` by `process`; returns false when its outcome is unknown
/// (the process's clients must be rebuilt).
async fn send(
    shared: &Shared,
    producer: &FutureProducer,
    process: u64,
    topic: &str,
    key: Key,
) -> bool {
    let value: Value = shared.next_value.fetch_add(1, Ordering::Relaxed);
    let mut invoke = Op::new(Process::Client(process), OpType::Invoke, Function::Send);
    invoke.key = Some(key);
    invoke.value = Some(value);
    shared.record(invoke.clone());
    let (key_bytes, value_bytes) = (key.to_string(), value.to_string());
    let record = FutureRecord::to(topic)
        .partition(key as i32)
        .key(&key_bytes)
        .payload(&value_bytes);
    let mut completion = invoke;
    let outcome = match producer.send_result(record) {
        Err((error, _)) => Err((OpType::Fail, error.to_string())),
        Ok(delivery) => match tokio::time::timeout(SEND_TIMEOUT, delivery).await {
            Ok(Ok(Ok(delivery))) if delivery.partition == key as i32 => Ok(delivery.offset),
            Ok(Ok(Ok(delivery))) => Err((
                OpType::Info,
                format!("delivered to partition {}", delivery.partition),
            )),
            Ok(Ok(Err((error, _)))) => Err((send_error_outcome(&error), error.to_string())),
            Ok(Err(_)) => Err((OpType::Info, "delivery report dropped".to_owned())),
            Err(_) => Err((
                OpType::Info,
                format!("no delivery report in {SEND_TIMEOUT:?}"),
            )),
        },
    };
    match outcome {
        Ok(offset) => {
            completion.op_type = OpType::Ok;
            completion.offset = Some(offset);
            shared.record(completion);
            true
        }
        Err((op_type, error)) => {
            completion.op_type = op_type;
            completion.error = Some(error);
            shared.record(completion);
            op_type == OpType::Fail
        }
    }
}

/// Whether a send that came back with `error` certainly did not append (`fail`) or may have
/// (`info`). Definite are the errors a broker returns *instead of* appending: no such
/// partition, too few in-sync replicas before the append, a record it refused. Every other
/// error, timeouts above all, is indefinite. Calling these `fail` is what lets the checker
/// catch a broker that answers one of them after it appended after all (`aborted-read`).
///
/// NOT_LEADER_OR_FOLLOWER is indefinite: Kafka (and Karst) answer it to an `acks=all` produce
/// that was appended but not yet replicated when leadership moved, and the new leader may
/// hold those records. (librdkafka re-sends on it and reports a timeout in the end anyway.)
fn send_error_outcome(error: &KafkaError) -> OpType {
    match error.rdkafka_error_code() {
        Some(
            RDKafkaErrorCode::UnknownTopicOrPartition
            | RDKafkaErrorCode::NotEnoughReplicas
            | RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidRecord,
        ) => OpType::Fail,
        _ => OpType::Info,
    }
}

/// One worker: ops at its share of the rate until `stop` or `deadline`, rebuilding its client
/// after every indefinite outcome.
pub async fn run_worker(
    worker: u32,
    shared: Arc<Shared>,
    options: Arc<WorkloadOptions>,
    deadline: Instant,
) -> anyhow::Result<()> {
    if options.kind == WorkloadKind::Groups {
        return groups::run_worker(worker, shared, options, deadline).await;
    }
    let mut random = Random::new(options.seed ^ (u64::from(worker) << 32));
    let mut client = Client::create(&shared, &options, BTreeMap::new())?;
    let interval = Duration::from_secs_f64(f64::from(options.concurrency) / options.rate.max(0.1));
    let mut next = tokio::time::Instant::now();
    while Instant::now() < deadline && !shared.stop.load(Ordering::Relaxed) {
        next += interval.mul_f64(0.5 + random.unit());
        next = next.max(tokio::time::Instant::now() - interval);
        tokio::time::sleep_until(next).await;
        let keys = options.active_keys_at(shared.started.elapsed());
        let healthy = if random.below(2) == 0 {
            let key = keys[random.below(keys.len() as u64) as usize];
            client.send(&shared, &options.topic, key).await
        } else {
            if client.assigned != keys {
                client.assign(&shared, &options.topic, &keys, None)?;
            }
            client.poll(&shared, options.poll_window, false).await;
            true
        };
        if !healthy {
            let positions = std::mem::take(&mut client.positions);
            client = Client::create(&shared, &options, positions)?;
        }
    }
    Ok(())
}

/// Reads every key from offset 0 to the high watermark found at the start (bounded by
/// [`FINAL_READ_TIMEOUT`]); returns the keys it could not finish.
pub async fn final_reads(shared: &Shared, options: &WorkloadOptions) -> anyhow::Result<Vec<Key>> {
    let deadline = Instant::now() + FINAL_READ_TIMEOUT;
    let mut client = Client::create(shared, options, BTreeMap::new())?;
    let keys: Vec<Key> = (0..options.key_count).collect();
    let mut high_watermarks: BTreeMap<Key, Offset> = BTreeMap::new();
    while high_watermarks.len() < keys.len() && Instant::now() < deadline {
        for key in &keys {
            if high_watermarks.contains_key(key) {
                continue;
            }
            let found = tokio::task::block_in_place(|| {
                client.consumer.fetch_watermarks(
                    &options.topic,
                    *key as i32,
                    Duration::from_secs(2),
                )
            });
            if let Ok((_low, high)) = found {
                high_watermarks.insert(*key, high);
            }
        }
    }
    client.assign(shared, &options.topic, &keys, Some(high_watermarks.clone()))?;
    let unfinished = |client: &Client| -> Vec<Key> {
        keys.iter()
            .copied()
            .filter(|key| {
                let high = high_watermarks.get(key).copied().unwrap_or(Offset::MAX);
                client.positions.get(key).copied().unwrap_or(0) < high
            })
            .collect()
    };
    while !unfinished(&client).is_empty() && Instant::now() < deadline {
        client.poll(shared, FINAL_POLL_WINDOW, true).await;
    }
    Ok(unfinished(&client))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> WorkloadOptions {
        WorkloadOptions {
            bootstrap_servers: String::new(),
            topic: "jepsen".into(),
            concurrency: 1,
            rate: 1.0,
            active_keys: 4,
            key_rotation: Duration::from_secs(15),
            key_count: 9,
            poll_window: Duration::from_millis(50),
            seed: 1,
            idempotent: false,
            kind: WorkloadKind::Assign,
        }
    }

    #[test]
    fn active_keys_rotate_one_per_interval_and_stop_at_the_last_partition() {
        let options = options();
        assert_eq!(options.active_keys_at(Duration::ZERO), vec![0, 1, 2, 3]);
        assert_eq!(
            options.active_keys_at(Duration::from_secs(16)),
            vec![1, 2, 3, 4]
        );
        assert_eq!(
            options.active_keys_at(Duration::from_secs(75)),
            vec![5, 6, 7, 8]
        );
        assert_eq!(
            options.active_keys_at(Duration::from_secs(600)),
            vec![5, 6, 7, 8]
        );
    }
}

#[cfg(test)]
mod send_error_tests {
    use super::*;

    #[test]
    fn only_refusals_before_the_append_are_definite_failures() {
        let outcome = |code| send_error_outcome(&KafkaError::MessageProduction(code));
        assert_eq!(outcome(RDKafkaErrorCode::NotEnoughReplicas), OpType::Fail);
        assert_eq!(
            outcome(RDKafkaErrorCode::UnknownTopicOrPartition),
            OpType::Fail
        );
        // A leader that lost leadership after appending answers NOT_LEADER_OR_FOLLOWER.
        assert_eq!(
            outcome(RDKafkaErrorCode::NotLeaderForPartition),
            OpType::Info
        );
        assert_eq!(
            outcome(RDKafkaErrorCode::NotEnoughReplicasAfterAppend),
            OpType::Info
        );
        assert_eq!(outcome(RDKafkaErrorCode::MessageTimedOut), OpType::Info);
        assert_eq!(outcome(RDKafkaErrorCode::RequestTimedOut), OpType::Info);
    }
}
