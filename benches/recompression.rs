//! Broker-side recompression benchmark (issue 12), run with `scripts/bench recompression`
//! (`cargo bench --bench recompression`).
//!
//! One `karst server` with its defaults (fsync before ack) and two topics of six partitions
//! in the same run: `zero-copy` (`compression.type=producer`: an lz4 batch is stored as it
//! arrives, only its 17-byte prefix rewritten) and `recompressed` (`compression.type=zstd`:
//! every lz4 batch is decompressed, rebuilt and compressed with zstd level 3 on the storage
//! thread). Both get the same lz4 batches of 1,000 JSON-like records of about 200 bytes,
//! built and compressed once before the clock starts, produced with acks=all over one
//! connection per partition, one request in flight on each.
//!
//! The client is Karst's own (`karst::client`) sending prebuilt batches, not librdkafka: a
//! client that compresses as it goes would share the two cores with the broker, and the
//! figure wanted is the broker's.
//!
//! Reported per topic: records/s, record MB/s (uncompressed record bytes), MB/s on the wire,
//! the broker's CPU seconds per GB of records and the bytes it stored. Environment:
//! `KARST_BENCH_BATCHES` (batches per partition, default 200).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use karst::client::records::{encode_batch, ProducerRecord};
use karst::client::{Connection, ConnectionOptions};
use proto_kafka::messages::produce_request::{PartitionProduceData, TopicProduceData};
use proto_kafka::messages::{ProduceRequest, TopicName};
use proto_kafka::protocol::StrBytes;
use proto_kafka::records::Compression;

#[path = "support/mod.rs"]
mod support;

use support::{cpu_seconds, Broker};

const PARTITIONS: i32 = 6;
const RECORDS_PER_BATCH: usize = 1_000;
/// Distinct batches per partition, cycled through: enough that no cache sees one batch only.
const DISTINCT_BATCHES: usize = 8;
/// Produce version both sides speak that names topics (13 uses topic ids).
const PRODUCE_VERSION: i16 = 9;
const PRODUCE_TIMEOUT_MS: i32 = 30_000;
/// LEADER_NOT_AVAILABLE, NOT_LEADER_OR_FOLLOWER: the partition of a just created topic has no
/// leader on this node yet; retried after a pause, at most `LEADER_WAITS_MAX` times.
const NOT_LED_YET: [i16; 2] = [5, 6];
const LEADER_RETRY_BACKOFF: std::time::Duration = std::time::Duration::from_millis(50);
const LEADER_WAITS_MAX: usize = 200;

/// A record value: an event as JSON with a random-looking hex token, so it compresses like
/// typical application data (about 2:1), not like a run of one byte.
fn record_value(seed: u64) -> Bytes {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let token: String = (0..4)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            format!("{state:016x}")
        })
        .collect();
    Bytes::from(format!(
        r#"{{"event":"page_view","user":"user-{}","session":{},"path":"/products/{}","token":"{token}"}}"#,
        seed % 10_007,
        seed % 997,
        seed % 313
    ))
}

/// `DISTINCT_BATCHES` lz4 batches and the uncompressed record bytes each holds.
fn lz4_batches() -> (Vec<Bytes>, usize) {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64;
    let mut record_bytes = 0;
    let batches = (0..DISTINCT_BATCHES)
        .map(|batch| {
            let records: Vec<ProducerRecord> = (0..RECORDS_PER_BATCH)
                .map(|index| {
                    let value = record_value((batch * RECORDS_PER_BATCH + index) as u64);
                    record_bytes += value.len();
                    ProducerRecord {
                        key: None,
                        value: Some(value),
                        headers: Vec::new(),
                        timestamp_ms: None,
                    }
                })
                .collect();
            encode_batch(&records, Compression::Lz4, now_ms).expect("lz4 batch")
        })
        .collect();
    (batches, record_bytes / DISTINCT_BATCHES)
}

fn produce_request(topic: &str, partition: i32, batch: Bytes) -> ProduceRequest {
    let topic_data = TopicProduceData::default()
        .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
        .with_partition_data(vec![PartitionProduceData::default()
            .with_index(partition)
            .with_records(Some(batch))]);
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(PRODUCE_TIMEOUT_MS)
        .with_topic_data(vec![topic_data])
}

