//! What consumption in a consumer group can get wrong, beyond the log itself (the `groups`
//! workload: `rebalance`, `commit` and `fetch-committed` operations).
//!
//! * `nonmonotonic-commit`: the group's committed offset of a key went back. A commit
//!   acknowledged with a lower offset than one acknowledged before it was sent, or the
//!   committed offsets read back at the end (`fetch-committed`) below an acknowledged commit.
//!   Members only commit past what they read, and a new owner starts at the committed offset,
//!   so in a correct run a key's committed offset only grows.
//! * `lost-to-group`: a value that no member ever read although the group committed past its
//!   offset (an acknowledged commit of a higher offset): the group will never deliver it.
//! * `skipped-after-rebalance`: a member's first read of a key after a rebalance starts
//!   *beyond* where the group's commits could have left it, jumping over known values it had
//!   not read itself. Starting *below* the last commit is allowed: the records in between are
//!   delivered again (at least once).
//!
//! "Could have left it": the highest offset of any commit of the key not known to have
//! failed (`ok` or `info`) that was sent before the read. Reads inside one assignment are
//! checked by [`super::order`] like any process's polls.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::json;

use super::logs::{OpPosition, PartitionLogs};
use super::{describe, Findings};
use crate::history::{Function, Key, Offset, Op, OpType, Process};

/// The highest acknowledged commit of a key so far, and the operation that made it.
#[derive(Clone, Copy)]
struct Committed {
    offset: Offset,
    position: OpPosition,
}

pub fn find_group_anomalies(history: &[Op], logs: &PartitionLogs, findings: &mut Findings) {
    let completions = completions(history);
    find_nonmonotonic_commits(history, findings);
    find_lost_to_group(history, logs, findings);
    find_skips_after_rebalance(history, logs, &completions, findings);
}

/// Each commit invoke's completion (a process is sequential: its next commit completion).
fn completions(history: &[Op]) -> HashMap<OpPosition, OpPosition> {
    let mut open: HashMap<&Process, OpPosition> = HashMap::new();
    let mut completions = HashMap::new();
    for (position, op) in history.iter().enumerate() {
        if op.f != Function::Commit {
            continue;
        }
        if op.op_type == OpType::Invoke {
            open.insert(&op.process, position);
        } else if let Some(invoke) = open.remove(&op.process) {
            completions.insert(invoke, position);
        }
    }
    completions
}

/// `nonmonotonic-commit`, in real time: only against commits acknowledged before the later
/// commit (or the final read-back) was sent.
fn find_nonmonotonic_commits(history: &[Op], findings: &mut Findings) {
    let mut committed: BTreeMap<Key, Committed> = BTreeMap::new();
    // Per process: what was committed when its pending commit or read-back was sent.
    let mut at_invoke: HashMap<&Process, BTreeMap<Key, Committed>> = HashMap::new();
    for (position, op) in history.iter().enumerate() {
        match (op.f, op.op_type) {
            (Function::Commit | Function::FetchCommitted, OpType::Invoke) => {
                at_invoke.insert(&op.process, committed.clone());
            }
            (Function::Commit, OpType::Ok) => {
                let before = at_invoke.remove(&op.process).unwrap_or_default();
                for (&key, &offset) in op.offsets.iter().flatten() {
                    if let Some(earlier) = before.get(&key).filter(|c| offset < c.offset) {
                        findings.add(
                            "nonmonotonic-commit",
                            json!({
                                "key": key,
                                "offset": offset,
                                "committed_before": earlier.offset,
                                "earlier_commit": describe(&history[earlier.position]),
                                "commit": describe(op),
                            }),
                        );
                    }
                    let entry = committed
                        .entry(key)
                        .or_insert(Committed { offset, position });
                    if offset >= entry.offset {
                        *entry = Committed { offset, position };
                    }
                }
            }
            (Function::FetchCommitted, OpType::Ok) => {
                let before = at_invoke.remove(&op.process).unwrap_or_default();
                let fetched = op.offsets.clone().unwrap_or_default();
                for (key, earlier) in before {
                    let now = fetched.get(&key).copied();
                    if now.is_none_or(|now| now < earlier.offset) {
                        findings.add(
                            "nonmonotonic-commit",
                            json!({
                                "key": key,
                                "offset": now,
                                "committed_before": earlier.offset,
                                "earlier_commit": describe(&history[earlier.position]),
                                "fetch_committed": describe(op),
                            }),
                        );
                    }
                }
            }
            (Function::Commit | Function::FetchCommitted, _) => {
                at_invoke.remove(&op.process);
            }
            _ => {}
        }
    }
}

