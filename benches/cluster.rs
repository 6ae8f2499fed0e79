//! Karst beside Apache Kafka on one node and on three, and idempotence off/on; run with
//! `scripts/bench cluster` (`cargo bench --bench cluster`).
//!
//! **Karst and Apache Kafka** (issue 11): one Karst node beside one Apache Kafka 4.4.0 node,
//! then a three-node Karst cluster beside a three-node Kafka cluster (`scripts/kafka-peer`,
//! KRaft combined mode), Kafka with its defaults and with `log.flush.interval.messages=1`, in
//! the same run, on loopback and one disk. Topics of 6 partitions; on three nodes
//! `default.replication.factor=3` and `min.insync.replicas=2`; acks=all; librdkafka as the
//! client. For 200-byte and 1 KiB records: produce as fast as the client goes, consume
//! everything with one consumer, and produce paced at 10 and 50 MB/s offered for the latency
//! percentiles. Broker CPU is all nodes' together, per GB of payload; RSS is each node's peak
//! (`VmHWM`) at the end of its system's rows.
//!
//! **Idempotence** (issue 8): produce throughput with `enable.idempotence` off and on, 200-byte
//! records, acks=all, on a single node and on the three-node cluster (RF=3), alternating off
//! and on over three rounds on the same broker, fresh topic per phase; the cost is the drop of
//! the median. Three clients: librdkafka, the Java producer, and requests of one fixed shape
//! (`support::fixed_load`), which alone sends the broker the same requests on both sides; the
//! Java rows also show the client's records per request, which the broker's CPU per GB follows.
//!
//! Environment: `KARST_BENCH_ONLY` (`kafka` for the first part, `idempotence` for the second,
//! or a row's name), `KARST_BENCH_SCALE` (multiplies every record count, default 1),
//! `KARST_BENCH_ROUNDS` (idempotence rounds, default 3), `KARST_BENCH_CLIENT` (idempotence
//! clients whose name contains it: `librdkafka`, `Java`, `fixed`), `KARST_BENCH_PRODUCER` /
//! `KARST_BENCH_CONSUMER` as in `produce_consume`.

use std::path::PathBuf;
use std::time::Instant;

#[path = "support/mod.rs"]
mod support;

use support::fixed_load::{produce_fixed, FixedLoad};
use support::kafka::KafkaPeer;
use support::load::{consume, produce, produce_with, Keys, PARTITIONS};
use support::{cpu_seconds, peak_rss_bytes, Broker, Cluster};

/// Every node of a three-node row: RF=3 and acks=all that needs two replicas.
const REPLICATED: [&str; 2] = ["default.replication.factor=3", "min.insync.replicas=2"];

/// Record sizes and how many records of each a throughput phase sends (before the scale).
const SIZES: [(usize, usize); 2] = [(200, 1_000_000), (1024, 300_000)];

/// Records per request of the fixed-shape idempotence load (about 210 KB, as the Java
/// producer's requests with `batch.size=262144`).
const FIXED_RECORDS_PER_REQUEST: usize = 1000;

/// Offered loads of the paced phases, MB/s, each for `PACED_SECONDS`.
const PACED_MEGABYTES: [f64; 2] = [10.0, 50.0];
const PACED_SECONDS: f64 = 5.0;

/// The brokers under test: their bootstrap servers and process ids.
struct Brokers {
    bootstrap: String,
    pids: Vec<u32>,
}

impl Brokers {
    fn cpu_seconds(&self) -> f64 {
        self.pids
            .iter()
            .map(|pid| cpu_seconds(&pid.to_string()))
            .sum()
    }

    /// Runs `phase` and returns its result with the brokers' CPU seconds per GB of `bytes`.
    fn cpu_per_gigabyte<T>(&self, bytes: usize, phase: impl FnOnce() -> T) -> (T, f64) {
        let before = self.cpu_seconds();
        let result = phase();
        (result, (self.cpu_seconds() - before) / (bytes as f64 / 1e9))
    }

    /// Each node's peak RSS so far, MiB.
    fn peak_rss_mib(&self) -> Vec<f64> {
        self.pids
            .iter()
            .map(|pid| peak_rss_bytes(*pid) as f64 / (1024.0 * 1024.0))
            .collect()
    }
}

