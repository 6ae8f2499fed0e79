//! Order checks per process and key: polls and sends must move forward through a key's
//! version order, and polls must not jump over values.
//!
//! A process is sequential, so its successive ok polls of a key continue where the last one
//! stopped — unless an `assign` or a group `rebalance` moved the consumer (that restarts the
//! check for the process; [`super::groups`] checks where a member starts after a rebalance).
//! Positions are compared in the version order ([`PartitionLogs::version_index`]), not as raw
//! offsets, so gaps Kafka leaves legitimately (offsets with no known value) are no skips.

use std::collections::HashMap;

use serde_json::json;

use super::logs::{OpPosition, PartitionLogs};
use super::{describe, Findings};
use crate::history::{Function, Key, Offset, Op, OpType, Process};

/// Where a process last was in a key's log, and which operation put it there.
#[derive(Clone, Copy)]
struct LastSeen {
    offset: Offset,
    position: OpPosition,
}

/// `nonmonotonic-poll` and `poll-skip`, both across successive polls of one process and inside
/// one poll.
pub fn find_poll_anomalies(history: &[Op], logs: &PartitionLogs, findings: &mut Findings) {
    let mut last_seen: HashMap<(Process, Key), LastSeen> = HashMap::new();
    for (position, op) in history.iter().enumerate() {
        if !op.is_client() {
            continue;
        }
        match (op.f, op.op_type) {
            // A new assignment (or a group rebalance) moves the consumer: restart its checks.
            (Function::Assign | Function::Rebalance, _) => {
                last_seen.retain(|(process, _), _| *process != op.process)
            }
            (Function::Poll, OpType::Ok) => {
                for (key, records) in op.reads.iter().flatten() {
                    for &(offset, _value) in records {
                        let slot = (op.process.clone(), *key);
                        if let Some(previous) = last_seen.get(&slot) {
                            compare_poll(logs, *key, *previous, offset, position, findings);
                        }
                        last_seen.insert(slot, LastSeen { offset, position });
                    }
                }
            }
            _ => {}
        }
    }
}

fn compare_poll(
    logs: &PartitionLogs,
    key: Key,
    previous: LastSeen,
    offset: Offset,
    position: OpPosition,
    findings: &mut Findings,
) {
    let (Some(from), Some(to)) = (
        logs.version_index(key, previous.offset),
        logs.version_index(key, offset),
    ) else {
        return; // both offsets were observed, so this cannot happen; stay silent if it does
    };
    let example = || {
        json!({
            "key": key,
            "from_offset": previous.offset,
            "to_offset": offset,
            "within_one_poll": previous.position == position,
            "previous_op": describe(logs.op(previous.position)),
            "op": describe(logs.op(position)),
        })
    };
    if to <= from {
        findings.add("nonmonotonic-poll", example());
    } else if to > from + 1 {
        let mut example = example();
        example["skipped_offsets"] = json!(logs.offsets_between(key, previous.offset, offset));
        findings.add("poll-skip", example);
    }
}

/// `nonmonotonic-send` and (informational) `send-skip` over each process's acknowledged sends
/// to a key, in the order they completed.
pub fn find_send_anomalies(history: &[Op], logs: &PartitionLogs, findings: &mut Findings) {
    let mut last_sent: HashMap<(Process, Key), LastSeen> = HashMap::new();
    for (position, op) in history.iter().enumerate() {
        if !op.is_client() || op.f != Function::Send || op.op_type != OpType::Ok {
            continue;
        }
        let (Some(key), Some(offset)) = (op.key, op.offset) else {
            continue;
        };
        let slot = (op.process.clone(), key);
        if let Some(previous) = last_sent.get(&slot) {
            let example = || {
                json!({
                    "key": key,
                    "from_offset": previous.offset,
                    "to_offset": offset,
                    "previous_op": describe(logs.op(previous.position)),
                    "op": describe(op),
                })
            };
            if offset <= previous.offset {
                findings.add("nonmonotonic-send", example());
            } else {
                let between = logs.offsets_between(key, previous.offset, offset);
                if !between.is_empty() {
                    let mut example = example();
                    example["skipped_offsets"] = json!(between);
                    findings.add("send-skip", example);
                }
            }
        }
        last_sent.insert(slot, LastSeen { offset, position });
    }
}