/// `lost-to-group`: known values below a key's highest acknowledged commit that no member's
/// poll (final reads excluded: they are not the group's) returned.
fn find_lost_to_group(history: &[Op], logs: &PartitionLogs, findings: &mut Findings) {
    let mut highest_commit: BTreeMap<Key, Committed> = BTreeMap::new();
    let mut read_by_group: HashSet<(Key, Offset)> = HashSet::new();
    for (position, op) in history.iter().enumerate() {
        match (op.f, op.op_type) {
            (Function::Commit, OpType::Ok) => {
                for (&key, &offset) in op.offsets.iter().flatten() {
                    let entry = highest_commit
                        .entry(key)
                        .or_insert(Committed { offset, position });
                    if offset > entry.offset {
                        *entry = Committed { offset, position };
                    }
                }
            }
            (Function::Poll, OpType::Ok) if !op.final_read => {
                for (&key, records) in op.reads.iter().flatten() {
                    read_by_group.extend(records.iter().map(|&(offset, _)| (key, offset)));
                }
            }
            _ => {}
        }
    }
    for (key, commit) in highest_commit {
        let Some(offsets) = logs.values_at.get(&key) else {
            continue;
        };
        for (offset, values) in offsets.range(..commit.offset) {
            if read_by_group.contains(&(key, *offset)) {
                continue;
            }
            let (value, shown_by) = values
                .iter()
                .next()
                .expect("values_at entries are non-empty");
            findings.add(
                "lost-to-group",
                json!({
                    "key": key,
                    "offset": offset,
                    "value": value,
                    "known_from": describe(logs.op(*shown_by)),
                    "committed_past_by": describe(&history[commit.position]),
                }),
            );
        }
    }
}

/// `skipped-after-rebalance`: the first read of each newly assigned key, against the highest
/// commit of that key that may have succeeded before it.
fn find_skips_after_rebalance(
    history: &[Op],
    logs: &PartitionLogs,
    completions: &HashMap<OpPosition, OpPosition>,
    findings: &mut Findings,
) {
    // key → highest offset a commit sent so far may have stored.
    let mut may_be_committed: BTreeMap<Key, Offset> = BTreeMap::new();
    // (process, key) → the rebalance that assigned the key, until the process reads it.
    let mut awaiting_first_read: HashMap<(&Process, Key), OpPosition> = HashMap::new();
    let mut read_by_process: HashSet<(&Process, Key, Offset)> = HashSet::new();
    for (position, op) in history.iter().enumerate() {
        match (op.f, op.op_type) {
            (Function::Commit, OpType::Invoke) => {
                let failed = completions
                    .get(&position)
                    .is_some_and(|done| history[*done].op_type == OpType::Fail);
                if !failed {
                    for (&key, &offset) in op.offsets.iter().flatten() {
                        let highest = may_be_committed.entry(key).or_insert(offset);
                        *highest = (*highest).max(offset);
                    }
                }
            }
            (Function::Rebalance, _) => {
                awaiting_first_read.retain(|(process, _), _| **process != op.process);
                for &key in op.assignment.iter().flatten() {
                    awaiting_first_read.insert((&op.process, key), position);
                }
            }
            (Function::Poll, OpType::Ok) if !op.final_read => {
                for (&key, records) in op.reads.iter().flatten() {
                    let Some(&(first, _)) = records.first() else {
                        continue;
                    };
                    if let Some(rebalance) = awaiting_first_read.remove(&(&op.process, key)) {
                        let start = may_be_committed.get(&key).copied().unwrap_or(0);
                        let skipped: Vec<Offset> = logs
                            .offsets_between(key, start - 1, first)
                            .into_iter()
                            .filter(|offset| {
                                !read_by_process.contains(&(&op.process, key, *offset))
                            })
                            .collect();
                        if !skipped.is_empty() {
                            findings.add(
                                "skipped-after-rebalance",
                                json!({
                                    "key": key,
                                    "may_be_committed": start,
                                    "first_read_offset": first,
                                    "skipped_offsets": skipped,
                                    "rebalance": describe(&history[rebalance]),
                                    "poll": describe(op),
                                }),
                            );
                        }
                    }
                    read_by_process.extend(
                        records
                            .iter()
                            .map(|&(offset, _)| (&op.process, key, offset)),
                    );
                }
            }
            _ => {}
        }
    }
}