fn scaled(records: usize) -> usize {
    let scale: f64 = std::env::var("KARST_BENCH_SCALE")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(1.0);
    ((records as f64 * scale) as usize).max(1000)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The rows of one system (Karst or a Kafka configuration) on three nodes, RF=3: throughput and
/// paced latency tables get a row per record size; returns the system's peak RSS per node.
fn cluster_rows(
    name: &str,
    brokers: &Brokers,
    throughput_rows: &mut Vec<String>,
    paced_rows: &mut Vec<String>,
) -> Vec<f64> {
    for (record_bytes, records) in SIZES {
        let records = scaled(records);
        let topic = format!("bench-{record_bytes}");
        let (produced, produce_cpu) = brokers.cpu_per_gigabyte(records * record_bytes, || {
            produce(
                &brokers.bootstrap,
                &topic,
                records,
                record_bytes,
                Keys::None,
                None,
            )
        });
        // The warm-up record per partition is in the topic too.
        let stored = records + PARTITIONS as usize;
        let (consumed, consume_cpu) = brokers.cpu_per_gigabyte(stored * record_bytes, || {
            consume(&brokers.bootstrap, &topic, stored, 1)
        });
        throughput_rows.push(format!(
            "| {name} | {record_bytes} | {:.0} | {:.1} | {:.2} | {:.2} | {:.1} | {:.0} | {:.1} | {:.1} |",
            produced.records_per_second,
            produced.megabytes_per_second,
            produced.p50_ms,
            produced.p99_ms,
            produce_cpu,
            consumed.records_per_second,
            consumed.megabytes_per_second,
            consume_cpu,
        ));
        for megabytes in PACED_MEGABYTES {
            let rate = megabytes * 1e6 / record_bytes as f64;
            let records = (rate * PACED_SECONDS) as usize;
            let produced = produce(
                &brokers.bootstrap,
                &format!("paced-{record_bytes}-{megabytes}"),
                records,
                record_bytes,
                Keys::None,
                Some(rate),
            );
            paced_rows.push(format!(
                "| {name} | {record_bytes} | {megabytes:.0} | {:.1} | {:.2} | {:.2} | {:.2} |",
                produced.megabytes_per_second, produced.p50_ms, produced.p99_ms, produced.p999_ms
            ));
        }
    }
    brokers.peak_rss_mib()
}

/// Karst and Apache Kafka on `nodes` nodes (1, or 3 with RF=3), in one run.
fn karst_and_kafka(root: &std::path::Path, only: &str, nodes: u32) {
    let mut throughput_rows = Vec::new();
    let mut paced_rows = Vec::new();
    let mut rss_rows = Vec::new();
    let count = if nodes == 1 {
        "1 node".to_owned()
    } else {
        format!("{nodes} nodes")
    };
    let replication: &[&str] = if nodes == 1 { &[] } else { &REPLICATED };
    let wanted = |name: &str| name.contains(only) || "kafka".contains(only);
    let karst_name = if nodes == 1 {
        "Karst, 1 node, fsync before ack".to_owned()
    } else {
        format!("Karst, {count}, fsync before ack on every replica")
    };
    if wanted(&karst_name) {
        let mut settings = replication.to_vec();
        settings.push("log.io.backend=io_uring");
        let data = root.join(format!("karst-{nodes}"));
        // Kept alive until its rows are done.
        let (brokers, _running) = if nodes == 1 {
            let broker = Broker::start(&data, PARTITIONS, &settings);
            let brokers = Brokers {
                bootstrap: broker.bootstrap.clone(),
                pids: vec![broker.child.id()],
            };
            (brokers, (Some(broker), None))
        } else {
            let cluster = Cluster::start(&data, PARTITIONS, &settings);
            let brokers = Brokers {
                bootstrap: cluster.bootstrap.clone(),
                pids: cluster.pids(),
            };
            (brokers, (None, Some(cluster)))
        };
        let rss = cluster_rows(&karst_name, &brokers, &mut throughput_rows, &mut paced_rows);
        rss_rows.push((karst_name.clone(), rss));
    }
    let kafka_modes: [(String, &[&str]); 2] = [
        (
            format!("Apache Kafka 4.4.0, {count}, defaults (no fsync before ack)"),
            &[],
        ),
        (
            format!("Apache Kafka 4.4.0, {count}, log.flush.interval.messages=1"),
            &["log.flush.interval.messages=1"],
        ),
    ];
    for (index, (name, extra)) in kafka_modes.iter().enumerate() {
        if !wanted(name) {
            continue;
        }
        let mut settings = replication.to_vec();
        settings.extend_from_slice(extra);
        let directory = root.join(format!("kafka-{nodes}-{index}"));
        let Some(kafka) = KafkaPeer::start(&directory, nodes, &settings) else {
            continue;
        };
        let brokers = Brokers {
            bootstrap: kafka.bootstrap.clone(),
            pids: kafka.pids.clone(),
        };
        let rss = cluster_rows(name, &brokers, &mut throughput_rows, &mut paced_rows);
        rss_rows.push((name.clone(), rss));
        drop(kafka);
    }
    if throughput_rows.is_empty() {
        return;
    }
    if nodes == 1 {
        println!("\n## 1 node, acks=all\n");
    } else {
        println!("\n## {count}, RF=3, min.insync.replicas=2, acks=all\n");
    }
    println!("| system | record bytes | produce rec/s | MB/s | p50 ms | p99 ms | broker CPU s/GB | consume rec/s, 1 consumer | MB/s | broker CPU s/GB |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for row in &throughput_rows {
        println!("{row}");
    }
    println!("\n| paced produce | record bytes | offered MB/s | achieved MB/s | p50 ms | p99 ms | p99.9 ms |");
    println!("|---|---|---|---|---|---|---|");
    for row in &paced_rows {
        println!("{row}");
    }
    println!("\n| system | peak RSS per node, MiB |");
    println!("|---|---|");
    for (name, rss) in &rss_rows {
        let each: Vec<String> = rss.iter().map(|mib| format!("{mib:.0}")).collect();
        println!("| {name} | {} |", each.join(", "));
    }
}

/// The client of an idempotence comparison.
#[derive(Clone, Copy)]
enum Driver {
    /// librdkafka (this process). With idempotence it keeps at most 5 *messages* per partition
    /// in flight (`rktp_msgs_inflight` against `RD_KAFKA_IDEMP_MAX_INFLIGHT`), so in practice
    /// one ProduceRequest per partition: throughput then follows the acks=all round trip.
    Librdkafka,
    /// Kafka's own `kafka-producer-perf-test` (the Java producer, run by `scripts/kafka-peer
    /// tool`): 5 requests in flight per connection with idempotence on or off, so only the
    /// broker's side of idempotence differs. Figures are its steady-state line (after
    /// `--warmup-records`).
    Java,
    /// Requests of one fixed shape written by hand (`support::fixed_load`): 1,000 records
    /// per request, one partition each, 5 in flight per leader. The same requests with and
    /// without a producer id, so the difference is the broker's alone.
    Fixed,
}

impl Driver {
    fn name(self) -> &'static str {
        match self {
            Driver::Librdkafka => "librdkafka 2.12.1",
            Driver::Java => "Java producer 4.4.0",
            Driver::Fixed => "fixed requests",
        }
    }
}

