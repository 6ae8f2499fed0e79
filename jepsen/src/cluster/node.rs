//! One Karst node of a run: its generated config, its data directory, its log file and its
//! process (started inside the node's namespace, killed, paused, resumed, restarted), and the
//! fault layers around them ([`FaultLayers`]).

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::cleanup;
use super::clock::{self, Strobe};
use super::network::{node_address, node_namespace, NodeId};
use super::unsynced::{CrashReport, UnsyncedMount};

/// The Kafka listener port on every node (each node has its own address).
pub const KAFKA_PORT: u16 = 9092;
/// The controller (Raft) listener port.
pub const CONTROLLER_PORT: u16 = 9093;
/// The admin listener (`/v1/cluster`, `/v1/partitions`).
pub const ADMIN_PORT: u16 = 9644;
/// A cluster id for harness runs only.
const CLUSTER_ID: &str = "jepsenKarstRunsOnly0AA";
/// libfaketime from Debian's `faketime` package, preloaded into nodes when the clock nemesis
/// is on.
pub const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
/// How long a node gets from exec to accepting Kafka connections.
pub const NODE_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// What each node runs inside, so that nemeses can reach it; only what the run's nemeses
/// need is set up.
#[derive(Debug, Clone, Copy, Default)]
pub struct FaultLayers {
    /// libfaketime preloaded, the wall clock offset by a file (`clock`).
    pub faketime: bool,
    /// `data/` is an [`UnsyncedMount`] over `data.synced/` (`lose-unsynced`).
    pub unsynced_filesystem: bool,
    /// Segments of [`SMALL_SEGMENT_BYTES`], so that a run seals many (`bitflip`).
    pub small_segments: bool,
}

/// How long a `lose-unsynced` crash waits for the node to hold unsynced data before it kills
/// the node anyway.
const CRASH_AIM_TIMEOUT: Duration = Duration::from_secs(2);
/// Unsynced bytes that count as "holding data" for that wait: more than Karst's Raft
/// `committed` hint (29 bytes), which it never syncs.
const CRASH_AIM_PENDING_BYTES: u64 = 64;

/// `log.segment.bytes` when segments must roll within a run: a key gets ~2 kB/s at the default
/// rate for its 60 s, so each of its partitions seals a few segments.
pub const SMALL_SEGMENT_BYTES: u64 = 16 << 10;

pub struct Node {
    pub id: NodeId,
    binary: PathBuf,
    directory: PathBuf,
    child: Option<Child>,
    paused: bool,
    /// Started under libfaketime, its wall clock offset by [`Node::clock_offset_path`].
    faketime: bool,
    /// The clock strobe running on this node, if any (stopped at the heal).
    strobe: Option<Strobe>,
    /// The filesystem under `data/` that can lose unsynced writes, when mounted. Unmounted
    /// when the node is dropped, after [`Drop`] killed the process.
    unsynced: Option<UnsyncedMount>,
    pub starts: u32,
}

