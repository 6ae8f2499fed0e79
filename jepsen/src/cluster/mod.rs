//! Cluster control: a Karst cluster of real `karst` processes, each node in its own network
//! namespace, and what the nemesis needs to know about it (who is the controller, who leads a
//! partition) from the nodes' admin listeners.
//!
//! | module | owns |
//! |---|---|
//! | [`network`] | namespaces, bridge, veth pairs, addresses, iptables rules |
//! | [`clock`] | libfaketime's offset file of a node, and the clock strobe |
//! | [`node`] | one node: generated config, data directory, process, log |
//! | [`cleanup`] | killing exactly the pids we started and deleting the namespaces, on any exit |
//! | [`unsynced`] | the FUSE filesystem under each node's data that drops unsynced writes at a crash (`lose-unsynced`) |

pub mod cleanup;
pub mod clock;
pub mod network;
pub mod node;
pub mod unsynced;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::Value as Json;

use network::NodeId;
use node::{FaultLayers, Node};

/// Timeout of one admin-listener request.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest admin response read.
const ADMIN_RESPONSE_BYTES_MAX: u64 = 8 << 20;

pub struct Cluster {
    pub nodes: Vec<Node>,
    /// True while iptables rules of a partition may be installed (the heal removes them).
    pub partitioned: bool,
}

impl Cluster {
    /// Creates the namespaces, writes and formats every node's config. Nothing runs yet.
    /// `layers` says what the nodes run inside (libfaketime, the unsynced-writes filesystem).
    pub fn create(
        node_count: u32,
        binary: &Path,
        run_directory: &Path,
        layers: FaultLayers,
    ) -> anyhow::Result<Cluster> {
        let ids: Vec<NodeId> = (1..=node_count).collect();
        // Mounts a SIGKILLed run of this prefix left behind (dead ones, ENOTCONN).
        unsynced::unmount_leftovers(network::namespace_prefix());
        network::create(&ids)?;
        let nodes = ids
            .iter()
            .map(|id| Node::create(*id, &ids, binary, run_directory, layers))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Cluster {
            nodes,
            partitioned: false,
        })
    }

    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes.iter().map(|node| node.id).collect()
    }

    pub fn node(&self, id: NodeId) -> &Node {
        self.nodes
            .iter()
            .find(|node| node.id == id)
            .expect("a node id of this cluster")
    }

    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|node| node.id == id)
            .expect("a node id of this cluster")
    }

    /// Starts every node that is not running and waits until each listens.
    pub fn start_stopped(&mut self) -> anyhow::Result<()> {
        for node in self.nodes.iter_mut().filter(|node| !node.is_running()) {
            node.start()?;
        }
        for node in self.nodes.iter_mut() {
            node.wait_ready()?;
        }
        Ok(())
    }

    /// The Kafka bootstrap list of every node.
    pub fn bootstrap_servers(&self) -> String {
        self.nodes
            .iter()
            .map(|node| node.kafka_address().to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `/v1/cluster` of the first node that answers.
    fn cluster_view(&self) -> anyhow::Result<Json> {
        let mut last_error = None;
        for node in self
            .nodes
            .iter()
            .filter(|n| n.is_running() && !n.is_paused())
        {
            match admin_get(node.admin_address(), "/v1/cluster") {
                Ok(view) => return Ok(view),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("no node is running")))
    }

    /// The node the metadata quorum elected (the controller), as a reachable node reports it.
    pub fn controller(&self) -> anyhow::Result<NodeId> {
        let view = self.cluster_view()?;
        match view["controller"].as_u64() {
            Some(id) if self.ids().contains(&(id as NodeId)) => Ok(id as NodeId),
            _ => bail!("no controller in /v1/cluster: {}", view["controller"]),
        }
    }

    /// The leader of `topic`/`partition` according to the first node that hosts it and answers.
    pub fn partition_leader(&self, topic: &str, partition: u32) -> anyhow::Result<NodeId> {
        for node in self
            .nodes
            .iter()
            .filter(|n| n.is_running() && !n.is_paused())
        {
            let Ok(view) = admin_get(node.admin_address(), "/v1/partitions") else {
                continue;
            };
            let leader = view["partitions"].as_array().and_then(|partitions| {
                partitions
                    .iter()
                    .find(|p| p["topic"] == topic && p["partition"] == partition)
                    .and_then(|p| p["leader"].as_u64())
            });
            if let Some(leader) = leader.filter(|id| self.ids().contains(&(*id as NodeId))) {
                return Ok(leader as NodeId);
            }
        }
        bail!("no node reports a leader for {topic}-{partition}")
    }
}

impl Cluster {
    /// Saves each running node's `/v1/cluster` and `/v1/partitions` as `cluster.json` and
    /// `partitions.json` in its directory: who led what, with which ISR and high watermark, at
    /// the end of the run. Best effort: a node that does not answer is skipped.
    pub fn save_admin_views(&self) {
        for node in self
            .nodes
            .iter()
            .filter(|n| n.is_running() && !n.is_paused())
        {
            for (path, file) in [
                ("/v1/cluster", "cluster.json"),
                ("/v1/partitions", "partitions.json"),
            ] {
                match admin_get(node.admin_address(), path) {
                    Ok(view) => {
                        let text = serde_json::to_string_pretty(&view).unwrap_or_default();
                        if let Err(error) = std::fs::write(node.directory().join(file), text) {
                            eprintln!("karst-jepsen: save {file} of node {}: {error}", node.id);
                        }
                    }
                    Err(error) => eprintln!("karst-jepsen: node {} {path}: {error:#}", node.id),
                }
            }
        }
    }
}

/// A GET on an admin listener, parsed as JSON (HTTP/1.0, the listener closes after answering).
pub fn admin_get(address: SocketAddr, path: &str) -> anyhow::Result<Json> {
    let mut stream = TcpStream::connect_timeout(&address, ADMIN_TIMEOUT)
        .with_context(|| format!("connect {address}"))?;
    stream.set_read_timeout(Some(ADMIN_TIMEOUT))?;
    stream.set_write_timeout(Some(ADMIN_TIMEOUT))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n")?;
    let mut response = String::new();
    stream
        .take(ADMIN_RESPONSE_BYTES_MAX)
        .read_to_string(&mut response)
        .with_context(|| format!("read {address}{path}"))?;
    let Some((head, body)) = response.split_once("\r\n\r\n") else {
        bail!("{address}{path}: no HTTP header end");
    };
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        bail!("{address}{path}: {}", head.lines().next().unwrap_or(""));
    }
    serde_json::from_str(body).with_context(|| format!("{address}{path}: not JSON"))
}
