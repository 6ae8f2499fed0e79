//! The checker against hand-written histories: one valid history, and for every anomaly class
//! the smallest history that shows it.

use std::collections::BTreeMap;

use super::{check, CheckOptions, Results};
use crate::history::{
    Function, Key, LeaderEpoch, Offset, Op, OpType, Process, Value, WorkloadSettings,
    NEMESIS_PROCESS,
};

const MILLISECOND_NS: u64 = 1_000_000;

/// Writes histories the way the workload would, one millisecond per step unless `at` moves
/// the clock.
#[derive(Default)]
struct HistoryBuilder {
    ops: Vec<Op>,
    now_ns: u64,
}

impl HistoryBuilder {
    fn push(&mut self, mut op: Op) -> &mut Self {
        op.index = self.ops.len() as u64;
        op.time_ns = self.now_ns;
        self.now_ns += MILLISECOND_NS;
        self.ops.push(op);
        self
    }

    fn at_seconds(&mut self, seconds: u64) -> &mut Self {
        self.now_ns = seconds * 1_000_000_000;
        self
    }

    fn send_invoke(&mut self, process: u64, key: Key, value: Value) -> &mut Self {
        let mut op = Op::new(Process::Client(process), OpType::Invoke, Function::Send);
        op.key = Some(key);
        op.value = Some(value);
        self.push(op)
    }

    fn send_completion(&mut self, process: u64, key: Key, value: Value, op_type: OpType) -> Op {
        let mut op = Op::new(Process::Client(process), op_type, Function::Send);
        op.key = Some(key);
        op.value = Some(value);
        op
    }

    /// An acknowledged send of `value` to `key` at `offset`.
    fn send(&mut self, process: u64, key: Key, value: Value, offset: Offset) -> &mut Self {
        self.send_invoke(process, key, value);
        let mut op = self.send_completion(process, key, value, OpType::Ok);
        op.offset = Some(offset);
        self.push(op)
    }

    fn send_failed(&mut self, process: u64, key: Key, value: Value) -> &mut Self {
        self.send_invoke(process, key, value);
        let op = self.send_completion(process, key, value, OpType::Fail);
        self.push(op)
    }

    fn poll_with(
        &mut self,
        process: u64,
        reads: &[(Key, &[(Offset, Value)])],
        final_read: bool,
    ) -> &mut Self {
        self.push(Op::new(
            Process::Client(process),
            OpType::Invoke,
            Function::Poll,
        ));
        let mut op = Op::new(Process::Client(process), OpType::Ok, Function::Poll);
        op.reads = Some(
            reads
                .iter()
                .map(|(key, records)| (*key, records.to_vec()))
                .collect::<BTreeMap<_, _>>(),
        );
        op.final_read = final_read;
        self.push(op)
    }

    fn poll(&mut self, process: u64, reads: &[(Key, &[(Offset, Value)])]) -> &mut Self {
        self.poll_with(process, reads, false)
    }

    fn final_poll(&mut self, process: u64, reads: &[(Key, &[(Offset, Value)])]) -> &mut Self {
        self.poll_with(process, reads, true)
    }

    /// The workload's settings line that starts a recorded history.
    fn workload(&mut self, idempotent: bool) -> &mut Self {
        let mut op = Op::new(
            Process::Named("workload".into()),
            OpType::Info,
            Function::Workload,
        );
        op.workload = Some(WorkloadSettings {
            idempotent,
            ..WorkloadSettings::default()
        });
        self.push(op)
    }

    /// A final poll of one key whose records carry leader epochs (run-length coded, as the
    /// workload records them).
    fn final_poll_with_epochs(
        &mut self,
        process: u64,
        key: Key,
        records: &[(Offset, Value, LeaderEpoch)],
    ) -> &mut Self {
        let reads: Vec<(Offset, Value)> = records.iter().map(|&(o, v, _)| (o, v)).collect();
        self.final_poll(process, &[(key, &reads)]);
        let mut runs: Vec<(Offset, LeaderEpoch)> = Vec::new();
        for &(offset, _, epoch) in records {
            if runs.last().map(|run| run.1) != Some(epoch) {
                runs.push((offset, epoch));
            }
        }
        let poll = self.ops.last_mut().expect("the poll just pushed");
        poll.leader_epochs = Some(BTreeMap::from([(key, runs)]));
        self
    }

