//! `karst cluster`: the metadata quorum and the registered brokers.
//!
//! * `karst cluster quorum` sends DescribeQuorum and prints what `kafka-metadata-quorum.sh
//!   describe --status --replication` prints: leader, epoch, high watermark, then one line per
//!   voter and observer with its log end offset and lag behind the leader.
//! * `karst cluster brokers` sends DescribeCluster (id, address, rack, and from v2 whether the
//!   broker is fenced). With `--admin-server` it reads the node's `/v1/cluster` JSON instead,
//!   which also has each broker's incarnation id, broker epoch and every listener.
//!
//! `--format json` prints one JSON document, for scripts and tests.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Value};

use super::BootstrapArgs;
use crate::client::cluster::{ClusterDescription, QuorumDescription, QuorumReplica};
use crate::client::{is_leadership_error, Client, ClientError, LEADER_RETRIES_MAX};

/// Arguments of `karst cluster`.
#[derive(Args, Debug)]
pub struct ClusterArgs {
    #[command(flatten)]
    bootstrap: BootstrapArgs,
    #[command(subcommand)]
    command: ClusterCommand,
}

#[derive(Subcommand, Debug)]
enum ClusterCommand {
    /// The metadata quorum: controller (leader), epoch, voters, observers and their lag.
    Quorum(OutputArgs),
    /// Registered brokers: id, listeners, rack, fenced, incarnation.
    Brokers(BrokersArgs),
}

#[derive(Args, Debug)]
struct OutputArgs {
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Args, Debug)]
struct BrokersArgs {
    /// Read the node's admin listener (`GET /v1/cluster`) instead of sending DescribeCluster:
    /// adds incarnation ids, broker epochs and all listeners.
    #[arg(long = "admin-server", value_name = "HOST:PORT")]
    admin_server: Option<String>,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Format {
    /// Aligned columns for people.
    Text,
    /// One JSON document.
    Json,
}

/// How long `--admin-server` waits for the whole HTTP answer.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest `/v1/cluster` answer read (a few hundred bytes per broker).
const ADMIN_RESPONSE_BYTES_MAX: u64 = 16 * 1024 * 1024;

pub async fn run(args: ClusterArgs) -> anyhow::Result<()> {
    match args.command {
        ClusterCommand::Quorum(output) => {
            let mut client = args.bootstrap.connect().await?;
            let quorum = describe_quorum(&mut client).await?;
            match output.format {
                Format::Text => print!("{}", quorum_text(&quorum)),
                Format::Json => println!("{:#}", quorum_json(&quorum)),
            }
        }
        ClusterCommand::Brokers(brokers) => match brokers.admin_server {
            Some(address) => {
                let cluster =
                    tokio::task::spawn_blocking(move || admin_get(&address, "/v1/cluster"))
                        .await??;
                match brokers.output.format {
                    Format::Text => print!("{}", admin_brokers_text(&cluster)?),
                    Format::Json => println!("{cluster:#}"),
                }
            }
            None => {
                let mut client = args.bootstrap.connect().await?;
                let cluster = client.describe_cluster().await?;
                match brokers.output.format {
                    Format::Text => print!("{}", brokers_text(&cluster)),
                    Format::Json => println!("{:#}", brokers_json(&cluster)),
                }
            }
        },
    }
    Ok(())
}

/// DescribeQuorum, retried while the quorum has no leader (an election in progress answers
/// NOT_LEADER_OR_FOLLOWER); the request changes nothing, so retrying is always safe.
async fn describe_quorum(client: &mut Client) -> Result<QuorumDescription, ClientError> {
    let mut attempt = 0;
    loop {
        match client.describe_quorum().await {
            Err(error)
                if attempt < LEADER_RETRIES_MAX
                    && error.kafka_code().is_some_and(is_leadership_error) =>
            {
                Client::leader_retry_backoff(attempt).await;
                attempt += 1;
            }
            outcome => return outcome,
        }
    }
}

fn role(quorum: &QuorumDescription, replica: &QuorumReplica, voter: bool) -> &'static str {
    match (replica.replica_id == quorum.leader_id, voter) {
        (true, _) => "Leader",
        (false, true) => "Follower",
        (false, false) => "Observer",
    }
}

fn or_dash(value: Option<i64>) -> String {
    value.map_or_else(|| "-".to_owned(), |value| value.to_string())
}

