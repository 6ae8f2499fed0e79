//! The `groups` workload: consumers as members of one consumer group, in the style of Jepsen's
//! Kafka test in subscribe mode.
//!
//! Every process has a producer (sends as in the assign workload) and a consumer that
//! `subscribe`s to the topic in group [`GROUP_ID`] with `enable.auto.commit=false`. After each
//! poll it commits, synchronously, the offset after the last record it read of each key (a
//! `commit` operation: `ok`, `fail` when the coordinator refused it before storing anything,
//! `info` otherwise). An indefinite send or commit tears the process down: its consumer
//! leaves the group and a new process joins, which is what makes the group rebalance.
//!
//! Rebalances reach librdkafka's rebalance callback inside `recv`. The callback only notes the
//! new assignment ([`MemberContext`]); the poll loop sees it after `recv` returns, closes the
//! poll it was in, records a `rebalance` with the assignment and goes on in a new poll. So every
//! poll reads within one assignment, and only reads made since the last rebalance are committed
//! (reads of a revoked partition are left for its next owner to read again: at least once).
//!
//! At the end, after the final reads, the group's committed offsets are read back once
//! (`fetch-committed`).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::StreamConsumer;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureProducer;
use rdkafka::{ClientContext, Message, Offset as KafkaOffset, TopicPartitionList};

use super::{
    base_config, producer_config, send, PollReads, Shared, WorkloadOptions, POLL_RECORDS_MAX,
};
use crate::history::{Function, Key, Offset, Op, OpType, Process};
use crate::random::Random;

/// The one consumer group every process of a run joins.
pub const GROUP_ID: &str = "karst-jepsen-group";
/// Our bound on a synchronous commit: librdkafka waits for a coordinator without limit.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long reading the committed offsets back may take at the end.
const FETCH_COMMITTED_TIMEOUT: Duration = Duration::from_secs(10);
/// Member liveness: short, so a member that stopped heartbeating leaves the group within a
/// fault window; Karst's group.min.session.timeout.ms (6 s, as Kafka) allows it.
const SESSION_TIMEOUT_MS: u32 = 10_000;
const HEARTBEAT_INTERVAL_MS: u32 = 1_000;

/// The latest assignment librdkafka gave this member, noted by the rebalance callback.
#[derive(Default)]
struct AssignmentNote {
    /// Rebalance callbacks seen so far (revocations and errors included).
    changes: u64,
    keys: Vec<Key>,
}

/// The consumer's context: notes every assignment change for the poll loop to record.
#[derive(Default)]
pub struct MemberContext {
    note: Mutex<AssignmentNote>,
}

impl ClientContext for MemberContext {}

impl ConsumerContext for MemberContext {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        // After a revocation or an error rdkafka has unassigned everything (eager protocol).
        let mut keys: Vec<Key> = match rebalance {
            Rebalance::Assign(list) => list
                .elements()
                .iter()
                .map(|element| element.partition() as Key)
                .collect(),
            Rebalance::Revoke(_) | Rebalance::Error(_) => Vec::new(),
        };
        keys.sort_unstable();
        let mut note = self.note.lock().expect("assignment note lock poisoned");
        note.changes += 1;
        note.keys = keys;
    }
}

type MemberConsumer = StreamConsumer<MemberContext>;

fn member_config(options: &WorkloadOptions) -> rdkafka::ClientConfig {
    let mut config = base_config(options);
    config
        .set("group.id", GROUP_ID)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "100")
        .set("session.timeout.ms", SESSION_TIMEOUT_MS.to_string())
        .set("heartbeat.interval.ms", HEARTBEAT_INTERVAL_MS.to_string());
    config
}

/// One process of the groups workload: a producer and a group member.
struct Member {
    process: u64,
    producer: FutureProducer,
    /// Shared with a commit running on a blocking thread, which may outlive a timeout.
    consumer: Arc<MemberConsumer>,
    /// The assignment last recorded, and how many changes the context had noted then.
    assignment: Vec<Key>,
    changes_recorded: u64,
}

impl Member {
    fn join(shared: &Shared, options: &WorkloadOptions) -> anyhow::Result<Member> {
        let consumer: MemberConsumer = member_config(options)
            .create_with_context(MemberContext::default())
            .context("group consumer")?;
        consumer
            .subscribe(&[options.topic.as_str()])
            .context("subscribe")?;
        Ok(Member {
            process: shared.new_process(),
            producer: producer_config(options).create().context("producer")?,
            consumer: Arc::new(consumer),
            assignment: Vec::new(),
            changes_recorded: 0,
        })
    }

