//! `karst-jepsen run`: one bounded run from an empty cluster to `results/<run>/results.json`.
//!
//! Steps, all on the main thread except the workload (a tokio runtime):
//! 1. create the namespaces, write and format the node configs, start the nodes;
//! 2. move the main thread into the client namespace (the runtime and librdkafka inherit it);
//! 3. create the topic, start the workers;
//! 4. alternate quiet and fault windows of `interval` until the time limit (the nemesis);
//! 5. stop the workers, heal everything, let the cluster settle, do the final reads;
//! 6. stop the cluster, delete the namespaces, check the history.
//!
//! Ctrl-C or SIGTERM ends the run early but still heals, reads, cleans up and checks. Node
//! processes are started from the main thread only: their parent-death signal is tied to the
//! thread that started them.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};

use crate::checker::Results;
use crate::cluster::cleanup::{self, CleanupGuard};
use crate::cluster::network::{self, NodeId};
use crate::cluster::node::FaultLayers;
use crate::cluster::Cluster;
use crate::history::{Function, HistoryWriter, Op, OpType, Process, WorkloadKind, NEMESIS_PROCESS};
use crate::nemesis::{self, Family, Nemesis};
use crate::workload::{self, Shared, WorkloadOptions};

/// Time the cluster gets after the last heal before the final reads start.
const SETTLE_AFTER_HEAL: Duration = Duration::from_secs(5);
/// Time workers get to finish their current operation once told to stop.
const WORKER_STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Granularity of the nemesis's sleeps (how quickly it notices Ctrl-C).
const SLEEP_SLICE: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// 3 or 5 nodes, each a broker and a quorum voter.
    pub node_count: u32,
    pub nemeses: Vec<Family>,
    pub time_limit: Duration,
    /// Length of each quiet window and each fault window.
    pub interval: Duration,
    pub rate: f64,
    pub concurrency: u32,
    pub seed: u64,
    pub results_root: PathBuf,
    pub karst_binary: PathBuf,
    pub active_keys: u32,
    pub key_rotation: Duration,
    pub topic: String,
    /// Idempotent producers (`enable.idempotence=true`).
    pub idempotent: bool,
    /// Consumers that `assign` keys, or members of one consumer group.
    pub workload: WorkloadKind,
}

/// Runs the whole test; returns the run directory and the checker's verdict.
pub fn run(options: &RunOptions) -> anyhow::Result<(PathBuf, Results)> {
    check_preconditions(options)?;
    let run_directory = new_run_directory(&options.results_root)?;
    println!("karst-jepsen: run directory {}", run_directory.display());
    cleanup::install_panic_hook();
    let _cleanup = CleanupGuard;
    let layers = FaultLayers {
        faketime: options.nemeses.contains(&Family::Clock),
        unsynced_filesystem: options.nemeses.contains(&Family::LoseUnsynced),
        small_segments: options.nemeses.contains(&Family::Bitflip),
    };
    let mut cluster = Cluster::create(
        options.node_count,
        &options.karst_binary,
        &run_directory,
        layers,
    )?;
    network::enter(&network::client_namespace())?;
    cluster.start_stopped()?;

    let workload_options = Arc::new(WorkloadOptions {
        bootstrap_servers: cluster.bootstrap_servers(),
        topic: options.topic.clone(),
        concurrency: options.concurrency,
        rate: options.rate,
        active_keys: options.active_keys,
        key_rotation: options.key_rotation,
        key_count: key_count(options),
        poll_window: Duration::from_millis(50),
        seed: options.seed,
        idempotent: options.idempotent,
        kind: options.workload,
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let started = Instant::now();
    let history = HistoryWriter::create(&run_directory.join("history.jsonl"), started)?;
    let shared = Arc::new(Shared::new(history, started));
    workload::record_settings(&shared, &workload_options);
    runtime.spawn(stop_on_signal(shared.clone()));
    runtime.block_on(workload::create_topic(&workload_options))?;

    let deadline = Instant::now() + options.time_limit;
    let workers: Vec<_> = (0..options.concurrency)
        .map(|worker| {
            runtime.spawn(workload::run_worker(
                worker,
                shared.clone(),
                workload_options.clone(),
                deadline,
            ))
        })
        .collect();

    let nemesis_outcome = run_nemesis(options, &workload_options, &mut cluster, &shared, deadline);
    shared.stop.store(true, Ordering::Relaxed);
    runtime.block_on(join_workers(workers));
    heal_recorded(&mut cluster, &shared);
    sleep(SETTLE_AFTER_HEAL);
    note_exited_nodes(&mut cluster, &shared);
    runtime.block_on(final_reads_reported(&shared, &workload_options));
    if options.workload == WorkloadKind::Groups {
        if let Err(error) = runtime.block_on(workload::groups::fetch_committed(
            &shared,
            &workload_options,
        )) {
            eprintln!("karst-jepsen: reading the group's committed offsets failed: {error:#}");
        }
    }
    note_exited_nodes(&mut cluster, &shared);
    cluster.save_admin_views();
    shared.history.lock().expect("history lock").flush()?;
    runtime.shutdown_timeout(Duration::from_secs(5));
    drop(cluster);
    nemesis_outcome?;
    let results = crate::check_directory(&run_directory, &Default::default())?;
    Ok((run_directory, results))
}

fn check_preconditions(options: &RunOptions) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("karst-jepsen run needs root (network namespaces, iptables)");
    }
    if !options.karst_binary.is_file() {
        bail!(
            "no karst binary at {} (build it, or set KARST_BIN)",
            options.karst_binary.display()
        );
    }
    network::check_tools(options.nemeses.contains(&Family::Partition))
}

