//! End-to-end throughput and latency benchmark, run with `scripts/bench`
//! (`cargo bench --bench produce_consume`).
//!
//! In one run, on one filesystem: the disk's own synced-write figure (`dd oflag=dsync`),
//! then a real `karst server` driven by librdkafka (the `rdkafka` crate): 500,000 records of
//! 200 bytes produced with acks=all, per-record latency from send to delivery report; then
//! all of them consumed. Done twice: with Karst's default fsync-before-ack, and with
//! Kafka-style deferred flushing (`log.flush.interval.messages` = Long.MAX) as the baseline
//! that shows what durability costs. Prints a Markdown table.
//!
//! `KARST_BENCH_RECORDS` overrides the record count (for a quick smoke run).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

const RECORD_BYTES: usize = 200;
const PARTITIONS: i32 = 6;
/// Wall-clock limit of each phase: the benchmark never hangs a CI run.
const PHASE_LIMIT: Duration = Duration::from_secs(300);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Broker {
    child: Child,
    bootstrap: String,
}

impl Broker {
    fn start(data: &Path, extra: &[&str]) -> Broker {
        let (port, admin) = (free_port(), free_port());
        let mut command = Command::new(env!("CARGO_BIN_EXE_karst"));
        command
            .arg("server")
            .args(["--set", &format!("listeners=PLAINTEXT://127.0.0.1:{port}")])
            .args(["--set", &format!("log.dirs={}", data.display())])
            .args(["--set", &format!("admin.listener=127.0.0.1:{admin}")])
            .args(["--set", &format!("num.partitions={PARTITIONS}")]);
        for setting in extra {
            command.args(["--set", setting]);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start karst");
        let bootstrap = format!("127.0.0.1:{port}");
        let started = Instant::now();
        while std::net::TcpStream::connect(&bootstrap).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "karst did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Broker { child, bootstrap }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Default)]
struct Deliveries {
    latencies_us: Mutex<Vec<u64>>,
    errors: AtomicU64,
}

struct Context(Arc<Deliveries>);
impl ClientContext for Context {}
impl ProducerContext for Context {
    type DeliveryOpaque = Box<Instant>;
    fn delivery(&self, result: &DeliveryResult<'_>, sent: Box<Instant>) {
        match result {
            Ok(_) => self
                .0
                .latencies_us
                .lock()
                .unwrap()
                .push(sent.elapsed().as_micros() as u64),
            Err(_) => {
                self.0.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

struct Figures {
    records_per_second: f64,
    megabytes_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Consume only: start-up before the first record.
    first_record_ms: f64,
}

/// Produces `records`; with `pace` (records/s), sends at that offered rate instead of as
/// fast as possible, with `linger.ms=1` so latency is the broker's, not the client's batching.
fn produce(bootstrap: &str, topic: &str, records: usize, pace: Option<f64>) -> Figures {
    let deliveries = Arc::new(Deliveries::default());
    let producer: ThreadedProducer<Context> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("linger.ms", if pace.is_some() { "1" } else { "5" })
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("enable.idempotence", "false")
        .create_with_context(Context(Arc::clone(&deliveries)))
        .expect("producer");
    let payload = [b'k'; RECORD_BYTES];
    // Warm up: the first send creates the topic and fetches metadata; keep that out of the
    // measured latencies.
    for partition in 0..PARTITIONS {
        let record =
            BaseRecord::<[u8], [u8], Box<Instant>>::with_opaque_to(topic, Box::new(Instant::now()))
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
        let mut record = BaseRecord::with_opaque_to(topic, Box::new(Instant::now()))
            .payload(&payload[..])
            .key(&key[..]);
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
        first_record_ms: f64::NAN,
    }
}

fn consume(bootstrap: &str, topic: &str, records: usize) -> Figures {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "karst-bench")
        .set("enable.auto.commit", "false")
        .set("queued.min.messages", "1000000")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        assignment
            .add_partition_offset(topic, partition, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let started = Instant::now();
    let mut first_record_at = None;
    let (mut seen, mut bytes) = (0usize, 0usize);
    while seen < records {
        assert!(
            started.elapsed() < PHASE_LIMIT,
            "consume phase over its time limit ({seen} records)"
        );
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let message = message.expect("consume error");
            first_record_at.get_or_insert_with(Instant::now);
            bytes += message.payload().map_or(0, <[u8]>::len);
            seen += 1;
        }
    }
    // Steady state: from the first record to the last. The start-up before the first
    // record (connect, metadata, ListOffsets, first fetch) is reported in its own column.
    let first = first_record_at.expect("at least one record");
    let elapsed = first.elapsed().as_secs_f64();
    Figures {
        records_per_second: seen as f64 / elapsed,
        megabytes_per_second: bytes as f64 / elapsed / 1e6,
        p50_ms: f64::NAN,
        p99_ms: f64::NAN,
        first_record_ms: (first - started).as_secs_f64() * 1000.0,
    }
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

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let records: usize = std::env::var("KARST_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500_000);
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    println!(
        "disk (dd bs=1M count=1024 oflag=dsync): {}",
        dd_dsync(&root)
    );
    let modes: [(&str, Vec<&str>); 4] = [
        (
            "io_uring, fsync before ack (default)",
            vec!["log.io.backend=io_uring"],
        ),
        (
            "portable, fsync before ack",
            vec!["log.io.backend=portable"],
        ),
        (
            "io_uring, zero-copy fetch off",
            vec!["log.io.backend=io_uring", "fetch.zero.copy.enable=false"],
        ),
        (
            "deferred flush (Kafka-like baseline)",
            vec!["log.flush.interval.messages=9223372036854775807"],
        ),
    ];
    println!("\n| mode | produce rec/s | produce MB/s | p50 ms | p99 ms | consume rec/s | consume MB/s | first record ms |");
    println!("|---|---|---|---|---|---|---|---|");
    for (index, (name, settings)) in modes.iter().enumerate() {
        let data = root.join(format!("data-{index}"));
        let broker = Broker::start(&data, settings);
        let topic = format!("bench-{index}");
        let produced = produce(&broker.bootstrap, &topic, records, None);
        let consumed = consume(&broker.bootstrap, &topic, records + PARTITIONS as usize);
        println!(
            "| {name} | {:.0} | {:.1} | {:.2} | {:.2} | {:.0} | {:.1} | {:.0} |",
            produced.records_per_second,
            produced.megabytes_per_second,
            produced.p50_ms,
            produced.p99_ms,
            consumed.records_per_second,
            consumed.megabytes_per_second,
            consumed.first_record_ms
        );
        drop(broker);
    }
    // Latency at a fixed offered load: 50 MB/s of 200-byte records for 2 seconds.
    let rate = 50e6 / RECORD_BYTES as f64;
    let paced_records = (rate * 2.0) as usize;
    println!(
        "\n| paced produce, 50 MB/s offered, fsync before ack | achieved MB/s | p50 ms | p99 ms |"
    );
    println!("|---|---|---|---|");
    for (index, backend) in ["io_uring", "portable"].iter().enumerate() {
        let data = root.join(format!("paced-{index}"));
        let setting = format!("log.io.backend={backend}");
        let broker = Broker::start(&data, &[setting.as_str()]);
        let produced = produce(&broker.bootstrap, "paced", paced_records, Some(rate));
        println!(
            "| {backend} | {:.1} | {:.2} | {:.2} |",
            produced.megabytes_per_second, produced.p50_ms, produced.p99_ms
        );
        drop(broker);
    }
    println!("\n{records} records x {RECORD_BYTES} bytes, {PARTITIONS} partitions, acks=all, librdkafka linger.ms=5");
}