    fn assign(&mut self, process: u64) -> &mut Self {
        self.push(Op::new(
            Process::Client(process),
            OpType::Ok,
            Function::Assign,
        ))
    }

    fn nemesis(&mut self, op_type: OpType, f: Function) -> &mut Self {
        let mut op = Op::new(Process::Named(NEMESIS_PROCESS.into()), op_type, f);
        op.fault = Some("kill-one".into());
        self.push(op)
    }

    fn check(&self) -> Results {
        check(&self.ops, &CheckOptions::default())
    }
}

fn assert_invalid_because(results: &Results, anomaly: &str) {
    assert!(!results.valid, "expected invalid: {results:#?}");
    assert!(
        results.invalid_because.iter().any(|name| name == anomaly),
        "expected {anomaly} among {:?}",
        results.invalid_because
    );
    assert!(
        !results.examples[anomaly].is_empty(),
        "{anomaly} comes with an example"
    );
}

/// Two writers on one key, a reader that follows along, a fault that is healed, final reads
/// that see everything: the shape of a good run.
fn valid_history() -> HistoryBuilder {
    let mut history = HistoryBuilder::default();
    history
        .send(1, 0, 100, 0)
        .send(2, 0, 101, 1)
        .poll(3, &[(0, &[(0, 100), (1, 101)])])
        .nemesis(OpType::Invoke, Function::StartFault)
        .nemesis(OpType::Info, Function::StartFault)
        .send(1, 0, 102, 2)
        .send(1, 1, 200, 0)
        .nemesis(OpType::Invoke, Function::Heal)
        .nemesis(OpType::Info, Function::Heal)
        .poll(3, &[(0, &[(2, 102)]), (1, &[(0, 200)])])
        .final_poll(4, &[(0, &[(0, 100), (1, 101), (2, 102)]), (1, &[(0, 200)])]);
    history
}

#[test]
fn a_history_where_every_acknowledged_value_is_read_once_in_order_is_valid() {
    let results = valid_history().check();
    assert!(results.valid, "{results:#?}");
    assert_eq!(results.acknowledged_sends, 4);
    assert_eq!(results.acknowledged_sends_read, 4);
    assert_eq!(results.ops.faults, 1);
    assert_eq!(
        results.ops.faults_injected,
        BTreeMap::from([("kill".to_owned(), 1)])
    );
}

#[test]
fn a_fault_the_nemesis_could_not_inject_does_not_count_as_injected() {
    let mut history = HistoryBuilder::default();
    history.nemesis(OpType::Invoke, Function::StartFault);
    let mut failed = Op::new(
        Process::Named(NEMESIS_PROCESS.into()),
        OpType::Info,
        Function::StartFault,
    );
    failed.fault = Some("partition-isolate-leader".into());
    failed.error = Some("iptables: not found".into());
    history.push(failed);
    let results = history.check();
    assert_eq!(results.ops.faults, 1);
    assert!(results.ops.faults_injected.is_empty());
    assert_eq!(super::fault_family("clock-bump-one n3+5s"), Some("clock"));
    assert_eq!(
        super::fault_family("lose-unsynced-minority"),
        Some("lose-unsynced")
    );
}

#[test]
fn an_acknowledged_value_missing_below_the_highest_read_offset_is_a_lost_write() {
    let mut history = HistoryBuilder::default();
    history
        .send(1, 0, 100, 0)
        .send(1, 0, 101, 1)
        .send(1, 0, 102, 2)
        // The reader got offsets 0 and 2 but never saw value 101 anywhere.
        .final_poll(2, &[(0, &[(0, 100), (2, 102)])]);
    let results = history.check();
    assert_invalid_because(&results, "lost-write");
    assert_eq!(results.anomaly_counts["lost-write"], 1);
    assert_eq!(results.examples["lost-write"][0]["value"], 101);
}