/// What one phase of the idempotence comparison measured on the client.
struct Rates {
    records_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// The Java producer's `records-per-request-avg`: fewer records per request means more
    /// requests per GB, which costs the broker CPU whatever idempotence does. librdkafka's
    /// is not collected.
    records_per_request: Option<f64>,
}

/// The Java producer's JIT warm-up: a fifth of the measured records more, sent first.
fn java_warmup_records(records: usize) -> usize {
    records / 5
}

/// Runs `kafka-producer-perf-test` with `records` (and `java_warmup_records` more) of 200
/// bytes; its steady-state figures, or None (reason on stderr) where it cannot run.
fn java_producer(bootstrap: &str, topic: &str, records: usize, on: bool) -> Option<Rates> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/kafka-peer");
    let warmup = java_warmup_records(records);
    let output = std::process::Command::new(script)
        .args([
            "tool",
            "org.apache.kafka.tools.ProducerPerformance",
            "--topic",
            topic,
        ])
        .args(["--num-records", &(records + warmup).to_string()])
        .args(["--warmup-records", &warmup.to_string()])
        .args([
            "--record-size",
            "200",
            "--throughput",
            "-1",
            "--print-metrics",
            "--producer-props",
        ])
        .arg(format!("bootstrap.servers={bootstrap}"))
        .args(["acks=all", "linger.ms=10", "batch.size=262144"])
        .arg(format!("enable.idempotence={on}"))
        .output();
    let output = match output {
        Ok(output) if output.status.success() => output,
        Ok(output) => {
            eprintln!(
                "kafka-producer-perf-test failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
            return None;
        }
        Err(error) => {
            eprintln!("kafka-producer-perf-test: {error}");
            return None;
        }
    };
    // "800000 steady state records sent, 252445.5 records/sec (48.15 MB/sec), 88.86 ms avg
    // latency, 465.00 ms max latency, 38 ms 50th, 367 ms 95th, 429 ms 99th, 464 ms 99.9th."
    // A run longer than its 5 s reporting interval also prints "In steady state." when the
    // warm-up ends, so the summary is found by more than those two words.
    let text = String::from_utf8_lossy(&output.stdout);
    let summary = text
        .lines()
        .find(|line| line.contains("steady state records sent"));
    let Some(line) = summary else {
        eprintln!("kafka-producer-perf-test printed no steady-state line:\n{text}");
        return None;
    };
    let number_before = |suffix: &str| -> Option<f64> {
        let number = line
            .find(suffix)
            .and_then(|end| line[..end].split_whitespace().last()?.parse().ok());
        if number.is_none() {
            eprintln!("kafka-producer-perf-test: no number before {suffix:?} in {line:?}");
        }
        number
    };
    // "producer-metrics:records-per-request-avg:{client-id=perf-producer-client} : 1492.537"
    let records_per_request = text
        .lines()
        .find(|line| line.starts_with("producer-metrics:records-per-request-avg:"))
        .and_then(|line| line.rsplit(':').next()?.trim().parse().ok());
    Some(Rates {
        records_per_second: number_before(" records/sec")?,
        p50_ms: number_before(" ms 50th")?,
        p99_ms: number_before(" ms 99th")?,
        records_per_request,
    })
}

