//! The `karst-jepsen` command: `run` a fault-injection test, or `check` a recorded history.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use karst_jepsen::checker::{CheckOptions, Results};
use karst_jepsen::history::WorkloadKind;
use karst_jepsen::nemesis::Family;
use karst_jepsen::run::{run, RunOptions};

#[derive(Parser)]
#[command(
    name = "karst-jepsen",
    about = "Fault-injection tests for Karst (Jepsen-style)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a 3-node cluster in network namespaces, run the workload under faults, check it.
    /// Needs root. Exits 1 when the history is invalid.
    Run {
        /// Nodes (3 or 5), each a broker and a voter of the metadata quorum.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(3..=5))]
        nodes: u32,
        /// Fault families, comma-separated: partition, kill, pause, clock, lose-unsynced,
        /// bitflip (empty: no faults).
        #[arg(long, default_value = "partition,kill,pause", value_delimiter = ',')]
        nemesis: Vec<String>,
        /// Seconds of workload (faults included); final reads and clean-up come after.
        #[arg(long, default_value_t = 60)]
        time_limit: u64,
        /// Operations per second, all workers together.
        #[arg(long, default_value_t = 100.0)]
        rate: f64,
        /// Concurrent client workers.
        #[arg(long, default_value_t = 10)]
        concurrency: u32,
        /// Seconds of each quiet window and each fault window.
        #[arg(long, default_value_t = 10)]
        interval: u64,
        /// Seed of every random choice (faults, targets, keys).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Keys in use at any time.
        #[arg(long, default_value_t = 4)]
        active_keys: u32,
        /// Seconds between key rotations.
        #[arg(long, default_value_t = 15)]
        key_rotation: u64,
        /// Where run directories are created (under target/, which git ignores).
        #[arg(long, default_value = "target/jepsen")]
        results: PathBuf,
        /// The karst binary (default: $KARST_BIN, else target/release/karst).
        #[arg(long)]
        karst_bin: Option<PathBuf>,
        /// Idempotent producers (enable.idempotence=true): then no value may be stored twice.
        #[arg(long)]
        idempotent: bool,
        /// How consumers read: `assign` (each process its own positions) or `groups` (members
        /// of one consumer group: subscribe, commit after each poll).
        #[arg(long, value_enum, default_value_t = WorkloadKind::Assign)]
        workload: WorkloadKind,
        /// Turn the verdict around, for proving the harness on a deliberately broken build:
        /// exit 0 only when the history is invalid because of every named anomaly
        /// (comma-separated, e.g. lost-write), else 1.
        #[arg(long, value_delimiter = ',')]
        expect_invalid: Vec<String>,
    },
    /// Check `DIRECTORY/history.jsonl`; write `results.json` and `timeline.svg` there.
    /// Exits 1 when the history is invalid.
    Check {
        directory: PathBuf,
        /// Seconds without a successful operation, outside faults, that count as a stall.
        #[arg(long, default_value_t = 10)]
        stall_window: u64,
        /// Seconds the cluster gets to recover after each heal.
        #[arg(long, default_value_t = 10)]
        recovery_grace: u64,
        /// Fault families that must have been injected (comma-separated), e.g. partition,kill:
        /// exit 1 if one was not, so a smoke run cannot pass without faults.
        #[arg(long, value_delimiter = ',')]
        require_faults: Vec<String>,
        /// Exit 0 only when the history is invalid because of every named anomaly (see `run`).
        #[arg(long, value_delimiter = ',')]
        expect_invalid: Vec<String>,
    },
}

