//! The checker: reads a history and decides whether Karst behaved like a Kafka log.
//!
//! The model is Jepsen's Kafka test: each key is a partition, a totally ordered log where each
//! offset holds at most one value and each value (unique per run) sits at one offset. From every
//! acknowledged send and every poll the checker rebuilds each partition's log
//! ([`logs::PartitionLogs`]) and reports, each with example operations:
//!
//! | anomaly | meaning | where |
//! |---|---|---|
//! | `lost-write` | an acknowledged send whose value no poll saw, although some poll read at or past its offset | [`logs`] |
//! | `duplicate` | one value at two offsets (not explained by a client re-send) | [`logs`] |
//! | `resend-duplicate` | one value at two offsets, each copy in a later leader epoch, producer not idempotent: librdkafka re-sent a batch the old leader had appended (informational) | [`logs`] |
//! | `inconsistent-offsets` | two values at one offset | [`logs`] |
//! | `aborted-read` | a poll saw the value of a send that definitely failed | [`logs`] |
//! | `unseen` | an acknowledged value no poll saw, beyond what polls reached (an anomaly only when the history has final reads) | [`logs`] |
//! | `nonmonotonic-poll` | a process's polls of a key went back (or repeated) in the log | [`order`] |
//! | `poll-skip` | a process's polls of a key jumped over offsets that hold values | [`order`] |
//! | `nonmonotonic-send` | a process's acknowledged sends to a key went back in the log | [`order`] |
//! | `send-skip` | other values sit between two consecutive sends of one process (informational: expected with several writers per key) | [`order`] |
//! | `nonmonotonic-commit` | the group's committed offset of a key went back (groups workload) | [`groups`] |
//! | `lost-to-group` | a value no group member read although the group committed past it | [`groups`] |
//! | `skipped-after-rebalance` | after a rebalance a member started beyond the group's commits, skipping values | [`groups`] |
//! | `corrupt-read` | a poll failed the client's CRC check (`check.crcs`): the broker served a damaged batch | [`check`] |
//! | `node-crash` | a node exited although the nemesis did not kill it | [`check`] |
//! | `send-stall` | the same for sends alone: sends attempted, none acknowledged | [`liveness`] |
//! | `stall` | no operation succeeded for a window while no fault (plus a recovery grace) was active | [`liveness`] |
//!
//! [`check`] returns [`Results`], which `karst-jepsen check` writes as `results.json`.

pub mod groups;
pub mod liveness;
pub mod logs;
pub mod order;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value as Json;

use crate::history::{Function, Op, OpType, Process, WorkloadSettings};

/// Examples kept per anomaly in `results.json`: enough to debug, small enough to read.
pub const EXAMPLES_PER_ANOMALY_MAX: usize = 8;

/// Tunables of the checks that depend on time.
#[derive(Debug, Clone, Copy)]
pub struct CheckOptions {
    /// A stretch without any successful client operation at least this long is a stall.
    pub stall_window_ns: u64,
    /// After a heal the cluster gets this long to recover before a stall counts.
    pub recovery_grace_ns: u64,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            stall_window_ns: 10_000_000_000,
            recovery_grace_ns: 10_000_000_000,
        }
    }
}

/// Anomalies that make a history invalid whenever they occur.
const FATAL_ANOMALIES: &[&str] = &[
    "lost-write",
    "duplicate",
    "inconsistent-offsets",
    "aborted-read",
    "nonmonotonic-poll",
    "poll-skip",
    "nonmonotonic-send",
    "nonmonotonic-commit",
    "lost-to-group",
    "skipped-after-rebalance",
    "stall",
    "send-stall",
    "node-crash",
    "corrupt-read",
];

/// How librdkafka reports a batch that fails its CRC check (`check.crcs=true`).
const CORRUPT_BATCH_ERROR: &str = "BadMessage";

/// Collects anomalies: a count per name and the first few examples.
#[derive(Debug, Default)]
pub struct Findings {
    counts: BTreeMap<&'static str, usize>,
    examples: BTreeMap<&'static str, Vec<Json>>,
}

impl Findings {
    pub fn add(&mut self, anomaly: &'static str, example: Json) {
        *self.counts.entry(anomaly).or_default() += 1;
        let examples = self.examples.entry(anomaly).or_default();
        if examples.len() < EXAMPLES_PER_ANOMALY_MAX {
            examples.push(example);
        }
    }

    pub fn count(&self, anomaly: &str) -> usize {
        self.counts.get(anomaly).copied().unwrap_or(0)
    }
}

/// Operation counts by function and outcome, for the report.
#[derive(Debug, Default, Serialize)]
pub struct OpCounts {
    pub send: BTreeMap<String, u64>,
    pub poll: BTreeMap<String, u64>,
    /// Group commits (the groups workload only).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub commit: BTreeMap<String, u64>,
    pub faults: u64,
    /// Faults injected without an error, by family (`partition`, `kill`, `pause`, `clock`).
    pub faults_injected: BTreeMap<String, u64>,
}

