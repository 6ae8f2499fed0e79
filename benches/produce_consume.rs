//! End-to-end throughput and latency benchmark, run with `scripts/bench`
//! (`cargo bench --bench produce_consume`).
//!
//! In one run, on one filesystem: the disk's own synced-write figure (`dd oflag=dsync`),
//! then a real `karst server` per mode driven by librdkafka (the `rdkafka` crate):
//! 3,000,000 records of 200 bytes produced with acks=all as fast as the client goes,
//! per-record latency from send to delivery report; then all of them consumed by one
//! consumer and again by two. Modes: each I/O backend with fsync before ack, zero-copy fetch
//! off, the free-space reserve off (what its statvfs per group costs), Kafka-style deferred
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
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::bindings as rdsys;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

#[path = "support/mod.rs"]
mod support;

use support::{cpu_seconds, Broker};

const RECORD_BYTES: usize = 200;
const PARTITIONS: i32 = 6;
/// Wall-clock limit of each phase: the benchmark never hangs a CI run.
const PHASE_LIMIT: Duration = Duration::from_secs(300);

#[derive(Default)]
struct Deliveries {
    latencies_us: Mutex<Vec<u64>>,
    errors: AtomicU64,
}

/// Delivery reports: the send time rides in the message's opaque pointer as microseconds
/// since `epoch`, so the client allocates nothing per record for the measurement.
struct Context {
    deliveries: Arc<Deliveries>,
    epoch: Instant,
}
impl ClientContext for Context {}
impl ProducerContext for Context {
    type DeliveryOpaque = usize;
    fn delivery(&self, result: &DeliveryResult<'_>, sent_us: usize) {
        let now_us = self.epoch.elapsed().as_micros() as u64;
        match result {
            Ok(_) => self
                .deliveries
                .latencies_us
                .lock()
                .unwrap()
                .push(now_us.saturating_sub(sent_us as u64)),
            Err(_) => {
                self.deliveries.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

struct Figures {
    records_per_second: f64,
    megabytes_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
}

/// How the benchmark's records are keyed.
#[derive(Clone, Copy, PartialEq)]
enum Keys {
    /// No key, as `kafka-producer-perf-test` sends: librdkafka's sticky partitioner fills
    /// one partition's batch at a time (`sticky.partitioning.linger.ms`), so batches are big.
    None,
    /// An 8-byte key per record, hashed to a partition: every batch of a linger interval is
    /// split six ways, so batches are six times smaller and per-batch costs dominate.
    Hashed,
}

/// Produces `records`; with `pace` (records/s), sends at that offered rate instead of as
/// fast as possible, with `linger.ms=1` so latency is the broker's, not the client's batching.
fn produce(bootstrap: &str, topic: &str, records: usize, keys: Keys, pace: Option<f64>) -> Figures {
    let deliveries = Arc::new(Deliveries::default());
    deliveries.latencies_us.lock().unwrap().reserve(records);
    let epoch = Instant::now();
    let now_us = || epoch.elapsed().as_micros() as usize;
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("linger.ms", if pace.is_some() { "1" } else { "10" })
        .set("batch.num.messages", "100000")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("enable.idempotence", "false");
    apply_overrides(&mut config, "KARST_BENCH_PRODUCER");
    let producer: ThreadedProducer<Context> = config
        .create_with_context(Context {
            deliveries: Arc::clone(&deliveries),
            epoch,
        })
        .expect("producer");
    let payload = [b'k'; RECORD_BYTES];
    // Warm up: the first send creates the topic and fetches metadata; keep that out of the
    // measured latencies.
    for partition in 0..PARTITIONS {
        let record = BaseRecord::<[u8], [u8], usize>::with_opaque_to(topic, now_us())
            .payload(&payload[..])
            .partition(partition);
        producer
            .send(record)
            .map_err(|(error, _)| error)
            .expect("warm-up send");
    }
    producer.flush(PHASE_LIMIT).expect("warm-up flush");
    deliveries.latencies_us.lock().unwrap().clear();
    let started = Instant::now();
    for index in 0..records {
        if let Some(rate) = pace {
            let due = Duration::from_secs_f64(index as f64 / rate);
            let elapsed = started.elapsed();
            if due > elapsed + Duration::from_micros(500) {
                std::thread::sleep(due - elapsed);
            }
        }
        let key = (index as u64).to_be_bytes();
        let mut record = BaseRecord::with_opaque_to(topic, now_us()).payload(&payload[..]);
        if keys == Keys::Hashed {
            record = record.key(&key[..]);
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    record = returned;
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err((error, _)) => panic!("send failed: {error}"),
            }
            assert!(
                started.elapsed() < PHASE_LIMIT,
                "produce phase over its time limit"
            );
        }
    }
    producer.flush(PHASE_LIMIT).expect("flush");
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(
        deliveries.errors.load(Ordering::Relaxed),
        0,
        "delivery errors"
    );
    let mut latencies = deliveries.latencies_us.lock().unwrap().clone();
    assert_eq!(latencies.len(), records, "every record acknowledged");
    latencies.sort_unstable();
    let percentile = |p: f64| {
        latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)] as f64 / 1000.0
    };
    Figures {
        records_per_second: records as f64 / elapsed,
        megabytes_per_second: (records * RECORD_BYTES) as f64 / elapsed / 1e6,
        p50_ms: percentile(0.50),
        p99_ms: percentile(0.99),
        p999_ms: percentile(0.999),
    }
}

/// The consumer's message queue, read in batches through librdkafka's C API.
struct ConsumerQueue(*mut rdsys::rd_kafka_queue_t);

impl ConsumerQueue {
    fn of(consumer: &BaseConsumer) -> ConsumerQueue {
        // SAFETY: the client pointer is valid while `consumer` lives, which outlives the queue
        // (dropped at the end of the same function).
        let queue = unsafe { rdsys::rd_kafka_queue_get_consumer(consumer.client().native_ptr()) };
        assert!(!queue.is_null(), "consumer has no queue");
        ConsumerQueue(queue)
    }

