//! `karst groups list|describe|reset-offsets|delete|delete-offsets`: consumer groups, with
//! the flags and columns of Kafka's `kafka-consumer-groups.sh`.
//!
//! `reset-offsets` prints the plan by default (`--dry-run`) and commits it only with
//! `--execute`, and only for a group without active members, as Kafka's tool does.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};

use super::BootstrapArgs;
use crate::client::fetch::OffsetSpec;
use crate::client::groups::{CommittedOffset, GroupDescription};
use crate::client::Client;

#[derive(Args, Debug)]
pub struct GroupsArgs {
    #[command(flatten)]
    bootstrap: BootstrapArgs,
    #[command(subcommand)]
    command: GroupsCommand,
}

#[derive(Subcommand, Debug)]
enum GroupsCommand {
    /// List the cluster's groups (with --state: their states, optionally only these).
    List {
        /// Show states; given values (e.g. Stable, Empty) also filter.
        #[arg(long, num_args = 0.., value_delimiter = ',')]
        state: Option<Vec<String>>,
    },
    /// Per partition: committed offset, log end offset, lag and owning member.
    Describe(DescribeArgs),
    /// Move a group's committed offsets (dry run unless --execute).
    ResetOffsets(ResetArgs),
    /// Delete empty groups and their committed offsets.
    Delete {
        #[arg(long, required = true)]
        group: Vec<String>,
    },
    /// Delete a group's committed offsets of a topic (or of some of its partitions).
    DeleteOffsets {
        #[arg(long)]
        group: String,
        /// TOPIC or TOPIC:P1,P2
        #[arg(long)]
        topic: String,
    },
}

#[derive(Args, Debug)]
struct DescribeArgs {
    #[arg(long)]
    group: String,
    /// Show members (client id, host, assigned partitions) instead of offsets.
    #[arg(long, conflicts_with = "state")]
    members: bool,
    /// Show the group's state, protocol and member count.
    #[arg(long)]
    state: bool,
}

#[derive(Args, Debug)]
struct ResetArgs {
    #[arg(long)]
    group: String,
    /// TOPIC or TOPIC:P1,P2 (repeatable).
    #[arg(long, required_unless_present = "all_topics")]
    topic: Vec<String>,
    /// Every topic the group has committed offsets for.
    #[arg(long)]
    all_topics: bool,
    #[arg(long, group = "scenario")]
    to_earliest: bool,
    #[arg(long, group = "scenario")]
    to_latest: bool,
    #[arg(long, group = "scenario", value_name = "OFFSET")]
    to_offset: Option<i64>,
    /// RFC 3339 (`2026-11-29T10:00:00Z`) or Kafka's `YYYY-MM-DDTHH:mm:SS.sss` (UTC).
    #[arg(long, group = "scenario", value_name = "DATETIME")]
    to_datetime: Option<String>,
    #[arg(long, group = "scenario", value_name = "N", allow_hyphen_values = true)]
    shift_by: Option<i64>,
    /// Only print the new offsets (the default).
    #[arg(long, conflicts_with = "execute")]
    dry_run: bool,
    /// Commit the new offsets.
    #[arg(long)]
    execute: bool,
}

pub async fn run(args: GroupsArgs) -> anyhow::Result<()> {
    let mut client = args.bootstrap.connect().await?;
    match args.command {
        GroupsCommand::List { state } => {
            let filter = state.clone().unwrap_or_default();
            let groups = client.list_groups(&filter).await?;
            for group in groups {
                match state {
                    Some(_) => println!("{:<40} {}", group.group_id, group.state),
                    None => println!("{}", group.group_id),
                }
            }
        }
        GroupsCommand::Describe(describe) => {
            let group = client.describe_group(&describe.group).await?;
            if group.state == "Dead" {
                bail!("consumer group '{}' does not exist", describe.group);
            }
            if describe.state {
                print!("{}", state_table(&group));
            } else if describe.members {
                print!("{}", members_table(&group));
            } else {
                if group.members.is_empty() {
                    eprintln!("Consumer group '{}' has no active members.", group.group_id);
                }
                let committed = client.committed_offsets(&describe.group).await?;
                let rows = offset_rows(&mut client, &group, &committed).await?;
                print!("{}", offsets_table(&group.group_id, &rows));
            }
        }
        GroupsCommand::ResetOffsets(reset) => reset_offsets(&mut client, reset).await?,
        GroupsCommand::Delete { group } => {
            for group in group {
                client.delete_group(&group).await?;
                println!("Deletion of requested consumer groups ('{group}') was successful.");
            }
        }
        GroupsCommand::DeleteOffsets { group, topic } => {
            let (topic, partitions) = parse_topic(&topic)?;
            let partitions = match partitions {
                Some(partitions) => partitions,
                None => (0..client.topic(&topic).await?.partition_count()).collect(),
            };
            client.delete_offsets(&group, &topic, &partitions).await?;
            println!("Request succeeded for deleting offsets of {topic} from group {group}.");
        }
    }
    Ok(())
}

/// One line of `describe`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OffsetRow {
    topic: String,
    partition: i32,
    current: Option<i64>,
    log_end: Option<i64>,
    member: Option<(String, String, String)>,
}