fn quorum_text(quorum: &QuorumDescription) -> String {
    let ids = |replicas: &[QuorumReplica]| {
        let ids: Vec<String> = replicas.iter().map(|r| r.replica_id.to_string()).collect();
        format!("[{}]", ids.join(","))
    };
    let mut text = format!(
        "LeaderId:           {}\nLeaderEpoch:        {}\nHighWatermark:      {}\nCurrentVoters:      {}\nCurrentObservers:   {}\n\n",
        quorum.leader_id,
        quorum.leader_epoch,
        quorum.high_watermark,
        ids(&quorum.voters),
        ids(&quorum.observers),
    );
    let mut rows = vec![[
        "NodeId".to_owned(),
        "Status".to_owned(),
        "LogEndOffset".to_owned(),
        "Lag".to_owned(),
        "LastFetchTimestamp".to_owned(),
        "LastCaughtUpTimestamp".to_owned(),
        "Endpoints".to_owned(),
    ]];
    let members = quorum
        .voters
        .iter()
        .map(|replica| (replica, true))
        .chain(quorum.observers.iter().map(|replica| (replica, false)));
    for (replica, voter) in members {
        let endpoints = quorum.endpoints(replica.replica_id).join(",");
        rows.push([
            replica.replica_id.to_string(),
            role(quorum, replica, voter).to_owned(),
            or_dash(Some(replica.log_end_offset).filter(|offset| *offset >= 0)),
            or_dash(quorum.lag(replica)),
            or_dash(replica.last_fetch_timestamp_ms),
            or_dash(replica.last_caught_up_timestamp_ms),
            if endpoints.is_empty() {
                "-".to_owned()
            } else {
                endpoints
            },
        ]);
    }
    text.push_str(&columns(&rows));
    text
}

fn quorum_json(quorum: &QuorumDescription) -> Value {
    let replica = |replica: &QuorumReplica, voter: bool| {
        json!({
            "node_id": replica.replica_id,
            "status": role(quorum, replica, voter).to_lowercase(),
            "directory_id": replica.directory_id.map(crate::cluster_id::encode),
            "log_end_offset": replica.log_end_offset,
            "lag": quorum.lag(replica),
            "last_fetch_timestamp": replica.last_fetch_timestamp_ms,
            "last_caught_up_timestamp": replica.last_caught_up_timestamp_ms,
            "endpoints": quorum.endpoints(replica.replica_id),
        })
    };
    json!({
        "leader_id": quorum.leader_id,
        "leader_epoch": quorum.leader_epoch,
        "high_watermark": quorum.high_watermark,
        "voters": quorum.voters.iter().map(|r| replica(r, true)).collect::<Vec<_>>(),
        "observers": quorum.observers.iter().map(|r| replica(r, false)).collect::<Vec<_>>(),
    })
}

fn brokers_text(cluster: &ClusterDescription) -> String {
    let mut text = format!(
        "ClusterId:      {}\nControllerId:   {}\n\n",
        cluster.cluster_id, cluster.controller_id
    );
    let mut rows = vec![[
        "BrokerId".to_owned(),
        "Endpoint".to_owned(),
        "Rack".to_owned(),
        "Fenced".to_owned(),
    ]];
    for broker in &cluster.brokers {
        rows.push([
            broker.broker_id.to_string(),
            format!("{}:{}", broker.host, broker.port),
            broker.rack.clone().unwrap_or_else(|| "-".to_owned()),
            broker
                .fenced
                .map_or_else(|| "-".to_owned(), |fenced| fenced.to_string()),
        ]);
    }
    text.push_str(&columns(&rows));
    text
}

fn brokers_json(cluster: &ClusterDescription) -> Value {
    let brokers: Vec<Value> = cluster
        .brokers
        .iter()
        .map(|broker| {
            json!({
                "id": broker.broker_id,
                "host": broker.host,
                "port": broker.port,
                "rack": broker.rack,
                "fenced": broker.fenced,
            })
        })
        .collect();
    json!({
        "cluster_id": cluster.cluster_id,
        "controller": cluster.controller_id,
        "brokers": brokers,
    })
}

