//! End-to-end tests of `karst topics|produce|consume` against a real broker process.
//!
//! Each test starts its own broker, drives the CLI exactly as a user would (arguments,
//! standard input, standard output), and checks what comes back.

mod common;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::TestBroker;
use karst::client::partitioner::partition_for_key;

/// Runs `karst <args> --bootstrap-server <broker>` with `stdin`, returning its output.
fn karst(broker: &TestBroker, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_karst"))
        .args(args)
        .args(["--bootstrap-server", &broker.bootstrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn karst");
    let mut input = child.stdin.take().expect("stdin is piped");
    input.write_all(stdin.as_bytes()).expect("write stdin");
    drop(input);
    child.wait_with_output().expect("wait for karst")
}

/// Like [`karst`], but fails the test (with both outputs and the broker's log) unless the
/// command succeeds; returns standard output.
fn karst_ok(broker: &TestBroker, args: &[&str], stdin: &str) -> String {
    let output = karst(broker, args, stdin);
    assert!(
        output.status.success(),
        "karst {args:?} failed with {}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- broker stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        broker.stderr()
    );
    String::from_utf8(output.stdout).expect("stdout is UTF-8")
}

fn create_topic(broker: &TestBroker, topic: &str, partitions: u32) {
    karst_ok(
        broker,
        &[
            "topics",
            "create",
            "--topic",
            topic,
            "--partitions",
            &partitions.to_string(),
        ],
        "",
    );
}

fn consume_json(broker: &TestBroker, args: &[&str]) -> Vec<serde_json::Value> {
    let mut all_args = vec!["consume", "--format", "json", "--timeout-ms", "2000"];
    all_args.extend_from_slice(args);
    karst_ok(broker, &all_args, "")
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}")))
        .collect()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn created_topic_is_listed_and_described_with_partitions_and_configs() {
    let broker = TestBroker::start(&[]);
    let created = karst_ok(
        &broker,
        &[
            "topics",
            "create",
            "--topic",
            "orders",
            "--partitions",
            "3",
            "--replication-factor",
            "1",
            "--config",
            "retention.ms=3600000",
        ],
        "",
    );
    assert_eq!(created.trim(), "Created topic orders.");

    let listed = karst_ok(&broker, &["topics", "list"], "");
    assert!(
        listed.lines().any(|line| line == "orders"),
        "list output: {listed}"
    );

    let described = karst_ok(&broker, &["topics", "describe", "--topic", "orders"], "");
    let lines: Vec<&str> = described.lines().collect();
    assert_eq!(
        lines.len(),
        4,
        "one topic line and three partition lines: {described}"
    );
    assert!(
        lines[0].starts_with("Topic: orders\tTopicId: "),
        "{}",
        lines[0]
    );
    assert!(
        lines[0].contains("PartitionCount: 3\tReplicationFactor: 1"),
        "{}",
        lines[0]
    );
    assert!(
        lines[0].contains("retention.ms=3600000"),
        "non-default config shown: {}",
        lines[0]
    );
    for (partition, line) in lines[1..].iter().enumerate() {
        assert!(
            line.contains(&format!("Partition: {partition}\t")),
            "{line}"
        );
        assert!(
            !line.contains("Leader: none"),
            "every partition has a leader: {line}"
        );
    }
}

#[test]
fn creating_an_existing_topic_fails_unless_if_not_exists() {
    let broker = TestBroker::start(&[]);
    create_topic(&broker, "events", 1);

    let again = karst(&broker, &["topics", "create", "--topic", "events"], "");
    assert!(!again.status.success());
    let message = String::from_utf8_lossy(&again.stderr);
    assert!(message.contains("TOPIC_ALREADY_EXISTS"), "{message}");

    karst_ok(
        &broker,
        &["topics", "create", "--topic", "events", "--if-not-exists"],
        "",
    );
}

#[test]
fn alter_adds_partitions_and_sets_and_removes_configs() {
    let broker = TestBroker::start(&[]);
    create_topic(&broker, "metrics", 1);

    karst_ok(
        &broker,
        &[
            "topics",
            "alter",
            "--topic",
            "metrics",
            "--partitions",
            "4",
            "--add-config",
            "retention.ms=60000",
            "--add-config",
            "max.message.bytes=2097152",
        ],
        "",
    );
    let described = karst_ok(&broker, &["topics", "describe", "--topic", "metrics"], "");
    let header = described.lines().next().unwrap();
    assert!(header.contains("PartitionCount: 4"), "{header}");
    assert!(header.contains("retention.ms=60000"), "{header}");
    assert!(header.contains("max.message.bytes=2097152"), "{header}");

    karst_ok(
        &broker,
        &[
            "topics",
            "alter",
            "--topic",
            "metrics",
            "--delete-config",
            "retention.ms",
        ],
        "",
    );
    let described = karst_ok(&broker, &["topics", "describe", "--topic", "metrics"], "");
    let header = described.lines().next().unwrap();
    assert!(
        !header.contains("retention.ms="),
        "deleted config is back to default: {header}"
    );
    assert!(header.contains("max.message.bytes=2097152"), "{header}");
}

#[test]
fn deleted_topic_disappears_and_cannot_be_described() {
    let broker = TestBroker::start(&[]);
    create_topic(&broker, "doomed", 2);

    let deleted = karst_ok(&broker, &["topics", "delete", "--topic", "doomed"], "");
    assert_eq!(deleted.trim(), "Deleted topic doomed.");

    let listed = karst_ok(&broker, &["topics", "list"], "");
    assert!(!listed.lines().any(|line| line == "doomed"), "{listed}");
    let describe = karst(&broker, &["topics", "describe", "--topic", "doomed"], "");
    assert!(!describe.status.success());
    let message = String::from_utf8_lossy(&describe.stderr);
    assert!(message.contains("UNKNOWN_TOPIC_OR_PARTITION"), "{message}");
}

#[test]
fn thousand_keyed_lines_with_headers_come_back_as_json_on_kafkas_partitions() {
    let broker = TestBroker::start(&[]);
    create_topic(&broker, "clicks", 3);

    // Step 1: produce 1,000 lines "user-N:click-N" with two headers on every record.
    let input: String = (0..1000)
        .map(|n| format!("user-{}:click-{n}\n", n % 37))
        .collect();
    let produced = karst(
        &broker,
        &[
            "produce",
            "--topic",
            "clicks",
            "--key-separator",
            ":",
            "--header",
            "source=cli-test",
            "--header",
            "schema=v1",
            "--batch-size",
            "128",
        ],
        &input,
    );
    assert!(
        produced.status.success(),
        "{}",
        String::from_utf8_lossy(&produced.stderr)
    );
    let summary = String::from_utf8_lossy(&produced.stderr);
    assert!(
        summary.contains("Produced 1000 records to clicks"),
        "{summary}"
    );

    // Step 2: read everything back from the beginning as JSON.
    let records = consume_json(&broker, &["--topic", "clicks", "--from-beginning"]);
    assert_eq!(records.len(), 1000);

    // Step 3: each record is on the partition Kafka's partitioner picks for its key, offsets
    // within a partition count up from 0 in production order, and headers survive.
    let mut by_partition: BTreeMap<i64, Vec<&serde_json::Value>> = BTreeMap::new();
    for record in &records {
        let key = record["key"].as_str().unwrap();
        let partition = record["partition"].as_i64().unwrap();
        assert_eq!(
            partition,
            i64::from(partition_for_key(key.as_bytes(), 3)),
            "{record}"
        );
        assert_eq!(
            record["headers"],
            serde_json::json!([{"key": "source", "value": "cli-test"}, {"key": "schema", "value": "v1"}])
        );
        assert!(record["timestamp"].as_i64().unwrap() > 0);
        by_partition.entry(partition).or_default().push(record);
    }
    let mut expected_by_partition: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for n in 0..1000 {
        let key = format!("user-{}", n % 37);
        let partition = i64::from(partition_for_key(key.as_bytes(), 3));
        expected_by_partition
            .entry(partition)
            .or_default()
            .push(format!("click-{n}"));
    }
    for (partition, expected_values) in expected_by_partition {
        let consumed = &by_partition[&partition];
        let values: Vec<&str> = consumed
            .iter()
            .map(|r| r["value"].as_str().unwrap())
            .collect();
        assert_eq!(values, expected_values, "partition {partition} in order");
        let offsets: Vec<i64> = consumed
            .iter()
            .map(|r| r["offset"].as_i64().unwrap())
            .collect();
        assert_eq!(offsets, (0..offsets.len() as i64).collect::<Vec<_>>());
    }
}

#[test]
fn every_compression_codec_round_trips() {
    let broker = TestBroker::start(&[]);
    create_topic(&broker, "compressed", 1);
    let codecs = ["none", "gzip", "snappy", "lz4", "zstd"];
    for codec in codecs {
        let input: String = (0..50).map(|n| format!("{codec}-{n}\n")).collect();
        karst_ok(
            &broker,
            &["produce", "--topic", "compressed", "--compression", codec],
            &input,
        );
    }
    let records = consume_json(&broker, &["--topic", "compressed", "--from-beginning"]);
    let values: Vec<&str> = records
        .iter()
        .map(|r| r["value"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = codecs
        .iter()
        .flat_map(|codec| (0..50).map(move |n| format!("{codec}-{n}")))
        .collect();
    assert_eq!(values, expected);
}

#[test]
fn consume_from_an_offset_starts_at_that_offset_and_stops_at_max_messages() {
    let broker = TestBroker::start(&[]);
    create_topic(&broker, "ledger", 1);
    let input: String = (0..100).map(|n| format!("entry-{n}\n")).collect();
    karst_ok(
        &broker,
        &["produce", "--topic", "ledger", "--partition", "0"],
        &input,
    );

    let records = consume_json(
        &broker,
        &["--topic", "ledger", "--partition", "0", "--offset", "90"],
    );
    let offsets: Vec<i64> = records
        .iter()
        .map(|r| r["offset"].as_i64().unwrap())
        .collect();
    assert_eq!(offsets, (90..100).collect::<Vec<_>>());
    assert_eq!(records[0]["value"], "entry-90");

    let limited = karst_ok(
        &broker,
        &[
            "consume",
            "--topic",
            "ledger",
            "--offset",
            "10",
            "--max-messages",
            "5",
        ],
        "",
    );
    assert_eq!(
        limited.lines().collect::<Vec<_>>(),
        vec!["entry-10", "entry-11", "entry-12", "entry-13", "entry-14"]
    );
}

#[test]
fn consume_from_a_timestamp_skips_older_records() {
    let broker = TestBroker::start(&[]);
    create_topic(&broker, "history", 2);
    let old: String = (0..20).map(|n| format!("old-{n}\n")).collect();
    karst_ok(&broker, &["produce", "--topic", "history"], &old);

    std::thread::sleep(Duration::from_millis(50));
    let boundary_ms = now_ms();
    std::thread::sleep(Duration::from_millis(50));

    let new: String = (0..20).map(|n| format!("new-{n}\n")).collect();
    karst_ok(&broker, &["produce", "--topic", "history"], &new);

    let records = consume_json(
        &broker,
        &[
            "--topic",
            "history",
            "--timestamp",
            &boundary_ms.to_string(),
        ],
    );
    let mut values: Vec<&str> = records
        .iter()
        .map(|r| r["value"].as_str().unwrap())
        .collect();
    values.sort_by_key(|value| value[4..].parse::<u32>().unwrap());
    let expected: Vec<String> = (0..20).map(|n| format!("new-{n}")).collect();
    assert_eq!(values, expected);
    for record in &records {
        assert!(
            record["timestamp"].as_i64().unwrap() >= boundary_ms,
            "{record}"
        );
    }
}

#[test]
fn consume_without_a_start_flag_reads_only_records_produced_after_it_started() {
    let broker = TestBroker::start(&[]);
    create_topic(&broker, "live", 1);
    karst_ok(
        &broker,
        &["produce", "--topic", "live"],
        "before-1\nbefore-2\n",
    );

    let consumer = Command::new(env!("CARGO_BIN_EXE_karst"))
        .args(["consume", "--topic", "live", "--timeout-ms", "4000"])
        .args(["--bootstrap-server", &broker.bootstrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn consumer");
    // Give the consumer time to look up the end of the log before producing.
    std::thread::sleep(Duration::from_millis(1500));
    karst_ok(
        &broker,
        &["produce", "--topic", "live"],
        "after-1\nafter-2\n",
    );

    let output = consumer
        .wait_with_output()
        .expect("consumer exits after its idle timeout");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        vec!["after-1", "after-2"]
    );
}

#[test]
fn producing_to_a_missing_topic_fails_with_a_readable_error() {
    let broker = TestBroker::start(&[("auto.create.topics.enable", "false")]);
    let output = karst(&broker, &["produce", "--topic", "nowhere"], "lost\n");
    assert!(!output.status.success());
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(message.contains("UNKNOWN_TOPIC_OR_PARTITION"), "{message}");
}

#[test]
fn every_acks_setting_delivers_the_records() {
    let broker = TestBroker::start(&[]);
    create_topic(&broker, "acked", 1);
    for acks in ["0", "1", "all"] {
        let output = karst(
            &broker,
            &["produce", "--topic", "acked", "--acks", acks],
            &format!("acks-{acks}\n"),
        );
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let summary = String::from_utf8_lossy(&output.stderr);
        if acks == "0" {
            assert!(
                summary.contains("last offset unknown (acks=0)"),
                "{summary}"
            );
        } else {
            assert!(summary.contains("last offset"), "{summary}");
        }
    }
    let records = consume_json(&broker, &["--topic", "acked", "--from-beginning"]);
    // Sorted: nothing orders an unacknowledged (acks=0) append before the next producer's.
    let mut values: Vec<&str> = records
        .iter()
        .map(|r| r["value"].as_str().unwrap())
        .collect();
    values.sort_unstable();
    assert_eq!(values, vec!["acks-0", "acks-1", "acks-all"]);
}

#[test]
fn acknowledged_records_survive_a_clean_restart_and_a_crash() {
    let mut broker = TestBroker::start(&[]);
    create_topic(&broker, "durable", 2);
    let first: String = (0..100).map(|n| format!("first-{n}\n")).collect();
    karst_ok(&broker, &["produce", "--topic", "durable"], &first);

    // A clean shutdown (SIGTERM) exits successfully and keeps everything.
    let status = broker.terminate();
    assert!(
        status.success(),
        "SIGTERM exit: {status}\n{}",
        broker.stderr()
    );
    broker.restart();
    let second: String = (0..100).map(|n| format!("second-{n}\n")).collect();
    karst_ok(
        &broker,
        &["produce", "--topic", "durable", "--acks", "all"],
        &second,
    );

    // A crash (SIGKILL) right after acks=all loses nothing acknowledged.
    broker.kill();
    broker.restart();
    let records = consume_json(&broker, &["--topic", "durable", "--from-beginning"]);
    assert_eq!(records.len(), 200, "{}", broker.stderr());
    let described = karst_ok(&broker, &["topics", "describe", "--topic", "durable"], "");
    assert!(described.contains("PartitionCount: 2"), "{described}");
}
