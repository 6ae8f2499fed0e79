//! Rebuilds each partition's log from a history and finds the anomalies visible in the logs
//! alone: lost writes, duplicates, inconsistent offsets, aborted reads and unseen values.
//!
//! A duplicate is told apart by the leader epochs of its copies. Without idempotence a client
//! may store one value twice by itself: a leader that appended an `acks=all` batch and then
//! lost leadership before the ISR had it answers NOT_LEADER_OR_FOLLOWER (Kafka does the same),
//! and librdkafka re-sends such a batch to the new leader without counting it against
//! `retries` (it takes that error to mean "not persisted"). If the new leader had replicated
//! the first copy, the log now holds both, the second in a later leader epoch. Such a duplicate
//! (every copy in a strictly later epoch than the one before, producer not idempotent) is
//! `resend-duplicate`, allowed; any other is `duplicate`.
//!
//! Every acknowledged send says "value v is at offset o of key k"; every poll says the same for
//! each record it returned. A correct log makes all these statements agree: one value per
//! offset, one offset per value. The *version order* of a key is its known offsets, sorted; the
//! poll and send order checks ([`super::order`]) measure skips in it, so offsets that hold no
//! known value (never acknowledged, never read) are not counted as skipped.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde_json::json;

use super::{describe, Findings};
use crate::history::{Function, Key, LeaderEpoch, Offset, Op, OpType, Value, WorkloadSettings};

/// Position of an operation in the history slice.
pub type OpPosition = usize;

/// The logs of every key as the history shows them.
pub struct PartitionLogs<'h> {
    history: &'h [Op],
    /// key → offset → value → the first operation that showed it there.
    pub values_at: BTreeMap<Key, BTreeMap<Offset, BTreeMap<Value, OpPosition>>>,
    /// (key, value) → offset → the first operation that showed it there.
    pub offsets_of: BTreeMap<(Key, Value), BTreeMap<Offset, OpPosition>>,
    /// Acknowledged sends: (key, value) → (offset, the ok operation).
    pub acknowledged: BTreeMap<(Key, Value), (Offset, OpPosition)>,
    /// Sends that definitely failed: (key, value) → the fail operation.
    pub failed: BTreeMap<(Key, Value), OpPosition>,
    /// Every (key, value) some ok poll returned.
    pub read_values: HashSet<(Key, Value)>,
    /// key → the highest offset any ok poll returned, and that poll.
    pub max_read: BTreeMap<Key, (Offset, OpPosition)>,
    /// Every (key, value) the final reads returned.
    pub final_read_values: HashSet<(Key, Value)>,
    /// key → the highest offset the final reads returned.
    pub final_max_read: BTreeMap<Key, Offset>,
    /// key → its high watermark when the final reads began (from the final reader's assign).
    pub final_high_watermarks: BTreeMap<Key, Offset>,
    /// key → offset → the leader epoch a poll reported for the record there.
    pub epoch_at: BTreeMap<Key, BTreeMap<Offset, LeaderEpoch>>,
    /// The workload's settings (the default for histories that do not record them).
    pub settings: WorkloadSettings,
    /// key → its version order: every offset known to hold a value, ascending.
    version_order: BTreeMap<Key, Vec<Offset>>,
}