/// One phase of the idempotence comparison: its figures and the broker CPU s/GB.
fn idempotence_phase(
    brokers: &Brokers,
    driver: Driver,
    topic: &str,
    records: usize,
    on: bool,
) -> Option<(Rates, f64)> {
    // The broker's CPU is measured over everything the phase sends, the Java producer's
    // warm-up included.
    let fixed = FixedLoad {
        requests: records / FIXED_RECORDS_PER_REQUEST / PARTITIONS as usize * PARTITIONS as usize,
        records_per_batch: FIXED_RECORDS_PER_REQUEST,
        record_bytes: 200,
        in_flight: 5,
    };
    let sent = match driver {
        Driver::Librdkafka => records,
        Driver::Java => records + java_warmup_records(records),
        // Every leader gets the same share: 6 partitions over 1, 2 or 3 leaders.
        Driver::Fixed => fixed.requests * FIXED_RECORDS_PER_REQUEST,
    };
    let (rates, cpu) = brokers.cpu_per_gigabyte(sent * 200, || match driver {
        Driver::Librdkafka => {
            let setting = [("enable.idempotence", if on { "true" } else { "false" })];
            let produced = produce_with(
                &brokers.bootstrap,
                topic,
                records,
                200,
                Keys::None,
                None,
                &setting,
            );
            Some(Rates {
                records_per_second: produced.records_per_second,
                p50_ms: produced.p50_ms,
                p99_ms: produced.p99_ms,
                records_per_request: None,
            })
        }
        Driver::Java => java_producer(&brokers.bootstrap, topic, records, on),
        Driver::Fixed => {
            let (_, records_per_second) = produce_fixed(&brokers.bootstrap, topic, &fixed, on);
            Some(Rates {
                records_per_second,
                p50_ms: f64::NAN,
                p99_ms: f64::NAN,
                records_per_request: Some(FIXED_RECORDS_PER_REQUEST as f64),
            })
        }
    });
    Some((rates?, cpu))
}

