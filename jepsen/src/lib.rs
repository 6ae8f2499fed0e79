//! `karst-jepsen`: a fault-injection harness for Karst in the style of Jepsen's Kafka test.
//!
//! # Layout
//!
//! | module | owns |
//! |---|---|
//! | [`history`] | operations (invoke/ok/fail/info) and `history.jsonl` |
//! | [`checker`] | rebuilding each partition's log from a history and finding anomalies; `results.json` |
//! | [`cluster`] | network namespaces, node configs and processes, clean-up on every exit |
//! | [`nemesis`] | the faults (partitions, kills, pauses, clocks, lost unsynced writes, bit flips) and healing |
//! | [`workload`] | librdkafka clients: sends, polls (by `assign` or as members of one consumer group, with commits), final reads |
//! | [`run`] | one bounded run from an empty cluster to a checked history |
//! | [`plot`] | `timeline.svg`: throughput and latency with fault windows shaded |
//! | [`random`] | the seeded generator behind every random choice |
//!
//! The checker needs no cluster: `karst-jepsen check results/<run>` re-checks any history.

pub mod checker;
pub mod cluster;
pub mod history;
pub mod nemesis;
pub mod plot;
pub mod random;
pub mod run;
pub mod workload;

use std::path::Path;

use anyhow::Context;

/// Checks `directory/history.jsonl`; writes `results.json` and `timeline.svg` next to it.
pub fn check_directory(
    directory: &Path,
    options: &checker::CheckOptions,
) -> anyhow::Result<checker::Results> {
    let history = history::read_history(&directory.join("history.jsonl"))?;
    let results = checker::check(&history, options);
    let results_path = directory.join("results.json");
    let text = serde_json::to_string_pretty(&results)?;
    std::fs::write(&results_path, text + "\n")
        .with_context(|| format!("write {}", results_path.display()))?;
    let plot_path = directory.join("timeline.svg");
    std::fs::write(&plot_path, plot::timeline_svg(&history))
        .with_context(|| format!("write {}", plot_path.display()))?;
    Ok(results)
}
