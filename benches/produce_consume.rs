//! End-to-end throughput and latency benchmark, run with `scripts/bench`
//! (`cargo bench --bench produce_consume`).
//!
//! In one run, on one filesystem: the disk's own synced-write figure (`dd oflag=dsync`),
//! then a real `karst server` per mode driven by librdkafka (the `rdkafka` crate):
//! 3,000,000 records of 200 bytes produced with acks=all as fast as the client goes,
//! per-record latency from send to delivery report; then all of them consumed by one
//! consumer and again by two. Modes: each I/O backend with fsync before ack (every batch
//! CRC-checked before it is sent, the default), zero-copy fetch on (`sendfile` of bytes checked
//! before, no check on the way out), the free-space reserve off (what its statvfs per group costs), Kafka-style deferred
//! flushing (`log.flush.interval.messages` = Long.MAX) as the baseline that shows what
//! durability costs, and keyed records (the client's per-batch costs). Then a paced producer offering 50 MB/s for the latency percentiles. The CPU
//! columns are the broker's and the client's share of one core during the phase, read from
//! `/proc`. Prints Markdown tables.
//!
//! Environment: `KARST_BENCH_RECORDS` (record count), `KARST_BENCH_ONLY` (run only the modes
//! whose name contains it; paced rows are named "paced ..."), `KARST_BENCH_PRODUCER` and
//! `KARST_BENCH_CONSUMER` (`key=value,...` librdkafka settings on top of the benchmark's).
//!
//! Apache Kafka rows (issue 11): the same load against Apache Kafka 4.4.0 started by
//! `scripts/kafka-peer` in the same run, with its defaults and with
//! `log.flush.interval.messages=1`; skipped, with a note on stderr, where Java or Maven is
//! missing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

#[path = "support/mod.rs"]
mod support;

use support::kafka::KafkaPeer;
use support::load::{consume, produce, Keys, PARTITIONS};
use support::{cpu_seconds, Broker};

const RECORD_BYTES: usize = 200;

/// Apache Kafka rows: Kafka 4.4.0 (`scripts/kafka-peer`, jars from Maven Central) with its
/// defaults, which acknowledge before any fsync, and with an fsync per record as Karst does.
const KAFKA_MODES: [(&str, &[&str]); 2] = [
    (
        "Apache Kafka 4.4.0, defaults (page cache, no fsync before ack)",
        &[],
    ),
    (
        "Apache Kafka 4.4.0, log.flush.interval.messages=1",
        &["log.flush.interval.messages=1"],
    ),
];

/// CPU use of the broker and of this process (the client) while `phase` runs, as percent of
/// one core over the phase's wall time.
fn with_cpu<T>(broker_pid: u32, phase: impl FnOnce() -> T) -> (T, f64, f64) {
    let broker = broker_pid.to_string();
    let (broker_before, client_before) = (cpu_seconds(&broker), cpu_seconds("self"));
    let started = Instant::now();
    let result = phase();
    let wall = started.elapsed().as_secs_f64();
    let broker_used = cpu_seconds(&broker) - broker_before;
    let client_used = cpu_seconds("self") - client_before;
    (
        result,
        broker_used / wall * 100.0,
        client_used / wall * 100.0,
    )
}

/// `dd if=/dev/zero of=F bs=1M count=1024 oflag=dsync` in `dir`: MB/s as dd reports it.
fn dd_dsync(dir: &Path) -> String {
    let file = dir.join("dd.bench");
    let output = Command::new("dd")
        .args([
            "if=/dev/zero",
            &format!("of={}", file.display()),
            "bs=1M",
            "count=1024",
            "oflag=dsync",
        ])
        .output()
        .expect("run dd");
    let _ = std::fs::remove_file(&file);
    let text = String::from_utf8_lossy(&output.stderr);
    text.lines()
        .last()
        .unwrap_or("dd printed nothing")
        .to_owned()
}

