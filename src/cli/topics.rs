//! `karst topics`: create, list, describe, alter and delete topics (like `kafka-topics.sh`).
//!
//! `describe` prints Kafka's layout (one topic line, then one line per partition) so that
//! habits and scripts written for `kafka-topics.sh --describe` carry over.

use std::fmt::Write as _;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use proto_kafka::ResponseError;

use super::{parse_key_value, BootstrapArgs};
use crate::client::admin::{ConfigChange, NewTopic};
use crate::client::reassignment::OngoingReassignment;
use crate::client::{Client, TopicMetadata};

/// Arguments of `karst topics`.
#[derive(Args, Debug)]
pub struct TopicsArgs {
    #[command(flatten)]
    bootstrap: BootstrapArgs,
    #[command(subcommand)]
    command: TopicsCommand,
}

#[derive(Subcommand, Debug)]
enum TopicsCommand {
    /// Create a topic.
    Create(CreateArgs),
    /// List topic names.
    List,
    /// Describe partitions, leaders, replicas, ISR and non-default configs.
    Describe(DescribeArgs),
    /// Delete a topic.
    Delete(DeleteArgs),
    /// Add partitions and change configs of a topic.
    Alter(AlterArgs),
    /// Move leadership to preferred replicas (or, unclean, to any live replica of
    /// leaderless partitions), like kafka-leader-election.
    ElectLeaders(ElectArgs),
    /// Move partitions to new replicas, list moves in progress, or cancel them, like
    /// kafka-reassign-partitions.
    Reassign(super::reassign::ReassignArgs),
}

#[derive(Args, Debug)]
struct ElectArgs {
    /// Only this topic's partitions (default: every partition).
    #[arg(long)]
    topic: Option<String>,
    /// Only this partition of --topic.
    #[arg(long)]
    partition: Option<i32>,
    /// `preferred` or `unclean`.
    #[arg(long = "election-type", default_value = "preferred")]
    election_type: String,
}

#[derive(Args, Debug)]
struct CreateArgs {
    /// The topic to create.
    #[arg(long)]
    topic: String,
    /// Partition count (default: the broker's num.partitions).
    #[arg(long)]
    partitions: Option<i32>,
    /// Replication factor (default: the broker's default.replication.factor).
    #[arg(long = "replication-factor")]
    replication_factor: Option<i16>,
    /// A topic config, KEY=VALUE (repeatable).
    #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    configs: Vec<(String, String)>,
    /// Succeed quietly if the topic already exists.
    #[arg(long = "if-not-exists")]
    if_not_exists: bool,
}

#[derive(Args, Debug)]
struct DescribeArgs {
    /// The topic to describe (default: all topics).
    #[arg(long)]
    topic: Option<String>,
}

#[derive(Args, Debug)]
struct DeleteArgs {
    /// The topic to delete.
    #[arg(long)]
    topic: String,
}

#[derive(Args, Debug)]
struct AlterArgs {
    /// The topic to alter.
    #[arg(long)]
    topic: String,
    /// The new total partition count (partitions can only be added).
    #[arg(long)]
    partitions: Option<i32>,
    /// Set a topic config, KEY=VALUE (repeatable).
    #[arg(long = "add-config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    add_configs: Vec<(String, String)>,
    /// Remove a topic config, returning it to the default (repeatable).
    #[arg(long = "delete-config", value_name = "KEY")]
    delete_configs: Vec<String>,
}

/// Runs `karst topics`.
pub async fn run(args: TopicsArgs) -> anyhow::Result<()> {
    let mut client = args.bootstrap.connect().await?;
    match args.command {
        TopicsCommand::Create(create) => create_topic(&mut client, create).await,
        TopicsCommand::List => list_topics(&mut client).await,
        TopicsCommand::Describe(describe) => describe_topics(&mut client, describe).await,
        TopicsCommand::Delete(delete) => {
            client.delete_topic(&delete.topic).await?;
            println!("Deleted topic {}.", delete.topic);
            Ok(())
        }
        TopicsCommand::Alter(alter) => alter_topic(&mut client, alter).await,
        TopicsCommand::ElectLeaders(elect) => elect_leaders(&mut client, elect).await,
        TopicsCommand::Reassign(reassign) => super::reassign::run(&mut client, reassign).await,
    }
}

