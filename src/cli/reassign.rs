//! `karst topics reassign`: move partitions to new replicas, list moves in progress, cancel
//! them (like `kafka-reassign-partitions.sh --execute | --list | --cancel`).
//!
//! One partition from flags (`--topic t --partition 0 --replicas 2,3,4`), or many from
//! Kafka's reassignment JSON file (`{"version":1,"partitions":[{"topic":"t","partition":0,
//! "replicas":[2,3,4]}]}`; `log_dirs` entries are accepted and ignored: one log dir per node).

use anyhow::Context as _;
use clap::Args;
use serde::Deserialize;

use crate::client::reassignment::{OngoingReassignment, Reassignment};
use crate::client::Client;

/// Arguments of `karst topics reassign`.
#[derive(Args, Debug)]
pub struct ReassignArgs {
    /// The topic of the partition to move (or, with --list, to list).
    #[arg(long)]
    topic: Option<String>,
    /// The partition to move.
    #[arg(long)]
    partition: Option<i32>,
    /// The new replicas, preferred leader first: comma-separated broker ids.
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    replicas: Vec<i32>,
    /// Kafka's reassignment JSON file instead of --topic/--partition/--replicas.
    #[arg(long = "reassignment-json-file", value_name = "FILE")]
    json_file: Option<std::path::PathBuf>,
    /// Cancel the reassignment of the partition (or of every partition in the file).
    #[arg(long, conflicts_with_all = ["replicas", "list"])]
    cancel: bool,
    /// List the reassignments in progress.
    #[arg(long, conflicts_with_all = ["replicas", "json_file"])]
    list: bool,
}

/// Kafka's reassignment JSON file.
#[derive(Debug, Deserialize)]
struct PlanFile {
    #[serde(default = "plan_version")]
    version: i32,
    partitions: Vec<PlannedPartition>,
}

fn plan_version() -> i32 {
    1
}

#[derive(Debug, Deserialize)]
struct PlannedPartition {
    topic: String,
    partition: i32,
    #[serde(default)]
    replicas: Vec<i32>,
}

/// Runs `karst topics reassign`.
pub async fn run(client: &mut Client, args: ReassignArgs) -> anyhow::Result<()> {
    if args.list {
        let wanted = match (&args.topic, args.partition) {
            (Some(topic), Some(partition)) => Some(vec![(topic.clone(), partition)]),
            _ => None,
        };
        let mut ongoing = client
            .list_partition_reassignments(wanted.as_deref())
            .await?;
        if let Some(topic) = &args.topic {
            ongoing.retain(|moving| &moving.topic == topic);
        }
        print!("{}", describe_ongoing(&ongoing));
        return Ok(());
    }
    let wanted = plan(&args)?;
    let answers = client.alter_partition_reassignments(&wanted).await?;
    let mut failed = 0;
    for (reassignment, outcome) in answers {
        let name = format!("{}-{}", reassignment.topic, reassignment.partition);
        match (outcome, args.cancel) {
            (Ok(()), false) => println!("Successfully started partition reassignment for {name}."),
            (Ok(()), true) => println!("Successfully cancelled partition reassignment for {name}."),
            (Err(error), _) => {
                failed += 1;
                eprintln!("{error}");
            }
        }
    }
    anyhow::ensure!(failed == 0, "{failed} partition(s) could not be changed");
    Ok(())
}

/// The reassignments the flags or the file ask for.
fn plan(args: &ReassignArgs) -> anyhow::Result<Vec<Reassignment>> {
    let target = |replicas: Vec<i32>| (!args.cancel).then_some(replicas);
    if let Some(path) = &args.json_file {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let file: PlanFile = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a reassignment JSON file", path.display()))?;
        anyhow::ensure!(
            file.version == 1,
            "unsupported reassignment file version {}",
            file.version
        );
        return Ok(file
            .partitions
            .into_iter()
            .map(|planned| Reassignment {
                topic: planned.topic,
                partition: planned.partition,
                replicas: target(planned.replicas),
            })
            .collect());
    }
    let (Some(topic), Some(partition)) = (&args.topic, args.partition) else {
        anyhow::bail!("give --topic and --partition (or --reassignment-json-file)");
    };
    anyhow::ensure!(
        args.cancel || !args.replicas.is_empty(),
        "give --replicas (or --cancel, or --list)"
    );
    Ok(vec![Reassignment {
        topic: topic.clone(),
        partition,
        replicas: target(args.replicas.clone()),
    }])
}

fn join_ids(ids: &[i32]) -> String {
    ids.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
}

/// Kafka's `--list` layout.
fn describe_ongoing(ongoing: &[OngoingReassignment]) -> String {
    if ongoing.is_empty() {
        return "No partition reassignments found.\n".to_owned();
    }
    let mut text = String::from("Current partition reassignments:\n");
    for moving in ongoing {
        text.push_str(&format!(
            "{}-{}: replicas: {}. adding: {}. removing: {}.\n",
            moving.topic,
            moving.partition,
            join_ids(&moving.replicas),
            join_ids(&moving.adding_replicas),
            join_ids(&moving.removing_replicas)
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_prints_kafkas_layout() {
        let ongoing = [OngoingReassignment {
            topic: "orders".into(),
            partition: 0,
            replicas: vec![2, 3, 4, 1],
            adding_replicas: vec![4],
            removing_replicas: vec![1],
        }];
        assert_eq!(
            describe_ongoing(&ongoing),
            "Current partition reassignments:\norders-0: replicas: 2,3,4,1. adding: 4. removing: 1.\n"
        );
        assert_eq!(describe_ongoing(&[]), "No partition reassignments found.\n");
    }

    #[test]
    fn kafkas_reassignment_file_is_read() {
        let text = r#"{"version":1,"partitions":[{"topic":"orders","partition":0,"replicas":[2,3,4],"log_dirs":["any","any","any"]}]}"#;
        let file: PlanFile = serde_json::from_str(text).unwrap();
        assert_eq!(file.partitions[0].replicas, vec![2, 3, 4]);
    }
}
