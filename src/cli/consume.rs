//! `karst consume`: print records of a topic (like `kafka-console-consumer.sh`).
//!
//! There are no consumer groups: the command assigns itself every partition (or the one given)
//! and keeps its positions in memory. It starts at the end of each partition unless told
//! otherwise (`--from-beginning`, `--offset`, `--timestamp`), long-polls with Fetch, and stops
//! after `--max-messages` records or when nothing new arrived for `--timeout-ms`.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use proto_kafka::ResponseError;

use super::BootstrapArgs;
use crate::client::fetch::{FetchOptions, FetchedPartition, OffsetSpec};
use crate::client::{Client, ConsumerRecord};

/// Pause after a fetch that returned only errors (no leader, leadership moving) before trying
/// again, so a consumer does not spin while the cluster elects a leader.
const ERROR_BACKOFF_MS: u64 = 100;

/// Arguments of `karst consume`.
#[derive(Args, Debug)]
pub struct ConsumeArgs {
    #[command(flatten)]
    bootstrap: BootstrapArgs,
    /// The topic to consume.
    #[arg(long)]
    topic: String,
    /// Consume only this partition.
    #[arg(long)]
    partition: Option<i32>,
    /// Start at the earliest offset of each partition.
    #[arg(long = "from-beginning", conflicts_with_all = ["offset", "timestamp"])]
    from_beginning: bool,
    /// Start at this offset (a number, `earliest` or `latest`).
    #[arg(long, value_parser = parse_start_offset, conflicts_with = "timestamp")]
    offset: Option<StartOffset>,
    /// Start at the first record with a timestamp at or after MS (ms since the epoch).
    #[arg(long, value_name = "MS")]
    timestamp: Option<i64>,
    /// Exit after printing this many records.
    #[arg(long = "max-messages")]
    max_messages: Option<u64>,
    /// Exit when no new record arrived for this long.
    #[arg(long = "timeout-ms", default_value_t = 5000)]
    timeout_ms: u64,
    /// Output: the value, key and value, or one JSON object per record.
    #[arg(long, value_enum, default_value_t = Format::Value)]
    format: Format,
    /// Between key and value in the `kv` format.
    #[arg(long = "key-separator", value_name = "SEP", default_value = "\t")]
    key_separator: String,
}

/// How records are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// The value only.
    Value,
    /// Key, separator, value.
    Kv,
    /// `{"partition":..,"offset":..,"timestamp":..,"key":..,"value":..,"headers":[..]}`.
    Json,
}

/// Where to start reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOffset {
    /// A literal offset.
    At(i64),
    /// The earliest offset.
    Earliest,
    /// The latest offset.
    Latest,
}

fn parse_start_offset(text: &str) -> Result<StartOffset, String> {
    match text {
        "earliest" => Ok(StartOffset::Earliest),
        "latest" => Ok(StartOffset::Latest),
        number => match number.parse::<i64>() {
            Ok(offset) if offset >= 0 => Ok(StartOffset::At(offset)),
            _ => Err(format!(
                "expected a non-negative offset, earliest or latest, got {text:?}"
            )),
        },
    }
}

/// Runs `karst consume`.
pub async fn run(args: ConsumeArgs) -> anyhow::Result<()> {
    let mut client = args.bootstrap.connect().await?;
    let partitions = assigned_partitions(&mut client, &args).await?;
    let mut positions = start_positions(&mut client, &args, &partitions).await?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    // `None`: the reader went away (e.g. `| head`), so stop quietly, like a Unix tool.
    let printed = consume(&mut client, &args, &mut positions, &mut out).await?;
    if let Some(printed) = printed {
        eprintln!("Processed a total of {printed} messages");
    }
    Ok(())
}

/// The partitions to read: the one asked for, or all of the topic's.
async fn assigned_partitions(client: &mut Client, args: &ConsumeArgs) -> anyhow::Result<Vec<i32>> {
    let topic = client.topic(&args.topic).await?;
    match args.partition {
        Some(partition) if topic.partition(partition).is_none() => anyhow::bail!(
            "partition {partition} does not exist: topic {} has {} partitions",
            args.topic,
            topic.partition_count()
        ),
        Some(partition) => Ok(vec![partition]),
        None => Ok(topic
            .partitions
            .iter()
            .map(|partition| partition.index)
            .collect()),
    }
}

