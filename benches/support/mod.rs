//! What the end-to-end benchmarks share: a `karst server` of this build (one node, or a
//! three-node cluster), the load (`load`, and `fixed_load` for requests of one shape), Apache Kafka as a peer (`kafka`), and a process's CPU
//! time and peak RSS from `/proc`.

// Each benchmark uses part of this.
#![allow(dead_code)]

pub mod fixed_load;
pub mod kafka;
pub mod load;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `karst server` of this build on free loopback ports, killed on drop.
pub struct Broker {
    pub child: Child,
    pub bootstrap: String,
}

impl Broker {
    /// Starts a broker with its data in `data`, `partitions` as `num.partitions` and the
    /// `extra` settings; returns once it accepts connections.
    pub fn start(data: &Path, partitions: i32, extra: &[&str]) -> Broker {
        let (port, admin) = (free_port(), free_port());
        let settings = [
            format!("listeners=PLAINTEXT://127.0.0.1:{port}"),
            format!("log.dirs={}", data.display()),
            format!("admin.listener=127.0.0.1:{admin}"),
            format!("num.partitions={partitions}"),
        ];
        let broker = Broker {
            child: spawn_karst(&settings, extra),
            bootstrap: format!("127.0.0.1:{port}"),
        };
        wait_listening(&broker.bootstrap, Duration::from_secs(20));
        broker
    }
}

/// `karst server` of this build with `settings` and then `extra` as `--set`s, output discarded.
fn spawn_karst(settings: &[String], extra: &[&str]) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_karst"));
    command.arg("server");
    for setting in settings
        .iter()
        .map(String::as_str)
        .chain(extra.iter().copied())
    {
        command.args(["--set", setting]);
    }
    command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start karst")
}

/// Returns once `address` accepts TCP connections; panics after `limit`.
fn wait_listening(address: &str, limit: Duration) {
    let started = Instant::now();
    while std::net::TcpStream::connect(address).is_err() {
        assert!(
            started.elapsed() < limit,
            "karst at {address} did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Three `karst server` nodes of this build on free loopback ports, each a broker and a
/// voter of the metadata quorum, with the same `extra` settings; killed on drop.
pub struct Cluster {
    pub nodes: Vec<Broker>,
    pub bootstrap: String,
}

impl Cluster {
    /// Starts the nodes together (each data directory `data/node<id>`); returns once every
    /// node accepts Kafka connections, which a node does only after it registered with the
    /// quorum.
    pub fn start(data: &Path, partitions: i32, extra: &[&str]) -> Cluster {
        let ids = [1, 2, 3];
        let controller_ports: Vec<u16> = ids.iter().map(|_| free_port()).collect();
        let voters = ids
            .iter()
            .zip(&controller_ports)
            .map(|(id, port)| format!("{id}@127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",");
        let launched: Vec<(Child, String)> = ids
            .iter()
            .zip(&controller_ports)
            .map(|(id, controller_port)| {
                let (port, admin) = (free_port(), free_port());
                let directory = data.join(format!("node{id}"));
                let settings = [
                    format!("node.id={id}"),
                    "process.roles=broker,controller".to_owned(),
                    "cluster.id=frqy0WqGSI2Uz_nDyvB_BA".to_owned(),
                    format!(
                        "listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}"
                    ),
                    "controller.listener.names=CONTROLLER".to_owned(),
                    format!("controller.quorum.voters={voters}"),
                    format!("log.dirs={}", directory.display()),
                    format!("admin.listener=127.0.0.1:{admin}"),
                    format!("num.partitions={partitions}"),
                ];
                let child = spawn_karst(&settings, extra);
                (child, format!("127.0.0.1:{port}"))
            })
            .collect();
        let bootstrap = launched
            .iter()
            .map(|(_, address)| address.as_str())
            .collect::<Vec<_>>()
            .join(",");
        let nodes: Vec<Broker> = launched
            .into_iter()
            .map(|(child, bootstrap)| Broker { child, bootstrap })
            .collect();
        // Each node opens its Kafka port only once it registered with the quorum.
        for node in &nodes {
            wait_listening(&node.bootstrap, Duration::from_secs(60));
        }
        Cluster { nodes, bootstrap }
    }

    pub fn pids(&self) -> Vec<u32> {
        self.nodes.iter().map(|node| node.child.id()).collect()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// User + system CPU seconds a process has used so far (`/proc/PID/stat`, clock ticks of
/// 10 ms as on every Linux this runs on).
pub fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |index: usize| fields.get(index).and_then(|v| v.parse::<f64>().ok());
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    (ticks(11).unwrap_or(0.0) + ticks(12).unwrap_or(0.0)) / 100.0
}

/// The peak resident set size of a process so far, in bytes (`VmHWM` of `/proc/PID/status`);
/// 0 when it cannot be read.
pub fn peak_rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| {
            value
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kilobytes| kilobytes * 1024)
}