    fn op(&self, op_type: OpType, f: Function) -> Op {
        Op::new(Process::Client(self.process), op_type, f)
    }

    /// Records a `rebalance` if the assignment changed since the last one recorded.
    fn record_rebalance(&mut self, shared: &Shared) -> bool {
        let (changes, keys) = {
            let note = self
                .consumer
                .context()
                .note
                .lock()
                .expect("assignment note lock poisoned");
            (note.changes, note.keys.clone())
        };
        if changes == self.changes_recorded {
            return false;
        }
        self.changes_recorded = changes;
        self.assignment = keys.clone();
        let mut op = self.op(OpType::Ok, Function::Rebalance);
        op.assignment = Some(keys);
        shared.record(op);
        true
    }

    /// Polls for up to `window`, split into one `poll` per assignment (a rebalance in between
    /// closes one and opens the next); returns what was read since the last rebalance.
    async fn poll(&mut self, shared: &Shared, window: Duration) -> BTreeMap<Key, Offset> {
        self.record_rebalance(shared);
        shared.record(self.op(OpType::Invoke, Function::Poll));
        let deadline = tokio::time::Instant::now() + window;
        let mut poll = PollReads::default();
        // A local handle: the messages borrow it, not `self`, which records rebalances.
        let consumer = Arc::clone(&self.consumer);
        while poll.count < POLL_RECORDS_MAX {
            let received = tokio::time::timeout_at(deadline, consumer.recv()).await;
            // The rebalance callback runs inside recv, before any message of the new
            // assignment is returned: the poll so far belongs to the old assignment.
            if self.has_unrecorded_change() {
                let finished = std::mem::take(&mut poll);
                shared.record(finished.completion(self.op(OpType::Ok, Function::Poll), false));
                self.record_rebalance(shared);
                shared.record(self.op(OpType::Invoke, Function::Poll));
            }
            match received {
                Err(_) => break,
                Ok(Err(consume_error)) => {
                    poll.error = Some(consume_error.to_string());
                    break;
                }
                Ok(Ok(message)) => {
                    if self.assignment.contains(&(message.partition() as Key)) {
                        poll.add(&message);
                    }
                }
            }
        }
        let next_offsets = poll
            .reads
            .iter()
            .filter_map(|(key, records)| Some((*key, records.last()?.0 + 1)))
            .collect();
        shared.record(poll.completion(self.op(OpType::Ok, Function::Poll), false));
        next_offsets
    }

    fn has_unrecorded_change(&self) -> bool {
        let note = self
            .consumer
            .context()
            .note
            .lock()
            .expect("assignment note lock poisoned");
        note.changes != self.changes_recorded
    }

    /// Commits `offsets` synchronously (bounded by [`COMMIT_TIMEOUT`]); returns false when the
    /// outcome is unknown (the process must be torn down).
    async fn commit(
        &mut self,
        shared: &Shared,
        topic: &str,
        offsets: BTreeMap<Key, Offset>,
    ) -> bool {
        let mut list = TopicPartitionList::new();
        for (key, offset) in &offsets {
            if list
                .add_partition_offset(topic, *key as i32, KafkaOffset::Offset(*offset))
                .is_err()
            {
                return true; // cannot happen for a valid offset; nothing was committed
            }
        }
        let mut invoke = self.op(OpType::Invoke, Function::Commit);
        invoke.offsets = Some(offsets);
        shared.record(invoke.clone());
        let consumer = Arc::clone(&self.consumer);
        let commit = tokio::task::spawn_blocking(move || consumer.commit(&list, CommitMode::Sync));
        let (op_type, error) = match tokio::time::timeout(COMMIT_TIMEOUT, commit).await {
            Ok(Ok(Ok(()))) => (OpType::Ok, None),
            Ok(Ok(Err(error))) => (commit_error_outcome(&error), Some(error.to_string())),
            Ok(Err(join_error)) => (OpType::Info, Some(format!("commit task: {join_error}"))),
            Err(_) => (
                OpType::Info,
                Some(format!("no commit result in {COMMIT_TIMEOUT:?}")),
            ),
        };
        let mut completion = invoke;
        completion.op_type = op_type;
        completion.error = error;
        shared.record(completion);
        op_type != OpType::Info
    }

    /// Leaves the group off the async threads: closing a consumer waits for the coordinator.
    fn leave(self) {
        let Member {
            consumer, producer, ..
        } = self;
        tokio::task::spawn_blocking(move || {
            drop(consumer);
            drop(producer);
        });
    }
}