/// Fetches and prints until `--max-messages` or the idle timeout; returns how many records
/// were printed, or `None` if standard output was closed.
async fn consume(
    client: &mut Client,
    args: &ConsumeArgs,
    positions: &mut [(i32, i64)],
    out: &mut impl std::io::Write,
) -> anyhow::Result<Option<u64>> {
    let options = FetchOptions::default();
    let idle_timeout = Duration::from_millis(args.timeout_ms);
    let reached_max = |printed: u64| args.max_messages.is_some_and(|max| printed >= max);
    let mut printed: u64 = 0;
    let mut last_record_at = Instant::now();
    while !reached_max(printed) && last_record_at.elapsed() < idle_timeout {
        let fetch_started_at = Instant::now();
        let fetched = client.fetch(&args.topic, positions, &options).await?;
        let fetch_duration = fetch_started_at.elapsed();
        let (mut any_progress, mut any_records) = (false, false);
        for partition in fetched {
            let position = positions
                .iter_mut()
                .find(|(index, _)| *index == partition.partition)
                .expect("the fetch answers only partitions we asked for");
            if let Some(error) = partition.error {
                position.1 = recover_position(client, &args.topic, &partition, error).await?;
                continue;
            }
            any_progress = true;
            any_records |= !partition.records.is_empty();
            position.1 = partition.next_offset;
            for record in &partition.records {
                if reached_max(printed) {
                    break;
                }
                let line = format_record(
                    args.format,
                    &args.key_separator,
                    partition.partition,
                    record,
                );
                if !write_line(out, &line)? {
                    return Ok(None);
                }
                printed += 1;
                last_record_at = Instant::now();
            }
        }
        if !flush(out)? {
            return Ok(None);
        }
        // Back off after errors, and after an empty answer that came back at once (a broker
        // that does not hold fetches for max_wait_ms would otherwise make us spin).
        let answered_at_once = fetch_duration < Duration::from_millis(ERROR_BACKOFF_MS);
        if !any_progress || (!any_records && answered_at_once) {
            tokio::time::sleep(Duration::from_millis(ERROR_BACKOFF_MS)).await;
        }
    }
    Ok(Some(printed))
}

/// The first offset to fetch in each partition.
async fn start_positions(
    client: &mut Client,
    args: &ConsumeArgs,
    partitions: &[i32],
) -> anyhow::Result<Vec<(i32, i64)>> {
    let spec = match (args.from_beginning, args.offset, args.timestamp) {
        (true, _, _) | (_, Some(StartOffset::Earliest), _) => OffsetSpec::Earliest,
        (_, Some(StartOffset::At(offset)), _) => {
            return Ok(partitions
                .iter()
                .map(|&partition| (partition, offset))
                .collect());
        }
        (_, _, Some(timestamp_ms)) => OffsetSpec::Timestamp(timestamp_ms),
        _ => OffsetSpec::Latest,
    };
    let listed = client
        .list_offsets(&args.topic, partitions, spec)
        .await
        .with_context(|| format!("finding start offsets ({spec:?})"))?;
    let mut positions = Vec::with_capacity(listed.len());
    for found in listed {
        let offset = match found.offset {
            Some(offset) => offset,
            // No record at or after the timestamp: wait for new ones at the end.
            None => latest_offset(client, &args.topic, found.partition).await?,
        };
        positions.push((found.partition, offset));
    }
    Ok(positions)
}

async fn latest_offset(client: &mut Client, topic: &str, partition: i32) -> anyhow::Result<i64> {
    let listed = client
        .list_offsets(topic, &[partition], OffsetSpec::Latest)
        .await?;
    listed
        .first()
        .and_then(|found| found.offset)
        .with_context(|| format!("no latest offset for {topic}-{partition}"))
}

/// The position to continue from after a partition error.
///
/// An offset outside the log is reset like Kafka's `auto.offset.reset`: to the earliest offset
/// when we are before the log start (retention removed records), else to the latest. Leadership
/// errors keep the position: the client has already dropped its stale metadata.
async fn recover_position(
    client: &mut Client,
    topic: &str,
    partition: &FetchedPartition,
    error: ResponseError,
) -> anyhow::Result<i64> {
    if error != ResponseError::OffsetOutOfRange {
        if crate::client::is_leadership_error(error) {
            return Ok(partition.next_offset);
        }
        anyhow::bail!(
            "fetching {topic}-{} failed: {}",
            partition.partition,
            crate::client::error::kafka_error_name(error)
        );
    }
    let earliest = client
        .list_offsets(topic, &[partition.partition], OffsetSpec::Earliest)
        .await?;
    let earliest = earliest.first().and_then(|found| found.offset).unwrap_or(0);
    let spec = if partition.next_offset < earliest {
        OffsetSpec::Earliest
    } else {
        OffsetSpec::Latest
    };
    let reset = client
        .list_offsets(topic, &[partition.partition], spec)
        .await?;
    let offset = reset
        .first()
        .and_then(|found| found.offset)
        .unwrap_or(earliest);
    eprintln!(
        "offset {} is out of range for {topic}-{}; resetting to {offset}",
        partition.next_offset, partition.partition
    );
    Ok(offset)
}

