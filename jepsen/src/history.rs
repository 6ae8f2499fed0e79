//! The history of a run: every operation the workload and the nemesis performed, one JSON
//! object per line (`history.jsonl`).
//!
//! An operation is recorded twice, as in Jepsen: an `invoke` entry when it starts and a
//! completion when it ends, with the same `process`:
//!
//! * `ok` — it happened (a send was acknowledged at `offset`; a poll returned `reads`);
//! * `fail` — it certainly did not happen (a send that never left the client);
//! * `info` — unknown: it may or may not have happened (a send whose acknowledgement was lost,
//!   a timeout). The process that saw an `info` is never used again: its client is torn down
//!   and the worker continues under a new process number, so every process is sequential.
//!
//! In the `groups` workload the consumers are members of one consumer group: a `rebalance`
//! records each new assignment a member got (between its polls), and a `commit` the offsets a
//! member committed after a poll (invoke, then ok/fail/info like a send). The run ends with one
//! `fetch-committed`: the group's committed offsets read back after the final reads.
//!
//! The workload writes keys as integers; key `k` is partition `k` of the run's topic. Values are
//! unique integers across the whole run, so a value names the one send that wrote it.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// A key of the workload: partition `Key` of the run's topic.
pub type Key = u32;
/// A value a send wrote; unique across a run.
pub type Value = u64;
/// A Kafka offset inside one partition.
pub type Offset = i64;
/// The partition leader epoch stamped on a record batch by the leader that appended it.
pub type LeaderEpoch = i32;

/// The name of the process that injects faults, in `process` of nemesis entries.
pub const NEMESIS_PROCESS: &str = "nemesis";

/// Who performed an operation: a client process (sequential, numbered) or the nemesis.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Process {
    Client(u64),
    Named(String),
}

/// Where an operation is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpType {
    Invoke,
    Ok,
    Fail,
    Info,
}

/// What an operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Function {
    /// Produce one value to one key (acks=all).
    Send,
    /// Read whatever the consumer's assigned keys return within a short window.
    Poll,
    /// (Re)assign the consumer: positions restart at `positions`, so order checks restart.
    Assign,
    /// The nemesis starts a fault (`fault` says which, `nodes` on which nodes).
    StartFault,
    /// The nemesis heals every fault it started.
    Heal,
    /// A node exited although nothing killed it (a crash): `nodes` says which, `error` how.
    NodeExited,
    /// The workload's settings (`workload`), first in a history: they decide which anomalies
    /// the checker may allow.
    Workload,
    /// A group member's assignment changed (`assignment`: the keys it owns now, possibly
    /// none); it reads them from the group's committed offsets. Restarts order checks, like
    /// `assign`.
    Rebalance,
    /// A group member commits `offsets` (per key, the next offset to read) for the group.
    Commit,
    /// The group's committed offsets (`offsets`), read once after the final reads.
    FetchCommitted,
}

/// How the workload's consumers read: each process assigns itself the active keys, or all
/// processes are members of one consumer group that subscribes to the topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum WorkloadKind {
    /// `assign`: every process reads the active keys at its own positions.
    #[default]
    Assign,
    /// `subscribe` in one consumer group, manual commits after each poll.
    Groups,
}

/// How the workload's clients produce and consume, as far as the checker needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct WorkloadSettings {
    /// Producers run with `enable.idempotence=true`: the broker must drop re-sent batches, so
    /// no value may be stored twice.
    pub idempotent: bool,
    /// How consumers read (histories from before groups have none: `assign`).
    #[serde(default)]
    pub kind: WorkloadKind,
}

