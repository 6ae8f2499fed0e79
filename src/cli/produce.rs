//! `karst produce`: standard-input lines become records (like `kafka-console-producer.sh`).
//!
//! Each line is one record. With `--key-separator`, the text before the first separator is the
//! key. The partition is `--partition` if given; otherwise a keyed record goes where Kafka's
//! default partitioner puts it (murmur2 of the key), and unkeyed records go round-robin, one
//! partition per batch. Lines are read on a separate thread so a batch is also sent when input
//! pauses (after [`LINGER_MS`]), which makes interactive use feel immediate.

use std::collections::BTreeMap;
use std::io::BufRead as _;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use clap::Args;
use proto_kafka::records::Compression;
use tokio::sync::mpsc;

use super::{parse_key_value, BootstrapArgs};
use crate::client::partitioner::partition_for_key;
use crate::client::produce::{Acks, ProduceOptions};
use crate::client::{Client, ProducerRecord};

/// How long to wait for more input before sending a partial batch. Kafka's console producer
/// lingers 1000 ms by default; shorter keeps interactive use snappy and costs nothing when
/// input streams in (batches then fill before the linger expires).
pub const LINGER_MS: u64 = 100;

/// Uncompressed bytes after which a batch is sent even if `--batch-size` records have not
/// arrived: half of Kafka's default `max.message.bytes` (1 MiB), so a batch is never refused
/// as too large.
pub const BATCH_BYTES_TARGET: usize = 512 * 1024;

/// Lines buffered between the reading thread and the producer; bounds memory when the broker
/// is slower than the input.
const LINE_QUEUE_DEPTH: usize = 1024;

/// Arguments of `karst produce`.
#[derive(Args, Debug)]
pub struct ProduceArgs {
    #[command(flatten)]
    bootstrap: BootstrapArgs,
    /// The topic to produce to.
    #[arg(long)]
    topic: String,
    /// Send every record to this partition.
    #[arg(long)]
    partition: Option<i32>,
    /// Split each line into key and value at the first occurrence of SEP.
    #[arg(long = "key-separator", value_name = "SEP")]
    key_separator: Option<String>,
    /// Add a header KEY=VALUE to every record (repeatable).
    #[arg(long = "header", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    headers: Vec<(String, String)>,
    /// Acknowledgements to wait for: 0, 1, all (or -1).
    #[arg(long, default_value = "all", value_parser = parse_acks)]
    acks: Acks,
    /// Batch compression: none, gzip, snappy, lz4, zstd.
    #[arg(long, default_value = "none", value_parser = parse_compression)]
    compression: Compression,
    /// Records per produce request.
    #[arg(long = "batch-size", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
    batch_size: u32,
}

/// Runs `karst produce`.
pub async fn run(args: ProduceArgs) -> anyhow::Result<()> {
    let mut client = args.bootstrap.connect().await?;
    let topic = client.topic(&args.topic).await?;
    let partition_count = topic.partition_count();
    if partition_count == 0 {
        anyhow::bail!("topic {} has no partitions", args.topic);
    }
    if let Some(partition) = args.partition {
        if !(0..partition_count).contains(&partition) {
            anyhow::bail!(
                "partition {partition} does not exist: topic {} has partitions 0..{}",
                args.topic,
                partition_count - 1
            );
        }
    }
    let mut producer = Producer {
        client: &mut client,
        options: ProduceOptions {
            acks: args.acks,
            compression: args.compression,
            ..ProduceOptions::default()
        },
        topic: args.topic.clone(),
        partition_count,
        fixed_partition: args.partition,
        next_round_robin_partition: 0,
        summary: BTreeMap::new(),
    };

    let mut lines = spawn_line_reader();
    let headers: Vec<(String, Option<Bytes>)> = args
        .headers
        .iter()
        .map(|(key, value)| (key.clone(), Some(Bytes::copy_from_slice(value.as_bytes()))))
        .collect();
    let mut pending: Vec<ProducerRecord> = Vec::new();
    let mut pending_bytes = 0;
    let mut line_number: u64 = 0;
    loop {
        let next = if pending.is_empty() {
            lines.recv().await
        } else {
            match tokio::time::timeout(Duration::from_millis(LINGER_MS), lines.recv()).await {
                Ok(next) => next,
                Err(_linger_expired) => {
                    producer.send(std::mem::take(&mut pending)).await?;
                    pending_bytes = 0;
                    continue;
                }
            }
        };
        let Some(line) = next else { break };
        let line = line.context("reading standard input")?;
        line_number += 1;
        let record = parse_line(&line, args.key_separator.as_deref(), &headers)
            .with_context(|| format!("line {line_number}"))?;
        pending_bytes += line.len();
        pending.push(record);
        if pending.len() >= args.batch_size as usize || pending_bytes >= BATCH_BYTES_TARGET {
            producer.send(std::mem::take(&mut pending)).await?;
            pending_bytes = 0;
        }
    }
    producer.send(pending).await?;
    eprintln!("{}", producer.summary_text());
    Ok(())
}

/// Reads standard input on its own thread, line by line, into a bounded channel.
fn spawn_line_reader() -> mpsc::Receiver<std::io::Result<String>> {
    let (sender, receiver) = mpsc::channel(LINE_QUEUE_DEPTH);
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            let failed = line.is_err();
            if sender.blocking_send(line).is_err() || failed {
                return;
            }
        }
    });
    receiver
}