fn main() -> ExitCode {
    match main_result() {
        Ok(code) => code,
        Err(error) => {
            eprintln!("karst-jepsen: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn main_result() -> anyhow::Result<ExitCode> {
    match Cli::parse().command {
        Command::Run {
            nodes,
            nemesis,
            time_limit,
            rate,
            concurrency,
            interval,
            seed,
            active_keys,
            key_rotation,
            results,
            karst_bin,
            idempotent,
            workload,
            expect_invalid,
        } => {
            let nemeses = nemesis
                .iter()
                .filter(|name| !name.is_empty())
                .map(|name| name.parse::<Family>())
                .collect::<anyhow::Result<Vec<_>>>()?;
            let karst_binary = karst_bin
                .or_else(|| std::env::var_os("KARST_BIN").map(PathBuf::from))
                .unwrap_or_else(|| PathBuf::from("target/release/karst"));
            let options = RunOptions {
                node_count: nodes,
                nemeses,
                time_limit: Duration::from_secs(time_limit),
                interval: Duration::from_secs(interval),
                rate,
                concurrency: concurrency.max(1),
                seed,
                results_root: results,
                karst_binary: std::fs::canonicalize(&karst_binary).unwrap_or(karst_binary),
                active_keys: active_keys.max(1),
                key_rotation: Duration::from_secs(key_rotation.max(1)),
                topic: "jepsen".to_owned(),
                idempotent,
                workload,
            };
            let (directory, results) = run(&options)?;
            let verdict = report(&directory, &results);
            Ok(expected_verdict(verdict, &results, &expect_invalid))
        }
        Command::Check {
            directory,
            stall_window,
            recovery_grace,
            require_faults,
            expect_invalid,
        } => {
            let options = CheckOptions {
                stall_window_ns: stall_window * 1_000_000_000,
                recovery_grace_ns: recovery_grace * 1_000_000_000,
            };
            let results = karst_jepsen::check_directory(&directory, &options)?;
            let verdict = report(&directory, &results);
            let missing: Vec<&String> = require_faults
                .iter()
                .filter(|family| !family.is_empty())
                .filter(|family| !results.ops.faults_injected.contains_key(family.as_str()))
                .collect();
            if !missing.is_empty() {
                println!("karst-jepsen: FAILED: no {missing:?} fault was injected in this run");
                return Ok(ExitCode::from(1));
            }
            Ok(expected_verdict(verdict, &results, &expect_invalid))
        }
    }
}

/// With `--expect-invalid`, the exit code says whether the history was invalid for every
/// named anomaly (0) or not (1); without it, `verdict` stands.
fn expected_verdict(verdict: ExitCode, results: &Results, expect_invalid: &[String]) -> ExitCode {
    let expected: Vec<&String> = expect_invalid.iter().filter(|a| !a.is_empty()).collect();
    if expected.is_empty() {
        return verdict;
    }
    let missing: Vec<&&String> = expected
        .iter()
        .filter(|anomaly| !results.invalid_because.contains(anomaly))
        .collect();
    if missing.is_empty() {
        println!(
            "karst-jepsen: EXPECTED: invalid because of {expected:?}, as --expect-invalid asked"
        );
        ExitCode::SUCCESS
    } else {
        println!(
            "karst-jepsen: FAILED: --expect-invalid {expected:?}, but the history is not invalid because of {missing:?}"
        );
        ExitCode::from(1)
    }
}

/// Prints the verdict and where the results are; the exit code says valid (0) or not (1).
fn report(directory: &std::path::Path, results: &Results) -> ExitCode {
    println!(
        "karst-jepsen: {} sends ({:?}), {} polls ({:?}); faults injected {:?}",
        results.ops.send.get("invoke").unwrap_or(&0),
        results.ops.send,
        results.ops.poll.get("invoke").unwrap_or(&0),
        results.ops.poll,
        results.ops.faults_injected
    );
    if !results.ops.commit.is_empty() {
        println!("karst-jepsen: commits {:?}", results.ops.commit);
    }
    println!(
        "karst-jepsen: {} acknowledged sends, {} of them read; anomalies {:?}",
        results.acknowledged_sends, results.acknowledged_sends_read, results.anomaly_counts
    );
    println!(
        "karst-jepsen: {} — results in {}",
        if results.valid {
            "VALID".to_owned()
        } else {
            format!("INVALID ({})", results.invalid_because.join(", "))
        },
        directory.join("results.json").display()
    );
    if results.valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