impl Node {
    /// Writes the node's config under `run_directory/nodes/n<id>`, mounts the unsynced-writes
    /// filesystem if asked, and formats its data directory (`karst storage format`).
    pub fn create(
        id: NodeId,
        all: &[NodeId],
        binary: &Path,
        run_directory: &Path,
        layers: FaultLayers,
    ) -> anyhow::Result<Node> {
        let directory = run_directory.join("nodes").join(format!("n{id}"));
        fs::create_dir_all(&directory)
            .with_context(|| format!("create {}", directory.display()))?;
        let mut node = Node {
            id,
            binary: binary.to_owned(),
            directory,
            child: None,
            paused: false,
            faketime: layers.faketime,
            strobe: None,
            unsynced: None,
            starts: 0,
        };
        if layers.unsynced_filesystem {
            node.unsynced = Some(UnsyncedMount::mount(
                &node.directory.join("data.synced"),
                &node.data_directory(),
                &node_namespace(id),
            )?);
        }
        if node.faketime {
            node.set_clock_offset(0)?;
        }
        fs::write(
            node.config_path(),
            node_config(
                id,
                all,
                &node.data_directory(),
                layers.small_segments.then_some(SMALL_SEGMENT_BYTES),
            ),
        )?;
        let output = Command::new(binary)
            .args(["storage", "format", "--config"])
            .arg(node.config_path())
            .output()
            .with_context(|| format!("run {} storage format", binary.display()))?;
        if !output.status.success() {
            bail!(
                "karst storage format for node {id} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(node)
    }

    /// `nodes/n<id>` of the run: config, data, log, admin views.
    pub fn directory(&self) -> &Path {
        &self.directory
    }

    pub fn config_path(&self) -> PathBuf {
        self.directory.join("karst.toml")
    }

    pub fn data_directory(&self) -> PathBuf {
        self.directory.join("data")
    }

    /// The file libfaketime reads the node's wall-clock offset from.
    fn clock_offset_path(&self) -> PathBuf {
        self.directory.join("faketime.rc")
    }

    /// Moves the node's wall clock (CLOCK_REALTIME; the monotonic clock is left alone, so
    /// timeouts keep working) by `seconds` from the true time.
    pub fn set_clock_offset(&self, seconds: i64) -> anyhow::Result<()> {
        assert!(self.faketime, "node {} runs without libfaketime", self.id);
        clock::write_offset(&self.clock_offset_path(), seconds).context("set the faketime offset")
    }

    /// Flips the node's wall clock between `seconds` off and true time every `period` until
    /// [`Node::stop_strobe`].
    pub fn start_strobe(&mut self, seconds: i64, period: Duration) {
        assert!(self.faketime, "node {} runs without libfaketime", self.id);
        self.stop_strobe().ok();
        self.strobe = Some(Strobe::start(self.clock_offset_path(), seconds, period));
    }

    /// Stops a running strobe (the clock is at true time then); how many changes it made.
    pub fn stop_strobe(&mut self) -> anyhow::Result<u64> {
        match self.strobe.take() {
            Some(strobe) => strobe.stop(),
            None => Ok(0),
        }
    }

    pub fn log_path(&self) -> PathBuf {
        self.directory.join("karst.log")
    }

    pub fn kafka_address(&self) -> SocketAddr {
        format!("{}:{KAFKA_PORT}", node_address(self.id))
            .parse()
            .expect("a literal address")
    }

    pub fn admin_address(&self) -> SocketAddr {
        format!("{}:{ADMIN_PORT}", node_address(self.id))
            .parse()
            .expect("a literal address")
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn has_faketime(&self) -> bool {
        self.faketime
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Starts `karst server` in the node's namespace, appending to its log. Must be called from
    /// the main thread: the node's parent-death signal fires when the *thread* that started it
    /// exits.
    pub fn start(&mut self) -> anyhow::Result<()> {
        assert!(self.child.is_none(), "node {} is already running", self.id);
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        writeln!(
            log,
            "\n===== karst-jepsen: start #{} of node {}",
            self.starts, self.id
        )?;
        let namespace = node_namespace(self.id);
        let mut command = Command::new("ip");
        if self.faketime {
            command
                .env("LD_PRELOAD", LIBFAKETIME)
                .env("FAKETIME_TIMESTAMP_FILE", self.clock_offset_path())
                // Read the file at every CLOCK_REALTIME call, so a strobe's flips land at once.
                .env("FAKETIME_NO_CACHE", "1")
                .env("DONT_FAKE_MONOTONIC", "1");
        }
        let child = command
            .args(["netns", "exec", &namespace])
            // setpriv sets the parent-death signal and execs karst: the pid stays karst's.
            .args(["setpriv", "--pdeathsig", "KILL", "--"])
            .arg(&self.binary)
            .args(["server", "--config"])
            .arg(self.config_path())
            .env("RUST_BACKTRACE", "1")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("start node {}", self.id))?;
        cleanup::remember(child.id() as i32);
        self.child = Some(child);
        self.paused = false;
        Ok(())
    }

    /// Waits until the node accepts Kafka connections (bounded by [`NODE_READY_TIMEOUT`]).
    pub fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + NODE_READY_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    cleanup::forget(child.id() as i32);
                    self.child = None;
                    bail!(
                        "node {} exited with {status} before listening; see {}",
                        self.id,
                        self.log_path().display()
                    );
                }
            }
            if TcpStream::connect_timeout(&self.kafka_address(), Duration::from_millis(200)).is_ok()
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "node {} did not listen on {} within {NODE_READY_TIMEOUT:?}; see {}",
            self.id,
            self.kafka_address(),
            self.log_path().display()
        )
    }

    /// SIGKILL and reap: the crash Karst promises loses no acknowledged record.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().context("reap a killed node")?;
            cleanup::forget(child.id() as i32);
        }
        self.paused = false;
        Ok(())
    }

    /// SIGKILL, reap, then drop every write the node had not synced: the crash of its
    /// machine (`lose-unsynced`). Returns what was dropped.
    pub fn crash(&mut self) -> anyhow::Result<CrashReport> {
        if self.unsynced.is_none() {
            bail!("node {} has no unsynced-writes filesystem", self.id);
        }
        self.wait_for_unsynced_data();
        // Reaped first: no write of the process can be in flight when its disk "loses power".
        self.kill()?;
        let report = self.unsynced.as_ref().expect("checked above").crash();
        let mut log = OpenOptions::new().append(true).open(self.log_path())?;
        let files: Vec<String> = report
            .dropped
            .iter()
            .map(|(path, bytes)| format!("{} ({bytes} bytes)", path.display()))
            .collect();
        writeln!(
            log,
            "\n===== karst-jepsen: crash of node {}: dropped {} unsynced bytes in {} files: {}",
            self.id,
            report.bytes,
            report.files,
            files.join(", ")
        )?;
        Ok(report)
    }

    /// Waits (at most [`CRASH_AIM_TIMEOUT`]) for a moment when the node holds more than
    /// [`CRASH_AIM_PENDING_BYTES`] unsynced: a crash between a write and its sync is the one
    /// worth testing, and a node that syncs at once is rarely caught there by chance.
    fn wait_for_unsynced_data(&self) {
        let Some(unsynced) = self.unsynced.as_ref() else {
            return;
        };
        let deadline = Instant::now() + CRASH_AIM_TIMEOUT;
        while unsynced.pending_bytes() <= CRASH_AIM_PENDING_BYTES && Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// SIGSTOP (`true`) or SIGCONT (`false`).
    pub fn pause(&mut self, pause: bool) -> anyhow::Result<()> {
        let Some(child) = self.child.as_ref() else {
            return Ok(());
        };
        let signal = if pause { libc::SIGSTOP } else { libc::SIGCONT };
        // SAFETY: kill(2) on our own unreaped child.
        if unsafe { libc::kill(child.id() as i32, signal) } != 0 {
            return Err(std::io::Error::last_os_error()).context("signal node");
        }
        self.paused = pause;
        Ok(())
    }

    /// Reaps the node if it exited on its own (a crash the nemesis did not cause); returns its
    /// exit status then.
    pub fn reap_if_exited(&mut self) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let status = child.try_wait().ok().flatten()?;
        cleanup::forget(child.id() as i32);
        self.child = None;
        Some(status)
    }

    /// The end of the node's log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill().ok();
    }
}