/// What `results.json` holds.
#[derive(Debug, Serialize)]
pub struct Results {
    pub valid: bool,
    /// The anomalies that made the history invalid.
    pub invalid_because: Vec<String>,
    /// Every anomaly found, with its count (informational ones included).
    pub anomaly_counts: BTreeMap<String, usize>,
    pub examples: BTreeMap<String, Vec<Json>>,
    pub ops: OpCounts,
    /// Acknowledged sends, and how many of them some poll saw.
    pub acknowledged_sends: usize,
    pub acknowledged_sends_read: usize,
    pub has_final_reads: bool,
    /// The workload's settings the verdict assumed.
    pub workload: WorkloadSettings,
}

/// Checks a history (in the order it was recorded).
pub fn check(history: &[Op], options: &CheckOptions) -> Results {
    let mut findings = Findings::default();
    let partition_logs = logs::PartitionLogs::build(history);
    // The final reader's assign counts too: with every high watermark at 0 it needs no poll.
    let has_final_reads = history.iter().any(|op| {
        (op.f == Function::Poll && op.op_type == OpType::Ok && op.final_read)
            || (op.f == Function::Assign && op.high_watermarks.is_some())
    });
    partition_logs.find_anomalies(has_final_reads, &mut findings);
    order::find_poll_anomalies(history, &partition_logs, &mut findings);
    order::find_send_anomalies(history, &partition_logs, &mut findings);
    groups::find_group_anomalies(history, &partition_logs, &mut findings);
    liveness::find_stalls(history, options, &mut findings);
    for op in history.iter().filter(|op| op.f == Function::NodeExited) {
        findings.add("node-crash", describe(op));
    }
    for op in history.iter().filter(|op| {
        op.f == Function::Poll
            && op
                .error
                .as_deref()
                .is_some_and(|error| error.contains(CORRUPT_BATCH_ERROR))
    }) {
        findings.add("corrupt-read", describe(op));
    }

    let mut invalid_because: Vec<String> = FATAL_ANOMALIES
        .iter()
        .filter(|name| findings.count(name) > 0)
        .map(|name| name.to_string())
        .collect();
    if has_final_reads && findings.count("unseen") > 0 {
        invalid_because.push("unseen".to_owned());
    }
    let acknowledged_sends = partition_logs.acknowledged.len();
    let acknowledged_sends_read = partition_logs
        .acknowledged
        .keys()
        .filter(|written| partition_logs.read_values.contains(written))
        .count();
    Results {
        valid: invalid_because.is_empty(),
        invalid_because,
        anomaly_counts: findings
            .counts
            .iter()
            .map(|(name, count)| (name.to_string(), *count))
            .collect(),
        examples: findings
            .examples
            .into_iter()
            .map(|(name, examples)| (name.to_string(), examples))
            .collect(),
        ops: count_ops(history),
        acknowledged_sends,
        acknowledged_sends_read,
        has_final_reads,
        workload: partition_logs.settings,
    }
}

fn count_ops(history: &[Op]) -> OpCounts {
    let mut counts = OpCounts::default();
    for op in history {
        let outcome = match op.op_type {
            OpType::Invoke => "invoke",
            OpType::Ok => "ok",
            OpType::Fail => "fail",
            OpType::Info => "info",
        };
        match (op.f, &op.process) {
            (Function::Send, Process::Client(_)) => {
                *counts.send.entry(outcome.to_owned()).or_default() += 1
            }
            (Function::Poll, Process::Client(_)) => {
                *counts.poll.entry(outcome.to_owned()).or_default() += 1
            }
            (Function::Commit, Process::Client(_)) => {
                *counts.commit.entry(outcome.to_owned()).or_default() += 1
            }
            (Function::StartFault, _) if op.op_type == OpType::Invoke => counts.faults += 1,
            (Function::StartFault, _) if op.op_type == OpType::Info && op.error.is_none() => {
                let family = op
                    .fault
                    .as_deref()
                    .and_then(fault_family)
                    .unwrap_or("unknown");
                *counts.faults_injected.entry(family.to_owned()).or_default() += 1;
            }
            _ => {}
        }
    }
    counts
}

/// Families whose names have a dash of their own.
const DASHED_FAMILIES: [&str; 1] = ["lose-unsynced"];

/// The family of a fault name: `kill-leader` → `kill`, `clock-bump-one n3+5s` → `clock`,
/// `lose-unsynced-all` → `lose-unsynced`.
pub fn fault_family(fault: &str) -> Option<&str> {
    if let Some(family) = DASHED_FAMILIES
        .iter()
        .find(|family| fault.starts_with(&format!("{family}-")))
    {
        return Some(family);
    }
    fault.split('-').next().filter(|family| !family.is_empty())
}

/// A short description of an operation for examples: its index, process, time and what it did.
pub fn describe(op: &Op) -> Json {
    let mut described = serde_json::to_value(op).unwrap_or(Json::Null);
    // Polls can read thousands of values; the example keeps the interesting key only (callers
    // add it) and the size of the rest.
    if let Some(reads) = &op.reads {
        let sizes: BTreeMap<String, usize> = reads
            .iter()
            .map(|(key, values)| (key.to_string(), values.len()))
            .collect();
        described["reads"] = serde_json::json!({ "values_per_key": sizes });
    }
    described
}
