//! `karst producers describe`: the idempotent producers a topic's partition leaders know,
//! with the columns of `kafka-transactions.sh describe-producers` (plus the partition).

use std::fmt::Write as _;

use clap::{Args, Subcommand};

use super::BootstrapArgs;
use crate::client::producers::ProducerDescription;

/// Arguments of `karst producers`.
#[derive(Args, Debug)]
pub struct ProducersArgs {
    #[command(flatten)]
    bootstrap: BootstrapArgs,
    #[command(subcommand)]
    command: ProducersCommand,
}

#[derive(Subcommand, Debug)]
enum ProducersCommand {
    /// Show producer id, epoch, last sequence and last timestamp per partition.
    Describe(DescribeArgs),
}

#[derive(Args, Debug)]
struct DescribeArgs {
    /// The topic.
    #[arg(long)]
    topic: String,
    /// Only this partition (repeatable; default: every partition).
    #[arg(long)]
    partition: Vec<i32>,
}

pub async fn run(args: ProducersArgs) -> anyhow::Result<()> {
    let mut client = args.bootstrap.connect().await?;
    match args.command {
        ProducersCommand::Describe(describe) => {
            let producers = client
                .describe_producers(&describe.topic, &describe.partition)
                .await?;
            print!("{}", table(&producers));
        }
    }
    Ok(())
}

/// The table `describe` prints: a header line, then one line per producer and partition.
fn table(producers: &[ProducerDescription]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<10} {:<20} {:<14} {:<13} {:<14} {:<24} CurrentTransactionStartOffset",
        "Partition",
        "ProducerId",
        "ProducerEpoch",
        "LastSequence",
        "LastTimestamp",
        "LatestCoordinatorEpoch",
    );
    for producer in producers {
        let _ = writeln!(
            out,
            "{:<10} {:<20} {:<14} {:<13} {:<14} {:<24} {}",
            producer.partition,
            producer.producer_id,
            producer.producer_epoch,
            producer.last_sequence,
            producer.last_timestamp_ms,
            producer.coordinator_epoch,
            producer.current_txn_start_offset
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_one_line_per_producer_after_the_header() {
        let producer = ProducerDescription {
            partition: 2,
            producer_id: 1000,
            producer_epoch: 0,
            last_sequence: 41,
            last_timestamp_ms: 1_700_000_000_000,
            coordinator_epoch: -1,
            current_txn_start_offset: -1,
        };
        let text = table(&[producer]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("Partition"));
        let fields: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            fields,
            ["2", "1000", "0", "41", "1700000000000", "-1", "-1"]
        );
    }
}
