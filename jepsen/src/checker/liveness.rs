//! Liveness: the cluster must make progress whenever it is healthy.
//!
//! During a fault a stall is allowed (kill all nodes and nothing can succeed). So the checker
//! takes the stretches between successful client operations, removes the fault windows (from a
//! fault's start to its heal, plus [`CheckOptions::recovery_grace_ns`] to recover), and reports
//! a `stall` for every remaining stretch of at least [`CheckOptions::stall_window_ns`]; and a
//! `send-stall` for such a stretch without an acknowledged send (polls may go on succeeding,
//! empty, while every send is refused).

use serde_json::json;

use super::{CheckOptions, Findings};
use crate::history::{Function, Op, OpType};

/// A time interval `[start_ns, end_ns)` since the run started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start_ns: u64,
    pub end_ns: u64,
}

/// The fault windows of a history: each fault's invoke to the completion of the heal after it
/// (or the end of the history if it was never healed).
pub fn fault_windows(history: &[Op]) -> Vec<Window> {
    let end_ns = history.iter().map(|op| op.time_ns).max().unwrap_or(0);
    let mut windows = Vec::new();
    let mut open: Option<u64> = None;
    for op in history.iter().filter(|op| !op.is_client()) {
        match (op.f, op.op_type) {
            (Function::StartFault, OpType::Invoke) => {
                open.get_or_insert(op.time_ns);
            }
            (Function::Heal, OpType::Ok | OpType::Info | OpType::Fail) => {
                if let Some(start_ns) = open.take() {
                    windows.push(Window {
                        start_ns,
                        end_ns: op.time_ns,
                    });
                }
            }
            _ => {}
        }
    }
    if let Some(start_ns) = open {
        windows.push(Window { start_ns, end_ns });
    }
    windows
}

/// Reports `stall` (no successful operation of any kind) and `send-stall` (sends attempted,
/// none acknowledged: a cluster that serves reads but refuses every write is not live either).
pub fn find_stalls(history: &[Op], options: &CheckOptions, findings: &mut Findings) {
    let mut excused: Vec<Window> = fault_windows(history)
        .into_iter()
        .map(|window| Window {
            start_ns: window.start_ns,
            end_ns: window.end_ns.saturating_add(options.recovery_grace_ns),
        })
        .collect();
    excused.extend(pause_before_final_reads(history));
    let client_ops: Vec<&Op> = history.iter().filter(|op| op.is_client()).collect();
    find_gaps(&client_ops, &excused, options, "stall", findings);
    let sends: Vec<&Op> = client_ops
        .into_iter()
        .filter(|op| op.f == Function::Send)
        .collect();
    find_gaps(&sends, &excused, options, "send-stall", findings);
}

/// The quiet stretch between the end of the workload and the final reader's first operation
/// (the harness heals and lets the cluster settle then; nobody asks anything of it).
fn pause_before_final_reads(history: &[Op]) -> Option<Window> {
    let final_poll = history.iter().find(|op| op.final_read)?;
    let first = history
        .iter()
        .position(|op| op.process == final_poll.process)?;
    let before = history[..first].iter().rev().find(|op| op.is_client())?;
    Some(Window {
        start_ns: before.time_ns,
        end_ns: history[first].time_ns,
    })
}

/// Stretches of at least the stall window between successes of `ops` (and from the first
/// and to the last of them) that no excused window covers.
fn find_gaps(
    ops: &[&Op],
    excused: &[Window],
    options: &CheckOptions,
    anomaly: &'static str,
    findings: &mut Findings,
) {
    let (Some(first), Some(last)) = (ops.first(), ops.last()) else {
        return;
    };
    let mut progress: Vec<u64> = ops
        .iter()
        .filter(|op| op.op_type == OpType::Ok)
        .map(|op| op.time_ns)
        .collect();
    progress.insert(0, first.time_ns);
    progress.push(last.time_ns);
    for pair in progress.windows(2) {
        let gap = Window {
            start_ns: pair[0],
            end_ns: pair[1],
        };
        for stretch in subtract(gap, excused) {
            if stretch.end_ns - stretch.start_ns >= options.stall_window_ns {
                findings.add(
                    anomaly,
                    json!({
                        "from_ns": stretch.start_ns,
                        "to_ns": stretch.end_ns,
                        "seconds": (stretch.end_ns - stretch.start_ns) as f64 / 1e9,
                        "no_ok_between_ns": [gap.start_ns, gap.end_ns],
                    }),
                );
            }
        }
    }
}

/// The parts of `window` that no window of `holes` covers.
pub fn subtract(window: Window, holes: &[Window]) -> Vec<Window> {
    let mut pieces = vec![window];
    for hole in holes {
        pieces = pieces
            .into_iter()
            .flat_map(|piece| {
                let mut left = Vec::with_capacity(2);
                if hole.end_ns <= piece.start_ns || hole.start_ns >= piece.end_ns {
                    left.push(piece);
                } else {
                    if hole.start_ns > piece.start_ns {
                        left.push(Window {
                            start_ns: piece.start_ns,
                            end_ns: hole.start_ns,
                        });
                    }
                    if hole.end_ns < piece.end_ns {
                        left.push(Window {
                            start_ns: hole.end_ns,
                            end_ns: piece.end_ns,
                        });
                    }
                }
                left
            })
            .collect();
    }
    pieces
}