/// One record as one output line (without the newline).
fn format_record(
    format: Format,
    key_separator: &str,
    partition: i32,
    record: &ConsumerRecord,
) -> String {
    match format {
        Format::Value => text_or_null(record.value.as_deref()),
        Format::Kv => format!(
            "{}{key_separator}{}",
            text_or_null(record.key.as_deref()),
            text_or_null(record.value.as_deref())
        ),
        Format::Json => {
            let headers: Vec<serde_json::Value> = record
                .headers
                .iter()
                .map(|(key, value)| serde_json::json!({ "key": key, "value": json_text(value.as_deref()) }))
                .collect();
            serde_json::json!({
                "partition": partition,
                "offset": record.offset,
                "timestamp": record.timestamp_ms,
                "key": json_text(record.key.as_deref()),
                "value": json_text(record.value.as_deref()),
                "headers": headers,
            })
            .to_string()
        }
    }
}

/// Bytes as text (invalid UTF-8 replaced), or `null` like Kafka's console consumer prints.
fn text_or_null(bytes: Option<&[u8]>) -> String {
    bytes.map_or_else(
        || "null".to_owned(),
        |bytes| String::from_utf8_lossy(bytes).into_owned(),
    )
}

fn json_text(bytes: Option<&[u8]>) -> serde_json::Value {
    match bytes {
        Some(bytes) => serde_json::Value::String(String::from_utf8_lossy(bytes).into_owned()),
        None => serde_json::Value::Null,
    }
}

/// Writes a line; `Ok(false)` when the reader closed the pipe.
fn write_line(out: &mut impl std::io::Write, line: &str) -> anyhow::Result<bool> {
    match writeln!(out, "{line}") {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(error) => Err(error).context("writing to standard output"),
    }
}

fn flush(out: &mut impl std::io::Write) -> anyhow::Result<bool> {
    match out.flush() {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(error) => Err(error).context("writing to standard output"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use proto_kafka::records::TimestampType;

    fn record() -> ConsumerRecord {
        ConsumerRecord {
            offset: 41,
            timestamp_ms: 1_700_000_000_000,
            timestamp_type: TimestampType::Creation,
            key: Some(Bytes::from_static(b"user-1")),
            value: Some(Bytes::from_static(b"hello \"world\"")),
            headers: vec![
                ("trace".into(), Some(Bytes::from_static(b"abc"))),
                ("empty".into(), None),
            ],
        }
    }

    #[test]
    fn json_format_prints_one_object_with_every_field() {
        let line = format_record(Format::Json, "\t", 3, &record());
        let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!({
                "partition": 3,
                "offset": 41,
                "timestamp": 1_700_000_000_000_i64,
                "key": "user-1",
                "value": "hello \"world\"",
                "headers": [{"key": "trace", "value": "abc"}, {"key": "empty", "value": null}],
            })
        );
    }

    #[test]
    fn kv_format_joins_key_and_value_and_prints_null_keys_as_null() {
        assert_eq!(
            format_record(Format::Kv, ":", 0, &record()),
            "user-1:hello \"world\""
        );
        let unkeyed = ConsumerRecord {
            key: None,
            ..record()
        };
        assert_eq!(
            format_record(Format::Kv, "\t", 0, &unkeyed),
            "null\thello \"world\""
        );
        assert_eq!(
            format_record(Format::Value, "\t", 0, &unkeyed),
            "hello \"world\""
        );
    }

    #[test]
    fn start_offsets_accept_numbers_and_kafkas_names() {
        assert_eq!(parse_start_offset("42"), Ok(StartOffset::At(42)));
        assert_eq!(parse_start_offset("earliest"), Ok(StartOffset::Earliest));
        assert_eq!(parse_start_offset("latest"), Ok(StartOffset::Latest));
        assert!(parse_start_offset("-3").is_err());
    }
}