/// The brokers of a `/v1/cluster` document as a table.
fn admin_brokers_text(cluster: &Value) -> anyhow::Result<String> {
    let brokers = cluster["brokers"]
        .as_array()
        .context("/v1/cluster has no brokers list")?;
    let mut text = format!(
        "ClusterId:      {}\nControllerId:   {}\n\n",
        text_of(&cluster["cluster_id"]),
        text_of(&cluster["controller"]),
    );
    let mut rows = vec![[
        "BrokerId".to_owned(),
        "Listeners".to_owned(),
        "Rack".to_owned(),
        "Fenced".to_owned(),
        "Epoch".to_owned(),
        "Incarnation".to_owned(),
    ]];
    for broker in brokers {
        let listeners: Vec<String> = broker["listeners"]
            .as_array()
            .map(|listeners| {
                listeners
                    .iter()
                    .map(|l| {
                        format!(
                            "{}://{}:{}",
                            text_of(&l["name"]),
                            text_of(&l["host"]),
                            text_of(&l["port"])
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        rows.push([
            text_of(&broker["id"]),
            listeners.join(","),
            text_of(&broker["rack"]),
            text_of(&broker["fenced"]),
            text_of(&broker["epoch"]),
            text_of(&broker["incarnation"]),
        ]);
    }
    text.push_str(&columns(&rows));
    Ok(text)
}

/// A JSON scalar as plain text; null and missing values as `-`.
fn text_of(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// Left-aligned columns separated by two spaces.
fn columns<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:width$}"))
            .collect();
        text.push_str(line.join("  ").trim_end());
        text.push('\n');
    }
    text
}

/// `GET path` on the admin listener at `address` (HTTP/1.0, one request per connection, as
/// the admin listener serves), parsed as JSON.
fn admin_get(address: &str, path: &str) -> anyhow::Result<Value> {
    let mut stream =
        TcpStream::connect(address).with_context(|| format!("cannot connect to {address}"))?;
    stream.set_read_timeout(Some(ADMIN_TIMEOUT))?;
    stream.set_write_timeout(Some(ADMIN_TIMEOUT))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n")?;
    let mut response = Vec::new();
    stream
        .take(ADMIN_RESPONSE_BYTES_MAX)
        .read_to_end(&mut response)
        .with_context(|| format!("reading GET {path} from {address}"))?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("{address} sent no HTTP response to GET {path}"))?;
    let status = head.lines().next().unwrap_or_default();
    if !status.contains(" 200 ") {
        anyhow::bail!("GET {path} on {address}: {status}");
    }
    serde_json::from_str(body).with_context(|| format!("GET {path} on {address}: not JSON"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::cluster::{ClusterBroker, QuorumNode};

    fn replica(id: i32, log_end_offset: i64) -> QuorumReplica {
        QuorumReplica {
            replica_id: id,
            directory_id: None,
            log_end_offset,
            last_fetch_timestamp_ms: None,
            last_caught_up_timestamp_ms: None,
        }
    }

    #[test]
    fn quorum_text_shows_the_leader_and_each_member_s_lag() {
        let quorum = QuorumDescription {
            leader_id: 1,
            leader_epoch: 4,
            high_watermark: 57,
            voters: vec![replica(1, 57), replica(2, 57), replica(3, 50)],
            observers: vec![replica(4, -1)],
            nodes: vec![QuorumNode {
                node_id: 1,
                listeners: vec![("CONTROLLER".into(), "127.0.0.1".into(), 9093)],
            }],
        };
        let text = quorum_text(&quorum);
        assert!(text.contains("LeaderId:           1\n"), "{text}");
        assert!(text.contains("CurrentVoters:      [1,2,3]\n"), "{text}");
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines.iter().any(|l| l.starts_with("1       Leader    57")
                && l.ends_with("CONTROLLER://127.0.0.1:9093")),
            "{text}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("3       Follower  50            7")),
            "{text}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("4       Observer  -             -")),
            "{text}"
        );

        let json = quorum_json(&quorum);
        assert_eq!(json["voters"][2]["lag"], 7);
        assert_eq!(json["voters"][0]["status"], "leader");
    }

    #[test]
    fn brokers_text_says_fenced_only_when_the_broker_reported_it() {
        let cluster = ClusterDescription {
            cluster_id: "MkU3OEVBNTcwNTJENDM2Qk".into(),
            controller_id: 2,
            brokers: vec![
                ClusterBroker {
                    broker_id: 1,
                    host: "127.0.0.1".into(),
                    port: 9092,
                    rack: Some("rack-1".into()),
                    fenced: Some(true),
                },
                ClusterBroker {
                    broker_id: 2,
                    host: "127.0.0.1".into(),
                    port: 9192,
                    rack: None,
                    fenced: None,
                },
            ],
        };
        let text = brokers_text(&cluster);
        assert!(
            text.contains("1         127.0.0.1:9092  rack-1  true"),
            "{text}"
        );
        assert!(
            text.contains("2         127.0.0.1:9192  -       -"),
            "{text}"
        );
    }

    #[test]
    fn admin_brokers_text_lists_incarnations_and_listeners() {
        let cluster = json!({
            "cluster_id": "MkU3OEVBNTcwNTJENDM2Qk",
            "controller": 1,
            "brokers": [{
                "id": 1,
                "incarnation": "6f1c0b7e-0000-4000-8000-000000000001",
                "listeners": [{"name": "PLAINTEXT", "host": "127.0.0.1", "port": 9092}],
                "rack": null,
                "fenced": false,
                "epoch": 12,
            }],
        });
        let text = admin_brokers_text(&cluster).unwrap();
        assert!(
            text.contains("PLAINTEXT://127.0.0.1:9092  -     false   12     6f1c0b7e-0000-4000-8000-000000000001"),
            "{text}"
        );
    }
}