#[test]
fn a_value_acknowledged_at_an_offset_where_another_value_is_read_is_lost_and_inconsistent() {
    // A leader acknowledged 101 at offset 1, then lost it; a new leader put 201 there.
    let mut history = HistoryBuilder::default();
    history
        .send(1, 0, 100, 0)
        .send(1, 0, 101, 1)
        .send(2, 0, 201, 1)
        .final_poll(3, &[(0, &[(0, 100), (1, 201)])]);
    let results = history.check();
    assert_invalid_because(&results, "lost-write");
    assert_invalid_because(&results, "inconsistent-offsets");
    let lost = &results.examples["lost-write"][0];
    assert_eq!(lost["other_values_at_offset"], serde_json::json!([201]));
}

#[test]
fn a_value_read_once_but_missing_from_final_reads_that_passed_its_offset_is_a_lost_write() {
    // Read at offset 0 early on; after a failover the new leader's log has 200 there.
    let mut history = HistoryBuilder::default();
    history
        .send(1, 0, 100, 0)
        .poll(2, &[(0, &[(0, 100)])])
        .send(1, 0, 200, 0)
        .final_poll(3, &[(0, &[(0, 200)])]);
    let results = history.check();
    assert_invalid_because(&results, "lost-write");
    let lost = &results.examples["lost-write"][0];
    assert_eq!(lost["value"], 100);
    assert_eq!(lost["missing_from_final_reads"], true);
    assert_eq!(lost["other_values_at_offset"], serde_json::json!([200]));
}

#[test]
fn a_value_read_once_beyond_the_end_of_the_final_log_is_a_lost_write() {
    // Offsets 0 and 1 were read; the final log (high watermark 1) ends before offset 1.
    let mut history = HistoryBuilder::default();
    history
        .send(1, 0, 100, 0)
        .send(1, 0, 101, 1)
        .poll(2, &[(0, &[(0, 100), (1, 101)])]);
    let mut final_assign = Op::new(Process::Client(3), OpType::Ok, Function::Assign);
    final_assign.high_watermarks = Some(BTreeMap::from([(0, 1)]));
    history.push(final_assign);
    history.final_poll(3, &[(0, &[(0, 100)])]);
    let results = history.check();
    assert_invalid_because(&results, "lost-write");
    assert_eq!(results.examples["lost-write"][0]["value"], 101);
}

#[test]
fn an_acknowledged_value_never_read_beyond_the_end_of_the_final_log_is_a_lost_write() {
    let mut history = HistoryBuilder::default();
    history.send(1, 0, 100, 0).send(1, 0, 101, 1);
    let mut final_assign = Op::new(Process::Client(3), OpType::Ok, Function::Assign);
    final_assign.high_watermarks = Some(BTreeMap::from([(0, 0)]));
    history.push(final_assign);
    history.final_poll(3, &[]);
    let results = history.check();
    assert_invalid_because(&results, "lost-write");
    assert_eq!(results.anomaly_counts["lost-write"], 2);
    assert_eq!(results.anomaly_counts.get("unseen"), None);
}

#[test]
fn values_read_earlier_are_lost_when_the_final_reader_finds_every_log_empty() {
    // The final reader's high watermarks are all 0, so it polls nothing: still final reads.
    let mut history = HistoryBuilder::default();
    history.send(1, 0, 100, 0).poll(2, &[(0, &[(0, 100)])]);
    let mut final_assign = Op::new(Process::Client(3), OpType::Ok, Function::Assign);
    final_assign.high_watermarks = Some(BTreeMap::from([(0, 0)]));
    history.push(final_assign);
    let results = history.check();
    assert!(results.has_final_reads);
    assert_invalid_because(&results, "lost-write");
}