/// Partitions assigned to a member or with a committed offset, with their log end.
async fn offset_rows(
    client: &mut Client,
    group: &GroupDescription,
    committed: &[CommittedOffset],
) -> anyhow::Result<Vec<OffsetRow>> {
    let mut rows: BTreeMap<(String, i32), OffsetRow> = BTreeMap::new();
    for member in &group.members {
        for (topic, partitions) in &member.assignment {
            for partition in partitions {
                rows.insert(
                    (topic.clone(), *partition),
                    OffsetRow {
                        topic: topic.clone(),
                        partition: *partition,
                        current: None,
                        log_end: None,
                        member: Some((
                            member.member_id.clone(),
                            member.client_host.clone(),
                            member.client_id.clone(),
                        )),
                    },
                );
            }
        }
    }
    for offset in committed {
        rows.entry((offset.topic.clone(), offset.partition))
            .or_insert_with(|| OffsetRow {
                topic: offset.topic.clone(),
                partition: offset.partition,
                current: None,
                log_end: None,
                member: None,
            })
            .current = Some(offset.offset);
    }
    let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for (topic, partition) in rows.keys() {
        by_topic.entry(topic.clone()).or_default().push(*partition);
    }
    for (topic, partitions) in by_topic {
        let ends = client
            .list_offsets(&topic, &partitions, OffsetSpec::Latest)
            .await
            .with_context(|| format!("log end offsets of {topic}"))?;
        for end in ends {
            if let Some(row) = rows.get_mut(&(topic.clone(), end.partition)) {
                row.log_end = end.offset;
            }
        }
    }
    Ok(rows.into_values().collect())
}

fn dash(value: Option<impl ToString>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

fn offsets_table(group: &str, rows: &[OffsetRow]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<24} {:<24} {:<10} {:<15} {:<15} {:<8} {:<48} {:<16} CLIENT-ID",
        "GROUP",
        "TOPIC",
        "PARTITION",
        "CURRENT-OFFSET",
        "LOG-END-OFFSET",
        "LAG",
        "CONSUMER-ID",
        "HOST"
    );
    for row in rows {
        let lag = match (row.current, row.log_end) {
            (Some(current), Some(end)) => Some((end - current).max(0)),
            _ => None,
        };
        let (member, host, client) = row
            .member
            .clone()
            .unwrap_or_else(|| ("-".into(), "-".into(), "-".into()));
        let _ = writeln!(
            out,
            "{:<24} {:<24} {:<10} {:<15} {:<15} {:<8} {:<48} {:<16} {}",
            group,
            row.topic,
            row.partition,
            dash(row.current),
            dash(row.log_end),
            dash(lag),
            member,
            host,
            client
        );
    }
    out
}

fn members_table(group: &GroupDescription) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<24} {:<48} {:<20} {:<16} {:<16} {:<12} ASSIGNMENT",
        "GROUP", "CONSUMER-ID", "GROUP-INSTANCE-ID", "HOST", "CLIENT-ID", "#PARTITIONS"
    );
    for member in &group.members {
        let count: usize = member.assignment.iter().map(|(_, p)| p.len()).sum();
        let assignment: Vec<String> = member
            .assignment
            .iter()
            .map(|(topic, partitions)| {
                let list: Vec<String> = partitions.iter().map(i32::to_string).collect();
                format!("{topic}({})", list.join(","))
            })
            .collect();
        let _ = writeln!(
            out,
            "{:<24} {:<48} {:<20} {:<16} {:<16} {:<12} {}",
            group.group_id,
            member.member_id,
            member
                .group_instance_id
                .clone()
                .unwrap_or_else(|| "-".into()),
            member.client_host,
            member.client_id,
            count,
            assignment.join(" ")
        );
    }
    out
}

fn state_table(group: &GroupDescription) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<24} {:<20} {:<20} #MEMBERS",
        "GROUP", "ASSIGNMENT-STRATEGY", "STATE"
    );
    let _ = writeln!(
        out,
        "{:<24} {:<20} {:<20} {}",
        group.group_id,
        if group.protocol.is_empty() {
            "-"
        } else {
            &group.protocol
        },
        group.state,
        group.members.len()
    );
    out
}

/// `TOPIC` or `TOPIC:P1,P2`.
fn parse_topic(text: &str) -> anyhow::Result<(String, Option<Vec<i32>>)> {
    match text.split_once(':') {
        None => Ok((text.to_owned(), None)),
        Some((topic, partitions)) => {
            let partitions = partitions
                .split(',')
                .map(|p| {
                    p.trim()
                        .parse::<i32>()
                        .with_context(|| format!("bad partition {p:?} in {text:?}"))
                })
                .collect::<anyhow::Result<Vec<i32>>>()?;
            Ok((topic.to_owned(), Some(partitions)))
        }
    }
}