    /// Waits up to 100 ms for `slots.len()` messages (librdkafka returns early only when
    /// all slots are filled), hands each one received to `each`, then destroys it.
    fn drain(
        &self,
        slots: &mut [*mut rdsys::rd_kafka_message_t],
        mut each: impl FnMut(&rdsys::rd_kafka_message_t),
    ) {
        // SAFETY: librdkafka fills at most `slots.len()` pointers and returns how many; each
        // filled slot is a message owned here until rd_kafka_message_destroy.
        unsafe {
            let filled =
                rdsys::rd_kafka_consume_batch_queue(self.0, 100, slots.as_mut_ptr(), slots.len());
            assert!(filled >= 0, "rd_kafka_consume_batch_queue failed");
            for &message in &slots[..filled as usize] {
                each(&*message);
                rdsys::rd_kafka_message_destroy(message);
            }
        }
    }
}

impl Drop for ConsumerQueue {
    fn drop(&mut self) {
        // SAFETY: the queue reference from rd_kafka_queue_get_consumer, released once.
        unsafe { rdsys::rd_kafka_queue_destroy(self.0) };
    }
}

/// Consumes `records` from all partitions with `consumers` librdkafka consumers at once, the
/// partitions dealt round-robin between them (each consumer has its own connection and
/// fetch thread, as separate members of a group would).
fn consume(bootstrap: &str, topic: &str, records: usize, consumers: usize) -> Figures {
    let seen = AtomicUsize::new(0);
    let bytes = AtomicUsize::new(0);
    let first_record_at = Mutex::new(None::<Instant>);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for member in 0..consumers {
            let (seen, bytes, first_record_at) = (&seen, &bytes, &first_record_at);
            scope.spawn(move || {
                let (consumer, expected) = consumer_of(bootstrap, topic, member, consumers);
                // Messages are taken in batches (librdkafka's rd_kafka_consume_batch_queue,
                // what confluent-kafka's `consume(num_messages=...)` calls): one queue
                // operation per batch instead of one event per record.
                let queue = ConsumerQueue::of(&consumer);
                let mut batch = vec![std::ptr::null_mut(); 10_000];
                let mut mine = 0;
                while mine < expected {
                    assert!(
                        started.elapsed() < PHASE_LIMIT,
                        "consume phase over its time limit ({} records)",
                        seen.load(Ordering::Relaxed)
                    );
                    let (mut count, mut size) = (0, 0);
                    // Never ask for more than are left: the last call returns as soon as
                    // they arrive instead of waiting out the timeout for a full batch.
                    let wanted = batch.len().min(expected - mine);
                    queue.drain(&mut batch[..wanted], |message| {
                        assert_eq!(
                            message.err,
                            rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR,
                            "consume error"
                        );
                        count += 1;
                        size += message.len;
                    });
                    mine += count;
                    if count > 0 {
                        first_record_at
                            .lock()
                            .unwrap()
                            .get_or_insert_with(Instant::now);
                        bytes.fetch_add(size, Ordering::Relaxed);
                        seen.fetch_add(count, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    // Steady state: from the first record to the last. The start-up before the first
    // record (connect, metadata, ListOffsets, first fetch) is left out.
    let first = first_record_at
        .into_inner()
        .unwrap()
        .expect("at least one record");
    let elapsed = first.elapsed().as_secs_f64();
    let (seen, bytes) = (seen.into_inner(), bytes.into_inner());
    assert_eq!(seen, records, "every produced record consumed");
    Figures {
        records_per_second: seen as f64 / elapsed,
        megabytes_per_second: bytes as f64 / elapsed / 1e6,
        p50_ms: f64::NAN,
        p99_ms: f64::NAN,
        p999_ms: f64::NAN,
    }
}

/// Consumer `member` of `consumers`, assigned every partition `p` with `p % consumers ==
/// member` from the beginning.
/// Also returns how many records those partitions hold (their watermarks, read before the
/// first fetch), which is where the consumer stops.
fn consumer_of(
    bootstrap: &str,
    topic: &str,
    member: usize,
    consumers: usize,
) -> (BaseConsumer, usize) {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "karst-bench")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("queued.min.messages", "1000000");
    apply_overrides(&mut config, "KARST_BENCH_CONSUMER");
    let consumer: BaseConsumer = config.create().expect("consumer");
    let mut assignment = TopicPartitionList::new();
    let mut expected = 0;
    for partition in (0..PARTITIONS).filter(|p| *p as usize % consumers == member) {
        assignment
            .add_partition_offset(topic, partition, Offset::Beginning)
            .unwrap();
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, Duration::from_secs(10))
            .expect("watermarks");
        expected += (high - low) as usize;
    }
    consumer.assign(&assignment).unwrap();
    (consumer, expected)
}

/// Adds `key=value,key=value` librdkafka settings from the environment variable `name`, for
/// trying other client configurations without editing the benchmark.
fn apply_overrides(config: &mut ClientConfig, name: &str) {
    let Ok(extra) = std::env::var(name) else {
        return;
    };
    for pair in extra.split(',').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .unwrap_or_else(|| panic!("{name}: {pair:?} is not key=value"));
        config.set(key, value);
    }
}

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
        produce(bootstrap, topic, records, keys, None)
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

// --- Apache Kafka as a peer (issue 11) ------------------------------------------------------

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

/// Records produced to a topic of their own before a Kafka row is measured: a fresh JVM runs
/// interpreted until the JIT has compiled the hot paths, which a broker in service has long
/// done. Karst, compiled ahead of time, gets no warm-up.
const KAFKA_WARMUP_RECORDS: usize = 500_000;

/// One Apache Kafka node started by `scripts/kafka-peer` in `dir`, warmed up; stopped (by
/// pid) and its directory removed on drop.
struct KafkaPeer {
    dir: PathBuf,
    bootstrap: String,
    pid: u32,
}

impl KafkaPeer {
    fn script() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/kafka-peer")
    }

    /// None (with the reason on stderr) when Kafka cannot start here, e.g. without Java or
    /// Maven: the Karst rows do not depend on it.
    fn start(dir: &Path, settings: &[&str]) -> Option<KafkaPeer> {
        let mut command = Command::new(Self::script());
        command
            .arg("start")
            .arg(dir)
            .args(["--set", &format!("num.partitions={PARTITIONS}")]);
        for setting in settings {
            command.args(["--set", setting]);
        }
        let output = command.stderr(Stdio::inherit()).output();
        let output = match output {
            Ok(output) if output.status.success() => output,
            Ok(output) => {
                eprintln!(
                    "scripts/kafka-peer start failed ({}): no Kafka row",
                    output.status
                );
                return None;
            }
            Err(error) => {
                eprintln!("scripts/kafka-peer: {error}: no Kafka row");
                return None;
            }
        };
        let bootstrap = String::from_utf8_lossy(&output.stdout)
            .lines()
            .last()?
            .trim()
            .to_string();
        let pid = std::fs::read_to_string(dir.join("node1/pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let kafka = KafkaPeer {
            dir: dir.to_path_buf(),
            bootstrap,
            pid,
        };
        produce(
            &kafka.bootstrap,
            "warmup",
            KAFKA_WARMUP_RECORDS,
            Keys::None,
            None,
        );
        Some(kafka)
    }
}

impl Drop for KafkaPeer {
    fn drop(&mut self) {
        let _ = Command::new(Self::script())
            .arg("stop")
            .arg(&self.dir)
            .status();
    }
}

// --- end Apache Kafka as a peer ----------------------------------------------------------------

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
            "io_uring, zero-copy fetch off",
            vec![uring, "fetch.zero.copy.enable=false"],
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
        let Some(kafka) = KafkaPeer::start(&root.join(format!("kafka-{index}")), settings) else {
            continue;
        };
        let row = measure_row(
            &kafka.bootstrap,
            kafka.pid,
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
        let produced = produce(&broker.bootstrap, "paced", paced_records, *keys, Some(rate));
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
        let Some(kafka) = KafkaPeer::start(&root.join(format!("kafka-paced-{index}")), settings)
        else {
            continue;
        };
        let produced = produce(
            &kafka.bootstrap,
            "paced",
            paced_records,
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