#[test]
fn a_node_that_exits_by_itself_is_a_crash() {
    let mut history = valid_history();
    let mut exited = Op::new(
        Process::Named(NEMESIS_PROCESS.into()),
        OpType::Info,
        Function::NodeExited,
    );
    exited.nodes = Some(vec![2]);
    history.push(exited);
    assert_invalid_because(&history.check(), "node-crash");
}

#[test]
fn one_value_at_two_offsets_is_a_duplicate() {
    let mut history = HistoryBuilder::default();
    history
        .send(1, 0, 100, 0)
        .final_poll(2, &[(0, &[(0, 100), (1, 100)])]);
    let results = history.check();
    assert_invalid_because(&results, "duplicate");
    assert_eq!(results.anomaly_counts["duplicate"], 1);
}

/// Seed 11's shape: three values appended at 6..8 by the epoch-1 leader, which lost leadership
/// before the ISR had them and answered NOT_LEADER_OR_FOLLOWER; the client re-sent the same
/// batches to the epoch-2 leader, which had replicated the first copies.
fn resent_after_leader_change(history: &mut HistoryBuilder) -> &mut HistoryBuilder {
    history
        .send_invoke(1, 6, 1774)
        .send_invoke(2, 6, 1775)
        .final_poll_with_epochs(
            3,
            6,
            &[(6, 1774, 1), (7, 1775, 1), (8, 1775, 2), (9, 1774, 2)],
        )
}

#[test]
fn a_value_stored_again_by_a_later_leader_without_idempotence_is_an_allowed_resend_duplicate() {
    let mut history = HistoryBuilder::default();
    history.workload(false);
    resent_after_leader_change(&mut history);
    let results = history.check();
    assert!(results.valid, "{results:#?}");
    assert_eq!(results.anomaly_counts["resend-duplicate"], 2);
    assert_eq!(results.anomaly_counts.get("duplicate"), None);
    let example = &results.examples["resend-duplicate"][0];
    assert_eq!(example["offsets"][0]["leader_epoch"], 1);
    assert_eq!(example["offsets"][1]["leader_epoch"], 2);
}

#[test]
fn a_value_stored_again_by_a_later_leader_with_idempotence_is_a_duplicate() {
    let mut history = HistoryBuilder::default();
    history.workload(true);
    resent_after_leader_change(&mut history);
    let results = history.check();
    assert_invalid_because(&results, "duplicate");
    assert_eq!(results.anomaly_counts["duplicate"], 2);
    assert!(results.workload.idempotent);
}

#[test]
fn a_value_stored_twice_in_one_leader_epoch_is_a_duplicate_even_without_idempotence() {
    // No client re-send puts a second copy in the same epoch: that is the broker's doing.
    let mut history = HistoryBuilder::default();
    history
        .workload(false)
        .send(1, 0, 100, 0)
        .final_poll_with_epochs(2, 0, &[(0, 100, 3), (1, 100, 3)]);
    let results = history.check();
    assert_invalid_because(&results, "duplicate");
    assert_eq!(results.anomaly_counts.get("resend-duplicate"), None);
}

#[test]
fn a_copy_in_an_earlier_epoch_than_the_one_before_it_is_a_duplicate() {
    let mut history = HistoryBuilder::default();
    history
        .workload(false)
        .final_poll_with_epochs(2, 0, &[(0, 100, 2), (1, 100, 1)]);
    assert_invalid_because(&history.check(), "duplicate");
}