async fn create_topic(client: &mut Client, args: CreateArgs) -> anyhow::Result<()> {
    let topic = NewTopic {
        name: args.topic.clone(),
        partitions: args.partitions,
        replication_factor: args.replication_factor,
        configs: args.configs,
    };
    match client.create_topic(&topic).await {
        Ok(_topic_id) => {
            println!("Created topic {}.", args.topic);
            Ok(())
        }
        Err(error)
            if args.if_not_exists
                && error.kafka_code() == Some(ResponseError::TopicAlreadyExists) =>
        {
            eprintln!("Topic {} already exists.", args.topic);
            Ok(())
        }
        Err(error) => Err(error.into()),
    }
}

async fn list_topics(client: &mut Client) -> anyhow::Result<()> {
    let cluster = client.metadata(None).await?;
    let mut names: Vec<String> = cluster.topics.into_iter().map(|topic| topic.name).collect();
    names.sort();
    for name in names {
        println!("{name}");
    }
    Ok(())
}

async fn describe_topics(client: &mut Client, args: DescribeArgs) -> anyhow::Result<()> {
    let mut topics = match &args.topic {
        Some(name) => vec![client.topic(name).await?],
        None => client.metadata(None).await?.topics,
    };
    topics.sort_by(|left, right| left.name.cmp(&right.name));
    // Moves in progress, shown as Kafka's describe does; a broker without the API has none.
    let moving = client
        .list_partition_reassignments(None)
        .await
        .unwrap_or_default();
    for topic in topics {
        let configs = client
            .describe_topic_configs(&topic.name)
            .await
            .with_context(|| format!("describing configs of {}", topic.name))?;
        let non_default: Vec<String> = configs
            .iter()
            .filter(|entry| !entry.is_default())
            .map(|entry| format!("{}={}", entry.name, entry.value.as_deref().unwrap_or("")))
            .collect();
        print!("{}", describe_topic(&topic, &non_default, &moving));
    }
    Ok(())
}

async fn elect_leaders(client: &mut Client, args: ElectArgs) -> anyhow::Result<()> {
    use proto_kafka::messages::elect_leaders_request::TopicPartitions;
    use proto_kafka::messages::{ElectLeadersRequest, TopicName};
    use proto_kafka::protocol::StrBytes;

    let election_type = match args.election_type.as_str() {
        "preferred" => 0,
        "unclean" => 1,
        other => anyhow::bail!("--election-type must be preferred or unclean, not {other}"),
    };
    let partitions = match &args.topic {
        None => None,
        Some(name) => {
            let indexes = match args.partition {
                Some(index) => vec![index],
                None => client
                    .topic(name)
                    .await?
                    .partitions
                    .iter()
                    .map(|p| p.index)
                    .collect(),
            };
            Some(vec![TopicPartitions::default()
                .with_topic(TopicName(StrBytes::from_string(name.clone())))
                .with_partitions(indexes)])
        }
    };
    let request = ElectLeadersRequest::default()
        .with_election_type(election_type)
        .with_topic_partitions(partitions)
        .with_timeout_ms(30_000);
    let version = client.bootstrap().version::<ElectLeadersRequest>()?;
    let response = client.send(request, version).await?;
    if response.error_code != 0 {
        anyhow::bail!(
            "ElectLeaders failed with error code {}",
            response.error_code
        );
    }
    let mut elected = 0;
    for topic in &response.replica_election_results {
        for result in &topic.partition_result {
            let partition = format!("{}-{}", topic.topic.as_str(), result.partition_id);
            match result.error_code {
                0 => {
                    elected += 1;
                    println!("Elected a new leader for {partition}.");
                }
                code => println!(
                    "{partition}: {} ({})",
                    crate::client::error::kafka_error_name(
                        proto_kafka::ResponseError::try_from_code(code)
                            .unwrap_or(proto_kafka::ResponseError::UnknownServerError)
                    ),
                    result.error_message.as_deref().unwrap_or("")
                ),
            }
        }
    }
    println!("{elected} partition(s) got a new leader.");
    Ok(())
}