/// One line of `history.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Op {
    /// Position in the history, from 0.
    pub index: u64,
    /// Nanoseconds since the run started (monotonic clock of the harness).
    pub time_ns: u64,
    pub process: Process,
    #[serde(rename = "type")]
    pub op_type: OpType,
    pub f: Function,
    /// Send: the key written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Key>,
    /// Send: the value written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    /// Send ok: the offset the broker acknowledged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<Offset>,
    /// Poll ok: per key, the `[offset, value]` pairs in the order the consumer delivered them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reads: Option<BTreeMap<Key, Vec<(Offset, Value)>>>,
    /// Poll ok: per key, the leader epoch of the batches read, run-length coded: each
    /// `[offset, epoch]` says the records read from `offset` on (up to the next entry) carry
    /// that partition leader epoch. Keys whose epochs the client did not report are absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_epochs: Option<BTreeMap<Key, Vec<(Offset, LeaderEpoch)>>>,
    /// Assign: the position of each assigned key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub positions: Option<BTreeMap<Key, Offset>>,
    /// Assign of the final reader: each key's high watermark when the final reads began; the
    /// final reads of a key are complete once they returned the record before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub high_watermarks: Option<BTreeMap<Key, Offset>>,
    /// Poll: true for the final reads after the last heal, which must see every acknowledged
    /// value (`unseen` counts only when a history has them).
    #[serde(default, skip_serializing_if = "is_false")]
    pub final_read: bool,
    /// Nemesis: the fault, e.g. `partition-isolate-controller`, `kill-minority`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<String>,
    /// Nemesis: the node ids affected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<u32>>,
    /// fail/info: what the client or the nemesis reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Workload: its settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<WorkloadSettings>,
    /// Rebalance: the keys the member owns from now on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignment: Option<Vec<Key>>,
    /// Commit: per key, the offset committed (the next one to read); fetch-committed: the
    /// group's committed offset of each key that has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offsets: Option<BTreeMap<Key, Offset>>,
}

fn is_false(value: &bool) -> bool {
    !*value
}

impl Op {
    /// An operation with only the mandatory fields set; the builders below add the rest.
    pub fn new(process: Process, op_type: OpType, f: Function) -> Op {
        Op {
            index: 0,
            time_ns: 0,
            process,
            op_type,
            f,
            key: None,
            value: None,
            offset: None,
            reads: None,
            leader_epochs: None,
            positions: None,
            high_watermarks: None,
            final_read: false,
            fault: None,
            nodes: None,
            error: None,
            workload: None,
            assignment: None,
            offsets: None,
        }
    }

    pub fn is_client(&self) -> bool {
        matches!(self.process, Process::Client(_))
    }
}

/// Appends operations to `history.jsonl`, numbering them and stamping their time.
pub struct HistoryWriter {
    out: BufWriter<File>,
    next_index: u64,
    started: std::time::Instant,
}

impl HistoryWriter {
    pub fn create(path: &Path, started: std::time::Instant) -> anyhow::Result<HistoryWriter> {
        let file = File::create(path).with_context(|| format!("create {}", path.display()))?;
        Ok(HistoryWriter {
            out: BufWriter::new(file),
            next_index: 0,
            started,
        })
    }

    /// Records `op` now and returns it as written (with its index and time).
    pub fn record(&mut self, mut op: Op) -> anyhow::Result<Op> {
        op.index = self.next_index;
        op.time_ns = self.started.elapsed().as_nanos() as u64;
        self.next_index += 1;
        serde_json::to_writer(&mut self.out, &op)?;
        self.out.write_all(b"\n")?;
        Ok(op)
    }

    pub fn flush(&mut self) -> anyhow::Result<()> {
        self.out.flush().context("flush history")
    }
}

/// Reads a `history.jsonl` written by [`HistoryWriter`] (or by hand).
pub fn read_history(path: &Path) -> anyhow::Result<Vec<Op>> {
    let file = File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut ops = Vec::new();
    for (number, line) in BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("read {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let op: Op = serde_json::from_str(&line)
            .with_context(|| format!("{}:{}: not an operation", path.display(), number + 1))?;
        ops.push(op);
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_operation_round_trips_through_one_json_line() {
        let mut op = Op::new(Process::Client(3), OpType::Ok, Function::Poll);
        op.reads = Some(BTreeMap::from([(1, vec![(0, 10), (1, 11)])]));
        let line = serde_json::to_string(&op).unwrap();
        assert_eq!(
            line,
            r#"{"index":0,"time_ns":0,"process":3,"type":"ok","f":"poll","reads":{"1":[[0,10],[1,11]]}}"#
        );
        assert_eq!(serde_json::from_str::<Op>(&line).unwrap(), op);
        let nemesis = Op::new(
            Process::Named(NEMESIS_PROCESS.into()),
            OpType::Info,
            Function::StartFault,
        );
        let line = serde_json::to_string(&nemesis).unwrap();
        assert!(line.contains(r#""process":"nemesis""#), "{line}");
        assert_eq!(serde_json::from_str::<Op>(&line).unwrap(), nemesis);
    }
}