/// One input line as a record. Kafka's console producer refuses a line without the separator
/// when keys are expected, rather than guessing; so do we.
fn parse_line(
    line: &str,
    key_separator: Option<&str>,
    headers: &[(String, Option<Bytes>)],
) -> anyhow::Result<ProducerRecord> {
    let (key, value) = match key_separator {
        None => (None, line),
        Some(separator) => match line.split_once(separator) {
            Some((key, value)) => (Some(Bytes::copy_from_slice(key.as_bytes())), value),
            None => anyhow::bail!("no key separator {separator:?} found in {line:?}"),
        },
    };
    Ok(ProducerRecord {
        key,
        value: Some(Bytes::copy_from_slice(value.as_bytes())),
        headers: headers.to_vec(),
        timestamp_ms: None,
    })
}

/// Routes records to partitions and keeps the summary.
struct Producer<'a> {
    client: &'a mut Client,
    options: ProduceOptions,
    topic: String,
    partition_count: i32,
    fixed_partition: Option<i32>,
    next_round_robin_partition: i32,
    /// Partition → (records produced, last offset if known).
    summary: BTreeMap<i32, (u64, Option<i64>)>,
}

impl Producer<'_> {
    /// Sends `records`, one produce request per partition they map to.
    async fn send(&mut self, records: Vec<ProducerRecord>) -> anyhow::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let round_robin_partition = self.next_round_robin_partition;
        let mut by_partition: BTreeMap<i32, Vec<ProducerRecord>> = BTreeMap::new();
        let mut used_round_robin = false;
        for record in records {
            let partition = match (self.fixed_partition, &record.key) {
                (Some(partition), _) => partition,
                (None, Some(key)) => partition_for_key(key, self.partition_count),
                (None, None) => {
                    used_round_robin = true;
                    round_robin_partition
                }
            };
            by_partition.entry(partition).or_default().push(record);
        }
        if used_round_robin {
            self.next_round_robin_partition = (round_robin_partition + 1) % self.partition_count;
        }
        for (partition, records) in by_partition {
            let base_offset = self
                .client
                .produce(&self.topic, partition, &records, &self.options)
                .await
                .with_context(|| {
                    format!(
                        "producing {} records to {}-{partition}",
                        records.len(),
                        self.topic
                    )
                })?;
            let count = records.len() as u64;
            let entry = self.summary.entry(partition).or_insert((0, None));
            entry.0 += count;
            if let Some(base_offset) = base_offset {
                entry.1 = Some(base_offset + count as i64 - 1);
            }
        }
        Ok(())
    }

    fn summary_text(&self) -> String {
        let total: u64 = self.summary.values().map(|(count, _)| count).sum();
        let partitions = self.summary.len();
        let plural = if partitions == 1 { "" } else { "s" };
        let mut text = format!(
            "Produced {total} records to {} ({partitions} partition{plural})",
            self.topic
        );
        for (partition, (count, last_offset)) in &self.summary {
            let last = last_offset.map_or_else(|| "unknown (acks=0)".to_owned(), |o| o.to_string());
            text.push_str(&format!(
                "\n  partition {partition}: {count} records, last offset {last}"
            ));
        }
        text
    }
}

fn parse_acks(text: &str) -> Result<Acks, String> {
    match text {
        "0" => Ok(Acks::None),
        "1" => Ok(Acks::Leader),
        "all" | "-1" => Ok(Acks::All),
        _ => Err(format!("expected 0, 1, all or -1, got {text:?}")),
    }
}

fn parse_compression(text: &str) -> Result<Compression, String> {
    match text {
        "none" => Ok(Compression::None),
        "gzip" => Ok(Compression::Gzip),
        "snappy" => Ok(Compression::Snappy),
        "lz4" => Ok(Compression::Lz4),
        "zstd" => Ok(Compression::Zstd),
        _ => Err(format!(
            "expected none, gzip, snappy, lz4 or zstd, got {text:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_splits_into_key_and_value_at_the_first_separator() {
        let record = parse_line("user-1:hello:world", Some(":"), &[]).unwrap();
        assert_eq!(record.key.as_deref(), Some(&b"user-1"[..]));
        assert_eq!(record.value.as_deref(), Some(&b"hello:world"[..]));
    }

    #[test]
    fn without_a_separator_the_whole_line_is_the_value() {
        let record = parse_line("a:b", None, &[]).unwrap();
        assert_eq!(record.key, None);
        assert_eq!(record.value.as_deref(), Some(&b"a:b"[..]));
    }

    #[test]
    fn a_line_missing_the_expected_separator_is_refused() {
        assert!(parse_line("no separator here", Some("\t"), &[]).is_err());
    }

    #[test]
    fn acks_and_compression_accept_kafkas_spellings() {
        assert_eq!(parse_acks("-1"), Ok(Acks::All));
        assert_eq!(parse_acks("all"), Ok(Acks::All));
        assert_eq!(parse_acks("0"), Ok(Acks::None));
        assert!(parse_acks("2").is_err());
        assert_eq!(parse_compression("zstd"), Ok(Compression::Zstd));
        assert!(parse_compression("brotli").is_err());
    }
}