/// Kafka's `--describe` layout for one topic.
fn describe_topic(
    topic: &TopicMetadata,
    non_default_configs: &[String],
    moving: &[OngoingReassignment],
) -> String {
    let reassignment_of = |partition: i32| {
        moving
            .iter()
            .find(|m| m.topic == topic.name && m.partition == partition)
    };
    // As Kafka's describe: a partition being moved counts its target replicas.
    let replication_factor = topic.partitions.first().map_or(0, |partition| {
        let removing = reassignment_of(partition.index).map_or(0, |m| m.removing_replicas.len());
        partition.replicas.len() - removing
    });
    let mut text = format!(
        "Topic: {}\tTopicId: {}\tPartitionCount: {}\tReplicationFactor: {}\tConfigs: {}\n",
        topic.name,
        kafka_uuid_string(topic.topic_id),
        topic.partitions.len(),
        replication_factor,
        non_default_configs.join(",")
    );
    for partition in &topic.partitions {
        let leader = if partition.leader_id < 0 {
            "none".to_owned()
        } else {
            partition.leader_id.to_string()
        };
        let _ = write!(
            text,
            "\tTopic: {}\tPartition: {}\tLeader: {}\tReplicas: {}\tIsr: {}",
            topic.name,
            partition.index,
            leader,
            join_ids(&partition.replicas),
            join_ids(&partition.isr)
        );
        if !partition.offline_replicas.is_empty() {
            let _ = write!(text, "\tOffline: {}", join_ids(&partition.offline_replicas));
        }
        if let Some(reassignment) = reassignment_of(partition.index) {
            let _ = write!(
                text,
                "\tAdding Replicas: {}\tRemoving Replicas: {}",
                join_ids(&reassignment.adding_replicas),
                join_ids(&reassignment.removing_replicas)
            );
        }
        text.push('\n');
    }
    text
}

/// A topic id the way Kafka prints it (`Uuid.toString`): URL-safe base64 without padding.
fn kafka_uuid_string(id: uuid::Uuid) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = id.as_bytes();
    let mut text = String::with_capacity(22);
    for chunk in bytes.chunks(3) {
        let group = chunk
            .iter()
            .enumerate()
            .fold(0u32, |group, (index, &byte)| {
                group | u32::from(byte) << (16 - 8 * index)
            });
        // A chunk of n bytes carries n + 1 base64 digits.
        for digit in 0..=chunk.len() {
            let index = (group >> (18 - 6 * digit)) & 0x3f;
            text.push(char::from(ALPHABET[index as usize]));
        }
    }
    text
}

fn join_ids(ids: &[i32]) -> String {
    ids.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
}

async fn alter_topic(client: &mut Client, args: AlterArgs) -> anyhow::Result<()> {
    if args.partitions.is_none() && args.add_configs.is_empty() && args.delete_configs.is_empty() {
        anyhow::bail!("nothing to alter: give --partitions, --add-config or --delete-config");
    }
    let changes: Vec<ConfigChange> = args
        .add_configs
        .into_iter()
        .map(|(name, value)| ConfigChange::Set { name, value })
        .chain(
            args.delete_configs
                .into_iter()
                .map(|name| ConfigChange::Delete { name }),
        )
        .collect();
    if !changes.is_empty() {
        client.alter_topic_configs(&args.topic, &changes).await?;
        println!("Altered configs of topic {}.", args.topic);
    }
    if let Some(partitions) = args.partitions {
        client.create_partitions(&args.topic, partitions).await?;
        println!("Topic {} now has {partitions} partitions.", args.topic);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::PartitionMetadata;

    #[test]
    fn topic_ids_print_as_kafkas_url_safe_base64() {
        // Kafka prints Uuid(0xfb8f..., ...) as 22 characters without padding.
        let id = uuid::Uuid::from_bytes([
            0xfb, 0xff, 0xbf, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a,
            0x0b, 0x0c,
        ]);
        assert_eq!(kafka_uuid_string(id), "-_-_AAECAwQFBgcICQoLDA");
        assert_eq!(kafka_uuid_string(uuid::Uuid::nil()).len(), 22);
    }

    #[test]
    fn describe_prints_kafkas_layout() {
        let topic = TopicMetadata {
            name: "orders".into(),
            topic_id: uuid::Uuid::nil(),
            error: None,
            is_internal: false,
            partitions: vec![PartitionMetadata {
                index: 0,
                error: None,
                leader_id: 1,
                leader_epoch: 0,
                replicas: vec![1, 2],
                isr: vec![1],
                offline_replicas: vec![],
            }],
        };
        let text = describe_topic(&topic, &["retention.ms=1000".into()], &[]);
        assert_eq!(
            text,
            "Topic: orders\tTopicId: AAAAAAAAAAAAAAAAAAAAAA\tPartitionCount: 1\t\
             ReplicationFactor: 2\tConfigs: retention.ms=1000\n\
             \tTopic: orders\tPartition: 0\tLeader: 1\tReplicas: 1,2\tIsr: 1\n"
        );
        let moving = [OngoingReassignment {
            topic: "orders".into(),
            partition: 0,
            replicas: vec![1, 2],
            adding_replicas: vec![2],
            removing_replicas: vec![],
        }];
        let text = describe_topic(&topic, &[], &moving);
        assert!(
            text.ends_with("Isr: 1\tAdding Replicas: 2\tRemoving Replicas: \n"),
            "{text}"
        );
    }
}