/// One row of the main table after the mode's name: produce as fast as the client goes,
/// then consume everything with one consumer and again with two.
fn measure_row(
    bootstrap: &str,
    broker_pid: u32,
    topic: &str,
    records: usize,
    keys: Keys,
) -> String {
    let (produced, produce_broker, produce_client) = with_cpu(broker_pid, || {
        produce(bootstrap, topic, records, RECORD_BYTES, keys, None)
    });
    // The warm-up record per partition is in the topic too.
    let stored = records + PARTITIONS as usize;
    let (one, one_broker, one_client) =
        with_cpu(broker_pid, || consume(bootstrap, topic, stored, 1));
    let two = consume(bootstrap, topic, stored, 2);
    format!(
        "{:.0} | {:.1} | {:.2} | {:.2} | {:.0} / {:.0} | {:.0} | {:.1} | {:.0} / {:.0} | {:.0} |",
        produced.records_per_second,
        produced.megabytes_per_second,
        produced.p50_ms,
        produced.p99_ms,
        produce_broker,
        produce_client,
        one.records_per_second,
        one.megabytes_per_second,
        one_broker,
        one_client,
        two.records_per_second,
    )
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let records: usize = std::env::var("KARST_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000_000);
    let only = std::env::var("KARST_BENCH_ONLY").unwrap_or_default();
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    println!(
        "disk (dd bs=1M count=1024 oflag=dsync): {}",
        dd_dsync(&root)
    );
    let uring = "log.io.backend=io_uring";
    let modes: [(&str, Vec<&str>, Keys); 6] = [
        (
            "io_uring, fsync before ack (default)",
            vec![uring],
            Keys::None,
        ),
        (
            "io_uring, fsync before ack, free-space reserve off",
            vec![uring, "log.dir.min.free.bytes=0"],
            Keys::None,
        ),
        (
            "portable, fsync before ack",
            vec!["log.io.backend=portable"],
            Keys::None,
        ),
        (
            "io_uring, zero-copy fetch on (no CRC check when sending)",
            vec![uring, "fetch.zero.copy.enable=true"],
            Keys::None,
        ),
        (
            "deferred flush (Kafka-like baseline)",
            vec![uring, "log.flush.interval.messages=9223372036854775807"],
            Keys::None,
        ),
        (
            "io_uring, fsync before ack, keyed records",
            vec![uring],
            Keys::Hashed,
        ),
    ];
    println!("\n| mode | produce rec/s | produce MB/s | p50 ms | p99 ms | CPU % broker / client | consume rec/s, 1 consumer | MB/s | CPU % broker / client | consume rec/s, 2 consumers |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (index, (name, settings, keys)) in modes.iter().enumerate() {
        if !name.contains(only.as_str()) {
            continue;
        }
        let data = root.join(format!("data-{index}"));
        let broker = Broker::start(&data, PARTITIONS, settings);
        let row = measure_row(
            &broker.bootstrap,
            broker.child.id(),
            &format!("bench-{index}"),
            records,
            *keys,
        );
        println!("| {name} | {row}");
        drop(broker);
    }
    // --- Apache Kafka rows (issue 11): the same load against Kafka in the same run --------
    for (index, (name, settings)) in KAFKA_MODES.iter().enumerate() {
        if !name.contains(only.as_str()) {
            continue;
        }
        let Some(kafka) = KafkaPeer::start(&root.join(format!("kafka-{index}")), 1, settings)
        else {
            continue;
        };
        let row = measure_row(
            &kafka.bootstrap,
            kafka.pids[0],
            &format!("bench-kafka-{index}"),
            records,
            Keys::None,
        );
        println!("| {name} | {row}");
        drop(kafka);
    }
    // --- end Apache Kafka rows -----------------------------------------------------------
    // Latency at a fixed offered load: 50 MB/s of 200-byte records for 3 seconds.
    let rate = 50e6 / RECORD_BYTES as f64;
    let paced_records = (rate * 3.0) as usize;
    println!(
        "\n| paced produce, 50 MB/s offered (Karst: fsync before ack) | achieved MB/s | p50 ms | p99 ms | p99.9 ms |"
    );
    println!("|---|---|---|---|---|");
    let paced = [
        ("io_uring", Keys::None),
        ("portable", Keys::None),
        ("io_uring, keyed records", Keys::Hashed),
    ];
    for (index, (name, keys)) in paced.iter().enumerate() {
        if !format!("paced {name}").contains(only.as_str()) {
            continue;
        }
        let data = root.join(format!("paced-{index}"));
        let backend = name.split(',').next().unwrap();
        let setting = format!("log.io.backend={backend}");
        let broker = Broker::start(&data, PARTITIONS, &[setting.as_str()]);
        let produced = produce(
            &broker.bootstrap,
            "paced",
            paced_records,
            RECORD_BYTES,
            *keys,
            Some(rate),
        );
        println!(
            "| {name} | {:.1} | {:.2} | {:.2} | {:.2} |",
            produced.megabytes_per_second, produced.p50_ms, produced.p99_ms, produced.p999_ms
        );
        drop(broker);
    }
    // --- Apache Kafka rows (issue 11): the same paced load ---------------------------------
    for (index, (name, settings)) in KAFKA_MODES.iter().enumerate() {
        if !format!("paced {name}").contains(only.as_str()) {
            continue;
        }
        let Some(kafka) = KafkaPeer::start(&root.join(format!("kafka-paced-{index}")), 1, settings)
        else {
            continue;
        };
        let produced = produce(
            &kafka.bootstrap,
            "paced",
            paced_records,
            RECORD_BYTES,
            Keys::None,
            Some(rate),
        );
        println!(
            "| {name} | {:.1} | {:.2} | {:.2} | {:.2} |",
            produced.megabytes_per_second, produced.p50_ms, produced.p99_ms, produced.p999_ms
        );
        drop(kafka);
    }
    // --- end Apache Kafka rows -----------------------------------------------------------
    println!(
        "\n{records} records x {RECORD_BYTES} bytes, {PARTITIONS} partitions, acks=all, \
         librdkafka linger.ms=10 (paced: 1), batch.num.messages=100000"
    );
}