/// Milliseconds since the epoch of an RFC 3339 time or Kafka's `YYYY-MM-DDTHH:mm:SS.sss` (UTC).
fn parse_datetime(text: &str) -> anyhow::Result<i64> {
    if let Ok(time) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(time.timestamp_millis());
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S"] {
        if let Ok(time) = chrono::NaiveDateTime::parse_from_str(text, format) {
            return Ok(time.and_utc().timestamp_millis());
        }
    }
    bail!("cannot read {text:?} as a date and time (e.g. 2026-11-29T10:00:00Z)")
}

async fn reset_offsets(client: &mut Client, reset: ResetArgs) -> anyhow::Result<()> {
    let group = client.describe_group(&reset.group).await?;
    if !group.members.is_empty() {
        bail!(
            "Assignments can only be reset if the group '{}' is inactive, but the current state is {}.",
            reset.group,
            group.state
        );
    }
    let committed = client.committed_offsets(&reset.group).await?;
    let mut targets: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    if reset.all_topics {
        for offset in &committed {
            targets
                .entry(offset.topic.clone())
                .or_default()
                .push(offset.partition);
        }
    }
    for topic in &reset.topic {
        let (topic, partitions) = parse_topic(topic)?;
        let partitions = match partitions {
            Some(partitions) => partitions,
            None => (0..client.topic(&topic).await?.partition_count()).collect(),
        };
        targets.entry(topic).or_default().extend(partitions);
    }
    let mut plan = Vec::new();
    for (topic, mut partitions) in targets {
        partitions.sort_unstable();
        partitions.dedup();
        let earliest =
            offsets_by_partition(client, &topic, &partitions, OffsetSpec::Earliest).await?;
        let latest = offsets_by_partition(client, &topic, &partitions, OffsetSpec::Latest).await?;
        let by_time = match &reset.to_datetime {
            Some(text) => Some(
                offsets_by_partition(
                    client,
                    &topic,
                    &partitions,
                    OffsetSpec::Timestamp(parse_datetime(text)?),
                )
                .await?,
            ),
            None => None,
        };
        for partition in partitions {
            let (low, high) = (earliest[&partition], latest[&partition]);
            let current = committed
                .iter()
                .find(|c| c.topic == topic && c.partition == partition)
                .map(|c| c.offset);
            let wanted = if reset.to_earliest {
                low
            } else if reset.to_latest {
                high
            } else if let Some(offset) = reset.to_offset {
                offset
            } else if let Some(by_time) = &by_time {
                by_time.get(&partition).copied().unwrap_or(high)
            } else if let Some(shift) = reset.shift_by {
                current.unwrap_or(high) + shift
            } else {
                bail!("choose a scenario: --to-earliest, --to-latest, --to-offset, --to-datetime or --shift-by");
            };
            plan.push(CommittedOffset {
                topic: topic.clone(),
                partition,
                offset: wanted.clamp(low, high),
                metadata: String::new(),
            });
        }
    }
    println!(
        "{:<24} {:<24} {:<10} NEW-OFFSET",
        "GROUP", "TOPIC", "PARTITION"
    );
    for offset in &plan {
        println!(
            "{:<24} {:<24} {:<10} {}",
            reset.group, offset.topic, offset.partition, offset.offset
        );
    }
    if reset.execute {
        client.commit_offsets(&reset.group, &plan).await?;
    } else {
        eprintln!("(dry run: nothing committed; add --execute to commit these offsets)");
    }
    Ok(())
}

/// `spec`'s offset per partition; a timestamp query without a match is left out.
async fn offsets_by_partition(
    client: &mut Client,
    topic: &str,
    partitions: &[i32],
    spec: OffsetSpec,
) -> anyhow::Result<BTreeMap<i32, i64>> {
    Ok(client
        .list_offsets(topic, partitions, spec)
        .await?
        .into_iter()
        .filter_map(|listed| listed.offset.map(|offset| (listed.partition, offset)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_read_with_or_without_partitions() {
        assert_eq!(parse_topic("orders").unwrap(), ("orders".into(), None));
        assert_eq!(
            parse_topic("orders:0,2").unwrap(),
            ("orders".into(), Some(vec![0, 2]))
        );
        assert!(parse_topic("orders:x").is_err());
    }

    #[test]
    fn datetimes_are_read_as_kafka_and_rfc_3339_write_them() {
        assert_eq!(parse_datetime("1970-01-01T00:00:01Z").unwrap(), 1_000);
        assert_eq!(parse_datetime("1970-01-01T00:00:01.500").unwrap(), 1_500);
        assert!(parse_datetime("yesterday").is_err());
    }

    #[test]
    fn lag_is_log_end_minus_committed_and_dashes_where_unknown() {
        let rows = vec![
            OffsetRow {
                topic: "t".into(),
                partition: 0,
                current: Some(40),
                log_end: Some(100),
                member: None,
            },
            OffsetRow {
                topic: "t".into(),
                partition: 1,
                current: None,
                log_end: Some(7),
                member: None,
            },
        ];
        let table = offsets_table("g", &rows);
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[1].split_whitespace().collect::<Vec<_>>()[..6]
                == ["g", "t", "0", "40", "100", "60"]
        );
        assert!(
            lines[2].split_whitespace().collect::<Vec<_>>()[..6] == ["g", "t", "1", "-", "7", "-"]
        );
    }
}