/// Whether a commit that came back with `error` certainly stored nothing (`fail`): the
/// coordinator's refusals before it writes (wrong generation, unknown member, a rebalance in
/// progress, …). Every other error is `info` — Karst, like Kafka, answers NOT_COORDINATOR or
/// COORDINATOR_NOT_AVAILABLE also when the write to `__consumer_offsets` failed after it was
/// appended, and a timeout says nothing.
fn commit_error_outcome(error: &KafkaError) -> OpType {
    match error.rdkafka_error_code() {
        Some(
            RDKafkaErrorCode::IllegalGeneration
            | RDKafkaErrorCode::UnknownMemberId
            | RDKafkaErrorCode::RebalanceInProgress
            | RDKafkaErrorCode::FencedInstanceId
            | RDKafkaErrorCode::OffsetMetadataTooLarge,
        ) => OpType::Fail,
        _ => OpType::Info,
    }
}

/// One worker of the groups workload: sends and polls (each poll followed by a commit of what
/// it read) at its share of the rate, until `stop` or `deadline`.
pub async fn run_worker(
    worker: u32,
    shared: Arc<Shared>,
    options: Arc<WorkloadOptions>,
    deadline: Instant,
) -> anyhow::Result<()> {
    let mut random = Random::new(options.seed ^ (u64::from(worker) << 32));
    let mut member = Member::join(&shared, &options)?;
    let interval = Duration::from_secs_f64(f64::from(options.concurrency) / options.rate.max(0.1));
    let mut next = tokio::time::Instant::now();
    while Instant::now() < deadline && !shared.stop.load(Ordering::Relaxed) {
        next += interval.mul_f64(0.5 + random.unit());
        next = next.max(tokio::time::Instant::now() - interval);
        tokio::time::sleep_until(next).await;
        let healthy = if random.below(2) == 0 {
            let keys = options.active_keys_at(shared.started.elapsed());
            let key = keys[random.below(keys.len() as u64) as usize];
            send(
                &shared,
                &member.producer,
                member.process,
                &options.topic,
                key,
            )
            .await
        } else {
            let offsets = member.poll(&shared, options.poll_window).await;
            offsets.is_empty() || member.commit(&shared, &options.topic, offsets).await
        };
        if !healthy {
            member.leave();
            member = Member::join(&shared, &options)?;
        }
    }
    member.leave();
    Ok(())
}

/// Reads the group's committed offsets of every key once and records them
/// (`fetch-committed`): the checker compares them with the commits acknowledged before.
pub async fn fetch_committed(shared: &Shared, options: &WorkloadOptions) -> anyhow::Result<()> {
    // A consumer of the group that never subscribes does not join it: OffsetFetch only.
    let consumer: BaseConsumer = member_config(options).create().context("consumer")?;
    let mut list = TopicPartitionList::new();
    for key in 0..options.key_count {
        list.add_partition(&options.topic, key as i32);
    }
    let process = Process::Client(shared.new_process());
    shared.record(Op::new(
        process.clone(),
        OpType::Invoke,
        Function::FetchCommitted,
    ));
    let fetched =
        tokio::task::block_in_place(|| consumer.committed_offsets(list, FETCH_COMMITTED_TIMEOUT));
    let mut completion = Op::new(process, OpType::Ok, Function::FetchCommitted);
    match fetched {
        Ok(list) => {
            let offsets: BTreeMap<Key, Offset> = list
                .elements()
                .iter()
                .filter_map(|element| match element.offset() {
                    KafkaOffset::Offset(offset) => Some((element.partition() as Key, offset)),
                    _ => None,
                })
                .collect();
            completion.offsets = Some(offsets);
        }
        Err(error) => {
            completion.op_type = OpType::Fail;
            completion.error = Some(error.to_string());
        }
    }
    shared.record(completion);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_refusals_before_the_write_are_definite_commit_failures() {
        let outcome = |code| commit_error_outcome(&KafkaError::ConsumerCommit(code));
        assert_eq!(outcome(RDKafkaErrorCode::IllegalGeneration), OpType::Fail);
        assert_eq!(outcome(RDKafkaErrorCode::RebalanceInProgress), OpType::Fail);
        assert_eq!(outcome(RDKafkaErrorCode::UnknownMemberId), OpType::Fail);
        // Also answered when the write to __consumer_offsets failed after the append.
        assert_eq!(outcome(RDKafkaErrorCode::NotCoordinator), OpType::Info);
        assert_eq!(
            outcome(RDKafkaErrorCode::CoordinatorNotAvailable),
            OpType::Info
        );
        assert_eq!(outcome(RDKafkaErrorCode::RequestTimedOut), OpType::Info);
    }
}