impl<'h> PartitionLogs<'h> {
    pub fn build(history: &'h [Op]) -> PartitionLogs<'h> {
        let mut logs = PartitionLogs {
            history,
            values_at: BTreeMap::new(),
            offsets_of: BTreeMap::new(),
            acknowledged: BTreeMap::new(),
            failed: BTreeMap::new(),
            read_values: HashSet::new(),
            max_read: BTreeMap::new(),
            final_read_values: HashSet::new(),
            final_max_read: BTreeMap::new(),
            final_high_watermarks: BTreeMap::new(),
            epoch_at: BTreeMap::new(),
            settings: history
                .iter()
                .find_map(|op| op.workload.filter(|_| op.f == Function::Workload))
                .unwrap_or_default(),
            version_order: BTreeMap::new(),
        };
        for (position, op) in history.iter().enumerate() {
            if !op.is_client() {
                continue;
            }
            match (op.f, op.op_type) {
                (Function::Send, OpType::Ok) => {
                    if let (Some(key), Some(value), Some(offset)) = (op.key, op.value, op.offset) {
                        logs.acknowledged.insert((key, value), (offset, position));
                        logs.observe(key, offset, value, position);
                    }
                }
                (Function::Assign, _) if op.high_watermarks.is_some() => {
                    logs.final_high_watermarks
                        .extend(op.high_watermarks.iter().flatten());
                }
                (Function::Send, OpType::Fail) => {
                    if let (Some(key), Some(value)) = (op.key, op.value) {
                        logs.failed.insert((key, value), position);
                    }
                }
                (Function::Poll, OpType::Ok) => {
                    logs.observe_epochs(op);
                    for (key, records) in op.reads.iter().flatten() {
                        for &(offset, value) in records {
                            logs.observe(*key, offset, value, position);
                            logs.read_values.insert((*key, value));
                            let highest = logs.max_read.entry(*key).or_insert((offset, position));
                            if offset > highest.0 {
                                *highest = (offset, position);
                            }
                            if op.final_read {
                                logs.final_read_values.insert((*key, value));
                                let final_highest =
                                    logs.final_max_read.entry(*key).or_insert(offset);
                                *final_highest = (*final_highest).max(offset);
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        for (key, offsets) in &logs.values_at {
            logs.version_order
                .insert(*key, offsets.keys().copied().collect());
        }
        logs
    }

    fn observe(&mut self, key: Key, offset: Offset, value: Value, position: OpPosition) {
        self.values_at
            .entry(key)
            .or_default()
            .entry(offset)
            .or_default()
            .entry(value)
            .or_insert(position);
        self.offsets_of
            .entry((key, value))
            .or_default()
            .entry(offset)
            .or_insert(position);
    }

    /// Decodes a poll's run-length coded leader epochs: an entry starts a run at the record it
    /// names, in the order the poll delivered its records.
    fn observe_epochs(&mut self, poll: &Op) {
        let (Some(reads), Some(epochs)) = (&poll.reads, &poll.leader_epochs) else {
            return;
        };
        for (key, runs) in epochs {
            let Some(records) = reads.get(key) else {
                continue;
            };
            let mut runs = runs.iter().peekable();
            let mut epoch = None;
            for &(offset, _value) in records {
                if let Some(&&(start, run_epoch)) = runs.peek() {
                    if start == offset {
                        epoch = Some(run_epoch);
                        runs.next();
                    }
                }
                if let Some(epoch) = epoch {
                    self.epoch_at
                        .entry(*key)
                        .or_default()
                        .entry(offset)
                        .or_insert(epoch);
                }
            }
        }
    }

    /// The leader epoch some poll reported for `key` at `offset`.
    pub fn epoch_of(&self, key: Key, offset: Offset) -> Option<LeaderEpoch> {
        self.epoch_at.get(&key)?.get(&offset).copied()
    }

    /// The position of `offset` in `key`'s version order, if any value is known there.
    pub fn version_index(&self, key: Key, offset: Offset) -> Option<usize> {
        self.version_order.get(&key)?.binary_search(&offset).ok()
    }

    /// The known offsets of `key` strictly between `low` and `high`.
    pub fn offsets_between(&self, key: Key, low: Offset, high: Offset) -> Vec<Offset> {
        match self.values_at.get(&key) {
            Some(offsets) if low < high => offsets
                .range(low + 1..high)
                .map(|(offset, _)| *offset)
                .collect(),
            _ => Vec::new(),
        }
    }

    pub fn op(&self, position: OpPosition) -> &'h Op {
        &self.history[position]
    }

    /// Reports the anomalies of the logs themselves. `unseen` values are reported either way;
    /// whether they make the history invalid is the caller's decision.
    pub fn find_anomalies(&self, has_final_reads: bool, findings: &mut Findings) {
        self.find_inconsistent_offsets(findings);
        self.find_duplicates(findings);
        self.find_lost_and_unseen(has_final_reads, findings);
        if has_final_reads {
            self.find_vanished(findings);
        }
        self.find_aborted_reads(findings);
    }

    fn find_inconsistent_offsets(&self, findings: &mut Findings) {
        for (key, offsets) in &self.values_at {
            for (offset, values) in offsets.iter().filter(|(_, values)| values.len() > 1) {
                let shown_by: Vec<_> = values
                    .iter()
                    .map(|(value, position)| json!({"value": value, "op": describe(self.op(*position))}))
                    .collect();
                findings.add(
                    "inconsistent-offsets",
                    json!({"key": key, "offset": offset, "values": shown_by}),
                );
            }
        }
    }

    fn find_duplicates(&self, findings: &mut Findings) {
        for ((key, value), offsets) in self.offsets_of.iter().filter(|(_, o)| o.len() > 1) {
            let epochs: Vec<Option<LeaderEpoch>> = offsets
                .keys()
                .map(|offset| self.epoch_of(*key, *offset))
                .collect();
            let shown_by: Vec<_> = offsets
                .iter()
                .zip(&epochs)
                .map(|((offset, position), epoch)| {
                    json!({"offset": offset, "leader_epoch": epoch, "op": describe(self.op(*position))})
                })
                .collect();
            let anomaly = if self.is_client_resend(&epochs) {
                "resend-duplicate"
            } else {
                "duplicate"
            };
            findings.add(
                anomaly,
                json!({"key": key, "value": value, "offsets": shown_by}),
            );
        }
    }

    /// Whether copies with these leader epochs (in offset order) can be a non-idempotent
    /// client's re-send after NOT_LEADER_OR_FOLLOWER: each copy appended by a later leader.
    fn is_client_resend(&self, epochs: &[Option<LeaderEpoch>]) -> bool {
        !self.settings.idempotent
            && epochs.iter().all(Option::is_some)
            && epochs.windows(2).all(|pair| pair[0] < pair[1])
    }

    fn find_lost_and_unseen(&self, has_final_reads: bool, findings: &mut Findings) {
        for (&(key, value), &(offset, position)) in &self.acknowledged {
            if self.read_values.contains(&(key, value)) {
                continue;
            }
            match self.max_read.get(&key) {
                Some(&(read_offset, read_position)) if read_offset >= offset => {
                    let at_offset: BTreeSet<Value> = self.values_at[&key][&offset]
                        .keys()
                        .copied()
                        .filter(|other| *other != value)
                        .collect();
                    findings.add(
                        "lost-write",
                        json!({
                            "key": key,
                            "value": value,
                            "offset": offset,
                            "acknowledged_by": describe(self.op(position)),
                            "other_values_at_offset": at_offset,
                            "highest_read_offset": read_offset,
                            "highest_read_by": describe(self.op(read_position)),
                        }),
                    );
                }
                _ if self.final_log_ends_before(key, offset) => findings.add(
                    "lost-write",
                    json!({
                        "key": key,
                        "value": value,
                        "offset": offset,
                        "acknowledged_by": describe(self.op(position)),
                        "final_high_watermark": self.final_high_watermarks.get(&key),
                        "beyond_final_log": true,
                    }),
                ),
                highest => findings.add(
                    "unseen",
                    json!({
                        "key": key,
                        "value": value,
                        "offset": offset,
                        "acknowledged_by": describe(self.op(position)),
                        "highest_read_offset": highest.map(|h| h.0),
                        "final_reads_in_history": has_final_reads,
                    }),
                ),
            }
        }
    }

    /// Values that were acknowledged or read, but are gone from the final reads although those
    /// read at or past the offset they had: the log lost them later (say a new leader that
    /// never had them took over). Reported as `lost-write` with the earlier sighting.
    fn find_vanished(&self, findings: &mut Findings) {
        for (&(key, value), offsets) in &self.offsets_of {
            if !self.read_values.contains(&(key, value))
                || self.final_read_values.contains(&(key, value))
            {
                continue; // never read: find_lost_and_unseen's case; finally read: present
            }
            let (&offset, &seen_by) = offsets
                .iter()
                .next()
                .expect("offsets_of entries are non-empty");
            let final_highest = self.final_max_read.get(&key).copied().unwrap_or(-1);
            if final_highest < offset && !self.final_log_ends_before(key, offset) {
                continue;
            }
            let now_at_offset: BTreeSet<Value> = self.values_at[&key][&offset]
                .keys()
                .copied()
                .filter(|other| *other != value)
                .collect();
            findings.add(
                "lost-write",
                json!({
                    "key": key,
                    "value": value,
                    "offset": offset,
                    "acknowledged": self.acknowledged.contains_key(&(key, value)),
                    "seen_earlier_by": describe(self.op(seen_by)),
                    "other_values_at_offset": now_at_offset,
                    "highest_final_read_offset": final_highest,
                    "missing_from_final_reads": true,
                }),
            );
        }
    }

    /// True when the final reads read `key`'s whole final log and it ends at or before
    /// `offset` (its high watermark when the final reads began is at most `offset`).
    fn final_log_ends_before(&self, key: Key, offset: Offset) -> bool {
        let final_highest = self.final_max_read.get(&key).copied().unwrap_or(-1);
        self.final_high_watermarks
            .get(&key)
            .is_some_and(|high| *high <= offset && final_highest + 1 >= *high)
    }

    fn find_aborted_reads(&self, findings: &mut Findings) {
        for (&(key, value), &position) in &self.failed {
            if let Some(offsets) = self.offsets_of.get(&(key, value)) {
                let (offset, reader) = offsets
                    .iter()
                    .next()
                    .expect("offsets_of entries are non-empty");
                findings.add(
                    "aborted-read",
                    json!({
                        "key": key,
                        "value": value,
                        "offset": offset,
                        "failed_send": describe(self.op(position)),
                        "read_by": describe(self.op(*reader)),
                    }),
                );
            }
        }
    }
}