/// A node config like `config/node1.toml`, on the namespace addresses, with the topic defaults
/// the workload needs (RF=3, min.insync.replicas=2).
/// `segment_bytes` sets `log.segment.bytes` (Karst's default, 1 GiB, when None).
pub fn node_config(
    id: NodeId,
    all: &[NodeId],
    data_directory: &Path,
    segment_bytes: Option<u64>,
) -> String {
    let address = node_address(id);
    let voters: Vec<String> = all
        .iter()
        .map(|node| format!("{node}@{}:{CONTROLLER_PORT}", node_address(*node)))
        .collect();
    format!(
        r#"# Generated by karst-jepsen for node {id} of a fault-injection run.
"node.id" = {id}
"process.roles" = "broker,controller"
"cluster.id" = "{CLUSTER_ID}"
"listeners" = "PLAINTEXT://{address}:{KAFKA_PORT},CONTROLLER://{address}:{CONTROLLER_PORT}"
"controller.listener.names" = "CONTROLLER"
"controller.quorum.voters" = "{voters}"
"admin.listener" = "{address}:{ADMIN_PORT}"
"log.dirs" = "{data}"
"default.replication.factor" = 3
"min.insync.replicas" = 2
"auto.create.topics.enable" = false
{segment}"#,
        voters = voters.join(","),
        segment = segment_bytes
            .map(|bytes| format!("\"log.segment.bytes\" = {bytes}\n"))
            .unwrap_or_default(),
        data = data_directory.display(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_config_listens_only_on_its_namespace_address_and_names_every_voter() {
        let config = node_config(2, &[1, 2, 3], Path::new("/runs/r/nodes/n2/data"), None);
        assert!(config.contains(
            r#""listeners" = "PLAINTEXT://10.77.0.12:9092,CONTROLLER://10.77.0.12:9093""#
        ));
        assert!(config.contains(
            r#""controller.quorum.voters" = "1@10.77.0.11:9093,2@10.77.0.12:9093,3@10.77.0.13:9093""#
        ));
        assert!(config.contains(r#""admin.listener" = "10.77.0.12:9644""#));
        assert!(config.contains(r#""min.insync.replicas" = 2"#));
        assert!(!config.contains("127.0.0.1"));
        let parsed: toml_like::Table = toml_like::parse(&config);
        assert_eq!(parsed.get("node.id").map(String::as_str), Some("2"));
    }

    /// Just enough of TOML's flat `"key" = value` lines to check the generated file parses.
    mod toml_like {
        pub type Table = std::collections::BTreeMap<String, String>;
        pub fn parse(text: &str) -> Table {
            text.lines()
                .filter(|line| !line.trim_start().starts_with('#') && !line.trim().is_empty())
                .map(|line| {
                    let (key, value) = line.split_once(" = ").expect("key = value");
                    (
                        key.trim_matches('"').to_owned(),
                        value.trim_matches('"').to_owned(),
                    )
                })
                .collect()
        }
    }
}