/// Sends `batches_per_partition` batches to every partition of `topic`, one connection per
/// partition; fails on any error code.
async fn produce_all(
    bootstrap: &str,
    topic: &str,
    batches: &[Bytes],
    batches_per_partition: usize,
) {
    let mut tasks = Vec::new();
    for partition in 0..PARTITIONS {
        let (bootstrap, topic, batches) =
            (bootstrap.to_owned(), topic.to_owned(), batches.to_vec());
        tasks.push(tokio::spawn(async move {
            let mut connection = Connection::connect(&bootstrap, ConnectionOptions::default())
                .await
                .expect("connect");
            let mut index = 0;
            let mut leader_waits = 0;
            while index < batches_per_partition {
                let batch = batches[(index + partition as usize) % batches.len()].clone();
                let response = connection
                    .send_waiting(
                        produce_request(&topic, partition, batch),
                        PRODUCE_VERSION,
                        30_000,
                    )
                    .await
                    .expect("produce");
                let answer = &response.responses[0].partition_responses[0];
                // A new topic's partitions take a moment to get their leader here.
                if NOT_LED_YET.contains(&answer.error_code) && leader_waits < LEADER_WAITS_MAX {
                    leader_waits += 1;
                    tokio::time::sleep(LEADER_RETRY_BACKOFF).await;
                    continue;
                }
                assert_eq!(
                    answer.error_code, 0,
                    "{topic}-{partition}: {:?}",
                    answer.error_message
                );
                index += 1;
            }
        }));
    }
    for task in tasks {
        task.await.expect("producer task");
    }
}

fn create_topic(bootstrap: &str, topic: &str, compression: &str) {
    let status = Command::new(env!("CARGO_BIN_EXE_karst"))
        .args([
            "topics",
            "create",
            "--bootstrap-server",
            bootstrap,
            "--topic",
            topic,
        ])
        .args(["--partitions", &PARTITIONS.to_string()])
        .args(["--config", &format!("compression.type={compression}")])
        .status()
        .expect("karst topics create");
    assert!(status.success(), "creating {topic}");
}

fn directory_bytes(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| match entry.metadata() {
                    Ok(meta) if meta.is_dir() => directory_bytes(&entry.path()),
                    Ok(meta) if entry.path().extension().is_some_and(|e| e == "log") => meta.len(),
                    _ => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let batches_per_partition: usize = std::env::var("KARST_BENCH_BATCHES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-recompression");
    let _ = std::fs::remove_dir_all(&root);
    let broker = Broker::start(&root.join("data"), PARTITIONS, &[]);
    let pid = broker.child.id().to_string();
    let (batches, record_bytes_per_batch) = lz4_batches();
    let wire_bytes_per_batch = batches.iter().map(Bytes::len).sum::<usize>() / batches.len();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    println!("| topic | compression.type | records/s | record MB/s | wire MB/s | broker CPU s per GB of records | broker CPU % | stored MB |");
    println!("|---|---|---|---|---|---|---|---|");
    for (topic, compression) in [("zero-copy", "producer"), ("recompressed", "zstd")] {
        create_topic(&broker.bootstrap, topic, compression);
        // One batch per partition first: connections, leaders and segment files are ready
        // before the clock starts.
        runtime.block_on(produce_all(&broker.bootstrap, topic, &batches, 1));
        let cpu_before = cpu_seconds(&pid);
        let started = Instant::now();
        runtime.block_on(produce_all(
            &broker.bootstrap,
            topic,
            &batches,
            batches_per_partition,
        ));
        let wall = started.elapsed().as_secs_f64();
        let cpu = cpu_seconds(&pid) - cpu_before;
        let sent_batches = (batches_per_partition * PARTITIONS as usize) as f64;
        let record_bytes = sent_batches * record_bytes_per_batch as f64;
        let stored: u64 = (0..PARTITIONS)
            .map(|p| directory_bytes(&root.join("data").join(format!("{topic}-{p}"))))
            .sum();
        println!(
            "| {topic} | {compression} | {:.0} | {:.1} | {:.1} | {:.2} | {:.0} | {:.1} |",
            sent_batches * RECORDS_PER_BATCH as f64 / wall,
            record_bytes / wall / 1e6,
            sent_batches * wire_bytes_per_batch as f64 / wall / 1e6,
            cpu / (record_bytes / 1e9),
            cpu / wall * 100.0,
            stored as f64 / 1e6,
        );
    }
    println!(
        "\n{batches_per_partition} lz4 batches x {RECORDS_PER_BATCH} records (about {} bytes each, \
         {} bytes per batch compressed) per partition, {PARTITIONS} partitions, acks=all, \
         fsync before ack",
        record_bytes_per_batch / RECORDS_PER_BATCH,
        wire_bytes_per_batch
    );
}
