//! The load the end-to-end benchmarks put on a broker or cluster, through librdkafka (the
//! `rdkafka` crate): a producer as fast as the client goes or paced at an offered rate, with
//! per-record latency from send to delivery report, and consumers reading everything back.

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

/// Partitions of every benchmark topic (the brokers' `num.partitions`).
pub const PARTITIONS: i32 = 6;
/// Wall-clock limit of each phase: the benchmark never hangs a CI run.
pub const PHASE_LIMIT: Duration = Duration::from_secs(300);

#[derive(Default)]
pub struct Deliveries {
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

pub struct Figures {
    pub records_per_second: f64,
    pub megabytes_per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
}

/// How the benchmark's records are keyed.
#[derive(Clone, Copy, PartialEq)]
pub enum Keys {
    /// No key, as `kafka-producer-perf-test` sends: librdkafka's sticky partitioner fills
    /// one partition's batch at a time (`sticky.partitioning.linger.ms`), so batches are big.
    None,
    /// An 8-byte key per record, hashed to a partition: every batch of a linger interval is
    /// split six ways, so batches are six times smaller and per-batch costs dominate.
    Hashed,
}

/// Produces `records`; with `pace` (records/s), sends at that offered rate instead of as
/// fast as possible, with `linger.ms=1` so latency is the broker's, not the client's batching.
pub fn produce(
    bootstrap: &str,
    topic: &str,
    records: usize,
    record_bytes: usize,
    keys: Keys,
    pace: Option<f64>,
) -> Figures {
    produce_with(bootstrap, topic, records, record_bytes, keys, pace, &[])
}

/// `produce` with librdkafka `settings` on top of the benchmark's (e.g. idempotence on);
/// `KARST_BENCH_PRODUCER` still applies last.
pub fn produce_with(
    bootstrap: &str,
    topic: &str,
    records: usize,
    record_bytes: usize,
    keys: Keys,
    pace: Option<f64>,
    settings: &[(&str, &str)],
) -> Figures {
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
    for (key, value) in settings {
        config.set(*key, *value);
    }
    apply_overrides(&mut config, "KARST_BENCH_PRODUCER");
    let producer: ThreadedProducer<Context> = config
        .create_with_context(Context {
            deliveries: Arc::clone(&deliveries),
            epoch,
        })
        .expect("producer");
    let payload = vec![b'k'; record_bytes];
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
        megabytes_per_second: (records * record_bytes) as f64 / elapsed / 1e6,
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
pub fn consume(bootstrap: &str, topic: &str, records: usize, consumers: usize) -> Figures {
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
pub fn apply_overrides(config: &mut ClientConfig, name: &str) {
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
