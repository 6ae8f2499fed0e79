//! Apache Kafka as a peer of the benchmarks (issue 11): Kafka 4.4.0 started by
//! `scripts/kafka-peer` from the Maven Central jars, one node or three, warmed up before it is
//! measured.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::load::{produce, Keys, PARTITIONS};

/// Records produced to a topic of their own before a Kafka row is measured: a fresh JVM runs
/// interpreted until the JIT has compiled the hot paths, which a broker in service has long
/// done. Karst, compiled ahead of time, gets no warm-up.
pub const KAFKA_WARMUP_RECORDS: usize = 500_000;

/// Apache Kafka nodes started by `scripts/kafka-peer` in `dir`, warmed up; stopped (by pid)
/// and the directory removed on drop.
pub struct KafkaPeer {
    dir: PathBuf,
    pub bootstrap: String,
    /// Every node's process id (the JVMs).
    pub pids: Vec<u32>,
}

impl KafkaPeer {
    fn script() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/kafka-peer")
    }

    /// `nodes` Kafka nodes (KRaft combined mode) with `num.partitions` set to the benchmark's
    /// and `settings` on every node. None (with the reason on stderr) when Kafka cannot start
    /// here, e.g. without Java or Maven: the Karst rows do not depend on it.
    pub fn start(dir: &Path, nodes: u32, settings: &[&str]) -> Option<KafkaPeer> {
        let mut command = Command::new(Self::script());
        command
            .arg("start")
            .arg(dir)
            .args(["--nodes", &nodes.to_string()])
            .args(["--set", &format!("num.partitions={PARTITIONS}")]);
        for setting in settings {
            command.args(["--set", setting]);
        }
        let output = command.stderr(Stdio::inherit()).output();
        let output = match output {
            Ok(output) if output.status.success() => output,
            Ok(output) => {
                eprintln!(
                    "scripts/kafka-peer start failed ({}): no Kafka row",
                    output.status
                );
                return None;
            }
            Err(error) => {
                eprintln!("scripts/kafka-peer: {error}: no Kafka row");
                return None;
            }
        };
        let bootstrap = String::from_utf8_lossy(&output.stdout)
            .lines()
            .last()?
            .trim()
            .to_string();
        let pids = (1..=nodes)
            .map(|node| {
                std::fs::read_to_string(dir.join(format!("node{node}/pid")))
                    .ok()?
                    .trim()
                    .parse()
                    .ok()
            })
            .collect::<Option<Vec<u32>>>()?;
        let kafka = KafkaPeer {
            dir: dir.to_path_buf(),
            bootstrap,
            pids,
        };
        produce(
            &kafka.bootstrap,
            "warmup",
            KAFKA_WARMUP_RECORDS,
            200,
            Keys::None,
            None,
        );
        Some(kafka)
    }
}

impl Drop for KafkaPeer {
    fn drop(&mut self) {
        let _ = Command::new(Self::script())
            .arg("stop")
            .arg(&self.dir)
            .status();
    }
}