/// Waits for every worker (bounded by [`WORKER_STOP_TIMEOUT`] each); a worker's failure is
/// reported, not fatal: the history up to it is still worth checking.
async fn join_workers(workers: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>) {
    for worker in workers {
        match tokio::time::timeout(WORKER_STOP_TIMEOUT, worker).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => eprintln!("karst-jepsen: a worker failed: {error:#}"),
            Ok(Err(error)) => eprintln!("karst-jepsen: a worker panicked: {error}"),
            Err(_) => eprintln!("karst-jepsen: a worker did not stop in time"),
        }
    }
}

/// The final reads; what they could not finish shows up in the checker as unseen values.
async fn final_reads_reported(shared: &Shared, options: &WorkloadOptions) {
    match workload::final_reads(shared, options).await {
        Ok(unfinished) if unfinished.is_empty() => {}
        Ok(unfinished) => eprintln!(
            "karst-jepsen: final reads did not reach the high watermark of keys {unfinished:?}"
        ),
        Err(error) => eprintln!("karst-jepsen: final reads failed: {error:#}"),
    }
}

/// Keys reachable in a run: the active ones plus one per rotation.
fn key_count(options: &RunOptions) -> u32 {
    let rotations = options.time_limit.as_millis() / options.key_rotation.as_millis().max(1);
    options.active_keys + rotations as u32 + 1
}

fn new_run_directory(root: &Path) -> anyhow::Result<PathBuf> {
    let seconds = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let directory = root.join(format!("run-{seconds}"));
    std::fs::create_dir_all(&directory)
        .with_context(|| format!("create {}", directory.display()))?;
    Ok(directory)
}

async fn stop_on_signal(shared: Arc<Shared>) {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(error) => {
                eprintln!("karst-jepsen: no SIGTERM handler: {error}");
                return;
            }
        };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    eprintln!("karst-jepsen: stopping early (signal); healing, reading and cleaning up");
    shared.stop.store(true, Ordering::Relaxed);
}

fn sleep(duration: Duration) {
    std::thread::sleep(duration);
}

/// Sleeps for `duration` unless the run is told to stop; false if it was.
fn sleep_unless_stopped(shared: &Shared, duration: Duration) -> bool {
    let until = Instant::now() + duration;
    while Instant::now() < until {
        if shared.stop.load(Ordering::Relaxed) {
            return false;
        }
        sleep(SLEEP_SLICE.min(until - Instant::now()));
    }
    !shared.stop.load(Ordering::Relaxed)
}

fn nemesis_op(op_type: OpType, f: Function) -> Op {
    Op::new(Process::Named(NEMESIS_PROCESS.into()), op_type, f)
}

/// Quiet window, fault window, heal; again, until the time limit.
fn run_nemesis(
    options: &RunOptions,
    workload_options: &WorkloadOptions,
    cluster: &mut Cluster,
    shared: &Shared,
    deadline: Instant,
) -> anyhow::Result<()> {
    if options.nemeses.is_empty() {
        sleep_unless_stopped(shared, deadline.saturating_duration_since(Instant::now()));
        return Ok(());
    }
    let mut nemesis = Nemesis::new(options.nemeses.clone(), options.seed, &options.topic);
    while Instant::now() + options.interval * 2 <= deadline {
        if !sleep_unless_stopped(shared, options.interval) {
            break;
        }
        note_exited_nodes(cluster, shared);
        // The newest active key: the one the workload will write longest from now.
        let keys = workload_options.active_keys_at(shared.started.elapsed());
        nemesis.aim_at_partition(keys.last().copied().unwrap_or(0));
        let fault = nemesis.choose(cluster)?;
        let mut invoke = nemesis_op(OpType::Invoke, Function::StartFault);
        invoke.fault = Some(fault.name());
        invoke.nodes = Some(fault.nodes());
        shared.record(invoke.clone());
        println!(
            "karst-jepsen: {:>5.1}s fault {} on {:?}",
            shared.started.elapsed().as_secs_f64(),
            fault.name(),
            fault.nodes()
        );
        let mut done = invoke;
        done.op_type = OpType::Info;
        if let Err(error) = nemesis::inject(&fault, cluster) {
            done.error = Some(format!("{error:#}"));
        }
        shared.record(done);
        let stopped = !sleep_unless_stopped(shared, options.interval);
        heal_recorded(cluster, shared);
        if stopped {
            break;
        }
    }
    sleep_unless_stopped(shared, deadline.saturating_duration_since(Instant::now()));
    Ok(())
}

/// Heals everything and records it; a heal that fails (a node that does not come back) is
/// recorded with its error and printed with the node's log.
fn heal_recorded(cluster: &mut Cluster, shared: &Shared) {
    note_exited_nodes(cluster, shared);
    shared.record(nemesis_op(OpType::Invoke, Function::Heal));
    let mut done = nemesis_op(OpType::Info, Function::Heal);
    if let Err(error) = nemesis::heal(cluster) {
        eprintln!("karst-jepsen: heal failed: {error:#}");
        done.error = Some(format!("{error:#}"));
    }
    shared.record(done);
    println!(
        "karst-jepsen: {:>5.1}s healed",
        shared.started.elapsed().as_secs_f64()
    );
}

/// A node that exited without being killed crashed: record it (the checker reports it) and
/// print the end of its log.
fn note_exited_nodes(cluster: &mut Cluster, shared: &Shared) {
    let ids: Vec<NodeId> = cluster.ids();
    for id in ids {
        let node = cluster.node_mut(id);
        if let Some(status) = node.reap_if_exited() {
            eprintln!(
                "karst-jepsen: node {id} exited by itself ({status}); its log ends:\n{}",
                node.log_tail(30)
            );
            let mut op = nemesis_op(OpType::Info, Function::NodeExited);
            op.nodes = Some(vec![id]);
            op.error = Some(status.to_string());
            shared.record(op);
        }
    }
}