/// Idempotence off and on, alternating, three rounds (`KARST_BENCH_ROUNDS`), on one broker or
/// cluster.
fn idempotence_rows(name: &str, brokers: &Brokers, driver: Driver, records: usize) {
    let mut figures: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut cpu_figures: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let client = driver.name();
    let rounds: u32 = std::env::var("KARST_BENCH_ROUNDS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(3);
    for round in 1..=rounds {
        // Alternate which goes first, so a drift over the run does not favour one side.
        let order = if round % 2 == 1 {
            [false, true]
        } else {
            [true, false]
        };
        for on in order {
            let label = if on { "on" } else { "off" };
            let topic = format!("idem-{}-{round}-{label}", client.len());
            let Some((rates, cpu)) = idempotence_phase(brokers, driver, &topic, records, on) else {
                return;
            };
            let Rates {
                records_per_second: rate,
                p50_ms: p50,
                p99_ms: p99,
                records_per_request,
            } = rates;
            let per_request = records_per_request.map_or("-".to_owned(), |r| format!("{r:.0}"));
            figures[usize::from(on)].push(rate);
            cpu_figures[usize::from(on)].push(cpu);
            println!("| {name} | {client} | {label} | {round} | {rate:.0} | {p50:.2} | {p99:.2} | {cpu:.2} | {per_request} |");
        }
    }
    let off = median(&mut figures[0]);
    let on = median(&mut figures[1]);
    let mean = |values: &[f64]| values.iter().sum::<f64>() / values.len() as f64;
    let (cpu_off, cpu_on) = (mean(&cpu_figures[0]), mean(&cpu_figures[1]));
    println!(
        "| {name} | {client} | **median: off {off:.0}, on {on:.0}** | | **cost {:.1} %** | | | **mean: off {cpu_off:.2}, on {cpu_on:.2}** | |",
        (1.0 - on / off) * 100.0
    );
}

fn idempotence(root: &std::path::Path, only: &str) {
    let single = "Karst, single node";
    let three = "Karst, 3-node cluster, RF=3";
    let kafka = "Apache Kafka 4.4.0, 3-node cluster, RF=3, defaults";
    let wanted = |name: &str| name.contains(only) || "idempotence".contains(only);
    if !(wanted(single) || wanted(three) || wanted(kafka)) {
        return;
    }
    println!("\n## Idempotence off and on, 200-byte records, acks=all\n");
    println!("| brokers | client | idempotence | round | records/s | p50 ms | p99 ms | broker CPU s/GB | client records/request |");
    println!("|---|---|---|---|---|---|---|---|---|");
    // KARST_BENCH_CLIENT narrows the clients to those whose name contains it.
    let client = std::env::var("KARST_BENCH_CLIENT").unwrap_or_default();
    let drivers: Vec<Driver> = [Driver::Librdkafka, Driver::Java, Driver::Fixed]
        .into_iter()
        .filter(|driver| driver.name().contains(client.as_str()))
        .collect();
    if wanted(single) {
        let broker = Broker::start(
            &root.join("idempotence-single"),
            PARTITIONS,
            &["log.io.backend=io_uring"],
        );
        let brokers = Brokers {
            bootstrap: broker.bootstrap.clone(),
            pids: vec![broker.child.id()],
        };
        for &driver in &drivers {
            idempotence_rows(single, &brokers, driver, scaled(2_000_000));
        }
    }
    if wanted(three) {
        let mut settings = REPLICATED.to_vec();
        settings.push("log.io.backend=io_uring");
        let cluster = Cluster::start(&root.join("idempotence-cluster"), PARTITIONS, &settings);
        let brokers = Brokers {
            bootstrap: cluster.bootstrap.clone(),
            pids: cluster.pids(),
        };
        for &driver in &drivers {
            idempotence_rows(three, &brokers, driver, scaled(1_000_000));
        }
    }
    // The same comparison against Apache Kafka tells what each client's idempotence costs
    // whatever the broker.
    if wanted(kafka) {
        if let Some(peer) = KafkaPeer::start(&root.join("idempotence-kafka"), 3, &REPLICATED) {
            let brokers = Brokers {
                bootstrap: peer.bootstrap.clone(),
                pids: peer.pids.clone(),
            };
            for &driver in &drivers {
                idempotence_rows(kafka, &brokers, driver, scaled(1_000_000));
            }
        }
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let only = std::env::var("KARST_BENCH_ONLY").unwrap_or_default();
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-cluster");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let started = Instant::now();
    karst_and_kafka(&root, &only, 1);
    karst_and_kafka(&root, &only, 3);
    idempotence(&root, &only);
    println!(
        "\nlibrdkafka linger.ms=10 (paced: 1), batch.num.messages=100000, 6 partitions; \
         benchmark took {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&root);
}