#[test]
fn two_values_read_at_one_offset_are_inconsistent_offsets() {
    let mut history = HistoryBuilder::default();
    history
        .poll(1, &[(0, &[(0, 100)])])
        .poll(2, &[(0, &[(0, 101)])]);
    let results = history.check();
    assert_invalid_because(&results, "inconsistent-offsets");
    assert_eq!(
        results.examples["inconsistent-offsets"][0]["values"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn reading_the_value_of_a_definitely_failed_send_is_an_aborted_read() {
    let mut history = HistoryBuilder::default();
    history.send_failed(1, 0, 100).poll(2, &[(0, &[(0, 100)])]);
    assert_invalid_because(&history.check(), "aborted-read");
}

#[test]
fn an_acknowledged_value_no_final_read_reached_is_unseen_and_invalid() {
    let mut history = HistoryBuilder::default();
    history
        .send(1, 0, 100, 0)
        .send(1, 0, 101, 1)
        .final_poll(2, &[(0, &[(0, 100)])]);
    let results = history.check();
    assert_invalid_because(&results, "unseen");
    assert_eq!(results.anomaly_counts["unseen"], 1);
    assert_eq!(results.anomaly_counts.get("lost-write"), None);
}

#[test]
fn unseen_values_without_final_reads_are_reported_but_not_invalid() {
    let mut history = HistoryBuilder::default();
    history.send(1, 0, 100, 0).poll(2, &[(0, &[])]);
    let results = history.check();
    assert!(results.valid, "{results:#?}");
    assert_eq!(results.anomaly_counts["unseen"], 1);
}

#[test]
fn a_poll_that_goes_back_in_the_log_is_nonmonotonic() {
    let mut history = HistoryBuilder::default();
    history
        .send(1, 0, 100, 0)
        .send(1, 0, 101, 1)
        .poll(2, &[(0, &[(0, 100), (1, 101)])])
        .poll(2, &[(0, &[(1, 101)])]);
    let results = history.check();
    assert_invalid_because(&results, "nonmonotonic-poll");
    assert_eq!(
        results.examples["nonmonotonic-poll"][0]["within_one_poll"],
        false
    );
}

#[test]
fn a_single_poll_that_returns_offsets_out_of_order_is_nonmonotonic() {
    let mut history = HistoryBuilder::default();
    history.poll(2, &[(0, &[(1, 101), (0, 100)])]);
    let results = history.check();
    assert_invalid_because(&results, "nonmonotonic-poll");
    assert_eq!(
        results.examples["nonmonotonic-poll"][0]["within_one_poll"],
        true
    );
}

#[test]
fn a_poll_that_jumps_over_a_known_value_is_a_poll_skip() {
    let mut history = HistoryBuilder::default();
    history
        .send(1, 0, 100, 0)
        .send(1, 0, 101, 1)
        .send(1, 0, 102, 2)
        .poll(2, &[(0, &[(0, 100)])])
        .poll(2, &[(0, &[(2, 102)])])
        // Another reader proves 101 was readable, so it is no lost write: only the skip.
        .final_poll(3, &[(0, &[(0, 100), (1, 101), (2, 102)])]);
    let results = history.check();
    assert_eq!(results.invalid_because, vec!["poll-skip".to_owned()]);
    assert_eq!(
        results.examples["poll-skip"][0]["skipped_offsets"],
        serde_json::json!([1])
    );
}

#[test]
fn gaps_with_no_known_value_are_not_skips() {
    // Offset 1 was never acknowledged nor read (a lost unacknowledged send, or a control
    // record): stepping from 0 to 2 skips nothing we know of.
    let mut history = HistoryBuilder::default();
    history
        .send(1, 0, 100, 0)
        .send(1, 0, 102, 2)
        .poll(2, &[(0, &[(0, 100)])])
        .poll(2, &[(0, &[(2, 102)])]);
    assert!(history.check().valid);
}

#[test]
fn an_assign_restarts_the_order_check_of_its_process() {
    let mut history = HistoryBuilder::default();
    history
        .send(1, 0, 100, 0)
        .send(1, 0, 101, 1)
        .poll(2, &[(0, &[(0, 100), (1, 101)])])
        .assign(2)
        .poll(2, &[(0, &[(0, 100), (1, 101)])]);
    assert!(history.check().valid);
}

#[test]
fn a_process_whose_later_send_lands_at_a_lower_offset_is_a_nonmonotonic_send() {
    let mut history = HistoryBuilder::default();
    history
        .send(1, 0, 100, 5)
        .send(1, 0, 101, 3)
        .final_poll(2, &[(0, &[(3, 101), (5, 100)])]);
    assert_invalid_because(&history.check(), "nonmonotonic-send");
}

#[test]
fn other_writers_between_two_sends_of_a_process_are_an_informational_send_skip() {
    let mut history = HistoryBuilder::default();
    history
        .send(1, 0, 100, 0)
        .send(2, 0, 200, 1)
        .send(1, 0, 101, 2)
        .final_poll(3, &[(0, &[(0, 100), (1, 200), (2, 101)])]);
    let results = history.check();
    assert!(results.valid, "{results:#?}");
    assert_eq!(results.anomaly_counts["send-skip"], 1);
}

#[test]
fn no_success_for_a_window_while_healthy_is_a_stall() {
    let mut history = HistoryBuilder::default();
    history.send(1, 0, 100, 0);
    history.at_seconds(1).send_invoke(1, 0, 101);
    history.at_seconds(30);
    let completion = history.send_completion(1, 0, 101, OpType::Info);
    history.push(completion);
    let results = history.check();
    assert_invalid_because(&results, "stall");
}

#[test]
fn refused_sends_for_a_window_while_polls_succeed_are_a_send_stall() {
    let mut history = HistoryBuilder::default();
    history.send(1, 0, 100, 0);
    for second in 1..=15 {
        history.at_seconds(second).send_failed(1, 0, 100 + second);
        history.poll(2, &[(0, &[])]);
    }
    let results = history.check();
    assert_eq!(results.invalid_because, vec!["send-stall".to_owned()]);
}

#[test]
fn no_success_during_a_fault_and_its_recovery_grace_is_no_stall() {
    let mut history = HistoryBuilder::default();
    history.send(1, 0, 100, 0);
    history.nemesis(OpType::Invoke, Function::StartFault);
    history.at_seconds(20).nemesis(OpType::Info, Function::Heal);
    // 8 s after the heal: inside the 10 s grace.
    history.at_seconds(28).send(1, 0, 101, 1);
    history.final_poll(2, &[(0, &[(0, 100), (1, 101)])]);
    let results = history.check();
    assert!(results.valid, "{results:#?}");
}

// ---- The groups workload: rebalances, commits and the committed offsets read back. ----

impl HistoryBuilder {
    /// A group member's new assignment.
    fn rebalance(&mut self, process: u64, keys: &[Key]) -> &mut Self {
        let mut op = Op::new(Process::Client(process), OpType::Ok, Function::Rebalance);
        op.assignment = Some(keys.to_vec());
        self.push(op)
    }

    /// A commit of `offsets` (the next offset to read, per key) that ended `outcome`.
    fn commit(&mut self, process: u64, offsets: &[(Key, Offset)], outcome: OpType) -> &mut Self {
        let mut op = Op::new(Process::Client(process), OpType::Invoke, Function::Commit);
        op.offsets = Some(offsets.iter().copied().collect());
        self.push(op.clone());
        op.op_type = outcome;
        self.push(op)
    }

    /// The group's committed offsets, read back at the end.
    fn fetch_committed(&mut self, offsets: &[(Key, Offset)]) -> &mut Self {
        let process = Process::Client(99);
        self.push(Op::new(
            process.clone(),
            OpType::Invoke,
            Function::FetchCommitted,
        ));
        let mut op = Op::new(process, OpType::Ok, Function::FetchCommitted);
        op.offsets = Some(offsets.iter().copied().collect());
        self.push(op)
    }
}

/// Member 3 reads key 0 up to offset 1 and commits 2; after a rebalance member 4 owns key 0,
/// starts at the committed offset, reads 2 and commits 3; the group's offset reads back as 3.
fn valid_group_history() -> HistoryBuilder {
    let mut history = HistoryBuilder::default();
    history
        .send(1, 0, 100, 0)
        .send(1, 0, 101, 1)
        .rebalance(3, &[0])
        .poll(3, &[(0, &[(0, 100), (1, 101)])])
        .commit(3, &[(0, 2)], OpType::Ok)
        .send(1, 0, 102, 2)
        .rebalance(3, &[])
        .rebalance(4, &[0])
        .poll(4, &[(0, &[(2, 102)])])
        .commit(4, &[(0, 3)], OpType::Ok)
        .final_poll(5, &[(0, &[(0, 100), (1, 101), (2, 102)])])
        .fetch_committed(&[(0, 3)]);
    history
}

#[test]
fn a_group_that_hands_a_key_over_at_its_committed_offset_is_valid() {
    let results = valid_group_history().check();
    assert!(results.valid, "{results:#?}");
    assert_eq!(
        results.ops.commit,
        BTreeMap::from([("invoke".to_owned(), 2), ("ok".to_owned(), 2)])
    );
}

#[test]
fn a_new_owner_that_starts_below_the_committed_offset_reads_again_and_is_valid() {
    // At least once: member 4 re-reads offset 1 although 2 was committed.
    let mut history = HistoryBuilder::default();
    history
        .send(1, 0, 100, 0)
        .send(1, 0, 101, 1)
        .rebalance(3, &[0])
        .poll(3, &[(0, &[(0, 100), (1, 101)])])
        .commit(3, &[(0, 2)], OpType::Ok)
        .rebalance(4, &[0])
        .poll(4, &[(0, &[(1, 101)])])
        .commit(4, &[(0, 2)], OpType::Ok)
        .final_poll(5, &[(0, &[(0, 100), (1, 101)])]);
    let results = history.check();
    assert!(results.valid, "{results:#?}");
}

#[test]
fn an_acknowledged_commit_below_one_acknowledged_before_is_a_nonmonotonic_commit() {
    let mut history = HistoryBuilder::default();
    history
        .send(1, 0, 100, 0)
        .send(1, 0, 101, 1)
        .rebalance(3, &[0])
        .poll(3, &[(0, &[(0, 100), (1, 101)])])
        .commit(3, &[(0, 2)], OpType::Ok)
        .rebalance(4, &[0])
        .poll(4, &[(0, &[(0, 100)])])
        .commit(4, &[(0, 1)], OpType::Ok)
        .final_poll(5, &[(0, &[(0, 100), (1, 101)])]);
    let results = history.check();
    assert_eq!(
        results.invalid_because,
        vec!["nonmonotonic-commit".to_owned()]
    );
    let example = &results.examples["nonmonotonic-commit"][0];
    assert_eq!(
        (&example["offset"], &example["committed_before"]),
        (&1.into(), &2.into())
    );
}

#[test]
fn committed_offsets_read_back_below_an_acknowledged_commit_are_a_nonmonotonic_commit() {
    let mut history = valid_group_history();
    history.fetch_committed(&[(0, 2)]);
    assert_invalid_because(&history.check(), "nonmonotonic-commit");
    // A commit that was acknowledged and then forgotten altogether counts too.
    let mut history = valid_group_history();
    history.fetch_committed(&[]);
    assert_invalid_because(&history.check(), "nonmonotonic-commit");
}

#[test]
fn a_value_below_an_acknowledged_commit_that_no_member_read_is_lost_to_the_group() {
    // Member 3 read only offset 0 but the group's offset moved to 3: offsets 1 and 2 (read by
    // the final reads, so in the log) were never delivered to the group.
    let mut history = HistoryBuilder::default();
    history
        .send(1, 0, 100, 0)
        .send(1, 0, 101, 1)
        .send(1, 0, 102, 2)
        .rebalance(3, &[0])
        .poll(3, &[(0, &[(0, 100)])])
        .commit(3, &[(0, 3)], OpType::Ok)
        .final_poll(5, &[(0, &[(0, 100), (1, 101), (2, 102)])]);
    let results = history.check();
    assert_eq!(results.invalid_because, vec!["lost-to-group".to_owned()]);
    assert_eq!(results.anomaly_counts["lost-to-group"], 2);
    assert_eq!(results.examples["lost-to-group"][0]["value"], 101);
}

#[test]
fn a_new_owner_that_starts_beyond_the_committed_offset_skipped_after_rebalance() {
    // Committed: 2. Member 4 starts at 4, jumping over 102 and 103, which it never read.
    let mut history = HistoryBuilder::default();
    for (offset, value) in [(0, 100), (1, 101), (2, 102), (3, 103), (4, 104)] {
        history.send(1, 0, value, offset);
    }
    history
        .rebalance(3, &[0])
        .poll(3, &[(0, &[(0, 100), (1, 101)])])
        .commit(3, &[(0, 2)], OpType::Ok)
        .rebalance(4, &[0])
        .poll(4, &[(0, &[(4, 104)])])
        .final_poll(
            5,
            &[(0, &[(0, 100), (1, 101), (2, 102), (3, 103), (4, 104)])],
        );
    let results = history.check();
    assert_eq!(
        results.invalid_because,
        vec!["skipped-after-rebalance".to_owned()]
    );
    assert_eq!(
        results.examples["skipped-after-rebalance"][0]["skipped_offsets"],
        serde_json::json!([2, 3])
    );
}

#[test]
fn a_commit_of_unknown_outcome_may_have_moved_the_group_but_a_failed_one_did_not() {
    let history_with = |outcome| {
        let mut history = HistoryBuilder::default();
        history
            .send(1, 0, 100, 0)
            .send(1, 0, 101, 1)
            .rebalance(3, &[0])
            .poll(3, &[(0, &[(0, 100), (1, 101)])])
            .commit(3, &[(0, 2)], outcome)
            .rebalance(4, &[0])
            .poll(4, &[(0, &[(2, 102)])])
            .final_poll(5, &[(0, &[(0, 100), (1, 101), (2, 102)])]);
        history.check()
    };
    // Maybe committed: starting at 2 is fine.
    let results = history_with(OpType::Info);
    assert!(results.valid, "{results:#?}");
    // Refused by the coordinator: the group's offset is still 0, so starting at 2 skips.
    assert_invalid_because(&history_with(OpType::Fail), "skipped-after-rebalance");
}

#[test]
fn a_member_that_keeps_reading_past_its_own_uncommitted_reads_after_a_rebalance_skips_nothing() {
    // Member 3 read 0 and 1 without committing; it gets key 0 again and goes on at 2.
    let mut history = HistoryBuilder::default();
    history
        .send(1, 0, 100, 0)
        .send(1, 0, 101, 1)
        .send(1, 0, 102, 2)
        .rebalance(3, &[0])
        .poll(3, &[(0, &[(0, 100), (1, 101)])])
        .rebalance(3, &[0])
        .poll(3, &[(0, &[(2, 102)])])
        .final_poll(5, &[(0, &[(0, 100), (1, 101), (2, 102)])]);
    let results = history.check();
    assert!(results.valid, "{results:#?}");
}

#[test]
fn a_rebalance_restarts_the_poll_order_check_of_the_member() {
    let mut history = HistoryBuilder::default();
    history
        .send(1, 0, 100, 0)
        .rebalance(3, &[0])
        .poll(3, &[(0, &[(0, 100)])])
        .rebalance(3, &[0])
        .poll(3, &[(0, &[(0, 100)])]);
    let results = history.check();
    assert_eq!(results.anomaly_counts.get("nonmonotonic-poll"), None);
}

#[test]
fn a_poll_that_fails_the_clients_crc_check_is_a_corrupt_read() {
    let mut history = valid_history();
    history.push(Op::new(Process::Client(3), OpType::Invoke, Function::Poll));
    let mut op = Op::new(Process::Client(3), OpType::Ok, Function::Poll);
    op.reads = Some(BTreeMap::new());
    op.error = Some("Message consumption error: BadMessage (Local: Bad message format)".into());
    history.push(op);
    assert_invalid_because(&history.check(), "corrupt-read");
}
